#!/usr/bin/env bash
# How much of the c=1 latency is idle CPUs waking up (BENCHMARKS.md, "Session 8").
#
#   bench/c1-wakeups.sh [ROUNDS]   default 2 rounds
#
# Each round runs `praetor bench --concurrency 1 --scenario simple` (DURATION seconds,
# default 8) against a fresh server twice: once as is, once with one `nice -n 19` busy
# loop per CPU, which keeps the (virtual) CPUs from going idle and yields to any real
# work. The difference in p50 is what the wake-ups of idle CPUs cost a request. The busy
# loops still take a little CPU, so their p99 is not a fair figure. Prints one line per run.
# Needs: bash, curl, python3; a release build (see bench/fresh-server.sh for PRAETOR).
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
ROUNDS=${1:-2}
DURATION=${DURATION:-8}
case "$ROUNDS$DURATION" in *[!0-9]*) echo "ROUNDS and DURATION must be whole numbers" >&2; exit 2 ;; esac

one_run() { # $1 = 0 (as is) or 1 (busy loops)
    (
        PRAETOR_DIR_NAME=praetor-c1-wakeups
        source bench/fresh-server.sh
        LOOPS=()
        stop_loops() { local p; for p in "${LOOPS[@]}"; do kill "$p" 2>/dev/null || true; done; }
        trap 'stop_loops; cleanup' EXIT
        if [ "$1" = 1 ]; then
            for _ in $(seq 1 "$(nproc)"); do nice -n 19 bash -c 'while :; do :; done' & LOOPS+=($!); done
        fi
        "$PRAETOR" bench --url "$URL" --key "$KEY" --concurrency 1 --duration "$DURATION" --scenario simple --json \
            >"$WORK/bench.json" 2>"$WORK/bench.err" || { cat "$WORK/bench.err" >&2; exit 1; }
        stop_loops
        python3 - "$WORK/bench.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["latency_us"]
label = "busy loops" if sys.argv[2] == "1" else "as is     "
print(f"{label}  {d['decisions_per_second']:8.0f}/s  p50 {l['p50']} us  p99 {l['p99']} us  errors {d.get('errors', 0)}")
PY
    )
}

for r in $(seq 1 "$ROUNDS"); do
    one_run 0
    one_run 1
done
