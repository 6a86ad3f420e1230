#!/usr/bin/env bash
# Build the cc-ci example recipes.
#
#   examples/build.sh OUT_DIR
#
# (a) builds the example images locally (FROM scratch + Debian's static busybox,
#     nothing is pulled), tagged ccci-example/<name>:<tag>;
# (b) for every recipe under examples/recipes/<name>/ creates a git repository
#     OUT_DIR/<name>: one commit per version directory, oldest first, each released
#     version (every directory except `head`) with an annotated tag of its name, and
#     `head` as the newest, untagged commit on branch `main`.
#
# Idempotent: images are rebuilt from the docker build cache, and the repositories
# are recreated with fixed author/committer identities and dates, so the commit and
# tag ids are the same on every run.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
OUT_DIR=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUSYBOX=${BUSYBOX:-/bin/busybox}

die() { echo "build.sh: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker CLI not found"
command -v git >/dev/null || die "git not found"
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (install busybox-static)"
file_out=$(file -L "$BUSYBOX" 2>/dev/null || true)
[[ -z $file_out || $file_out == *"statically linked"* ]] || die "$BUSYBOX is not statically linked"

export DOCKER_BUILDKIT=0

# ---------------------------------------------------------------------------
# (a) images
# name  tag  env (space separated KEY=VALUE baked into the image)  [program]
# An image runs images/entrypoint.sh, or the program named in the fourth field: it is
# installed as /bin/<program> and runs as `<program> serve`.
IMAGES=(
  "hello|1.0.0|APP_NAME=hello APP_VERSION=1.0.0+1.0 REQUIRE_SECRET=/run/secrets/admin_password"
  "hello|1.1.0|APP_NAME=hello APP_VERSION=1.1.0+1.1 REQUIRE_SECRET=/run/secrets/admin_password"
  "hello|head|APP_NAME=hello APP_VERSION=head REQUIRE_SECRET=/run/secrets/admin_password"
  "broken-upgrade|1.0.0|APP_NAME=broken-upgrade APP_VERSION=1.0.0+1.0 DATA_FORMAT=v1"
  "broken-upgrade|head|APP_NAME=broken-upgrade APP_VERSION=head DATA_FORMAT=v2"
  "no-backup|1.0.0|APP_NAME=no-backup APP_VERSION=1.0.0+1.0"
  "no-backup|head|APP_NAME=no-backup APP_VERSION=head"
  "guestbook|1.0.0|APP_NAME=guestbook APP_VERSION=1.0.0+1.0"
  "guestbook|head|APP_NAME=guestbook APP_VERSION=head"
  "rowdb|1.0|ROWDB_VERSION=1.0|rowdb"
  "rowdb|1.1|ROWDB_VERSION=1.1|rowdb"
  "website|2.4.1|APP_NAME=website APP_VERSION=2.4.1 REQUIRE_SECRET=/run/secrets/admin_password SITE_PAGE=/etc/website/site.html"
  "website|2.5.0|APP_NAME=website APP_VERSION=2.5.0 REQUIRE_SECRET=/run/secrets/admin_password SITE_PAGE=/etc/website/site.html"
)

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

build() { # tag context-dir
  local log
  log=$(mktemp)
  if ! docker build -q -t "$1" "$2" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "docker build of $1 failed"
  fi
  rm -f "$log"
  echo "image $1 $(docker image inspect -f "{{.Id}}" "$1" | cut -c1-19)"
}

mkdir -p "$ctx/base"
cp "$BUSYBOX" "$ctx/base/busybox"
cat > "$ctx/base/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /data /run/secrets && chmod 1777 /tmp
DOCKERFILE
build ccci-example/base:busybox "$ctx/base"

for row in "${IMAGES[@]}"; do
  IFS='|' read -r name tag envs program <<<"$row"
  d="$ctx/$name-$tag"
  mkdir -p "$d"
  {
    echo "FROM ccci-example/base:busybox"
    if [[ -n $program ]]; then
      install -m 0755 "$HERE/images/$program" "$d/$program"
      echo "COPY $program /bin/$program"
    else
      cp "$HERE/images/entrypoint.sh" "$d/entrypoint.sh"
      echo "COPY entrypoint.sh /entrypoint.sh"
    fi
    for kv in $envs; do echo "ENV $kv"; done
    echo "LABEL org.opencontainers.image.title=ccci-example/$name org.opencontainers.image.version=$tag"
    if [[ -n $program ]]; then
      echo "ENTRYPOINT [\"/bin/$program\", \"serve\"]"
    else
      echo 'ENTRYPOINT ["/bin/sh", "/entrypoint.sh"]'
    fi
  } > "$d/Dockerfile"
  build "ccci-example/$name:$tag" "$d"
done

# ---------------------------------------------------------------------------
# (b) recipe repositories
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

export GIT_AUTHOR_NAME="cc-ci examples" GIT_AUTHOR_EMAIL="examples@cc-ci.invalid"
export GIT_COMMITTER_NAME="cc-ci examples" GIT_COMMITTER_EMAIL="examples@cc-ci.invalid"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
G=(git -c init.defaultBranch=main -c commit.gpgsign=false -c tag.gpgsign=false -c core.hooksPath=/dev/null)

for recipe_dir in "$HERE"/recipes/*/; do
  name=$(basename "$recipe_dir")
  mapfile -t versions < <(find "$recipe_dir" -mindepth 1 -maxdepth 1 -type d ! -name head -printf '%f\n' | sort -V)
  [[ -d $recipe_dir/head ]] && versions+=(head)
  ((${#versions[@]})) || die "recipe $name has no version directories"
  tmp="$OUT_DIR/.$name.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  "${G[@]}" -C "$tmp" init -q -b main
  i=0
  for v in "${versions[@]}"; do
    i=$((i + 1))
    export GIT_AUTHOR_DATE="2026-01-$(printf %02d "$i")T12:00:00Z" GIT_COMMITTER_DATE="2026-01-$(printf %02d "$i")T12:00:00Z"
    "${G[@]}" -C "$tmp" rm -rq --ignore-unmatch . >/dev/null
    cp -a "$recipe_dir/$v/." "$tmp/"
    "${G[@]}" -C "$tmp" add -A
    if [[ $v == head ]]; then
      "${G[@]}" -C "$tmp" commit -q --allow-empty -m "$name: unreleased changes (head)"
    else
      "${G[@]}" -C "$tmp" commit -q --allow-empty -m "$name: release $v"
      "${G[@]}" -C "$tmp" tag -a "$v" -m "$name $v"
    fi
  done
  rm -rf "${OUT_DIR:?}/$name"
  mv "$tmp" "$OUT_DIR/$name"
  echo "repo $OUT_DIR/$name: ${versions[*]} (main at $("${G[@]}" -C "$OUT_DIR/$name" rev-parse --short HEAD))"
done
