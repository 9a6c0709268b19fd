//! `praetor-baseline`: what plain HTTP reaches on this machine, for `bench/run.sh`.
//!
//! A minimal axum server that parses the same request JSON as Praetor's
//! `POST /api/v1/enforce/intercept` and answers a fixed `allow` decision shaped like
//! Praetor's, plus the few setup endpoints `praetor bench` calls (create policy,
//! register agent, delete policy, start and end a session), so the very same
//! `praetor bench` command drives both servers, in every scenario. No policy, no store, no vault: every Praetor figure is reported as a
//! ratio to this one, measured in the same run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, rejection::JsonRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The fields of Praetor's intercept body (crates/praetor-server/src/pipeline.rs,
/// `InterceptBody`); unknown fields are accepted, as there.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InterceptBody {
    pub action_type: Option<String>,
    pub agent_id: Option<String>,
    pub action_content: Option<String>,
    pub content: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub session_id: Option<String>,
    pub chain_id: Option<String>,
    pub chain_step: Option<u64>,
    pub parent_decision_id: Option<String>,
    pub grant_id: Option<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

type Answer = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    (status, Json(json!({ "ok": false, "error": { "code": code, "message": message } })))
}

/// Praetor refuses a request without a key; so does the baseline (no lookup, though).
fn authorised(headers: &HeaderMap) -> Result<(), Answer> {
    match headers.get("x-api-key") {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "an API key is required")),
    }
}

pub async fn intercept(headers: HeaderMap, body: Result<Json<InterceptBody>, JsonRejection>) -> Answer {
    if let Err(e) = authorised(&headers) {
        return e;
    }
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", &e.body_text()),
    };
    let Some(action_type) = body.action_type.filter(|a| !a.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "action_type is required");
    };
    let decision_id = next_id("dec");
    let mut m = Map::new();
    m.insert("ok".into(), json!(true));
    m.insert("decision".into(), json!("allow"));
    m.insert("outcome".into(), json!("allow"));
    m.insert("authorisation_id".into(), json!(decision_id.replacen("dec_", "auth_", 1)));
    m.insert("decision_id".into(), json!(decision_id));
    m.insert("reasoning".into(), json!("baseline: fixed decision"));
    m.insert("policies_triggered".into(), json!([]));
    m.insert("agent_id".into(), json!(body.agent_id));
    m.insert("action_type".into(), json!(action_type));
    if let Some(s) = body.session_id {
        m.insert("session_id".into(), json!(s));
    }
    (StatusCode::OK, Json(Value::Object(m)))
}

pub async fn create_policy(headers: HeaderMap, body: Result<Json<Value>, JsonRejection>) -> Answer {
    if let Err(e) = authorised(&headers) {
        return e;
    }
    match body {
        Ok(_) => (StatusCode::CREATED, Json(json!({ "ok": true, "policy": { "policy_id": next_id("pol") } }))),
        Err(e) => error(StatusCode::BAD_REQUEST, "invalid_request", &e.body_text()),
    }
}

pub async fn register_agent(headers: HeaderMap, body: Result<Json<Value>, JsonRejection>) -> Answer {
    if let Err(e) = authorised(&headers) {
        return e;
    }
    match body {
        Ok(_) => (StatusCode::CREATED, Json(json!({ "ok": true, "agent": { "agent_id": next_id("agt") } }))),
        Err(e) => error(StatusCode::BAD_REQUEST, "invalid_request", &e.body_text()),
    }
}

/// `POST /enforce/sessions/start`, for `praetor bench --scenario session`: a new id, as
/// Praetor answers it (`session_id` and the session object). The baseline keeps no
/// budgets, so its sessions never terminate.
pub async fn start_session(headers: HeaderMap, body: Result<Json<Value>, JsonRejection>) -> Answer {
    if let Err(e) = authorised(&headers) {
        return e;
    }
    match body {
        Ok(_) => {
            let id = next_id("sess");
            (StatusCode::OK, Json(json!({ "ok": true, "session_id": id, "session": { "session_id": id, "status": "active" } })))
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "invalid_request", &e.body_text()),
    }
}

/// `POST /enforce/sessions/{id}/end`, which the bench calls for each session it leaves open.
pub async fn end_session(headers: HeaderMap, Path(id): Path<String>) -> Answer {
    if let Err(e) = authorised(&headers) {
        return e;
    }
    (StatusCode::OK, Json(json!({ "ok": true, "session": { "session_id": id, "status": "ended" } })))
}

pub async fn delete_policy(headers: HeaderMap, Path(_id): Path<String>) -> Answer {
    if let Err(e) = authorised(&headers) {
        return e;
    }
    (StatusCode::OK, Json(json!({ "ok": true })))
}

pub fn router() -> Router {
    let api = Router::new()
        .route("/enforce/intercept", post(intercept))
        .route("/enforce/policies", post(create_policy))
        .route("/enforce/policies/{id}", delete(delete_policy))
        .route("/enforce/agents", post(register_agent))
        .route("/enforce/sessions/start", post(start_session))
        .route("/enforce/sessions/{id}/end", post(end_session));
    Router::new()
        .nest("/api/v1", api.clone())
        .nest("/v1", api)
        .route("/healthz", get(|| async { Json(json!({ "ok": true, "status": "ok" })) }))
}

fn listen_arg() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8788".to_owned();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            s if s.starts_with("--listen=") => listen = s["--listen=".len()..].to_owned(),
            "-h" | "--help" => {
                println!("praetor-baseline [--listen ADDR]   (default 127.0.0.1:8788)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    listen.parse().map_err(|e| format!("`{listen}` is not an address: {e}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let addr = match listen_arg() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
    println!("praetor-baseline listening on http://{bound}");
    if let Err(e) = axum::serve(listener, router()).await {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(method: &str, uri: &str, key: bool, body: &str) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if key {
            req = req.header("x-api-key", "k");
        }
        let res = router().oneshot(req.body(Body::from(body.to_owned())).expect("request")).await.expect("response");
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn intercept_answers_a_fixed_allow_shaped_like_praetor() {
        let body = r#"{"action_type":"bench.read","agent_id":"agt_1","action_content":"read row 42","metadata":{"k":1},"session_id":"ses_1","extra":true}"#;
        let (status, v) = call("POST", "/api/v1/enforce/intercept", true, body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["ok"], true);
        assert_eq!(v["decision"], "allow");
        assert!(v["decision_id"].as_str().is_some_and(|d| d.starts_with("dec_")));
        assert_eq!(v["agent_id"], "agt_1");
        assert_eq!(v["session_id"], "ses_1");
    }

    #[tokio::test]
    async fn intercept_refuses_what_praetor_refuses_first() {
        assert_eq!(call("POST", "/api/v1/enforce/intercept", false, r#"{"action_type":"a"}"#).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(call("POST", "/api/v1/enforce/intercept", true, r#"{"agent_id":"a"}"#).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(call("POST", "/api/v1/enforce/intercept", true, "not json").await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn setup_endpoints_answer_what_praetor_bench_reads() {
        let (_, p) = call("POST", "/api/v1/enforce/policies", true, r#"{"name":"p"}"#).await;
        assert!(p["policy"]["policy_id"].as_str().is_some_and(|id| id.starts_with("pol_")));
        let (_, a) = call("POST", "/api/v1/enforce/agents", true, r#"{"name":"a"}"#).await;
        assert!(a["agent"]["agent_id"].as_str().is_some_and(|id| id.starts_with("agt_")));
        let (status, d) = call("DELETE", "/api/v1/enforce/policies/pol_1", true, "").await;
        assert_eq!((status, d["ok"].clone()), (StatusCode::OK, json!(true)));
    }

    #[tokio::test]
    async fn sessions_start_and_end_as_praetor_bench_expects() {
        let (status, s) = call("POST", "/api/v1/enforce/sessions/start", true, r#"{"agent_id":"agt_1","budgets":{"max_actions":10}}"#).await;
        assert_eq!(status, StatusCode::OK);
        let id = s["session_id"].as_str().expect("session_id").to_owned();
        assert!(id.starts_with("sess_"), "{s}");
        assert_eq!(s["session"]["session_id"], json!(id));
        assert_eq!(call("POST", "/api/v1/enforce/sessions/start", false, "{}").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(call("POST", "/api/v1/enforce/sessions/start", true, "not json").await.0, StatusCode::BAD_REQUEST);
        let (status, e) = call("POST", &format!("/api/v1/enforce/sessions/{id}/end"), true, "{}").await;
        assert_eq!((status, e["session"]["status"].clone()), (StatusCode::OK, json!("ended")));
    }
}
