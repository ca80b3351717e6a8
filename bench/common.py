#!/usr/bin/env python3
"""What bench/report.py and bench/scale.py share, and two helpers common.sh
calls:

    python3 bench/common.py summary RUN.json [PROC.json]   # one log line of a wrk run
    python3 bench/common.py redis-unlink                   # keys on stdin -> UNLINK batches (RESP)

Only the standard library.
"""

import json
import os
import re
import sys


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_env(path):
    """meta.env: KEY=VALUE lines."""
    env = {}
    try:
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    env[k] = v
    except OSError:
        pass
    return env


def read_number(path, kind=float):
    try:
        with open(path) as f:
            return kind(f.read().strip())
    except (OSError, ValueError):
        return None


def numbered(path, stem):
    """The numbers N for which PATH/STEM-N.json exists, in order."""
    pat = re.compile(re.escape(stem) + r"-(\d+)\.json")
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(pat.fullmatch, names) if m)


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def rate(d):
    """Requests per second of a BENCH_JSON run."""
    return d["requests"] / d["duration_us"] * 1e6 if d["duration_us"] else 0.0


def cpu_share(p):
    """The server's CPU over a run (1.0 = its whole core), from with_cpu's file."""
    return p["cpu_ticks"] / p["clk_tck"] / p["wall_s"] if p and p.get("wall_s") else None


def verdict(ok):
    return "met" if ok else "**missed**"


def replace_between(path, begin, end, body):
    """Replaces what lies between the markers BEGIN and END in the file PATH."""
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        print(f"warning: {path} has no {begin} … {end} markers; not updated", file=sys.stderr)
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + body.strip("\n") + "\n" + end + tail)


def resp(*args):
    """One Redis command in RESP, for redis-cli --pipe."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def redis_unlink():
    out, batch = sys.stdout.buffer, []
    for line in sys.stdin:
        if line.strip():
            batch.append(line.rstrip("\n"))
        if len(batch) >= 500:
            out.write(resp("UNLINK", *batch))
            batch = []
    if batch:
        out.write(resp("UNLINK", *batch))
    out.flush()


def summary(run, proc=None):
    d = load_json(run)
    lat = d["latency_us"]
    line = "%.0f req/s, p50 %.2f ms, p99 %.2f ms, %d non-2xx" % (
        rate(d), lat["p50"] / 1000, lat["p99"] / 1000, d["errors"]["status"])
    cpu = cpu_share(load_json(proc)) if proc else None
    return line + (", server CPU %.0f%%" % (cpu * 100) if cpu is not None else "")


if __name__ == "__main__":
    if sys.argv[1:2] == ["summary"]:
        print(summary(*sys.argv[2:4]))
    elif sys.argv[1:2] == ["redis-unlink"]:
        redis_unlink()
    else:
        sys.exit(__doc__)
