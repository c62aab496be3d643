#!/usr/bin/env bash
# tests/docker/demo-models.sh LSQ OUT_DIR ARCH - a throwaway models directory (manifest.json and one
# seeded random FP32 checkpoint, 10 classes, the architecture's default 224x224 input) for the container tests while models/bundled/ does not
# exist, and for cluster-test's load. Does nothing when OUT_DIR/manifest.json exists.
set -euo pipefail
lsq=$1 out=$2 arch=$3
[ -f "$out/manifest.json" ] && exit 0
mkdir -p "$out/$arch"
"$lsq" init --arch "$arch" --classes 10 --seed 0 --out "$out/$arch/fp32.safetensors" >/dev/null
cat >"$out/manifest.json.tmp" <<JSON
{"version":1,"models":[{"name":"demo","arch":"$arch","default_config":"fp32",
  "configs":[{"config":"fp32","file":"$arch/fp32.safetensors"}]}]}
JSON
mv "$out/manifest.json.tmp" "$out/manifest.json"
