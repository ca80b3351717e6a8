#!/usr/bin/env python3
"""Library items an app touches: a heuristic, used by measure.sh.

usage: items.py APP_MAIN_RS CRATE=SRC_DIR [CRATE=SRC_DIR ...]

CRATE is the name as written in Rust (`axum_login`), SRC_DIR that library's
`src/` (several joined with `:` when the crate re-exports another's items, as
`argon2::password_hash` does). The app's test module (from `#[cfg(test)]` on) is left out.

- paths: the distinct names the app brings in from those crates, from its
  `use` lines (braces expanded; `x as _` counts as `x`) and from paths written
  inline (`latchkey::Error`). Modules only passed through (`latchkey::store`
  in `latchkey::store::SqliteStore`) are not counted; the last segment is.
- functions: the distinct names N that the libraries declare as a function
  (`pub fn N`, `pub async fn N`, or any `fn N` inside a `pub trait`) and that
  the app calls as `.N(`, as `Item::N(` with Item one of the paths above, or
  implements as `fn N` inside an `impl Item for` block with Item one of the
  paths above. Calls of std methods that a library also declares (`.parse(`,
  `.as_bytes(`: STD_METHODS below) are not counted. Fields (`auth_session.user`) are not counted.

Prints one line per count, `key<TAB>value`, for measure.sh to read.
"""
import re
import sys
from pathlib import Path


# Methods of std types (str, String, Option, Result) that these apps call and
# that some library also happens to declare: a `.parse(` is str's, not the
# library's.
STD_METHODS = {"as_bytes", "as_str", "clone", "into", "into_bytes", "is_ok",
               "is_ok_and", "map", "parse", "then_some", "to_owned", "to_string",
               "unwrap", "unwrap_or_else"}


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] if "//" in line and '"' not in line.split("//")[0] else line
                     for line in text.splitlines())


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']"""
    tree = tree.strip()
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if start is None:
        return [tree]
    prefix, inner = tree[:start], tree[start + 1:tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        if part.strip():
            out.extend(prefix + p for p in expand_use(part.strip()))
    return out


def library_functions(src_dir):
    names = set()
    for path in Path(src_dir).rglob("*.rs"):
        text = strip_comments(path.read_text(errors="replace"))
        names.update(re.findall(r"\bpub(?:\([^)]*\))?\s+(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)", text))
        for m in re.finditer(r"\bpub\s+trait\s+\w+[^{;]*\{", text):
            depth, i = 1, m.end()
            while i < len(text) and depth:
                depth += text[i] == "{"
                depth -= text[i] == "}"
                i += 1
            names.update(re.findall(r"\bfn\s+(\w+)", text[m.end():i]))
    return names


def main():
    app = Path(sys.argv[1]).read_text()
    app = app.split("#[cfg(test)]")[0]
    app = strip_comments(app)
    crates = dict(arg.split("=", 1) for arg in sys.argv[2:])
    crate_re = "|".join(re.escape(c) for c in crates)

    paths = set()
    for m in re.finditer(r"\buse\s+((?:%s)::[^;]*);" % crate_re, app, flags=re.S):
        for full in expand_use(re.sub(r"\s+", " ", m.group(1))):
            full = re.sub(r"\s+as\s+\w+$", "", full.strip())
            paths.add(full.replace(" ", ""))
    without_uses = re.sub(r"\buse\s+[^;]*;", "", app, flags=re.S)
    for m in re.finditer(r"\b((?:%s)(?:::\w+)+)" % crate_re, without_uses):
        paths.add(m.group(1))
    items = {p.split("::")[-1] for p in paths if p.split("::")[-1] not in ("self", "*")}
    used_crates = sorted({p.split("::")[0] for p in paths})

    lib_fns = set()
    for srcs in crates.values():
        for src in srcs.split(":"):
            lib_fns |= library_functions(src)
    called = set(re.findall(r"\.(\w+)\s*(?:::<[^>]*>)?\s*\(", app)) - STD_METHODS
    item_re = "|".join(re.escape(i) for i in items) or "$^"
    called |= set(re.findall(r"\b(?:%s)::(\w+)\s*\(" % item_re, app))
    for m in re.finditer(r"\bimpl(?:<[^>]*>)?\s+(?:%s)(?:<[^>]*>)?\s+for\s+[^{]*\{" % item_re, app):
        depth, i = 1, m.end()
        while i < len(app) and depth:
            depth += app[i] == "{"
            depth -= app[i] == "}"
            i += 1
        called |= set(re.findall(r"\bfn\s+(\w+)", app[m.end():i]))
    fns = sorted(called & lib_fns)

    print("paths\t%d" % len(items))
    print("path_list\t%s" % ", ".join(sorted(items)))
    print("functions\t%d" % len(fns))
    print("function_list\t%s" % ", ".join(fns))
    print("crates\t%d" % len(used_crates))
    print("crate_list\t%s" % ", ".join(used_crates))


if __name__ == "__main__":
    main()
