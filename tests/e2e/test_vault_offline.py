"""The offline vault tools: `praetor vault verify` of an export bundle with the
published key, and `praetor vault check --data-dir` on a live and on a stopped store.

Sorted last, so the live check of the shared server covers the whole run."""

from __future__ import annotations

import copy
import json
import re

import pytest

from xybern import Xybern
from support import run_praetor, unique, write_json


def _key_file(srv, path):
    keys = srv.get("/enforce/vault/keys")["keys"]
    assert keys
    path.write_text(keys[0]["vkey"] + "\n")
    return path


@pytest.fixture(scope="module")
def vault_server(server_factory):
    """A server of its own, with decisions, policy changes and agents in its log."""
    srv = server_factory(unique("vault"))
    xy = Xybern(api_key=srv.admin_key, base_url=srv.base_url)
    srv.create_policy(name="No deletes", policy_type="action_type", action_types=["delete_*"], decision="block",
                      priority=10)
    agent_id = xy.register_agent("vault-agent")["agent"]["agent_id"]
    for i in range(12):
        xy.authorize(f"read_{i}", agent_id=agent_id)
        xy.authorize(f"delete_{i}", content=f"row {i}")
    xy.client.batch_intercept([{"action_type": f"list_{i}", "agent_id": None, "metadata": {}} for i in range(20)])
    return srv


def test_export_bundle_verifies(vault_server, binary, tmp_path):
    key = _key_file(vault_server, tmp_path / "vault.vkey")
    bundle = vault_server.get("/enforce/vault/export")
    assert len(bundle["entries"]) >= 44
    path = write_json(tmp_path / "bundle.json", bundle)
    r = run_praetor(binary, "vault", "verify", path, "--key", key)
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.startswith("OK"), r.stdout

    # a page out of the middle verifies on its own
    part = vault_server.get("/enforce/vault/export", params={"from": 5, "to": 20})
    assert [e["seq"] for e in part["entries"]] == list(range(5, 20))
    r = run_praetor(binary, "vault", "verify", write_json(tmp_path / "part.json", part), "--key", key)
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"

    # every published key verifies it, as a vkey line and as PEM
    for i, k in enumerate(vault_server.get("/enforce/vault/keys")["keys"]):
        for form, text in (("vkey", k["vkey"] + "\n"), ("pem", k["public_key_pem"])):
            f = tmp_path / f"key{i}.{form}"
            f.write_text(text)
            r = run_praetor(binary, "vault", "verify", path, "--key", f)
            assert r.returncode == 0, f"{k['name']} as {form}: {r.stdout}{r.stderr}"


def test_tampered_bundle_fails(vault_server, binary, tmp_path):
    key = _key_file(vault_server, tmp_path / "vault.vkey")
    bundle = vault_server.get("/enforce/vault/export")
    victim = 7
    bad = copy.deepcopy(bundle)
    leaf = bad["entries"][victim]["leaf"]
    doc = json.loads(leaf)
    assert doc.get("kind") is not None
    bad["entries"][victim]["leaf"] = leaf.replace('"time":"', '"time":"1', 1) if '"time":"' in leaf \
        else leaf.replace("{", '{"x":1,', 1)
    assert bad["entries"][victim]["leaf"] != leaf
    r = run_praetor(binary, "vault", "verify", write_json(tmp_path / "bad.json", bad), "--key", key)
    assert r.returncode != 0, f"a tampered bundle verified:\n{r.stdout}"

    dropped = copy.deepcopy(bundle)
    del dropped["entries"][victim]
    r = run_praetor(binary, "vault", "verify", write_json(tmp_path / "dropped.json", dropped), "--key", key)
    assert r.returncode != 0, f"a bundle with a missing entry verified:\n{r.stdout}"


def test_check_live_then_stopped(vault_server, binary):
    r = run_praetor(binary, "vault", "check", "--data-dir", vault_server.data_dir)
    assert r.returncode == 0, f"live check: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "OK" in r.stdout
    assert vault_server.healthy(), "the live check disturbed the server"
    vault_server.stop()
    assert vault_server.exit_code == 0, f"SIGTERM did not shut down cleanly ({vault_server.exit_code}):\n" \
        + vault_server.logs()
    r = run_praetor(binary, "vault", "check", "--data-dir", vault_server.data_dir)
    assert r.returncode == 0, f"check after stop: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.startswith("OK"), r.stdout


def test_restart_keeps_workspace_and_log(vault_server, binary, tmp_path):
    """After test_check_live_then_stopped: the same data dir serves the same workspace,
    the log grows on, and old receipts still verify."""
    assert not vault_server.alive()
    vault_server.start()
    xy = Xybern(api_key=vault_server.admin_key, base_url=vault_server.base_url)
    old = vault_server.get("/enforce/decisions", params={"per_page": 500})
    assert old["total"] == 44
    blocked_before = xy.authorize("delete_after_restart")
    assert blocked_before.blocked, "policies were lost on restart"
    assert [a["name"] for a in xy.client.list_agents()["agents"]] == ["vault-agent"]
    first = old["decisions"][-1]["decision_id"]
    key = _key_file(vault_server, tmp_path / "vault.vkey")
    receipt = write_json(tmp_path / "receipt.json", xy.client.get_receipt(first))
    r = run_praetor(binary, "vault", "verify-receipt", receipt, "--key", key)
    assert r.returncode == 0, r.stdout + r.stderr
    bundle = vault_server.get("/enforce/vault/export")
    assert bundle["entries"][-1]["seq"] == len(bundle["entries"]) - 1
    r = run_praetor(binary, "vault", "verify", write_json(tmp_path / "bundle.json", bundle), "--key", key)
    assert r.returncode == 0, r.stdout + r.stderr
    vault_server.stop()
    r = run_praetor(binary, "vault", "check", "--data-dir", vault_server.data_dir)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shared_server_store_checks_and_exports(server, binary, tmp_path):
    """After everything the other modules did to the shared server."""
    r = run_praetor(binary, "vault", "check", "--data-dir", server.data_dir)
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "FAILED" not in r.stdout
    # Every decision the suite made (sessions, escalations, delegation, breakglass,
    # batches, ...) has a row that matches the entry sealed for it.
    rows = [int(m) for m in re.findall(r"(\d+) decision rows and \d+ violation rows verified", r.stdout)]
    assert rows and sum(rows) >= server.get("/enforce/decisions", params={"per_page": 1})["total"] > 0, r.stdout
    key = _key_file(server, tmp_path / "vault.vkey")
    bundle = server.get("/enforce/vault/export")
    r = run_praetor(binary, "vault", "verify", write_json(tmp_path / "bundle.json", bundle), "--key", key)
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    checkpoint = server.get("/enforce/vault/checkpoint")["checkpoint"]
    assert checkpoint["size"] >= len(bundle["entries"])
