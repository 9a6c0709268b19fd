# Sourced by scripts/test.sh: make PRAETOR_TEST_DATABASE_URL name a PostgreSQL database
# the storage conformance suite and the multi-node tests can use.
#
#   1. PRAETOR_TEST_DATABASE_URL already set: used as is.
#   2. A server answering on 127.0.0.1:5432 with a database `test`: used
#      (postgres://postgres@127.0.0.1:5432/test, trust authentication).
#   3. PRAETOR_REQUIRE_POSTGRES=1 (CI): stop with a message saying what is missing.
#   4. Otherwise: start a throwaway cluster in a temporary directory from Debian's
#      `postgresql` package (installed with apt-get if absent), stopped at exit.

pg_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_find_bin() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/$name" ]; then echo "$dir/$name"; return 0; fi
    done
    return 1
}

pg_start_throwaway() {
    local initdb pg_ctl createdb
    if ! initdb=$(pg_find_bin initdb); then
        echo "== installing Debian's postgresql package (for a throwaway test cluster)"
        if [ "$(id -u)" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        else
            sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        fi
        initdb=$(pg_find_bin initdb) || { echo "initdb not found after installing postgresql" >&2; return 1; }
    fi
    pg_ctl=$(dirname "$initdb")/pg_ctl
    createdb=$(dirname "$initdb")/createdb
    [ -x "$createdb" ] || createdb=$(pg_find_bin createdb)
    PG_TMP=$(mktemp -d)
    # Clean up from here on, whatever step fails (test.sh runs under set -e).
    trap 'if [ -n "${PG_STOP:-}" ]; then "${PG_STOP[@]}" >/dev/null 2>&1 || true; fi; rm -rf "$PG_TMP"' EXIT
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # PostgreSQL refuses to run as root: run the cluster as the package's user.
    local as=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$PG_TMP"
        as=(runuser -u postgres -- env -C /) # postgres may not be able to enter our directory
    fi
    echo "== starting a throwaway PostgreSQL on 127.0.0.1:$port ($PG_TMP)"
    "${as[@]}" "$initdb" -D "$PG_TMP/data" -U postgres --auth=trust >/dev/null
    # Set before the start: a start that fails or times out may still leave a server running.
    PG_STOP=("${as[@]}" "$pg_ctl" -D "$PG_TMP/data" -m fast stop)
    "${as[@]}" "$pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/log" -w \
        -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
    "${as[@]}" "$createdb" -h 127.0.0.1 -p "$port" -U postgres test
    export PRAETOR_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/test"
}

if [ -n "${PRAETOR_TEST_DATABASE_URL:-}" ]; then
    echo "== PostgreSQL for tests: PRAETOR_TEST_DATABASE_URL is set"
elif pg_port_open 127.0.0.1 5432; then
    export PRAETOR_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/test"
    echo "== PostgreSQL for tests: $PRAETOR_TEST_DATABASE_URL"
elif [ "${PRAETOR_REQUIRE_POSTGRES:-0}" = 1 ]; then
    echo "PRAETOR_REQUIRE_POSTGRES=1, but no PostgreSQL is reachable: nothing answers on 127.0.0.1:5432" >&2
    echo "and PRAETOR_TEST_DATABASE_URL is not set. Start a server with a database \`test\` and trust" >&2
    echo "authentication on 127.0.0.1:5432, or set PRAETOR_TEST_DATABASE_URL to a database the tests may use." >&2
    exit 1
else
    pg_start_throwaway
fi
