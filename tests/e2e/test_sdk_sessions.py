"""Runtime containment through the SDK: `RuntimeSession` budgets, the kill switch
seen by the heartbeat thread, TTL expiry, and the facade's `start_session`."""

from __future__ import annotations

import time

import pytest
import requests

from xybern import RuntimeSession, SessionTerminated, Xybern
from support import unique


def _agent(xy) -> str:
    return xy.register_agent(unique("e2e-runner"))["agent"]["agent_id"]


def test_runtime_session_terminates_on_the_fourth_action(server, xy):
    agent = _agent(xy)
    with RuntimeSession(xy.client, agent_id=agent, budgets={"max_actions": 3}, heartbeat_interval=60) as run:
        assert run.session_id and run.session_id.startswith("sess_")
        for _ in range(3):
            res = run.intercept(unique("e2e_step"))
            assert res["decision"] == "allow", res
            assert res["agent_id"] == agent, "the server derives the agent from the session"
        with pytest.raises(SessionTerminated) as info:
            run.intercept(unique("e2e_step"))
        assert "max_actions" in str(info.value)
        assert run.terminated
        with pytest.raises(SessionTerminated):
            run.guard()


def test_a_killed_session_stops_the_run_within_one_heartbeat(server, xy):
    agent = _agent(xy)
    run = RuntimeSession(xy.client, agent_id=agent, heartbeat_interval=0.2).start()
    try:
        run.guard()
        assert run.intercept(unique("e2e_step"))["decision"] == "allow"
        r = requests.post(f"{server.base_url}/enforce/sessions/{run.session_id}/kill",
                          headers={"X-API-Key": server.admin_key}, json={"reason": "operator stop"}, timeout=10)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 2.0  # well over one heartbeat interval
        while not run.terminated and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(SessionTerminated) as info:
            run.guard()
        assert "operator stop" in str(info.value)
    finally:
        run.close()


def test_a_silent_session_expires_by_heartbeat(server, xy):
    agent = _agent(xy)
    session_id = xy.client.start_session(agent_id=agent, budgets={"ttl_seconds": 2})["session_id"]
    assert xy.client.session_heartbeat(session_id)["status"] == "active"
    time.sleep(2.6)  # no action at all: the server's sweeper expires it on time
    hb = xy.client.session_heartbeat(session_id)
    assert hb["status"] == "expired", hb
    listed = requests.get(f"{server.base_url}/enforce/sessions/{session_id}",
                          headers={"X-API-Key": server.admin_key}, timeout=10).json()
    assert listed["session"]["status"] == "expired"


def test_facade_sessions_attribute_actions(server):
    xy = Xybern(api_key=server.admin_key, base_url=server.base_url)
    agent = _agent(xy)
    sid = xy.start_session(budgets={"max_actions": 2}, agent_id=agent)
    assert sid and sid.startswith("sess_")
    first = xy.authorize(unique("e2e_session_act"))
    assert first.allowed, first.raw
    assert first.raw["session_id"] == sid
    assert first.raw["agent_id"] == agent
    stored = requests.get(f"{server.base_url}/enforce/decisions/{first.decision_id}",
                          headers={"X-API-Key": server.admin_key}, timeout=10).json()["decision"]
    assert stored["session_id"] == sid
    xy.authorize(unique("e2e_session_act"))
    third = xy.authorize(unique("e2e_session_act"))
    assert third.decision == "terminate" and third.blocked
    xy.end_session()
    assert xy.session_id is None


def test_revoking_a_credential_stops_two_live_runs(server, xy):
    reg = xy.register_agent(unique("e2e-leaky"))
    agent, cred = reg["agent"]["agent_id"], reg["credential"]["credential_id"]
    one = RuntimeSession(xy.client, agent_id=agent, heartbeat_interval=0.2).start()
    two = RuntimeSession(xy.client, credential_id=cred, heartbeat_interval=0.2).start()
    try:
        r = requests.post(f"{server.base_url}/enforce/credentials/{cred}/revoke",
                          headers={"X-API-Key": server.admin_key}, json={"reason": "leaked"}, timeout=10)
        assert r.status_code == 200, r.text
        assert set(r.json()["killed_sessions"]) == {one.session_id, two.session_id}
        for run in (one, two):
            with pytest.raises(SessionTerminated):
                run.intercept(unique("e2e_after_revoke"))
    finally:
        one.close()
        two.close()
