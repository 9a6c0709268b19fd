"""Delegation through the SDK (`Client.delegate`, wire §5.4): the budgets it documents,
`max_actions`, `max_amount`, `max_rows` and `max_recipients`, are enforced as totals over
the actions allowed through the grant, and a re-delegation is carved out of its parent."""

from __future__ import annotations

import pytest
import requests

from support import unique


def _agent(xy, scopes):
    return xy.client.register_agent(unique("e2e-deleg"), scopes=scopes)["agent"]["agent_id"]


def test_delegation_budgets_are_totals_over_the_grants_actions(server, xy):
    lead = _agent(xy, ["pay.*", "mail.*"])
    aide = _agent(xy, ["report.read"])
    grant = xy.client.delegate(lead, aide, ["pay.*", "mail.*"],
                               budgets={"max_actions": 10, "max_amount": {"USD": 100}, "max_recipients": 3})
    grant_id = grant["grant_id"]

    def pay(amount, agent=aide, via=grant_id):
        return xy.client.intercept("pay.send", agent_id=agent, grant_id=via,
                                   metadata={"amount": amount, "currency": "USD"})

    first = pay(60)
    assert first["decision"] == "allow", first
    assert first["delegation"]["budget"]["used"] == 1
    assert first["delegation"]["budget"]["budget"]["max_actions"] == 10
    over = pay(41)
    assert over["decision"] == "block", over
    assert "max_amount.USD" in over["reasoning"], over
    assert pay(40)["decision"] == "allow"

    mail = xy.client.intercept("mail.send", agent_id=aide, grant_id=grant_id,
                               metadata={"recipients": ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]})
    assert mail["decision"] == "block" and "max_recipients" in mail["reasoning"], mail

    # A re-delegation cannot take more than the parent has left (nothing, in USD).
    intern = _agent(xy, ["report.read"])
    with pytest.raises(requests.HTTPError) as refused:
        xy.client.delegate(aide, intern, ["pay.*"], parent_grant_id=grant_id, budgets={"max_amount": {"USD": 1}})
    assert refused.value.response.status_code == 400
    assert "budgets.max_amount" in refused.value.response.json()["error"]["message"], refused.value.response.text
