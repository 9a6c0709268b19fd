//! Start the whole application on a loopback port and talk to it over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use praetor_server::clock::ManualClock;
use praetor_server::vault::VaultKeys;
use praetor_server::{AppState, Config};
use praetor_store::{self as ps, Guarded, Mutation, Store, Txn};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// 2026-01-07T12:00:00Z, a Wednesday.
pub const T0: i64 = 1_767_787_200_000;

pub struct TestServer {
    pub base: String,
    pub admin_key: String,
    pub clock: Arc<ManualClock>,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.abort();
        self.dispatcher.abort();
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_on(tweak, |store| store).await
    }

    /// A server on a store another node keeps contesting (see `ContestedStore`).
    pub async fn start_contested() -> (TestServer, Arc<ContestedStore>) {
        let mut contested = None;
        let s = Self::start_on(|_| {}, |inner| {
            let store = Arc::new(ContestedStore { inner, contest: AtomicBool::new(false), contest_objects: AtomicBool::new(false), contested: AtomicU32::new(0), late_key: Default::default(), late_write: Default::default() });
            contested = Some(store.clone());
            store
        })
        .await;
        (s, contested.expect("the store was wrapped"))
    }

    async fn start_on(tweak: impl FnOnce(&mut Config), wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        tweak(&mut config);
        let store = praetor_store::sqlite::SqliteStore::open(dir.path().join("praetor.db")).expect("open store");
        let store = wrap(Arc::new(store));
        let clock = Arc::new(ManualClock::new(T0));
        let state = AppState::load(config, store, clock.clone(), VaultKeys::ephemeral()).await.expect("load state");
        let started = praetor_server::bootstrap::first_start(&state).await.expect("first start");
        let admin_key = started.admin_key.expect("first start makes an admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = praetor_server::router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dispatcher = praetor_server::delivery::spawn_dispatcher(state.clone());
        TestServer {
            base: format!("http://{addr}"),
            admin_key,
            clock,
            state,
            client: reqwest::Client::new(),
            dir,
            server,
            dispatcher,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "_raw": text }));
        (status, body)
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)).header("X-API-Key", key)).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).header("X-API-Key", key).json(body)).await
    }

    pub async fn post_raw(&self, path: &str, key: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).header("X-API-Key", key).header("Content-Type", "application/json").body(body)).await
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.put(self.url(path)).header("X-API-Key", key).json(body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.patch(self.url(path)).header("X-API-Key", key).json(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(self.url(path)).header("X-API-Key", key)).await
    }

    /// Register an agent and return its id.
    pub async fn agent(&self, name: &str) -> String {
        let (status, body) = self.post("/api/v1/enforce/agents", &self.admin_key, &json!({ "name": name })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["agent"]["agent_id"].as_str().expect("agent_id").to_owned()
    }

    /// Create a policy and return its id.
    pub async fn policy(&self, def: Value) -> String {
        let (status, body) = self.post("/api/v1/enforce/policies", &self.admin_key, &def).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["policy"]["policy_id"].as_str().expect("policy_id").to_owned()
    }

    pub async fn key(&self, scopes: &[&str], agent_id: Option<&str>) -> String {
        let (status, body) =
            self.post("/api/v1/enforce/keys", &self.admin_key, &json!({ "scopes": scopes, "agent_id": agent_id })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["api_key"].as_str().expect("api_key").to_owned()
    }

    pub async fn intercept(&self, body: Value) -> Value {
        let (status, answer) = self.post("/api/v1/enforce/intercept", &self.admin_key, &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }
}

/// The workspace's first 1,000 vault entries. Each is an event a webhook may subscribe
/// to (`delivery::EVENT_NAMES`: a glob that matches none of them is refused), checked
/// here for every test that reads them.
pub async fn vault_entries(s: &TestServer) -> Vec<Value> {
    let (_, page) = s.get("/api/v1/enforce/vault/entries?start=0&end=1000", &s.admin_key).await;
    let entries: Vec<Value> = page["entries"].as_array().expect("entries").iter().map(|e| e["entry"].clone()).collect();
    for e in &entries {
        let name = match e["kind"].as_str().expect("kind") {
            "decision" => format!("decision.{}", e["decision"].as_str().expect("decision")),
            kind => kind.to_owned(),
        };
        assert!(praetor_server::delivery::EVENT_NAMES.contains(&name.as_str()), "an entry of kind `{name}` no webhook may subscribe to");
    }
    entries
}

/// Assert an error answer: status and stable code.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["ok"], json!(false), "{}", got.1);
    assert_eq!(got.1["error"]["code"], json!(code), "{}", got.1);
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", got.1);
}

/// A store another node keeps contesting: while `contest` is on, just before each
/// transaction that guards a session's etag (a kill, a decision's charge) "another
/// node" gives that session a new etag in the store, so the transaction is refused as
/// stale, however often it is tried. While `contest_objects` is on, it does the same to
/// each stored authority object (grant, escalation) a transaction writes: it writes the
/// store's copy again at the version the transaction brings, as an approval or a use on
/// another node would. `contested` counts the refusals so caused.
pub struct ContestedStore {
    inner: Arc<dyn Store>,
    pub contest: AtomicBool,
    pub contest_objects: AtomicBool,
    pub contested: AtomicU32,
    /// A key write (a new key, a revocation) another node commits just after the next
    /// listing of keys has been read, as it would between a revocation's listing and
    /// its commit.
    pub late_key: parking_lot::Mutex<Option<Mutation>>,
    /// A write another node commits just before the next transaction here, after this
    /// node read what it decided from.
    pub late_write: parking_lot::Mutex<Option<Mutation>>,
}

#[async_trait::async_trait]
impl Store for ContestedStore {
    fn submit(&self, txn: Txn) -> ps::Pending {
        if let Some(write) = self.late_write.lock().take() {
            let inner = self.inner.clone();
            return Box::pin(async move {
                inner.commit(Txn { mutations: vec![write], seal: vec![] }).await?;
                inner.submit(txn).await
            });
        }
        if self.contest_objects.load(Ordering::SeqCst) {
            let objects: Vec<ps::ObjectRecord> = txn
                .mutations
                .iter()
                .filter_map(|m| match m {
                    Mutation::PutObject(r) => Some(r.clone()),
                    _ => None,
                })
                .collect();
            if !objects.is_empty() {
                let inner = self.inner.clone();
                self.contested.fetch_add(1, Ordering::SeqCst);
                return Box::pin(async move {
                    for r in objects {
                        // A new object has nothing to contest.
                        if let Some(mut stored) = inner.get_object(&r.workspace_id, &r.kind, &r.object_id).await? {
                            stored.version = r.version;
                            stored.body["version"] = json!(r.version);
                            inner.commit(Txn { mutations: vec![Mutation::PutObject(stored)], seal: vec![] }).await?;
                        }
                    }
                    inner.submit(txn).await
                });
            }
        }
        if !self.contest.load(Ordering::SeqCst) {
            return self.inner.submit(txn);
        }
        // A new etag each time: the one before may have been read back already.
        let round = self.contested.load(Ordering::SeqCst);
        let touches: Vec<Mutation> = txn
            .mutations
            .iter()
            .filter_map(|m| match m {
                Mutation::Expect { workspace_id, of: Guarded::Session, id, .. } => Some(Mutation::Touch {
                    workspace_id: workspace_id.clone(), of: Guarded::Session, id: id.clone(), etag: format!("elsewhere_{round}"),
                }),
                _ => None,
            })
            .collect();
        if touches.is_empty() {
            return self.inner.submit(txn);
        }
        self.contested.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.commit(Txn { mutations: touches, seal: vec![] }).await?;
            inner.submit(txn).await
        })
    }
    async fn commit(&self, txn: Txn) -> ps::Result<Vec<ps::Sealed>> {
        self.submit(txn).await
    }
    async fn snapshot(&self) -> ps::Result<ps::Snapshot> {
        self.inner.snapshot().await
    }
    async fn api_key_by_hash(&self, key_hash: &str) -> ps::Result<Option<ps::ApiKey>> {
        self.inner.api_key_by_hash(key_hash).await
    }
    async fn list_api_keys(&self, ws: &str) -> ps::Result<Vec<ps::ApiKey>> {
        let listed = self.inner.list_api_keys(ws).await?;
        let late = self.late_key.lock().take();
        if let Some(write) = late {
            self.inner.commit(Txn { mutations: vec![write], seal: vec![] }).await?;
        }
        Ok(listed)
    }
    async fn list_sessions(&self, ws: &str, filter: &ps::SessionFilter) -> ps::Result<Vec<ps::Session>> {
        self.inner.list_sessions(ws, filter).await
    }
    async fn list_objects(&self, ws: &str, filter: &ps::ObjectFilter) -> ps::Result<Vec<ps::ObjectRecord>> {
        self.inner.list_objects(ws, filter).await
    }
    async fn get_object(&self, ws: &str, kind: &str, id: &str) -> ps::Result<Option<ps::ObjectRecord>> {
        self.inner.get_object(ws, kind, id).await
    }
    async fn get_session(&self, ws: &str, id: &str) -> ps::Result<Option<ps::Session>> {
        self.inner.get_session(ws, id).await
    }
    async fn shadow_report(&self, ws: &str, policy_id: Option<&str>, since: ps::Millis) -> ps::Result<Vec<ps::ShadowSummary>> {
        self.inner.shadow_report(ws, policy_id, since).await
    }
    async fn list_violations(&self, ws: &str, filter: &ps::ViolationFilter) -> ps::Result<Vec<ps::Violation>> {
        self.inner.list_violations(ws, filter).await
    }
    async fn get_violation(&self, ws: &str, id: &str) -> ps::Result<Option<ps::Violation>> {
        self.inner.get_violation(ws, id).await
    }
    async fn due_deliveries(&self, now: ps::Millis, limit: u32, skip_targets: &[String], skip_workspaces: &[String]) -> ps::Result<Vec<ps::Delivery>> {
        self.inner.due_deliveries(now, limit, skip_targets, skip_workspaces).await
    }
    async fn list_deliveries(&self, ws: &str, webhook_id: Option<&str>, limit: u32) -> ps::Result<Vec<ps::Delivery>> {
        self.inner.list_deliveries(ws, webhook_id, limit).await
    }
    async fn list_decisions(&self, ws: &str, filter: &ps::DecisionFilter) -> ps::Result<(Vec<ps::DecisionRow>, u64)> {
        self.inner.list_decisions(ws, filter).await
    }
    async fn get_decision(&self, ws: &str, id: &str) -> ps::Result<Option<ps::DecisionRow>> {
        self.inner.get_decision(ws, id).await
    }
    async fn log_head(&self, ws: &str) -> ps::Result<ps::LogHead> {
        self.inner.log_head(ws).await
    }
    async fn vault_entries(&self, ws: &str, start: u64, end: u64) -> ps::Result<Vec<ps::VaultEntryRow>> {
        self.inner.vault_entries(ws, start, end).await
    }
    async fn inclusion_proof(&self, ws: &str, index: u64, size: u64) -> ps::Result<Vec<[u8; 32]>> {
        self.inner.inclusion_proof(ws, index, size).await
    }
    async fn consistency_proof(&self, ws: &str, first: u64, second: u64) -> ps::Result<Vec<[u8; 32]>> {
        self.inner.consistency_proof(ws, first, second).await
    }
    async fn prefix_hashes(&self, ws: &str, size: u64) -> ps::Result<Vec<[u8; 32]>> {
        self.inner.prefix_hashes(ws, size).await
    }
    async fn tree_root(&self, ws: &str, size: u64) -> ps::Result<[u8; 32]> {
        self.inner.tree_root(ws, size).await
    }
    async fn put_checkpoint(&self, ws: &str, checkpoint: ps::CheckpointRow) -> ps::Result<()> {
        self.inner.put_checkpoint(ws, checkpoint).await
    }
    async fn latest_checkpoint(&self, ws: &str) -> ps::Result<Option<ps::CheckpointRow>> {
        self.inner.latest_checkpoint(ws).await
    }
    async fn checkpoint_covering(&self, ws: &str, at_least: u64) -> ps::Result<Option<ps::CheckpointRow>> {
        self.inner.checkpoint_covering(ws, at_least).await
    }
    async fn checkpoints_between(&self, ws: &str, from_size: u64, to_size: u64) -> ps::Result<Vec<ps::CheckpointRow>> {
        self.inner.checkpoints_between(ws, from_size, to_size).await
    }
    async fn agent_state(&self, ws: &str, id: &str, since: ps::Millis, cap: u32) -> ps::Result<Option<ps::AgentState>> {
        self.inner.agent_state(ws, id, since, cap).await
    }
    async fn session_state(&self, ws: &str, id: &str, since: ps::Millis, cap: u32) -> ps::Result<Option<ps::SessionState>> {
        self.inner.session_state(ws, id, since, cap).await
    }
    async fn list_policies(&self, ws: &str) -> ps::Result<Vec<ps::PolicyRecord>> {
        self.inner.list_policies(ws).await
    }
    async fn get_workspace(&self, ws: &str) -> ps::Result<Option<ps::Workspace>> {
        self.inner.get_workspace(ws).await
    }
    async fn get_api_key(&self, ws: &str, key_id: &str) -> ps::Result<Option<ps::ApiKey>> {
        self.inner.get_api_key(ws, key_id).await
    }
    async fn changes_since(&self, ws: &str, after: u64, limit: u32) -> ps::Result<Vec<ps::Change>> {
        self.inner.changes_since(ws, after, limit).await
    }
    async fn change_heads(&self) -> ps::Result<std::collections::HashMap<String, u64>> {
        self.inner.change_heads().await
    }
    async fn check_schema(&self) -> ps::Result<()> {
        self.inner.check_schema().await
    }
    fn superseded(&self) -> Option<String> {
        self.inner.superseded()
    }
    fn node_id(&self) -> &str {
        self.inner.node_id()
    }
    fn commit_stats(&self) -> ps::CommitStats {
        self.inner.commit_stats()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
