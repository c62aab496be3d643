"""quant.py - the LSQ+ quantizers shared by the trainer and the engine's reference tests.

Everything here follows shared/reference/lsqplus.md; read it first. In short:

  activations  u = (x - beta) / s,  x_q = clamp(round(u), n, p),  x_hat = s * x_q + beta
  weights      w_q = clamp(round(w / s_w), -2^(b-1), 2^(b-1) - 1),  w_hat = s_w * w_q

round is round-half-to-even (torch.round; nearbyintf in C) and u is computed as (x - beta) / s in
float32, in exactly that form: x * (1 / s) can land one ulp away at a code boundary, and the C engine
must reproduce the trainer's codes. Gradients are the straight-through estimator of the spec, with
the scale and offset gradients multiplied by g = 1 / sqrt(N * p): N is the number of weights of the
layer for weight quantizers and the number of features of one sample (C*H*W) for activations.

Module structure (and so state_dict names, the checkpoint convention of issue 3):
  <conv or linear>.weight_quant.scale     [Cout] per channel, [1] per tensor
  <conv or linear>.input_quant.scale      [1]
  <conv or linear>.input_quant.offset     [1]   (0 and not learned in the LSQ baseline)
  MixNet mixed convs: <mixed>.input_quant.* on the mixed module (one tensor, quantized then split),
  <mixed>.<i>.weight_quant.scale on each split.

Configurations (parse_config): 'fp32'; 'wXaY' (X, Y in 2..8) = LSQ+ (unsigned activation grids with a
learned offset), per-channel weight scales, stem conv and classifier at 8 bits; 'wXaY-lsq' = the LSQ
baseline (unsigned activations, offset fixed at 0). The network input (the normalised image) gets a
signed 8-bit quantizer with a learned offset in both, identical, so that LSQ vs LSQ+ comparisons
measure the inner layers. Suffixes, the C engine's grammar (engine/src/quant.h, README
"Configurations"): '+pt' per-tensor weight scales, '+fl<B>' first/last layers at B bits, '+dw<B>' /
'+se<B>' the depthwise / SE layers at B bits, '+<pattern>=<B>' the layers whose module name matches
the fnmatch pattern at B bits (the last matching override wins); e.g. 'w2a2-lsq+pt+dw8'.
QuantConfig.layer() decides every layer's quantizers; QuantConfig.name is the canonical name.

Public: ActQuantizer, WeightQuantizer, QConv2d, QLinear, QMixedConv2d, QuantConfig, LayerQuant,
parse_config, QuantFactory, create, finalize, configure, quantized_layers, load_float_weights, calibrate, clamp_scales_, quantizers,
pack_codes, unpack_codes, export.
"""
import fnmatch
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import nets, safetensors_io

SCALE_EPS = 1e-8  # clamp_scales_ keeps every learned scale >= this


def qrange(bits, signed):
    """(n, p): the integer code range of a b-bit grid."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


# =============================================================================================
# The quantizer function and its straight-through gradients
# =============================================================================================


def _reduce_to(grad, shape):
    """Sum grad over the broadcast dimensions so it has shape (a parameter's shape)."""
    return grad.sum_to_size(shape) if grad.shape != shape else grad


class _LsqQuant(torch.autograd.Function):
    """x_hat = s * clamp(round((x - beta) / s), n, p) + beta with the spec's STE gradients.

    s and beta broadcast against x (shape [1] or [Cout, 1, ...]); beta may be None (weights).
    """

    @staticmethod
    def forward(ctx, x, s, beta, n, p, g):
        u = (x - beta) / s if beta is not None else x / s
        q = torch.clamp(torch.round(u), n, p)
        ctx.save_for_backward(u, q)
        ctx.n, ctx.p, ctx.g = n, p, g
        ctx.s_shape = s.shape
        ctx.has_beta = beta is not None
        ctx.beta_shape = beta.shape if beta is not None else None
        x_hat = q * s
        return x_hat + beta if beta is not None else x_hat

    @staticmethod
    def backward(ctx, grad):
        u, q = ctx.saved_tensors
        below, above = u < ctx.n, u > ctx.p
        inside = ~(below | above)
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_s = grad_beta = None
        if ctx.needs_input_grad[1]:
            # round(u) - u inside, n below, p above; q already holds n / p outside the range.
            ds = torch.where(inside, q - u, q)
            grad_s = _reduce_to(grad * ds, ctx.s_shape) * ctx.g
        if ctx.has_beta and ctx.needs_input_grad[2]:
            grad_beta = _reduce_to(grad * (~inside), ctx.beta_shape) * ctx.g
        return grad_x, grad_s, grad_beta, None, None, None


def fake_quant(x, s, beta, n, p, g=1.0):
    """The quantizer as a function (beta None for symmetric weights); differentiable in x, s, beta."""
    return _LsqQuant.apply(x, s, beta, n, p, g)


def quant_codes(x, s, beta, n, p):
    """Integer codes x_q (float tensor of integers) exactly as the forward pass computes them."""
    u = (x - beta) / s if beta is not None else x / s
    return torch.clamp(torch.round(u), n, p)


# =============================================================================================
# Quantizer modules
# =============================================================================================


class ActQuantizer(nn.Module):
    """Activation quantizer: learned scale s and (LSQ+) offset beta, one pair per tensor.

    signed=False: n = 0, p = 2^b - 1 (inner layers); signed=True: n = -2^(b-1) (the network input).
    offset=False is the LSQ baseline: beta stays 0 (a buffer, so the checkpoint keeps its name).
    enabled=False passes x through unchanged (the float model; calibrate() uses it to observe).
    """

    def __init__(self, bits, signed=False, offset=True):
        super().__init__()
        self.bits, self.signed, self.learn_offset = bits, signed, offset
        self.n, self.p = qrange(bits, signed)
        self.scale = nn.Parameter(torch.ones(1))
        if offset:
            self.offset = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("offset", torch.zeros(1))
        self.enabled = True

    def extra_repr(self):
        return f"bits={self.bits}, signed={self.signed}, offset={self.learn_offset}"

    def grad_scale(self, x):
        return 1.0 / math.sqrt(x[0].numel() * self.p)  # N = features of one sample

    def forward(self, x):
        if not self.enabled:
            return x
        return fake_quant(x, self.scale, self.offset, self.n, self.p, self.grad_scale(x))

    def codes(self, x):
        return quant_codes(x, self.scale, self.offset, self.n, self.p)

    @torch.no_grad()
    def clamp_scale_(self, eps=SCALE_EPS):
        self.scale.clamp_(min=eps)

    @torch.no_grad()
    def init_from(self, x, method="mse", max_samples=1 << 16):
        """Set (s, beta) from a calibration tensor x: 'mse', 'minmax' or 'lsq' (see init_act_params)."""
        s, beta = init_act_params(x, self.n, self.p, self.learn_offset, method, max_samples)
        self.scale.fill_(s)
        self.offset.fill_(beta)


class WeightQuantizer(nn.Module):
    """Symmetric signed weight quantizer, scale per output channel (dim 0) or per tensor.

    scale is stored as [Cout] (or [1]) and broadcast over the other dimensions of the weight.
    """

    def __init__(self, bits, out_channels, per_channel=True):
        super().__init__()
        self.bits, self.per_channel = bits, per_channel
        self.n, self.p = qrange(bits, True)
        self.scale = nn.Parameter(torch.ones(out_channels if per_channel else 1))

    def extra_repr(self):
        return f"bits={self.bits}, per_channel={self.per_channel}"

    def _s(self, w):
        return self.scale.view(-1, *([1] * (w.dim() - 1)))

    def forward(self, w):
        g = 1.0 / math.sqrt(w.numel() * self.p)  # N = weights of the layer
        return fake_quant(w, self._s(w), None, self.n, self.p, g)

    def codes(self, w):
        return quant_codes(w, self._s(w), None, self.n, self.p)

    @torch.no_grad()
    def clamp_scale_(self, eps=SCALE_EPS):
        self.scale.clamp_(min=eps)

    @torch.no_grad()
    def init_from(self, w, method="3sigma"):
        """'3sigma' (LSQ+): s = max(|mu - 3 sd|, |mu + 3 sd|) / 2^(b-1), population sd, per channel
        when per_channel; 'lsq': s = 2 mean|w| / sqrt(p) (the LSQ paper)."""
        wf = w.detach().float().reshape(w.shape[0], -1) if self.per_channel else w.detach().float().reshape(1, -1)
        if method == "3sigma":
            mu, sd = wf.mean(1), wf.std(1, unbiased=False)
            s = torch.maximum((mu - 3 * sd).abs(), (mu + 3 * sd).abs()) / (1 << (self.bits - 1))
        elif method == "lsq":
            s = 2 * wf.abs().mean(1) / math.sqrt(self.p)
        else:
            raise ValueError(f"unknown weight init '{method}'")
        self.scale.copy_(s.clamp_min(SCALE_EPS))


# =============================================================================================
# Activation initialisation: min-max, LSQ, MSE
# =============================================================================================


def _mse(x, s, beta, n, p):
    return ((torch.clamp(torch.round((x - beta) / s), n, p) * s + beta - x) ** 2).mean()


def _observe(x, max_samples):
    """What calibrate() keeps of one batch's tensor: a strided subsample plus the exact min and max."""
    x = x.detach().float()
    return torch.cat([_subsample(x, max_samples), x.min().reshape(1), x.max().reshape(1)])


def _subsample(x, max_samples):
    """Deterministic: every k-th value of the flattened tensor, at most max_samples of them."""
    flat = x.detach().float().reshape(-1)
    if max_samples and flat.numel() > max_samples:
        step = math.ceil(flat.numel() / max_samples)
        flat = flat[::step]
    return flat.contiguous()


@torch.no_grad()
def init_act_params(x, n, p, learn_offset=True, method="mse", max_samples=1 << 16):
    """(s, beta) as floats for an activation quantizer with code range [n, p], from calibration x.

    minmax: s = (max - min) / (p - n), beta = min - n * s (offset-free: beta = 0 and the grid
            [n s, p s] just covers [min, max] on the side(s) it can).
    lsq:    s = 2 mean|x| / sqrt(p), beta = 0 (the LSQ paper; for the baseline configurations).
    mse:    argmin of mean (x_hat - x)^2 over a deterministic strided subsample of at most
            max_samples values (0: all). Grid search over shrunken ranges [lo, hi] =
            [min + a r, min + c r] (r = max - min; a in 0..0.5 in 11 steps, c in a+0.02..1 in 40),
            or, without offset, s = c * s_minmax for 100 values of c in (0, 1]; then 24 rounds of
            pattern search on (s, beta) with steps halving from a tenth of the best s. The
            min-max point is a candidate, so MSE never does worse than min-max on the same sample.
    """
    lo, hi = float(x.min()), float(x.max())  # the full tensor's range, then a subsample for the searches
    xs = _subsample(x, max_samples)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("calibration tensor holds non-finite values")
    if learn_offset:
        s0 = max((hi - lo) / (p - n), SCALE_EPS)
        b0 = lo - n * s0
    else:
        # largest |range| the fixed grid [n s, p s] must reach
        need = max(hi / p if p > 0 else 0.0, lo / n if n < 0 else 0.0)
        s0, b0 = max(need, SCALE_EPS), 0.0
    if method == "minmax":
        return s0, b0
    if method == "lsq":
        return max(2 * float(xs.abs().mean()) / math.sqrt(p), SCALE_EPS), 0.0
    if method != "mse":
        raise ValueError(f"unknown activation init '{method}'")

    best = (_mse(xs, s0, b0, n, p).item(), s0, b0)
    r = hi - lo
    if learn_offset and r > 0:
        for a in np.linspace(0.0, 0.5, 11):
            for c in np.linspace(a + 0.02, 1.0, 40):
                l, h = lo + a * r, lo + c * r
                s = (h - l) / (p - n)
                b = l - n * s
                e = _mse(xs, s, b, n, p).item()
                if e < best[0]:
                    best = (e, s, b)
    elif not learn_offset:
        for c in np.linspace(0.01, 1.0, 100):
            s = s0 * c
            e = _mse(xs, s, 0.0, n, p).item()
            if e < best[0]:
                best = (e, s, 0.0)

    # pattern search refinement
    e, s, b = best
    step = s / 10
    for _ in range(24):
        moves = [(step, 0.0), (-step, 0.0)]
        if learn_offset:
            moves += [(0.0, step * 4), (0.0, -step * 4)]
        improved = False
        for ds, db in moves:
            s2, b2 = s + ds, b + db
            if s2 <= SCALE_EPS:
                continue
            e2 = _mse(xs, s2, b2, n, p).item()
            if e2 < e:
                e, s, b, improved = e2, s2, b2, True
        if not improved:
            step /= 2
    return float(s), float(b)


# =============================================================================================
# Quantized layers
# =============================================================================================


class QConv2d(nets.Conv2d):
    """nets.Conv2d with an input quantizer (None inside a mixed conv) and a weight quantizer.

    Order: quantize the input, then pad (TF SAME, pad_input) or let the convolution zero-pad: the
    padding is real 0.0, the fractional code -beta/s, which the integer engine must correct at borders.
    """

    def __init__(self, in_chs, out_chs, kernel_size, stride=1, groups=1, bias=False, tf_same=False, role="",
                 w_bits=8, a_bits=8, a_signed=False, a_offset=True, per_channel=True):
        super().__init__(in_chs, out_chs, kernel_size, stride, groups, bias, tf_same, role)
        self.input_quant = ActQuantizer(a_bits, a_signed, a_offset)
        self.weight_quant = WeightQuantizer(w_bits, out_chs, per_channel)

    def forward(self, x):
        if self.input_quant is not None:
            x = self.input_quant(x)
        return self._conv_forward(self.pad_input(x), self.weight_quant(self.weight), self.bias)


class QLinear(nets.Linear):
    def __init__(self, in_features, out_features, bias=True, role="", w_bits=8, a_bits=8, a_signed=False,
                 a_offset=True, per_channel=True):
        super().__init__(in_features, out_features, bias, role)
        self.input_quant = ActQuantizer(a_bits, a_signed, a_offset)
        self.weight_quant = WeightQuantizer(w_bits, out_features, per_channel)

    def forward(self, x):
        return F.linear(self.input_quant(x), self.weight_quant(self.weight), self.bias)


class QMixedConv2d(nets.MixedConv2d):
    """MixedConv2d with one input quantizer for the whole tensor, quantized before the split.

    The splits '0', '1', ... are QConv2d with input_quant None. input_quant is registered in the
    ModuleDict too (state_dict name <mixed>.input_quant.*), so forward walks the splits by index.
    """

    def forward(self, x):
        x = self.input_quant(x)
        xs = torch.split(x, self.splits, 1)
        return torch.cat([self[str(i)](xi) for i, xi in enumerate(xs)], 1)


# =============================================================================================
# Configurations and the layer factory
# =============================================================================================


# Named layer groups of the "+<group><B>" clauses, as fnmatch patterns on timm module names (the C
# engine's lsq_qgroups, engine/src/quant.c).
GROUPS = {"dw": "blocks.*.conv_dw", "se": "blocks.*.se.*"}
MAX_OVERRIDES = 8
NAME_LEN = 63      # longest canonical name (the server's names are <= 64 characters)
PATTERN_LEN = 47

_BASE_RE = re.compile(r"w([2-8])a([2-8])(-lsq)?")  # fullmatch only ('$' would let a trailing newline in)
_BITS_RE = re.compile(r"[2-8]")
_PATTERN_RE = re.compile(r"[A-Za-z0-9._*]+")
_GRAMMAR = ("expected fp32 or wXaY[-lsq] followed by +pt, +fl<B>, +dw<B>, +se<B> or +<pattern>=<B> (X, Y, B in "
            "2..8; pattern: fnmatch on the module name, [A-Za-z0-9._*])")


@dataclass(frozen=True)
class LayerQuant:
    """The quantizers of one conv/linear layer under a configuration (QuantConfig.layer)."""

    w_bits: int
    a_bits: int
    a_signed: bool
    a_offset: bool
    per_channel: bool


@dataclass
class QuantConfig:
    """One execution configuration. name is the canonical string ('w4a4', 'w2a2-lsq+pt+dw8').

    overrides: ((fnmatch pattern on the module name, bits), ...) in order; the last match wins and
    sets the layer's weight and input bits; overrides win over first_last_bits. layer() is the one
    place that decides a layer's quantizers (the C engine's lsq_qconfig_layer).
    """

    name: str
    w_bits: int
    a_bits: int
    lsq_plus: bool = True            # False: LSQ baseline (offset fixed 0, LSQ's init)
    per_channel: bool = True         # False (+pt): one weight scale per tensor
    first_last_bits: int = 8         # stem conv weights and classifier (weights and its input); +fl<B>
    input_bits: int = 8              # the network input quantizer (signed, learned offset): always 8
    act_init: str = "mse"            # default activation init for calibrate()
    weight_init: str = "3sigma"
    overrides: tuple = ()

    def canonical(self):
        """The canonical name: base, +pt, +fl<B> (omitted at 8), then the overrides in order, a
        pattern equal to a group's written as the group."""
        out = f"w{self.w_bits}a{self.a_bits}" + ("" if self.lsq_plus else "-lsq")
        out += "" if self.per_channel else "+pt"
        out += "" if self.first_last_bits == 8 else f"+fl{self.first_last_bits}"
        names = {pat: g for g, pat in GROUPS.items()}
        for pat, bits in self.overrides:
            out += f"+{names[pat]}{bits}" if pat in names else f"+{pat}={bits}"
        return out

    def layer(self, module, role):
        """LayerQuant for the conv/linear named module (timm name; a MixNet mixed conv's own name,
        never a split's) with nets role role ('stem', 'classifier' or an inner role); module None
        applies no overrides."""
        if role in ("stem", "classifier"):
            wb = ab = self.first_last_bits
        else:
            wb, ab = self.w_bits, self.a_bits
        if module is not None:
            for pat, bits in reversed(self.overrides):
                if fnmatch.fnmatchcase(module, pat):
                    wb = ab = bits
                    break
        if role == "stem":  # the network input: signed 8-bit with a learned offset, in LSQ and LSQ+ alike
            return LayerQuant(wb, self.input_bits, True, True, self.per_channel)
        return LayerQuant(wb, ab, False, self.lsq_plus, self.per_channel)


def parse_config(name):
    """'fp32' -> None; 'wXaY[-lsq]' with '+' clauses (README "Configurations") -> QuantConfig whose
    name is the canonical form. Raises ValueError, saying what is wrong, otherwise."""
    if name == "fp32":
        return None
    if not isinstance(name, str):
        raise ValueError(f"unknown configuration {name!r} ({_GRAMMAR})")
    base, *clauses = name.split("+")
    m = _BASE_RE.fullmatch(base)
    if not m:
        raise ValueError(f"unknown configuration '{name}' ({_GRAMMAR})")
    lsq = bool(m.group(3))
    per_channel, fl, overrides = True, None, []

    def add(pattern, bits):
        if any(p == pattern for p, _ in overrides):
            raise ValueError(f"configuration '{name}': layer pattern '{pattern}' given twice")
        if len(overrides) == MAX_OVERRIDES:
            raise ValueError(f"configuration '{name}': more than {MAX_OVERRIDES} layer overrides")
        overrides.append((pattern, bits))

    for cl in clauses:
        if not cl:
            raise ValueError(f"unknown configuration '{name}': empty '+' clause; {_GRAMMAR}")
        if "=" in cl:
            pattern, bits = cl.split("=", 1)
            if not (_PATTERN_RE.fullmatch(pattern) and len(pattern) <= PATTERN_LEN):
                raise ValueError(f"unknown configuration '{name}': layer pattern '{pattern}' must be "
                                 f"1..{PATTERN_LEN} of [A-Za-z0-9._*]")
            if not _BITS_RE.fullmatch(bits):
                raise ValueError(f"unknown configuration '{name}': '+{cl}': bits must be one digit 2..8")
            add(pattern, int(bits))
        elif cl == "pt":
            if not per_channel:
                raise ValueError(f"configuration '{name}': '+pt' given twice")
            per_channel = False
        elif cl.startswith("fl") and _BITS_RE.fullmatch(cl[2:]):
            if fl is not None:
                raise ValueError(f"configuration '{name}': '+fl' given twice")
            fl = int(cl[2:])
        else:
            g = next((g for g in GROUPS if cl.startswith(g) and _BITS_RE.fullmatch(cl[len(g):])), None)
            if g is None:
                raise ValueError(f"unknown configuration '{name}': unknown clause '+{cl}'; {_GRAMMAR}")
            add(GROUPS[g], int(cl[len(g):]))
    cfg = QuantConfig(name="", w_bits=int(m.group(1)), a_bits=int(m.group(2)), lsq_plus=not lsq,
                      per_channel=per_channel, first_last_bits=fl or 8, act_init="lsq" if lsq else "mse",
                      weight_init="lsq" if lsq else "3sigma", overrides=tuple(overrides))
    cfg.name = cfg.canonical()
    if len(cfg.name) > NAME_LEN:
        raise ValueError(f"configuration '{name}': the canonical name is longer than {NAME_LEN} characters")
    return cfg


class QuantFactory(nets.LayerFactory):
    """nets.LayerFactory building QConv2d / QLinear for a QuantConfig.

    nets.MixedConv2d creates its splits through conv2d() and cannot tell the factory so; call
    finalize(model) after nets.create (create() below does) to move the splits' input quantizers onto
    the mixed module.
    """

    def __init__(self, cfg):
        self.cfg = cfg

    def conv2d(self, in_chs, out_chs, kernel_size, stride=1, groups=1, bias=False, tf_same=False, role=""):
        q = self.cfg.layer(None, role)  # by role only: configure() applies the per-name overrides
        return QConv2d(in_chs, out_chs, kernel_size, stride, groups, bias, tf_same, role, w_bits=q.w_bits,
                       a_bits=q.a_bits, a_signed=q.a_signed, a_offset=q.a_offset, per_channel=q.per_channel)

    def linear(self, in_features, out_features, bias=True, role=""):
        q = self.cfg.layer(None, role)
        return QLinear(in_features, out_features, bias, role, w_bits=q.w_bits, a_bits=q.a_bits, a_signed=q.a_signed,
                       a_offset=q.a_offset, per_channel=q.per_channel)


def finalize(model):
    """Give every MixedConv2d of model one input quantizer, taken from its first split; idempotent."""
    for m in model.modules():
        if isinstance(m, nets.MixedConv2d) and not isinstance(m, QMixedConv2d):
            first = m["0"]
            if not isinstance(first, QConv2d):
                continue
            iq = first.input_quant
            for i in range(len(m.splits)):
                m[str(i)].input_quant = None
            m.__class__ = QMixedConv2d
            m.add_module("input_quant", iq)
    return model


def quantized_layers(model):
    """(name, module, [weight-quantized convs]) for every quantized conv/linear layer of model: the
    module owning the input quantizer (a mixed conv, not its splits) and the modules holding its
    weight quantizers (its splits, or itself)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, QMixedConv2d):
            out.append((name, m, [m[str(i)] for i in range(len(m.splits))]))
        elif isinstance(m, (QConv2d, QLinear)) and m.input_quant is not None:
            out.append((name, m, [m]))
    return out


def configure(model, cfg):
    """Give every quantized layer the quantizers cfg.layer(name, role) asks for (fresh ones where the
    factory's role-only choice differs: the per-name overrides). Every override must match a layer."""
    hits = {pat: 0 for pat, _ in cfg.overrides}
    for name, m, convs in quantized_layers(model):
        for pat in hits:
            hits[pat] += fnmatch.fnmatchcase(name, pat)
        q = cfg.layer(name, convs[0].role)
        iq = m.input_quant
        if (iq.bits, iq.signed, iq.learn_offset) != (q.a_bits, q.a_signed, q.a_offset):
            m.input_quant = ActQuantizer(q.a_bits, q.a_signed, q.a_offset)
        for c in convs:
            wq = c.weight_quant
            if (wq.bits, wq.per_channel) != (q.w_bits, q.per_channel):
                c.weight_quant = WeightQuantizer(q.w_bits, c.weight.shape[0], q.per_channel)
    missing = [pat for pat, n in hits.items() if not n]
    if missing:
        raise ValueError(f"configuration '{cfg.name}': layer pattern '{missing[0]}' matches no conv or linear layer "
                         f"(timm module names, e.g. blocks.1.0.conv_dw)")
    return model


def create(arch, config, num_classes=1000):
    """nets.create for a configuration name or QuantConfig ('fp32' gives the float model)."""
    cfg = parse_config(config) if isinstance(config, str) else config
    if cfg is None:
        return nets.create(arch, num_classes)
    model = configure(finalize(nets.create(arch, num_classes, QuantFactory(cfg))), cfg)
    model.quant_config = cfg
    return model


def quantizers(model):
    """(name, module) for every ActQuantizer and WeightQuantizer of model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (ActQuantizer, WeightQuantizer))]


def clamp_scales_(model, eps=SCALE_EPS):
    """Keep every learned scale positive; the trainer calls this after each optimizer step."""
    for _, q in quantizers(model):
        q.clamp_scale_(eps)


def load_float_weights(model, state_dict):
    """Load an FP32 model's tensors into a quantized model; only quantizer tensors may be missing."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if ".input_quant." not in k and ".weight_quant." not in k]
    if missing or unexpected:
        raise ValueError(f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")


def _observe_inputs(model, acts, batches, max_samples):
    """{name: [_observe() of each batch]} of what each ActQuantizer in acts ({name: quantizer}) receives
    in an eval-mode forward pass of model over batches; the model's mode is restored."""
    seen = {name: [] for name in acts}
    hooks = [q.register_forward_pre_hook(lambda mod, inp, name=name: seen[name].append(_observe(inp[0], max_samples)))
             for name, q in acts.items()]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return seen


def _init_act(q, observed, act_init, max_samples):
    """(s, beta) of activation quantizer q by act_init over its observed batches; the network input
    quantizer (signed) uses MSE where LSQ's rule is asked for: it is the same in LSQ and LSQ+."""
    method = "mse" if q.signed and act_init == "lsq" else act_init
    q.init_from(torch.cat([t.reshape(-1) for t in observed]), method, max_samples)


@torch.no_grad()
def calibrate(model, batches, act_init=None, weight_init=None, max_samples=1 << 16):
    """LSQ+ initialisation of every quantizer of a quantized model loaded with float weights.

    Weight scales from the weights (cfg.weight_init unless given). Activation (s, beta) from one
    float forward pass in eval mode over batches (an iterable of input tensors, concatenated per
    quantizer), all quantizers disabled, so each sees the float network's activations.
    Each batch keeps a strided subsample of max_samples values plus its exact min and max, so the
    ranges are exact and the MSE search sees a bounded sample. Deterministic. act_init: 'mse', 'minmax' or 'lsq'; default cfg.act_init. The network input
    quantizer (signed, with offset) always uses MSE unless act_init is 'minmax'.
    """
    cfg = getattr(model, "quant_config", None)
    act_init = act_init or (cfg.act_init if cfg else "mse")
    weight_init = weight_init or (cfg.weight_init if cfg else "3sigma")
    acts = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "weight_quant", None), WeightQuantizer):
            m.weight_quant.init_from(m.weight, weight_init)
        if isinstance(getattr(m, "input_quant", None), ActQuantizer):
            acts[name] = m.input_quant
    for q in acts.values():
        q.enabled = False
    try:
        seen = _observe_inputs(model, acts, batches, max_samples)
    finally:
        for q in acts.values():
            q.enabled = True
    for name, q in acts.items():
        _init_act(q, seen[name], act_init, max_samples)


@torch.no_grad()
def calibrate_from(model, source, batches, act_init=None, max_samples=1 << 16):
    """Progressive initialisation of a quantized model from a trained quantized `source` of the same
    architecture (e.g. W2A2 from W4A4): float weights and BatchNorm statistics are the source's;
    each weight scale keeps the source's clipping range (s = s_src * p_src / p); each activation
    (s, beta) comes from act_init's search (default cfg.act_init) over the values that quantizer's
    counterpart sees while the source runs quantized, as it was trained. (Calibrating on the source's
    float forward instead, as calibrate() would, collapses: the trained weights and statistics rely
    on the activation clipping, and the float activations overflow.)"""
    cfg = getattr(model, "quant_config", None)
    act_init = act_init or (cfg.act_init if cfg else "mse")
    model.load_state_dict({k: v for k, v in source.state_dict().items()
                           if ".input_quant." not in k and ".weight_quant." not in k}, strict=False)
    src = dict(source.named_modules())
    seen = _observe_inputs(source, {n: m for n, m in src.items() if isinstance(m, ActQuantizer)}, batches, max_samples)
    for name, m in model.named_modules():
        if isinstance(m, WeightQuantizer):
            m.scale.copy_(src[name].scale * src[name].p / m.p)
        elif isinstance(m, ActQuantizer):
            _init_act(m, seen[name], act_init, max_samples)


# =============================================================================================
# Packing integer codes
# =============================================================================================


def pack_codes(codes, bits):
    """Pack integer codes at `bits` bits into exactly ceil(n * bits / 8) bytes (np.uint8 array).

    codes: any integer array / tensor of n values, taken in C (row-major) order, each in
    [-2^(bits-1), 2^(bits-1) - 1] (signed) or [0, 2^bits - 1] (unsigned); a value is stored as its
    low `bits` bits (two's complement for negatives). Bit order is little-endian throughout: code i
    occupies stream bits i*bits .. i*bits + bits - 1, its least significant bit first, and stream
    bit k is bit (k % 8) of byte k // 8 (bit 0 = least significant). Equivalently the bytes are the
    little-endian encoding of sum_i (code_i mod 2^bits) << (i * bits). Codes may straddle bytes
    (3 bits); the unused high bits of the last byte are 0. At 8 bits this is one byte per code.
    """
    c = np.asarray(codes.detach().cpu() if torch.is_tensor(codes) else codes).reshape(-1).astype(np.int64)
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if c.size and (c.min() < -(1 << (bits - 1)) or c.max() > (1 << bits) - 1):
        raise ValueError(f"codes outside the {bits}-bit range: [{c.min()}, {c.max()}]")
    u = (c & ((1 << bits) - 1)).astype(np.uint8)
    bitplanes = (u[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # [n, bits], LSB first
    return np.packbits(bitplanes.reshape(-1), bitorder="little")


def unpack_codes(data, bits, n, signed=True):
    """Inverse of pack_codes: n codes (np.int32), sign-extended when signed."""
    data = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    need = (n * bits + 7) // 8
    if data.size != need:
        raise ValueError(f"{data.size} bytes for {n} codes at {bits} bits (expected {need})")
    bitstream = np.unpackbits(data, count=n * bits, bitorder="little").reshape(n, bits).astype(np.int32)
    u = (bitstream << np.arange(bits, dtype=np.int32)).sum(1)
    if signed:
        u = np.where(u >= (1 << (bits - 1)), u - (1 << bits), u)
    return u.astype(np.int32)


# =============================================================================================
# Export
# =============================================================================================


def config_name(config):
    """The canonical name of a configuration name or QuantConfig (what checkpoints record)."""
    if not isinstance(config, str):
        return config.name
    cfg = parse_config(config)
    return cfg.name if cfg else "fp32"


def export(model, arch, path, config, labels=None, preprocess=None):
    """nets.export plus the configuration in __metadata__['config'] (latent-float form: float weights
    and the quantizer tensors; the packed deployable form is still to be written).

    FIXME: nets.export takes no extra metadata, so the file is rewritten with 'config' added.
    """
    nets.export(model, arch, path, labels=labels, preprocess=preprocess)
    tensors, meta = safetensors_io.load(path)
    meta["config"] = config_name(config)
    safetensors_io.save(path, tensors, meta)


@torch.no_grad()
def export_packed(model, arch, path, config, labels=None, preprocess=None):
    """The deployable form: integer weight codes packed at their bit-width, BatchNorm folded.

    For every quantized conv/linear module M (its weight quantizer at b bits):
        M.weight_codes   U8 [ceil(n * b / 8)]   pack_codes(M.weight_quant.codes(M.weight), b), n codes
                                                in the weight's row-major [Cout, Cin/groups, kh, kw] order
        M.weight_quant.scale, M.input_quant.scale / .offset, M.bias   as in the latent-float form
    and for every BatchNorm B, instead of its four tensors (eps applied, float32):
        B.folded_scale = weight / sqrt(running_var + eps)     [C]
        B.folded_bias  = bias - running_mean * folded_scale   [C]
    __metadata__: as export() plus "form": "packed". The engine reads both forms.
    """
    cfg_name = config_name(config)
    sd = model.state_dict()
    tensors = {}
    for name, m in model.named_modules():
        if isinstance(m, (QConv2d, QLinear)):
            codes = m.weight_quant.codes(m.weight)
            tensors[f"{name}.weight_codes"] = torch.from_numpy(pack_codes(codes, m.weight_quant.bits))
        elif isinstance(m, nn.BatchNorm2d):
            scale = m.weight / torch.sqrt(m.running_var + m.eps)
            tensors[f"{name}.folded_scale"] = scale.float()
            tensors[f"{name}.folded_bias"] = (m.bias - m.running_mean * scale).float()
    bn = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    qw = {n for n, m in model.named_modules() if isinstance(m, (QConv2d, QLinear))}
    for key, t in sd.items():
        module, field = key.rsplit(".", 1)
        if module in bn or (module in qw and field == "weight"):
            continue
        tensors[key] = t.float() if t.is_floating_point() else t
    num_classes = sd["classifier.weight"].shape[0]
    meta = {"format_version": "1", "arch": arch, "num_classes": str(num_classes), "config": cfg_name, "form": "packed"}
    if labels is not None:
        meta["labels"] = json.dumps(list(labels))
    if preprocess is not None:
        meta["preprocess"] = json.dumps(preprocess)
    safetensors_io.save(path, tensors, meta)


def config_of(path):
    """The 'config' entry of a checkpoint's metadata ('fp32' when absent)."""
    _, meta = safetensors_io.load(path)
    return meta.get("config", "fp32")


__all__ = ["ActQuantizer", "WeightQuantizer", "QConv2d", "QLinear", "QMixedConv2d", "QuantConfig", "QuantFactory",
           "LayerQuant", "GROUPS", "parse_config", "config_name", "create", "finalize", "configure", "quantized_layers", "load_float_weights", "calibrate", "clamp_scales_", "quantizers",
           "pack_codes", "unpack_codes", "export", "export_packed", "fake_quant", "quant_codes", "init_act_params", "qrange"]
