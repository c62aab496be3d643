#!/usr/bin/env bash
# test_cli.sh - the `lsq` command line: architectures built by the block-string decoder against
# timm's reference tensor lists, error handling of bad checkpoints and arguments, thread and kernel
# level agreement, and the bench JSON contract. Prints "ok"/"not ok" lines (tests/run.sh counts).
set -u
LSQ=${LSQ_BIN:?}
ROOT=${LSQ_ROOT:?}
T=$(mktemp -d "${LSQ_TMP:-/tmp}/cli.XXXXXX")
PY=/usr/bin/python3
ok() { echo "ok $1"; }
nok() { echo "not ok $1${2:+: $2}"; }
check() { local name=$1; shift; if "$@" >"$T/out" 2>&1; then ok "$name"; else nok "$name" "$(head -c 300 "$T/out" | tr '\n' ' ')"; fi; }
fails_with() { # name, expected exit code, regex the message must match, command...
    local name=$1 code=$2 re=$3; shift 3
    "$@" >"$T/out" 2>&1; local rc=$?
    if [ $rc -eq "$code" ] && grep -Eq "$re" "$T/out"; then ok "$name"; else nok "$name" "exit $rc: $(head -c 300 "$T/out" | tr '\n' ' ')"; fi
}

# --- every architecture: tensor names and shapes equal timm's ---------------------------------------
for ref in "$ROOT"/tests/data/arch/*.state_dict.txt; do
    arch=$(basename "$ref" .state_dict.txt)
    "$LSQ" init --arch "$arch" --out "$T/$arch.st" || { nok "init_$arch"; continue; }
    "$LSQ" inspect "$T/$arch.st" | sed -n '/^tensors:/,$p' | tail -n +2 |
        awk '{ $2=""; n=$1; $1=""; gsub(/^ +| +$/, ""); gsub(/\[|\]/, ""); print n " (" $0 ")" }' |
        sed 's/(\([0-9]*\))/(\1,)/' | sort >"$T/got"
    grep -v 'num_batches_tracked\|^PARAMS' "$ref" | sort >"$T/want"
    if diff -q "$T/want" "$T/got" >/dev/null; then ok "tensors_match_timm_$arch"
    else nok "tensors_match_timm_$arch" "$(diff "$T/want" "$T/got" | head -5 | tr '\n' ' ')"; fi
    want=$(sed -n 's/^PARAMS //p' "$ref"); got=$("$LSQ" inspect "$T/$arch.st" | sed -n 's/^parameters: *//p')
    if [ "$want" = "$got" ]; then ok "param_count_$arch"; else nok "param_count_$arch" "timm $want, engine $got"; fi
done

# --- inference basics -------------------------------------------------------------------------------
$PY -c "import numpy as np; np.random.seed(1); np.random.randn(2,3,64,48).astype('<f4').tofile('$T/x.f32')"
B0=$T/efficientnet_b0.st
check infer_runs "$LSQ" infer --model "$B0" --input "$T/x.f32" --shape 2,3,64,48 --output "$T/y1.f32"
"$LSQ" infer --model "$B0" --input "$T/x.f32" --shape 2,3,64,48 --output "$T/y2.f32" --threads 2
LSQ_ISA=scalar "$LSQ" infer --model "$B0" --input "$T/x.f32" --shape 2,3,64,48 --output "$T/y3.f32"
LSQ_ISA=avx2 "$LSQ" infer --model "$B0" --input "$T/x.f32" --shape 2,3,64,48 --output "$T/y4.f32"
cmp_logits() { $PY - "$@" <<'PY'
import sys, numpy as np
a, b = (np.fromfile(f, '<f4') for f in sys.argv[1:3])
tol = 1e-5 * (b.max() - b.min())
sys.exit(0 if a.shape == (2000,) and b.shape == a.shape and np.abs(a - b).max() <= tol and np.isfinite(a).all() else 1)
PY
}
# bit for bit: threads split rows by measured speed (threadpool.c), and nothing a thread computes
# may depend on where its part starts (the SE squeeze sums rows in row order)
check threads_identical cmp "$T/y2.f32" "$T/y1.f32"
check scalar_kernels_agree cmp_logits "$T/y3.f32" "$T/y1.f32"
check avx2_kernels_agree cmp_logits "$T/y4.f32" "$T/y1.f32"
# the level LSQ_ISA picks is the one logged (an AVX2 CPU runs AVX2 float kernels and the AVX2
# integer kernels, their AVX-VNNI build where the CPU has AVX-VNNI)
check isa_cap_logged bash -c "LSQ_ISA=scalar '$LSQ' --version | grep -q 'kernels: scalar, integer scalar'"
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
    q8_avx2=avx2; grep -qw avx_vnni /proc/cpuinfo && q8_avx2=avxvnni
    check isa_avx2_logged bash -c "LSQ_ISA=avx2 '$LSQ' --version | grep -q 'kernels: avx2, integer $q8_avx2\b'"
fi
check batch_items_differ $PY -c "
import numpy as np; y=np.fromfile('$T/y1.f32','<f4').reshape(2,1000); assert np.abs(y[0]-y[1]).max() > 1e-3 * np.ptp(y[0])"
# the second item of a batch equals the same image run alone
$PY -c "import numpy as np; np.fromfile('$T/x.f32','<f4')[3*64*48:].tofile('$T/x1.f32')"
"$LSQ" infer --model "$B0" --input "$T/x1.f32" --shape 1,3,64,48 --output "$T/y1b.f32"
check batch_item_equals_single $PY -c "
import numpy as np; y=np.fromfile('$T/y1.f32','<f4').reshape(2,1000); z=np.fromfile('$T/y1b.f32','<f4')
assert np.array_equal(y[1], z)"

# --- bench contract -----------------------------------------------------------------------------------
"$LSQ" bench --arch mixnet_s --size 64 --iters 3 --warmup 1 --json >"$T/bench.json" 2>"$T/bench.err"
check bench_json_contract $PY -c "
import json; d=json.load(open('$T/bench.json'))
for k in ('arch','config','size','threads','iters','p50_ms','p90_ms','p99_ms','model_bytes'): assert k in d, k
assert d['arch']=='mixnet_s' and d['config']=='fp32' and d['size']==64 and d['iters']==3
assert 0 < d['p50_ms'] <= d['p90_ms'] <= d['p99_ms'] and d['model_bytes'] > 1e6"

# --- lsq quantize: a run, determinism, the bench of a quantized config, errors ---------------------------
MS=$T/mixnet_s.st
$PY -c "
import numpy as np, os; from PIL import Image
os.makedirs('$T/calib', exist_ok=True); r = np.random.default_rng(0)
for i in range(6): Image.fromarray(r.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save('$T/calib/%d.png' % i)"
check quantize_flat_image_folder "$LSQ" quantize --model "$MS" --config w4a4 --calib "$T/calib" --size 32 --out "$T/q1.st"
"$LSQ" quantize --model "$MS" --config w4a4 --calib "$T/calib" --size 32 --out "$T/q2.st" >/dev/null 2>&1
check quantize_deterministic cmp "$T/q1.st" "$T/q2.st"
check quantize_output_loads bash -c "'$LSQ' inspect '$T/q1.st' | grep -q '^config: *w4a4'"
# the integer path at every kernel level: same logits up to float rounding at scalar, avx2, best
$PY -c "import numpy as np; np.random.seed(2); np.random.randn(2,3,32,32).astype('<f4').tofile('$T/xq.f32')"
for isa in scalar avx2; do
    LSQ_ISA=$isa "$LSQ" infer --model "$T/q1.st" --input "$T/xq.f32" --shape 2,3,32,32 --output "$T/yq_$isa.f32"
done
"$LSQ" infer --model "$T/q1.st" --input "$T/xq.f32" --shape 2,3,32,32 --output "$T/yq_best.f32"
check integer_scalar_kernels_agree cmp_logits "$T/yq_scalar.f32" "$T/yq_best.f32"
check integer_avx2_kernels_agree cmp_logits "$T/yq_avx2.f32" "$T/yq_best.f32"
"$LSQ" infer --model "$T/q1.st" --input "$T/xq.f32" --shape 2,3,32,32 --output "$T/yq_t2.f32" --threads 2
check integer_threads_identical cmp "$T/yq_t2.f32" "$T/yq_best.f32"
# 224x224: layers long enough for the pool to move its shares between them, MixNet's fused
# expand+depthwise bands and mixed kernels; float and integer paths, 1, 2 and 3 threads, bit for
# bit (with more than one thread every tensor is placed by the split of the job that writes it:
# with 3, by where thread 1's part starts)
$PY -c "import numpy as np; np.random.seed(3); np.random.randn(1,3,224,224).astype('<f4').tofile('$T/x224.f32')"
for m in mixnet_s q1; do  # FP32 and its W4A4
    for t in 1 2 3; do
        "$LSQ" infer --model "$T/$m.st" --input "$T/x224.f32" --shape 1,3,224,224 --output "$T/y224_${m}_$t.f32" --threads $t
    done
    check threads_identical_224_$m cmp "$T/y224_${m}_1.f32" "$T/y224_${m}_2.f32"
    check threads3_identical_224_$m cmp "$T/y224_${m}_1.f32" "$T/y224_${m}_3.f32"
done
# the integer path quantizes the SE-gated projection inputs inside the projection's GEMM job,
# block by block, except when tracing (the trace needs the whole tensor): the same logits
"$LSQ" infer --model "$T/q1.st" --input "$T/x224.f32" --shape 1,3,224,224 --output "$T/y224_q1_tr.f32" \
    --trace "$T/q1.trace" --threads 2
check integer_fused_gate_equals_traced cmp "$T/y224_q1_2.f32" "$T/y224_q1_tr.f32"
"$LSQ" bench --arch mixnet_s --config w4a4 --size 64 --iters 3 --warmup 1 --json >"$T/benchq.json" 2>"$T/benchq.err"
check bench_quantized_json $PY -c "
import json; d=json.load(open('$T/benchq.json')); f=json.load(open('$T/bench.json'))
assert d['config']=='w4a4' and d['size']==64 and 0 < d['p50_ms']
assert 0.1 * f['model_bytes'] < d['model_bytes'] < 0.25 * f['model_bytes'], (d['model_bytes'], f['model_bytes'])"
"$LSQ" bench --model "$T/q1.st" --size 32 --iters 3 --warmup 1 --json >"$T/benchf.json" 2>"$T/benchf.err"
check bench_packed_file_own_config $PY -c "
import json, os; d=json.load(open('$T/benchf.json'))
assert d['config']=='w4a4' and d['model_bytes']==os.path.getsize('$T/q1.st'), d"
fails_with quantize_missing_calib 1 "nope: calibration data not found" "$LSQ" quantize --model "$MS" --config w4a4 --calib "$T/nope" --out "$T/q.st"
fails_with quantize_bad_config 1 "unknown configuration 'w9a9'" "$LSQ" quantize --model "$MS" --config w9a9 --calib "$T/calib" --out "$T/q.st"
fails_with quantize_fp32_config 2 "fp32 has nothing to quantize" "$LSQ" quantize --model "$MS" --config fp32 --calib "$T/calib" --out "$T/q.st"
fails_with quantize_unwritable_output 1 "cannot write the output" "$LSQ" quantize --model "$MS" --config w4a4 --calib "$T/calib" --out "$T/nodir/q.st"
fails_with quantize_quantized_input 1 "already quantized" "$LSQ" quantize --model "$T/q1.st" --config w4a4 --calib "$T/calib" --out "$T/q.st"
fails_with quantize_missing_args 2 "required" "$LSQ" quantize --model "$MS" --config w4a4
fails_with quantize_bad_init 2 "init is mse, minmax or lsq" "$LSQ" quantize --model "$MS" --config w4a4 --calib "$T/calib" --out "$T/q.st" --init median

# --- bad input: clear errors, right exit codes ----------------------------------------------------------
fails_with missing_model 1 "nope.safetensors" "$LSQ" infer --model "$T/nope.safetensors" --input "$T/x.f32" --shape 2,3,64,48 --output "$T/y.f32"
head -c 1000 "$B0" >"$T/trunc.st"
fails_with truncated_model 1 "trunc.st" "$LSQ" inspect "$T/trunc.st"
: >"$T/empty.st"
fails_with empty_model 1 "empty.st" "$LSQ" inspect "$T/empty.st"
fails_with arch_mismatch 1 "mixnet_s" "$LSQ" inspect --arch mixnet_s "$B0"
fails_with unknown_arch 1 "known: efficientnet_b0" "$LSQ" init --arch resnet50 --out "$T/r.st"
fails_with wrong_input_size 1 "bytes" "$LSQ" infer --model "$B0" --input "$T/x.f32" --shape 1,3,64,64 --output "$T/y.f32"
fails_with bad_shape 2 "shape" "$LSQ" infer --model "$B0" --input "$T/x.f32" --shape 2,3,16,16 --output "$T/y.f32"
fails_with bad_threads 2 "threads" "$LSQ" bench --arch mixnet_s --threads 0
fails_with unknown_command 2 "unknown command" "$LSQ" frobnicate
fails_with unknown_config 1 "w9a9" "$LSQ" infer --model "$B0" --config w9a9 --input "$T/x.f32" --shape 2,3,64,48 --output "$T/y.f32"
# a tensor of the wrong shape is named in the error
$PY - "$B0" "$T/bad.st" <<'PY'
import json, struct, sys
src, dst = sys.argv[1:3]
raw = open(src, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
hdr['blocks.2.0.conv_dw.weight']['shape'] = [144, 1, 25, 1]   # same byte count, wrong shape
h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)
open(dst, 'wb').write(struct.pack('<Q', len(h)) + h + raw[8 + n:])
PY
fails_with misshapen_tensor_named 1 "blocks.2.0.conv_dw.weight.*\[144, 1, 5, 5\]" "$LSQ" inspect "$T/bad.st"
check version "$LSQ" --version
# OpenBLAS core fix-up: unset -> re-executed with the CPU's core; a value already set is respected
if grep -q avx512f /proc/cpuinfo; then
    # OpenBLAS recognises some AVX-512 CPUs itself (Cooperlake here on Zen 5), others not (Prescott
    # on Emerald Rapids): either way the core in use must be an AVX-512 one
    check blas_core_avx512_when_unset bash -c "env -u OPENBLAS_CORETYPE '$LSQ' --version | grep -Eq 'core (SkylakeX|Cooperlake|SapphireRapids)'"
fi
check blas_coretype_respected bash -c "OPENBLAS_CORETYPE=Prescott '$LSQ' --version | grep -q 'core Prescott'"

# --- preprocessing: the AVX2 resize passes give the portable C ones' bytes ------------------------
# (up- and downscaling, both interpolations, RGB and grey, widths that end mid-vector; the
# comparison with PIL itself is tests/torch/test_preprocess.py)
$PY -c "
import numpy as np; from PIL import Image; r = np.random.default_rng(5)
for w, h in ((224, 224), (643, 481), (97, 300), (1031, 77)):
    Image.fromarray(r.integers(0, 256, (h, w, 3), dtype=np.uint8)).save('$T/pre_%dx%d.png' % (w, h))"
pre_same=1
for f in "$T"/pre_*.png; do
    for opts in "--interp bicubic" "--interp bilinear --size 200" "--gray" "--gray --size 32 --crop-pct 1"; do
        LSQ_ISA=scalar "$LSQ" preprocess "$f" --output "$T/pre_s.f32" $opts >/dev/null 2>&1 &&
            "$LSQ" preprocess "$f" --output "$T/pre_b.f32" $opts >/dev/null 2>&1 &&
            cmp -s "$T/pre_s.f32" "$T/pre_b.f32" || { pre_same=0; echo "# preprocess differs: $f $opts"; }
    done
done
check preprocess_simd_equals_scalar test $pre_same = 1
rm -rf "$T"
