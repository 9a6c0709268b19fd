//! Start the whole application on a loopback port and talk to it over HTTP.

use std::sync::Arc;

use praetor_server::clock::ManualClock;
use praetor_server::vault::VaultKeys;
use praetor_server::{AppState, Config};
use praetor_store::Store;
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
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        tweak(&mut config);
        let store = praetor_store::sqlite::SqliteStore::open(dir.path().join("praetor.db")).expect("open store");
        let store: Arc<dyn Store> = Arc::new(store);
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

/// Assert an error answer: status and stable code.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["ok"], json!(false), "{}", got.1);
    assert_eq!(got.1["error"]["code"], json!(code), "{}", got.1);
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", got.1);
}
