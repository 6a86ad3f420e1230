#!/usr/bin/env bash
# abra.sh of the no-backup example recipe: no configs, so nothing to export.
