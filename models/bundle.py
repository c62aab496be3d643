#!/usr/bin/python3
"""bundle.py - turn finished training runs into the deployable models the server ships.

  /usr/bin/python3 models/bundle.py [--runs models/runs] [--out models/bundled] [--only ARCH/CONFIG ...]

For every architecture and configuration whose run has finished (models/runs/<arch>-<config>/
<arch>_<config>.safetensors, train.py's export; the last stage's models/runs/<arch>-<config>-sN/
instead where recipe.sh ran further stages), writes models/bundled/<arch>/<config>.safetensors:
the FP32 checkpoint as trained (float32, timm names), the quantized ones in the deployable packed
form (integer codes at their bit-width, BatchNorm folded: quant.export_packed), labels and
preprocessing in the metadata. Then models/bundled/manifest.json lists every model and
configuration with its file, its training log (models/logs/, committed) and the trainer's own test
accuracy of it. Deterministic; reruns overwrite. Only what the server needs goes to models/bundled/:
no trainer checkpoints, caches or logs.
"""
import argparse
import glob
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lsqnet import quant, safetensors_io  # noqa: E402

ARCHS = ["efficientnet_b0", "mixnet_s"]
CONFIGS = ["fp32", "w8a8", "w4a4", "w3a3", "w2a2", "w4a4-lsq", "w2a2-lsq"]
DEFAULT_ORDER = ["w4a4", "w8a8", "fp32"]  # the default configuration: the first one bundled
DATASET = {"name": "Fashion-MNIST test", "path": "/usr/share/datasets/fashion-mnist", "split": "test"}


def read_log(path):
    """The epoch records of a training log (one JSON line per epoch; a multi-stage run's log holds
    every stage's epochs in order, each stage counting from epoch 0)."""
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def last_stage(runs, arch, cfg):
    """The export of a configuration's last finished stage: runs/ARCH-CONFIG-sN/ for the highest N
    that has one (recipe.sh's later stages), else runs/ARCH-CONFIG/."""
    name = f"{arch}_{cfg}.safetensors"
    base = os.path.join(runs, f"{arch}-{cfg}")
    stages = {}  # N -> runs/ARCH-CONFIG-sN holding an export
    for d in glob.glob(base + "-s*"):
        n = d[len(base) + 2:]
        if n.isdigit() and os.path.exists(os.path.join(d, name)):
            stages[int(n)] = d
    return os.path.join(stages[max(stages)] if stages else base, name)


def bundle_one(arch, cfg, src, dst):
    if cfg == "fp32":
        shutil.copyfile(src, dst)
        return
    tensors, meta = safetensors_io.load(src)
    model = quant.create(arch, cfg, int(meta["num_classes"]))
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{src}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    quant.export_packed(model, arch, dst, cfg, labels=json.loads(meta["labels"]),
                        preprocess=json.loads(meta["preprocess"]))


def bundle_config(a, arch, cfg):
    """Bundle one configuration's finished run into a.out; its manifest entry, or None when the run
    (or its log) is missing."""
    src = last_stage(a.runs, arch, cfg)
    log = os.path.join(a.logs, arch, f"{cfg}.jsonl")
    if not os.path.exists(src) or not os.path.exists(log):
        return None
    os.makedirs(os.path.join(a.out, arch), exist_ok=True)
    dst = os.path.join(a.out, arch, f"{cfg}.safetensors")
    bundle_one(arch, cfg, src, dst)
    recs = read_log(log)
    rec = recs[-1] if recs else {}
    entry = {"config": cfg, "file": f"{arch}/{cfg}.safetensors", "log": os.path.relpath(log, a.out),
             "bytes": os.path.getsize(dst), "epochs": len(recs), "trainer_test_acc": rec.get("test_acc")}
    stages = sum(r.get("epoch") == 0 for r in recs)
    if stages > 1:
        entry["stages"] = stages
    if rec.get("kd"):  # trained with train.py --teacher: say so next to the accuracy
        entry["kd"] = rec["kd"]
    print(f"bundle.py: {dst} ({os.path.getsize(dst)} bytes, trainer test accuracy {rec.get('test_acc')}, from {src})")
    return entry


def model_entry(arch, entries):
    have = [e["config"] for e in entries]
    default = next((c for c in DEFAULT_ORDER if c in have), have[0])
    return {"name": f"{arch}-fmnist", "arch": arch, "default_config": default,
            "description": f"{arch} trained from scratch on Fashion-MNIST at 32x32, LSQ+ QAT from the FP32 weights",
            "dataset": DATASET, "configs": entries}


def update(manifest, arch, entry):
    """Put one configuration's entry into an existing manifest (replacing its old one), keeping
    the CONFIGS order."""
    model = next((m for m in manifest["models"] if m["arch"] == arch), None)
    if model is None:
        manifest["models"].append(model_entry(arch, [entry]))
        manifest["models"].sort(key=lambda m: ARCHS.index(m["arch"]))
        return
    entries = [e for e in model["configs"] if e["config"] != entry["config"]] + [entry]
    entries.sort(key=lambda e: CONFIGS.index(e["config"]))
    model.update(model_entry(arch, entries))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--runs", default=os.path.join(root, "runs"))
    ap.add_argument("--logs", default=os.path.join(root, "logs"))
    ap.add_argument("--out", default=os.path.join(root, "bundled"))
    ap.add_argument("--only", action="append", metavar="ARCH/CONFIG",
                    help="bundle just this configuration (repeatable) and update its entry in the existing "
                         "manifest, leaving every other model as it is: for one retrained model when the "
                         "other runs are no longer under --runs")
    a = ap.parse_args(argv)
    path = os.path.join(a.out, "manifest.json")
    if a.only:
        with open(path) as f:
            manifest = json.load(f)
        for spec in a.only:
            arch, _, cfg = spec.partition("/")
            if arch not in ARCHS or cfg not in CONFIGS:
                sys.exit(f"bundle.py: --only {spec}: expected ARCH/CONFIG with ARCH in {ARCHS}, CONFIG in {CONFIGS}")
            entry = bundle_config(a, arch, cfg)
            if entry is None:
                sys.exit(f"bundle.py: --only {spec}: no finished run ({last_stage(a.runs, arch, cfg)}) "
                         f"or no log ({os.path.join(a.logs, arch, cfg + '.jsonl')})")
            update(manifest, arch, entry)
    else:
        models = []
        for arch in ARCHS:
            entries = [e for e in (bundle_config(a, arch, cfg) for cfg in CONFIGS) if e]
            if entries:
                models.append(model_entry(arch, entries))
        if not models:
            sys.exit("bundle.py: no finished runs under " + a.runs)
        manifest = {"version": 1, "models": models}
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"bundle.py: {path}: {len(manifest['models'])} models, "
          f"{sum(len(m['configs']) for m in manifest['models'])} configurations")


if __name__ == "__main__":
    main()
