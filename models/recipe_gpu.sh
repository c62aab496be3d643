#!/bin/bash
# recipe_gpu.sh - the QAT half of the recipe on one GPU, sized to a fixed wall-clock window.
#
#   models/recipe_gpu.sh WINDOW_S OUT_DIR      (run from the repository root)
#
# What recipe.sh does on the CPU, but every quantized configuration of both architectures at once:
# one train.py process per configuration (one CPU thread each), all sharing the GPU through CUDA MPS
# when the machine has it (a launch-bound QAT step leaves the GPU idle most of the time; without MPS
# the processes' contexts would take turns). Starts from the committed FP32 weights
# (models/bundled/<arch>/fp32.safetensors, the same bytes recipe.sh's FP32 stage exported), so the
# quantizers are initialised exactly as on the CPU (train.py calibrates on the CPU before moving).
#
# The epoch count E is the same for every configuration (an LSQ+ configuration and its LSQ twin get
# the same budget) and is measured, not guessed: a probe runs 20 steps of every configuration
# concurrently, and E is the largest count whose slowest configuration ends inside the window.
# Then bundle.py packs the results; OUT_DIR receives one tar per architecture (packed quantized
# models, manifest, logs), manifest.json and console.tar (every run's console output). This is how the bundled models'
# QAT was done (models/README.md); CI never runs it.
#
# Environment: LSQ_GPU_DATA (default /usr/share/datasets/fashion-mnist, or .devdata/ if present),
# LSQ_GPU_ARCHS (default both), LSQ_GPU_CONFIGS (default all six), LSQ_GPU_KD (the configurations
# trained with distillation from the FP32 model, train.py --teacher; default "w2a2 w2a2-lsq": the
# bundled LSQ+ W2A2 models were, and an LSQ baseline needs the same recipe to be a fair twin; "" for
# none), LSQ_GPU_MIN_EPOCHS (stop after
# the probe when fewer epochs fit; default 1), LSQ_GPU_DEVICE (default cuda; cpu with LSQ_GPU_SMOKE=1 checks
# the script itself here in a minute).
set -u
WINDOW=${1:?usage: models/recipe_gpu.sh WINDOW_S OUT_DIR}
OUT=${2:?usage: models/recipe_gpu.sh WINDOW_S OUT_DIR}
T0=$(date +%s)
PY=${PYTHON:-python3}
DEV=${LSQ_GPU_DEVICE:-cuda}
DATA=${LSQ_GPU_DATA:-$([ -d .devdata ] && echo .devdata || echo /usr/share/datasets/fashion-mnist)}
ARCHS=${LSQ_GPU_ARCHS:-efficientnet_b0 mixnet_s}
CONFIGS=${LSQ_GPU_CONFIGS:-w8a8 w4a4 w3a3 w2a2 w4a4-lsq w2a2-lsq}
KD=${LSQ_GPU_KD-w2a2 w2a2-lsq}
SMOKE=${LSQ_GPU_SMOKE:+--smoke}
RUNS=$(mktemp -d /tmp/lsq-gpu-runs.XXXXXX)
LOGS=$RUNS/logs
CON=$RUNS/console  # every run's console output; one tar of it comes back (OUT takes few files)
mkdir -p "$OUT" "$LOGS" "$CON"
say() { echo "recipe_gpu.sh [$(( $(date +%s) - T0 )) s]: $*"; }

# 1. the resized data once (train.py caches it per run directory), the FP32 starting points
say "data from $DATA, device $DEV"
$PY models/train.py fp32 --arch mixnet_s --epochs 1 --out "$RUNS/data" --data "$DATA" $SMOKE --probe 1 \
    --device cpu > "$CON/data.out" 2>&1 || { cat "$CON/data.out"; exit 1; }
for arch in $ARCHS; do
    mkdir -p "$RUNS/$arch-fp32"
    cp "models/bundled/$arch/fp32.safetensors" "$RUNS/$arch-fp32/${arch}_fp32.safetensors"
    for cfg in $CONFIGS; do
        mkdir -p "$RUNS/$arch-$cfg"
        cp "$RUNS"/data/*.npz "$RUNS/$arch-$cfg/"
    done
done

# 2. CUDA MPS, where there is one
MPS=0
if [ "$DEV" = cuda ] && command -v nvidia-cuda-mps-control > /dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=$RUNS/mps-pipe CUDA_MPS_LOG_DIRECTORY=$RUNS/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d && MPS=1
fi
mps_off() { [ $MPS = 1 ] && { echo quit | nvidia-cuda-mps-control; MPS=0; sleep 1; unset CUDA_MPS_PIPE_DIRECTORY; }; }

qat() {  # qat ARCH CFG EXTRA...: one train.py run from the FP32 weights (and distilled from them, for KD's)
    local arch=$1 cfg=$2 fp32; shift 2
    fp32="$RUNS/$arch-fp32/${arch}_fp32.safetensors"
    case " $KD " in *" $cfg "*) set -- --teacher "$fp32" "$@" ;; esac
    $PY models/train.py qat --arch "$arch" --config "$cfg" --size 32 --threads 1 --device "$DEV" \
        --init "$fp32" --out "$RUNS/$arch-$cfg" --data "$DATA" $SMOKE "$@"
}

probe_all() {  # every configuration at once, 20 timed steps; prints the slowest seconds per step
    local pids="" rc=0
    for arch in $ARCHS; do for cfg in $CONFIGS; do
        qat "$arch" "$cfg" --epochs 1 --probe 20 > "$CON/probe-$arch-$cfg.out" 2>&1 &
        pids="$pids $!"
    done; done
    for p in $pids; do wait "$p" || rc=1; done
    [ $rc = 0 ] || return 1
    cat "$CON"/probe-*.out | grep -h probe_step_s | tee "$CON/probe.jsonl" |
        $PY -c 'import json,sys; print(max(json.loads(l)["probe_step_s"] for l in sys.stdin))'
}

# 3. probe, then size E to the window
say "probe (MPS $MPS)"
STEP=$(probe_all) || {
    say "probe failed with MPS $MPS"; tail -5 "$CON"/probe-*.out
    mps_off
    STEP=$(probe_all) || { say "probe failed"; exit 1; }
}
NOW=$(( $(date +%s) - T0 ))
# per epoch: 468 steps + evaluation (~30 step-equivalents) + 10% margin; 60 s for start-up and
# calibration, 60 s for export and bundling
E=$($PY -c "import math; left=$WINDOW-$NOW-120; e=int(left/($STEP*498*1.1)); print(max(e, 1) if left > 0 else 0)")
[ -n "$SMOKE" ] && E=1
say "slowest step ${STEP}s under full load; $E epochs per configuration"
MIN_E=${LSQ_GPU_MIN_EPOCHS:-1}
[ "$E" -ge "$MIN_E" ] || { say "$E epochs fit, fewer than LSQ_GPU_MIN_EPOCHS=$MIN_E: not training"; exit 1; }

# 4. train every configuration at once
pids=""
for arch in $ARCHS; do for cfg in $CONFIGS; do
    qat "$arch" "$cfg" --epochs "$E" > "$CON/$arch-$cfg.out" 2>&1 &
    pids="$pids $!"
done; done
rc=0
for p in $pids; do wait "$p" || rc=1; done
mps_off
say "training done (rc $rc)"

# 5. logs and packed models
for arch in $ARCHS; do
    mkdir -p "$LOGS/$arch"
    cp "models/logs/$arch/fp32.jsonl" "$LOGS/$arch/"
    for cfg in $CONFIGS; do
        [ -f "$RUNS/$arch-$cfg/log.jsonl" ] && cp "$RUNS/$arch-$cfg/log.jsonl" "$LOGS/$arch/$cfg.jsonl"
    done
done
$PY models/bundle.py --runs "$RUNS" --logs "$LOGS" --out "$RUNS/bundled" > "$CON/bundle.out" 2>&1 || rc=1
for arch in $ARCHS; do
    tar -C "$RUNS" -cf "$OUT/$arch.tar" --exclude fp32.safetensors "bundled/$arch" "logs/$arch"
done
cp "$RUNS/bundled/manifest.json" "$OUT/" 2>/dev/null
say "done (rc $rc)" | tee "$CON/done.out"
tar -C "$RUNS" -cf "$OUT/console.tar" console
exit $rc
