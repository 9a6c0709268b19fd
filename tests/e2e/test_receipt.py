"""Receipts: fetched with the SDK's `get_receipt`, verified offline with
`praetor vault verify-receipt` and the key the server publishes."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from support import run_praetor, unique, write_json


@pytest.fixture(scope="module")
def vault_key_files(server, tmp_path_factory):
    """Every published vault key, as a vkey file and as a PEM file."""
    keys = server.get("/enforce/vault/keys")["keys"]
    assert keys, "the server publishes no vault key"
    d = tmp_path_factory.mktemp("vault-keys")
    files = {}
    for key in keys:
        for field in ("name", "key_id", "algorithm", "vkey", "public_key_pem", "status"):
            assert key.get(field), f"vault key lacks `{field}`: {key}"
        assert key["key_id"] == key["vkey"].split("+")[1], key
        if key["status"] != "active":
            continue
        (d / f"{key['name']}.vkey").write_text(key["vkey"] + "\n")
        (d / f"{key['name']}.pem").write_text(key["public_key_pem"])
        files[f"{key['name']}.vkey"] = d / f"{key['name']}.vkey"
        files[f"{key['name']}.pem"] = d / f"{key['name']}.pem"
    assert files, f"no active vault key: {keys}"
    files["vkey"] = next(v for k, v in files.items() if k.endswith(".vkey"))
    return files


def _tamper_leaf(leaf: str) -> str:
    """Change one byte of the leaf, keeping it valid JSON of the same length."""
    doc = json.loads(leaf)
    needle = f'"{doc["decision_id"]}"'
    i = leaf.index(needle) + len(needle) - 2  # last character of the id
    repl = "0" if leaf[i] != "0" else "1"
    out = leaf[:i] + repl + leaf[i + 1:]
    assert len(out) == len(leaf) and out != leaf
    json.loads(out)
    return out


@pytest.mark.parametrize("kind", ["allow", "block"])
def test_receipt_verifies_offline(server, xy, binary, vault_key_files, tmp_path, kind):
    action = unique("e2e_receipt")
    if kind == "block":
        server.create_policy(name=f"Stop {action}", policy_type="action_type", action_types=[action],
                             decision="block", priority=1)
    d = xy.authorize(action, context={"amount": 12})
    assert d.decision == kind, d.raw

    receipt = xy.client.get_receipt(d.decision_id)  # the real SDK call
    assert xy.receipt(d.decision_id)["receipt"]["entry"] == receipt["receipt"]["entry"]  # facade alias
    assert receipt["decision_id"] == d.decision_id
    assert receipt["decision"] == kind
    body = receipt["receipt"]
    assert body["entry"]["seq"] == d.raw["vault_entry_id"]
    assert body["entry"]["leaf_hash"] == d.raw["leaf_hash"]
    leaf = json.loads(body["entry"]["leaf"])
    assert leaf["decision_id"] == d.decision_id
    assert leaf["decision"] == kind
    assert leaf["action_type"] == action

    path = write_json(tmp_path / "receipt.json", receipt)
    for name, key in vault_key_files.items():
        r = run_praetor(binary, "vault", "verify-receipt", path, "--key", key)
        assert r.returncode == 0, f"verify-receipt with {name}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        assert r.stdout.startswith("OK"), r.stdout

    # the bare receipt object works too
    bare = write_json(tmp_path / "bare.json", body)
    r = run_praetor(binary, "vault", "verify-receipt", bare, "--key", vault_key_files["vkey"])
    assert r.returncode == 0, r.stdout + r.stderr

    # one byte of the entry's leaf changed: the check must fail
    tampered = copy.deepcopy(receipt)
    tampered["receipt"]["entry"]["leaf"] = _tamper_leaf(body["entry"]["leaf"])
    bad = write_json(tmp_path / "tampered.json", tampered)
    r = run_praetor(binary, "vault", "verify-receipt", bad, "--key", vault_key_files["vkey"])
    assert r.returncode != 0, f"a tampered receipt verified:\n{r.stdout}"
    assert not r.stdout.startswith("OK"), r.stdout

    # the same, with the leaf hash recomputed to match (RFC 6962: SHA-256(0x00 || leaf)):
    # the inclusion proof and the signed root must still catch it
    forged = copy.deepcopy(tampered)
    forged_leaf = forged["receipt"]["entry"]["leaf"].encode()
    forged["receipt"]["entry"]["leaf_hash"] = hashlib.sha256(b"\x00" + forged_leaf).hexdigest()
    r = run_praetor(binary, "vault", "verify-receipt", write_json(tmp_path / "forged.json", forged),
                    "--key", vault_key_files["vkey"])
    assert r.returncode != 0, f"a forged receipt verified:\n{r.stdout}"
    assert not r.stdout.startswith("OK"), r.stdout


def test_receipt_needs_the_right_key(server, xy, binary, server_factory, tmp_path):
    d = xy.authorize(unique("e2e_receipt_key"))
    path = write_json(tmp_path / "receipt.json", xy.client.get_receipt(d.decision_id))
    other = server_factory(unique("other-vault"))
    foreign = other.get("/enforce/vault/keys")["keys"][0]
    key = tmp_path / "foreign.vkey"
    key.write_text(foreign["vkey"] + "\n")
    r = run_praetor(binary, "vault", "verify-receipt", path, "--key", key)
    assert r.returncode != 0, f"a receipt verified against another server's key:\n{r.stdout}"


def test_tampered_inclusion_proof_or_checkpoint_fails(server, xy, binary, vault_key_files, tmp_path):
    # a few more decisions so the proof is not empty
    for _ in range(3):
        xy.authorize(unique("e2e_fill"))
    d = xy.authorize(unique("e2e_receipt_proof"))
    receipt = xy.client.get_receipt(d.decision_id)
    body = receipt["receipt"]

    note = copy.deepcopy(receipt)
    lines = body["checkpoint"].split("\n")
    lines[1] = str(int(lines[1]) + 1)  # C2SP checkpoint: origin, size, root, "", signatures
    note["receipt"]["checkpoint"] = "\n".join(lines)
    r = run_praetor(binary, "vault", "verify-receipt", write_json(tmp_path / "n.json", note),
                    "--key", vault_key_files["vkey"])
    assert r.returncode != 0, r.stdout

    if body["inclusion_proof"]:
        proof = copy.deepcopy(receipt)
        h = proof["receipt"]["inclusion_proof"][0]
        proof["receipt"]["inclusion_proof"][0] = ("0" if h[0] != "0" else "1") + h[1:]
        r = run_praetor(binary, "vault", "verify-receipt", write_json(tmp_path / "p.json", proof),
                        "--key", vault_key_files["vkey"])
        assert r.returncode != 0, r.stdout


def test_receipt_of_unknown_decision_is_404(server):
    r = server.request("GET", "/enforce/decisions/dec_doesnotexist/receipt")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
