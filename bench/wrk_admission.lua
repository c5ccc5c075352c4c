-- wrk script: POST AdmissionReviews read from a file (one compact JSON per line), in turn.
--
--   wrk -t1 -c16 -d10s -s bench/wrk_admission.lua https://127.0.0.1:PORT/mutate -- BODIES [RATE]
--
-- RATE (requests/s over all threads, 0 or absent: as fast as possible) paces the requests:
-- each thread hands out send slots 1/rate apart (LuaJIT's ffi reads CLOCK_MONOTONIC), and a
-- connection that is free waits for the next slot. Latency is measured by wrk from the send.
-- done() prints one line "BENCH_JSON {...}" that bench/http.py reads.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local bodies = {}
local counter = 0
local interval = 0
local next_slot = nil

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  local rate = tonumber(args[2] or "0") or 0
  local threads = tonumber(args[3] or "1") or 1
  if rate > 0 then interval = 1000 * threads / rate end
  counter = math.random(#bodies)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[counter])
end

function delay()
  if interval == 0 then return 0 end
  local t = now_ms()
  -- A backlog of more than 100 ms of slots is dropped rather than sent in a burst.
  if next_slot == nil or next_slot < t - 100 then next_slot = t end
  local wait = next_slot - t
  next_slot = next_slot + interval
  if wait < 0 then wait = 0 end
  return math.floor(wait)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
