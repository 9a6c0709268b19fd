//! Several `praetor serve` processes on one PostgreSQL database (issue 8): they share
//! one vault log per workspace, and when the node sealing a batch is killed with SIGKILL
//! under load the others go on; every answered decision is sealed exactly once and the
//! log verifies. Needs `PRAETOR_TEST_DATABASE_URL` (skipped without it, unless
//! `PRAETOR_REQUIRE_POSTGRES=1`, which makes its absence a failure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_praetor");

fn database_url() -> Option<String> {
    match std::env::var("PRAETOR_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("PRAETOR_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("PRAETOR_REQUIRE_POSTGRES=1 but PRAETOR_TEST_DATABASE_URL is not set (scripts/test.sh sets it)")
        }
        _ => {
            eprintln!("skipped: PRAETOR_TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// A schema of its own in the test database, dropped at the end.
struct Schema {
    admin_url: String,
    name: String,
}

impl Schema {
    fn create(admin_url: &str) -> Schema {
        // Tests run in parallel in one process: a counter keeps their schemas apart.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!("praetor_mn_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        psql(admin_url, &format!("CREATE SCHEMA {name}"));
        Schema { admin_url: admin_url.to_owned(), name }
    }

    fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.admin_url, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        psql(&self.admin_url, &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

fn psql(url: &str, sql: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect to the test database");
    c.batch_execute(sql).expect(sql);
}

struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, url: &str, keys: &Path) -> Node {
    spawn_node(dir, url, keys, &[]).healthy()
}

/// Start `praetor serve` without waiting for it to answer.
fn spawn_node(dir: &Path, url: &str, keys: &Path, extra: &[&str]) -> Node {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .arg("--vault-keys-dir")
        .arg(keys)
        .args(["--checkpoint-interval-ms", "100", "--database", url])
        .args(extra)
        .env("PRAETOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start praetor serve");
    Node { child, base: format!("http://127.0.0.1:{port}") }
}

impl Node {
    /// Wait until the node answers `/healthz`.
    fn healthy(mut self) -> Node {
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&format!("{}/healthz", self.base), "").is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("praetor serve exited ({status}) before it became healthy");
            }
            assert!(Instant::now() < deadline, "praetor serve did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn get(url: &str, key: &str) -> Option<Value> {
    let r = client().get(url).header("X-API-Key", key).send().ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().ok()
}

fn post(url: &str, key: &str, body: &Value) -> Option<Value> {
    let r = client().post(url).header("X-API-Key", key).json(body).send().ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().ok()
}

#[test]
fn nodes_share_one_vault_and_survive_the_loss_of_one() {
    let Some(admin_url) = database_url() else { return };
    let Cluster { nodes, key, _schema: schema, _tmp, .. } = Cluster::start(&admin_url);
    let url = schema.url();
    let [a, b, c]: [Node; 3] = nodes.try_into().ok().unwrap();
    post(&format!("{}/api/v1/enforce/policies", a.base), &key, &json!({"name": "no deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block"}))
        .expect("create a policy");

    // Load on all three nodes; A is killed while it runs.
    let stop = Arc::new(AtomicBool::new(false));
    let bases = [a.base.clone(), b.base.clone(), c.base.clone()];
    let mut workers = Vec::new();
    for w in 0..6usize {
        let (stop, key, base) = (stop.clone(), key.clone(), bases[w % 3].clone());
        workers.push(std::thread::spawn(move || {
            let mut answered: Vec<(String, String)> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let action = if n % 4 == 0 { "delete_row" } else { "read_row" };
                if let Some(ans) = post(&format!("{base}/api/v1/enforce/intercept"), &key, &json!({"action_type": action, "action_content": format!("worker {w} action {n}")})) {
                    answered.push((ans["decision_id"].as_str().unwrap().to_owned(), ans["decision"].as_str().unwrap().to_owned()));
                }
            }
            answered
        }));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let mut a = a;
    a.child.kill().expect("SIGKILL node A");
    a.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    stop.store(true, Ordering::Relaxed);
    let answered: Vec<(String, String)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(answered.len() > 50, "the nodes answered too few decisions to mean anything: {}", answered.len());

    // Every answered decision is sealed exactly once, with the decision it answered.
    let head = get(&format!("{}/api/v1/enforce/vault/checkpoint", b.base), &key).expect("checkpoint");
    let size = head["checkpoint"]["size"].as_u64().or_else(|| head["size"].as_u64()).expect("a checkpoint size");
    let page = get(&format!("{}/api/v1/enforce/vault/entries?start=0&end=100000", c.base), &key).expect("entries");
    let mut sealed: HashMap<String, (u64, String)> = HashMap::new();
    for e in page["entries"].as_array().unwrap() {
        let entry = &e["entry"];
        if entry["kind"] == "decision" {
            let id = entry["decision_id"].as_str().expect("a decision entry names its decision").to_owned();
            let previous = sealed.insert(id.clone(), (entry["seq"].as_u64().unwrap(), entry["decision"].to_string()));
            assert!(previous.is_none(), "decision {id} is sealed twice");
        }
    }
    eprintln!("{} decisions answered over three nodes (one killed mid-load); {} sealed", answered.len(), sealed.len());
    for (id, decision) in &answered {
        let (_, sealed_decision) = sealed.get(id).unwrap_or_else(|| panic!("answered decision {id} is not in the vault"));
        assert_eq!(sealed_decision, &json!(decision).to_string(), "{id}");
    }
    // Checkpoints keep coming from the surviving nodes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        post(&format!("{}/api/v1/enforce/intercept", b.base), &key, &json!({"action_type": "read_row"})).expect("node B decides");
        let now = get(&format!("{}/api/v1/enforce/vault/checkpoint", c.base), &key).expect("checkpoint");
        let now_size = now["checkpoint"]["size"].as_u64().or_else(|| now["size"].as_u64()).unwrap();
        if now_size > size {
            break;
        }
        assert!(Instant::now() < deadline, "no new checkpoint after node A died (still {size})");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((b, c));
    // The whole log verifies offline, entry by entry.
    let out = Command::new(BIN).args(["vault", "check", "--database", &url]).env("PRAETOR_LOG", "warn").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("OK:"), "{text}{}", String::from_utf8_lossy(&out.stderr));
}

/// Three nodes, one workspace: what one node counts or changes, every node obeys.
struct Cluster {
    nodes: Vec<Node>,
    key: String,
    url: String,
    _schema: Schema,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn start(admin_url: &str) -> Cluster {
        let schema = Schema::create(admin_url);
        let url = schema.url();
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("vault-keys");
        // The first node creates the workspace and the admin key; the others join it.
        let a = start_node(&tmp.path().join("a"), &url, &keys);
        let key = std::fs::read_to_string(tmp.path().join("a/admin.key")).unwrap().trim().to_owned();
        let b = start_node(&tmp.path().join("b"), &url, &keys);
        let c = start_node(&tmp.path().join("c"), &url, &keys);
        Cluster { nodes: vec![a, b, c], key, url, _schema: schema, _tmp: tmp }
    }

    fn post(&self, node: usize, path: &str, body: &Value) -> Value {
        let r = client().post(format!("{}/api/v1{path}", self.nodes[node].base)).header("X-API-Key", &self.key).json(body).send().unwrap();
        let status = r.status();
        let text = r.text().unwrap();
        assert!(status.is_success(), "POST {path} on node {node}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    fn agent(&self, node: usize, name: &str) -> String {
        let r = self.post(node, "/enforce/agents", &json!({ "name": name, "framework": "test" }));
        r["agent"]["agent_id"].as_str().unwrap().to_owned()
    }

    /// `n` intercepts at once, spread over the nodes in turn; their decisions.
    fn burst(&self, n: usize, body: &Value) -> Vec<String> {
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, key, body) = (barrier.clone(), self.key.clone(), body.clone());
                let url = format!("{}/api/v1/enforce/intercept", self.nodes[i % self.nodes.len()].base);
                std::thread::spawn(move || {
                    barrier.wait();
                    let ans = post(&url, &key, &body).expect("every intercept is answered");
                    ans["decision"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }
}

fn count(decisions: &[String], which: &str) -> usize {
    decisions.iter().filter(|d| d.as_str() == which).count()
}

#[test]
fn a_session_budget_is_exact_across_nodes() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    let agent = cluster.agent(0, "budgeted");
    let session = cluster.post(1, "/enforce/sessions/start", &json!({ "agent_id": agent, "budgets": { "max_actions": 10 } }));
    let session_id = session["session_id"].as_str().unwrap();
    let decisions = cluster.burst(100, &json!({ "action_type": "tool.search", "session_id": session_id }));
    assert_eq!(count(&decisions, "allow"), 10, "max_actions=10 over three nodes: {decisions:?}");
    assert_eq!(count(&decisions, "allow") + count(&decisions, "terminate") + count(&decisions, "block"), 100);
    let stored = get(&format!("{}/api/v1/enforce/sessions/{session_id}", cluster.nodes[2].base), &cluster.key).unwrap();
    assert_eq!(stored["session"]["consumed"]["actions"], 10, "{stored}");
    assert_ne!(stored["session"]["status"], "active", "the run ended when the budget ran out: {stored}");
}

#[test]
fn a_velocity_limit_counts_every_nodes_actions() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    let agent = cluster.agent(2, "bursty");
    cluster.post(0, "/enforce/policies", &json!({ "name": "Five a minute", "policy_type": "sequence", "action_types": ["send"],
        "decision": "block", "conditions": { "velocity": { "max": 5, "window_seconds": 60 } } }));
    // Every node has the policy (the change feed brings it within a second).
    std::thread::sleep(Duration::from_millis(1_000));
    let decisions = cluster.burst(30, &json!({ "action_type": "send", "agent_id": agent }));
    assert_eq!(count(&decisions, "allow"), 5, "5 a minute over three nodes: {decisions:?}");
    assert_eq!(count(&decisions, "block"), 25);
    // And later actions on any node still see the five.
    for node in 0..3 {
        let ans = cluster.post(node, "/enforce/intercept", &json!({ "action_type": "send", "agent_id": agent }));
        assert_eq!(ans["decision"], "block", "node {node}: {ans}");
    }
}

#[test]
fn a_kill_or_a_revocation_on_one_node_is_obeyed_on_another_at_the_next_action() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    let agent = cluster.agent(0, "killable");
    let start = |node| cluster.post(node, "/enforce/sessions/start", &json!({ "agent_id": agent }))["session_id"].as_str().unwrap().to_owned();
    let act = |node, session: &str| cluster.post(node, "/enforce/intercept", &json!({ "action_type": "tool.search", "session_id": session }));

    // Killed through A, acted on through C.
    let session = start(2);
    assert_eq!(act(2, &session)["decision"], "allow", "node C knows the session");
    cluster.post(0, &format!("/enforce/sessions/{session}/kill"), &json!({ "reason": "operator stop" }));
    let next = act(2, &session);
    assert_eq!(next["decision"], "terminate", "node C obeys node A's kill at once: {next}");
    let beat = cluster.post(1, &format!("/enforce/sessions/{session}/heartbeat"), &json!({}));
    assert_eq!(beat["status"], "killed", "{beat}");

    // The agent's credential revoked through B: its session on C ends at the next action.
    let registered = cluster.post(0, "/enforce/agents", &json!({ "name": "revocable", "framework": "test" }));
    let (agent2, credential) = (registered["agent"]["agent_id"].as_str().unwrap().to_owned(), registered["credential"]["credential_id"].as_str().unwrap().to_owned());
    let session2 = cluster.post(2, "/enforce/sessions/start", &json!({ "agent_id": agent2, "credential_id": credential }))["session_id"].as_str().unwrap().to_owned();
    assert_eq!(act(2, &session2)["decision"], "allow");
    let revoked = cluster.post(1, &format!("/enforce/credentials/{credential}/revoke"), &json!({ "reason": "leaked" }));
    assert_eq!(revoked["killed_sessions"], json!([session2]), "node B kills the session node C started: {revoked}");
    let next = act(2, &session2);
    assert_eq!(next["decision"], "terminate", "{next}");
    // No node starts a new session with the revoked credential.
    let r = client()
        .post(format!("{}/api/v1/enforce/sessions/start", cluster.nodes[0].base))
        .header("X-API-Key", &cluster.key)
        .json(&json!({ "agent_id": agent2, "credential_id": credential }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400, "{}", r.text().unwrap_or_default());
}

#[test]
fn a_policy_created_on_one_node_decides_on_another_within_a_second() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    let body = json!({ "action_type": "wire_transfer", "action_content": "pay 900 EUR" });
    assert_eq!(cluster.post(0, "/enforce/intercept", &body)["decision"], "allow", "no policy yet");
    cluster.post(1, "/enforce/policies", &json!({ "name": "No wires", "policy_type": "action_type", "action_types": ["wire_*"], "decision": "block" }));
    let created = Instant::now();
    loop {
        let ans = cluster.post(0, "/enforce/intercept", &body);
        if ans["decision"] == "block" {
            break;
        }
        assert!(created.elapsed() < Duration::from_secs(1), "node A still allows a second after node B created the policy: {ans}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the policy from node B decided on node A after {} ms", created.elapsed().as_millis());
}

#[test]
fn a_revocation_kills_sessions_other_nodes_start_while_it_runs() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    let registered = cluster.post(0, "/enforce/agents", &json!({ "name": "racing", "framework": "test" }));
    let agent = registered["agent"]["agent_id"].as_str().unwrap().to_owned();
    let credential = registered["credential"]["credential_id"].as_str().unwrap().to_owned();
    // Session starts on nodes A and C race the revocation on node B.
    let barrier = Arc::new(std::sync::Barrier::new(31));
    let starters: Vec<_> = (0..30)
        .map(|i| {
            let (barrier, key) = (barrier.clone(), cluster.key.clone());
            let url = format!("{}/api/v1/enforce/sessions/start", cluster.nodes[if i % 2 == 0 { 0 } else { 2 }].base);
            let body = json!({ "agent_id": agent, "credential_id": credential });
            std::thread::spawn(move || {
                barrier.wait();
                std::thread::sleep(Duration::from_millis(i as u64 % 10));
                post(&url, &key, &body).map(|r| r["session_id"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    barrier.wait();
    cluster.post(1, &format!("/enforce/credentials/{credential}/revoke"), &json!({ "reason": "leaked" }));
    let started: Vec<String> = starters.into_iter().filter_map(|t| t.join().unwrap()).collect();
    eprintln!("{} of 30 session starts landed around the revocation", started.len());
    // Every session that started is over, on every node, and none is left active.
    for node in 0..3 {
        let active = get(&format!("{}/api/v1/enforce/sessions?status=active&agent_id={agent}", cluster.nodes[node].base), &cluster.key).unwrap();
        assert_eq!(active["total"], 0, "node {node} lists a session that survived the revocation: {active}");
    }
    for (i, session) in started.iter().enumerate() {
        let next = cluster.post(i % 3, "/enforce/intercept", &json!({ "action_type": "tool.search", "session_id": session }));
        assert_eq!(next["decision"], "terminate", "session {session}: {next}");
    }
}

#[test]
fn an_agent_edit_on_one_node_does_not_undo_a_deactivation_on_another() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    for round in 0..5 {
        let agent = cluster.agent(0, &format!("edited-{round}"));
        let described = {
            let (key, base) = (cluster.key.clone(), cluster.nodes[2].base.clone());
            let agent = agent.clone();
            std::thread::spawn(move || {
                let r = client()
                    .patch(format!("{base}/api/v1/enforce/agents/{agent}"))
                    .header("X-API-Key", key)
                    .json(&json!({ "description": format!("round {round}") }))
                    .send()
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
            })
        };
        cluster.post(1, &format!("/enforce/agents/{agent}/deactivate"), &json!({}));
        described.join().unwrap();
        // Both changes stand, whichever landed first, as every node sees them.
        for node in 0..3 {
            let a = get(&format!("{}/api/v1/enforce/agents/{agent}", cluster.nodes[node].base), &cluster.key).unwrap();
            assert_eq!(a["agent"]["is_active"], false, "round {round}, node {node}: the edit revived the agent: {a}");
            assert_eq!(a["agent"]["description"], format!("round {round}"), "round {round}, node {node}: {a}");
        }
        let ans = cluster.post(round % 3, "/enforce/intercept", &json!({ "action_type": "tool.search", "agent_id": agent }));
        assert_eq!(ans["decision"], "block", "{ans}");
    }
}

/// A compromised agent that keeps acting on every node cannot make its own revocation
/// fail: the revocation commits on its own first, so its actions are refused everywhere
/// from then on, and the clean-up (its sessions, grants and escalations) follows. If the
/// clean-up lost to the agent's last actions, the answer says so and a second revoke
/// finishes it.
#[test]
fn an_agent_acting_on_every_node_cannot_hold_off_its_revocation() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    for round in 0..3 {
        let registered = cluster.post(0, "/enforce/agents", &json!({ "name": format!("busy-{round}"), "framework": "test" }));
        let agent = registered["agent"]["agent_id"].as_str().unwrap().to_owned();
        let sessions: Vec<String> = (0..3)
            .map(|node| cluster.post(node, "/enforce/sessions/start", &json!({ "agent_id": agent }))["session_id"].as_str().unwrap().to_owned())
            .collect();
        // The agent acts in each of its sessions on each node, as fast as it is answered,
        // moving the sessions the revocation must kill on.
        let stop = Arc::new(AtomicBool::new(false));
        let actors: Vec<_> = (0..6)
            .map(|i| {
                let (stop, key) = (stop.clone(), cluster.key.clone());
                let url = format!("{}/api/v1/enforce/intercept", cluster.nodes[i % 3].base);
                let body = json!({ "action_type": "tool.search", "session_id": sessions[i % sessions.len()] });
                std::thread::spawn(move || {
                    let mut allowed = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if post(&url, &key, &body).is_some_and(|a| a["decision"] == "allow") {
                            allowed += 1;
                        }
                    }
                    allowed
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let revoked = cluster.post(1, &format!("/enforce/agents/{agent}/revoke"), &json!({ "reason": "compromised" }));
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let allowed: usize = actors.into_iter().map(|t| t.join().unwrap()).sum();
        eprintln!("round {round}: {allowed} actions allowed around the revocation; cleanup_incomplete {}", revoked["cleanup_incomplete"]);
        assert!(allowed > 0, "the agent was acting when it was revoked");
        if revoked["cleanup_incomplete"] != false {
            let again = cluster.post(2, &format!("/enforce/agents/{agent}/revoke"), &json!({ "reason": "compromised" }));
            assert_eq!(again["cleanup_incomplete"], false, "a second revoke finishes the clean-up: {again}");
        }
        for node in 0..3 {
            let base = &cluster.nodes[node].base;
            let a = get(&format!("{base}/api/v1/enforce/agents/{agent}"), &cluster.key).unwrap();
            assert_eq!(a["agent"]["is_active"], false, "node {node}: {a}");
            let active = get(&format!("{base}/api/v1/enforce/sessions?status=active&agent_id={agent}"), &cluster.key).unwrap();
            assert_eq!(active["total"], 0, "node {node} lists a session that survived the revocation: {active}");
            let plain = cluster.post(node, "/enforce/intercept", &json!({ "action_type": "tool.search", "agent_id": agent }));
            assert_eq!(plain["decision"], "block", "node {node}: {plain}");
            for session in &sessions {
                let next = cluster.post(node, "/enforce/intercept", &json!({ "action_type": "tool.search", "session_id": session }));
                assert_eq!(next["decision"], "terminate", "node {node}, session {session}: {next}");
            }
        }
    }
}

#[test]
fn an_approval_on_one_node_counts_in_the_histories_other_nodes_hold() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    cluster.post(0, "/enforce/policies", &json!({ "name": "big", "policy_type": "metadata", "action_types": ["wire.*"], "decision": "escalate",
        "conditions": { "rule": { "field": "amount", "op": ">", "value": 100 } } }));
    cluster.post(0, "/enforce/policies", &json!({ "name": "No export after a wire", "policy_type": "sequence", "decision": "block",
        "conditions": { "ordered": { "first": ["wire.send"], "then": ["report.export"], "within_seconds": 300 } } }));
    let approver = cluster.post(0, "/enforce/keys", &json!({ "scopes": ["approvals"] }))["api_key"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(1_000)); // the change feed brings the policies
    let agent = cluster.agent(0, "wirer");
    let session = cluster.post(1, "/enforce/sessions/start", &json!({ "agent_id": agent }))["session_id"].as_str().unwrap().to_owned();
    let export = |node: usize, session: Option<&str>| cluster.post(node, "/enforce/intercept", &json!({ "action_type": "report.export", "agent_id": agent, "session_id": session }));
    // Nodes B and C hold the agent's history and the session's, with no wire in them.
    assert_eq!(export(1, Some(&session))["decision"], "allow");
    assert_eq!(export(2, None)["decision"], "allow");
    std::thread::sleep(Duration::from_millis(5));
    let raised = cluster.post(2, "/enforce/intercept", &json!({ "action_type": "wire.send", "agent_id": agent, "session_id": session, "metadata": { "amount": 500 } }));
    assert_eq!(raised["decision"], "escalate", "{raised}");
    let esc = raised["escalation_id"].as_str().unwrap();
    let approved = post(&format!("{}/api/v1/enforce/escalations/{esc}/resolve", cluster.nodes[0].base), &approver, &json!({ "resolution": "approved" }));
    assert_eq!(approved.as_ref().map(|a| a["escalation"]["status"].clone()), Some(json!("approved")), "{approved:?}");
    // The SDK runs the wire without asking again; node A's approval counted it, and the
    // other nodes read that at their next decision for the agent or the session.
    let next = export(1, Some(&session));
    assert_eq!(next["decision"], "block", "node B sees the approved wire in the session: {next}");
    let next = export(2, None);
    assert_eq!(next["decision"], "block", "node C sees it in the agent's history: {next}");
}

/// `praetor keys create --database` makes a key in the shared store, which every node
/// takes (the last-admin refusal points operators to it). (Found by review: it could
/// only open a data directory's SQLite.)
#[test]
fn keys_create_makes_a_key_in_the_shared_store_every_node_takes() {
    let Some(admin_url) = database_url() else { return };
    let cluster = Cluster::start(&admin_url);
    let out = Command::new(BIN).args(["keys", "create", "--scope", "read", "--database", &cluster.url]).env("PRAETOR_LOG", "warn").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let key = stdout.lines().find(|l| l.starts_with("xb_live_")).expect("the key is printed").trim().to_owned();
    for node in &cluster.nodes {
        let agents = get(&format!("{}/api/v1/enforce/agents", node.base), &key).expect("the key works on every node");
        assert_eq!(agents["ok"], true, "{agents}");
    }
}

/// Nodes started together on an empty database share one workspace: one of them creates
/// it, with the admin key, and the others serve it. With `--demo`, its agents and
/// policies are loaded once, and a keys directory they share is made once. (Each used to
/// create a workspace of its own, whose key worked only on the nodes that loaded it.)
#[test]
fn nodes_started_together_on_an_empty_database_share_one_workspace() {
    let Some(admin_url) = database_url() else { return };
    // Rounds with a data directory per node, then with one they share (one host, the
    // default `./praetor-data`): no node may move or remove the key another kept.
    for (round, shared) in [(0, false), (1, false), (2, false), (3, true), (4, true), (5, true)] {
        let schema = Schema::create(&admin_url);
        let url = schema.url();
        let tmp = tempfile::tempdir().unwrap();
        // One keys directory, empty: the nodes also make its keys together.
        let keys = tmp.path().join("vault-keys");
        let dirs: Vec<_> = (0..3).map(|i| tmp.path().join(if shared { "shared".to_owned() } else { format!("n{i}") })).collect();
        let nodes: Vec<Node> = dirs.iter().map(|d| spawn_node(d, &url, &keys, &["--demo"])).collect();
        let nodes: Vec<Node> = nodes.into_iter().map(Node::healthy).collect();
        let mut dirs = dirs;
        dirs.dedup();
        let admin_keys: Vec<String> = dirs.iter().filter_map(|d| std::fs::read_to_string(d.join("admin.key")).ok()).map(|k| k.trim().to_owned()).collect();
        assert_eq!(admin_keys.len(), 1, "round {round}: exactly one node created the workspace and kept its admin key");
        for d in &dirs {
            let left: Vec<String> = std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("admin.key.")).collect();
            assert!(left.is_empty(), "round {round}: staged or moved-aside admin keys left: {left:?}");
        }
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let workspaces: i64 = c.query_one("SELECT count(*) FROM workspaces", &[]).unwrap().get(0);
        assert_eq!(workspaces, 1, "round {round}");
        let agents: i64 = c.query_one("SELECT count(*) FROM agents", &[]).unwrap().get(0);
        assert_eq!(agents, 3, "round {round}: the demo agents, once");
        let vkeys: Vec<Value> = nodes.iter().map(|n| get(&format!("{}/api/v1/enforce/vault/keys", n.base), &admin_keys[0]).expect("public keys")).collect();
        assert!(vkeys.iter().all(|k| k == &vkeys[0]), "round {round}: every node signs with the same keys: {vkeys:?}");
        for node in &nodes {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let listed = get(&format!("{}/api/v1/enforce/agents", node.base), &admin_keys[0]).expect("the admin key works on every node");
                let names = listed["agents"].as_array().map_or(0, Vec::len);
                if names == 3 {
                    break;
                }
                assert!(Instant::now() < deadline, "round {round}: node {} holds {names} demo agents: {listed}", node.base);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
