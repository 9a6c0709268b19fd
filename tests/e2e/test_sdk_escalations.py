"""Escalations through the SDK: `Decision.wait()` on approval, rejection and a stale
approval, and the approvals scope enforced on `resolve_escalation`."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from xybern import ApprovalRejected, Xybern
from support import unique


def _escalating_policy(server, action: str) -> None:
    r = requests.post(f"{server.base_url}/enforce/policies", headers={"X-API-Key": server.admin_key}, timeout=10,
                      json={"name": unique("hold"), "policy_type": "action_type", "action_types": [action], "decision": "escalate"})
    assert r.status_code == 200, r.text


def _key(server, scopes) -> str:
    r = requests.post(f"{server.base_url}/enforce/keys", headers={"X-API-Key": server.admin_key}, timeout=10, json={"scopes": scopes})
    assert r.status_code == 200, r.text
    return r.json()["api_key"]


@pytest.fixture
def agent_xy(server):
    return Xybern(api_key=_key(server, ["agent"]), base_url=server.base_url)


@pytest.fixture
def approver_xy(server):
    return Xybern(api_key=_key(server, ["approvals"]), base_url=server.base_url)


def _resolve_later(client, escalation_id: str, resolution: str, reason: str, delay: float = 0.3) -> threading.Thread:
    def run():
        time.sleep(delay)
        client.resolve_escalation(escalation_id, resolution, reason)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_escalate_then_approve_makes_wait_return_an_allowed_decision(server, agent_xy, approver_xy):
    action = unique("e2e_wire")
    _escalating_policy(server, action)
    d = agent_xy.authorize(action, resource="payments/42")
    assert d.decision == "escalate" and d.escalated, d.raw
    assert d.escalation_id and d.escalation_id.startswith("esc_")
    # An agent key can never resolve: the SDK surfaces the 403.
    with pytest.raises(requests.HTTPError) as info:
        agent_xy.client.resolve_escalation(d.escalation_id, "approved", "self-approval")
    assert info.value.response.status_code == 403
    assert info.value.response.json()["error"]["code"] == "insufficient_scope"
    t = _resolve_later(approver_xy.client, d.escalation_id, "approved", "checked by finance")
    allowed = d.wait(timeout=20, poll_interval=0.5)
    t.join()
    assert allowed.allowed and allowed.decision == "allow"
    assert "checked by finance" in allowed.reasoning
    status = agent_xy.client.get_escalation_status(d.escalation_id)
    assert status["status"] == "approved"


def test_a_rejection_raises_approval_rejected(server, agent_xy, approver_xy):
    action = unique("e2e_wire")
    _escalating_policy(server, action)
    d = agent_xy.authorize(action)
    t = _resolve_later(approver_xy.client, d.escalation_id, "rejected", "not today")
    with pytest.raises(ApprovalRejected) as info:
        d.wait(timeout=20, poll_interval=0.5)
    t.join()
    assert info.value.status == "rejected"
    assert info.value.reason == "not today"


def test_a_stale_approval_raises_approval_rejected(server_factory):
    srv = server_factory(unique("stale"))
    r = requests.put(f"{srv.base_url}/enforce/settings", headers={"X-API-Key": srv.admin_key}, timeout=10,
                     json={"approval_freshness_seconds": 1})
    assert r.status_code == 200, r.text
    action = unique("e2e_wire")
    _escalating_policy(srv, action)
    agent = Xybern(api_key=_key(srv, ["agent"]), base_url=srv.base_url)
    approver = Xybern(api_key=_key(srv, ["approvals"]), base_url=srv.base_url)
    d = agent.authorize(action)
    approver.client.resolve_escalation(d.escalation_id, "approved", "ok then")
    time.sleep(1.3)  # past the freshness window
    with pytest.raises(ApprovalRejected) as info:
        d.wait(timeout=10, poll_interval=0.5)
    assert info.value.status == "approved", "the approval still reads approved, but is no longer actionable"
    assert agent.client.get_escalation_status(d.escalation_id)["decision"] == "block"


def test_an_approval_in_a_session_counts_against_its_budget(server, xy, approver_xy):
    """The SDK runs an approved action without intercepting it again, so the approval
    itself charges the session: with `max_actions: 2`, an approved action and one more
    use the budget up, and the next action terminates the run."""
    held, free = unique("e2e_held"), unique("e2e_free")
    _escalating_policy(server, held)
    agent = xy.register_agent(unique("e2e-budgeted"))["agent"]["agent_id"]
    session = xy.client.start_session(agent_id=agent, budgets={"max_actions": 2})["session_id"]
    escalated = xy.client.intercept(held, agent_id=agent, session_id=session)
    assert escalated["decision"] == "escalate", escalated
    approver_xy.client.resolve_escalation(escalated["escalation_id"], "approved", "one payment")
    status = xy.client.get_escalation_status(escalated["escalation_id"])
    assert status["decision"] == "allow", status
    got = server.get(f"/enforce/sessions/{session}")["session"]
    assert got["consumed"]["actions"] == 1, got
    assert xy.client.intercept(free, agent_id=agent, session_id=session)["decision"] == "allow"
    over = xy.client.intercept(free, agent_id=agent, session_id=session)
    assert over["decision"] == "terminate", over
    assert "max_actions" in over["reasoning"], over


def test_an_approved_action_is_the_first_step_of_an_ordered_sequence(server, xy, approver_xy):
    """The SDK runs an approved action without intercepting it again, so the approval is
    what puts it in the agent's history: a sequence policy that forbids an export after
    reading secrets blocks the export that follows an approved read."""
    held, follow = unique("e2e_read_secrets"), unique("e2e_export")
    _escalating_policy(server, held)
    rule = unique("no-export-after-secrets")
    r = requests.post(f"{server.base_url}/enforce/policies", headers={"X-API-Key": server.admin_key}, timeout=10,
                      json={"name": rule, "policy_type": "sequence", "decision": "block",
                            "conditions": {"ordered": {"first": [held], "then": [follow], "within_seconds": 300}}})
    assert r.status_code == 200, r.text
    agent = xy.register_agent(unique("e2e-sequenced"))["agent"]["agent_id"]
    assert xy.client.intercept(follow, agent_id=agent)["decision"] == "allow", "no first step yet"
    escalated = xy.client.intercept(held, agent_id=agent)
    assert escalated["decision"] == "escalate", escalated
    approver_xy.client.resolve_escalation(escalated["escalation_id"], "approved", "one read")
    assert xy.client.get_escalation_status(escalated["escalation_id"])["decision"] == "allow"
    after = xy.client.intercept(follow, agent_id=agent)
    assert after["decision"] == "block", after
    assert [p["name"] for p in after["policies_triggered"]] == [rule], after
