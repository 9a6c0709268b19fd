"""Alerts: an `alert` rule's violation arrives by e-mail at a real SMTP server on a
loopback port (aiosmtpd) and as a Slack-style webhook, through the durable delivery
queue, while the decision itself is answered at once."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from aiosmtpd.controller import Controller

from xybern import Xybern
from support import free_port, unique


class Sink:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


def slack_receiver():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, received


def wait_for(cond, seconds=15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_an_alert_rule_sends_email_and_slack(server_factory):
    sink = Sink()
    port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=port)
    smtp.start()
    httpd, slack = slack_receiver()
    try:
        srv = server_factory(unique("alerts"), extra_args=(
            "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--smtp-from", "praetor@localhost",
            "--allow-private-targets", "--delivery-backoff-ms", "100"))
        rule = {
            "name": "SSN leaving", "condition": {"type": "contains_pii", "categories": ["ssn"]},
            "action": "alert", "severity": "critical",
            "alert": {"emails": ["security@example.com"], "slack_webhook_url": f"http://127.0.0.1:{httpd.server_port}/slack"},
        }
        r = srv.request("POST", "/rules", json=rule)
        assert r.status_code == 200, r.text
        xy = Xybern(api_key=srv.admin_key, base_url=srv.base_url)
        d = xy.authorize(unique("e2e_mail"), content="customer SSN 123-45-6789")
        assert d.allowed and d.outcome == "allowed_with_warning", d.raw

        assert wait_for(lambda: sink.messages), "the e-mail alert did not arrive"
        env = sink.messages[0]
        assert env.rcpt_tos == ["security@example.com"]
        text = env.content.decode(errors="replace")
        assert "critical violation: SSN leaving" in text
        assert d.decision_id in text

        assert wait_for(lambda: slack), "the Slack alert did not arrive"
        assert "SSN leaving" in slack[0]["text"]

        deliveries = srv.request("GET", "/enforce/deliveries").json()["deliveries"]
        by_channel = {x["channel"]: x["status"] for x in deliveries}
        assert by_channel == {"email": "delivered", "slack": "delivered"}, deliveries
        violations = srv.request("GET", "/violations?severity=critical").json()["violations"]
        assert violations[0]["decision_id"] == d.decision_id
    finally:
        smtp.stop()
        httpd.shutdown()


def test_a_shadow_policy_changes_nothing_the_sdk_sees(server_factory):
    srv = server_factory(unique("shadow"))
    action = unique("e2e_export")
    r = srv.request("POST", "/enforce/policies", json={"name": "Would block", "policy_type": "action_type",
                                                       "action_types": [action], "decision": "block", "mode": "shadow"})
    assert r.status_code == 200, r.text
    pid = r.json()["policy"]["policy_id"]
    xy = Xybern(api_key=srv.admin_key, base_url=srv.base_url)
    decisions = [xy.authorize(action) for _ in range(3)]
    assert all(d.allowed for d in decisions)
    for d in decisions:
        d.raise_for_decision()  # nothing raised: the SDK sees an ordinary allow
    report = srv.request("GET", f"/enforce/shadow/report?policy_id={pid}").json()["policies"][0]
    assert (report["matched"], report["would_change"]) == (3, 3)
    assert srv.request("POST", f"/enforce/policies/{pid}/promote").status_code == 200
    assert xy.authorize(action).blocked
