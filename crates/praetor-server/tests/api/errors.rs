//! Bad input gets the right status and a stable error code, and the server keeps serving.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error};

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_named() {
    let s = TestServer::start().await;
    let k = s.admin_key.clone();
    assert_error(&s.post_raw("/api/v1/enforce/intercept", &k, "{not json").await, 400, "malformed_json");
    assert_error(&s.post_raw("/api/v1/enforce/intercept", &k, r#"{"action_type":"x"} trailing"#).await, 400, "malformed_json");
    assert_error(&s.post_raw("/api/v1/enforce/intercept", &k, r#"{"action_type":"x"}{"action_type":"y"}"#).await, 400, "malformed_json");
    let got = s.post("/api/v1/enforce/intercept", &k, &json!({ "action_type": 5 })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("action_type"), "{}", got.1);
    let got = s.post("/api/v1/enforce/intercept", &k, &json!({ "action_type": "x", "metadata": [1] })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("metadata"), "{}", got.1);
    let got = s.post("/api/v1/enforce/intercept", &k, &json!({ "agent_id": null })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("action_type"), "{}", got.1);
    let long = "a".repeat(10_000);
    let got = s.post("/api/v1/enforce/intercept", &k, &json!({ "action_type": long })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("action_type"), "{}", got.1);
    let got = s.post("/api/v1/enforce/intercept", &k, &json!({ "action_type": "x", "metadata": { "content_sha256": "zz" } })).await;
    assert_error(&got, 400, "invalid_field");
    // The server is still serving.
    let answer = s.intercept(json!({ "action_type": "read" })).await;
    assert_eq!(answer["decision"], "allow");
}

/// The sealed entry of decision `id`, from the vault.
async fn sealed_entry(s: &TestServer, id: &str) -> Value {
    let entries = crate::harness::vault_entries(s).await;
    entries.iter().find(|e| e["decision_id"] == id).cloned().unwrap_or_else(|| panic!("{id} is not sealed: {entries:?}"))
}

/// An action too large to evaluate is still an action: refused (a decision, `200`, so
/// that a fail-open client does not run it) and sealed, never a `413` or `400`.
#[tokio::test]
async fn oversize_actions_are_refused_unread_and_sealed() {
    let s = TestServer::start().await;
    let agent = s.agent("writer").await;
    s.policy(json!({ "name": "allow all", "policy_type": "action_type", "action_types": ["*"], "decision": "allow" })).await;

    // Over the body limit (1 MiB here): the members that name the action are kept.
    let body = format!(r#"{{"action_type":"email.send","agent_id":"{agent}","metadata":{{"to":"a@b.c"}},"action_content":"{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let (status, answer) = s.post_raw("/api/v1/enforce/intercept", &s.admin_key, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["decision"].as_str(), answer["outcome"].as_str()), (Some("block"), Some("refused")));
    assert_eq!(answer["policies_triggered"][0]["policy_id"], "__unread", "{answer}");
    let sha = praetor_server::secrets::sha256_hex(body.as_bytes());
    let reason = format!("the request body is {} bytes long (SHA-256 {sha}); the limit is 1048576", body.len());
    assert_eq!(answer["reasoning"], format!("blocked: refused unread: {reason}"));
    assert_eq!((answer["action_type"].as_str(), answer["agent_id"].as_str()), (Some("email.send"), Some(agent.as_str())));
    let id = answer["decision_id"].as_str().unwrap();
    let entry = sealed_entry(&s, id).await;
    assert_eq!((entry["decision"].as_str(), entry["action_type"].as_str()), (Some("block"), Some("email.send")));
    assert_eq!(entry["policies"][0]["reason"], reason.as_str(), "the body's length and hash are sealed: {entry}");
    let (_, stored) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
    assert_eq!(stored["decision"]["decision"], "block", "{stored}");

    // Within the body limit but over the content limit: kept and sealed as any action's
    // content, and read back whole (the row agrees with its entry: a receipt, no error).
    let content = "b".repeat(600 * 1024);
    let answer = s.intercept(json!({ "action_type": "email.send", "agent_id": agent, "action_content": content })).await;
    assert_eq!(answer["decision"], "block", "{answer}");
    assert_eq!(answer["reasoning"], "blocked: refused unread: `action_content` is 614400 bytes long; the limit is 524288");
    let id = answer["decision_id"].as_str().unwrap();
    assert_eq!(sealed_entry(&s, id).await["content_sha256"], praetor_server::secrets::sha256_hex(content.as_bytes()));
    let (_, stored) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
    assert_eq!((&stored["decision"]["action_content"], &stored["decision"]["read_error"]), (&json!(content), &Value::Null), "the row as sealed");
    let (status, receipt) = s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &s.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");

    // A hand-off over the limit is refused the same way, as its source's instruction.
    let target = s.agent("reader").await;
    let comm = format!(r#"{{"source_agent_id":"{agent}","target_agent_id":"{target}","instruction":"{}"}}"#, "c".repeat(2 * 1024 * 1024));
    let (status, answer) = s.post_raw("/api/v1/enforce/agent-comm", &s.admin_key, comm).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["decision"].as_str(), answer["action_type"].as_str()), (Some("block"), Some("agent_instruction")));
    assert_eq!(answer["agent_id"], agent.as_str());
    assert_eq!(answer["policies_triggered"][0]["policy_id"], "__unread", "{answer}");

    // Members after the part too large to keep still name the action: the SDK sends
    // `session_id` after `metadata`, so a padded tool argument in a killed session
    // still ends the run.
    let (_, started) = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent })).await;
    let sid = started["session_id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/v1/enforce/sessions/{sid}/kill"), &s.admin_key, &json!({ "reason": "operator stop" })).await;
    let padded = format!(r#"{{"action_type":"tool.call","agent_id":null,"metadata":{{"blob":"{}"}},"session_id":"{sid}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, answer) = s.post_raw("/api/v1/enforce/intercept", &s.admin_key, padded).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["decision"].as_str(), answer["session_id"].as_str(), answer["agent_id"].as_str()), (Some("terminate"), Some(sid.as_str()), Some(agent.as_str())), "{answer}");

    // A body that names nothing usable is refused all the same.
    let (status, answer) = s.post_raw("/api/v1/enforce/intercept", &s.admin_key, "x".repeat(2 * 1024 * 1024)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["decision"].as_str(), answer["action_type"].as_str()), (Some("block"), Some("unread")));

    // Other routes keep the plain limit, and the server keeps serving.
    assert_error(&s.post_raw("/api/v1/enforce/policies", &s.admin_key, body).await, 413, "payload_too_large");
    assert_eq!(s.intercept(json!({ "action_type": "read" })).await["decision"], "allow");
}

#[tokio::test]
async fn policy_validation_names_the_field() {
    let s = TestServer::start().await;
    let k = s.admin_key.clone();
    let got = s.post("/api/v1/enforce/policies", &k, &json!({
        "name": "x", "policy_type": "content_pattern", "decision": "block", "conditions": { "patterns": ["ok", "(unclosed"] }
    })).await;
    assert_error(&got, 400, "invalid_policy");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("conditions.patterns[1]"), "{}", got.1);
    let got = s.post("/api/v1/enforce/policies", &k, &json!({
        "name": "x", "policy_type": "action_type", "action_types": ["a"], "decision": "block", "colour": "red"
    })).await;
    assert_error(&got, 400, "unknown_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("colour"), "{}", got.1);
    let got = s.post("/api/v1/enforce/policies", &k, &json!({ "name": "x", "policy_type": "telepathy", "decision": "block" })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("policy_type"), "{}", got.1);
    let got = s.post("/api/v1/enforce/policies", &k, &json!({ "policy_type": "action_type", "decision": "block" })).await;
    assert_error(&got, 400, "missing_field");
    // Nothing was stored.
    let (status, list) = s.get("/api/v1/enforce/policies", &k).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["policies"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn keys_are_checked() {
    let s = TestServer::start().await;
    assert_error(&s.post("/api/v1/enforce/intercept", "", &json!({ "action_type": "x" })).await, 401, "missing_api_key");
    assert_error(&s.post("/api/v1/enforce/intercept", "xb_live_nope", &json!({ "action_type": "x" })).await, 401, "invalid_api_key");
    // Bearer works as well as X-API-Key.
    let res = s.client.post(s.url("/api/v1/enforce/intercept")).bearer_auth(&s.admin_key)
        .json(&json!({ "action_type": "x" })).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let read = s.key(&["read"], None).await;
    assert_error(&s.post("/api/v1/enforce/policies", &read, &json!({})).await, 403, "insufficient_scope");
    assert_error(&s.post("/api/v1/enforce/intercept", &read, &json!({ "action_type": "x" })).await, 403, "insufficient_scope");
    let agent = s.key(&["agent"], None).await;
    assert_error(&s.post("/api/v1/enforce/policies", &agent, &json!({})).await, 403, "insufficient_scope");
    // A revoked key stops working at once.
    let (_, keys) = s.get("/api/v1/enforce/keys", &s.admin_key).await;
    let read_id = keys["keys"].as_array().unwrap().iter().find(|k| k["scopes"] == json!(["read"])).unwrap()["key_id"].as_str().unwrap().to_owned();
    let (status, _) = s.post(&format!("/api/v1/enforce/keys/{read_id}/revoke"), &s.admin_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&s.get("/api/v1/enforce/agents", &read).await, 401, "invalid_api_key");
    // The last admin key cannot be revoked (it would lock the workspace's API out);
    // once there is another, it can, and then that one is the last.
    let key_id = |keys: &Value, scope: &str, not: Option<&str>| {
        keys["keys"].as_array().unwrap().iter()
            .find(|k| k["scopes"] == json!([scope]) && k["revoked_at"].is_null() && Some(k["key_id"].as_str().unwrap()) != not)
            .map(|k| k["key_id"].as_str().unwrap().to_owned())
    };
    let first = key_id(&s.get("/api/v1/enforce/keys", &s.admin_key).await.1, "admin", None).expect("the admin key");
    let last = s.post(&format!("/api/v1/enforce/keys/{first}/revoke"), &s.admin_key, &json!({})).await;
    assert_error(&last, 409, "conflict");
    assert!(last.1["error"]["message"].as_str().unwrap().contains("last admin key"), "{}", last.1);
    let second_key = s.key(&["admin"], None).await;
    let second = key_id(&s.get("/api/v1/enforce/keys", &s.admin_key).await.1, "admin", Some(&first)).expect("the second admin key");
    let (status, _) = s.post(&format!("/api/v1/enforce/keys/{first}/revoke"), &second_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&s.post(&format!("/api/v1/enforce/keys/{second}/revoke"), &second_key, &json!({})).await, 409, "conflict");
}

#[tokio::test]
async fn workspaces_are_isolated() {
    let s = TestServer::start().await;
    let (_other_ws, other_key) = praetor_server::bootstrap::create_workspace(&s.state, "other").await.unwrap();
    let mine = s.agent("mine").await;
    let pol = s.policy(json!({ "name": "p", "policy_type": "action_type", "action_types": ["x"], "decision": "block" })).await;
    let decided = s.intercept(json!({ "action_type": "x", "agent_id": mine })).await;
    let dec_id = decided["decision_id"].as_str().unwrap();
    // The other workspace's admin sees none of it, and cannot act as our agent.
    assert_error(&s.get(&format!("/api/v1/enforce/agents/{mine}"), &other_key).await, 404, "not_found");
    assert_error(&s.get(&format!("/api/v1/enforce/policies/{pol}"), &other_key).await, 404, "not_found");
    assert_error(&s.get(&format!("/api/v1/enforce/decisions/{dec_id}"), &other_key).await, 404, "not_found");
    assert_error(&s.delete(&format!("/api/v1/enforce/policies/{pol}"), &other_key).await, 404, "not_found");
    let (_, list) = s.get("/api/v1/enforce/agents", &other_key).await;
    assert_eq!(list["agents"], json!([]));
    let (_, list) = s.get("/api/v1/enforce/decisions", &other_key).await;
    assert_eq!(list["total"], 0);
    let (status, answer) = s.post("/api/v1/enforce/intercept", &other_key, &json!({ "action_type": "x", "agent_id": mine })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["decision"], "block");
    assert_eq!(answer["identity"]["check"], "unknown_agent");
    // Our policy does not apply there, and theirs would not apply here.
    let (_, answer) = s.post("/api/v1/enforce/intercept", &other_key, &json!({ "action_type": "x" })).await;
    assert_eq!(answer["decision"], "allow");
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let s = TestServer::start().await;
    assert_error(&s.get("/api/v1/enforce/nope", &s.admin_key).await, 404, "route_not_found");
    assert_error(&s.get("/nothing/here", &s.admin_key).await, 404, "route_not_found");
    assert_error(&s.delete("/api/v1/enforce/intercept", &s.admin_key).await, 405, "method_not_allowed");
    // A path segment that is not UTF-8 is answered in the error shape too.
    let got = s.get("/api/v1/enforce/agents/%FF", &s.admin_key).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("UTF-8"), "{:?}", got.1);
    let (status, body) = s.get("/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ok"], true);
    let (status, body) = s.get("/v1/status", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["store"], "sqlite");
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("praetor_decisions_total{decision=\"allow\"}"), "{metrics}");
}

#[tokio::test]
async fn a_key_bound_to_an_agent_sees_only_that_agent() {
    let s = TestServer::start().await;
    let mine = s.agent("mine").await;
    let theirs = s.agent("theirs").await;
    let their_decision = s.intercept(json!({ "action_type": "x", "agent_id": theirs, "action_content": "private" })).await;
    let bound = s.key(&["agent"], Some(&mine)).await;
    let (_, own) = s.post("/api/v1/enforce/intercept", &bound, &json!({ "action_type": "y" })).await;
    let (_, list) = s.get("/api/v1/enforce/decisions", &bound).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["decisions"][0]["decision_id"], own["decision_id"]);
    assert_error(&s.get(&format!("/api/v1/enforce/decisions?agent_id={theirs}"), &bound).await, 403, "insufficient_scope");
    let id = their_decision["decision_id"].as_str().unwrap();
    assert_error(&s.get(&format!("/api/v1/enforce/decisions/{id}"), &bound).await, 404, "not_found");
    assert_error(&s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &bound).await, 404, "not_found");
    assert_error(&s.get(&format!("/api/v1/enforce/agents/{theirs}/history"), &bound).await, 404, "not_found");
    assert_error(&s.get("/api/v1/enforce/vault/export", &bound).await, 403, "insufficient_scope");
    assert_error(&s.get("/api/v1/enforce/vault/entries", &bound).await, 403, "insufficient_scope");
    let own_id = own["decision_id"].as_str().unwrap();
    let (status, _) = s.get(&format!("/api/v1/enforce/decisions/{own_id}/receipt"), &bound).await;
    assert_eq!(status, StatusCode::OK);
    // Other agents: neither listed nor read, and of a role's members only its own.
    assert_error(&s.get(&format!("/api/v1/enforce/agents/{theirs}"), &bound).await, 404, "not_found");
    let (status, me) = s.get(&format!("/api/v1/enforce/agents/{mine}"), &bound).await;
    assert_eq!((status, &me["agent"]["agent_id"]), (StatusCode::OK, &json!(mine)), "{me}");
    let (_, agents) = s.get("/api/v1/enforce/agents", &bound).await;
    let listed: Vec<&Value> = agents["agents"].as_array().unwrap().iter().map(|a| &a["agent_id"]).collect();
    assert_eq!((listed, &agents["total"]), (vec![&json!(mine)], &json!(1)), "{agents}");
    let (_, all) = s.get("/api/v1/enforce/agents", &s.admin_key).await;
    assert!(all["agents"].as_array().unwrap().len() >= 2, "{all}");
    let (status, role) = s.post("/api/v1/enforce/roles", &s.admin_key, &json!({ "name": "both", "allowed_action_types": ["*"] })).await;
    assert_eq!(status, StatusCode::OK, "{role}");
    let role_id = role["role"]["role_id"].as_str().unwrap().to_owned();
    for agent in [&mine, &theirs] {
        let (status, body) = s.post(&format!("/api/v1/enforce/roles/{role_id}/assign"), &s.admin_key, &json!({ "agent_id": agent })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, roles) = s.get("/api/v1/enforce/roles", &bound).await;
    assert_eq!(roles["roles"][0]["agent_ids"], json!([mine]), "{roles}");
    let (_, roles) = s.get("/api/v1/enforce/roles", &s.admin_key).await;
    assert_eq!(roles["roles"][0]["agent_ids"].as_array().unwrap().len(), 2, "{roles}");
}

/// Another node migrates the shared database to a newer version while this one runs:
/// from the next batch (or the follower's next check, for a node that only reads) this
/// node commits nothing, answers every request that reaches the store with 503 and the
/// reason, and its health check fails, so that traffic moves to the newer nodes.
#[tokio::test]
async fn a_node_stops_serving_once_a_newer_version_migrates_its_database() {
    let s = TestServer::start().await;
    let before = s.intercept(json!({ "action_type": "email.send", "content": "hello" })).await;
    assert!(before["decision_id"].is_string(), "{before}");
    let (status, health) = s.get("/healthz", "").await;
    assert_eq!((status.as_u16(), &health["status"]), (200, &json!("ok")), "{health}");

    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (1000, 0)", []).unwrap();

    let refused = s.post("/api/v1/enforce/intercept", &s.admin_key, &json!({ "action_type": "email.send", "content": "hello" })).await;
    assert_error(&refused, 503, "store_unavailable");
    let why = refused.1["error"]["message"].as_str().unwrap();
    assert!(why.contains("schema version 1000") && why.contains("newer Praetor"), "{why}");
    let decisions: i64 = db.query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0)).unwrap();
    assert_eq!(decisions, 1, "the refused decision was not stored");

    // Reads are refused too (a newer version's rows may mean something else).
    assert_error(&s.get("/api/v1/enforce/decisions", &s.admin_key).await, 503, "store_unavailable");
    let (status, health) = s.get("/healthz", "").await;
    assert_eq!(status.as_u16(), 503, "{health}");
    assert_eq!(health["status"], json!("superseded"), "{health}");
    assert!(health["error"]["message"].as_str().unwrap().contains("newer version"), "{health}");
}

/// A node that only reads finds out from the follower's periodic check.
#[tokio::test]
async fn the_follower_finds_a_newer_schema_on_a_node_that_only_reads() {
    let s = TestServer::start().await;
    let follower = praetor_server::follow::spawn_follower(s.state.clone());
    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (1000, 0)", []).unwrap();
    let mut waited = 0;
    while s.state.store.superseded().is_none() {
        assert!(waited < 100, "the follower checks every 100 ms; nothing after 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    follower.abort();
    let (status, health) = s.get("/healthz", "").await;
    assert_eq!((status.as_u16(), &health["status"]), (503, &json!("superseded")), "{health}");
    assert_error(&s.get("/api/v1/enforce/decisions", &s.admin_key).await, 503, "store_unavailable");
}

/// Damaged stored decisions and violations are still shown, named and with why, and each
/// such read is counted in /metrics and /v1/status.
#[tokio::test]
async fn damaged_records_are_shown_with_why_and_counted() {
    let s = TestServer::start().await;
    s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    let answer = s.intercept(json!({ "action_type": "email.send", "content": "hello" })).await;
    let blocked = s.intercept(json!({ "action_type": "delete_x" })).await;
    assert_eq!(blocked["decision"], "block", "{blocked}");
    let id = answer["decision_id"].as_str().unwrap().to_owned();
    let counted = || async {
        let text = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with("praetor_records_unreadable_total ")).unwrap_or_else(|| panic!("{text}"));
        let metric = line.split(' ').nth(1).unwrap().parse::<u64>().unwrap();
        let (_, status) = s.get("/v1/status", "").await;
        assert_eq!(status["counters"]["records_unreadable"], metric, "{status}");
        metric
    };
    assert_eq!(counted().await, 0);

    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    db.execute("UPDATE decisions SET body = '{\"reasoning\": \"x' WHERE decision_id = ?1", [&id]).unwrap();
    let (status, got) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
    assert_eq!(status.as_u16(), 200, "{got}");
    let shown = &got["decision"];
    let why = shown["read_error"].as_str().unwrap_or_else(|| panic!("no read_error: {got}"));
    assert!(why.contains("stored answer cannot be read"), "{why}");
    // What the sealed entry gives is still there.
    assert_eq!((&shown["decision_id"], &shown["decision"], &shown["action_type"]), (&json!(id), &answer["decision"], &json!("email.send")), "{got}");
    assert_eq!(counted().await, 1);
    let (status, list) = s.get("/api/v1/enforce/decisions", &s.admin_key).await;
    assert_eq!(status.as_u16(), 200, "the listing stands: {list}");
    assert_eq!(list["decisions"].as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(counted().await, 2, "one damaged record in the list: one more");

    // Violations are append-only: an attacker with the file drops the guard first.
    db.execute_batch("DROP TRIGGER violations_no_update").unwrap();
    db.execute("UPDATE violations SET body = 'not json'", []).unwrap();
    let (status, list) = s.get("/api/v1/violations", &s.admin_key).await;
    assert_eq!(status.as_u16(), 200, "{list}");
    let violation = &list["violations"][0];
    assert!(violation["read_error"].as_str().unwrap().contains("stored body cannot be read"), "{list}");
    assert_eq!(violation["decision_id"], blocked["decision_id"], "{list}");
    assert_eq!(counted().await, 3);
    // A body rewritten to read otherwise than its decision's entry seals (found by
    // review: it was served as stored) is shown as sealed, saying why.
    db.execute("UPDATE violations SET body = '{\"reason\":\"forged\",\"action\":\"allow\"}'", []).unwrap();
    let (status, list) = s.get("/api/v1/violations", &s.admin_key).await;
    assert_eq!(status.as_u16(), 200, "{list}");
    let violation = &list["violations"][0];
    assert!(violation["read_error"].as_str().unwrap().contains("its stored `action` is not the one sealed"), "{list}");
    assert_eq!((violation["action"].as_str(), violation["decision_id"].clone()), (Some("block"), blocked["decision_id"].clone()), "{list}");
    assert_ne!(violation["reason"], "forged", "{list}");
    assert_eq!(counted().await, 4);
    // So is one whose decision's context (sealed in the same entry) was rewritten.
    db.execute("UPDATE violations SET body = '{\"decision\":\"allow\",\"action_type\":\"noop\"}'", []).unwrap();
    let (_, list) = s.get("/api/v1/violations", &s.admin_key).await;
    let violation = &list["violations"][0];
    assert!(violation["read_error"].as_str().unwrap().contains("is not the one sealed"), "{list}");
    assert_eq!((violation["decision"].as_str(), violation["action_type"].as_str()), (Some("block"), Some("delete_x")), "{list}");
}

/// A decision's row changed after it was sealed (its content, the rest of its answer,
/// its verdict column) is shown as its entry seals it, with why and without the row's
/// own parts, and counted; its receipt is refused rather than prove another entry. An
/// untouched decision beside it reads whole.
#[tokio::test]
async fn a_row_changed_after_it_was_sealed_shows_only_what_was_sealed() {
    let s = TestServer::start().await;
    s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    let kept = s.intercept(json!({ "action_type": "email.send", "content": "hello" })).await;
    let blocked = s.intercept(json!({ "action_type": "delete_x", "content": "drop table users" })).await;
    assert_eq!(blocked["decision"], "block", "{blocked}");
    let (kept_id, id) = (kept["decision_id"].as_str().unwrap().to_owned(), blocked["decision_id"].as_str().unwrap().to_owned());
    let read = |id: String| {
        let s = &s;
        async move {
            let (status, got) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
            assert_eq!(status.as_u16(), 200, "{got}");
            got["decision"].clone()
        }
    };
    let honest = read(id.clone()).await;
    assert_eq!((&honest["read_error"], &honest["action_content"]), (&Value::Null, &json!("drop table users")), "{honest}");
    assert!(honest["reasoning"].is_string(), "{honest}");

    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    let changes: [(&str, &str); 3] = [
        ("UPDATE decisions SET content = 'select 1' WHERE decision_id = ?1", "its content is not the content sealed"),
        ("UPDATE decisions SET body = json_set(body, '$.reasoning', 'nothing to see') WHERE decision_id = ?1", "its stored answer is not the one sealed"),
        ("UPDATE decisions SET decision = 'allow' WHERE decision_id = ?1", "its `decision` is not the one sealed"),
    ];
    for (i, (sql, why)) in changes.into_iter().enumerate() {
        db.execute("UPDATE decisions SET content = 'drop table users', decision = 'block' WHERE decision_id = ?1", [&id]).unwrap();
        db.execute(sql, [&id]).unwrap();
        let shown = read(id.clone()).await;
        let said = shown["read_error"].as_str().unwrap_or_else(|| panic!("{sql}: no read_error: {shown}"));
        assert!(said.contains("does not match its sealed entry") && said.contains(why), "{sql}: {said}");
        assert_eq!((&shown["decision"], &shown["decision_id"], &shown["action_type"]), (&json!("block"), &json!(id), &json!("delete_x")), "{sql}: {shown}");
        assert_eq!((&shown["action_content"], &shown["reasoning"]), (&Value::Null, &Value::Null), "{sql}: the row's own parts are withheld: {shown}");
        if i == 0 {
            let (status, metrics) = s.get("/v1/status", "").await;
            assert_eq!(status.as_u16(), 200);
            assert_eq!(metrics["counters"]["records_unreadable"], 1, "{metrics}");
        }
    }
    let refused = s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &s.admin_key).await;
    assert_error(&refused, 500, "record_damaged");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("does not match vault entry"), "{refused:?}");
    let (_, metrics) = s.get("/v1/status", "").await;
    assert_eq!(metrics["counters"]["records_unreadable"], 4, "three damaged reads and the refused receipt: {metrics}");

    // The row pointed at another decision's entry: the receipt must not prove that one.
    let (_, kept_receipt) = s.get(&format!("/api/v1/enforce/decisions/{kept_id}/receipt"), &s.admin_key).await;
    assert_eq!(kept_receipt["decision"], "allow", "{kept_receipt}");
    db.execute("UPDATE decisions SET body = (SELECT body FROM decisions WHERE decision_id = ?2), content = 'hello', decision = 'allow',
                action_type = 'email.send', vault_seq = (SELECT vault_seq FROM decisions WHERE decision_id = ?2) WHERE decision_id = ?1", [&id, &kept_id]).unwrap();
    let refused = s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &s.admin_key).await;
    assert_error(&refused, 500, "record_damaged");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("`decision_id` is not the one sealed"), "{refused:?}");
    let untouched = read(kept_id).await;
    assert_eq!((&untouched["read_error"], &untouched["action_content"]), (&Value::Null, &json!("hello")), "{untouched}");
    // A row that names no entry at all (every decision is sealed before it is answered).
    db.execute("UPDATE decisions SET vault_seq = -1 WHERE decision_id = ?1", [&id]).unwrap();
    let refused = s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &s.admin_key).await;
    assert_error(&refused, 500, "record_damaged");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("names no vault entry"), "{refused:?}");
}

/// What a row cannot prove is not shown as sealed: a whole answer with no entry says
/// so, a row pointed at an entry that is no decision's shows none of its own parts, and
/// a key bound to one agent does not see another agent's decision or violation through
/// a row whose agent column was changed to its own.
#[tokio::test]
async fn rows_that_cannot_prove_what_they_hold_are_not_shown_as_sealed() {
    let s = TestServer::start().await;
    let (mallory, alice) = (s.agent("mallory").await, s.agent("alice").await);
    let mallory_key = s.key(&["agent"], Some(&mallory)).await;
    s.policy(json!({ "name": "No payments", "policy_type": "action_type", "action_types": ["payment.*"], "decision": "block" })).await;
    let answer = s.intercept(json!({ "action_type": "payment.send", "agent_id": alice, "content": "pay 10" })).await;
    assert_eq!(answer["decision"], "block", "{answer}");
    let id = answer["decision_id"].as_str().unwrap().to_owned();
    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();

    // A whole answer fabricated beside the log.
    db.execute(
        "INSERT INTO decisions (workspace_id, decision_id, agent_id, action_type, decision, created_at, vault_seq, content, body)
         SELECT workspace_id, 'dec_forged', agent_id, action_type, 'allow', created_at, 999999, 'send 1M',
                '{\"decision\":\"allow\",\"decision_id\":\"dec_forged\",\"reasoning\":\"approved by the CFO\"}' FROM decisions WHERE decision_id = ?1",
        [&id],
    ).unwrap();
    let (status, got) = s.get("/api/v1/enforce/decisions/dec_forged", &s.admin_key).await;
    assert_eq!(status.as_u16(), 200, "{got}");
    assert!(got["decision"]["read_error"].as_str().unwrap_or_else(|| panic!("{got}")).contains("no sealed entry"), "{got}");

    // Pointed at the workspace's first entry (no decision's): nothing of the row shows.
    db.execute("UPDATE decisions SET vault_seq = 0, content = 'tampered', body = '{\"reasoning\":\"tampered\"}' WHERE decision_id = ?1", [&id]).unwrap();
    let (_, got) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
    let shown = &got["decision"];
    assert!(shown["read_error"].as_str().unwrap().contains("its vault entry is not a decision's"), "{got}");
    assert_eq!((&shown["action_content"], &shown["reasoning"]), (&Value::Null, &Value::Null), "{got}");
    db.execute("UPDATE decisions SET vault_seq = ?2 WHERE decision_id = ?1", rusqlite::params![&id, answer["vault_entry_id"].as_i64().unwrap()]).unwrap();

    // The agent column changed to mallory's: mallory's key still does not see alice's decision.
    db.execute("UPDATE decisions SET agent_id = ?2 WHERE decision_id = ?1", [&id, &mallory]).unwrap();
    let (status, got) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &mallory_key).await;
    assert_eq!(status.as_u16(), 404, "{got}");
    let (_, list) = s.get("/api/v1/enforce/decisions", &mallory_key).await;
    assert_eq!(list["decisions"], json!([]), "{list}");
    let (_, admin_view) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
    assert_eq!(admin_view["decision"]["agent_id"], json!(alice), "shown as sealed: {admin_view}");
    // Nor once the row is also cut off from its entry (nothing to compare it with).
    db.execute("UPDATE decisions SET vault_seq = NULL WHERE decision_id = ?1", [&id]).unwrap();
    let (status, got) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &mallory_key).await;
    assert_eq!(status.as_u16(), 404, "{got}");
    let (_, list) = s.get("/api/v1/enforce/decisions", &mallory_key).await;
    assert_eq!(list["decisions"], json!([]), "{list}");

    // Its violation relabelled to mallory: still alice's as sealed, so not mallory's to see.
    let (_, all) = s.get("/api/v1/violations", &s.admin_key).await;
    let vid = all["violations"][0]["violation_id"].as_str().unwrap_or_else(|| panic!("no violation: {all}")).to_owned();
    db.execute_batch("DROP TRIGGER violations_no_update").unwrap();
    db.execute("UPDATE violations SET agent_id = ?2 WHERE violation_id = ?1", [&vid, &mallory]).unwrap();
    let (status, list) = s.get("/api/v1/violations", &mallory_key).await;
    assert_eq!((status.as_u16(), &list["violations"]), (200, &json!([])), "{list}");
    let (status, got) = s.get(&format!("/api/v1/violations/{vid}"), &mallory_key).await;
    assert_eq!(status.as_u16(), 404, "{got}");
}

/// Bounds found missing by a black-box review: each input below was accepted and then
/// misread (a duration wrapped round, an expired credential shown active, an unbounded
/// list kept in memory). Each is now refused naming its field.
#[tokio::test]
async fn inputs_past_their_bounds_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    let k = &s.admin_key;
    // Settings: durations in range, a jurisdiction that is a short code.
    for (field, value) in [("escalation_ttl_seconds", json!(u64::MAX)), ("escalation_ttl_seconds", json!(0)), ("approval_freshness_seconds", json!(u64::MAX)),
                           ("default_jurisdiction", json!("EU\u{1b}[2J")), ("default_jurisdiction", json!("x".repeat(100)))] {
        refused(s.put("/api/v1/enforce/settings", k, &json!({ field: value })).await, "invalid_field", field);
    }
    let (status, body) = s.put("/api/v1/enforce/settings", k, &json!({ "escalation_ttl_seconds": 7200, "default_jurisdiction": "EU" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Agents: a credential lifetime in range, a passport of bounded size.
    for days in [json!(0), json!(u32::MAX)] {
        refused(s.post("/api/v1/enforce/agents", k, &json!({ "name": "ttl", "credential_ttl_days": days })).await, "invalid_field", "credential_ttl_days");
    }
    let many: Vec<String> = (0..100_000).map(|i| format!("p{i}")).collect();
    refused(s.post("/api/v1/enforce/agents", k, &json!({ "name": "big passport", "permissions": many })).await, "invalid_field", "permissions");
    // Named by the field that takes the room, not always `permissions`.
    let (status, big_owner) = s.post("/api/v1/enforce/agents", k, &json!({ "name": "big owner", "owner": "o".repeat(17_000) })).await;
    assert_error(&(status, big_owner.clone()), 400, "invalid_field");
    assert!(big_owner["error"]["message"].as_str().unwrap().starts_with("`owner`"), "{big_owner}");
    // A credential past its lifetime shows as expired, not active.
    let (status, short) = s.post("/api/v1/enforce/agents", k, &json!({ "name": "short lived", "credential_ttl_days": 1 })).await;
    assert_eq!(status, StatusCode::OK, "{short}");
    let agent = short["agent"]["agent_id"].as_str().unwrap().to_owned();
    s.clock.advance(2 * 86_400_000);
    let (_, got) = s.get(&format!("/api/v1/enforce/agents/{agent}"), k).await;
    assert_eq!(got["credentials"][0]["status"], "expired", "{got}");
    // Grants: a duration whose product overflows is out of range, not wrapped into it.
    refused(s.post("/api/v1/enforce/temporal-windows", k, &json!({ "agent_id": agent, "scopes": ["x"], "duration_minutes": 307_445_734_561_825_920_i64, "reason": "r" })).await,
            "invalid_field", "duration_minutes");
    // The error names the field that was sent; two ways of giving one length are refused.
    let window = |extra: Value| {
        let mut body = json!({ "agent_id": agent, "scopes": ["x"], "reason": "r" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    refused(s.post("/api/v1/enforce/temporal-windows", k, &window(json!({ "duration_seconds": -1 }))).await, "invalid_field", "duration_seconds");
    refused(s.post("/api/v1/enforce/temporal-windows", k, &window(json!({ "duration_seconds": 10, "duration_minutes": 5 }))).await,
            "invalid_field", "duration_minutes");
    let helper = s.agent("helper").await;
    let delegate = |extra: Value| {
        let mut body = json!({ "source_agent_id": agent, "target_agent_id": helper, "scopes": ["x"] });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    refused(s.post("/api/v1/enforce/delegate", k, &delegate(json!({ "ttl_hours": 0 }))).await, "invalid_field", "ttl_hours");
    refused(s.post("/api/v1/enforce/delegate", k, &delegate(json!({ "ttl_hours": 1, "duration_seconds": 5 }))).await, "invalid_field", "ttl_hours");
    // Rules: a bounded list of plain addresses.
    let rule = |emails: Value| json!({ "name": "mail", "condition": { "type": "action_type", "action_types": ["pay"] }, "action": "alert", "severity": "low", "alert": { "emails": emails } });
    let fifty_one: Vec<String> = (0..51).map(|i| format!("a{i}@example.com")).collect();
    refused(s.post("/api/v1/rules", k, &rule(json!(fifty_one))).await, "invalid_field", "alert.emails");
    // An alert that names nowhere to send it is refused, not kept as a silent flag.
    refused(s.post("/api/v1/rules", k, &rule(json!([]))).await, "invalid_field", "`alert`");
    let no_alert = json!({ "name": "mail", "condition": { "type": "action_type", "action_types": ["pay"] }, "action": "alert", "severity": "low" });
    refused(s.post("/api/v1/rules", k, &no_alert).await, "invalid_field", "`alert`");
    refused(s.post("/api/v1/rules", k, &rule(json!(["ops@example.com\r\nBcc: x@evil.test"]))).await, "invalid_field", "alert.emails[0]");
    // Policies: a name without control characters, a bounded list of globs.
    let policy = |name: &str, n: usize| json!({ "name": name, "policy_type": "action_type", "action_types": vec!["a.*"; n], "decision": "block" });
    refused(s.post("/api/v1/enforce/policies", k, &policy("nul\u{0}name", 1)).await, "invalid_policy", "name");
    refused(s.post("/api/v1/enforce/policies", k, &policy("many", 300)).await, "invalid_policy", "action_types");
    // Webhooks: a bounded description.
    refused(s.post("/api/v1/enforce/webhooks", k, &json!({ "url": "https://example.com/h", "events": ["*"], "description": "d".repeat(5000) })).await,
            "invalid_field", "description");
    // A body is an object: an array is not read as a struct's fields in order.
    refused(s.post_raw("/api/v1/enforce/intercept", k, "[\"delete_user\"]").await, "invalid_field", "object");
    // Agent history pages like decision lists.
    for per_page in [0, 99_999] {
        refused(s.get(&format!("/api/v1/enforce/agents/{agent}/history?per_page={per_page}"), k).await, "invalid_query", "per_page");
    }
    // Page sizes, page numbers, statuses and times a query cannot mean are refused,
    // naming the parameter, not read as something else (found by review: `limit=0`
    // gave one item, `limit=5000` a thousand, `page=0` the first page, an unknown
    // status an empty list).
    for path in ["/api/v1/enforce/escalations", "/api/v1/enforce/sessions", "/api/v1/violations"] {
        for limit in [0, 1001] {
            refused(s.get(&format!("{path}?limit={limit}"), k).await, "invalid_query", "`limit`: must be between 1 and 1000");
        }
    }
    refused(s.get("/api/v1/enforce/decisions?page=0", k).await, "invalid_query", "`page`");
    refused(s.get(&format!("/api/v1/enforce/agents/{agent}/history?page=0"), k).await, "invalid_query", "`page`");
    refused(s.get(&format!("/api/v1/enforce/agents/{agent}/delegations?status=bogus"), k).await, "invalid_query", "`status`");
    refused(s.get("/api/v1/enforce/decisions?since=yesterday", k).await, "invalid_query", "neither an RFC 3339 time nor milliseconds");
    let (status, listed) = s.get("/api/v1/enforce/decisions?since=1&page=1&per_page=500", k).await;
    assert_eq!(status, StatusCode::OK, "milliseconds since the epoch are a time: {listed}");
    // A grant's free-form constraints, kept in memory and shown in every listing: as
    // bounded as a passport, even through the source agent's own key.
    let helper = s.agent("helper").await;
    let own_key = s.key(&["agent"], Some(&agent)).await;
    let constraints = json!({ "note": "c".repeat(20_000) });
    refused(s.post("/api/v1/enforce/delegate", &own_key, &json!({ "source_agent_id": agent, "target_agent_id": helper, "scopes": ["report.*"], "constraints": constraints })).await,
            "invalid_field", "constraints");
    let (status, g) = s.post("/api/v1/enforce/delegate", &own_key, &json!({ "source_agent_id": agent, "target_agent_id": helper, "scopes": ["report.*"], "constraints": { "max_amount": 50 } })).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    // A session's budgets name a bounded list of currencies.
    let currencies: serde_json::Map<String, Value> = (0..300).map(|i| (format!("C{i:03}"), json!(1))).collect();
    refused(s.post("/api/v1/enforce/sessions/start", k, &json!({ "agent_id": agent, "budgets": { "max_spend": currencies } })).await,
            "invalid_field", "budgets.max_spend");
    // A role's description, and a pack's and its definitions', as a policy's.
    refused(s.post("/api/v1/enforce/roles", k, &json!({ "name": "wordy", "description": "d".repeat(5000) })).await, "invalid_field", "description");
    let pack = |pack_description: &str, policy_description: &str| json!({ "name": "wordy", "version": "1.0.0", "description": pack_description,
        "policy_definitions": [{ "name": "p", "policy_type": "action_type", "action_types": ["x"], "decision": "block", "description": policy_description }] });
    refused(s.post("/api/v1/enforce/policy-packs", k, &pack("short", &"d".repeat(5000))).await, "invalid_policy", "policy_definitions[0].description");
    refused(s.post("/api/v1/enforce/policy-packs", k, &pack(&"d".repeat(5000), "short")).await, "invalid_policy", "`description`");
    // Ids in the path are bounded like ids, and a long one is not echoed back.
    let long_id = "x".repeat(5000);
    let got = s.get(&format!("/api/v1/enforce/agents/{long_id}"), k).await;
    refused(got.clone(), "invalid_field", "`id` in the path");
    assert!(got.1.to_string().len() < 500, "{}", got.1);
}

#[tokio::test]
async fn a_workspace_holds_a_bounded_number_of_grants() {
    let s = TestServer::start().await;
    let (source, target) = (s.agent("source").await, s.agent("target").await);
    let body = json!({ "source_agent_id": source, "target_agent_id": target, "scopes": ["x"] });
    let delegate = || s.post("/api/v1/enforce/delegate", &s.admin_key, &body);
    let (status, made) = delegate().await;
    assert_eq!(status, StatusCode::OK, "{made}");
    // Filled to the limit in memory (making 10,000 through the API takes long).
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    {
        let mut live = ws.live.lock();
        let one = live.authority.grants.values().next().unwrap().clone();
        for i in 1..praetor_server::config::limits::GRANTS_HELD_PER_WORKSPACE {
            let copy = praetor_server::authority::Grant { grant_id: format!("gr_copy_{i}"), ..one.clone() };
            live.authority.grants.insert(copy.grant_id.clone(), copy);
        }
    }
    let refused = delegate().await;
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("grants (in force"), "{}", refused.1);
    // A grant's amount budget names at most so many currencies.
    let many: serde_json::Map<String, Value> = (0..=praetor_server::config::limits::LIST_MAX).map(|i| (format!("C{i:03}"), json!(1))).collect();
    let too_many = json!({ "source_agent_id": source, "target_agent_id": target, "scopes": ["x"], "budgets": { "max_amount": many } });
    let got = s.post("/api/v1/enforce/delegate", &s.admin_key, &too_many).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("budgets.max_amount"), "{}", got.1);
    // A grant of no uses would be ended when made.
    let none = json!({ "source_agent_id": source, "target_agent_id": target, "scopes": ["x"], "max_uses": 0 });
    assert_error(&s.post("/api/v1/enforce/delegate", &s.admin_key, &none).await, 400, "invalid_field");
    // Ended grants count until the sweeper lets them leave memory.
    ws.live.lock().authority.grants.values_mut().take(10).for_each(|g| g.revoked = true);
    assert_error(&delegate().await, 409, "conflict");
    praetor_server::sessions::sweep(&s.state).await;
    assert_eq!(ws.live.lock().authority.grants.len(), praetor_server::config::limits::GRANTS_HELD_PER_WORKSPACE - 10);
    let (status, made) = delegate().await;
    assert_eq!(status, StatusCode::OK, "{made}");
    // Delegations at once fill the 9 places left and no more.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, url, key, body) = (s.client.clone(), s.url("/api/v1/enforce/delegate"), s.admin_key.clone(), body.clone());
        tasks.push(tokio::spawn(async move { client.post(url).header("X-API-Key", key).json(&body).send().await.unwrap().status() }));
    }
    let mut made = 0;
    for t in tasks {
        made += usize::from(t.await.unwrap() == StatusCode::OK);
    }
    assert_eq!(made, 9, "as many as there were places");
    assert_eq!(ws.live.lock().authority.grants.len(), praetor_server::config::limits::GRANTS_HELD_PER_WORKSPACE);
}

/// A body is sealed in the vault a level or two deeper than it came. Bodies nested 127
/// levels deep were once sealed into leaves no verifier could parse again (serde_json
/// stops at 128), which failed every audit from that entry on.
#[tokio::test]
async fn bodies_nested_deeper_than_a_leaf_may_be_are_refused() {
    let s = TestServer::start().await;
    let k = &s.admin_key;
    let nested = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!({ "k": inner }));
    let deep = s.post("/api/v1/enforce/intercept", k, &json!({ "action_type": "x", "metadata": nested(126) })).await;
    refused(deep, "invalid_field", "64 levels");
    let deep = s.post("/api/v1/enforce/policies", k, &json!({ "name": "deep", "policy_type": "metadata", "decision": "block",
        "conditions": { "rule": { "field": "a", "op": "==", "value": nested(100) } } })).await;
    refused(deep, "invalid_field", "64 levels");
    // Brackets inside strings are text, not nesting.
    let answer = s.intercept(json!({ "action_type": "x", "action_content": "{[".repeat(500), "metadata": { "m": nested(62), "note": "]}\"{" } })).await;
    assert_eq!(answer["decision"], "allow", "{answer}");
    // A body 64 levels deep is sealed deeper still, and read back.
    let (status, made) = s.post("/api/v1/enforce/policies", k, &json!({ "name": "deep", "policy_type": "metadata", "decision": "block",
        "conditions": { "rule": { "field": "a", "op": "==", "value": nested(60) } } })).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let (status, page) = s.get("/api/v1/enforce/vault/entries", k).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let sealed = page["entries"].as_array().unwrap().iter().find(|e| e["entry"]["kind"] == "policy.created").expect("the policy's entry");
    assert_eq!(sealed["entry"]["policy"]["conditions"]["rule"]["value"], nested(60), "read back from the sealed leaf");
}

/// `action_content` and agent-guard's `content` name the same thing. A body with both,
/// different, was once evaluated on `action_content` alone and `content` was lost, so
/// `{"action_content": "ls", "content": "rm -rf /"}` passed a policy on `rm -rf`. Such
/// a body is refused, naming both fields; two equal copies are one content.
#[tokio::test]
async fn a_body_with_two_different_contents_is_refused() {
    let s = TestServer::start().await;
    let k = &s.admin_key;
    let policy = json!({ "name": "No rm", "policy_type": "content_pattern", "action_types": ["sh.*"], "decision": "block", "conditions": { "patterns": ["rm -rf"] } });
    let (status, body) = s.post("/api/v1/enforce/policies", k, &policy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let both_named = |got: &(StatusCode, Value), prefix: &str| {
        assert_error(got, 400, "invalid_field");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{prefix}action_content")) && message.contains(&format!("{prefix}content")), "{}", got.1);
    };
    let two = json!({ "action_type": "sh.run", "action_content": "ls", "content": "rm -rf /", "metadata": {} });
    both_named(&s.post("/api/v1/enforce/intercept", k, &two).await, "");
    let batch = json!({ "actions": [{ "action_type": "sh.run", "action_content": "ls" }, two] });
    both_named(&s.post("/api/v1/enforce/batch", k, &batch).await, "actions[1].");
    // Either name alone, or both with the same text, is read.
    for body in [json!({ "action_type": "sh.run", "content": "rm -rf /" }),
                 json!({ "action_type": "sh.run", "action_content": "rm -rf /", "content": "rm -rf /" })] {
        assert_eq!(s.intercept(body).await["decision"], "block");
    }
    assert_eq!(s.intercept(json!({ "action_type": "sh.run", "action_content": "ls", "content": null })).await["decision"], "allow");
}

/// Assert a 400 with `code` whose message names `field`.
fn refused(got: (StatusCode, Value), code: &str, field: &str) {
    assert_error(&got, 400, code);
    assert!(got.1["error"]["message"].as_str().unwrap().contains(field), "{field}: {}", got.1);
}

/// An action type with an invisible character (zero-width space, bidi mark, BOM, soft
/// hyphen, line separator) or whitespace at either end once evaded `r.delete_*`. Such
/// requests, and such globs in new definitions, are refused naming the field; case
/// is ignored in matching (the decision corpus covers that over HTTP).
#[tokio::test]
async fn action_types_spelled_invisibly_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    let k = &s.admin_key;
    for t in ["r.delete\u{200b}_user", " r.delete_user", "r.delete_user ", "r.\u{200f}delete_user", "\u{feff}r.delete_user", "r.de\u{ad}lete_user", "r.delete_user\u{2028}"] {
        refused(s.post("/api/v1/enforce/intercept", k, &json!({ "action_type": t, "metadata": {} })).await, "invalid_field", "action_type");
        let batch = json!({ "actions": [{ "action_type": "r.read" }, { "action_type": t }] });
        refused(s.post("/api/v1/enforce/batch", k, &batch).await, "invalid_field", "actions[1].action_type");
    }
    let policy = json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["r.delete_*\u{200b}"], "decision": "block" });
    refused(s.post("/api/v1/enforce/policies", k, &policy).await, "invalid_policy", "action_types[0]");
    refused(s.post("/api/v1/enforce/agents", k, &json!({ "name": "a", "scopes": ["db.*", " db.read"] })).await, "invalid_field", "scopes[1]");
    let boundary = json!({ "allowed_action_types": [], "denied_action_types": ["db.drop\u{2060}*"] });
    refused(s.post("/api/v1/enforce/agents", k, &json!({ "name": "b", "permission_boundary": boundary })).await, "invalid_field", "permission_boundary.denied_action_types[0]");
    refused(s.post("/api/v1/enforce/roles", k, &json!({ "name": "r", "denied_action_types": ["db.drop* "] })).await, "invalid_field", "denied_action_types[0]");
    // Spelled visibly, a different case is the same action.
    let (status, body) = s.post("/api/v1/enforce/policies", k, &json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["r.delete_*"], "decision": "block" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.intercept(json!({ "action_type": "r.Delete_User" })).await["decision"], "block");
}

/// A field the batch or a hand-off does not read is refused, not dropped: a `session_id`
/// beside a batch's actions would have them decided outside the session (a killed one
/// among them), a hand-off's `content` would pass every content policy unread.
#[tokio::test]
async fn batches_and_hand_offs_refuse_fields_they_do_not_read() {
    let s = TestServer::start().await;
    let a = s.agent("worker").await;
    let b = s.agent("other").await;
    let (_, started) = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": a })).await;
    let session = started["session_id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/v1/enforce/sessions/{session}/kill"), &s.admin_key, &json!({ "reason": "stop" })).await;
    let got = s.post("/api/v1/enforce/batch", &s.admin_key, &json!({ "session_id": session, "actions": [{ "action_type": "db.read", "agent_id": a }] })).await;
    assert_error(&got, 400, "unknown_field");
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| m.contains("session_id")), "{}", got.1);
    // Inside the action, the session is read and the action refused as its end says.
    let (_, inside) = s.post("/api/v1/enforce/batch", &s.admin_key, &json!({ "actions": [{ "action_type": "db.read", "session_id": session }] })).await;
    assert_eq!(inside["results"][0]["decision"], "terminate", "{inside}");
    for field in ["content", "action_content", "action_type", "grant_id"] {
        let mut body = json!({ "source_agent_id": a, "target_agent_id": b, "instruction": "hi" });
        body[field] = json!("rm -rf /");
        let got = s.post("/api/v1/enforce/agent-comm", &s.admin_key, &body).await;
        assert_error(&got, 400, "unknown_field");
        assert!(got.1["error"]["message"].as_str().is_some_and(|m| m.contains(field)), "{field}: {}", got.1);
    }
    // What the SDK sends (wire §2.5) still passes.
    let (status, ok) = s.post("/api/v1/enforce/agent-comm", &s.admin_key, &json!({
        "source_agent_id": a, "target_agent_id": b, "instruction": "hi", "metadata": { "framework": "x", "via": "y", "source": "a", "target": "b" },
        "chain_id": "ch_1", "chain_step": 2, "parent_decision_id": "dec_1",
    })).await;
    assert_eq!((status, ok["ok"].as_bool()), (StatusCode::OK, Some(true)), "{ok}");
}

/// Ids a body names are bounded and plain, refused naming their field, and no error
/// repeats megabytes the request sent.
#[tokio::test]
async fn ids_are_bounded_and_errors_stay_short() {
    let s = TestServer::start().await;
    let a = s.agent("worker").await;
    let b = s.agent("other").await;
    let long = "a".repeat(200_000);
    let cases = [
        ("/api/v1/enforce/sessions/start", json!({ "agent_id": long }), "agent_id"),
        ("/api/v1/enforce/sessions/start", json!({ "credential_id": long }), "credential_id"),
        ("/api/v1/enforce/delegate", json!({ "source_agent_id": long, "target_agent_id": b, "scopes": ["x"] }), "source_agent_id"),
        ("/api/v1/enforce/delegate", json!({ "source_agent_id": a, "target_agent_id": b, "scopes": ["x"], "parent_grant_id": long }), "parent_grant_id"),
        ("/api/v1/enforce/delegate/verify", json!({ "grant_id": long }), "grant_id"),
        ("/api/v1/enforce/temporal-windows", json!({ "agent_id": long, "action_types": ["x"], "duration_minutes": 5 }), "agent_id"),
        ("/api/v1/enforce/breakglass", json!({ "agent_id": long, "justification": "j" }), "agent_id"),
        ("/api/v1/enforce/keys", json!({ "scopes": ["agent"], "agent_id": long }), "agent_id"),
        ("/api/v1/enforce/delegate", json!({ "source_agent_id": "", "target_agent_id": b, "scopes": ["x"] }), "source_agent_id"),
        ("/api/v1/enforce/breakglass", json!({ "agent_id": "agt\u{0}x", "justification": "j" }), "agent_id"),
        ("/api/v1/enforce/intercept", json!({ "action_type": "x", "chain_id": "c\u{0}" }), "chain_id"),
        ("/api/v1/enforce/intercept", json!({ "action_type": "x", "parent_decision_id": "d\u{7}" }), "parent_decision_id"),
    ];
    for (path, body, field) in cases {
        let got = s.post(path, &s.admin_key, &body).await;
        assert_error(&got, 400, "invalid_field");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(field) && message.len() < 300, "{path} {field}: {message}");
    }
    // An id not found, or a query value refused, is quoted only in part.
    for path in [format!("/api/v1/enforce/agents/{}", "b".repeat(60_000)), format!("/api/v1/enforce/sessions?status={}", "c".repeat(60_000))] {
        let got = s.get(&path, &s.admin_key).await;
        assert!(got.0.is_client_error(), "{}", got.1);
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.len() <= 1100, "{} bytes: {}", message.len(), &message[..200]);
    }
}

/// A key revoked twice is revoked once: the second is `409` with the time that stands,
/// and seals nothing.
#[tokio::test]
async fn a_key_is_revoked_once() {
    let s = TestServer::start().await;
    let (_, made) = s.post("/api/v1/enforce/keys", &s.admin_key, &json!({ "scopes": ["read"] })).await;
    let id = made["key"]["key_id"].as_str().unwrap().to_owned();
    let (status, first) = s.post(&format!("/api/v1/enforce/keys/{id}/revoke"), &s.admin_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    s.clock.advance(5_000);
    let again = s.post(&format!("/api/v1/enforce/keys/{id}/revoke"), &s.admin_key, &json!({})).await;
    assert_error(&again, 409, "conflict");
    let first_at = first["key"]["revoked_at"].as_str().unwrap();
    assert!(again.1["error"]["message"].as_str().is_some_and(|m| m.contains("already revoked") && m.contains(first_at)), "{} / {first_at}", again.1);
    let entries = crate::harness::vault_entries(&s).await;
    let sealed = entries.iter().filter(|e| e["kind"] == "key.revoked").count();
    assert_eq!(sealed, 1, "{entries:?}");
}

/// A key bound to one agent reads a receipt as it reads the decision: by the agent its
/// entry seals. A row edited to name the key's agent shows it nothing of another's.
#[tokio::test]
async fn a_bound_key_gets_no_receipt_for_a_row_edited_to_name_its_agent() {
    let s = TestServer::start().await;
    let mine = s.agent("mine").await;
    let theirs = s.agent("theirs").await;
    let their_decision = s.intercept(json!({ "action_type": "x", "agent_id": theirs })).await;
    let id = their_decision["decision_id"].as_str().unwrap();
    let bound = s.key(&["agent"], Some(&mine)).await;
    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    db.execute("UPDATE decisions SET agent_id = ?1 WHERE decision_id = ?2", rusqlite::params![mine, id]).unwrap();
    assert_error(&s.get(&format!("/api/v1/enforce/decisions/{id}"), &bound).await, 404, "not_found");
    assert_error(&s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &bound).await, 404, "not_found");
    // An unbound key is told of the damage.
    assert_error(&s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &s.admin_key).await, 500, "record_damaged");
}
