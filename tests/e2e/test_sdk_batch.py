"""`XybernClient.batch_intercept` (`POST /enforce/batch`)."""

from __future__ import annotations

import hashlib

import pytest
import requests

from support import error_of, unique


def test_batch_mixed_decisions(server, xy):
    prefix = unique("e2e_batch")
    block = server.create_policy(name=f"No deletes {prefix}", policy_type="action_type",
                                 action_types=[f"{prefix}_delete_*"], decision="block", priority=10)
    server.create_policy(name=f"Review exports {prefix}", policy_type="action_type",
                         action_types=[f"{prefix}_export"], decision="escalate", priority=5)
    actions = [
        {"action_type": f"{prefix}_read", "agent_id": None, "metadata": {"framework": "custom"}},
        {"action_type": f"{prefix}_delete_user", "agent_id": None, "metadata": {}},
        {"action_type": f"{prefix}_list", "agent_id": None, "metadata": {},
         "chain_id": "chn_" + "a" * 20, "chain_step": 1},
        {"action_type": f"{prefix}_delete_file", "agent_id": None, "metadata": {}, "action_content": "rm -rf /tmp/x"},
        {"action_type": f"{prefix}_export", "agent_id": None, "metadata": {}},
        # an observe-mode event as the SDK's recorder sends it: hash only, never content
        {"action_type": f"{prefix}_search", "agent_id": None,
         "metadata": {"framework": "langchain", "query": "x",
                      "content_sha256": hashlib.sha256(b"secret query").hexdigest()},
         "chain_id": "chn_" + "b" * 20, "chain_step": 2},
    ]
    out = xy.client.batch_intercept(actions)
    assert out["total"] == 6
    assert out["allowed"] == 3
    assert out["blocked"] == 2
    assert out["escalated"] == 1
    results = out["results"]
    assert [r["decision"] for r in results] == ["allow", "block", "allow", "block", "escalate", "allow"]
    assert [r["action_type"] for r in results] == [a["action_type"] for a in actions]
    assert len({r["decision_id"] for r in results}) == 6
    for r in (results[1], results[3]):
        assert [t["policy_id"] for t in r["policies_triggered"]] == [block["policy_id"]]
        assert block["name"] in r["reasoning"]

    # every result is a stored decision, sealed in the vault
    listed = server.get("/enforce/decisions", params={"action_type": f"{prefix}_delete_user"})
    assert [d["decision_id"] for d in listed["decisions"]] == [results[1]["decision_id"]]
    for i, action in enumerate(actions):
        for verdict in ("allow", "block", "escalate"):
            found = server.get("/enforce/decisions", params={"decision": verdict,
                                                             "action_type": action["action_type"]})
            want = [results[i]["decision_id"]] if results[i]["decision"] == verdict else []
            assert [d["decision_id"] for d in found["decisions"]] == want, (action, verdict, found)
    for r in results:
        assert isinstance(r["vault_entry_id"], int)
    observed = server.get(f"/enforce/decisions/{results[5]['decision_id']}")["decision"]
    assert observed["action_content"] is None


def test_batch_limit(server, xy):
    action = {"action_type": unique("e2e_bulk"), "agent_id": None, "metadata": {}}
    ok = xy.client.batch_intercept([action] * 500)
    assert ok["total"] == 500 and ok["allowed"] == 500
    with pytest.raises(requests.HTTPError) as exc:
        xy.client.batch_intercept([action] * 501)
    assert exc.value.response.status_code == 400
    assert error_of(exc.value.response)["code"] == "batch_too_large"


def test_batch_names_the_bad_element(server):
    r = server.request("POST", "/enforce/batch", json={"actions": [
        {"action_type": "fine", "metadata": {}}, {"action_type": 5, "metadata": {}}]})
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "invalid_field"
    assert "actions[1]" in err["message"] or "actions.1" in err["message"], err
