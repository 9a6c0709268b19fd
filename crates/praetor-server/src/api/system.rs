//! Health, status, metrics, red lines and API keys.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use praetor_store::{ApiKey, Mutation, Scope, Txn};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::clock::iso;
use crate::error::{ApiError, ApiResult, Code};
use crate::events::event;
use crate::extract::{ApiJson, ApiPath};
use crate::secrets::{key_hash, key_prefix, new_api_key, new_id};
use crate::state::AppState;

/// `GET /healthz`: 200 while this node can decide; 503 once a newer version migrated
/// the database (`superseded`), or while its store's commits keep failing (`failing`:
/// a full disk, say), so that a load balancer sends the traffic elsewhere. The schema
/// versions are in the log and in authenticated answers, not here: anyone can ask.
pub async fn healthz(State(state): State<Arc<AppState>>) -> axum::response::Response {
    let (status, message) = if state.store.superseded().is_some() {
        ("superseded", "a newer version of Praetor has migrated the database; this node no longer serves".to_owned())
    } else if let Some(why) = state.store.commit_stats().failing {
        ("failing", format!("the store's last commit failed and none has succeeded since: {why}"))
    } else {
        return Json(json!({ "ok": true, "status": "ok" })).into_response();
    };
    let body = json!({ "ok": false, "status": status, "error": { "code": Code::StoreUnavailable.as_str(), "message": message, "type": Code::StoreUnavailable.kind() } });
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

pub async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    let m = &state.metrics;
    Json(json!({
        "ok": true,
        "service": "praetor",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started_at.elapsed().as_secs(),
        "store": state.store.kind(),
        "counters": {
            "http_requests": m.http_requests.load(Ordering::Relaxed),
            "decisions": m.decisions(),
            "allow": m.decisions_allow.load(Ordering::Relaxed),
            "block": m.decisions_block.load(Ordering::Relaxed),
            "escalate": m.decisions_escalate.load(Ordering::Relaxed),
            "terminate": m.decisions_terminate.load(Ordering::Relaxed),
            "errors": m.errors.load(Ordering::Relaxed),
            "escalations_refused_at_limit": m.escalations_refused.load(Ordering::Relaxed),
            "stale_reevaluations": m.stale_reevaluations.load(Ordering::Relaxed),
            "records_unreadable": m.records_unreadable.load(Ordering::Relaxed),
        },
        "store_commits": state.store.commit_stats(),
    }))
}

/// One metric with a single sample, in Prometheus text format: its help, type and value.
fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Prometheus text exposition format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let m = &state.metrics;
    let mut out = String::new();
    sample(&mut out, "praetor_http_requests_total", "counter", "HTTP requests received.", m.http_requests.load(Ordering::Relaxed));
    sample(&mut out, "praetor_http_errors_total", "counter", "Responses with a 4xx or 5xx status.", m.errors.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP praetor_decisions_total Decisions made, by verdict.");
    let _ = writeln!(out, "# TYPE praetor_decisions_total counter");
    for (verdict, c) in [
        ("allow", &m.decisions_allow),
        ("block", &m.decisions_block),
        ("escalate", &m.decisions_escalate),
        ("terminate", &m.decisions_terminate),
    ] {
        let _ = writeln!(out, "praetor_decisions_total{{decision=\"{verdict}\"}} {}", c.load(Ordering::Relaxed));
    }
    sample(&mut out, "praetor_escalations_refused_total", "counter", "Escalations blocked instead because the workspace held max_pending_escalations.", m.escalations_refused.load(Ordering::Relaxed));
    sample(&mut out, "praetor_stale_reevaluations_total", "counter", "Requests evaluated again because their commit was refused as decided from a stale copy.", m.stale_reevaluations.load(Ordering::Relaxed));
    sample(&mut out, "praetor_records_unreadable_total", "counter", "Stored decisions and violations answered with a read_error (a damaged row or sealed entry), counted per read.", m.records_unreadable.load(Ordering::Relaxed));
    sample(&mut out, "praetor_decision_latency_seconds_sum", "counter", "Total time spent deciding, including the durable append.", m.decision_latency_us_sum.load(Ordering::Relaxed) as f64 / 1e6);
    let c = state.store.commit_stats();
    let _ = writeln!(out, "# HELP praetor_store_commit_seconds Time of one group commit (the durable append, one fsync).");
    let _ = writeln!(out, "# TYPE praetor_store_commit_seconds summary");
    let _ = writeln!(out, "praetor_store_commit_seconds{{quantile=\"0.5\"}} {}", c.commit_us_p50 as f64 / 1e6);
    let _ = writeln!(out, "praetor_store_commit_seconds{{quantile=\"0.99\"}} {}", c.commit_us_p99 as f64 / 1e6);
    let _ = writeln!(out, "praetor_store_commit_seconds_sum {}", c.commit_us_sum as f64 / 1e6);
    let _ = writeln!(out, "praetor_store_commit_seconds_count {}", c.commits);
    let _ = writeln!(out, "# HELP praetor_store_batch_transactions Transactions carried by one group commit.");
    let _ = writeln!(out, "# TYPE praetor_store_batch_transactions summary");
    let _ = writeln!(out, "praetor_store_batch_transactions{{quantile=\"0.5\"}} {}", c.batch_p50);
    let _ = writeln!(out, "praetor_store_batch_transactions{{quantile=\"0.99\"}} {}", c.batch_p99);
    let _ = writeln!(out, "praetor_store_batch_transactions_sum {}", c.transactions);
    let _ = writeln!(out, "praetor_store_batch_transactions_count {}", c.commits);
    sample(&mut out, "praetor_uptime_seconds", "gauge", "Seconds since the server started.", state.started_at.elapsed().as_secs());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Red lines are not administered yet; an empty list is the compatible answer (wire §6).
pub async fn red_lines(_auth: Authorized<perm::Read>) -> Json<Value> {
    Json(json!({ "ok": true, "red_lines": [] }))
}

pub fn key_view(k: &ApiKey) -> Value {
    json!({
        "key_id": k.key_id,
        "prefix": k.prefix,
        "scopes": k.scopes,
        "agent_id": k.agent_id,
        "label": k.label,
        "created_at": iso(k.created_at),
        "revoked_at": k.revoked_at.map(iso),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    scopes: Vec<String>,
    #[serde(default, deserialize_with = "crate::extract::id::optional")]
    agent_id: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

/// Validate scope names and an optional agent binding.
pub fn parse_scopes(scopes: &[String], agent_id: Option<&str>) -> Result<Vec<Scope>, String> {
    if scopes.is_empty() {
        return Err("`scopes`: give at least one of admin, approvals, agent, read".into());
    }
    let mut out = Vec::new();
    for (i, s) in scopes.iter().enumerate() {
        let scope = Scope::parse(s).ok_or_else(|| format!("`scopes[{i}]`: `{s}` is not admin, approvals, agent or read"))?;
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    // Who acts for agents does not approve for them, nor administer the workspace (an
    // agent holding such a key could open itself a window or a breakglass).
    if out.contains(&Scope::Agent) && (out.contains(&Scope::Approvals) || out.contains(&Scope::Admin)) {
        return Err("`scopes`: `agent` cannot be combined with `admin` or `approvals`: make separate keys for who acts and who approves".into());
    }
    if agent_id.is_some() && out != [Scope::Agent] {
        return Err("`agent_id`: only a key whose only scope is `agent` can be bound to an agent".into());
    }
    Ok(out)
}

/// A new key record and its secret, which is shown once.
pub fn mint_key(workspace_id: &str, scopes: Vec<Scope>, agent_id: Option<String>, label: Option<String>, now: i64) -> (ApiKey, String) {
    let secret = new_api_key();
    let key = ApiKey {
        key_id: new_id("key"),
        workspace_id: workspace_id.to_owned(),
        key_hash: key_hash(&secret),
        prefix: key_prefix(&secret),
        scopes,
        agent_id,
        label,
        created_at: now,
        revoked_at: None,
    };
    (key, secret)
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::KeysWrite>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> ApiResult<Json<Value>> {
    let scopes = parse_scopes(&body.scopes, body.agent_id.as_deref()).map_err(|m| ApiError::new(Code::InvalidField, m))?;
    if body.label.as_ref().is_some_and(|l| l.len() > 256) {
        return Err(ApiError::invalid("label", "is longer than 256 bytes"));
    }
    // A key bound to an agent is made only while the agent is active: not while a
    // revocation on this node reads the keys it revokes, and (`ExpectActive`) not
    // after one on any node has committed.
    let ws = &auth.workspace;
    let _guard = match &body.agent_id {
        Some(_) => Some(ws.agent_writes.lock().await),
        None => None,
    };
    let mut mutations = Vec::new();
    if let Some(a) = &body.agent_id {
        let agent = ws.agent(a).ok_or_else(|| ApiError::not_found("agent", a))?;
        if !agent.is_active {
            return Err(ApiError::new(Code::Conflict, format!("`agent_id`: agent `{a}` is deactivated; a key bound to it could not act")));
        }
        mutations.push(Mutation::ExpectActive { workspace_id: ws.workspace_id.clone(), agent_id: a.clone(), credential_id: None });
    }
    let now = state.now_ms();
    let (key, secret) = mint_key(&ws.workspace_id, scopes, body.agent_id, body.label, now);
    mutations.push(Mutation::InsertApiKey(key.clone()));
    let txn = Txn {
        mutations,
        seal: vec![event(&key.workspace_id, "key.created", Some(&auth.key.key_id), now,
            json!({ "key_id": key.key_id, "scopes": key.scopes, "agent_id": key.agent_id }))],
    };
    state.commit(txn).await?;
    state.put_key(key.clone());
    Ok(Json(json!({ "ok": true, "key": key_view(&key), "api_key": secret, "notice": "shown once; Praetor stores only its hash" })))
}

/// Keys come from the store: it also has those `praetor keys create` made.
pub async fn list_keys(State(state): State<Arc<AppState>>, auth: Authorized<perm::KeysWrite>) -> ApiResult<Json<Value>> {
    let keys = state.store.list_api_keys(&auth.workspace.workspace_id).await?;
    Ok(Json(json!({ "ok": true, "keys": keys.iter().map(key_view).collect::<Vec<_>>() })))
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::KeysWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    // Key writes one at a time on this node (with agent registrations and revocations,
    // which revoke keys too); `ExpectAnotherAdmin` orders them across nodes.
    let _guard = auth.workspace.agent_writes.lock().await;
    let keys = state.store.list_api_keys(&auth.workspace.workspace_id).await?;
    let mut key = keys.iter().find(|k| k.key_id == id).cloned().ok_or_else(|| ApiError::not_found("key", &id))?;
    let already = |at: Option<i64>| {
        let since = at.map(|t| format!(" (since {})", crate::clock::iso(t))).unwrap_or_default();
        ApiError::new(Code::Conflict, format!("key `{id}` is already revoked{since}"))
    };
    if key.revoked_at.is_some() {
        return Err(already(key.revoked_at));
    }
    let admin = |k: &ApiKey| k.revoked_at.is_none() && k.scopes.contains(&Scope::Admin);
    let last_admin = || {
        ApiError::new(
            Code::Conflict,
            format!("key `{id}` is the workspace's last admin key: create another first (or run `praetor keys create` on the host)"),
        )
    };
    if admin(&key) && !keys.iter().any(|k| k.key_id != id && admin(k)) {
        return Err(last_admin());
    }
    let now = state.now_ms();
    let mut mutations = Vec::new();
    if admin(&key) {
        mutations.push(Mutation::ExpectAnotherAdmin { workspace_id: key.workspace_id.clone(), key_id: id.clone() });
    }
    mutations.push(Mutation::ExpectKeyLive { workspace_id: key.workspace_id.clone(), key_id: id.clone() });
    mutations.push(Mutation::RevokeApiKey { workspace_id: key.workspace_id.clone(), key_id: id.clone(), at: now });
    let txn = Txn { mutations, seal: vec![event(&key.workspace_id, "key.revoked", Some(&auth.key.key_id), now, json!({ "key_id": id }))] };
    match state.commit(txn).await {
        // Another node revoked this key since it was read: its time is the one stored.
        Err(praetor_store::StoreError::Stale(what)) if what.contains("already revoked") => {
            let stored = state.store.list_api_keys(&auth.workspace.workspace_id).await?.into_iter().find(|k| k.key_id == id);
            let at = stored.as_ref().and_then(|k| k.revoked_at);
            if let Some(k) = stored {
                state.put_key(k);
            }
            return Err(already(at));
        }
        // Another node revoked the other admin keys since they were read.
        Err(praetor_store::StoreError::Stale(_)) if admin(&key) => return Err(last_admin()),
        other => other?,
    };
    key.revoked_at = Some(now);
    state.put_key(key.clone());
    Ok(Json(json!({ "ok": true, "key": key_view(&key) })))
}
