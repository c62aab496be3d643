"""test_server.py - lsq-server over real HTTP: every endpoint, every error path, concurrency, the
drain, extra configurations calibrated at start-up. Starts the real build/lsq-server on small models
(make_models.py) and checks answers against the engine's own CLI (`lsq classify`, `lsq infer`, `lsq eval`,
`lsq quantize`) on the same files.

Run by tests/run.sh (suite "server") under /usr/bin/python3; prints ok / not ok lines."""
import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

from srvlib import LSQ, SERVER, TMP, Server, Tap, ensure_models, make_images

tap = Tap()


def lsq_classify(model, config, image, k=5):
    r = subprocess.run([LSQ, "classify", "--model", model, "--config", config, "--topk", str(k), "--json", image],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)[0]["predictions"]


def same_predictions(got, want):
    return (len(got) == len(want) and all(g["index"] == w["index"] and g["label"] == w["label"] and
                                          abs(g["score"] - w["score"]) < 1e-5 for g, w in zip(got, want)))


def raw_exchange(port, data, read=True, timeout=10):
    """Send raw bytes on a fresh socket; return what comes back until the server closes or times out."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                if m and len(rest) >= int(m.group(1)):
                    break
        return out
    finally:
        s.close()


# =============================================================================================
# start-up and flags
# =============================================================================================

def test_startup(models):
    r = subprocess.run([SERVER, "--version"], capture_output=True, text=True)
    tap.check("version", r.returncode == 0 and "lsq-server" in r.stdout and "kernels" in r.stdout, r.stdout + r.stderr)
    r = subprocess.run([SERVER, "--models", os.path.join(TMP, "nowhere"), "--port", "0"], capture_output=True, text=True)
    tap.check("missing_manifest_exits_nonzero", r.returncode == 1 and "manifest.json does not exist" in r.stderr and
              "--models" in r.stderr, r.stderr)
    r = subprocess.run([SERVER, "--workers", "zero"], capture_output=True, text=True)
    tap.check("bad_flag_usage_error", r.returncode == 2 and "--workers" in r.stderr, r.stderr)
    r = subprocess.run([SERVER, "--port", "1"], capture_output=True, text=True, env=dict(os.environ, LSQ_QUEUE="-3"))
    tap.check("bad_env_usage_error", r.returncode == 2 and "LSQ_QUEUE" in r.stderr, r.stderr)
    bad = os.path.join(TMP, "server-bad-manifest")
    os.makedirs(bad, exist_ok=True)
    man = json.load(open(os.path.join(models, "manifest.json")))
    for c in man["models"][0]["configs"] + man["models"][1]["configs"]:
        c["file"] = os.path.join(models, c["file"])
    man["models"][0]["default_config"] = "w9a9"
    json.dump(man, open(os.path.join(bad, "manifest.json"), "w"))
    r = subprocess.run([SERVER, "--models", bad, "--port", "0"], capture_output=True, text=True)
    tap.check("bad_default_config_refused", r.returncode == 1 and "w9a9" in r.stderr, r.stderr)


# =============================================================================================
# extra_configs: FP32 checkpoints served at extra bit-widths through the C calibration
# =============================================================================================

FMNIST = "/usr/share/datasets/fashion-mnist"


def extra_manifest(models, dirname, **changes):
    """mixnet_s-test alone, absolute paths, with extra_configs and a calibration set (16 training images);
    changes replace (None: remove) fields of the model."""
    man = json.load(open(os.path.join(models, "manifest.json")))
    m = man["models"][0]
    for c in m["configs"]:
        c["file"] = os.path.join(models, c["file"])
    m["extra_configs"] = ["w3a3", "w2a2-lsq+dw8"]
    m["calibration"] = {"path": FMNIST, "split": "train", "images": 16}
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    d = os.path.join(TMP, dirname)
    os.makedirs(d, exist_ok=True)
    json.dump({"version": 1, "models": [m]}, open(os.path.join(d, "manifest.json"), "w"))
    return d


def test_extra_configs_refused(models):
    # each mistake stops the start-up with exit 1 and a message naming the manifest, the model and the fault
    fp32_only = [{"config": "w4a4", "file": os.path.join(models, "mixnet_s/w4a4.safetensors")}]
    cases = [
        ("unknown_config", {"extra_configs": ["w9a9"]}, 'unknown configuration "w9a9"'),
        ("fp32_as_extra", {"extra_configs": ["fp32"]}, '"fp32" is the checkpoint itself'),
        ("also_under_configs", {"extra_configs": ["w3a3", "w4a4"]}, '"w4a4" is also listed under "configs"'),
        ("duplicate", {"extra_configs": ["w3a3", "w3a3"]}, 'duplicate config "w3a3"'),
        ("not_an_array", {"extra_configs": "w3a3"}, '"extra_configs" must be an array'),
        ("no_fp32_entry", {"configs": fp32_only, "default_config": "w4a4"}, 'needs an "fp32" entry under "configs"'),
        ("no_calibration_data", {"calibration": None, "dataset": None}, "needs calibration images"),
        ("bad_calibration_images", {"calibration": {"path": FMNIST, "images": 0}}, '"images" must be an integer'),
        ("missing_calibration_data", {"calibration": {"path": os.path.join(TMP, "no-calib-data")}},
         "no-calib-data"),
    ]
    for name, changes, want in cases:
        d = extra_manifest(models, "server-extra-bad", **changes)
        try:  # a server that wrongly starts is stopped by the timeout (and the check fails)
            r = subprocess.run([SERVER, "--models", d, "--port", "0", "--host", "127.0.0.1", "--cache-dir", "",
                                "--eval", "off"], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or ""
            r = subprocess.CompletedProcess(e.cmd, -1, "", err + " [still running after 60 s]")
        tap.check(f"extra_configs_refused_{name}", r.returncode == 1 and want in r.stderr and
                  os.path.join(d, "manifest.json") in r.stderr and "mixnet_s-test" in r.stderr and
                  "ready" not in r.stderr, f"rc={r.returncode} {r.stderr[-600:]}")


def calibration_of(rep, config):
    return {c["config"]: c.get("calibration", {}) for c in rep["configurations"]}.get(config, {})


def test_extra_configs(models, img):
    d = extra_manifest(models, "server-extra")
    cache = os.path.join(TMP, "server-calib-cache")
    subprocess.run(["rm", "-rf", cache])
    jpg = open(img["jpg"], "rb").read()
    fp32 = os.path.join(models, "mixnet_s/fp32.safetensors")
    tmpdir = os.path.join(TMP, "server-extra-tmp")  # where in-memory calibration puts its temporary files
    subprocess.run(["rm", "-rf", tmpdir])
    os.makedirs(tmpdir)
    env = {"TMPDIR": tmpdir}

    def classify(srv, cfg):
        return srv.json("POST", f"/v1/classify?model=mixnet_s-test&config={cfg}&topk=3", jpg,
                        {"Content-Type": "image/jpeg"})

    def w3a3_as_first(srv, name):
        """Check that w3a3 answers as on the first start; return its calibration entry of /v1/report."""
        st, _, j = classify(srv, "w3a3")
        tap.check(name, st == 200 and first and same_predictions(j["predictions"], first), f"{st} {j}")
        st, _, rep = srv.json("GET", "/v1/report")
        return calibration_of(rep, "w3a3") if st == 200 else {}

    # first start: calibrates both, writes the cache, reports ready after that
    srv = Server(d, "--cache-dir", cache, "--eval", "startup", "--eval-limit", "12", "--workers", "1",
                 "--bench-iters", "2", name="server-extra", env=env)
    try:
        log = srv.stderr()
        m = re.search(r"config w3a3: calibrated from (\S+) on 16 images of (\S+) \(split train\) in [0-9.]+ s; "
                      r"calibration cache miss, wrote (\S+)", log)
        tap.check("extra_calibration_logged_cache_miss", m is not None and m.group(1) == fp32 and
                  m.group(2) == FMNIST and "config w2a2-lsq+dw8: calibrated" in log, log[-1500:])
        tap.check("extra_ready_after_calibration", m is not None and log.index("calibration cache miss") <
                  log.index("ready: listening"), log[-800:])
        cfile = m.group(3) if m else ""
        files = sorted(os.listdir(cache)) if os.path.isdir(cache) else []
        tap.check("extra_cache_files", os.path.isfile(cfile) and
                  len([f for f in files if f.startswith("calib-") and f.endswith(".safetensors")]) == 2, str(files))
        # the cached checkpoint is what `lsq quantize` makes of the same FP32 file and images, byte for byte
        q = os.path.join(TMP, "server-extra-w3a3.safetensors")
        r = subprocess.run([LSQ, "quantize", "--model", fp32, "--config", "w3a3", "--calib", FMNIST, "--split", "train",
                            "--calib-images", "16", "--out", q], capture_output=True, text=True)
        tap.check("extra_cache_equals_lsq_quantize", r.returncode == 0 and os.path.isfile(cfile) and
                  open(q, "rb").read() == open(cfile, "rb").read(), r.stderr)
        # classify at the extra configuration: the same answer as `lsq classify` on that checkpoint
        st, _, j = classify(srv, "w3a3")
        want = lsq_classify(q, "w3a3", img["jpg"], 3) if r.returncode == 0 else []
        tap.check("extra_classify_200_matches_cli", st == 200 and j["config"] == "w3a3" and
                  same_predictions(j["predictions"], want), f"{st} {j} {want}")
        first = j.get("predictions") if st == 200 else None
        st, _, j = srv.json("POST", "/predictions/mixnet_s-test/w2a2-lsq+dw8", jpg, {"Content-Type": "image/jpeg"})
        tap.check("extra_predictions_w2a2_lsq", st == 200 and j["config"] == "w2a2-lsq+dw8" and len(j["predictions"]) == 5,
                  f"{st} {j}")
        # a suffixed name in a query string: a bare '+' (form-decoded to a space) and %2B both find it
        for q in ("w2a2-lsq+dw8", "w2a2-lsq%2Bdw8"):
            st, _, j = classify(srv, q)
            tap.check(f"extra_query_plus_{'bare' if '+' in q else 'escaped'}",
                      st == 200 and j["config"] == "w2a2-lsq+dw8", f"{st} {j}")
        st, _, j = srv.json("GET", "/v1/models")
        src = {m["config"]: (m["source"], m["bits"]) for m in j} if st == 200 else {}
        tap.check("extra_v1_models_source", src == {
            "fp32": ("trained", {"weights": 32, "activations": 32}),
            "w4a4": ("trained", {"weights": 4, "activations": 4}),
            "w3a3": ("calibrated", {"weights": 3, "activations": 3}),
            "w2a2-lsq+dw8": ("calibrated", {"weights": 2, "activations": 2})}, str(j))
        st, _, rep = srv.json("GET", "/v1/report")
        confs = {c["config"]: c for c in rep["configurations"]} if st == 200 else {}
        w3 = confs.get("w3a3", {})
        cal = w3.get("calibration", {})
        tap.check("extra_report_calibrated", w3.get("source") == "calibrated" and cal.get("cache") == "miss" and
                  cal.get("images") == 16 and cal.get("split") == "train" and cal.get("from") == fp32 and
                  cal.get("file") == cfile and cal.get("seconds", 0) > 0 and w3["accuracy"]["status"] == "measured" and
                  w3["model_bytes"] == os.path.getsize(cfile) and w3["latency_ms"]["benchmark"]["p50"] > 0 and
                  confs.get("fp32", {}).get("source") == "trained" and "calibration" not in confs.get("fp32", {}),
                  str(w3))
        st, _, j = srv.json("GET", "/v2/models/mixnet_s-test/versions/w3a3")
        tap.check("extra_v2_model_versions", st == 200 and j["versions"] == ["fp32", "w4a4", "w3a3", "w2a2-lsq+dw8"],
                  str(j))
        st, _, j = srv.json("GET", "/v2/models/mixnet_s-test/versions/w2a2-lsq+dw8/ready")
        tap.check("extra_v2_version_ready", st == 200 and j["ready"] is True, str(j))
        req = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                           "data": [base64.b64encode(jpg).decode()]}]}
        st, _, j = srv.json("POST", "/v2/models/mixnet_s-test/versions/w3a3/infer", json.dumps(req).encode(),
                            {"Content-Type": "application/json"})
        tap.check("extra_v2_infer", st == 200 and j["model_version"] == "w3a3" and j["outputs"][0]["shape"] == [1, 10],
                  f"{st} {j}")
        st, _, body = srv.request("GET", "/metrics")
        tap.check("extra_metrics_labels", st == 200 and
                  re.search(rb'lsq_requests_total\{model="mixnet_s-test",config="w3a3",code="200"\} [1-9]', body) and
                  b'lsq_inference_seconds_count{model="mixnet_s-test",config="w2a2-lsq+dw8"}' in body, body[-1500:])
        rc = srv.stop()
        tap.check("extra_server_exit_0", rc == 0, srv.stderr()[-500:])
    finally:
        srv.stop()
    mtimes = {f: os.stat(os.path.join(cache, f)).st_mtime_ns for f in os.listdir(cache) if f.startswith("calib-")}

    # second start: both from the cache, nothing rewritten, the same answers
    srv = Server(d, "--cache-dir", cache, "--eval", "off", "--workers", "1", "--bench-iters", "2", name="server-extra2",
                 env=env)
    try:
        log = srv.stderr()
        tap.check("extra_second_start_cache_hit", f"config w3a3: calibration cache hit, {cfile}" in log and
                  "config w2a2-lsq+dw8: calibration cache hit" in log and "calibrated from" not in log, log[-1500:])
        now = {f: os.stat(os.path.join(cache, f)).st_mtime_ns for f in os.listdir(cache) if f.startswith("calib-")}
        tap.check("extra_cache_not_rewritten", now == mtimes and len(now) == 2, f"{mtimes} {now}")
        cal = w3a3_as_first(srv, "extra_cached_same_predictions")
        tap.check("extra_report_cache_hit", cal.get("cache") == "hit" and "seconds" not in cal, str(cal))
    finally:
        srv.stop()

    # a cache folder that cannot be written (it would be under a file): calibrated in memory, with a warning
    blocker = os.path.join(TMP, "server-extra-blocker")
    open(blocker, "w").close()
    srv = Server(d, "--cache-dir", os.path.join(blocker, "cache"), "--eval", "off", "--workers", "1",
                 "--bench-iters", "2", name="server-extra3", env=env)
    try:
        log = srv.stderr()
        tap.check("extra_unwritable_cache_in_memory", "is not writable" in log and
                  log.count("no calibration cache, kept in memory") == 2 and "w3a3 (calibrated)" in log and
                  "in memory" in log, log[-1500:])
        cal = w3a3_as_first(srv, "extra_in_memory_same_predictions")
        tap.check("extra_report_cache_off", cal.get("cache") == "off" and "file" not in cal, str(cal))
    finally:
        srv.stop()
    tap.check("extra_no_temp_files_left", os.listdir(tmpdir) == [], str(os.listdir(tmpdir)))


# =============================================================================================
# the main server: endpoints and errors
# =============================================================================================

def test_classify(srv, models, img):
    fp32 = os.path.join(models, "mixnet_s/fp32.safetensors")
    w4a4 = os.path.join(models, "mixnet_s/w4a4.safetensors")
    jpg = open(img["jpg"], "rb").read()
    for cfg, path in [("fp32", fp32), ("w4a4", w4a4)]:
        want = lsq_classify(path, cfg, img["jpg"], 3)
        st, h, j = srv.json("POST", f"/v1/classify?model=mixnet_s-test&config={cfg}&topk=3", jpg,
                            {"Content-Type": "image/jpeg"})
        tap.check(f"classify_raw_{cfg}_matches_cli", st == 200 and j["model"] == "mixnet_s-test" and
                  j["config"] == cfg and same_predictions(j["predictions"], want), f"{st} {j} vs {want}")
        if st == 200:
            t = j["timing_ms"]
            tap.check(f"classify_timing_{cfg}", all(t[k] >= 0 for k in ("queue", "decode", "preprocess", "infer")) and
                      t["total"] >= t["infer"] > 0 and t["total"] >= t["decode"] + t["preprocess"] + t["infer"] - 1e-3,
                      str(t))
    # every format, the default config, all classes: softmax sums to 1
    for ext, ctype in [("png", "image/png"), ("webp", "image/webp")]:
        want = lsq_classify(fp32, "fp32", img[ext], 10)
        st, _, j = srv.json("POST", "/v1/classify?model=mixnet_s-test&topk=10", open(img[ext], "rb").read(),
                            {"Content-Type": ctype})
        tap.check(f"classify_{ext}_default_config", st == 200 and j["config"] == "fp32" and
                  same_predictions(j["predictions"], want), f"{st} {j}")
        if st == 200:
            tap.check(f"classify_{ext}_softmax_sums_to_1", abs(sum(p["score"] for p in j["predictions"]) - 1) < 1e-4)
    # multipart/form-data, as curl -F image=@x.jpg sends it
    want = lsq_classify(w4a4, "w4a4", img["jpg"], 5)
    r = subprocess.run(["curl", "-s", "-F", "note=hello", "-F", f"image=@{img['jpg']}",
                        f"http://127.0.0.1:{srv.port}/v1/classify?model=mixnet_s-test&config=w4a4"],
                       capture_output=True, text=True)
    j = json.loads(r.stdout or "null")
    tap.check("classify_multipart_curl", j and same_predictions(j.get("predictions", []), want), r.stdout)
    # TorchServe style: curl -T (PUT) and POST, with and without the config
    r = subprocess.run(["curl", "-s", "-T", img["jpg"], f"http://127.0.0.1:{srv.port}/predictions/mixnet_s-test/w4a4"],
                       capture_output=True, text=True)
    j = json.loads(r.stdout or "null")
    tap.check("predictions_put_curl_T", j and j.get("config") == "w4a4" and same_predictions(j["predictions"], want),
              r.stdout)
    st, _, j = srv.json("POST", "/predictions/mixnet_s-test", jpg, {"Content-Type": "application/octet-stream"})
    tap.check("predictions_post_default", st == 200 and j["config"] == "fp32", f"{st} {j}")
    # request ids: echoed, or generated and unique
    st, h, j = srv.json("POST", "/v1/classify?model=mixnet_s-test", jpg, {"Content-Type": "image/jpeg",
                                                                          "X-Request-Id": "abc-123"})
    tap.check("request_id_echoed", h.get("x-request-id") == "abc-123" and j["request_id"] == "abc-123", str(h))
    ids = {srv.request("GET", "/v2/health/live")[1].get("x-request-id") for _ in range(5)}
    tap.check("request_id_generated_unique", len(ids) == 5 and None not in ids, str(ids))


def test_errors(srv, img):
    jpg = open(img["jpg"], "rb").read()
    cases = [
        ("415_media_type", "POST", "/v1/classify?model=mixnet_s-test", jpg, {"Content-Type": "text/plain"}, 415),
        ("400_garbage_image", "POST", "/v1/classify?model=mixnet_s-test", b"not an image at all",
         {"Content-Type": "image/jpeg"}, 400),
        ("400_truncated_jpeg", "POST", "/v1/classify?model=mixnet_s-test", jpg[:len(jpg) // 2],
         {"Content-Type": "image/jpeg"}, 400),
        ("400_empty_body", "POST", "/v1/classify?model=mixnet_s-test", b"", {"Content-Type": "image/jpeg"}, 400),
        ("400_bad_topk", "POST", "/v1/classify?model=mixnet_s-test&topk=0", jpg, {"Content-Type": "image/jpeg"}, 400),
        ("404_unknown_model", "POST", "/v1/classify?model=nope", jpg, {"Content-Type": "image/jpeg"}, 404),
        ("404_unknown_config", "POST", "/predictions/mixnet_s-test/w9a9", jpg, {}, 404),
        ("404_unknown_path", "GET", "/v3/whatever", None, {}, 404),
        ("405_wrong_method", "GET", "/v1/classify", None, {}, 405),
        ("400_multipart_without_image", "POST", "/v1/classify?model=mixnet_s-test",
         b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--XX--\r\n",
         {"Content-Type": "multipart/form-data; boundary=XX"}, 400),
        ("400_v2_bad_json", "POST", "/v2/models/mixnet_s-test/infer", b"{not json", {"Content-Type": "application/json"}, 400),
        ("400_v2_bad_shape", "POST", "/v2/models/mixnet_s-test/infer",
         json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0] * 192}]}).encode(),
         {"Content-Type": "application/json"}, 400),
        ("400_v2_short_data", "POST", "/v2/models/mixnet_s-test/infer",
         json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0] * 10}]}).encode(),
         {"Content-Type": "application/json"}, 400),
        ("415_v2_media_type", "POST", "/v2/models/mixnet_s-test/infer", b"{}", {"Content-Type": "text/xml"}, 415),
        ("404_v2_unknown_version", "GET", "/v2/models/mixnet_s-test/versions/w1a1", None, {}, 404),
    ]
    for name, method, path, body, headers, want in cases:
        st, h, j = srv.json(method, path, body, headers)
        tap.check(name, st == want and isinstance(j, dict) and isinstance(j.get("error"), str) and j["error"] and
                  "x-request-id" in h, f"{st} {j}")
    st, h, _ = srv.json("GET", "/v1/classify")
    tap.check("405_allow_header", h.get("allow") == "POST", str(h))
    # 413 from Content-Length alone: the server answers before the body is sent
    out = raw_exchange(srv.port, b"POST /v1/classify?model=mixnet_s-test HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Type: image/jpeg\r\nContent-Length: 999999999\r\n\r\n")
    tap.check("413_from_content_length_before_body", out.startswith(b"HTTP/1.1 413") and b'"error"' in out, out[:200])
    # 413 for a chunked body that grows past the limit
    big = os.urandom(3 << 20)
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: image/jpeg",
                        "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                        f"http://127.0.0.1:{srv.port}/v1/classify?model=mixnet_s-test"], input=big, capture_output=True)
    tap.check("413_chunked_over_limit", r.stdout == b"413", r.stdout)
    # hostile image: a PNG header claiming 100000 x 100000 pixels
    png = bytearray(open(img["png"], "rb").read())
    png[16:24] = struct.pack(">II", 100000, 100000)
    st, _, j = srv.json("POST", "/v1/classify?model=mixnet_s-test", bytes(png), {"Content-Type": "image/png"})
    tap.check("400_hostile_image_dimensions", st == 400 and j and "error" in j, f"{st} {j}")


def test_info(srv, models):
    st, _, j = srv.json("GET", "/v1/models")
    tap.check("v1_models", st == 200 and isinstance(j, list) and len(j) == 3 and
              {(m["model"], m["config"]) for m in j} == {("mixnet_s-test", "fp32"), ("mixnet_s-test", "w4a4"),
                                                         ("b0-nodata", "fp32")} and
              all(m["classes"] == 10 and m["input_size"] == 32 and m["model_bytes"] > 0 for m in j), str(j))
    w4 = [m for m in j if m["config"] == "w4a4"][0] if st == 200 else {}
    tap.check("v1_models_bits", w4.get("bits") == {"weights": 4, "activations": 4} and not w4.get("default"), str(w4))
    st, _, rep = srv.json("GET", "/v1/report")
    confs = {(c["model"], c["config"]): c for c in rep["configurations"]} if st == 200 else {}
    fp = confs.get(("mixnet_s-test", "fp32"), {})
    acc = fp.get("accuracy", {})
    r = subprocess.run([LSQ, "eval", "--model", os.path.join(models, "mixnet_s/fp32.safetensors"), "--data",
                        "/usr/share/datasets/fashion-mnist", "--limit", "40", "--json", "-"], capture_output=True, text=True)
    ev = json.loads(r.stdout[r.stdout.index("{"):]) if r.returncode == 0 else {"results": [{}]}
    tap.check("report_accuracy_matches_lsq_eval", acc.get("status") == "measured" and acc.get("images") == 40 and
              abs(acc.get("top1", -1) - ev["results"][0].get("top1", -2)) < 1e-9 and
              acc["dataset"]["size"] == 10000 and acc["dataset"]["name"] == "Fashion-MNIST test", f"{acc} vs {ev}")
    nd = confs.get(("b0-nodata", "fp32"), {}).get("accuracy", {})
    tap.check("report_missing_dataset_unavailable", nd.get("status") == "unavailable" and nd.get("top1") is None and
              "no-such-dataset" in nd.get("reason", ""), str(nd))
    tap.check("report_benchmark_and_live", all(c["latency_ms"]["benchmark"]["p50"] > 0 for c in confs.values()) and
              fp.get("latency_ms", {}).get("live", {}).get("requests", 0) > 0 and fp["bits"]["weights"] == 32 and
              fp["model_bytes"] == os.path.getsize(os.path.join(models, "mixnet_s/fp32.safetensors")), str(fp))
    st, h, body = srv.request("GET", "/metrics")
    text = body.decode()
    m = re.search(r'lsq_requests_total\{model="mixnet_s-test",config="fp32",code="200"\} (\d+)', text)
    tap.check("metrics_prometheus", st == 200 and h["content-type"].startswith("text/plain") and m and
              int(m.group(1)) >= 3 and 'lsq_inference_seconds_bucket{model="mixnet_s-test",config="w4a4",le="+Inf"}' in text
              and "lsq_queue_depth 0" in text and "lsq_inflight_requests 0" in text and
              re.search(r'lsq_requests_total\{model="",config="",code="404"\} \d+', text) and
              'lsq_queue_seconds_count{model="mixnet_s-test",config="fp32"}' in text, text[:3000])
    st, h, body = srv.request("GET", "/")
    tap.check("web_page_served", st == 200 and h["content-type"].startswith("text/html") and b"<svg" in body and
              b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"") and b"https://" not in body, str(h))
    st, _, j = srv.json("GET", "/ping")
    tap.check("ping", st == 200 and j == {"status": "Healthy"}, str(j))


def test_v2(srv, models, img):
    st, _, j = srv.json("GET", "/v2")
    tap.check("v2_server_metadata", st == 200 and j["name"] == "lsq-server" and "binary_tensor_data" in j["extensions"]
              and "classification" in j["extensions"], str(j))
    tap.check("v2_live_ready", srv.request("GET", "/v2/health/live")[0] == 200 and
              srv.request("GET", "/v2/health/ready")[0] == 200)
    st, _, j = srv.json("GET", "/v2/models/mixnet_s-test")
    tap.check("v2_model_metadata", st == 200 and j["versions"] == ["fp32", "w4a4"] and
              j["inputs"][0]["shape"] == [-1, 3, 32, 32] and j["outputs"][0]["shape"] == [-1, 10], str(j))
    st, _, j = srv.json("GET", "/v2/models/mixnet_s-test/versions/w4a4/ready")
    tap.check("v2_model_version_ready", st == 200 and j["ready"] is True and j["version"] == "w4a4", str(j))
    # FP32 tensor: two preprocessed images through the engine's CLI, then the same through v2
    w4a4 = os.path.join(models, "mixnet_s/w4a4.safetensors")
    xs = []
    for ext in ("jpg", "png"):
        xp = os.path.join(TMP, f"v2_{ext}.f32")
        subprocess.run([LSQ, "preprocess", img[ext], "--model", w4a4, "--output", xp], check=True, capture_output=True)
        xs.append(open(xp, "rb").read())
    x = b"".join(xs)
    open(os.path.join(TMP, "v2_x.f32"), "wb").write(x)
    subprocess.run([LSQ, "infer", "--model", w4a4, "--config", "w4a4", "--input", os.path.join(TMP, "v2_x.f32"),
                    "--shape", "2,3,32,32", "--output", os.path.join(TMP, "v2_y.f32")], check=True)
    want = struct.unpack("<20f", open(os.path.join(TMP, "v2_y.f32"), "rb").read())
    floats = list(struct.unpack(f"<{len(x) // 4}f", x))
    req = {"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 32, 32], "data": floats}]}
    st, _, j = srv.json("POST", "/v2/models/mixnet_s-test/versions/w4a4/infer", json.dumps(req).encode(),
                        {"Content-Type": "application/json"})
    got = j["outputs"][0]["data"] if st == 200 else []
    tap.check("v2_infer_fp32_json_matches_lsq_infer", st == 200 and j["id"] == "r1" and j["model_version"] == "w4a4" and
              j["outputs"][0]["shape"] == [2, 10] and len(got) == 20 and
              max(abs(a - b) for a, b in zip(got, want)) < 1e-5, f"{st} {j}")
    # binary tensor extension, in and out (what Triton's clients send)
    hdr = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 32, 32],
                                  "parameters": {"binary_data_size": len(x)}}],
                      "outputs": [{"name": "logits", "parameters": {"binary_data": True}},
                                  {"name": "probabilities", "parameters": {"classification": 3}}]}).encode()
    st, h, body = srv.request("POST", "/v2/models/mixnet_s-test/versions/w4a4/infer", hdr + x,
                              {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(hdr))})
    ok = st == 200 and "inference-header-content-length" in h
    if ok:
        hl = int(h["inference-header-content-length"])
        head = json.loads(body[:hl])
        o0, o1 = head["outputs"]
        got = struct.unpack("<20f", body[hl:hl + 80])
        best = max(range(10), key=lambda i: want[i])
        ok = (o0["parameters"]["binary_data_size"] == 80 and len(body) == hl + 80 and
              max(abs(a - b) for a, b in zip(got, want)) < 1e-5 and o1["datatype"] == "BYTES" and
              o1["shape"] == [2, 3] and o1["data"][0].split(":")[1] == str(best) and len(o1["data"][0].split(":")) == 3)
    tap.check("v2_infer_binary_extension_and_classification", ok, f"{st} {h} {body[:300]}")
    # BYTES input: encoded images, base64 in JSON ...
    fp32 = os.path.join(models, "mixnet_s/fp32.safetensors")
    want_cls = lsq_classify(fp32, "fp32", img["jpg"], 2)
    jpg = open(img["jpg"], "rb").read()
    req = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(jpg).decode()]}],
           "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    st, _, j = srv.json("POST", "/v2/models/mixnet_s-test/infer", json.dumps(req).encode(), {"Content-Type": "application/json"})
    cls = j["outputs"][0]["data"] if st == 200 else []
    tap.check("v2_infer_bytes_base64_classification", st == 200 and len(cls) == 2 and
              [int(c.split(":")[1]) for c in cls] == [p["index"] for p in want_cls] and
              abs(float(cls[0].split(":")[0]) - want_cls[0]["score"]) < 1e-5 and cls[0].split(":")[2] == want_cls[0]["label"],
              f"{st} {j} {want_cls}")
    # ... and length-prefixed in the binary extension
    blob = struct.pack("<I", len(jpg)) + jpg
    hdr = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                  "parameters": {"binary_data_size": len(blob)}}],
                      "outputs": [{"name": "probabilities"}]}).encode()
    st, h, body = srv.request("POST", "/v2/models/mixnet_s-test/infer", hdr + blob,
                              {"Inference-Header-Content-Length": str(len(hdr))})
    j = json.loads(body) if st == 200 else {}
    probs = j.get("outputs", [{}])[0].get("data", [])
    tap.check("v2_infer_bytes_binary", st == 200 and len(probs) == 10 and abs(sum(probs) - 1) < 1e-4 and
              max(range(10), key=lambda i: probs[i]) == want_cls[0]["index"], f"{st} {body[:300]}")
    hdr = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                  "parameters": {"binary_data_size": 10 ** 6}}]}).encode()
    st, _, j = srv.json("POST", "/v2/models/mixnet_s-test/infer", hdr + blob, {"Inference-Header-Content-Length": str(len(hdr))})
    tap.check("v2_binary_size_overrun_400", st == 400 and "binary" in j["error"], f"{st} {j}")


def test_hostile_http(srv, img):
    # malformed HTTP, huge headers, clients vanishing mid-upload and slow clients cost only their connection
    out = raw_exchange(srv.port, b"THIS IS NOT HTTP\r\n\r\n")
    tap.check("malformed_request_line_400", out.startswith(b"HTTP/1.1 400") or out == b"", out[:100])
    out = raw_exchange(srv.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n")
    tap.check("huge_header_rejected", out == b"" or re.match(rb"HTTP/1.1 4\d\d", out) is not None, out[:100])
    slow = socket.create_connection(("127.0.0.1", srv.port))
    slow.sendall(b"POST /v1/classify?model=mixnet_s-test HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n")
    for _ in range(5):  # clients that send part of a body, then vanish
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v1/classify?model=mixnet_s-test HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"\xff\xd8" * 500)
        s.close()
    s = socket.create_connection(("127.0.0.1", srv.port))  # a client that goes away while its request is queued
    jpg = open(img["jpg"], "rb").read()
    s.sendall(b"POST /v1/classify?model=mixnet_s-test HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
              b"Content-Length: %d\r\n\r\n" % len(jpg) + jpg)
    s.close()
    time.sleep(0.5)
    st, _, j = srv.json("POST", "/v1/classify?model=mixnet_s-test", jpg, {"Content-Type": "image/jpeg"})
    tap.check("serves_after_hostile_clients", st == 200 and j["predictions"], f"{st} {j}")
    slow.close()
    time.sleep(0.3)
    log = srv.stdout()
    tap.check("access_log_records_vanished_clients", "(client went away)" in log, log[-1500:])
    st, _, body = srv.request("GET", "/metrics")
    tap.check("no_leaked_requests", re.search(rb"lsq_active_requests 1\n", body) is not None, body[-600:])


def test_concurrency(srv, img):
    jpg = open(img["jpg"], "rb").read()
    png = open(img["png"], "rb").read()
    results, lock = [], threading.Lock()

    def client(i):
        c = srv.conn()
        for k in range(6):  # keep-alive: several requests per connection
            body, ctype = (jpg, "image/jpeg") if (i + k) % 2 else (png, "image/png")
            cfg = "w4a4" if k % 3 == 0 else "fp32"
            c.request("POST", f"/v1/classify?model=mixnet_s-test&config={cfg}&topk=1", body, {"Content-Type": ctype})
            r = c.getresponse()
            j = json.loads(r.read())
            with lock:
                results.append((r.status, ctype, cfg, j["predictions"][0]["index"] if r.status == 200 else None))
        c.close()

    ts = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    by = {}
    for st, ctype, cfg, idx in results:
        by.setdefault((ctype, cfg), set()).add(idx)
    tap.check("concurrent_clients_all_200", len(results) == 72 and all(r[0] == 200 for r in results),
              str([r for r in results if r[0] != 200][:5]))
    tap.check("concurrent_clients_consistent", all(len(v) == 1 for v in by.values()), str(by))


def test_access_log(srv):
    st, _, _ = srv.json("GET", "/v1/models%0Afake-line%22")
    time.sleep(0.2)
    log = srv.stdout().strip().splitlines()
    tap.check("access_log_no_injection", st == 404 and not any(l.startswith("fake-line") for l in log) and
              any('"GET /v1/models?fake-line?" 404' in l for l in log), str(log[-3:]))
    line = [l for l in log if "id=abc-123" in l]
    tap.check("access_log_line", len(line) == 1 and re.match(
        r'^\d{4}-\d\d-\d\dT[0-9:.]+Z 127\.0\.0\.1 "POST /v1/classify" 200 \d+ [0-9.]+ms id=abc-123 '
        r'model=mixnet_s-test config=fp32$', line[0]) is not None, str(line))


# =============================================================================================
# overload, auth, timeouts, drain (servers with slowed inference)
# =============================================================================================

def test_overload(models, img):
    jpg = open(img["jpg"], "rb").read()
    srv = Server(models, "--workers", "1", "--queue", "2", "--timeout", "0.3", "--api-key", "s3cret", "--eval", "off",
                 env={"LSQ_DEBUG_INFER_DELAY_MS": "200"}, name="server-slow")
    auth = {"Content-Type": "image/jpeg", "Authorization": "Bearer s3cret"}
    try:
        st, h, j = srv.json("POST", "/v1/classify?model=mixnet_s-test", jpg, {"Content-Type": "image/jpeg"})
        tap.check("401_missing_key", st == 401 and h.get("www-authenticate") == "Bearer" and "error" in j, f"{st} {j}")
        st, _, _ = srv.json("POST", "/v1/classify?model=mixnet_s-test", jpg,
                            {"Content-Type": "image/jpeg", "Authorization": "Bearer wrong"})
        st2, _, _ = srv.json("POST", "/v2/models/mixnet_s-test/infer", b"{}", {"Authorization": "Bearer s3cre"})
        tap.check("401_wrong_key", st == 401 and st2 == 401, f"{st} {st2}")
        tap.check("key_not_needed_for_info", srv.request("GET", "/v1/models")[0] == 200)
        st, _, j = srv.json("POST", "/v1/classify?model=mixnet_s-test", jpg, auth)
        tap.check("right_key_200", st == 200, f"{st} {j}")
        # burst of 10 against 1 worker (200 ms each) and a queue of 2: 503 with Retry-After, 504 past 0.3 s
        res = []

        def one():
            res.append(srv.json("POST", "/v1/classify?model=mixnet_s-test", jpg, auth))

        ts = [threading.Thread(target=one) for _ in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        codes = sorted(r[0] for r in res)
        tap.check("overload_only_200_503_504", set(codes) <= {200, 503, 504} and 200 in codes and 503 in codes, str(codes))
        tap.check("503_retry_after", all(r[1].get("retry-after") == "1" and "error" in r[2] for r in res if r[0] == 503))
        tap.check("504_timeout", 504 in codes and all("error" in r[2] for r in res if r[0] == 504), str(codes))
    finally:
        srv.stop()


def test_drain(models, img):
    # 3 accepted requests (1 running, 2 queued, 300 ms each), then SIGTERM: all answered 200, exit 0
    jpg = open(img["jpg"], "rb").read()
    srv = Server(models, "--workers", "1", "--queue", "4", "--eval", "off", env={"LSQ_DEBUG_INFER_DELAY_MS": "300"},
                 name="server-drain")
    res = []

    def one():
        res.append(srv.json("POST", "/v1/classify?model=mixnet_s-test", jpg, {"Content-Type": "image/jpeg"}))

    try:
        keep = srv.conn()  # an open keep-alive connection to ask readiness during the drain
        keep.request("GET", "/v2/health/ready")
        keep.getresponse().read()
        ts = [threading.Thread(target=one) for _ in range(3)]
        for t in ts:
            t.start()
            time.sleep(0.02)
        time.sleep(0.1)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        keep.request("GET", "/v2/health/ready")
        ready_during_drain = keep.getresponse().status
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
            refused = False
        except OSError:
            refused = True
        for t in ts:
            t.join()
        rc = srv.proc.wait(30)
        tap.check("drain_finishes_accepted_requests", sorted(r[0] for r in res) == [200, 200, 200],
                  str([(r[0], r[2]) for r in res]))
        tap.check("drain_readiness_503", ready_during_drain == 503, str(ready_during_drain))
        tap.check("drain_stops_accepting", refused)
        tap.check("drain_exit_0", rc == 0 and "drained; exiting" in srv.stderr(), f"rc={rc} {srv.stderr()[-500:]}")
    finally:
        srv.stop()


def test_accuracy_cache(models):
    # first start measures and writes the cache; the second reads it (same figures, status "cached")
    cache = os.path.join(TMP, "server-cache")
    subprocess.run(["rm", "-rf", cache])
    got = []
    for _ in range(2):
        srv = Server(models, "--eval", "startup", "--eval-limit", "12", "--workers", "1", "--cache-dir", cache,
                     name="server-cache")
        try:
            st, _, rep = srv.json("GET", "/v1/report")
            got.append({(c["model"], c["config"]): c["accuracy"] for c in rep["configurations"]})
        finally:
            srv.stop()
    a, b = got[0][("mixnet_s-test", "w4a4")], got[1][("mixnet_s-test", "w4a4")]
    tap.check("accuracy_cache_written_and_read", a["status"] == "measured" and b["status"] == "cached" and
              a["top1"] == b["top1"] and a["top5"] == b["top5"] and b["images"] == 12 and
              len(os.listdir(cache)) == 2, f"{a} {b}")


def test_dct_scale(models):
    """--dct-scale: a large JPEG is decoded at reduced scale, exactly as `lsq preprocess --dct-scale`
    does it (then `lsq infer`); a small one, below twice the resize size, stays exact."""
    from PIL import Image
    import numpy as np
    rng = np.random.RandomState(3)
    big = os.path.join(TMP, "server-dct-big.jpg")
    smooth = np.kron(rng.rand(12, 16, 3), np.ones((40, 40, 1)))  # 480 x 640, blocks plus noise
    Image.fromarray(np.clip(smooth * 230 + rng.rand(480, 640, 3) * 25, 0, 255).astype("uint8")).save(big, "JPEG")
    small = make_images()["jpg"]
    model = os.path.join(models, "mixnet_s/w4a4.safetensors")
    x_dct, x_exact, y = (os.path.join(TMP, f"server-dct-{n}.f32") for n in ("x", "xe", "y"))
    subprocess.run([LSQ, "preprocess", big, "--model", model, "--dct-scale", "--output", x_dct], check=True)
    subprocess.run([LSQ, "preprocess", big, "--model", model, "--output", x_exact], check=True)
    a, b = np.fromfile(x_dct, "<f4"), np.fromfile(x_exact, "<f4")
    tap.check("dct_cli_reference_differs_from_exact", a.shape == b.shape and np.abs(a - b).max() > 0,
              "the test image must be large enough to be DCT-scaled")
    S = int(round((a.size / 3) ** 0.5))
    subprocess.run([LSQ, "infer", "--model", model, "--config", "w4a4", "--input", x_dct, "--shape", f"1,3,{S},{S}",
                    "--output", y], check=True)
    logits = np.fromfile(y, "<f4").astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    want_top = [int(i) for i in np.argsort(-p)[:3]]
    srv = Server(models, "--eval", "off", "--workers", "1", "--bench-iters", "2", "--dct-scale", name="server-dct")
    try:
        tap.check("dct_logged", "DCT-scaled" in srv.stderr() + srv.stdout(), srv.stderr()[-400:])
        st, _, j = srv.json("POST", "/v1/classify?model=mixnet_s-test&config=w4a4&topk=3", open(big, "rb").read(),
                            {"Content-Type": "image/jpeg"})
        got = j.get("predictions", []) if st == 200 else []
        tap.check("dct_large_jpeg_matches_cli", st == 200 and [g["index"] for g in got] == want_top and
                  all(abs(g["score"] - p[i]) < 1e-4 for g, i in zip(got, want_top)), f"{st} {j} vs {want_top}")
        want = lsq_classify(model, "w4a4", small, 3)
        st, _, j = srv.json("POST", "/v1/classify?model=mixnet_s-test&config=w4a4&topk=3", open(small, "rb").read(),
                            {"Content-Type": "image/jpeg"})
        tap.check("dct_small_jpeg_stays_exact", st == 200 and same_predictions(j["predictions"], want), f"{st} {j}")
    finally:
        srv.stop()
    r = subprocess.run([SERVER, "--help"], env=dict(os.environ, LSQ_DCT_SCALE="yes"), capture_output=True, text=True)
    tap.check("dct_env_bad_value_refused", r.returncode == 2 and "LSQ_DCT_SCALE" in r.stderr, r.stderr)


def main():
    models = ensure_models()
    img = make_images()
    test_startup(models)
    test_extra_configs_refused(models)
    test_extra_configs(models, img)
    srv = Server(models, "--eval", "startup", "--eval-limit", "40", "--workers", "2", "--max-body", str(1 << 20),
                 name="server-main")
    try:
        test_classify(srv, models, img)
        test_errors(srv, img)
        test_v2(srv, models, img)
        test_info(srv, models)
        test_hostile_http(srv, img)
        test_concurrency(srv, img)
        test_access_log(srv)
        tap.check("main_server_alive", srv.proc.poll() is None)
        rc = srv.stop()
        tap.check("main_server_sigterm_exit_0", rc == 0, f"rc={rc} {srv.stderr()[-800:]}")
    finally:
        srv.stop()
    test_overload(models, img)
    test_drain(models, img)
    test_accuracy_cache(models)
    test_dct_scale(models)
    tap.finish()


if __name__ == "__main__":
    main()
