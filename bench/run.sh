#!/usr/bin/env bash
# Praetor against a plain-HTTP baseline, back to back, on this machine (issue 7).
#
#   bench/run.sh            concurrency 1, 16, 64 (simple) and 64 (realistic, session),
#                           DURATION seconds per run (default 10), REPEAT runs per point
#                           (default 2); prints one table.
#   bench/run.sh --smoke    2 s, concurrency 4, simple only, one run: checks the tooling
#                           works (for CI; the figures mean nothing).
#
# Environment:
#   DURATION=10          seconds per run
#   REPEAT=2             runs of each point (each one baseline then Praetor)
#   POINTS="..."         scenario:concurrency pairs to run
#                        [default: "simple:1 simple:16 simple:64 realistic:64 session:64"]
#   OUT_DIR=DIR          keep the raw JSON (bench summaries, Praetor /v1/status), the
#                        server logs, cpu.txt (CPU of server and bench per run) and any
#                        perf data here; default: a temporary directory, removed at exit
#   PERF_RECORD=1        also `perf record -g` the Praetor server during the first run of
#                        each c=64 point (OUT_DIR/perf-praetor-SCENARIO-c64.data); this
#                        costs CPU, so do not quote figures from a profiled run.
#                        PERF_OPTS overrides the options [default: -g -F 999]; Rust
#                        release builds have no frame pointers, so for whole call
#                        chains use PERF_OPTS="--call-graph dwarf -F 499"
#   CARGO_TARGET_DIR     where cargo builds (binaries are taken from its release/)
#   NO_BUILD=1           skip `cargo build` (use the binaries already built)
#
# Every Praetor run gets a fresh data directory, with the vault durable as always (group
# commit, one fsync per batch). Only one server runs at a time; each is stopped after its
# run and every server still running is stopped at exit. Ports are free loopback ports.
# Exits non-zero when any run reports an error, or a server or the bench fails.
# The other_cpu% column is the CPU other processes used during the run (from /proc): the
# load generator shares the machine, so only rows near 0 are worth quoting.
# Needs: bash, curl, awk, sed, Linux /proc; perf only for PERF_RECORD.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [ "$SMOKE" = 1 ]; then
    DURATION=2; REPEAT=1; POINTS="simple:4"
else
    DURATION=${DURATION:-10}; REPEAT=${REPEAT:-2}; POINTS=${POINTS:-"simple:1 simple:16 simple:64 realistic:64 session:64"}
fi
case "$DURATION$REPEAT" in *[!0-9]*) echo "DURATION and REPEAT must be whole numbers" >&2; exit 2 ;; esac

TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "== cargo build --release -p praetor -p praetor-baseline" >&2
    cargo build --release -p praetor -p praetor-baseline >&2
fi
PRAETOR="$TARGET_DIR/release/praetor"
BASELINE="$TARGET_DIR/release/praetor-baseline"
for b in "$PRAETOR" "$BASELINE"; do
    [ -x "$b" ] || { echo "missing binary $b" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/praetor-bench.XXXXXX")
if [ -n "${OUT_DIR:-}" ]; then
    mkdir -p "$OUT_DIR"; OUT=$(cd "$OUT_DIR" && pwd)
else
    OUT="$WORK/out"; mkdir -p "$OUT"
fi

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_server "$pid"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nothing listens on (checked by connecting to it). A race with another
# process remains possible; start_server notices the bind failure and tries another.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    echo "no free loopback port found" >&2; return 1
}

healthy() { curl -fsS -o /dev/null --max-time 1 "$1/healthz" 2>/dev/null; }

# SIGTERM, then SIGKILL if it is still there after 10 s.
stop_server() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# start_server KIND LOG -> sets SERVER_PID, SERVER_URL (and DATA_DIR for praetor).
start_server() {
    local kind=$1 log=$2 port attempt
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        SERVER_URL="http://127.0.0.1:$port"
        if [ "$kind" = praetor ]; then
            DATA_DIR="$WORK/data-$port-$attempt"
            PRAETOR_LOG=warn "$PRAETOR" serve --listen "127.0.0.1:$port" --data-dir "$DATA_DIR" >"$log" 2>&1 &
        else
            "$BASELINE" --listen "127.0.0.1:$port" >"$log" 2>&1 &
        fi
        SERVER_PID=$!
        PIDS+=("$SERVER_PID")
        for _ in $(seq 1 300); do
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
            if healthy "$SERVER_URL"; then
                if [ "$kind" = praetor ] && [ ! -s "$DATA_DIR/admin.key" ]; then sleep 0.05; continue; fi
                return 0
            fi
            sleep 0.05
        done
        stop_server "$SERVER_PID"
        echo "($kind did not start on port $port, attempt $attempt; log: $(tail -n 3 "$log" | tr '\n' ' '))" >&2
    done
    echo "cannot start $kind" >&2
    return 1
}

# A numeric field of a compact one-line JSON object: jnum JSON KEY (first occurrence).
jnum() {
    printf '%s' "$1" | sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" | head -n 1
}

# Other load on the machine during a run, as a % of all cores: the CPU time every
# process used (user+nice+system from /proc/stat) minus what the server and the bench
# used. The load generator shares the machine, so anything else running skews a figure;
# the table shows it (column other_cpu%) instead of hiding it.
TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
busy_ticks() { awk '/^cpu /{print $2+$3+$4}' /proc/stat; }
proc_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CH = CPU seconds of the waited-for children: the `times` builtin, which must run in
# this shell (not in a $(...) subshell, whose children are its own).
children_secs() {
    times >"$WORK/times"
    CH=$(sed -n 2p "$WORK/times" | awk '{ split($1,a,/[ms]/); split($2,b,/[ms]/); printf "%.3f", a[1]*60+a[2]+b[1]*60+b[2] }')
}
# measure_start PID / measure_end PID -> sets OTHER (percent of all cores)
measure_start() { M_BUSY=$(busy_ticks); M_SRV=$(proc_ticks "$1"); children_secs; M_CH=$CH; M_T=$(date +%s.%N); }
measure_end() {
    local busy srv ch t
    busy=$(busy_ticks); srv=$(proc_ticks "$1"); children_secs; ch=$CH; t=$(date +%s.%N)
    OTHER=$(awk -v b0="$M_BUSY" -v b1="$busy" -v s0="$M_SRV" -v s1="$srv" -v c0="$M_CH" -v c1="$ch" \
        -v t0="$M_T" -v t1="$t" -v tck="$TCK" -v n="$NCPU" \
        'BEGIN { o = ((b1 - b0) - (s1 - s0)) / tck - (c1 - c0); if (o < 0) o = 0;
                 printf "%.0f", 100 * o / (t1 - t0) / n }')
    M_SRV_S=$(awk -v a="$M_SRV" -v b="$srv" -v tck="$TCK" 'BEGIN { printf "%.2f", (b - a) / tck }')
    M_CH_S=$(awk -v a="$M_CH" -v b="$ch" 'BEGIN { printf "%.2f", b - a }')
}

FAILED=0
ROWS=()

# run_bench URL KEY SCENARIO CONCURRENCY OUTFILE: the JSON summary goes to OUTFILE.
run_bench() {
    local rc=0
    "$PRAETOR" bench --url "$1" --key "$2" --scenario "$3" --concurrency "$4" --duration "$DURATION" --json \
        >"$5" 2>"$5.stderr" || rc=$?
    if [ "$rc" -ne 0 ] || [ ! -s "$5" ]; then
        echo "bench against $1 ($3, c=$4) exited $rc: $(tail -c 300 "$5.stderr" | tr '\r\n' '  ')" >&2
        return 1
    fi
}

for point in $POINTS; do
    scenario=${point%%:*}; conc=${point##*:}
    for rep in $(seq 1 "$REPEAT"); do
        tag="$scenario-c$conc-r$rep"
        echo "== $tag: baseline" >&2
        start_server baseline "$OUT/baseline-$tag.log"
        measure_start "$SERVER_PID"
        run_bench "$SERVER_URL" bench-key "$scenario" "$conc" "$OUT/baseline-$tag.json" || FAILED=1
        measure_end "$SERVER_PID"; b_other=$OTHER
        echo "baseline $tag: server_cpu_s=$M_SRV_S bench_cpu_s=$M_CH_S other_cpu_pct=$OTHER" >>"$OUT/cpu.txt"
        b=$(cat "$OUT/baseline-$tag.json")
        stop_server "$SERVER_PID"

        echo "== $tag: praetor" >&2
        start_server praetor "$OUT/praetor-$tag.log"
        key=$(tr -d '[:space:]' <"$DATA_DIR/admin.key")
        perf_pid=
        if [ "${PERF_RECORD:-0}" = 1 ] && [ "$conc" = 64 ] && [ "$rep" = 1 ]; then
            # shellcheck disable=SC2086
            perf record ${PERF_OPTS:--g -F 999} -p "$SERVER_PID" -o "$OUT/perf-praetor-$scenario-c64.data" -- sleep "$((DURATION + 1))" \
                >"$OUT/perf-record-$scenario.log" 2>&1 &
            perf_pid=$!
        fi
        measure_start "$SERVER_PID"
        run_bench "$SERVER_URL" "$key" "$scenario" "$conc" "$OUT/praetor-$tag.json" || FAILED=1
        measure_end "$SERVER_PID"; p_other=$OTHER
        echo "praetor $tag: server_cpu_s=$M_SRV_S bench_cpu_s=$M_CH_S other_cpu_pct=$OTHER" >>"$OUT/cpu.txt"
        p=$(cat "$OUT/praetor-$tag.json")
        status=$(curl -fsS --max-time 5 -H "X-API-Key: $key" "$SERVER_URL/v1/status" || echo '{}')
        printf '%s\n' "$status" >"$OUT/praetor-$tag.status.json"
        if [ -n "$perf_pid" ]; then wait "$perf_pid" || echo "perf record failed; see $OUT/perf-record-$scenario.log" >&2; fi
        stop_server "$SERVER_PID"
        rm -rf "$DATA_DIR"

        be=$(jnum "$b" errors); pe=$(jnum "$p" errors)
        if [ "${be:-1}" != 0 ] || [ "${pe:-1}" != 0 ]; then
            echo "$tag: errors reported (baseline ${be:-?}, praetor ${pe:-?})" >&2
            FAILED=1
        fi
        bps=$(jnum "$b" decisions_per_second); pps=$(jnum "$p" decisions_per_second)
        ROWS+=("$(awk -v s="$scenario" -v c="$conc" -v r="$rep" -v b="${bps:-0}" -v p="${pps:-0}" \
            -v p50="$(jnum "$p" p50)" -v p99="$(jnum "$p" p99)" -v p999="$(jnum "$p" p99_9)" \
            -v bp50="$(jnum "$b" p50)" -v err="$(( ${be:-1} + ${pe:-1} ))" \
            -v cp50="$(jnum "$status" commit_us_p50)" -v cp99="$(jnum "$status" commit_us_p99)" \
            -v bat="$(jnum "$status" batch_p50)" -v oth="$b_other/$p_other" \
            'BEGIN { ratio = (b > 0) ? 100 * p / b : 0;
                     printf "%-10s %5s %4s %12.0f %12.0f %8.1f %9s %9s %9s %12s %7s %11s %11s %10s %11s\n",
                       s, c, r, b, p, ratio, p50, p99, p999, bp50, err, cp50, cp99, bat, oth }')")
    done
done

printf '\n%-10s %5s %4s %12s %12s %8s %9s %9s %9s %12s %7s %11s %11s %10s %11s\n' \
    scenario conc run "baseline/s" "praetor/s" "ratio%" "p50_us" "p99_us" "p99.9_us" "base_p50_us" errors \
    "commit_p50" "commit_p99" "batch_p50" "other_cpu%"
for r in "${ROWS[@]}"; do printf '%s\n' "$r"; done
echo
echo "(p50/p99/p99.9: Praetor latency as the client sees it; base_p50_us: the baseline's p50;" \
     "commit_*: Praetor's group commit, µs, and its batch size, from /v1/status;" \
     "other_cpu%: CPU used by other processes during the baseline/Praetor run, % of all cores)"
if [ -n "${OUT_DIR:-}" ]; then echo "raw JSON in $OUT"; fi

if [ "$FAILED" != 0 ]; then
    echo "FAILED: a run reported errors or did not complete (see above)" >&2
    exit 1
fi
