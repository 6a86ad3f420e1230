#!/usr/bin/env bash
# abra.sh of the website example recipe: the version of each config, bumped when the
# config changes (abra reads these exports when it deploys).
export SITE_PAGE_VERSION=v1
