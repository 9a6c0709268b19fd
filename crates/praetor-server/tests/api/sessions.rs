//! Runtime containment: sessions, live budgets, the kill switch, expiry, terminate and
//! the revocation cascade.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error};

async fn start(s: &TestServer, body: Value) -> String {
    let (status, answer) = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["session_id"].as_str().unwrap().to_owned();
    assert_eq!(answer["session"]["session_id"], json!(id), "the session object repeats the id (wire §0 rule 6)");
    assert_eq!(answer["session"]["status"], "active");
    id
}

async fn act(s: &TestServer, session: &str, metadata: Value) -> Value {
    s.intercept(json!({ "action_type": "tool.call", "agent_id": null, "session_id": session, "metadata": metadata })).await
}

async fn vault_kinds(s: &TestServer) -> Vec<Value> {
    crate::harness::vault_entries(s).await
}

#[tokio::test]
async fn max_actions_terminates_the_run_and_names_the_budget() {
    let s = TestServer::start().await;
    let agent = s.agent("runner").await;
    let id = start(&s, json!({ "agent_id": agent, "budgets": { "max_actions": 3 }, "label": "nightly" })).await;
    for _ in 0..3 {
        let a = act(&s, &id, json!({})).await;
        assert_eq!(a["decision"], "allow", "{a}");
        assert_eq!(a["agent_id"], json!(agent), "the agent comes from the session");
    }
    let fourth = act(&s, &id, json!({})).await;
    assert_eq!(fourth["decision"], "terminate");
    assert_eq!(fourth["outcome"], "terminated");
    assert!(fourth["reasoning"].as_str().unwrap().contains("max_actions"), "{fourth}");
    let fifth = act(&s, &id, json!({})).await;
    assert_eq!(fifth["decision"], "terminate");
    let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &s.admin_key, &json!({})).await;
    assert_eq!(hb["status"], "terminated");
    assert!(hb["kill_reason"].as_str().unwrap().contains("max_actions"));
    assert_eq!(hb["consumed"]["actions"], 3);
    let kinds = vault_kinds(&s).await;
    let exceeded: Vec<&Value> = kinds.iter().filter(|e| e["kind"] == "session.budget_exceeded").collect();
    assert_eq!(exceeded.len(), 1);
    assert_eq!(exceeded[0]["decision_id"], fourth["decision_id"]);
    assert!(kinds.iter().any(|e| e["kind"] == "session.started" && e["session_id"] == json!(id)));
}

#[tokio::test]
async fn budgets_are_exact_under_concurrency() {
    let s = TestServer::start().await;
    let agent = s.agent("swarm").await;
    let id = start(&s, json!({ "agent_id": agent, "budgets": { "max_actions": 10 } })).await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (client, url, key) = (s.client.clone(), s.url("/api/v1/enforce/intercept"), s.admin_key.clone());
        let body = json!({ "action_type": "tool.call", "agent_id": null, "session_id": id });
        tasks.push(tokio::spawn(async move {
            client.post(url).header("X-API-Key", key).json(&body).send().await.unwrap().json::<Value>().await.unwrap()
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    let mut ids = HashSet::new();
    for t in tasks {
        let a = t.await.unwrap();
        *counts.entry(a["decision"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        ids.insert(a["decision_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(counts.get("allow"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("terminate"), Some(&90), "{counts:?}");
    // The vault holds exactly those 100 decisions for this session.
    let sealed: Vec<Value> = vault_kinds(&s).await.into_iter().filter(|e| e["kind"] == "decision" && e["session_id"] == json!(id)).collect();
    assert_eq!(sealed.len(), 100);
    assert_eq!(sealed.iter().filter(|e| e["decision"] == "allow").count(), 10);
    let sealed_ids: HashSet<String> = sealed.iter().map(|e| e["decision_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(sealed_ids, ids);
    let (_, got) = s.get(&format!("/api/v1/enforce/sessions/{id}"), &s.admin_key).await;
    assert_eq!(got["session"]["consumed"]["actions"], 10);
    assert_eq!(got["session"]["remaining_actions"], 0);
}

/// Send `body` 25 times, one after another, on a task of its own; how many were allowed.
fn act_25_times(s: &TestServer, body: Value) -> tokio::task::JoinHandle<usize> {
    let (client, url, key) = (s.client.clone(), s.url("/api/v1/enforce/intercept"), s.admin_key.clone());
    tokio::spawn(async move {
        let mut allowed = 0;
        for _ in 0..25 {
            let a: Value = client.post(url.clone()).header("X-API-Key", &key).json(&body).send().await.unwrap().json().await.unwrap();
            allowed += usize::from(a["decision"] == "allow");
        }
        allowed
    })
}

/// On one node nothing else writes agents, so no decision may ever be refused as decided
/// from a stale copy. Starting a session used to reload its agent from the store, and a
/// heartbeat its session, which set the copy back behind the decisions still on their way
/// to the store: their commits were then refused, reloaded again, and so on, a storm of
/// retries.
#[tokio::test]
async fn starting_sessions_while_the_agent_acts_causes_no_stale_retries() {
    let s = TestServer::start().await;
    let agent = s.agent("busy").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        tasks.push(act_25_times(&s, json!({ "action_type": "tool.call", "agent_id": agent })));
    }
    // Some of it inside sessions, whose heartbeats are polled meanwhile (as the SDK does).
    let mut sessions = Vec::new();
    for _ in 0..8 {
        let id = start(&s, json!({ "agent_id": agent })).await;
        tasks.push(act_25_times(&s, json!({ "action_type": "tool.call", "agent_id": null, "session_id": id })));
        sessions.push(id);
    }
    let (mut started, mut polled) = (0, 0);
    while !tasks.iter().all(|t| t.is_finished()) && started < 200 {
        start(&s, json!({ "agent_id": agent })).await;
        started += 1;
        for id in &sessions {
            let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &s.admin_key, &json!({})).await;
            assert_eq!(hb["status"], "active", "{hb}");
            polled += 1;
        }
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += t.await.unwrap();
    }
    assert_eq!(allowed, 24 * 25);
    assert!(started >= 2 && polled >= 16, "sessions started and heartbeats polled while the agent acted: {started}, {polled}");
    // The heartbeat reports what the session's decisions consumed.
    for id in &sessions {
        let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &s.admin_key, &json!({})).await;
        assert_eq!(hb["consumed"]["actions"], 25, "{hb}");
    }
    let (_, status) = s.get("/v1/status", "").await;
    assert_eq!(status["counters"]["stale_reevaluations"], 0, "{status}");
}

/// A deactivation or revocation this node has not seen yet (made on another node, here
/// written to the store directly) still refuses a session, naming the field.
#[tokio::test]
async fn a_session_for_an_agent_or_credential_refused_in_the_store_does_not_start() {
    let s = TestServer::start().await;
    let ws = s.state.workspace_ids()[0].clone();
    let (_, reg) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "elsewhere" })).await;
    let agent = reg["agent"]["agent_id"].as_str().unwrap().to_owned();
    let credential = reg["credential"]["credential_id"].as_str().expect("a credential at registration").to_owned();
    let revoke = praetor_store::Mutation::RevokeCredential { workspace_id: ws.clone(), credential_id: credential.clone(), at: 1, rotated: false };
    s.state.commit(praetor_store::Txn { mutations: vec![revoke], seal: vec![] }).await.unwrap();
    let got = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "credential_id": credential })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("credential_id"), "{}", got.1);
    let deactivate = praetor_store::Mutation::DeactivateAgent { workspace_id: ws, agent_id: agent.clone(), at: 1, etag: "e_elsewhere".into() };
    s.state.commit(praetor_store::Txn { mutations: vec![deactivate], seal: vec![] }).await.unwrap();
    let got = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent })).await;
    assert_error(&got, 400, "invalid_field");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("agent_id") && message.contains("not active"), "{}", got.1);
    // The refusal brought this node's copy up to date.
    assert!(!s.state.workspace(&s.state.workspace_ids()[0]).unwrap().agent(&agent).unwrap().is_active);
}

/// A session read for an answer keeps this node's copy when it is ahead of the store
/// (its own charges on their way), but not past a close made on another node.
#[tokio::test]
async fn a_heartbeat_sees_a_kill_made_elsewhere_even_with_this_nodes_copy_ahead() {
    let s = TestServer::start().await;
    let agent = s.agent("far").await;
    let id = start(&s, json!({ "agent_id": agent })).await;
    assert_eq!(act(&s, &id, json!({})).await["decision"], "allow");
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    // This node's copy runs ahead of the store (as with charges still in flight)...
    let stored = ws.live.lock().sessions.get(&id).cloned().unwrap();
    ws.live.lock().sessions.get_mut(&id).unwrap().version = stored.version + 5;
    let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &s.admin_key, &json!({})).await;
    assert_eq!(hb["status"], "active");
    assert_eq!(ws.live.lock().sessions[&id].version, stored.version + 5, "a copy ahead of the store is kept");
    // ...and another node kills the session (written to the store directly).
    let mut killed = stored.clone();
    killed.status = praetor_core::session::SessionStatus::Killed;
    killed.kill_reason = Some("killed on another node".into());
    killed.closed_at = Some(stored.created_at + 1);
    killed.version = stored.version + 1;
    killed.etag = "e_elsewhere".into();
    s.state.commit(praetor_store::Txn { mutations: vec![praetor_store::Mutation::PutSession(killed)], seal: vec![] }).await.unwrap();
    let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &s.admin_key, &json!({})).await;
    assert_eq!((hb["status"].as_str(), hb["kill_reason"].as_str()), (Some("killed"), Some("killed on another node")), "{hb}");
    assert_eq!(act(&s, &id, json!({})).await["decision"], "terminate");
}

#[tokio::test]
async fn spend_is_counted_exactly_in_decimal() {
    let s = TestServer::start().await;
    let agent = s.agent("buyer").await;
    let usd = start(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "USD": 10000 } } })).await;
    let verdicts: Vec<Value> = [
        act(&s, &usd, json!({ "amount": 4000, "currency": "USD" })).await,
        act(&s, &usd, json!({ "amount": "4000", "currency": "USD" })).await,
        act(&s, &usd, json!({ "amount": 4000, "currency": "USD" })).await,
    ].into_iter().map(|a| a["decision"].clone()).collect();
    assert_eq!(verdicts, [json!("allow"), json!("allow"), json!("terminate")]);
    // A policy sees `metadata.currency` as sent: a spend it saw as not `USD` is not
    // charged as `USD` either, but refused, naming the spelling to use.
    let review = s.policy(json!({ "name": "USD review", "policy_type": "metadata", "decision": "escalate",
        "conditions": { "rule": { "field": "currency", "op": "==", "value": "USD" } } })).await;
    let usd2 = start(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "USD": 10000 } } })).await;
    assert_eq!(act(&s, &usd2, json!({ "amount": 1, "currency": "USD" })).await["decision"], "escalate");
    let lower = act(&s, &usd2, json!({ "amount": 1, "currency": "usd" })).await;
    assert_eq!(lower["decision"], "block", "{lower}");
    assert!(lower["reasoning"].as_str().unwrap().contains("must be written `USD`"), "{lower}");
    let (_, got) = s.get(&format!("/api/v1/enforce/sessions/{usd2}"), &s.admin_key).await;
    assert!(got["session"]["consumed"]["spend"].get("USD").is_none(), "nothing was charged: {got}");
    assert_eq!(s.delete(&format!("/api/v1/enforce/policies/{review}"), &s.admin_key).await.0, StatusCode::OK);
    let eur = start(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "EUR": "0.30" } } })).await;
    for amount in [json!(0.10), json!("0.10"), json!(0.1)] {
        let a = act(&s, &eur, json!({ "amount": amount, "currency": "EUR" })).await;
        assert_eq!(a["decision"], "allow", "{a}");
    }
    let fourth = act(&s, &eur, json!({ "amount": "0.10", "currency": "EUR" })).await;
    assert_eq!(fourth["decision"], "terminate");
    assert!(fourth["reasoning"].as_str().unwrap().contains("max_spend.EUR"), "{fourth}");
    let (_, got) = s.get(&format!("/api/v1/enforce/sessions/{eur}"), &s.admin_key).await;
    assert_eq!(got["session"]["consumed"]["spend"]["EUR"], "0.3", "{got}");
    // An amount that is not a number is refused, naming the field; the session goes on.
    let other = start(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "USD": 100 } } })).await;
    let bad = act(&s, &other, json!({ "amount": "twelve", "currency": "USD" })).await;
    assert_eq!(bad["decision"], "block");
    assert!(bad["reasoning"].as_str().unwrap().contains("metadata.amount"), "{bad}");
    assert_eq!(act(&s, &other, json!({ "amount": 12.5, "currency": "USD" })).await["decision"], "allow");
    // A budget in something that is not a currency code is refused at the start: no
    // action could ever be charged in it.
    for bad in ["US$", "U$DC", "€", "ＵＳＤ", "U", "USD C", "usd", " USD", "Usd"] {
        let got = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent, "budgets": { "max_spend": { bad: 5 } } })).await;
        assert_error(&got, 400, "invalid_field");
        assert!(got.1["error"]["message"].as_str().unwrap().contains(&format!("budgets.max_spend.{bad}")), "{}", got.1);
    }
    // Another spelling beside the code is not folded into it (the larger amount won),
    // nor is the code given twice.
    let merged = json!({ "agent_id": agent, "budgets": { "max_spend": { "USD": 5, "usd": 1000 } } });
    let got = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &merged).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("budgets.max_spend.usd"), "{}", got.1);
    let twice = format!(r#"{{"agent_id": "{agent}", "budgets": {{"max_spend": {{"USD": 5, "USD": 1000}}}}}}"#);
    let got = s.post_raw("/api/v1/enforce/sessions/start", &s.admin_key, twice).await;
    assert_eq!(got.0, 400, "{}", got.1);
    assert!(got.1["error"]["message"].as_str().unwrap().contains("`USD` is given twice"), "{}", got.1);
    // A token is a currency too.
    let usdc = start(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "USDC": 10 } } })).await;
    assert_eq!(act(&s, &usdc, json!({ "amount": "7.5", "currency": "USDC" })).await["decision"], "allow");
    assert_eq!(act(&s, &usdc, json!({ "amount": 3, "currency": "USDC" })).await["decision"], "terminate");
    // Tokens too.
    let tok = start(&s, json!({ "agent_id": agent, "budgets": { "max_tokens": 1000 } })).await;
    assert_eq!(act(&s, &tok, json!({ "tokens": 900 })).await["decision"], "allow");
    let over = act(&s, &tok, json!({ "tokens": 101 })).await;
    assert_eq!(over["decision"], "terminate");
    assert!(over["reasoning"].as_str().unwrap().contains("max_tokens"));
}

/// The agent picks the amounts: a token count or a spend that no sum can hold ends
/// the session as over budget, in one request or in a batch, rather than wrap round
/// to little used or panic and leave the request unanswered.
#[tokio::test]
async fn amounts_too_large_to_add_end_the_session_and_are_answered() {
    let s = TestServer::start().await;
    let agent = s.agent("greedy").await;
    let tok = start(&s, json!({ "agent_id": agent, "budgets": { "max_tokens": 100 } })).await;
    assert_eq!(act(&s, &tok, json!({ "tokens": 5 })).await["decision"], "allow");
    let wrap = act(&s, &tok, json!({ "tokens": u64::MAX })).await;
    assert_eq!(wrap["decision"], "terminate", "{wrap}");
    assert!(wrap["reasoning"].as_str().unwrap().contains("max_tokens"), "{wrap}");
    let (_, got) = s.get(&format!("/api/v1/enforce/sessions/{tok}"), &s.admin_key).await;
    assert_eq!((&got["session"]["status"], &got["session"]["consumed"]["tokens"]), (&json!("terminated"), &json!(5)), "{got}");
    let usd = start(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "USD": 5000 } } })).await;
    assert_eq!(act(&s, &usd, json!({ "amount": 1, "currency": "USD" })).await["decision"], "allow");
    let (status, batch) = s
        .post("/api/v1/enforce/batch", &s.admin_key, &json!({ "actions": [
            { "action_type": "tool.call", "session_id": usd, "metadata": { "amount": "79228162514264337593543950335", "currency": "USD" } },
        ] }))
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["results"][0]["decision"], "terminate", "{batch}");
    // A currency a spend budget does not name is refused (it once went unlimited).
    let other = start(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "USD": 5000 } } })).await;
    let a = act(&s, &other, json!({ "amount": 1, "currency": "EUR" })).await;
    assert_eq!(a["decision"], "block", "{a}");
    assert!(a["reasoning"].as_str().unwrap().contains("metadata.currency"), "{a}");
    // Without a spend budget, sums saturate rather than overflow.
    let eur = start(&s, json!({ "agent_id": agent, "budgets": { "max_actions": 100 } })).await;
    for _ in 0..2 {
        let a = act(&s, &eur, json!({ "amount": "79228162514264337593543950335", "currency": "EUR" })).await;
        assert_eq!(a["decision"], "allow", "{a}");
    }
}

#[tokio::test]
async fn silent_sessions_expire_on_time() {
    let s = TestServer::start().await;
    let agent = s.agent("sleeper").await;
    let id = start(&s, json!({ "agent_id": agent, "budgets": { "ttl_seconds": 2 } })).await;
    s.clock.advance(1_900);
    praetor_server::sessions::sweep(&s.state).await;
    let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &s.admin_key, &json!({})).await;
    assert_eq!(hb["status"], "active");
    s.clock.advance(200);
    praetor_server::sessions::sweep(&s.state).await;
    let (_, got) = s.get(&format!("/api/v1/enforce/sessions/{id}"), &s.admin_key).await;
    assert_eq!(got["session"]["status"], "expired", "the sweeper expired it without any request");
    assert!(vault_kinds(&s).await.iter().any(|e| e["kind"] == "session.expired" && e["session_id"] == json!(id)));
    let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &s.admin_key, &json!({})).await;
    assert_eq!(hb["status"], "expired");
    assert_eq!(act(&s, &id, json!({})).await["decision"], "terminate");
    // Expiry also holds between sweeps: the heartbeat itself notices.
    let quick = start(&s, json!({ "agent_id": agent, "budgets": { "ttl_seconds": 1 } })).await;
    s.clock.advance(1_000);
    let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{quick}/heartbeat"), &s.admin_key, &json!({})).await;
    assert_eq!(hb["status"], "expired");
}

/// Is the session in the server's memory (not only in the store)? Its history and read
/// time go with it.
fn in_memory(s: &TestServer, id: &str) -> bool {
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    let live = ws.live.lock();
    let held = live.sessions.contains_key(id);
    assert!(held || !live.session_history.contains_key(id), "the history of a forgotten session is still held");
    assert!(held || !live.session_loaded_ms.contains_key(id), "the read time of a forgotten session is still held");
    held
}

#[tokio::test]
async fn closed_sessions_leave_memory_after_a_while_and_still_answer_from_the_store() {
    let s = TestServer::start().await;
    let agent = s.agent("batch").await;
    let kept = start(&s, json!({ "agent_id": agent })).await;
    let done = start(&s, json!({ "agent_id": agent })).await;
    assert_eq!(act(&s, &done, json!({})).await["decision"], "allow");
    let (_, ended) = s.post(&format!("/api/v1/enforce/sessions/{done}/end"), &s.admin_key, &json!({})).await;
    assert_eq!(ended["session"]["status"], "ended");
    // Within the grace period a closed session stays in memory.
    s.clock.advance(praetor_server::state::CLOSED_SESSION_GRACE_MS - 1_000);
    praetor_server::sessions::sweep(&s.state).await;
    assert!(in_memory(&s, &done));
    // After it, only the store has it; active sessions stay however old they are.
    s.clock.advance(2_000);
    praetor_server::sessions::sweep(&s.state).await;
    assert!(!in_memory(&s, &done), "a session closed over a minute ago is still held in memory");
    assert!(in_memory(&s, &kept));
    assert_eq!(act(&s, &kept, json!({})).await["decision"], "allow");
    // A request naming it reads it back and is answered as before.
    let again = act(&s, &done, json!({})).await;
    assert_eq!(again["decision"], "terminate", "{again}");
    assert_eq!(again["policies_triggered"][0]["policy_id"], "__session", "{again}");
    assert!(in_memory(&s, &done));
    // Read back, it is kept for the grace period again, then pruned again.
    praetor_server::sessions::sweep(&s.state).await;
    assert!(in_memory(&s, &done), "pruned right after a request read it back");
    s.clock.advance(praetor_server::state::CLOSED_SESSION_GRACE_MS + 1_000);
    praetor_server::sessions::sweep(&s.state).await;
    assert!(!in_memory(&s, &done));
    let (_, got) = s.get(&format!("/api/v1/enforce/sessions/{done}"), &s.admin_key).await;
    assert_eq!(got["session"]["status"], "ended");
    assert_eq!(got["session"]["consumed"]["actions"], 1, "{got}");
    let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{done}/heartbeat"), &s.admin_key, &json!({})).await;
    assert_eq!(hb["status"], "ended");
    // A request naming a closed session that is still held counts as reading it: the
    // grace period starts again from there.
    let late = start(&s, json!({ "agent_id": agent })).await;
    s.post(&format!("/api/v1/enforce/sessions/{late}/end"), &s.admin_key, &json!({})).await;
    s.clock.advance(praetor_server::state::CLOSED_SESSION_GRACE_MS - 1_000);
    assert_eq!(act(&s, &late, json!({})).await["decision"], "terminate");
    s.clock.advance(2_000);
    praetor_server::sessions::sweep(&s.state).await;
    assert!(in_memory(&s, &late), "forgotten though a request named it a second ago");
    s.clock.advance(praetor_server::state::CLOSED_SESSION_GRACE_MS);
    praetor_server::sessions::sweep(&s.state).await;
    assert!(!in_memory(&s, &late));
}

#[tokio::test]
async fn the_kill_switch_stops_the_next_action() {
    let s = TestServer::start().await;
    let agent = s.agent("rogue").await;
    let id = start(&s, json!({ "agent_id": agent })).await;
    assert_eq!(act(&s, &id, json!({})).await["decision"], "allow");
    let (status, killed) = s.post(&format!("/api/v1/enforce/sessions/{id}/kill"), &s.admin_key, &json!({ "reason": "exfiltration suspected" })).await;
    assert_eq!(status, StatusCode::OK, "{killed}");
    assert_eq!(killed["session"]["status"], "killed");
    let next = act(&s, &id, json!({})).await;
    assert_eq!(next["decision"], "terminate");
    assert!(next["reasoning"].as_str().unwrap().contains("exfiltration suspected"));
    let (_, hb) = s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &s.admin_key, &json!({})).await;
    assert_eq!((hb["status"].as_str(), hb["kill_reason"].as_str()), (Some("killed"), Some("exfiltration suspected")));
    let killed_event = vault_kinds(&s).await.into_iter().find(|e| e["kind"] == "session.killed").unwrap();
    assert_eq!(killed_event["reason"], "exfiltration suspected");
    assert!(killed_event["actor"].as_str().unwrap().starts_with("key_"), "who did it is sealed");
    // Only administrators kill; agent keys cannot.
    let agent_key = s.key(&["agent"], None).await;
    let other = start(&s, json!({ "agent_id": agent })).await;
    assert_error(&s.post(&format!("/api/v1/enforce/sessions/{other}/kill"), &agent_key, &json!({})).await, 403, "insufficient_scope");
    // Ending is the agent's own close; an ended session stays ended.
    let (_, ended) = s.post(&format!("/api/v1/enforce/sessions/{other}/end"), &agent_key, &json!({})).await;
    assert_eq!(ended["session"]["status"], "ended");
    assert_eq!(act(&s, &other, json!({})).await["decision"], "terminate");
    let (_, listed) = s.get("/api/v1/enforce/sessions?status=killed", &s.admin_key).await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn revoking_a_credential_kills_every_live_session_of_its_agent() {
    let s = TestServer::start().await;
    let (_, reg) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "leaky" })).await;
    let agent = reg["agent"]["agent_id"].as_str().unwrap().to_owned();
    let cred = reg["credential"]["credential_id"].as_str().unwrap().to_owned();
    let one = start(&s, json!({ "agent_id": null, "credential_id": cred })).await;
    let two = start(&s, json!({ "agent_id": agent })).await;
    let bystander = start(&s, json!({ "agent_id": s.agent("bystander").await })).await;
    let (status, answer) = s.post(&format!("/api/v1/enforce/credentials/{cred}/revoke"), &s.admin_key, &json!({ "reason": "key leaked" })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["credential"]["status"], "revoked");
    let killed: HashSet<&str> = answer["killed_sessions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(killed, HashSet::from([one.as_str(), two.as_str()]));
    for id in [&one, &two] {
        assert_eq!(act(&s, id, json!({})).await["decision"], "terminate");
    }
    assert_eq!(act(&s, &bystander, json!({})).await["decision"], "allow");
    // A revoked credential cannot open a new session.
    assert_error(&s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "credential_id": cred })).await, 400, "invalid_field");
    let kinds = vault_kinds(&s).await;
    assert!(kinds.iter().any(|e| e["kind"] == "credential.revoked" && e["reason"] == "key leaked"));
    assert_eq!(kinds.iter().filter(|e| e["kind"] == "session.killed").count(), 2);
}

#[tokio::test]
async fn revoking_an_agent_deactivates_it_everywhere() {
    let s = TestServer::start().await;
    let agent = s.agent("fired").await;
    let id = start(&s, json!({ "agent_id": agent })).await;
    let (status, answer) = s.post(&format!("/api/v1/enforce/agents/{agent}/revoke"), &s.admin_key, &json!({ "reason": "decommissioned" })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["agent"]["is_active"], false);
    assert_eq!(answer["revoked_credentials"].as_array().unwrap().len(), 1);
    assert_eq!(answer["killed_sessions"], json!([id]));
    assert_eq!(act(&s, &id, json!({})).await["decision"], "terminate", "its live session is over");
    let plain = s.intercept(json!({ "action_type": "x", "agent_id": agent })).await;
    assert_eq!(plain["decision"], "block");
    assert_eq!(plain["identity"]["check"], "agent_deactivated");
    assert_error(&s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent })).await, 400, "invalid_field");
}

#[tokio::test]
async fn session_input_and_identity_are_checked() {
    let s = TestServer::start().await;
    let a = s.agent("a").await;
    let b = s.agent("b").await;
    assert_error(&s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": null })).await, 400, "invalid_field");
    let got = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": a, "budgets": { "max_action": 3 } })).await;
    assert_error(&got, 400, "unknown_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("budgets"), "{}", got.1);
    let got = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": a, "budgets": { "max_spend": { "USD": "lots" } } })).await;
    assert_error(&got, 400, "invalid_field");
    assert_error(&s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": "agt_nobody" })).await, 404, "not_found");
    let id = start(&s, json!({ "agent_id": a })).await;
    let wrong = s.intercept(json!({ "action_type": "x", "agent_id": b, "session_id": id })).await;
    assert_eq!(wrong["identity"]["check"], "session_agent_mismatch");
    let unknown = s.intercept(json!({ "action_type": "x", "session_id": "sess_missing" })).await;
    assert_eq!(unknown["identity"]["check"], "unknown_session");
    assert_error(&s.get("/api/v1/enforce/sessions/sess_missing", &s.admin_key).await, 404, "not_found");
    // A key bound to agent B cannot see or drive agent A's session.
    let bound = s.key(&["agent"], Some(&b)).await;
    assert_error(&s.post(&format!("/api/v1/enforce/sessions/{id}/heartbeat"), &bound, &json!({})).await, 404, "not_found");
    // The other workspace cannot see it at all.
    let (_, other) = praetor_server::bootstrap::create_workspace(&s.state, "other").await.unwrap();
    assert_error(&s.get(&format!("/api/v1/enforce/sessions/{id}"), &other).await, 404, "not_found");
}

#[tokio::test]
async fn sessions_survive_a_restart_of_the_state() {
    let s = TestServer::start().await;
    let agent = s.agent("persistent").await;
    let id = start(&s, json!({ "agent_id": agent, "budgets": { "max_actions": 2 } })).await;
    assert_eq!(act(&s, &id, json!({})).await["decision"], "allow");
    // Reload everything from the store, as a restart would.
    let snap = s.state.store.snapshot().await.unwrap();
    let stored = snap.active_sessions.iter().find(|x| x.session_id == id).expect("the session is stored as active");
    assert_eq!(stored.consumed.actions, 1);
    assert_eq!(stored.budgets.max_actions, Some(2));
}

/// Two reloads of one session may overlap (after refused commits, or a close's): the
/// one overtaken by the other is dropped rather than set the copy back to what it read
/// first.
#[tokio::test]
async fn a_session_reload_another_overtook_is_dropped() {
    let s = TestServer::start().await;
    let agent = s.agent("reloading").await;
    let id = start(&s, json!({ "agent_id": agent })).await;
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    let stored = || async { s.state.store.session_state(&ws.workspace_id, &id, 0, 10).await.unwrap() };
    let seen = ws.session_generation(&id);
    assert!(seen.is_some());
    let early_read = stored().await;
    // Another reload lands first (here: after the session was charged).
    assert_eq!(act(&s, &id, json!({})).await["decision"], "allow");
    let charged = stored().await;
    assert!(ws.adopt_session_unless_reloaded(&id, charged, seen, 0), "nobody reloaded it: reload");
    let after = ws.session_generation(&id);
    assert_ne!(after, seen, "a reload is a new generation");
    // The overtaken one is not taken: it would undo the charge.
    assert!(!ws.adopt_session_unless_reloaded(&id, early_read, seen, 0), "reloaded since: dropped");
    assert_eq!(ws.live.lock().sessions[&id].consumed.actions, 1, "the charge stays");
    assert_eq!(ws.session_generation(&id), after);
}

/// Another node kills a session this node holds as active: the change feed brings the
/// kill, and the next action in the session is terminated. A node's own copy that is
/// newer than the store's (its close still on the way) is not set back by the feed.
#[tokio::test]
async fn the_change_feed_brings_another_nodes_kill_and_keeps_this_nodes_newer_copy() {
    let s = TestServer::start().await;
    let agent = s.agent("followed").await;
    let id = start(&s, json!({ "agent_id": agent })).await;
    assert_eq!(act(&s, &id, json!({})).await["decision"], "allow");
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    // A second node on the same database.
    let other: std::sync::Arc<dyn praetor_store::Store> = std::sync::Arc::new(praetor_store::sqlite::SqliteStore::open(s.dir.path().join("praetor.db")).unwrap());
    let held = ws.live.lock().sessions[&id].clone();
    let write_elsewhere = |version_past: u64, status: praetor_core::session::SessionStatus, etag: &str| {
        let mut x = held.clone();
        x.status = status;
        x.version = held.version + version_past;
        x.etag = etag.into();
        if status != praetor_core::session::SessionStatus::Active {
            (x.kill_reason, x.closed_at) = (Some("killed on another node".into()), Some(held.created_at + 1));
        }
        let other = other.clone();
        async move { other.commit(praetor_store::Txn { mutations: vec![praetor_store::Mutation::PutSession(x)], seal: vec![] }).await.unwrap() }
    };
    // This node's copy is ahead of what the other node writes (its own changes on
    // their way): the feed keeps it.
    ws.live.lock().sessions.get_mut(&id).unwrap().version = held.version + 5;
    write_elsewhere(1, praetor_core::session::SessionStatus::Active, "e_other").await;
    praetor_server::follow::follow(&s.state, &ws).await.unwrap();
    assert_eq!(ws.live.lock().sessions[&id].version, held.version + 5, "a newer copy of this node's own is kept");
    ws.live.lock().sessions.get_mut(&id).unwrap().version = held.version;
    // A kill on the other node is taken.
    write_elsewhere(2, praetor_core::session::SessionStatus::Killed, "e_killed").await;
    praetor_server::follow::follow(&s.state, &ws).await.unwrap();
    let copy = ws.live.lock().sessions[&id].clone();
    assert_eq!((copy.status, copy.version), (praetor_core::session::SessionStatus::Killed, held.version + 2));
    assert_eq!(act(&s, &id, json!({})).await["decision"], "terminate");
}

/// A commit the store fails (not a refusal: the disk, the database) leaves nothing
/// behind in memory either: the session's charge and the agent's counts made while
/// evaluating are read back from the store, so neither shows an action that was
/// never recorded, and the next action is decided from the store's state.
#[tokio::test]
async fn a_failed_commit_leaves_memory_as_the_store_has_it() {
    let s = TestServer::start().await;
    let agent = s.agent("unlucky").await;
    let id = start(&s, json!({ "agent_id": agent, "budgets": { "max_actions": 10 } })).await;
    let act_with = |content: &'static str| {
        let (s, id) = (&s, id.clone());
        async move { s.post("/api/v1/enforce/intercept", &s.admin_key, &json!({ "action_type": "tool.call", "session_id": id, "action_content": content })).await }
    };
    assert_eq!(act_with("fine").await.1["decision"], "allow");
    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    db.execute_batch("CREATE TRIGGER fail_once BEFORE INSERT ON decisions WHEN NEW.content = 'boom' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;").unwrap();
    assert_error(&act_with("boom").await, 503, "store_unavailable");
    // One request's own failure is not the store's...
    let (status, health) = s.get("/healthz", "").await;
    assert_eq!((status.as_u16(), &health["status"]), (200, &json!("ok")), "{health}");
    // ...commits failing again and again are, and health says so until one succeeds,
    // so that traffic can go elsewhere.
    for _ in 0..2 {
        assert_error(&act_with("boom").await, 503, "store_unavailable");
    }
    let (status, health) = s.get("/healthz", "").await;
    assert_eq!((status.as_u16(), &health["status"]), (503, &json!("failing")), "{health}");
    assert!(health["error"]["message"].as_str().unwrap().contains("disk on fire"), "{health}");
    let (_, session) = s.get(&format!("/api/v1/enforce/sessions/{id}"), &s.admin_key).await;
    assert_eq!(session["session"]["consumed"]["actions"], 1, "three failed, none charged: {session}");
    let (_, got) = s.get(&format!("/api/v1/enforce/agents/{agent}"), &s.admin_key).await;
    assert_eq!(got["agent"]["total_actions"], 1, "{got}");
    db.execute_batch("DROP TRIGGER fail_once").unwrap();
    assert_eq!(act_with("fine again").await.1["decision"], "allow");
    let (status, health) = s.get("/healthz", "").await;
    assert_eq!((status.as_u16(), &health["status"]), (200, &json!("ok")), "{health}");
    let (_, session) = s.get(&format!("/api/v1/enforce/sessions/{id}"), &s.admin_key).await;
    assert_eq!(session["session"]["consumed"]["actions"], 2, "{session}");
}

/// Another node keeps moving the agent's session on (say, decisions it made for the
/// agent before it saw the revocation), so every guarded clean-up attempt of an agent
/// revocation is refused. The revocation still stands, in memory and in the store, and
/// says what it left; revoking the agent again finishes the clean-up.
#[tokio::test]
async fn an_agent_revocation_stands_when_its_clean_up_keeps_losing_to_other_nodes() {
    use std::sync::atomic::Ordering::SeqCst;
    let (s, store) = TestServer::start_contested().await;
    let (_, lender) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "lender", "scopes": ["pay.*"] })).await;
    let lender = lender["agent"]["agent_id"].as_str().unwrap().to_owned();
    let (_, reg) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "compromised" })).await;
    let agent = reg["agent"]["agent_id"].as_str().unwrap().to_owned();
    let cred = reg["credential"]["credential_id"].as_str().unwrap().to_owned();
    let (_, grant) = s.post("/api/v1/enforce/delegate", &s.admin_key, &json!({ "source_agent_id": lender, "target_agent_id": agent, "scopes": ["pay.*"] })).await;
    let grant = grant["grant_id"].as_str().unwrap().to_owned();
    s.policy(json!({ "name": "Review", "policy_type": "action_type", "action_types": ["deploy"], "decision": "escalate" })).await;
    let esc = s.intercept(json!({ "action_type": "deploy", "agent_id": agent })).await["escalation_id"].as_str().unwrap().to_owned();
    let session = start(&s, json!({ "agent_id": null, "credential_id": cred })).await;
    assert_eq!(act(&s, &session, json!({})).await["decision"], "allow");
    let bound_key = s.key(&["agent"], Some(&agent)).await;

    store.contest.store(true, SeqCst);
    // While the clean-up is still losing, the key bound to the agent is already refused.
    let during_clean_up = async {
        while store.contested.load(SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        s.get(&format!("/api/v1/enforce/agents/{agent}"), &bound_key).await
    };
    let (revoke_path, reason) = (format!("/api/v1/enforce/agents/{agent}/revoke"), json!({ "reason": "compromised" }));
    let revoking = s.post(&revoke_path, &s.admin_key, &reason);
    let ((status, answer), during) = tokio::join!(revoking, during_clean_up);
    store.contest.store(false, SeqCst);
    assert_error(&during, 401, "invalid_api_key");
    assert_eq!(status, StatusCode::OK, "the revocation is not lost to the clean-up: {answer}");
    assert!(store.contested.load(SeqCst) >= praetor_server::sessions::CLOSE_ATTEMPTS, "every attempt was refused");
    assert_eq!(answer["agent"]["is_active"], false, "{answer}");
    assert_eq!(answer["revoked_credentials"][0]["status"], "revoked", "{answer}");
    assert_eq!(answer["cleanup_incomplete"], true, "{answer}");
    assert_eq!(answer["cleanup_left"], json!({ "session": [session], "grant": [grant], "escalation": [esc] }), "{answer}");
    assert!(answer["cleanup_error"].as_str().is_some_and(|e| e.contains(&session)), "{answer}");
    assert_eq!((&answer["killed_sessions"], &answer["revoked_grants"]), (&json!([]), &json!([])), "{answer}");
    // The revocation stands in memory and in the store.
    let ws_id = s.state.workspace_ids()[0].clone();
    let ws = s.state.workspace(&ws_id).unwrap();
    assert!(!ws.agent(&agent).unwrap().is_active);
    assert!(ws.credentials.read()[&cred].revoked_at.is_some());
    let stored = s.state.store.agent_state(&ws_id, &agent, 0, 10).await.unwrap().unwrap();
    assert!(!stored.agent.is_active);
    assert!(stored.credentials.iter().all(|c| c.revoked_at.is_some()), "{:?}", stored.credentials);
    // Its later intercepts are refused, outside its session and in it, and it starts no other.
    let plain = s.intercept(json!({ "action_type": "x", "agent_id": agent })).await;
    assert_eq!((plain["decision"].as_str(), plain["identity"]["check"].as_str()), (Some("block"), Some("agent_deactivated")), "{plain}");
    let pay = s.intercept(json!({ "action_type": "pay.send", "agent_id": agent, "grant_id": grant })).await;
    assert_eq!(pay["decision"], "block", "{pay}");
    assert_ne!(act(&s, &session, json!({})).await["decision"], "allow");
    assert_error(&s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent })).await, 400, "invalid_field");

    // Revoking it again finishes the clean-up.
    let (status, again) = s.post(&format!("/api/v1/enforce/agents/{agent}/revoke"), &s.admin_key, &json!({ "reason": "compromised" })).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["cleanup_incomplete"], false, "{again}");
    assert_eq!(again["revoked_credentials"], json!([]), "the first revoked it: {again}");
    assert_eq!(again["was_active"], false, "{again}");
    assert!(again.get("cleanup_left").is_none(), "{again}");
    assert_eq!((&again["killed_sessions"], &again["revoked_grants"]), (&json!([session]), &json!([grant])), "{again}");
    let object = |kind, id| {
        let (store, ws_id) = (s.state.store.clone(), ws_id.clone());
        async move { store.get_object(&ws_id, kind, id).await.unwrap().unwrap().status }
    };
    assert_eq!(object("grant", &grant).await, "revoked");
    assert_eq!(object("escalation", &esc).await, "expired");
    assert_eq!(s.state.store.get_session(&ws_id, &session).await.unwrap().unwrap().status.as_str(), "killed");
    assert_eq!(act(&s, &session, json!({})).await["decision"], "terminate");
    // The vault holds both revokes, the second saying it found the agent inactive and
    // revoked nothing more; the credential's revocation once; and each thing the
    // clean-up did once, whichever revoke did it.
    let sealed = vault_kinds(&s).await;
    let of = |kind: &str, field: &str, id: &str| -> Vec<Value> { sealed.iter().filter(|e| e["kind"] == kind && e[field] == json!(id)).cloned().collect() };
    let count = |kind: &str, field: &str, id: &str| of(kind, field, id).len();
    let revokes = of("agent.revoked", "agent_id", &agent);
    assert_eq!(revokes.len(), 2, "{sealed:?}");
    assert_eq!((&revokes[0]["was_active"], &revokes[0]["revoked_credentials"]), (&json!(true), &json!([cred])), "{revokes:?}");
    assert_eq!((&revokes[1]["was_active"], &revokes[1]["revoked_credentials"]), (&json!(false), &json!([])), "{revokes:?}");
    assert_eq!(revokes[0]["revoked_keys"].as_array().map(Vec::len), Some(1), "the bound key: {revokes:?}");
    assert_eq!(revokes[1]["revoked_keys"], json!([]), "{revokes:?}");
    assert_eq!(count("credential.revoked", "credential_id", &cred), 1);
    assert_eq!(count("grant.revoked", "grant_id", &grant), 1);
    assert_eq!(count("session.killed", "session_id", &session), 1);
    assert_eq!(count("escalation.expired", "escalation_id", &esc), 1, "{sealed:?}");
}

/// As above, for a credential: its revocation stands while the kills keep losing, and
/// revoking it again kills the session.
#[tokio::test]
async fn a_credential_revocation_stands_when_its_kills_keep_losing_to_other_nodes() {
    use std::sync::atomic::Ordering::SeqCst;
    let (s, store) = TestServer::start_contested().await;
    let (_, reg) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "leaky" })).await;
    let agent = reg["agent"]["agent_id"].as_str().unwrap().to_owned();
    let cred = reg["credential"]["credential_id"].as_str().unwrap().to_owned();
    let session = start(&s, json!({ "agent_id": null, "credential_id": cred })).await;
    s.policy(json!({ "name": "Review", "policy_type": "action_type", "action_types": ["deploy"], "decision": "escalate" })).await;
    let deploy = json!({ "action_type": "deploy", "agent_id": null, "session_id": session });
    let esc = s.intercept(deploy.clone()).await["escalation_id"].as_str().unwrap().to_owned();
    // A second one is approved before the revocation, not yet used.
    let approver = s.key(&["approvals"], None).await;
    let approved = s.intercept(json!({ "action_type": "deploy", "agent_id": null, "session_id": session, "metadata": { "n": 2 } })).await;
    let approved = approved["escalation_id"].as_str().unwrap().to_owned();
    let (code, resolved) = s.post(&format!("/api/v1/enforce/escalations/{approved}/resolve"), &approver, &json!({ "resolution": "approved" })).await;
    assert_eq!(code, StatusCode::OK, "{resolved}");

    store.contest.store(true, SeqCst);
    let (status, answer) = s.post(&format!("/api/v1/enforce/credentials/{cred}/revoke"), &s.admin_key, &json!({ "reason": "key leaked" })).await;
    store.contest.store(false, SeqCst);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["credential"]["status"], "revoked", "{answer}");
    assert_eq!(answer["cleanup_incomplete"], true, "{answer}");
    let mut left_escalations: Vec<&str> = answer["cleanup_left"]["escalation"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    left_escalations.sort_unstable();
    let mut both = [esc.as_str(), approved.as_str()];
    both.sort_unstable();
    assert_eq!((left_escalations, &answer["cleanup_left"]["session"]), (both.to_vec(), &json!([session])), "{answer}");
    assert_eq!(answer["killed_sessions"], json!([]), "{answer}");
    let ws_id = s.state.workspace_ids()[0].clone();
    let stored = s.state.store.agent_state(&ws_id, &agent, 0, 10).await.unwrap().unwrap();
    assert!(stored.credentials.iter().all(|c| c.revoked_at.is_some()), "{:?}", stored.credentials);
    assert!(s.state.workspace(&ws_id).unwrap().credentials.read()[&cred].revoked_at.is_some());
    assert_error(&s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "credential_id": cred })).await, 400, "invalid_field");
    // The session the kill left acts no more: it was started with the revoked credential.
    let left = act(&s, &session, json!({})).await;
    assert_eq!((left["decision"].as_str(), left["identity"]["check"].as_str()), (Some("block"), Some("credential_revoked")), "{left}");
    // Nor does its escalation: it reads expired, and approving it is refused.
    for id in [&esc, &approved] {
        let (_, waiting) = s.get(&format!("/api/v1/enforce/escalations/{id}/status"), &s.admin_key).await;
        assert_eq!((&waiting["status"], &waiting["decision"]), (&json!("expired"), &json!("block")), "{waiting}");
    }
    let approval = s.post(&format!("/api/v1/enforce/escalations/{esc}/resolve"), &approver, &json!({ "resolution": "approved" })).await;
    assert_error(&approval, 409, "conflict");
    assert!(approval.1["error"]["message"].as_str().unwrap().contains("which is revoked"), "{}", approval.1);
    // The sweeper settles the approved one in the store too.
    let stored_status = |id: String| {
        let (store, ws_id) = (s.state.store.clone(), s.state.workspace_ids()[0].clone());
        async move { store.get_object(&ws_id, "escalation", &id).await.unwrap().unwrap().status }
    };
    assert_eq!(stored_status(approved.clone()).await, "approved");
    praetor_server::sessions::sweep(&s.state).await;
    assert_eq!(stored_status(approved.clone()).await, "expired");

    let (status, again) = s.post(&format!("/api/v1/enforce/credentials/{cred}/revoke"), &s.admin_key, &json!({ "reason": "key leaked" })).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["cleanup_incomplete"], false, "{again}");
    assert_eq!(again["killed_sessions"], json!([session]), "{again}");
    assert_eq!(act(&s, &session, json!({})).await["decision"], "terminate");
    // Both revokes are sealed; the second found the credential revoked already.
    let sealed = vault_kinds(&s).await;
    let revokes: Vec<&Value> = sealed.iter().filter(|e| e["kind"] == "credential.revoked" && e["credential_id"] == json!(cred)).collect();
    assert_eq!(revokes.len(), 2, "{sealed:?}");
    assert_eq!((revokes[0]["already_revoked_at"].is_null(), revokes[1]["already_revoked_at"].is_string()), (true, true), "{revokes:?}");
    assert_eq!(sealed.iter().filter(|e| e["kind"] == "session.killed" && e["session_id"] == json!(session)).count(), 1, "{sealed:?}");
}

/// Rotation is hygiene, not a compromise: a session started with the old credential
/// goes on. Revoking the old credential afterwards kills it.
#[tokio::test]
async fn a_rotated_credentials_sessions_go_on_until_it_is_revoked() {
    let s = TestServer::start().await;
    let (_, reg) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "rotating" })).await;
    let cred = reg["credential"]["credential_id"].as_str().unwrap().to_owned();
    let session = start(&s, json!({ "agent_id": null, "credential_id": cred })).await;
    let (status, rotated) = s.post(&format!("/api/v1/enforce/credentials/{cred}/rotate"), &s.admin_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(act(&s, &session, json!({})).await["decision"], "allow");
    let (status, revoked) = s.post(&format!("/api/v1/enforce/credentials/{cred}/revoke"), &s.admin_key, &json!({ "reason": "leaked" })).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["killed_sessions"], json!([session]), "{revoked}");
    assert_eq!(act(&s, &session, json!({})).await["decision"], "terminate");
    // The rotation revoked it already: the revoke is sealed, with its reason, saying so.
    let sealed = vault_kinds(&s).await;
    let revokes: Vec<&Value> = sealed.iter().filter(|e| e["kind"] == "credential.revoked").collect();
    assert_eq!(revokes.len(), 1, "{sealed:?}");
    assert_eq!(revokes[0]["reason"], "leaked");
    assert!(revokes[0]["already_revoked_at"].is_string(), "{revokes:?}");
    assert_eq!(revokes[0]["was_rotated"], true, "{revokes:?}");
    assert_eq!(sealed.iter().filter(|e| e["kind"] == "session.killed" && e["session_id"] == json!(session)).count(), 1, "{sealed:?}");
    // Revoking the agent revokes, and answers, only the credential still active.
    let agent = reg["agent"]["agent_id"].as_str().unwrap();
    let (status, gone) = s.post(&format!("/api/v1/enforce/agents/{agent}/revoke"), &s.admin_key, &json!({ "reason": "retired" })).await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    let listed: Vec<&Value> = gone["revoked_credentials"].as_array().unwrap().iter().map(|c| &c["credential_id"]).collect();
    assert_eq!(listed, [&rotated["credential"]["credential_id"]], "{gone}");
}

/// Revoking an agent revokes the credential it rotated too (as it ends every session of
/// the agent): the answer and the vault name both credentials, the rotated one saying
/// so.
#[tokio::test]
async fn revoking_an_agent_ends_its_rotated_credentials_sessions() {
    let s = TestServer::start().await;
    let (_, reg) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "rotated-then-revoked" })).await;
    let (agent, old) = (reg["agent"]["agent_id"].as_str().unwrap(), reg["credential"]["credential_id"].as_str().unwrap());
    let session = start(&s, json!({ "agent_id": null, "credential_id": old })).await;
    let (_, rotated) = s.post(&format!("/api/v1/enforce/credentials/{old}/rotate"), &s.admin_key, &json!({})).await;
    let new = rotated["credential"]["credential_id"].as_str().unwrap();
    let (status, gone) = s.post(&format!("/api/v1/enforce/agents/{agent}/revoke"), &s.admin_key, &json!({ "reason": "retired" })).await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    let mut listed: Vec<&str> = gone["revoked_credentials"].as_array().unwrap().iter().map(|c| c["credential_id"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut both = [old, new];
    both.sort_unstable();
    assert_eq!(listed, both, "{gone}");
    assert!(gone["revoked_credentials"].as_array().unwrap().iter().all(|c| c["rotated"] == false), "{gone}");
    assert_eq!(act(&s, &session, json!({})).await["decision"], "terminate");
    let sealed = vault_kinds(&s).await;
    let agent_revoked: Vec<&Value> = sealed.iter().filter(|e| e["kind"] == "agent.revoked").collect();
    assert_eq!(agent_revoked[0]["revoked_credentials"].as_array().map(Vec::len), Some(2), "{agent_revoked:?}");
    let of_old: Vec<&Value> = sealed.iter().filter(|e| e["kind"] == "credential.revoked" && e["credential_id"] == json!(old)).collect();
    assert_eq!((of_old.len(), &of_old[0]["was_rotated"]), (1, &json!(true)), "{of_old:?}");
}

/// A rotation commits only while the agent and the credential are active in the store:
/// an agent revoked on another node a moment ago gets no new credential here.
#[tokio::test]
async fn a_rotation_loses_to_a_revocation_on_another_node() {
    let s = TestServer::start().await;
    let (_, reg) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "elsewhere" })).await;
    let (agent, cred) = (reg["agent"]["agent_id"].as_str().unwrap(), reg["credential"]["credential_id"].as_str().unwrap());
    let ws_id = s.state.workspace_ids()[0].clone();
    let elsewhere = praetor_store::Mutation::DeactivateAgent { workspace_id: ws_id.clone(), agent_id: agent.to_owned(), at: crate::harness::T0, etag: "e_elsewhere".into() };
    s.state.store.commit(praetor_store::Txn { mutations: vec![elsewhere], seal: vec![] }).await.unwrap();
    assert_error(&s.post(&format!("/api/v1/enforce/credentials/{cred}/rotate"), &s.admin_key, &json!({})).await, 409, "conflict");
    let stored = s.state.store.agent_state(&ws_id, agent, i64::MAX, 0).await.unwrap().unwrap();
    assert_eq!(stored.credentials.len(), 1, "no credential was added: {:?}", stored.credentials);
}
