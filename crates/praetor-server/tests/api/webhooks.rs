//! Webhooks: signed deliveries to a real HTTP receiver on a loopback port, retries with
//! backoff, dead letters, outbound safety, the test endpoint and secret rotation.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error};

/// A receiver that checks every request's signature and fails the first `failures`.
#[derive(Default)]
struct Receiver {
    secret: Mutex<String>,
    failures: Mutex<u32>,
    seen: Mutex<Vec<(bool, Value)>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let sig = headers.get("x-praetor-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let t: i64 = sig.split(',').find_map(|p| p.strip_prefix("t=")).and_then(|t| t.parse().ok()).unwrap_or(0);
    let expected = format!("t={t},v1={}", readme_hmac(&r.secret.lock(), t, &body));
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // The delivery id a receiver dedupes on is inside what the signature covers.
    let header_id = headers.get("x-praetor-delivery").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let valid = !sig.is_empty() && sig == expected && body["delivery_id"] == header_id;
    r.seen.lock().push((valid, body));
    let mut f = r.failures.lock();
    if *f > 0 {
        *f -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

/// The signature as the README tells a receiver to compute it, not through the
/// server's own code: HMAC-SHA256 keyed with the bytes the hex secret encodes, over
/// `"<t>.<raw body>"`.
fn readme_hmac(secret_hex: &str, t: i64, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let key = hex::decode(secret_hex).expect("the secret is 64 hex characters");
    assert_eq!(key.len(), 32);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (r, url)
}

/// Let the dispatcher run, moving the manual clock past each backoff, until `done`.
async fn until(s: &TestServer, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        s.clock.advance(1_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the deliveries did not settle");
}

/// The webhook's delivery list once no delivery is pending any more (or after 5 s).
async fn settled_deliveries(s: &TestServer, webhook_id: &str) -> Value {
    let mut list = Value::Null;
    for _ in 0..100 {
        list = s.get(&format!("/api/v1/enforce/webhooks/{webhook_id}/deliveries"), &s.admin_key).await.1;
        let pending = list["deliveries"].as_array().is_none_or(|d| d.iter().any(|d| d["status"] == "pending"));
        if !pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    list
}

#[tokio::test]
async fn deliveries_are_signed_retried_and_kept() {
    let s = TestServer::start_with(|c| {
        c.allow_private_targets = true;
        c.delivery_max_attempts = 4;
    })
    .await;
    let (r, url) = receiver().await;
    *r.failures.lock() = 2;
    let (status, hook) = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": url, "events": ["decision.block", "session.*"] })).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{hook}");
    *r.secret.lock() = hook["secret"].as_str().unwrap().to_owned();
    let id = hook["webhook"]["webhook_id"].as_str().unwrap().to_owned();
    s.policy(json!({ "name": "no deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    s.intercept(json!({ "action_type": "read" })).await; // allow: no event wanted
    let blocked = s.intercept(json!({ "action_type": "delete_user" })).await;
    assert_eq!(blocked["decision"], "block");
    until(&s, || r.seen.lock().len() >= 3).await;
    {
        let seen = r.seen.lock();
        assert_eq!(seen.len(), 3, "two failures, then success");
        assert!(seen.iter().all(|(valid, _)| *valid), "every attempt carries a valid signature");
        assert_eq!(seen[2].1["event"], "decision.block");
        assert_eq!(seen[2].1["data"]["decision_id"], blocked["decision_id"]);
    }
    // The receiver answers before the dispatcher records the outcome: wait for the record.
    let list = settled_deliveries(&s, &id).await;
    let d = &list["deliveries"][0];
    assert_eq!((d["status"].as_str(), d["attempts"].as_u64(), d["last_status"].as_u64()), (Some("delivered"), Some(3), Some(200)), "{list}");
    // The test endpoint, and a rotated secret signs from now on.
    let (_, rotated) = s.post(&format!("/api/v1/enforce/webhooks/{id}/rotate-secret"), &s.admin_key, &json!({})).await;
    *r.secret.lock() = rotated["secret"].as_str().unwrap().to_owned();
    let (status, _) = s.post(&format!("/api/v1/enforce/webhooks/{id}/test"), &s.admin_key, &json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    until(&s, || r.seen.lock().len() >= 4).await;
    let last = r.seen.lock().last().cloned().unwrap();
    assert!(last.0, "signed with the rotated secret");
    assert_eq!(last.1["event"], "webhook.test");
}

/// Violations are sealed inside their decision's entry, yet each is still an event of
/// its own for a webhook: one signed `violation.recorded` per violation, with the
/// violation's fields and its decision's context.
#[tokio::test]
async fn a_violation_recorded_subscriber_gets_one_delivery_per_violation() {
    let s = TestServer::start_with(|c| c.allow_private_targets = true).await;
    let (r, url) = receiver().await;
    let (_, hook) = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": url, "events": ["violation.recorded"] })).await;
    *r.secret.lock() = hook["secret"].as_str().unwrap().to_owned();
    let agent = s.agent("refunder").await;
    let block = s.policy(json!({ "name": "no deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    let warn = s.policy(json!({ "name": "careful deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "allow_with_warning" })).await;
    s.intercept(json!({ "action_type": "read", "agent_id": agent })).await; // no violation, no delivery
    let blocked = s.intercept(json!({ "action_type": "delete_user", "agent_id": agent, "metadata": { "ticket": 7 } })).await;
    assert_eq!(blocked["decision"], "block");
    until(&s, || r.seen.lock().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = r.seen.lock().clone();
    assert_eq!(seen.len(), 2, "one delivery per violation: {seen:?}");
    assert!(seen.iter().all(|(valid, _)| *valid), "signed");
    let mut rules: Vec<String> = seen.iter().map(|(_, b)| b["data"]["rule_id"].as_str().unwrap().to_owned()).collect();
    rules.sort();
    let mut expected = vec![block, warn];
    expected.sort();
    assert_eq!(rules, expected);
    let (_, listed) = s.get(&format!("/api/v1/violations?agent_id={agent}"), &s.admin_key).await;
    for (_, body) in &seen {
        assert_eq!(body["event"], "violation.recorded");
        let data = &body["data"];
        assert_eq!((data["kind"].as_str(), data["decision_id"].as_str()), (Some("violation.recorded"), blocked["decision_id"].as_str()));
        assert_eq!(data["metadata"]["ticket"], 7);
        let stored = listed["violations"].as_array().unwrap().iter().find(|v| v["violation_id"] == data["violation_id"]);
        // Its row holds none of the body (its decision's sealed entry gives it back),
        // and it reads back as delivered, less the event's own fields.
        let mut delivered = data.as_object().unwrap().clone();
        for event_field in ["kind", "time", "workspace_id", "actor"] {
            delivered.remove(event_field);
        }
        assert_eq!(stored, Some(&Value::Object(delivered)), "the delivered violation is the stored one");
        let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
        let row: String = db.query_row("SELECT body FROM violations WHERE violation_id = ?1", [data["violation_id"].as_str().unwrap()], |r| r.get(0)).unwrap();
        assert_eq!(row, "", "the row holds none of the body");
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_ends_in_the_dead_letters() {
    let s = TestServer::start_with(|c| {
        c.allow_private_targets = true;
        c.delivery_max_attempts = 3;
    })
    .await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Its URL carries a credential, as webhook URLs often do.
    let (_, hook) = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": format!("http://127.0.0.1:{port}/x/S3CRETPATH?token=S3CRETQUERY"), "events": ["*"] })).await;
    let id = hook["webhook"]["webhook_id"].as_str().unwrap().to_owned();
    let (_, _) = s.post(&format!("/api/v1/enforce/webhooks/{id}/test"), &s.admin_key, &json!({})).await;
    let state = s.state.clone();
    let mut dead = false;
    for _ in 0..100 {
        let rows = state.store.list_deliveries(&state.workspace_ids()[0], Some(&id), 10).await.unwrap();
        if rows.iter().any(|d| d.status == "dead") {
            dead = true;
            break;
        }
        s.clock.advance(10_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dead, "given up after the last attempt");
    let (_, list) = s.get(&format!("/api/v1/enforce/webhooks/{id}/deliveries"), &s.admin_key).await;
    let d = list["deliveries"].as_array().unwrap().iter().find(|d| d["status"] == "dead").unwrap().clone();
    assert_eq!(d["attempts"], 3);
    assert!(d["last_error"].as_str().unwrap().contains("request failed"), "{d}");
    // The credential is nowhere but in what an administrator reads: not in the error
    // (stored, shown or logged), the deliveries, the vault or a read key's listing.
    let stored = state.store.list_deliveries(&state.workspace_ids()[0], Some(&id), 10).await.unwrap();
    let secret_free = |text: &str| !text.contains("S3CRET");
    assert!(stored.iter().all(|d| d.last_error.as_deref().is_none_or(secret_free)), "{:?}", stored.iter().map(|d| &d.last_error).collect::<Vec<_>>());
    let read = s.key(&["read"], None).await;
    for path in ["/api/v1/enforce/deliveries", "/api/v1/enforce/webhooks", "/api/v1/enforce/vault/entries"] {
        let (status, got) = s.get(path, &read).await;
        assert_eq!(status, StatusCode::OK, "{path}: {got}");
        assert!(secret_free(&got.to_string()), "{path}: {got}");
    }
    let (_, hooks) = s.get("/api/v1/enforce/webhooks", &read).await;
    assert_eq!(hooks["webhooks"][0]["url"], "http://127.0.0.1/…", "{hooks}");
    let (_, hooks) = s.get("/api/v1/enforce/webhooks", &s.admin_key).await;
    assert!(hooks["webhooks"][0]["url"].as_str().unwrap().ends_with("?token=S3CRETQUERY"), "an administrator sees it whole: {hooks}");
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let s = TestServer::start().await;
    for url in ["http://127.0.0.1:9/x", "http://10.0.0.7/x", "http://[::1]/x", "http://169.254.169.254/latest", "ftp://example.com/x"] {
        let got = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": url, "events": ["*"] })).await;
        assert_error(&got, 400, "invalid_field");
        assert!(got.1["error"]["message"].as_str().unwrap().contains("url"), "{url}: {}", got.1);
    }
    let got = s.post("/api/v1/rules", &s.admin_key, &json!({ "name": "a", "condition": { "trust_score_below": 0.5 }, "action": "alert",
        "severity": "high", "alert": { "slack_webhook_url": "http://192.168.1.1/hook" } })).await;
    assert_error(&got, 400, "invalid_field");
    assert_error(&s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": "https://example.com", "events": [] })).await, 400, "invalid_field");
}

/// A receiver that accepts and never answers holds a few attempts until they time out,
/// not the queue: a healthy receiver's delivery arrives while those attempts still hang.
/// (Attempts were made one at a time, so it waited 5 s behind each of them; then all 16
/// slots went to the hanging receiver's first 16 deliveries; then its many due
/// deliveries filled every read of the queue.)
#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_the_others() {
    let s = TestServer::start_with(|c| c.allow_private_targets = true).await;
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit_url = format!("http://{}/hook", tarpit.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(tarpit.accept().await.unwrap().0);
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let (_, hung) = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": tarpit_url, "events": ["decision.block"] })).await;
    let hung = hung["webhook"]["webhook_id"].as_str().unwrap().to_owned();
    s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    // More than the dispatcher reads at a time: the tarpit's due deliveries, all older
    // than the healthy one, must not hide it.
    for _ in 0..80 {
        assert_eq!(s.intercept(json!({ "action_type": "delete_row" })).await["decision"], "block");
    }
    let (r, url) = receiver().await;
    let (_, healthy) = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": url, "events": ["session.*"] })).await;
    *r.secret.lock() = healthy["secret"].as_str().unwrap().to_owned();
    let healthy = healthy["webhook"]["webhook_id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/v1/enforce/webhooks/{healthy}/test"), &s.admin_key, &json!({})).await;
    // Well within the 5 s an attempt on the tarpit takes to time out.
    for _ in 0..60 {
        if !r.seen.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One at a time, it came only after the tarpit attempts had each timed out.
    assert_eq!(r.seen.lock().len(), 1, "the healthy receiver got its delivery within 3 s");
    // The tarpit gets its 4 attempts at once, and more ticks of the dispatcher start no
    // more while those hang.
    let at_tarpit = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..60 {
        if at_tarpit() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(at_tarpit(), 4, "4 attempts at once to one target, no more");
    let hung_rows = s.state.store.list_deliveries(&s.state.workspace_ids()[0], Some(&hung), 100).await.unwrap();
    assert_eq!(hung_rows.len(), 80);
    assert!(hung_rows.iter().all(|d| d.status != "delivered"), "{hung_rows:?}");
}

/// An attempt is bounded as a whole. An SMTP relay that accepts and never says a word
/// was waited on for ever (lettre's timeout covers only the connect): the attempt held
/// its slot, and its claim, expiring, started it again.
#[tokio::test]
async fn an_smtp_relay_that_never_answers_fails_the_attempt() {
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = relay.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(relay.accept().await.unwrap().0);
        }
    });
    let s = TestServer::start_with(|c| {
        c.allow_private_targets = true;
        c.delivery_attempt_timeout_ms = 300;
        c.smtp = Some(praetor_server::config::SmtpConfig {
            host: "127.0.0.1".into(), port, starttls: false, username: None, password: None, from: "praetor@example.com".into(),
        });
    })
    .await;
    let (status, rule) = s.post("/api/v1/rules", &s.admin_key, &json!({ "name": "Deletes", "condition": { "type": "action_type", "action_types": ["delete_*"] },
        "action": "alert", "severity": "high", "alert": { "emails": ["ops@example.com"] } })).await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    s.intercept(json!({ "action_type": "delete_row" })).await;
    let ws = s.state.workspace_ids()[0].clone();
    let mut failed = None;
    for _ in 0..100 {
        let rows = s.state.store.list_deliveries(&ws, None, 10).await.unwrap();
        if let Some(d) = rows.into_iter().find(|d| d.channel == "email" && d.attempts > 0) {
            failed = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = failed.expect("the attempt ended");
    assert_eq!(failed.status, "pending", "retried later: {failed:?}");
    assert!(failed.last_error.as_deref().is_some_and(|e| e.contains("no answer within 300 ms")), "{failed:?}");
}

/// A target that keeps failing trips its circuit. After 5 failures in a row its
/// deliveries wait, unattempted (none of their attempts is spent, so none becomes a dead
/// letter by waiting); 30 s later one attempt tries it again, and a failure opens it for
/// twice as long; once the target takes a delivery, the rest go. Before, every due
/// delivery was tried, each failing its way towards a dead letter.
#[tokio::test]
async fn a_failing_target_trips_its_circuit_and_its_deliveries_wait() {
    let s = TestServer::start_with(|c| c.allow_private_targets = true).await;
    let (r, url) = receiver().await;
    *r.failures.lock() = u32::MAX;
    let (_, hook) = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": url, "events": ["decision.block"] })).await;
    *r.secret.lock() = hook["secret"].as_str().unwrap().to_owned();
    let hook_id = hook["webhook"]["webhook_id"].as_str().unwrap().to_owned();
    s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    for _ in 0..20 {
        assert_eq!(s.intercept(json!({ "action_type": "delete_row" })).await["decision"], "block");
    }
    let seen = || r.seen.lock().len();
    // Let the dispatcher tick (every 200 ms) until `n` attempts arrived, then three
    // more ticks: the count stays.
    let settle = |n: usize| async move {
        for _ in 0..60 {
            if seen() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        seen()
    };
    // 4 attempts at once: the circuit opens at the 5th failure, and up to 3 more that
    // were under way when it opened still arrive. The clock stands still, so nothing
    // else holds the other deliveries back.
    let tried = settle(5).await;
    assert!((5..=8).contains(&tried), "{tried} attempts before the circuit opened");
    let rows = s.state.store.list_deliveries(&s.state.workspace_ids()[0], Some(&hook_id), 100).await.unwrap();
    assert_eq!(rows.iter().filter(|d| d.attempts == 0).count(), 20 - tried, "the others wait, unattempted: {rows:?}");
    // Half-open after 30 s: one attempt, which fails, and the circuit opens for 60 s.
    s.clock.advance(31_000);
    assert_eq!(settle(tried + 1).await, tried + 1, "one attempt when the circuit half-opens");
    s.clock.advance(31_000);
    assert_eq!(settle(tried + 2).await, tried + 1, "open for 60 s after the second trip");
    // The target recovers; at the next half-open attempt the circuit closes and every
    // delivery goes.
    *r.failures.lock() = 0;
    s.clock.advance(30_000);
    until(&s, || r.seen.lock().iter().filter(|(valid, _)| *valid).count() >= tried + 1 + 20).await;
    let list = settled_deliveries(&s, &hook_id).await;
    let rows = list["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|d| d["status"] == "delivered"), "{list}");
}

/// An event glob that can match no event is refused, naming it: the subscription would
/// never fire and its alerts would be lost without a word.
#[tokio::test]
async fn event_globs_that_match_no_event_are_refused() {
    let s = TestServer::start_with(|c| c.allow_private_targets = true).await;
    let url = "http://127.0.0.1:9/hook";
    let long = "d".repeat(300);
    let never = [" decision.block", "decision.block\u{200b}", "nope.*", "decisions.block", long.as_str(), "session", "decision", "decision.blocked", "session.start", "key.rotated", "\\*"];
    for (i, glob) in never.into_iter().enumerate() {
        let got = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": url, "events": ["session.*", glob] })).await;
        assert_error(&got, 400, "invalid_field");
        assert!(got.1["error"]["message"].as_str().is_some_and(|m| m.starts_with("`events[1]`")), "{i}: {}", got.1);
    }
    for glob in ["*", "decision.*", "*.revoked", "violation.recorded", "[bs]*.closed", "workspace.created"] {
        let (status, body) = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": url, "events": [glob] })).await;
        assert_eq!(status, StatusCode::OK, "{glob}: {body}");
    }
}
