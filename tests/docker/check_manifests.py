"""check_manifests.py DOCKER_DIR - the deployment files' invariants, which yamllint and
`docker-compose config` cannot see: probes on the v2 health endpoints, CPU and memory requests and
limits, termination grace above preStop plus the server's drain deadline, Service and HPA aimed at
the Deployment, compose's stop_grace_period above the drain deadline, and one upstream line in the
nginx configuration for cluster-test to rewrite. Exits 1 with the first broken rule."""
import os
import re
import sys

import yaml

DEFAULT_DRAIN_S = 30  # lsq-server --drain default


def seconds(v):
    m = re.fullmatch(r"(\d+)(s?)", str(v).strip())
    assert m, f"cannot read a duration from {v!r}"
    return int(m.group(1))


def main(d):
    docs = []
    for f in sorted(os.listdir(os.path.join(d, "k8s"))):
        if f.endswith(".yaml") and f != "kustomization.yaml":
            docs += [x for x in yaml.safe_load_all(open(os.path.join(d, "k8s", f))) if x]
    by_kind = {x["kind"]: x for x in docs}
    for k in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        assert k in by_kind, f"k8s: no {k}"
    dep = by_kind["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    assert all(labels.get(k) == v for k, v in sel.items()), "Deployment selector does not match its pods"
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready", "readiness probe path"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", "liveness probe path"
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            assert r in c["resources"][kind], f"resources.{kind}.{r} missing"
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    drain = int(env.get("LSQ_DRAIN") or DEFAULT_DRAIN_S)
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[-1]) if pre and pre[-1].isdigit() else 0
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > pre_s + drain, f"terminationGracePeriodSeconds {grace} <= preStop {pre_s} + drain {drain}"
    assert pod["securityContext"].get("runAsNonRoot") is True, "runAsNonRoot"
    svc = by_kind["Service"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selector"
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert hpa["kind"] == "Deployment" and hpa["name"] == dep["metadata"]["name"], "HPA target"

    compose = yaml.safe_load(open(os.path.join(d, "compose.yaml")))
    lsq = compose["services"]["lsq"]
    assert "ports" not in lsq, "compose: replicas must not publish ports (they scale)"
    assert seconds(lsq["stop_grace_period"]) > drain, "compose: stop_grace_period <= drain deadline"
    assert len(compose["services"]["lb"]["ports"]) == 1, "compose: one published port"

    conf = open(os.path.join(d, "nginx", "lsq.conf")).read()
    assert len(re.findall(r"^\s*server lsq:8080\b[^;]*;", conf, re.M)) == 1, "nginx: one 'server lsq:8080' line"
    assert re.search(r"^\s*least_conn;", conf, re.M), "nginx: least_conn"
    nu = re.search(r"^\s*proxy_next_upstream\s+([^;]*);", conf, re.M)
    assert nu, "nginx: no proxy_next_upstream"
    # Retrying on 503 makes nginx mark overloaded replicas down and answer 502 to everyone
    # (docker/README.md, "Load balancing and retries").
    assert "http_503" not in nu.group(1).split(), "nginx: proxy_next_upstream must not retry http_503"
    assert {"error", "non_idempotent"} <= set(nu.group(1).split()), "nginx: retry connection errors, POSTs too"
    print(f"grace {grace}s > preStop {pre_s}s + drain {drain}s; probes on /v2/health; {len(docs)} k8s objects")


if __name__ == "__main__":
    try:
        main(sys.argv[1] if len(sys.argv) > 1 else "docker")
    except AssertionError as e:
        sys.exit(f"check_manifests: {e}")
