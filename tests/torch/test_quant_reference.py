"""test_quant_reference.py - the engine's quantized reference path against the trainer's LSQ+
fake quantization (models/lsqnet/quant.py), on random EfficientNet-B0 and MixNet-S models at 32x32.

For each architecture and configuration (w8a8, w4a4, w3a3, w2a2, the LSQ baselines and three with
suffixes - per-tensor scales, other first/last bits, per-layer overrides by group and name): a float
model with randomised weights and BN statistics, quantized with quant.create, calibrated with the
LSQ+ initialisation on a random batch, exported in the latent-float convention; then 32 fixed
inputs through PyTorch and through `lsq infer --config <c>`, from the latent-float file and from
the packed deployable file (quant.export_packed). Also the packed files' sizes against the FP32
file at 1000 classes (the quantized-execution issue's targets).

Tolerances, and why: both sides compute the same codes from the same float formulas, but float sums
run in another order (GEMM tiling, pooling), so a value that lands within an ulp of a rounding
boundary can get the neighbouring code, and one flipped code moves the logits of that input by up
to a quantization step of everything downstream. So: the median over inputs of max |logit error|
must be <= 1e-3 x the logit range (most inputs match to float precision), and top-1 must agree on
at least 90% of inputs. A systematic error (rounding mode, offset, padding, bits of a layer) breaks
every input and fails both. The code-level comparison (99.9% of codes equal) is the integer path's
test, still to come.
"""
import os
import subprocess

import numpy as np
import torch

from common import LSQ_BIN, TMP, Tap, have_engine, random_quantized
from lsqnet import nets, quant

CONFIGS = ["w8a8", "w4a4", "w3a3", "w2a2", "w4a4-lsq", "w2a2-lsq",
           # suffixes: per-tensor weight scales; first/last layers at 6 bits with the SE layers at 8;
           # the LSQ baseline per tensor with depthwise at 8 bits and one layer by exact name at 4
           "w4a4+pt", "w3a3+fl6+se8", "w2a2-lsq+pt+dw8+conv_head=4"]
if os.environ.get("LSQ_QREF_CONFIGS"):  # e.g. "w4a4+pt,w2a2" while developing
    CONFIGS = os.environ["LSQ_QREF_CONFIGS"].split(",")
N, S = 32, 32


def main():
    tap = Tap()
    if not have_engine():
        tap.fail("engine_present", f"{LSQ_BIN} not built")
        tap.finish()
    torch.manual_seed(0)
    x = torch.randn(N, 3, S, S)
    xpath = f"{TMP}/qref_x.f32"
    x.numpy().astype("<f4").tofile(xpath)
    for arch in ["efficientnet_b0", "mixnet_s"]:
        fm = nets.randomize(nets.create(arch, 10), seed=1).eval()
        for cfg in CONFIGS:
            name = f"{arch}_{cfg}"
            qm = random_quantized(fm, arch, cfg, S)
            path = f"{TMP}/qref_{name}.safetensors"
            quant.export(qm, arch, path, cfg)
            with torch.no_grad():
                ref = qm(x).numpy()
            ypath = f"{TMP}/qref_{name}.f32"
            r = subprocess.run([LSQ_BIN, "infer", "--model", path, "--config", cfg, "--input", xpath,
                                "--shape", f"{N},3,{S},{S}", "--output", ypath, "--reference"], capture_output=True, text=True)
            if r.returncode:
                tap.fail(f"reference_{name}", r.stderr.strip())
                continue
            y = np.fromfile(ypath, "<f4").reshape(N, 10)
            rng = float(ref.max() - ref.min())
            err = np.abs(y - ref).max(1)
            top1 = float((y.argmax(1) == ref.argmax(1)).mean())
            tap.note(f"{name}: logit range {rng:.3f}, median max err {np.median(err):.2e}, worst {err.max():.2e}, "
                     f"inputs within 1e-3 x range {np.mean(err <= 1e-3 * rng):.3f}, top-1 agreement {top1:.3f}")
            tap.check(f"reference_{name}", np.median(err) <= 1e-3 * rng and top1 >= 0.9,
                      f"median err {np.median(err):.3g} vs range {rng:.3g}, top-1 {top1:.3f}")
            # the packed deployable form (codes at their bit-width, BN folded) runs the same network
            ppath = f"{TMP}/qref_{name}.packed.safetensors"
            quant.export_packed(qm, arch, ppath, cfg)
            r = subprocess.run([LSQ_BIN, "infer", "--model", ppath, "--input", xpath, "--shape", f"{N},3,{S},{S}",
                                "--output", ypath, "--reference"], capture_output=True, text=True)
            if r.returncode:
                tap.fail(f"packed_{name}", r.stderr.strip())
                continue
            yp = np.fromfile(ypath, "<f4").reshape(N, 10)
            perr = np.abs(yp - ref).max(1)
            ptop1 = float((yp.argmax(1) == ref.argmax(1)).mean())
            tap.check(f"packed_{name}", np.median(perr) <= 1e-3 * rng and ptop1 >= 0.9,
                      f"median err {np.median(perr):.3g} vs range {rng:.3g}, top-1 {ptop1:.3f}")
            if "+" in cfg:  # the engine reads the file under the trainer's canonical name
                r = subprocess.run([LSQ_BIN, "inspect", ppath], capture_output=True, text=True)
                line = next((ln for ln in r.stdout.splitlines() if ln.startswith("config:")), "")
                tap.check(f"canonical_name_{name}", line.split() == ["config:", qm.quant_config.name],
                          f"{line!r} vs {qm.quant_config.name!r}: {r.stderr.strip()[:200]}")
    # deployable file sizes, 1000 classes, first/last layers at 8 bits (issue targets vs the FP32 file)
    targets = {("efficientnet_b0", "w4a4"): 0.19, ("efficientnet_b0", "w2a2"): 0.14,
               ("mixnet_s", "w4a4"): 0.20, ("mixnet_s", "w2a2"): 0.16}
    for arch in ["efficientnet_b0", "mixnet_s"]:
        fp = f"{TMP}/size_{arch}_fp32.safetensors"
        nets.export(nets.create(arch, 1000), arch, fp, num_batches_tracked=False)
        for cfg in ["w4a4", "w2a2"]:
            qp = f"{TMP}/size_{arch}_{cfg}.safetensors"
            quant.export_packed(quant.create(arch, cfg, 1000), arch, qp, cfg)
            ratio = os.path.getsize(qp) / os.path.getsize(fp)
            tap.note(f"{arch} {cfg}: packed {os.path.getsize(qp)} bytes = {ratio:.3f} x the FP32 file")
            tap.check(f"size_{arch}_{cfg}", ratio <= targets[(arch, cfg)], f"{ratio:.3f} > {targets[(arch, cfg)]}")
    # hostile quantizer tensors: a clear error naming the tensor, never a crash or a silent zero
    from lsqnet import safetensors_io
    good = f"{TMP}/qref_mixnet_s_w4a4.packed.safetensors"
    t0, meta = safetensors_io.load(good)
    cases = {
        "zero_scale": ("blocks.2.0.conv_dw.1.weight_quant.scale", lambda t: t.zero_(), "not positive"),
        "negative_scale": ("blocks.3.1.conv_pwl.0.weight_quant.scale", lambda t: t.neg_(), "not positive"),
        "nan_offset": ("blocks.4.0.conv_pw.input_quant.offset", lambda t: t.fill_(float("nan")), "NaN|non-finite|finite"),
        "zero_act_scale": ("conv_head.input_quant.scale", lambda t: t.zero_(), "not positive"),
        "wrong_shape": ("blocks.1.0.conv_pw.0.weight_quant.scale", lambda t: t[:5].clone(), "expected"),
        "short_codes": ("blocks.5.0.conv_dw.4.weight_codes", lambda t: t[:-1].clone(), "expected U8"),
    }
    import re
    for case, (key, fn, pattern) in cases.items():
        tensors = {k: v.clone() for k, v in t0.items()}
        out = fn(tensors[key])
        if out is not None:
            tensors[key] = out
        bad = f"{TMP}/hostile_{case}.safetensors"
        safetensors_io.save(bad, tensors, meta)
        r = subprocess.run([LSQ_BIN, "inspect", bad], capture_output=True, text=True)
        tap.check(f"hostile_{case}", r.returncode == 1 and key in r.stderr and re.search(pattern, r.stderr),
                  f"exit {r.returncode}: {r.stderr.strip()[:200]}")
    # per-tensor configurations hold one scale per weight tensor: a per-channel scale is refused
    pt = f"{TMP}/qref_mixnet_s_w4a4+pt.packed.safetensors"
    if os.path.exists(pt):
        tensors, meta = safetensors_io.load(pt)
        key = "blocks.3.1.conv_pwl.0.weight_quant.scale"
        tensors[key] = tensors[key].repeat(2)  # any shape but [1]
        bad = f"{TMP}/hostile_per_channel_in_pt.safetensors"
        safetensors_io.save(bad, tensors, meta)
        r = subprocess.run([LSQ_BIN, "inspect", bad], capture_output=True, text=True)
        tap.check("hostile_per_channel_scale_in_pt", r.returncode == 1 and key in r.stderr and "expected shape [1]" in r.stderr,
                  f"exit {r.returncode}: {r.stderr.strip()[:200]}")
    # a quantized configuration the file was not made for is refused, naming both
    r = subprocess.run([LSQ_BIN, "infer", "--model", f"{TMP}/qref_mixnet_s_w4a4.safetensors", "--config", "w2a2",
                        "--input", xpath, "--shape", f"{N},3,{S},{S}", "--output", f"{TMP}/qref_bad.f32"],
                       capture_output=True, text=True)
    tap.check("other_config_refused", r.returncode == 1 and "w2a2" in r.stderr and "w4a4" in r.stderr, r.stderr)
    tap.finish()


if __name__ == "__main__":
    main()
