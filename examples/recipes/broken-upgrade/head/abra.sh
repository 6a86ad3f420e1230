#!/usr/bin/env bash
# abra.sh of the broken-upgrade example recipe: no configs, so nothing to export.
