//! The language-neutral decision corpus (`tests/corpus/*.json`), run through the HTTP
//! API: each case gets a fresh server, its policies, settings and agent are created
//! through the API, its history is replayed with the manual clock, and the answer is
//! compared with the expected decision and deciding policies.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::harness::TestServer;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

fn load_cases() -> Vec<(String, Value)> {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the decision corpus is expected at {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for case in doc["cases"].as_array().unwrap_or_else(|| panic!("{}: no `cases` list", f.display())) {
            let name = format!("{}: {}", f.file_name().unwrap().to_string_lossy(), case["name"].as_str().unwrap_or("?"));
            cases.push((name, case.clone()));
        }
    }
    assert!(cases.len() >= 40, "the corpus must hold at least 40 cases, found {}", cases.len());
    cases
}

async fn run_case(case: &Value) -> Result<(), String> {
    let s = TestServer::start().await;
    let now = case["now"].as_str().map(|t| praetor_server::clock::parse_time(t).expect("case `now`")).unwrap_or(crate::harness::T0);
    if let Some(settings) = case.get("settings").filter(|v| !v.is_null()) {
        let (status, body) = s.put("/api/v1/enforce/settings", &s.admin_key, settings).await;
        if status != 200 {
            return Err(format!("settings refused: {body}"));
        }
    }
    // Case ids (`p1`, … or the def's own) → server ids, and back.
    let mut to_case: HashMap<String, String> = HashMap::new();
    for (i, def) in case["policies"].as_array().cloned().unwrap_or_default().into_iter().enumerate() {
        let mut def = def;
        let case_id = def.get("policy_id").and_then(Value::as_str).map(str::to_owned).unwrap_or(format!("p{}", i + 1));
        if let Value::Object(m) = &mut def {
            m.remove("policy_id");
        }
        let (status, body) = s.post("/api/v1/enforce/policies", &s.admin_key, &def).await;
        if status != 200 {
            return Err(format!("policy {case_id} refused: {body}"));
        }
        to_case.insert(body["policy"]["policy_id"].as_str().unwrap().to_owned(), case_id);
    }
    let mut agent_id = Value::Null;
    if let Some(agent) = case.get("agent").filter(|v| !v.is_null()) {
        let id = s.agent("corpus-agent").await;
        let mut patch = json!({ "trust_score": agent.get("trust_score").cloned().unwrap_or(json!(80)) });
        if let Some(scopes) = agent.get("scopes").filter(|v| !v.is_null()) {
            patch["scopes"] = scopes.clone();
        }
        if let Some(b) = agent.get("permission_boundary").filter(|v| !v.is_null()) {
            patch["permission_boundary"] = b.clone();
        }
        let (status, body) = s.patch(&format!("/api/v1/enforce/agents/{id}"), &s.admin_key, &patch).await;
        if status != 200 {
            return Err(format!("agent facts refused: {body}"));
        }
        agent_id = json!(id);
    }
    // Precedence cases: create the authority objects through the API.
    let mut request_extra = serde_json::Map::new();
    if let Some(auth) = case.get("authority").filter(|v| !v.is_null()) {
        if agent_id.is_null() {
            return Err("an `authority` case needs an agent".into());
        }
        let agent = agent_id.as_str().unwrap_or_default().to_owned();
        for role in auth["roles"].as_array().cloned().unwrap_or_default() {
            let (st, body) = s.post("/api/v1/enforce/roles", &s.admin_key, &role).await;
            if st != 200 {
                return Err(format!("role refused: {body}"));
            }
            let id = body["role"]["role_id"].as_str().unwrap_or_default().to_owned();
            s.post(&format!("/api/v1/enforce/roles/{id}/assign"), &s.admin_key, &json!({ "agent_id": agent })).await;
        }
        for w in auth["windows"].as_array().cloned().unwrap_or_default() {
            let body = json!({ "agent_id": agent, "scopes": w["scopes"], "action_types": w["action_types"], "duration_minutes": 60 });
            let body = strip_nulls(body);
            let (st, answer) = s.post("/api/v1/enforce/temporal-windows", &s.admin_key, &body).await;
            if st != 200 {
                return Err(format!("window refused: {answer}"));
            }
        }
        if let Some(g) = auth.get("grant").filter(|v| !v.is_null()) {
            let (_, grantor) = s.post("/api/v1/enforce/agents", &s.admin_key, &json!({ "name": "corpus-grantor", "scopes": ["*"] })).await;
            let grantor = grantor["agent"]["agent_id"].clone();
            // What a case says the grant has left is what a fresh grant holds.
            let body = strip_nulls(json!({ "source_agent_id": grantor, "target_agent_id": agent, "scopes": g["scopes"], "action_types": g["action_types"], "budgets": g["left"] }));
            let (st, answer) = s.post("/api/v1/enforce/delegate", &s.admin_key, &body).await;
            if st != 200 {
                return Err(format!("grant refused: {answer}"));
            }
            let id = answer["grant_id"].as_str().unwrap_or_default().to_owned();
            if g["revoked"] == json!(true) {
                s.post(&format!("/api/v1/enforce/delegate/{id}/revoke"), &s.admin_key, &json!({})).await;
            }
            request_extra.insert("grant_id".into(), json!(id));
        }
        if let Some(b) = auth.get("breakglass").filter(|v| !v.is_null()) {
            let approver = s.key(&["approvals"], None).await;
            let (st, answer) = s.post("/api/v1/enforce/breakglass", &approver, &json!({ "agent_id": agent, "justification": b["justification"] })).await;
            if st != 200 {
                return Err(format!("breakglass refused: {answer}"));
            }
        }
        if let Some(x) = auth.get("session").filter(|v| !v.is_null()) {
            let budgets = x.get("budgets").cloned().unwrap_or(json!({}));
            let (st, answer) = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent, "budgets": budgets })).await;
            if st != 200 {
                return Err(format!("session refused: {answer}"));
            }
            let id = answer["session_id"].as_str().unwrap_or_default().to_owned();
            if let Some(reason) = x.get("killed").and_then(Value::as_str) {
                s.post(&format!("/api/v1/enforce/sessions/{id}/kill"), &s.admin_key, &json!({ "reason": reason })).await;
            }
            request_extra.insert("session_id".into(), json!(id));
        }
    }
    // The case's session names stand for real sessions of the case's agent, started
    // before anything happens.
    let mut sessions: HashMap<String, String> = HashMap::new();
    let named = case["history"].as_array().cloned().unwrap_or_default().into_iter().filter_map(|h| h.get("session_id").cloned())
        .chain(std::iter::once(case["request"]["session_id"].clone()))
        .filter_map(|v| v.as_str().map(str::to_owned));
    if !agent_id.is_null() {
        for name in named {
            if sessions.contains_key(&name) {
                continue;
            }
            let (status, body) = s.post("/api/v1/enforce/sessions/start", &s.admin_key, &json!({ "agent_id": agent_id })).await;
            if status != 200 {
                return Err(format!("session start refused: {body}"));
            }
            sessions.insert(name, body["session_id"].as_str().unwrap().to_owned());
        }
    }
    let real_session = |v: &Value| v.as_str().and_then(|n| sessions.get(n)).map(|id| json!(id)).unwrap_or_else(|| v.clone());
    // History is replayed oldest first, each action at its own time; an entry's session
    // defaults to the request's.
    let mut history = case["history"].as_array().cloned().unwrap_or_default();
    history.sort_by_key(|h| std::cmp::Reverse(h["seconds_ago"].as_i64().unwrap_or(0)));
    for h in history {
        s.clock.set(now - h["seconds_ago"].as_i64().unwrap_or(0) * 1000);
        let session = real_session(&h.get("session_id").cloned().unwrap_or_else(|| case["request"]["session_id"].clone()));
        let answer = s.intercept(json!({ "action_type": h["action_type"], "agent_id": agent_id, "session_id": session })).await;
        if answer["decision"] != "allow" {
            return Err(format!("history action {} was not allowed: {answer}", h["action_type"]));
        }
    }
    s.clock.set(now);
    let mut request = case["request"].clone();
    if request.get("session_id").is_some() {
        request["session_id"] = real_session(&request["session_id"]);
    }
    request["agent_id"] = agent_id;
    for (k, v) in request_extra {
        request[k] = v;
    }
    let (status, answer) = s.post("/api/v1/enforce/intercept", &s.admin_key, &request).await;
    if status != 200 {
        return Err(format!("intercept answered {status}: {answer}"));
    }
    let expect = &case["expect"];
    let mut problems = Vec::new();
    if answer["decision"] != expect["decision"] {
        problems.push(format!("decision {} (expected {})", answer["decision"], expect["decision"]));
    }
    for field in ["outcome", "boundary_check"] {
        if let Some(want) = expect.get(field).filter(|v| !v.is_null())
            && &answer[field] != want {
                problems.push(format!("{field} {} (expected {want})", answer[field]));
            }
    }
    if let Some(want) = expect.get("policies").and_then(Value::as_array) {
        let want: BTreeSet<String> = want.iter().filter_map(Value::as_str).map(str::to_owned).collect();
        let got: BTreeSet<String> = answer["policies_triggered"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["policy_id"].as_str())
            .map(|id| to_case.get(id).cloned().unwrap_or_else(|| id.to_owned()))
            .collect();
        if got != want {
            problems.push(format!("policies {got:?} (expected {want:?})"));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(format!("{}; answer: {answer}", problems.join("; "))) }
}

#[tokio::test]
async fn the_corpus_decides_the_same_over_http() {
    let cases = load_cases();
    let mut failures = Vec::new();
    for (name, case) in &cases {
        if let Err(why) = run_case(case).await {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} corpus cases failed over HTTP:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}
