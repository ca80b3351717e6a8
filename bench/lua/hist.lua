-- report.lua's "BENCH_JSON {...}" line, plus "BENCH_HIST v:c,v:c,...": every
-- distinct latency wrk recorded (microseconds) with its count, so that
-- bench/scale.py can merge consecutive short runs into one exact
-- distribution (the p99 of a whole sweep, measured in windows).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local json_line = done

function done(summary, latency)
  json_line(summary, latency)
  local parts = {}
  for i = 1, #latency do
    local v, c = latency(i)
    parts[#parts + 1] = string.format('%d:%d', v, c)
  end
  io.write('BENCH_HIST ' .. table.concat(parts, ',') .. '\n')
end
