"""export_onnx.py ARCH OUT.onnx [--size S] [--seed N] - export an lsqnet model to ONNX for timing.

Seeded random weights (randomised BN statistics), 1000 classes, opset 13, input 'input' and output
'logits' with dynamic batch / height / width, like shared/bench/export_onnx.py does for torchvision's
B0, so ONNX Runtime can be timed on the same networks the engine runs (e.g. MixNet-S):
    /usr/bin/python3 tests/bench/export_onnx.py mixnet_s /tmp/mixnet_s.onnx
    ../shared/bench/ort-anchor 1 50 /tmp/mixnet_s.onnx 224
tf_ variants export with a dynamic batch only: their input-dependent SAME padding is computed in
Python and the tracer freezes it at --size.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models"))

import torch  # noqa: E402

from lsqnet import nets  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch", choices=sorted(nets.ARCHS))
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=224, help="input size traced at (default 224; axes stay dynamic)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model = nets.randomize(nets.create(a.arch, 1000), seed=a.seed).eval()
    x = torch.randn(1, 3, a.size, a.size, generator=torch.Generator().manual_seed(a.seed))
    axes = {0: "n"} if nets.ARCHS[a.arch]["tf"] else {0: "n", 2: "h", 3: "w"}
    with torch.no_grad():
        torch.onnx.export(model, x, a.out, opset_version=13, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": axes, "logits": {0: "n"}})
    print(f"ok {a.arch} -> {a.out} ({os.path.getsize(a.out)} bytes)")


if __name__ == "__main__":
    main()
