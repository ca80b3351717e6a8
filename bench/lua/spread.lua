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

function done(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
