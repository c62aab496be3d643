"""test_eval.py - `lsq eval` against PyTorch on real labelled data: the first 500 Fashion-MNIST test
images (Debian's dataset-fashion-mnist, read from the IDX files) through a random MixNet-S whose
metadata asks for the trainer's preprocessing (28x28 grey -> PIL bicubic 32x32 -> 3 channels);
then the two folder layouts (a folder per class, matched to the model's labels by name, and a
labels.txt), and a corrupt IDX file. Accuracy must equal PyTorch's count for count (one image of
slack for a float near-tie between the top two logits)."""
import gzip
import json
import os
import shutil
import subprocess

import numpy as np
import torch
from PIL import Image

from common import LSQ_BIN, TMP, Tap, have_engine
from lsqnet import nets

FMNIST = "/usr/share/datasets/fashion-mnist"
PP = {"input_size": 32, "resize_size": 32, "crop_pct": 1.0, "interpolation": "bicubic", "mean": [0.286] * 3,
      "std": [0.353] * 3, "grayscale": True}
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    if data[2] == 8 and data[3] == 3:
        n, r, c = np.frombuffer(data[4:16], ">u4")
        return np.frombuffer(data[16:], np.uint8).reshape(n, r, c)
    return np.frombuffer(data[8:], np.uint8)


def torch_logits(model, imgs):
    xs = []
    for im in imgs:
        pil = Image.fromarray(im).resize((32, 32), Image.BICUBIC)
        x = (np.asarray(pil, np.float32) / 255 - 0.286) / 0.353
        xs.append(np.repeat(x[None], 3, 0))
    with torch.no_grad():
        return model(torch.from_numpy(np.stack(xs))).numpy()


def run_eval(model_path, data, extra=()):
    r = subprocess.run([LSQ_BIN, "eval", "--model", model_path, "--data", data, "--json", "-", *extra],
                       capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip()
    return json.loads(r.stdout.splitlines()[-1]), ""


def main():
    tap = Tap()
    if not have_engine():
        tap.fail("engine_present", f"{LSQ_BIN} not built")
        tap.finish()
    model = nets.randomize(nets.create("mixnet_s", 10), seed=2).eval()
    mpath = os.path.join(TMP, "eval_mixnet_s.safetensors")
    nets.export(model, "mixnet_s", mpath, labels=LABELS, preprocess=PP)

    n = 500
    imgs, labels = idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")[:n], idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz")[:n]
    logits = torch_logits(model, imgs)
    pred = logits.argmax(1)
    top5 = np.argsort(-logits, 1)[:, :5]
    want1, want5 = int((pred == labels).sum()), int((top5 == labels[:, None]).any(1).sum())
    res, why = run_eval(mpath, FMNIST, ["--limit", str(n)])
    if res is None:
        tap.fail("eval_fashion_mnist", why)
    else:
        r = res["results"][0]
        got1, got5 = round(r["top1"] * n), round(r["top5"] * n)
        tap.note(f"fashion-mnist[:{n}]: engine top-1 {got1}, top-5 {got5}; torch {want1}, {want5}")
        tap.check("eval_fashion_mnist_top1", abs(got1 - want1) <= 1, f"engine {got1}, torch {want1}")
        tap.check("eval_fashion_mnist_top5", abs(got5 - want5) <= 1, f"engine {got5}, torch {want5}")
        per = {p["class"]: p for p in r["per_class"]}
        tap.check("eval_per_class_counts", all(per[c]["images"] == int((labels == c).sum()) for c in range(10)),
                  str(r["per_class"]))
        tap.check("eval_fields", r["config"] == "fp32" and r["latency_ms"]["p50"] > 0 and r["model_bytes"] > 0
                  and r["throughput_ips"] > 0 and res["images"] == n, str(r)[:300])

    # a folder per class, named by the model's labels, in an order unlike the label order
    root = os.path.join(TMP, "eval_folders")
    shutil.rmtree(root, ignore_errors=True)
    chosen = [7, 0, 3]  # three classes; folder names sort differently from their indices
    sel = [i for i in range(n) if labels[i] in chosen][:30]
    for i in sel:
        d = os.path.join(root, LABELS[labels[i]].replace("/", "_"))
        os.makedirs(d, exist_ok=True)
        Image.fromarray(imgs[i]).save(os.path.join(d, f"{i:04d}.png"))
    names = [LABELS[c].replace("/", "_") for c in range(10)]
    model_nf = nets.randomize(nets.create("mixnet_s", 10), seed=2).eval()
    mpath2 = os.path.join(TMP, "eval_mixnet_s_names.safetensors")
    nets.export(model_nf, "mixnet_s", mpath2, labels=names, preprocess=PP)
    want = int((torch_logits(model_nf, imgs[sel]).argmax(1) == labels[sel]).sum())
    res, why = run_eval(mpath2, root)
    got = None if res is None else round(res["results"][0]["top1"] * len(sel))
    tap.check("eval_class_folders_by_name", res is not None and abs(got - want) <= 1, why or f"engine {got}, torch {want}")

    # images + labels.txt
    flat = os.path.join(TMP, "eval_flat")
    shutil.rmtree(flat, ignore_errors=True)
    os.makedirs(flat)
    with open(os.path.join(flat, "labels.txt"), "w") as f:
        f.write("# file class\n")
        for i in range(40):
            Image.fromarray(imgs[i]).save(os.path.join(flat, f"img{i}.jpg"), quality=95)
            f.write(f"img{i}.jpg {labels[i]}\n")
    res, why = run_eval(mpath, flat)
    tap.check("eval_labels_file", res is not None and res["images"] == 40 and 0 <= res["results"][0]["top1"] <= 1, why)

    # a corrupt IDX set: an error naming the file, exit 1
    bad = os.path.join(TMP, "eval_bad_idx")
    shutil.rmtree(bad, ignore_errors=True)
    os.makedirs(bad)
    raw = gzip.open(f"{FMNIST}/t10k-images-idx3-ubyte.gz").read()
    with open(os.path.join(bad, "t10k-images-idx3-ubyte"), "wb") as f:
        f.write(raw[:100000])
    shutil.copy(f"{FMNIST}/t10k-labels-idx1-ubyte.gz", bad)
    r = subprocess.run([LSQ_BIN, "eval", "--model", mpath, "--data", bad], capture_output=True, text=True)
    tap.check("eval_truncated_idx_refused", r.returncode == 1 and "t10k-images-idx3-ubyte" in r.stderr, r.stderr)
    r = subprocess.run([LSQ_BIN, "eval", "--model", mpath, "--data", os.path.join(TMP, "nowhere")],
                       capture_output=True, text=True)
    tap.check("eval_missing_dir_refused", r.returncode == 1 and "nowhere" in r.stderr, r.stderr)
    tap.finish()


if __name__ == "__main__":
    main()
