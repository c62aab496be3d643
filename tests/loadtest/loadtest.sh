#!/usr/bin/env bash
# tests/loadtest/loadtest.sh BUILD - `make loadtest`: drive lsq-server with wrk at several
# concurrency levels and print throughput, p50/p90/p99 and the status mix per level.
#
# By default it serves an ImageNet-shape efficientnet_b0 (lsq init: 1000 classes, 224x224, seeded
# random weights; FIXME: add its w8a8 configuration once `lsq quantize` exists) and POSTs a 224x224
# JPEG. Settings (environment):
#   LSQ_LOADTEST_LEVELS    concurrency levels (default "1 2 4 8 16")
#   LSQ_LOADTEST_DURATION  seconds per level (default 10)
#   LSQ_LOADTEST_URL       drive a running server instead (e.g. http://127.0.0.1:8080)
#   LSQ_LOADTEST_PATH      path and query (default /v1/classify?model=efficientnet_b0-init)
#   LSQ_LOADTEST_ARGS      extra lsq-server flags (e.g. "--workers 2 --queue 8")
#   LSQ_LOADTEST_IMAGE     the JPEG to send (default: a generated 224x224 one)
# Measure on a quiet machine: figures taken next to other CPU work mean nothing.
set -euo pipefail
build=${1:?usage: tests/loadtest/loadtest.sh BUILD}
root=$(cd "$(dirname "$0")/../.." && pwd)
levels=${LSQ_LOADTEST_LEVELS:-1 2 4 8 16}
duration=${LSQ_LOADTEST_DURATION:-10}
work=$(mktemp -d /tmp/lsq-loadtest.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "loadtest: wrk is missing (make deps)" >&2; exit 1; }

export LSQ_LOADTEST_IMAGE=${LSQ_LOADTEST_IMAGE:-$work/cat.jpg}
if [ ! -f "$LSQ_LOADTEST_IMAGE" ]; then
    /usr/bin/python3 -c "
import numpy as np; from PIL import Image
y, x = np.mgrid[0:224, 0:224]
img = np.stack([(x * 255 // 223), (y * 255 // 223), ((x + y) * 255 // 446)], -1).astype('uint8')
img = img ^ (np.random.RandomState(0).rand(224, 224, 3) * 40).astype('uint8')
Image.fromarray(img).save('$LSQ_LOADTEST_IMAGE', quality=90)"
fi
export LSQ_LOADTEST_PATH=${LSQ_LOADTEST_PATH:-/v1/classify?model=efficientnet_b0-init}

url=${LSQ_LOADTEST_URL:-}
if [ -z "$url" ]; then
    mkdir -p "$work/models"
    "$root/$build/lsq" init --arch efficientnet_b0 --classes 1000 --seed 0 --out "$work/models/b0.safetensors"
    cat >"$work/models/manifest.json" <<JSON
{"version": 1, "models": [{"name": "efficientnet_b0-init", "arch": "efficientnet_b0", "default_config": "fp32",
  "description": "lsq init, seed 0 (random weights)", "configs": [{"config": "fp32", "file": "b0.safetensors"}]}]}
JSON
    # shellcheck disable=SC2086
    "$root/$build/lsq-server" --models "$work/models" --port 0 --host 127.0.0.1 --eval off --no-access-log \
        ${LSQ_LOADTEST_ARGS:-} 2>"$work/server.err" &
    pid=$!
    for _ in $(seq 600); do
        port=$(sed -n 's/.*ready: listening on [0-9.]*:\([0-9]*\).*/\1/p' "$work/server.err")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/server.err" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$port" ] || { echo "loadtest: the server did not start" >&2; exit 1; }
    url=http://127.0.0.1:$port
    grep -E 'kernels|workers' "$work/server.err" | sed 's/^/# /'
fi
echo "# $url$LSQ_LOADTEST_PATH, $(stat -c %s "$LSQ_LOADTEST_IMAGE")-byte JPEG, ${duration}s per level"
printf '%-11s %s\n' concurrency result
for c in $levels; do
    threads=$((c < 2 ? c : 2))
    out=$(wrk -t "$threads" -c "$c" -d "${duration}s" --timeout 30s -s "$root/tests/loadtest/classify.lua" "$url" 2>&1)
    printf '%-11s %s\n' "$c" "$(grep '^RESULT' <<<"$out" | sed 's/^RESULT //')"
done
# the server's own view: stage times of the requests it served
curl -s "$url/v1/report" | /usr/bin/python3 -c "
import json, sys
for c in json.load(sys.stdin)['configurations']:
    l, b = c['latency_ms']['live'], c['latency_ms']['benchmark']
    if l['requests']:
        print(f\"# {c['model']}/{c['config']}: live infer p50 {l['infer_p50']:.2f} ms, total p50 {l['total_p50']:.2f} ms,\"
              f\" p99 {l['total_p99']:.2f} ms over the last {l['requests']} requests; benchmark p50 {b['p50']:.2f} ms\")"
curl -s "$url/metrics" | grep -E '^lsq_requests_total' | sed 's/^/# /'
