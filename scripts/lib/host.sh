# Shared by scripts/try, scripts/test and scripts/install: make this Debian machine
# able to run cc-ci. Installs what is missing (as root), starts the Docker engine and a
# single-node swarm with the network `proxy` of a Co-op Cloud server. Sourced, not
# executed.

ccci_log() { printf '==> %s\n' "$*" >&2; }
ccci_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ccci_need_root() {
  [ "$(id -u)" = 0 ] || ccci_die "run as root (it installs packages and starts dockerd)"
}

# apt packages the runner, the example recipes and the tests need.
ccci_install_packages() {
  local missing=() pkg
  # busybox-static: example images are FROM scratch with a static busybox.
  # systemd: systemd-analyze verifies the shipped units.
  for pkg in docker.io busybox-static git gcc g++ libc6-dev systemd; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    ccci_log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# cargo and rustc at least Cargo.toml's rust-version: the machine's rustup toolchain,
# else Debian's cargo if new enough, else a stable toolchain through rustup (Debian's
# `rustup` package where there is one).
ccci_ensure_cargo() {
  [ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
  local need
  need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
  if ! ccci_rust_is_new_enough "$need" && ! command -v rustup >/dev/null; then
    ccci_log "installing Debian's cargo"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo >/dev/null 2>&1 || true
    if ! ccci_rust_is_new_enough "$need" && apt-cache show rustup >/dev/null 2>&1; then
      ccci_log "Debian's Rust is older than $need: installing Debian's rustup"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustup >/dev/null
    fi
  fi
  if ! ccci_rust_is_new_enough "$need" && command -v rustup >/dev/null; then
    ccci_log "installing a stable Rust toolchain with rustup (needs $need or newer)"
    rustup toolchain install stable --profile minimal --component clippy >/dev/null
    rustup default stable >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  ccci_rust_is_new_enough "$need" || ccci_die "cc-ci needs Rust $need or newer \
(found: $(rustc --version 2>/dev/null || echo none)); install rustup and run \
\`rustup default stable\`, then try again"
}

# Whether cargo is on PATH and rustc is at least version $1 (x.y).
ccci_rust_is_new_enough() {
  command -v cargo >/dev/null && command -v rustc >/dev/null || return 1
  local have
  have=$(rustc --version | sed -n 's/^rustc \([0-9]*\.[0-9]*\).*/\1/p')
  [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$1" "$have" | sort -V | head -n1)" = "$1" ]
}

# dockerd refuses to start while /var/run/docker.pid names a live process, and waits
# for the containerd it managed if /var/run/docker/containerd/containerd.pid names
# one. After a dockerd was killed (SIGKILL leaves both files), wait for each to be
# gone; a zombie still counts as live to dockerd, so its file is removed.
ccci_clear_stale_docker_pid() {
  ccci_clear_stale_pid /var/run/docker.pid
  ccci_clear_stale_pid /var/run/docker/containerd/containerd.pid
}

# Remove pid file $1 unless it names a live (non-zombie) process, waiting up to 20 s
# for a dying one.
ccci_clear_stale_pid() {
  local pidfile=$1 pid state
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null)
  for _ in $(seq 1 40); do
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    case $state in
      "" | Z*) rm -f "$pidfile"; return 0 ;;
    esac
    sleep 0.5
  done
}

# A running Docker engine with an active single-node swarm.
ccci_ensure_swarm() {
  if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
      :
    else
      ccci_clear_stale_docker_pid
      ccci_log "starting dockerd (log: /var/log/cc-ci-dockerd.log)"
      nohup dockerd >/var/log/cc-ci-dockerd.log 2>&1 &
    fi
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || ccci_die "the Docker engine did not start; see /var/log/cc-ci-dockerd.log"
  fi
  if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
    ccci_log "initialising a single-node swarm"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  fi
  ccci_ensure_proxy_network
}

# The swarm network `proxy` as a Co-op Cloud server has it: an attachable overlay
# (its traefik's; recipes attach their app service to it as an external network).
ccci_ensure_proxy_network() {
  local kind
  if ! kind=$(docker network inspect --format '{{.Driver}} {{.Attachable}} {{.Scope}}' proxy 2>/dev/null); then
    ccci_log "creating the swarm network proxy (overlay, attachable), as on a Co-op Cloud server"
    # Another process may create it at the same moment: then it exists.
    docker network create --driver overlay --attachable --scope swarm proxy >/dev/null 2>&1 || true
    kind=$(docker network inspect --format '{{.Driver}} {{.Attachable}} {{.Scope}}' proxy 2>/dev/null) ||
      ccci_die "cannot create the swarm network proxy: docker network create --driver overlay --attachable proxy"
  fi
  [ "$kind" = "overlay true swarm" ] || ccci_die "the network proxy is \"$kind\" (driver, attachable, \
scope), not an attachable swarm overlay: remove it (docker network rm proxy) and run this again"
}

# The examples, ready to run: the example recipes built as git repositories (and
# their images) in $1/recipes, and a CI config $1/config/cc-ci.toml with the
# examples' CI-side files (meta.toml, hooks, tests) beside it, for app domain $2 with
# abra $3, state in $1/state and scratch dirs in $4; more [runner] lines in $5.
ccci_example_setup() {
  local work=$1 domain=$2 abra=$3 runtime=$4 runner_lines=${5:-}
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  bash "$root/examples/build.sh" "$work/recipes" >/dev/null
  mkdir -p "$work/config"
  rm -rf "$work/config/recipes"
  cp -r "$root/examples/ci/recipes" "$work/config/recipes"
  cat > "$work/config/cc-ci.toml" <<TOML
[runner]
abra = "$abra"
recipes_dir = "$work/recipes"
domain = "$domain"
$runner_lines

[state]
dir = "$work/state"
runtime_dir = "$runtime"
TOML
}
