#!/usr/bin/env bash
# latchkey at scale, in one command (issue 5, item 3). See bench/README.md.
#
#   bash bench/scale.sh            # full run, ~15 min: writes bench/results/SCALE.md
#   bash bench/scale.sh --smoke    # 10k sessions, debug binaries, seconds: CI's check that it runs
#
# For the SQLite, PostgreSQL and Redis stores:
#   1. authenticated GET /profile with 1,000 live sessions in the store and
#      with 1,000,000, side by side (two servers per store, round robin);
#   2. SQLite and PostgreSQL: GET /profile while the server's background
#      sweeper deletes 1,000,000 expired sessions, against GET just before;
#      and how long the sweep takes;
#   3. bytes per session: memory store (bench/peer's session-bytes), SQLite
#      on disk, PostgreSQL on disk, Redis in memory.
# Sessions are bulk-loaded straight into the store (SQL / RESP), in the
# layout the server itself writes; the bench's own session comes from a real
# POST /login. Servers run pinned to core 0, wrk to core 1, like run.sh.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/latchkey-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

usage() {
  cat <<EOF
usage: bash bench/scale.sh [--smoke] [options]

  --smoke              small store sizes, short runs, debug binaries (CI)
  --stores L           comma list from sqlite,postgres,redis (default: all)
  --small N            live sessions in the small store (default 1000)
  --large N            live sessions in the large store (default 1000000)
  --expired N          expired sessions the sweep test deletes (default 1000000)
  --spread N           live sessions with known cookies in the large store, for GETs
                       spread over many sessions (default 200000; the small store's
                       are all of its bulk sessions)
  --rounds N           GET runs per server, round robin (default 3)
  --duration S         seconds of one measured GET run (default 6)
  --warmup S           seconds of unmeasured load before each GET run (default 2)
  --window S           seconds of one wrk window in the sweep test (default 2)
  --before S           seconds of GET measured before the sweep (default 10)
  --sweep-timeout S    give up waiting for the sweep after S seconds (default 1800)
  --memory-sessions N  sessions session-bytes files into the memory store (default 200000)
  --profile P          release (default) or debug binaries
  --out DIR            where SCALE.md and scale/ (raw data) go (default bench/results,
                       bench/results/smoke with --smoke)
  --server-cpu N       core the servers run on (default 0)
  --client-cpu N       core wrk runs on (default 1)

Environment: BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
BENCH_REDIS_URL (default redis://127.0.0.1:6379). A store whose service is not
reachable is reported as skipped.
EOF
}

SMOKE=0
STORES="sqlite postgres redis"
SMALL=1000
LARGE=1000000
EXPIRED=1000000
SPREAD=200000
ROUNDS=3
DURATION=6
WARMUP=2
WINDOW=2
BEFORE=10
SWEEP_TIMEOUT=1800
MEM_SESSIONS=200000
PROFILE=""
OUT=""
SERVER_CPU=0
CLIENT_CPU=1
GET_CONNS=32
SWEEP_IDLE=10s

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke)
      SMOKE=1
      SMALL=100 LARGE=10000 EXPIRED=10000 SPREAD=2000 ROUNDS=1 DURATION=1 WARMUP=0 WINDOW=1 BEFORE=2
      SWEEP_TIMEOUT=60 MEM_SESSIONS=20000
      ;;
    --stores) STORES=${2//,/ }; shift ;;
    --small) SMALL=$2; shift ;;
    --large) LARGE=$2; shift ;;
    --expired) EXPIRED=$2; shift ;;
    --spread) SPREAD=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --before) BEFORE=$2; shift ;;
    --sweep-timeout) SWEEP_TIMEOUT=$2; shift ;;
    --memory-sessions) MEM_SESSIONS=$2; shift ;;
    --profile) PROFILE=$2; shift ;;
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
else
  PROFILE=${PROFILE:-release}
  OUT=${OUT:-$BENCH_DIR/results}
fi
case "$PROFILE" in release|debug) ;; *) echo "--profile is release or debug" >&2; exit 2 ;; esac
for s in $STORES; do
  case "$s" in sqlite|postgres|redis) ;; *) echo "unknown store $s" >&2; exit 2 ;; esac
done
[ "$SMALL" -ge 1 ] && [ "$LARGE" -ge "$SMALL" ] || { echo "need 1 <= --small <= --large" >&2; exit 2; }

PG_BASE=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_BASE=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
USERNAME=bench
PASSWORD="tangerine orbit kayak murmur lantern"
LOGIN_BODY="{\"username\": \"$USERNAME\", \"password\": \"$PASSWORD\"}"
STAMP=$(date +%Y%m%d%H%M%S)-$$

log() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- tools
install_tools() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v sqlite3 >/dev/null || missing+=(sqlite3)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (Debian packages)"
    as_root apt-get update -qq || true
    as_root apt-get install -y -qq "${missing[@]}" >/dev/null || die "could not install ${missing[*]}"
  fi
}

# ---------------------------------------------------------------- helpers
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cpu_ticks() {
  local stat rest
  read -r stat <"/proc/$1/stat"
  rest=${stat##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $(( ${12} + ${13} ))
}
# Per thread of PID: id, name, and /proc schedstat (ns on the CPU, ns waiting
# on the run queue, time slices), after a first line with the wall time.
threads_snapshot() { # PID FILE
  local t
  {
    echo "wall $(now)"
    for t in /proc/"$1"/task/*; do
      printf '%s\t%s\t%s\n' "${t##*/}" "$(cat "$t/comm" 2>/dev/null)" "$(cat "$t/schedstat" 2>/dev/null)"
    done
  } >"$2"
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
now() { date +%s.%N; }
now_ms() { date +%s%3N; }
secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

declare -A PID PORT COOKIE COOKIE_NAME DBURL SESSURL
start_server() { # NAME LOGFILE ARGS...
  local name=$1 logfile=$2; shift 2
  env LATCHKEY_SECRET_KEY="$(secret)" LATCHKEY_LOG=warn \
    taskset -c "$SERVER_CPU" "$BIN/latchkey" serve "$@" >"$logfile" 2>&1 &
  PID[$name]=$!
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
wait_up() { # PID PORT LOGFILE
  local code
  for _ in $(seq 1 600); do
    kill -0 "$1" 2>/dev/null || { cat "$3" >&2; return 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/readyz" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}
login_cookie() { # PORT DIR
  curl -s -D "$2/login.headers" -o "$2/login.body" -H 'content-type: application/json' \
    -d "$LOGIN_BODY" "http://127.0.0.1:$1/login" || true
  grep -i '^set-cookie:' "$2/login.headers" | tr -d '\r' \
    | sed -E 's/^[^:]*:[[:space:]]*//; s/;.*//' | paste -sd';' - | sed 's/;/; /g'
}
# Starts `latchkey serve` for NAME on its stores, signs in, checks the profile.
bring_up() { # NAME DIR EXTRA_ARGS...
  local name=$1 dir=$2; shift 2
  local port args
  port=$(free_port)
  args=(--bind "127.0.0.1:$port" --database "${DBURL[$name]}")
  [ -n "${SESSURL[$name]:-}" ] && args+=(--sessions "${SESSURL[$name]}")
  mkdir -p "$dir"
  start_server "$name" "$dir/server.log" "${args[@]}" "$@"
  echo "$(now)" >"$dir/started"
  wait_up "${PID[$name]}" "$port" "$dir/server.log" || die "$name: server did not come up (see $dir/server.log)"
  PORT[$name]=$port
  local cookie
  cookie=$(login_cookie "$port" "$WORK")   # the headers stay in WORK: they hold the cookie
  [ -n "$cookie" ] || { cat "$WORK/login.headers" "$WORK/login.body" >&2; die "$name: login set no cookie"; }
  COOKIE[$name]=$cookie
  local status
  status=$(curl -s -H "Cookie: $cookie" -o "$dir/profile.body" -w '%{http_code}' "http://127.0.0.1:$port/profile" || true)
  if [ "$status" != 200 ] || ! grep -q "Welcome to your profile, $USERNAME!" "$dir/profile.body"; then
    cat "$dir/profile.body" >&2
    die "$name: GET /profile with the cookie is not the signed-in profile"
  fi
  # The session cookie's name (the one whose value is a 43-character token).
  COOKIE_NAME[$name]=$(tr ';' '\n' <<<"$cookie" | sed 's/^ *//' \
    | awk -F= 'length($2) == 43 && $1 ~ /latchkey$/ { print $1; exit }')
  [ -n "${COOKIE_NAME[$name]}" ] || die "$name: no session cookie in the login's Set-Cookie"
  if [ -s "$WORK/$name/tokens" ]; then
    local token
    token=$(head -n1 "$WORK/$name/tokens")
    status=$(curl -s -H "Cookie: ${COOKIE_NAME[$name]}=$token" -o "$WORK/bulk.body" -w '%{http_code}' \
      "http://127.0.0.1:$port/profile" || true)
    [ "$status" = 200 ] && grep -q '"username":"user' "$WORK/bulk.body" \
      || { cat "$WORK/bulk.body" >&2; die "$name: a bulk-loaded session does not get its profile ($status)"; }
  fi
}

# Closed-loop GET /profile with wrk on the client core. Writes OUT.txt
# (wrk's report) and OUT.json (summary); with HIST=1 also OUT.hist.gz, every
# latency recorded and its count (lua/hist.lua), for exact merging.
# With SPREAD=1, every request carries the cookie of a session picked at
# random from the store's known tokens (lua/spread.lua) instead.
run_wrk() { # OUT SECONDS NAME
  local out=$1 secs=$2 name=$3 args=(-s "$BENCH_DIR/lua/report.lua" -H "Cookie: ${COOKIE[$name]}")
  [ "${HIST:-0}" = 1 ] && args=(-s "$BENCH_DIR/lua/hist.lua" -H "Cookie: ${COOKIE[$name]}")
  [ "${SPREAD_RUN:-0}" = 1 ] && args=(-s "$BENCH_DIR/lua/spread.lua")
  BENCH_TOKENS="$WORK/$name/tokens" BENCH_COOKIE_NAME="${COOKIE_NAME[$name]:-latchkey}" \
    taskset -c "$CLIENT_CPU" wrk -t1 "-c$GET_CONNS" "-d${secs}s" --latency --timeout 5s "${args[@]}" \
    "http://127.0.0.1:${PORT[$name]}/profile" >"$out.raw" 2>&1 || true
  grep '^BENCH_JSON ' "$out.raw" | sed 's/^BENCH_JSON //' >"$out.json" || true
  if [ "${HIST:-0}" = 1 ]; then
    grep '^BENCH_HIST ' "$out.raw" | sed 's/^BENCH_HIST //' | gzip -9 >"$out.hist.gz" || true
  fi
  grep -v '^BENCH_HIST ' "$out.raw" >"$out.txt" || true
  rm -f "$out.raw"
  [ -s "$out.json" ] || { cat "$out.txt" >&2; return 1; }
}
summary() { python3 "$BENCH_DIR/scale.py" summary "$@"; }
warm() { # NAME: unmeasured load first (none with --warmup 0)
  [ "$WARMUP" = 0 ] || run_wrk "$WORK/warmup" "$WARMUP" "$1" || die "$1: wrk failed"
}

# ---------------------------------------------------------------- services
PG_SCHEMAS=()
REDIS_PREFIXES=()
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
# Every key matching PATTERN, one per line (SCAN, 10,000 at a time).
redis_keys() { # PATTERN
  local cursor=0 out
  while :; do
    out=$(rcli SCAN "$cursor" MATCH "$1" COUNT 10000) || return 1
    cursor=$(head -n1 <<<"$out")
    tail -n +2 <<<"$out" | grep -v '^$' || true
    [ "$cursor" = 0 ] && break
  done
}
redis_delete_prefix() { # PREFIX
  redis_keys "$1*" 2>/dev/null \
    | python3 "$BENCH_DIR/scale.py" redis-unlink | rcli --pipe >/dev/null 2>&1 || true
}
redis_used_memory() { rcli info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'; }

cleanup() {
  local t s
  for t in "${!PID[@]}"; do stop_server "$t"; done
  [ -n "${POLLER:-}" ] && kill "$POLLER" 2>/dev/null || true
  for s in "${PG_SCHEMAS[@]}"; do
    psql "$PG_BASE" -qc "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true
  done
  for s in "${REDIS_PREFIXES[@]}"; do redis_delete_prefix "$s"; done
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
}

# ---------------------------------------------------------------- bulk loads
UA0="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
UA1="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
UA2="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"

# Time columns of bulk row number n (an SQL expression), relative to NOW:
# live ones were last seen within 10 min and end 2 h+ from now (so they stay
# live for the whole run); expired ones ended 1 s to 1 h before NOW.
time_cols() { # live|expired NOW
  if [ "$1" = live ]; then
    echo "$2 - (n % 600000) - 60000 - (n % 3600000), $2 - (n % 600000), $2 + 7200000 + (n % 600000)"
  else
    echo "$2 - 7260000 - (n % 3600000), $2 - 7200000 - (n % 3600000), $2 - 1000 - (n % 3600000)"
  fi
}

# N rows into latchkey_sessions of a SQLite file: random 32-byte token
# hashes, 32-hex ids and user ids (two sessions per bulk user, user numbers
# from OFFSET), ~110-character user agents, IPv4 addresses, 43-character
# CSRF secrets: the sizes the server writes.
sqlite_load() { # DBFILE N OFFSET live|expired NOW
  local db=$1 n=$2 off=$3
  [ "$n" -gt 0 ] || return 0
  sqlite3 "$db" >/dev/null <<SQL
.timeout 10000
PRAGMA synchronous = OFF;
PRAGMA cache_size = -524288;
BEGIN;
WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < $n - 1)
INSERT INTO latchkey_sessions (token_hash, id, user_id, username, role, created_at,
                               last_seen_at, expires_at, user_agent, ip, csrf_secret)
SELECT randomblob(32), lower(hex(randomblob(16))),
       printf('%08x%024x', (((n + $off) / 2) * 2654435761) % 4294967296, (n + $off) / 2),
       'user' || ((n + $off) / 2), 'user', $(time_cols "$4" "$5"),
       CASE n % 3 WHEN 0 THEN '$UA0' WHEN 1 THEN '$UA1' ELSE '$UA2' END,
       printf('198.51.%d.%d', (n >> 8) & 255, n & 255),
       substr(lower(hex(randomblob(22))), 1, 43)
FROM c;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
}

# The 32-hex user id of bulk user number U (an SQL expression), the same
# in every store and in scale.py's known sessions: '%08x%024x' of
# (U * 2654435761) mod 2^32 and U.
pg_user_id() { echo "lpad(to_hex(($1 * 2654435761) % 4294967296), 8, '0') || lpad(to_hex($1), 24, '0')"; }
pg_url() { echo "$PG_BASE?options=-c%20search_path%3D$1"; }
pg_sql() { # SCHEMA SQL...
  local schema=$1; shift
  PGOPTIONS="-c search_path=$schema" psql "$PG_BASE" -qtAX -v ON_ERROR_STOP=1 "$@"
}
pg_load() { # SCHEMA N OFFSET live|expired NOW
  local schema=$1 n=$2 off=$3
  [ "$n" -gt 0 ] || return 0
  pg_sql "$schema" >/dev/null <<SQL
SET synchronous_commit = off;
INSERT INTO latchkey_sessions (token_hash, id, user_id, username, role, created_at,
                               last_seen_at, expires_at, user_agent, ip, csrf_secret)
SELECT decode(md5(random()::text || n::text) || md5(n::text || random()::text), 'hex'),
       md5('id' || n::text || random()::text),
       $(pg_user_id "((n + $off) / 2)"), 'user' || ((n + $off) / 2), 'user',
       $(time_cols "$4" "$5"),
       (ARRAY['$UA0', '$UA1', '$UA2'])[(n % 3)::int + 1],
       '198.51.' || ((n >> 8) & 255) || '.' || (n & 255),
       substr(md5(random()::text) || md5(random()::text), 1, 43)
FROM generate_series(0::bigint, $n - 1) AS n;
SQL
  # What autovacuum would have done by now, so that it does not start in
  # the middle of a measurement; and the dirty pages written out.
  pg_sql "$schema" -c "VACUUM ANALYZE latchkey_sessions" -c "CHECKPOINT" >/dev/null
}

redis_load() { # PREFIX N OFFSET live|expired NOW
  [ "$2" -gt 0 ] || return 0
  python3 "$BENCH_DIR/scale.py" redis-load "$@" | rcli --pipe >"$WORK/redis-pipe.log" 2>&1 \
    || { cat "$WORK/redis-pipe.log" >&2; die "redis-cli --pipe failed"; }
  grep -q 'errors: 0' "$WORK/redis-pipe.log" || { cat "$WORK/redis-pipe.log" >&2; die "redis load had errors"; }
}

# The users the bulk sessions belong to. Every session is checked against
# its user in latchkey_users (the user must exist, and its session_version
# equal the session's user_version; both 0 here), so each distinct bulk user
# id gets one row: user numbers FIRST..LAST, ids as in the sessions, username
# 'user' || n (username_key its lower-case form, as `latchkey::username::fold`
# leaves it), a placeholder password hash nobody can sign in with. The table
# is the server's own, made by `latchkey user add` before any load. One
# INSERT ... SELECT, like the session loads.
sqlite_users_load() { # DBFILE FIRST LAST
  [ "$3" -ge "$2" ] || return 0
  sqlite3 "$1" >/dev/null <<SQL
.timeout 10000
PRAGMA synchronous = OFF;
PRAGMA cache_size = -524288;
BEGIN;
WITH RECURSIVE c(u) AS (SELECT $2 UNION ALL SELECT u + 1 FROM c WHERE u < $3)
INSERT OR IGNORE INTO latchkey_users (id, username, username_key, password_hash, role,
                                      created_at, session_version)
SELECT printf('%08x%024x', (u * 2654435761) % 4294967296, u), 'user' || u, lower('user' || u),
       '!bulk-loaded: no password', 'user', 0, 0
FROM c;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
}
pg_users_load() { # SCHEMA FIRST LAST
  [ "$3" -ge "$2" ] || return 0
  pg_sql "$1" >/dev/null <<SQL
SET synchronous_commit = off;
INSERT INTO latchkey_users (id, username, username_key, password_hash, role, created_at, session_version)
SELECT $(pg_user_id u), 'user' || u, lower('user' || u), '!bulk-loaded: no password', 'user', 0, 0
FROM generate_series($2::bigint, $3) AS u
ON CONFLICT DO NOTHING;
SQL
  pg_sql "$1" -c "VACUUM ANALYZE latchkey_users" >/dev/null
}
# Users of the live sessions setup_store loads: ROWS bulk rows from user
# number 0 (two per user), then K known ones from row offset OFFSET.
users_load() { # NAME ROWS K OFFSET
  local name=$1 rows=$2 k=$3 off=$4 ranges=() r first last
  [ "$rows" -gt 0 ] && ranges+=("0 $(( (rows - 1) / 2 ))")
  [ "$k" -gt 0 ] && ranges+=("$(( off / 2 )) $(( (off + k - 1) / 2 ))")
  for r in "${ranges[@]}"; do
    read -r first last <<<"$r"
    case "${name%-*}" in
      sqlite) sqlite_users_load "${SQLITE_FILE[$name]}" "$first" "$last" ;;
      postgres) pg_users_load "${SCHEMA[$name]}" "$first" "$last" ;;
      redis) sqlite_users_load "${USERS_FILE[$name]}" "$first" "$last" ;;
    esac
  done
}
users_count() { # NAME
  case "${1%-*}" in
    sqlite) sqlite3 "${SQLITE_FILE[$1]}" ".timeout 5000" "SELECT count(*) FROM latchkey_users" ;;
    postgres) pg_sql "${SCHEMA[$1]}" -c "SELECT count(*) FROM latchkey_users" ;;
    redis) sqlite3 "${USERS_FILE[$1]}" ".timeout 5000" "SELECT count(*) FROM latchkey_users" ;;
  esac
}

live_count() { # NAME
  local store=${1%-*}
  case "$store" in
    sqlite) sqlite3 "${SQLITE_FILE[$1]}" ".timeout 5000" "SELECT count(*) FROM latchkey_sessions WHERE expires_at > $(now_ms)" ;;
    postgres) pg_sql "${SCHEMA[$1]}" -c "SELECT count(*) FROM latchkey_sessions WHERE expires_at > $(now_ms)" ;;
    redis) redis_keys "${PREFIX[$1]}s:*" | wc -l ;;
  esac
}

# ---------------------------------------------------------------- main
# One benchmark at a time per machine, this one or bench/run.sh: the same
# lock file, since two runs would share the server core.
LOCK="${TMPDIR:-/tmp}/latchkey-bench.lock"
exec 9>"$LOCK"
if ! flock -n 9; then
  log "another benchmark holds $LOCK on this machine; waiting for it to finish"
  flock 9
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-scale.XXXXXX")
POLLER=""
trap cleanup EXIT
trap 'exit 130' INT TERM

CORES=$(nproc)
if [ "$CORES" -lt 2 ]; then
  log "warning: $CORES core: server and load generator share it"
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
RAW="$OUT/scale"
rm -rf "$RAW"
mkdir -p "$RAW/get" "$RAW/sweep" "$RAW/bytes" "$RAW/load"

{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc=$CORES"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -srm)"
  echo "mem_total_kb=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)"
  echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "dirty=$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo yes || echo no)"
  echo "profile=$PROFILE"
  echo "smoke=$SMOKE"
  echo "small=$SMALL"
  echo "large=$LARGE"
  echo "expired=$EXPIRED"
  echo "spread=$SPREAD"
  echo "rounds=$ROUNDS"
  echo "duration=$DURATION"
  echo "warmup=$WARMUP"
  echo "window=$WINDOW"
  echo "before=$BEFORE"
  echo "sweep_idle=$SWEEP_IDLE"
  echo "get_conns=$GET_CONNS"
  echo "memory_sessions=$MEM_SESSIONS"
  echo "wrk=$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
  echo "sqlite3=$(sqlite3 --version | cut -d' ' -f1)"
  command -v psql >/dev/null && echo "postgres=$(psql "$PG_BASE" -qtAc 'show server_version' 2>/dev/null || echo none)"
  command -v redis-cli >/dev/null && echo "redis=$(rcli info server 2>/dev/null | tr -d '\r' | awk -F: '$1 == "redis_version" { print $2 }')"
  echo "server_cpu=$SERVER_CPU"
  echo "client_cpu=$CLIENT_CPU"
} >"$RAW/meta.env"

# ---- the stores: for each store kind, a small and a large one
declare -A SQLITE_FILE SCHEMA PREFIX USERS_FILE
LIVE_STORES=()
for store in $STORES; do
  case "$store" in
    postgres) pg_ready || { echo "PostgreSQL not reachable at $PG_BASE" >"$RAW/get/postgres.skipped"; log "postgres: skipped (not reachable)"; continue; } ;;
    redis) redis_ready || { echo "Redis not reachable at $REDIS_BASE" >"$RAW/get/redis.skipped"; log "redis: skipped (not reachable)"; continue; } ;;
  esac
  LIVE_STORES+=("$store")
done
[ ${#LIVE_STORES[@]} -gt 0 ] || die "no store to measure"

setup_store() { # STORE SIZE
  local store=$1 size=$2 name dir t0 t1 mem0 mem1
  name="$store-$size"
  dir="$WORK/$name"
  mkdir -p "$dir"
  local args=()
  case "$store" in
    sqlite)
      SQLITE_FILE[$name]="$dir/latchkey.db"
      DBURL[$name]="sqlite://$dir/latchkey.db"
      ;;
    postgres)
      SCHEMA[$name]="scale_${STAMP//-/_}_$size"
      psql "$PG_BASE" -qc "CREATE SCHEMA ${SCHEMA[$name]}" >/dev/null
      PG_SCHEMAS+=("${SCHEMA[$name]}")
      DBURL[$name]=$(pg_url "${SCHEMA[$name]}")
      ;;
    redis)
      PREFIX[$name]="latchkey-scale-$STAMP-$size:"
      REDIS_PREFIXES+=("${PREFIX[$name]}")
      USERS_FILE[$name]="$dir/users.db"
      DBURL[$name]="sqlite://$dir/users.db"
      SESSURL[$name]="$REDIS_BASE?prefix=${PREFIX[$name]}"
      ;;
  esac
  args=(--database "${DBURL[$name]}")
  [ -n "${SESSURL[$name]:-}" ] && args+=(--sessions "${SESSURL[$name]}")
  printf '%s\n' "$PASSWORD" | "$BIN/latchkey" user add "$USERNAME" --role admin --password-stdin \
    "${args[@]}" >"$dir/user-add.log" 2>&1 || { cat "$dir/user-add.log" >&2; die "$name: latchkey user add failed"; }
  # The session tables exactly as the server creates them (idempotent DDL).
  case "$store" in
    sqlite) sqlite3 "${SQLITE_FILE[$name]}" "PRAGMA journal_mode=WAL;" ".read crates/latchkey/schema/sqlite.sql" >/dev/null ;;
    postgres) pg_sql "${SCHEMA[$name]}" -f crates/latchkey/schema/postgres.sql >/dev/null ;;
  esac
  # size - 1 bulk sessions (the bench's own login makes size): k of them
  # with known cookies, for the spread runs, the rest random.
  local n=$((size - 1)) k nowms
  k=$(( SPREAD < n ? SPREAD : n ))
  nowms=$(now_ms)
  log "$name: loading $n live sessions ($k with known cookies)"
  t0=$(now)
  case "$store" in
    sqlite)
      sqlite_load "${SQLITE_FILE[$name]}" $((n - k)) 0 live "$nowms"
      python3 "$BENCH_DIR/scale.py" known sqlite "${SQLITE_FILE[$name]}" "$k" "$n" "$nowms" "$dir/tokens"
      ;;
    postgres)
      pg_load "${SCHEMA[$name]}" $((n - k)) 0 live "$nowms"
      python3 "$BENCH_DIR/scale.py" known pgcopy - "$k" "$n" "$nowms" "$dir/tokens" \
        | pg_sql "${SCHEMA[$name]}" -c "COPY latchkey_sessions (token_hash, id, user_id, username, role, created_at, last_seen_at, expires_at, user_agent, ip, csrf_secret) FROM STDIN" >/dev/null
      pg_sql "${SCHEMA[$name]}" -c "VACUUM ANALYZE latchkey_sessions" -c "CHECKPOINT" >/dev/null
      ;;
    redis)
      mem0=$(redis_used_memory)
      redis_load "${PREFIX[$name]}" $((n - k)) 0 live "$nowms"
      python3 "$BENCH_DIR/scale.py" known resp "${PREFIX[$name]}" "$k" "$n" "$nowms" "$dir/tokens" \
        | rcli --pipe >"$WORK/redis-pipe.log" 2>&1
      grep -q 'errors: 0' "$WORK/redis-pipe.log" || { cat "$WORK/redis-pipe.log" >&2; die "redis load had errors"; }
      mem1=$(redis_used_memory)
      echo "{\"sessions\": $n, \"used_memory_before\": $mem0, \"used_memory_after\": $mem1}" >"$RAW/bytes/redis-$size.json"
      ;;
  esac
  # After the Redis memory reading: the users live in SQLite (users.db).
  users_load "$name" $((n - k)) "$k" "$n"
  echo "$k" >"$dir/spread-count"
  t1=$(now)
  local users
  users=$(users_count "$name")
  echo "{\"store\": \"$store\", \"size\": $size, \"rows\": $n, \"users\": $users, \"kind\": \"live\", \"seconds\": $(python3 -c "print(round($t1 - $t0, 2))")}" \
    >"$RAW/load/$name-live.json"
  log "$name: loaded in $(python3 -c "print(round($t1 - $t0, 1))") s ($users users, the bench's own included)"
  # Every bulk session has its user (one anti-join, not timed above); the
  # Redis store's users are in another database, checked by bring_up's GET.
  local orphans=0 q="SELECT count(*) FROM latchkey_sessions s WHERE NOT EXISTS (SELECT 1 FROM latchkey_users u WHERE u.id = s.user_id)"
  case "$store" in
    sqlite) orphans=$(sqlite3 "${SQLITE_FILE[$name]}" ".timeout 5000" "$q") ;;
    postgres) orphans=$(pg_sql "${SCHEMA[$name]}" -c "$q") ;;
  esac
  [ "$orphans" = 0 ] || die "$name: $orphans bulk sessions have no users row"
}

for store in "${LIVE_STORES[@]}"; do
  setup_store "$store" "$SMALL"
  setup_store "$store" "$LARGE"
done

# ---- 1. GET /profile at SMALL and LARGE live sessions, all servers up, round robin
TARGETS=()
for store in "${LIVE_STORES[@]}"; do TARGETS+=("$store-$SMALL" "$store-$LARGE"); done
for name in "${TARGETS[@]}"; do
  bring_up "$name" "$RAW/get/$name"
  echo "$(live_count "$name")" >"$RAW/get/$name/live-sessions"
  log "$name: up on 127.0.0.1:${PORT[$name]} (pid ${PID[$name]}, core $SERVER_CPU), signed in; $(cat "$RAW/get/$name/live-sessions") live sessions"
done

log "GET /profile: $ROUNDS round(s) of ${WARMUP}s warm-up + ${DURATION}s measured per server (wrk -t1 -c$GET_CONNS), one session's cookie, then cookies spread over many sessions"
n=${#TARGETS[@]}
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    name=${TARGETS[$(( (i + round - 1) % n ))]}
    dir="$RAW/get/$name"
    warm "$name"
    before="$(cpu_ticks "${PID[$name]}") $(now)"
    run_wrk "$dir/round-$round" "$DURATION" "$name" || die "$name: wrk failed"
    read -r t0 w0 <<<"$before"
    t1=$(cpu_ticks "${PID[$name]}"); w1=$(now)
    echo "{\"cpu_ticks\": $((t1 - t0)), \"wall_s\": $(python3 -c "print($w1 - $w0)"), \"clk_tck\": $(getconf CLK_TCK), \"vmrss_kb\": $(status_kb "${PID[$name]}" VmRSS)}" \
      >"$dir/round-$round.proc.json"
    log "$name round $round: $(summary "$dir/round-$round.json" "$dir/round-$round.proc.json")"
    # The same, every request with the cookie of a random one of the
    # store's known sessions.
    SPREAD_RUN=1 warm "$name"
    before="$(cpu_ticks "${PID[$name]}") $(now)"
    SPREAD_RUN=1 run_wrk "$dir/spread-$round" "$DURATION" "$name" || die "$name: wrk failed"
    read -r t0 w0 <<<"$before"
    t1=$(cpu_ticks "${PID[$name]}"); w1=$(now)
    echo "{\"cpu_ticks\": $((t1 - t0)), \"wall_s\": $(python3 -c "print($w1 - $w0)"), \"clk_tck\": $(getconf CLK_TCK), \"vmrss_kb\": $(status_kb "${PID[$name]}" VmRSS)}" \
      >"$dir/spread-$round.proc.json"
    log "$name round $round, spread over $(cat "$WORK/$name/spread-count") sessions: $(summary "$dir/spread-$round.json" "$dir/spread-$round.proc.json")"
  done
done
for name in "${TARGETS[@]}"; do cp "$WORK/$name/spread-count" "$RAW/get/$name/spread-sessions"; done
for name in "${TARGETS[@]}"; do stop_server "$name"; done

# ---- 3. bytes per session on disk / in Redis (the large stores, after the GET runs)
for store in "${LIVE_STORES[@]}"; do
  name="$store-$LARGE"
  case "$store" in
    sqlite)
      f=${SQLITE_FILE[$name]}
      sqlite3 "$f" ".timeout 10000" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
      rows=$(sqlite3 "$f" "SELECT count(*) FROM latchkey_sessions")
      db=$(stat -c %s "$f"); wal=$(stat -c %s "$f-wal" 2>/dev/null || echo 0)
      pages=$(sqlite3 "$f" "SELECT json_group_object(name, bytes) FROM (SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name)" 2>/dev/null || echo '{}')
      [ -n "$pages" ] || pages='{}'
      # The file also holds the bulk sessions' users (one row per two
      # sessions): the per-session figure counts latchkey_sessions' own
      # pages (table and its indexes, from dbstat), the file size is kept beside it.
      sess=$(sqlite3 "$f" "SELECT coalesce(sum(pgsize), 'null') FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'latchkey_sessions')" 2>/dev/null || echo null)
      [ -n "$sess" ] || sess=null
      users=$(sqlite3 "$f" "SELECT count(*) FROM latchkey_users")
      echo "{\"rows\": $rows, \"users\": $users, \"sessions_bytes\": $sess, \"db_bytes\": $db, \"wal_bytes\": $wal, \"page_size\": $(sqlite3 "$f" 'PRAGMA page_size'), \"by_object\": $pages}" >"$RAW/bytes/sqlite.json"
      ;;
    postgres)
      pg_sql "${SCHEMA[$name]}" -c "SELECT json_build_object('rows', (SELECT count(*) FROM latchkey_sessions),
        'table_bytes', pg_table_size('latchkey_sessions'), 'index_bytes', pg_indexes_size('latchkey_sessions'),
        'total_bytes', pg_total_relation_size('latchkey_sessions'))" >"$RAW/bytes/postgres.json"
      ;;
  esac
done

log "memory store: session-bytes $MEM_SESSIONS (2 and 1 sessions per user)"
"$BIN/session-bytes" "$MEM_SESSIONS" 2 >"$RAW/bytes/memory-2.json"
"$BIN/session-bytes" "$MEM_SESSIONS" 1 >"$RAW/bytes/memory-1.json"
log "memory store: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f bytes/session RSS, %.0f heap" % (d["rss_bytes_per_session"], d["heap_bytes_per_session"]))' "$RAW/bytes/memory-2.json")"

# ---- 2. the sweep of EXPIRED expired sessions (SQLite, PostgreSQL)
expired_count() { # NAME CUTOFF
  case "${1%-*}" in
    sqlite) sqlite3 "${SQLITE_FILE[$1]}" ".timeout 5000" "SELECT count(*) FROM latchkey_sessions WHERE expires_at <= $2" ;;
    postgres) pg_sql "${SCHEMA[$1]}" -c "SELECT count(*) FROM latchkey_sessions WHERE expires_at <= $2" ;;
  esac
}

sweep_test() { # STORE
  local store=$1 name="$1-$LARGE" dir="$RAW/sweep/$1" nowms cutoff t0 t1 w
  mkdir -p "$dir"
  # Before: the same server settings (idle timeout $SWEEP_IDLE, so the sweeper
  # runs every second) on the same store, with nothing yet to sweep.
  bring_up "$name" "$dir/before" --idle-timeout "$SWEEP_IDLE"
  warm "$name"
  local windows=$(( (BEFORE + WINDOW - 1) / WINDOW ))
  threads_snapshot "${PID[$name]}" "$dir/before/threads-0.tsv"
  for w in $(seq 1 "$windows"); do
    HIST=1 run_wrk "$dir/before/window-$w" "$WINDOW" "$name" || die "$name: wrk failed"
  done
  threads_snapshot "${PID[$name]}" "$dir/before/threads-1.tsv"
  log "$store sweep: before: $(python3 "$BENCH_DIR/scale.py" merge "$dir/before"/window-*.hist.gz)"
  stop_server "$name"

  nowms=$(now_ms)
  cutoff=$((nowms - 1000))
  log "$store sweep: loading $EXPIRED expired sessions"
  t0=$(now)
  case "$store" in
    sqlite) sqlite_load "${SQLITE_FILE[$name]}" "$EXPIRED" 1000000000 expired "$nowms" ;;
    postgres) pg_load "${SCHEMA[$name]}" "$EXPIRED" 1000000000 expired "$nowms" ;;
  esac
  t1=$(now)
  echo "{\"store\": \"$store\", \"rows\": $EXPIRED, \"kind\": \"expired\", \"seconds\": $(python3 -c "print(round($t1 - $t0, 2))")}" >"$RAW/load/$store-expired.json"
  local remaining
  remaining=$(expired_count "$name" "$cutoff")
  log "$store sweep: loaded in $(python3 -c "print(round($t1 - $t0, 1))") s; $remaining expired sessions; starting the server (--idle-timeout $SWEEP_IDLE: it sweeps at once, then every second)"

  # During: the sweeper starts with the server. A poller on the client core
  # counts what is left; wrk runs back-to-back windows until it reads 0.
  mkdir -p "$dir/during"
  : >"$dir/during/poll.tsv"
  local poll_every=1
  [ "$SMOKE" = 1 ] && poll_every=0.2
  bring_up "$name" "$dir/during" --idle-timeout "$SWEEP_IDLE"
  (
    while :; do
      c=$(expired_count "$name" "$cutoff" 2>/dev/null || echo -1)
      printf '%s\t%s\n' "$(now)" "$c" >>"$dir/during/poll.tsv"
      [ "$c" = 0 ] && break
      sleep "$poll_every"
    done
  ) &
  POLLER=$!
  local started deadline
  started=$(cat "$dir/during/started")
  deadline=$(python3 -c "print($started + $SWEEP_TIMEOUT)")
  w=0
  # Where the server's threads spent the sweep: CPU and run-queue waits.
  threads_snapshot "${PID[$name]}" "$dir/during/threads-0.tsv"
  while :; do
    w=$((w + 1))
    now >"$dir/during/window-$w.start"
    HIST=1 run_wrk "$dir/during/window-$w" "$WINDOW" "$name" || die "$name: wrk failed"
    now >"$dir/during/window-$w.end"
    threads_snapshot "${PID[$name]}" "$dir/during/window-$w.threads"
    if ! kill -0 "$POLLER" 2>/dev/null; then break; fi
    if python3 -c "import sys; sys.exit(0 if $(now) > $deadline else 1)"; then
      log "$store sweep: not done after ${SWEEP_TIMEOUT}s; giving up"
      kill "$POLLER" 2>/dev/null || true
      echo timeout >"$dir/during/timed-out"
      break
    fi
    if [ $((w % 10)) = 0 ]; then log "$store sweep: $(tail -n1 "$dir/during/poll.tsv" | cut -f2) expired sessions left"; fi
  done
  wait "$POLLER" 2>/dev/null || true
  POLLER=""
  # After: one more window once the sweep is over.
  [ -f "$dir/during/timed-out" ] || run_wrk "$dir/after" "$WINDOW" "$name" || true
  echo "{\"expired\": $EXPIRED, \"cutoff\": $cutoff, \"remaining_at_start\": $remaining}" >"$dir/sweep.json"
  stop_server "$name"
  log "$store sweep: $(python3 "$BENCH_DIR/scale.py" sweep-line "$dir")"
}

for store in "${LIVE_STORES[@]}"; do
  case "$store" in sqlite|postgres) sweep_test "$store" ;; esac
done

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/meta.env"
REPORT_ARGS=("$OUT")
if [ "$SMOKE" = 0 ] && [ "$OUT" = "$BENCH_DIR/results" ]; then
  REPORT_ARGS+=(--readme "$ROOT/README.md")
fi
python3 "$BENCH_DIR/scale.py" report "${REPORT_ARGS[@]}"
log "wrote $OUT/SCALE.md"
