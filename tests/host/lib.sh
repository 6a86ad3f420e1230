# tests/host/lib.sh: Debian with real systemd as PID 1 in systemd-nspawn, for the
# host tests. Sourced by tests/host/run.sh, not executed.
#
# - host_rootfs: a Debian bookworm minbase root filesystem with systemd and git, built
#   once with mmdebstrap (Debian's faster debootstrap: ~1 min instead of ~4 here) and
#   cached under $HOST_CACHE, keyed by a hash of the package list and of this builder.
# - ct_boot NAME: boots a container on an overlay of that rootfs whose writes persist
#   across power cycles of the same container (like a disk; /run is a tmpfs and is
#   lost, as on a real host), in a cgroup of its own, with the host's Docker socket
#   and docker CLI bound in. ct NAME CMD... runs CMD inside (nsenter, as root).
# - ct_power_cut NAME kills the container's PID 1 (the kernel then kills every process
#   of it): a power loss. ct_poweroff NAME: a clean shutdown. ct_destroy NAME: shut
#   down (cut the power after 30 s), remove the cgroups deepest first, unmount, delete.
# Every container ct_boot started is destroyed by host_cleanup (run.sh's EXIT trap),
# whatever path the tests took.

HOST_CACHE=${CCCI_HOST_CACHE:-/var/cache/cc-ci-host-tests}
HOST_WORK=${CCCI_HOST_WORK:-/var/tmp/cc-ci-host-tests}
HOST_SUITE=bookworm
# What the container needs beyond minbase: systemd as init, D-Bus for systemctl, git
# for the runner's clones. The docker CLI is the host's, bound in.
HOST_PACKAGES=(systemd systemd-sysv dbus git)
# Timers and gettys a test container does not want.
HOST_MASKED=(apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer
  fstrim.timer console-getty.service systemd-timesyncd.service)

host_log() { printf '==> %s\n' "$*" >&2; }
host_die() { printf 'host tests: error: %s\n' "$*" >&2; exit 1; }

# Debian packages the harness needs on the host.
host_packages() {
  local missing=() pkg
  for pkg in systemd-container mmdebstrap jq curl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    host_log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The Debian mirror this host's apt uses (deb822 or one-line sources).
host_mirror() {
  local m
  m=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
  [ -n "$m" ] || m=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}

# Build the root filesystem into $1 (a new directory).
host_rootfs_build() {
  local dir=$1 include
  include=$(IFS=,; echo "${HOST_PACKAGES[*]}")
  mmdebstrap --quiet --variant=minbase --include="$include" \
    --dpkgopt=force-unsafe-io --aptopt='Acquire::Languages "none"' \
    "$HOST_SUITE" "$dir" "deb $(host_mirror) $HOST_SUITE main" >&2
  systemctl --root="$dir" mask "${HOST_MASKED[@]}" >/dev/null 2>&1
  # Each container gets its own machine id on its first boot (ct_boot).
  : > "$dir/etc/machine-id"
}

# Print the cached root filesystem's path, building it first if needed.
host_rootfs() {
  local key dir
  key=$({ echo "$HOST_SUITE ${HOST_PACKAGES[*]} ${HOST_MASKED[*]}"; declare -f host_rootfs_build; } \
    | sha256sum | cut -c1-16)
  dir=$HOST_CACHE/rootfs-$key
  mkdir -p "$HOST_CACHE"
  (
    flock 9
    if [ ! -e "$dir.complete" ]; then
      host_log "building the container root filesystem (Debian $HOST_SUITE minbase + ${HOST_PACKAGES[*]}) in $dir"
      local t0=$SECONDS
      rm -rf "$dir" "$dir.tmp"
      host_rootfs_build "$dir.tmp" || { rm -rf "$dir.tmp"; host_die "building the root filesystem failed"; }
      mv "$dir.tmp" "$dir"
      touch "$dir.complete"
      host_log "root filesystem built in $((SECONDS - t0)) s"
      # Older builds (another package list) are of no use any more.
      find "$HOST_CACHE" -maxdepth 1 -name 'rootfs-*' ! -name "rootfs-$key*" -exec rm -rf {} +
    fi
  ) 9>"$HOST_CACHE/.lock" || exit 1
  echo "$dir"
}

# Extra systemd-nspawn arguments of every container (binds), set by the caller.
CT_ARGS=()

ct_dir() { echo "$HOST_WORK/ct/$1"; }

# The cgroups container $1 lives in: on a hybrid hierarchy (these machines: v1
# controllers, v2 in unified/, systemd's named v1 hierarchy) one in each of unified/
# and systemd/; on a pure v2 host one at the top.
ct_cgroups() {
  if [ -d /sys/fs/cgroup/unified ]; then
    echo "/sys/fs/cgroup/unified/nspawn-$1 /sys/fs/cgroup/systemd/nspawn-$1"
  else
    echo "/sys/fs/cgroup/nspawn-$1"
  fi
}
ct_root() { echo "$HOST_WORK/ct/$1/root"; }
ct_leader() { cat "$(ct_dir "$1")/leader"; }

# Create container NAME's disk: an overlay of the cached rootfs.
ct_create() {
  local name=$1 d lower
  d=$(ct_dir "$name")
  lower=$(host_rootfs)
  [ ! -e "$d" ] || host_die "container $name exists already ($d)"
  mkdir -p "$d/upper" "$d/work" "$d/root"
  mount -t overlay "ccci-$name" -o "lowerdir=$lower,upperdir=$d/upper,workdir=$d/work" "$d/root"
  systemd-machine-id-setup --root="$d/root" >/dev/null 2>&1
}

# Boot container NAME (creating it first if needed); returns once systemd reports the
# system running (or degraded: the failed units are listed).
ct_boot() {
  local name=$1 d pid leader state cg t0
  export CT_CGROUPS
  CT_CGROUPS=$(ct_cgroups "$name")
  d=$(ct_dir "$name")
  [ -e "$d/root" ] || ct_create "$name"
  t0=$(date +%s%N)
  for cg in $(ct_cgroups "$name"); do mkdir -p "$cg"; done
  # setsid: the container is not in the tests' process group; the cgroup of its own
  # keeps it out of the root cgroup, which nspawn refuses.
  setsid bash -c 'for cg in $CT_CGROUPS; do echo $$ > "$cg/cgroup.procs"; done
    exec systemd-nspawn -q -D "$0" -b --machine="$1" --register=no --keep-unit \
      --console=passive --bind=/var/run/docker.sock "${@:2}"' \
    "$d/root" "$name" "${CT_ARGS[@]}" </dev/null >>"$d/nspawn.log" 2>&1 &
  pid=$!
  echo "$pid" > "$d/nspawn.pid"
  for _ in $(seq 1 100); do
    leader=$(pgrep -P "$pid" -x systemd || true)
    [ -n "$leader" ] && break
    kill -0 "$pid" 2>/dev/null || host_die "container $name did not start: $(tail -n 20 "$d/nspawn.log")"
    sleep 0.05
  done
  [ -n "$leader" ] || host_die "container $name: no systemd inside after 5 s"
  echo "$leader" > "$d/leader"
  # The bus appears a moment after PID 1 starts.
  for _ in $(seq 1 200); do
    state=$(ct "$name" systemctl is-system-running --wait 2>/dev/null) && break
    case $state in running | degraded | maintenance | stopping) break ;; esac
    sleep 0.05
  done
  CT_BOOT_MS=$((($(date +%s%N) - t0) / 1000000))
  case $state in
    running) ;;
    degraded) host_log "container $name booted degraded: $(ct "$name" systemctl list-units --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')" ;;
    *) host_die "container $name did not boot (state: ${state:-unknown}); log: $(tail -n 20 "$d/nspawn.log")" ;;
  esac
}

# Run a command in container NAME as root, with a clean environment.
ct() {
  local name=$1
  shift
  nsenter -t "$(ct_leader "$name")" -a \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

# Whether container NAME's systemd-nspawn still runs.
ct_running() {
  local pid
  pid=$(cat "$(ct_dir "$1")/nspawn.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

# Wait up to $2 seconds for container $1's systemd-nspawn to exit.
ct_wait_down() {
  local pid
  pid=$(cat "$(ct_dir "$1")/nspawn.pid")
  for _ in $(seq 1 $(($2 * 10))); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  return 1
}

# A power loss: PID 1 of the container is killed, and with it every process in it.
ct_power_cut() {
  kill -KILL "$(ct_leader "$1")" 2>/dev/null || true
  ct_wait_down "$1" 10 || host_die "container $1 still runs after its power was cut"
}

# A clean shutdown (units are stopped), cut after $2 seconds (default 30).
ct_poweroff() {
  ct "$1" systemctl poweroff --no-block >/dev/null 2>&1 || true
  ct_wait_down "$1" "${2:-30}" || { host_log "container $1 did not power off: cutting the power"; ct_power_cut "$1"; }
}

# Remove container NAME entirely: shut down, cgroups, overlay, files.
ct_destroy() {
  local name=$1 d cg
  d=$(ct_dir "$name")
  [ -d "$d" ] || return 0
  if ct_running "$name"; then ct_poweroff "$name" 30; fi
  for cg in $(ct_cgroups "$name"); do
    [ ! -d "$cg" ] || find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  mountpoint -q "$d/root" && umount "$d/root"
  rm -rf "$d"
}

# The journal of container NAME (running or not), last $2 lines of unit $3 (or all).
ct_journal() {
  local name=$1 lines=${2:-80} unit=${3:-}
  journalctl -D "$(ct_root "$name")/var/log/journal" --no-pager -n "$lines" -o short-monotonic \
    ${unit:+-u "$unit"} 2>/dev/null || true
}

# Destroy every container of the host tests; nothing of theirs stays.
host_cleanup_containers() {
  local d
  for d in "$HOST_WORK"/ct/*/; do
    [ -d "$d" ] && ct_destroy "$(basename "$d")"
  done
  return 0
}
