#!/bin/sh
# Recipe-shipped test of the website example: the golang-templated config is rendered
# with the app's environment and served, and the app is on the gateway's network.
# Needs CCCI_STACK_NAME and CCCI_APP_DOMAIN (set by cc-ci) and the docker CLI.
set -u
svc="${CCCI_STACK_NAME:?CCCI_STACK_NAME is not set}_app"
cid=$(docker ps -q --filter "label=com.docker.swarm.service.name=$svc" --filter status=running | head -n 1)
[ -n "$cid" ] || { echo "FAIL: no running container of $svc"; exit 1; }
page=$(docker exec "$cid" wget -q -O- http://127.0.0.1:8080/site.html) || { echo "FAIL: no /site.html"; exit 1; }
echo "$page"
case "$page" in
    *"Served for ${CCCI_APP_DOMAIN:?} by $svc."*) echo "PASS: the template was rendered for this app" ;;
    *) echo "FAIL: the page is not the rendered template"; exit 1 ;;
esac
case "$page" in
    *"{{"*) echo "FAIL: template left unrendered"; exit 1 ;;
esac
nets=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$cid")
case " $nets" in
    *" proxy "*) echo "PASS: on the proxy network ($nets)" ;;
    *) echo "FAIL: not on the proxy network: $nets"; exit 1 ;;
esac
