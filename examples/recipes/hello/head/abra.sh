#!/usr/bin/env bash
# abra.sh of the hello example recipe: no configs, so nothing to export.
