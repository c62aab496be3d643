"""test_web.py - the server's web page in headless Chromium (Debian's chromium + chromedriver),
driven over the W3C WebDriver protocol with the standard library: choose model and configuration,
upload an image, read the top-5 table, and check the accuracy-against-latency chart has a point per
configuration with an accuracy. The top-5 must equal `lsq classify` on the same file.

Chromium is slow to start on this machine, so this is the only browser test."""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

from srvlib import LSQ, TMP, Server, Tap, ensure_models, make_images

tap = Tap()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class WebDriver:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,1300", f"--user-data-dir={TMP}/chromium-profile"]}}}}
        self.sid = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"] if method != "POST" or path != "/session" else json.loads(r.read())["value"]

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.sid}{path}", body)

    def find(self, css):
        v = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(v.values()))

    def script(self, js, *args):
        return self.s("POST", "/execute/sync", {"script": js, "args": list(args)})

    def wait(self, js, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.script(js)
            if v:
                return v
            time.sleep(0.2)
        return None

    def quit(self):
        try:
            self.s("DELETE", "")
        except Exception:
            pass


def main():
    if not shutil.which("chromedriver") or not os.path.exists("/usr/bin/chromium"):
        tap.check("chromium_present", False, "install chromium and chromium-driver (make deps)")
        tap.finish()
    models = ensure_models()
    img = make_images()
    srv = Server(models, "--eval", "startup", "--eval-limit", "20", "--workers", "1", name="server-web")
    dport = free_port()
    drv = subprocess.Popen(["chromedriver", f"--port={dport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", dport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        wd = WebDriver(dport)
        wd.s("POST", "/url", {"url": f"http://127.0.0.1:{srv.port}/"})
        n = wd.wait("return document.querySelectorAll('#model option').length")
        tap.check("page_lists_models", n == 2, str(n))
        points = wd.wait("const p = document.querySelectorAll('#chart circle.point'); return p.length ? "
                         "Array.from(p).map(e => e.dataset.config) : null")
        tap.check("chart_has_point_per_measured_config", sorted(points or []) == ["mixnet_s-test/fp32", "mixnet_s-test/w4a4"],
                  str(points))
        rows = wd.wait("return document.querySelectorAll('#report tbody tr').length")
        tap.check("report_table_rows", rows == 3, str(rows))
        # choose mixnet_s-test / w4a4, upload the JPEG, read the top-5
        wd.script("const m = document.getElementById('model'); m.value = 'mixnet_s-test';"
                  "m.dispatchEvent(new Event('change')); document.getElementById('config').value = 'w4a4';")
        wd.s("POST", f"/element/{wd.find('#file')}/value", {"text": os.path.abspath(img["jpg"])})
        wd.s("POST", f"/element/{wd.find('#go')}/click", {})
        got = wd.wait("const r = document.querySelectorAll('#result tbody tr'); return r.length ? "
                      "Array.from(r).map(t => [t.cells[1].textContent, +t.cells[2].textContent, t.cells[3].textContent]) : null")
        r = subprocess.run([LSQ, "classify", "--model", os.path.join(models, "mixnet_s/w4a4.safetensors"), "--config",
                            "w4a4", "--json", img["jpg"]], capture_output=True, text=True, check=True)
        want = [[p["label"], p["index"], f"{100 * p['score']:.2f}%"] for p in json.loads(r.stdout)[0]["predictions"]]
        tap.check("upload_shows_top5_of_lsq_classify", got == want, f"{got} vs {want}")
        timing = wd.script("return document.getElementById('timing').textContent")
        tap.check("upload_shows_timing", "mixnet_s-test / w4a4" in (timing or "") and "inference" in timing, str(timing))
        shot = wd.s("GET", "/screenshot")
        import base64
        open(os.path.join(TMP, "server-web.png"), "wb").write(base64.b64decode(shot))
        tap.check("screenshot", os.path.getsize(os.path.join(TMP, "server-web.png")) > 10000)
        log = srv.stdout()
        tap.check("page_went_through_the_server", '"POST /v1/classify" 200' in log and "config=w4a4" in log, log[-600:])
    finally:
        if wd:
            wd.quit()
        drv.terminate()
        drv.wait(10)
        srv.stop()
    tap.finish()


if __name__ == "__main__":
    main()
