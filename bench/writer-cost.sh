#!/usr/bin/env bash
# What one decision costs the store writer: a fresh `praetor serve` (SQLite), one
# `praetor bench` run against it, then per committed transaction:
#
#   writer_cpu_us   CPU of the praetor-store-writer thread (/proc/PID/task/*/stat)
#   server_cpu_us   CPU of the whole server process
#   commit_us       wall time inside group commits (/v1/status store_commits)
#   wal_kb          bytes the writer thread handed to write syscalls (/proc/.../io wchar)
#   writes          write syscalls of the writer thread
#   db_kb           size of the database file at the end
#
# and which b-trees the WAL frames of the busiest snapshot of the WAL belong to (pages
# per commit), read from copies of the WAL taken during the run and SQLite's dbstat.
#
#   bench/writer-cost.sh [SCENARIO] [CONCURRENCY] [SECONDS]     (default: realistic 64 8)
#
# Environment: PRAETOR (the binary; default $CARGO_TARGET_DIR/release/praetor or
# target/release/praetor), DATA_PARENT (where the data directory goes; default $TMPDIR
# or /tmp). Needs: bash, curl, python3 (with sqlite3 and dbstat), Linux
# /proc. Runs on loopback only and stops its server on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${1:-realistic}; CONCURRENCY=${2:-64}; SECONDS_=${3:-8}
PRAETOR_DIR_NAME=praetor-writer-cost
. bench/fresh-server.sh

# thread_field COMM AWK_PROGRAM FILE: summed over the server's threads named COMM (the
# kernel keeps 15 characters of a thread name: the writer is `praetor-store-w`).
thread_field() {
    local t total=0
    for t in /proc/"$SERVER"/task/*; do
        [ "$(cat "$t/comm")" = "$1" ] && total=$((total + $(awk "$2" "$t/$3")))
    done
    echo "$total"
}

echo "== $SCENARIO, c=$CONCURRENCY, ${SECONDS_} s" >&2
"$PRAETOR" bench --url "$URL" --key "$KEY" --scenario "$SCENARIO" --concurrency "$CONCURRENCY" \
    --duration "$SECONDS_" --json >"$WORK/bench.json" 2>/dev/null &
BENCH=$!
# Copies of the WAL while the load runs; the largest intact one is analysed below.
sleep "$(awk -v s="$SECONDS_" 'BEGIN { print s / 2 }')"
for i in $(seq 1 30); do cp "$WORK/data/praetor.db-wal" "$WORK/wal-$i" 2>/dev/null || true; sleep 0.005; done
wait "$BENCH"

WRITER_TICKS=$(thread_field praetor-store-w '{print $14+$15}' stat)
WRITER_WCHAR=$(thread_field praetor-store-w '/^wchar/{print $2}' io)
WRITER_SYSCW=$(thread_field praetor-store-w '/^syscw/{print $2}' io)
SERVER_TICKS=$(awk '{print $14+$15}' /proc/"$SERVER"/stat)
STATUS=$(curl -fsS "$URL/v1/status")
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=

python3 - "$WORK" "$WRITER_TICKS" "$WRITER_WCHAR" "$WRITER_SYSCW" "$SERVER_TICKS" "$(getconf CLK_TCK)" "$STATUS" <<'PY'
import collections, glob, json, os, sqlite3, struct, sys
work, w_ticks, w_wchar, w_syscw, s_ticks, tck, status = sys.argv[1:]
commits = json.loads(status)["store_commits"]
bench = json.load(open(os.path.join(work, "bench.json")))
tx = commits["transactions"]
per_tx = lambda v: v / tx
print(f"decisions/s {bench['decisions_per_second']:.0f}, p50 {bench['latency_us']['p50']} us, "
      f"p99 {bench['latency_us']['p99']} us, errors {bench['errors']}")
print(f"transactions {tx}, per commit {tx / commits['commits']:.1f}")
print(f"per transaction: writer_cpu_us {per_tx(int(w_ticks) / int(tck) * 1e6):.0f}  "
      f"server_cpu_us {per_tx(int(s_ticks) / int(tck) * 1e6):.0f}  commit_us {per_tx(commits['commit_us_sum']):.0f}  "
      f"wal_kb {per_tx(int(w_wchar)) / 1024:.1f}  writes {per_tx(int(w_syscw)):.1f}  "
      f"db_kb {per_tx(os.path.getsize(os.path.join(work, 'data', 'praetor.db'))) / 1024:.2f}")

# WAL frames: a 32-byte header, then frames of a 24-byte header and one page; a frame
# whose salts differ from the header's is left over from before the WAL restarted.
best = []
for path in glob.glob(os.path.join(work, "wal-*")):
    w = open(path, "rb").read()
    if len(w) < 32:
        continue
    page_size, salt = struct.unpack(">I", w[8:12])[0], w[16:24]
    frames, off = [], 32
    while off + 24 + page_size <= len(w) and w[off + 8:off + 16] == salt:
        page, commit = struct.unpack(">II", w[off:off + 8])
        frames.append((page, commit))
        off += 24 + page_size
    if len(frames) > len(best):
        best = frames
names = {page: name for name, page in sqlite3.connect(os.path.join(work, "data", "praetor.db")).execute("SELECT name, pageno FROM dbstat")}
groups, current = [], []
for page, commit in best:
    current.append(page)
    if commit:
        groups.append(current)
        current = []
if groups:
    print(f"WAL snapshot: {len(groups)} commits, {sum(map(len, groups)) / len(groups):.1f} pages per commit; by b-tree:")
    count = collections.Counter(names.get(p, f"page {p}") for g in groups for p in g)
    for name, n in count.most_common():
        print(f"  {name:36s} {n / len(groups):6.2f}")
else:
    print("no intact WAL snapshot was caught (the WAL had just restarted); run again")
PY
