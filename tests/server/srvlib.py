"""srvlib.py - start the real lsq-server on a free port and talk to it (shared by the server tests)."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

BUILD = os.environ.get("LSQ_BUILD") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
SERVER = os.path.join(BUILD, "lsq-server")
LSQ = os.path.join(BUILD, "lsq")
ROOT = os.environ.get("LSQ_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TMP = os.environ.get("LSQ_TMP") or "/tmp"


class Tap:
    """TAP-like lines for tests/run.sh: 'ok NAME' / 'not ok NAME: why'."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, cond, why=""):
        if cond:
            self.passed += 1
            print(f"ok {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok {name}: {why}", flush=True)
        return cond

    def finish(self):
        print(f"# {self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)


class Server:
    """lsq-server on port 0 (the kernel picks a free one); stdout (access log) and stderr to files."""

    def __init__(self, models, *args, env=None, wrapper=None, name="server", ready_timeout=180):
        self.out = os.path.join(TMP, f"{name}.out")
        self.err = os.path.join(TMP, f"{name}.err")
        e = dict(os.environ)
        e.update(env or {})
        if wrapper is None:  # e.g. LSQ_SERVER_WRAPPER="valgrind --error-exitcode=99 --leak-check=full"
            wrapper = os.environ.get("LSQ_SERVER_WRAPPER", "").split()
        cmd = list(wrapper) + [SERVER, "--models", models, "--port", "0", "--host", "127.0.0.1", "--cache-dir", ""] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=open(self.out, "w"), stderr=open(self.err, "w"), env=e)
        self.port = None
        t0 = time.time()
        while time.time() - t0 < ready_timeout:
            m = re.search(r"ready: listening on [0-9.]+:(\d+)", self.stderr())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.stderr()[-2000:]}")

    def stderr(self):
        with open(self.err) as f:
            return f.read()

    def stdout(self):
        with open(self.out) as f:
            return f.read()

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """-> (status, headers dict (lower-case names), body bytes)"""
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def json(self, method, path, body=None, headers=None):
        st, h, b = self.request(method, path, body, headers)
        try:
            return st, h, json.loads(b)
        except ValueError:
            return st, h, None

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def ensure_models():
    """Small test models + manifest (make_models.py, needs Debian's torch), made once per test run."""
    out = os.path.join(TMP, "server-models")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "models"))
        subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "make_models.py"), out],
                       check=True, env=env)
    return out


def make_images():
    """A JPEG, PNG and WebP of the same noisy picture (PIL), their paths by format."""
    from PIL import Image
    import numpy as np
    rng = np.random.RandomState(0)
    img = Image.fromarray((rng.rand(48, 40, 3) * 255).astype("uint8"))
    paths = {}
    for fmt, ext in [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")]:
        paths[ext] = os.path.join(TMP, f"server-test.{ext}")
        img.save(paths[ext], fmt)
    return paths
