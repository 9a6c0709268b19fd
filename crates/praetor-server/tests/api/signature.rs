//! Agents that require signed requests.

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

use crate::harness::{T0, TestServer};

struct SignedAgent {
    id: String,
    credential_id: String,
    key: SigningKey,
}

async fn signed_agent(s: &TestServer) -> SignedAgent {
    registered(s, json!({ "name": "signer", "require_signature": true })).await
}

/// An agent registered as `registration` says, with the credential it was given.
async fn registered(s: &TestServer, registration: Value) -> SignedAgent {
    let (_, body) = s.post("/api/v1/enforce/agents", &s.admin_key, &registration).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let seed: [u8; 32] = b64.decode(body["credential"]["private_key"].as_str().unwrap()).unwrap().try_into().unwrap();
    SignedAgent {
        id: body["agent"]["agent_id"].as_str().unwrap().to_owned(),
        credential_id: body["credential"]["credential_id"].as_str().unwrap().to_owned(),
        key: SigningKey::from_bytes(&seed),
    }
}

async fn send(s: &TestServer, a: &SignedAgent, body: &Value, ts: i64, nonce: &str, sign_with: Option<&SigningKey>) -> Value {
    send_to(&s.base, s, a, body, ts, nonce, sign_with).await
}

/// As `send`, to the server at `base` (another node on the same store).
async fn send_to(base: &str, s: &TestServer, a: &SignedAgent, body: &Value, ts: i64, nonce: &str, sign_with: Option<&SigningKey>) -> Value {
    let raw = serde_json::to_vec(body).unwrap();
    let path = "/api/v1/enforce/intercept";
    let msg = praetor_server::signature::signed_message("POST", path, &ts.to_string(), nonce, &raw);
    let sig = sign_with.unwrap_or(&a.key).sign(msg.as_bytes());
    let res = s.client.post(format!("{base}{path}"))
        .header("X-API-Key", &s.admin_key)
        .header("X-Praetor-Credential", &a.credential_id)
        .header("X-Praetor-Timestamp", ts.to_string())
        .header("X-Praetor-Nonce", nonce)
        .header("X-Praetor-Signature", base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()))
        .header("Content-Type", "application/json")
        .body(raw)
        .send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A signed request too large to evaluate is checked over the hash of all of its body:
/// a genuine signature is the agent's (the action is refused unread as its action), a
/// signature of other bytes is not.
#[tokio::test]
async fn an_oversize_signed_request_is_verified_over_all_of_its_body() {
    let s = TestServer::start().await;
    let a = signed_agent(&s).await;
    let big = json!({ "action_type": "transfer", "agent_id": a.id, "action_content": "x".repeat(2 * 1024 * 1024) });
    let answer = send(&s, &a, &big, T0 / 1000, "nonce-big-1", None).await;
    assert_eq!((answer["decision"].as_str(), answer["identity"]["result"].as_str()), (Some("block"), Some("verified")), "{answer}");
    assert_eq!(answer["policies_triggered"][0]["policy_id"], "__unread", "{answer}");
    // The same body, signed as if its last content byte were another.
    let raw = serde_json::to_vec(&big).unwrap();
    let mut other = raw.clone();
    let at = other.len() - 3;
    other[at] = b'y';
    let path = "/api/v1/enforce/intercept";
    let ts = (T0 / 1000).to_string();
    let msg = praetor_server::signature::signed_message("POST", path, &ts, "nonce-big-2", &other);
    let res = s.client.post(format!("{}{path}", s.base))
        .header("X-API-Key", &s.admin_key)
        .header("X-Praetor-Credential", &a.credential_id)
        .header("X-Praetor-Timestamp", &ts)
        .header("X-Praetor-Nonce", "nonce-big-2")
        .header("X-Praetor-Signature", base64::engine::general_purpose::STANDARD.encode(a.key.sign(msg.as_bytes()).to_bytes()))
        .body(raw)
        .send().await.unwrap();
    let answer: Value = res.json().await.unwrap();
    assert_eq!((answer["decision"].as_str(), answer["identity"]["check"].as_str()), (Some("block"), Some("signature_invalid")), "{answer}");
}

#[tokio::test]
async fn signed_requests_are_verified() {
    let s = TestServer::start().await;
    let a = signed_agent(&s).await;
    let body = json!({ "action_type": "transfer", "agent_id": a.id });
    let now = T0 / 1000;
    let ok = send(&s, &a, &body, now, "nonce-0001", None).await;
    assert_eq!(ok["decision"], "allow", "{ok}");
    assert_eq!(ok["identity"]["result"], "verified");
    let replay = send(&s, &a, &body, now, "nonce-0001", None).await;
    assert_eq!(replay["identity"]["check"], "nonce_reused");
    let stale = send(&s, &a, &body, now - 120, "nonce-0002", None).await;
    assert_eq!(stale["identity"]["check"], "signature_expired");
    // The caller's timestamp at either end of i64 is expired too, not an overflow.
    for (i, ts) in [i64::MIN, i64::MAX].into_iter().enumerate() {
        let far = send(&s, &a, &body, ts, &format!("nonce-far-{i}"), None).await;
        assert_eq!((&far["decision"], &far["identity"]["check"]), (&json!("block"), &json!("signature_expired")), "{ts}: {far}");
    }
    let forged = send(&s, &a, &body, now, "nonce-0003", Some(&SigningKey::from_bytes(&[7; 32]))).await;
    assert_eq!(forged["identity"]["check"], "signature_invalid");
    assert_eq!(forged["decision"], "block");
    // A bad signature does not burn the nonce: the genuine request still goes through.
    let genuine = send(&s, &a, &body, now, "nonce-0003", None).await;
    assert_eq!(genuine["decision"], "allow");
    let unsigned = s.intercept(body.clone()).await;
    assert_eq!(unsigned["identity"]["check"], "signature_missing");
    assert_eq!(unsigned["decision"], "block");
    // A rotated key is told apart from a revoked one.
    let (_, rotated) = s.post(&format!("/api/v1/enforce/credentials/{}/rotate", a.credential_id), &s.admin_key, &json!({})).await;
    let old = send(&s, &a, &body, now, "nonce-0004", None).await;
    assert_eq!((&old["decision"], &old["identity"]["check"]), (&json!("block"), &json!("credential_rotated")), "{old}");
    s.post(&format!("/api/v1/enforce/credentials/{}/revoke", a.credential_id), &s.admin_key, &json!({ "reason": "leaked" })).await;
    let old = send(&s, &a, &body, now, "nonce-0005", None).await;
    assert_eq!((&old["decision"], &old["identity"]["check"]), (&json!("block"), &json!("credential_revoked")), "{old}");
    // The successor signs.
    let b64 = base64::engine::general_purpose::STANDARD;
    let seed: [u8; 32] = b64.decode(rotated["credential"]["private_key"].as_str().unwrap()).unwrap().try_into().unwrap();
    let next = SignedAgent { id: a.id.clone(), credential_id: rotated["credential"]["credential_id"].as_str().unwrap().to_owned(), key: SigningKey::from_bytes(&seed) };
    assert_eq!(send(&s, &next, &body, now, "nonce-0006", None).await["decision"], "allow");
}

#[tokio::test]
async fn one_signature_covers_a_whole_batch() {
    let s = TestServer::start().await;
    let a = signed_agent(&s).await;
    let body = json!({ "actions": [
        { "action_type": "transfer", "agent_id": a.id },
        { "action_type": "transfer", "agent_id": a.id },
        { "action_type": "quote", "agent_id": a.id },
    ]});
    let raw = serde_json::to_vec(&body).unwrap();
    let path = "/api/v1/enforce/batch";
    let ts = (T0 / 1000).to_string();
    let msg = praetor_server::signature::signed_message("POST", path, &ts, "batch-nonce-1", &raw);
    let res = s.client.post(s.url(path))
        .header("X-API-Key", &s.admin_key)
        .header("X-Praetor-Credential", &a.credential_id)
        .header("X-Praetor-Timestamp", &ts)
        .header("X-Praetor-Nonce", "batch-nonce-1")
        .header("X-Praetor-Signature", base64::engine::general_purpose::STANDARD.encode(a.key.sign(msg.as_bytes()).to_bytes()))
        .header("Content-Type", "application/json")
        .body(raw)
        .send().await.unwrap();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["allowed"], 3, "{answer}");
}

/// The nonce is consumed in the store, in the decision's own transaction: a signed
/// request replayed to another node on the same store (or to this one after a
/// restart, when its memory is empty) is refused too, and the refusal is recorded.
#[tokio::test]
async fn a_replayed_signature_is_refused_by_another_node_on_the_same_store() {
    let s = TestServer::start().await;
    let a = signed_agent(&s).await;
    let body = json!({ "action_type": "transfer", "agent_id": a.id });
    let now = T0 / 1000;
    assert_eq!(send(&s, &a, &body, now, "nonce-cross-1", None).await["decision"], "allow");

    let (base, server) = second_node(&s, s.state.store.clone()).await;

    let replay = send_to(&base, &s, &a, &body, now, "nonce-cross-1", None).await;
    assert_eq!(replay["identity"]["check"], "nonce_reused", "{replay}");
    assert_eq!(replay["decision"], "block", "{replay}");
    // A fresh nonce still goes through on the second node, and the refusal was sealed.
    let fresh = send_to(&base, &s, &a, &body, now, "nonce-cross-2", None).await;
    assert_eq!(fresh["decision"], "allow", "{fresh}");
    let (_, stored) = s.get(&format!("/api/v1/enforce/decisions/{}", replay["decision_id"].as_str().unwrap()), &s.admin_key).await;
    assert_eq!(stored["decision"]["decision"], "block", "{stored}");
    server.abort();
}

/// An escalation raised outside a session by a request a credential signed: revoking
/// the credential (a compromise) voids it, pending or approved, as revoking the
/// credential a session was started with voids that session's; rotating it does not.
/// Before, such escalations stayed open, and an approval still let the action run.
#[tokio::test]
async fn revoking_a_credential_voids_the_escalations_its_requests_raised() {
    let s = TestServer::start().await;
    let a = signed_agent(&s).await;
    s.policy(json!({ "name": "Review transfers", "policy_type": "action_type", "action_types": ["transfer"], "decision": "escalate" })).await;
    let approver = s.key(&["approvals"], None).await;
    let now = T0 / 1000;
    let raise = |content: &'static str, nonce: &'static str| {
        let body = json!({ "action_type": "transfer", "agent_id": a.id, "action_content": content });
        let (s, a) = (&s, &a);
        async move {
            let answer = send(s, a, &body, now, nonce, None).await;
            assert_eq!(answer["decision"], "escalate", "{answer}");
            answer["escalation_id"].as_str().unwrap().to_owned()
        }
    };
    let pending = raise("to alice", "nonce-esc-1").await;
    let approved = raise("to bob", "nonce-esc-2").await;
    let (status, got) = s.post(&format!("/api/v1/enforce/escalations/{approved}/resolve"), &approver, &json!({ "resolution": "approved" })).await;
    assert_eq!(status, 200, "{got}");
    let status_of = |esc: String| {
        let (s, approver) = (&s, &approver);
        async move { s.get(&format!("/api/v1/enforce/escalations/{esc}/status"), approver).await.1 }
    };
    // A rotation is not a revocation: the escalations stand.
    let (status, _) = s.post(&format!("/api/v1/enforce/credentials/{}/rotate", a.credential_id), &s.admin_key, &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(status_of(pending.clone()).await["status"], "pending");
    assert_eq!(status_of(approved.clone()).await["decision"], "allow");
    let (status, revoked) = s.post(&format!("/api/v1/enforce/credentials/{}/revoke", a.credential_id), &s.admin_key, &json!({ "reason": "leaked" })).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["cleanup_incomplete"], false, "{revoked}");
    let (_, page) = s.get("/api/v1/enforce/vault/entries", &s.admin_key).await;
    for esc in [pending, approved] {
        let st = status_of(esc.clone()).await;
        assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("expired"), Some("block")), "{st}");
        assert!(st["resolution_reason"].as_str().unwrap().contains(&format!("credential `{}` revoked", a.credential_id)), "{st}");
        let (status, refused) = s.post(&format!("/api/v1/enforce/escalations/{esc}/resolve"), &approver, &json!({ "resolution": "approved" })).await;
        assert_eq!(status, 409, "{refused}");
        let sealed = page["entries"].as_array().unwrap().iter().any(|e| e["entry"]["kind"] == "escalation.expired" && e["entry"]["escalation_id"] == json!(esc));
        assert!(sealed, "the settlement of {esc} is sealed");
    }
}

/// Another node serving `store` (the first node's, or a connection of its own to its
/// database): its base URL and its task.
async fn second_node(s: &TestServer, store: std::sync::Arc<dyn praetor_store::Store>) -> (String, tokio::task::JoinHandle<()>) {
    let config = praetor_server::Config { data_dir: s.dir.path().join("second"), ..praetor_server::Config::default() };
    let second = praetor_server::AppState::load(config, store, s.clock.clone(), praetor_server::vault::VaultKeys::ephemeral()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, praetor_server::router(second)).await;
    });
    (base, server)
}

/// A POST to `path` with `key`, signed by `a` (or unsigned with `None`): status and body.
async fn post_signed(s: &TestServer, key: &str, path: &str, body: &Value, signer: Option<(&SignedAgent, &str)>) -> (reqwest::StatusCode, Value) {
    post_signed_to(&s.base, s, key, path, body, signer).await
}

/// As `post_signed`, to the server at `base` (another node on the same store).
async fn post_signed_to(base: &str, s: &TestServer, key: &str, path: &str, body: &Value, signer: Option<(&SignedAgent, &str)>) -> (reqwest::StatusCode, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    let mut req = s.client.post(format!("{base}{path}")).header("X-API-Key", key).header("Content-Type", "application/json");
    if let Some((a, nonce)) = signer {
        let ts = (T0 / 1000).to_string();
        let msg = praetor_server::signature::signed_message("POST", path, &ts, nonce, &raw);
        req = req
            .header("X-Praetor-Credential", &a.credential_id)
            .header("X-Praetor-Timestamp", &ts)
            .header("X-Praetor-Nonce", nonce)
            .header("X-Praetor-Signature", base64::engine::general_purpose::STANDARD.encode(a.key.sign(msg.as_bytes()).to_bytes()));
    }
    let res = req.body(raw).send().await.unwrap();
    (res.status(), res.json().await.unwrap())
}

fn refused_for(got: &(reqwest::StatusCode, Value), check: &str) {
    assert_eq!(got.0.as_u16(), 403, "{}", got.1);
    assert_eq!(got.1["error"]["code"], "signature_refused", "{}", got.1);
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| m.contains(check)), "expected `{check}`: {}", got.1);
}

/// An agent that signs its actions signs what acts as it outside them too: its own key
/// alone lends none of its authority (a delegation would let another agent do what its
/// unsigned actions may not), and starts or ends none of its sessions. An admin key acts
/// on the agent, not as it, and needs no signature.
#[tokio::test]
async fn an_agent_that_signs_signs_its_delegations_and_sessions() {
    let s = TestServer::start().await;
    let c = registered(&s, json!({ "name": "payer", "require_signature": true, "scopes": ["pay.*"] })).await;
    let (_, other) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "helper", "scopes": ["read.*"] })).await;
    let b = other["agent"]["agent_id"].as_str().unwrap().to_owned();
    let kc = s.key(&["agent"], Some(&c.id)).await;
    let kb = s.key(&["agent"], Some(&b)).await;
    let lend = json!({ "source_agent_id": c.id, "target_agent_id": b, "scopes": ["pay.*"] });
    let pay = |grant: Option<&str>| json!({ "action_type": "pay.send", "agent_id": b, "grant_id": grant });

    // The key alone: refused, and nothing was lent.
    refused_for(&post_signed(&s, &kc, "/api/v1/enforce/delegate", &lend, None).await, "signature_missing");
    let given = format!("/api/v1/enforce/agents/{}/delegations?direction=given", c.id);
    assert_eq!(s.get(&given, &s.admin_key).await.1["delegations"].as_array().map(Vec::len), Some(0));
    assert_eq!(s.post("/api/v1/enforce/intercept", &kb, &pay(None)).await.1["decision"], "block");
    // Signed by another key: refused as the intercept would refuse it.
    let forger = SignedAgent { id: c.id.clone(), credential_id: c.credential_id.clone(), key: SigningKey::from_bytes(&[9; 32]) };
    refused_for(&post_signed(&s, &kc, "/api/v1/enforce/delegate", &lend, Some((&forger, "lend-forged"))).await, "signature_invalid");
    // Signed: lent, and the grant lets the other agent act; the same request again is a replay.
    let (status, lent) = post_signed(&s, &kc, "/api/v1/enforce/delegate", &lend, Some((&c, "lend-0001"))).await;
    assert_eq!(status, 200, "{lent}");
    let grant = lent["grant_id"].as_str().unwrap().to_owned();
    assert_eq!(s.post("/api/v1/enforce/intercept", &kb, &pay(Some(&grant))).await.1["decision"], "allow");
    refused_for(&post_signed(&s, &kc, "/api/v1/enforce/delegate", &lend, Some((&c, "lend-0001"))).await, "nonce_reused");
    // An admin key lends without the agent's signature; a key made before `agent` and
    // `admin` could not be combined, holding both, is no admin here.
    let (status, by_admin) = post_signed(&s, &s.admin_key, "/api/v1/enforce/delegate", &lend, None).await;
    assert_eq!(status, 200, "{by_admin}");
    let ws = s.state.workspace_ids().into_iter().next().unwrap();
    let (both, both_secret) = praetor_server::api::system::mint_key(&ws, vec![praetor_store::Scope::Agent, praetor_store::Scope::Admin], None, None, T0);
    s.state.store.commit(praetor_store::Txn { mutations: vec![praetor_store::Mutation::InsertApiKey(both)], seal: vec![] }).await.unwrap();
    refused_for(&post_signed(&s, &both_secret, "/api/v1/enforce/delegate", &lend, None).await, "signature_missing");

    // Sessions: started and ended only when signed (or by an admin).
    let start = json!({ "agent_id": c.id });
    refused_for(&post_signed(&s, &kc, "/api/v1/enforce/sessions/start", &start, None).await, "signature_missing");
    let (_, sessions) = s.get(&format!("/api/v1/enforce/sessions?agent_id={}", c.id), &s.admin_key).await;
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(0), "{sessions}");
    let (status, started) = post_signed(&s, &kc, "/api/v1/enforce/sessions/start", &start, Some((&c, "start-0001"))).await;
    assert_eq!(status, 200, "{started}");
    let end = format!("/api/v1/enforce/sessions/{}/end", started["session_id"].as_str().unwrap());
    refused_for(&post_signed(&s, &kc, &end, &json!({}), None).await, "signature_missing");
    let (_, still) = s.get(&end.replace("/end", ""), &s.admin_key).await;
    assert_eq!(still["session"]["status"], "active", "{still}");
    let (status, ended) = post_signed(&s, &kc, &end, &json!({}), Some((&c, "end-0001"))).await;
    assert_eq!((status.as_u16(), &ended["session"]["status"]), (200, &json!("ended")), "{ended}");
    let (status, by_admin) = post_signed(&s, &s.admin_key, "/api/v1/enforce/sessions/start", &start, None).await;
    assert_eq!(status, 200, "{by_admin}");
}

/// Another node decides whether a signature is needed from the agent as the store has
/// it: one that set `require_signature` a moment ago on the first node, or that the
/// second does not hold yet, is not taken from a stale or missing copy.
#[tokio::test]
async fn a_node_asks_for_the_signature_another_node_just_required() {
    let s = TestServer::start().await;
    // A node of its own: its own connection and node id, so it learns of the first
    // node's changes through the change feed only.
    let store = praetor_store::sqlite::SqliteStore::open(s.dir.path().join("praetor.db")).unwrap();
    let (base, server) = second_node(&s, std::sync::Arc::new(store)).await;
    // Registered on the first node without a signature requirement; the second reads it
    // (an intercept through it) and so holds it as it was.
    let c = registered(&s, json!({ "name": "late-signer", "scopes": ["pay.*"] })).await;
    let b = s.agent("borrower").await;
    let kc = s.key(&["agent"], Some(&c.id)).await;
    let (status, _) = post_signed_to(&base, &s, &kc, "/api/v1/enforce/intercept", &json!({ "action_type": "pay.x" }), None).await;
    assert_eq!(status, 200);
    let (status, patched) = s.patch(&format!("/api/v1/enforce/agents/{}", c.id), &s.admin_key, &json!({ "require_signature": true })).await;
    assert_eq!(status, 200, "{patched}");
    // The first request through the second node since the change: nothing else made it
    // catch up.
    refused_for(&post_signed_to(&base, &s, &kc, "/api/v1/enforce/sessions/start", &json!({}), None).await, "signature_missing");
    // A session started (signed) on the first node: its end on the second asks for the
    // signature too.
    let (status, started) = post_signed(&s, &kc, "/api/v1/enforce/sessions/start", &json!({}), Some((&c, "late-start-1"))).await;
    assert_eq!(status, 200, "{started}");
    let end = format!("/api/v1/enforce/sessions/{}/end", started["session_id"].as_str().unwrap());
    refused_for(&post_signed_to(&base, &s, &kc, &end, &json!({}), None).await, "signature_missing");
    let (status, ended) = post_signed_to(&base, &s, &kc, &end, &json!({}), Some((&c, "late-end-1"))).await;
    assert_eq!((status.as_u16(), &ended["session"]["status"]), (200, &json!("ended")), "{ended}");
    let lend = json!({ "source_agent_id": c.id, "target_agent_id": b, "scopes": ["pay.*"] });
    refused_for(&post_signed_to(&base, &s, &kc, "/api/v1/enforce/delegate", &lend, None).await, "signature_missing");
    server.abort();
}
