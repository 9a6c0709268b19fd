"""Shared helpers of the end-to-end suite: locating the binary, running servers and
the offline CLI, and checking the error shape."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
HEALTH_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 15.0


def praetor_bin() -> Path:
    explicit = os.environ.get("PRAETOR_BIN")
    if explicit:
        path = Path(explicit)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or (REPO / "target"))
        if not target.is_absolute():
            target = REPO / target
        path = target / "debug" / "praetor"
    if not path.is_file():
        pytest.exit(f"praetor binary not found at {path}: run `cargo build -p praetor` "
                    f"or set PRAETOR_BIN (scripts/e2e.sh does both)", returncode=2)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PraetorServer:
    """One `praetor serve` process with its own data directory."""

    def __init__(self, binary: Path, root: Path, name: str, extra_args: tuple[str, ...] = ()):
        self.binary = binary
        self.root = root / name
        self.data_dir = self.root / "data"
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_key = ""
        self.exit_code: int | None = None
        self.root.mkdir(parents=True, exist_ok=True)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What the SDK's `base_url` / XYBERN_BASE_URL takes."""
        return f"{self.host_url}/api/v1"

    def start(self) -> "PraetorServer":
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            stdout = open(self.root / "stdout.log", "ab")
            stderr = open(self.root / "stderr.log", "ab")
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", "--listen", f"127.0.0.1:{self.port}",
                 "--data-dir", str(self.data_dir), *self.extra_args],
                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=self.root,
                env={**os.environ, "PRAETOR_LOG": os.environ.get("PRAETOR_LOG", "info")},
            )
            stdout.close()
            stderr.close()
            if self._wait_healthy():
                key_file = self.data_dir / "admin.key"
                assert key_file.is_file(), f"{key_file} was not written on first start"
                key = key_file.read_text().strip()
                assert key.startswith("xb_live_"), f"admin key {key!r} lacks the xb_live_ prefix"
                assert "\n" not in key
                printed = (self.root / "stdout.log").read_text(errors="replace")
                if self.admin_key:
                    # a restart keeps the workspace and its key, and prints no new key
                    assert key == self.admin_key, "admin.key changed on restart"
                    assert printed.count(key) == 1, "the admin key was printed again on restart"
                else:
                    assert key in printed, "the admin key was not printed on first start"
                self.admin_key = key
                return self
            last_error = self.logs()
            self.stop()
        raise RuntimeError(f"praetor serve did not become healthy:\n{last_error}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                r = requests.get(f"{self.host_url}/healthz", timeout=1)
                if r.status_code == 200 and r.json().get("ok") is True:
                    return True
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.exit_code = self.proc.returncode
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        parts = []
        for name in ("stdout.log", "stderr.log"):
            p = self.root / name
            if p.exists():
                parts.append(f"--- {name} ---\n{p.read_text(errors='replace')[-8000:]}")
        return "\n".join(parts)

    def panics(self) -> str:
        p = self.root / "stderr.log"
        text = p.read_text(errors="replace") if p.exists() else ""
        return "\n".join(line for line in text.splitlines() if "panicked" in line)

    # -- HTTP helpers (plain `requests`, for what the SDK has no call for) -----------
    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, key: str | None = "admin", **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if key == "admin":
            key = self.admin_key
        if key is not None:
            headers["X-API-Key"] = key
        return requests.request(method, self.url(path), headers=headers, timeout=HTTP_TIMEOUT_S, **kw)

    def get(self, path: str, **kw) -> dict:
        r = self.request("GET", path, **kw)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def post(self, path: str, body: dict, **kw) -> dict:
        r = self.request("POST", path, json=body, **kw)
        assert r.status_code == 200, f"POST {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def create_policy(self, **fields) -> dict:
        """Create a policy as admin; returns the stored policy (with `policy_id`)."""
        body = self.post("/enforce/policies", fields)
        assert body.get("ok") is True, body
        policy = body["policy"]
        assert policy["policy_id"], body
        return policy

    def create_key(self, scopes: list[str], agent_id: str | None = None, label: str | None = None) -> str:
        body: dict = {"scopes": scopes}
        if agent_id is not None:
            body["agent_id"] = agent_id
        if label is not None:
            body["label"] = label
        out = self.post("/enforce/keys", body)
        key = out["api_key"]
        assert key.startswith("xb_live_"), out
        return key

    def healthy(self) -> bool:
        try:
            r = requests.get(f"{self.host_url}/healthz", timeout=5)
            return r.status_code == 200 and r.json().get("ok") is True
        except (requests.RequestException, ValueError):
            return False


def run_praetor(binary: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


_counter = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test uses (policies and action types share one workspace)."""
    return f"{prefix}_{next(_counter)}_{uuid.uuid4().hex[:6]}"


def error_of(r: requests.Response) -> dict:
    """The `error` object of an error response, checking the documented shape."""
    assert r.headers.get("content-type", "").startswith("application/json"), \
        f"{r.status_code} error is not JSON: {r.headers.get('content-type')} {r.text[:300]}"
    body = r.json()
    assert body.get("ok") is False, body
    err = body.get("error")
    assert isinstance(err, dict), body
    for k in ("code", "message", "type"):
        assert isinstance(err.get(k), str) and err[k], f"error.{k} missing in {body}"
    return err


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path
