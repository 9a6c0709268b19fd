#!/usr/bin/env bash
# The issue's memory, restart and verification targets in one run: a fresh server takes
# N decisions of a scenario (default: a million realistic ones at c=64); then its peak
# RSS, the time a restart takes to answer /healthz, an export in bundles of 200,000
# entries (the export's cap) and `praetor vault verify` of all of them as one log, and
# `praetor vault check` of the store.
#
#   bench/million.sh [SCENARIO] [REQUESTS] [CONCURRENCY]   (default: realistic 1000000 64)
#
# Environment: PRAETOR (the binary; default target/release/praetor), OUT (a directory
# for the data, the bundles and the figures; default a new temporary one: it needs
# about 7 GB for a realistic million), PORT (default 18931).
# Prints one line per figure. Needs: curl, python3, GNU time (/usr/bin/time).
set -euo pipefail
SCENARIO=${1:-realistic}
REQUESTS=${2:-1000000}
CONCURRENCY=${3:-64}
BIN=${PRAETOR:-$(cd "$(dirname "$0")/.." && pwd)/target/release/praetor}
OUT=${OUT:-$(mktemp -d)}
PORT=${PORT:-18931}
DATA=$OUT/data
URL=http://127.0.0.1:$PORT
mkdir -p "$OUT"
cd "$OUT"

serve() {
  "$BIN" serve --data-dir "$DATA" --listen 127.0.0.1:$PORT >> serve.log 2>&1 &
  PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  until curl -sf $URL/healthz > /dev/null; do sleep 0.005; done
}

serve
KEY=$(cat "$DATA/admin.key")
"$BIN" bench --url $URL --key "$KEY" --scenario "$SCENARIO" --concurrency "$CONCURRENCY" --requests "$REQUESTS" --json > bench.json 2> bench.progress
python3 -c 'import json; d=json.load(open("bench.json")); l=d["latency_us"]; print("bench: %.0f/s, %d errors, p50 %d us, p99 %d us" % (d["decisions_per_second"], d["errors"], l["p50"], l["p99"]))'
echo "peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$PID/status)"
kill $PID; wait $PID 2>/dev/null || true

START=$(date +%s%N)
serve
echo "restart to /healthz: $(( ($(date +%s%N) - START) / 1000000 )) ms"
SIZE=$(curl -sf -H "X-API-Key: $KEY" $URL/api/v1/enforce/vault/checkpoint | python3 -c 'import json,sys; print(json.load(sys.stdin)["checkpoint"]["size"])')
echo "log: $SIZE entries; store: $(du -b "$DATA/praetor.db" | cut -f1) bytes"
curl -sf -H "X-API-Key: $KEY" $URL/api/v1/enforce/vault/keys | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["vkey"])' > vault.vkey
BUNDLES=()
for ((from = 0; from < SIZE; from += 200000)); do
  to=$(( from + 200000 < SIZE ? from + 200000 : SIZE ))
  curl -sf -H "X-API-Key: $KEY" "$URL/api/v1/enforce/vault/export?from=$from&to=$to" > "b$from.json"
  BUNDLES+=("b$from.json")
done
kill $PID; wait $PID 2>/dev/null || true
trap - EXIT

/usr/bin/time -f "%e s %M KB" -o verify.time "$BIN" vault verify "${BUNDLES[@]}" --key vault.vkey > verify.txt
echo "vault verify (${#BUNDLES[@]} bundles, one log): $(cat verify.time)"
/usr/bin/time -f "%e s %M KB" -o check.time "$BIN" vault check --data-dir "$DATA" > check.txt
echo "vault check: $(cat check.time)"
echo "everything is in $OUT"
