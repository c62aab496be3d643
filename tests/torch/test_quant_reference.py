"""test_quant_reference.py - the engine's quantized reference path against the trainer's LSQ+
fake quantization (models/lsqnet/quant.py), on random EfficientNet-B0 and MixNet-S models at 32x32.

For each architecture and configuration (w8a8, w4a4, w3a3, w2a2 and the LSQ baselines): a float
model with randomised weights and BN statistics, quantized with quant.create, calibrated with the
LSQ+ initialisation on a random batch, exported in the latent-float convention; then 32 fixed
inputs through PyTorch and through `lsq infer --config <c>`.

Tolerances, and why: both sides compute the same codes from the same float formulas, but float sums
run in another order (GEMM tiling, pooling), so a value that lands within an ulp of a rounding
boundary can get the neighbouring code, and one flipped code moves the logits of that input by up
to a quantization step of everything downstream. So: the median over inputs of max |logit error|
must be <= 1e-3 x the logit range (most inputs match to float precision), and top-1 must agree on
at least 90% of inputs. A systematic error (rounding mode, offset, padding, bits of a layer) breaks
every input and fails both. The code-level comparison (99.9% of codes equal) is the integer path's
test, still to come.
"""
import subprocess

import numpy as np
import torch

from common import LSQ_BIN, TMP, Tap, have_engine
from lsqnet import nets, quant

CONFIGS = ["w8a8", "w4a4", "w3a3", "w2a2", "w4a4-lsq", "w2a2-lsq"]
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
            qm = quant.create(arch, cfg, 10)
            quant.load_float_weights(qm, fm.state_dict())
            g = torch.Generator().manual_seed(1)
            quant.calibrate(qm, [torch.randn(8, 3, S, S, generator=g)])
            qm.eval()
            path = f"{TMP}/qref_{name}.safetensors"
            quant.export(qm, arch, path, cfg)
            with torch.no_grad():
                ref = qm(x).numpy()
            ypath = f"{TMP}/qref_{name}.f32"
            r = subprocess.run([LSQ_BIN, "infer", "--model", path, "--config", cfg, "--input", xpath,
                                "--shape", f"{N},3,{S},{S}", "--output", ypath], capture_output=True, text=True)
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
    # a quantized configuration the file was not made for is refused, naming both
    r = subprocess.run([LSQ_BIN, "infer", "--model", f"{TMP}/qref_mixnet_s_w4a4.safetensors", "--config", "w2a2",
                        "--input", xpath, "--shape", f"{N},3,{S},{S}", "--output", f"{TMP}/qref_bad.f32"],
                       capture_output=True, text=True)
    tap.check("other_config_refused", r.returncode == 1 and "w2a2" in r.stderr and "w4a4" in r.stderr, r.stderr)
    tap.finish()


if __name__ == "__main__":
    main()
