#!/usr/bin/env bash
# Decisions per second for one node on SQLite, one node on PostgreSQL and three nodes
# on one PostgreSQL (issue 8), with the same `praetor bench` command, one table. Three
# nodes run twice: with every agent's requests spread over all nodes (`spread`), and
# with each agent's requests sent to one node (`by-agent`, `--route-by-agent`), as a
# load balancer routing by agent would.
#
#   bench/nodes.sh
#
# Environment:
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test   an existing database; each
#                        PostgreSQL run gets a schema of its own in it, dropped after
#   DURATION=5           seconds per run
#   CONCURRENCY=32       requests in flight (spread over the nodes in turn)
#   SCENARIOS="simple realistic"
#   CARGO_TARGET_DIR     where the release binary is (built unless NO_BUILD=1)
#
# The load generator runs on the same machine as every node, so with three nodes four
# processes share its cores: the figures compare set-ups on this machine, they do not
# predict a deployment with a node per machine. Needs: bash, psql, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
DURATION=${DURATION:-5}
CONCURRENCY=${CONCURRENCY:-32}
SCENARIOS=${SCENARIOS:-"simple realistic"}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release -p praetor >&2
fi
PRAETOR="$TARGET_DIR/release/praetor"
[ -x "$PRAETOR" ] || { echo "missing binary $PRAETOR" >&2; exit 2; }
command -v psql >/dev/null || { echo "psql is needed (Debian: postgresql-client)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/praetor-nodes.XXXXXX")
PIDS=()
SCHEMAS=()
cleanup() {
    local pid s
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    for s in "${SCHEMAS[@]}"; do psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_node DIR [DATABASE]: sets NODE_URL once the node answers /healthz. Not called
# in a subshell, so that PIDS keeps the node for stop_all.
start_node() {
    local dir=$1 db=${2:-} port
    port=$(free_port)
    mkdir -p "$dir"
    local args=(serve --listen "127.0.0.1:$port" --data-dir "$dir" --vault-keys-dir "$WORK/keys")
    [ -n "$db" ] && args+=(--database "$db")
    PRAETOR_LOG=warn "$PRAETOR" "${args[@]}" >"$dir/log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && { NODE_URL="http://127.0.0.1:$port"; return; }
        sleep 0.1
    done
    echo "node in $dir did not start:" >&2; cat "$dir/log" >&2; exit 1
}

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# run SETUP NODES SCENARIO [ROUTING] -> one table row
run() {
    local setup=$1 nodes=$2 scenario=$3 routing=${4:-spread} db="" urls=() dir="$WORK/$1-$2-$3-${4:-spread}"
    if [ "$setup" = postgres ]; then
        local schema="praetor_nodes_$$_${#SCHEMAS[@]}"
        psql -q "$DATABASE_URL" -c "CREATE SCHEMA $schema" >/dev/null
        SCHEMAS+=("$schema")
        local sep='?'; case "$DATABASE_URL" in *\?*) sep='&' ;; esac
        db="${DATABASE_URL}${sep}options=-c%20search_path%3D${schema}"
    fi
    # The first node creates the workspace and its admin key; the others join it.
    local i
    for i in $(seq 0 $((nodes - 1))); do
        start_node "$dir/n$i" "$db"
        urls+=("$NODE_URL")
    done
    local also=()
    for u in "${urls[@]:1}"; do also+=(--also-url "$u"); done
    [ "$routing" = by-agent ] && also+=(--route-by-agent)
    # The bench exits 1 when some requests failed: that is a figure (the errors column),
    # not a failure of the script, as long as it printed its summary.
    local json
    json=$("$PRAETOR" bench --url "${urls[0]}" "${also[@]}" --key "$(cat "$dir/n0/admin.key")" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --scenario "$scenario" --json 2>"$dir/bench.err") || true
    case "$json" in
        \{*) ;;
        *) echo "bench failed ($setup, $nodes nodes, $scenario):" >&2; cat "$dir/bench.err" >&2; exit 1 ;;
    esac
    stop_all
    python3 - "$setup" "$nodes" "$scenario" "$routing" "$json" <<'EOF'
import json, sys
setup, nodes, scenario, routing, raw = sys.argv[1:]
r = json.loads(raw)
lat = r.get("latency_us", {})
print(f"{setup:<10} {nodes:>5} {routing:<8} {scenario:<10} {r['decisions_per_second']:>10.0f} {lat.get('p50', 0):>8} {lat.get('p99', 0):>8} {r.get('errors', 0):>7}  {r.get('first_error') or ''}"[:200])
EOF
}

mkdir -p "$WORK/keys"
printf '%-10s %5s %-8s %-10s %10s %8s %8s %7s\n' store nodes routing scenario "dec/s" p50_us p99_us errors
for scenario in $SCENARIOS; do
    run sqlite 1 "$scenario"
    run postgres 1 "$scenario"
    run postgres 3 "$scenario"
    run postgres 3 "$scenario" by-agent
done
