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

# A TCP port nothing listens on, on the loopback the containers share with the host.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    [ -n "$(ss -Hltn "sport = :$p")" ] || { echo "$p"; return; }
  done
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
no_leftovers() { [ -z "$(swarm_leftovers "$1")" ]; }

# Whether exactly $1 volumes match the regex $2.
volumes_matching() { [ "$(docker volume ls -q | grep -c "$2")" = "$1" ]; }

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

# The test environment only: systemd-nspawn's own seccomp filter refuses the landlock
# system calls inside the container, so a recipe's tests cannot be fully confined
# here. The runner applies every step it can and results.json says which are missing
# (tests/confine.rs and tests/runner.rs prove every step on the host itself).
[runner.confine]
allow_unconfined = true

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
janitor_ran() { [ -n "$(unit_prop cc-ci-janitor.service ExecMainExitTimestamp)" ]; }
poller_status_says() { unit_prop cc-ci-poller.service StatusText | grep -q "$1"; }
unit_state_is() { [ "$(unit_prop "$1" ActiveState)" = "$2" ]; }
# Ran and ended: neither active nor on its way (inactive or failed).
unit_ended() { case $(unit_prop "$1" ActiveState) in inactive | failed) true ;; *) false ;; esac; }

# The newest run dir's id in the container.
newest_run() { ls -t "$(ct_root "$CT")/var/lib/cc-ci/runs" 2>/dev/null | head -n1; }
any_run() { [ -n "$(newest_run)" ]; }

run_results() { cat "$(ct_root "$CT")/var/lib/cc-ci/runs/$1/results.json"; }

# jq over run $1's results.json.
results_q() { run_results "$1" | jq -r "$2"; }

tier_status() { results_q "$1" ".tiers[] | select(.name == \"$2\") | .status"; }
tier_is() { [ "$(tier_status "$1" "$2" 2>/dev/null)" = "$3" ]; }

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
has_final_status() { [ -n "$(final_status "$1")" ]; }
final_statuses_at_least() { [ "$(gitea GET /statuses | jq '[.[] | select(.state != "pending")] | length')" -ge "$1" ]; }

bot_comment() {
  gitea GET "/comments?repo=${REPO_NAME/\//%2F}&user=$BOT" | jq -r --argjson pr "$1" '[.[] | select(.pr == $pr)]'
}

# refs/pull/$1/head in the hello recipe's repository, at its main; prints the sha.
gitea_pull_ref() {
  local repo=$SHARED/recipes/hello sha
  sha=$(git -C "$repo" rev-parse HEAD)
  git -C "$repo" update-ref "refs/pull/$1/head" "$sha"
  echo "$sha"
}

# A pull request $1 on the double whose head is the hello recipe's main.
gitea_pull() {
  local sha
  sha=$(gitea_pull_ref "$1")
  gitea POST /pulls "{\"repo\":\"$REPO_NAME\",\"number\":$1,\"sha\":\"$sha\"}" >/dev/null
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


# A run by hand, as the operator's first step: `systemctl start` runs the ladder;
# `systemctl status` shows the stage (STATUS=); `journalctl -u` shows the masked log;
# the artifacts are in /var/lib/cc-ci/runs/<run-id>/; a janitor run meanwhile leaves
# the live run alone. Then the same run as a plain `cc-ci run`, for the wall times.
t_runner() {
  CT=host-runner
  ct_installed "$CT"
  local unit stack=hello_host_test t0 t1 statuses="" st status_shown="" janitor_rc="" janitor_log=""
  unit=$(runner_unit hello)
  t0=$(now_ms)
  ct "$CT" systemctl start "$unit"
  while [ "$(unit_prop "$unit" ActiveState)" = active ]; do
    st=$(unit_prop "$unit" StatusText)
    [ -z "$st" ] || grep -qxF -- "$st" <<<"$statuses" || statuses+="$st"$'\n'
    # What the operator reads: the Status: line of `systemctl status`.
    [ -n "$status_shown" ] || status_shown=$(ct "$CT" systemctl status --no-pager "$unit" | grep -E '^ *Status: "(install|upgrade|backup|restore|custom)' || true)
    if [ -z "$janitor_rc" ] && docker service ls -q --filter "label=com.docker.stack.namespace=$stack" | grep -q .; then
      # The janitor while this run holds its app: it must leave everything of it.
      janitor_log=$(ct "$CT" systemctl start cc-ci-janitor.service 2>&1) && janitor_rc=0 || janitor_rc=$?
      has_leftovers "$stack" || fail "the janitor removed the live run's stack $stack"
    fi
    sleep 0.2
  done
  t1=$(now_ms)
  [ "$(unit_prop "$unit" Result)" = success ] || fail "$unit: result $(unit_prop "$unit" Result)"
  local id
  id=$(newest_run)
  [ -n "$id" ] || fail "no run dir under /var/lib/cc-ci/runs"
  [ "$(results_q "$id" .status)" = completed ] || fail "run $id: status $(results_q "$id" .status)"
  [ "$(results_q "$id" .level)" = 5 ] || fail "run $id: level $(results_q "$id" .level), not 5: $(run_results "$id")"
  [ "$(results_q "$id" .invariants.clean_teardown)" = true ] || fail "run $id: clean_teardown false"
  for f in results.json junit.xml badge.svg report.md run.log timing.json; do
    [ -s "$(ct_root "$CT")/var/lib/cc-ci/runs/$id/$f" ] || fail "run $id: no $f"
  done
  assert_nothing_left "$stack"
  local journal
  journal=$(ct "$CT" journalctl -u "$unit" --no-pager -o cat)
  grep -q "the CI credential is \[MASKED\]" <<<"$journal" || fail "the journal does not show the CI credential masked"
  ! grep -qF "$CI_SECRET" <<<"$journal" || fail "the journal shows the CI credential in clear"
  grep -q '"value": *"\[MASKED\]"\|\[MASKED\]' <<<"$journal" || fail "no masked app secret in the journal"
  timing "runner@hello under systemd (wall)" "$(((t1 - t0) / 1000)).$(((t1 - t0) % 1000 / 100)) s"

  # The same run, directly.
  t0=$(now_ms)
  ct "$CT" cc-ci run hello --config /etc/cc-ci/cc-ci.toml > "$(ct_dir "$CT")/direct.log" 2>&1 ||
    fail "cc-ci run hello failed: $(tail -n 20 "$(ct_dir "$CT")/direct.log")"
  t1=$(now_ms)
  grep -q "^results: " "$(ct_dir "$CT")/direct.log" || fail "cc-ci run hello printed no results line"
  timing "cc-ci run hello directly (wall)" "$(((t1 - t0) / 1000)).$(((t1 - t0) % 1000 / 100)) s"
  assert_nothing_left "$stack"

  # The stage, as `systemctl status` showed it (sd_notify STATUS=).
  grep -qE '^(install|upgrade|backup|restore|custom)\b' <<<"$statuses" ||
    fail "systemctl status never showed a tier (StatusText seen: $(echo $statuses))"
  [ -n "$status_shown" ] || fail "systemctl status never had a Status: line naming a tier"
  [ "$janitor_rc" = 0 ] || fail "cc-ci-janitor.service failed during a live run ($janitor_rc): $janitor_log $(ct "$CT" journalctl -u cc-ci-janitor --no-pager -o cat | tail -n 5)"
}

# `systemctl stop` in the middle of the upgrade tier: the runner tears down and records
# cause `cancelled`; nothing is left on the swarm.
t_stop() {
  CT=host-stop
  ct_installed "$CT"
  local unit stack=hello_host_test id
  unit=$(runner_unit hello)
  ct "$CT" systemctl start "$unit"
  wait_until 60 "a run dir" any_run
  id=$(newest_run)
  wait_until 90 "the upgrade tier running" tier_is "$id" upgrade running
  wait_until 30 "the upgrade's stack deployed" has_leftovers "$stack"
  sleep 1
  ct "$CT" systemctl stop "$unit"
  [ "$(unit_prop "$unit" ActiveState)" = inactive ] || fail "$unit is $(unit_prop "$unit" ActiveState) after stop"
  [ "$(results_q "$id" .status)" = completed ] || fail "run $id: status $(results_q "$id" .status) after stop"
  [ "$(tier_status "$id" upgrade)" = failed ] || fail "upgrade tier: $(tier_status "$id" upgrade)"
  [ "$(results_q "$id" '.tiers[] | select(.name == "upgrade") | .cause')" = cancelled ] ||
    fail "upgrade cause: $(results_q "$id" '.tiers[] | select(.name == "upgrade") | .cause')"
  [ "$(results_q "$id" .level)" = 1 ] || fail "level $(results_q "$id" .level) after a cancelled upgrade"
  assert_nothing_left "$stack"
}

# The poller under systemd with the webhook socket, against the Gitea double: a
# webhook delivery starts the poller (socket activation, cold) and a runner; polled
# comments start more; two PRs run side by side, a second run of one PR queues on the
# app's lock; statuses and the edited PR comments follow every run to the end.
t_poller() {
  CT=host-poller
  gitea_start
  ct_installed "$CT" "$GITEA_URL"
  local root port
  root=$(ct_root "$CT")
  ct "$CT" /src/scripts/install --binary "$CT_SHARED/bin/cc-ci" --webhook-secret "$CT_SHARED/webhook-secret" >/dev/null
  printf '\n[webhook]\nsecret_file = "webhook-secret"\n' >> "$root/etc/cc-ci/cc-ci.toml"
  # The host's loopback is shared: a free port instead of the shipped 8089 (test only).
  port=$(free_port)
  mkdir -p "$root/etc/systemd/system/cc-ci-hook.socket.d"
  printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:%s\n' "$port" > "$root/etc/systemd/system/cc-ci-hook.socket.d/port.conf"
  gitea POST /repos "{\"repo\":\"$REPO_NAME\",\"clone_url\":\"$CT_SHARED/recipes/hello\"}" >/dev/null
  gitea POST /members '{"org":"coop-cloud","user":"alice"}' >/dev/null
  local sha
  sha=$(gitea_pull 1)
  gitea_pull 2 >/dev/null
  ct "$CT" systemctl daemon-reload
  ct "$CT" systemctl enable --now cc-ci-hook.socket 2>/dev/null
  [ "$(unit_prop cc-ci-poller.service ActiveState)" = inactive ] || fail "the poller runs before any delivery"

  # 1. The webhook: delivery to pending, cold start of the poller included.
  local answer
  answer=$(gitea POST /deliver "{\"url\":\"http://127.0.0.1:$port/\",\"secret\":\"$HOOK_SECRET\",\"repo\":\"$REPO_NAME\",\"pr\":1,\"user\":\"alice\",\"body\":\"!testme\",\"wait_status\":\"pending\",\"timeout_ms\":20000}") ||
    fail "webhook delivery: $answer"
  [ "$(jq -r .http_status <<<"$answer")" -lt 300 ] || fail "the webhook answered $(jq -r .http_status <<<"$answer")"
  timing "webhook delivery -> pending (cold start)" "$(jq -r .elapsed_ms <<<"$answer") ms"
  [ "$(unit_prop cc-ci-poller.service ActiveState)" = active ] || fail "the socket did not start the poller"
  # Active means READY=1 came (Type=notify); the watchdog is armed; the poller says
  # how its cycles go.
  [ "$(unit_prop cc-ci-poller.service Type) $(unit_prop cc-ci-poller.service WatchdogUSec)" = "notify 2min" ] ||
    fail "poller: Type/WatchdogUSec $(unit_prop cc-ci-poller.service Type) $(unit_prop cc-ci-poller.service WatchdogUSec)"
  wait_until 10 "the poller's status line" poller_status_says "last cycle"

  # 2. Polled comments: PR 2 (side by side with PR 1), PR 1 again (queues).
  sleep 1
  gitea POST /comments "{\"repo\":\"$REPO_NAME\",\"pr\":2,\"user\":\"alice\",\"body\":\"!testme\"}" >/dev/null
  gitea POST /comments "{\"repo\":\"$REPO_NAME\",\"pr\":1,\"user\":\"alice\",\"body\":\"please\n!testme\"}" >/dev/null
  local both=0 end=$((SECONDS + 120)) active
  while ((SECONDS < end)); do
    # Two runners deploying at once: both PRs' stacks exist.
    if has_leftovers hello-pr1_host_test && has_leftovers hello-pr2_host_test; then both=1; break; fi
    sleep 0.5
  done
  [ $both = 1 ] || fail "the runs of PR 1 and PR 2 never deployed side by side"
  active=$(ct "$CT" systemctl list-units 'cc-ci-runner@*' --state=active --no-legend --plain | wc -l)
  [ "$active" -ge 2 ] || fail "$active runner units active while two PRs deploy"
  wait_until 300 "three final statuses" final_statuses_at_least 3
  local finals
  finals=$(gitea GET /statuses | jq -r '.[] | select(.state != "pending") | .state + "|" + .description')
  [ "$(grep -c '^success|.*5/5' <<<"$finals")" = 3 ] || fail "final statuses: $finals"

  # The second run of PR 1 waited for the first: it deployed after the first finished.
  local runs r1 r2 first_end second_start
  runs=$(cd "$root/var/lib/cc-ci/runs" && for r in *; do echo "$(jq -r '.pr' "$r/results.json") $r"; done | sort)
  [ "$(wc -l <<<"$runs")" = 3 ] || fail "runs: $runs"
  r1=$(grep '^1 ' <<<"$runs" | head -n1 | cut -d' ' -f2)
  r2=$(grep '^1 ' <<<"$runs" | tail -n1 | cut -d' ' -f2)
  first_end=$(results_q "$r1" .finished_at)
  second_start=$(results_q "$r2" '.tiers[] | select(.name == "install") | .started_at')
  [[ "$second_start" > "$first_end" ]] || fail "PR 1's second run installed at $second_start, before the first ended at $first_end"
  grep -q "queued" "$root/var/lib/cc-ci/runs/$r2/run.log" || fail "PR 1's second run.log does not say it queued"
  # Each PR's bot comment was edited to the final report.
  local c
  for pr in 1 2; do
    c=$(bot_comment $pr)
    [ "$(jq 'length' <<<"$c")" -ge 1 ] || fail "no bot comment on PR $pr"
    jq -r '.[-1].body' <<<"$c" | grep -q "reached level 5/5" || fail "PR $pr's comment is not final: $(jq -r '.[-1].body' <<<"$c")"
  done
  [ "$(gitea GET /bad-auth | jq length)" = 0 ] || fail "the poller sent a wrong token"
  for pr in 1 2; do assert_nothing_left "hello-pr${pr}_host_test"; done
  pr_statuses "$sha" | head -n1 | grep -q '^pending|' || fail "PR 1's first status is not pending"
}

# Common to the kill and reboot tests: a poller (enabled) and the janitor timer
# (enabled) in container $1, the double serving PR $2; prints the PR's head sha.
poller_host() {
  local name=$1 pr=$2
  gitea_start
  ct_installed "$name" "$GITEA_URL"
  gitea POST /repos "{\"repo\":\"$REPO_NAME\",\"clone_url\":\"$CT_SHARED/recipes/hello\"}" >/dev/null
  gitea POST /members '{"org":"coop-cloud","user":"alice"}' >/dev/null
  POLLER_SHA=$(gitea_pull "$pr")
  ct "$name" systemctl enable --now cc-ci-poller.service cc-ci-janitor.timer >/dev/null 2>&1
  [ "$(CT=$name unit_prop cc-ci-poller.service ActiveState)" = active ] || fail "the poller did not start"
  sleep 1
  gitea POST /comments "{\"repo\":\"$REPO_NAME\",\"pr\":$pr,\"user\":\"alice\",\"body\":\"!testme\"}" >/dev/null
}

# The runner unit of the newest run (the poller started it).
newest_runner_unit() {
  ct "$CT" systemctl list-units 'cc-ci-runner@*' --all --no-legend --plain | awk '{print $1}' | tail -n1
}
any_runner_unit() { [ -n "$(newest_runner_unit)" ]; }

# `systemctl kill -s KILL` of a run mid-deploy: the unit fails, what it deployed
# stays until `systemctl start cc-ci-janitor` removes it, and the poller reports the
# run as an error instead of leaving the commit status pending.
t_kill() {
  CT=host-kill
  poller_host "$CT" 3
  local stack=hello-pr3_host_test unit id
  wait_until 60 "a runner unit" any_runner_unit
  unit=$(newest_runner_unit)
  wait_until 90 "the run's stack deployed" has_leftovers "$stack"
  id=$(newest_run)
  [ "$(tier_status "$id" install)" = running ] || fail "install is $(tier_status "$id" install), not running, when killed"
  ct "$CT" systemctl kill -s KILL "$unit"
  wait_until 20 "$unit failed" unit_state_is "$unit" failed
  has_leftovers "$stack" || fail "nothing left after the kill: the test did not kill mid-deploy"
  [ "$(final_status "$POLLER_SHA")" = "" ] || fail "a final status before the janitor: $(final_status "$POLLER_SHA")"
  local t0 t1
  t0=$(now_ms)
  ct "$CT" systemctl start cc-ci-janitor.service || fail "the janitor failed: $(ct "$CT" journalctl -u cc-ci-janitor --no-pager -o cat | tail -n 20)"
  t1=$(now_ms)
  timing "janitor after a killed run" "$((t1 - t0)) ms"
  assert_nothing_left "$stack"
  [ "$(results_q "$id" .status)" = error ] || fail "results.json of the killed run says $(results_q "$id" .status), not error"
  wait_until 60 "the poller reports the killed run" has_final_status "$POLLER_SHA"
  timing "killed run: janitor done -> error status" "$(($(now_ms) - t1)) ms"
  final_status "$POLLER_SHA" | grep -q '^error|' || fail "final status: $(final_status "$POLLER_SHA")"
  bot_comment 3 | jq -r '.[-1].body' | grep -qi "error" || fail "the PR comment does not say error: $(bot_comment 3 | jq -r '.[-1].body')"
}

# A power cut in the middle of a run, then the host boots again: the janitor's run at
# boot reaps what the dead run left, and the poller (enabled) reports it.
t_reboot() {
  CT=host-reboot
  poller_host "$CT" 4
  local stack=hello-pr4_host_test id
  wait_until 60 "a runner unit" any_runner_unit
  wait_until 90 "the run's stack deployed" has_leftovers "$stack"
  id=$(newest_run)
  sleep 1
  ct_power_cut "$CT"
  has_leftovers "$stack" || fail "nothing left after the power cut"
  ct_boot "$CT"
  timing "boot (container, systemd to running)" "$CT_BOOT_MS ms"
  [ "$(unit_prop cc-ci-poller.service ActiveState)" = active ] || fail "the poller did not start at boot"
  ! ct "$CT" test -e "/run/cc-ci/runs/$id" || fail "/run survived the power cut"
  wait_until 60 "the janitor's run at boot" janitor_ran
  assert_nothing_left "$stack"
  [ "$(results_q "$id" .status)" = error ] || fail "results.json of the dead run says $(results_q "$id" .status), not error"
  wait_until 60 "the poller reports the dead run" has_final_status "$POLLER_SHA"
  final_status "$POLLER_SHA" | grep -q '^error|' || fail "final status: $(final_status "$POLLER_SHA")"
}

# The janitor on a swarm with 20 objects of dead runs: five runs (PRs 11 to 15, their
# requests written as the poller writes them, started as the poller starts them) are
# killed mid-deploy, each leaving its service, network, volume and secret; one
# `systemctl start cc-ci-janitor` removes all 20 and marks the five runs as error.
t_janitor() {
  CT=host-janitor
  ct_installed "$CT"
  local root pr sha id ids=() units=() n
  root=$(ct_root "$CT")
  mkdir -p "$root/var/lib/cc-ci/requests"
  for pr in 11 12 13 14 15; do
    sha=$(gitea_pull_ref "$pr")
    id=20261130T120000Z-0000$pr
    jq -n --arg id "$id" --arg repo "$REPO_NAME" --argjson pr "$pr" --arg sha "$sha" \
      --arg url "$CT_SHARED/recipes/hello" \
      '{run_id: $id, repo: $repo, recipe: "hello", pr: $pr, sha: $sha, ref: "refs/pull/\($pr)/head",
        clone_url: $url, comment_id: null, requested_by: "alice", requested_at: "2026-11-30T12:00:00Z"}' \
      > "$root/var/lib/cc-ci/requests/$id.json"
    ids+=("$id")
    units+=("$(runner_unit "$id")")
  done
  ct "$CT" systemctl start --no-block "${units[@]}"
  for pr in 11 12 13 14 15; do
    wait_until 120 "PR $pr's volume" volumes_matching 1 "^hello-pr${pr}_host_test_data$"
  done
  ct "$CT" systemctl kill -s KILL "${units[@]}"
  for u in "${units[@]}"; do wait_until 20 "$u failed" unit_state_is "$u" failed; done
  n=$(for pr in 11 12 13 14 15; do swarm_leftovers "hello-pr${pr}_host_test"; done | grep -c '^\(service\|network\|volume\|secret\|config\) ')
  [ "$n" = 20 ] || fail "expected 20 leftover objects of the killed runs, have $n: $(for pr in 11 12 13 14 15; do swarm_leftovers "hello-pr${pr}_host_test"; done)"
  local t0 t1
  t0=$(now_ms)
  ct "$CT" systemctl start cc-ci-janitor.service || fail "the janitor failed: $(ct "$CT" journalctl -u cc-ci-janitor --no-pager -o cat | tail -n 20)"
  t1=$(now_ms)
  timing "janitor, 20 leftover objects" "$((t1 - t0)) ms"
  for pr in 11 12 13 14 15; do assert_nothing_left "hello-pr${pr}_host_test"; done
  for id in "${ids[@]}"; do
    [ "$(results_q "$id" .status)" = error ] || fail "run $id: $(results_q "$id" .status), not error"
  done
}

# Bad input: each a clear error naming the thing and the fix; nothing of a live run
# removed.
t_bad_input() {
  CT=host-bad
  ct_installed "$CT"
  local unit journal root
  root=$(ct_root "$CT")

  # A unit instance naming no request and no known recipe.
  unit=$(runner_unit no-such-recipe)
  ct "$CT" systemctl start "$unit" || true
  wait_until 20 "$unit ends" unit_ended "$unit"
  [ "$(unit_prop "$unit" Result)" = exit-code ] || fail "$unit: result $(unit_prop "$unit" Result)"
  journal=$(ct "$CT" journalctl -u "$unit" --no-pager -o cat)
  grep -q "no-such-recipe" <<<"$journal" || fail "the error does not name the instance: $journal"
  assert_nothing_left no-such-recipe_host_test

  # The janitor while the engine is down (its socket answers nothing).
  mkdir -p "$root/etc/systemd/system/cc-ci-janitor.service.d"
  printf '[Service]\nEnvironment=DOCKER_HOST=unix:///run/no-engine-here.sock\n' > "$root/etc/systemd/system/cc-ci-janitor.service.d/engine-down.conf"
  ct "$CT" systemctl daemon-reload
  ! ct "$CT" systemctl start cc-ci-janitor.service 2>/dev/null || fail "the janitor succeeded with the engine down"
  journal=$(ct "$CT" journalctl -u cc-ci-janitor --no-pager -o cat)
  grep -qi "docker\|engine" <<<"$journal" || fail "the janitor's error does not name the engine: $journal"
  rm -r "$root/etc/systemd/system/cc-ci-janitor.service.d"
  ct "$CT" systemctl daemon-reload

  # A config the janitor cannot read, then one with a misspelt key.
  chmod 000 "$root/etc/cc-ci/cc-ci.toml"
  ! ct "$CT" systemctl start cc-ci-janitor.service 2>/dev/null || fail "the janitor succeeded with an unreadable config"
  journal=$(ct "$CT" journalctl -u cc-ci-janitor --no-pager -o cat -n 20)
  grep -q "/etc/cc-ci/cc-ci.toml" <<<"$journal" || fail "the janitor's error does not name the config: $journal"
  chmod 644 "$root/etc/cc-ci/cc-ci.toml"
  sed -i 's/^domain = /domian = /' "$root/etc/cc-ci/cc-ci.toml"
  ! ct "$CT" systemctl start cc-ci-janitor.service 2>/dev/null || fail "the janitor succeeded with a misspelt key"
  journal=$(ct "$CT" journalctl -u cc-ci-janitor --no-pager -o cat -n 20)
  grep -q "did you mean \`domain\`" <<<"$journal" || fail "the janitor does not name the misspelt key: $journal"
  sed -i 's/^domian = /domain = /' "$root/etc/cc-ci/cc-ci.toml"

  # A full disk under /var/lib/cc-ci: the run stops before deploying, saying so.
  ct "$CT" mount -t tmpfs -o size=256k,mode=0750 ccci-full /var/lib/cc-ci
  ct "$CT" mkdir -m 0700 /var/lib/cc-ci/secrets
  install -m 0600 "$SHARED/ci-secret" "$root/var/lib/cc-ci/secrets/ci-secret" 2>/dev/null ||
    ct "$CT" sh -c "cat $CT_SHARED/ci-secret > /var/lib/cc-ci/secrets/ci-secret"
  ct "$CT" sh -c 'dd if=/dev/zero of=/var/lib/cc-ci/fill bs=4k 2>/dev/null; true'
  unit=$(runner_unit hello)
  ct "$CT" systemctl start "$unit" || true
  wait_until 60 "$unit ends" unit_ended "$unit"
  journal=$(ct "$CT" journalctl -u "$unit" --no-pager -o cat)
  grep -qi "no space left" <<<"$journal" || fail "the full disk is not named: $journal"
  grep -q "/var/lib/cc-ci" <<<"$journal" || fail "the full path is not named: $journal"
  assert_nothing_left hello_host_test
  ct "$CT" umount /var/lib/cc-ci
}

# ------------------------------------------------------------------ driver

ALL_TESTS=(install runner stop poller kill reboot janitor bad_input)

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
  # A signal stops the test that runs (its own trap destroys its container), then
  # the EXIT trap removes whatever is left.
  trap 'host_log "interrupted"; [ -z "${TEST_PID:-}" ] || { kill -TERM "$TEST_PID" 2>/dev/null; wait "$TEST_PID"; }; exit 130' INT TERM
  host_prepare
  for t in "${tests[@]}"; do
    host_log "host test: $t"
    start=$SECONDS
    set +e
    (
      set -e
      trap 'exit 143' INT TERM
      trap 'rc=$?; [ $rc = 0 ] || { [ -z "${CT:-}" ] || { printf "\n--- journal of %s (last 60 lines)\n" "$CT" >&2; ct_journal "$CT" 60 >&2; }; }; gitea_stop; host_cleanup_containers' EXIT
      "t_$t"
    ) &
    TEST_PID=$!
    wait "$TEST_PID"
    rc=$?
    TEST_PID=""
    set -e
    timing "test $t" "$((SECONDS - start)) s ($([ $rc = 0 ] && echo ok || echo FAILED))"
    [ $rc = 0 ] || failed+=("$t")
  done
  host_log "timings: $TIMINGS"
  [ ${#failed[@]} = 0 ] || host_die "host tests failed: ${failed[*]}"
  echo "host tests passed: ${tests[*]}"
}

# Sourced (for debugging one step by hand), it only defines the functions.
[ "${BASH_SOURCE[0]}" != "$0" ] || main "$@"
