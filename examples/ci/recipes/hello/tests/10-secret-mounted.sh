#!/bin/sh
# CI-side custom test of the hello example: the generated admin password is mounted
# in the app container and non-empty. Uses only the env contract (docs/enroll-recipe.md).
set -eu
c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${CCCI_STACK_NAME}_app" --filter status=running | head -n1)
[ -n "$c" ] || { echo "FAIL: no running container of ${CCCI_STACK_NAME}_app"; exit 1; }
n=$(docker exec "$c" sh -c 'wc -c < /run/secrets/admin_password')
echo "admin_password is mounted ($n bytes)"
[ "$n" -gt 0 ]
