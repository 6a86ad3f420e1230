#!/usr/bin/env bash
# The shipped units (units/) parse under real systemd with no unknown or invalid
# directive: `systemd-analyze verify` on copies whose ExecStart points at the built
# binary (the only change). It exits 0 even on unknown keys, so any output fails.
#
#   tests/units/verify.sh PATH-TO-cc-ci
set -euo pipefail
bin=$(realpath "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for f in "$here"/units/*; do
  sed "s|/usr/bin/cc-ci|$bin|g" "$f" > "$dir/$(basename "$f")"
done
# A template is verified through an instance of it.
cp "$dir/cc-ci-runner@.service" "$dir/cc-ci-runner@20261125T120301Z-3f9a1c.service"
units=()
for f in "$dir"/*; do
  case $f in *@.service) ;; *) units+=("$f") ;; esac
done
out=$(cd "$dir" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "${units[@]}" 2>&1) || true
if [ -n "$out" ]; then
  printf 'systemd-analyze verify found problems in units/:\n%s\n' "$out" >&2
  exit 1
fi
echo "units verified: $(cd "$here/units" && ls | tr '\n' ' ')"
