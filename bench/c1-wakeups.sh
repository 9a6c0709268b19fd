#!/usr/bin/env bash
# How much of the c=1 latency is idle CPUs waking up (BENCHMARKS.md, "Session 8").
#
#   bench/c1-wakeups.sh [ROUNDS]   default 2 rounds
#
# Each round runs `praetor bench --concurrency 1 --scenario simple` (DURATION seconds,
# default 8) against a fresh server twice: once as is, once with one `nice -n 19` busy
# loop per CPU, which keeps the (virtual) CPUs from going idle and yields to any real
# work. The difference in p50 is what the wake-ups of idle CPUs cost a request. The busy
# loops still take a little CPU, so their p99 is not a fair figure.
#
# On a virtual machine whose idle driver is `haltpoll` (Linux guests, e.g. Firecracker or
# KVM), a third run sets the guest's halt polling (/sys/module/haltpoll/parameters/
# guest_halt_poll_ns, to HALT_POLL_NS, default 200000): an idle virtual CPU polls that
# long before it halts, so a wake-up soon after costs no exit to the host. The original
# value is written back when the run ends, however it ends. Needs root; skipped when the
# parameter is absent or not writable. Prints one line per run.
# Needs: bash, curl, python3; a release build (see bench/fresh-server.sh for PRAETOR).
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
ROUNDS=${1:-2}
DURATION=${DURATION:-8}
HALT_POLL_NS=${HALT_POLL_NS:-200000}
case "$ROUNDS$DURATION$HALT_POLL_NS" in *[!0-9]*) echo "ROUNDS, DURATION and HALT_POLL_NS must be whole numbers" >&2; exit 2 ;; esac
HALT_POLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns

one_run() { # $1 = 0 (as is), 1 (busy loops) or 2 (guest halt polling)
    (
        PRAETOR_DIR_NAME=praetor-c1-wakeups
        source bench/fresh-server.sh
        LOOPS=()
        HALT_POLL_WAS=""
        stop_loops() { local p; for p in "${LOOPS[@]}"; do kill "$p" 2>/dev/null || true; done; }
        restore_halt_poll() { [ -z "$HALT_POLL_WAS" ] || echo "$HALT_POLL_WAS" >"$HALT_POLL"; }
        trap 'stop_loops; restore_halt_poll; cleanup' EXIT
        if [ "$1" = 1 ]; then
            for _ in $(seq 1 "$(nproc)"); do nice -n 19 bash -c 'while :; do :; done' & LOOPS+=($!); done
        elif [ "$1" = 2 ]; then
            HALT_POLL_WAS=$(cat "$HALT_POLL")
            echo "$HALT_POLL_NS" >"$HALT_POLL"
        fi
        "$PRAETOR" bench --url "$URL" --key "$KEY" --concurrency 1 --duration "$DURATION" --scenario simple --json \
            >"$WORK/bench.json" 2>"$WORK/bench.err" || { cat "$WORK/bench.err" >&2; exit 1; }
        stop_loops
        python3 - "$WORK/bench.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["latency_us"]
label = {"0": "as is       ", "1": "busy loops  ", "2": "halt polling"}[sys.argv[2]]
print(f"{label}  {d['decisions_per_second']:8.0f}/s  p50 {l['p50']} us  p99 {l['p99']} us  errors {d.get('errors', 0)}")
PY
    )
}

can_halt_poll=0
if [ -w "$HALT_POLL" ]; then can_halt_poll=1; else echo "no writable $HALT_POLL: halt polling runs skipped" >&2; fi
for r in $(seq 1 "$ROUNDS"); do
    one_run 0
    one_run 1
    [ "$can_halt_poll" = 0 ] || one_run 2
done
