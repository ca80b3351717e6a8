#!/usr/bin/env python3
"""Helpers for bench/scale.sh, and its report.

    python3 bench/scale.py report OUT [--readme README.md]   # OUT/scale/ -> OUT/SCALE.md
    python3 bench/scale.py redis-load PREFIX N OFFSET live|expired NOW_MS   # RESP on stdout
    python3 bench/scale.py known sqlite|pgcopy|resp DB|-|PREFIX K OFFSET NOW_MS TOKENS_OUT
    python3 bench/scale.py merge A.hist B.hist ...  # one line: requests, p50, p99
    python3 bench/scale.py sweep-line DIR

Only the standard library is needed.
"""

import glob
import gzip
import hashlib
import os
import re
import secrets
import statistics
import sys

from common import cpu_share, load_env, load_json, numbered, rate, read_number, replace_between, resp, verdict

P99_TARGET = 1.5  # p99 at the large store over p99 at the small one, at most
SWEEP_TARGET = 2.0  # p99 while the sweep runs over p99 before, at most
MEMORY_TARGET = 400  # bytes per session in the memory store (aim)

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
]
STORE_LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "Redis"}


# ---------------------------------------------------------------- loading
FIELDS = ("id", "user_id", "username", "role", "created_at", "last_seen_at", "expires_at", "user_agent",
          "ip", "csrf_secret")


def bulk_row(i, offset, created, last, expires):
    """Bulk session number I's FIELDS: two sessions per bulk user (user
    numbers from OFFSET), as scale.sh's SQL loads make them."""
    user = (i + offset) // 2
    return (os.urandom(16).hex(), "%08x%024x" % ((user * 2654435761) % 4294967296, user), "user%d" % user,
            "user", created, last, expires, USER_AGENTS[i % 3], "198.51.%d.%d" % ((i >> 8) & 255, i & 255),
            secrets.token_urlsafe(32))


def session_resp(prefix, hexhash, row):
    """One session in the Redis store's layout (crates/latchkey/src/store/redis.rs):
    a hash at PREFIX s:HEX with a PEXPIREAT, and its entry in the per-user set
    PREFIX u:USER_ID of hex hashes."""
    skey, ukey, expires = prefix + "s:" + hexhash, prefix + "u:" + row[1], row[6]
    fields = [x for pair in zip(FIELDS, row) for x in pair]
    return (resp("HSET", skey, *fields) + resp("PEXPIREAT", skey, expires) + resp("SADD", ukey, hexhash)
            + resp("PEXPIREAT", ukey, expires))


def redis_load(prefix, n, offset, kind, now):
    """N random sessions, live or expired, as RESP on stdout."""
    n, offset, now = int(n), int(offset), int(now)
    out, buf = sys.stdout.buffer, []
    for i in range(n):
        if kind == "live":
            last = now - (i % 600000)
            created, expires = last - 60000 - (i % 3600000), now + 7200000 + (i % 600000)
        else:
            last = now - 7200000 - (i % 3600000)
            created, expires = last - 60000, now - 1000 - (i % 3600000)
        buf.append(session_resp(prefix, os.urandom(32).hex(), bulk_row(i, offset, created, last, expires)))
        if len(buf) >= 10000:
            out.write(b"".join(buf))
            buf = []
    out.write(b"".join(buf))
    out.flush()


def known_rows(fmt, target, k, offset, now, tokens_out):
    """K live sessions whose cookie tokens are known, for GETs spread over
    many sessions: tokens (43 base64url characters, as the server makes
    them) go to TOKENS_OUT, one per line; the rows, keyed by SHA-256 of the
    token, go into the store: FORMAT sqlite inserts into the database file
    TARGET, pgcopy prints `COPY ... FROM STDIN` text, resp prints Redis
    commands for key prefix TARGET. They were last seen an hour from now,
    so that no request during the run refreshes them (no touch writes): what
    the spread runs measure is the lookup."""
    k, offset, now = int(k), int(offset), int(now)
    rows = []
    with open(tokens_out, "w") as tok:
        for i in range(k):
            token = secrets.token_urlsafe(32)
            tok.write(token + "\n")
            row = bulk_row(i, offset, now - 3600000, now + 3600000, now + 7200000)
            rows.append((hashlib.sha256(token.encode()).digest(),) + row)
    if fmt == "sqlite":
        import sqlite3
        db = sqlite3.connect(target, timeout=30)
        db.execute("PRAGMA synchronous = OFF")
        db.executemany("INSERT INTO latchkey_sessions (token_hash, %s) VALUES (?%s)" % (
            ", ".join(FIELDS), ",?" * len(FIELDS)), rows)
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    elif fmt == "pgcopy":
        for r in rows:
            sys.stdout.write("\\\\x%s\t%s\n" % (r[0].hex(), "\t".join(str(x) for x in r[1:])))
    elif fmt == "resp":
        sys.stdout.buffer.write(b"".join(session_resp(target, r[0].hex(), r[1:]) for r in rows))
        sys.stdout.buffer.flush()
    else:
        raise SystemExit("unknown format " + fmt)


# ---------------------------------------------------------------- reading
def read_hist(path):
    h = {}
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            text = f.read().strip()
    except OSError:
        return h
    for part in text.split(","):
        if ":" in part:
            v, c = part.split(":")
            h[int(float(v))] = h.get(int(float(v)), 0) + int(float(c))
    return h


def merge_hists(paths):
    total = {}
    for p in paths:
        for v, c in read_hist(p).items():
            total[v] = total.get(v, 0) + c
    return total


def percentile(hist, p):
    n = sum(hist.values())
    if n == 0:
        return None
    rank = p / 100.0 * n
    seen = 0
    for v in sorted(hist):
        seen += hist[v]
        if seen >= rank:
            return v
    return max(hist)


def runs_stats(json_paths):
    """req/s over several wrk runs taken together, and their errors."""
    reqs = dur = errs = 0
    for p in json_paths:
        d = load_json(p)
        if not d:
            continue
        reqs += d["requests"]
        dur += d["duration_us"]
        e = d["errors"]
        errs += e["status"] + e["connect"] + e["read"] + e["write"] + e["timeout"]
    return {"requests": reqs, "rps": reqs / dur * 1e6 if dur else None, "errors": errs}


def window_stats(paths_stem):
    """Merged distribution of the windows DIR/window-K.{hist,json}."""
    hists = [p for p in paths_stem]
    h = merge_hists([p + ".hist.gz" for p in hists])
    s = runs_stats([p + ".json" for p in hists])
    s.update({
        "p50_us": percentile(h, 50),
        "p99_us": percentile(h, 99),
        "p999_us": percentile(h, 99.9),
        "max_us": max(h) if h else None,
        "windows": len(hists),
    })
    per = []
    for p in hists:
        d = load_json(p + ".json")
        if d:
            per.append(d["latency_us"]["p99"])
    s["worst_window_p99_us"] = max(per) if per else None
    return s


def windows_of(d):
    return [os.path.join(d, "window-%d" % n) for n in numbered(d, "window")]


def read_threads(path):
    """threads_snapshot's file: wall time and {tid: (name, cpu_ns, wait_ns)}."""
    wall, threads = None, {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("wall "):
                    wall = float(line.split()[1])
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3 and parts[2].strip():
                    cpu, wait = parts[2].split()[:2]
                    threads[parts[0]] = (parts[1], int(cpu), int(wait))
    except (OSError, ValueError):
        return None
    return wall, threads


def thread_shares(a_path, b_path):
    """Between two snapshots: per kind of thread, the share of the wall time
    spent on the CPU and waiting on the run queue."""
    a, b = read_threads(a_path), read_threads(b_path)
    if not a or not b or not a[0] or not b[0] or b[0] <= a[0]:
        return None
    wall_ns = (b[0] - a[0]) * 1e9
    groups = {}
    for tid, (name, cpu, wait) in b[1].items():
        name0, cpu0, wait0 = a[1].get(tid, (name, 0, 0))
        kind = ("request threads (tokio)" if name.startswith("tokio-rt-worker")
                else "SQLite connection threads (sqlx)" if name.startswith("sqlx-sqlite")
                else "other")
        g = groups.setdefault(kind, [0.0, 0.0])
        g[0] += (cpu - cpu0) / wall_ns
        g[1] += (wait - wait0) / wall_ns
    return groups


def sweep_stats(d):
    meta = load_json(os.path.join(d, "sweep.json")) or {}
    started = read_number(os.path.join(d, "during", "started"))
    polls = []
    try:
        with open(os.path.join(d, "during", "poll.tsv")) as f:
            for line in f:
                t, c = line.split("\t")
                polls.append((float(t), int(c)))
    except (OSError, ValueError):
        pass
    done_at = next((t for t, c in polls if c == 0), None)
    last_busy = max((t for t, c in polls if c > 0), default=None)
    timed_out = os.path.exists(os.path.join(d, "during", "timed-out"))
    before = window_stats(windows_of(os.path.join(d, "before")))
    during_all = windows_of(os.path.join(d, "during"))
    # Windows that started before the poller saw the last expired row go.
    end = done_at if done_at is not None else float("inf")
    during = [w for w in during_all if (read_number(w + ".start") or 0) < end]
    dur = window_stats(during)
    after = None
    a = load_json(os.path.join(d, "after.json"))
    if a:
        after = {"p99_us": a["latency_us"]["p99"], "rps": rate(a)}
    last_end = None
    if during:
        last_end = during[-1] + ".threads"
    out = {
        "threads_before": thread_shares(os.path.join(d, "before", "threads-0.tsv"),
                                        os.path.join(d, "before", "threads-1.tsv")),
        "threads_during": thread_shares(os.path.join(d, "during", "threads-0.tsv"), last_end)
        if last_end else None,
        "expired": meta.get("expired"),
        "remaining_at_start": meta.get("remaining_at_start"),
        "seconds": (done_at - started) if done_at is not None and started else None,
        "seconds_lower": (last_busy - started) if last_busy is not None and started else None,
        "timed_out": timed_out,
        "left": polls[-1][1] if polls else None,
        "before": before,
        "during": dur,
        "after": after,
    }
    if before.get("p99_us") and dur.get("p99_us"):
        out["ratio"] = dur["p99_us"] / before["p99_us"]
        out["worst_ratio"] = (dur["worst_window_p99_us"] or 0) / before["p99_us"]
    return out


def ms(us, spec=".2f"):
    return "–" if us is None else format(us / 1000.0, spec)


def num(x, spec=",.0f"):
    return "–" if x is None else format(x, spec)


# ---------------------------------------------------------------- one-liners
def merge_line(paths):
    h = merge_hists(paths)
    s = runs_stats([re.sub(r"\.hist(\.gz)?$", "", p) + ".json" for p in paths])
    print("%s requests, %s req/s, p50 %s ms, p99 %s ms" % (
        num(s["requests"]), num(s["rps"]), ms(percentile(h, 50)), ms(percentile(h, 99))))


def sweep_line(d):
    s = sweep_stats(d)
    took = "not finished (%s left)" % s["left"] if s["seconds"] is None else "%.1f s" % s["seconds"]
    print("sweep of %s expired sessions: %s; p99 before %s ms, during %s ms (%s×; worst of %s windows: %s ms)" % (
        num(s["remaining_at_start"]), took, ms(s["before"]["p99_us"]), ms(s["during"]["p99_us"]),
        num(s.get("ratio"), ".2f"), s["during"]["windows"], ms(s["during"]["worst_window_p99_us"])))


# ---------------------------------------------------------------- report
def get_stats(raw, name, kind="round"):
    d = os.path.join(raw, "get", name)
    runs = []
    for n in numbered(d, kind):
        j = load_json(os.path.join(d, "%s-%d.json" % (kind, n)))
        if j:
            runs.append({"round": n, "rps": rate(j), "p50": j["latency_us"]["p50"], "p99": j["latency_us"]["p99"],
                         "errors": j["errors"]["status"],
                         "cpu": cpu_share(load_json(os.path.join(d, "%s-%d.proc.json" % (kind, n))))})
    if not runs:
        return None
    live = read_number(os.path.join(d, "live-sessions"), int)
    spread = read_number(os.path.join(d, "spread-sessions"), int)
    med = lambda k: statistics.median(r[k] for r in runs if r[k] is not None)  # noqa: E731
    return {
        "live": live,
        "spread": spread,
        "rps": med("rps"),
        "p50": med("p50"),
        "p99": med("p99"),
        "cpu": med("cpu") if any(r["cpu"] is not None for r in runs) else None,
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
    }


def sqlite_cache_capacity():
    """The stores' cache size, read from its source."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "crates", "latchkey", "src", "store", "cache.rs")
    try:
        with open(src) as f:
            m = re.search(r"const CACHE_CAPACITY: usize = ([\d_]+);", f.read())
        return int(m.group(1).replace("_", "")) if m else None
    except OSError:
        return None


def get_table(w, raw, stores, small, large, kind, skipped):
    spread = kind == "spread"
    col = "sessions requested" if spread else "live sessions"
    w("| store | %s | req/s | p50 ms | p99 ms | server CPU | %s | req/s | p50 ms | p99 ms | server CPU | req/s ratio | p99 ratio (per-round range) | target ≤ %.1f× |"
      % (col, col, P99_TARGET))
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    headline = {}
    for s in stores:
        a = get_stats(raw, "%s-%d" % (s, small), kind)
        b = get_stats(raw, "%s-%d" % (s, large), kind)
        if not a or not b:
            continue
        ratio = b["p99"] / a["p99"]
        per = {r["round"]: r["p99"] for r in a["runs"]}
        pr = [r["p99"] / per[r["round"]] for r in b["runs"] if per.get(r["round"])]
        rng = " (%.2f–%.2f)" % (min(pr), max(pr)) if len(pr) > 1 else ""
        cpu = lambda x: "–" if x["cpu"] is None else "%.0f%%" % (x["cpu"] * 100)  # noqa: E731
        count = (lambda x: "%s of %s" % (num(x["spread"]), num(x["live"]))) if spread else (lambda x: num(x["live"]))
        w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f× | **%.2f×**%s | %s |" % (
            STORE_LABELS[s], count(a), num(a["rps"]), ms(a["p50"]), ms(a["p99"]), cpu(a),
            count(b), num(b["rps"]), ms(b["p50"]), ms(b["p99"]), cpu(b),
            b["rps"] / a["rps"], ratio, rng, verdict(ratio <= P99_TARGET)))
        headline[s] = {"p99_ratio": ratio, "rps_ratio": b["rps"] / a["rps"], "small_p99": a["p99"],
                       "large_p99": b["p99"], "errors": a["errors"] + b["errors"]}
    for s, why in skipped.items():
        w("| %s | skipped: %s |  |  |  |  |  |  |  |  |  |  |  |  |" % (STORE_LABELS[s], why))
    return headline


def build(out, readme=None):
    raw = os.path.join(out, "scale")
    meta = load_env(os.path.join(raw, "meta.env"))
    smoke = meta.get("smoke") == "1"
    small, large = int(meta.get("small", 1000)), int(meta.get("large", 1000000))
    stores = [s for s in ("sqlite", "postgres", "redis")
              if os.path.isdir(os.path.join(raw, "get", "%s-%d" % (s, small)))]
    skipped = {s: open(p).read().strip() for s in ("sqlite", "postgres", "redis")
               for p in [os.path.join(raw, "get", s + ".skipped")] if os.path.exists(p)}

    lines = []
    w = lines.append
    w("# latchkey at scale")
    w("")
    if smoke:
        w("> **Smoke run** (`bench/scale.sh --smoke`): tiny stores, debug binaries, seconds per "
          "step. It checks that the benchmark runs; its numbers are not measurements.")
        w("")
    w("Issues 5 and 11: authenticated `GET /profile` with %s against %s live sessions in the "
      "store; the same while the background sweeper deletes %s expired ones; bytes per session. "
      "Rerun with `bash bench/scale.sh` (see [bench/README.md](../README.md#scale))."
      % (num(large), num(small), num(int(meta.get("expired", 0)))))
    w("")
    w("- date: %s" % meta.get("date", "?"))
    w("- machine: %s cores (`nproc`), %s, %.0f GiB RAM, %s" % (
        meta.get("nproc", "?"), meta.get("cpu", "?"),
        int(meta.get("mem_total_kb", 0)) / 1048576, meta.get("kernel", "?")))
    w("- load average at start / end: %s / %s (other work on the machine moves absolute numbers; "
      "the ratios are measured side by side)" % (meta.get("loadavg", "?"), meta.get("loadavg_end", "?")))
    w("- code: commit %s%s, `%s` build; SQLite %s, PostgreSQL %s, Redis %s; %s" % (
        meta.get("commit", "?"), " (uncommitted changes)" if meta.get("dirty") == "yes" or meta.get("dirty_paths") else "",
        meta.get("profile", "?"), meta.get("sqlite3", "?"), meta.get("postgres", "?"),
        meta.get("redis", "?"), meta.get("wrk", "wrk")))
    w("- server pinned to core %s (`taskset`), wrk to core %s, all on 127.0.0.1; PostgreSQL and "
      "Redis are not pinned (as in `bench/run.sh`)" % (meta.get("server_cpu", "0"), meta.get("client_cpu", "1")))
    w("")

    # ---- 1
    w("## 1. GET /profile p99 with %s vs %s live sessions" % (num(large), num(small)))
    w("")
    w("Two servers per store, one on a store holding %s live sessions, one on %s, all up at once "
      "and measured round robin: `wrk -t1 -c%s -d%ss --latency` after %s s of warm-up, %s round(s); "
      "medians over the rounds. The bulk sessions are loaded straight into the store (random "
      "32-byte token hashes, two sessions per user, ~110-character user agents: what the server "
      "writes); the bench's own session, from a real `POST /login`, is one of them."
      % (num(large), num(small), meta.get("get_conns", "32"), meta.get("duration", "?"),
         meta.get("warmup", "?"), meta.get("rounds", "?")))
    w("")
    headline = get_table(w, raw, stores, small, large, "round", skipped)
    w("")
    w("**Spread over many sessions.** The same servers, each request carrying the cookie of a "
      "session picked at random among %s of the large store's sessions and all %s bulk sessions "
      "of the small store (`lua/spread.lua`; these sessions were loaded as last seen an hour "
      "ahead, so no request refreshes them: what is measured is the lookup, not touch writes). "
      "With one hot session every store answers from its hottest path; this is what a "
      "busy site with many signed-in users asks of it." % (num(int(meta.get("spread", 0))), num(small - 1)))
    cap = sqlite_cache_capacity()
    if cap and "sqlite" in stores:
        w("The SQLite store answers from a per-process cache of at most %s sessions "
          "(`CACHE_CAPACITY` in `crates/latchkey/src/store/cache.rs`)%s." % (
              num(cap), "; the large store's %s requested sessions do not fit, so part of the "
              "requests read SQLite" % num(int(meta.get("spread", 0)))
              if int(meta.get("spread", 0)) > cap else ""))
    w("")
    spread_headline = get_table(w, raw, stores, small, large, "spread", {})
    errs = sum(h["errors"] for h in list(headline.values()) + list(spread_headline.values()))
    if errs:
        w("")
        w("**%d non-2xx responses** in these runs (see `scale/get/*/*.txt`)." % errs)
    w("")

    # ---- 2
    w("## 2. GET /profile while the sweeper deletes %s expired sessions" % num(int(meta.get("expired", 0))))
    w("")
    w("The large SQLite and PostgreSQL stores above, with `latchkey serve --idle-timeout %s`, so "
      "that the background sweeper runs every second (it runs every tenth of the idle timeout, "
      "1 s to 60 s, and deletes until nothing is left in batches sized to take about 1 ms: "
      "SQLite's on its own connection whose thread runs at nice 19, with no pauses; "
      "PostgreSQL's resting 4× each batch's time). "
      "**Before**: %s s of `wrk -c%s` on that server with nothing to sweep (merged %s-s windows, "
      "after %s s of warm-up). Then the server is stopped, %s sessions whose `expires_at` lies "
      "1 s to 1 h in the past are bulk-loaded next to the live ones, and the server is started "
      "again: the sweep begins with it. **During**: back-to-back %s-s wrk windows from sign-in "
      "until a poller on the client core (`SELECT count(*) … WHERE expires_at <= cutoff`, every "
      "second) reads 0; p99 is that of all their requests together (wrk's full latency "
      "histograms, merged). The sweep time runs from the server's start to that first 0 (±1 s)."
      % (meta.get("sweep_idle", "10s"), meta.get("before", "?"), meta.get("get_conns", "32"),
         meta.get("window", "?"), meta.get("warmup", "?"), num(int(meta.get("expired", 0))),
         meta.get("window", "?")))
    w("")
    w("| store | expired sessions | sweep took | deleted/s | req/s before | p99 before ms | req/s during | p99 during ms | p99 during ÷ before | worst %s-s window p99 ms | p99 after ms | target ≤ %.0f× |"
      % (meta.get("window", "?"), SWEEP_TARGET))
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    sweeps = {}
    for s in ("sqlite", "postgres"):
        d = os.path.join(raw, "sweep", s)
        if not os.path.isdir(d):
            continue
        st = sweep_stats(d)
        sweeps[s] = st
        if st["seconds"] is None:
            took = "not done in %s s (%s left)" % (
                num((st["seconds_lower"] or 0), ".0f"), num(st["left"]))
            rate = "–"
        else:
            took = "%.0f s" % st["seconds"]
            rate = num((st["remaining_at_start"] or 0) / st["seconds"]) if st["seconds"] else "–"
        r = st.get("ratio")
        w("| %s | %s | %s | %s | %s | %s | %s | %s | **%s** | %s | %s | %s |" % (
            STORE_LABELS[s], num(st["remaining_at_start"]), took, rate,
            num(st["before"]["rps"]), ms(st["before"]["p99_us"]),
            num(st["during"]["rps"]), ms(st["during"]["p99_us"]),
            "–" if r is None else "%.2f×" % r, ms(st["during"]["worst_window_p99_us"]),
            ms((st["after"] or {}).get("p99_us")),
            "–" if r is None else verdict(r <= SWEEP_TARGET)))
    if "redis" in stores:
        w("| Redis | – | no sweep: Redis expires each session key by its own TTL (`PEXPIREAT`); latchkey's sweep is a no-op there |  |  |  |  |  |  |  |  |  |")
    w("")
    shares = [(s, st) for s, st in sweeps.items() if st.get("threads_before") and st.get("threads_during")]
    if shares:
        w("Where the server's one core went (`/proc/PID/task/*/schedstat` of the latchkey process, "
          "share of wall time on the CPU / waiting for it on the run queue; the sweep's `DELETE`s "
          "run on the SQLite connection threads, PostgreSQL's in its own processes):")
        w("")
        w("| store | threads | before: CPU | before: waiting | during the sweep: CPU | during the sweep: waiting |")
        w("|---|---|---:|---:|---:|---:|")
        pct = lambda x: "%.0f%%" % (x * 100)  # noqa: E731
        for s, st in shares:
            b, d = st["threads_before"], st["threads_during"]
            for kind in sorted(set(b) | set(d)):
                bb, dd = b.get(kind, [0, 0]), d.get(kind, [0, 0])
                if max(bb + dd) < 0.005:
                    continue
                w("| %s | %s | %s | %s | %s | %s |" % (STORE_LABELS[s], kind, pct(bb[0]), pct(bb[1]),
                                                     pct(dd[0]), pct(dd[1])))
        w("")

    # ---- 3
    w("## 3. Bytes per session")
    w("")
    w("| store | bytes per session | how | target |")
    w("|---|---:|---|---|")
    mem = {}
    for per_user in (2, 1):
        m = load_json(os.path.join(raw, "bytes", "memory-%d.json" % per_user))
        if not m:
            continue
        mem[per_user] = m
        w("| memory, %d session%s per user | **%s** (heap %s) | `session-bytes %s %d`: `MemoryStore::create` of %s sessions (mean user agent %.0f chars); growth of `VmRSS` ÷ sessions; heap = bytes requested from the allocator (counting allocator) | ≤ %d (aim): %s |" % (
            per_user, "s" if per_user > 1 else "", num(m["rss_bytes_per_session"]),
            num(m["heap_bytes_per_session"]), num(m["sessions"]), per_user, num(m["sessions"]),
            m["mean_user_agent_bytes"], MEMORY_TARGET,
            verdict(m["rss_bytes_per_session"] <= MEMORY_TARGET)))
    sq = load_json(os.path.join(raw, "bytes", "sqlite.json"))
    if sq and sq.get("rows"):
        total = sq["db_bytes"] + sq["wal_bytes"]
        parts = ", ".join("%s %s" % (k, num(v / sq["rows"])) for k, v in sorted(
            sq.get("by_object", {}).items(), key=lambda kv: -kv[1]) if v / sq["rows"] >= 1)
        if sq.get("sessions_bytes"):
            # The file also holds the bulk sessions' users (one per two
            # sessions): the figure is the sessions table's own pages.
            w("| SQLite, on disk | **%s** | pages of `latchkey_sessions` and its indexes (`dbstat`) ÷ %s rows, after `wal_checkpoint(TRUNCATE)`; the whole file, with its %s users rows, is %s per session; %s-byte pages; per object, ÷ sessions: %s | reported |" % (
                num(sq["sessions_bytes"] / sq["rows"]), num(sq["rows"]), num(sq.get("users", 0)),
                num(total / sq["rows"]), num(sq.get("page_size")), parts or "–"))
        else:
            w("| SQLite, on disk | **%s** | (database + WAL file after `wal_checkpoint(TRUNCATE)`) ÷ %s rows, users table (%s rows) and all; %s-byte pages; per object: %s | reported |" % (
                num(total / sq["rows"]), num(sq["rows"]), num(sq.get("users", 1)),
                num(sq.get("page_size")), parts or "–"))
    pg = load_json(os.path.join(raw, "bytes", "postgres.json"))
    if pg and pg.get("rows"):
        w("| PostgreSQL, on disk | **%s** | `pg_total_relation_size('latchkey_sessions')` ÷ %s rows (table %s + indexes %s), after `VACUUM ANALYZE`; the users table is not in it | reported |" % (
            num(pg["total_bytes"] / pg["rows"]), num(pg["rows"]),
            num(pg["table_bytes"] / pg["rows"]), num(pg["index_bytes"] / pg["rows"])))
    rd = load_json(os.path.join(raw, "bytes", "redis-%d.json" % large))
    if rd and rd.get("sessions"):
        w("| Redis, in memory | **%s** | growth of `used_memory` over loading %s sessions (hash + TTL + per-user set entry) ÷ sessions; their users are in SQLite (`users.db`), not in Redis | reported |" % (
            num((rd["used_memory_after"] - rd["used_memory_before"]) / rd["sessions"]), num(rd["sessions"])))
    w("")
    loads = sorted(glob.glob(os.path.join(raw, "load", "*.json")))
    if loads:
        w("Bulk loads (the benchmark's set-up, not a latchkey figure; live loads include one "
          "users row per two sessions, since every session is checked against its user): " + "; ".join(
            "%s %s %s rows%s in %.1f s" % (STORE_LABELS.get(j["store"], j["store"]), j["kind"],
                                           num(j["rows"]),
                                           " + %s users" % num(j["users"]) if "users" in j else "",
                                           j["seconds"])
            for j in (load_json(p) for p in loads) if j) + ".")
        w("")

    # ---- targets
    w("## Against issue 5's targets")
    w("")
    w("| target | goal | measured | |")
    w("|---|---|---:|---|")
    for s, h in headline.items():
        w("| %s GET p99 at %s sessions | ≤ %.1f× p99 at %s | %.2f× | %s |" % (
            STORE_LABELS[s], num(large), P99_TARGET, num(small), h["p99_ratio"],
            verdict(h["p99_ratio"] <= P99_TARGET)))
    for s, h in spread_headline.items():
        w("| %s GET p99 at %s sessions, spread over %s of them | ≤ %.1f× p99 at %s, spread over all | %.2f× | %s |" % (
            STORE_LABELS[s], num(large), num(int(meta.get("spread", 0))), P99_TARGET, num(small),
            h["p99_ratio"], verdict(h["p99_ratio"] <= P99_TARGET)))
    for s, st in sweeps.items():
        r = st.get("ratio")
        w("| %s GET p99 during the sweep of %s | ≤ %.0f× p99 before | %s | %s |" % (
            STORE_LABELS[s], num(st["remaining_at_start"]), SWEEP_TARGET,
            "–" if r is None else "%.2f×" % r, "–" if r is None else verdict(r <= SWEEP_TARGET)))
    if 2 in mem:
        v = mem[2]["rss_bytes_per_session"]
        w("| memory store bytes per session | ≤ %d (aim) | %s | %s |" % (
            MEMORY_TARGET, num(v), verdict(v <= MEMORY_TARGET)))
    w("")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "SCALE.md"), "w") as f:
        f.write(text)
    if readme:
        update_readme(readme, out, meta, headline, spread_headline, sweeps, mem, sq)
    return 0


def update_readme(path, out, meta, headline, spread_headline, sweeps, mem, sq):
    large, small = int(meta.get("large", 0)), int(meta.get("small", 0))
    rel = os.path.relpath(os.path.join(out, "SCALE.md"), os.path.dirname(os.path.abspath(path)))
    items = []
    for s, h in headline.items():
        items.append("%s %.2f×" % (STORE_LABELS[s], h["p99_ratio"]))
    lines = ["Last run: %s, %s cores, commit %s ([%s](%s)):" % (
        meta.get("date", "?")[:10], meta.get("nproc", "?"), meta.get("commit", "?"), rel, rel), ""]
    if items:
        lines.append("- GET /profile p99 with %s live sessions over p99 with %s (target ≤ %.1f×), "
                     "one session's cookie: %s." % (num(large), num(small), P99_TARGET, ", ".join(items)))
    sp = ["%s %.2f× (req/s %.2f×)" % (STORE_LABELS[s], h["p99_ratio"], h["rps_ratio"])
          for s, h in spread_headline.items()]
    if sp:
        lines.append("- The same with requests spread at random over %s of the %s sessions (over all "
                     "%s on the small store): %s." % (
                         num(int(meta.get("spread", 0))), num(large), num(small), ", ".join(sp)))
    sw = []
    for s, st in sweeps.items():
        r = st.get("ratio")
        took = "not finished" if st["seconds"] is None else "%.0f s" % st["seconds"]
        sw.append("%s %s (sweep took %s)" % (STORE_LABELS[s], "–" if r is None else "%.2f×" % r, took))
    if sw:
        lines.append("- GET p99 while the sweeper deletes %s expired sessions, over p99 before "
                     "(target ≤ %.0f×): %s; Redis expires by key TTL, no sweep." % (
                         num(int(meta.get("expired", 0))), SWEEP_TARGET, "; ".join(sw)))
    bits = []
    if 2 in mem:
        bits.append("memory store %s bytes resident per session (aim ≤ %d; %s heap bytes)" % (
            num(mem[2]["rss_bytes_per_session"]), MEMORY_TARGET, num(mem[2]["heap_bytes_per_session"])))
    if sq and sq.get("rows"):
        bits.append("SQLite %s bytes on disk per session" % num(
            (sq.get("sessions_bytes") or sq["db_bytes"] + sq["wal_bytes"]) / sq["rows"]))
    if bits:
        lines.append("- " + "; ".join(bits) + ".")
    replace_between(path, "<!-- scale:begin -->", "<!-- scale:end -->", "\n".join(lines))


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "redis-load":
        redis_load(*args)
    elif cmd == "known":
        known_rows(*args)
    elif cmd == "merge":
        merge_line(args)
    elif cmd == "sweep-line":
        sweep_line(args[0])
    elif cmd == "report":
        readme = None
        if len(args) >= 3 and args[1] == "--readme":
            readme = args[2]
        return build(args[0], readme)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
