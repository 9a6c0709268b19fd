//! Workspace settings the engine reads: `default_decision`, `on_redacted_content`,
//! `default_jurisdiction`, `trust_baseline`, the escalation settings, `allow_anonymous`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_core::WorkspaceSettings;
use praetor_store::{Mutation, Txn};
use serde_json::{Map, Value, json};

use crate::auth::{Authorized, perm};
use crate::error::{ApiError, ApiResult, Code};
use crate::events::event;
use crate::extract::ApiJson;
use crate::state::AppState;

/// The longest `default_jurisdiction` accepted (codes such as `EU` or `US-CA`).
const JURISDICTION_MAX: usize = 64;

pub async fn get(auth: Authorized<perm::Read>) -> Json<Value> {
    let settings = auth.workspace.settings.read().clone();
    Json(json!({ "ok": true, "workspace_id": auth.workspace.workspace_id, "name": auth.workspace.name, "settings": settings }))
}

/// `PUT /enforce/settings`: change any subset of the settings; the rest stay.
pub async fn put(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiJson(patch): ApiJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    let _guard = ws.policy_writes.lock().await;
    let mut merged = match serde_json::to_value(ws.settings.read().clone()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    merged.extend(patch.clone());
    let settings: WorkspaceSettings = crate::extract::parse_json(Value::Object(merged).to_string().as_bytes())?;
    if settings.trust_baseline > 100 {
        return Err(ApiError::new(Code::InvalidField, "`trust_baseline`: must be between 0 and 100"));
    }
    for (field, seconds) in [("escalation_ttl_seconds", settings.escalation_ttl_seconds), ("approval_freshness_seconds", settings.approval_freshness_seconds)] {
        if !(1..=praetor_core::MAX_SETTING_SECONDS).contains(&seconds) {
            return Err(ApiError::invalid(field, format!("must be between 1 and {} (a year)", praetor_core::MAX_SETTING_SECONDS)));
        }
    }
    // Copied into every answer that names no jurisdiction of its own.
    if let Some(j) = &settings.default_jurisdiction
        && (j.trim().is_empty() || j.len() > JURISDICTION_MAX || j.chars().any(char::is_control))
    {
        return Err(ApiError::invalid("default_jurisdiction", format!("must be 1-{JURISDICTION_MAX} bytes without control characters, or null")));
    }
    for (field, limit) in [
        ("max_pending_escalations", settings.max_pending_escalations),
        ("max_pending_escalations_per_agent", settings.max_pending_escalations_per_agent),
    ] {
        if !(1..=praetor_core::MAX_PENDING_ESCALATIONS_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(field, format!("must be between 1 and {}", praetor_core::MAX_PENDING_ESCALATIONS_LIMIT)));
        }
    }
    let now = state.now_ms();
    // Only the settings named are written, onto the stored ones (each is checked on its
    // own above): two nodes changing different settings at once both stand.
    let txn = Txn {
        mutations: vec![Mutation::PatchWorkspaceSettings { workspace_id: ws.workspace_id.clone(), patch: patch.clone() }],
        seal: vec![event(&ws.workspace_id, "settings.updated", Some(&auth.key.key_id), now, json!({ "changed": patch }))],
    };
    state.commit(txn).await?;
    // What the store now holds, other nodes' changes included.
    let settings = match state.store.get_workspace(&ws.workspace_id).await {
        Ok(Some(stored)) => stored.settings,
        _ => settings,
    };
    *ws.settings.write() = settings.clone();
    Ok(Json(json!({ "ok": true, "settings": settings })))
}
