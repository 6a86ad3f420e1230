#!/usr/bin/env bash
# A real fault: the Docker engine is killed (SIGKILL) in the middle of a run.
#
# The run must still complete (exit 0) with the failed tier's cause
# `infrastructure`, never `recipe`, and `clean_teardown: false` (it could not tear
# down). Once the engine is back, the next run of the same app reaps what the first
# one left and climbs to level 5 with a clean teardown.
#
# It kills dockerd, so it runs alone, after the other tests (scripts/test). Run as
# root, with the engine started by scripts/lib/host.sh (or systemd).
#
#   tests/faults/engine-dies.sh PATH-TO-cc-ci
set -euo pipefail
bin=$(realpath "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$here/scripts/lib/host.sh"
work=$(mktemp -d)
# The recipe's tests run confined as another user, who must pass through this dir.
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
fail() { echo "engine-dies: FAIL: $*" >&2; exit 1; }

ccci_ensure_swarm
ccci_example_setup "$work" fault.localhost "$here/tests/doubles/abra" "$work/run" "deadline_min = 10"
stack=hello_fault_localhost

# 1. Kill the engine once the install tier's stack is on the swarm.
"$bin" run hello --config "$work/config/cc-ci.toml" \
  --output "$work/first" >"$work/first.log" 2>&1 &
runner=$!
# (Its install tier has begun and its service exists: a leftover of an earlier,
# failed attempt of this test must not count.)
for _ in $(seq 1 240); do
  grep -q "=== tier install ===" "$work/first/run.log" 2>/dev/null &&
    docker service ls --format '{{.Name}}' 2>/dev/null | grep -q "^${stack}_" && break
  kill -0 "$runner" 2>/dev/null || fail "the run ended before it deployed: $(tail -5 "$work/first.log")"
  sleep 0.25
done
pkill -KILL -x dockerd || fail "no dockerd to kill"
echo "engine-dies: dockerd killed during the run"
status=0
wait "$runner" || status=$?
[ "$status" = 0 ] || fail "the run exited $status; it completed, so 0 was expected: $(tail -5 "$work/first.log")"
results=$work/first/results.json
[ -f "$results" ] || fail "no results.json"
python3 - "$results" <<'PY' || fail "results of the first run: $(cat "$results")"
import json, sys
r = json.load(open(sys.argv[1]))
failed = [t for t in r["tiers"] if t["status"] == "failed"]
assert failed, "a tier failed"
assert all(t["cause"] == "infrastructure" for t in failed), failed
assert r["invariants"]["clean_teardown"] is False, r["invariants"]
assert r["invariants"]["no_secret_leak"] is True, r["invariants"]
print(f"engine-dies: first run: level {r['level']}, {failed[0]['name']} failed with cause infrastructure, clean_teardown false")
PY

# 2. The engine comes back; the next run reaps the leftovers and passes.
ccci_ensure_swarm
"$bin" run hello --config "$work/config/cc-ci.toml" --output "$work/second" >"$work/second.log" 2>&1 \
  || fail "the second run exited $?: $(tail -5 "$work/second.log")"
python3 - "$work/second/results.json" <<'PY' || fail "results of the second run: $(tail -20 "$work/second.log")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["level"] == 5, r["level"]
assert r["invariants"]["clean_teardown"] is True, r["invariants"]
print("engine-dies: second run: level 5, clean teardown")
PY
if ! grep -q "reaping what" "$work/second.log" && [ -n "$(docker volume ls -q --filter name=${stack}_)" ]; then
  fail "the second run did not reap the first run's leftovers"
fi
[ -z "$(docker stack ls --format '{{.Name}}' | grep "^${stack}$")" ] || fail "the stack is still on the swarm"
[ -z "$(docker volume ls -q --filter name=${stack}_)" ] || fail "volumes are left: $(docker volume ls -q --filter name=${stack}_)"
echo "engine-dies: passed"
