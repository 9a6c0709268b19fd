# Sourced by the one-run probes (bench/writer-cost.sh, bench/threads.sh): a fresh
# `praetor serve` on a free loopback port with its own data directory, stopped and
# removed when the script exits. Takes PRAETOR_DIR_NAME (a name for the temporary
# directory) and DATA_PARENT (where it goes; default $TMPDIR or /tmp); sets PRAETOR (the
# binary: $PRAETOR, else $CARGO_TARGET_DIR/release/praetor or target/release/praetor),
# WORK (the directory, data in $WORK/data), SERVER (its pid), URL and KEY (the admin key).
# SERVER_LOG_LEVEL sets the server's PRAETOR_LOG (default warn; the log is $WORK/server.log).
# SERVER_WRAPPER runs the server under another command; SERVER_START_TRIES (default 200)
# is how many times, 50 ms apart, its /healthz is tried before giving up.

PRAETOR=${PRAETOR:-${CARGO_TARGET_DIR:-target}/release/praetor}
[ -x "$PRAETOR" ] || { echo "no binary at $PRAETOR (cargo build --release -p praetor)" >&2; exit 2; }

WORK=$(mktemp -d "${DATA_PARENT:-${TMPDIR:-/tmp}}/$PRAETOR_DIR_NAME.XXXXXX")
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
# SERVER_WRAPPER: a command to run the server under (e.g. valgrind; split on spaces).
# shellcheck disable=SC2086
PRAETOR_LOG=${SERVER_LOG_LEVEL:-warn} ${SERVER_WRAPPER:-} "$PRAETOR" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 "${SERVER_START_TRIES:-200}"); do
    curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null && [ -s "$WORK/data/admin.key" ] && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.05
done
curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null && [ -s "$WORK/data/admin.key" ] || {
    echo "the server did not answer /healthz in time" >&2; cat "$WORK/server.log" >&2; exit 1
}
KEY=$(tr -d '[:space:]' <"$WORK/data/admin.key")
