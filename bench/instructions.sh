#!/usr/bin/env bash
# CPU instructions per decision, counted by valgrind's callgrind: a figure that moves far
# less with the machine's load (three runs within 0.3 %) than the rates and CPU times of
# the other probes (which, on the shared 2-core machines of BENCHMARKS.md, move 10-20 %
# from run to run).
# Use it to tell whether a change to the server's CPU work pays, before timing it.
#
# A fresh `praetor serve` (SQLite) runs under callgrind twice, for N1 and then N2
# decisions of `praetor bench` (which runs natively); the difference between the two
# runs, divided by N2 - N1, is what one decision costs, without the start and the
# bench's set-up (its agents, policies and sessions). Per decision:
#
#   server          every instruction of the server process
#   intercept       pipeline::intercept: the request's checks and its content's hash
#   worker          pipeline::decide_and_record: evaluate, record, wait for the commit
#     evaluate      pipeline::evaluate_with
#       engine      praetor_core::engine::decide (the policies)
#     record        pipeline::record: the answer, the sealed entry, the rows, submit
#   writer          the store writer's batches (writer::Writer::try_batch)
#     vault         vault_rows::OpenLog::append: the leaf, chain, HMAC and tree hashes
#   rest            server - intercept - worker - writer: HTTP, JSON parsing, the
#                   runtime, the checkpoint and reader threads
#   sha256          SHA-256's compression function, wherever it runs (see below)
#
#   bench/instructions.sh [SCENARIO] [CONCURRENCY] [N1] [N2]   (default: realistic 4 500 2500)
#
# Caveats: callgrind runs one thread at a time, so the writer's batches are shaped by
# that, not by a real run (compare writer figures only at the same concurrency);
# valgrind hides the CPU's SHA extensions, so SHA-256 runs its portable code, many
# times the instructions of the real run (the vault's hashes on the writer, the
# content hash on the worker); work that runs on a clock (the WAL checkpoint every
# 50 ms, the change feed every 100 ms) is counted per interval, and the server runs
# about 50 times slower under callgrind, so it weighs that much more per decision in
# `rest` than in a real run (the checkpoint's `walMerge` sort, for one). Instructions are not time: a cache miss or a system call
# costs far more than its count says. Needs: valgrind (callgrind_annotate), bash, curl,
# python3. Environment: PRAETOR (the binary, as for bench/threads.sh). Takes about a
# minute with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${1:-realistic}; CONCURRENCY=${2:-4}; N1=${3:-500}; N2=${4:-2500}
[ "$N2" -gt "$N1" ] || { echo "N2 must be larger than N1" >&2; exit 2; }
command -v callgrind_annotate >/dev/null || { echo "needs valgrind (callgrind_annotate)" >&2; exit 2; }
# No spaces in its path: SERVER_WRAPPER below is split on spaces.
OUT=$(mktemp -d "${TMPDIR:-/tmp}/praetor-instructions.XXXXXX")
case $OUT in *' '*) echo "TMPDIR must not contain spaces: $OUT" >&2; exit 2 ;; esac
# KEEP=1 keeps the profiles (cg.N) and their annotations.
trap '[ -n "${KEEP:-}" ] && echo "profiles kept in $OUT" >&2 || rm -rf "$OUT"' EXIT

# One server under callgrind for N decisions; its profile is $OUT/cg.N. The server is
# stopped (SIGTERM, a clean exit, when callgrind writes the profile) by fresh-server.sh.
run() (
    local n=$1
    PRAETOR_DIR_NAME=praetor-instructions
    SERVER_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.$n"
    SERVER_START_TRIES=1200
    . bench/fresh-server.sh
    echo "== $SCENARIO, c=$CONCURRENCY, $n decisions under callgrind" >&2
    "$PRAETOR" bench --url "$URL" --key "$KEY" --scenario "$SCENARIO" --concurrency "$CONCURRENCY" \
        --requests "$n" --json >"$OUT/bench.$n.json" 2>"$OUT/bench.$n.err" || { tail -5 "$OUT/bench.$n.err" >&2; exit 1; }
)
run "$N1"
run "$N2"

for n in "$N1" "$N2"; do
    # Every function (the default lists only the top 99 %, which leaves out parts of
    # about 1 %), and no source annotation (whose lines could be mistaken for totals).
    callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$OUT/cg.$n" >"$OUT/annotated.$n" 2>/dev/null
done
python3 - "$OUT" "$N1" "$N2" <<'PY'
import json, re, sys
out, n1, n2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PARTS = [
    ("server", "PROGRAM TOTALS"),
    ("intercept", ":praetor_server::pipeline::intercept "),
    ("worker", ":praetor_server::pipeline::decide_and_record::{{closure}} "),
    ("  evaluate", ":praetor_server::pipeline::evaluate_with "),
    ("    engine", ":praetor_core::engine::decide "),
    ("  record", ":praetor_server::pipeline::record "),
    ("writer", ":praetor_store::writer::Writer<C>::try_batch "),
    ("  vault", ":praetor_store::vault_rows::OpenLog::append "),
    ("sha256", ":sha2::sha256::compress256 "),
]
def counts(n):
    bench = json.load(open(f"{out}/bench.{n}.json"))
    if bench.get("errors"):
        sys.exit(f"the bench of {n} decisions had {bench['errors']} errors")
    got = {}
    for line in open(f"{out}/annotated.{n}"):
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m:
            continue
        for name, needle in PARTS:
            # The first line naming a function is its own inclusive total; the call
            # lists under other functions come after it.
            if name not in got and (needle in m.group(2) + " " if needle.endswith(" ") else needle in m.group(2)):
                got[name] = int(m.group(1).replace(",", ""))
    return got
a, b = counts(n1), counts(n2)
missing = sorted({name.strip() for name, _ in PARTS if name not in a or name not in b})
if missing:
    # Renamed or inlined in this build: a part counted as 0 would go into `rest`.
    sys.exit(f"no inclusive total for {', '.join(missing)} in the callgrind profiles: update PARTS")
per = {name: (b[name] - a[name]) / (n2 - n1) for name, _ in PARTS}
per["rest"] = per["server"] - per["intercept"] - per["worker"] - per["writer"]
print(f"instructions per decision ({n2} - {n1} decisions):")
for name in [p[0] for p in PARTS[:-1]] + ["rest", "sha256"]:
    print(f"  {name:<12} {per[name]:>12,.0f}")
PY
