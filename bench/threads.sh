#!/usr/bin/env bash
# Where a decision's time and bytes go, by thread: a fresh `praetor serve` (SQLite), one
# `praetor bench` run against it, then for each thread name of the server
#
#   % of a core     its CPU (utime + stime, /proc/PID/task/*/stat) over the run's wall time
#   KB/decision     bytes it handed to write syscalls, files and sockets alike
#                   (/proc/PID/task/*/io wchar)
#
# and the CPU of the bench process (setup included), and what the disk holding the data
# directory wrote per second (/proc/diskstats). Together they say which resource a run
# is short of: a core (a thread near 100 %, or all of them near the machine's cores),
# the disk (its rate near what `dd ... conv=fdatasync` reaches), or neither.
#
#   bench/threads.sh [SCENARIO] [CONCURRENCY] [SECONDS]     (default: realistic 64 8)
#
# Environment: PRAETOR (the binary; default $CARGO_TARGET_DIR/release/praetor or
# target/release/praetor), DATA_PARENT (where the data directory goes; default $TMPDIR
# or /tmp). Needs: bash, curl, python3, df, Linux /proc. Runs on
# loopback only and stops its server on exit.
set -euo pipefail
export LC_ALL=C  # `times` and awk read and print numbers with a decimal point
cd "$(dirname "$0")/.."

SCENARIO=${1:-realistic}; CONCURRENCY=${2:-64}; SECONDS_=${3:-8}
PRAETOR_DIR_NAME=praetor-threads
. bench/fresh-server.sh

# The block device under the data directory, as /proc/diskstats names it (/dev/mapper
# names are links to dm-N). None on an overlay or network filesystem: the disk's rate
# is then left out.
SOURCE=$(df -P "$WORK/data" | awk 'NR == 2 {print $1}')
DEVICE=$(basename "$(readlink -f "$SOURCE" 2>/dev/null || echo "$SOURCE")")
awk -v d="$DEVICE" '$3 == d {found = 1} END {exit !found}' /proc/diskstats || {
    echo "no block device for $SOURCE in /proc/diskstats: the disk's rate is left out" >&2
    DEVICE=
}

# One line per thread name: ticks of CPU and bytes written, summed over its threads.
threads() {
    local t
    for t in /proc/"$SERVER"/task/*; do
        echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat") $(awk '/^wchar/ {print $2}' "$t/io")"
    done | awk '{cpu[$1] += $2; w[$1] += $3} END {for (k in cpu) print k, cpu[k], w[k]}'
}
sectors_written() { [ -z "$DEVICE" ] && echo 0 || awk -v d="$DEVICE" '$3 == d {print $10}' /proc/diskstats; }

echo "== $SCENARIO, c=$CONCURRENCY, ${SECONDS_} s" >&2
# CPU of this shell's finished children, in seconds, from `times` (its second line). It
# must run in this shell, not a subshell, to see them.
children_cpu() { times >"$WORK/times"; tail -1 "$WORK/times" | awk '{ split($1, u, "m"); split($2, s, "m"); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }'; }

threads >"$WORK/before"; cp /proc/"$SERVER"/stat "$WORK/server-stat0"; SECTORS0=$(sectors_written); children_cpu >"$WORK/children0"; T0=$(date +%s.%N)
"$PRAETOR" bench --url "$URL" --key "$KEY" --scenario "$SCENARIO" --concurrency "$CONCURRENCY" \
    --duration "$SECONDS_" --json >"$WORK/bench.json" 2>"$WORK/bench.err" || { tail -5 "$WORK/bench.err" >&2; exit 1; }
T1=$(date +%s.%N); children_cpu >"$WORK/children1"; SECTORS1=$(sectors_written); threads >"$WORK/after"
# The whole process's CPU, exited threads included (the per-thread lines count only
# threads alive at the end).
SERVER_TICKS0=$(awk '{print $14 + $15}' "$WORK/server-stat0"); SERVER_TICKS1=$(awk '{print $14 + $15}' /proc/"$SERVER"/stat)
python3 - "$WORK" "$T0" "$T1" "$SECTORS0" "$SECTORS1" "$(getconf CLK_TCK)" "$(cat "$WORK/children0")" "$(cat "$WORK/children1")" "$DEVICE" "$SERVER_TICKS0" "$SERVER_TICKS1" <<'PY'
import json, os, sys
work, t0, t1, s0, s1, tck, c0, c1, disk, server0, server1 = sys.argv[1:]
wall = float(t1) - float(t0)
tck = int(tck)
def load(name):
    rows = {}
    for line in open(os.path.join(work, name)):
        fields = line.split()
        if len(fields) == 3:  # a thread that ended while it was read has fewer
            rows[fields[0]] = (int(fields[1]), int(fields[2]))
    return rows
before, after = load("before"), load("after")
bench = json.load(open(os.path.join(work, "bench.json")))
rate = bench["decisions_per_second"]
decisions = max(1, bench["requests"])  # per-second figures use the wall time, setup included
print(f"decisions/s {rate:.0f}, p50 {bench['latency_us']['p50']} us, p99 {bench['latency_us']['p99']} us, errors {bench['errors']}")
if disk:
    print(f"disk {disk} written {(int(s1) - int(s0)) * 512 / 1e6 / wall:.0f} MB/s, {(int(s1) - int(s0)) * 512 / 1024 / decisions:.1f} KB/decision")
for comm in sorted(after):
    ticks = after[comm][0] - before.get(comm, (0, 0))[0]
    written = after[comm][1] - before.get(comm, (0, 0))[1]
    cpu = ticks / tck
    if cpu > 0.02 * wall or written > 0:
        print(f"  {comm:18s} {100 * cpu / wall:5.1f} % of a core   writes {written / 1024 / decisions:6.1f} KB/decision")
total = (int(server1) - int(server0)) / tck
print(f"  {'server':18s} {100 * total / wall:5.1f} % of a core   {1e6 * total / decisions:.0f} us CPU/decision")
bench_cpu = float(c1) - float(c0)
print(f"  {'praetor bench':18s} {100 * bench_cpu / wall:5.1f} % of a core   {1e6 * bench_cpu / decisions:.0f} us CPU/decision (its setup included)")
PY
