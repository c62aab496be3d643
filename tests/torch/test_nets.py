"""test_nets.py - lsqnet's PyTorch models against the timm reference files, and the C engine against them.

1. For all 14 architectures: state_dict names and shapes equal shared/reference/architectures exactly;
   the module structure matches the layer tables (kernels, strides, paddings, groups, activations,
   skips); tf_ variants pad 'SAME' exactly where TF's padding depends on the input size.
2. safetensors_io round trips every dtype; the checkpoint convention round trips through export/load.
3. Seeded random models (randomised BN) exported with our convention; `lsq infer` logits vs PyTorch at
   the native size, at 32x32 and at 65x47 (SAME padding, borders): max abs error <= 1e-3 x logit
   range and identical top-5. Once with F16 and once with BF16 weights in the file.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (TMP, Tap, compare_logits, engine_infer, have_engine, read_layers_ref,  # noqa: E402
                    read_state_dict_ref, seeded_input, LSQ_BIN)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lsqnet import nets, safetensors_io  # noqa: E402
from lsqnet.nets import Conv2d, MixedConv2d, DepthwiseSeparableConv, InvertedResidual  # noqa: E402

tap = Tap()

# =============================================================================================
# Structure
# =============================================================================================


def state_dict_ref_name(arch):
    # The reference set has tf_efficientnet_b0 and tf_mixnet_s; other tf_ variants share the names
    # and shapes of their PyTorch-native twin.
    if arch in ("tf_efficientnet_b0", "tf_mixnet_s") or not arch.startswith("tf_"):
        return arch
    return arch[3:]


for arch in nets.ARCHS:
    ref, params = read_state_dict_ref(state_dict_ref_name(arch))
    model = nets.create(arch)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    n_params = sum(p.numel() for p in model.parameters())
    reason = ""
    if got != ref:
        first = next((i for i, (a, b) in enumerate(zip(got, ref)) if a != b), min(len(got), len(ref)))
        reason = (f"{len(got)} tensors vs {len(ref)}; first difference at #{first}: "
                  f"{got[first] if first < len(got) else None} vs {ref[first] if first < len(ref) else None}")
    elif params is not None and n_params != params:
        reason = f"{n_params} parameters vs {params}"
    tap.check(f"state_dict {arch}", not reason, reason)


def _act_name(m):
    return type(m).__name__


def _conv_desc(c, as_non_tf=False):
    if isinstance(c, MixedConv2d):
        return "MIX[" + " | ".join(_conv_desc(x, as_non_tf) for x in c.values()) + "]"
    k, s = c.kernel_size[0], c.stride[0]
    if c.dynamic_same and as_non_tf:
        pad, cls = ((s - 1) + (k - 1)) // 2, "Conv2d"   # what the PyTorch-native twin uses
    else:
        pad, cls = c.padding[0], "Conv2dSame" if c.dynamic_same else "Conv2d"
    return f"{c.in_channels}->{c.out_channels} k{k} s{s} p{pad} g{c.groups} {cls}"


def describe(model, as_non_tf=False):
    """The model in the layer tables' format (shared/reference/architectures/*.layers.txt)."""
    d = lambda c: _conv_desc(c, as_non_tf)  # noqa: E731
    lines = [f"stem {d(model.conv_stem)} {_act_name(model.bn1.act)} eps {model.bn1.eps}"]
    for si, stage in enumerate(model.blocks):
        for bi, b in enumerate(stage):
            se = ""
            if not isinstance(b.se, torch.nn.Identity):
                se = f" SE:{b.se.conv_reduce.in_channels}->{b.se.conv_reduce.out_channels} act={_act_name(b.se.act1)}"
            if isinstance(b, DepthwiseSeparableConv):
                lines.append(f"{si}.{bi} DepthwiseSeparableConv skip={b.has_skip} DW:{d(b.conv_dw)} "
                             f"act={_act_name(b.bn1.act)}{se} PW:{d(b.conv_pw)} bn2act={_act_name(b.bn2.act)}")
            else:
                assert isinstance(b, InvertedResidual)
                lines.append(f"{si}.{bi} InvertedResidual skip={b.has_skip} PW:{d(b.conv_pw)} "
                             f"act={_act_name(b.bn1.act)} DW:{d(b.conv_dw)} act={_act_name(b.bn2.act)}{se} "
                             f"PWL:{d(b.conv_pwl)} bn3act={_act_name(b.bn3.act)}")
    lines.append(f"head {d(model.conv_head)} {_act_name(model.bn2.act)} eps {model.bn2.eps}")
    lines.append(f"classifier {model.classifier!r}")
    return lines


def compare_layers(name, got, ref):
    ref = [r.split(" drop_rate")[0] for r in ref if not r.startswith("out ")]
    if got == ref:
        return tap.ok(name)
    i = next((i for i, (a, b) in enumerate(zip(got, ref)) if a != b), min(len(got), len(ref)))
    tap.fail(name, f"line {i + 1}: got '{got[i] if i < len(got) else None}', "
                   f"reference '{ref[i] if i < len(ref) else None}'")


for arch in ("efficientnet_b0", "mixnet_s", "mixnet_m", "mixnet_l"):
    compare_layers(f"layers {arch}", describe(nets.create(arch)), read_layers_ref(arch))
    # tf_ twin: the same network with SAME padding and BN eps 1e-3
    tf = nets.create("tf_" + arch)
    ref = [r.replace("eps 1e-05", "eps 0.001") for r in read_layers_ref(arch)]
    compare_layers(f"layers tf_{arch} (as its twin, eps 1e-3)", describe(tf, as_non_tf=True), ref)
    dyn = [(n, m.stride[0]) for n, m in tf.named_modules() if isinstance(m, Conv2d) and m.dynamic_same]
    strided = [(n, m.stride[0]) for n, m in tf.named_modules() if isinstance(m, Conv2d) and m.stride[0] != 1]
    tap.check(f"tf_{arch} pads SAME dynamically exactly in its stride-2 convs", dyn == strided and dyn,
              f"dynamic {dyn[:4]}... vs strided {strided[:4]}...")

for arch in nets.ARCHS:  # forward shape at the smallest supported size, any class count
    m = nets.create(arch, num_classes=7).eval()
    with torch.no_grad():
        y = m(torch.zeros(1, 3, 32, 32))
    tap.check(f"forward {arch} 32x32 -> 7 classes", tuple(y.shape) == (1, 7), f"output shape {tuple(y.shape)}")


def check_same_padding():
    # TF 'SAME': output ceil(n / s); total padding split with the extra pixel at the bottom/right.
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for k, s, (h, w) in [(3, 2, (224, 224)), (3, 2, (65, 47)), (5, 2, (33, 24)), (7, 2, (17, 12)),
                         (11, 2, (9, 8)), (3, 1, (7, 6)), (9, 2, (2, 1))]:
        c = Conv2d(2, 3, k, s, tf_same=True)
        x = torch.randn(1, 2, h, w, generator=g)
        oh, ow = -(-h // s), -(-w // s)
        ph = max((oh - 1) * s + k - h, 0)
        pw = max((ow - 1) * s + k - w, 0)
        ref = F.conv2d(F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), c.weight, stride=s)
        with torch.no_grad():
            y = c(x)
        if y.shape != ref.shape or tuple(y.shape[2:]) != (oh, ow):
            return f"k{k} s{s} {h}x{w}: shape {tuple(y.shape)} vs {tuple(ref.shape)}"
        worst = max(worst, (y - ref).abs().max().item())
    return "" if worst < 1e-6 else f"max difference {worst}"


r = check_same_padding()
tap.check("tf SAME padding matches TF's rule", not r, r)

# =============================================================================================
# safetensors and the checkpoint convention
# =============================================================================================


def check_safetensors_roundtrip():
    g = torch.Generator().manual_seed(1)
    tensors = {
        "f32": torch.randn(3, 4, generator=g),
        "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 3, 1, generator=g).bfloat16(),
        "i8": torch.randint(-128, 128, (7,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 256, (3, 3), generator=g, dtype=torch.uint8),
        "i32": torch.randint(-2**31, 2**31 - 1, (4,), generator=g, dtype=torch.int32),
        "i64": torch.tensor(123456789012),  # 0-d, like num_batches_tracked
        "empty": torch.zeros(0, 3),
    }
    meta = {"format_version": "1", "labels": json.dumps(["a \"quoted\" label", "caf\u00e9"])}
    path = os.path.join(TMP, "roundtrip.safetensors")
    safetensors_io.save(path, tensors, meta)
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    if n % 8 or next(iter(header)) != "__metadata__":
        return f"header length {n} not a multiple of 8, or __metadata__ not first"
    if header["bf16"]["dtype"] != "BF16" or header["i64"]["shape"] != []:
        return f"header entries wrong: {header['bf16']}, {header['i64']}"
    back, meta2 = safetensors_io.load(path)
    if meta2 != meta or list(back) != list(tensors):
        return f"metadata or names changed: {meta2}, {list(back)}"
    for k, t in tensors.items():
        b = back[k]
        if b.dtype != t.dtype or b.shape != t.shape or not torch.equal(b, t):
            return f"tensor {k} changed: {b.dtype} {tuple(b.shape)}"
    return ""


r = check_safetensors_roundtrip()
tap.check("safetensors round trip F32 F16 BF16 I8 U8 I32 I64, 0-d and empty tensors", not r, r)


def check_export_load():
    m = nets.randomize(nets.create("mixnet_s", num_classes=10), seed=3).eval()
    path = os.path.join(TMP, "export_load.safetensors")
    labels = [f"class {i}" for i in range(10)]
    nets.export(m, "mixnet_s", path, labels=labels, preprocess=nets.default_preprocess("mixnet_s"))
    m2, meta = nets.load(path)
    if meta["arch"] != "mixnet_s" or meta["num_classes"] != "10" or json.loads(meta["labels"]) != labels:
        return f"metadata {meta}"
    if json.loads(meta["preprocess"])["input_size"] != 224 or meta["format_version"] != "1":
        return f"metadata {meta}"
    x = seeded_input(40, 40, 0)
    with torch.no_grad():
        if not torch.equal(m(x), m2.eval()(x)):
            return "reloaded model computes different logits"
    return ""


r = check_export_load()
tap.check("export/load round trip (metadata, labels, preprocess, logits)", not r, r)

# =============================================================================================
# The C engine against PyTorch
# =============================================================================================

# (arch, num_classes, checkpoint options): vary what the loader sees - class counts, labels and
# preprocess metadata present or not, num_batches_tracked present or not.
ENGINE_CASES = [
    ("efficientnet_b0", 1000, dict(preprocess=True)),
    ("efficientnet_b1", 1000, dict(num_batches_tracked=False)),
    ("efficientnet_b2", 1000, dict()),
    ("efficientnet_b3", 1000, dict()),
    ("mixnet_s", 1000, dict(labels=True, preprocess=True)),
    ("mixnet_m", 1000, dict(num_batches_tracked=False)),
    ("mixnet_l", 37, dict(labels=True)),
    ("tf_efficientnet_b0", 1000, dict(preprocess=True)),
    ("tf_mixnet_s", 1000, dict()),
]
LOW_PRECISION = [("mixnet_s", torch.float16, "F16", (224, 224)),
                 ("tf_efficientnet_b0", torch.bfloat16, "BF16", (65, 47))]


def export_case(model, arch, path, opts, dtype=torch.float32):
    nc = model.classifier.out_features
    nets.export(model, arch, path, dtype=dtype,
                labels=[f"label {i} \u00e9 \"q\"" for i in range(nc)] if opts.get("labels") else None,
                preprocess=nets.default_preprocess(arch) if opts.get("preprocess") else None,
                num_batches_tracked=opts.get("num_batches_tracked", True))


def compare_engine(name, path, model, x, tag):
    t0 = time.time()
    got, err = engine_infer(path, x, tag)
    dt = time.time() - t0
    if got is None:
        return tap.fail(name, err)
    with torch.no_grad():
        ref = model(x).numpy()
    if got.shape != ref.shape:
        return tap.fail(name, f"engine wrote {got.shape} logits, PyTorch {ref.shape}")
    for i in range(ref.shape[0]):
        ok, why = compare_logits(ref[i], got[i])
        if not ok:
            return tap.fail(name, f"image {i}: {why}")
    tap.ok(name)
    tap.note(f"{name}: {why}; engine call {dt:.2f}s")


if not have_engine():
    tap.fail("engine available", f"{LSQ_BIN} does not exist; build it with `make`")
else:
    for ci, (arch, nc, opts) in enumerate(ENGINE_CASES):
        model = nets.randomize(nets.create(arch, num_classes=nc), seed=100 + ci).eval()
        size = nets.ARCHS[arch]["size"]
        # sanity of the random model itself: logits neither tiny nor exploding
        with torch.no_grad():
            ys = [model(seeded_input(h, w, 7)) for h, w in ((size, size), (32, 32))]
            spans = [round(float(y.max() - y.min()), 2) for y in ys]
        tap.check(f"random {arch}: logit range sane", all(1.0 < s < 100.0 for s in spans),
                  f"logit ranges {spans} at {size} and 32")
        path = os.path.join(TMP, f"{arch}.safetensors")
        export_case(model, arch, path, opts)
        # native size: one image; small sizes: a batch of two in one call
        for (h, w), n in (((size, size), 1), ((32, 32), 2), ((65, 47), 2)):
            x = torch.cat([seeded_input(h, w, 1000 * ci + 10 * h + w + j) for j in range(n)])
            compare_engine(f"engine {arch} {h}x{w} (n={n}, {nc} classes)", path, model, x, f"{arch}_{h}x{w}")

    for arch, dtype, dname, (h, w) in LOW_PRECISION:
        model = nets.randomize(nets.create(arch), seed=7).eval()
        path = os.path.join(TMP, f"{arch}.{dname}.safetensors")
        export_case(model, arch, path, {}, dtype=dtype)
        rounded, _ = nets.load(path)  # PyTorch with the same rounded weights, computing in float32
        compare_engine(f"engine {arch} {h}x{w} {dname} weights", path, rounded.eval(),
                       seeded_input(h, w, 99), f"{arch}_{dname}")

tap.finish()
