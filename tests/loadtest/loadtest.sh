#!/usr/bin/env bash
# tests/loadtest/loadtest.sh BUILD - `make loadtest`: drive lsq-server with wrk at several
# concurrency levels, then at 4x overload, and check the server's targets (issue 5).
#
# It serves an ImageNet-shape efficientnet_b0 (lsq init: 1000 classes, 224x224, seeded random
# weights) and its w8a8 configuration (lsq quantize, calibrated on 8 generated 224x224 images), and
# POSTs a 224x224 JPEG at w8a8. Per level: throughput, client p50/p90/p99, the status mix, and the
# server's own stage medians from every answer's timing_ms. Then:
#   engine    the engine alone on the same cores: WORKERS concurrent `lsq bench` processes
#   overload  concurrency 4 x (workers + queue) for LSQ_LOADTEST_OVERLOAD seconds, resident memory
#             sampled after 10 s and at the end
# and a PASS/MISS line per target:
#   overhead (total - decode - preprocess - infer, at concurrency 1) <= 5% of infer p50
#   decode + preprocess (concurrency 1) <= 25% of infer p50
#   best throughput >= 0.8 x the engine's own
#   overload: only 200 and 503; served total p99 <= (queue + 1) x service time x 1.5, the service
#   time being decode + preprocess + infer medians during the overload (the bound with concurrency
#   1's service time is printed too); RSS at the end <= 1.1 x RSS after 10 s
# Settings (environment):
#   LSQ_LOADTEST_LEVELS    concurrency levels (default "1 2 4 8 16")
#   LSQ_LOADTEST_DURATION  seconds per level (default 10)
#   LSQ_LOADTEST_OVERLOAD  seconds of overload (default 60; 0 skips it)
#   LSQ_LOADTEST_QUEUE     the server's --queue (default 16)
#   LSQ_LOADTEST_URL       drive a running server instead (levels only, e.g. http://127.0.0.1:8080)
#   LSQ_LOADTEST_PATH      path and query (default /v1/classify?model=efficientnet_b0-init&config=w8a8)
#   LSQ_LOADTEST_ARGS      extra lsq-server flags (e.g. "--workers 1")
#   LSQ_LOADTEST_IMAGE     the JPEG to send (default: a generated 224x224 one)
# Measure on a quiet machine: figures taken next to other CPU work mean nothing.
set -euo pipefail
build=${1:?usage: tests/loadtest/loadtest.sh BUILD}
root=$(cd "$(dirname "$0")/../.." && pwd)
levels=${LSQ_LOADTEST_LEVELS:-1 2 4 8 16}
duration=${LSQ_LOADTEST_DURATION:-10}
overload_s=${LSQ_LOADTEST_OVERLOAD:-60}
queue=${LSQ_LOADTEST_QUEUE:-16}
work=$(mktemp -d /tmp/lsq-loadtest.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "loadtest: wrk is missing (make deps)" >&2; exit 1; }

export LSQ_LOADTEST_IMAGE=${LSQ_LOADTEST_IMAGE:-$work/cat.jpg}
mkdir -p "$work/calib"
/usr/bin/python3 -c "
import os, numpy as np; from PIL import Image
y, x = np.mgrid[0:224, 0:224]
for i in range(9):  # image 0 is the one sent (unless LSQ_LOADTEST_IMAGE names one), 1..8 calibrate w8a8
    r = np.random.RandomState(i)
    img = np.stack([(x * 255 // 223), (y * 255 // 223), ((x + y) * 255 // 446)], -1).astype('uint8')
    img = np.roll(img, r.randint(224), axis=r.randint(2)) ^ (r.rand(224, 224, 3) * 40).astype('uint8')
    path = '$LSQ_LOADTEST_IMAGE' if i == 0 else '$work/calib/%d.jpg' % i
    if i or not os.path.exists(path): Image.fromarray(img).save(path, quality=90)"
export LSQ_LOADTEST_PATH=${LSQ_LOADTEST_PATH:-/v1/classify?model=efficientnet_b0-init&config=w8a8}

url=${LSQ_LOADTEST_URL:-}
if [ -z "$url" ]; then
    mkdir -p "$work/models"
    "$root/$build/lsq" init --arch efficientnet_b0 --classes 1000 --seed 0 --out "$work/models/b0.safetensors"
    "$root/$build/lsq" quantize --model "$work/models/b0.safetensors" --config w8a8 --calib "$work/calib" \
        --calib-images 8 --out "$work/models/b0-w8a8.safetensors" >/dev/null
    cat >"$work/models/manifest.json" <<JSON
{"version": 1, "models": [{"name": "efficientnet_b0-init", "arch": "efficientnet_b0", "default_config": "w8a8",
  "description": "lsq init, seed 0 (random weights); w8a8 by lsq quantize on 8 generated images",
  "configs": [{"config": "fp32", "file": "b0.safetensors"}, {"config": "w8a8", "file": "b0-w8a8.safetensors"}]}]}
JSON
    # shellcheck disable=SC2086
    "$root/$build/lsq-server" --models "$work/models" --port 0 --host 127.0.0.1 --eval off --no-access-log \
        --queue "$queue" ${LSQ_LOADTEST_ARGS:-} 2>"$work/server.err" &
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
echo "# client: wrk's view; server: medians of the served answers' timing_ms (ms), overhead = total - decode - preprocess - infer"
drive() {  # drive CONCURRENCY SECONDS: one wrk run; prints its RESULT and SERVER lines' fields
    local threads=$(($1 < 2 ? $1 : 2))
    wrk -t "$threads" -c "$1" -d "${2}s" --timeout 30s -s "$root/tests/loadtest/classify.lua" "$url" 2>&1 |
        sed -n 's/^RESULT /client /p; s/^SERVER /server /p'
}
field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p" <<<"$2" | head -1; }
best=0 c1=
for c in $levels; do
    out=$(drive "$c" "$duration")
    printf '%-4s %s\n' "$c" "$(head -1 <<<"$out")"
    printf '     %s\n' "$(tail -1 <<<"$out")"
    tp=$(field throughput "$out")
    best=$(echo "if ($tp > $best) $tp else $best" | bc -l)
    [ "$c" = 1 ] && c1=$out
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

[ -n "${pid:-}" ] || exit 0   # a server of someone else's: levels only
workers=$(sed -n 's/.* \([0-9][0-9]*\) workers x .*/\1/p' "$work/server.err" | head -1)
workers=${workers:-$(nproc)}
echo
echo "# engine alone: $workers concurrent lsq bench --threads 1 on the w8a8 file"
sum=0 bpids=()
for i in $(seq "$workers"); do
    "$root/$build/lsq" bench --arch efficientnet_b0 --model "$work/models/b0-w8a8.safetensors" --threads 1 --iters 200 \
        --json >"$work/bench.$i" &
    bpids+=($!)
done
wait "${bpids[@]}"
for i in $(seq "$workers"); do
    p=$(sed 's/.*"p50_ms":\([0-9.]*\).*/\1/' "$work/bench.$i")
    sum=$(echo "$sum + 1000 / $p" | bc -l)
done
printf 'engine throughput %.1f/s\n' "$sum"

over=$((4 * (workers + queue)))
if [ "$overload_s" -gt 0 ]; then
    echo
    echo "# overload: concurrency $over = 4 x ($workers workers + queue $queue) for ${overload_s}s"
    rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
    (sleep 10; rss >"$work/rss10") &
    out=$(drive "$over" "$overload_s")
    rss_end=$(rss)
    printf '%-4s %s\n     %s\n' "$over" "$(head -1 <<<"$out")" "$(tail -1 <<<"$out")"
    rss10=$(cat "$work/rss10")
    echo "resident memory: ${rss10} kB after 10 s, ${rss_end} kB at the end"
fi

echo
echo "# targets"
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo PASS; else echo MISS; fi; }
inf=$(field infer "$c1") dec=$(field decode "$c1") pre=$(field preprocess "$c1") ovh=$(field overhead "$c1")
svc=$(field total "$c1")
if [ -n "$inf" ]; then
    printf '%s overhead %.3f ms = %.1f%% of infer p50 %.3f ms (target <= 5%%)\n' "$(verdict "$ovh <= 0.05 * $inf")" \
        "$ovh" "$(echo "100 * $ovh / $inf" | bc -l)" "$inf"
    printf '%s decode + preprocess %.3f ms = %.1f%% of infer p50 (target <= 25%%)\n' \
        "$(verdict "$dec + $pre <= 0.25 * $inf")" "$(echo "$dec + $pre" | bc -l)" "$(echo "100 * ($dec + $pre) / $inf" | bc -l)"
fi
printf '%s best throughput %.1f/s = %.2f x the engine alone %.1f/s (target >= 0.8)\n' \
    "$(verdict "$best >= 0.8 * $sum")" "$best" "$(echo "$best / $sum" | bc -l)" "$sum"
if [ "$overload_s" -gt 0 ]; then
    mix=$(sed -n 's/.*statuses=\([^ ]*\).*/\1/p' <<<"$out")
    other=$(tr ',' '\n' <<<"$mix" | grep -vE '^(200|503):' || true)
    errs=$(field socket_errors "$out")
    printf '%s overload statuses %s, socket errors %s (target: 200 and 503 only)\n' \
        "$( [ -z "$other" ] && [ "${errs:-0}" = 0 ] && echo PASS || echo MISS)" "$mix" "${errs:-?}"
    p99=$(field total_p99 "$out")
    # the service time during the overload (decode + preprocess + infer medians): the flood of 503s
    # and wrk itself share the cores, so a request's service is slower than at concurrency 1
    svo=$(echo "$(field decode "$out") + $(field preprocess "$out") + $(field infer "$out")" | bc -l)
    printf '%s overload served total p99 %.1f ms, bound (%d + 1) x service %.2f ms (in the overload) x 1.5 = %.1f ms\n' \
        "$(verdict "$p99 <= ($queue + 1) * $svo * 1.5")" "$p99" "$queue" "$svo" "$(echo "($queue + 1) * $svo * 1.5" | bc -l)"
    printf '     (with the service time at concurrency 1, %.2f ms, the bound would be %.1f ms)\n' "$svc" \
        "$(echo "($queue + 1) * $svc * 1.5" | bc -l)"
    printf '%s resident memory at the end = %.3f x after 10 s (target <= 1.1)\n' \
        "$(verdict "$rss_end <= 1.1 * $rss10")" "$(echo "$rss_end / $rss10" | bc -l)"
fi
