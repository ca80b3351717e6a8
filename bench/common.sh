# What bench/run.sh and bench/scale.sh share: options, tools, services,
# servers pinned to one core, sign-in, wrk on the other core, /proc samples,
# the lock and the clean-up. Sourced, never run; the caller sets LOG_TAG,
# and defines usage() and the defaults before calling parse_args.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/latchkey-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

PG_BASE=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_BASE=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
USERNAME=bench
PASSWORD="tangerine orbit kayak murmur lantern"
LOGIN_BODY="{\"username\": \"$USERNAME\", \"password\": \"$PASSWORD\"}"
STAMP=$(date +%Y%m%d%H%M%S)-$$
SMOKE=0 PROFILE="" OUT="" SERVER_CPU=0 CLIENT_CPU=1 GET_CONNS=32 POLLER=""
declare -A PID PORT COOKIE
PG_SCHEMAS=()
REDIS_CLEAN=()   # "DB:PATTERN" of the keys to delete at exit

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
now() { date +%s.%N; }
now_ms() { date +%s%3N; }
seconds() { awk -v a="$1" -v b="$2" -v d="$3" 'BEGIN { printf "%." d "f", b - a }'; } # T0 T1 DIGITS
secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
py() { python3 "$BENCH_DIR/common.py" "$@"; }

# Options: --smoke and the FLAGS (no value) set their variable to 1; every
# other --some-name VALUE sets SOME_NAME, if it is one of OPTIONS. --smoke
# applies smoke_defaults first, so explicit options win wherever they stand.
parse_args() { # "$@"   (needs OPTIONS, FLAGS, usage, smoke_defaults)
  local a var
  for a in "$@"; do [ "$a" = --smoke ] && { SMOKE=1; smoke_defaults; }; done
  while [ $# -gt 0 ]; do
    var=${1#--}; var=${var//-/_}; var=${var^^}
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --smoke) ;;
      --*) if [[ " $FLAGS " == *" $var "* ]]; then printf -v "$var" 1
           elif [[ " $OPTIONS " == *" $var "* ]] && [ $# -ge 2 ]; then printf -v "$var" '%s' "$2"; shift
           else echo "unknown argument: $1" >&2; usage >&2; exit 2; fi ;;
      *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
  if [ "$SMOKE" = 1 ]; then PROFILE=${PROFILE:-debug} OUT=${OUT:-$BENCH_DIR/results/smoke}
  else PROFILE=${PROFILE:-release} OUT=${OUT:-$BENCH_DIR/results}; fi
  case "$PROFILE" in release|debug) ;; *) echo "--profile is release or debug" >&2; exit 2 ;; esac
}

# Debian packages for the commands missing: CMD:PACKAGE ...
install_packages() {
  local p missing=()
  for p in curl:curl taskset:util-linux wrk:wrk "$@"; do
    command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
  done
  [ ${#missing[@]} = 0 ] && return 0
  log "installing ${missing[*]} (Debian packages)"
  as_root apt-get update -qq || true
  as_root apt-get install -y -qq "${missing[@]}" >/dev/null || die "could not install ${missing[*]}"
}

# One benchmark at a time per machine (they would share the server core and
# spoil each other's numbers), a scratch dir, clean-up at exit, the tools
# (install_tools, the caller's) and the binaries.
bench_init() {
  local lock="${TMPDIR:-/tmp}/latchkey-bench.lock"
  exec 9>"$lock"
  if ! flock -n 9; then
    log "another benchmark holds $lock on this machine; waiting for it to finish"
    flock 9
  fi
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-$LOG_TAG.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  CORES=$(nproc)
  if [ "$CORES" -lt 2 ]; then
    log "warning: $CORES core: server and load generator share it; ratios are still comparable, absolute numbers are not"
    CLIENT_CPU=$SERVER_CPU
  fi
  install_tools
  log "building $PROFILE binaries (cargo build -p latchkey-server -p latchkey-bench-peer)"
  cargo build --quiet "--profile=${PROFILE/debug/dev}" -p latchkey-server -p latchkey-bench-peer
  BIN=$CARGO_TARGET_DIR/$PROFILE
}

# meta.env's common lines, then KEY=$KEY for each variable named.
meta() { # VAR...
  local v
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc=$CORES"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -srm)"
  echo "mem_total_kb=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)"
  echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "dirty_paths=$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | awk '{print $NF}' | paste -sd, -)"
  echo "wrk=$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
  for v in PROFILE SMOKE SERVER_CPU CLIENT_CPU GET_CONNS "$@"; do echo "${v,,}=${!v}"; done
}

# ---------------------------------------------------------------- services
pg_ok() { psql "$PG_BASE" -qtAc 'select 1' >/dev/null 2>&1; }
pg_ready() {
  command -v psql >/dev/null || return 1
  if ! pg_ok && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    log "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do pg_ok && break; sleep 1; done
  fi
  pg_ok
}
pg_url() { echo "$PG_BASE?options=-c%20search_path%3D$1"; }
pg_new_schema() { # NAME: created now, dropped at exit
  psql "$PG_BASE" -qc "CREATE SCHEMA $1" >/dev/null
  PG_SCHEMAS+=("$1")
}

redis_host_port() { local hp=${REDIS_BASE#redis://}; hp=${hp%%/*}; hp=${hp%%\?*}; echo "${hp%:*} ${hp##*:}"; }
rcli() { local h p; read -r h p <<<"$(redis_host_port)"; redis-cli -h "$h" -p "$p" "$@"; }
redis_ready() {
  command -v redis-cli >/dev/null || return 1
  local h p
  read -r h p <<<"$(redis_host_port)"
  if ! rcli ping >/dev/null 2>&1 && command -v redis-server >/dev/null && [ "$h" = 127.0.0.1 ]; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$p" --save "" --appendonly no >/dev/null
    for _ in $(seq 1 30); do rcli ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  rcli ping >/dev/null 2>&1
}
# Every key matching PATTERN in database DB, one per line (SCAN, 10,000 at a time).
redis_keys() { # PATTERN [DB]
  local cursor=0 out
  while :; do
    out=$(rcli -n "${2:-0}" SCAN "$cursor" MATCH "$1" COUNT 10000) || return 1
    cursor=$(head -n1 <<<"$out")
    tail -n +2 <<<"$out" | grep -v '^$' || true
    [ "$cursor" = 0 ] && break
  done
}
redis_delete() { # PATTERN [DB]
  redis_keys "$@" 2>/dev/null | py redis-unlink | rcli -n "${2:-0}" --pipe >/dev/null 2>&1 || true
}

cleanup() {
  local t e
  for t in "${!PID[@]}"; do stop_server "$t"; done
  [ -z "$POLLER" ] || kill "$POLLER" 2>/dev/null || true
  for e in "${PG_SCHEMAS[@]}"; do
    psql "$PG_BASE" -qc "DROP SCHEMA IF EXISTS $e CASCADE" >/dev/null 2>&1 || true
  done
  for e in "${REDIS_CLEAN[@]}"; do redis_delete "${e#*:}" "${e%%:*}"; done
  [ -z "${WORK:-}" ] || rm -rf "$WORK"
}

# ---------------------------------------------------------------- servers
# Every server runs pinned to the server core, in the background.
start_server() { # NAME LOGFILE CMD...
  local name=$1 logfile=$2; shift 2
  taskset -c "$SERVER_CPU" "$@" >"$logfile" 2>&1 &
  PID[$name]=$!
}
latchkey_serve() { # NAME LOGFILE SERVE_ARGS...
  local name=$1 logfile=$2; shift 2
  start_server "$name" "$logfile" env LATCHKEY_SECRET_KEY="$(secret)" LATCHKEY_LOG=warn "$BIN/latchkey" serve "$@"
}
latchkey_user_add() { # NAME LOGFILE STORE_ARGS...: the bench's user, an admin
  local name=$1 logfile=$2; shift 2
  printf '%s\n' "$PASSWORD" | "$BIN/latchkey" user add "$USERNAME" --role admin --password-stdin "$@" \
    >"$logfile" 2>&1 || { cat "$logfile" >&2; die "$name: latchkey user add failed"; }
}
stop_server() { # NAME
  local pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PID[$1]"
}
# Until PATH answers with anything but a 5xx (or the server dies: its log).
wait_up() { # NAME PORT LOGFILE PATH
  local code
  for _ in $(seq 1 600); do
    kill -0 "${PID[$1]}" 2>/dev/null || { cat "$3" >&2; die "$1: server exited (see $3)"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2$4" || true)
    [[ $code = [1-4]?? ]] && { PORT[$1]=$2; return 0; }
    sleep 0.1
  done
  die "$1: server did not come up (see $3)"
}
# POST /login with curl; prints the Cookie header value (name=value pairs).
# The headers stay in WORK: they hold the session cookie.
login_cookie() { # PORT
  curl -s -D "$WORK/login.headers" -o "$WORK/login.body" -H 'content-type: application/json' \
    -d "$LOGIN_BODY" "http://127.0.0.1:$1/login" || true
  grep -i '^set-cookie:' "$WORK/login.headers" | tr -d '\r' \
    | sed -E 's/^[^:]*:[[:space:]]*//; s/;.*//' | paste -sd';' - | sed 's/;/; /g'
}
# Signs NAME in (with COOKIE given, uses that) and checks that the cookie gets
# the signed-in GET /profile; sets COOKIE[NAME].
sign_in() { # NAME DIR [COOKIE]
  local name=$1 dir=$2 cookie=${3:-} status
  [ -n "$cookie" ] || cookie=$(login_cookie "${PORT[$name]}")
  [ -n "$cookie" ] || { cat "$WORK/login.headers" "$WORK/login.body" >&2; die "$name: login set no cookie"; }
  status=$(curl -s -H "Cookie: $cookie" -o "$dir/profile.body" -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/profile" || true)
  if [ "$status" != 200 ] || ! grep -q "Welcome to your profile, $USERNAME!" "$dir/profile.body"; then
    echo "HTTP $status" >&2; cat "$dir/profile.body" >&2
    die "$name: GET /profile with the cookie is not the signed-in profile"
  fi
  COOKIE[$name]=$cookie
}

# ---------------------------------------------------------------- measuring
# wrk, closed loop, on the client core: OUT.txt (its report), OUT.json (the
# BENCH_JSON line of lua/report.lua) and, if the script prints it
# (lua/hist.lua), OUT.hist.gz: every latency recorded with its count.
run_wrk() { # OUT CONNS SECONDS URL WRK_ARGS...
  local out=$1 conns=$2 secs=$3 url=$4; shift 4
  BENCH_LUA_DIR="$BENCH_DIR/lua" BENCH_LOGIN_BODY="$LOGIN_BODY" taskset -c "$CLIENT_CPU" \
    wrk -t1 "-c$conns" "-d${secs}s" --latency --timeout 5s "$@" "$url" >"$out.raw" 2>&1 || true
  sed -n 's/^BENCH_JSON //p' "$out.raw" >"$out.json"
  if grep -q '^BENCH_HIST ' "$out.raw"; then sed -n 's/^BENCH_HIST //p' "$out.raw" | gzip -9 >"$out.hist.gz"; fi
  grep -v '^BENCH_HIST ' "$out.raw" >"$out.txt" || true
  rm -f "$out.raw"
  [ -s "$out.json" ] || { cat "$out.txt" >&2; return 1; }
}

# utime + stime of a process, all threads, in clock ticks; and the time.
proc_snapshot() { # PID
  local stat
  read -r stat <"/proc/$1/stat"
  # shellcheck disable=SC2086
  set -- ${stat##*) }
  echo "$(( ${12} + ${13} )) $(now)"
}
mem_json() { # PID
  echo "\"vmhwm_kb\": $(status_kb "$1" VmHWM), \"vmrss_kb\": $(status_kb "$1" VmRSS), \"threads\": $(status_kb "$1" Threads)"
}
write_mem() { echo "{$(mem_json "$2")}" >"$1"; } # FILE PID
# Runs CMD... and writes FILE: the server's CPU time over it, wall time, memory.
with_cpu() { # FILE PID CMD...
  local file=$1 pid=$2 t0 w0 t1 w1
  shift 2
  read -r t0 w0 <<<"$(proc_snapshot "$pid")"
  "$@" || return 1
  read -r t1 w1 <<<"$(proc_snapshot "$pid")"
  echo "{\"cpu_ticks\": $((t1 - t0)), \"wall_s\": $(seconds "$w0" "$w1" 6), \"clk_tck\": $(getconf CLK_TCK), $(mem_json "$pid")}" >"$file"
}
