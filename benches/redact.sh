#!/usr/bin/env bash
# Throughput of `cc-ci redact` (release build, 100 secrets) over a mixed log, against
# `cat` relaying the same input in the same pipeline position, and against a `sed`
# chain masking the same 100 values. Results and method: docs/perf.md, "## Redactor".
#
#   benches/redact.sh              # 256 MiB log, 5 alternated rounds
#   SIZE_MIB=64 ROUNDS=3 benches/redact.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${BENCH_DIR:-/tmp/ccci-bench}
SIZE_MIB=${SIZE_MIB:-256}
ROUNDS=${ROUNDS:-5}
SED_MIB=${SED_MIB:-16} # sed is measured on a slice and reported as throughput
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

cargo build --release --quiet
BIN=$CARGO_TARGET_DIR/release/cc-ci
LOG=$DIR/log.$SIZE_MIB
SECRETS=$DIR/secrets
mkdir -p "$DIR"
if [[ ! -f $LOG || ! -d $SECRETS ]]; then
    python3 benches/gen-log.py "$SECRETS" "$LOG" $((SIZE_MIB << 20))
fi
BYTES=$(stat -c %s "$LOG")
head -c $((SED_MIB << 20)) "$LOG" >"$DIR/slice"
SLICE_BYTES=$(stat -c %s "$DIR/slice")

# One sed program with one substitution per secret value (regex metacharacters escaped).
for f in "$SECRETS"/*; do
    printf 's/%s/[MASKED]/g\n' "$(sed -e 's/[][\/.*^$]/\\&/g' "$f")"
done >"$DIR/mask.sed"
cat "$SECRETS"/* >"$DIR/values"

ns() { date +%s%N; }
run() { # run NAME COMMAND… ; prints elapsed seconds
    local t0 t1
    t0=$(ns)
    bash -c "$1"
    t1=$(ns)
    echo "scale=4; ($t1 - $t0) / 1000000000" | bc
}

declare -a CAT RED
for ((r = 1; r <= ROUNDS; r++)); do
    CAT+=("$(run "cat < '$LOG' | cat > /dev/null")")
    RED+=("$(run "'$BIN' redact --secrets-dir '$SECRETS' < '$LOG' | cat > /dev/null")")
done
# Without the pipe (output straight to /dev/null): the intrinsic cost, free of the
# pipe-size effect (cc-ci grows its output pipe to 1 MiB; cat keeps 64 KiB).
declare -a CATN REDN
for ((r = 1; r <= ROUNDS; r++)); do
    CATN+=("$(run "cat < '$LOG' > /dev/null")")
    REDN+=("$(run "'$BIN' redact --secrets-dir '$SECRETS' < '$LOG' > /dev/null")")
done

declare -a SEDS SEDREDS
for ((r = 1; r <= 3; r++)); do
    SEDS+=("$(run "sed -f '$DIR/mask.sed' < '$DIR/slice' | cat > /dev/null")")
    SEDREDS+=("$(run "'$BIN' redact --secrets-dir '$SECRETS' < '$DIR/slice' | cat > /dev/null")")
done

best() { printf '%s\n' "$@" | sort -n | head -1; }
SED=$(best "${SEDS[@]}") SEDRED=$(best "${SEDREDS[@]}")
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
mbps() { echo "scale=0; $1 / $2 / 1000000" | bc; }

cat_best=$(best "${CAT[@]}") red_best=$(best "${RED[@]}")
catn_best=$(best "${CATN[@]}") redn_best=$(best "${REDN[@]}")
cat_med=$(median "${CAT[@]}") red_med=$(median "${RED[@]}")
echo "input: $BYTES bytes ($SIZE_MIB MiB), $(ls "$SECRETS" | wc -l) secrets, $ROUNDS alternated rounds"
echo "cat    times: ${CAT[*]}"
echo "redact times: ${RED[*]}"
printf '%-28s %8s MB/s (median %s MB/s)\n' "cat | cat" "$(mbps "$BYTES" "$cat_best")" "$(mbps "$BYTES" "$cat_med")"
printf '%-28s %8s MB/s (median %s MB/s)\n' "cc-ci redact | cat" "$(mbps "$BYTES" "$red_best")" "$(mbps "$BYTES" "$red_med")"
printf '%-28s %8s MB/s\n' "cat > /dev/null" "$(mbps "$BYTES" "$catn_best")"
printf '%-28s %8s MB/s\n' "cc-ci redact > /dev/null" "$(mbps "$BYTES" "$redn_best")"
printf '%-28s %8s MB/s (%s MiB slice, %ss)\n' "sed (100 s///g) | cat" "$(mbps "$SLICE_BYTES" "$SED")" "$SED_MIB" "$SED"
printf '%-28s %8s MB/s (same slice, incl. start-up)\n' "cc-ci redact | cat" "$(mbps "$SLICE_BYTES" "$SEDRED")"
echo "redact / cat (best):    $(echo "scale=2; $cat_best / $red_best" | bc)"
echo "redact / cat (median):  $(echo "scale=2; $cat_med / $red_med" | bc)"
echo "redact / cat, no pipe:  $(echo "scale=2; $catn_best / $redn_best" | bc)"
echo "redact / sed (full log vs slice-extrapolated sed): $(echo "scale=1; $SED * $BYTES / $SLICE_BYTES / $red_best" | bc)"
echo "redact / sed (same slice):                         $(echo "scale=1; $SED / $SEDRED" | bc)"

# Sanity: no raw value survives, and the log did contain some.
before=$(grep -a -c -F -f "$DIR/values" "$LOG" || true)
after=$("$BIN" redact --secrets-dir "$SECRETS" <"$LOG" | grep -a -c -F -f "$DIR/values" || true)
echo "lines with a raw secret: $before before, $after after"
[[ $after == 0 ]]
