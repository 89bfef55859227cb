-- wrk script for POST /v1/predict: cycles through request bodies (one JSON object per line of
-- the file named by BENCH_BODIES), sends them with `Authorization: Bearer $BENCH_TOKEN`, and
-- at the end prints one machine-readable line:
--   BENCH_RESULT {"requests": N, "seconds": S, "rps": R, "p50_ms": .., "p90_ms": .., "p99_ms": ..,
--                 "max_ms": .., "non2xx": N, "connect": N, "read": N, "write": N, "timeout": N}
-- (non2xx is wrk's count of responses with a status of 400 or more; 3xx is not expected here).

local bodies_path = os.getenv("BENCH_BODIES")
local token = os.getenv("BENCH_TOKEN") or ""
local path = os.getenv("BENCH_PATH") or "/v1/predict"

local requests = {}
local index = 0

function init(args)
  local file = assert(io.open(bodies_path, "r"), "BENCH_BODIES must name a readable file")
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
  for line in file:lines() do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", path, headers, line)
    end
  end
  file:close()
  assert(#requests > 0, "no request bodies in " .. bodies_path)
  -- Threads start at different places in the list.
  index = ((id or 0) * 7919) % #requests
end

function setup(thread)
  setup_count = (setup_count or 0) + 1
  thread:set("id", setup_count - 1)
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, _)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, ' ..
    '"p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "non2xx": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
