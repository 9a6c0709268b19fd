#!/usr/bin/env bash
# The whole test suite, on a fresh machine: Rust unit and integration tests (including
# the decision corpus over HTTP and the public vault vectors), the crate-boundary
# check, and the end-to-end tests that drive a real `praetor serve` with the real
# `xybern` SDK from PyPI (installed into .venv by scripts/e2e.sh). The storage
# conformance suite runs on SQLite and on PostgreSQL: scripts/postgres.sh finds a
# server (or starts a throwaway one) and sets PRAETOR_TEST_DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

echo "== crate boundaries"
scripts/check-boundaries.sh

echo "== cargo test"
cargo test --workspace --all-targets

echo "== end-to-end (xybern SDK)"
scripts/e2e.sh
