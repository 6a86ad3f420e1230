#!/usr/bin/env bash
# The NixOS side of cc-ci, checked for real where nixpkgs cannot be downloaded:
# Debian's nix-bin evaluates the module, the example host and the flake with
# nixpkgs' own lib (../shared/nixpkgs-lib, or CCCI_NIXPKGS_LIB) against strict
# declarations of the NixOS options they set (tests/nixos/offline/).
#
#   tests/nixos/check-offline.sh [PATH-TO-cc-ci]     (as root; builds cc-ci if not given)
#
# 1. every .nix file parses;
# 2. the example host (nix/hosts/cc-ci) evaluates, forced whole (deepSeq);
# 3. a misspelled option, a wrong type and each assertion fail with their message;
#    the units the module configures exist in units/ and every directive it sets is
#    one the unit file has (or an expected addition); a drifted unit is caught;
# 4. the config the module renders from the example host's settings passes
#    `cc-ci check-config`, and a key the loader does not know is refused;
# 5. the flake's outputs evaluate (`nix flake check --no-build`) with the nixpkgs
#    input replaced by a double built from nixpkgs' lib.
# What only a Nix host can run: the package build and the VM tests (`nix flake check`).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
offline=$here/tests/nixos/offline
started=$SECONDS

say() { printf '== %s\n' "$*"; }
die() { printf 'check-offline: %s\n' "$*" >&2; exit 1; }

lib=${CCCI_NIXPKGS_LIB:-$here/../shared/nixpkgs-lib}
[ -f "$lib/lib/default.nix" ] ||
  die "nixpkgs' lib not found at $lib (no lib/default.nix): set CCCI_NIXPKGS_LIB to a directory holding nixpkgs' lib/, e.g. a checkout of nixpkgs (../shared/nixpkgs-lib beside the repository by default)"
lib=$(cd "$lib" && pwd)

# Debian's nix-bin (root, no daemon: a local store in /nix) and a TOML writer for
# rendering the module's settings as pkgs.formats.toml does (JSON in, TOML out).
need=()
command -v nix-instantiate >/dev/null || need+=(nix-bin)
/usr/bin/python3 -c 'import tomli_w' 2>/dev/null || need+=(python3-tomli-w)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  [ "$(id -u)" = 0 ] || die "run as root (installs ${need[*]} with apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } ||
    die "cannot install ${need[*]}"
fi
nix() { command nix --extra-experimental-features 'nix-command flakes' "$@"; }
say "$(command nix --version), nixpkgs lib $(cat "$lib/lib/.version") from $lib"

bin=${1:-}
if [ -z "$bin" ]; then
  (cd "$here" && cargo build --quiet --bin cc-ci)
  bin=$here/target/debug/cc-ci
fi
bin=$(realpath "$bin")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

# eval ATTR MODULES-EXPR [extra nix-instantiate args...]: the example evaluation.
eval_attr() {
  local attr=$1 modules=$2
  shift 2
  nix-instantiate --eval --strict --json "$offline/eval.nix" \
    --arg lib "import $lib/lib" --arg repo "$here" --arg modules "$modules" -A "$attr" "$@"
}

# The files git knows (tracked, or new and not ignored): what a checkout holds.
repo_files() { git -C "$here" ls-files --cached --others --exclude-standard "$@"; }

say "1. every .nix file parses"
n=0
while IFS= read -r f; do
  [ -f "$here/$f" ] || continue
  nix-instantiate --parse "$here/$f" >/dev/null || fail "$f does not parse"
  n=$((n + 1))
done < <(repo_files '*.nix')
echo "$n files parsed"

say "2. the example host evaluates, forced whole"
host='[ '"$here"'/nix/hosts/cc-ci ]'
eval_attr summary "$host" || fail "the example host does not evaluate"
echo

say "3. what must fail, fails with its message"
expect_fail() { # NAME NEEDLE MODULES-EXPR [extra args]
  local name=$1 needle=$2 modules=$3 out
  shift 3
  if out=$(eval_attr summary "$modules" "$@" 2>&1); then
    fail "$name: evaluated, but should have failed with: $needle"
  elif ! grep -qF -- "$needle" <<<"$out"; then
    fail "$name: failed without the message \"$needle\":"$'\n'"$out"
  else
    echo "ok: $name"
  fi
}
# A host with the module on and what a case adds (the example host's poller bits).
base='system.stateVersion = "26.05"; services.cc-ci = { enable = true; gitea.tokenFile = "/run/secrets/t"; settings.gitea = { url = "https://git.example.org"; bot_user = "bot"; }; }'
case_of() { echo "[ { $base; } { $1 } ]"; }
expect_fail "a misspelled cc-ci option" "The option \`services.cc-ci.janitor.calender' does not exist" \
  "$(case_of 'services.cc-ci.janitor.calender = "hourly";')"
expect_fail "a misspelled NixOS option" "The option \`systemd.services.extra.serviceConfg' does not exist" \
  "$(case_of 'systemd.services.extra.serviceConfg.User = "x";')"
expect_fail "a wrong type" "services.cc-ci.swarm.subnetSize' is not of type" \
  "$(case_of 'services.cc-ci.swarm.subnetSize = "24";')"
expect_fail "a settings value TOML cannot hold" "services.cc-ci.settings.report.base_url' is not of type \`TOML value'" \
  "$(case_of 'services.cc-ci.settings.report.base_url = null;')"
expect_fail "a credential in the Nix store" "services.cc-ci.gitea.tokenFile' is not of type" \
  "$(case_of 'services.cc-ci.gitea.tokenFile = "/nix/store/00000000000000000000000000000000-token";')"
expect_fail "assertion: no abra" "services.cc-ci.abra.package is null" \
  "$(case_of '')" --arg withAbra false
expect_fail "assertion: poller without gitea" "services.cc-ci.poller.enable needs services.cc-ci.settings.gitea" \
  '[ { services.cc-ci.enable = true; } ]'
expect_fail "assertion: webhook without poller" "services.cc-ci.webhook.enable needs services.cc-ci.poller.enable" \
  "$(case_of 'services.cc-ci.poller.enable = false; services.cc-ci.webhook.enable = true;')"
expect_fail "assertion: webhook without secret" "services.cc-ci.webhook.enable needs services.cc-ci.webhook.secretFile" \
  "$(case_of 'services.cc-ci.webhook.enable = true;')"
expect_fail "assertion: settings.webhook without the webhook" "services.cc-ci.settings.webhook is set but services.cc-ci.webhook.enable is false" \
  "$(case_of 'services.cc-ci.settings.webhook.secret_file = "/run/x";')"
expect_fail "assertion: run pages without a virtual host" "services.cc-ci.runPages.enable needs services.cc-ci.runPages.virtualHost" \
  "$(case_of 'services.cc-ci.runPages.enable = true;')"
expect_fail "assertion: an address pool that is no CIDR" "must be IPv4 CIDRs like 10.128.0.0/12" \
  "$(case_of 'services.cc-ci.swarm.addressPools = [ "10.128.0.0" ];')"
expect_fail "assertion: a pool no larger than one network" "its prefix length must be below services.cc-ci.swarm.subnetSize (24)" \
  "$(case_of 'services.cc-ci.swarm.addressPools = [ "10.128.0.0/12" "10.200.0.0/24" ];')"
expect_fail "assertion: a recipe name that is no directory name" "services.cc-ci.recipes names must be recipe names" \
  "$(case_of "services.cc-ci.recipes.\"../etc\" = $here/nix/hosts/cc-ci/ci/recipes/hello;")"

say "3. the drop-ins against units/ as it is now"
webhook='{ services.cc-ci.webhook = { enable = true; secretFile = "/run/secrets/w"; }; }'
eval_attr report "[ $here/nix/hosts/cc-ci $webhook ]" | tr -d '[]' | tr ',' '\n' | sed 's/^"//; s/"$//' ||
  fail "the module's drop-ins do not match units/ (above)"
echo
cp -r "$here/units" "$tmp/units"
sed -i '/^ExecStart=/d' "$tmp/units/cc-ci-runner@.service"
expect_fail "a unit that lost a directive the module replaces" \
  "systemd.services.\"cc-ci-runner@\" replaces ExecStart= (a reset to \"\" then a new value), but units/cc-ci-runner@.service has no ExecStart=" \
  "[ $here/nix/hosts/cc-ci ]" --arg unitsDir "$tmp/units" -A report
rm "$tmp/units/cc-ci-poller.service"
expect_fail "a unit that is gone" "units/cc-ci-poller.service does not exist, but the module configures systemd.services.\"cc-ci-poller\"" \
  "[ $here/nix/hosts/cc-ci ]" --arg unitsDir "$tmp/units" -A report

say "4. the rendered config passes cc-ci's own loader; an unknown key does not"
render() { # MODULES-EXPR DIR: the settings as TOML in DIR/cc-ci.toml, recipes beside
  mkdir -p "$2"
  eval_attr settingsJSON "$1" | /usr/bin/python3 -c '
import json, sys, tomli_w
sys.stdout.write(tomli_w.dumps(json.loads(json.load(sys.stdin))))' >"$2/cc-ci.toml"
  cp -r "$here/nix/hosts/cc-ci/ci/recipes" "$2/recipes"
}
render "$host" "$tmp/good"
"$bin" check-config --config "$tmp/good/cc-ci.toml" || fail "the example host's rendered config is refused by cc-ci check-config"
render "[ $here/nix/hosts/cc-ci { services.cc-ci.settings.poll.intervall_s = 30; } ]" "$tmp/typo"
if out=$("$bin" check-config --config "$tmp/typo/cc-ci.toml" 2>&1); then
  fail "cc-ci check-config accepted settings.poll.intervall_s"
elif ! grep -qF 'did you mean `interval_s`?' <<<"$out"; then
  fail "cc-ci check-config refused settings.poll.intervall_s without naming interval_s: $out"
else
  echo "ok: refused: $(grep -F 'unknown field' <<<"$out" | head -1)"
fi

say "5. the flake's outputs, with nixpkgs replaced by a double built from nixpkgs' lib"
mkdir -p "$tmp/src" "$tmp/nixpkgs"
(cd "$here" && repo_files -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  xargs -0 cp --parents -t "$tmp/src")
cp -r "$lib/lib" "$tmp/nixpkgs/lib"
cp "$offline"/nixpkgs-double/*.nix "$offline/pkgs.nix" "$offline/nixos-options.nix" "$tmp/nixpkgs/"
flake=(--override-input nixpkgs "path:$tmp/nixpkgs" --no-write-lock-file)
nix flake check --no-build "path:$tmp/src" "${flake[@]}" || fail "nix flake check --no-build failed"
nix flake show "path:$tmp/src" "${flake[@]}" 2>/dev/null || fail "nix flake show failed"
nix eval --json "path:$tmp/src#nixosConfigurations.cc-ci.config.systemd.services.cc-ci-poller.serviceConfig.ExecStart" "${flake[@]}" ||
  fail "nixosConfigurations.cc-ci does not evaluate"
echo

if [ "$failures" -gt 0 ]; then
  die "$failures check(s) failed ($((SECONDS - started)) s)"
fi
echo "NixOS offline checks passed in $((SECONDS - started)) s (the package build and the VM tests need a Nix host: nix flake check)"
