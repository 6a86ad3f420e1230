#!/usr/bin/env bash
# The shipped units (units/) parse under real systemd with no unknown or invalid
# directive: `systemd-analyze verify` on copies whose ExecStart points at the built
# binary (the only change). It exits 0 even on unknown keys, so any output fails.
# Then their exposure, offline (`systemd-analyze security --offline=true`), within the
# bounds of docs/security.md; the host tests measure it again under the booted systemd.
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

# unit and bound (exposure x 10, systemd-analyze's --threshold scale)
for pair in "cc-ci-poller.service 25" "cc-ci-janitor.service 35" "cc-ci-runner@20261125T120301Z-3f9a1c.service 50"; do
  read -r unit bound <<<"$pair"
  if ! out=$(cd "$dir" && systemd-analyze security --offline=true --threshold="$bound" --no-pager "$unit" 2>&1); then
    printf '%s: exposure above %s (docs/security.md):\n%s\n' "$unit" "$bound" "$(tail -n 1 <<<"$out")" >&2
    exit 1
  fi
  echo "exposure (offline) $(sed -n 's/.*Overall exposure level for \(.*\)/\1/p' <<<"$out")"
done
