-- tests/docker/wrk-classify.lua - wrk script for cluster-test: POST the JPEG named by $LSQ_JPEG to
-- /v1/classify and count the responses by status; done() prints one line:
-- "requests=N rps=R p50_ms=A p99_ms=B status_200=N ... socket_errors=connect/read/write/timeout".
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    local f = assert(io.open(os.getenv("LSQ_JPEG"), "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.method = "POST"
    wrk.path = "/v1/classify?topk=1"
    wrk.headers["Content-Type"] = "image/jpeg"
    statuses = {}
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for k, v in pairs(t:get("statuses")) do
            total[k] = (total[k] or 0) + v
        end
    end
    local keys = {}
    for k in pairs(total) do table.insert(keys, k) end
    table.sort(keys)
    local s = ""
    for _, k in ipairs(keys) do s = s .. string.format(" status_%d=%d", k, total[k]) end
    local e = summary.errors
    io.write(string.format("requests=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f%s socket_errors=%d/%d/%d/%d\n",
        summary.requests, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, s,
        e.connect, e.read, e.write, e.timeout))
end
