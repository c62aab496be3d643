#!/bin/sh
# seed_study.sh [ARCH] [CONFIG] [EPOCHS] [SEEDS] - run-to-run spread of QAT under each activation
# initialisation (the LSQ+ paper's claim that its MSE initialisation makes low-bit training less
# sensitive to the run than min-max does).
#
# For each seed 0 .. SEEDS-1 and each activation initialisation (mse, minmax), a plain QAT run of
# EPOCHS epochs from the bundled FP32 checkpoint, the same trainer settings as the recipe's first
# stage otherwise (2 torch threads). The seed sets the shuffles and the augmentation; calibration
# takes the first 512 training images in every run, so each initialisation starts from the same
# quantizers and the spread is that of training from them. Runs go to models/runs/seeds/
# (resumable: rerunning continues), their epoch logs to models/logs/ARCH/seeds/CONFIG-INIT-seedN.jsonl
# (committed). Prints a Markdown table: the
# final test accuracy of every run, the mean and the sample standard deviation per initialisation.
# Defaults: mixnet_s w2a2 2 3 (12 epochs, about 45 minutes on 2 cores; CPU only, so never while
# benchmarking).
set -eu
cd "$(dirname "$0")/.."
arch=${1:-mixnet_s} cfg=${2:-w2a2} epochs=${3:-2} seeds=${4:-3}
PY=/usr/bin/python3
fp32=models/bundled/$arch/fp32.safetensors
logs=models/logs/$arch/seeds
mkdir -p models/runs/seeds "$logs"
for seed in $(seq 0 $((seeds - 1))); do
    for init in mse minmax; do
        out=models/runs/seeds/$arch-$cfg-$init-s$seed
        log=$logs/$cfg-$init-seed$seed.jsonl
        if [ ! -f "$log" ] || [ "$(wc -l <"$log")" -lt "$epochs" ]; then
            $PY models/train.py qat --arch "$arch" --config "$cfg" --act-init "$init" --size 32 \
                --epochs "$epochs" --seed "$seed" --threads 2 --init "$fp32" --out "$out" >"$out.out" 2>&1 ||
                { echo "seed_study.sh: $arch $cfg $init seed $seed failed (see $out.out)" >&2; exit 1; }
            cp "$out/log.jsonl" "$log"
        fi
    done
done
$PY - "$logs" "$cfg" "$epochs" "$seeds" <<'EOF'
import json, statistics, sys
logs, cfg, epochs, seeds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print(f"| activation init | " + " | ".join(f"seed {s}" for s in range(seeds)) + " | mean | std |")
print("| --- | " + " | ".join("---:" for _ in range(seeds)) + " | ---: | ---: |")
for init in ("mse", "minmax"):
    acc = []
    for s in range(seeds):
        rows = [json.loads(l) for l in open(f"{logs}/{cfg}-{init}-seed{s}.jsonl")]
        last = [r for r in rows if r["epoch"] == epochs - 1][-1]
        acc.append(100 * last["test_acc"])
    sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
    print(f"| {init} | " + " | ".join(f"{a:.2f}%" for a in acc) + f" | {statistics.mean(acc):.2f}% | {sd:.2f} |")
EOF
