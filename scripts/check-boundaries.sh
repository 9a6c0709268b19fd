#!/usr/bin/env bash
# DESIGN.md: praetor-core and praetor-vault are pure. They must never depend on an async
# runtime, a web framework, an HTTP client or a database driver, directly or not.
# Only praetor-store knows SQL; only praetor-server knows axum.
set -euo pipefail
cd "$(dirname "$0")/.."

# The normal (non-dev) dependency tree of a crate, one crate name per line. A check that
# cannot run must not pass: when cargo cannot produce the tree, this fails.
deps() {
    local out
    if ! out=$(cargo tree -p "$1" -e normal --prefix none "${@:2}"); then
        echo "cannot read the dependency tree of $1" >&2
        return 2
    fi
    if [ -z "$out" ]; then
        echo "empty dependency tree for $1" >&2
        return 2
    fi
    printf '%s\n' "$out" | awk '{print $1}' | sort -u
}

status=0
forbidden='^(tokio|axum|hyper|reqwest|sqlx|rusqlite|tokio-postgres|postgres)$'
for crate in praetor-core praetor-vault; do
    tree=$(deps "$crate") || exit 2
    found=$(printf '%s\n' "$tree" | grep -E "$forbidden" || true)
    if [ -n "$found" ]; then
        echo "$crate must stay pure, but depends on: $found"; status=1
    else
        echo "$crate: no I/O dependencies"
    fi
done
for crate in praetor-core praetor-vault praetor-store; do
    tree=$(deps "$crate") || exit 2
    if printf '%s\n' "$tree" | grep -qx axum; then
        echo "$crate must not depend on axum"; status=1
    fi
done
tree=$(deps praetor-server --depth 1) || exit 2
if printf '%s\n' "$tree" | grep -qx rusqlite; then
    echo "praetor-server must not depend on rusqlite directly (SQL lives in praetor-store)"; status=1
fi
[ $status -eq 0 ] && echo "crate boundaries hold"
exit $status
