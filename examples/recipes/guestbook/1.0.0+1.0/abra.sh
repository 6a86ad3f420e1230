#!/usr/bin/env bash
# abra.sh of the guestbook example recipe: no configs, so nothing to export.
