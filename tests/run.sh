#!/usr/bin/env bash
# tests/run.sh BUILD [SUITE...] - run the test suites and print one closing "N passed, N failed" line.
#
# Suites: unit (C unit tests), cli (shell tests of build/lsq), torch (PyTorch comparisons), server
# (build/lsq-server over real HTTP, and its web page in headless Chromium).
# Not run by default: docker (tests/docker/docker-test.sh: the image, compose file and manifests via
# podman, as root) and cluster (tests/docker/cluster-test.sh: replicas behind nginx, one drained);
# `make test WITH_DOCKER=1` runs "default docker cluster", as CI does. "default" stands for the
# default suites.
# Every test program prints TAP-like lines, "ok <name>" or "not ok <name>"; a program that exits
# non-zero without printing a "not ok" line counts as one failure of its own.
set -u
build=${1:?usage: tests/run.sh BUILD [SUITE...]}; shift
default_suites=(unit cli torch server)
suites=("$@"); [ ${#suites[@]} -gt 0 ] || suites=(default)
expanded=(); for s in "${suites[@]}"; do
    if [ "$s" = default ]; then expanded+=("${default_suites[@]}"); else expanded+=("$s"); fi; done
suites=("${expanded[@]}")
root=$(cd "$(dirname "$0")/.." && pwd)
export LSQ_BUILD=$root/$build LSQ_BIN=$root/$build/lsq LSQ_ROOT=$root
export LSQ_TMP=${LSQ_TMP:-$(mktemp -d /tmp/lsq-test.XXXXXX)}
passed=0 failed=0 failures=()

run_one() { # name, command...
    local name=$1; shift
    local log=$LSQ_TMP/$(echo "$name" | tr '/ ' '__').log start=$SECONDS
    "$@" >"$log" 2>&1; local rc=$?
    local p f
    p=$(grep -c '^ok ' "$log"); f=$(grep -c '^not ok ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "not ok $name: exited with status $rc" >>"$log"; fi
    passed=$((passed + p)); failed=$((failed + f))
    printf '%-44s %3d passed %3d failed  (%ds)\n' "$name" "$p" "$f" $((SECONDS - start))
    if [ "$f" -ne 0 ]; then
        failures+=("$name"); grep -E '^(not ok|#)' "$log" | head -40 | sed 's/^/    /'
        echo "    (full log: $log)"
    fi
}

for suite in "${suites[@]}"; do
    case $suite in
    unit)  for t in "$LSQ_BUILD"/tests/test_*; do [ -x "$t" ] && run_one "unit/$(basename "$t")" "$t"; done ;;
    cli)   for t in "$root"/tests/cli/test_*.sh; do run_one "cli/$(basename "$t")" bash "$t"; done ;;
    torch) for t in "$root"/tests/torch/test_*.py; do
               run_one "torch/$(basename "$t")" env PYTHONPATH="$root/models" /usr/bin/python3 "$t"; done ;;
    server) for t in "$root"/tests/server/test_*.py; do
               run_one "server/$(basename "$t")" env PYTHONPATH="$root/models:$root/tests/server" /usr/bin/python3 "$t"; done ;;
    docker)  run_one docker/docker-test.sh "$root"/tests/docker/docker-test.sh "$build" ;;
    cluster) run_one docker/cluster-test.sh "$root"/tests/docker/cluster-test.sh "$build" ;;
    *) echo "tests/run.sh: unknown suite '$suite'" >&2; exit 2 ;;
    esac
done
[ ${#failures[@]} -eq 0 ] || echo "failing: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
