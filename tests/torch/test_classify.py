"""test_classify.py - `lsq classify` end to end against PyTorch: image file -> PIL + torchvision
preprocessing as the checkpoint's metadata says -> the PyTorch model -> softmax, compared with the
engine's labels, indices and scores (--json). Covers the metadata path (labels, preprocess with
grayscale and bilinear), timm's defaults when the file has no preprocess entry, and several
images in one call.
"""
import json
import math
import os
import subprocess

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from common import LSQ_BIN, TMP, Tap, have_engine
from lsqnet import nets

INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def torch_preprocess(path, pp):
    img = Image.open(path)
    img = img.convert("L").convert("RGB") if pp["grayscale"] else img.convert("RGB")
    size = pp["input_size"]
    resize = pp["resize_size"] or math.floor(size / pp["crop_pct"])
    t = T.Compose([T.Resize(resize, INTERP[pp["interpolation"]]), T.CenterCrop(size), T.ToTensor(),
                   T.Normalize(pp["mean"], pp["std"])])
    return t(img).unsqueeze(0)


def make_images():
    rs = np.random.RandomState(3)
    paths = []
    for i, (w, h, fmt) in enumerate([(320, 240, "JPEG"), (97, 131, "PNG"), (64, 64, "PNG")]):
        # smooth random pictures (a real photo's statistics, roughly), saved as real files
        base = rs.rand(h // 8 + 2, w // 8 + 2, 3)
        img = Image.fromarray((base * 255).astype("uint8")).resize((w, h), Image.BICUBIC)
        p = os.path.join(TMP, f"classify_{i}.{fmt.lower()}")
        img.save(p, fmt, quality=92) if fmt == "JPEG" else img.save(p, fmt)
        paths.append(p)
    return paths


def main():
    tap = Tap()
    if not have_engine():
        tap.fail("engine_present", f"{LSQ_BIN} not built")
        tap.finish()
    images = make_images()
    labels = [f"label {i} \"quoted\"" for i in range(10)]
    cases = [
        ("mixnet_s", {"input_size": 48, "resize_size": 0, "crop_pct": 0.875, "interpolation": "bilinear",
                      "mean": [0.3, 0.4, 0.5], "std": [0.2, 0.25, 0.3], "grayscale": True}, labels),
        ("efficientnet_b0", None, None),  # no metadata: timm's defaults (224, 0.875, bicubic) and class_<i>
    ]
    for arch, pp, lab in cases:
        model = nets.randomize(nets.create(arch, 10), seed=4).eval()
        path = os.path.join(TMP, f"classify_{arch}.safetensors")
        nets.export(model, arch, path, labels=lab, preprocess=pp)
        eff = pp or nets.default_preprocess(arch)
        r = subprocess.run([LSQ_BIN, "classify", "--model", path, "--topk", "5", "--json", *images],
                           capture_output=True, text=True)
        if r.returncode:
            tap.fail(f"classify_{arch}", r.stderr.strip())
            continue
        out = json.loads(r.stdout)
        tap.check(f"classify_{arch}_one_result_per_image", [o["image"] for o in out] == images, r.stdout[:200])
        for img_path, res in zip(images, out):
            with torch.no_grad():
                prob = torch.softmax(model(torch_preprocess(img_path, eff)), 1)[0].numpy()
            top = np.argsort(-prob)[:5]
            got_idx = [p["index"] for p in res["predictions"]]
            got_score = np.array([p["score"] for p in res["predictions"]])
            want_labels = [lab[i] if lab else f"class_{i}" for i in top]
            name = f"classify_{arch}_{os.path.basename(img_path)}"
            tap.check(name + "_top5", got_idx == list(top), f"engine {got_idx}, torch {list(top)}")
            tap.check(name + "_scores", np.allclose(got_score, prob[top], atol=2e-4),
                      f"engine {got_score}, torch {prob[top]}")
            tap.check(name + "_labels", [p["label"] for p in res["predictions"]] == want_labels,
                      str([p["label"] for p in res["predictions"]]))
    tap.finish()


if __name__ == "__main__":
    main()
