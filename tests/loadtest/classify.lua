-- classify.lua - wrk script for `make loadtest`: POSTs one JPEG to /v1/classify and reports
-- throughput, latency percentiles, the status mix and, from the server's own timing_ms of every
-- 200 answer, the stage medians (queue, decode, preprocess, infer, total), the overhead
-- (total - decode - preprocess - infer: HTTP, queue and JSON) and the served requests' total p99.
-- Environment: LSQ_LOADTEST_IMAGE (the JPEG), LSQ_LOADTEST_PATH (path and query).
local f = assert(io.open(os.getenv("LSQ_LOADTEST_IMAGE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
wrk.path = os.getenv("LSQ_LOADTEST_PATH") or "/v1/classify"

local threads = {}
local keys = {"queue", "decode", "preprocess", "infer", "total"}
local all_keys = {"queue", "decode", "preprocess", "infer", "total", "overhead"}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  -- one flat global array per stage: wrk copies flat tables between threads, not nested ones
  for _, k in ipairs(all_keys) do _G["st_" .. k] = {} end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 200 then return end
  local t = {}
  for _, k in ipairs(keys) do
    t[k] = tonumber(body:match('"' .. k .. '":%s*([-%d.eE+]+)'))
    if not t[k] then return end
  end
  for _, k in ipairs(keys) do table.insert(_G["st_" .. k], t[k]) end
  table.insert(st_overhead, t.total - t.decode - t.preprocess - t.infer)
end

local function pct(v, p)
  if #v == 0 then return 0 end
  table.sort(v)
  return v[math.max(1, math.ceil(#v * p / 100))]
end

function done(summary, latency, requests)
  local mix, codes = {}, {}
  local all = {queue = {}, decode = {}, preprocess = {}, infer = {}, total = {}, overhead = {}}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do
      if not mix[code] then table.insert(codes, code) end
      mix[code] = (mix[code] or 0) + n
    end
    for _, k in ipairs(all_keys) do
      for _, x in ipairs(t:get("st_" .. k)) do table.insert(all[k], x) end
    end
  end
  table.sort(codes)
  local parts = {}
  for _, c in ipairs(codes) do table.insert(parts, string.format("%d:%d", c, mix[c])) end
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT throughput=%.1f/s p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms statuses=%s socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, table.concat(parts, ","), errs))
  io.write(string.format("SERVER served=%d queue=%.3f decode=%.3f preprocess=%.3f infer=%.3f total=%.3f overhead=%.3f total_p99=%.3f\n",
    #all.total, pct(all.queue, 50), pct(all.decode, 50), pct(all.preprocess, 50), pct(all.infer, 50),
    pct(all.total, 50), pct(all.overhead, 50), pct(all.total, 99)))
end
