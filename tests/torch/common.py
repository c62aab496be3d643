"""common.py - shared helpers of the PyTorch comparison tests (tests/torch/test_*.py).

Run as `/usr/bin/python3 tests/torch/test_X.py` with PYTHONPATH=models and, from tests/run.sh, the
environment LSQ_BIN (the C CLI), LSQ_TMP (a scratch directory) and LSQ_ROOT (the repository root).
Each check prints one TAP-like line, "ok <name>" or "not ok <name>: <reason>"; Tap.finish() exits
non-zero when any check failed.
"""
import ast
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("LSQ_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "models"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)  # the machine's 2 cores are shared

LSQ_BIN = os.environ.get("LSQ_BIN") or os.path.join(ROOT, "build", "lsq")
TMP = os.environ.get("LSQ_TMP") or tempfile.mkdtemp(prefix="lsq-torch.")
ARCH_DIR = os.path.join(ROOT, "..", "shared", "reference", "architectures")
if not os.path.isdir(ARCH_DIR):
    ARCH_DIR = "/work/shared/reference/architectures"

# The tolerance every engine-vs-PyTorch comparison uses: max |error| <= REL_TOL * (max - min of the
# reference logits), and the same top-5 indices.
REL_TOL = 1e-3


class Tap:
    def __init__(self):
        self.failed = 0
        self.passed = 0
        self.t0 = time.time()

    def ok(self, name):
        self.passed += 1
        print(f"ok {name}", flush=True)

    def fail(self, name, reason):
        self.failed += 1
        print(f"not ok {name}: {reason}", flush=True)

    def check(self, name, cond, reason=""):
        (self.ok(name) if cond else self.fail(name, reason))
        return cond

    def note(self, text):
        print(f"# {text}", flush=True)

    def finish(self):
        self.note(f"{self.passed} passed, {self.failed} failed in {time.time() - self.t0:.1f}s")
        sys.exit(1 if self.failed else 0)


# --------------------------------------------------------------------------------------------
# Reference files
# --------------------------------------------------------------------------------------------

def read_state_dict_ref(name):
    """shared/reference/architectures/<name>.state_dict.txt -> ([(tensor name, shape tuple)], params)."""
    entries, params = [], None
    with open(os.path.join(ARCH_DIR, name + ".state_dict.txt")) as f:
        for line in f:
            if not line.strip():
                continue
            key, rest = line.rstrip("\n").split(" ", 1)
            if key == "PARAMS":
                params = int(rest)
            else:
                entries.append((key, tuple(ast.literal_eval(rest.strip()))))
    return entries, params


def read_layers_ref(name):
    with open(os.path.join(ARCH_DIR, name + ".layers.txt")) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def timm_to_torchvision():
    """efficientnet_b0 name map: list of (timm name, torchvision name, shape)."""
    rows = []
    with open(os.path.join(ARCH_DIR, "efficientnet_b0.timm_to_torchvision.txt")) as f:
        for line in f:
            if line.strip():
                timm_name, tv_name, shape = line.rstrip("\n").split("\t")
                rows.append((timm_name, tv_name, tuple(ast.literal_eval(shape))))
    return rows


# --------------------------------------------------------------------------------------------
# Running the C engine
# --------------------------------------------------------------------------------------------

def have_engine():
    return os.path.isfile(LSQ_BIN) and os.access(LSQ_BIN, os.X_OK)


def seeded_input(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, h, w, generator=g)


def engine_infer(model_path, x, tag, arch=None, threads=2, extra=()):
    """Run `lsq infer` on x (torch [N,3,H,W], one call for the batch).

    Returns (logits as np.float32 [N, classes], "") or (None, what went wrong)."""
    n, c, h, w = x.shape
    xin = os.path.join(TMP, f"{tag}.in.f32")
    yout = os.path.join(TMP, f"{tag}.out.f32")
    x.detach().contiguous().numpy().astype("<f4").tofile(xin)
    if os.path.exists(yout):
        os.remove(yout)
    cmd = [LSQ_BIN, "infer", "--model", model_path, "--input", xin, "--shape", f"{n},{c},{h},{w}",
           "--output", yout, "--threads", str(threads)]
    if arch:
        cmd += ["--arch", arch]
    cmd += list(extra)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return None, "timed out after 600 s: " + " ".join(cmd)
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[:300]}"
    if not os.path.exists(yout):
        return None, "no output file written"
    y = np.fromfile(yout, dtype="<f4")
    if y.size % n:
        return None, f"{y.size} floats written for a batch of {n}"
    return y.reshape(n, -1), ""


def run_cli(*args, timeout=120):
    """Run build/lsq with args; returns (exit code, stdout + stderr)."""
    p = subprocess.run([LSQ_BIN, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def compare_logits(ref, got):
    """(ok, reason): max abs error <= REL_TOL * range(ref) and identical top-5 indices."""
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    if got.shape != ref.shape:
        return False, f"{got.size} logits, expected {ref.size}"
    if not np.all(np.isfinite(got)):
        return False, "non-finite logits"
    rng = ref.max() - ref.min()
    err = np.abs(got - ref)
    i = int(err.argmax())
    top_ref = np.argsort(-ref, kind="stable")[:5]
    top_got = np.argsort(-got, kind="stable")[:5]
    msgs = []
    if err[i] > REL_TOL * rng:
        msgs.append(f"max abs error {err[i]:.3g} at class {i} (ref {ref[i]:.5g}, got {got[i]:.5g}) "
                    f"> {REL_TOL:g} x range {rng:.4g}")
    if list(top_ref) != list(top_got):
        msgs.append(f"top-5 {list(top_got)} != reference {list(top_ref)}")
    if msgs:
        return False, "; ".join(msgs)
    return True, f"max abs error {err[i]:.2g} (range {rng:.3g})"


# --------------------------------------------------------------------------------------------
# Quantized models
# --------------------------------------------------------------------------------------------

def random_quantized(float_model, arch, cfg, size, classes=10, seed=1):
    """quant.create(arch, cfg) with float_model's weights, LSQ+-initialised on a seeded random batch."""
    from lsqnet import quant
    qm = quant.create(arch, cfg, classes)
    quant.load_float_weights(qm, float_model.state_dict())
    g = torch.Generator().manual_seed(seed)
    quant.calibrate(qm, [torch.randn(8, 3, size, size, generator=g)])
    return qm.eval()


def read_trace(path):
    """`lsq infer --trace` records -> list of (layer, codes int32 array, u float32 array or None)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        n_name = int.from_bytes(data[i:i + 4], "little")
        name = data[i + 4:i + 4 + n_name].decode()
        i += 4 + n_name
        n = int.from_bytes(data[i:i + 8], "little")
        i += 8
        codes = np.frombuffer(data, "<i4", n, i)
        i += 4 * n
        has_u = data[i]
        i += 1
        u = None
        if has_u:
            u = np.frombuffer(data, "<f4", n, i)
            i += 4 * n
        out.append((name, codes, u))
    return out
