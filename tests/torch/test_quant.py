"""test_quant.py - the LSQ+ quantizer module (models/lsqnet/quant.py) and the trainer's smoke run.

1. Quantizer math against shared/reference/lsqplus.md: round half to even at exact ties, codes in
   [n, p], x_hat on the grid, autograd gradients of x, s, beta (and per-channel s_w) equal to the
   spec's closed forms, MSE init beating min-max on a Swish-like sample, LSQ (no offset) zeroing
   negatives where LSQ+ keeps them, determinism of the initialisation.
2. pack_codes / unpack_codes round trips at 2, 3, 4, 8 bits (lengths not divisible by 8), plus
   hand-computed bytes that pin the little-endian bit order.
3. Quantized mixnet_s and efficientnet_b0 (w4a4, 32x32, batch 2): forward, backward, and state_dict
   names exactly the checkpoint convention of issue 3; export / reload round trip.
4. models/train.py --smoke as subprocesses: fp32 stopped by --time-budget then resumed, qat from its
   checkpoint, loadable checkpoints and exports.
"""
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, TMP, Tap  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lsqnet import nets, quant, safetensors_io  # noqa: E402

torch.set_num_threads(1)  # small tensors; leave the other core alone
tap = Tap()

# =============================================================================================
# 1. Quantizer math
# =============================================================================================

# Exact ties: s = 0.5, beta = 0.25 are exact in binary, so u = (x - beta) / s is exactly k + 0.5.
q = quant.ActQuantizer(4, signed=False, offset=True)
with torch.no_grad():
    q.scale.fill_(0.5)
    q.offset.fill_(0.25)
u_ties = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 13.5, 14.5])
x = u_ties * 0.5 + 0.25
codes = q.codes(x)
expect = torch.tensor([0.0, 2.0, 2.0, 4.0, 4.0, 14.0, 14.0])
tap.check("round_half_to_even_at_ties", torch.equal(codes, expect), f"codes {codes.tolist()} != {expect.tolist()}")
qs = quant.ActQuantizer(4, signed=True, offset=False)
with torch.no_grad():
    qs.scale.fill_(0.5)
codes = qs.codes(torch.tensor([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25]))  # u = -2.5 .. 2.5
expect = torch.tensor([-2.0, -2.0, -0.0, 0.0, 2.0, 2.0])
tap.check("round_half_to_even_signed_ties", torch.equal(codes, expect), f"codes {codes.tolist()}")

g = torch.Generator().manual_seed(1)
bad = []
for bits in range(2, 9):
    for signed in (False, True):
        n, p = quant.qrange(bits, signed)
        a = quant.ActQuantizer(bits, signed=signed, offset=True)
        with torch.no_grad():
            a.scale.fill_(0.037)
            a.offset.fill_(-0.11)
        xr = torch.randn(4096, generator=g) * 3
        c = a.codes(xr)
        xh = a(xr).detach()
        k = (xh - a.offset) / a.scale
        if c.min() < n or c.max() > p or not torch.equal(c, torch.round(c)):
            bad.append(f"b{bits} signed={signed}: codes span [{c.min()}, {c.max()}] not in [{n}, {p}]")
        elif (k - torch.round(k)).abs().max() > 1e-3 or not torch.allclose(xh, c * a.scale + a.offset):
            bad.append(f"b{bits} signed={signed}: x_hat off the grid by {(k - torch.round(k)).abs().max():.3g} codes")
        elif (c.min(), c.max()) != (n, p):
            bad.append(f"b{bits} signed={signed}: a wide input does not reach both ends [{n}, {p}]")
tap.check("codes_in_range_and_x_hat_on_grid", not bad, "; ".join(bad[:3]))

# Gradients: autograd against the closed forms, computed in float64 from the same u.
def closed_form(xv, s, beta, n, p, up, gscale):
    u = (xv.double() - beta) / s
    inside = (u >= n) & (u <= p)
    dx = up.double() * inside
    ds_el = torch.where(inside, torch.round(u) - u, torch.where(u < n, torch.full_like(u, n), torch.full_like(u, p)))
    ds = (up.double() * ds_el).sum() * gscale
    db = (up.double() * (~inside)).sum() * gscale
    return dx, ds, db


errs = []
for bits, signed in [(2, False), (4, False), (3, True), (8, True)]:
    n, p = quant.qrange(bits, signed)
    a = quant.ActQuantizer(bits, signed=signed, offset=True)
    with torch.no_grad():
        a.scale.fill_(0.3)
        a.offset.fill_(-0.2)
    # [2, 3, 4] hand-made tensor: values below, inside (several codes) and above the range
    xv = (torch.linspace(n - 3, p + 3, 24) * 0.3 - 0.2 + 0.013).reshape(2, 3, 4).requires_grad_(True)
    up = torch.randn(2, 3, 4, generator=g)
    a(xv).backward(up)
    gs = 1.0 / math.sqrt(12 * p)  # N = features of one sample = 3 * 4
    dx, ds, db = closed_form(xv.detach(), 0.3, -0.2, n, p, up, gs)
    e = max((xv.grad.double() - dx).abs().max().item(), abs(a.scale.grad.item() - ds.item()),
            abs(a.offset.grad.item() - db.item()))
    if e > 1e-5:
        errs.append(f"b{bits} signed={signed}: max error {e:.3g} (ds {a.scale.grad.item():.6g} vs {ds.item():.6g}, "
                    f"dbeta {a.offset.grad.item():.6g} vs {db.item():.6g})")
    # the hand-made tensor covers all three regions
    u = (xv.detach() - (-0.2)) / 0.3
    if not ((u < n).any() and (u > p).any() and ((u >= n) & (u <= p)).sum() > 4):
        errs.append(f"b{bits}: test tensor does not cover below/inside/above")
tap.check("act_gradients_match_closed_form", not errs, "; ".join(errs))

# Weight quantizer, per channel: s_w gradient per output channel, g = 1/sqrt(numel * p).
wq = quant.WeightQuantizer(3, out_channels=4, per_channel=True)
w = (torch.randn(4, 2, 3, 3, generator=g) * 0.5).requires_grad_(True)
with torch.no_grad():
    wq.scale.copy_(torch.tensor([0.05, 0.1, 0.2, 0.4]))
up = torch.randn(4, 2, 3, 3, generator=g)
wq(w).backward(up)
n, p = quant.qrange(3, True)
gs = 1.0 / math.sqrt(w.numel() * p)
e, regions = 0.0, set()
for o in range(4):
    s_o = wq.scale[o].item()
    dx, ds, _ = closed_form(w.detach()[o], s_o, 0.0, n, p, up[o], gs)
    e = max(e, (w.grad[o].double() - dx).abs().max().item(), abs(wq.scale.grad[o].item() - ds.item()))
    uo = w.detach()[o] / s_o
    regions |= {"below"} if (uo < n).any() else set()
    regions |= {"above"} if (uo > p).any() else set()
tap.check("weight_gradients_match_closed_form", e < 1e-5 and regions == {"below", "above"},
          f"max error {e:.3g}, regions {regions}")

# forward of the weight quantizer is clamp(round(w / s_w)) * s_w
ref = torch.clamp(torch.round(w.detach() / wq.scale.view(-1, 1, 1, 1)), n, p) * wq.scale.view(-1, 1, 1, 1)
tap.check("weight_forward", torch.equal(wq(w).detach(), ref.detach()), "w_hat differs from clamp(round(w/s))*s")

# weight init: mean +- 3 sigma per channel
wq8 = quant.WeightQuantizer(4, out_channels=4)
wq8.init_from(w.detach())
wf = w.detach().reshape(4, -1)
mu, sd = wf.mean(1), wf.std(1, unbiased=False)
ref = torch.maximum((mu - 3 * sd).abs(), (mu + 3 * sd).abs()) / 8
tap.check("weight_init_3sigma", torch.allclose(wq8.scale.detach(), ref), f"{wq8.scale.tolist()} vs {ref.tolist()}")

# Swish-like calibration data: MSE init beats min-max (at the bits that matter)
z = torch.randn(20000, generator=g) * 1.5
z[:20] *= 4  # a few outliers stretch the range, as real activations do
swish = z * torch.sigmoid(z)
msgs = []
for bits in (2, 3, 4, 8):
    n, p = quant.qrange(bits, False)
    s_mm, b_mm = quant.init_act_params(swish, n, p, True, "minmax")
    s_mse, b_mse = quant.init_act_params(swish, n, p, True, "mse")
    e_mm = quant._mse(swish, s_mm, b_mm, n, p).item()
    e_mse = quant._mse(swish, s_mse, b_mse, n, p).item()
    if not e_mse < e_mm:
        msgs.append(f"b{bits}: mse {e_mse:.4g} !< minmax {e_mm:.4g}")
    if bits == 4:
        tap.note(f"w/ 4 bits: min-max MSE {e_mm:.4g}, MSE-init MSE {e_mse:.4g} (s {s_mse:.4g}, beta {b_mse:.4g})")
    if quant.init_act_params(swish, n, p, True, "mse") != (s_mse, b_mse):
        msgs.append(f"b{bits}: MSE init not deterministic")
tap.check("mse_init_beats_minmax", not msgs, "; ".join(msgs))
s_mm, b_mm = quant.init_act_params(swish, 0, 15, True, "minmax")
tap.check("minmax_init_formula", abs(s_mm - (swish.max() - swish.min()).item() / 15) < 1e-6
          and abs(b_mm - swish.min().item()) < 1e-6, f"s {s_mm}, beta {b_mm}")

# LSQ (no offset, unsigned) maps negatives to 0; LSQ+ keeps them.
neg = swish[swish < 0][:200]
lsq = quant.ActQuantizer(4, signed=False, offset=False)
lsq.init_from(swish, "lsq")
plus = quant.ActQuantizer(4, signed=False, offset=True)
plus.init_from(swish, "mse")
lsq_out, plus_out = lsq(neg).detach(), plus(neg).detach()
tap.check("lsq_zeroes_negatives_lsqplus_keeps_them",
          torch.all(lsq_out == 0) and (plus_out < 0).float().mean() > 0.5 and "offset" not in dict(lsq.named_parameters()),
          f"LSQ max {lsq_out.max():.3g}, LSQ+ negative fraction {(plus_out < 0).float().mean():.2f}")

# clamp_scales_ keeps scales positive
a = quant.ActQuantizer(4)
with torch.no_grad():
    a.scale.fill_(-1.0)
a.clamp_scale_()
tap.check("clamp_scale_positive", a.scale.item() > 0, f"scale {a.scale.item()}")

# =============================================================================================
# 2. Packing
# =============================================================================================

msgs = []
for bits in (2, 3, 4, 8):
    for signed in (True, False):
        lo, hi = quant.qrange(bits, signed)
        for length in (1, 5, 8, 13, 1001):
            c = torch.randint(lo, hi + 1, (length,), generator=g)
            c[0], c[-1] = lo, hi  # both ends
            data = quant.pack_codes(c, bits)
            if data.dtype != np.uint8 or data.size != (length * bits + 7) // 8:
                msgs.append(f"b{bits} n{length}: {data.size} bytes, expected {(length * bits + 7) // 8}")
                continue
            back = quant.unpack_codes(data, bits, length, signed=signed)
            if not np.array_equal(back, c.numpy()):
                msgs.append(f"b{bits} signed={signed} n{length}: round trip differs")
tap.check("pack_round_trip_2_3_4_8_bits", not msgs, "; ".join(msgs[:3]))
pinned = [
    (quant.pack_codes([1, 2, 3], 3).tolist(), [209, 0]),           # 1 | 2 << 3 | 3 << 6 = 209, bit 8 = 0
    (quant.pack_codes([-1, 2], 4).tolist(), [0x2F]),               # low nibble first, two's complement
    (quant.pack_codes([1, 0, 3, 2, 1], 2).tolist(), [0b10110001, 0b01]),
    (quant.pack_codes([-128, 127, -1], 8).tolist(), [0x80, 0x7F, 0xFF]),
]
tap.check("pack_bit_order_pinned", all(a == b for a, b in pinned), f"{pinned}")
try:
    quant.pack_codes([16], 4)
    tap.fail("pack_rejects_out_of_range", "code 16 packed at 4 bits")
except ValueError:
    tap.ok("pack_rejects_out_of_range")

# =============================================================================================
# 3. Quantized networks: forward, backward, state_dict names
# =============================================================================================


def expected_quant_names(fmodel):
    """The convention, derived from the float model's structure: name -> shape."""
    want = {}
    mixed = {n for n, m in fmodel.named_modules() if isinstance(m, nets.MixedConv2d)}
    for name, m in fmodel.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            want[f"{name}.weight_quant.scale"] = (m.weight.shape[0],)
            if name.rsplit(".", 1)[0] not in mixed:
                want[f"{name}.input_quant.scale"] = (1,)
                want[f"{name}.input_quant.offset"] = (1,)
    for name in mixed:
        want[f"{name}.input_quant.scale"] = (1,)
        want[f"{name}.input_quant.offset"] = (1,)
    return want


for arch in ("mixnet_s", "efficientnet_b0"):
    torch.manual_seed(0)
    fm = nets.randomize(nets.create(arch, 10), seed=0).eval()  # logits of a few units at 32x32
    x = torch.randn(2, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        yf = fm(x)
    # plumbing check: at w8a8 after calibration the quantized net stays close to the float one
    q8 = quant.create(arch, "w8a8", 10)
    quant.load_float_weights(q8, fm.state_dict())
    quant.calibrate(q8, [x])
    with torch.no_grad():
        err = (q8.eval()(x) - yf).abs().max().item() / (yf.max() - yf.min()).item()
    tap.check(f"{arch}_w8a8_close_to_fp32", err < 0.05, f"max logit error {err:.3f} x range")
    qm = quant.create(arch, "w4a4", 10).to(memory_format=torch.channels_last)
    quant.load_float_weights(qm, fm.state_dict())
    quant.calibrate(qm, [x])
    sd = qm.state_dict()
    got = {k: tuple(v.shape) for k, v in sd.items() if k not in fm.state_dict()}
    want = expected_quant_names(fm)
    diff = sorted(set(got) ^ set(want))[:4]
    shapes = [k for k in want if k in got and got[k] != want[k]][:3]
    tap.check(f"{arch}_state_dict_names", not diff and not shapes and set(fm.state_dict()) <= set(sd),
              f"differ: {diff}; wrong shapes: {shapes}")
    if arch == "mixnet_s":
        tap.check("mixnet_s_mixed_conv_names", "blocks.2.0.conv_dw.input_quant.scale" in sd
                  and "blocks.2.0.conv_dw.0.weight_quant.scale" in sd
                  and "blocks.2.0.conv_dw.2.weight_quant.scale" in sd
                  and not any(k.startswith("blocks.2.0.conv_dw.0.input_quant") for k in sd), "mixed conv quantizers")
    # progressive initialisation (train.py --init DIR/w4a4.pt): W2A2 from this calibrated W4A4. Float
    # weights and BN copied, weight scales keep the source's range, and each activation quantizer is
    # fitted to what the source feeds it while running quantized (not to a float forward)
    q2 = quant.create(arch, "w2a2", 10).to(memory_format=torch.channels_last)
    fed = []
    hook = qm.conv_head.input_quant.register_forward_pre_hook(lambda mod, inp: fed.append(inp[0].detach().clone()))
    quant.calibrate_from(q2, qm, [x])
    hook.remove()
    sd2, src = q2.state_dict(), dict(qm.named_modules())
    copied = all(torch.equal(sd2[k], v) for k, v in qm.state_dict().items() if "_quant." not in k)
    ranges = all(torch.allclose(m.scale, src[n].scale * src[n].p / m.p) for n, m in q2.named_modules()
                 if isinstance(m, quant.WeightQuantizer))
    hq = q2.conv_head.input_quant
    s_want, b_want = quant.init_act_params(quant._observe(fed[0], 1 << 16), hq.n, hq.p, hq.learn_offset, "mse")
    fitted = math.isclose(hq.scale.item(), s_want, rel_tol=1e-6) and math.isclose(hq.offset.item(), b_want, abs_tol=1e-6)
    tap.check(f"{arch}_progressive_init", copied and ranges and fitted and len(fed) == 1,
              f"copied {copied}, weight ranges {ranges}, head input ({hq.scale.item()}, {hq.offset.item()}) "
              f"vs ({s_want}, {b_want})")
    bits = (qm.conv_stem.weight_quant.bits, qm.conv_stem.input_quant.bits, qm.conv_stem.input_quant.signed,
            qm.classifier.weight_quant.bits, qm.classifier.input_quant.bits, qm.conv_head.weight_quant.bits,
            qm.conv_head.input_quant.bits, qm.conv_head.input_quant.signed)
    tap.check(f"{arch}_bit_widths", bits == (8, 8, True, 8, 8, 4, 4, False), f"{bits}")
    # eval mode: with a batch of 2, train-mode BN on the 1x1 maps of the last stage makes both samples
    # alike and saturates the classifier's input quantizer, which zeroes every gradient upstream
    qm.eval()
    y = qm(x)
    (y.square().mean()).backward()
    no_grad = [n for n, p in qm.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    qgrads = [p.grad.abs().sum().item() for n, p in qm.named_parameters() if "_quant." in n]
    tap.check(f"{arch}_forward_backward", y.shape == (2, 10) and torch.isfinite(y).all() and not no_grad
              and sum(g_ > 0 for g_ in qgrads) > 0.8 * len(qgrads),
              f"shape {tuple(y.shape)}, params without finite grad {no_grad[:3]}, "
              f"{sum(g_ > 0 for g_ in qgrads)}/{len(qgrads)} quantizer grads non-zero")
    # export / reload gives the same logits
    with torch.no_grad():
        y1 = qm(x)
    path = os.path.join(TMP, f"quant_{arch}.safetensors")
    quant.export(qm, arch, path, "w4a4", labels=[str(i) for i in range(10)])
    tensors, meta = safetensors_io.load(path)
    qm2 = quant.create(arch, meta["config"], 10)
    qm2.load_state_dict({k: v for k, v in tensors.items()}, strict=True)
    qm2.eval()
    with torch.no_grad():
        y2 = qm2(x.contiguous())
    tap.check(f"{arch}_export_round_trip", meta["config"] == "w4a4" and set(tensors) == set(sd)
              and torch.allclose(y1, y2, atol=1e-4, rtol=1e-4), f"max diff {(y1 - y2).abs().max():.3g}")

lm = quant.create("mixnet_s", "w2a2-lsq", 10)
iq = lm.blocks[1][0].conv_pw.input_quant
tap.check("lsq_config_structure", not iq.learn_offset and "blocks.1.0.conv_pw.input_quant.offset" in lm.state_dict()
          and lm.conv_stem.input_quant.learn_offset and lm.conv_stem.input_quant.signed
          and lm.blocks[1][0].conv_pwl["0"].weight_quant.bits == 2, "w2a2-lsq quantizers")
for badname in ("w1a4", "w4a9", "w4a4-foo", "int8"):
    try:
        quant.parse_config(badname)
        tap.fail(f"config_rejects_{badname}", "accepted")
    except ValueError:
        tap.ok(f"config_rejects_{badname}")

# the suffix grammar: tests/unit/test_quant.c's tables, so that the trainer and the engine agree
CANONICAL = [("w4a4", "w4a4"), ("w2a2-lsq", "w2a2-lsq"), ("w4a4+pt", "w4a4+pt"), ("w4a4+fl6", "w4a4+fl6"),
             ("w4a4+fl8", "w4a4"), ("w3a3+fl4+pt", "w3a3+pt+fl4"), ("w2a2+dw8", "w2a2+dw8"),
             ("w2a2+blocks.*.conv_dw=8", "w2a2+dw8"), ("w2a2-lsq+pt+blocks.*.se.*=8", "w2a2-lsq+pt+se8"),
             ("w2a2+se8+dw8", "w2a2+se8+dw8"), ("w4a4+conv_head=8+fl6", "w4a4+fl6+conv_head=8"),
             ("w2a2+blocks.1.*=4+blocks.1.0.conv_dw=8", "w2a2+blocks.1.*=4+blocks.1.0.conv_dw=8")]
bad_canon = [(n, quant.parse_config(n).name) for n, want in CANONICAL
             if quant.parse_config(n).name != want or quant.parse_config(want).name != want]
tap.check("config_canonical", not bad_canon, f"{bad_canon}")
REJECTS = [("w4a4+", "empty '+' clause"), ("w4a4++pt", "empty '+' clause"), ("w4a4+pt+pt", "'+pt' given twice"),
           ("w4a4+fl6+fl4", "'+fl' given twice"), ("w4a4+fl9", "unknown clause '+fl9'"),
           ("w4a4+fl", "unknown clause '+fl'"), ("w4a4+dw1", "unknown clause '+dw1'"),
           ("w4a4+xx8", "unknown clause '+xx8'"), ("w4a4+PT", "unknown clause '+PT'"),
           ("w4a4+blocks/1=8", "layer pattern 'blocks/1' must be"), ("w4a4+blocks.?.conv_dw=8", "layer pattern"),
           ("w4a4+=8", "layer pattern '' must be"), ("w4a4+conv_head=10", "bits must be one digit 2..8"),
           ("w4a4+conv_head=", "bits must be one digit 2..8"),
           ("w4a4+dw8+blocks.*.conv_dw=4", "'blocks.*.conv_dw' given twice"),
           ("w4a4+a=8+b=8+c=8+d=8+e=8+f=8+g=8+h=8+i=8", "more than 8 layer overrides"),
           ("w4a4+blocks.0.0.conv_dw=8+blocks.1.0.conv_dw=8+blocks.2.0.conv_dw=8", "longer than 63 characters"),
           ("w4a4-lsq-lsq", "unknown configuration"), ("fp32+pt", "unknown configuration"),
           ("w4a4 +pt", "unknown configuration"), ("w4a4+pt\n", "unknown clause")]
bad_rej = []
for n, msg in REJECTS:
    try:
        quant.parse_config(n)
        bad_rej.append(f"{n!r} accepted")
    except ValueError as e:
        if msg not in str(e) or n not in str(e):
            bad_rej.append(f"{n!r}: {e}")
tap.check("config_rejects_suffixes", not bad_rej, "; ".join(bad_rej[:3]))
# QuantConfig.layer and the quantizers create() builds from it: overrides by name (last match wins,
# over +fl), per-tensor scales, mixed convs as one module, the network input always signed 8-bit
mq = quant.create("mixnet_s", "w2a3-lsq+pt+fl6+blocks.*=4+dw8+conv_stem=5", 10)
got = {n: (m.input_quant.bits, m.input_quant.signed, m.input_quant.learn_offset,
           [c.weight_quant.bits for c in cs], [c.weight_quant.per_channel for c in cs], [tuple(c.weight_quant.scale.shape) for c in cs])
       for n, m, cs in quant.quantized_layers(mq)}
want = {"conv_stem": (8, True, True, [5], [False], [(1,)]), "blocks.1.0.conv_pw": (4, False, False, [4, 4], [False] * 2, [(1,)] * 2),
        "blocks.2.0.conv_dw": (8, False, False, [8] * 3, [False] * 3, [(1,)] * 3), "conv_head": (3, False, False, [2], [False], [(1,)]),
        "classifier": (6, False, False, [6], [False], [(1,)]), "blocks.2.0.se.conv_reduce": (4, False, False, [4], [False], [(1,)])}
bad_layer = [f"{k}: {got.get(k)} != {v}" for k, v in want.items() if got.get(k) != v]
tap.check("config_layers", not bad_layer, "; ".join(bad_layer[:3]))
try:
    quant.create("efficientnet_b0", "w4a4+blocks.*.conv_dww=8", 10)
    tap.fail("config_pattern_must_match", "accepted")
except ValueError as e:
    tap.check("config_pattern_must_match", "matches no conv or linear layer" in str(e), str(e))

# =============================================================================================
# 4. train.py --smoke end to end
# =============================================================================================

train = os.path.join(ROOT, "models", "train.py")
out = os.path.join(TMP, "train_smoke")
subprocess.run(["rm", "-rf", out])
env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "models"))
base = [sys.executable, train, "fp32", "--arch", "mixnet_s", "--size", "32", "--epochs", "2", "--out", out,
        "--smoke", "--threads", "1", "--seed", "3"]
r1 = subprocess.run(base + ["--time-budget", "0.0001"], capture_output=True, text=True, env=env, timeout=120)
r2 = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
logs = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))] if os.path.exists(
    os.path.join(out, "log.jsonl")) else []
tap.check("train_smoke_budget_then_resume",
          r1.returncode == 75 and r2.returncode == 0 and "resuming" in r2.stdout and [r["epoch"] for r in logs] == [0, 1],
          f"rc {r1.returncode}/{r2.returncode}, epochs logged {[r.get('epoch') for r in logs]}: "
          f"{(r1.stderr + r2.stderr)[-400:]}")
try:
    ck = torch.load(os.path.join(out, "fp32.pt"), map_location="cpu")
    m = nets.create("mixnet_s", 10)
    m.load_state_dict(ck["model"])
    em, meta = nets.load(os.path.join(out, "mixnet_s_fp32.safetensors"))
    pre = json.loads(meta["preprocess"])
    tap.check("train_smoke_checkpoint_loadable",
              ck["epoch"] == 1 and {"optimizer", "scheduler", "rng"} <= set(ck) and meta.get("config") == "fp32"
              and json.loads(meta["labels"])[9] == "Ankle boot" and pre["grayscale"] is True
              and pre["input_size"] == 32 and pre["resize_size"] == 32 and pre["crop_pct"] == 1.0,
              f"epoch {ck.get('epoch')}, meta {meta}")
except Exception as exc:  # noqa: BLE001
    tap.fail("train_smoke_checkpoint_loadable", repr(exc))

r3 = subprocess.run([sys.executable, train, "qat", "--arch", "mixnet_s", "--config", "w2a2", "--init",
                     os.path.join(out, "fp32.pt"), "--epochs", "1", "--out", out, "--smoke", "--threads", "1"],
                    capture_output=True, text=True, env=env, timeout=120)
try:
    tensors, meta = safetensors_io.load(os.path.join(out, "mixnet_s_w2a2.safetensors"))
    qm = quant.create("mixnet_s", meta["config"], 10)
    qm.load_state_dict(tensors, strict=True)
    tap.check("train_smoke_qat", r3.returncode == 0 and meta["config"] == "w2a2"
              and all(v.item() > 0 for k, v in tensors.items() if k.endswith("input_quant.scale")),
              f"rc {r3.returncode}: {r3.stderr[-400:]}")
except Exception as exc:  # noqa: BLE001
    tap.fail("train_smoke_qat", f"{exc!r}; rc {r3.returncode}: {r3.stderr[-400:]}")

r4 = subprocess.run([sys.executable, train, "qat", "--arch", "mixnet_s", "--config", "w3a3", "--init",
                     os.path.join(out, "w2a2.pt"), "--epochs", "1", "--out", out, "--smoke", "--threads", "1"],
                    capture_output=True, text=True, env=env, timeout=120)
logs = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))] if os.path.exists(
    os.path.join(out, "log.jsonl")) else []
tap.check("train_smoke_progressive", r4.returncode == 0 and "progressive initialisation from its 'w2a2'" in r4.stdout
          and [r.get("init") for r in logs if r.get("config") == "w3a3"] == ["w2a2.pt"]
          and os.path.exists(os.path.join(out, "mixnet_s_w3a3.safetensors")), f"rc {r4.returncode}: {r4.stderr[-400:]}")

# distillation: the loss is Hinton's T^2 KL(teacher || student), against torch's own KL; zero for a
# student equal to the teacher; a --teacher smoke run logs it and exports a loadable model
sys.path.insert(0, os.path.join(ROOT, "models"))
import train as train_mod  # noqa: E402
g = torch.Generator().manual_seed(5)
ls, lt = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
want_kd = 4.0 * F.kl_div(F.log_softmax(ls / 2, 1), F.log_softmax(lt / 2, 1), log_target=True, reduction="batchmean")
got_kd = train_mod.distill_loss(ls, lt, 2.0)
tap.check("distill_loss_is_kl", abs(got_kd.item() - want_kd.item()) <= 1e-6 * (1 + want_kd.item())
          and abs(train_mod.distill_loss(lt, lt, 2.0).item()) <= 1e-6, f"{got_kd.item()} vs {want_kd.item()}")
r5 = subprocess.run([sys.executable, train, "qat", "--arch", "mixnet_s", "--config", "w4a4", "--init",
                     os.path.join(out, "fp32.pt"), "--teacher", os.path.join(out, "fp32.pt"), "--kd", "0.5",
                     "--epochs", "1", "--out", out, "--smoke", "--threads", "1"],
                    capture_output=True, text=True, env=env, timeout=120)
logs = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))] if os.path.exists(
    os.path.join(out, "log.jsonl")) else []
kd_logs = [r for r in logs if r.get("config") == "w4a4"]
tap.check("train_smoke_distill", r5.returncode == 0 and len(kd_logs) == 1
          and kd_logs[0].get("kd") == {"teacher": "fp32.pt", "alpha": 0.5, "temp": 1.0}
          and math.isfinite(kd_logs[0]["train_loss"]) and os.path.exists(os.path.join(out, "mixnet_s_w4a4.safetensors")),
          f"rc {r5.returncode}: {r5.stderr[-400:]}")
r6 = subprocess.run([sys.executable, train, "qat", "--arch", "mixnet_s", "--config", "w4a4", "--init",
                     os.path.join(out, "fp32.pt"), "--teacher", os.path.join(out, "fp32.pt"), "--kd", "1.5",
                     "--epochs", "1", "--out", os.path.join(TMP, "kd_bad"), "--smoke"],
                    capture_output=True, text=True, env=env, timeout=60)
tap.check("train_distill_bad_alpha", r6.returncode == 2 and "--kd" in r6.stderr, f"rc {r6.returncode}: {r6.stderr[-300:]}")

# 5. the C engine evaluates what the trainer trained, on the same 256 test images, and agrees with
#    the trainer's own evaluation (float near-ties aside: at most one image)
lsq_bin = os.environ.get("LSQ_BIN") or os.path.join(ROOT, "build", "lsq")
if os.access(lsq_bin, os.X_OK) and os.path.exists(os.path.join(out, "log.jsonl")):
    logs = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    for cfg in ("fp32", "w2a2"):
        want = [r["test_acc"] for r in logs if r.get("config") == cfg]
        r = subprocess.run([lsq_bin, "eval", "--model", os.path.join(out, f"mixnet_s_{cfg}.safetensors"), "--data",
                            "/usr/share/datasets/fashion-mnist", "--limit", "256", "--json", "-"],
                           capture_output=True, text=True, timeout=300)
        try:
            got = json.loads(r.stdout.splitlines()[-1])["results"][0]["top1"]
            tap.note(f"smoke {cfg}: engine top-1 {got:.4f}, trainer {want[-1]:.4f}")
            tap.check(f"engine_eval_matches_trainer_{cfg}", want and abs(got - want[-1]) <= 1 / 256 + 1e-9,
                      f"engine {got}, trainer {want}")
        except Exception as exc:  # noqa: BLE001
            tap.fail(f"engine_eval_matches_trainer_{cfg}", f"{exc!r}: {r.stderr[-300:]}")

tap.finish()
