#!/bin/sh
# recipe.sh - runs or resumes the whole training recipe behind the bundled models.
#
#   models/recipe.sh [fp32|qat|export|all]     (default: all)
#
# Work goes to models/runs/ (not committed: checkpoints, caches); each finished stage copies its
# epoch log to models/logs/ (committed). Every step is train.py's resumable unit, so rerunning this
# script after an interruption continues where it stopped and skips what is finished. The two
# architectures train side by side, one torch thread each (on 2 cores this beats one run on two
# threads). LSQ_TRAIN_NICE (default 10) keeps the machine usable meanwhile; pause with
# `pkill -STOP -f models/train.py` before benchmarking and `pkill -CONT -f models/train.py` after.
set -eu
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
RUNS=models/runs
LOGS=models/logs
SIZE=32
FP32_EPOCHS=${LSQ_FP32_EPOCHS:-18}
QAT_EPOCHS=${LSQ_QAT_EPOCHS:-1}
ARCHS="efficientnet_b0 mixnet_s"
CONFIGS="w4a4 w2a2 w8a8 w2a2-lsq w4a4-lsq w3a3"  # most informative first
NICE=${LSQ_TRAIN_NICE:-10}
mkdir -p "$RUNS" "$LOGS"

train() {  # train ARCH CONFIG: one resumable train.py run; its log lands in models/logs/ARCH/
    arch=$1 cfg=$2
    if [ "$cfg" = fp32 ]; then
        nice -n "$NICE" $PY models/train.py fp32 --arch "$arch" --size $SIZE --epochs "$FP32_EPOCHS" \
            --threads 1 --out "$RUNS/$arch-fp32"
    else
        nice -n "$NICE" $PY models/train.py qat --arch "$arch" --config "$cfg" --size $SIZE \
            --epochs "$QAT_EPOCHS" --threads 1 --init "$RUNS/$arch-fp32/${arch}_fp32.safetensors" \
            --out "$RUNS/$arch-$cfg"
    fi
    mkdir -p "$LOGS/$arch"
    cp "$RUNS/$arch-$cfg/log.jsonl" "$LOGS/$arch/$cfg.jsonl"
}

stage() {  # stage CONFIG: both architectures side by side
    pids=""
    for arch in $ARCHS; do
        train "$arch" "$1" > "$RUNS/$arch-$1.out" 2>&1 &
        pids="$pids $!"
    done
    rc=0
    for p in $pids; do wait "$p" || rc=$?; done
    [ $rc = 0 ] || { echo "recipe.sh: stage $1 failed (see $RUNS/*-$1.out)" >&2; exit $rc; }
    echo "recipe.sh: stage $1 done"
}

what=${1:-all}
case $what in
fp32) stage fp32 ;;
qat) for c in $CONFIGS; do stage "$c"; done ;;
all) stage fp32; for c in $CONFIGS; do stage "$c"; done ;;
*) echo "usage: models/recipe.sh [fp32|qat|all]" >&2; exit 2 ;;
esac
