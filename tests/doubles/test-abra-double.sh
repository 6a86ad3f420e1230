#!/usr/bin/env bash
# Test of the abra test double (tests/doubles/abra) against the REAL local swarm.
#
#   tests/doubles/test-abra-double.sh
#
# Builds a throwaway busybox image and a tiny recipe git repository in a mktemp dir,
# drives new / secret generate / deploy / backup create / restore / undeploy / rm
# through the double, checks their effects with the docker CLI, checks that a failing
# deploy exits non-zero, and cleans up after itself (trap). Prints "N passed, M failed"
# and exits non-zero on any failure. Needs: docker (swarm active), git, /bin/busybox
# (static). Takes about a minute.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ABRA="$HERE/abra"
BUSYBOX=${BUSYBOX:-/bin/busybox}
PASS=0 FAIL=0
RID=$(head -c 64 /dev/urandom | LC_ALL=C tr -dc 'a-z0-9' | head -c 8 || true)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/abra-double-test.XXXXXX")
IMAGE="ccci-double-test/app:$RID"
DOMAIN="t$RID.double.test"
BAD="b$RID.double.test"
STACK=${DOMAIN//./_}
BSTACK=${BAD//./_}
export ABRA_DIR="$WORK/abra"

ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
nok() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { # description command...
  local d=$1
  shift
  if "$@"; then ok "$d"; else nok "$d"; fi
}

cleanup() {
  set +e
  local s v t0
  for s in "$STACK" "$BSTACK"; do
    docker stack rm "$s" >/dev/null 2>&1
  done
  t0=$(date +%s)
  while (($(date +%s) - t0 < 60)); do
    [[ -z $(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK") ]] &&
      [[ -z $(docker ps -aq --filter "label=com.docker.stack.namespace=$BSTACK") ]] &&
      [[ -z $(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK") ]] &&
      [[ -z $(docker network ls -q --filter "label=com.docker.stack.namespace=$BSTACK") ]] && break
    sleep 1
  done
  for s in "$STACK" "$BSTACK"; do
    for v in $(docker volume ls -q --filter "label=com.docker.stack.namespace=$s"); do
      for _ in $(seq 30); do docker volume rm "$v" >/dev/null 2>&1 && break; sleep 1; done
    done
    docker secret ls --format '{{.Name}}' | grep "^${s}_" | xargs -r docker secret rm >/dev/null 2>&1
  done
  docker rmi "$IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null | grep -qx active || {
  echo "test-abra-double: docker swarm is not active" >&2
  exit 1
}

# --- throwaway image ---------------------------------------------------------
mkdir -p "$WORK/image"
cp "$BUSYBOX" "$WORK/image/busybox"
cat >"$WORK/image/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /data
EOF
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$WORK/image" >/dev/null 2>&1 || {
  echo "test-abra-double: docker build failed" >&2
  exit 1
}

# --- tiny recipes (git repositories, as the runner puts them in $ABRA_DIR) ----
mkrecipe() { # name command-json
  local d="$ABRA_DIR/recipes/$1"
  mkdir -p "$d"
  cat >"$d/.env.sample" <<EOF
TYPE=$1
DOMAIN=example.com
COMPOSE_FILE="compose.yml"
# the database part, switched on as recipes switch theirs on
COMPOSE_FILE="\$COMPOSE_FILE:compose.db.yml"
SECRET_ADMIN_PASSWORD_VERSION=v1 # length=16
GREETING="hello \${DOMAIN}" # expanded from the line above
EOF
  cat >"$d/compose.db.yml" <<EOF
version: "3.8"
x-db-env: &db-env
  DB_FILE: /var/lib/db/rows
services:
  app:
    networks: [default, backend]
  db:
    image: $IMAGE
    command: ["sh", "-c", "touch /var/lib/db/rows; trap 'exit 0' TERM; while :; do sleep 1; done"]
    environment:
      <<: *db-env
    volumes:
      - db:/var/lib/db
    tmpfs: [/run/db]
    networks: [backend]
    stop_grace_period: 1s
    deploy:
      labels:
        backupbot.backup: "true"
        backupbot.backup.volumes.db.path: "backup.sql"
        backupbot.backup.pre-hook: "cp \$\$DB_FILE /var/lib/db/backup.sql"
        backupbot.restore.post-hook: "cp /var/lib/db/backup.sql \$\$DB_FILE"
volumes:
  db:
networks:
  backend:
    internal: true
EOF
  cat >"$d/compose.yml" <<EOF
version: "3.8"
services:
  app:
    image: $IMAGE
    command: $2
    environment:
      - GREETING=\${GREETING}
    volumes:
      - data:/data
    secrets:
      - admin_password
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 2s
    deploy:
      labels:
        - "coop-cloud.\${STACK_NAME}.version=1.0.0+test"
        - "coop-cloud.\${STACK_NAME}.timeout=40"
        - "backupbot.backup=true"
        - "backupbot.backup.volumes.data.path=files,www"
        - "backupbot.backup.pre-hook=echo dumped > /data/files/dump.txt"
        - "backupbot.backup.post-hook=touch /tmp/backup-post-hook"
        - "backupbot.restore.post-hook=touch /tmp/restore-post-hook"
      restart_policy:
        condition: on-failure
        max_attempts: 3
volumes:
  data:
secrets:
  admin_password:
    external: true
    name: \${STACK_NAME}_admin_password_\${SECRET_ADMIN_PASSWORD_VERSION}
EOF
  echo "echo not sourced by the double" >"$d/abra.sh"
  git -C "$d" init -q -b main
  git -C "$d" add -A
  GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t.invalid GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t.invalid \
    git -C "$d" -c commit.gpgsign=false commit -q -m "test recipe"
}
mkrecipe good '["sh", "-c", "test -s /run/secrets/admin_password || exit 1; mkdir -p /data/www /data/files; echo hi > /data/www/index.html; exec httpd -f -p 8080 -h /data/www"]'
mkrecipe bad '["sh", "-c", "echo this app always fails; exit 1"]'

container() { docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_${1:-app}" --filter status=running | head -n 1; }
in_app() { docker exec "$(container)" sh -c "$1"; }
in_db() { docker exec "$(container db)" sh -c "$1"; }

# --- env files, read as the runner reads them (the shared fixtures) --------------
for fixture in "$HERE"/fixtures/env/*.env; do
  got=$(
    # shellcheck source=abra
    . "$ABRA"
    parse_env "$fixture"
    for k in "${ENV_KEYS[@]}"; do v=${ENV[$k]}; printf '%s\t%s\n' "$k" "${v//$'\n'/\\n}"; done | sort
  )
  check "env fixture $(basename "$fixture") reads as expected" \
    bash -c '[[ $1 == "$(sort "$2")" ]] || { diff <(echo "$1") <(sort "$2"); false; }' _ "$got" "${fixture%.env}.expected"
done
printf 'A=1\nB="never closed\n' >"$WORK/bad.env"
out=$( (. "$ABRA"; parse_env "$WORK/bad.env") 2>&1 || true)
check "an env file it cannot read is named with its line" bash -c '[[ $1 == *"bad.env:2: unterminated quoted value"* ]]' _ "$out"

# --- CLI surface ---------------------------------------------------------------
check "abra -v says it is the TEST DOUBLE" bash -c '"$1" -v | head -n 1 | grep -q "abra-double" && "$1" version | grep -q "TEST DOUBLE"' _ "$ABRA"
check "--help first line names the double" bash -c '"$1" --help | head -n 1 | grep -q "^abra-double "' _ "$ABRA"
set +e
out=$("$ABRA" app deploy "$DOMAIN" --bogus 2>&1); rc=$?
set -e
check "unknown flag exits 2 and names the flag" bash -c '[[ $1 == 2 && $2 == *"--bogus"* && $2 == abra-double:* ]]' _ "$rc" "$out"
check "ABRA_DIR unset is an error" bash -c '! env -u ABRA_DIR "$1" app deploy x.test 2>/dev/null' _ "$ABRA"

# --- new --------------------------------------------------------------------------
ENVF="$ABRA_DIR/servers/local/$DOMAIN.env"
check "app new creates the env file" "$ABRA" app new good -s local -D "$DOMAIN" -n -o -C
check "env file has DOMAIN and TYPE" bash -c 'grep -qx "DOMAIN=$2" "$1" && grep -qx "TYPE=good" "$1" && [[ $(grep -c "^DOMAIN=" "$1") == 1 ]]' _ "$ENVF" "$DOMAIN"
check "app new refuses an existing app" bash -c '! "$1" app new good -s local -D "$2" -n -o -C 2>/dev/null' _ "$ABRA" "$DOMAIN"
check "app new refuses a missing recipe" bash -c '! "$1" app new nope -s local -D "x$2" -n 2>/dev/null' _ "$ABRA" "$DOMAIN"

# --- secret generate ------------------------------------------------------------
json=$("$ABRA" app secret generate "$DOMAIN" -a -m -n -o -C || true)
check "secret generate -m prints the JSON array" bash -c '[[ $1 =~ ^\[\{\"name\":\"admin_password\",\"value\":\"[A-Za-z0-9]{16}\"\}\]$ ]]' _ "$json"
check "docker secret exists with the stack label" bash -c \
  '[[ $(docker secret inspect -f "{{index .Spec.Labels \"com.docker.stack.namespace\"}}" "$1_admin_password_v1") == "$1" ]]' _ "$STACK"
check "secret generate refuses an existing secret" bash -c '! "$1" app secret generate "$2" -a -m -n 2>/dev/null' _ "$ABRA" "$DOMAIN"

# --- deploy -----------------------------------------------------------------------
t0=$(date +%s)
check "deploy converges" "$ABRA" app deploy "$DOMAIN" -n -o -C
echo "     (deploy took $(($(date +%s) - t0))s)"
check "service is running 1/1" bash -c '[[ $(docker service ls --filter name=$1_app --format "{{.Replicas}}") == "1/1" ]]' _ "$STACK"
check "both compose files of \$COMPOSE_FILE deployed" bash -c '[[ $(docker service ls --filter name=$1_db --format "{{.Replicas}}") == "1/1" ]]' _ "$STACK"
check "env file variables expand in order" bash -c '[[ $(docker exec "$1" sh -c "echo \$GREETING") == "hello $2" ]]' _ "$(container)" "$DOMAIN"
check "merge keys reach the service" bash -c '[[ $(docker exec "$1" sh -c "echo \$DB_FILE") == /var/lib/db/rows ]]' _ "$(container db)"
check "the internal network is internal" bash -c '[[ $(docker network inspect -f "{{.Internal}}" "$1_backend") == true ]]' _ "$STACK"
check "app sees its secret" bash -c '[[ $(docker exec "$1" cat /run/secrets/admin_password) == "$2" ]]' _ "$(container)" "$(sed 's/.*"value":"\([^"]*\)".*/\1/' <<<"$json")"
check "deploy refuses an already deployed app without -f" bash -c '! "$1" app deploy "$2" -n -o -C 2>/dev/null' _ "$ABRA" "$DOMAIN"
check "deploy -f redeploys" "$ABRA" app deploy "$DOMAIN" -n -o -C -f
check "deploy -c skips the converge checks" "$ABRA" app deploy "$DOMAIN" -n -o -C -f -c
echo "dirty" >>"$ABRA_DIR/recipes/good/README"
check "deploy without -C refuses a dirty recipe" bash -c '! "$1" app deploy "$2" -n -o -f 2>/dev/null' _ "$ABRA" "$DOMAIN"
rm -f "$ABRA_DIR/recipes/good/README"

# --- backup / restore -------------------------------------------------------------
in_app 'echo original > /data/files/a.txt; mkdir -p /data/files/sub; echo deep > /data/files/sub/b.txt; echo outside > /data/not-backed-up'
in_db 'echo row-before-backup > "$DB_FILE"'
snap=$("$ABRA" app backup create "$DOMAIN" -n -o -C | sed -n 's/^snapshot: //p')
check "backup create prints 'snapshot: <id>'" test -n "$snap"
check "backup tar exists" test -s "$ABRA_DIR/backups/$DOMAIN/$snap/app.tar"
check "backup pre-hook ran before the tar" bash -c 'tar -tf "$1" | grep -qx "data/files/dump.txt"' _ "$ABRA_DIR/backups/$DOMAIN/$snap/app.tar"
check "backup post-hook ran" in_app 'test -e /tmp/backup-post-hook'
check "the database's dump file, written by its pre-hook, is its backup" bash -c '[[ $(tar -tf "$1") == var/lib/db/backup.sql ]]' _ "$ABRA_DIR/backups/$DOMAIN/$snap/db.tar"
check "only the labelled paths were backed up" bash -c '! tar -tf "$1" | grep -q "not-backed-up"' _ "$ABRA_DIR/backups/$DOMAIN/$snap/app.tar"
in_app 'echo changed > /data/files/a.txt; rm -rf /data/files/sub; echo new > /data/files/extra.txt'
in_db 'echo row-after-backup > "$DB_FILE"; rm /var/lib/db/backup.sql'
out=$("$ABRA" app restore "$DOMAIN" -n -o -C || true)
check "restore prints 'restored snapshot <id>'" bash -c '[[ $1 == *"restored snapshot $2"* ]]' _ "$out" "$snap"
check "restored file content" bash -c '[[ $(docker exec "$1" cat /data/files/a.txt) == original ]]' _ "$(container)"
check "restored deleted file" bash -c '[[ $(docker exec "$1" cat /data/files/sub/b.txt) == deep ]]' _ "$(container)"
check "file created after the backup is gone" in_app '! test -e /data/files/extra.txt'
check "restore post-hook ran" in_app 'test -e /tmp/restore-post-hook'
check "the database's restore post-hook loaded the dump" bash -c '[[ $(docker exec "$1" sh -c "cat \$DB_FILE") == row-before-backup ]]' _ "$(container db)"

# --- a failing deploy -------------------------------------------------------------------
"$ABRA" app new bad -s local -D "$BAD" -n -o -C >/dev/null
"$ABRA" app secret generate "$BAD" -a -m -n -o -C >/dev/null
t0=$(date +%s)
set +e
err=$("$ABRA" app deploy "$BAD" -n -o -C 2>&1 >/dev/null); rc=$?
set -e
check "failing deploy exits non-zero" test "$rc" -ne 0
check "failing deploy fails fast (before its 40s timeout)" test $(($(date +%s) - t0)) -lt 40
check "failing deploy prints the summary line" bash -c '[[ $1 == *"abra-double: deploy of $2 failed: "* ]]' _ "$err" "$BAD"
check "failing deploy prints the service's tasks and logs" bash -c '[[ $1 == *"docker service ps --no-trunc"* && $1 == *"this app always fails"* ]]' _ "$err"
check "undeploy of the failed app" "$ABRA" app undeploy "$BAD" -n
check "rm of the failed app" "$ABRA" app rm "$BAD" -n -f

# --- undeploy / rm ------------------------------------------------------------------
check "rm refuses a deployed app" bash -c '! "$1" app rm "$2" -n -f 2>/dev/null' _ "$ABRA" "$DOMAIN"
t0=$(date +%s)
check "undeploy" "$ABRA" app undeploy "$DOMAIN" -n
echo "     (undeploy took $(($(date +%s) - t0))s)"
check "undeploy of an undeployed app is an error" bash -c '! "$1" app undeploy "$2" -n 2>/dev/null' _ "$ABRA" "$DOMAIN"
# a secret named with the stack prefix but no label is the app's; one labelled for a
# longer stack name sharing the prefix is not
printf 'x' | docker secret create "${STACK}_manual_v1" - >/dev/null
printf 'x' | docker secret create --label "com.docker.stack.namespace=${STACK}_x" "${STACK}_x_other_v1" - >/dev/null
check "rm" "$ABRA" app rm "$DOMAIN" -n -f
check "rm removed the unlabelled prefixed secret" bash -c '! docker secret inspect "$1_manual_v1" >/dev/null 2>&1' _ "$STACK"
check "rm kept the secret of stack <stack>_x" docker secret inspect "${STACK}_x_other_v1" --format ok
docker secret rm "${STACK}_x_other_v1" >/dev/null
for s in "$STACK" "$BSTACK"; do
  check "no stack $s in docker stack ls" bash -c '! docker stack ls --format "{{.Name}}" | grep -qx "$1"' _ "$s"
  check "no volume of $s" bash -c '! docker volume ls --format "{{.Name}}" | grep -q "^$1_"' _ "$s"
  check "no secret of $s" bash -c '! docker secret ls --format "{{.Name}}" | grep -q "^$1_"' _ "$s"
  check "no network of $s" bash -c '! docker network ls --format "{{.Name}}" | grep -q "^$1_"' _ "$s"
  check "no container of $s" bash -c '[[ -z $(docker ps -aq --filter label=com.docker.stack.namespace=$1) ]]' _ "$s"
done
check "env file and backups removed" bash -c '[[ ! -e $1 && ! -e $2 ]]' _ "$ENVF" "$ABRA_DIR/backups/$DOMAIN"

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
