"""nets.py - EfficientNet-B0..B3 and MixNet-S/M/L (and their tf_ variants) in plain PyTorch.

Written from scratch to match timm exactly: the same block-definition strings decoded by one decoder,
the same channel rounding and depth scaling, and the same module names, so that state_dict() keys and
shapes equal timm's (shared/reference/architectures/<arch>.state_dict.txt). This model is the reference
the C engine is checked against, and the network the LSQ+ trainer fine-tunes.

Quantization hook: every convolution and linear layer is created by a LayerFactory (roles 'stem', 'pw',
'dw', 'pwl', 'se_reduce', 'se_expand', 'head', 'classifier'). A trainer passes its own factory (or
swaps modules later) to get quantized layers. Conv2d keeps TF 'SAME' padding in pad_input(), apart from
the convolution itself, so a quantized subclass can quantize its input first and pad afterwards, which
is what the integer engine does.

Public: ARCHS, create(arch, num_classes), randomize(model, seed), export(model, arch, path, ...),
load(path), default_preprocess(arch).
"""
import json
import math
import re
from copy import deepcopy

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import safetensors_io

# =============================================================================================
# Architecture definitions (timm's block strings)
# =============================================================================================

_EFFICIENTNET_DEF = [
    ["ds_r1_k3_s1_e1_c16_se0.25"],
    ["ir_r2_k3_s2_e6_c24_se0.25"],
    ["ir_r2_k5_s2_e6_c40_se0.25"],
    ["ir_r3_k3_s2_e6_c80_se0.25"],
    ["ir_r3_k5_s1_e6_c112_se0.25"],
    ["ir_r4_k5_s2_e6_c192_se0.25"],
    ["ir_r1_k3_s1_e6_c320_se0.25"],
]

_MIXNET_S_DEF = [
    ["ds_r1_k3_s1_e1_c16"],
    ["ir_r1_k3_a1.1_p1.1_s2_e6_c24", "ir_r1_k3_a1.1_p1.1_s1_e3_c24"],
    ["ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_p1.1_s2_e6_c80_se0.25_nsw", "ir_r2_k3.5_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s1_e6_c120_se0.5_nsw", "ir_r2_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9.11_s2_e6_c200_se0.5_nsw", "ir_r2_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
]

_MIXNET_M_DEF = [
    ["ds_r1_k3_s1_e1_c24"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c32", "ir_r1_k3_a1.1_p1.1_s1_e3_c32"],
    ["ir_r1_k3.5.7.9_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_s2_e6_c80_se0.25_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3_s1_e6_c120_se0.5_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9_s2_e6_c200_se0.5_nsw", "ir_r3_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
]


def _eff(ch, depth, size, crop):
    return dict(arch_def=_EFFICIENTNET_DEF, ch_mult=ch, depth_mult=depth, depth_trunc="ceil", stem=32,
                features=1280, round_features=True, act="swish", size=size, crop_pct=crop)


def _mix(arch_def, ch, stem):
    # timm decodes mixnet_m/l with depth_trunc='round'; at depth 1.0 it makes no difference.
    return dict(arch_def=arch_def, ch_mult=ch, depth_mult=1.0, depth_trunc="round", stem=stem,
                features=1536, round_features=False, act="relu", size=224, crop_pct=0.875)


# size / crop_pct are timm's default evaluation settings for each model.
ARCHS = {
    "efficientnet_b0": _eff(1.0, 1.0, 224, 0.875),
    "efficientnet_b1": _eff(1.0, 1.1, 240, 0.875),
    "efficientnet_b2": _eff(1.1, 1.2, 256, 0.875),
    "efficientnet_b3": _eff(1.2, 1.4, 288, 0.875),
    "mixnet_s": _mix(_MIXNET_S_DEF, 1.0, 16),
    "mixnet_m": _mix(_MIXNET_M_DEF, 1.0, 24),
    "mixnet_l": _mix(_MIXNET_M_DEF, 1.3, 24),
}
for _name, _size, _crop in [("b0", 224, 0.875), ("b1", 240, 0.882), ("b2", 260, 0.890), ("b3", 300, 0.904)]:
    ARCHS["tf_efficientnet_" + _name] = dict(ARCHS["efficientnet_" + _name], size=_size, crop_pct=_crop)
for _name in ("s", "m", "l"):
    ARCHS["tf_mixnet_" + _name] = dict(ARCHS["mixnet_" + _name])
for _name, _cfg in ARCHS.items():
    _cfg["tf"] = _name.startswith("tf_")  # TF ports: 'SAME' padding, BN eps 1e-3
    _cfg["bn_eps"] = 1e-3 if _cfg["tf"] else 1e-5

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_preprocess(arch):
    """timm's evaluation preprocessing for arch, in the checkpoint convention's 'preprocess' form."""
    cfg = ARCHS[arch]
    return {"input_size": cfg["size"], "resize_size": 0, "crop_pct": cfg["crop_pct"], "interpolation": "bicubic",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "grayscale": False}


# =============================================================================================
# Block-string decoder and scaling rules (timm's _efficientnet_builder.py)
# =============================================================================================

_ACTS = {"re": "relu", "sw": "swish"}


def _parse_ksize(s):
    return int(s) if s.isdigit() else [int(k) for k in s.split(".")]


def decode_block(block_str):
    """'ir_r2_k3_s2_e6_c24_se0.25' -> (block args dict, repeat count)."""
    ops = block_str.split("_")
    block_type, opts, act, noskip = ops[0], {}, None, False
    for op in ops[1:]:
        if op == "noskip":
            noskip = True
        elif op.startswith("n"):  # activation override: nre = relu, nsw = swish
            act = _ACTS[op[1:]]
        else:
            key, value = re.split(r"(\d.*)", op)[:2]
            opts[key] = value
    if block_type not in ("ds", "ir"):
        raise ValueError(f"block type '{block_type}' in '{block_str}' is not supported")
    args = dict(
        type=block_type,
        dw_kernel=_parse_ksize(opts["k"]),
        exp_kernel=_parse_ksize(opts["a"]) if "a" in opts else 1,
        pw_kernel=_parse_ksize(opts["p"]) if "p" in opts else 1,
        stride=int(opts["s"]),
        exp_ratio=float(opts["e"]) if block_type == "ir" else None,
        out_chs=int(opts["c"]),
        se_ratio=float(opts.get("se", 0.0)),
        act=act,
        noskip=noskip,
    )
    return args, int(opts["r"])


def _scale_stage_depth(stack_args, repeats, depth_mult, depth_trunc):
    # Scale the stage's total repeats, then share them out from the last block string backwards.
    num_repeat = sum(repeats)
    if depth_trunc == "round":
        num_repeat_scaled = max(1, round(num_repeat * depth_mult))
    else:
        num_repeat_scaled = int(math.ceil(num_repeat * depth_mult))
    scaled = []
    for r in repeats[::-1]:
        rs = max(1, round(r / num_repeat * num_repeat_scaled))
        scaled.append(rs)
        num_repeat -= r
        num_repeat_scaled -= rs
    out = []
    for ba, rep in zip(stack_args, scaled[::-1]):
        out.extend(deepcopy(ba) for _ in range(rep))
    return out


def decode_arch(arch_def, depth_mult=1.0, depth_trunc="ceil"):
    stages = []
    for block_strs in arch_def:
        decoded = [decode_block(s) for s in block_strs]
        stages.append(_scale_stage_depth([d[0] for d in decoded], [d[1] for d in decoded], depth_mult, depth_trunc))
    return stages


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:  # never round down by more than 10%
        new_v += divisor
    return new_v


def round_channels(channels, multiplier=1.0, divisor=8):
    return make_divisible(channels * multiplier, divisor) if multiplier else channels


def split_channels(num_chan, num_groups):
    """timm's _split_channels: equal splits, the remainder goes to the first group."""
    split = [num_chan // num_groups for _ in range(num_groups)]
    split[0] += num_chan - sum(split)
    return split


# =============================================================================================
# Layers
# =============================================================================================


def same_padding(size, k, s, d=1):
    """Total TF 'SAME' padding for one spatial dimension of length size."""
    return max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)


def _is_static_pad(k, s, d=1):
    return s == 1 and (d * (k - 1)) % 2 == 0


class Conv2d(nn.Conv2d):
    """nn.Conv2d that knows its role in the network and, for TF ports, pads 'SAME' at run time.

    tf_same=True with a stride or even kernel that makes SAME padding depend on the input size
    pads (left/top = total // 2, right/bottom = the rest) in pad_input(); otherwise the padding is
    the static symmetric one timm uses. Subclasses (quantized convs) override forward() and should
    call pad_input() after quantizing the input.
    """

    def __init__(self, in_chs, out_chs, kernel_size, stride=1, groups=1, bias=False, tf_same=False, role=""):
        k, s = kernel_size, stride
        self.dynamic_same = tf_same and not _is_static_pad(k, s)
        pad = 0 if self.dynamic_same else ((s - 1) + (k - 1)) // 2
        super().__init__(in_chs, out_chs, k, stride=s, padding=pad, groups=groups, bias=bias)
        self.role = role

    def pad_input(self, x):
        if not self.dynamic_same:
            return x
        ph = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        pw = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    def forward(self, x):
        return self._conv_forward(self.pad_input(x), self.weight, self.bias)


class Linear(nn.Linear):
    def __init__(self, in_features, out_features, bias=True, role=""):
        super().__init__(in_features, out_features, bias=bias)
        self.role = role


class LayerFactory:
    """Creates every conv and linear layer of a network; subclass it to build quantized networks.

    role is one of 'stem', 'pw' (expansion / DS pointwise), 'dw', 'pwl' (projection), 'se_reduce',
    'se_expand', 'head', 'classifier'. Mixed convolutions call conv2d once per kernel group.
    """

    def conv2d(self, in_chs, out_chs, kernel_size, stride=1, groups=1, bias=False, tf_same=False, role=""):
        return Conv2d(in_chs, out_chs, kernel_size, stride, groups, bias, tf_same, role)

    def linear(self, in_features, out_features, bias=True, role=""):
        return Linear(in_features, out_features, bias, role)


class MixedConv2d(nn.ModuleDict):
    """MixNet's mixed convolution: channel groups '0', '1', ... each with its own kernel size."""

    def __init__(self, factory, in_chs, out_chs, kernels, stride=1, depthwise=False, tf_same=False, role=""):
        super().__init__()
        in_splits = split_channels(in_chs, len(kernels))
        out_splits = split_channels(out_chs, len(kernels))
        for i, (k, ci, co) in enumerate(zip(kernels, in_splits, out_splits)):
            self.add_module(str(i), factory.conv2d(ci, co, k, stride, groups=ci if depthwise else 1,
                                                   tf_same=tf_same, role=role))
        self.splits = in_splits

    def forward(self, x):
        xs = torch.split(x, self.splits, 1)
        return torch.cat([conv(xs[i]) for i, conv in enumerate(self.values())], 1)


def _conv(factory, in_chs, out_chs, kernel, stride=1, depthwise=False, tf_same=False, role=""):
    if isinstance(kernel, list):
        return MixedConv2d(factory, in_chs, out_chs, kernel, stride, depthwise, tf_same, role)
    return factory.conv2d(in_chs, out_chs, kernel, stride, groups=in_chs if depthwise else 1, tf_same=tf_same, role=role)


def _act(name):
    return {"relu": nn.ReLU, "swish": nn.SiLU}[name](inplace=True)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an optional activation (timm's BatchNormAct2d: same state_dict names)."""

    def __init__(self, num_features, eps, act=None):
        super().__init__(num_features, eps=eps)
        self.act = _act(act) if act else nn.Identity()

    def forward(self, x):
        return self.act(super().forward(x))


class SqueezeExcite(nn.Module):
    def __init__(self, factory, chs, rd_chs, act):
        super().__init__()
        self.conv_reduce = factory.conv2d(chs, rd_chs, 1, bias=True, role="se_reduce")
        self.act1 = _act(act)
        self.conv_expand = factory.conv2d(rd_chs, chs, 1, bias=True, role="se_expand")

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * torch.sigmoid(s)


class DepthwiseSeparableConv(nn.Module):
    """ds block: conv_dw, bn1 + act, [se], conv_pw, bn2 (no act), skip when shapes allow."""

    def __init__(self, f, in_chs, out_chs, dw_kernel, pw_kernel, stride, se_rd, act, eps, tf_same, noskip):
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs and not noskip
        self.conv_dw = _conv(f, in_chs, in_chs, dw_kernel, stride, depthwise=True, tf_same=tf_same, role="dw")
        self.bn1 = BatchNormAct2d(in_chs, eps, act)
        self.se = SqueezeExcite(f, in_chs, se_rd, act) if se_rd else nn.Identity()
        self.conv_pw = _conv(f, in_chs, out_chs, pw_kernel, tf_same=tf_same, role="pw")
        self.bn2 = BatchNormAct2d(out_chs, eps, None)

    def forward(self, x):
        y = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        return y + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """ir block: conv_pw, bn1 + act, conv_dw, bn2 + act, [se], conv_pwl, bn3 (no act), skip."""

    def __init__(self, f, in_chs, mid_chs, out_chs, dw_kernel, exp_kernel, pw_kernel, stride, se_rd, act, eps,
                 tf_same, noskip):
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs and not noskip
        self.conv_pw = _conv(f, in_chs, mid_chs, exp_kernel, tf_same=tf_same, role="pw")
        self.bn1 = BatchNormAct2d(mid_chs, eps, act)
        self.conv_dw = _conv(f, mid_chs, mid_chs, dw_kernel, stride, depthwise=True, tf_same=tf_same, role="dw")
        self.bn2 = BatchNormAct2d(mid_chs, eps, act)
        self.se = SqueezeExcite(f, mid_chs, se_rd, act) if se_rd else nn.Identity()
        self.conv_pwl = _conv(f, mid_chs, out_chs, pw_kernel, tf_same=tf_same, role="pwl")
        self.bn3 = BatchNormAct2d(out_chs, eps, None)

    def forward(self, x):
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return y + x if self.has_skip else y


# =============================================================================================
# Network
# =============================================================================================


class EfficientNet(nn.Module):
    """timm's EfficientNet class (also used for MixNet): stem, blocks.<stage>.<block>, head, classifier."""

    def __init__(self, arch, num_classes=1000, factory=None):
        super().__init__()
        cfg = ARCHS[arch]
        f = factory or LayerFactory()
        tf, eps, act = cfg["tf"], cfg["bn_eps"], cfg["act"]
        rc = lambda c: round_channels(c, cfg["ch_mult"])  # noqa: E731
        self.arch, self.num_classes = arch, num_classes

        stem = rc(cfg["stem"])
        self.conv_stem = f.conv2d(3, stem, 3, stride=2, tf_same=tf, role="stem")
        self.bn1 = BatchNormAct2d(stem, eps, act)

        in_chs, stages = stem, []
        for stage_args in decode_arch(cfg["arch_def"], cfg["depth_mult"], cfg["depth_trunc"]):
            blocks = []
            for i, ba in enumerate(stage_args):
                out_chs = rc(ba["out_chs"])
                stride = ba["stride"] if i == 0 else 1
                block_act = ba["act"] or act
                # SE width comes from the block input: timm divides se_ratio by the expansion ratio
                # and applies it to the expanded channels.
                se_ratio = ba["se_ratio"] / (ba["exp_ratio"] or 1.0)
                if ba["type"] == "ds":
                    se_rd = round(in_chs * se_ratio) if se_ratio > 0 else 0
                    blocks.append(DepthwiseSeparableConv(f, in_chs, out_chs, ba["dw_kernel"], ba["pw_kernel"], stride,
                                                         se_rd, block_act, eps, tf, ba["noskip"]))
                else:
                    mid_chs = make_divisible(in_chs * ba["exp_ratio"])
                    se_rd = round(mid_chs * se_ratio) if se_ratio > 0 else 0
                    blocks.append(InvertedResidual(f, in_chs, mid_chs, out_chs, ba["dw_kernel"], ba["exp_kernel"],
                                                   ba["pw_kernel"], stride, se_rd, block_act, eps, tf, ba["noskip"]))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)

        self.num_features = rc(cfg["features"]) if cfg["round_features"] else cfg["features"]
        self.conv_head = f.conv2d(in_chs, self.num_features, 1, tf_same=tf, role="head")
        self.bn2 = BatchNormAct2d(self.num_features, eps, act)
        self.classifier = f.linear(self.num_features, num_classes, role="classifier")

    def forward_features(self, x):
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward(self, x):
        return self.classifier(self.forward_features(x).mean((2, 3)))


def create(arch, num_classes=1000, factory=None):
    """Build arch (a key of ARCHS) with num_classes outputs; factory creates the conv/linear layers."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch '{arch}' (known: {', '.join(ARCHS)})")
    return EfficientNet(arch, num_classes, factory)


# =============================================================================================
# Random weights with realistic BatchNorm statistics
# =============================================================================================


@torch.no_grad()
def randomize(model, seed=0, calib_size=288, calib_batch=2):
    """Seeded random weights, BN affine and BN running statistics, activations kept near unit scale.

    Conv/linear weights are He-scaled normals. Each BN's running statistics are set from the
    statistics of its own input on a seeded calibration batch (then perturbed: mean +- 0.1 std,
    var x exp(N(0, 0.2))), in one eval-mode pass, so every BN normalises to roughly N(bias, weight^2)
    however deep the net is, while mean/var/affine stay far from identity and BN folding is really
    exercised. Works for any module tree of nn.Conv2d / nn.Linear / nn.BatchNorm2d (also
    torchvision's EfficientNet). Returns model.

    Why the calibration batch is 2 x 288 x 288: random deep nets amplify differences between inputs,
    and the deep layers' small maps are mostly border; statistics taken from fewer or smaller maps do
    not carry over and logits at 224 reached 1e3..1e5. With this batch, logits span about 3..15 at any
    input size from 32 to 300 (checked by tests/torch/test_nets.py).
    """
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    bns = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.copy_(randn(*m.weight.shape) * math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                m.bias.copy_(randn(*m.bias.shape) * 0.2)
        elif isinstance(m, nn.Linear):
            m.weight.copy_(randn(*m.weight.shape) * math.sqrt(3.0 / m.in_features))
            if m.bias is not None:
                m.bias.copy_(randn(*m.bias.shape) * 0.2)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(0.5 + rand(m.num_features))  # gamma in [0.5, 1.5)
            m.bias.copy_(randn(m.num_features) * 0.3)
            bns.append(m)

    def calibrate(m, inputs):
        x = inputs[0]
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        var = torch.maximum(var, 0.1 * var.mean()).clamp_min(1e-6)  # no near-dead channel gets a huge gain
        m.running_mean.copy_(mean + 0.1 * var.sqrt() * randn(m.num_features))
        m.running_var.copy_(var * torch.exp(0.2 * randn(m.num_features)))
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(int(rand(1).item() * 1e5))

    was_training = model.training
    model.eval()
    hooks = [m.register_forward_pre_hook(calibrate) for m in bns]
    try:
        model(randn(calib_batch, 3, calib_size, calib_size))
    finally:
        for h in hooks:
            h.remove()
    model.train(was_training)
    return model


# =============================================================================================
# Checkpoints (the convention the C loader reads)
# =============================================================================================


def export(model, arch, path, labels=None, preprocess=None, dtype=torch.float32, num_batches_tracked=True):
    """Write model's state_dict to path as safetensors with our __metadata__ convention.

    dtype: storage type of floating tensors (float32, float16 or bfloat16). labels: list of class
    names (len == num_classes). preprocess: dict as in default_preprocess(); None leaves it out.
    """
    sd = model.state_dict()
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else sd["classifier.1.weight"].shape[0]
    meta = {"format_version": "1", "arch": arch, "num_classes": str(num_classes)}
    if labels is not None:
        if len(labels) != num_classes:
            raise ValueError(f"{len(labels)} labels for {num_classes} classes")
        meta["labels"] = json.dumps(list(labels))
    if preprocess is not None:
        meta["preprocess"] = json.dumps(preprocess)
    tensors = {}
    for name, t in sd.items():
        if name.endswith("num_batches_tracked"):
            if num_batches_tracked:
                tensors[name] = t
        elif t.is_floating_point():
            tensors[name] = t.to(dtype)
        else:
            tensors[name] = t
    safetensors_io.save(path, tensors, meta)


def load(path, factory=None):
    """Build the model a checkpoint written by export() describes; returns (model, metadata)."""
    tensors, meta = safetensors_io.load(path)
    model = create(meta["arch"], int(meta["num_classes"]), factory)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    return model, meta
