#!/usr/bin/python3
"""train.py - resumable FP32 and LSQ+ quantization-aware training on Fashion-MNIST.

  train.py fp32 --arch efficientnet_b0|mixnet_s --size 32 --epochs N --out DIR [--time-budget MIN] [--seed S]
  train.py qat  --arch ... --config w4a4 --init DIR/fp32.pt --epochs N --out DIR2 [...]
  qat ... --teacher DIR/fp32.pt [--kd ALPHA] [--kd-temp T]: knowledge distillation from the FP32 model
      (loss = (1 - ALPHA) * label loss + ALPHA * T^2 * KL(teacher || student); default ALPHA 0.9, T 1)
  add --smoke for a few batches on 256 images, end to end in seconds (CI)
  add --device cuda to train on a GPU (TF32 off, so the float math is the CPU's up to summation order)

DIR/<config>.pt is the checkpoint (model, optimizer, scheduler, RNG states, epoch), written atomically
after every epoch; a run finds it and resumes from the next epoch, so rerunning the same command
continues an interrupted run (and only re-exports a finished one). DIR/log.jsonl gets one JSON line per
epoch. The finished model is exported to DIR/<arch>_<config>.safetensors (nets' checkpoint convention,
labels and preprocessing in the metadata; quantized models in the latent-float form).

Preprocessing (recorded in the checkpoint, the engine's own definition, so `lsq` sees a photo as
training saw the data): the 28x28 grey image resized with PIL's bicubic filter to --size x --size
(resize_size = size, crop_pct 1.0: no crop), grey replicated to 3 channels, x / 255, then
(x - 0.2860) / 0.3530 per channel (Fashion-MNIST's training-set pixel mean and std) in float32. The
resized uint8 images are computed once and cached in DIR/fashion_mnist_<size>_bicubic.npz.

Exit status: 0 done, 75 stopped by --time-budget (rerun to resume), other values on errors.
"""
import argparse
import gzip
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lsqnet import nets, quant, safetensors_io  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530
INTERPOLATION = "bicubic"
EXIT_BUDGET = 75  # EX_TEMPFAIL: the time budget ran out; rerunning resumes


def preprocess_meta(size):
    return {"input_size": size, "resize_size": size, "crop_pct": 1.0, "interpolation": INTERPOLATION,
            "mean": [MEAN] * 3, "std": [STD] * 3, "grayscale": True}


# =============================================================================================
# Data
# =============================================================================================


def read_idx(path):
    """A gzipped (or plain) IDX file -> numpy array (uint8 images [N, H, W] or labels [N])."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    off = 4 + 4 * ndim
    if len(data) - off != count:
        raise ValueError(f"{path}: {len(data) - off} data bytes for shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=off).reshape(dims)


def resize_all(images, size):
    """PIL bicubic resize of each 28x28 'L' image to size x size; uint8 [N, size, size]."""
    from PIL import Image
    if images.shape[1:] == (size, size):
        return images.copy()
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(im, mode="L").resize((size, size), Image.BICUBIC))
    return out


def load_data(out_dir, size, smoke, data_dir=DATA_DIR):
    """(train_x, train_y, test_x, test_y): resized uint8 images and int64 labels, cached as npz."""
    tag = "_smoke" if smoke else ""
    cache = os.path.join(out_dir, f"fashion_mnist_{size}_{INTERPOLATION}{tag}.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        return z["train_x"], z["train_y"], z["test_x"], z["test_y"]
    tx = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))
    ty = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"))
    vx = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))
    vy = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"))
    if smoke:  # the first 256 images of each split
        tx, ty, vx, vy = tx[:256], ty[:256], vx[:256], vy[:256]
    tx, vx = resize_all(tx, size), resize_all(vx, size)
    tmp = cache + ".tmp.npz"
    np.savez(tmp, train_x=tx, train_y=ty, test_x=vx, test_y=vy)
    os.replace(tmp, cache)
    return tx, ty.astype(np.int64), vx, vy.astype(np.int64)


def to_input(x_u8):
    """uint8 [B, S, S] -> normalised float32 [B, 3, S, S], channels_last; (x / 255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(x_u8)).float().div_(255.0).sub_(MEAN).div_(STD)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


# =============================================================================================
# Model
# =============================================================================================


def init_weights(model):
    """timm's EfficientNet init (_init_weight_goog) for convs and BN: He normal fan-out, BN 1 / 0.

    The classifier is uniform in +-1/sqrt(in_features), not timm's +-1/sqrt(out_features): with 10
    classes timm's range gives initial logits of size ~5 and a first loss near 7."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            r = 1.0 / m.weight.shape[1] ** 0.5
            nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)


def quantized_source(path, arch):
    """The trained model of a quantized trainer checkpoint (DIR/w4a4.pt), for progressive
    initialisation (quant.calibrate_from); None for an FP32 checkpoint or an exported file."""
    if path.endswith(".safetensors"):
        return None
    ck = torch.load(path, map_location="cpu")
    if ck.get("config", "fp32") == "fp32":
        return None
    if ck["arch"] != arch:
        raise ValueError(f"{path}: a {ck['arch']} checkpoint, not {arch}")
    src = quant.create(arch, ck["config"], num_classes=10).to(memory_format=torch.channels_last)
    src.load_state_dict(ck["model"])
    print(f"{path}: progressive initialisation from its '{ck['config']}' model", flush=True)
    return src


def read_float_weights(path):
    """A state_dict from a trainer checkpoint (.pt) or an exported .safetensors."""
    if path.endswith(".safetensors"):
        tensors, _ = safetensors_io.load(path)
        return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    ck = torch.load(path, map_location="cpu")
    if ck.get("config", "fp32") != "fp32":
        raise ValueError(f"{path}: --init wants an FP32 checkpoint, this one is '{ck['config']}'")
    return ck["model"]


def load_teacher(path, arch, device):
    """The FP32 model of a checkpoint, frozen in eval mode: the distillation teacher."""
    teacher = quant.create(arch, "fp32", num_classes=10).to(memory_format=torch.channels_last)
    teacher.load_state_dict(read_float_weights(path))
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def distill_loss(student_logits, teacher_logits, temp):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), the batch mean (Hinton et al. 2015)."""
    log_p = torch.log_softmax(student_logits / temp, dim=1)
    log_q = torch.log_softmax(teacher_logits.detach() / temp, dim=1)
    return temp * temp * torch.sum(log_q.exp() * (log_q - log_p), dim=1).mean()


def param_groups(model, wd):
    """No weight decay on BN, biases and quantizer scales/offsets."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.dim() <= 1 or ".input_quant." in name or ".weight_quant." in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


# =============================================================================================
# Training
# =============================================================================================


def epoch_order(n, seed, epoch, shift):
    """The epoch's shuffle, flip and shift decisions, a function of (seed, epoch) only, so resume is exact."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order, flips = torch.randperm(n, generator=g), torch.rand(n, generator=g) < 0.5
    shifts = torch.randint(-shift, shift + 1, (n, 2), generator=g) if shift else torch.zeros(n, 2, dtype=torch.long)
    return order, flips, shifts


def translate(x_u8, shifts):
    """Shift each uint8 image [B, S, S] by (dy, dx) pixels, filling with 0 (Fashion-MNIST's background)."""
    b, s, _ = x_u8.shape
    m = int(np.abs(shifts).max()) if len(shifts) else 0
    if m == 0:
        return x_u8
    pad = np.zeros((b, s + 2 * m, s + 2 * m), dtype=np.uint8)
    pad[:, m:m + s, m:m + s] = x_u8
    out = np.empty_like(x_u8)
    for i, (dy, dx) in enumerate(shifts):
        out[i] = pad[i, m - dy:m - dy + s, m - dx:m - dx + s]
    return out


@torch.no_grad()
def evaluate(model, x, y, batch_size, device="cpu"):
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(to_input(x[i:i + batch_size]).to(device))
        t = torch.from_numpy(y[i:i + batch_size]).to(device)
        loss += loss_fn(logits, t).item()
        correct += (logits.argmax(1) == t).sum().item()
    return loss / len(x), correct / len(x)


def probe(model, opt, loss_fn, tx, ty, batch_size, steps, device, arch, config):
    """Seconds per training step (mean of `steps`, after 3 warm-up steps), printed as a JSON line."""
    model.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(steps + 3):
        if i == 3:
            sync()
            t0 = time.time()
        idx = np.arange(i * batch_size, (i + 1) * batch_size) % len(tx)
        x = to_input(tx[idx]).to(device)
        loss = loss_fn(model(x), torch.from_numpy(ty[idx]).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    print(json.dumps({"arch": arch, "config": config, "probe_step_s": (time.time() - t0) / steps}), flush=True)
    return 0


def save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def log(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["fp32", "qat"])
    ap.add_argument("--arch", required=True, choices=["efficientnet_b0", "mixnet_s"])
    ap.add_argument("--config", default=None,
                    help="qat: wXaY or wXaY-lsq (X, Y in 2..8) with optional suffixes, e.g. w2a2+pt+dw8 "
                         "(README 'Configurations'); files are named by the canonical form")
    ap.add_argument("--init", default=None, help="qat: FP32 weights (DIR/fp32.pt or .safetensors), or a trained "
                    "quantized checkpoint (DIR/w4a4.pt: progressive initialisation; the same config: a second stage "
                    "that keeps its learned quantizers)")
    ap.add_argument("--act-init", choices=["mse", "minmax", "lsq"], default=None,
                    help="activation init (default: mse for LSQ+, lsq for -lsq)")
    ap.add_argument("--teacher", default=None, help="qat: knowledge distillation from this FP32 model (DIR/fp32.pt "
                    "or .safetensors; usually the --init weights)")
    ap.add_argument("--kd", type=float, default=0.9, metavar="ALPHA",
                    help="with --teacher: loss = (1 - ALPHA) * label loss + ALPHA * T^2 * KL(teacher || student) at T")
    ap.add_argument("--kd-temp", type=float, default=1.0, metavar="T")
    ap.add_argument("--calib-size", type=int, default=512, help="qat: training images used for calibration")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="peak one-cycle LR (default 2e-3 fp32, 5e-4 qat)")
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--shift", type=int, default=None,
                    help="random translation of up to this many pixels (default: size // 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; initialisation always runs on the CPU")
    ap.add_argument("--time-budget", type=float, default=0, help="minutes; stop before an epoch that would overrun")
    ap.add_argument("--smoke", action="store_true", help="256 images, a few batches: an end-to-end check")
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--probe", type=int, default=0, metavar="STEPS",
                    help="time STEPS training steps (after 3 unmeasured), print seconds per step, write nothing")
    a = ap.parse_args(argv)

    t_start = time.time()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would round the convolutions to 10 bits
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    config = "fp32"
    if a.mode == "qat":
        try:
            cfg = quant.parse_config(a.config) if a.config else None
        except ValueError as e:
            ap.error(str(e))
        if cfg is None:
            ap.error("qat needs --config wXaY or wXaY-lsq (with optional + suffixes)")
        config = cfg.name  # canonical: the checkpoint, log and export names use it
        if not a.init:
            ap.error("qat needs --init (the FP32 weights)")
    if a.teacher and (a.mode != "qat" or not 0.0 < a.kd <= 1.0 or a.kd_temp <= 0):
        ap.error("--teacher is for qat, with 0 < --kd <= 1 and --kd-temp > 0")
    if a.shift is None:
        a.shift = a.size // 16
    lr = a.lr or (2e-3 if a.mode == "fp32" else 5e-4)
    batch_size = 32 if a.smoke else a.batch_size
    os.makedirs(a.out, exist_ok=True)
    ckpt_path = os.path.join(a.out, f"{config}.pt")
    log_path = os.path.join(a.out, "log.jsonl")

    torch.manual_seed(a.seed)
    random.seed(a.seed)
    np.random.seed(a.seed)
    tx, ty, vx, vy = load_data(a.out, a.size, a.smoke, a.data)
    ty, vy = ty.astype(np.int64), vy.astype(np.int64)

    model = quant.create(a.arch, config, num_classes=10)
    model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(tx) // batch_size
    start_epoch, ck = 0, None
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu")
        if ck["arch"] != a.arch or ck["config"] != config or ck["epochs"] != a.epochs or ck["size"] != a.size:
            sys.exit(f"train.py: {ckpt_path} is for {ck['arch']} {ck['config']} size {ck['size']} "
                     f"epochs {ck['epochs']}; use another --out or remove it")
        model.load_state_dict(ck["model"])
    elif a.mode == "fp32":
        init_weights(model)
    elif a.probe:  # timing only: the quantizers' values do not change the work
        pass
    else:  # LSQ+ initialisation on the CPU, so a GPU run starts from exactly the CPU's quantizers
        src = quantized_source(a.init, a.arch)
        if src is not None and src.quant_config.name == config:  # a further stage of the same config:
            model.load_state_dict(src.state_dict())  # its learned quantizers too, not a fresh search
            print(f"{a.init}: second stage, every tensor from it (quantizers included)", flush=True)
        else:
            n = min(a.calib_size, len(tx))
            calib = [to_input(tx[i:i + 128]) for i in range(0, n, 128)]
            if src is not None:  # progressive: from a trained quantized checkpoint
                quant.calibrate_from(model, src, calib, act_init=a.act_init)
            else:
                quant.load_float_weights(model, read_float_weights(a.init))
                quant.calibrate(model, calib, act_init=a.act_init)
            print(f"calibrated {len(quant.quantizers(model))} quantizers on {n} images", flush=True)
    model = model.to(device)  # before the optimizer, whose state then lives on the device too
    opt = torch.optim.AdamW(param_groups(model, a.wd), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=a.epochs * steps_per_epoch,
                                                pct_start=0.25 if a.mode == "fp32" else 0.1)
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"]["torch"])
        np.random.set_state(ck["rng"]["numpy"])
        random.setstate(ck["rng"]["python"])
        start_epoch = ck["epoch"] + 1
        print(f"resuming {ckpt_path} at epoch {start_epoch}/{a.epochs}", flush=True)
        del ck

    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    teacher = load_teacher(a.teacher, a.arch, device) if a.teacher else None
    if a.probe:
        return probe(model, opt, loss_fn, tx, ty, batch_size, a.probe, device, a.arch, config)
    epoch_times = []
    for epoch in range(start_epoch, a.epochs):
        if a.time_budget and epoch_times:
            est = max(epoch_times)
            if (time.time() - t_start) + est > a.time_budget * 60:
                print(f"time budget: stopping before epoch {epoch} (rerun to resume)", flush=True)
                return EXIT_BUDGET
        t0 = time.time()
        model.train()
        order, flips, shifts = epoch_order(len(tx), a.seed, epoch, a.shift)
        nsteps = 4 if a.smoke else steps_per_epoch
        tot_loss = torch.zeros((), device=device)  # summed on the device: no sync per step
        tot_correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        for step in range(nsteps):
            idx = order[step * batch_size:(step + 1) * batch_size].numpy()
            x = to_input(translate(tx[idx], shifts[idx].numpy()))
            f = flips[step * batch_size:(step + 1) * batch_size]
            x[f] = x[f].flip(-1)
            x = x.contiguous(memory_format=torch.channels_last).to(device, non_blocking=True)
            t = torch.from_numpy(ty[idx]).to(device, non_blocking=True)
            logits = model(x)
            loss = loss_fn(logits, t)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                loss = (1.0 - a.kd) * loss + a.kd * distill_loss(logits, teacher_logits, a.kd_temp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if config != "fp32":
                quant.clamp_scales_(model)
            tot_loss += loss.detach() * len(idx)
            tot_correct += (logits.argmax(1) == t).sum()
            seen += len(idx)
        if a.smoke:  # keep the one-cycle schedule consistent with a full epoch's step count
            for _ in range(steps_per_epoch - nsteps):
                sched.step()
        tot_loss, tot_correct = tot_loss.item(), tot_correct.item()
        train_time = time.time() - t0
        test_loss, test_acc = evaluate(model, vx, vy, 256, device)
        epoch_times.append(time.time() - t0)
        rec = {"arch": a.arch, "config": config, "epoch": epoch, "epochs": a.epochs, "train_loss": tot_loss / seen,
               "train_acc": tot_correct / seen, "test_loss": test_loss, "test_acc": test_acc,
               "lr": sched.get_last_lr()[0], "train_s": round(train_time, 2), "epoch_s": round(epoch_times[-1], 2),
               "threads": torch.get_num_threads(), "device": device.type, "smoke": a.smoke}
        if a.init:
            rec["init"] = os.path.basename(a.init)
        if teacher is not None:
            rec["kd"] = {"teacher": os.path.basename(a.teacher), "alpha": a.kd, "temp": a.kd_temp}
        log(log_path, rec)
        print(json.dumps(rec), flush=True)
        save_atomic({"arch": a.arch, "config": config, "size": a.size, "epochs": a.epochs, "epoch": epoch,
                     "model": {k: v.cpu() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()},
                     "args": vars(a), "preprocess": preprocess_meta(a.size), "test_acc": test_acc}, ckpt_path)

    out = os.path.join(a.out, f"{a.arch}_{config}.safetensors")
    model = model.cpu().eval()
    quant.export(model, a.arch, out, config, labels=LABELS, preprocess=preprocess_meta(a.size))
    print(f"exported {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
