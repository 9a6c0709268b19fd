"""Bad input, sent with plain `requests`: every case gets the documented status and
`error.code`, in the one error shape, and the server keeps answering."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import threading
import time

import pytest
import requests

from support import HTTP_TIMEOUT_S, error_of, unique

INTERCEPT = "/enforce/intercept"
POLICIES = "/enforce/policies"


def _check(server, r: requests.Response, status: int, code: str) -> dict:
    assert r.status_code == status, f"expected {status} {code}, got {r.status_code}: {r.text[:400]}"
    err = error_of(r)
    assert err["code"] == code, err
    assert server.healthy(), "the server stopped answering /healthz"
    return err


def _raw_post(server, path, data: bytes, key="admin", content_type="application/json"):
    return server.request("POST", path, key=key, data=data, headers={"Content-Type": content_type})


@pytest.mark.parametrize("body", [
    b"{", b'{"action_type": "x",}', b"not json at all",
    b'{"action_type": "x"} trailing',                    # one value, then garbage
    b'{"action_type": "x"}{"action_type": "y"}',         # two values: which one was meant?
], ids=["truncated", "trailing-comma", "not-json", "trailing-garbage", "two-values"])
def test_malformed_json(server, body):
    err = _check(server, _raw_post(server, INTERCEPT, body), 400, "malformed_json")
    assert err["type"] == "invalid_request"


def test_wrong_type(server):
    err = _check(server, server.request("POST", INTERCEPT, json={"action_type": 5, "metadata": {}}),
                 400, "invalid_field")
    assert "action_type" in err["message"], err
    err = _check(server, server.request("POST", INTERCEPT, json={"action_type": "x", "metadata": "nope"}),
                 400, "invalid_field")
    assert "metadata" in err["message"], err


def test_missing_action_type(server):
    r = server.request("POST", INTERCEPT, json={"metadata": {}})
    assert r.status_code == 400, r.text
    assert error_of(r)["code"] in ("missing_field", "invalid_field")
    assert "action_type" in error_of(r)["message"]


def test_action_type_length(server):
    ok = server.request("POST", INTERCEPT, json={"action_type": "a" * 256, "agent_id": None, "metadata": {}})
    assert ok.status_code == 200 and ok.json()["decision"] == "allow", ok.text
    for n in (257, 10_000):
        err = _check(server, server.request("POST", INTERCEPT, json={"action_type": "a" * n, "metadata": {}}),
                     400, "invalid_field")
        assert "action_type" in err["message"], err


def test_oversize_actions_are_refused_not_errors(server):
    """An action too large to evaluate is refused as a decision (200 `block`, sealed, the
    body's length and hash in the reason), not answered with an error that a fail-open
    client would run the action on (wire rule 1). Other routes keep their 413."""
    big = json.dumps({"action_type": "big", "agent_id": None, "metadata": {},
                      "action_content": "x" * (2 * 1024 * 1024)}).encode()

    def refused(r: requests.Response) -> dict:
        assert r.status_code == 200, r.text[:400]
        d = r.json()
        assert d["decision"] == "block" and d["outcome"] == "refused", d
        assert [p["policy_id"] for p in d["policies_triggered"]] == ["__unread"], d
        assert d["reasoning"].startswith("blocked: refused unread: "), d
        assert server.healthy()
        return d

    d = refused(_raw_post(server, INTERCEPT, big))
    assert d["action_type"] == "big", d
    assert f"is {len(big)} bytes long (SHA-256 {hashlib.sha256(big).hexdigest()})" in d["reasoning"], d
    # the same without a Content-Length (chunked upload)
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    refused(server.request("POST", INTERCEPT, data=chunks, headers={"Content-Type": "application/json"}))
    # just under the limit is still a request like any other
    small = json.dumps({"action_type": "big_ok", "agent_id": None, "metadata": {},
                        "action_content": "x" * (256 * 1024)}).encode()
    r = _raw_post(server, INTERCEPT, small)
    assert r.status_code == 200 and r.json()["decision"] == "allow", r.text[:400]
    # under the body limit but over the content limit (512 KiB): refused, naming the field
    long_content = json.dumps({"action_type": "long", "metadata": {}, "action_content": "x" * (600 * 1024)}).encode()
    d = refused(_raw_post(server, INTERCEPT, long_content))
    assert "`action_content` is 614400 bytes long; the limit is 524288" in d["reasoning"], d
    big_policy = json.dumps({"name": "big", "policy_type": "content_pattern", "decision": "block",
                             "conditions": {"patterns": ["x" * (2 * 1024 * 1024)]}}).encode()
    _check(server, _raw_post(server, POLICIES, big_policy), 413, "payload_too_large")


def _refused_in_time(server, data, action_type: str, why: str) -> None:
    """POST `data` (an iterator or file-like body) to /enforce/intercept: it must be
    answered within the client's 10 s as a sealed `block` of `action_type`, refused
    unread, the reason containing `why`."""
    started = time.monotonic()
    r = server.request("POST", INTERCEPT, data=data, headers={"Content-Type": "application/json"})
    assert time.monotonic() - started < 10, "answered only after the client's own timeout would have run the action"
    assert r.status_code == 200, r.text[:400]
    d = r.json()
    assert d["decision"] == "block" and d["action_type"] == action_type, d
    assert [p["policy_id"] for p in d["policies_triggered"]] == ["__unread"], d
    assert why in d["reasoning"], d
    assert server.healthy()


def test_a_slow_oversize_upload_is_refused_before_the_client_gives_up(server):
    """Past the limit, a body is read for at most 5 s, then refused: a client that gives
    up after 10 s (the SDK, which then runs the action if fail-open) gets the refusal,
    not its own timeout, even from an upload that would take 20 s more."""
    head = json.dumps({"action_type": "slow_upload", "agent_id": None, "metadata": {}})[:-1] + ', "action_content": "'

    def trickle():
        yield head.encode()
        yield b"x" * (2 << 20)  # past the limit at once
        for _ in range(200):  # then 20 s more, a kilobyte every 0.1 s
            time.sleep(0.1)
            yield b"x" * 1024
        yield b'"}'

    _refused_in_time(server, trickle(), "slow_upload", "reading stops after 5 s")


def test_a_slow_body_within_the_limit_is_refused_before_the_client_gives_up(server):
    """Every decision body must arrive within 5 s of when reading starts, whatever its
    size: a small chunked body (no declared length) trickled over 15 s is refused as read
    so far, within the client's 10 s, and named by what had arrived."""
    head = json.dumps({"action_type": "slow_small", "agent_id": None, "metadata": {}})[:-1] + ', "action_content": "'

    def trickle():
        yield head.encode()
        for _ in range(150):  # 15 s, a few bytes every 0.1 s: 1.5 KB in all
            time.sleep(0.1)
            yield b"x" * 10
        yield b'"}'

    _refused_in_time(server, trickle(), "slow_small", "did not arrive within 5 s")


class _SlowFile:
    """A body of `size` bytes with a Content-Length (as the SDK sends one), given out 16
    KiB every 0.1 s: its first megabyte alone takes longer than the client waits."""

    def __init__(self, head: bytes, size: int):
        self.head, self.size, self.sent = head, size, 0

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        if self.sent >= self.size:
            return b""
        if self.sent:
            time.sleep(0.1)
        chunk = self.head if not self.sent else b"x" * min(16384, self.size - self.sent)
        self.sent += len(chunk)
        return chunk


def test_a_slow_upload_declared_over_the_limit_is_refused_before_the_client_gives_up(server):
    """A body whose Content-Length is over the limit is timed from when reading starts: at 160
    KB/s the first megabyte would take 6 s, the whole 50 s, and the client gives up at
    10 s; it is refused within the bound all the same."""
    head = json.dumps({"action_type": "slow_declared", "agent_id": None, "metadata": {}})[:-1] + ', "action_content": "'
    _refused_in_time(server, _SlowFile(head.encode(), 8 << 20), "slow_declared", "reading stops after 5 s")


def test_unknown_policy_field(server):
    err = _check(server, server.request("POST", POLICIES, json={
        "name": unique("p"), "policy_type": "action_type", "action_types": ["x_*"], "decision": "block",
        "priority": 1, "colour": "red"}), 400, "unknown_field")
    assert "colour" in err["message"], err


def test_invalid_regex_in_policy(server):
    err = _check(server, server.request("POST", POLICIES, json={
        "name": unique("p"), "policy_type": "content_pattern", "action_types": ["x_*"], "decision": "block",
        "conditions": {"patterns": ["fine", "(unclosed"]}}), 400, "invalid_policy")
    assert "conditions.patterns[1]" in err["message"], err


def test_other_policy_errors(server):
    before = server.get(POLICIES)["policies"]
    _check(server, server.request("POST", POLICIES, json={
        "policy_type": "action_type", "decision": "block"}), 400, "missing_field")
    _check(server, server.request("POST", POLICIES, json={
        "name": unique("p"), "policy_type": "action_type", "decision": "perhaps"}), 400, "invalid_field")
    _check(server, server.request("POST", POLICIES, json={
        "name": unique("p"), "policy_type": "pii", "decision": "block",
        "conditions": {"categories": ["shoe_size"]}}), 400, "invalid_policy")
    _check(server, server.request("POST", POLICIES, json={
        "name": unique("p"), "policy_type": "threshold", "decision": "block", "trust_threshold": 101}),
        400, "invalid_policy")
    _check(server, server.request("POST", POLICIES, json={
        "name": unique("p"), "policy_type": "sequence", "decision": "block",
        "conditions": {"velocity": {"max": 0, "window_seconds": 60}}}), 400, "invalid_policy")
    r = server.request("POST", POLICIES, json={
        "name": unique("p"), "policy_type": "content_pattern", "decision": "block",
        "conditions": {"patterns": ["ok"], "colour": "red"}})
    assert r.status_code == 400, r.text
    assert error_of(r)["code"] in ("unknown_field", "invalid_policy") and "colour" in error_of(r)["message"], r.text
    # nothing of the above was stored
    assert server.get(POLICIES)["policies"] == before


def test_missing_key(server):
    err = _check(server, server.request("POST", INTERCEPT, key=None, json={"action_type": "x", "metadata": {}}),
                 401, "missing_api_key")
    assert err["type"] == "auth"
    _check(server, server.request("GET", "/enforce/agents", key=None), 401, "missing_api_key")


def test_bad_key(server):
    for key in ("xb_live_" + "a" * 40, "xb_live_", "not-a-key", server.admin_key[:-1]):
        _check(server, server.request("POST", INTERCEPT, key=key, json={"action_type": "x", "metadata": {}}),
               401, "invalid_api_key")
    r = requests.get(server.url("/enforce/agents"), headers={"Authorization": "Bearer xb_live_nope"},
                     timeout=HTTP_TIMEOUT_S)
    _check(server, r, 401, "invalid_api_key")


def test_bearer_header_accepted(server):
    r = requests.post(server.url(INTERCEPT), json={"action_type": unique("bearer"), "agent_id": None, "metadata": {}},
                      headers={"Authorization": f"Bearer {server.admin_key}"}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200 and r.json()["decision"] == "allow", r.text


def test_key_of_another_workspace(server, server_factory):
    other = server_factory(unique("other-ws"))
    assert other.admin_key != server.admin_key
    # valid where it was issued ...
    assert other.request("GET", "/enforce/agents").status_code == 200
    # ... and unknown here
    _check(server, server.request("POST", INTERCEPT, key=other.admin_key,
                                  json={"action_type": "x", "metadata": {}}), 401, "invalid_api_key")
    _check(server, server.request("GET", "/enforce/agents", key=other.admin_key), 401, "invalid_api_key")
    _check(server, server.request("POST", POLICIES, key=other.admin_key, json={
        "name": "x", "policy_type": "action_type", "decision": "block"}), 401, "invalid_api_key")


def test_agent_key_cannot_write_policies(server, xy):
    agent_id = xy.register_agent(unique("e2e-scoped"))["agent"]["agent_id"]
    agent_key = server.create_key(["agent"], agent_id=agent_id)
    read_key = server.create_key(["read"])
    for key in (agent_key, read_key):
        err = _check(server, server.request("POST", POLICIES, key=key, json={
            "name": unique("p"), "policy_type": "action_type", "action_types": ["x"], "decision": "block"}),
            403, "insufficient_scope")
        assert err["type"] == "auth"
        _check(server, server.request("POST", "/enforce/keys", key=key, json={"scopes": ["admin"]}),
               403, "insufficient_scope")
    # but the agent key may ask for decisions
    r = server.request("POST", INTERCEPT, key=agent_key, json={"action_type": unique("ok"), "agent_id": None,
                                                                "metadata": {}})
    assert r.status_code == 200 and r.json()["decision"] == "allow", r.text


def test_unknown_route_and_method(server):
    _check(server, server.request("GET", "/enforce/no-such-thing"), 404, "route_not_found")
    _check(server, server.request("DELETE", INTERCEPT), 405, "method_not_allowed")
    _check(server, server.request("GET", "/enforce/policies/pol_nope"), 404, "not_found")


def test_bad_query(server):
    _check(server, server.request("GET", "/enforce/decisions", params={"decision": "maybe"}), 400, "invalid_query")
    _check(server, server.request("GET", "/enforce/decisions", params={"since": "yesterday"}), 400, "invalid_query")


def _silent_connection(srv, sent: bytes = b"POST /api/v1/enforce/intercept HT") -> "socket.socket":
    """A connection that sends `sent` (by default half a request line) and then nothing."""
    conn = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    if sent:
        conn.sendall(sent)
    return conn


def _closed_within(conn, seconds: float) -> float:
    """How long the server took to close `conn` (it must, within `seconds`)."""
    started = time.monotonic()
    conn.settimeout(seconds)
    try:
        while conn.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"the server held a connection that sent no headers for {seconds} s")
    finally:
        conn.close()
    return time.monotonic() - started


def test_a_connection_that_never_sends_its_headers_is_closed(server_factory):
    """Without a deadline for headers, connections sent no key and no request held a
    descriptor each for ever, and enough of them stopped the server answering anyone:
    half a request line, nothing at all, or an HTTP/2 preface (HTTP/2 is not served)."""
    srv = server_factory(unique("idle"), extra_args=("--connection-idle-secs", "2"))
    for sent in (b"POST /api/v1/enforce/intercept HT", b"", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
        assert _closed_within(_silent_connection(srv, sent), 10) < 6, sent
    # A kept-alive connection is closed after the same idle time, not before.
    with requests.Session() as s:
        assert s.get(srv.host_url + "/healthz", timeout=5).status_code == 200
        time.sleep(1)
        assert s.get(srv.host_url + "/healthz", timeout=5).status_code == 200
    assert srv.healthy()


def _is_closed(conn, read_what_arrived: bool = False) -> bool:
    """Whether the server has closed `conn` (without waiting for it to). With
    `read_what_arrived`, the answers waiting in its receive buffer are read first (else
    one of their bytes would be taken for an open connection)."""
    conn.setblocking(False)
    try:
        if not read_what_arrived:
            return conn.recv(1) == b""
        while conn.recv(1 << 20):
            pass
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        conn.setblocking(True)


def _closed_count(conns, settle_s: float = 0.3) -> int:
    time.sleep(settle_s)
    return sum(_is_closed(c) for c in conns)


# A connection that never began a request may be closed to make room once silent 1 s
# since it connected, or still sending its first request's headers 2 s after it
# connected: the tests wait a little longer.
SILENT_S = 1.3
STALLED_S = 2.5


def test_at_the_limit_a_connection_that_sent_no_request_makes_room(server_factory):
    """At `--max-connections`, a new client is not kept out by connections that sent no
    request: once they have been silent a second, one of them is closed to make room, and
    the new client is served long before their idle time (60 s here) ends."""
    srv = server_factory(unique("max-conn"), extra_args=("--max-connections", "16", "--connection-idle-secs", "60"))
    silent = [_silent_connection(srv, b"") for _ in range(8)] + [_silent_connection(srv) for _ in range(8)]
    time.sleep(1.3)
    r = requests.get(srv.host_url + "/healthz", timeout=20)
    assert r.status_code == 200, r.text
    # One closed for the new client; one more if another connection (such as one of
    # the harness's health checks) still held a slot when the silent ones connected.
    assert 1 <= _closed_count(silent) <= 2, "the silent connections should make room one at a time"
    for conn in silent:
        conn.close()


def test_at_the_limit_a_connection_answering_a_request_is_not_closed(server_factory):
    """Making room never closes a connection whose request is being answered (here its
    first request, still sending its body), though it connected first: a silent one
    goes, and the request is answered."""
    srv = server_factory(unique("max-conn"), extra_args=("--max-connections", "16", "--connection-idle-secs", "60"))
    busy = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    body = b'{"action_type": "email.send", "agent_id": "nobody"}'
    silent = [_silent_connection(srv, b"") for _ in range(15)]
    try:
        busy.sendall(
            b"POST /api/v1/enforce/intercept HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {srv.admin_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(SILENT_S)
        r = requests.get(srv.host_url + "/healthz", timeout=20)
        assert r.status_code == 200, r.text
        assert not _is_closed(busy), "the connection sending its request was closed to make room"
        busy.sendall(body[10:])
        answer = busy.recv(65536)
        busy.close()
        assert answer.startswith(b"HTTP/1.1 "), answer
        assert b"__unread" not in answer, answer
        # Not even asked to close after its answer: it stays kept alive.
        assert b"connection: close" not in answer.lower(), answer
    finally:
        for conn in silent:
            conn.close()


def test_at_the_limit_a_request_still_arriving_is_not_closed(server_factory):
    """A kept-alive connection receiving the headers of its next request is left open
    when room is made: a silent one goes, and the request is answered."""
    srv = server_factory(unique("max-conn"), extra_args=("--max-connections", "16", "--connection-idle-secs", "60"))
    arriving = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    arriving.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert arriving.recv(65536).startswith(b"HTTP/1.1 200"), "the first request on it"
    time.sleep(0.2)
    silent = [_silent_connection(srv, b"") for _ in range(15)]
    try:
        time.sleep(SILENT_S)
        arriving.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        time.sleep(0.2)
        assert requests.get(srv.host_url + "/healthz", timeout=20).status_code == 200
        assert not _is_closed(arriving), "the connection receiving a request was closed to make room"
        arriving.sendall(b"st: x\r\n\r\n")
        answer = arriving.recv(65536)
        arriving.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert 1 <= _closed_count(silent) <= 2  # as in the first test
    finally:
        for conn in silent:
            conn.close()


def test_at_the_limit_connections_trickling_headers_go_and_a_pooled_client_stays(server_factory):
    """Connections that trickle their first request's header bytes to look busy are not
    clients: 2 s after they connected they are closed to make room, while a client's
    idle kept-alive connection stays open and usable."""
    srv = server_factory(unique("max-conn"), extra_args=("--max-connections", "16", "--connection-idle-secs", "60"))
    client = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    client.sendall(request)
    assert client.recv(65536).startswith(b"HTTP/1.1 200")
    tricklers = [_silent_connection(srv, b"GET /healthz HTTP/1.1\r\nX-Pad: ") for _ in range(15)]
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.3):
            for conn in tricklers:
                try:
                    conn.sendall(b"a")
                except OSError:
                    pass

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        time.sleep(STALLED_S)
        assert requests.get(srv.host_url + "/healthz", timeout=20).status_code == 200
        assert not _is_closed(client), "the pooled client's connection was closed to make room"
        client.sendall(request)
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
        assert _closed_count(tricklers) >= 1
    finally:
        stop.set()
        feeder.join()
        client.close()
        for conn in tricklers:
            conn.close()


def test_at_the_limit_a_clients_idle_kept_alive_connection_is_not_closed(server_factory):
    """A client's kept-alive connection, idle between requests, is never closed to make
    room (else an attacker's new connections, busy with keyless requests, could take
    the slots of clients in use): a new client waits until a pooled one closes."""
    srv = server_factory(unique("max-conn"), extra_args=("--max-connections", "16", "--connection-idle-secs", "60"))
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    pooled, waiting = [], None
    try:
        # Kept-alive connections until one is not answered: every slot is then taken
        # (one may be held by a connection of the harness's own health checks).
        for _ in range(17):
            conn = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            conn.sendall(request)
            conn.settimeout(3)
            try:
                assert conn.recv(65536).startswith(b"HTTP/1.1 200")
            except socket.timeout:
                waiting = conn
                break
            pooled.append(conn)
        assert waiting is not None, "17 connections were served with --max-connections 16"
        time.sleep(STALLED_S)
        waiting.settimeout(2)
        with pytest.raises(socket.timeout):
            waiting.recv(65536)
        assert _closed_count(pooled) == 0, "a pooled client's connection was closed to make room"
        pooled.pop().close()
        waiting.settimeout(20)
        assert waiting.recv(65536).startswith(b"HTTP/1.1 200"), "the waiting client once a slot freed"
        for conn in pooled:
            conn.settimeout(20)
            conn.sendall(request)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for conn in pooled + [waiting]:
            if conn is not None:
                conn.close()


def _not_reading(srv, request: bytes, times: int) -> "socket.socket":
    """A connection that pipelines `request` `times` times and never reads an answer
    (its receive buffer kept small, so the answers back up soon)."""
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.settimeout(30)
    conn.connect(("127.0.0.1", srv.port))

    def send():
        # From a thread: once the server stops reading, the rest waits in the kernel.
        try:
            conn.sendall(request * times)
        except OSError:
            pass  # closed by the server: what the test waits for

    threading.Thread(target=send, daemon=True).start()
    return conn


def test_at_the_limit_clients_that_never_read_their_answers_are_closed_after_the_send_time(server_factory):
    """Connections that send requests and never read the answers began requests, so
    making room never closes them, and hyper has no write deadline: sixteen of them held
    every slot for as long as they stayed connected. Now an answer that waits
    `--connection-send-secs` (2 s here) on a client that takes none of it closes the
    connection, and a new client is served."""
    srv = server_factory(
        unique("max-conn"),
        extra_args=("--max-connections", "16", "--connection-idle-secs", "60", "--connection-send-secs", "2"),
    )
    # Answers of ~35 KB, so that 200 of them are more than the sockets' buffers hold
    # (about 128 KB unsent on the server, and the client's small receive buffer).
    for n in range(8):
        srv.create_policy(name=unique(f"wide{n}"), policy_type="action_type", action_types=["never_sent_*"],
                          decision="block", description="d" * 4000)
    listing = (f"GET /api/v1{POLICIES} HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {srv.admin_key}\r\n\r\n").encode()
    hogs = [_not_reading(srv, listing, 200) for _ in range(16)]
    try:
        time.sleep(1.0)
        started = time.monotonic()
        r = requests.get(srv.host_url + "/healthz", timeout=30)
        waited = time.monotonic() - started
        assert r.status_code == 200, r.text
        # Served once a connection's answers had waited the send time, not at once
        # (which would mean the connections that never read held no slot).
        assert waited >= 0.5, f"served after {waited:.2f} s: the connections that never read held no slot"
        time.sleep(1.0)
        assert sum(_is_closed(c, read_what_arrived=True) for c in hogs) >= 1, "no connection that never read was closed"
    finally:
        for conn in hogs:
            conn.close()


def test_a_request_arriving_at_shutdown_on_a_kept_alive_connection_is_answered(server_factory):
    """On SIGTERM, a kept-alive connection whose next request's headers are arriving is
    not closed under them: the request is answered, then the server exits cleanly."""
    srv = server_factory(unique("stop"))
    conn = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHo")
    time.sleep(0.2)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    conn.sendall(b"st: x\r\n\r\n")
    answer = conn.recv(65536)
    conn.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert srv.proc.wait(timeout=30) == 0, srv.logs()[-2000:]


def test_a_half_sent_request_does_not_hold_up_a_shutdown(server_factory):
    """On SIGTERM the server stops within its grace period even while a connection is
    still sending its headers (it would otherwise be waited for up to the idle time,
    75 s by default), and exits cleanly."""
    srv = server_factory(unique("stop"))
    conn = _silent_connection(srv)
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(timeout=30)
    took = time.monotonic() - started
    conn.close()
    assert code == 0, srv.logs()[-2000:]
    assert took < 15, f"stopping took {took:.1f} s"
