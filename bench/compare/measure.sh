#!/usr/bin/env bash
# The same small app, written with latchkey (latchkey-app/) and with
# tower-sessions + axum-login (peer-app/), measured as a new user meets them.
#
#   bench/compare/measure.sh           counts, both tests, a clean release build
#                                      of each (one after the other), RESULTS.md
#   bench/compare/measure.sh --smoke   counts and a debug `cargo check` of each;
#                                      prints the table, writes nothing
#
# Build output goes under $CARGO_TARGET_DIR (default target/ here), in
# compare-measure/<app>, emptied before each build.
#
# What each number is:
# - lines: non-blank lines of src/main.rs that are not `//` comments, up to
#   the `#[cfg(test)]` module (the test module is counted on its own line):
#   grep -v '^\s*$' | grep -v '^\s*//' | wc -l. rustfmt'd with the repo's
#   rustfmt.toml (edition 2021, rustfmt defaults).
# - library items: items.py (its docstring says how): distinct names brought
#   in from the session/auth crates, and distinct library functions the app
#   calls or implements. For the peer the crates are axum_login,
#   tower_sessions, tower_sessions_sqlx_store and argon2 (the peer hashes and
#   verifies passwords itself; latchkey does it for the app).
# - direct dependencies: entries under [dependencies] of the app's
#   Cargo.toml (dev-dependencies left out).
# - crates in the tree: distinct packages `cargo tree -e normal` prints.
# - clean release build: `cargo build --release --locked --offline` into an
#   empty target dir after `cargo fetch`, under /usr/bin/time -v: wall clock,
#   and "Maximum resident set size" (the largest single process: one rustc
#   or the linker, not the sum). Crates compiled: `Compiling` lines.
# - binary: size of target/release/<bin> as built (default release profile:
#   no debug info, not stripped).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
smoke=false
[[ "${1:-}" == "--smoke" ]] && smoke=true
target_base="${CARGO_TARGET_DIR:-$here/target}/compare-measure"

apps=(latchkey-app peer-app)
declare -A bin=([latchkey-app]=compare-latchkey-app [peer-app]=compare-peer-app)
declare -A libs=(
    [latchkey-app]="latchkey=latchkey"
    [peer-app]="axum_login=axum-login tower_sessions=tower-sessions:tower-sessions-core tower_sessions_sqlx_store=tower-sessions-sqlx-store argon2=argon2:password-hash"
)
declare -A R

count_lines() { grep -v '^\s*$' | grep -v '^\s*//' | wc -l; }

# "name" -> that package's src/ in this app's lock (path or registry).
src_dirs() {
    local app="$1"
    shift
    (cd "$here/$app" && cargo metadata --format-version 1 --locked --offline) |
        python3 -c '
import json, os, sys
names = sys.argv[1:]
meta = json.load(sys.stdin)
dirs = {p["name"]: os.path.join(os.path.dirname(p["manifest_path"]), "src") for p in meta["packages"]}
print(":".join(dirs[n] for n in names))' "$@"
}

human_time() { awk -v s="$1" 'BEGIN { m = int(s / 60); printf (m ? "%d min %d s" : "%d s"), (m ? m : s - m * 60), s - m * 60 }'; }

for app in "${apps[@]}"; do
    dir="$here/$app"
    main="$dir/src/main.rs"
    (cd "$dir" && cargo fetch --locked -q)
    R[$app,lines]=$(sed '/^#\[cfg(test)\]/,$d' "$main" | count_lines)
    R[$app,test_lines]=$(sed -n '/^#\[cfg(test)\]/,$p' "$main" | count_lines)
    args=()
    for spec in ${libs[$app]}; do
        crate="${spec%%=*}"
        IFS=: read -r -a pkgs <<<"${spec#*=}"
        args+=("$crate=$(src_dirs "$app" "${pkgs[@]}")")
    done
    while IFS=$'\t' read -r key value; do
        R[$app,$key]="$value"
    done < <(python3 "$here/items.py" "$main" "${args[@]}")
    R[$app,deps]=$(sed -n '/^\[dependencies\]/,/^\[/p' "$dir/Cargo.toml" | grep -c '^[a-z0-9_-]\+ *=')
    R[$app,dep_list]=$(sed -n '/^\[dependencies\]/,/^\[/p' "$dir/Cargo.toml" | grep -o '^[a-z0-9_-]\+' | paste -sd, | sed 's/,/, /g')
    R[$app,tree]=$(cd "$dir" && cargo tree -e normal --locked --offline --prefix none | sed 's/ (\*)$//' | sort -u | wc -l)
done

for app in "${apps[@]}"; do
    dir="$here/$app"
    echo "== $app: cargo test" >&2
    (cd "$dir" && cargo test --locked --offline -q 2>&1 | tail -n 3) >&2
    target="$target_base/$app"
    rm -rf "$target"
    if $smoke; then
        echo "== $app: cargo check" >&2
        (cd "$dir" && CARGO_TARGET_DIR="$target" cargo check --locked --offline -q)
        continue
    fi
    echo "== $app: clean release build" >&2
    R[$app,load]=$(cut -d' ' -f1 /proc/loadavg)
    log="$target_base/$app.build.log"
    mkdir -p "$target_base"
    (cd "$dir" && CARGO_TARGET_DIR="$target" /usr/bin/time -v \
        cargo build --release --locked --offline) >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    wall=$(grep 'Elapsed (wall clock)' "$log" | awk '{ print $NF }')
    R[$app,secs]=$(awk -F: -v t="$wall" 'BEGIN { n = split(t, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; printf "%.0f", s }')
    R[$app,rss]=$(awk '/Maximum resident set size/ { printf "%.0f", $NF / 1024 }' "$log")
    R[$app,compiled]=$(grep -c '^ *Compiling ' "$log")
    R[$app,bin]=$(stat -c %s "$target/release/${bin[$app]}" | awk '{ printf "%.2f", $1 / 1048576 }')
    rm -rf "$target/release/incremental"
done

L=latchkey-app P=peer-app
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }
table() {
    echo "| | latchkey | tower-sessions + axum-login |"
    echo "|---|---|---|"
    row "Rust lines the app writes (its test module)" "${R[$L,lines]} (${R[$L,test_lines]})" "${R[$P,lines]} (${R[$P,test_lines]})"
    row "library items touched: names / functions, crates" \
        "${R[$L,paths]} / ${R[$L,functions]}, ${R[$L,crates]}" "${R[$P,paths]} / ${R[$P,functions]}, ${R[$P,crates]}"
    row "direct dependencies; crates in the tree" "${R[$L,deps]}; ${R[$L,tree]}" "${R[$P,deps]}; ${R[$P,tree]}"
    if ! $smoke; then
        row "clean release build: wall, crates compiled, peak RSS" \
            "$(human_time "${R[$L,secs]}"), ${R[$L,compiled]}, ${R[$L,rss]} MiB" \
            "$(human_time "${R[$P,secs]}"), ${R[$P,compiled]}, ${R[$P,rss]} MiB"
        row "binary" "${R[$L,bin]} MiB" "${R[$P,bin]} MiB"
    fi
}

if $smoke; then
    table
    exit 0
fi

commit=$(git -C "$repo" rev-parse --short HEAD)
dirty=$(git -C "$repo" status --porcelain -- "$here" "$repo/crates/latchkey" | grep -q . && echo " (with uncommitted changes)" || true)
{
    echo "# bench/compare results"
    echo
    echo "Written by \`bench/compare/measure.sh\` (its header says how each number is measured)."
    echo
    table
    echo
    echo "Items each app touches:"
    echo
    for app in "${apps[@]}"; do
        echo "- **$app**: crates ${R[$app,crate_list]}; names ${R[$app,path_list]}; functions ${R[$app,function_list]}; direct dependencies ${R[$app,dep_list]}."
    done
    echo
    echo "Machine and build:"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $commit$dirty"
    echo "- $(uname -sm), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ { print $2 }') GiB RAM"
    echo "- $(rustc --version), $(cargo --version)"
    echo "- 1-minute load average as each build started: latchkey-app ${R[$L,load]}, peer-app ${R[$P,load]}; at the end $(cut -d' ' -f1 /proc/loadavg) (other work shared the machine: the times are indicative)"
    echo "- builds one after the other, each into an empty target dir, sources fetched beforehand, default release profile"
} >"$here/RESULTS.md"
cat "$here/RESULTS.md"
