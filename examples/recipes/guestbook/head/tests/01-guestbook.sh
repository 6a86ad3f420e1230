#!/bin/sh
# Recipe-shipped test of the guestbook example: the app reaches its database over the
# internal network with the shared password, and a row it inserts comes back.
# Needs CCCI_STACK_NAME (set by cc-ci) and the docker CLI.
set -u
svc="${CCCI_STACK_NAME:?CCCI_STACK_NAME is not set}_app"
cid=$(docker ps -q --filter "label=com.docker.swarm.service.name=$svc" --filter status=running | head -n 1)
[ -n "$cid" ] || { echo "FAIL: no running container of $svc"; exit 1; }
row="test-row-$$"
ask() { docker exec "$cid" sh -c "echo \"$1 \$(cat \$ROWDB_PASSWORD_FILE) $2\" | nc -w 2 \$ROWDB_HOST 7000"; }
echo "inserting $row through the app's network"
[ "$(ask insert "$row")" = ok ] || { echo "FAIL: insert was not acknowledged"; exit 1; }
if ask select "" | grep -qx "$row"; then
    echo "PASS: $row is in the database"
else
    echo "FAIL: $row is not in the database"
    exit 1
fi
denied=$(docker exec "$cid" sh -c 'echo "select wrong-password" | nc -w 2 $ROWDB_HOST 7000')
[ "$denied" = denied ] || { echo "FAIL: a wrong password was not denied: $denied"; exit 1; }
echo "PASS: a wrong password is denied"
