-- POST /login with JSON credentials from the environment, then report.
-- BENCH_LOGIN_BODY='{"username": "...", "password": "..."}'
wrk.method = "POST"
wrk.body = os.getenv("BENCH_LOGIN_BODY")
wrk.headers["Content-Type"] = "application/json"

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
