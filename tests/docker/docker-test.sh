#!/usr/bin/env bash
# tests/docker/docker-test.sh [BUILD] - the container deployment, verified without a Docker engine
# (issue 6). Run as root, from `make docker-test` (which installs the packages first):
#
#   1. base images debian:bookworm[-slim] from debootstrap, cached (tests/docker/base-images.sh)
#   2. `podman build --isolation chroot --format docker` of docker/Dockerfile and docker/nginx/Dockerfile
#   3. the image: HEALTHCHECK kept, non-root numeric user, size < 300 MB, port, tini entrypoint
#   4. the image's own entrypoint and command, run from `podman image mount` + chroot as the image's
#      user, in fresh PID and mount namespaces (so tini is PID 1, as in a container); readiness, the
#      HEALTHCHECK command, a JPEG classified with curl, SIGTERM -> drain -> exit status 0
#   5. the load balancer image's nginx configuration loads (nginx -t in its chroot)
#   6. docker/compose.yaml with `docker-compose config`; docker/compose.yaml and docker/k8s/ with
#      yamllint -s; docker/k8s/ rendered by `kubectl kustomize` when kubectl is installed; the
#      manifests' invariants (probe paths, grace period above the drain deadline, requests/limits)
#
# Prints "ok NAME" / "not ok NAME: why" per check (tests/run.sh counts them), a closing
# "PASS docker-test" or "FAIL docker-test" line, and exits 0 or 1.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${1:-build}
LSQ=$root/$build/lsq
cache=$root/build/docker
image=localhost/lsq-server:test
lb_image=localhost/lsq-nginx:test
port=${LSQ_DOCKER_TEST_PORT:-18080}
T=$(mktemp -d "${LSQ_TMP:-/tmp}/docker-test.XXXXXX")
start=$SECONDS npass=0 failed=()

ok()  { echo "ok $1${2:+ # $2}"; npass=$((npass + 1)); }
nok() { echo "not ok $1${2:+: $2}"; failed+=("$1"); }
note() { echo "# $*"; }
finish() {
    local secs=$((SECONDS - start))
    if [ ${#failed[@]} -eq 0 ]; then echo "PASS docker-test: $npass checks in ${secs}s"; exit 0; fi
    echo "FAIL docker-test: ${#failed[@]} of $((npass + ${#failed[@]})) checks failed (${failed[*]}) in ${secs}s; logs in $T"
    exit 1
}
server_pid= mounted=
cleanup() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null
    [ -n "$mounted" ] && podman image unmount "$image" >/dev/null 2>&1
}
trap cleanup EXIT

# --- preconditions -------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || { nok preconditions "run as root (podman build, image mount, chroot)"; finish; }
missing=
for c in podman debootstrap docker-compose yamllint curl unshare chroot; do
    command -v "$c" >/dev/null || missing="$missing $c"
done
[ -z "$missing" ] || { nok preconditions "missing:$missing (make deps-docker installs them)"; finish; }
[ -x "$LSQ" ] || { nok preconditions "$LSQ not built (make)"; finish; }
ok preconditions

# --- 1. base images ----------------------------------------------------------------------------------
t0=$SECONDS
if tests/docker/base-images.sh "$cache" >"$T/base.log" 2>&1; then ok base_images "$((SECONDS - t0))s"
else nok base_images "$(tail -3 "$T/base.log" | tr '\n' ' ')"; finish; fi

# --- 2. the images -------------------------------------------------------------------------------------
# The image bakes in models/bundled/ (the trained models) when it exists. Until it does, a generated
# demo models directory stands in, passed as --build-arg MODELS: said here, not hidden.
build_args=()
if [ -f models/bundled/manifest.json ]; then
    note "models: models/bundled/ (the bundled models)"
else
    demo=build/docker/demo-models
    if [ ! -f "$demo/manifest.json" ]; then
        mkdir -p "$demo/mixnet_s"
        "$LSQ" init --arch mixnet_s --classes 10 --size 32 --seed 0 --out "$demo/mixnet_s/fp32.safetensors" >/dev/null &&
        cat >"$demo/manifest.json" <<'JSON'
{"version":1,"models":[{"name":"demo","arch":"mixnet_s","default_config":"fp32",
  "configs":[{"config":"fp32","file":"mixnet_s/fp32.safetensors"}]}]}
JSON
    fi
    note "models: models/bundled/ does not exist yet: the image is built with --build-arg MODELS=$demo"
    note "        (generated: mixnet_s, 10 classes, 32x32, seeded random weights)"
    build_args+=(--build-arg "MODELS=$demo")
fi
build_id=$(git describe --always --dirty 2>/dev/null || echo unknown)
t0=$SECONDS
if podman build --isolation chroot --format docker --pull=never -f docker/Dockerfile -t "$image" \
        "${build_args[@]}" --build-arg "LSQ_BUILD_ID=$build_id" . >"$T/build.log" 2>&1; then
    ok image_build "$((SECONDS - t0))s"
else nok image_build "$(tail -5 "$T/build.log" | tr '\n' ' ')"; finish; fi
t0=$SECONDS
if podman build --isolation chroot --format docker --pull=never -f docker/nginx/Dockerfile -t "$lb_image" . \
        >"$T/build-lb.log" 2>&1; then ok lb_image_build "$((SECONDS - t0))s"
else nok lb_image_build "$(tail -5 "$T/build-lb.log" | tr '\n' ' ')"; fi

# --- 3. the image's metadata ------------------------------------------------------------------------
podman image inspect "$image" >"$T/inspect.json"
py_get() { /usr/bin/python3 -c "import json,sys; d=json.load(open('$T/inspect.json'))[0]; c=d['Config']; $1"; }
hc=$(py_get "h=c.get('Healthcheck') or d.get('HealthCheck') or {}; print(' '.join(h.get('Test', [])))")
case $hc in *lsq-healthcheck*) ok healthcheck_kept "$hc" ;; *) nok healthcheck_kept "no HEALTHCHECK in the image ('$hc')" ;; esac
user=$(py_get "print(c.get('User', ''))")
case $user in ''|0|0:*|root|root:*) nok non_root_user "User is '$user'" ;; *) ok non_root_user "User $user" ;; esac
size=$(py_get "print(d['Size'])")
size_mb=$(( (size + 500000) / 1000000 ))
if [ "$size" -lt 300000000 ]; then ok image_size "$size_mb MB (podman image inspect .Size, uncompressed; limit 300 MB)"
else nok image_size "$size_mb MB, limit 300 MB"; fi
echo "$size" >"$cache/image-size.txt"
ports=$(py_get "print(' '.join(c.get('ExposedPorts', {})))")
[ "$ports" = 8080/tcp ] && ok exposes_8080 || nok exposes_8080 "ExposedPorts: $ports"
entry=$(py_get "print(' '.join(c.get('Entrypoint') or []))")
case $entry in /usr/bin/tini\ --\ *) ok entrypoint_tini "$entry" ;; *) nok entrypoint_tini "Entrypoint: $entry" ;; esac

# --- 4. run the image's contents ------------------------------------------------------------------------
mnt=$(podman image mount "$image") && mounted=1 || { nok image_mount; finish; }
# What a container runtime would run: Entrypoint + Cmd, Env, WorkingDir, User (LSQ_PORT moved off
# 8080 so the test does not meet a server already running here).
mapfile -t argv < <(py_get "print('\n'.join((c.get('Entrypoint') or []) + (c.get('Cmd') or [])))")
mapfile -t envv < <(py_get "print('\n'.join(c.get('Env') or []))")
workdir=$(py_get "print(c.get('WorkingDir') or '/')")
envv+=("LSQ_PORT=$port" "HOSTNAME=lsq-test")
run_in_image() { # extra mount commands, then the command line... (as the image's user, in fresh namespaces)
    unshare --pid --fork --mount --propagation private /bin/bash -c '
        mnt=$1; shift
        mount -t proc proc "$mnt/proc" && mount --bind /dev "$mnt/dev" &&
        mount --bind -o ro /sys "$mnt/sys" && mount -t tmpfs -o mode=1777 tmpfs "$mnt/tmp" || exit 125
        if [ -d "$mnt/var/cache/lsq" ]; then mount -t tmpfs -o uid=10001,gid=10001 tmpfs "$mnt/var/cache/lsq"; fi
        exec chroot --userspec="$USERSPEC" "$mnt" "$@"' bash "$mnt" "$@"
}
export USERSPEC=$user
run_in_image /usr/bin/env -i -C "$workdir" "${envv[@]}" "${argv[@]}" >"$T/server.log" 2>&1 &
server_pid=$!
note "running in the image: (cd $workdir && ${argv[*]}) as $user, env ${envv[*]}"
ready=
for _ in $(seq 1 240); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/health/ready")
    [ "$code" = 200 ] && { ready=1; break; }
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.5
done
if [ -n "$ready" ]; then ok image_server_ready "$((SECONDS - t0))s after start"
else nok image_server_ready "$(tail -5 "$T/server.log" | tr '\n' ' ')"; finish; fi
tini_pid=$(pgrep -P "$server_pid" | head -1)
nspid=$(awk '/^NSpid:/ {print $NF}' "/proc/$tini_pid/status" 2>/dev/null)
tini_comm=$(cat "/proc/$tini_pid/comm" 2>/dev/null)
srv_pid=$(pgrep -P "$tini_pid" | head -1)
srv_uid=$(awk '/^Uid:/ {print $2}' "/proc/$srv_pid/status" 2>/dev/null)
if [ "$tini_comm" = tini ] && [ "$nspid" = 1 ] && [ "$srv_uid" = "${user%%:*}" ]; then
    ok pid1_tini_server_uid "tini is PID 1 in its namespace; lsq-server runs as uid $srv_uid"
else nok pid1_tini_server_uid "pid 1 is '$tini_comm' (ns pid $nspid), server uid '$srv_uid'"; fi

# The HEALTHCHECK's own command, in the image, as the image's user.
hc_cmd=$(py_get "h=c.get('Healthcheck') or d.get('HealthCheck') or {}; t=h.get('Test', []); print(t[1] if len(t) > 1 else '')")
if [ -n "$hc_cmd" ] && chroot --userspec="$user" "$mnt" /usr/bin/env -i "${envv[@]}" "$hc_cmd"; then ok healthcheck_command_passes
else nok healthcheck_command_passes "'$hc_cmd' failed against a ready server"; fi

# A JPEG, classified through the image's server.
if /usr/bin/python3 -c "
from PIL import Image
im = Image.new('RGB', (96, 64))
im.putdata([(x * 2, y * 3, (x + y) % 256) for y in range(64) for x in range(96)])
im.save('$T/test.jpg', quality=90)" 2>"$T/jpeg.log" || convert -size 96x64 gradient:red-blue "$T/test.jpg" 2>>"$T/jpeg.log"; then :; fi
code=$(curl -s -o "$T/classify.json" -w '%{http_code}' -H 'Content-Type: image/jpeg' --data-binary "@$T/test.jpg" \
       "http://127.0.0.1:$port/v1/classify?topk=3")
if [ "$code" = 200 ] && /usr/bin/python3 -c "
import json, sys
r = json.load(open('$T/classify.json'))
p = r['predictions']
assert len(p) == 3 and all(0 <= x['score'] <= 1 for x in p), r
print('# classify:', r['model'], r['config'], [(x['label'], round(x['score'], 3)) for x in p], 'timing_ms', r.get('timing_ms'))
"; then ok classify_jpeg_curl "HTTP 200"
else nok classify_jpeg_curl "HTTP $code: $(head -c 300 "$T/classify.json")"; fi

# SIGTERM to the container's PID 1, as `docker stop` does: tini forwards it, the server drains, exit 0.
t0=$SECONDS
kill -TERM "$tini_pid"
rc=timeout
for _ in $(seq 1 90); do
    if ! kill -0 "$server_pid" 2>/dev/null; then wait "$server_pid"; rc=$?; break; fi
    sleep 0.5
done
server_pid=
if [ "$rc" = 0 ]; then ok sigterm_drain_exit_0 "exited 0 $((SECONDS - t0))s after SIGTERM"
else nok sigterm_drain_exit_0 "exit status $rc: $(tail -3 "$T/server.log" | tr '\n' ' ')"; fi
grep -qi 'drain' "$T/server.log" && ok sigterm_logged_drain || nok sigterm_logged_drain "no drain line in the server's log"

# --- 5. the load balancer image's nginx configuration -------------------------------------------------
if lb_mnt=$(podman image mount "$lb_image" 2>/dev/null); then
    echo "127.0.0.1 lsq" >"$T/hosts"
    if unshare --mount --propagation private /bin/bash -c '
        mount --bind "$2" "$1/etc/hosts" && mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" &&
        exec chroot --userspec=www-data "$1" nginx -e stderr -t -c /etc/nginx/nginx.conf' bash "$lb_mnt" "$T/hosts" >"$T/nginx-t.log" 2>&1
    then ok lb_nginx_config_loads
    else nok lb_nginx_config_loads "$(tail -3 "$T/nginx-t.log" | tr '\n' ' ')"; fi
    podman image unmount "$lb_image" >/dev/null
else nok lb_nginx_config_loads "cannot mount $lb_image"; fi

# --- 6. compose and Kubernetes files ------------------------------------------------------------------
if docker-compose -f docker/compose.yaml config -q 2>"$T/compose.log"; then ok compose_config
else nok compose_config "$(tr '\n' ' ' <"$T/compose.log")"; fi
if yamllint -s -c docker/.yamllint docker/compose.yaml docker/k8s/ >"$T/yamllint.log" 2>&1; then ok yamllint
else nok yamllint "$(head -5 "$T/yamllint.log" | tr '\n' ' ')"; fi
if command -v kubectl >/dev/null; then
    if kubectl kustomize docker/k8s >"$T/k8s.yaml" 2>"$T/kubectl.log"; then ok kubectl_kustomize "rendered $(grep -c '^kind:' "$T/k8s.yaml") objects"
    else nok kubectl_kustomize "$(head -3 "$T/kubectl.log" | tr '\n' ' ')"; fi
else ok kubectl_kustomize "SKIP kubectl is not installed (not packaged in Debian 12)"; fi
if /usr/bin/python3 tests/docker/check_manifests.py docker >"$T/manifests.log" 2>&1; then
    ok manifest_invariants "$(tail -1 "$T/manifests.log")"
else nok manifest_invariants "$(tr '\n' ' ' <"$T/manifests.log")"; fi

finish
