#!/usr/bin/env bash
# tests/host/run.sh: the host tests. cc-ci is installed with scripts/install into a
# Debian system booted with real systemd as PID 1 (systemd-nspawn, tests/host/lib.sh)
# and driven as an operator does: systemctl start/stop/kill, systemctl status,
# journalctl, a power cut, the poller against the Gitea TEST DOUBLE on loopback. The
# runs deploy on the host's real swarm (its Docker socket is bound in) with the abra
# TEST DOUBLE, under the app domain host.test.
#
#   tests/host/run.sh [TEST...]      as root; all tests when none is named
#
# The container has no Docker engine of its own. In it, /usr/bin/docker is the host's
# docker CLI and docker.service is a stand-in written by these tests only (active while
# the host's engine answers on the bound socket), so the shipped units, which
# Require=docker.service, start unchanged. Timings go to $HOST_WORK/timings.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
. scripts/lib/host.sh
. tests/host/lib.sh

DOMAIN=host.test
BOT=cc-ci-bot
TOKEN=host-test-token-5f1e2d3c4b5a
HOOK_SECRET=host-test-hook-secret-9a8b7c6d
CI_SECRET=host-test-ci-secret-0123456789
REPO_NAME=recipe-maintainers/hello
SHARED=$HOST_WORK/shared      # bound read-only into every container at /srv/ccci
CT_SHARED=/srv/ccci
TIMINGS=$HOST_WORK/timings.txt

# ------------------------------------------------------------------ assertions

fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

# wait_until SECONDS WHAT CMD...: run CMD every 0.2 s until it succeeds.
wait_until() {
  local secs=$1 what=$2 end
  shift 2
  end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || fail "$what: not within ${secs} s"
    sleep 0.2
  done
}

timing() {
  printf '%-44s %s\n' "$1" "$2" | tee -a "$TIMINGS" >&2
}

# Milliseconds since the epoch.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Everything of stack $1 on the real engine (stack, services, containers, volumes,
# secrets, networks, configs).
swarm_leftovers() {
  local stack=$1
  {
    docker stack ls --format 'stack {{.Name}}' | grep -x "stack $stack"
    docker service ls --format 'service {{.Name}}' --filter "label=com.docker.stack.namespace=$stack"
    docker ps -a --format 'container {{.Names}}' --filter "label=com.docker.stack.namespace=$stack"
    docker volume ls --format 'volume {{.Name}}' | grep "^volume ${stack}_"
    docker secret ls --format 'secret {{.Name}}' | grep "^secret ${stack}_"
    docker network ls --format 'network {{.Name}}' | grep "^network ${stack}_"
    docker config ls --format 'config {{.Name}}' | grep "^config ${stack}_"
  } 2>/dev/null || true
}

assert_nothing_left() {
  local left
  left=$(swarm_leftovers "$1")
  [ -z "$left" ] || fail "left on the swarm by stack $1: $(echo $left)"
}

has_leftovers() { [ -n "$(swarm_leftovers "$1")" ]; }

# Remove everything of the host tests' app domain from the swarm (cleanup only; the
# tests assert that cc-ci removed it).
swarm_sweep() {
  local stacks
  stacks=$(docker stack ls --format '{{.Name}}' | grep "_host_test$" || true)
  for s in $stacks; do docker stack rm "$s" >/dev/null 2>&1 || true; done
  for _ in $(seq 1 40); do
    docker ps -a --filter "label=com.docker.stack.namespace" --format '{{.Label "com.docker.stack.namespace"}}' |
      grep -q "_host_test$" || break
    sleep 0.5
  done
  docker volume ls -q | grep "_host_test_" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
  docker secret ls --format '{{.Name}}' | grep "_host_test_" | xargs -r docker secret rm >/dev/null 2>&1 || true
  docker network ls --format '{{.Name}}' | grep "_host_test_" | xargs -r docker network rm >/dev/null 2>&1 || true
  docker config ls --format '{{.Name}}' | grep "_host_test_" | xargs -r docker config rm >/dev/null 2>&1 || true
}

# ------------------------------------------------------------------ fixtures

# Build what the containers get: the cc-ci binary, the Gitea double, the example
# recipes (images on the host engine, git repositories), the CI-side files.
host_prepare() {
  ccci_need_root
  ccci_install_packages
  host_packages
  ccci_ensure_cargo
  ccci_ensure_swarm
  host_log "building cc-ci and the Gitea test double (debug)"
  cargo build --quiet --bin cc-ci --example gitea-double
  local target
  target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
  host_cleanup_containers
  rm -rf "$SHARED"
  mkdir -p "$SHARED/bin" "$SHARED/ci"
  cp "$target/debug/cc-ci" "$SHARED/bin/cc-ci"
  GITEA_DOUBLE=$target/debug/examples/gitea-double
  bash examples/build.sh "$SHARED/recipes" >/dev/null
  cp -r examples/ci/recipes "$SHARED/ci/recipes"
  # A CI-side test that prints a CI credential: the journal must show it masked.
  printf '#!/bin/sh\necho "the CI credential is $(cat /var/lib/cc-ci/secrets/ci-secret)"\n' \
    > "$SHARED/ci/recipes/hello/tests/20-print-ci-secret.sh"
  chmod 755 "$SHARED/ci/recipes/hello/tests/20-print-ci-secret.sh"
  printf '%s\n' "$TOKEN" > "$SHARED/gitea-token"
  printf '%s\n' "$HOOK_SECRET" > "$SHARED/webhook-secret"
  printf '%s\n' "$CI_SECRET" > "$SHARED/ci-secret"
  CT_ARGS=(
    "--bind-ro=$(command -v docker):/usr/bin/docker"
    "--bind-ro=$REPO:/src"
    "--bind-ro=$SHARED:$CT_SHARED"
  )
  local t0=$SECONDS
  host_rootfs >/dev/null
  timing "rootfs (build or cache)" "$((SECONDS - t0)) s"
}

# The config an operator would write for this host (gitea: the double at $1, if any).
host_config() {
  local gitea_url=${1:-}
  cat <<TOML
[runner]
abra = "/src/tests/doubles/abra"         # the abra TEST DOUBLE
recipes_dir = "$CT_SHARED/recipes"
domain = "$DOMAIN"
deadline_min = 15
lock_timeout_s = 600
secrets_dirs = ["/var/lib/cc-ci/secrets"]

[report]
base_url = "https://ci.example.org/runs"
TOML
  [ -n "$gitea_url" ] || return 0
  cat <<TOML

[gitea]
url = "$gitea_url"
token_file = "gitea-token"
bot_user = "$BOT"
timeout_s = 5

[trigger]
org = "coop-cloud"

[poll]
interval_s = 1
lookback_s = 600

[launch]
kind = "systemd"

[[repos]]
repo = "$REPO_NAME"
recipe = "hello"
TOML
}

# A container NAME with cc-ci installed by scripts/install and configured by the
# operator (config from host_config $2, CI files, a CI credential).
ct_installed() {
  local name=$1 gitea_url=${2:-}
  ct_create "$name"
  local root
  root=$(ct_root "$name")
  cat > "$root/etc/systemd/system/docker.service" <<'UNIT'
# cc-ci HOST TESTS ONLY, not shipped: this container has no Docker engine of its own;
# the host's engine answers on the bound /var/run/docker.sock. This stand-in is active
# while it does, so units that Require=docker.service start as on a real host.
[Unit]
Description=Docker engine of the host (cc-ci host tests stand-in)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/docker version --format "engine {{.Server.Version}}"
UNIT
  ct_boot "$name"
  ct "$name" /src/scripts/install --binary "$CT_SHARED/bin/cc-ci" \
    --gitea-token "$CT_SHARED/gitea-token" > "$(ct_dir "$name")/install.log" 2>&1 ||
    fail "scripts/install failed in $name: $(cat "$(ct_dir "$name")/install.log")"
  host_config "$gitea_url" > "$root/etc/cc-ci/cc-ci.toml"
  cp -r "$SHARED/ci/recipes/." "$root/etc/cc-ci/recipes/"
  install -m 0600 "$SHARED/ci-secret" "$root/var/lib/cc-ci/secrets/ci-secret"
}

# The unit name of runner instance $1 (systemd-escaped inside the container).
runner_unit() { echo "cc-ci-runner@$(ct "$CT" systemd-escape "$1").service"; }

unit_prop() { ct "$CT" systemctl show -p "$2" --value "$1"; }

# The newest run dir's id in the container.
newest_run() { ls -t "$(ct_root "$CT")/var/lib/cc-ci/runs" 2>/dev/null | head -n1; }

run_results() { cat "$(ct_root "$CT")/var/lib/cc-ci/runs/$1/results.json"; }

# jq over run $1's results.json.
results_q() { run_results "$1" | jq -r "$2"; }

tier_status() { results_q "$1" ".tiers[] | select(.name == \"$2\") | .status"; }

# --- the Gitea test double (on the host's loopback, which the container shares)

gitea_start() {
  local ready=$HOST_WORK/gitea-double.json
  rm -f "$ready"
  "$GITEA_DOUBLE" --token-file "$SHARED/gitea-token" --bot "$BOT" --ready-file "$ready" \
    2>>"$HOST_WORK/gitea-double.log" &
  echo $! > "$HOST_WORK/gitea-double.pid"
  wait_until 10 "the Gitea test double is ready" test -s "$ready"
  GITEA_URL=$(jq -r .url "$ready")
  GITEA_CONTROL=$(jq -r .control "$ready")
}

gitea_stop() {
  local pid
  pid=$(cat "$HOST_WORK/gitea-double.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$HOST_WORK/gitea-double.pid"
}

# gitea METHOD PATH [JSON]: the double's control API.
gitea() {
  curl -sS --fail-with-body -X "$1" "$GITEA_CONTROL$2" ${3:+-H 'Content-Type: application/json' -d "$3"}
}

# The PR's statuses, oldest first, as "state|description" lines.
pr_statuses() {
  gitea GET /statuses | jq -r --arg sha "$1" '.[] | select(.sha == $sha) | "\(.state)|\(.description)"'
}

final_status() { pr_statuses "$1" | grep -v '^pending|' | tail -n1; }

bot_comment() {
  gitea GET "/comments?repo=${REPO_NAME/\//%2F}&user=$BOT" | jq -r --argjson pr "$1" '[.[] | select(.pr == $pr)]'
}

# A pull request $1 whose head is the hello recipe's main, under refs/pull/$1/head.
gitea_pull() {
  local pr=$1 repo=$SHARED/recipes/hello sha
  sha=$(git -C "$repo" rev-parse HEAD)
  git -C "$repo" update-ref "refs/pull/$pr/head" "$sha"
  gitea POST /pulls "{\"repo\":\"$REPO_NAME\",\"number\":$pr,\"sha\":\"$sha\"}" >/dev/null
  echo "$sha"
}

# ------------------------------------------------------------------ the tests

# scripts/install as a non-NixOS operator runs it: everything in place, idempotent,
# never overwriting the config or a credential; the units' exposure within bounds.
t_install() {
  CT=host-install
  ct_installed "$CT"
  local root log
  root=$(ct_root "$CT")
  log=$(cat "$(ct_dir "$CT")/install.log")
  [ -x "$root/usr/bin/cc-ci" ] || fail "no /usr/bin/cc-ci"
  for u in cc-ci-runner@.service cc-ci-poller.service cc-ci-hook.socket cc-ci-janitor.service \
    cc-ci-janitor.timer cc-ci.slice; do
    cmp -s "units/$u" "$root/usr/lib/systemd/system/$u" || fail "unit $u not installed as shipped"
  done
  [ "$(stat -c '%a %U %G' "$root/etc/cc-ci/credentials")" = "700 root root" ] || fail "credentials dir not 0700 root"
  [ "$(stat -c '%a %U %G' "$root/etc/cc-ci/credentials/gitea-token")" = "600 root root" ] ||
    fail "gitea-token not 0600 root: $(stat -c '%a %U %G' "$root/etc/cc-ci/credentials/gitea-token")"
  [ "$(cat "$root/etc/cc-ci/credentials/gitea-token")" = "$TOKEN" ] || fail "gitea-token content"
  local gid
  gid=$(stat -c %g /var/run/docker.sock)
  [ "$(ct "$CT" getent group docker | cut -d: -f3)" = "$gid" ] || fail "docker group is not gid $gid"
  grep -q "created group docker with gid $gid" <<<"$log" || fail "install did not say it created the docker group: $log"
  [ "$(docker network inspect --format '{{.Driver}} {{.Attachable}} {{.Scope}}' proxy)" = "overlay true swarm" ] ||
    fail "network proxy is not an attachable swarm overlay"

  # Again, with an operator's config and a changed token source: both kept.
  local before_cfg
  before_cfg=$(sha256sum < "$root/etc/cc-ci/cc-ci.toml")
  printf 'another-token\n' > "$root/root/new-token"
  chmod 0644 "$root/etc/cc-ci/credentials/gitea-token"
  log=$(ct "$CT" /src/scripts/install --binary "$CT_SHARED/bin/cc-ci" --gitea-token /root/new-token \
    --webhook-secret "$CT_SHARED/webhook-secret" 2>&1) || fail "second install failed: $log"
  [ "$(sha256sum < "$root/etc/cc-ci/cc-ci.toml")" = "$before_cfg" ] || fail "the config was overwritten"
  grep -q "kept /etc/cc-ci/cc-ci.toml" <<<"$log" || fail "install did not say it kept the config: $log"
  [ "$(cat "$root/etc/cc-ci/credentials/gitea-token")" = "$TOKEN" ] || fail "the gitea token was overwritten"
  [ "$(stat -c '%a' "$root/etc/cc-ci/credentials/gitea-token")" = 600 ] || fail "a loose credential was not made 0600"
  [ "$(stat -c '%a %U' "$root/etc/cc-ci/credentials/webhook-secret")" = "600 root" ] || fail "webhook-secret not 0600 root"
  grep -q "Sockets=cc-ci-hook.socket" "$root/etc/systemd/system/cc-ci-poller.service.d/webhook.conf" ||
    fail "no webhook drop-in"

  # Bad input: no binary.
  if log=$(ct "$CT" /src/scripts/install --binary /nonexistent/cc-ci 2>&1); then fail "install without a binary succeeded"; fi
  grep -q "cargo build --release" <<<"$log" || fail "install without a binary does not name the fix: $log"

  # The units' exposure (systemd-analyze security, the real systemd inside).
  local unit limit exposure
  for pair in "cc-ci-poller.service 2.5" "cc-ci-janitor.service 3.5" "$(runner_unit hello) 5.0"; do
    read -r unit limit <<<"$pair"
    exposure=$(ct "$CT" systemd-analyze security --no-pager "$unit" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    [ -n "$exposure" ] || fail "no exposure for $unit"
    timing "exposure $unit" "$exposure (at most $limit)"
    awk -v e="$exposure" -v l="$limit" 'BEGIN { exit !(e <= l) }' || fail "$unit: exposure $exposure above $limit"
  done
}

# ------------------------------------------------------------------ driver

ALL_TESTS=(install)

host_cleanup() {
  gitea_stop
  host_cleanup_containers
  swarm_sweep
}

main() {
  local tests=("$@") failed=() t start rc
  [ ${#tests[@]} -gt 0 ] || tests=("${ALL_TESTS[@]}")
  for t in "${tests[@]}"; do
    declare -F "t_$t" >/dev/null || host_die "no host test $t (known: ${ALL_TESTS[*]})"
  done
  mkdir -p "$HOST_WORK"
  : > "$TIMINGS"
  trap host_cleanup EXIT
  trap 'exit 130' INT TERM
  host_prepare
  for t in "${tests[@]}"; do
    host_log "host test: $t"
    start=$SECONDS
    set +e
    (
      set -e
      trap 'rc=$?; [ $rc = 0 ] || { [ -z "${CT:-}" ] || { printf "\n--- journal of %s (last 60 lines)\n" "$CT" >&2; ct_journal "$CT" 60 >&2; }; }; gitea_stop; host_cleanup_containers' EXIT
      "t_$t"
    )
    rc=$?
    set -e
    timing "test $t" "$((SECONDS - start)) s ($([ $rc = 0 ] && echo ok || echo FAILED))"
    [ $rc = 0 ] || failed+=("$t")
  done
  host_log "timings: $TIMINGS"
  [ ${#failed[@]} = 0 ] || host_die "host tests failed: ${failed[*]}"
  echo "host tests passed: ${tests[*]}"
}

main "$@"
