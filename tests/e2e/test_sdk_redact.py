"""Redact mode: the SDK sends `action_content: null` and `metadata.content_sha256`.
Content policies are skipped by default (`on_redacted_content: skip`) and the server
stores no content."""

from __future__ import annotations

import hashlib
import json

import pytest

from xybern import Xybern
from support import unique

SECRET_TEXT = "please DROP TABLE customers; -- and email the dump"


@pytest.fixture
def content_policy(server):
    prefix = unique("e2e_sql")
    policy = server.create_policy(name=f"No DDL {prefix}", policy_type="content_pattern",
                                  action_types=[f"{prefix}_*"], decision="block", priority=10,
                                  conditions={"patterns": [r"(?i)drop\s+table"]})
    return prefix, policy


def test_content_policy_blocks_plain_content(server, xy, content_policy):
    prefix, policy = content_policy
    d = xy.authorize(f"{prefix}_run", content=SECRET_TEXT)
    assert d.blocked, d.raw
    assert [t["policy_id"] for t in d.raw["policies_triggered"]] == [policy["policy_id"]]
    stored = server.get(f"/enforce/decisions/{d.decision_id}")["decision"]
    assert stored["action_content"] == SECRET_TEXT


@pytest.mark.parametrize("how", ["argument", "env"])
def test_redacted_content_skips_content_policy(server, content_policy, monkeypatch, how):
    prefix, policy = content_policy
    if how == "argument":
        xy = Xybern(api_key=server.admin_key, base_url=server.base_url, redact=True)
    else:
        monkeypatch.setenv("XYBERN_REDACT", "1")
        xy = Xybern(api_key=server.admin_key, base_url=server.base_url)
    assert xy.cfg.redact is True

    # watch what the SDK puts on the wire, without changing it
    sent = []
    original = xy.client._session.post

    def spy(url, json=None, **kw):
        sent.append((url, json))
        return original(url, json=json, **kw)

    monkeypatch.setattr(xy.client._session, "post", spy)
    d = xy.authorize(f"{prefix}_run", content=SECRET_TEXT)
    digest = hashlib.sha256(SECRET_TEXT.encode()).hexdigest()
    (url, body), = sent
    assert url.endswith("/enforce/intercept")
    assert "action_content" in body and body["action_content"] is None
    assert body["metadata"]["content_sha256"] == digest

    # default on_redacted_content is `skip`: the pattern policy cannot see the content
    assert d.allowed, d.raw
    assert d.raw["policies_triggered"] == []

    stored = server.get(f"/enforce/decisions/{d.decision_id}")["decision"]
    assert "action_content" in stored and stored["action_content"] is None
    assert SECRET_TEXT not in json.dumps(stored)

    # the sealed vault entry records the hash the SDK sent, and that it was redacted
    receipt = xy.receipt(d.decision_id)
    leaf = json.loads(receipt["receipt"]["entry"]["leaf"])
    assert leaf["decision_id"] == d.decision_id
    assert leaf["content_sha256"] == digest
    assert leaf["content_redacted"] is True
    assert SECRET_TEXT not in receipt["receipt"]["entry"]["leaf"]


def test_redacted_content_escalates_when_configured(server_factory):
    """`on_redacted_content: escalate` turns a blind content policy into an escalation
    (own server: the setting is workspace-wide)."""
    srv = server_factory(unique("redact"))
    srv.request("PUT", "/enforce/settings", json={"on_redacted_content": "escalate"}).raise_for_status()
    srv.create_policy(name="No DDL", policy_type="content_pattern", action_types=["sql_*"], decision="block",
                      conditions={"patterns": [r"(?i)drop\s+table"]})
    xy = Xybern(api_key=srv.admin_key, base_url=srv.base_url, redact=True)
    d = xy.authorize("sql_run", content=SECRET_TEXT)
    assert d.escalated, d.raw
    # content that is not redacted is still judged on the content
    plain = Xybern(api_key=srv.admin_key, base_url=srv.base_url)
    assert plain.authorize("sql_run", content="SELECT 1").allowed
    assert plain.authorize("sql_run", content=SECRET_TEXT).blocked
