#!/bin/sh
# init_study.sh [MANIFEST] - how much each initialisation gets right before any training.
#
# For every model's bundled FP32 checkpoint: `lsq quantize` (the C initialisation, no QAT) at each
# configuration with each activation initialisation - LSQ+'s MSE search, min-max, and LSQ's
# 2 mean|x| / sqrt(p) (with offset 0, as the -lsq baselines start) - on 256 training images, then
# `lsq eval` on the 10,000 test images through the integer path. Prints a Markdown table (the
# report's discussion quotes it) and keeps the JSON rows in models/init_study.json.
# Accuracy only, so it may share the machine; about 5 minutes on 2 cores.
set -eu
cd "$(dirname "$0")/.."
manifest=${1:-models/bundled/manifest.json}
lsq=build/lsq
tmp=$(mktemp -d /tmp/lsq-init.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
configs="w8a8 w4a4 w3a3 w2a2"
out=models/init_study.json
/usr/bin/python3 - "$manifest" >"$tmp/fp32" <<'EOF'
import json, os, sys
m = json.load(open(sys.argv[1])); base = os.path.dirname(sys.argv[1])
for x in m["models"]:
    for c in x["configs"]:
        if c["config"] == "fp32":
            print(x["arch"], os.path.join(base, c["file"]), x["dataset"]["path"])
EOF
echo "[" >"$out.tmp"
sep=""
echo "| network | configuration | activation init | top-1 before QAT |"
echo "| --- | --- | --- | ---: |"
while read -r arch fp32 data; do
    for cfg in $configs; do
        for init in mse minmax lsq; do
            c=$cfg; [ "$init" = lsq ] && c=$cfg-lsq
            $lsq quantize --model "$fp32" --config "$c" --init "$init" --calib "$data" --split train \
                --calib-images 256 --out "$tmp/q.safetensors" >/dev/null
            $lsq eval --model "$tmp/q.safetensors" --data "$data" --threads 1 --json "$tmp/e.json" >/dev/null
            top1=$(/usr/bin/python3 -c "import json; print(json.load(open('$tmp/e.json'))['results'][0]['top1'])")
            printf '| %s | %s | %s | %.2f%% |\n' "$arch" "$c" "$init" "$(echo "100 * $top1" | bc -l)"
            printf '%s{"arch":"%s","config":"%s","init":"%s","top1":%s}\n' "$sep" "$arch" "$c" "$init" "$top1" >>"$out.tmp"
            sep=","
        done
    done
done <"$tmp/fp32"
echo "]" >>"$out.tmp"
mv "$out.tmp" "$out"
