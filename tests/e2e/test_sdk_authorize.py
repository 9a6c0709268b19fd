"""The SDK facade (`Xybern().authorize`, `Decision`, `raise_for_decision`,
`@protected`) against a live server."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import requests

import xybern
from xybern import Decision, PolicyBlocked, PolicyEscalated, Xybern
from support import unique

HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Outcomes the SDK names (facade `Decision.outcome` docstring / wire §2.2).
SDK_OUTCOMES = {"allowed", "allowed_with_warning", "allow_with_obligations", "held_for_co_authorisation",
                "escalated", "refused", "terminated", "restrict", "rewrite", "delay", "isolate"}


def test_real_sdk_and_isolated_home():
    assert xybern.__version__ == "2.26.1"
    import xybern.config as cfg
    assert cfg.CONFIG_DIR == Path(os.environ["XYBERN_HOME"]), "the SDK must not use ~/.xybern in tests"
    assert not cfg.CREDENTIALS_FILE.exists()


def test_authorize_allowed(server, xy):
    action = unique("e2e_read")
    d = xy.authorize(action, resource="db/customers", context={"rows": 10, "region": "eu"})
    assert isinstance(d, Decision)
    assert d.decision == "allow", d.raw
    assert d.allowed and not d.blocked and not d.escalated
    assert d.outcome == "allowed"
    assert d.action_type == action
    assert isinstance(d.decision_id, str) and d.decision_id
    assert isinstance(d.reasoning, str) and d.reasoning
    assert d.raise_for_decision() is d
    # 1.x-style dict access still works on the wire fields
    assert d["decision"] == "allow" and d["decision_id"] == d.decision_id
    raw = d.raw
    assert raw["ok"] is True
    assert raw["policies_triggered"] == []
    assert isinstance(raw["vault_entry_id"], int)
    assert HEX64.match(raw["leaf_hash"]), raw["leaf_hash"]
    assert isinstance(raw["latency_ms"], (int, float)) and raw["latency_ms"] >= 0
    for k in ("trust_score", "boundary_check", "jurisdiction"):
        assert k in raw, f"intercept answer lacks `{k}`: {raw}"

    # the server stored exactly what the facade sent: its JSON content and metadata
    stored = server.get(f"/enforce/decisions/{d.decision_id}")["decision"]
    assert stored["decision"] == "allow"
    assert stored["decision_id"] == d.decision_id
    assert stored["action_type"] == action
    expected_content = json.dumps({"action": action, "resource": "db/customers",
                                   "context": {"rows": 10, "region": "eu"}}, sort_keys=True)
    assert stored["action_content"] == expected_content


def test_authorize_blocked_by_policy(server, xy):
    prefix = unique("e2e_delete")
    policy = server.create_policy(name=f"No deletes {prefix}", policy_type="action_type",
                                  action_types=[f"{prefix}_*"], decision="block", priority=10)
    action = f"{prefix}_user"
    d = xy.authorize(action, resource="users/42")
    assert d.decision == "block", d.raw
    assert d.blocked and not d.allowed and not d.escalated
    assert d.outcome in SDK_OUTCOMES and d.outcome == "refused"
    assert d.decision_id
    assert policy["name"] in d.reasoning, d.reasoning
    triggered = d.raw["policies_triggered"]
    assert [t["policy_id"] for t in triggered] == [policy["policy_id"]]
    assert triggered[0]["name"] == policy["name"]
    assert triggered[0]["decision"] == "block"
    assert triggered[0]["reason"]

    with pytest.raises(PolicyBlocked) as exc:
        d.raise_for_decision()
    assert exc.value.action_type == action
    assert exc.value.reason == d.reasoning
    assert d.reasoning in str(exc.value)

    stored = server.get(f"/enforce/decisions/{d.decision_id}")["decision"]
    assert stored["decision"] == "block"
    assert stored["reasoning"] == d.reasoning

    # the glob is anchored: a near miss is not caught
    other = xy.authorize(f"x{prefix}_user")
    assert other.allowed, other.raw


def test_protected_decorator(server, xy):
    prefix = unique("e2e_wire")
    server.create_policy(name=f"No wires {prefix}", policy_type="metadata", action_types=[f"{prefix}*"],
                         decision="block", priority=5,
                         conditions={"rule": {"field": "amount", "op": ">", "value": 10000}})
    ran = []

    @xy.protected(prefix, context_from=lambda amount: {"amount": amount})
    def wire(amount):
        ran.append(amount)
        return amount

    assert wire(500) == 500
    with pytest.raises(PolicyBlocked):
        wire(250000)
    assert ran == [500], "a blocked action must not run"


def test_escalate_decision(server, xy):
    prefix = unique("e2e_pay")
    server.create_policy(name=f"Review payments {prefix}", policy_type="action_type",
                         action_types=[f"{prefix}*"], decision="escalate", priority=5)
    d = xy.authorize(prefix, context={"amount": 5})
    assert d.decision == "escalate", d.raw
    assert d.escalated and not d.allowed and not d.blocked
    with pytest.raises(PolicyEscalated):
        d.raise_for_decision()


def test_env_configuration(server, monkeypatch):
    """XYBERN_BASE_URL / XYBERN_API_KEY, as `export` users configure it."""
    monkeypatch.setenv("XYBERN_BASE_URL", server.base_url)
    monkeypatch.setenv("XYBERN_API_KEY", server.admin_key)
    xy = Xybern()
    assert xy.cfg.base_url == server.base_url and xy.cfg.authenticated
    d = xy.authorize(unique("e2e_env"))
    assert d.allowed, d.raw
    assert xy.client.whoami().get("agents") is not None


def test_v1_alias(server):
    xy = Xybern(api_key=server.admin_key, base_url=f"{server.host_url}/v1")
    assert xy.authorize(unique("e2e_alias")).allowed


def test_bad_key_raises_http_error(server):
    """Wire rule 1: a 4xx from intercept surfaces as requests.HTTPError in the facade."""
    xy = Xybern(api_key="xb_live_" + "0" * 40, base_url=server.base_url)
    with pytest.raises(requests.HTTPError) as exc:
        xy.authorize(unique("e2e_badkey"))
    assert exc.value.response.status_code == 401
    assert exc.value.response.json()["error"]["code"] == "invalid_api_key"


def test_authorize_as_registered_agent(server, xy):
    name = unique("e2e-agent")
    agent_id = xy.register_agent(name, framework="custom", capabilities=["read"])["agent"]["agent_id"]
    d = xy.authorize(unique("e2e_lookup"), agent_id=agent_id, context={"q": "x"})
    assert d.allowed, d.raw
    assert d.raw["agent_id"] == agent_id
    assert isinstance(d.raw["trust_score"], int) and 0 <= d.raw["trust_score"] <= 100
    agent = server.get(f"/enforce/agents/{agent_id}")["agent"]
    assert agent["allowed_actions"] == 1
    assert agent["last_seen_at"]
    assert agent["is_active"] is True

    # an unregistered agent id is refused (HTTP 200, decision block), not an HTTP error
    ghost = xy.authorize(unique("e2e_lookup"), agent_id="no-such-agent")
    assert ghost.blocked, ghost.raw
    assert ghost.reasoning

    # an agent key acts as its agent even when the SDK sends agent_id: null (wire rule 4)
    agent_key = server.create_key(["agent"], agent_id=agent_id, label="e2e")
    as_agent = Xybern(api_key=agent_key, base_url=server.base_url)
    d2 = as_agent.authorize(unique("e2e_lookup"))
    assert d2.allowed, d2.raw
    assert d2.raw["agent_id"] == agent_id
    assert server.get(f"/enforce/agents/{agent_id}")["agent"]["allowed_actions"] == 2


def test_every_optional_intercept_field_is_accepted(server, xy):
    """`XybernClient.intercept` sends fields this server may not act on (warrant, stamp,
    vary, flow, ...); it must still decide (HTTP 200), never refuse the request."""
    action = unique("e2e_fields")
    raw = xy.client.intercept(action, action_content="body", metadata={"amount": 3}, stamp=True,
                              request_on_refuse=True, vary=["amount"], artefact_sha256="ab" * 32,
                              flow={"hashes": ["0" * 32], "labels": {"class": "PUBLIC", "pii": False}},
                              chain_id="chn_" + "d" * 20, chain_step=1, parent_decision_id="dec_parent")
    assert raw["decision"] in ("allow", "block", "escalate", "terminate"), raw
    assert raw["decision_id"] and raw["action_type"] == action
    assert raw["chain_id"] == "chn_" + "d" * 20 and raw["chain_step"] == 1
    # agent-guard's body names the content `content`
    r = server.request("POST", "/enforce/intercept", json={"action_type": action, "content": "guard text",
                                                          "metadata": {}, "agent_id": None,
                                                          "timestamp": "2026-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    stored = server.get(f"/enforce/decisions/{r.json()['decision_id']}")["decision"]
    assert stored["action_content"] == "guard text"


def test_fail_open_enforcement_does_not_run_an_oversize_action(server, monkeypatch):
    """The SDK's per-action path (`auto.connect()`'s hook) in enforce mode with fail_open:
    an HTTP error runs the action, so an action too large to evaluate must come back as a
    refusal. Here a tool's 2 MiB scalar argument (sent as metadata) is refused, and the
    action does not run."""
    from xybern import auto
    from xybern.client import XybernClient
    from xybern.config import Config

    monkeypatch.setenv("XYBERN_FAIL_OPEN", "1")
    cfg = Config.resolve(api_key=server.admin_key, base_url=server.base_url, mode="enforce")
    assert cfg.mode == "enforce" and cfg.fail_open

    def run(c: Config, action_type: str, content: str, arguments: dict) -> bool:
        return auto._on_action(c, XybernClient(c), None, None, "langchain", action_type, None, content, arguments)

    assert run(cfg, unique("lookup"), "hello", {"q": "x"}) is True
    for size in (2 << 20, 65 << 20):  # past the body limit; past 64 MiB as well
        with pytest.raises(PolicyBlocked) as exc:
            run(cfg, unique("send_email"), '{"to": "bob"}', {"body": "x" * size})
        assert "refused unread" in str(exc.value), exc.value
    # The control: with no answer at all, this client runs the action.
    unreachable = Config.resolve(api_key=server.admin_key, base_url="http://127.0.0.1:9/v1", mode="enforce")
    assert run(unreachable, unique("lookup"), "hello", {}) is True
