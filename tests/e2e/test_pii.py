"""A PII policy through the SDK: validated detections block, look-alikes do not."""

from __future__ import annotations

import pytest

from support import unique


@pytest.fixture(scope="module")
def pii_policy(server):
    prefix = unique("e2e_pii")
    policy = server.create_policy(name=f"No PII {prefix}", policy_type="pii", action_types=[f"{prefix}_*"],
                                  decision="block", priority=20,
                                  conditions={"categories": ["credit_card", "ssn"]})
    return prefix, policy


@pytest.mark.parametrize("text, blocked", [
    ("charge card 4111 1111 1111 1111 for the order", True),   # Luhn-valid Visa test number
    ("charge card 4111-1111-1111-1111 for the order", True),
    ("charge card 4111111111111111 for the order", True),
    ("order ref 4111 1111 1111 1112", False),                   # 16 digits, fails Luhn
    ("tracking 1234567812345678", False),                        # 16 digits, fails Luhn
    ("employee SSN 123-45-6789 on file", True),
    ("ticket 000-12-3456", False),                               # area 000 is never issued
    ("ticket 666-12-3456", False),                               # area 666 is never issued
    ("nothing sensitive here", False),
])
def test_pii_content(xy, pii_policy, text, blocked):
    prefix, policy = pii_policy
    d = xy.authorize(f"{prefix}_send", content=text)
    if blocked:
        assert d.decision == "block", (text, d.raw)
        assert [t["policy_id"] for t in d.raw["policies_triggered"]] == [policy["policy_id"]]
        # the reasoning names the policy but must not echo the sensitive value
        assert policy["name"] in d.reasoning
        for secret in ("4111", "123-45-6789", "6789"):
            assert secret not in d.reasoning, d.reasoning
    else:
        assert d.decision == "allow", (text, d.raw)
        assert d.raw["policies_triggered"] == []


def test_pii_in_facade_context(xy, pii_policy):
    """`authorize(context=...)` becomes JSON content; PII inside it is found."""
    prefix, _ = pii_policy
    assert xy.authorize(f"{prefix}_refund", context={"card": "4111111111111111"}).blocked
    assert xy.authorize(f"{prefix}_refund", context={"card": "4111111111111112"}).allowed


def test_pii_policy_scoped_to_its_action_types(xy, pii_policy):
    prefix, _ = pii_policy
    assert xy.authorize(f"other_{prefix}_send", content="4111 1111 1111 1111").allowed
