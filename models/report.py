#!/usr/bin/python3
"""report.py - models/REPORT.md: accuracy and latency of every bundled configuration (`make report`).

  /usr/bin/python3 models/report.py [--lsq build/lsq] [--manifest models/bundled/manifest.json]
                                    [--data /usr/share/datasets/fashion-mnist] [--limit N]

Everything is measured by this build of the C engine:
- accuracy: `lsq eval` (the integer path for quantized configurations) on the manifest's dataset,
  10,000 Fashion-MNIST test images, against the trainer's own evaluation of the same checkpoint
  (from its log: the two must agree within 0.1 point);
- integer vs reference path: the test images through `lsq infer` on both paths (the same input
  tensors), the fraction of images whose top-1 agrees (issue target: >= 99.9%);
- latency, batch 1, 1 thread: p50/p99 at the model's own input size (from `lsq eval`) and at
  224x224 with seeded ImageNet-shape weights (`lsq bench --size 224`; quantized configurations need
  `lsq bench --config` to calibrate seeded weights, marked n/a where this build cannot).
Writes models/REPORT.md and models/report.svg (accuracy against latency, one point per
configuration) and models/report.json (the raw numbers). Takes a few minutes; run it on a quiet
machine (pause training: pkill -STOP -f models/train.py).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
from lsqnet import safetensors_io  # noqa: E402


def sh(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()[:400]}")
    return p.stdout


# Timed runs on one CPU: this machine's two vCPUs differ by up to 1.5x, and an unpinned process
# lands on either (see README.md, Performance).
PIN = ["taskset", "-c", os.environ.get("LSQ_REPORT_CPU", "0")]
CHUNK = 2500  # images per `lsq infer` call (it takes up to 4096)


def test_tensors(data_dir, size, limit, tmp):
    """The test images preprocessed as the trainer does (train.py: PIL bicubic, mean/std), NCHW f32,
    in files of CHUNK images: [(path, n), ...]."""
    import train
    vx = train.read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))[:limit]
    x = train.to_input(train.resize_all(vx, size)).contiguous().numpy()
    parts = []
    for i in range(0, len(x), CHUNK):
        path = os.path.join(tmp, f"test_{size}_{i // CHUNK}.f32")
        x[i:i + CHUNK].astype("<f4").tofile(path)
        parts.append((path, len(x[i:i + CHUNK])))
    return parts


def top1_agreement(lsq, model, config, parts, size, tmp):
    """Share of the images whose top-1 is the same on the integer and the float reference path."""
    same = total = 0
    for xpath, n in parts:
        outs = []
        for extra in ([], ["--reference"]):
            y = os.path.join(tmp, "agree.f32")
            sh([lsq, "infer", "--model", model, "--config", config, "--input", xpath, "--shape",
                f"{n},3,{size},{size}", "--output", y, "--threads", "2", *extra])
            outs.append(np.fromfile(y, "<f4").reshape(n, -1).argmax(1))
        same += int((outs[0] == outs[1]).sum())
        total += n
    return same / total


def svg_chart(points, path):
    """points: [(label, arch, latency_ms, top1)] -> a small self-contained SVG scatter plot."""
    W, H, L, B, T, R = 640, 400, 60, 50, 20, 150
    xs = [p[2] for p in points]
    ys = [p[3] * 100 for p in points]
    x0, x1 = 0, max(xs) * 1.1
    y0, y1 = min(ys) - 1, max(ys) + 1

    def X(v):
        return L + (v - x0) / (x1 - x0) * (W - L - R)

    def Y(v):
        return H - B - (v - y0) / (y1 - y0) * (H - B - T)
    colors = {"efficientnet_b0": "#1f77b4", "mixnet_s": "#d62728"}
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
         f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
         f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">latency p50, ms (batch 1, 1 thread, 224x224)</text>',
         f'<text transform="translate(16,{(T + H - B) / 2}) rotate(-90)" text-anchor="middle">top-1 accuracy, % (Fashion-MNIST test)</text>']
    for i in range(6):
        xv = x0 + (x1 - x0) * i / 5
        yv = y0 + (y1 - y0) * i / 5
        o.append(f'<text x="{X(xv):.1f}" y="{H - B + 15}" text-anchor="middle">{xv:.1f}</text>')
        o.append(f'<text x="{L - 5}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:.1f}</text>')
    for label, arch, lat, acc in points:
        c = colors.get(arch, "black")
        o.append(f'<circle cx="{X(lat):.1f}" cy="{Y(acc * 100):.1f}" r="4" fill="{c}"/>')
        o.append(f'<text x="{X(lat) + 6:.1f}" y="{Y(acc * 100) + 4:.1f}" fill="{c}">{label}</text>')
    for i, (arch, c) in enumerate(colors.items()):
        o.append(f'<text x="{W - R + 10}" y="{T + 15 + 15 * i}" fill="{c}">{arch}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lsq", default=os.path.join(ROOT, "build", "lsq"))
    ap.add_argument("--manifest", default=os.path.join(ROOT, "models", "bundled", "manifest.json"))
    ap.add_argument("--data", default=None, help="default: the manifest's dataset path")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--out", default=os.path.join(ROOT, "models"))
    ap.add_argument("--render", action="store_true", help="rewrite REPORT.md from report.json, measuring nothing")
    a = ap.parse_args(argv)
    if a.render:  # e.g. after editing report_discussion.md
        with open(os.path.join(a.out, "report.json")) as f:
            j = json.load(f)
        write_markdown(j["rows"], os.path.join(a.out, "REPORT.md"), j["seconds"], os.path.exists(os.path.join(a.out, "report.svg")))
        return
    with open(a.manifest) as f:
        manifest = json.load(f)
    base = os.path.dirname(os.path.abspath(a.manifest))
    tmp = os.environ.get("LSQ_TMP") or "/tmp"
    rows, parts = [], {}
    t_start = time.time()
    for m in manifest["models"]:
        data = a.data or m["dataset"]["path"]
        for c in m["configs"]:
            path = os.path.join(base, c["file"])
            jpath = os.path.join(tmp, "report_eval.json")
            sh(PIN + [a.lsq, "eval", "--model", path, "--data", data, "--threads", "1", "--limit", str(a.limit), "--json", jpath])
            with open(jpath) as f:
                ev = json.load(f)
            r = ev["results"][0]
            size = json.loads(safetensors_io.load(path)[1]["preprocess"])["input_size"]
            row = {"model": m["name"], "arch": m["arch"], "config": c["config"], "bytes": c["bytes"],
                   "top1": r["top1"], "top5": r["top5"], "images": ev["images"],
                   "trainer_top1": c.get("trainer_test_acc"), "p50_own": r["latency_ms"]["p50"],
                   "p99_own": r["latency_ms"]["p99"], "epochs": c.get("epochs"), "stages": c.get("stages"),
                   "kd": c.get("kd")}
            if c["config"] != "fp32":
                if size not in parts:
                    parts[size] = test_tensors(data, size, a.limit, tmp)
                row["agreement"] = top1_agreement(a.lsq, path, c["config"], parts[size], size, tmp)
            rows.append(row)
            print(json.dumps(row), flush=True)
    # latency at 224: three rounds over every configuration, interleaved, so a slow minute of this
    # shared machine falls on all of them alike; each configuration's median round by p50
    runs = {i: [] for i in range(len(rows))}
    for _ in range(3):
        for i, row in enumerate(rows):
            try:
                runs[i].append(json.loads(sh(PIN + [a.lsq, "bench", "--arch", row["arch"], "--config", row["config"],
                                              "--size", "224", "--threads", "1", "--iters", "30", "--json"])))
            except RuntimeError as e:
                row["note_224"] = str(e)[:200]
    for i, row in enumerate(rows):
        bs = sorted(runs[i], key=lambda b: b["p50_ms"])
        row["p50_224"], row["p99_224"] = (bs[len(bs) // 2]["p50_ms"], bs[len(bs) // 2]["p99_ms"]) if bs else (None, None)
        print(f"{row['arch']} {row['config']}: 224x224 p50 {row['p50_224']} ms", flush=True)
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump({"rows": rows, "seconds": time.time() - t_start}, f, indent=1)
    pts = [(r["config"], r["arch"], r["p50_224"], r["top1"]) for r in rows if r.get("p50_224")]
    if pts:
        svg_chart(pts, os.path.join(a.out, "report.svg"))
    write_markdown(rows, os.path.join(a.out, "REPORT.md"), time.time() - t_start, bool(pts))


def fmt(v, spec, none="n/a"):
    return none if v is None else format(v, spec)


def recipe(row):
    """How a row's model was trained, as the report says it."""
    stages = f" in {row['stages']} stages" if (row.get("stages") or 1) > 1 else ""
    return f"{row.get('epochs')} epochs{stages}" + (" with distillation" if row.get("kd") else "")


def write_markdown(rows, path, seconds, chart):
    L = ["# Bundled models: accuracy and latency of every configuration", "",
         "Generated by `make report` (models/report.py) from models/bundled/manifest.json; every number below was",
         f"measured by this build of the C engine in one run ({seconds / 60:.1f} minutes). Accuracy: `lsq eval` on the",
         "Fashion-MNIST test set (integer path for quantized configurations). Trainer: the PyTorch trainer's own",
         "evaluation of the same checkpoint. Agreement: share of test images whose top-1 is the same on the integer",
         "and the float reference path. Latency: batch 1, 1 thread, p50 (p99), at the model's own 32x32 input (over",
         "the 10,000 evaluated images) and at 224x224 with seeded ImageNet-shape weights (1000 classes; three",
         "interleaved rounds of `lsq bench`, 30 runs each, over all configurations: the median round); timed runs",
         "pinned to one CPU (LSQ_REPORT_CPU, default 0). Absolute times on this shared machine drift by 30% between minutes;",
         "`make bench` compares configurations side by side in interleaved rounds.", "",
         "| model | config | top-1 | top-5 | trainer top-1 | agreement | bytes | p50 (p99) ms, 32x32 | p50 (p99) ms, 224x224 |",
         "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        L.append(f"| {r['model']} | {r['config']} | {100 * r['top1']:.2f}% | {100 * r['top5']:.2f}% | "
                 f"{fmt(r['trainer_top1'] and 100 * r['trainer_top1'], '.2f')}% | "
                 f"{fmt(r.get('agreement') and 100 * r['agreement'], '.2f', '-')}{'%' if r.get('agreement') else ''} | "
                 f"{r['bytes']:,} | {r['p50_own']:.3f} ({r['p99_own']:.3f}) | "
                 f"{fmt(r['p50_224'], '.2f')} ({fmt(r['p99_224'], '.2f')}) |")
    if chart:
        L += ["", "![accuracy against latency](report.svg)"]
    L += ["", "## Against the paper's claims", ""]
    by = {(r["arch"], r["config"]): r for r in rows}
    for arch in ["efficientnet_b0", "mixnet_s"]:
        fp = by.get((arch, "fp32"))
        for bits in ["w4a4", "w2a2"]:
            p, l = by.get((arch, bits)), by.get((arch, bits + "-lsq"))
            if p and l:
                d = 100 * (p["top1"] - l["top1"])
                ref = f"; FP32 {100 * fp['top1']:.2f}%" if fp else ""
                budget = ""
                if recipe(p) != recipe(l):
                    budget = f" - unequal training: LSQ+ {recipe(p)}, LSQ {recipe(l)}, not the paper's comparison"
                L.append(f"- {arch} {bits}: LSQ+ {100 * p['top1']:.2f}% vs LSQ {100 * l['top1']:.2f}% "
                         f"({d:+.2f} points){ref}{budget}.")
            elif p and fp:
                L.append(f"- {arch} {bits}: LSQ+ {100 * p['top1']:.2f}% vs FP32 {100 * fp['top1']:.2f}% "
                         f"({100 * (p['top1'] - fp['top1']):+.2f} points); the LSQ baseline is not trained yet.")
    notes = os.path.join(os.path.dirname(path), "report_discussion.md")
    if os.path.exists(notes):  # the hand-written discussion of these numbers, reviewed with them
        with open(notes) as f:
            L += ["", f.read().strip()]
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
