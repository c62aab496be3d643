-- classify.lua - wrk script for `make loadtest`: POSTs one JPEG to /v1/classify and reports
-- throughput, latency percentiles and the status mix (aggregated over wrk's threads).
-- Environment: LSQ_LOADTEST_IMAGE (the JPEG), LSQ_LOADTEST_PATH (path and query).
local f = assert(io.open(os.getenv("LSQ_LOADTEST_IMAGE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
wrk.path = os.getenv("LSQ_LOADTEST_PATH") or "/v1/classify"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local mix, codes = {}, {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do
      if not mix[code] then table.insert(codes, code) end
      mix[code] = (mix[code] or 0) + n
    end
  end
  table.sort(codes)
  local parts = {}
  for _, c in ipairs(codes) do table.insert(parts, string.format("%d:%d", c, mix[c])) end
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT throughput=%.1f/s p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms statuses=%s socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, table.concat(parts, ","), errs))
end
