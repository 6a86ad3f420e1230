#!/bin/sh
# Recipe-shipped test of the hello example: the page served by the app contains "hello".
# Needs CCCI_STACK_NAME (set by cc-ci) and the docker CLI; the swarm's ingress mesh is
# not used, the page is fetched inside the app container with docker exec.
set -u
svc="${CCCI_STACK_NAME:?CCCI_STACK_NAME is not set}_app"
echo "looking for a running container of service $svc"
cid=$(docker ps -q --filter "label=com.docker.swarm.service.name=$svc" | head -n 1)
if [ -z "$cid" ]; then
    echo "FAIL: no running container of $svc"
    exit 1
fi
echo "checking that http://127.0.0.1:8080/ in container $cid contains 'hello'"
page=$(docker exec "$cid" wget -q -O- http://127.0.0.1:8080/ 2>&1) || {
    echo "FAIL: wget failed: $page"
    exit 1
}
case "$page" in
    *hello*) echo "PASS: page is: $page"; exit 0 ;;
    *) echo "FAIL: page does not contain 'hello': $page"; exit 1 ;;
esac
