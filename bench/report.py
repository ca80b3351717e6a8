#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements (OUT/raw/) into OUT/RESULTS.md and
OUT/chart.png, and, with --readme PATH, the table between the README's
`<!-- bench:begin -->` and `<!-- bench:end -->` markers.

    python3 bench/report.py OUT [--readme README.md]
    python3 bench/report.py --storm-rate DIR | --storm-line DIR   # for run.sh, from raw/TARGET

Only the standard library is needed for the table; matplotlib for the chart.
"""

import os
import re
import sys

from common import load_env, load_json, median, numbered, rate, replace_between, verdict

LABELS = {
    "floor": "floor: bare axum handler, no session",
    "latchkey-memory": "latchkey, memory store",
    "latchkey-sqlite": "latchkey, SQLite store (default)",
    "latchkey-verify": "latchkey, SQLite store, GET /auth/verify (forward auth)",
    "latchkey-postgres": "latchkey, PostgreSQL store",
    "latchkey-redis": "latchkey, Redis store",
    "peer-memory": "tower-sessions + axum-login, memory store",
    "peer-sqlite": "tower-sessions + axum-login, SQLite store",
    "peer-sqlite-save": "tower-sessions + axum-login, SQLite, save every request",
    "peer-redis": "tower-sessions + axum-login, Redis store",
}
SHORT = {
    "floor": "floor",
    "latchkey-memory": "latchkey memory",
    "latchkey-sqlite": "latchkey SQLite",
    "latchkey-verify": "latchkey /auth/verify",
    "latchkey-postgres": "latchkey PostgreSQL",
    "latchkey-redis": "latchkey Redis",
    "peer-memory": "peer memory",
    "peer-sqlite": "peer SQLite",
    "peer-sqlite-save": "peer SQLite, save always",
    "peer-redis": "peer Redis",
}
ORDER = list(LABELS)

# The issue's targets (issue 11), as ratios measured in the same run.
GET_TARGETS = {
    "latchkey-memory": 0.90,
    "latchkey-sqlite": 0.85,
    "latchkey-postgres": 0.60,
    "latchkey-redis": 0.60,
}
LOGIN_TARGET = 0.90  # logins/s over the one-core Argon2id hash rate
STORM_TARGET = 3.0  # storm p99 over idle p99, at most


def wrk_stats(d):
    """req/s, latencies in ms and error count from a BENCH_JSON line."""
    if not d:
        return None
    errors = sum(d["errors"].values())
    lat = d["latency_us"]
    return {
        "rps": rate(d),
        "requests": d["requests"],
        "p50": lat["p50"] / 1000,
        "p99": lat["p99"] / 1000,
        "p999": lat["p999"] / 1000,
        "errors": errors,
        "status_errors": d["errors"]["status"],
    }


def open_loop_stats(d):
    """The same from oha's JSON (seconds) or a wrk2 BENCH_JSON line."""
    if not d:
        return None
    if "latency_us" in d:
        return wrk_stats(d)
    summary = d.get("summary", {})
    pct = d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    total = sum(codes.values())
    # oha counts the requests still in flight when -z runs out as errors.
    errors = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
    return {
        "rps": summary.get("requestsPerSec") or 0.0,
        "requests": total,
        "p50": (pct.get("p50") or 0) * 1000,
        "p99": (pct.get("p99") or 0) * 1000,
        "p999": (pct.get("p99.9") or 0) * 1000,
        "errors": errors + (total - ok),
        "status_errors": total - ok,
    }


def proc_stats(d):
    if not d:
        return None
    cpu_s = d["cpu_ticks"] / d["clk_tck"]
    cpu = cpu_s / d["wall_s"] if d["wall_s"] else 0.0
    return {"cpu": cpu * 100, "cpu_s": cpu_s, "wall_s": d["wall_s"], "hwm_mib": d["vmhwm_kb"] / 1024}


def collect(raw):
    targets = {}
    for name in sorted(os.listdir(raw)):
        path = os.path.join(raw, name)
        if not os.path.isdir(path):
            continue
        t = {"name": name}
        skipped = os.path.join(path, "skipped")
        if os.path.exists(skipped):
            with open(skipped) as f:
                t["skipped"] = f.read().strip()
        t["rounds"] = {}
        for r in numbered(path, "get"):
            g = wrk_stats(load_json(os.path.join(path, f"get-{r}.json")))
            if g:
                p = proc_stats(load_json(os.path.join(path, f"get-{r}.proc.json")))
                g["proc"] = p
                g["per_cpu"] = g["requests"] / p["cpu_s"] if p and p["cpu_s"] else None
                t["rounds"][r] = g
        rs = list(t["rounds"].values())
        if rs:
            t["get"] = {
                "rps": median(g["rps"] for g in rs),
                "p50": median(g["p50"] for g in rs),
                "p99": median(g["p99"] for g in rs),
                "errors": sum(g["errors"] for g in rs),
                "cpu": median(g["proc"] and g["proc"]["cpu"] for g in rs),
                "per_cpu": median(g["per_cpu"] for g in rs),
            }
        else:
            t["get"] = None
        mem = load_json(os.path.join(path, "after-get.mem.json"))
        t["get_hwm_mib"] = mem["vmhwm_kb"] / 1024 if mem else None
        t["login"] = wrk_stats(load_json(os.path.join(path, "login.json")))
        t["login_proc"] = proc_stats(load_json(os.path.join(path, "login.proc.json")))
        t["storm_idle"] = open_loop_stats(load_json(os.path.join(path, "storm-idle.json")))
        t["storm_busy"] = open_loop_stats(load_json(os.path.join(path, "storm-busy.json")))
        t["storm_logins"] = wrk_stats(load_json(os.path.join(path, "storm-logins.json")))
        mem = load_json(os.path.join(path, "storm-busy.mem.json"))
        t["storm_hwm_mib"] = mem["vmhwm_kb"] / 1024 if mem else None
        try:
            with open(os.path.join(path, "storm.rate")) as f:
                t["storm_rate"] = int(f.read().strip())
        except (OSError, ValueError):
            t["storm_rate"] = None
        targets[name] = t
    return targets


def ratios_to_floor(targets, key):
    """Per target: the median and range of KEY (rps or per_cpu) ÷ the
    floor's KEY in the same round."""
    floor = targets.get("floor")
    out = {}
    if not floor or not floor.get("rounds"):
        return out
    for name, t in targets.items():
        rs = [
            t["rounds"][r][key] / floor["rounds"][r][key]
            for r in t.get("rounds", {})
            if r in floor["rounds"] and floor["rounds"][r][key] and t["rounds"][r][key]
        ]
        if rs:
            out[name] = (median(rs), min(rs), max(rs))
    return out


def hash_rate(raw):
    """(hashes per second, hashes per CPU-second) of argon2-rate."""
    try:
        with open(os.path.join(raw, "argon2.txt")) as f:
            text = f.read()
    except OSError:
        return None, None
    wall = re.search(r"hashes_per_second=([0-9.]+)", text)
    cpu = re.search(r"hashes_per_cpu_second=([0-9.]+)", text)
    return (float(wall.group(1)) if wall else None, float(cpu.group(1)) if cpu else None)


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def build(out, readme=None):
    raw = os.path.join(out, "raw")
    meta = load_env(os.path.join(raw, "meta.env"))
    targets = collect(raw)
    rate, rate_cpu = hash_rate(raw)
    ratios = ratios_to_floor(targets, "per_cpu")
    raw_ratios = ratios_to_floor(targets, "rps")
    names = [n for n in ORDER if n in targets]

    lines = []
    w = lines.append
    smoke = meta.get("smoke") == "1"
    w("# latchkey benchmark results" + (" (smoke run: not a measurement)" if smoke else ""))
    w("")
    w(f"- date: {meta.get('date', '?')}")
    w(f"- machine: {meta.get('nproc', '?')} cores (`nproc`), {meta.get('cpu', '?')}, {meta.get('kernel', '?')}")
    w(
        f"- load average at start / end: {meta.get('loadavg', '?')} / {meta.get('loadavg_end', '?')}"
        " (other work on the machine: the ratios, measured side by side, are what to read)"
    )
    w(
        f"- code: commit {meta.get('commit', '?')}"
        + (f" plus uncommitted changes to {meta['dirty_paths']}" if meta.get("dirty_paths") else "")
        + (" plus uncommitted changes in crates/" if meta.get("dirty") == "yes" else "")
        + f", `{meta.get('profile', '?')}` build"
    )
    w(
        f"- server pinned to core {meta.get('server_cpu', '?')} (`taskset`), load generator to core "
        f"{meta.get('client_cpu', '?')}; all on 127.0.0.1; {meta.get('wrk', 'wrk')}"
        + (f", {meta['oha']}" if meta.get("oha") else "")
    )
    w(
        f"- GET /profile: `wrk -t1 -c{meta.get('get_conns', '?')} -d{meta.get('duration', '?')}s --latency` "
        f"with the session cookie, each after {meta.get('warmup', '?')} s of warm-up, "
        f"{meta.get('rounds', '?')} round(s) over all targets in turn (medians reported); "
        f"POST /login: `wrk -t1 -c{meta.get('login_conns', '?')} -d{meta.get('login_duration', '?')}s` "
        "(JSON credentials, every request a real sign-in)"
    )
    w("- rerun: `bash bench/run.sh` (see bench/README.md)")
    w("")

    # --- GET table
    w("## Authenticated GET /profile")
    w("")
    w(
        "Each round runs every target once, one after the other. Other work on the machine takes "
        "the server's core away at random moments, which moves req/s a lot and the work done per "
        "CPU-second of the server hardly at all; so the headline ratio is **requests per server "
        "CPU-second**, over the floor's in the same round: the median over the rounds, the "
        "lowest and highest in brackets. On an idle machine, where every server keeps its core "
        "busy, it equals the req/s ratio, given beside it. Latencies and CPU: medians over the "
        "rounds; p99 includes any time the server waited for its core."
    )
    w("")
    w("| target | × floor per CPU-s (range) | × floor req/s | req/s | req per CPU-s | server CPU | p50 ms | p99 ms | peak RSS MiB |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        t = targets[n]
        if t.get("skipped"):
            w(f"| {LABELS[n]} | skipped: {t['skipped']} | | | | | | | |")
            continue
        g = t["get"]
        if not g:
            w(f"| {LABELS[n]} | failed | | | | | | | |")
            continue
        r = ratios.get(n)
        ratio = f"**{r[0]:.2f}×** ({r[1]:.2f}–{r[2]:.2f})" if r else "—"
        rr = raw_ratios.get(n)
        note = f" ({g['errors']} errors)" if g["errors"] else ""
        w(
            f"| {LABELS[n]} | {ratio} | {fmt(rr and rr[0], '.2f')}× | {g['rps']:,.0f}{note} "
            f"| {fmt(g['per_cpu'], ',.0f')} | {fmt(g['cpu'], '.0f')}% | {g['p50']:.2f} | {g['p99']:.2f} "
            f"| {fmt(t['get_hwm_mib'], '.1f')} |"
        )
    w("")
    w(
        "Server CPU: the server process's user + system time (all threads) over the wall time of "
        "the measured run; 100% = the whole core it is pinned to. PostgreSQL's and Redis's own "
        "CPU is not in it. Peak RSS: the server's `VmHWM` after the GET runs."
    )
    w("")

    # --- logins
    w("## Logins")
    w("")
    if rate:
        w(
            f"One core hashes **{rate:.1f} Argon2id/s** at OWASP's parameters (19 MiB, t=2, p=1; "
            f"`argon2-rate` pinned to the server's core; {fmt(rate_cpu, '.1f')} per CPU-second of it): "
            "the login ceiling of a one-core server. Each login below is a real sign-in: Argon2id "
            "verify, a new session stored, the cookie set."
        )
        w("")
    w("| target | logins/s | × hash rate | logins per CPU-s ÷ hashes per CPU-s | p50 ms | p99 ms | errors | server CPU | peak RSS MiB: after GETs → after all logins |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        t = targets[n]
        lg, p = t["login"], t["login_proc"]
        if not lg:
            continue
        ratio = lg["rps"] / rate if rate else None
        per_cpu = lg["requests"] / p["cpu_s"] / rate_cpu if p and p["cpu_s"] and rate_cpu else None
        w(
            f"| {LABELS[n]} | {lg['rps']:.1f} | {fmt(ratio, '.2f')}× | {fmt(per_cpu, '.2f')}× "
            f"| {lg['p50']:.0f} | {lg['p99']:.0f} | {lg['errors']} | {fmt(p and p['cpu'], '.0f')}% "
            f"| {fmt(t['get_hwm_mib'], '.1f')} → {fmt(p and p['hwm_mib'], '.1f')} |"
        )
    w("")

    # --- storm
    storm = [n for n in names if targets[n]["storm_idle"] and targets[n]["storm_busy"]]
    if storm:
        w("## Login storm isolation")
        w("")
        w(
            f"GET /profile at a fixed rate, half the target's own closed-loop req/s above, open loop "
            f"({meta.get('open_loop', '?')}, latencies corrected for coordinated omission), "
            f"{meta.get('storm_duration', '?')} s alone, then {meta.get('storm_duration', '?')} s while "
            f"`wrk -c{meta.get('login_conns', '?')}` POSTs logins as fast as the server takes them."
        )
        w("")
        w("| target | rate req/s | idle p50 ms | idle p99 ms | storm p50 ms | storm p99 ms | storm p99 ÷ idle p99 | logins/s during storm | peak RSS MiB |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in storm:
            t = targets[n]
            i, b, sl = t["storm_idle"], t["storm_busy"], t["storm_logins"]
            ratio = b["p99"] / i["p99"] if i["p99"] else None
            errs = f" ({b['errors']} errors)" if b["errors"] else ""
            w(
                f"| {LABELS[n]} | {t['storm_rate']:,} | {i['p50']:.2f} | {i['p99']:.2f} | {b['p50']:.2f} "
                f"| {b['p99']:.2f}{errs} | {fmt(ratio, '.1f')}× | {fmt(sl and sl['rps'], '.1f')} "
                f"| {fmt(t['storm_hwm_mib'], '.1f')} |"
            )
        w("")

    # --- targets
    w("## Against issue 11's targets")
    w("")
    w("| target | goal | measured | |")
    w("|---|---|---:|---|")
    for n, goal in GET_TARGETS.items():
        if n not in ratios:
            continue
        r = ratios[n][0]
        rr = raw_ratios.get(n, (None,))[0]
        w(
            f"| {SHORT[n]} GET | ≥ {goal:.2f}× floor | {r:.2f}× per CPU-s "
            f"({fmt(rr, '.2f')}× req/s) | {verdict(r >= goal)} |"
        )
    if "latchkey-redis" in ratios and "peer-redis" in ratios:
        r = ratios["latchkey-redis"][0] / ratios["peer-redis"][0]
        w(
            f"| {SHORT['latchkey-redis']} GET against {SHORT['peer-redis']} | ≥ 2.50× | "
            f"{r:.2f}× per CPU-s | {verdict(r >= 2.5)} |"
        )
    for n in names:
        t = targets[n]
        if n.startswith("latchkey") and t["login"] and rate:
            r = t["login"]["rps"] / rate
            w(f"| {SHORT[n]} logins | ≥ {LOGIN_TARGET:.2f}× hash rate | {r:.2f}× | {verdict(r >= LOGIN_TARGET)} |")
    for n in storm:
        if n.startswith("latchkey"):
            t = targets[n]
            r = t["storm_busy"]["p99"] / t["storm_idle"]["p99"] if t["storm_idle"]["p99"] else float("inf")
            w(f"| {SHORT[n]} storm | p99 ≤ {STORM_TARGET:.0f}× idle p99 | {r:.1f}× | {verdict(r <= STORM_TARGET)} |")
    w("")
    chart_ok = chart(out, targets, names, ratios, rate, storm, meta)
    if chart_ok:
        w("![benchmark chart](chart.png)")
        w("")

    text = "\n".join(lines)
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write(text)
    if readme:
        update_readme(readme, text)
    return 0


def update_readme(path, text):
    """Replaces what lies between the README's bench markers."""
    body = text.split("\n", 1)[1]  # drop the H1
    # The long explanations stay in RESULTS.md and bench/README.md.
    body = "\n".join(
        line for line in body.split("\n") if not line.startswith(("Each round runs", "Server CPU: the server"))
    )
    body = re.sub(r"\n{3,}", "\n\n", body)
    body = body.replace("## ", "#### ").replace("](chart.png)", "](bench/results/chart.png)")
    replace_between(path, "<!-- bench:begin -->", "<!-- bench:end -->", body.strip())


def chart(out, targets, names, ratios, rate, storm, meta):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("report.py: matplotlib missing: no chart", file=sys.stderr)
        return False

    def colour(n):
        return "#7f7f7f" if n == "floor" else ("#1f77b4" if n.startswith("latchkey") else "#ff7f0e")

    get_names = [n for n in names if n in ratios]
    login_names = [n for n in names if targets[n]["login"]]
    panels = 2 + (1 if storm else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5.2))
    title = "latchkey benchmark: server on 1 core, wrk on the other"
    if meta.get("smoke") == "1":
        title += f" (SMOKE RUN, {meta.get('profile', '?')} build: not a measurement)"
    fig.suptitle(f"{title}\n{meta.get('date', '')}, {meta.get('cpu', '')}, nproc={meta.get('nproc', '?')}")

    ax = axes[0]
    meds = [ratios[n][0] for n in get_names]
    errs = [[ratios[n][0] - ratios[n][1] for n in get_names], [ratios[n][2] - ratios[n][0] for n in get_names]]
    ys = list(range(len(get_names)))[::-1]
    ax.barh(ys, meds, color=[colour(n) for n in get_names], xerr=errs, ecolor="black", capsize=2)
    ax.set_yticks(ys, [SHORT[n] for n in get_names])
    for y, n, r in zip(ys, get_names, meds):
        ax.text(ratios[n][2] + 0.02, y, f"{r:.2f}× ({targets[n]['get']['rps'] / 1000:.0f}k/s)", va="center", fontsize=8)
    for goal, label in ((0.85, "SQLite target 0.85×"), (0.9, "memory target 0.90×")):
        ax.axvline(goal, color="green", linestyle=":", linewidth=1)
        ax.text(goal, len(get_names) - 0.4, label, rotation=90, fontsize=7, color="green", va="top", ha="right")
    ax.set_xlim(0, max([ratios[n][2] for n in get_names] + [1.0]) * 1.4)
    ax.set_xlabel("authenticated GET /profile, × floor (higher is better)")

    ax = axes[1]
    xs = range(len(login_names))
    vals = [targets[n]["login"]["rps"] for n in login_names]
    ax.bar(xs, vals, color=[colour(n) for n in login_names])
    ax.set_xticks(list(xs), [SHORT[n] for n in login_names], rotation=35, ha="right", fontsize=8)
    if rate:
        ax.axhline(rate, color="black", linestyle="--", linewidth=1)
        ax.text(
            len(login_names) - 0.5, rate * 1.01, f"1-core Argon2id rate {rate:.0f}/s",
            fontsize=7, va="bottom", ha="right", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )
        ax.axhline(0.9 * rate, color="green", linestyle=":", linewidth=1)
    for x, v in zip(xs, vals):
        ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, max(vals + [rate or 0]) * 1.2)
    ax.set_ylabel("logins/s (POST /login, Argon2id OWASP)")

    if storm:
        ax = axes[2]
        xs = list(range(len(storm)))
        idle = [targets[n]["storm_idle"]["p99"] for n in storm]
        busy = [targets[n]["storm_busy"]["p99"] for n in storm]
        ax.bar([x - 0.2 for x in xs], idle, width=0.4, label="idle p99", color="#9ecae1")
        ax.bar([x + 0.2 for x in xs], busy, width=0.4, label="during login storm p99", color="#de2d26")
        for x, i in zip(xs, idle):
            ax.hlines(STORM_TARGET * i, x - 0.4, x + 0.4, colors="green", linestyles=":", linewidth=1.5)
        ax.set_xticks(xs, [SHORT[n] for n in storm], rotation=35, ha="right", fontsize=8)
        ax.set_xlim(-0.8, len(storm) - 0.2)
        if max(busy + idle) > 30 * max(min(idle), 1e-3):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_ylabel("GET /profile p99 ms at half capacity, open loop")
        for x, i, b in zip(xs, idle, busy):
            ax.text(x + 0.2, b, f"{b / i:.1f}×" if i else "", ha="center", va="bottom", fontsize=8)
        ax.plot([], [], color="green", linestyle=":", label="3× idle p99 (target)")
        ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(os.path.join(out, "chart.png"), dpi=110)
    plt.close(fig)
    return True


def storm_line(path):
    """One line for run.sh's log, from one target's raw directory."""
    i = open_loop_stats(load_json(os.path.join(path, "storm-idle.json")))
    b = open_loop_stats(load_json(os.path.join(path, "storm-busy.json")))
    lg = wrk_stats(load_json(os.path.join(path, "storm-logins.json")))
    if not i or not b:
        return "no result"
    return (
        f"idle p99 {i['p99']:.2f} ms, during logins p99 {b['p99']:.2f} ms ({b['p99'] / i['p99']:.1f}×), "
        f"{b['rps']:.0f} req/s achieved, {lg['rps'] if lg else 0:.1f} logins/s, {b['errors']} errors"
    )


def storm_rate(path):
    """Half the target's median closed-loop GET req/s: the storm test's rate."""
    rps = median(rate(load_json(os.path.join(path, f"get-{r}.json"))) for r in numbered(path, "get"))
    return max(1, int(rps / 2))


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    if argv[0] in ("--storm-line", "--storm-rate"):
        print((storm_line if argv[0] == "--storm-line" else storm_rate)(argv[1]))
        return 0
    out = argv[0]
    readme = None
    if len(argv) >= 3 and argv[1] == "--readme":
        readme = argv[2]
    return build(out, readme)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
