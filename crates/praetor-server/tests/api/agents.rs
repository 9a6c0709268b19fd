//! Agent registration, credentials and administration.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{TestServer, assert_error};

#[tokio::test]
async fn registration_is_idempotent_and_the_private_key_is_shown_once() {
    let s = TestServer::start().await;
    let body = json!({ "name": "researcher", "framework": "langchain", "description": null, "capabilities": ["search"], "permissions": {},
                       "model": "gpt-x", "owner": "team-a" });
    let (status, first) = s.post("/api/v1/enforce/agents", &s.admin_key, &body).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["created"], true);
    let id = first["agent"]["agent_id"].as_str().unwrap().to_owned();
    assert_eq!(first["agent"]["trust_level"], 80);
    assert_eq!(first["agent"]["attributes"]["owner"], "team-a");
    let cred = &first["credential"];
    assert_eq!(cred["algorithm"], "ed25519");
    assert!(cred["private_key"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(cred["private_key_pem"].as_str().unwrap().contains("PRIVATE KEY"));
    let (_, second) = s.post("/api/v1/enforce/agents", &s.admin_key, &body).await;
    assert_eq!(second["created"], false);
    assert_eq!(second["agent"]["agent_id"], json!(id));
    assert!(second.get("credential").is_none(), "no private key the second time");
    // Same name, other framework: another agent.
    let (_, other) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "researcher", "framework": "crewai" })).await;
    assert_ne!(other["agent"]["agent_id"], json!(id));
    // The private key is stored nowhere: not in the API and not in the database.
    let (_, got) = s.get(&format!("/api/v1/enforce/agents/{id}"), &s.admin_key).await;
    assert!(got["credentials"][0].get("private_key").is_none());
    let db = std::fs::read(s.dir.path().join("praetor.db")).unwrap();
    let wal = std::fs::read(s.dir.path().join("praetor.db-wal")).unwrap_or_default();
    let secret = cred["private_key"].as_str().unwrap();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "private key found in the store");
    }
    let (_, list) = s.get("/api/v1/enforce/agents", &s.admin_key).await;
    assert_eq!(list["agents"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn registration_input_is_checked() {
    let s = TestServer::start().await;
    assert_error(&s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "" })).await, 400, "invalid_field");
    assert_error(&s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "framework": "x" })).await, 400, "missing_field");
    assert_error(&s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "x", "nickname": "y" })).await, 400, "unknown_field");
    assert_error(&s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "x".repeat(300) })).await, 400, "invalid_field");
    let got = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "x", "scopes": ["ok.*", "[unclosed"] })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("scopes[1]"), "{}", got.1);
    let agent_key = s.key(&["agent"], None).await;
    let (status, _) = s.post("/api/v1/enforce/agents", &agent_key, &json!({ "name": "self-registered" })).await;
    assert_eq!(status, StatusCode::OK, "unbound agent keys may register (the SDK's auto.connect does)");
}

#[tokio::test]
async fn scopes_and_boundaries_are_enforced() {
    let s = TestServer::start().await;
    let (_, a) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "trader", "scopes": ["trade.*", "quote"],
        "permission_boundary": { "denied_action_types": ["trade.margin*"] } })).await;
    let id = a["agent"]["agent_id"].as_str().unwrap().to_owned();
    let ok = s.intercept(json!({ "action_type": "trade.buy", "agent_id": id })).await;
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["boundary_check"], "within_scope");
    assert_eq!(ok["permission_scope"], json!(["trade.*", "quote"]));
    let out = s.intercept(json!({ "action_type": "email.send", "agent_id": id })).await;
    assert_eq!(out["decision"], "block");
    assert_eq!(out["boundary_check"], "outside_scope");
    assert_eq!(out["policies_triggered"][0]["policy_id"], "__boundary");
    let denied = s.intercept(json!({ "action_type": "trade.margin_call", "agent_id": id })).await;
    assert_eq!(denied["boundary_check"], "outside_scope");
    // Administrators can widen the scopes.
    let (status, _) = s.patch(&format!("/api/v1/enforce/agents/{id}"), &s.admin_key, &json!({ "scopes": ["*"] })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.intercept(json!({ "action_type": "email.send", "agent_id": id })).await["decision"], "allow");
}

#[tokio::test]
async fn patch_sets_trust_and_keeps_live_counts() {
    let s = TestServer::start().await;
    let id = s.agent("patched").await;
    s.policy(json!({ "name": "watch", "policy_type": "threshold", "trust_threshold": 50, "decision": "escalate" })).await;
    s.intercept(json!({ "action_type": "x", "agent_id": id })).await;
    let (status, body) = s.patch(&format!("/api/v1/enforce/agents/{id}"), &s.admin_key, &json!({ "trust_score": 30, "description": "d" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agent"]["trust_score"], 30);
    assert_eq!(body["agent"]["total_actions"], 1);
    assert_eq!(s.intercept(json!({ "action_type": "x", "agent_id": id })).await["decision"], "escalate");
    assert_error(&s.patch(&format!("/api/v1/enforce/agents/{id}"), &s.admin_key, &json!({ "trust_score": 101 })).await, 400, "invalid_field");
    assert_error(&s.patch("/api/v1/enforce/agents/agt_none", &s.admin_key, &json!({})).await, 404, "not_found");
    let read = s.key(&["read"], None).await;
    assert_error(&s.patch(&format!("/api/v1/enforce/agents/{id}"), &read, &json!({})).await, 403, "insufficient_scope");
}

/// After a refused commit, each refused request reloads the agent only if no other
/// reload came since it was decided: a second reload would read the store while
/// decisions made from the first are still on their way to it.
#[tokio::test]
async fn a_refused_request_reloads_an_agent_only_if_nobody_reloaded_it_since() {
    let s = TestServer::start().await;
    let agent = s.agent("reloaded").await;
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    let stored = || async { s.state.store.agent_state(&ws.workspace_id, &agent, 0, 10).await.unwrap() };
    let seen = ws.agent_generation(&agent);
    assert!(seen.is_some());
    assert!(ws.adopt_agent_unless_reloaded(&agent, stored().await, seen), "nobody reloaded it: reload");
    let after = ws.agent_generation(&agent);
    assert_ne!(after, seen, "a reload is a new generation");
    assert!(!ws.adopt_agent_unless_reloaded(&agent, stored().await, seen), "reloaded since: keep the newer copy");
    assert_eq!(ws.agent_generation(&agent), after);
    assert!(ws.adopt_agent_unless_reloaded(&agent, stored().await, after));
    // Decisions go on from the reloaded copy.
    assert_eq!(s.intercept(json!({ "action_type": "read", "agent_id": agent })).await["decision"], "allow");
}
