#!/usr/bin/env bash
# bench.sh BUILD [ROUNDS] [ITERS] - the engine against ONNX Runtime 1.30, side by side in one run.
#
# For efficientnet_b0 and mixnet_s at 224x224, batch 1: ROUNDS interleaved rounds of
#   lsq bench (1 thread) | ONNX Runtime (1 thread) | lsq bench (2 threads)
# on the same seeded random weights exported to ONNX (tests/bench/export_onnx.py), then the median
# p50 of each and the ratios. Absolute times drift 30% between runs on shared machines: compare
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
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $rounds rounds x $iters iters"
results=()
for arch in $archs; do
    onnx=$out/$arch.onnx
    [ -e "$onnx" ] || /usr/bin/python3 "$root/tests/bench/export_onnx.py" "$arch" "$onnx" >/dev/null
    l1=() o1=() l2=()
    for r in $(seq "$rounds"); do
        l1+=("$("$lsq" bench --arch "$arch" --iters "$iters" --threads 1 --json | sed 's/.*"p50_ms":\([0-9.]*\).*/\1/')")
        o1+=("$(node "$root/tests/bench/ort_time.js" "$onnx" 1 "$iters" 224 | sed 's/.*"p50_ms":\([0-9.]*\).*/\1/')")
        l2+=("$("$lsq" bench --arch "$arch" --iters "$iters" --threads 2 --json | sed 's/.*"p50_ms":\([0-9.]*\).*/\1/')")
    done
    median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    ml1=$(median "${l1[@]}") mo1=$(median "${o1[@]}") ml2=$(median "${l2[@]}")
    printf '%-16s lsq 1t p50 %7.3f ms | onnxruntime 1t %7.3f ms | ratio %.3f | lsq 2t %7.3f ms | 2t/1t %.3f\n' \
        "$arch" "$ml1" "$mo1" "$(echo "$ml1 / $mo1" | bc -l)" "$ml2" "$(echo "$ml2 / $ml1" | bc -l)"
    printf '                 rounds: lsq1 %s | ort1 %s | lsq2 %s\n' "${l1[*]}" "${o1[*]}" "${l2[*]}"
    results+=("{\"arch\":\"$arch\",\"size\":224,\"lsq_1t_p50_ms\":$ml1,\"ort_1t_p50_ms\":$mo1,\"lsq_2t_p50_ms\":$ml2,\"ratio_lsq_ort\":$(echo "$ml1 / $mo1" | bc -l | cut -c1-6),\"ratio_2t_1t\":$(echo "$ml2 / $ml1" | bc -l | cut -c1-6)}")
done
(IFS=,; echo "[${results[*]}]") >"$out/results.json"

# kernel vs kernel: our GEMM (fused epilogue) against OpenBLAS sgemm (no epilogue), with the core
# OpenBLAS picked here and, on AVX-512 machines, with its AVX-512 (SkylakeX) kernels forced
echo
echo "# pointwise GEMMs of efficientnet_b0 at 224, 1 thread: ours vs OpenBLAS"
"$root/$build/bench_gemm" 20 | sed -n '1,2p;$p'
if grep -q avx512f /proc/cpuinfo; then OPENBLAS_CORETYPE=SkylakeX "$root/$build/bench_gemm" 20 | sed -n '1,2p;$p'; fi
