"""Agent registration and listing through the SDK (`register_agent`, `list_agents`)."""

from __future__ import annotations

import base64

from support import unique


def test_register_is_idempotent_and_listed(server, xy):
    name = unique("e2e-billing")
    first = xy.register_agent(name, framework="custom", description="e2e agent",
                              capabilities=["invoice.read", "invoice.create"])
    second = xy.register_agent(name, framework="custom", description="e2e agent",
                               capabilities=["invoice.read", "invoice.create"])
    # the only field the SDK reads is agent.agent_id (wire §5.1)
    agent_id = first["agent"]["agent_id"]
    assert isinstance(agent_id, str) and agent_id
    assert second["agent"]["agent_id"] == agent_id
    assert first.get("created") is True and second.get("created") is False
    assert first["agent"]["name"] == name and first["agent"]["framework"] == "custom"

    cred = first["credential"]
    assert cred["credential_id"] and cred["public_key"]
    assert len(base64.b64decode(cred["private_key"])) == 32, "private_key is a base64 Ed25519 seed"
    assert "private_key" not in (second.get("credential") or {}), "the private key is shown once"

    listed = xy.client.list_agents()["agents"]
    matches = [a for a in listed if a["agent_id"] == agent_id]
    assert len(matches) == 1, listed
    assert matches[0]["name"] == name and matches[0]["framework"] == "custom"
    assert sum(1 for a in listed if a["name"] == name) == 1

    # `xybern status` / whoami counts the same list
    assert len(xy.client.whoami()["agents"]) == len(listed)

    agent = server.get(f"/enforce/agents/{agent_id}")["agent"]
    assert agent["agent_id"] == agent_id
    assert agent["is_active"] is True
    assert isinstance(agent["trust_score"], int)
    for k in ("trust_level", "last_seen_at", "allowed_actions", "blocked_actions", "escalated_actions"):
        assert k in agent, f"GET /enforce/agents/{{id}} lacks `{k}`: {agent}"


def test_same_name_other_framework_is_another_agent(xy):
    name = unique("e2e-researcher")
    a = xy.register_agent(name, framework="langchain")["agent"]["agent_id"]
    b = xy.register_agent(name, framework="crewai")["agent"]["agent_id"]
    assert a != b
    ids = {x["agent_id"] for x in xy.client.list_agents()["agents"]}
    assert {a, b} <= ids


def test_register_with_passport_fields(xy):
    """The SDK sends `description: null`, `permissions: {}` and the passport fields
    when set; the server must accept them."""
    out = xy.register_agent(unique("e2e-passport"), framework="custom", model="gpt-x", environment="test",
                            risk_class="low", owner="team-e2e", purpose="testing", scopes=["read"],
                            approved_tools=["search"])
    assert out["agent"]["agent_id"]


def test_deactivated_agent_is_refused(server, xy):
    agent_id = xy.register_agent(unique("e2e-retired"))["agent"]["agent_id"]
    server.post(f"/enforce/agents/{agent_id}/deactivate", {})
    assert server.get(f"/enforce/agents/{agent_id}")["agent"]["is_active"] is False
    d = xy.authorize(unique("e2e_any"), agent_id=agent_id)
    assert d.blocked, d.raw
