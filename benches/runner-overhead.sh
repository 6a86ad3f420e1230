#!/usr/bin/env bash
# Benchmark: the runner's own overhead on the hello example.
#
# Runs `cc-ci run hello` (release build, abra test double, real swarm) N times and
# reads each run's timing.json: wall time, time spent inside child commands (abra,
# docker, git hooks, tests), and time spent deliberately waiting (poll intervals, lock).
#   overhead       = wall - inside commands - waiting   (the runner's own work)
#   overhead+wait  = wall - inside commands             (also counting its poll sleeps)
# Both are reported as a share of the wall time of the same run. Target: overhead < 2 %.
#
#   benches/runner-overhead.sh [N]     (default N=3; as root, like scripts/try)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib/host.sh
n=${1:-3}
ccci_need_root
ccci_install_packages
ccci_ensure_cargo
ccci_ensure_swarm
cargo build --release --quiet --bin cc-ci
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ccci_example_setup "$work" bench.localhost "$PWD/tests/doubles/abra" "$work/run"
printf '%-4s %8s %10s %9s %11s %10s %14s %6s\n' run wall_s commands_s waiting_s overhead_s overhead% overhead+wait% level
for i in $(seq 1 "$n"); do
  out=$(target/release/cc-ci run hello --config "$work/config/cc-ci.toml" 2>/dev/null)
  results=$(printf '%s\n' "$out" | tail -n1 | sed 's/^results: //')
  timing=$(dirname "$results")/timing.json
  level=$(grep -o '"level": [0-9]' "$results" | grep -o '[0-9]$')
  num() { grep -o "\"$1\":[0-9.e-]*" "$timing" | cut -d: -f2; }
  awk -v i="$i" -v w="$(num wall_s)" -v e="$(num external_s)" -v wt="$(num waiting_s)" \
      -v o="$(num overhead_s)" -v l="$level" \
      'BEGIN { printf "%-4s %8.2f %10.2f %9.2f %11.3f %9.2f%% %13.2f%% %6s\n", i, w, e, wt, o, 100*o/w, 100*(w-e)/w, l }'
done
