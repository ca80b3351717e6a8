#!/usr/bin/env bash
# latchkey's benchmark, in one command. See bench/README.md.
#
#   bash bench/run.sh            # full run, ~10 min: writes bench/results/RESULTS.md and chart.png
#   bash bench/run.sh --smoke    # seconds per target, debug binaries: CI's check that it still runs
#
# Servers run pinned to one core (taskset -c 0), the load generators to the
# other (taskset -c 1), all on 127.0.0.1. Every figure that matters is a
# ratio measured in this same run: absolute numbers move with the machine
# and with whatever else it is doing.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/latchkey-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

ALL_TARGETS="floor latchkey-memory latchkey-sqlite latchkey-postgres latchkey-redis peer-memory peer-sqlite peer-sqlite-save"

usage() {
  cat <<EOF
usage: bash bench/run.sh [--smoke] [options]

  --smoke              seconds per target, debug binaries, storm on latchkey-sqlite only
  --duration S         seconds of one measured GET /profile run (default 6)
  --warmup S           seconds of unmeasured load before each measured run (default 2)
  --rounds N           GET runs per target, round-robin over the targets; medians are
                       reported (default 5)
  --login-duration S   seconds of POST /login load per target (default 10)
  --storm-duration S   seconds of each half of the login-storm test (default 10)
  --storm-targets L    comma list of targets that get the storm test (default: all with sessions)
  --targets L          comma list, from: ${ALL_TARGETS// /,}
  --get-only           only the GET /profile runs: no storm, no logins (quick A/B)
  --profile P          release (default) or debug binaries
  --out DIR            where RESULTS.md, chart.png and raw/ go (default bench/results,
                       bench/results/smoke with --smoke)
  --server-cpu N       core the servers run on (default 0)
  --client-cpu N       core the load generators run on (default 1)

Environment: BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
BENCH_REDIS_URL (default redis://127.0.0.1:6379). Targets whose service is not
reachable are reported as skipped.
EOF
}

SMOKE=0
DURATION=6
WARMUP=2
LOGIN_DURATION=10
STORM_DURATION=10
STORM_TARGETS=""
TARGETS=""
PROFILE=""
OUT=""
SERVER_CPU=0
CLIENT_CPU=1
GET_CONNS=32
LOGIN_CONNS=8
HASH_SECONDS=10
ROUNDS=5
GET_ONLY=0

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke)
      SMOKE=1
      DURATION=2 WARMUP=1 LOGIN_DURATION=2 STORM_DURATION=2 HASH_SECONDS=2 ROUNDS=1
      ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --login-duration) LOGIN_DURATION=$2; shift ;;
    --storm-duration) STORM_DURATION=$2; shift ;;
    --storm-targets) STORM_TARGETS=${2//,/ }; shift ;;
    --targets) TARGETS=${2//,/ }; shift ;;
    --profile) PROFILE=$2; shift ;;
    --get-only) GET_ONLY=1 ;;
    --out) OUT=$2; shift ;;
    --server-cpu) SERVER_CPU=$2; shift ;;
    --client-cpu) CLIENT_CPU=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ "$SMOKE" = 1 ]; then
  PROFILE=${PROFILE:-debug}
  OUT=${OUT:-$BENCH_DIR/results/smoke}
  STORM_TARGETS=${STORM_TARGETS:-latchkey-sqlite}
else
  PROFILE=${PROFILE:-release}
  OUT=${OUT:-$BENCH_DIR/results}
  STORM_TARGETS=${STORM_TARGETS:-latchkey-memory latchkey-sqlite latchkey-postgres latchkey-redis peer-memory peer-sqlite peer-sqlite-save}
fi
TARGETS=${TARGETS:-$ALL_TARGETS}
case "$PROFILE" in release|debug) ;; *) echo "--profile is release or debug" >&2; exit 2 ;; esac

PG_BASE=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_BASE=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
USERNAME=bench
PASSWORD="tangerine orbit kayak murmur lantern"
LOGIN_BODY="{\"username\": \"$USERNAME\", \"password\": \"$PASSWORD\"}"
STAMP=$(date +%Y%m%d%H%M%S)-$$

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- tools
install_tools() {
  command -v curl >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq curl; }
  command -v taskset >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq util-linux; }
  if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian package)"
    as_root apt-get update -qq || true
    as_root apt-get install -y -qq wrk >/dev/null || die "could not install wrk: apt-get install wrk"
  fi
  # Open-loop load for the login-storm test: wrk2 if the machine has it,
  # else oha (crates.io). The smoke run does not wait minutes to build oha.
  OPEN_LOOP=""
  if command -v wrk2 >/dev/null; then
    OPEN_LOOP=wrk2
  elif command -v oha >/dev/null || [ -x "$HOME/.cargo/bin/oha" ]; then
    OPEN_LOOP=oha
  elif [ "$SMOKE" = 0 ]; then
    log "installing oha (cargo install oha --locked), for the open-loop storm test"
    if cargo install oha --locked >"$WORK/oha-install.log" 2>&1; then OPEN_LOOP=oha
    else log "warning: could not install oha (see $WORK/oha-install.log): no storm test"; fi
  else
    log "smoke: no wrk2 or oha here; skipping the storm test (a full run installs oha)"
  fi
  if [ "$OPEN_LOOP" = oha ]; then
    OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
  fi
  if ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib (pip) for the chart"
    python3 -m pip install --quiet matplotlib >"$WORK/pip.log" 2>&1 \
      || log "warning: could not install matplotlib (see $WORK/pip.log): no chart"
  fi
}

# ---------------------------------------------------------------- helpers
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# utime + stime of a process, all threads, in clock ticks.
cpu_ticks() {
  local stat rest
  read -r stat <"/proc/$1/stat"
  rest=${stat##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $(( ${12} + ${13} ))
}

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

now() { date +%s.%N; }

# Every target's server runs for the whole run, each on its own port, all
# pinned to the server core: idle ones cost nothing, and the GET runs can
# then go round-robin, so that a burst of other work on the machine hits
# every target alike rather than whichever ran at that moment.
declare -A PID PORT COOKIE
start_server() { # TARGET LOGFILE ENV... -- CMD...
  local target=$1 logfile=$2; shift 2
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" taskset -c "$SERVER_CPU" "$@" >"$logfile" 2>&1 &
  PID[$target]=$!
}

stop_server() { # TARGET
  local pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PID[$1]"
}

wait_up() { # PID PORT LOGFILE
  local code
  for _ in $(seq 1 300); do
    kill -0 "$1" 2>/dev/null || { cat "$3" >&2; return 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/profile" || true)
    [ "$code" != 000 ] && return 0
    sleep 0.1
  done
  return 1
}

# Logs in with curl and prints the Cookie header value (name=value pairs).
login_cookie() { # PORT DIR
  curl -s -D "$2/login.headers" -o "$2/login.body" -H 'content-type: application/json' \
    -d "$LOGIN_BODY" "http://127.0.0.1:$1/login" || true
  grep -i '^set-cookie:' "$2/login.headers" | tr -d '\r' \
    | sed -E 's/^[^:]*:[[:space:]]*//; s/;.*//' | paste -sd';' - | sed 's/;/; /g'
}

# wrk, closed loop, on the client core. Writes OUT.txt (wrk's report) and
# OUT.json (the BENCH_JSON line).
run_wrk() { # OUT CONNS SECONDS SCRIPT URL [COOKIE]
  local out=$1 conns=$2 secs=$3 script=$4 url=$5 cookie=${6:-}
  local args=(-t1 "-c$conns" "-d${secs}s" --latency --timeout 5s -s "$script")
  [ -n "$cookie" ] && args+=(-H "Cookie: $cookie")
  BENCH_LUA_DIR="$BENCH_DIR/lua" BENCH_LOGIN_BODY="$LOGIN_BODY" \
    taskset -c "$CLIENT_CPU" wrk "${args[@]}" "$url" >"$out.txt" 2>&1 || true
  grep '^BENCH_JSON ' "$out.txt" | sed 's/^BENCH_JSON //' >"$out.json" || true
  [ -s "$out.json" ] || { cat "$out.txt" >&2; return 1; }
}

# Open loop at a fixed rate, on the client core. Writes OUT.json.
run_open_loop() { # OUT RATE SECONDS URL COOKIE
  local out=$1 rate=$2 secs=$3 url=$4 cookie=$5
  case "$OPEN_LOOP" in
    wrk2)
      taskset -c "$CLIENT_CPU" wrk2 -t1 "-c$GET_CONNS" "-d${secs}s" "-R$rate" --latency \
        -s "$BENCH_DIR/lua/report.lua" -H "Cookie: $cookie" "$url" >"$out.txt" 2>&1 || true
      grep '^BENCH_JSON ' "$out.txt" | sed 's/^BENCH_JSON //' >"$out.json" || true
      ;;
    oha)
      taskset -c "$CLIENT_CPU" "$OHA" --no-tui --output-format json --latency-correction \
        -z "${secs}s" -q "$rate" -c "$GET_CONNS" -H "Cookie: $cookie" "$url" \
        >"$out.json" 2>"$out.err" || true
      ;;
  esac
  [ -s "$out.json" ] || { cat "$out.err" "$out.txt" 2>/dev/null >&2; return 1; }
}

proc_snapshot() { # PID -> "ticks wall"
  echo "$(cpu_ticks "$1") $(now)"
}

write_proc() { # FILE PID BEFORE AFTER
  local t0 w0 t1 w1
  read -r t0 w0 <<<"$3"
  read -r t1 w1 <<<"$4"
  cat >"$1" <<EOF
{"cpu_ticks": $((t1 - t0)), "wall_s": $(python3 -c "print($w1 - $w0)"), "clk_tck": $(getconf CLK_TCK),
 "vmhwm_kb": $(status_kb "$2" VmHWM), "vmrss_kb": $(status_kb "$2" VmRSS), "threads": $(status_kb "$2" Threads)}
EOF
}

write_mem() { # FILE PID
  echo "{\"vmhwm_kb\": $(status_kb "$2" VmHWM), \"vmrss_kb\": $(status_kb "$2" VmRSS), \"threads\": $(status_kb "$2" Threads)}" >"$1"
}

json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

# ---------------------------------------------------------------- services
PG_SCHEMA=""
REDIS_PREFIX=""
pg_ready() {
  command -v psql >/dev/null || return 1
  if ! psql "$PG_BASE" -qtAc 'select 1' >/dev/null 2>&1; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
      log "starting PostgreSQL"
      as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
      for _ in $(seq 1 30); do psql "$PG_BASE" -qtAc 'select 1' >/dev/null 2>&1 && break; sleep 1; done
    fi
  fi
  psql "$PG_BASE" -qtAc 'select 1' >/dev/null 2>&1
}
redis_host_port() { local hp=${REDIS_BASE#redis://}; hp=${hp%%/*}; hp=${hp%%\?*}; echo "${hp%:*} ${hp##*:}"; }
redis_ready() {
  command -v redis-cli >/dev/null || return 1
  local h p
  read -r h p <<<"$(redis_host_port)"
  if ! redis-cli -h "$h" -p "$p" ping >/dev/null 2>&1 && command -v redis-server >/dev/null \
      && [ "$h" = 127.0.0.1 ]; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$p" --save "" --appendonly no >/dev/null
    for _ in $(seq 1 30); do redis-cli -h "$h" -p "$p" ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  redis-cli -h "$h" -p "$p" ping >/dev/null 2>&1
}

cleanup() {
  local t
  for t in "${!PID[@]}"; do stop_server "$t"; done
  if [ -n "$PG_SCHEMA" ]; then
    psql "$PG_BASE" -qc "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null 2>&1 || true
  fi
  if [ -n "$REDIS_PREFIX" ]; then
    local h p
    read -r h p <<<"$(redis_host_port)"
    redis-cli -h "$h" -p "$p" --scan --pattern "$REDIS_PREFIX*" 2>/dev/null \
      | xargs -r -n 500 redis-cli -h "$h" -p "$p" del >/dev/null 2>&1 || true
  fi
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
}

# ---------------------------------------------------------------- targets
# Starts TARGET, adds the user, logs in with curl and checks that the
# cookie gets the profile. A target whose service is missing is skipped.
setup_target() { # TARGET
  local target=$1 dir="$RAW/$1" port data kind=$1 envs=() cmd=()
  mkdir -p "$dir"
  port=$(free_port)
  data="$WORK/$target"
  mkdir -p "$data"
  local latchkey_db="sqlite://$data/latchkey.db" sessions=""
  case "$kind" in
    floor|peer-memory|peer-sqlite|peer-sqlite-save)
      local mode=${kind#peer-}
      envs=(BENCH_USERNAME="$USERNAME" BENCH_PASSWORD="$PASSWORD")
      cmd=("$BIN/bench-peer" --mode "$mode" --bind "127.0.0.1:$port" --db "$data/peer.db")
      ;;
    latchkey-*)
      case "$kind" in
        latchkey-memory) sessions=memory ;;
        latchkey-sqlite) ;;
        latchkey-postgres)
          pg_ready || { echo "PostgreSQL not reachable at $PG_BASE" >"$dir/skipped"; log "$target: skipped (no PostgreSQL)"; return 0; }
          PG_SCHEMA="bench_${STAMP//-/_}"
          psql "$PG_BASE" -qc "CREATE SCHEMA $PG_SCHEMA" >/dev/null
          latchkey_db="$PG_BASE?options=-c%20search_path%3D$PG_SCHEMA"
          ;;
        latchkey-redis)
          redis_ready || { echo "Redis not reachable at $REDIS_BASE" >"$dir/skipped"; log "$target: skipped (no Redis)"; return 0; }
          REDIS_PREFIX="latchkey-bench-$STAMP:"
          sessions="$REDIS_BASE?prefix=$REDIS_PREFIX"
          ;;
      esac
      local store_args=(--database "$latchkey_db")
      [ -n "$sessions" ] && store_args+=(--sessions "$sessions")
      printf '%s\n' "$PASSWORD" | "$BIN/latchkey" user add "$USERNAME" --role admin --password-stdin \
        "${store_args[@]}" >"$dir/user-add.log" 2>&1 || { cat "$dir/user-add.log" >&2; die "$target: latchkey user add failed"; }
      envs=(LATCHKEY_SECRET_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" LATCHKEY_LOG=warn)
      # The login test (and the storm test's login load, on this same
      # server) signs one user in from one address over $LOGIN_CONNS
      # connections. Sign-ins are counted before the password is verified,
      # and the contract lets at most --max-failures-per-user-address
      # (default 5) of them through at once per username and address, so
      # with the defaults about half the requests get 429 and the test would
      # time refusals, not sign-ins. The peers have no throttle; raising the
      # limits (latchkey targets only) keeps the workload the same for both:
      # every request a real sign-in, and latchkey still does its throttle
      # bookkeeping (count before, clear after) on each one. The per-address
      # count is taken back on each success, so it never passes the
      # connections in flight; raised too so that a larger -c cannot trip it.
      # The account count is cleared on each success too, so it stays under
      # its delay threshold (20) as long as fewer connections sign in at
      # once; --max-pending-logins (256) is far above them as well.
      local throttle_args=(--max-failures-per-user-address 1000000000 --max-failures-per-address 1000000000)
      cmd=("$BIN/latchkey" serve --bind "127.0.0.1:$port" "${store_args[@]}" "${throttle_args[@]}")
      ;;
    *) die "unknown target $target" ;;
  esac

  start_server "$target" "$dir/server.log" "${envs[@]}" -- "${cmd[@]}"
  wait_up "${PID[$target]}" "$port" "$dir/server.log" || die "$target: server did not come up (see $dir/server.log)"
  PORT[$target]=$port
  local cookie="none=1"
  if [ "$kind" != floor ]; then
    cookie=$(login_cookie "$port" "$data")   # not in raw/: it holds the session cookie
    [ -n "$cookie" ] || { cat "$data/login.headers" "$data/login.body" >&2; die "$target: login set no cookie"; }
  fi
  COOKIE[$target]=$cookie
  curl -s -H "Cookie: $cookie" -o "$dir/profile.body" -w '%{http_code}' \
    "http://127.0.0.1:$port/profile" >"$dir/profile.status" || true
  if [ "$(cat "$dir/profile.status")" != 200 ] || ! grep -q "Welcome to your profile, $USERNAME!" "$dir/profile.body"; then
    cat "$dir/profile.status" "$dir/profile.body" >&2
    die "$target: GET /profile with the cookie is not the signed-in profile"
  fi
  log "$target: up on 127.0.0.1:$port (pid ${PID[$target]}, core $SERVER_CPU), signed in"
}

is_up() { [ -n "${PID[$1]:-}" ]; }

# One closed-loop GET /profile run: a short warm-up, then the measured run,
# with the server's CPU time over it. Writes raw/TARGET/get-ROUND.*.
measure_get() { # TARGET ROUND
  local target=$1 round=$2 dir="$RAW/$1" url="http://127.0.0.1:${PORT[$1]}/profile"
  run_wrk "$WORK/$target/warmup-$round" "$GET_CONNS" "$WARMUP" "$BENCH_DIR/lua/report.lua" "$url" "${COOKIE[$target]}" \
    || die "$target: wrk failed"
  local before after
  before=$(proc_snapshot "${PID[$target]}")
  run_wrk "$dir/get-$round" "$GET_CONNS" "$DURATION" "$BENCH_DIR/lua/report.lua" "$url" "${COOKIE[$target]}" \
    || die "$target: wrk failed"
  after=$(proc_snapshot "${PID[$target]}")
  write_proc "$dir/get-$round.proc.json" "${PID[$target]}" "$before" "$after"
  log "$target round $round: $(json_field "$dir/get-$round.json" "'%.0f req/s, p99 %.2f ms, %d non-2xx' % (d['requests'] / d['duration_us'] * 1e6, d['latency_us']['p99'] / 1000, d['errors']['status'])"), server CPU $(json_field "$dir/get-$round.proc.json" "'%.0f%%' % (d['cpu_ticks'] / d['clk_tck'] / d['wall_s'] * 100)")"
}

# GET /profile at half the target's median closed-loop rate, open loop,
# first alone, then while wrk saturates POST /login.
storm_test() { # TARGET
  local target=$1 dir="$RAW/$1" url="http://127.0.0.1:${PORT[$1]}/profile" rate
  rate=$(python3 -c '
import json, statistics, sys
rps = [json.load(open(p)) for p in sys.argv[1:]]
print(max(1, int(statistics.median(d["requests"] / d["duration_us"] * 1e6 for d in rps) / 2)))
' "$dir"/get-*[0-9].json)
  echo "$rate" >"$dir/storm.rate"
  log "$target: storm test: GET at $rate req/s open loop ($OPEN_LOOP), ${STORM_DURATION}s alone, then ${STORM_DURATION}s under wrk -c$LOGIN_CONNS POST /login"
  run_open_loop "$dir/storm-idle" "$rate" "$STORM_DURATION" "$url" "${COOKIE[$target]}" || die "$target: $OPEN_LOOP failed"
  write_mem "$dir/storm-idle.mem.json" "${PID[$target]}"
  run_wrk "$dir/storm-logins" "$LOGIN_CONNS" $((STORM_DURATION + 2)) "$BENCH_DIR/lua/login.lua" \
    "http://127.0.0.1:${PORT[$target]}/login" &
  local storm_pid=$!
  sleep 1
  run_open_loop "$dir/storm-busy" "$rate" "$STORM_DURATION" "$url" "${COOKIE[$target]}" || die "$target: $OPEN_LOOP failed"
  wait "$storm_pid" || die "$target: storm logins failed"
  write_mem "$dir/storm-busy.mem.json" "${PID[$target]}"
  log "$target: storm: $(python3 "$BENCH_DIR/report.py" --storm-line "$dir")"
}

# Closed-loop POST /login: every request a real sign-in (Argon2id verify,
# new session).
login_test() { # TARGET
  local target=$1 dir="$RAW/$1" before after
  before=$(proc_snapshot "${PID[$target]}")
  run_wrk "$dir/login" "$LOGIN_CONNS" "$LOGIN_DURATION" "$BENCH_DIR/lua/login.lua" \
    "http://127.0.0.1:${PORT[$target]}/login" || die "$target: wrk login failed"
  after=$(proc_snapshot "${PID[$target]}")
  write_proc "$dir/login.proc.json" "${PID[$target]}" "$before" "$after"
  log "$target: POST /login: $(json_field "$dir/login.json" "'%.1f logins/s, p99 %.0f ms, %d non-2xx' % (d['requests'] / d['duration_us'] * 1e6, d['latency_us']['p99'] / 1000, d['errors']['status'])")"
}

# ---------------------------------------------------------------- main
# One run at a time per machine: two runs would share the server core and
# spoil each other's numbers (and, with the same --out, each other's files).
LOCK="${TMPDIR:-/tmp}/latchkey-bench.lock"
exec 9>"$LOCK"
if ! flock -n 9; then
  log "another bench/run.sh holds $LOCK on this machine; waiting for it to finish"
  flock 9
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench.XXXXXX")
trap cleanup EXIT
trap 'exit 130' INT TERM

CORES=$(nproc)
if [ "$CORES" -lt 2 ]; then
  log "warning: $CORES core: server and load generator share it; ratios are still comparable, absolute numbers are not"
  CLIENT_CPU=$SERVER_CPU
fi

install_tools

log "building $PROFILE binaries (cargo build -p latchkey-server -p latchkey-bench-peer)"
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet -p latchkey-server -p latchkey-bench-peer
  BIN=$CARGO_TARGET_DIR/release
else
  cargo build --quiet -p latchkey-server -p latchkey-bench-peer
  BIN=$CARGO_TARGET_DIR/debug
fi

mkdir -p "$OUT"
RAW="$OUT/raw"
rm -rf "$RAW"
mkdir -p "$RAW"

log "Argon2id rate on core $SERVER_CPU (OWASP: 19 MiB, t=2, p=1), ${HASH_SECONDS}s"
taskset -c "$SERVER_CPU" "$BIN/argon2-rate" "$HASH_SECONDS" >"$RAW/argon2.txt"
log "$(cat "$RAW/argon2.txt")"

{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc=$CORES"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -srm)"
  echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "dirty_paths=$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | awk '{print $NF}' | paste -sd, -)"
  echo "profile=$PROFILE"
  echo "smoke=$SMOKE"
  echo "duration=$DURATION"
  echo "warmup=$WARMUP"
  echo "rounds=$ROUNDS"
  echo "login_duration=$LOGIN_DURATION"
  echo "storm_duration=$STORM_DURATION"
  echo "get_conns=$GET_CONNS"
  echo "login_conns=$LOGIN_CONNS"
  echo "open_loop=${OPEN_LOOP:-none}"
  echo "wrk=$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
  [ "$OPEN_LOOP" = oha ] && echo "oha=$("$OHA" --version | head -n1)"
  echo "server_cpu=$SERVER_CPU"
  echo "client_cpu=$CLIENT_CPU"
  echo "targets=$TARGETS"
} >"$RAW/meta.env"

for target in $TARGETS; do
  setup_target "$target"
done

LIVE=()
for target in $TARGETS; do is_up "$target" && LIVE+=("$target"); done
log "GET /profile: $ROUNDS round(s) of ${WARMUP}s warm-up + ${DURATION}s measured per target (wrk -t1 -c$GET_CONNS), targets in a rotating order"
for round in $(seq 1 "$ROUNDS"); do
  n=${#LIVE[@]}
  for i in $(seq 0 $((n - 1))); do
    measure_get "${LIVE[$(( (i + round - 1) % n ))]}" "$round"
  done
done
for target in "${LIVE[@]}"; do
  write_mem "$RAW/$target/after-get.mem.json" "${PID[$target]}"
done

if [ -n "$OPEN_LOOP" ] && [ "$GET_ONLY" = 0 ]; then
  for target in "${LIVE[@]}"; do
    [[ " $STORM_TARGETS " == *" $target "* ]] && storm_test "$target"
  done
fi

[ "$GET_ONLY" = 1 ] || log "POST /login: ${LOGIN_DURATION}s per target (wrk -t1 -c$LOGIN_CONNS)"
for target in "${LIVE[@]}"; do
  [ "$target" = floor ] || [ "$GET_ONLY" = 1 ] && continue
  login_test "$target"
  stop_server "$target"   # one hashing server at a time on the core
done

for t in "${!PID[@]}"; do stop_server "$t"; done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/meta.env"

REPORT_ARGS=("$OUT")
# A full run into the default place also refreshes the README's table.
if [ "$SMOKE" = 0 ] && [ "$OUT" = "$BENCH_DIR/results" ] && [ "$GET_ONLY" = 0 ]; then
  REPORT_ARGS+=(--readme "$ROOT/README.md")
fi
python3 "$BENCH_DIR/report.py" "${REPORT_ARGS[@]}"
log "wrote $OUT/RESULTS.md$([ -f "$OUT/chart.png" ] && echo " and $OUT/chart.png")"
