#!/usr/bin/env bash
# tests/docker/cluster-test.sh [BUILD] - scale-out behind nginx, on loopback (issue 6): three
# lsq-server replicas, Debian's nginx with docker/nginx/lsq.conf (the compose file's load balancer
# configuration: only the `server lsq:8080` line becomes one line per replica, and the listen
# port changes), wrk POSTing a JPEG through nginx. Four phases: before (3 replicas), during (SIGTERM
# to one replica under load), after (2 replicas), overload (far more connections than the two
# replicas' queues hold). Prints throughput, latency and status counts per phase, what nginx
# retried, and the drained replica's exit. Passes when no client saw a socket error or a status
# other than 200 and the documented 503 (queue full), nginx sent the drained replica nothing after
# it exited, and the replica exited 0 after draining. Needs build/lsq-server, nginx, wrk, curl.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${1:-build}
SERVER=$root/$build/lsq-server LSQ=$root/$build/lsq
base=${LSQ_CLUSTER_PORT:-18180}          # nginx; replicas on base+1 .. base+3 (must be free)
phase_s=${LSQ_CLUSTER_PHASE_S:-8}        # seconds per phase
conns=${LSQ_CLUSTER_CONNECTIONS:-12}
over_conns=${LSQ_CLUSTER_OVERLOAD_CONNECTIONS:-64}   # the overload phase: far above 2 x (queue 8 + 1)
T=$(mktemp -d "${LSQ_TMP:-/tmp}/cluster-test.XXXXXX")
pids=() nginx_pid= failed=() npass=0 start=$SECONDS
ok()  { echo "ok $1${2:+ # $2}"; npass=$((npass + 1)); }
nok() { echo "not ok $1${2:+: $2}"; failed+=("$1"); }
finish() {
    if [ ${#failed[@]} -eq 0 ]; then echo "PASS cluster-test: $npass checks in $((SECONDS - start))s"; exit 0; fi
    echo "FAIL cluster-test: ${failed[*]} (logs in $T)"; exit 1
}
cleanup() {
    for p in "${pids[@]}" $nginx_pid; do kill -KILL "$p" 2>/dev/null; done
}
trap cleanup EXIT

for c in nginx wrk curl; do command -v "$c" >/dev/null || { nok preconditions "$c not installed (make deps-docker)"; finish; }; done
[ -x "$SERVER" ] || { nok preconditions "$SERVER not built"; finish; }

for p in $base $((base + 1)) $((base + 2)) $((base + 3)); do
    if curl -s -o /dev/null "http://127.0.0.1:$p/"; then nok ports_free "port $p is in use (set LSQ_CLUSTER_PORT)"; finish; fi
done

# A model heavy enough (mixnet_s at 224x224, ~5 ms per request) that the drained replica has
# requests in flight and queued when SIGTERM arrives.
models=build/docker/cluster-models
tests/docker/demo-models.sh "$LSQ" "$models" mixnet_s || { nok demo_models; finish; }
/usr/bin/python3 -c "
from PIL import Image
im = Image.new('RGB', (320, 240))
im.putdata([(x % 256, y, (x * y) % 256) for y in range(240) for x in range(320)])
im.save('$T/test.jpg', quality=85)" || { nok jpeg; finish; }

# --- nginx: docker/nginx/lsq.conf with the replicas' addresses -------------------------------------
mkdir -p "$T/nginx/tmp" && chmod 755 "$T" "$T/nginx" && chmod 1777 "$T/nginx/tmp"
servers=$(for i in 1 2 3; do printf '    server 127.0.0.1:%d\\1;\\n' $((base + i)); done)
sed -E -e "s|^ *server lsq:8080([^;]*);|$servers|" -e "s|^( *)listen 8080;|\\1listen 127.0.0.1:$base;|" \
    -e "s|access_log /dev/stdout lsq;|access_log $T/access.log lsq;|" docker/nginx/lsq.conf >"$T/nginx/lsq.conf"
n_servers=$(grep -c '^ *server 127.0.0.1:' "$T/nginx/lsq.conf")
if [ "$n_servers" = 3 ] && grep -q "listen 127.0.0.1:$base;" "$T/nginx/lsq.conf"; then
    ok nginx_config_from_compose "$(grep -m1 '^ *server 127.0.0.1:' "$T/nginx/lsq.conf" | sed 's/^ *//')"
else nok nginx_config_from_compose "rewrite of docker/nginx/lsq.conf matched $n_servers server lines"; finish; fi
cat >"$T/nginx/nginx.conf" <<NGINX
# cluster-test's nginx main configuration; the load balancing is lsq.conf (from docker/nginx/lsq.conf).
worker_processes 1;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    client_body_temp_path $T/nginx/tmp/body;
    proxy_temp_path $T/nginx/tmp/proxy;
    fastcgi_temp_path $T/nginx/tmp/fastcgi;
    uwsgi_temp_path $T/nginx/tmp/uwsgi;
    scgi_temp_path $T/nginx/tmp/scgi;
    default_type application/octet-stream;
    include $T/nginx/lsq.conf;
}
NGINX
nginx -e "$T/nginx/error.log" -t -c "$T/nginx/nginx.conf" >"$T/nginx-t.log" 2>&1 ||
    { nok nginx_config_test "$(tr '\n' ' ' <"$T/nginx-t.log")"; finish; }

# --- three replicas, then nginx ---------------------------------------------------------------------
for i in 1 2 3; do
    LSQ_PORT=$((base + i)) LSQ_MODELS=$models LSQ_WORKERS=1 LSQ_THREADS=1 LSQ_QUEUE=8 LSQ_DRAIN=30 \
        LSQ_EVAL=off LSQ_BENCH_ITERS=3 LSQ_CACHE_DIR= LSQ_ACCESS_LOG=0 "$SERVER" >"$T/replica$i.log" 2>&1 &
    pids[$i]=$!
done
for i in 1 2 3; do
    for _ in $(seq 1 240); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((base + i))/v2/health/ready")" = 200 ] && break
        kill -0 "${pids[$i]}" 2>/dev/null || break
        sleep 0.5
    done
done
for i in 1 2 3; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((base + i))/v2/health/ready")" = 200 ] ||
        { nok replicas_ready "replica $i: $(tail -3 "$T/replica$i.log" | tr '\n' ' ')"; finish; }
done
ok replicas_ready "3 replicas on 127.0.0.1:$((base + 1))-$((base + 3))"
nginx -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 1 40); do
    code=$(curl -s -o "$T/first.json" -w '%{http_code}' -H 'Content-Type: image/jpeg' --data-binary "@$T/test.jpg" \
           "http://127.0.0.1:$base/v1/classify?model=demo")
    [ "$code" = 200 ] && break; sleep 0.25
done
[ "$code" = 200 ] && ok classify_through_nginx || { nok classify_through_nginx "HTTP $code"; finish; }

# --- the three phases ----------------------------------------------------------------------------
run_wrk() { # phase name [connections]
    LSQ_JPEG=$T/test.jpg wrk -t2 -c"${2:-$conns}" -d"${phase_s}s" --timeout 10s -s tests/docker/wrk-classify.lua \
        "http://127.0.0.1:$base" >"$T/wrk-$1.log" 2>&1
    grep '^requests=' "$T/wrk-$1.log" | tail -1
}
results=()
echo "# $conns connections, ${phase_s}s per phase, 3 replicas x 1 worker, mixnet_s 224x224 (random weights)"
: >"$T/access.log"   # count only the phases
results+=("before $(run_wrk before)")
echo "# before:  ${results[0]#before }"
lines_before=$(wc -l <"$T/access.log")

victim=2
victim_port=$((base + victim))
run_wrk during >/dev/null &
wrk_pid=$!
sleep $((phase_s / 3))
t_term=$(date +%s.%N)
kill -TERM "${pids[$victim]}"
# Readiness turns 503 (or the port closes) while the replica drains.
ready_during=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$victim_port/v2/health/ready")
wait "${pids[$victim]}"; victim_rc=$?
t_exit=$(date +%s.%N)
wait "$wrk_pid"
results+=("during $(grep '^requests=' "$T/wrk-during.log" | tail -1)")
echo "# during:  ${results[1]#during }"
lines_during=$(wc -l <"$T/access.log")

results+=("after $(run_wrk after)")
echo "# after:   ${results[2]#after }"
lines_after=$(wc -l <"$T/access.log")
# Overload: more connections than the two replicas' workers and queues hold. The replicas answer
# 503 (queue full, Retry-After), nginx tries the other replica, and a client gets 503 only when
# both refused: the documented 503. Nothing else may reach the client.
results+=("overload $(run_wrk overload "$over_conns")")
echo "# overload ($over_conns connections): ${results[3]#overload }"

# --- what happened -----------------------------------------------------------------------------------
drain_s=$(printf "%.2f" "$(echo "$t_exit - $t_term" | bc)")
echo "# replica $victim: SIGTERM -> exit status $victim_rc after ${drain_s}s; readiness right after SIGTERM: ${ready_during:-000} (000 = connection refused)"
grep -iE 'sigterm|drain' "$T/replica$victim.log" | sed 's/^/#   replica log: /'
# nginx's view: requests per replica in each phase, and requests it passed to a second replica.
# Exit status 1 when the drained replica served a request in the after phase.
/usr/bin/python3 - "$T/access.log" "$lines_before" "$lines_during" "$lines_after" "$victim_port" <<'PY'
import re, sys, collections
path, nb, nd, na, vport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lines = open(path).read().splitlines()
routed_after = 0
for name, part in (("before", lines[:nb]), ("during", lines[nb:nd]), ("after", lines[nd:na]), ("overload", lines[na:])):
    per = collections.Counter(); retried = collections.Counter()
    for l in part:
        ups = re.search(r"upstream=(\S.*?) upstream_status=(.*?) upstream_time", l)
        if not ups: continue
        addrs = [a.strip() for a in ups.group(1).split(",")]
        sts = [s.strip() for s in ups.group(2).split(",")]
        per[addrs[-1].rsplit(":", 1)[-1]] += 1
        if len(addrs) > 1:
            retried[" -> ".join(sts)] += 1
    print(f"# nginx {name}: served by port {dict(sorted(per.items()))}; retried on another replica: "
          f"{sum(retried.values())} {dict(retried) if retried else ''}")
    if name == "after": routed_after = per[vport]
sys.exit(1 if routed_after else 0)
PY
routed_after=$?

# --- verdicts ----------------------------------------------------------------------------------------
for r in "${results[@]}"; do
    phase=${r%% *}; line=${r#* }
    if [ "$line" = "$phase" ] || ! grep -q 'requests=' <<<"$line"; then nok "phase_$phase" "wrk printed no result ($T/wrk-$phase.log)"; continue; fi
    others=$(grep -oE 'status_[0-9]+=[0-9]+' <<<"$line" | grep -vE '^status_(200|503)=' | tr '\n' ' ')
    sock=$(grep -oE 'socket_errors=[0-9/]+' <<<"$line"); sock=${sock#socket_errors=}
    n503=$(grep -oE 'status_503=[0-9]+' <<<"$line"); n503=${n503#status_503=}
    n200=$(grep -oE 'status_200=[0-9]+' <<<"$line"); n200=${n200#status_200=}
    if [ -z "$others" ] && [ "$sock" = 0/0/0/0 ] && [ "${n200:-0}" -gt 0 ]; then
        ok "phase_${phase}_no_failures" "${n200} x 200, ${n503:-0} x 503 (documented: overload), socket errors $sock"
    else nok "phase_${phase}_no_failures" "other statuses: ${others:-none}; socket errors $sock"; fi
done
[ "$routed_after" = 0 ] && ok no_requests_to_drained_replica_after || nok no_requests_to_drained_replica_after "nginx still sent requests to port $victim_port"
[ "$victim_rc" = 0 ] && ok drained_replica_exit_0 "exit 0 after ${drain_s}s" || nok drained_replica_exit_0 "exit status $victim_rc"
kill -QUIT "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null; nginx_pid=
finish
