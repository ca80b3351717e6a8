-- report.lua's "BENCH_JSON {...}" line, plus "BENCH_HIST v:c,v:c,...": every
-- distinct latency wrk recorded (microseconds) with its count, so that
-- bench/scale.py can merge consecutive short runs into one exact
-- distribution (the p99 of a whole sweep, measured in windows).
local function report(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
  local parts = {}
  for i = 1, #latency do
    local v, c = latency(i)
    parts[#parts + 1] = string.format('%d:%d', v, c)
  end
  io.write('BENCH_HIST ' .. table.concat(parts, ',') .. '\n')
end

done = report
