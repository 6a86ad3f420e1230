# Shared by scripts/try and scripts/test: make this Debian machine able to run cc-ci.
# Installs what is missing (as root), starts the Docker engine and a single-node swarm.
# Sourced, not executed.

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

# cargo: the machine's rustup toolchain, or Debian's.
ccci_ensure_cargo() {
  [ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v cargo >/dev/null; then
    ccci_log "installing Debian's cargo"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo >/dev/null
  fi
  command -v cargo >/dev/null || ccci_die "no cargo: install a Rust toolchain (1.89 or newer)"
}

# A running Docker engine with an active single-node swarm.
ccci_ensure_swarm() {
  if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
      :
    else
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
}
