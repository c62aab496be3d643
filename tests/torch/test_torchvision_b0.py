"""test_torchvision_b0.py - the C engine against torchvision's EfficientNet-B0, an implementation not ours.

torchvision.models.efficientnet_b0 with seeded random weights and randomised BN statistics is saved
twice, with torchvision's own tensor names (features.*, classifier.1.*) and renamed to timm's (map:
shared/reference/architectures/efficientnet_b0.timm_to_torchvision.txt), both with arch metadata;
`lsq infer` must reproduce torchvision's logits at 224 and at 32 (max abs error <= 1e-3 x range, same
top-5). A checkpoint without arch metadata must be refused unless --arch is given.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (TMP, Tap, compare_logits, engine_infer, have_engine, run_cli, seeded_input,  # noqa: E402
                    timm_to_torchvision, LSQ_BIN)

import torch  # noqa: E402
import torchvision  # noqa: E402

from lsqnet import nets, safetensors_io  # noqa: E402

tap = Tap()

tv = torchvision.models.efficientnet_b0()
nets.randomize(tv, seed=11)  # works on any conv/linear/BN tree
tv.eval()
sd = tv.state_dict()
rows = timm_to_torchvision()

names_ok = sorted(sd) == sorted(t for _, t, _ in rows) and all(tuple(sd[t].shape) == s for _, t, s in rows)
tap.check("torchvision efficientnet_b0 state_dict matches the name map", names_ok,
          "torchvision's names or shapes differ from efficientnet_b0.timm_to_torchvision.txt")

meta = {"format_version": "1", "arch": "efficientnet_b0", "num_classes": "1000"}
tv_path = os.path.join(TMP, "tv_b0.torchvision_names.safetensors")
timm_path = os.path.join(TMP, "tv_b0.timm_names.safetensors")
noarch_path = os.path.join(TMP, "tv_b0.no_arch.safetensors")
safetensors_io.save(tv_path, dict(sd), meta)
timm_sd = {timm: sd[t] for timm, t, _ in rows}
safetensors_io.save(timm_path, timm_sd, meta)
safetensors_io.save(noarch_path, timm_sd, {"format_version": "1", "num_classes": "1000"})

# Our model, given the same weights, must agree with torchvision (checks nets.py independently).
ours = nets.create("efficientnet_b0").eval()
ours.load_state_dict(timm_sd)
with torch.no_grad():
    worst = max(float((ours(x) - tv(x)).abs().max()) for x in (seeded_input(224, 224, 1), seeded_input(47, 65, 2)))
tap.check("lsqnet efficientnet_b0 == torchvision with the same weights", worst < 1e-4, f"max difference {worst}")


def compare(name, path, x, tag, arch=None):
    got, err = engine_infer(path, x, tag, arch=arch)
    if got is None:
        return tap.fail(name, err)
    with torch.no_grad():
        ref = tv(x).numpy()
    ok, why = compare_logits(ref[0], got[0])
    tap.check(name, ok, why)
    if ok:
        tap.note(f"{name}: {why}")


if not have_engine():
    tap.fail("engine available", f"{LSQ_BIN} does not exist; build it with `make`")
else:
    for size in (224, 32):
        x = seeded_input(size, size, 20 + size)
        compare(f"engine vs torchvision {size}x{size}, torchvision names", tv_path, x, f"tv_{size}")
        compare(f"engine vs torchvision {size}x{size}, timm names", timm_path, x, f"tvtimm_{size}")

    x = seeded_input(32, 32, 5)
    xin = os.path.join(TMP, "noarch.in.f32")
    x.numpy().astype("<f4").tofile(xin)
    rc, msg = run_cli("infer", "--model", noarch_path, "--input", xin, "--shape", "1,3,32,32",
                      "--output", os.path.join(TMP, "noarch.out.f32"))
    msg = msg.strip()
    tap.check("checkpoint without arch metadata is refused, naming 'arch'", rc != 0 and "arch" in msg,
              f"exit {rc}, message '{msg[:200]}'")
    tap.note(f"refusal message: {msg[:200]}")
    compare("checkpoint without arch metadata loads with --arch efficientnet_b0", noarch_path, x, "noarch_ok",
            arch="efficientnet_b0")

tap.finish()
