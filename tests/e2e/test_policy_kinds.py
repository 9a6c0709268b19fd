"""Policy kinds and policy management, driven through the SDK's decisions."""

from __future__ import annotations

from support import unique


def test_sequence_velocity(server, xy):
    prefix = unique("e2e_pay")
    policy = server.create_policy(name=f"Velocity {prefix}", policy_type="sequence", action_types=[f"{prefix}_*"],
                                  decision="block", priority=5,
                                  conditions={"velocity": {"max": 2, "window_seconds": 60}})
    agent_id = xy.register_agent(unique("e2e-payer"))["agent"]["agent_id"]
    other_id = xy.register_agent(unique("e2e-payer"))["agent"]["agent_id"]
    decisions = [xy.authorize(f"{prefix}_send", agent_id=agent_id).decision for _ in range(3)]
    assert decisions == ["allow", "allow", "block"]
    # counted per agent: another agent starts from zero
    assert xy.authorize(f"{prefix}_send", agent_id=other_id).allowed
    d = xy.authorize(f"{prefix}_send", agent_id=agent_id)
    assert d.blocked and [t["policy_id"] for t in d.raw["policies_triggered"]] == [policy["policy_id"]]
    agent = server.get(f"/enforce/agents/{agent_id}")["agent"]
    assert agent["allowed_actions"] == 2 and agent["blocked_actions"] == 2


def test_trust_threshold(server, xy):
    prefix = unique("e2e_trust")
    policy = server.create_policy(name=f"Trusted only {prefix}", policy_type="threshold",
                                  action_types=[f"{prefix}_*"], decision="block", trust_threshold=50, priority=5)
    agent_id = xy.register_agent(unique("e2e-trusty"))["agent"]["agent_id"]
    assert xy.authorize(f"{prefix}_act", agent_id=agent_id).allowed
    r = server.request("PATCH", f"/enforce/agents/{agent_id}", json={"trust_score": 40})
    assert r.status_code == 200, r.text
    assert server.get(f"/enforce/agents/{agent_id}")["agent"]["trust_score"] == 40
    d = xy.authorize(f"{prefix}_act", agent_id=agent_id)
    assert d.blocked, d.raw
    assert policy["name"] in d.reasoning


def test_policy_crud_changes_decisions(server, xy):
    prefix = unique("e2e_crud")
    action = f"{prefix}_drop"
    policy = server.create_policy(name=f"CRUD {prefix}", policy_type="action_type", action_types=[f"{prefix}_*"],
                                  decision="block", priority=3, description="e2e")
    pid = policy["policy_id"]
    assert xy.authorize(action).blocked

    # the SDK's list_policies (read by xybern-mcp) carries the fields it shows
    listed = [p for p in xy.client.list_policies()["policies"] if p["policy_id"] == pid]
    assert len(listed) == 1
    p = listed[0]
    assert p["name"] == policy["name"] and p["decision"] == "block" and p["priority"] == 3
    # xybern-mcp only displays `mode`; the wire doc names `live|shadow`, issue 6 names the
    # modes `enforce|shadow|disabled`. Praetor accepts `live` and answers `enforce`.
    assert p["action_types"] == [f"{prefix}_*"] and p["enabled"] is True and p["mode"] == "enforce"
    assert p["description"] == "e2e"

    r = server.request("PUT", f"/enforce/policies/{pid}", json={
        "name": policy["name"], "policy_type": "action_type", "action_types": [f"{prefix}_*"],
        "decision": "escalate", "priority": 3})
    assert r.status_code == 200, r.text
    assert server.get(f"/enforce/policies/{pid}")["policy"]["decision"] == "escalate"
    assert xy.authorize(action).escalated

    r = server.request("PUT", f"/enforce/policies/{pid}", json={
        "name": policy["name"], "policy_type": "action_type", "action_types": [f"{prefix}_*"],
        "decision": "block", "mode": "shadow"})
    assert r.status_code == 200, r.text
    shadow = xy.authorize(action)
    assert shadow.allowed, shadow.raw  # a shadow policy reports but does not decide

    r = server.request("DELETE", f"/enforce/policies/{pid}")
    assert r.status_code == 200, r.text
    assert server.request("GET", f"/enforce/policies/{pid}").status_code == 404
    assert xy.authorize(action).allowed


def test_red_lines_empty(xy):
    """Enforce mode asks for red lines before every action; an empty list is the minimum."""
    assert xy.client.red_lines() == []
    agent_id = xy.register_agent(unique("e2e-red"))["agent"]["agent_id"]
    assert xy.client.red_lines(agent_id=agent_id) == []


def test_hand_off(server, xy):
    src = xy.register_agent(unique("e2e-planner"))["agent"]["agent_id"]
    dst = xy.register_agent(unique("e2e-worker"))["agent"]["agent_id"]
    ok = xy.client.hand_off(src, dst, "summarise the report", chain_id="chn_" + "c" * 20, chain_step=1,
                            metadata={"framework": "custom", "via": "handoff", "source": "planner",
                                      "target": "worker"})
    assert ok["decision"] == "allow", ok
    assert ok["decision_id"] and "reasoning" in ok
    stored = server.get(f"/enforce/decisions/{ok['decision_id']}")["decision"]
    assert stored["action_type"] == "agent_instruction"
    assert stored["action_content"] == "summarise the report"
    # the hand-off decision is the parent of the delegate's action
    d = xy.client.intercept(f"{unique('e2e_work')}", agent_id=dst, chain_id="chn_" + "c" * 20, chain_step=2,
                            parent_decision_id=ok["decision_id"])
    assert d["decision"] == "allow" and d["parent_decision_id"] == ok["decision_id"], d

    unknown = xy.client.hand_off(src, "no-such-agent", "do it")
    assert unknown["decision"] == "block", unknown


def test_decision_listing(server, xy):
    """`GET /enforce/decisions` as xybern-mcp reads it."""
    agent_id = xy.register_agent(unique("e2e-listed"))["agent"]["agent_id"]
    ids = [xy.authorize(unique("e2e_list"), agent_id=agent_id).decision_id for _ in range(3)]
    out = server.get("/enforce/decisions", params={"agent_id": agent_id, "per_page": 2, "page": 1})
    assert out["total"] == 3
    assert len(out["decisions"]) == 2
    page2 = server.get("/enforce/decisions", params={"agent_id": agent_id, "per_page": 2, "page": 2})
    got = [d["decision_id"] for d in out["decisions"] + page2["decisions"]]
    assert sorted(got) == sorted(ids)
    for d in out["decisions"]:
        for k in ("decision", "action_type", "trust_score", "agent_id", "created_at", "reasoning"):
            assert k in d, f"decision list item lacks `{k}`: {d}"
        assert d["agent_id"] == agent_id
