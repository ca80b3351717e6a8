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
LOG_TAG=bench
source "$(dirname "$0")/common.sh"

ALL_TARGETS="floor latchkey-memory latchkey-sqlite latchkey-verify latchkey-postgres latchkey-redis peer-memory peer-sqlite peer-sqlite-save peer-redis"
# latchkey-verify: the SQLite server asked GET /auth/verify (forward auth) as
# a proxy asks it, instead of GET /profile; the same server code otherwise,
# so it gets no storm and no login runs of its own.
GET_ONLY_TARGETS="latchkey-verify"
declare -A GET_PATH=([latchkey-verify]=/auth/verify)
# What nginx's auth_request (docs/nginx.conf) sends besides the cookie.
VERIFY_HEADERS=(-H "X-Forwarded-Method: GET" -H "X-Forwarded-Proto: https"
  -H "X-Forwarded-Host: app.example.com" -H "X-Forwarded-Uri: /docs/page?q=1"
  -H "X-Original-URL: https://app.example.com/docs/page?q=1" -H "X-Forwarded-For: 203.0.113.9")

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


OPTIONS="DURATION WARMUP ROUNDS LOGIN_DURATION STORM_DURATION STORM_TARGETS TARGETS PROFILE OUT SERVER_CPU CLIENT_CPU"
FLAGS="GET_ONLY"
DURATION=6 WARMUP=2 ROUNDS=5 LOGIN_DURATION=10 STORM_DURATION=10 HASH_SECONDS=10 LOGIN_CONNS=8 GET_ONLY=0
TARGETS=$ALL_TARGETS
STORM_TARGETS=${ALL_TARGETS#floor }
STORM_TARGETS=${STORM_TARGETS/latchkey-verify /}
smoke_defaults() {
  DURATION=2 WARMUP=1 LOGIN_DURATION=2 STORM_DURATION=2 HASH_SECONDS=2 ROUNDS=1 STORM_TARGETS=latchkey-sqlite
}
parse_args "$@"
TARGETS=${TARGETS//,/ } STORM_TARGETS=${STORM_TARGETS//,/ }

# Open-loop load for the login-storm test: wrk2 if the machine has it, else
# oha (crates.io); the smoke run does not wait minutes to build oha.
# matplotlib for the chart.
install_tools() {
  install_packages
  OPEN_LOOP="" OHA=""
  if command -v wrk2 >/dev/null; then
    OPEN_LOOP=wrk2
  elif OHA=$(command -v oha || ls "$HOME/.cargo/bin/oha" 2>/dev/null); then
    OPEN_LOOP=oha
  elif [ "$GET_ONLY" = 1 ]; then
    log "--get-only: no storm test, so no oha needed"
  elif [ "$SMOKE" = 0 ]; then
    log "installing oha (cargo install oha --locked), for the open-loop storm test"
    if cargo install oha --locked >"$WORK/oha-install.log" 2>&1; then OPEN_LOOP=oha OHA=$HOME/.cargo/bin/oha
    else log "warning: could not install oha (see $WORK/oha-install.log): no storm test"; fi
  else
    log "smoke: no wrk2 or oha here; skipping the storm test (a full run installs oha)"
  fi
  if ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib (pip) for the chart"
    python3 -m pip install --quiet matplotlib >"$WORK/pip.log" 2>&1 \
      || log "warning: could not install matplotlib (see $WORK/pip.log): no chart"
  fi
}

# Open loop at a fixed rate, on the client core. Writes OUT.json.
run_open_loop() { # OUT RATE SECONDS URL COOKIE
  local out=$1 rate=$2 secs=$3 url=$4 cookie=$5
  case "$OPEN_LOOP" in
    wrk2)
      taskset -c "$CLIENT_CPU" wrk2 -t1 "-c$GET_CONNS" "-d${secs}s" "-R$rate" --latency \
        -s "$BENCH_DIR/lua/report.lua" -H "Cookie: $cookie" "$url" >"$out.txt" 2>&1 || true
      sed -n 's/^BENCH_JSON //p' "$out.txt" >"$out.json"
      ;;
    oha)
      taskset -c "$CLIENT_CPU" "$OHA" --no-tui --output-format json --latency-correction \
        -z "${secs}s" -q "$rate" -c "$GET_CONNS" -H "Cookie: $cookie" "$url" \
        >"$out.json" 2>"$out.err" || true
      ;;
  esac
  [ -s "$out.json" ] || { cat "$out.err" "$out.txt" 2>/dev/null >&2; return 1; }
}

# ---------------------------------------------------------------- targets
# Every target's server runs for the whole run, each on its own port, all
# pinned to the server core: idle ones cost nothing, and the GET runs can
# then go round-robin, so that a burst of other work on the machine hits
# every target alike rather than whichever ran at that moment.
# setup_target starts TARGET, adds the user, signs in with curl and checks
# that the cookie gets the profile. A target whose service is missing is
# skipped.
skip() { echo "$2" >"$RAW/$1/skipped"; log "$1: skipped ($2)"; }
# tower-sessions' Redis store has no key prefix (its keys are bare session
# ids), so peer-redis gets an empty database of its own, counting down from
# the last; at exit the keys of that shape there are deleted.
redis_free_db() {
  local n db
  n=$(rcli CONFIG GET databases 2>/dev/null | sed -n 2p)
  for db in $(seq $((${n:-16} - 1)) -1 1); do
    if [ "$(rcli -n "$db" DBSIZE 2>/dev/null)" = 0 ]; then echo "$db"; return 0; fi
  done
  return 1
}
setup_target() { # TARGET
  local target=$1 dir="$RAW/$1" data="$WORK/$1" port store_args=() cookie="" peer_args db extra_args
  mkdir -p "$dir" "$data"
  port=$(free_port)
  case "$target" in
    floor|peer-*)
      peer_args=(--db "$data/peer.db")
      if [ "$target" = peer-redis ]; then
        redis_ready || { skip "$target" "Redis not reachable at $REDIS_BASE"; return 0; }
        db=$(redis_free_db) || { skip "$target" "no empty Redis database for its keys"; return 0; }
        REDIS_CLEAN+=("$db:$(printf '?%.0s' {1..22})")
        [[ $REDIS_BASE =~ ^rediss?://[^/?]* ]] || { skip "$target" "cannot read $REDIS_BASE"; return 0; }
        peer_args=(--redis "${BASH_REMATCH[0]}/$db")
      fi
      start_server "$target" "$dir/server.log" env BENCH_USERNAME="$USERNAME" BENCH_PASSWORD="$PASSWORD" \
        "$BIN/bench-peer" --mode "${target#peer-}" --bind "127.0.0.1:$port" "${peer_args[@]}"
      [ "$target" = floor ] && cookie="none=1"
      ;;
    latchkey-*)
      store_args=(--database "sqlite://$data/latchkey.db")
      case "$target" in
        latchkey-memory) store_args+=(--sessions memory) ;;
        latchkey-postgres)
          pg_ready || { skip "$target" "PostgreSQL not reachable at $PG_BASE"; return 0; }
          pg_new_schema "bench_${STAMP//-/_}"
          store_args=(--database "$(pg_url "bench_${STAMP//-/_}")")
          ;;
        latchkey-redis)
          redis_ready || { skip "$target" "Redis not reachable at $REDIS_BASE"; return 0; }
          REDIS_CLEAN+=("0:latchkey-bench-$STAMP:*")
          store_args+=(--sessions "$REDIS_BASE?prefix=latchkey-bench-$STAMP:")
          ;;
      esac
      latchkey_user_add "$target" "$dir/user-add.log" "${store_args[@]}"
      # One user signs in from one address over $LOGIN_CONNS connections,
      # every request a real sign-in: with the default limits about half
      # would be 429s. The peers have no throttle; raised limits keep the
      # workload the same for both, and latchkey still does its throttle's
      # bookkeeping on each sign-in (bench/README.md, "Logins").
      extra_args=()
      # The load generator plays the proxy: its X-Forwarded-* headers count.
      [ "$target" = latchkey-verify ] && extra_args=(--trusted-proxies 127.0.0.1)
      latchkey_serve "$target" "$dir/server.log" --bind "127.0.0.1:$port" "${store_args[@]}" \
        --max-failures-per-user-address 1000000000 --max-failures-per-address 1000000000 "${extra_args[@]}"
      ;;
    *) die "unknown target $target" ;;
  esac
  wait_up "$target" "$port" "$dir/server.log" /profile
  sign_in "$target" "$dir" "$cookie"
  log "$target: up on 127.0.0.1:$port (pid ${PID[$target]}, core $SERVER_CPU), signed in"
}

# One closed-loop GET /profile run: a short warm-up, then the measured run,
# with the server's CPU time over it. Writes raw/TARGET/get-ROUND.*.
get_wrk() { # OUT SECONDS TARGET
  local extra=()
  [ "$3" != latchkey-verify ] || extra=("${VERIFY_HEADERS[@]}")
  run_wrk "$1" "$GET_CONNS" "$2" "http://127.0.0.1:${PORT[$3]}${GET_PATH[$3]:-/profile}" \
    -s "$BENCH_DIR/lua/report.lua" -H "Cookie: ${COOKIE[$3]}" "${extra[@]}" || die "$3: wrk failed"
}
measure_get() { # TARGET ROUND
  local target=$1 out="$RAW/$1/get-$2"
  get_wrk "$WORK/$target/warmup" "$WARMUP" "$target"
  with_cpu "$out.proc.json" "${PID[$target]}" get_wrk "$out" "$DURATION" "$target"
  log "$target round $2: $(py summary "$out.json" "$out.proc.json")"
}

login_wrk() { # OUT SECONDS TARGET
  run_wrk "$1" "$LOGIN_CONNS" "$2" "http://127.0.0.1:${PORT[$3]}/login" -s "$BENCH_DIR/lua/login.lua"
}

# GET /profile at half the target's median closed-loop rate, open loop,
# first alone, then while wrk saturates POST /login.
storm_test() { # TARGET
  local target=$1 dir="$RAW/$1" url="http://127.0.0.1:${PORT[$1]}/profile" rate storm_pid
  rate=$(python3 "$BENCH_DIR/report.py" --storm-rate "$dir")
  echo "$rate" >"$dir/storm.rate"
  log "$target: storm test: GET at $rate req/s open loop ($OPEN_LOOP), ${STORM_DURATION}s alone, then ${STORM_DURATION}s under wrk -c$LOGIN_CONNS POST /login"
  run_open_loop "$dir/storm-idle" "$rate" "$STORM_DURATION" "$url" "${COOKIE[$target]}" || die "$target: $OPEN_LOOP failed"
  write_mem "$dir/storm-idle.mem.json" "${PID[$target]}"
  login_wrk "$dir/storm-logins" $((STORM_DURATION + 2)) "$target" &
  storm_pid=$!
  sleep 1
  run_open_loop "$dir/storm-busy" "$rate" "$STORM_DURATION" "$url" "${COOKIE[$target]}" || die "$target: $OPEN_LOOP failed"
  wait "$storm_pid" || die "$target: storm logins failed"
  write_mem "$dir/storm-busy.mem.json" "${PID[$target]}"
  log "$target: storm: $(python3 "$BENCH_DIR/report.py" --storm-line "$dir")"
}

# Closed-loop POST /login: every request a real sign-in (Argon2id verify,
# new session).
login_test() { # TARGET
  local out="$RAW/$1/login"
  with_cpu "$out.proc.json" "${PID[$1]}" login_wrk "$out" "$LOGIN_DURATION" "$1" || die "$1: wrk login failed"
  log "$1: POST /login: $(py summary "$out.json")"
}

# ---------------------------------------------------------------- main
bench_init
RAW="$OUT/raw"
rm -rf "$RAW"
mkdir -p "$RAW"

log "Argon2id rate on core $SERVER_CPU (OWASP: 19 MiB, t=2, p=1), ${HASH_SECONDS}s"
taskset -c "$SERVER_CPU" "$BIN/argon2-rate" "$HASH_SECONDS" >"$RAW/argon2.txt"
log "$(cat "$RAW/argon2.txt")"
{
  meta DURATION WARMUP ROUNDS LOGIN_DURATION STORM_DURATION LOGIN_CONNS TARGETS
  echo "open_loop=${OPEN_LOOP:-none}"
  [ "$OPEN_LOOP" != oha ] || echo "oha=$("$OHA" --version | head -n1)"
} >"$RAW/meta.env"

for target in $TARGETS; do setup_target "$target"; done
LIVE=()
for target in $TARGETS; do [ -z "${PID[$target]:-}" ] || LIVE+=("$target"); done

log "GET /profile: $ROUNDS round(s) of ${WARMUP}s warm-up + ${DURATION}s measured per target (wrk -t1 -c$GET_CONNS), targets in a rotating order"
n=${#LIVE[@]}
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do measure_get "${LIVE[$(( (i + round - 1) % n ))]}" "$round"; done
done
for target in "${LIVE[@]}"; do write_mem "$RAW/$target/after-get.mem.json" "${PID[$target]}"; done

if [ "$GET_ONLY" = 0 ]; then
  if [ -n "$OPEN_LOOP" ]; then
    for target in "${LIVE[@]}"; do
      [[ " $STORM_TARGETS " != *" $target "* ]] || storm_test "$target"
    done
  fi
  log "POST /login: ${LOGIN_DURATION}s per target (wrk -t1 -c$LOGIN_CONNS)"
  for target in "${LIVE[@]}"; do
    [ "$target" = floor ] && continue
    [[ " $GET_ONLY_TARGETS " == *" $target "* ]] && continue
    login_test "$target"
    stop_server "$target"   # one hashing server at a time on the core
  done
fi

for t in "${!PID[@]}"; do stop_server "$t"; done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/meta.env"
REPORT_ARGS=("$OUT")
# A full run into the default place also refreshes the README's table.
if [ "$SMOKE" = 0 ] && [ "$OUT" = "$BENCH_DIR/results" ] && [ "$GET_ONLY" = 0 ]; then
  REPORT_ARGS+=(--readme "$ROOT/README.md")
fi
python3 "$BENCH_DIR/report.py" "${REPORT_ARGS[@]}"
log "wrote $OUT/RESULTS.md$([ -f "$OUT/chart.png" ] && echo " and $OUT/chart.png")"
