"""End-to-end harness: the real `xybern==2.26.1` SDK against a real `praetor serve`.

Nothing is built here. The binary comes from `PRAETOR_BIN`, or else
`<CARGO_TARGET_DIR or <repo>/target>/debug/praetor`. Each server runs on a free
loopback port in a fresh temporary data directory and is stopped at the end.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The SDK reads XYBERN_HOME once, at import time (xybern/config.py), so it must point
# at a throw-away directory before anything imports `xybern`: nothing may read or
# write ~/.xybern. The variables that would change the SDK's behaviour are cleared
# so a developer's own environment cannot leak into the run.
_XYBERN_HOME = tempfile.mkdtemp(prefix="praetor-e2e-xybern-home-")
os.environ["XYBERN_HOME"] = _XYBERN_HOME
atexit.register(shutil.rmtree, _XYBERN_HOME, True)
for _var in ("XYBERN_API_KEY", "XYBERN_BASE_URL", "XYBERN_MODE", "XYBERN_REDACT", "XYBERN_FAIL_OPEN",
             "XYBERN_AGENT", "XYBERN_AGENTS", "XYBERN_SKIP", "XYBERN_TRACE", "XYBERN_FRAMEWORKS",
             "XYBERN_ESCALATION_WAIT"):
    os.environ.pop(_var, None)

from support import PraetorServer, praetor_bin, unique  # noqa: E402


# -- fixtures -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def binary() -> Path:
    return praetor_bin()


@pytest.fixture(scope="session")
def work_root():
    root = Path(tempfile.mkdtemp(prefix="praetor-e2e-"))
    yield root
    if os.environ.get("PRAETOR_E2E_KEEP"):
        print(f"\nkept e2e data in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def server_factory(binary, work_root):
    """Start extra servers (each with a clean workspace); all are stopped at the end,
    and a panic in any server's log fails the run."""
    started: list[PraetorServer] = []

    def start(name: str | None = None, extra_args: tuple[str, ...] = ()) -> PraetorServer:
        srv = PraetorServer(binary, work_root, name or unique("srv"), extra_args)
        started.append(srv)
        return srv.start()

    yield start
    panics = []
    for srv in started:
        srv.stop()
        if srv.panics():
            panics.append(f"{srv.root.name}:\n{srv.panics()}")
    assert not panics, "a praetor server panicked:\n" + "\n".join(panics)


@pytest.fixture(scope="session")
def server(server_factory) -> PraetorServer:
    """The shared server. Tests scope their policies to their own action types."""
    return server_factory("shared")


@pytest.fixture
def xy(server):
    """The SDK facade, configured the way its users do: explicit api_key and base_url."""
    from xybern import Xybern
    return Xybern(api_key=server.admin_key, base_url=server.base_url)


@pytest.fixture(autouse=True)
def _server_still_healthy(request):
    """After every test, every server it used must still answer /healthz."""
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        assert srv.alive(), f"praetor exited during the test:\n{srv.logs()}"
        assert srv.healthy(), "praetor stopped answering /healthz"


