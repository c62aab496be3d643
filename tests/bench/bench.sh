#!/usr/bin/env bash
# bench.sh BUILD [ROUNDS] [ITERS] - the engine against ONNX Runtime 1.30, side by side in one run.
#
# For efficientnet_b0 and mixnet_s at 224x224, batch 1: ROUNDS interleaved rounds of
#   lsq bench fp32 (1 thread) | ONNX Runtime fp32 (1 thread) | lsq bench fp32 (2 threads) |
#   lsq bench --config C (1 thread) for each C in BENCH_CONFIGS (default w8a8 w4a4 w3a3 w2a2)
# on the same seeded random weights exported to ONNX (tests/bench/export_onnx.py; the quantized
# configurations quantize them with lsq quantize's initialisation), then the median p50 of each
# and the ratios: to ONNX Runtime's FP32, and the lower bit-widths to our w8a8. A ratio is the
# median over rounds of the ratio within each round: the machine changes speed between minutes
# as well as between CPUs, and a round's columns share the minutes. Absolute times drift 30% between runs on shared machines: compare
# the ratios, which come from the same minutes. Results also go to BUILD/bench/results.json.
# Needs node/npm (onnxruntime-node is installed into BUILD/bench/ort, offline-safe with
# --ignore-scripts) and Debian's python3-torch for the ONNX export.
set -euo pipefail
build=${1:-build} rounds=${2:-5} iters=${3:-50}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/$build/bench
mkdir -p "$out"
export ORT_DIR=$out/ort
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    # Debian's node and npm (only when absent: a machine with NodeSource's node keeps it)
    if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else echo "bench.sh: needs node and npm (apt-get install nodejs npm)" >&2; exit 1; fi
fi
if [ ! -e "$ORT_DIR/node_modules/onnxruntime-node/package.json" ]; then
    mkdir -p "$ORT_DIR"
    (cd "$ORT_DIR" && { [ -e package.json ] || npm init -y >/dev/null; } &&
        ONNXRUNTIME_NODE_INSTALL=skip npm install --ignore-scripts --no-audit --no-fund onnxruntime-node@1.30.0 >/dev/null)
fi
lsq=$root/$build/lsq
archs=${BENCH_ARCHS:-efficientnet_b0 mixnet_s}
echo "# $("$lsq" --version | tail -1)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $rounds rounds x $iters iters; 1-thread runs on CPU ${BENCH_CPU:-0}"
configs=${BENCH_CONFIGS-w8a8 w4a4 w3a3 w2a2}
# Every 1-thread column on the same CPU: the two vCPUs of this machine differ (CPU 1 ran our
# integer kernels 1.5x and FP32 1.3x slower than CPU 0 on 2026-11-27), and an unpinned process
# lands on either.
cpu=${BENCH_CPU:-0}
pin() { taskset -c "$cpu" "$@"; }
p50() { sed 's/.*"p50_ms":\([0-9.]*\).*/\1/'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "$1 / $2" | bc -l | cut -c1-5 | sed 's/^\./0./'; }
rratio() {  # rratio A B: the median over rounds of A's time / B's time in the same round
    local -a a=(${t[$1]}) b=(${t[$2]}) r=()
    for i in "${!a[@]}"; do r+=("$(echo "${a[$i]} / ${b[$i]}" | bc -l)"); done
    ratio "$(median "${r[@]}")" 1
}
results=()
for arch in $archs; do
    onnx=$out/$arch.onnx
    [ -e "$onnx" ] || /usr/bin/python3 "$root/tests/bench/export_onnx.py" "$arch" "$onnx" >/dev/null
    declare -A t=()
    for r in $(seq "$rounds"); do   # interleaved, so every column sees the same minutes
        t[lsq1]+=" $(pin "$lsq" bench --arch "$arch" --iters "$iters" --threads 1 --json | p50)"
        t[ort1]+=" $(pin node "$root/tests/bench/ort_time.js" "$onnx" 1 "$iters" 224 | p50)"
        t[lsq2]+=" $("$lsq" bench --arch "$arch" --iters "$iters" --threads 2 --json | p50)"
        for c in $configs; do  # the seeded weights quantized by lsq quantize's initialisation
            t[$c]+=" $(pin "$lsq" bench --arch "$arch" --config "$c" --iters "$iters" --threads 1 --json | p50)"
        done
    done
    declare -A m=()
    for k in "${!t[@]}"; do m[$k]=$(median ${t[$k]}); done
    printf '%-16s lsq fp32 1t p50 %7.3f ms | onnxruntime fp32 1t %7.3f ms | ratio %s | lsq fp32 2t %7.3f ms | 2t/1t %s\n' \
        "$arch" "${m[lsq1]}" "${m[ort1]}" "$(rratio lsq1 ort1)" "${m[lsq2]}" "$(rratio lsq2 lsq1)"
    json="\"arch\":\"$arch\",\"size\":224,\"lsq_1t_p50_ms\":${m[lsq1]},\"ort_1t_p50_ms\":${m[ort1]},\"lsq_2t_p50_ms\":${m[lsq2]}"
    json+=",\"ratio_lsq_ort\":$(rratio lsq1 ort1),\"ratio_2t_1t\":$(rratio lsq2 lsq1)"
    for c in $configs; do
        vs8=""; [ -n "${m[w8a8]:-}" ] && vs8=" | vs lsq w8a8 $(rratio "$c" w8a8)"
        printf '%-16s lsq %-5s 1t p50 %7.3f ms | vs onnxruntime fp32 %s%s\n' "" "$c" "${m[$c]}" "$(rratio "$c" ort1)" "$vs8"
        json+=",\"${c}_1t_p50_ms\":${m[$c]},\"ratio_${c}_ort\":$(rratio "$c" ort1)"
    done
    for k in lsq1 ort1 lsq2 $configs; do printf '                 rounds %-5s %s\n' "$k" "${t[$k]# }"; done
    results+=("{$json}")
    unset t m
done
(IFS=,; echo "[${results[*]}]") >"$out/results.json"

# kernel vs kernel: our GEMM (fused epilogue) against OpenBLAS sgemm (no epilogue), with the core
# OpenBLAS picked here and, on AVX-512 machines, with its AVX-512 (SkylakeX) kernels forced
echo
echo "# pointwise GEMMs of efficientnet_b0 at 224, 1 thread: ours vs OpenBLAS"
"$root/$build/bench_gemm" 20 | sed -n '1,2p;$p'
if grep -q avx512f /proc/cpuinfo; then OPENBLAS_CORETYPE=SkylakeX "$root/$build/bench_gemm" 20 | sed -n '1,2p;$p'; fi
