-- GET requests spread over many sessions: each request carries the cookie
-- of a session picked at random from BENCH_TOKENS (one token per line),
-- under the cookie name BENCH_COOKIE_NAME. Prints report.lua's BENCH_JSON.
local requests = {}

function init(args)
  local name = os.getenv("BENCH_COOKIE_NAME") or "latchkey"
  local path = os.getenv("BENCH_TOKENS") or error("BENCH_TOKENS is not set")
  for token in io.lines(path) do
    if token ~= "" then
      requests[#requests + 1] = wrk.format(nil, nil, { ["Cookie"] = name .. "=" .. token })
    end
  end
  if #requests == 0 then error("no tokens in " .. path) end
  math.randomseed(os.time())
end

function request()
  return requests[math.random(#requests)]
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
