//! Policy operations: modes, the shadow report, promotion.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error};

#[tokio::test]
async fn a_shadow_policy_changes_nothing_is_counted_exactly_and_blocks_once_promoted() {
    let s = TestServer::start().await;
    let shadow = s.policy(json!({ "name": "Would block exports", "policy_type": "action_type", "action_types": ["export.*"],
                                  "decision": "block", "mode": "shadow" })).await;
    let escalating = s.policy(json!({ "name": "Hold big exports", "policy_type": "metadata", "action_types": ["export.*"], "decision": "escalate",
                                      "conditions": { "rule": { "field": "rows", "op": ">", "value": 1000 } } })).await;
    let mut would_change = 0;
    for (i, rows) in [10, 20, 5000, 30].iter().enumerate() {
        let a = s.intercept(json!({ "action_type": format!("export.csv{i}"), "metadata": { "rows": rows } })).await;
        let expected = if *rows > 1000 { "escalate" } else { "allow" };
        assert_eq!(a["decision"], expected, "the shadow policy never changes the answer: {a}");
        assert_eq!(a["shadow_policies"][0]["policy_id"], json!(shadow));
        assert_eq!(a["shadow_policies"][0]["would_decide"], "block");
        would_change += 1;
    }
    let unrelated = s.intercept(json!({ "action_type": "read" })).await;
    assert!(unrelated.get("shadow_policies").is_none());
    let (_, report) = s.get("/api/v1/enforce/shadow/report", &s.admin_key).await;
    let row = &report["policies"][0];
    assert_eq!(row["policy_id"], json!(shadow));
    assert_eq!(row["matched"], 4);
    assert_eq!(row["would_change"], would_change);
    let transitions = row["transitions"].as_array().unwrap();
    assert!(transitions.contains(&json!({ "from": "allow", "to": "block", "count": 3 })), "{row}");
    assert!(transitions.contains(&json!({ "from": "escalate", "to": "block", "count": 1 })), "{row}");
    assert_eq!(row["examples"].as_array().unwrap().len(), 4);
    let (_, since) = s.get("/api/v1/enforce/shadow/report?since=2026-01-08T00:00:00Z", &s.admin_key).await;
    assert_eq!(since["policies"][0]["matched"], 0);
    // Promoted, it blocks.
    let (status, promoted) = s.post(&format!("/api/v1/enforce/policies/{shadow}/promote"), &s.admin_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{promoted}");
    assert_eq!(promoted["policy"]["mode"], "enforce");
    let now_blocked = s.intercept(json!({ "action_type": "export.csv", "metadata": { "rows": 1 } })).await;
    assert_eq!(now_blocked["decision"], "block");
    assert_eq!(now_blocked["policies_triggered"][0]["policy_id"], json!(shadow));
    // Disabled policies are kept but never evaluated; `live` is the wire's name for enforce.
    s.put(&format!("/api/v1/enforce/policies/{escalating}"), &s.admin_key, &json!({ "name": "Hold big exports", "policy_type": "metadata",
        "action_types": ["export.*"], "decision": "escalate", "mode": "disabled",
        "conditions": { "rule": { "field": "rows", "op": ">", "value": 1000 } } })).await;
    let (_, listed) = s.get(&format!("/api/v1/enforce/policies/{escalating}"), &s.admin_key).await;
    assert_eq!(listed["policy"]["mode"], "disabled");
    assert_eq!(listed["policy"]["enabled"], false, "a disabled policy is not shown as enabled: {listed}");
    let held = s.intercept(json!({ "action_type": "export.csv", "metadata": { "rows": 5000 } })).await;
    assert_eq!(held["decision"], "block", "only the promoted policy answers: {held}");
    // Promoting it enables it; promoting what already enforces is a conflict.
    assert_error(&s.post(&format!("/api/v1/enforce/policies/{shadow}/promote"), &s.admin_key, &json!({})).await, 409, "conflict");
    let (status, promoted) = s.post(&format!("/api/v1/enforce/policies/{escalating}/promote"), &s.admin_key, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{promoted}");
    assert_eq!((promoted["policy"]["mode"].as_str(), promoted["policy"]["enabled"].as_bool()), (Some("enforce"), Some(true)), "{promoted}");
    // The same for one switched off by `enabled: false`.
    let off = s.policy(json!({ "name": "off", "policy_type": "action_type", "action_types": ["purge.*"], "decision": "block", "enabled": false })).await;
    assert_eq!(s.intercept(json!({ "action_type": "purge.all" })).await["decision"], "allow");
    let (status, promoted) = s.post(&format!("/api/v1/enforce/policies/{off}/promote"), &s.admin_key, &json!({})).await;
    assert_eq!((status, promoted["policy"]["enabled"].as_bool()), (StatusCode::OK, Some(true)), "{promoted}");
    assert_eq!(s.intercept(json!({ "action_type": "purge.all" })).await["decision"], "block");
    let live = s.policy(json!({ "name": "live alias", "policy_type": "action_type", "action_types": ["zz"], "decision": "block", "mode": "live" })).await;
    let (_, got) = s.get(&format!("/api/v1/enforce/policies/{live}"), &s.admin_key).await;
    assert_eq!(got["policy"]["mode"], "enforce");
    assert_error(&s.post("/api/v1/enforce/policies/pol_none/promote", &s.admin_key, &json!({})).await, 404, "not_found");
}

fn pack(version: &str, block: &str, extra: serde_json::Value) -> String {
    let mut defs = vec![json!({ "name": "no deletes", "policy_type": "action_type", "action_types": [block], "decision": "block" })];
    if !extra.is_null() {
        defs.push(extra);
    }
    json!({ "name": "core", "version": version, "policy_definitions": defs }).to_string()
}

#[tokio::test]
async fn packs_deploy_atomically_keep_versions_and_roll_back() {
    let s = TestServer::start().await;
    let deploy = |body: String| {
        let (c, u, k) = (s.client.clone(), s.url("/api/v1/enforce/policy-packs"), s.admin_key.clone());
        async move {
            let r = c.post(u).header("X-API-Key", k).body(body).send().await.unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (st, _) = deploy(pack("1.0.0", "delete_*", serde_json::Value::Null)).await;
    assert_eq!(st, StatusCode::OK);
    let v1 = s.intercept(json!({ "action_type": "delete_user" })).await;
    assert_eq!(v1["decision"], "block");
    assert_eq!(s.intercept(json!({ "action_type": "drop_table" })).await["decision"], "allow");
    // v1.1.0 with one invalid definition is rejected whole; v1.0.0 stays live.
    let bad = pack("1.1.0", "drop_*", json!({ "name": "broken", "policy_type": "content_pattern", "decision": "block", "conditions": { "patterns": ["(unclosed"] } }));
    let (_, dry) = s.post_raw("/api/v1/enforce/policy-packs/validate", &s.admin_key, bad.clone()).await;
    assert_eq!(dry["valid"], false);
    assert_eq!(dry["errors"][0]["index"], 1);
    assert_eq!(dry["errors"][0]["field"], "conditions.patterns[0]");
    let (st, refused) = deploy(bad).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"]["code"], "invalid_policy");
    assert!(refused["error"]["message"].as_str().unwrap().contains("policy_definitions[1].conditions.patterns[0]"), "{refused}");
    assert_eq!(s.intercept(json!({ "action_type": "drop_table" })).await["decision"], "allow", "nothing of v1.1.0 went live");
    // A valid v1.1.0, in YAML.
    let yaml = "name: core\nversion: 1.1.0\npolicy_definitions:\n  - name: no drops\n    policy_type: action_type\n    action_types: ['drop_*']\n    decision: block\n";
    let (st, deployed) = deploy(yaml.to_owned()).await;
    assert_eq!(st, StatusCode::OK, "{deployed}");
    let v11 = s.intercept(json!({ "action_type": "drop_table" })).await;
    assert_eq!(v11["decision"], "block");
    assert_eq!(s.intercept(json!({ "action_type": "delete_user" })).await["decision"], "allow", "v1.0.0's policies are gone");
    assert_ne!(v1["policy_set_hash"], v11["policy_set_hash"]);
    let (st, dup) = deploy(pack("1.1.0", "x", serde_json::Value::Null)).await;
    assert_eq!((st, dup["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    // Pack policies change only with the pack.
    let (_, policies) = s.get("/api/v1/enforce/policies", &s.admin_key).await;
    let id = policies["policies"][0]["policy_id"].as_str().unwrap().to_owned();
    assert_eq!(policies["policies"][0]["pack"], "core@1.1.0");
    assert_error(&s.delete(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key).await, 409, "conflict");
    // Roll back to the previous version.
    let (st, back) = s.post("/api/v1/enforce/policy-packs/core/rollback", &s.admin_key, &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{back}");
    assert_eq!(back["version"], "1.0.0");
    let after = s.intercept(json!({ "action_type": "delete_user" })).await;
    assert_eq!(after["decision"], "block");
    assert_eq!(s.intercept(json!({ "action_type": "drop_table" })).await["decision"], "allow");
    assert_eq!(after["policy_set_hash"], v1["policy_set_hash"], "the same definitions, the same hash");
    assert_ne!(after["policy_set_hash"], v11["policy_set_hash"]);
    let (_, versions) = s.get("/api/v1/enforce/policy-packs/core/versions", &s.admin_key).await;
    assert_eq!(versions["live_version"], "1.0.0");
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let (st, _) = s.post("/api/v1/enforce/policy-packs/core/rollback", &s.admin_key, &json!({ "version": "1.1.0" })).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.intercept(json!({ "action_type": "drop_table" })).await["decision"], "block");
    // After an empty version no version reads as live: a rollback must name where to
    // go. (It once re-installed that same empty version and answered as if rolled back.)
    let empty = json!({ "name": "core", "version": "2.0.0", "policy_definitions": [] });
    let (st, _) = s.post_raw("/api/v1/enforce/policy-packs", &s.admin_key, empty.to_string()).await;
    assert_eq!(st, StatusCode::OK);
    let refused = s.post("/api/v1/enforce/policy-packs/core/rollback", &s.admin_key, &json!({})).await;
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("no live version"), "{}", refused.1);
    let (st, back) = s.post("/api/v1/enforce/policy-packs/core/rollback", &s.admin_key, &json!({ "version": "1.0.0" })).await;
    assert_eq!((st, back["version"].as_str()), (StatusCode::OK, Some("1.0.0")), "{back}");
    assert_eq!(s.intercept(json!({ "action_type": "delete_user" })).await["decision"], "block");
}

#[tokio::test]
async fn governance_rules_block_flag_redirect_and_record_violations() {
    let s = TestServer::start().await;
    let agent = s.agent("mailer").await;
    let (status, ssn) = s.post("/api/v1/rules", &s.admin_key, &json!({
        "name": "No SSNs out", "condition": { "type": "contains_pii", "categories": ["ssn"] }, "action": "block", "severity": "critical"
    })).await;
    assert_eq!(status, StatusCode::OK, "{ssn}");
    let ssn_id = ssn["rule"]["rule_id"].as_str().unwrap().to_owned();
    let blocked = s.intercept(json!({ "action_type": "email.send", "agent_id": agent, "action_content": "SSN 123-45-6789" })).await;
    assert_eq!(blocked["decision"], "block", "a rule is active as soon as it is created: {blocked}");
    assert_eq!(blocked["policies_triggered"][0]["policy_id"], json!(ssn_id));
    let fine = s.intercept(json!({ "action_type": "email.send", "agent_id": agent, "action_content": "ref 000-12-3456" })).await;
    assert_eq!(fine["decision"], "allow", "an invalid SSN does not fire: {fine}");
    // A flag rule allows and records a violation of its severity.
    let (_, flag) = s.post("/api/v1/rules", &s.admin_key, &json!({
        "name": "Large refunds", "condition": { "all": [ { "type": "action_type", "action_types": ["refund.*"] },
                                                         { "field": "amount", "op": ">", "value": 500 } ] },
        "action": "flag", "severity": "medium"
    })).await;
    let flag_id = flag["rule"]["rule_id"].as_str().unwrap().to_owned();
    let flagged = s.intercept(json!({ "action_type": "refund.issue", "agent_id": agent, "metadata": { "amount": 900 } })).await;
    assert_eq!(flagged["decision"], "allow");
    assert_eq!(flagged["outcome"], "allowed_with_warning");
    let (_, list) = s.get(&format!("/api/v1/violations?rule_id={flag_id}"), &s.admin_key).await;
    let v = &list["violations"][0];
    assert_eq!(list["total"], 1);
    assert_eq!((v["severity"].as_str(), v["action"].as_str(), v["source"].as_str()), (Some("medium"), Some("flag"), Some("rule")));
    assert_eq!(v["decision_id"], flagged["decision_id"]);
    assert_eq!(v["metadata"]["amount"], 900);
    let (_, one) = s.get(&format!("/api/v1/violations/{}", v["violation_id"].as_str().unwrap()), &s.admin_key).await;
    assert_eq!(one["violation"]["rule_name"], "Large refunds");
    let (_, critical) = s.get("/api/v1/violations?severity=critical", &s.admin_key).await;
    assert_eq!(critical["total"], 1);
    assert_eq!(critical["violations"][0]["rule_id"], json!(ssn_id));
    // Violations are sealed, each in its decision's entry, with the metadata judged.
    let entries = crate::harness::vault_entries(&s).await;
    let sealed: Vec<&Value> = entries.iter().flat_map(|e| e["violations"].as_array().into_iter().flatten()).collect();
    let (_, page) = s.get("/api/v1/enforce/vault/entries?start=0&end=1000", &s.admin_key).await;
    assert_eq!(sealed.len(), 2);
    let sealed_flag = sealed.iter().find(|x| x["violation_id"] == v["violation_id"]).expect("the flag violation is sealed under its id");
    assert_eq!((sealed_flag["rule_id"].as_str(), sealed_flag["severity"].as_str(), sealed_flag["action"].as_str()), (Some(flag_id.as_str()), Some("medium"), Some("flag")));
    let flag_entry = page["entries"].as_array().unwrap().iter().find(|e| e["entry"]["decision_id"] == flagged["decision_id"]).unwrap();
    assert_eq!(flag_entry["entry"]["metadata"]["amount"], 900);
    assert_eq!(flag_entry["seq"], flagged["vault_entry_id"]);
    // Redirect holds the action for review in the named queue; trust below on the 0-1 scale.
    s.post("/api/v1/rules", &s.admin_key, &json!({
        "name": "Untrusted payments", "condition": { "all": [ { "type": "action_type", "action_types": ["pay"] }, { "trust_score_below": 0.9 } ] },
        "action": "redirect", "severity": "high", "queue": "finance-review"
    })).await;
    let held = s.intercept(json!({ "action_type": "pay", "agent_id": agent })).await;
    assert_eq!(held["decision"], "escalate");
    let (_, esc) = s.get(&format!("/api/v1/enforce/escalations/{}", held["escalation_id"].as_str().unwrap()), &s.admin_key).await;
    assert_eq!(esc["escalation"]["queue"], "finance-review");
    // A schedule limits when a rule applies (the test clock is Wednesday 12:00 UTC).
    s.post("/api/v1/rules", &s.admin_key, &json!({
        "name": "Night deploys", "condition": { "type": "action_type", "action_types": ["deploy"] }, "action": "block", "severity": "low",
        "schedule": { "timezone": "UTC", "hours": [0, 1, 2, 3, 4, 5] }
    })).await;
    assert_eq!(s.intercept(json!({ "action_type": "deploy", "agent_id": agent })).await["decision"], "allow");
    s.clock.set(crate::harness::T0 - 9 * 3_600_000);
    assert_eq!(s.intercept(json!({ "action_type": "deploy", "agent_id": agent })).await["decision"], "block");
    // CRUD and validation that names the field.
    let got = s.post("/api/v1/rules", &s.admin_key, &json!({ "name": "x", "condition": { "type": "contains_pii", "categories": ["dna"] }, "action": "block", "severity": "low" })).await;
    assert_error(&got, 400, "invalid_policy");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("condition.pii.categories"), "{}", got.1);
    assert_error(&s.post("/api/v1/rules", &s.admin_key, &json!({ "name": "x", "condition": { "trust_score_below": 7 }, "action": "block", "severity": "low" })).await, 400, "invalid_policy");
    // With a schedule, a bad field is named as written: in the schedule, or in the condition.
    let scheduled = |condition: Value, timezone: &str| json!({ "name": "x", "condition": condition, "action": "block", "severity": "low", "schedule": { "timezone": timezone, "hours": [1] } });
    let got = s.post("/api/v1/rules", &s.admin_key, &scheduled(json!({ "type": "action_type", "action_types": ["deploy"] }), "Mars/Olympus")).await;
    assert_error(&got, 400, "invalid_policy");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("`schedule.timezone`"), "{}", got.1);
    let got = s.post("/api/v1/rules", &s.admin_key, &scheduled(json!({ "type": "contains_pii", "categories": ["dna"] }), "UTC")).await;
    assert!(got.1["error"]["message"].as_str().unwrap().contains("`condition.pii.categories"), "{}", got.1);
    assert_error(&s.post("/api/v1/rules", &s.admin_key, &json!({ "name": "x", "condition": { "trust_score_below": 0.5 }, "action": "nuke", "severity": "low" })).await, 400, "invalid_field");
    assert_error(&s.post("/api/v1/rules", &s.admin_key, &json!({ "name": "x", "condition": { "trust_score_below": 0.5 }, "action": "redirect", "severity": "low" })).await, 400, "invalid_field");
    let (_, rules) = s.get("/api/v1/rules", &s.admin_key).await;
    assert_eq!(rules["rules"].as_array().unwrap().len(), 4);
    assert_error(&s.delete(&format!("/api/v1/enforce/policies/{ssn_id}"), &s.admin_key).await, 409, "conflict");
    let (status, _) = s.delete(&format!("/api/v1/rules/{ssn_id}"), &s.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.intercept(json!({ "action_type": "email.send", "agent_id": agent, "action_content": "SSN 123-45-6789" })).await["decision"], "allow");
}

#[tokio::test]
async fn review_fixes_for_policy_operations() {
    let s = TestServer::start_with(|c| c.allow_private_targets = true).await;
    // A shadow allow policy under a default block would change the decision.
    s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "default_decision": "block" })).await;
    let shadow = s.policy(json!({ "name": "would allow reads", "policy_type": "action_type", "action_types": ["read*"], "decision": "allow", "mode": "shadow" })).await;
    let a = s.intercept(json!({ "action_type": "read_x" })).await;
    assert_eq!(a["decision"], "block");
    assert_eq!(a["shadow_policies"][0]["would_decide"], "allow");
    assert_eq!(a["shadow_policies"][0]["would_change"], true);
    let (_, report) = s.get(&format!("/api/v1/enforce/shadow/report?policy_id={shadow}"), &s.admin_key).await;
    assert_eq!(report["policies"][0]["would_change"], 1);
    // A Slack URL is a credential: views show only its host, violations never carry it.
    let (_, rule) = s.post("/api/v1/rules", &s.admin_key, &json!({ "name": "alerting", "condition": { "type": "action_type", "action_types": ["pay"] },
        "action": "alert", "severity": "high", "alert": { "slack_webhook_url": "http://127.0.0.1:9/services/T000/B000/SECRETPART",
        "webhook_url": "http://127.0.0.1:9/hook/SECRETPART?token=SECRETPART", "emails": ["cfo@example.com"] } })).await;
    assert!(!rule.to_string().contains("SECRETPART"), "{rule}");
    let rule_id = rule["rule"]["rule_id"].as_str().or(rule["rule_id"].as_str()).unwrap().to_owned();
    // Nor through the policies API, where a rule is one policy among the others.
    let (_, policies) = s.get("/api/v1/enforce/policies", &s.admin_key).await;
    assert!(policies.to_string().contains("\"slack_webhook_url\":\"http://127.0.0.1/…\""), "the host is shown: {policies}");
    assert!(!policies.to_string().contains("SECRETPART"), "{policies}");
    let (_, one) = s.get(&format!("/api/v1/enforce/policies/{rule_id}"), &s.admin_key).await;
    assert!(!one.to_string().contains("SECRETPART") && one["policy"]["policy_id"] == json!(rule_id), "{one}");
    // A key bound to one agent (refused by the rules API) sees no alert targets at all.
    let agent = s.agent("bound reader").await;
    let bound = s.key(&["agent"], Some(&agent)).await;
    let (status, seen) = s.get(&format!("/api/v1/enforce/policies/{rule_id}"), &bound).await;
    assert_eq!((status.as_u16(), &seen["policy"]["governance"]["alert"]), (200, &Value::Null), "{seen}");
    let (_, all) = s.get("/api/v1/enforce/policies", &bound).await;
    assert!(!all.to_string().contains("cfo@example.com") && !all.to_string().contains("127.0.0.1/…"), "{all}");
    assert!(policies.to_string().contains("cfo@example.com"), "an unbound read key sees where alerts go: {policies}");
    // A rule changes through the rules API only, its mode too.
    assert_error(&s.post(&format!("/api/v1/enforce/policies/{rule_id}/promote"), &s.admin_key, &json!({})).await, 409, "conflict");
    s.intercept(json!({ "action_type": "pay" })).await;
    let (_, v) = s.get("/api/v1/violations?severity=high", &s.admin_key).await;
    assert!(!v.to_string().contains("SECRETPART"), "{v}");
    let (_, d) = s.get("/api/v1/enforce/deliveries", &s.admin_key).await;
    assert!(!d.to_string().contains("SECRETPART"), "{d}");
    let (_, page) = s.get("/api/v1/enforce/vault/entries?start=0&end=1000", &s.admin_key).await;
    assert!(!page.to_string().contains("SECRETPART"), "the vault holds no credential");
    // Pack policies cannot be promoted outside the pack.
    let pack = json!({ "name": "p", "version": "1.0.0", "policy_definitions": [
        { "name": "shadowed", "policy_type": "action_type", "action_types": ["zz"], "decision": "block", "mode": "shadow" }] });
    let (st, _) = s.post_raw("/api/v1/enforce/policy-packs", &s.admin_key, pack.to_string()).await;
    assert_eq!(st, StatusCode::OK);
    let (_, list) = s.get("/api/v1/enforce/policies", &s.admin_key).await;
    let pid = list["policies"].as_array().unwrap().iter().find(|p| p["pack"] == "p@1.0.0").unwrap()["policy_id"].as_str().unwrap().to_owned();
    assert_error(&s.post(&format!("/api/v1/enforce/policies/{pid}/promote"), &s.admin_key, &json!({})).await, 409, "conflict");
}

#[tokio::test]
async fn a_deleted_webhook_stops_sending() {
    let s = TestServer::start_with(|c| c.allow_private_targets = true).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_, hook) = s.post("/api/v1/enforce/webhooks", &s.admin_key, &json!({ "url": format!("http://127.0.0.1:{port}/x"), "events": ["*"] })).await;
    let id = hook["webhook"]["webhook_id"].as_str().unwrap().to_owned();
    s.post(&format!("/api/v1/enforce/webhooks/{id}/test"), &s.admin_key, &json!({})).await;
    let (st, _) = s.delete(&format!("/api/v1/enforce/webhooks/{id}"), &s.admin_key).await;
    assert_eq!(st, StatusCode::OK);
    let ws = s.state.workspace_ids()[0].clone();
    let mut dead = false;
    for _ in 0..50 {
        s.clock.advance(5_000);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let rows = s.state.store.list_deliveries(&ws, Some(&id), 10).await.unwrap();
        if !rows.is_empty() && rows.iter().all(|d| d.status == "dead") {
            dead = rows.iter().all(|d| d.last_error.as_deref() == Some("the webhook was deleted"));
            // Given up without an attempt: the count is what was tried before the
            // deletion (at most the one the dispatcher may have started meanwhile).
            assert!(rows.iter().all(|d| d.attempts <= 1), "{rows:?}");
            break;
        }
    }
    assert!(dead, "pending deliveries of a deleted webhook are given up, not sent");
}

/// A rule condition node that mixed keys (`{"all": [...], "not": {...}}`) once kept
/// only the first of all/any → not → trust_score_below → field → type and dropped the
/// rest silently, and unknown keys (`"bogus": 1`) were accepted. Both are refused,
/// naming the node's path.
#[tokio::test]
async fn rule_nodes_with_mixed_or_unknown_keys_are_refused_naming_the_node() {
    let s = TestServer::start().await;
    let refused = |got: (StatusCode, Value), path: &str| {
        assert_error(&got, 400, "invalid_policy");
        assert!(got.1["error"]["message"].as_str().unwrap().contains(&format!("`{path}`")), "{path}: {}", got.1);
    };
    let pay = json!({ "type": "action_type", "action_types": ["pay"] });
    let rule = |condition: Value| json!({ "name": "x", "condition": condition, "action": "block", "severity": "low" });
    for (condition, path) in [
        (json!({ "all": [pay, { "trust_score_below": 0.5, "type": "contains_pii" }] }), "condition.all[1]"),
        (json!({ "all": [pay], "not": pay }), "condition"),
        (json!({ "any": [pay], "all": [pay] }), "condition"),
        (json!({ "not": { "field": "amount", "op": ">", "value": 1, "trust_score_below": 0.2 } }), "condition.not"),
        (json!({ "any": [{ "type": "action_type", "action_types": ["pay"], "bogus": 1 }] }), "condition.any[0]"),
        (json!({ "trust_score_below": 0.5, "bogus": 1 }), "condition"),
        (json!({ "all": [pay], "bogus": 1 }), "condition"),
        (json!({ "type": "contains_pii", "categories": ["ssn"], "patterns": ["x"] }), "condition"),
    ] {
        refused(s.post("/api/v1/rules", &s.admin_key, &rule(condition)).await, path);
    }
    // Every kind with its own keys is still accepted.
    for condition in [json!({ "all": [pay, { "not": { "trust_score_below": 0.5 } }] }),
                      json!({ "any": [{ "field": "amount", "op": ">", "value": 1 }, { "type": "content_matches", "patterns": ["x"], "case_insensitive": true, "fields": ["content"] }] }),
                      json!({ "type": "contains_pii", "categories": ["ssn"], "fields": ["metadata"] })] {
        let (status, body) = s.post("/api/v1/rules", &s.admin_key, &rule(condition)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Rules are policies: the workspace's policy limit holds for them as for policies and
/// packs (rules once went past it).
#[tokio::test]
async fn rules_count_against_the_policy_limit() {
    let s = TestServer::start().await;
    let per_pack = 1_000;
    for p in 0..praetor_server::config::limits::POLICIES_PER_WORKSPACE / per_pack {
        let defs: Vec<Value> = (0..per_pack).map(|i| json!({ "name": format!("p{i}"), "policy_type": "action_type", "action_types": [format!("a{p}.{i}")], "decision": "block" })).collect();
        let pack = json!({ "name": format!("fill{p}"), "version": "1.0.0", "policy_definitions": defs });
        let (st, body) = s.post_raw("/api/v1/enforce/policy-packs", &s.admin_key, pack.to_string()).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let policy = s.post("/api/v1/enforce/policies", &s.admin_key, &json!({ "name": "one more", "policy_type": "action_type", "action_types": ["x"], "decision": "block" })).await;
    assert_error(&policy, 400, "invalid_policy");
    let rule = s.post("/api/v1/rules", &s.admin_key, &json!({ "name": "one more", "condition": { "type": "action_type", "action_types": ["x"] }, "action": "block", "severity": "low" })).await;
    assert_error(&rule, 400, "invalid_policy");
    assert!(rule.1["error"]["message"].as_str().unwrap().contains("policy limit"), "{}", rule.1);
}

/// A workspace's policies list at most `CONTENT_PATTERNS_PER_WORKSPACE` content patterns
/// in all (each in force may read the content on its own; each listed is checked), whatever
/// their mode, repeats and composite leaves included.
#[tokio::test]
async fn content_patterns_are_limited_per_workspace() {
    let s = TestServer::start().await;
    let limit = praetor_server::config::limits::CONTENT_PATTERNS_PER_WORKSPACE;
    let content = |name: &str, patterns: Vec<String>, ci: bool| {
        json!({ "name": name, "policy_type": "content_pattern", "decision": "block", "conditions": { "patterns": patterns, "case_insensitive": ci } })
    };
    let per_policy = 100;
    let defs: Vec<Value> = (0..limit / per_policy - 1)
        .map(|p| content(&format!("words {p}"), (0..per_policy).map(|i| format!("secret{}", p * per_policy + i)).collect(), false))
        .collect();
    // A pack over the limit on its own is refused, by the dry run as by a deployment,
    // before its definitions are checked (that compiles each pattern): the limit is
    // named, not the broken regex.
    let mut over_alone = defs.clone();
    over_alone.push(content("more", (0..per_policy).map(|i| format!("more{i}")).collect(), false));
    over_alone.push(content("broken", vec!["(unclosed".into()], false));
    let pack = |version: &str, defs: &[Value]| json!({ "name": "words", "version": version, "policy_definitions": defs }).to_string();
    for path in ["/api/v1/enforce/policy-packs", "/api/v1/enforce/policy-packs/validate"] {
        let refused = s.post_raw(path, &s.admin_key, pack("0.9.0", &over_alone)).await;
        let text = refused.1.to_string();
        assert!(text.contains(&format!("lists {} content patterns", limit + 1)) && !text.contains("unclosed"), "{path}: {text}");
    }
    let (st, body) = s.post_raw("/api/v1/enforce/policy-packs", &s.admin_key, pack("1.0.0", &defs)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // 900 listed: a rule's leaves and a disabled policy count; a glob policy does not.
    let rule = json!({ "name": "leaf", "condition": { "type": "content_matches", "patterns": ["secret1", "secret2"] }, "action": "block", "severity": "low" });
    assert_eq!(s.post("/api/v1/rules", &s.admin_key, &rule).await.0, StatusCode::OK);
    let mut disabled = content("off", (0..per_policy - 2).map(|i| format!("secret{i}")).collect(), true);
    disabled["enabled"] = json!(false);
    let off = s.post("/api/v1/enforce/policies", &s.admin_key, &disabled).await;
    assert_eq!(off.0, StatusCode::OK, "{}", off.1);
    let glob = json!({ "name": "glob", "policy_type": "action_type", "action_types": ["x.*"], "decision": "block" });
    assert_eq!(s.post("/api/v1/enforce/policies", &s.admin_key, &glob).await.0, StatusCode::OK);
    // At the limit: one pattern more is refused, even one listed already, naming the
    // field and the counts.
    let over = s.post("/api/v1/enforce/policies", &s.admin_key, &content("one more", vec!["secret7".into()], false)).await;
    assert_error(&over, 400, "invalid_policy");
    let message = over.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`conditions.patterns`") && message.contains(&format!("would list {} content patterns", limit + 1)), "{message}");
    let leaf = json!({ "name": "leaf 2", "condition": { "type": "content_matches", "patterns": ["fresh"] }, "action": "block", "severity": "low" });
    let over = s.post("/api/v1/rules", &s.admin_key, &leaf).await;
    assert_error(&over, 400, "invalid_policy");
    let message = over.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("`condition.patterns`: ") && message.contains(&format!("would list {} content patterns", limit + 1)), "{message}");
    // Enabling the disabled policy adds none: it passes. Shrinking it makes room.
    let id = off.1["policy"]["policy_id"].as_str().unwrap_or_default().to_owned();
    disabled["enabled"] = json!(true);
    let on = s.put(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key, &disabled).await;
    assert_eq!(on.0, StatusCode::OK, "{}", on.1);
    disabled["conditions"]["patterns"] = json!(["secret0"]);
    assert_eq!(s.put(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key, &disabled).await.0, StatusCode::OK);
    assert_eq!(s.post("/api/v1/enforce/policies", &s.admin_key, &content("one more", vec!["secret7".into()], false)).await.0, StatusCode::OK);
}

/// Another node deletes (or edits) a policy after this node read the policies and
/// before it commits its own edit of it: the edit is refused (`409`), not written over
/// the other node's change (a deleted policy came back). (Found by review.)
#[tokio::test]
async fn a_policy_changed_on_another_node_meanwhile_is_not_written_over() {
    let (s, store) = TestServer::start_contested().await;
    let ws_id = s.state.workspace_ids()[0].clone();
    let def = json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" });
    let id = s.policy(def.clone()).await;
    *store.late_write.lock() = Some(praetor_store::Mutation::DeletePolicy { workspace_id: ws_id.clone(), policy_id: id.clone() });
    let mut edited = def.clone();
    edited["decision"] = json!("escalate");
    let refused = s.put(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key, &edited).await;
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains(&format!("policy `{id}`")), "{}", refused.1);
    assert!(s.state.store.list_policies(&ws_id).await.unwrap().is_empty(), "the deletion stands");
    // Edited elsewhere meanwhile: a promotion here is refused likewise, and the other
    // node's edit stands.
    let mut shadow = def.clone();
    shadow["mode"] = json!("shadow");
    let other = s.policy(shadow).await;
    let mut stored = s.state.store.list_policies(&ws_id).await.unwrap().into_iter().find(|p| p.def.policy_id == other).unwrap();
    stored.updated_at += 1;
    stored.def.name = "renamed elsewhere".into();
    *store.late_write.lock() = Some(praetor_store::Mutation::PutPolicy(stored));
    let refused = s.post(&format!("/api/v1/enforce/policies/{other}/promote"), &s.admin_key, &json!({})).await;
    assert_error(&refused, 409, "conflict");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("was changed by another request or node"), "{}", refused.1);
    let kept = s.state.store.list_policies(&ws_id).await.unwrap().into_iter().find(|p| p.def.policy_id == other).unwrap();
    assert_eq!((kept.def.name.as_str(), kept.def.mode), ("renamed elsewhere", praetor_core::policy::PolicyMode::Shadow));
    // The refusal left this node holding what is stored: the retry it asks for succeeds.
    let (status, promoted) = s.post(&format!("/api/v1/enforce/policies/{other}/promote"), &s.admin_key, &json!({})).await;
    assert_eq!((status, promoted["policy"]["name"].as_str()), (StatusCode::OK, Some("renamed elsewhere")), "{promoted}");
    assert_error(&s.put(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key, &edited).await, 404, "not_found");
    // Edits in the same millisecond (the test clock stands still) each get a later
    // `updated_at`, so the guard tells every version apart.
    let stamp = || async { s.state.store.list_policies(&ws_id).await.unwrap().into_iter().find(|p| p.def.policy_id == other).unwrap().updated_at };
    let before = stamp().await;
    let (status, _) = s.put(&format!("/api/v1/enforce/policies/{other}"), &s.admin_key, &def).await;
    assert_eq!((status, stamp().await), (StatusCode::OK, before + 1));
    // A change of this node's own that reached the store but not memory (its request was
    // cancelled after the commit was queued) is taken in from the change feed.
    let mut stored = s.state.store.list_policies(&ws_id).await.unwrap().into_iter().find(|p| p.def.policy_id == other).unwrap();
    stored.updated_at += 1;
    stored.def.decision = praetor_core::policy::Effect::Escalate;
    s.state.store.commit(praetor_store::Txn { mutations: vec![praetor_store::Mutation::PutPolicy(stored)], seal: vec![] }).await.unwrap();
    assert_eq!(s.intercept(json!({ "action_type": "delete_x" })).await["decision"], "block", "memory still holds the block");
    praetor_server::follow::follow(&s.state, &s.state.workspace(&ws_id).unwrap()).await.unwrap();
    assert_eq!(s.intercept(json!({ "action_type": "delete_x" })).await["decision"], "escalate", "the stored change is in force");
}

/// Two nodes changing different settings at once: both changes stand. (Found by review:
/// each node wrote its whole copy, so one change was lost, `allow_anonymous: false`
/// among them, while the vault sealed it.)
#[tokio::test]
async fn settings_changed_on_two_nodes_at_once_both_stand() {
    let (s, store) = TestServer::start_contested().await;
    let ws_id = s.state.workspace_ids()[0].clone();
    let mut elsewhere = s.state.workspace(&ws_id).unwrap().settings.read().clone();
    elsewhere.trust_baseline = 77;
    *store.late_write.lock() = Some(praetor_store::Mutation::PutWorkspaceSettings { workspace_id: ws_id.clone(), settings: elsewhere });
    let (status, answer) = s.put("/api/v1/enforce/settings", &s.admin_key, &json!({ "allow_anonymous": false })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let stored = s.state.store.get_workspace(&ws_id).await.unwrap().unwrap().settings;
    assert_eq!((stored.trust_baseline, stored.allow_anonymous), (77, false), "both changes are stored");
    assert_eq!((answer["settings"]["trust_baseline"].as_u64(), answer["settings"]["allow_anonymous"].as_bool()), (Some(77), Some(false)), "{answer}");
    let (_, shown) = s.get("/api/v1/enforce/settings", &s.admin_key).await;
    assert_eq!(shown["settings"]["trust_baseline"], 77, "this node holds what the store holds: {shown}");
}

/// Another node deploys a pack (its first version here) after this node read the
/// policies and before its own deploy commits: this deploy is refused, not added beside
/// it (two versions were live). (Found by review.)
#[tokio::test]
async fn a_pack_deployed_on_another_node_meanwhile_is_not_deployed_beside() {
    let (s, store) = TestServer::start_contested().await;
    let ws_id = s.state.workspace_ids()[0].clone();
    let elsewhere: praetor_core::PolicyDef = serde_json::from_value(json!({ "policy_id": "pol_elsewhere", "name": "no deletes", "policy_type": "action_type",
        "action_types": ["delete_*"], "decision": "block", "pack": "core@1.0.0" })).unwrap();
    let record = praetor_store::PolicyRecord { workspace_id: ws_id.clone(), def: elsewhere, created_at: 1, updated_at: 1 };
    *store.late_write.lock() = Some(praetor_store::Mutation::PutPolicy(record));
    let (status, refused) = s.post_raw("/api/v1/enforce/policy-packs", &s.admin_key, pack("2.0.0", "drop_*", serde_json::Value::Null)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("policy pack `core`"), "{refused}");
    let live: Vec<String> = s.state.store.list_policies(&ws_id).await.unwrap().into_iter().filter_map(|p| p.def.pack).collect();
    assert_eq!(live, vec!["core@1.0.0".to_owned()], "only the other node's version is live");
    // Held now, it is replaced by the retry.
    let (status, deployed) = s.post_raw("/api/v1/enforce/policy-packs", &s.admin_key, pack("2.0.0", "drop_*", serde_json::Value::Null)).await;
    assert_eq!(status, StatusCode::OK, "{deployed}");
    let live: Vec<String> = s.state.store.list_policies(&ws_id).await.unwrap().into_iter().filter_map(|p| p.def.pack).collect();
    assert_eq!(live, vec!["core@2.0.0".to_owned()]);
}

/// Another node rewrites a policy with the same definition (a pack deployed again, a
/// `PUT` of what was there): only its `updated_at` changes, so the policy set's hash
/// does not. This node must still take the new record in, or every later edit of the
/// policy here is refused as stale, and so is every retry.
#[tokio::test]
async fn a_policy_rewritten_unchanged_on_another_node_can_still_be_edited_here() {
    let s = TestServer::start().await;
    let ws_id = s.state.workspace_ids()[0].clone();
    let def = json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" });
    let id = s.policy(def.clone()).await;
    let ws = s.state.workspace(&ws_id).unwrap();
    // This node's own write, as the change feed brings it back, is already in force.
    let own = ws.policies.load_full();
    praetor_server::follow::follow(&s.state, &ws).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&own, &ws.policies.load_full()), "the set in force was not rebuilt");
    let hash_before = own.hash.clone();
    let mut stored = s.state.store.list_policies(&ws_id).await.unwrap().into_iter().find(|p| p.def.policy_id == id).unwrap();
    stored.updated_at += 5;
    s.state.store.commit(praetor_store::Txn { mutations: vec![praetor_store::Mutation::PutPolicy(stored.clone())], seal: vec![] }).await.unwrap();
    praetor_server::follow::follow(&s.state, &ws).await.unwrap();
    let held = ws.policies.load();
    assert_eq!(held.hash, hash_before, "the definitions are unchanged");
    assert_eq!(held.records.iter().find(|r| r.def.policy_id == id).map(|r| r.updated_at), Some(stored.updated_at), "the record rewritten is held");
    let mut edited = def.clone();
    edited["decision"] = json!("escalate");
    let (status, answer) = s.put(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key, &edited).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(s.intercept(json!({ "action_type": "delete_x" })).await["decision"], "escalate");
}

/// A policy write compiles only the content patterns the workspace's set did not hold,
/// and the change feed does not rebuild a set from this node's own writes, however the
/// store orders the policies (by creation, here not by id).
#[tokio::test]
async fn a_write_compiles_only_new_patterns_and_own_writes_are_not_rebuilt() {
    let s = TestServer::start().await;
    let ws = s.state.workspace(&s.state.workspace_ids()[0]).unwrap();
    let content = |name: &str, patterns: &[&str]| json!({ "name": name, "policy_type": "content_pattern", "decision": "block", "conditions": { "patterns": patterns } });
    let mut compiled = Vec::new();
    for (i, patterns) in [&["alpha\\d+", "beta"][..], &["beta", "gamma"], &["gamma", "alpha\\d+"], &["delta"], &["beta"], &["alpha\\d+", "epsilon"]].into_iter().enumerate() {
        s.clock.advance(1000);
        s.policy(content(&format!("p{i}"), patterns)).await;
        compiled.push(ws.policies.load().compiled.patterns_compiled());
    }
    assert_eq!(compiled, vec![2, 1, 0, 1, 0, 1]);
    let ids: Vec<String> = ws.policies.load().records.iter().map(|r| r.def.policy_id.clone()).collect();
    let mut by_id = ids.clone();
    by_id.sort();
    assert_eq!(ids, by_id, "a set holds its records by id");
    let own = ws.policies.load_full();
    praetor_server::follow::follow(&s.state, &ws).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&own, &ws.policies.load_full()), "the set in force was not rebuilt");
    assert_eq!(s.intercept(json!({ "action_type": "x", "content": "an epsilon" })).await["decision"], "block");
}

/// What a policy written here does not set is refused, naming the field, not dropped:
/// `pack` and `governance` belong to packs and rules, `policy_id` to the server (a `PUT`
/// may repeat its own). An empty metadata rule list, and an empty limit per currency in
/// a session or a delegation, are refused too: each would read as something its writer
/// did not mean.
#[tokio::test]
async fn fields_a_write_does_not_set_and_empty_lists_are_refused() {
    let s = TestServer::start().await;
    let base = json!({ "name": "p", "policy_type": "action_type", "action_types": ["x"], "decision": "block" });
    let with = |k: &str, v: Value| {
        let mut d = base.clone();
        d[k] = v;
        d
    };
    for (field, def) in [("pack", with("pack", json!("mypack"))), ("policy_id", with("policy_id", json!("pol_mine"))), ("governance", with("governance", json!({})))] {
        let got = s.post("/api/v1/enforce/policies", &s.admin_key, &def).await;
        assert!(got.0.is_client_error(), "{field}: {}", got.1);
        assert!(got.1["error"]["message"].as_str().is_some_and(|m| m.contains(field)), "{field}: {}", got.1);
    }
    let (_, listed) = s.get("/api/v1/enforce/policies", &s.admin_key).await;
    assert_eq!(listed["policies"].as_array().map(Vec::len), Some(0), "{listed}");
    let id = s.policy(base.clone()).await;
    let other = s.policy(with("name", json!("other"))).await;
    let got = s.put(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key, &with("policy_id", json!(other))).await;
    assert_error(&got, 400, "invalid_field");
    let (status, same) = s.put(&format!("/api/v1/enforce/policies/{id}"), &s.admin_key, &with("policy_id", json!(id))).await;
    assert_eq!(status, StatusCode::OK, "{same}");

    let meta = json!({ "name": "m", "policy_type": "metadata", "decision": "block", "conditions": { "rule": { "all": [] } } });
    let got = s.post("/api/v1/enforce/policies", &s.admin_key, &meta).await;
    assert_error(&got, 400, "invalid_policy");
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| m.contains("conditions.rule.all")), "{}", got.1);

    let agent = s.agent("spender").await;
    let target = s.agent("target").await;
    let got = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent, "budgets": { "max_spend": {} } })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| m.contains("budgets.max_spend") && m.contains("names no currency")), "{}", got.1);
    let got = s.post("/api/v1/enforce/delegate", &s.admin_key, &json!({ "source_agent_id": agent, "target_agent_id": target, "scopes": ["buy.*"], "budgets": { "max_amount": {} } })).await;
    assert_error(&got, 400, "invalid_field");
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| m.contains("budgets.max_amount") && m.contains("names no currency")), "{}", got.1);
}
