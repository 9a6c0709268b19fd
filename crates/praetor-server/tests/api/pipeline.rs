//! The decision pipeline through the API: verdicts, identity, redaction, trust,
//! batches, hand-offs, stored decisions and exactness under concurrency.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{T0, TestServer, assert_error};

#[tokio::test]
async fn allow_block_and_the_authorisation_fields() {
    let s = TestServer::start().await;
    let agent = s.agent("worker").await;
    let pol = s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block", "priority": 5 })).await;
    let ok = s.intercept(json!({ "action_type": "read_user", "agent_id": agent, "metadata": {} })).await;
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["outcome"], "allowed");
    assert_eq!(ok["boundary_check"], "within_scope");
    assert!(ok["decision_id"].as_str().unwrap().starts_with("dec_"));
    assert!(ok["vault_entry_id"].is_u64());
    assert_eq!(ok["leaf_hash"].as_str().unwrap().len(), 64);
    let no = s.intercept(json!({ "action_type": "delete_user", "agent_id": agent, "metadata": { "jurisdiction": "EU" } })).await;
    assert_eq!(no["decision"], "block");
    assert_eq!(no["outcome"], "refused");
    assert_eq!(no["jurisdiction"], "EU");
    assert_eq!(no["policies_triggered"][0]["policy_id"], json!(pol));
    assert_eq!(no["policies_triggered"][0]["name"], "No deletes");
    assert_eq!(no["policies_triggered"][0]["decision"], "block");
    assert!(no["reasoning"].as_str().unwrap().contains("No deletes"), "{no}");
    assert!(no["trust_score"].as_u64().unwrap() < ok["trust_score"].as_u64().unwrap(), "a violation lowers trust");
    // The /v1 alias serves the same API.
    let (status, via_alias) = s.post("/v1/enforce/intercept", &s.admin_key, &json!({ "action_type": "delete_x" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(via_alias["decision"], "block");
}

#[tokio::test]
async fn identity_failures_say_which_check() {
    let s = TestServer::start().await;
    let answer = s.intercept(json!({ "action_type": "x", "agent_id": "agt_nobody" })).await;
    assert_eq!(answer["decision"], "block");
    assert_eq!(answer["identity"]["check"], "unknown_agent");
    assert!(answer["reasoning"].as_str().unwrap().contains("agt_nobody"), "{answer}");
    let agent = s.agent("retiring").await;
    let (status, _) = s.post(&format!("/api/v1/enforce/agents/{agent}/deactivate"), &s.admin_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let answer = s.intercept(json!({ "action_type": "x", "agent_id": agent })).await;
    assert_eq!(answer["decision"], "block");
    assert_eq!(answer["identity"]["check"], "agent_deactivated");
    // A key bound to one agent cannot act for another, and stands for its agent when
    // the request names none.
    let a = s.agent("a").await;
    let b = s.agent("b").await;
    let bound = s.key(&["agent"], Some(&a)).await;
    let (_, answer) = s.post("/api/v1/enforce/intercept", &bound, &json!({ "action_type": "x", "agent_id": b })).await;
    assert_eq!(answer["identity"]["check"], "key_bound_to_other_agent");
    let (_, answer) = s.post("/api/v1/enforce/intercept", &bound, &json!({ "action_type": "x", "agent_id": null })).await;
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["agent_id"], json!(a));
}

#[tokio::test]
async fn anonymous_and_redacted_requests_are_valid() {
    let s = TestServer::start().await;
    s.policy(json!({ "name": "No secrets", "policy_type": "content_pattern", "decision": "block", "conditions": { "patterns": ["password"] } })).await;
    let hash = "a".repeat(64);
    let answer = s.intercept(json!({ "action_type": "email.send", "agent_id": null, "action_content": null, "metadata": { "content_sha256": hash } })).await;
    assert_eq!(answer["decision"], "allow", "redacted content is skipped by default: {answer}");
    assert_eq!(answer["agent_id"], Value::Null);
    let id = answer["decision_id"].as_str().unwrap();
    let (_, stored) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
    assert_eq!(stored["decision"]["action_content"], Value::Null);
    // The workspace can choose to refuse what it cannot see.
    let (status, _) = s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "on_redacted_content": "block" })).await;
    assert_eq!(status, StatusCode::OK);
    let answer = s.intercept(json!({ "action_type": "email.send", "action_content": null, "metadata": { "content_sha256": hash } })).await;
    assert_eq!(answer["decision"], "block", "{answer}");
    // Content that is present is checked, and agent-guard's `content` name works too.
    let answer = s.intercept(json!({ "action_type": "email.send", "content": "my password is x" })).await;
    assert_eq!(answer["decision"], "block");
    let (status, body) = s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "on_redacted_content": "maybe" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn default_decision_applies_when_nothing_matches() {
    let s = TestServer::start().await;
    s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "default_decision": "block" })).await;
    s.policy(json!({ "name": "reads ok", "policy_type": "action_type", "action_types": ["read*"], "decision": "allow" })).await;
    assert_eq!(s.intercept(json!({ "action_type": "read_x" })).await["decision"], "allow");
    let other = s.intercept(json!({ "action_type": "write_x" })).await;
    assert_eq!(other["decision"], "block");
    assert_eq!(other["policies_triggered"][0]["policy_id"], "__default");
}

#[tokio::test]
async fn batch_counts_and_limits() {
    let s = TestServer::start().await;
    s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    s.policy(json!({ "name": "Big payments", "policy_type": "metadata", "action_types": ["pay"], "decision": "escalate",
                     "conditions": { "rule": { "field": "amount", "op": ">", "value": 100 } } })).await;
    let actions = json!({ "actions": [
        { "action_type": "read", "agent_id": null, "metadata": {} },
        { "action_type": "delete_a", "agent_id": null, "metadata": {} },
        { "action_type": "pay", "agent_id": null, "metadata": { "amount": 500 } },
        { "action_type": "pay", "agent_id": null, "metadata": { "amount": 5 } },
    ]});
    let (status, body) = s.post("/api/v1/enforce/batch", &s.admin_key, &actions).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["total"].as_u64(), body["allowed"].as_u64(), body["blocked"].as_u64(), body["escalated"].as_u64()),
               (Some(4), Some(2), Some(1), Some(1)));
    let results = body["results"].as_array().unwrap();
    let decisions: Vec<&str> = results.iter().map(|r| r["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["allow", "block", "escalate", "allow"]);
    let too_many = json!({ "actions": vec![json!({ "action_type": "x" }); 501] });
    assert_error(&s.post("/api/v1/enforce/batch", &s.admin_key, &too_many).await, 400, "batch_too_large");
    let one_bad = json!({ "actions": [{ "action_type": "x" }, { "action_type": 7 }] });
    let got = s.post("/api/v1/enforce/batch", &s.admin_key, &one_bad).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("actions[1]"), "{}", got.1);
    let (_, list) = s.get("/api/v1/enforce/decisions", &s.admin_key).await;
    assert_eq!(list["total"], 4, "a rejected batch records nothing");
}

/// A batch's item is the answer `/enforce/intercept` gives, fields in the same order.
#[tokio::test]
async fn batch_items_are_intercept_answers() {
    let s = TestServer::start().await;
    let raw = |path: &'static str, body: Value| {
        let req = s.client.post(s.url(path)).header("x-api-key", &s.admin_key).json(&body);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    // The object keys in the order they are written: a quoted part followed by `:`.
    let keys = |text: &str| -> Vec<String> {
        let parts: Vec<&str> = text.split('"').collect();
        parts.windows(2).skip(1).step_by(2).filter(|w| w[1].starts_with(':')).map(|w| w[0].to_owned()).collect()
    };
    let action = json!({ "action_type": "read", "agent_id": null, "metadata": {} });
    let one = raw("/api/v1/enforce/intercept", action.clone()).await;
    let batch = raw("/api/v1/enforce/batch", json!({ "actions": [action] })).await;
    let item = &batch[batch.find(r#""results":["#).unwrap() + 11..];
    assert_eq!(keys(item), keys(&one), "{item}\n{one}");
    assert!(keys(&one).len() > 10, "{one}");
}

#[tokio::test]
async fn agent_comm_authorises_a_hand_off() {
    let s = TestServer::start().await;
    let a = s.agent("planner").await;
    let b = s.agent("executor").await;
    let (status, ok) = s.post("/api/v1/enforce/agent-comm", &s.admin_key, &json!({
        "source_agent_id": a, "target_agent_id": b, "instruction": "summarise the ticket",
        "metadata": { "framework": "langchain", "via": "tool" }, "chain_id": "chn_0123456789abcdef0123", "chain_step": 2,
        "parent_decision_id": "dec_01a24e77546fb5e12c38d776"
    })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ok["decision"], "allow");
    assert_eq!((&ok["chain_id"], &ok["chain_step"], &ok["parent_decision_id"]), (&json!("chn_0123456789abcdef0123"), &json!(2), &json!("dec_01a24e77546fb5e12c38d776")));
    // The chain fields are the row's: read back, the decision answers them as it did.
    let (_, read) = s.get(&format!("/api/v1/enforce/decisions/{}", ok["decision_id"].as_str().unwrap()), &s.admin_key).await;
    let read = &read["decision"];
    for field in ["chain_id", "chain_step", "parent_decision_id", "decision", "agent_id", "created_at"] {
        assert_eq!(read[field], ok[field], "{field}: {read}");
    }
    let (_, no) = s.post("/api/v1/enforce/agent-comm", &s.admin_key, &json!({ "source_agent_id": a, "target_agent_id": "agt_ghost" })).await;
    assert_eq!(no["decision"], "block");
    assert_eq!(no["identity"]["check"], "unknown_target");
    s.policy(json!({ "name": "No instructions", "policy_type": "action_type", "action_types": ["agent_instruction"], "decision": "block" })).await;
    let (_, no) = s.post("/api/v1/enforce/agent-comm", &s.admin_key, &json!({ "source_agent_id": a, "target_agent_id": b })).await;
    assert_eq!(no["decision"], "block");
}

#[tokio::test]
async fn decisions_are_stored_and_filtered() {
    let s = TestServer::start().await;
    let a = s.agent("lister").await;
    s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    for t in ["read", "delete_a", "read", "delete_b"] {
        s.intercept(json!({ "action_type": t, "agent_id": a, "action_content": format!("content of {t}") })).await;
        s.clock.advance(1000);
    }
    let (_, all) = s.get("/api/v1/enforce/decisions?per_page=2&page=1", &s.admin_key).await;
    assert_eq!(all["total"], 4);
    assert_eq!(all["decisions"].as_array().unwrap().len(), 2);
    let (_, blocked) = s.get(&format!("/api/v1/enforce/decisions?decision=block&agent_id={a}"), &s.admin_key).await;
    assert_eq!(blocked["total"], 2);
    let (_, typed) = s.get("/api/v1/enforce/decisions?action_type=read", &s.admin_key).await;
    assert_eq!(typed["total"], 2);
    let (_, since) = s.get("/api/v1/enforce/decisions?since=2026-01-07T12:00:02Z", &s.admin_key).await;
    assert_eq!(since["total"], 2);
    assert_error(&s.get("/api/v1/enforce/decisions?since=yesterday", &s.admin_key).await, 400, "invalid_query");
    assert_error(&s.get("/api/v1/enforce/decisions?decision=maybe", &s.admin_key).await, 400, "invalid_query");
    let one = &blocked["decisions"][0];
    let (_, full) = s.get(&format!("/api/v1/enforce/decisions/{}", one["decision_id"].as_str().unwrap()), &s.admin_key).await;
    assert_eq!(full["decision"]["decision"], "block");
    assert!(full["decision"]["action_content"].as_str().unwrap().starts_with("content of delete"));
    let (_, agent) = s.get(&format!("/api/v1/enforce/agents/{a}"), &s.admin_key).await;
    assert_eq!((agent["agent"]["allowed_actions"].as_u64(), agent["agent"]["blocked_actions"].as_u64()), (Some(2), Some(2)));
    assert_eq!(agent["agent"]["last_seen_at"], "2026-01-07T12:00:03.000Z");
    let (_, hist) = s.get(&format!("/api/v1/enforce/agents/{a}/history"), &s.admin_key).await;
    assert_eq!(hist["total"], 4);
}

#[tokio::test]
async fn velocity_is_exact_under_concurrency() {
    let s = TestServer::start().await;
    let a = s.agent("burst").await;
    s.policy(json!({ "name": "Five a minute", "policy_type": "sequence", "action_types": ["send"], "decision": "block",
                     "conditions": { "velocity": { "max": 5, "window_seconds": 60 } } })).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let client = s.client.clone();
        let url = s.url("/api/v1/enforce/intercept");
        let key = s.admin_key.clone();
        let body = json!({ "action_type": "send", "agent_id": a });
        tasks.push(tokio::spawn(async move {
            let res = client.post(url).header("X-API-Key", key).json(&body).send().await.unwrap();
            res.json::<Value>().await.unwrap()
        }));
    }
    let mut allowed = 0;
    let mut ids = HashSet::new();
    for t in tasks {
        let answer = t.await.unwrap();
        if answer["decision"] == "allow" {
            allowed += 1;
        }
        ids.insert(answer["vault_entry_id"].as_u64().unwrap());
    }
    assert_eq!(allowed, 5);
    assert_eq!(ids.len(), 40, "every decision has its own vault entry");
    // A minute later the window has moved on.
    s.clock.advance(61_000);
    assert_eq!(s.intercept(json!({ "action_type": "send", "agent_id": a })).await["decision"], "allow");
}

#[tokio::test]
async fn a_decision_whose_clock_reading_is_behind_a_recorded_action_counts_it() {
    // Decision B reads the clock, decision A reads it a millisecond later, takes the
    // lock first and records its action; then B is evaluated. Played here with the clock
    // set back between the two.
    let s = TestServer::start().await;
    let a = s.agent("racer").await;
    s.policy(json!({ "name": "Two a minute", "policy_type": "sequence", "action_types": ["send"], "decision": "block",
                     "conditions": { "velocity": { "max": 2, "window_seconds": 60 } } })).await;
    let send = json!({ "action_type": "send", "agent_id": a });
    s.clock.set(T0 + 1_000);
    assert_eq!(s.intercept(send.clone()).await["decision"], "allow");
    s.clock.set(T0);
    assert_eq!(s.intercept(send.clone()).await["decision"], "allow");
    assert_eq!(s.intercept(send.clone()).await["decision"], "block", "both earlier sends count");
    // B was made at A's time, not before it: 60.9 s after A both are still in the window
    // (B recorded at its own reading, 60.9 s old by then, would have left it).
    s.clock.set(T0 + 60_900);
    let third = s.intercept(send.clone()).await;
    assert_eq!(third["decision"], "block", "{third}");
    s.clock.set(T0 + 61_001);
    assert_eq!(s.intercept(send).await["decision"], "allow", "both left the window together");
}

#[tokio::test]
async fn trust_falls_on_violations_and_recovers_slowly() {
    let s = TestServer::start().await;
    let a = s.agent("learner").await;
    s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    let start = s.intercept(json!({ "action_type": "read", "agent_id": a })).await["trust_score"].as_u64().unwrap();
    let after_block = s.intercept(json!({ "action_type": "delete_x", "agent_id": a })).await["trust_score"].as_u64().unwrap();
    assert_eq!(after_block, start - 5);
    let mut last = after_block;
    for _ in 0..10 {
        last = s.intercept(json!({ "action_type": "read", "agent_id": a })).await["trust_score"].as_u64().unwrap();
    }
    assert_eq!(last, after_block + 1, "ten clean actions raise trust by one");
}

#[tokio::test]
async fn policy_crud_changes_decisions_at_once() {
    let s = TestServer::start().await;
    let id = s.policy(json!({ "name": "p", "policy_type": "action_type", "action_types": ["x"], "decision": "block" })).await;
    assert_eq!(s.intercept(json!({ "action_type": "x" })).await["decision"], "block");
    let (status, body) = s.put(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key,
        &json!({ "name": "p", "policy_type": "action_type", "action_types": ["x"], "decision": "escalate" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.intercept(json!({ "action_type": "x" })).await["decision"], "escalate");
    let (_, got) = s.get(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key).await;
    assert_eq!(got["policy"]["decision"], "escalate");
    let (status, _) = s.delete(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.intercept(json!({ "action_type": "x" })).await["decision"], "allow");
    assert_error(&s.delete(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key).await, 404, "not_found");
    let (_, list) = s.get("/api/v1/enforce/policies", &s.admin_key).await;
    assert_eq!(list["policies"], json!([]));
}

/// A decision read back is the answer it was given (less what only the moment had: its
/// latency and leaf hash; plus its content and entry number), though its row keeps only
/// what its sealed entry cannot give back. Allow, block, escalate, in a session and with
/// a jurisdiction.
#[tokio::test]
async fn a_stored_decision_reads_back_as_it_was_answered() {
    let s = TestServer::start().await;
    let agent = s.agent("reader").await;
    s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    s.policy(json!({ "name": "Big payments", "policy_type": "metadata", "action_types": ["pay"], "decision": "escalate",
                     "conditions": { "rule": { "field": "amount", "op": ">", "value": 100 } } })).await;
    let (status, started) = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent })).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let session = started["session_id"].as_str().unwrap();
    let requests = [
        json!({ "action_type": "read_user", "agent_id": agent, "action_content": "who is alice", "metadata": {} }),
        json!({ "action_type": "delete_user", "agent_id": agent, "action_content": "drop alice", "metadata": { "jurisdiction": "EU" } }),
        json!({ "action_type": "pay", "agent_id": null, "metadata": { "amount": 500 } }),
        json!({ "action_type": "tool.call", "agent_id": null, "session_id": session, "metadata": {} }),
    ];
    let mut verdicts = Vec::new();
    for request in requests {
        let mut answer = s.intercept(request.clone()).await;
        let id = answer["decision_id"].as_str().unwrap().to_owned();
        verdicts.push(answer["decision"].as_str().unwrap().to_owned());
        let row = s.state.store.get_decision(&s.state.workspace_ids()[0], &id).await.unwrap().unwrap();
        assert!(row.body.get("decision").is_none() && row.body.get("policies_triggered").is_none(), "the row keeps the rest only: {}", row.body);
        let (status, stored) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{stored}");
        let answer = answer.as_object_mut().unwrap();
        let vault_entry_id = answer.remove("vault_entry_id").unwrap();
        answer.remove("latency_ms").unwrap();
        answer.remove("leaf_hash").unwrap();
        answer.insert("vault_entry_id".into(), vault_entry_id);
        answer.insert("action_content".into(), request.get("action_content").cloned().unwrap_or(Value::Null));
        assert_eq!(stored["decision"], Value::Object(answer.clone()));
        let (_, listed) = s.get(&format!("/api/v1/enforce/decisions?per_page=1&action_type={}", request["action_type"].as_str().unwrap()), &s.admin_key).await;
        assert_eq!(listed["decisions"][0], Value::Object(answer.clone()), "the list shows the same");
    }
    assert_eq!(verdicts, ["allow", "block", "escalate", "allow"]);
}

/// Found by a review: histories in memory held only what the policies in force needed,
/// so a rate limit or an ordered sequence added (or widened) after a burst did not
/// count the burst, until a restart read the store again.
#[tokio::test]
async fn a_policy_that_looks_further_back_counts_what_came_before_it() {
    let s = TestServer::start().await;
    let a = s.agent("exporter").await;
    let export = json!({ "action_type": "report.export", "agent_id": a });
    // No sequence policy yet: nothing is kept in memory for one.
    for _ in 0..5 {
        assert_eq!(s.intercept(export.clone()).await["decision"], "allow");
        s.clock.advance(1_000);
    }
    s.policy(json!({ "name": "Three an hour", "policy_type": "sequence", "action_types": ["report.export"], "decision": "block",
                     "conditions": { "velocity": { "max": 3, "window_seconds": 3600 } } })).await;
    let answer = s.intercept(export.clone()).await;
    assert_eq!(answer["decision"], "block", "{answer}");
    assert!(answer["reasoning"].to_string().contains("5 `report.export` actions"), "{answer}");

    // In a session: three actions, then a per-session limit of two.
    let b = s.agent("mailer").await;
    let (_, session) = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": b })).await;
    let sid = session["session_id"].as_str().unwrap().to_owned();
    let mail = json!({ "action_type": "email.send", "agent_id": b, "session_id": sid });
    for _ in 0..3 {
        assert_eq!(s.intercept(mail.clone()).await["decision"], "allow");
    }
    s.policy(json!({ "name": "Two mails a session", "policy_type": "sequence", "action_types": ["email.send"], "decision": "block",
                     "conditions": { "velocity": { "max": 2, "window_seconds": 7200, "per": "session" } } })).await;
    let answer = s.intercept(mail).await;
    assert_eq!(answer["decision"], "block", "{answer}");

    // An ordered sequence with a window longer than any before: the read, kept only for
    // the two hours above and pruned from memory, still counts.
    let c = s.agent("reader").await;
    assert_eq!(s.intercept(json!({ "action_type": "db.read_users", "agent_id": c })).await["decision"], "allow");
    s.clock.advance(3 * 3600 * 1000);
    // Another decision prunes what the two-hour window no longer needs.
    assert_eq!(s.intercept(json!({ "action_type": "noop", "agent_id": a })).await["decision"], "allow");
    s.policy(json!({ "name": "No upload after a read", "policy_type": "sequence", "decision": "block",
                     "conditions": { "ordered": { "first": ["db.read*"], "then": ["upload.*"], "within_seconds": 86400 } } })).await;
    let answer = s.intercept(json!({ "action_type": "upload.s3", "agent_id": c })).await;
    assert_eq!(answer["decision"], "block", "{answer}");
    // Memory was read again once, not on every decision: the next one is decided alike.
    assert_eq!(s.intercept(json!({ "action_type": "upload.s3", "agent_id": c })).await["decision"], "block");
}

/// Found by a review: an anonymous request (no agent named, a key bound to none) has no
/// scopes, boundary or history, so per-agent checks cannot apply to it. A workspace can
/// refuse such requests.
#[tokio::test]
async fn a_workspace_can_refuse_anonymous_requests() {
    let s = TestServer::start().await;
    let a = s.agent("named").await;
    let unbound = s.key(&["agent"], None).await;
    let anonymous = json!({ "action_type": "shell.exec" });
    let ask = |key: String, body: Value| {
        let s = &s;
        async move { s.post("/api/v1/enforce/intercept", &key, &body).await.1 }
    };
    assert_eq!(ask(unbound.clone(), anonymous.clone()).await["decision"], "allow", "allowed by default (wire compatibility)");
    let (status, put) = s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "allow_anonymous": false })).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["settings"]["allow_anonymous"], false);
    let answer = ask(unbound.clone(), anonymous.clone()).await;
    assert_eq!(answer["decision"], "block", "{answer}");
    assert_eq!(answer["identity"]["check"], "anonymous_refused", "{answer}");
    // Naming the agent, or a key bound to it, still works.
    assert_eq!(ask(unbound, json!({ "action_type": "shell.exec", "agent_id": a })).await["decision"], "allow");
    let bound = s.key(&["agent"], Some(&a)).await;
    assert_eq!(ask(bound, anonymous).await["decision"], "allow");
    assert_error(&s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "allow_anonymous": "no" })).await, 400, "invalid_field");
}

/// A machine whose clock reads before 1970 or past the year 9999 is misconfigured, but
/// the actions it is asked about still get an answer: the decision is made (a time
/// policy that cannot place the time fails closed), stored, read back and sealed.
#[tokio::test]
async fn a_clock_outside_the_usual_years_still_answers() {
    let s = TestServer::start().await;
    let agent = s.agent("timeless").await;
    s.policy(json!({ "name": "office hours", "policy_type": "temporal", "decision": "block",
                     "conditions": { "timezone": "Europe/Paris", "blocked_hours": [3] } })).await;
    // 1969-12-31T00:00Z (01:00 in Paris, an open hour), and 2 January 10000 at 01:00
    // and at 03:00 in Paris.
    let year_10000 = 253_402_300_800_000 + 86_400_000;
    for (at, verdict) in [(-86_400_000_i64, "allow"), (year_10000, "allow"), (year_10000 + 2 * 3_600_000, "block")] {
        s.clock.set(at);
        let got = s.intercept(json!({ "action_type": "tool.search", "agent_id": agent })).await;
        assert_eq!(got["decision"], verdict, "{got}");
        let id = got["decision_id"].as_str().unwrap();
        let (status, stored) = s.get(&format!("/api/v1/enforce/decisions/{id}"), &s.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{stored}");
        let (status, receipt) = s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &s.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{receipt}");
    }
}

/// A JSON number that a 64-bit float does not hold exactly is compared as written, not
/// as the float it rounds to: `10000.0000000000001` against `amount > 10000`, a spend
/// of `1.00000000000000001` against a budget of 1, and a policy's own threshold so
/// written. A typed field refuses such a number, naming it.
#[tokio::test]
async fn numbers_a_float_would_round_are_compared_as_written() {
    let s = TestServer::start().await;
    let agent = s.agent("payer").await;
    s.policy(json!({ "name": "Large", "policy_type": "metadata", "action_types": ["pay"], "decision": "escalate",
                     "conditions": { "rule": { "field": "amount", "op": ">", "value": 10000 } } })).await;
    let pay = |amount: &str| format!(r#"{{"action_type": "pay", "agent_id": "{agent}", "metadata": {{"amount": {amount}, "currency": "EUR"}}}}"#);
    let decide = |body: String| async { s.post_raw("/api/v1/enforce/intercept", &s.admin_key, body).await };
    let (status, over) = decide(pay("10000.0000000000001")).await;
    assert_eq!(status, StatusCode::OK, "{over}");
    assert_eq!(over["decision"], "escalate", "{over}");
    assert_eq!(decide(pay("\"10000.0000000000001\"")).await.1["decision"], "escalate");
    assert_eq!(decide(pay("10000.0")).await.1["decision"], "allow");
    assert_eq!(decide(pay("10000.5")).await.1["decision"], "escalate");
    // A threshold written beyond a float's precision is not rounded either (sent raw:
    // `json!` would round it here, in the client).
    let tip = |amount: &str| format!(r#"{{"action_type": "tip", "agent_id": "{agent}", "metadata": {{"amount": {amount}}}}}"#);
    let raw_policy = r#"{"name": "Exact", "policy_type": "metadata", "action_types": ["tip"], "decision": "block",
                         "conditions": {"rule": {"field": "amount", "op": ">=", "value": 5.00000000000000001}}}"#;
    let (status, made) = s.post_raw("/api/v1/enforce/policies", &s.admin_key, raw_policy).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(decide(tip("5")).await.1["decision"], "allow", "5 is under 5.00000000000000001");
    assert_eq!(decide(tip("5.00000000000000001")).await.1["decision"], "block");
    // Floats as clients print them (shortest, Python's exponents) stay numbers.
    assert_eq!(decide(tip("3.0000000000000004e-09")).await.1["decision"], "allow");
    assert_eq!(decide(tip("28633.671000000002")).await.1["decision"], "block");
    // A session budget of 1 EUR: a spend a float reads as 1 is more than 1.
    let (_, started) = s.post("/api/v1/enforce/sessions/start", &s.admin_key,
                              &json!({ "agent_id": agent, "budgets": { "max_spend": { "EUR": "1" } } })).await;
    let session = started["session_id"].as_str().unwrap().to_owned();
    let spend = format!(r#"{{"action_type": "tool.call", "agent_id": "{agent}", "session_id": "{session}", "metadata": {{"amount": 1.00000000000000001, "currency": "EUR"}}}}"#);
    let (_, spent) = decide(spend).await;
    assert_ne!(spent["decision"], "allow", "{spent}");
    assert!(spent["reasoning"].as_str().unwrap().contains("max_spend"), "{spent}");
    // A typed field refuses it, naming the field and the number as sent.
    let (status, refused) = s.post_raw("/api/v1/enforce/sessions/start", &s.admin_key,
                                       format!(r#"{{"agent_id": "{agent}", "budgets": {{"max_actions": 1e400}}}}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_actions") && message.contains("`1e400`"), "{message}");
}
