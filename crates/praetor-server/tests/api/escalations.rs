//! Escalations whose agent or session is gone: revoking or deactivating the agent, or
//! closing the session, settles them, so an approval can never let the escalated
//! action run afterwards (the SDK's `Decision.wait()` goes ahead on `allow` without
//! asking again). And an approval is bound to the session it was asked for in.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error};

/// A server with a policy that escalates `wire.*` over 100, and an approvals key.
async fn setup() -> (TestServer, String) {
    let s = TestServer::start().await;
    s.policy(json!({ "name": "big", "policy_type": "metadata", "action_types": ["wire.*"], "decision": "escalate",
                     "conditions": { "rule": { "field": "amount", "op": ">", "value": 100 } } })).await;
    let approver = s.key(&["approvals"], None).await;
    (s, approver)
}

fn wire(agent: &str, session: Option<&str>) -> Value {
    json!({ "action_type": "wire.send", "agent_id": agent, "session_id": session, "metadata": { "amount": 500, "currency": "EUR" } })
}

/// Escalate `wire.send` and return the escalation's id.
async fn escalate(s: &TestServer, agent: &str, session: Option<&str>) -> String {
    let answer = s.intercept(wire(agent, session)).await;
    assert_eq!(answer["decision"], "escalate", "{answer}");
    answer["escalation_id"].as_str().unwrap().to_owned()
}

async fn approve(s: &TestServer, approver: &str, esc: &str) -> (StatusCode, Value) {
    s.post(&format!("/api/v1/enforce/escalations/{esc}/resolve"), approver, &json!({ "resolution": "approved" })).await
}

async fn start_session(s: &TestServer, body: Value) -> String {
    let (status, started) = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &body).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    started["session_id"].as_str().unwrap().to_owned()
}

/// The escalation was settled (and sealed, with a reason containing `why`) by the
/// change itself: it reads `expired` and `block`, and approving it is refused.
async fn assert_settled(s: &TestServer, approver: &str, esc: &str, why: &str) {
    let sealed_entries = crate::harness::vault_entries(s).await;
    let sealed = sealed_entries.iter().any(|e| {
        e["kind"] == "escalation.expired" && e["escalation_id"] == json!(esc) && e["reason"].as_str().is_some_and(|r| r.contains(why))
    });
    assert!(sealed, "the settlement of {esc} is sealed with its reason");
    let (_, st) = s.get(&format!("/api/v1/enforce/escalations/{esc}/status"), approver).await;
    assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("expired"), Some("block")), "{st}");
    assert!(st["resolution_reason"].as_str().is_some_and(|r| r.contains(why)), "{st}");
    let refused = approve(s, approver, esc).await;
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains(why), "{}", refused.1);
}

#[tokio::test]
async fn revoking_or_deactivating_the_agent_settles_its_escalations() {
    let (s, approver) = setup().await;
    // Pending when the agent is revoked.
    let revoked = s.agent("revoked").await;
    let pending = escalate(&s, &revoked, None).await;
    let (status, body) = s.post(&format!("/api/v1/enforce/agents/{revoked}/revoke"), &s.admin_key, &json!({ "reason": "compromised" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_settled(&s, &approver, &pending, "revoked").await;
    // Approved (and not yet used) when the agent is deactivated.
    let deactivated = s.agent("deactivated").await;
    let approved = escalate(&s, &deactivated, None).await;
    assert_eq!(approve(&s, &approver, &approved).await.0, StatusCode::OK);
    let (_, st) = s.get(&format!("/api/v1/enforce/escalations/{approved}/status"), &approver).await;
    assert_eq!(st["decision"], "allow", "{st}");
    let (status, body) = s.post(&format!("/api/v1/enforce/agents/{deactivated}/deactivate"), &s.admin_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_settled(&s, &approver, &approved, "deactivated").await;
    let (_, listed) = s.get("/api/v1/enforce/escalations?status=expired", &approver).await;
    assert_eq!(listed["total"], 2, "{listed}");
}

/// A deactivation is not lost to changes other nodes keep making to the agent's
/// escalations (an approval, a use): it commits first, on its own, and the
/// escalations follow. While every attempt at them loses, the agent is deactivated all
/// the same, the answer names what is left, an approval of what is left cannot let it
/// run, and deactivating again finishes it.
#[tokio::test]
async fn a_deactivation_stands_while_settling_its_escalations_keeps_losing() {
    use std::sync::atomic::Ordering::SeqCst;
    let (s, store) = TestServer::start_contested().await;
    s.policy(json!({ "name": "big", "policy_type": "metadata", "action_types": ["wire.*"], "decision": "escalate",
                     "conditions": { "rule": { "field": "amount", "op": ">", "value": 100 } } })).await;
    let approver = s.key(&["approvals"], None).await;
    let agent = s.agent("contested").await;
    let first = escalate(&s, &agent, None).await;
    let second = s.intercept(json!({ "action_type": "wire.send", "agent_id": agent, "metadata": { "amount": 700, "currency": "EUR" } })).await;
    let second = second["escalation_id"].as_str().unwrap().to_owned();

    store.contest_objects.store(true, SeqCst);
    let (status, answer) = s.post(&format!("/api/v1/enforce/agents/{agent}/deactivate"), &s.admin_key, &json!({})).await;
    store.contest_objects.store(false, SeqCst);
    assert_eq!(status, StatusCode::OK, "the deactivation is not lost to its escalations: {answer}");
    assert!(store.contested.load(SeqCst) >= praetor_server::authority::UPDATE_ATTEMPTS, "every attempt was refused");
    assert_eq!(answer["agent"]["is_active"], false, "{answer}");
    assert_eq!(answer["cleanup_incomplete"], true, "{answer}");
    let mut left: Vec<String> = serde_json::from_value(answer["cleanup_left"]["escalation"].clone()).unwrap();
    left.sort();
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(left, both, "{answer}");
    assert!(answer["cleanup_error"].as_str().is_some_and(|e| e.contains("escalation")), "{answer}");
    let ws_id = s.state.workspace_ids()[0].clone();
    assert!(!s.state.store.agent_state(&ws_id, &agent, 0, 10).await.unwrap().unwrap().agent.is_active, "deactivated in the store");
    let blocked = s.intercept(json!({ "action_type": "read", "agent_id": agent })).await;
    assert_eq!(blocked["identity"]["check"], "agent_deactivated", "{blocked}");
    // What was left can no longer be approved into an `allow`.
    let refused = approve(&s, &approver, &first).await;
    assert_error(&refused, 409, "conflict");
    let (_, st) = s.get(&format!("/api/v1/enforce/escalations/{first}/status"), &approver).await;
    assert_eq!(st["decision"], "block", "{st}");

    // Deactivating again settles the rest.
    let stored = |id: String| {
        let (store, ws_id) = (s.state.store.clone(), ws_id.clone());
        async move { store.get_object(&ws_id, "escalation", &id).await.unwrap().unwrap().status }
    };
    assert_eq!(stored(second.clone()).await, "pending", "left by the first deactivation");
    let (status, again) = s.post(&format!("/api/v1/enforce/agents/{agent}/deactivate"), &s.admin_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["cleanup_incomplete"], false, "{again}");
    assert!(again.get("cleanup_left").is_none(), "{again}");
    assert_eq!(stored(second.clone()).await, "expired");
    assert_settled(&s, &approver, &second, "deactivated").await;
}

#[tokio::test]
async fn closing_the_session_settles_its_escalations() {
    let (s, approver) = setup().await;
    let agent = s.agent("runner").await;
    // Killed.
    let killed = start_session(&s, json!({ "agent_id": agent })).await;
    let esc = escalate(&s, &agent, Some(&killed)).await;
    s.post(&format!("/api/v1/enforce/sessions/{killed}/kill"), &s.admin_key, &json!({ "reason": "kill switch" })).await;
    assert_settled(&s, &approver, &esc, "killed").await;
    // Ended by the agent, after the approval.
    let ended = start_session(&s, json!({ "agent_id": agent })).await;
    let esc = escalate(&s, &agent, Some(&ended)).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    s.post(&format!("/api/v1/enforce/sessions/{ended}/end"), &s.admin_key, &json!({})).await;
    assert_settled(&s, &approver, &esc, "ended").await;
    // Terminated by its budget.
    let spent = start_session(&s, json!({ "agent_id": agent, "budgets": { "max_actions": 1 } })).await;
    let esc = escalate(&s, &agent, Some(&spent)).await;
    assert_eq!(s.intercept(json!({ "action_type": "read", "agent_id": agent, "session_id": spent })).await["decision"], "allow");
    assert_eq!(s.intercept(json!({ "action_type": "read", "agent_id": agent, "session_id": spent })).await["decision"], "terminate");
    assert_settled(&s, &approver, &esc, "terminated").await;
    // Expired.
    let timed = start_session(&s, json!({ "agent_id": agent, "budgets": { "ttl_seconds": 10 } })).await;
    let esc = escalate(&s, &agent, Some(&timed)).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    s.clock.advance(11_000);
    praetor_server::sessions::sweep(&s.state).await;
    assert_settled(&s, &approver, &esc, "expired").await;
    // Killed by the revocation of the credential it was started with.
    let (_, reg) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "keyed" })).await;
    let keyed = reg["agent"]["agent_id"].as_str().unwrap().to_owned();
    let cred = reg["credential"]["credential_id"].as_str().unwrap().to_owned();
    let with_cred = start_session(&s, json!({ "credential_id": cred })).await;
    let esc = escalate(&s, &keyed, Some(&with_cred)).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    s.post(&format!("/api/v1/enforce/credentials/{cred}/revoke"), &s.admin_key, &json!({ "reason": "leaked" })).await;
    assert_settled(&s, &approver, &esc, "leaked").await;
}

#[tokio::test]
async fn an_approval_given_in_a_session_allows_the_action_in_that_session_only() {
    let (s, approver) = setup().await;
    let agent = s.agent("scoped").await;
    let session = start_session(&s, json!({ "agent_id": agent })).await;
    let other = start_session(&s, json!({ "agent_id": agent })).await;
    let esc = escalate(&s, &agent, Some(&session)).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    assert_eq!(s.intercept(wire(&agent, None)).await["decision"], "escalate", "not outside the session");
    assert_eq!(s.intercept(wire(&agent, Some(&other))).await["decision"], "escalate", "not in another session");
    let inside = s.intercept(wire(&agent, Some(&session))).await;
    assert_eq!(inside["decision"], "allow", "{inside}");
    assert_eq!(inside["approved_by"]["escalation_id"], json!(esc));
}

#[tokio::test]
async fn an_escalation_whose_agent_left_without_settling_it_still_never_allows() {
    // On several nodes a deactivation made elsewhere can reach this node before the
    // escalation it should have settled: simulated here by deactivating the agent in
    // this node's memory only, with the escalation approved and unused.
    let (s, approver) = setup().await;
    let agent = s.agent("elsewhere").await;
    let esc = escalate(&s, &agent, None).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    ws.agents.write().get_mut(&agent).unwrap().is_active = false;
    let (_, st) = s.get(&format!("/api/v1/enforce/escalations/{esc}/status"), &approver).await;
    assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("expired"), Some("block")), "checked at read time: {st}");
    assert!(st["resolution_reason"].as_str().unwrap().contains("deactivated"), "{st}");
    // The sweeper settles it for good, sealed.
    praetor_server::sessions::sweep(&s.state).await;
    let sealed_entries = crate::harness::vault_entries(&s).await;
    assert!(sealed_entries.iter().any(|e| e["kind"] == "escalation.expired" && e["escalation_id"] == json!(esc)));
    let (_, got) = s.get(&format!("/api/v1/enforce/escalations/{esc}"), &approver).await;
    assert_eq!(got["escalation"]["status"], "expired", "{got}");
}

#[tokio::test]
async fn an_escalation_whose_agent_this_node_has_not_loaded_yet_stays_open() {
    // On several nodes an escalation can reach this node (read from the store) before
    // the change feed brings its agent: simulated by removing the agent from this node's
    // memory only. That is not an agent gone: reads and resolve look it up in the store,
    // and the sweeper leaves the escalation alone.
    let (s, approver) = setup().await;
    let agent = s.agent("elsewhere").await;
    let esc = escalate(&s, &agent, None).await;
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    // Forgotten, and taken as absent by a request that named it a moment ago: the
    // escalation proves it exists, so that is not trusted either.
    let forget = |id: &str| {
        drop(ws.agents.write().remove(id));
        ws.mark_absent(id, s.state.now_ms());
    };
    forget(&agent);
    praetor_server::sessions::sweep(&s.state).await;
    forget(&agent);
    let (_, got) = s.get(&format!("/api/v1/enforce/escalations/{esc}"), &approver).await;
    assert_eq!(got["escalation"]["status"], "pending", "{got}");
    forget(&agent);
    let (_, listed) = s.get("/api/v1/enforce/escalations?status=pending", &approver).await;
    assert_eq!(listed["total"], 1, "{listed}");
    forget(&agent);
    let (_, st) = s.get(&format!("/api/v1/enforce/escalations/{esc}/status"), &approver).await;
    assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("pending"), Some("pending")), "{st}");
    forget(&agent);
    let (status, resolved) = approve(&s, &approver, &esc).await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    forget(&agent);
    let (_, st) = s.get(&format!("/api/v1/enforce/escalations/{esc}/status"), &approver).await;
    assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("approved"), Some("allow")), "{st}");
    // An agent the store holds as deactivated (as a revocation on another node leaves
    // it) still voids its escalation.
    let gone = s.agent("gone").await;
    let esc = escalate(&s, &gone, None).await;
    let deactivate = praetor_store::Mutation::DeactivateAgent { workspace_id: ws.workspace_id.clone(), agent_id: gone.clone(), at: s.state.now_ms(), etag: "etag_elsewhere".into() };
    s.state.commit(praetor_store::Txn { mutations: vec![deactivate], seal: vec![] }).await.unwrap();
    forget(&gone);
    let (_, st) = s.get(&format!("/api/v1/enforce/escalations/{esc}/status"), &approver).await;
    assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("expired"), Some("block")), "{st}");
    assert!(st["resolution_reason"].as_str().unwrap().contains("deactivated"), "{st}");
}

async fn status_of(s: &TestServer, esc: &str) -> Value {
    s.get(&format!("/api/v1/enforce/escalations/{esc}/status"), &s.admin_key).await.1
}

/// An escalated action that would take its session past a budget terminates the session
/// then, as an allowed one does: before, it was put before a person, and the approval
/// read `allow` (the SDK acts on that without asking again) with nothing charged.
#[tokio::test]
async fn an_escalation_past_a_session_budget_terminates_instead() {
    let (s, _) = setup().await;
    let agent = s.agent("runner").await;
    for budgets in [json!({ "max_actions": 1 }), json!({ "max_spend": { "EUR": 100 } })] {
        let session = start_session(&s, json!({ "agent_id": agent, "budgets": budgets })).await;
        if budgets.get("max_actions").is_some() {
            let first = s.intercept(json!({ "action_type": "read", "session_id": session })).await;
            assert_eq!(first["decision"], "allow", "{first}");
        }
        let over = s.intercept(wire(&agent, Some(&session))).await;
        assert_eq!(over["decision"], "terminate", "{budgets}: {over}");
        assert!(over["escalation_id"].is_null(), "no escalation opened: {over}");
        // The policy that escalated is still listed, and records its violation.
        let listed = over["policies_triggered"].as_array().unwrap();
        assert!(listed.iter().any(|p| p["policy_name"] == "big" || p["name"] == "big"), "{over}");
        let (_, violations) = s.get("/api/v1/violations", &s.admin_key).await;
        assert!(violations.to_string().contains(over["decision_id"].as_str().unwrap()), "{violations}");
        let (_, got) = s.get(&format!("/api/v1/enforce/sessions/{session}"), &s.admin_key).await;
        assert_eq!(got["session"]["status"], "terminated", "{got}");
    }
    // Within the budget it is escalated as before.
    let session = start_session(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "EUR": 1000 } } })).await;
    assert_eq!(s.intercept(wire(&agent, Some(&session))).await["decision"], "escalate");
}

/// An active session's consumed actions and EUR spend.
async fn consumed_eur(s: &TestServer, session: &str) -> (u64, String) {
    let (_, got) = s.get(&format!("/api/v1/enforce/sessions/{session}"), &s.admin_key).await;
    assert_eq!(got["session"]["status"], "active", "{got}");
    let consumed = &got["session"]["consumed"];
    (consumed["actions"].as_u64().unwrap(), consumed["spend"]["EUR"].as_str().unwrap_or("0").to_owned())
}

/// The SDK runs an approved action without intercepting it again, so an approval in a
/// session charges the session the action's cost, sealed with the approval; one the
/// budget cannot cover is refused; the retry an approval paid for is not charged again;
/// a rejection costs nothing.
#[tokio::test]
async fn an_approval_is_charged_to_its_session() {
    let (s, approver) = setup().await;
    let agent = s.agent("runner").await;
    let session = start_session(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "EUR": 1200 }, "max_actions": 10 } })).await;
    // Three escalations of 500 EUR, each within the budget when it is raised.
    let first = escalate(&s, &agent, Some(&session)).await;
    let second = escalate(&s, &agent, Some(&session)).await;
    let third = escalate(&s, &agent, Some(&session)).await;
    assert_eq!(consumed_eur(&s, &session).await, (0, "0".to_owned()), "raising an escalation costs nothing");

    let (code, body) = approve(&s, &approver, &first).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["escalation"]["charged_at_approval"], true, "{body}");
    assert_eq!(body["escalation"]["session_charge"], json!({ "actions": 1, "spend": { "EUR": "500" }, "tokens": 0 }), "{body}");
    assert_eq!(consumed_eur(&s, &session).await, (1, "500".to_owned()));
    assert_eq!(approve(&s, &approver, &second).await.0, StatusCode::OK);
    assert_eq!(consumed_eur(&s, &session).await, (2, "1000".to_owned()));
    assert_eq!(stored_eur(&s, &session).await, (2, "1000".to_owned()), "the store holds the charges");

    // 1,500 EUR would pass the budget: refused, nothing charged, still pending.
    let refused = approve(&s, &approver, &third).await;
    assert_error(&refused, 409, "conflict");
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("past its budget") && message.contains("max_spend"), "{message}");
    assert_eq!(status_of(&s, &third).await["status"], "pending");
    assert_eq!(consumed_eur(&s, &session).await, (2, "1000".to_owned()));

    // The SDK may still intercept the approved action again: allowed by the approval,
    // not charged a second time.
    let retry = s.intercept(wire(&agent, Some(&session))).await;
    assert_eq!(retry["decision"], "allow", "{retry}");
    assert_eq!(retry["approved_by"]["escalation_id"], json!(first), "{retry}");
    assert_eq!(consumed_eur(&s, &session).await, (2, "1000".to_owned()), "the approval paid for it");
    assert_eq!(stored_eur(&s, &session).await, (2, "1000".to_owned()));

    // A rejection costs nothing.
    let (code, body) = s.post(&format!("/api/v1/enforce/escalations/{third}/resolve"), &approver, &json!({ "resolution": "rejected" })).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["escalation"]["charged_at_approval"], false, "{body}");
    assert_eq!(consumed_eur(&s, &session).await, (2, "1000".to_owned()));

    // The charge is sealed with the approval.
    let sealed_entries = crate::harness::vault_entries(&s).await;
    let sealed = sealed_entries.iter().find(|e| e["kind"] == "escalation.resolved" && e["escalation_id"] == json!(first));
    let sealed = sealed.expect("the approval is sealed");
    assert_eq!(sealed["session_id"], json!(session), "{sealed}");
    assert_eq!(sealed["session_charge"]["spend"]["EUR"], "500", "{sealed}");
    assert_eq!(sealed["session_consumed"]["actions"], 1, "{sealed}");
}

/// A `borrower` agent without `wire.*`, holding a grant of it from a `lender` with these
/// budgets: the borrower and the grant.
async fn lend_wire(s: &TestServer, budgets: Value) -> (String, String) {
    let (_, lender) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "lender", "scopes": ["wire.*"] })).await;
    let (_, borrower) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "borrower", "scopes": ["report.*"] })).await;
    let borrower = borrower["agent"]["agent_id"].as_str().unwrap().to_owned();
    let body = json!({ "source_agent_id": lender["agent"]["agent_id"], "target_agent_id": borrower, "scopes": ["wire.*"], "budgets": budgets });
    let (status, g) = s.post("/api/v1/enforce/delegate", &s.admin_key, &body).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    (borrower, g["grant_id"].as_str().unwrap().to_owned())
}

/// What a grant's actions used, as `verify` shows it.
async fn grant_consumed(s: &TestServer, grant: &str) -> Value {
    s.post("/api/v1/enforce/delegate/verify", &s.admin_key, &json!({ "grant_id": grant })).await.1["grant"]["consumed"].clone()
}

/// An escalated action through a grant is charged to the grant when it is approved (one
/// use, and its amount), for the same reason as a session: the SDK runs it without
/// asking again. One the grant cannot cover is refused when it is raised, or its
/// approval refused; the retry an approval paid for is not charged again.
#[tokio::test]
async fn an_approval_through_a_grant_is_charged_to_the_grant() {
    let (s, approver) = setup().await;
    let (borrower, grant) = lend_wire(&s, json!({ "max_actions": 2, "max_amount": { "EUR": 1000 } })).await;
    let wire_via = |amount: u32| json!({ "action_type": "wire.send", "agent_id": borrower, "grant_id": grant, "metadata": { "amount": amount, "currency": "EUR" } });

    let big = s.intercept(wire_via(600)).await;
    assert_eq!(big["decision"], "escalate", "{big}");
    let big = big["escalation_id"].as_str().unwrap().to_owned();
    assert_eq!(grant_consumed(&s, &grant).await, json!({ "actions": 0, "recipients": 0, "rows": 0 }), "raising costs nothing");
    let (code, body) = approve(&s, &approver, &big).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["escalation"]["grant_id"], json!(grant), "{body}");
    assert_eq!(grant_consumed(&s, &grant).await, json!({ "actions": 1, "amount": { "EUR": "600" }, "recipients": 0, "rows": 0 }));

    // 601 more cannot fit in the 400 left: refused when raised, not put to a person.
    let over = s.intercept(wire_via(601)).await;
    assert_eq!(over["decision"], "block", "{over}");
    assert_eq!(over["policies_triggered"][0]["policy_id"], "__grant", "{over}");
    assert!(over["escalation_id"].is_null(), "{over}");
    // Two of 300 each fit when raised; the grant has one use left, so only one approval does.
    let first = s.intercept(wire_via(300)).await["escalation_id"].as_str().unwrap().to_owned();
    let second = s.intercept(wire_via(301)).await["escalation_id"].as_str().unwrap().to_owned();
    assert_eq!(approve(&s, &approver, &first).await.0, StatusCode::OK);
    let refused = approve(&s, &approver, &second).await;
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("max_uses"), "{}", refused.1);
    assert_eq!(status_of(&s, &second).await["status"], "pending");
    assert_eq!(grant_consumed(&s, &grant).await, json!({ "actions": 2, "amount": { "EUR": "900" }, "recipients": 0, "rows": 0 }));

    // The SDK may intercept an approved action again: allowed, not charged again.
    let retry = s.intercept(wire_via(600)).await;
    assert_eq!(retry["decision"], "allow", "{retry}");
    assert_eq!(retry["approved_by"]["escalation_id"], json!(big), "{retry}");
    assert_eq!(grant_consumed(&s, &grant).await["actions"], 2, "the approval paid for it");
    // Sealed with the approval.
    let sealed_entries = crate::harness::vault_entries(&s).await;
    let sealed = sealed_entries.iter().find(|e| e["kind"] == "escalation.resolved" && e["escalation_id"] == json!(big));
    let sealed = sealed.expect("the approval is sealed");
    assert_eq!((sealed["grant_id"].as_str(), sealed["grant_consumed"]["amount"]["EUR"].as_str()), (Some(grant.as_str()), Some("600")), "{sealed}");
}

/// A paid approval lets only its own action through the grant whose last use it took:
/// not once more, not another action, and not the same action allowed some other way
/// (breakglass over a policy that now blocks it). A retry naming another grant is
/// charged to that grant, and checked against it, as any action is.
#[tokio::test]
async fn a_paid_approval_spends_only_the_grant_it_charged_and_only_once() {
    let (s, approver) = setup().await;
    let (borrower, grant) = lend_wire(&s, json!({ "max_actions": 1 })).await;
    let wire_via = |grant: &str, amount: u32| json!({ "action_type": "wire.send", "agent_id": borrower, "grant_id": grant, "metadata": { "amount": amount, "currency": "EUR" } });
    let esc = s.intercept(wire_via(&grant, 600)).await["escalation_id"].as_str().unwrap().to_owned();
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    // The approval took the grant's one use; its own retry still runs, once, even after
    // the sweeper (which lets used-up grants leave memory) has run.
    praetor_server::sessions::sweep(&s.state).await;
    assert_eq!(s.intercept(wire_via(&grant, 600)).await["decision"], "allow");
    let again = s.intercept(wire_via(&grant, 600)).await;
    assert!(again["decision"] == "block" && again["reasoning"].as_str().unwrap().contains("max_uses"), "{again}");
    assert_eq!(s.intercept(wire_via(&grant, 50)).await["decision"], "block");
    assert_eq!(grant_consumed(&s, &grant).await["actions"], 1);

    // Breakglass over a policy that now blocks the action does not reach the used-up grant.
    let (_, other) = lend_wire(&s, json!({ "max_actions": 1 })).await;
    let esc = s.intercept(wire_via(&other, 700)).await["escalation_id"].as_str().unwrap().to_owned();
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    s.policy(json!({ "name": "freeze", "policy_type": "action_type", "action_types": ["wire.*"], "decision": "block" })).await;
    let (code, bg) = s.post("/api/v1/enforce/breakglass", &approver, &json!({ "agent_id": borrower, "justification": "outage", "severity": "critical", "duration_minutes": 30 })).await;
    assert_eq!(code, StatusCode::OK, "{bg}");
    for _ in 0..2 {
        let retry = s.intercept(wire_via(&other, 700)).await;
        assert_eq!(retry["decision"], "block", "{retry}");
        assert_eq!(retry["policies_triggered"][0]["policy_id"], "__grant", "{retry}");
    }
    assert_eq!(grant_consumed(&s, &other).await["actions"], 1, "no use past max_uses");

}

/// A grant used up before its escalation is approved, and not held by this node (as
/// on a node that let it go before the change feed brought the escalation): the
/// approval reads it from the store and says why it cannot charge it, rather than
/// asking to try again for ever.
#[tokio::test]
async fn an_approval_reads_a_grant_this_node_let_go() {
    let (s, approver) = setup().await;
    let (borrower, grant) = lend_wire(&s, json!({ "max_actions": 1 })).await;
    let via = |amount: u32| json!({ "action_type": "wire.send", "agent_id": borrower, "grant_id": grant, "metadata": { "amount": amount, "currency": "EUR" } });
    let esc = s.intercept(via(800)).await["escalation_id"].as_str().unwrap().to_owned();
    assert_eq!(s.intercept(via(50)).await["decision"], "allow", "the grant's one use");
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    ws.live.lock().authority.grants.remove(&grant);
    let refused = approve(&s, &approver, &esc).await;
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("max_uses"), "{}", refused.1);
}

/// The retry of an approval that charged one grant, naming another, is that other
/// grant's action: checked against it and charged to it.
#[tokio::test]
async fn a_retry_through_another_grant_is_that_grants_action() {
    let (s, approver) = setup().await;
    let (borrower, big) = lend_wire(&s, json!({ "max_actions": 5, "max_amount": { "EUR": 1000 } })).await;
    let (_, small) = lend_wire(&s, json!({ "max_actions": 5, "max_amount": { "EUR": 100 } })).await;
    let wire_via = |grant: &str| json!({ "action_type": "wire.send", "agent_id": borrower, "grant_id": grant, "metadata": { "amount": 600, "currency": "EUR" } });
    let esc = s.intercept(wire_via(&big)).await["escalation_id"].as_str().unwrap().to_owned();
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    let retry = s.intercept(wire_via(&small)).await;
    assert_eq!(retry["decision"], "block", "600 EUR through a grant with 100 left: {retry}");
    assert!(retry["reasoning"].as_str().unwrap().contains("max_amount.EUR"), "{retry}");
    assert_eq!(grant_consumed(&s, &small).await["actions"], 0);
    // Through a grant that can cover it, the retry runs on the approval and is charged
    // to that grant; the one the approval charged is not charged again.
    let (_, roomy) = lend_wire(&s, json!({ "max_actions": 5, "max_amount": { "EUR": 1000 } })).await;
    let retry = s.intercept(wire_via(&roomy)).await;
    assert_eq!((retry["decision"].as_str(), retry["approved_by"]["escalation_id"].as_str()), (Some("allow"), Some(esc.as_str())), "{retry}");
    assert_eq!(grant_consumed(&s, &roomy).await, json!({ "actions": 1, "amount": { "EUR": "600" }, "recipients": 0, "rows": 0 }));
    assert_eq!(grant_consumed(&s, &big).await["actions"], 1, "charged once, at the approval");
}

/// Revoking the grant an escalation was raised through voids it, approved or pending:
/// the SDK would otherwise act on an approval (`allow`) after the revocation.
#[tokio::test]
async fn revoking_the_grant_voids_the_escalations_raised_through_it() {
    let (s, approver) = setup().await;
    let (borrower, grant) = lend_wire(&s, json!({})).await;
    let wire_via = |amount: u32| json!({ "action_type": "wire.send", "agent_id": borrower, "grant_id": grant, "metadata": { "amount": amount, "currency": "EUR" } });
    let approved = s.intercept(wire_via(500)).await["escalation_id"].as_str().unwrap().to_owned();
    let pending = s.intercept(wire_via(501)).await["escalation_id"].as_str().unwrap().to_owned();
    assert_eq!(approve(&s, &approver, &approved).await.0, StatusCode::OK);
    assert_eq!(status_of(&s, &approved).await["decision"], "allow");
    let (code, body) = s.post(&format!("/api/v1/enforce/delegate/{grant}/revoke"), &s.admin_key, &json!({ "reason": "leaked" })).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let sealed_expiries = || async {
        let sealed_entries = crate::harness::vault_entries(&s).await;
        sealed_entries.iter().filter(|e| e["kind"] == "escalation.expired").count()
    };
    assert_eq!(sealed_expiries().await, 2, "the revocation settles both");
    for esc in [&approved, &pending] {
        let st = status_of(&s, esc).await;
        assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("expired"), Some("block")), "{st}");
        assert!(st["resolution_reason"].as_str().unwrap().contains("leaked"), "{st}");
    }
    let refused = approve(&s, &approver, &pending).await;
    assert_error(&refused, 409, "conflict");
    // The sweeper settles them (sealed) while the revoked grant is still held, and after
    // it has left memory a read still answers from the store.
    praetor_server::sessions::sweep(&s.state).await;
    praetor_server::sessions::sweep(&s.state).await;
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    assert!(!ws.live.lock().authority.grants.contains_key(&grant), "the revoked grant left memory");
    assert_eq!(status_of(&s, &approved).await["decision"], "block");
    assert_eq!(sealed_expiries().await, 2, "settled once");
}

/// An approval given for an action through a grant is void once the grant is revoked,
/// for decisions too: a retry that names no grant, by an agent that may act on its own,
/// is decided afresh rather than allowed on the approval (the action's hash does not
/// name the grant).
#[tokio::test]
async fn an_approval_through_a_revoked_grant_allows_no_retry() {
    let (s, approver) = setup().await;
    let (_, lender) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "lender", "scopes": ["wire.*"] })).await;
    let agent = s.agent("free").await;
    let body = json!({ "source_agent_id": lender["agent"]["agent_id"], "target_agent_id": agent, "scopes": ["wire.*"] });
    let (_, g) = s.post("/api/v1/enforce/delegate", &s.admin_key, &body).await;
    let grant = g["grant_id"].as_str().unwrap().to_owned();
    let mut via = wire(&agent, None);
    via["grant_id"] = json!(grant);
    let esc = s.intercept(via).await["escalation_id"].as_str().unwrap().to_owned();
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    // Not settled by the revocation here (as if its settlement had failed): the
    // decision itself must not take the approval.
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    ws.live.lock().authority.grants.get_mut(&grant).unwrap().revoked = true;
    let retry = s.intercept(wire(&agent, None)).await;
    assert_eq!(retry["decision"], "escalate", "decided afresh: {retry}");
    assert!(retry["approved_by"].is_null(), "{retry}");
}

/// The session's consumed actions and EUR spend as the store holds them.
async fn stored_eur(s: &TestServer, session: &str) -> (u64, String) {
    let st = s.state.store.session_state(&s.state.workspace_ids()[0], session, 0, 0).await.unwrap().unwrap();
    (st.session.consumed.actions, st.session.consumed.spend.get("EUR").map_or("0".to_owned(), |d| d.to_string()))
}

/// An approval whose commit fails (the store, not another node) leaves nothing behind
/// in memory: the escalation still reads pending (never `allow`, which the SDK would act
/// on) and the session uncharged, here and in the store; once the store works, the
/// approval charges the session once.
#[tokio::test]
async fn an_approval_whose_commit_fails_leaves_nothing_approved_or_charged() {
    let (s, approver) = setup().await;
    // In a session and through a grant: the approval charges both.
    let (agent, grant) = lend_wire(&s, json!({ "max_actions": 3, "max_amount": { "EUR": 1000 } })).await;
    let session = start_session(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "EUR": 1200 } } })).await;
    let mut action = wire(&agent, Some(&session));
    action["grant_id"] = json!(grant);
    let raised = s.intercept(action).await;
    assert_eq!(raised["decision"], "escalate", "{raised}");
    let esc = raised["escalation_id"].as_str().unwrap().to_owned();
    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_insert BEFORE INSERT ON objects WHEN NEW.kind = 'escalation' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;
         CREATE TRIGGER fail_update BEFORE UPDATE ON objects WHEN NEW.kind = 'escalation' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    )
    .unwrap();
    let (code, body) = approve(&s, &approver, &esc).await;
    assert!(code.is_server_error(), "{code}: {body}");
    let st = status_of(&s, &esc).await;
    assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("pending"), Some("pending")), "{st}");
    assert_eq!(consumed_eur(&s, &session).await, (0, "0".to_owned()));
    assert_eq!(stored_eur(&s, &session).await, (0, "0".to_owned()));
    assert_eq!(grant_consumed(&s, &grant).await, json!({ "actions": 0, "recipients": 0, "rows": 0 }), "the grant as it was");
    db.execute_batch("DROP TRIGGER fail_insert; DROP TRIGGER fail_update;").unwrap();
    let (code, body) = approve(&s, &approver, &esc).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(status_of(&s, &esc).await["decision"], "allow");
    assert_eq!(stored_eur(&s, &session).await, (1, "500".to_owned()));
    assert_eq!(grant_consumed(&s, &grant).await, json!({ "actions": 1, "amount": { "EUR": "500" }, "recipients": 0, "rows": 0 }));
}

/// An approval's charge is guarded by the session's etag: when another node charged the
/// session meanwhile (and this node's copy, ahead in version, kept hiding it), the
/// approval is refused by the store, read again and charged on top of the other
/// node's charge, or refused when the two together pass the budget.
#[tokio::test]
async fn an_approval_counts_charges_made_on_another_node() {
    let (s, approver) = setup().await;
    let agent = s.agent("runner").await;
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    for (elsewhere, expect) in [(600, Ok((2, "1100"))), (800, Err("past its budget"))] {
        let session = start_session(&s, json!({ "agent_id": agent, "budgets": { "max_spend": { "EUR": 1200 } } })).await;
        let esc = escalate(&s, &agent, Some(&session)).await;
        // Another node's decision charged the session; this node's copy is ahead in
        // version (as with its own charges on their way), so a read keeps it.
        let mut charged = ws.live.lock().sessions[&session].clone();
        charged.consumed.actions = 1;
        charged.consumed.spend.insert("EUR".into(), elsewhere.into());
        charged.version += 1;
        charged.etag = "e_other_node".into();
        s.state.commit(praetor_store::Txn { mutations: vec![praetor_store::Mutation::PutSession(charged.clone())], seal: vec![] }).await.unwrap();
        ws.live.lock().sessions.get_mut(&session).unwrap().version = charged.version + 5;
        let answer = approve(&s, &approver, &esc).await;
        match expect {
            Ok((actions, eur)) => {
                assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
                assert_eq!(consumed_eur(&s, &session).await, (actions, eur.to_owned()));
            }
            Err(why) => {
                assert_error(&answer, 409, "conflict");
                assert!(answer.1["error"]["message"].as_str().unwrap().contains(why), "{}", answer.1);
                assert_eq!(consumed_eur(&s, &session).await, (1, elsewhere.to_string()));
                assert_eq!(status_of(&s, &esc).await["status"], "pending");
            }
        }
    }
}

/// A session past its `ttl_seconds` is over before the sweeper stores its expiry: its
/// escalation cannot be approved and does not read `allow` in that window.
#[tokio::test]
async fn an_escalation_of_a_session_past_its_ttl_cannot_be_approved() {
    let (s, approver) = setup().await;
    let agent = s.agent("runner").await;
    let session = start_session(&s, json!({ "agent_id": agent, "budgets": { "ttl_seconds": 10 } })).await;
    let esc = escalate(&s, &agent, Some(&session)).await;
    s.clock.advance(11_000);
    let refused = approve(&s, &approver, &esc).await;
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("past its ttl_seconds"), "{}", refused.1);
    let st = status_of(&s, &esc).await;
    assert_eq!((st["status"].as_str(), st["decision"].as_str()), (Some("expired"), Some("block")), "{st}");
}

/// An approval is fresh for the freshness in force when it was given: raising the
/// setting afterwards does not bring a stale approval back (status or re-intercept);
/// lowering it still cuts one short.
#[tokio::test]
async fn raising_the_freshness_does_not_revive_a_stale_approval() {
    let (s, approver) = setup().await;
    let agent = s.agent("runner").await;
    let esc = escalate(&s, &agent, None).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    s.clock.advance(1_000_000); // past the default 900 s
    praetor_server::sessions::sweep(&s.state).await;
    assert_eq!(status_of(&s, &esc).await["decision"], "block");
    let (code, body) = s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "approval_freshness_seconds": 86400 })).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let st = status_of(&s, &esc).await;
    assert_eq!(st["decision"], "block", "{st}");
    assert_eq!(s.intercept(wire(&agent, None)).await["decision"], "escalate", "the stale approval is not used");
    // A fresh approval, then the setting lowered: cut short.
    let esc = escalate(&s, &agent, None).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    assert_eq!(status_of(&s, &esc).await["decision"], "allow");
    s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "approval_freshness_seconds": 60 })).await;
    s.clock.advance(61_000);
    assert_eq!(status_of(&s, &esc).await["decision"], "block");
}

fn small_wire(agent: &str, session: Option<&str>) -> Value {
    json!({ "action_type": "wire.send", "agent_id": agent, "session_id": session, "metadata": { "amount": 50, "currency": "EUR" } })
}

/// The agent's history as the store gives it back (what another node, or this one
/// after a restart, reads): action types, oldest first.
async fn stored_history(s: &TestServer, agent: &str) -> Vec<String> {
    let st = s.state.store.agent_state(&s.state.workspace_ids()[0], agent, 0, 100).await.unwrap().unwrap();
    st.history.into_iter().map(|p| p.action_type).collect()
}

/// The SDK runs an approved action without intercepting it again, so the approval is
/// what adds it to its agent's and session's histories: a velocity limit counts it, an
/// ordered sequence sees it as the first step, and the store keeps it for other nodes.
/// A retry the approval allows is the same action and counts once.
#[tokio::test]
async fn an_approved_action_counts_in_velocity_and_sequences() {
    let (s, approver) = setup().await;
    s.policy(json!({ "name": "Two wires a minute", "policy_type": "sequence", "action_types": ["wire.*"], "decision": "block",
                     "conditions": { "velocity": { "max": 2, "window_seconds": 60 } } })).await;
    s.policy(json!({ "name": "No export after a wire", "policy_type": "sequence", "decision": "block",
                     "conditions": { "ordered": { "first": ["wire.send"], "then": ["report.export"], "within_seconds": 300 } } })).await;
    let agent = s.agent("runner").await;
    let session = start_session(&s, json!({ "agent_id": agent })).await;
    let export = json!({ "action_type": "report.export", "agent_id": agent, "session_id": session });
    assert_eq!(s.intercept(export.clone()).await["decision"], "allow", "no wire yet");

    s.clock.advance(1_000);
    let esc = escalate(&s, &agent, Some(&session)).await;
    let (code, body) = approve(&s, &approver, &esc).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["escalation"]["counted_at"], body["escalation"]["resolved_at"], "{body}");
    let blocked = s.intercept(export.clone()).await;
    assert_eq!(blocked["decision"], "block", "the approved wire is the sequence's first step: {blocked}");
    assert_eq!(stored_history(&s, &agent).await, vec!["report.export", "wire.send"], "the store holds the approved action");

    // The retry the approval allows is the approved wire, not a second one...
    let retry = s.intercept(wire(&agent, Some(&session))).await;
    assert_eq!(retry["decision"], "allow", "{retry}");
    assert_eq!(retry["approved_by"]["escalation_id"], json!(esc), "{retry}");
    assert_eq!(stored_history(&s, &agent).await, vec!["report.export", "wire.send"], "the retry took the approval's place");
    // ...so one more wire is within two a minute, and the next is not.
    assert_eq!(s.intercept(small_wire(&agent, Some(&session))).await["decision"], "allow");
    let third = s.intercept(small_wire(&agent, Some(&session))).await;
    assert_eq!(third["decision"], "block", "the approved wire and the small one make two: {third}");
    // A minute later the velocity window has moved on; the sequence's has not.
    s.clock.advance(61_000);
    assert_eq!(s.intercept(small_wire(&agent, None)).await["decision"], "allow");
    assert_eq!(s.intercept(export).await["decision"], "block");
}

/// An approval whose commit fails adds nothing to the histories, here or in the store;
/// approved once the store works, it counts once.
#[tokio::test]
async fn an_approval_whose_commit_fails_adds_nothing_to_the_histories() {
    let (s, approver) = setup().await;
    s.policy(json!({ "name": "One wire a minute", "policy_type": "sequence", "action_types": ["wire.*"], "decision": "block",
                     "conditions": { "velocity": { "max": 1, "window_seconds": 60 } } })).await;
    let agent = s.agent("runner").await;
    let session = start_session(&s, json!({ "agent_id": agent })).await;
    let esc = escalate(&s, &agent, Some(&session)).await;
    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    db.execute_batch("CREATE TRIGGER fail_approved BEFORE INSERT ON approved_actions BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;").unwrap();
    let (code, body) = approve(&s, &approver, &esc).await;
    assert!(code.is_server_error(), "{code}: {body}");
    assert_eq!(status_of(&s, &esc).await["decision"], "pending");
    assert_eq!(stored_history(&s, &agent).await, Vec::<String>::new());
    // Nothing counted: a small wire is the first of the minute. (Then the limit is
    // reached: the approval below is counted after it.)
    assert_eq!(s.intercept(small_wire(&agent, Some(&session))).await["decision"], "allow");
    db.execute_batch("DROP TRIGGER fail_approved;").unwrap();
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    assert_eq!(stored_history(&s, &agent).await, vec!["wire.send", "wire.send"]);
    assert_eq!(s.intercept(small_wire(&agent, None)).await["decision"], "block");
}

/// The retry an approval allows is the approved action itself: it is evaluated without
/// the approval's entry in the history, or one wire a minute would block the approved
/// wire as its own second. (Found by review.)
#[tokio::test]
async fn the_retry_of_an_approval_is_not_counted_against_itself() {
    let (s, approver) = setup().await;
    s.policy(json!({ "name": "One wire a minute", "policy_type": "sequence", "action_types": ["wire.*"], "decision": "block",
                     "conditions": { "velocity": { "max": 1, "window_seconds": 60 } } })).await;
    let agent = s.agent("runner").await;
    let esc = escalate(&s, &agent, None).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    assert_eq!(status_of(&s, &esc).await["decision"], "allow");
    let retry = s.intercept(wire(&agent, None)).await;
    assert_eq!(retry["decision"], "allow", "the approved wire is the one wire of the minute: {retry}");
    assert_eq!(stored_history(&s, &agent).await, vec!["wire.send"], "counted once");
    // Any other wire in the minute is a second one.
    assert_eq!(s.intercept(small_wire(&agent, None)).await["decision"], "block");
}

/// The approval's new etag for the agent is guarded by the one this node held: when
/// another node decided for the agent meanwhile (its change not read here yet), the
/// approval is refused, reads the agent back and is made again, so this node's next
/// decision counts the other node's action. (Found by review: the new etag passed a
/// stale copy off as the store's.)
#[tokio::test]
async fn an_approval_does_not_hide_another_nodes_decision() {
    let (s, approver) = setup().await;
    s.policy(json!({ "name": "Two wires a minute", "policy_type": "sequence", "action_types": ["wire.*"], "decision": "block",
                     "conditions": { "velocity": { "max": 2, "window_seconds": 60 } } })).await;
    let agent = s.agent("runner").await;
    let esc = escalate(&s, &agent, None).await;
    let ws_id = s.state.workspace_ids()[0].clone();
    let ws = s.state.workspace(&ws_id).unwrap();
    // Another node allows a small wire for the agent (these tests run no change feed).
    let etag = ws.agents.read()[&agent].etag.clone();
    let row = praetor_store::DecisionRow {
        decision_id: "dec_other_node".into(), workspace_id: ws_id.clone(), agent_id: Some(agent.clone()), session_id: None,
        action_type: "wire.send".into(), decision: "allow".into(), created_at: s.state.now_ms(), vault_seq: None, content: None,
        body: json!({}), sealed_leaf: None, digests: None,
    };
    s.state.commit(praetor_store::Txn { mutations: vec![
        praetor_store::Mutation::Expect { workspace_id: ws_id.clone(), of: praetor_store::Guarded::Agent, id: agent.clone(), etag },
        praetor_store::Mutation::InsertDecision { row, seal: None },
        praetor_store::Mutation::Touch { workspace_id: ws_id.clone(), of: praetor_store::Guarded::Agent, id: agent.clone(), etag: "e_other_node".into() },
    ], seal: vec![] }).await.unwrap();
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    let third = s.intercept(small_wire(&agent, None)).await;
    assert_eq!(third["decision"], "block", "the other node's wire and the approved one make two: {third}");
}

/// A retry that uses an approval is counted at its own time, here as in the store: the
/// approval's entry moves to the retry. Before, a retry 40 s after the approval stayed
/// at the approval's time in memory (out of a 30 s window) while the store counted it at
/// the retry's time (in it), so this node allowed what another would block. (Found by
/// review.)
#[tokio::test]
async fn a_late_retry_counts_at_its_own_time_here_as_in_the_store() {
    let (s, approver) = setup().await;
    s.policy(json!({ "name": "One wire per 30 s", "policy_type": "sequence", "action_types": ["wire.*"], "decision": "block",
                     "conditions": { "velocity": { "max": 1, "window_seconds": 30 } } })).await;
    let agent = s.agent("runner").await;
    let esc = escalate(&s, &agent, None).await;
    assert_eq!(approve(&s, &approver, &esc).await.0, StatusCode::OK);
    s.clock.advance(40_000); // the approval is still fresh (900 s)
    assert_eq!(s.intercept(wire(&agent, None)).await["decision"], "allow");
    s.clock.advance(5_000);
    let st = s.state.store.agent_state(&s.state.workspace_ids()[0], &agent, 0, 100).await.unwrap().unwrap();
    let now = s.state.now_ms();
    assert_eq!(st.history.iter().filter(|p| p.at_ms >= now - 30_000).count(), 1, "the store counts the retry in the window");
    let next = s.intercept(small_wire(&agent, None)).await;
    assert_eq!(next["decision"], "block", "so does this node: {next}");
}
