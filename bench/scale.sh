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
LOG_TAG=scale
source "$(dirname "$0")/common.sh"

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


OPTIONS="STORES SMALL LARGE EXPIRED SPREAD ROUNDS DURATION WARMUP WINDOW BEFORE SWEEP_TIMEOUT MEMORY_SESSIONS PROFILE OUT SERVER_CPU CLIENT_CPU"
FLAGS=""
STORES="sqlite postgres redis" SMALL=1000 LARGE=1000000 EXPIRED=1000000 SPREAD=200000 ROUNDS=3 DURATION=6
WARMUP=2 WINDOW=2 BEFORE=10 SWEEP_TIMEOUT=1800 MEMORY_SESSIONS=200000 SWEEP_IDLE=10s
smoke_defaults() {
  SMALL=100 LARGE=10000 EXPIRED=10000 SPREAD=2000 ROUNDS=1 DURATION=1 WARMUP=0 WINDOW=1 BEFORE=2
  SWEEP_TIMEOUT=60 MEMORY_SESSIONS=20000
}
parse_args "$@"
STORES=${STORES//,/ }
for s in $STORES; do
  case "$s" in sqlite|postgres|redis) ;; *) echo "unknown store $s" >&2; exit 2 ;; esac
done
[ "$SMALL" -ge 1 ] && [ "$LARGE" -ge "$SMALL" ] || { echo "need 1 <= --small <= --large" >&2; exit 2; }

install_tools() { install_packages sqlite3:sqlite3; }

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

declare -A COOKIE_NAME DBURL SESSURL SQLITE_FILE SCHEMA PREFIX
# Starts `latchkey serve` for NAME on its stores, signs in, checks the
# profile, and that a bulk-loaded session gets its profile too.
bring_up() { # NAME DIR EXTRA_ARGS...
  local name=$1 dir=$2 port args status token
  shift 2
  port=$(free_port)
  args=(--bind "127.0.0.1:$port" --database "${DBURL[$name]}")
  [ -z "${SESSURL[$name]:-}" ] || args+=(--sessions "${SESSURL[$name]}")
  mkdir -p "$dir"
  latchkey_serve "$name" "$dir/server.log" "${args[@]}" "$@"
  now >"$dir/started"
  wait_up "$name" "$port" "$dir/server.log" /readyz
  sign_in "$name" "$dir"
  # The session cookie's name (the one whose value is a 43-character token).
  COOKIE_NAME[$name]=$(tr ';' '\n' <<<"${COOKIE[$name]}" | sed 's/^ *//' \
    | awk -F= 'length($2) == 43 && $1 ~ /latchkey$/ { print $1; exit }')
  [ -n "${COOKIE_NAME[$name]}" ] || die "$name: no session cookie in the login's Set-Cookie"
  if [ -s "$WORK/$name/tokens" ]; then
    token=$(head -n1 "$WORK/$name/tokens")
    status=$(curl -s -H "Cookie: ${COOKIE_NAME[$name]}=$token" -o "$WORK/bulk.body" -w '%{http_code}' \
      "http://127.0.0.1:$port/profile" || true)
    [ "$status" = 200 ] && grep -q '"username":"user' "$WORK/bulk.body" \
      || { cat "$WORK/bulk.body" >&2; die "$name: a bulk-loaded session does not get its profile ($status)"; }
  fi
}

# Closed-loop GET /profile with the session's cookie (lua/report.lua; KIND
# hist: lua/hist.lua, every latency recorded for exact merging) or, KIND
# spread, with the cookie of a session picked at random from the store's
# known tokens for every request (lua/spread.lua).
get_wrk() { # OUT SECONDS NAME [one|hist|spread]
  local name=$3 args=(-s "$BENCH_DIR/lua/report.lua" -H "Cookie: ${COOKIE[$3]}")
  case "${4:-one}" in
    hist) args=(-s "$BENCH_DIR/lua/hist.lua" -H "Cookie: ${COOKIE[$name]}") ;;
    spread) args=(-s "$BENCH_DIR/lua/spread.lua") ;;
  esac
  BENCH_TOKENS="$WORK/$name/tokens" BENCH_COOKIE_NAME="${COOKIE_NAME[$name]:-latchkey}" \
    run_wrk "$1" "$GET_CONNS" "$2" "http://127.0.0.1:${PORT[$name]}/profile" "${args[@]}"
}
warm() { # NAME [KIND]: unmeasured load first (none with --warmup 0)
  [ "$WARMUP" = 0 ] || get_wrk "$WORK/warmup" "$WARMUP" "$1" "${2:-one}" || die "$1: wrk failed"
}
redis_used_memory() { rcli info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'; }

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

# RESP from scale.py on stdin, into Redis.
redis_pipe() {
  rcli --pipe >"$WORK/redis-pipe.log" 2>&1 || { cat "$WORK/redis-pipe.log" >&2; die "redis-cli --pipe failed"; }
  grep -q 'errors: 0' "$WORK/redis-pipe.log" || { cat "$WORK/redis-pipe.log" >&2; die "redis load had errors"; }
}
redis_load() { # PREFIX N OFFSET live|expired NOW
  [ "$2" -gt 0 ] || return 0
  python3 "$BENCH_DIR/scale.py" redis-load "$@" | redis_pipe
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
    if [ "${name%-*}" = postgres ]; then pg_users_load "${SCHEMA[$name]}" "$first" "$last"
    else sqlite_users_load "${SQLITE_FILE[$name]}" "$first" "$last"; fi
  done
}
# SQL on NAME's database: its SQLite file (Redis: users.db) or its schema.
db_query() { # NAME SQL
  if [ "${1%-*}" = postgres ]; then pg_sql "${SCHEMA[$1]}" -c "$2"
  else sqlite3 "${SQLITE_FILE[$1]}" ".timeout 5000" "$2"; fi
}
live_count() { # NAME
  if [ "${1%-*}" = redis ]; then redis_keys "${PREFIX[$1]}s:*" | wc -l
  else db_query "$1" "SELECT count(*) FROM latchkey_sessions WHERE expires_at > $(now_ms)"; fi
}



# ---------------------------------------------------------------- main
bench_init
RAW="$OUT/scale"
rm -rf "$RAW"
mkdir -p "$RAW/get" "$RAW/sweep" "$RAW/bytes" "$RAW/load"
{
  meta SMALL LARGE EXPIRED SPREAD ROUNDS DURATION WARMUP WINDOW BEFORE SWEEP_IDLE MEMORY_SESSIONS
  echo "sqlite3=$(sqlite3 --version | cut -d' ' -f1)"
  ! command -v psql >/dev/null || echo "postgres=$(psql "$PG_BASE" -qtAc 'show server_version' 2>/dev/null || echo none)"
  ! command -v redis-cli >/dev/null || echo "redis=$(rcli info server 2>/dev/null | tr -d '\r' | awk -F: '$1 == "redis_version" { print $2 }')"
} >"$RAW/meta.env"

# ---- the stores: for each store kind, a small and a large one
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
  local store=$1 size=$2 name="$1-$2" dir="$WORK/$1-$2" t0 t1 mem0 mem1 args users
  mkdir -p "$dir"
  case "$store" in
    sqlite)
      SQLITE_FILE[$name]="$dir/latchkey.db"
      DBURL[$name]="sqlite://$dir/latchkey.db"
      ;;
    postgres)
      SCHEMA[$name]="scale_${STAMP//-/_}_$size"
      pg_new_schema "${SCHEMA[$name]}"
      DBURL[$name]=$(pg_url "${SCHEMA[$name]}")
      ;;
    redis)
      PREFIX[$name]="latchkey-scale-$STAMP-$size:"
      REDIS_CLEAN+=("0:${PREFIX[$name]}*")
      SQLITE_FILE[$name]="$dir/users.db"
      DBURL[$name]="sqlite://$dir/users.db"
      SESSURL[$name]="$REDIS_BASE?prefix=${PREFIX[$name]}"
      ;;
  esac
  args=(--database "${DBURL[$name]}")
  [ -z "${SESSURL[$name]:-}" ] || args+=(--sessions "${SESSURL[$name]}")
  latchkey_user_add "$name" "$dir/user-add.log" "${args[@]}"
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
      python3 "$BENCH_DIR/scale.py" known resp "${PREFIX[$name]}" "$k" "$n" "$nowms" "$dir/tokens" | redis_pipe
      mem1=$(redis_used_memory)
      echo "{\"sessions\": $n, \"used_memory_before\": $mem0, \"used_memory_after\": $mem1}" >"$RAW/bytes/redis-$size.json"
      ;;
  esac
  # After the Redis memory reading: the users live in SQLite (users.db).
  users_load "$name" $((n - k)) "$k" "$n"
  echo "$k" >"$dir/spread-count"
  t1=$(now)
  users=$(db_query "$name" "SELECT count(*) FROM latchkey_users")
  echo "{\"store\": \"$store\", \"size\": $size, \"rows\": $n, \"users\": $users, \"kind\": \"live\", \"seconds\": $(seconds "$t0" "$t1" 2)}" \
    >"$RAW/load/$name-live.json"
  log "$name: loaded in $(seconds "$t0" "$t1" 1) s ($users users, the bench's own included)"
  # Every bulk session has its user (one anti-join, not timed above); the
  # Redis store's users are in another database, checked by bring_up's GET.
  if [ "$store" != redis ]; then
    local orphans
    orphans=$(db_query "$name" "SELECT count(*) FROM latchkey_sessions s WHERE NOT EXISTS (SELECT 1 FROM latchkey_users u WHERE u.id = s.user_id)")
    [ "$orphans" = 0 ] || die "$name: $orphans bulk sessions have no users row"
  fi
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
  live_count "$name" >"$RAW/get/$name/live-sessions"
  log "$name: up on 127.0.0.1:${PORT[$name]} (pid ${PID[$name]}, core $SERVER_CPU), signed in; $(cat "$RAW/get/$name/live-sessions") live sessions"
done

log "GET /profile: $ROUNDS round(s) of ${WARMUP}s warm-up + ${DURATION}s measured per server (wrk -t1 -c$GET_CONNS), one session's cookie, then cookies spread over many sessions"
n=${#TARGETS[@]}
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    name=${TARGETS[$(( (i + round - 1) % n ))]}
    # One session's cookie, then every request with the cookie of a random
    # one of the store's known sessions.
    for kind in round spread; do
      out="$RAW/get/$name/$kind-$round"
      warm "$name" "${kind/round/one}"
      with_cpu "$out.proc.json" "${PID[$name]}" get_wrk "$out" "$DURATION" "$name" "${kind/round/one}" \
        || die "$name: wrk failed"
      log "$name round $round$([ $kind = round ] || echo ", spread over $(cat "$WORK/$name/spread-count") sessions"): $(py summary "$out.json" "$out.proc.json")"
    done
  done
done
for name in "${TARGETS[@]}"; do cp "$WORK/$name/spread-count" "$RAW/get/$name/spread-sessions"; stop_server "$name"; done

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

log "memory store: session-bytes $MEMORY_SESSIONS (2 and 1 sessions per user)"
"$BIN/session-bytes" "$MEMORY_SESSIONS" 2 >"$RAW/bytes/memory-2.json"
"$BIN/session-bytes" "$MEMORY_SESSIONS" 1 >"$RAW/bytes/memory-1.json"
log "memory store: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f bytes/session RSS, %.0f heap" % (d["rss_bytes_per_session"], d["heap_bytes_per_session"]))' "$RAW/bytes/memory-2.json")"

# ---- 2. the sweep of EXPIRED expired sessions (SQLite, PostgreSQL)
expired_count() { db_query "$1" "SELECT count(*) FROM latchkey_sessions WHERE expires_at <= $2"; } # NAME CUTOFF

sweep_test() { # STORE
  local store=$1 name="$1-$LARGE" dir="$RAW/sweep/$1" nowms cutoff t0 t1 w remaining started deadline
  mkdir -p "$dir"
  # Before: the same server settings (idle timeout $SWEEP_IDLE, so the sweeper
  # runs every second) on the same store, with nothing yet to sweep.
  bring_up "$name" "$dir/before" --idle-timeout "$SWEEP_IDLE"
  warm "$name"
  threads_snapshot "${PID[$name]}" "$dir/before/threads-0.tsv"
  for w in $(seq 1 $(( (BEFORE + WINDOW - 1) / WINDOW ))); do
    get_wrk "$dir/before/window-$w" "$WINDOW" "$name" hist || die "$name: wrk failed"
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
  echo "{\"store\": \"$store\", \"rows\": $EXPIRED, \"kind\": \"expired\", \"seconds\": $(seconds "$t0" "$t1" 2)}" >"$RAW/load/$store-expired.json"
  remaining=$(expired_count "$name" "$cutoff")
  log "$store sweep: loaded in $(seconds "$t0" "$t1" 1) s; $remaining expired sessions; starting the server (--idle-timeout $SWEEP_IDLE: it sweeps at once, then every second)"

  # During: the sweeper starts with the server. A poller on the client core
  # counts what is left; wrk runs back-to-back windows until it reads 0.
  mkdir -p "$dir/during"
  : >"$dir/during/poll.tsv"
  bring_up "$name" "$dir/during" --idle-timeout "$SWEEP_IDLE"
  (
    while :; do
      c=$(expired_count "$name" "$cutoff" 2>/dev/null || echo -1)
      printf '%s\t%s\n' "$(now)" "$c" >>"$dir/during/poll.tsv"
      [ "$c" != 0 ] || break
      sleep "$([ "$SMOKE" = 1 ] && echo 0.2 || echo 1)"
    done
  ) &
  POLLER=$!
  started=$(cat "$dir/during/started")
  deadline=$(( ${started%.*} + SWEEP_TIMEOUT ))
  w=0
  # Where the server's threads spent the sweep: CPU and run-queue waits.
  threads_snapshot "${PID[$name]}" "$dir/during/threads-0.tsv"
  while :; do
    w=$((w + 1))
    now >"$dir/during/window-$w.start"
    get_wrk "$dir/during/window-$w" "$WINDOW" "$name" hist || die "$name: wrk failed"
    now >"$dir/during/window-$w.end"
    threads_snapshot "${PID[$name]}" "$dir/during/window-$w.threads"
    kill -0 "$POLLER" 2>/dev/null || break
    if [ "$(date +%s)" -gt "$deadline" ]; then
      log "$store sweep: not done after ${SWEEP_TIMEOUT}s; giving up"
      kill "$POLLER" 2>/dev/null || true
      echo timeout >"$dir/during/timed-out"
      break
    fi
    [ $((w % 10)) != 0 ] || log "$store sweep: $(tail -n1 "$dir/during/poll.tsv" | cut -f2) expired sessions left"
  done
  wait "$POLLER" 2>/dev/null || true
  POLLER=""
  # After: one more window once the sweep is over.
  [ -f "$dir/during/timed-out" ] || get_wrk "$dir/after" "$WINDOW" "$name" || true
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
