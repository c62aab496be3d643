"""make_models.py OUT_DIR - small models and a manifest for the server tests (run by test_server.py).

Under /usr/bin/python3 with PYTHONPATH=models (Debian's torch). Writes, at 32x32 so the quantized
reference path stays quick:
  mixnet_s-test    fp32 (default) and w4a4 (LSQ+ calibrated on random data), Fashion-MNIST labels and
                   the trainer's preprocessing; dataset: the Fashion-MNIST test set
  b0-nodata        efficientnet_b0 fp32, a dataset path that does not exist (accuracy unavailable)
"""
import json
import os
import sys

import torch

from lsqnet import nets, quant

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PRE = {"input_size": 32, "resize_size": 32, "crop_pct": 1.0, "interpolation": "bicubic", "mean": [0.286] * 3,
       "std": [0.353] * 3, "grayscale": True}


def main():
    out = sys.argv[1]
    os.makedirs(f"{out}/mixnet_s", exist_ok=True)
    os.makedirs(f"{out}/b0", exist_ok=True)
    torch.manual_seed(0)
    fm = nets.randomize(nets.create("mixnet_s", 10), seed=1).eval()
    nets.export(fm, "mixnet_s", f"{out}/mixnet_s/fp32.safetensors", labels=LABELS, preprocess=PRE)
    qm = quant.create("mixnet_s", "w4a4", 10)
    quant.load_float_weights(qm, fm.state_dict())
    quant.calibrate(qm, [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))])
    qm.eval()
    quant.export(qm, "mixnet_s", f"{out}/mixnet_s/w4a4.safetensors", "w4a4", labels=LABELS, preprocess=PRE)
    bm = nets.randomize(nets.create("efficientnet_b0", 10), seed=2).eval()
    nets.export(bm, "efficientnet_b0", f"{out}/b0/fp32.safetensors", labels=LABELS, preprocess=PRE)
    manifest = {"version": 1, "models": [
        {"name": "mixnet_s-test", "arch": "mixnet_s", "default_config": "fp32", "description": "random weights",
         "dataset": {"name": "Fashion-MNIST test", "path": "/usr/share/datasets/fashion-mnist", "split": "test"},
         "configs": [{"config": "fp32", "file": "mixnet_s/fp32.safetensors"},
                     {"config": "w4a4", "file": "mixnet_s/w4a4.safetensors"}]},
        {"name": "b0-nodata", "arch": "efficientnet_b0", "description": "no dataset at run time",
         "dataset": {"name": "missing", "path": "no-such-dataset"},
         "configs": [{"config": "fp32", "file": "b0/fp32.safetensors"}]}]}
    with open(f"{out}/manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
