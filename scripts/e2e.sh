#!/usr/bin/env bash
# End-to-end suite: the real, unmodified `xybern==2.26.1` SDK from PyPI against a real
# `praetor serve` on a free loopback port.
#
#   scripts/e2e.sh [pytest args...]        e.g. scripts/e2e.sh -k receipt -x
#
# Needs only python3 (with venv/pip), and cargo. Creates or reuses `.venv` in the repo,
# installs tests/e2e/requirements.txt into it, builds the binary, runs pytest.
# Environment:
#   PYTHON        interpreter that creates the venv (default python3)
#   VENV          virtualenv directory (default <repo>/.venv)
#   PRAETOR_BIN   use this binary and skip the build
#   CARGO_TARGET_DIR, CARGO_PROFILE   honoured when building (profile default: dev)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$REPO/.venv}"
REQS="$REPO/tests/e2e/requirements.txt"

log() { printf '==> %s\n' "$*" >&2; }

# -- virtualenv ---------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating virtualenv $VENV"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian/Ubuntu python3 without the venv module: a venv without pip, then bootstrap
        # pip with the standard library's ensurepip, or fall back to virtualenv from PyPI.
        rm -rf "$VENV"
        if "$PYTHON" -m venv --without-pip "$VENV" 2>/dev/null && "$VENV/bin/python" -m ensurepip --upgrade >/dev/null 2>&1; then
            :
        else
            rm -rf "$VENV"
            log "python venv module unavailable; using virtualenv"
            "$PYTHON" -m pip install --user --quiet virtualenv
            "$PYTHON" -m virtualenv --quiet "$VENV"
        fi
    fi
fi
VPY="$VENV/bin/python"

# Reinstall only when the requirements changed (stamp holds their hash).
STAMP="$VENV/.praetor-e2e-requirements.sha256"
WANT="$("$VPY" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$REQS")"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ] || ! "$VPY" -c 'import xybern, pytest, requests' >/dev/null 2>&1; then
    log "installing $(basename "$REQS") into $VENV"
    "$VPY" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VPY" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$WANT" > "$STAMP"
fi
"$VPY" - <<'EOF'
import xybern
assert xybern.__version__ == "2.26.1", f"expected xybern 2.26.1, got {xybern.__version__}"
EOF

# -- binary -------------------------------------------------------------------------
if [ -z "${PRAETOR_BIN:-}" ]; then
    PROFILE="${CARGO_PROFILE:-dev}"
    log "building praetor (cargo build -p praetor, profile $PROFILE)"
    cargo build -p praetor --profile "$PROFILE" >&2
    TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
    case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
    [ "$PROFILE" = "dev" ] && PROFILE_DIR=debug || PROFILE_DIR="$PROFILE"
    PRAETOR_BIN="$TARGET_DIR/$PROFILE_DIR/praetor"
fi
if [ ! -x "$PRAETOR_BIN" ]; then
    echo "praetor binary not found at $PRAETOR_BIN" >&2
    exit 2
fi
export PRAETOR_BIN
log "using $PRAETOR_BIN"

# -- tests --------------------------------------------------------------------------
# The suite sets XYBERN_HOME to a temporary directory itself; nothing touches ~/.xybern.
exec "$VPY" -m pytest tests/e2e -q -p no:cacheprovider "$@"
