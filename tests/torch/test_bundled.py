"""test_bundled.py - the bundled trained models (models/bundled/manifest.json), checked end to end.

For every model and configuration in the manifest:
- the file loads, names its architecture and configuration, and its packed size is what the
  manifest says;
- `lsq eval` (the integer path for quantized configurations) on the 10,000 Fashion-MNIST test
  images reproduces the trainer's own test accuracy of the same checkpoint (its log's last line)
  within 0.1 point: both evaluate the same images through the same preprocessing, so a larger gap
  means the engine runs another network than the trainer trained;
- quantized configurations: the integer and the float reference path give the same top-1 on at
  least 99.9% of the first 2,000 test images (issue 3's target; the reference path is slow, so a
  subset);
- the configurations the manifest promises exist: FP32 and at least one quantized configuration
  per architecture.
"""
import json
import os
import subprocess

import numpy as np

from common import LSQ_BIN, ROOT, TMP, Tap, have_engine

MANIFEST = os.environ.get("LSQ_MANIFEST") or os.path.join(ROOT, "models", "bundled", "manifest.json")
AGREE_N = 2000


def metadata(path):
    """The __metadata__ of a safetensors file (header only)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)).get("__metadata__", {})


def main():
    tap = Tap()
    if not have_engine():
        tap.fail("engine_present", f"{LSQ_BIN} not built")
        tap.finish()
    if not tap.check("manifest_present", os.path.exists(MANIFEST), MANIFEST):
        tap.finish()
    with open(MANIFEST) as f:
        manifest = json.load(f)
    base = os.path.dirname(MANIFEST)
    import train
    tensors = {}
    for m in manifest["models"]:
        cfgs = [c["config"] for c in m["configs"]]
        tap.check(f"{m['name']}_configs", "fp32" in cfgs and len(cfgs) >= 2 and m["default_config"] in cfgs,
                  f"configurations {cfgs}, default {m['default_config']}")
        data = m["dataset"]["path"]
        for c in m["configs"]:
            name = f"{m['name']}_{c['config']}"
            path = os.path.join(base, c["file"])
            tap.check(f"{name}_bytes", os.path.getsize(path) == c["bytes"], f"{os.path.getsize(path)} != {c['bytes']}")
            out = os.path.join(TMP, f"bundled_{name}.json")
            r = subprocess.run([LSQ_BIN, "eval", "--model", path, "--data", data, "--threads", "2", "--json", out],
                               capture_output=True, text=True)
            if not tap.check(f"{name}_eval_runs", r.returncode == 0, r.stderr.strip()[:300]):
                continue
            with open(out) as f:
                res = json.load(f)["results"][0]
            with open(os.path.join(base, c["log"])) as f:
                trainer = json.loads(f.read().strip().splitlines()[-1])["test_acc"]
            tap.note(f"{name}: engine top-1 {100 * res['top1']:.2f}%, trainer {100 * trainer:.2f}%")
            tap.check(f"{name}_accuracy_matches_trainer", abs(res["top1"] - trainer) <= 0.001 + 1e-9,
                      f"engine {res['top1']:.4f} vs trainer {trainer:.4f}")
            if c["config"] == "fp32":
                continue
            size = json.loads(metadata(path)["preprocess"])["input_size"]
            if size not in tensors:
                vx = train.read_idx(os.path.join(data, "t10k-images-idx3-ubyte.gz"))[:AGREE_N]
                xp = os.path.join(TMP, f"bundled_x{size}.f32")
                train.to_input(train.resize_all(vx, size)).contiguous().numpy().astype("<f4").tofile(xp)
                tensors[size] = xp
            tops = []
            for extra in ([], ["--reference"]):
                y = os.path.join(TMP, "bundled_y.f32")
                r = subprocess.run([LSQ_BIN, "infer", "--model", path, "--input", tensors[size], "--shape",
                                    f"{AGREE_N},3,{size},{size}", "--output", y, "--threads", "2", *extra],
                                   capture_output=True, text=True)
                tops.append(np.fromfile(y, "<f4").reshape(AGREE_N, -1).argmax(1) if r.returncode == 0 else None)
            if tops[0] is None or tops[1] is None:
                tap.fail(f"{name}_integer_vs_reference", "lsq infer failed")
                continue
            agree = float((tops[0] == tops[1]).mean())
            tap.note(f"{name}: integer and reference top-1 agree on {100 * agree:.2f}% of {AGREE_N} images")
            tap.check(f"{name}_integer_vs_reference", agree >= 0.999, f"{agree:.4f} < 0.999")
    tap.finish()


if __name__ == "__main__":
    main()
