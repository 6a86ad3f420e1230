#!/bin/sh
# Entrypoint of the cc-ci example images (ccci-example/<name>:<tag>).
# Behaviour is selected by environment variables baked into each image by
# examples/build.sh:
#   APP_NAME, APP_VERSION   shown in logs and written to /data/www/version
#   REQUIRE_SECRET          path of a secret file that must exist and be non-empty
#   DATA_FORMAT             v1: write marker /data/format-v1
#                           v2: refuse a volume carrying /data/format-v1
#   SITE_PAGE               a file (a config) served as /site.html
# The app serves /data/www with busybox httpd on port 8080 (not published).
set -u
echo "${APP_NAME:-app} ${APP_VERSION:-?} starting"
if [ -n "${REQUIRE_SECRET:-}" ]; then
    if [ ! -s "$REQUIRE_SECRET" ]; then
        echo "secret $REQUIRE_SECRET is missing or empty" >&2
        exit 1
    fi
    echo "secret $REQUIRE_SECRET present"
fi
mkdir -p /data/www
case "${DATA_FORMAT:-}" in
    v1)
        : > /data/format-v1
        ;;
    v2)
        if [ -e /data/format-v1 ]; then
            echo "migration from format v1 failed: unsupported" >&2
            exit 1
        fi
        : > /data/format-v2
        ;;
esac
if [ ! -e /data/www/index.html ]; then
    echo "hello ${APP_VERSION:-?}" > /data/www/index.html
fi
echo "${APP_VERSION:-?}" > /data/www/version
if [ -n "${SITE_PAGE:-}" ]; then
    cp "$SITE_PAGE" /data/www/site.html || { echo "cannot serve $SITE_PAGE" >&2; exit 1; }
fi
# busybox httpd as PID 1 would ignore SIGTERM; run it as a child and forward.
httpd -f -p 8080 -h /data/www &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid"; exit 0' TERM INT
wait "$pid"
