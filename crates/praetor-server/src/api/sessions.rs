//! Runtime sessions (wire §4): start, list, read, heartbeat, kill, end.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_core::session::{Budgets, Consumed, SessionStatus};
use praetor_store::{Mutation, Session, SessionFilter, Txn};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Authorized, Permission, perm};
use crate::config::limits;
use crate::error::{ApiError, ApiResult, Code};
use crate::events::event;
use crate::extract::{ApiJson, ApiPath, ApiQuery, SignedRequest, parse_json};
use crate::secrets::new_id;
use crate::sessions::{Closing, close, view};
use crate::state::{AppState, WorkspaceState};

/// The longest a session may live: 30 days.
const TTL_MAX_SECONDS: u64 = 30 * 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    #[serde(default, deserialize_with = "crate::extract::id::optional")]
    agent_id: Option<String>,
    #[serde(default)]
    budgets: Option<Budgets>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::id::optional")]
    credential_id: Option<String>,
    #[serde(default)]
    prompt_hash: Option<String>,
}

pub async fn start(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Enforce>,
    request: SignedRequest,
) -> ApiResult<Json<Value>> {
    let body: StartBody = parse_json(&request.body)?;
    let ws = &auth.workspace;
    let budgets = body.budgets.unwrap_or_default();
    if let Some(ttl) = budgets.ttl_seconds
        && (ttl == 0 || ttl > TTL_MAX_SECONDS) {
            return Err(ApiError::invalid("budgets.ttl_seconds", format!("must be between 1 and {TTL_MAX_SECONDS}")));
        }
    if budgets.max_spend.len() > limits::LIST_MAX {
        return Err(ApiError::invalid("budgets.max_spend", format!("names {} currencies; the limit is {}", budgets.max_spend.len(), limits::LIST_MAX)));
    }
    // A budget in a currency no action can be charged in would refuse every spend.
    if let Some(bad) = budgets.max_spend.keys().find(|c| !praetor_core::session::is_currency_code(c)) {
        return Err(ApiError::invalid(&format!("budgets.max_spend.{bad}"), format!("is not a currency code ({})", praetor_core::session::CURRENCY_CODE_SHAPE)));
    }
    if body.label.as_ref().is_some_and(|l| l.len() > limits::NAME_MAX) {
        return Err(ApiError::invalid("label", format!("is longer than {} bytes", limits::NAME_MAX)));
    }
    if let Some(h) = &body.prompt_hash
        && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(ApiError::invalid("prompt_hash", "must be 64 hexadecimal characters (SHA-256)"));
        }
    // An agent or credential registered on another node a moment ago may not be held
    // yet: read it from the store. One that is held is not read again: a deactivation or
    // revocation that has landed in the store refuses the commit below anyway (its
    // `ExpectActive` guard), and reloading a held agent would set its copy back behind
    // the decisions still on their way to the store, whose commits would then all be
    // refused as stale (with many sessions starting for busy agents, a storm of retries).
    let hinted = body
        .agent_id
        .clone()
        .or_else(|| body.credential_id.as_ref().and_then(|c| ws.credentials.read().get(c).map(|c| c.agent_id.clone())))
        .or_else(|| auth.bound_agent().map(str::to_owned));
    if let Some(a) = hinted {
        let credential_unknown = body.credential_id.as_ref().is_some_and(|c| !ws.credentials.read().contains_key(c));
        if !ws.holds_agent(&a) || credential_unknown {
            crate::pipeline::resync(&state, ws, &[a], &[]).await?;
        }
    }
    // Whose session: the named agent, else the credential's, else the key's own agent.
    let credential = match &body.credential_id {
        Some(id) => {
            let c = ws.credentials.read().get(id).cloned().ok_or_else(|| ApiError::not_found("credential", id))?;
            if c.revoked_at.is_some() {
                return Err(ApiError::invalid("credential_id", format!("credential `{id}` is revoked")));
            }
            if c.expires_at.is_some_and(|e| e <= state.now_ms()) {
                return Err(ApiError::invalid("credential_id", format!("credential `{id}` has expired")));
            }
            Some(c)
        }
        None => None,
    };
    let agent_id = body
        .agent_id
        .clone()
        .or_else(|| credential.as_ref().map(|c| c.agent_id.clone()))
        .or_else(|| auth.bound_agent().map(str::to_owned))
        .ok_or_else(|| ApiError::invalid("agent_id", "is required unless `credential_id` is given"))?;
    if let Some(c) = &credential
        && c.agent_id != agent_id {
            return Err(ApiError::invalid("credential_id", format!("credential `{}` belongs to another agent", c.credential_id)));
        }
    if auth.bound_agent().is_some_and(|b| b != agent_id) {
        return Err(ApiError::new(Code::InsufficientScope, "this key is bound to another agent"));
    }
    let agent = ws.agent(&agent_id).ok_or_else(|| ApiError::not_found("agent", &agent_id))?;
    if !agent.is_active {
        return Err(ApiError::invalid("agent_id", format!("agent `{agent_id}` is deactivated")));
    }
    crate::pipeline::require_signature_of(&state, ws, &request.caller(&auth.key), &agent.agent_id).await?;
    let now = state.now_ms();
    let mut attributes = Map::new();
    if let Some(h) = body.prompt_hash {
        attributes.insert("prompt_hash".into(), json!(h.to_ascii_lowercase()));
    }
    let session = Session {
        session_id: new_id("sess"),
        workspace_id: ws.workspace_id.clone(),
        agent_id,
        credential_id: credential.map(|c| c.credential_id),
        label: body.label,
        expires_at: budgets.ttl_seconds.map(|t| now + t as i64 * 1000),
        budgets,
        consumed: Consumed::default(),
        status: SessionStatus::Active,
        kill_reason: None,
        attributes,
        created_at: now,
        closed_at: None,
        version: 1,
        etag: new_id("etag"),
        copy_generation: 0,
    };
    let agent_guard = Mutation::ExpectActive {
        workspace_id: ws.workspace_id.clone(),
        agent_id: agent.agent_id.clone(),
        credential_id: session.credential_id.clone(),
    };
    let txn = Txn {
        mutations: vec![agent_guard, Mutation::PutSession(session.clone())],
        seal: vec![event(&ws.workspace_id, "session.started", Some(&auth.key.key_id), now, json!({
            "session_id": session.session_id, "agent_id": session.agent_id, "credential_id": session.credential_id,
            "budgets": session.budgets, "label": session.label,
        }))],
    };
    match state.commit(txn).await {
        Err(praetor_store::StoreError::Stale(what)) => {
            // Deactivated or revoked in the store (on another node) after this node read
            // it: take the store's copy, and name the field that was refused.
            crate::pipeline::resync(&state, ws, std::slice::from_ref(&session.agent_id), &[]).await?;
            let revoked = session.credential_id.as_ref().is_some_and(|c| ws.credentials.read().get(c).is_none_or(|c| c.revoked_at.is_some()));
            let field = if revoked { "credential_id" } else { "agent_id" };
            return Err(ApiError::invalid(field, format!("{what}: the session cannot start")));
        }
        other => other?,
    };
    ws.live.lock().sessions.insert(session.session_id.clone(), session.clone());
    let v = view(&session);
    Ok(Json(json!({ "ok": true, "session_id": session.session_id, "status": "active", "session": v })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    agent_id: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(s) = &q.status
        && !["active", "killed", "terminated", "expired", "ended"].contains(&s.as_str()) {
            return Err(ApiError::new(Code::InvalidQuery, format!("`status`: `{s}` is not active, killed, terminated, expired or ended")));
        }
    if let (Some(b), Some(asked)) = (auth.bound_agent(), q.agent_id.as_deref())
        && b != asked {
            return Err(ApiError::new(Code::InsufficientScope, "this key is bound to another agent"));
        }
    let agent_id = auth.bound_agent().map(str::to_owned).or(q.agent_id);
    let filter = SessionFilter { status: q.status, agent_id, limit: crate::extract::page_size("limit", q.limit, 100, 1000)? };
    let sessions = state.store.list_sessions(&auth.workspace.workspace_id, &filter).await?;
    // The store has every session; memory has the live figures of the active ones.
    let live = auth.workspace.live.lock();
    let views: Vec<Value> = sessions.iter().map(|s| view(live.sessions.get(&s.session_id).unwrap_or(s))).collect();
    Ok(Json(json!({ "ok": true, "sessions": views, "total": views.len() })))
}

/// The current state of a session: the store's copy when it is newer than this node's
/// (other nodes charge and close sessions too), else this node's own.
async fn current(state: &AppState, ws: &WorkspaceState, id: &str) -> ApiResult<Session> {
    crate::pipeline::refresh_session(state, ws, id).await?;
    ws.live.lock().sessions.get(id).cloned().ok_or_else(|| ApiError::not_found("session", id))
}

/// A session may be driven by admin keys and by agent keys; a key bound to an agent
/// only by that agent's sessions.
fn check_owner<P: Permission>(auth: &Authorized<P>, s: &Session) -> ApiResult<()> {
    match auth.bound_agent() {
        Some(b) if b != s.agent_id => Err(ApiError::not_found("session", &s.session_id)),
        _ => Ok(()),
    }
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let s = current(&state, &auth.workspace, &id).await?;
    check_owner(&auth, &s)?;
    Ok(Json(json!({ "ok": true, "session": view(&s) })))
}

/// `POST /enforce/sessions/{id}/heartbeat`: the SDK's kill switch poll. Any status but
/// `active` stops the run, so a session past its expiry is expired here and now.
pub async fn heartbeat(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Enforce>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    let mut s = current(&state, ws, &id).await?;
    check_owner(&auth, &s)?;
    if s.status == SessionStatus::Active && s.expires_at.is_some_and(|at| at <= state.now_ms()) {
        let closing = Closing { status: SessionStatus::Expired, reason: Some("ttl_seconds reached".into()), actor: None, kind: "session.expired" };
        close(&state, ws, std::slice::from_ref(&id), closing).await?;
        s = current(&state, ws, &id).await?;
    }
    Ok(Json(json!({
        "ok": true,
        "session_id": s.session_id,
        "status": s.status.as_str(),
        "consumed": s.consumed,
        "budgets": s.budgets,
        "kill_reason": s.kill_reason,
        "expires_at": s.expires_at.map(crate::clock::iso),
    })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ReasonBody {
    reason: Option<String>,
}

pub fn reason_of(body: ReasonBody, default: &str) -> ApiResult<String> {
    let reason = body.reason.unwrap_or_else(|| default.to_owned());
    if reason.len() > 1024 {
        return Err(ApiError::invalid("reason", "is longer than 1024 bytes"));
    }
    Ok(reason)
}

/// `POST /enforce/sessions/{id}/kill`: an administrator stops a run. The next action,
/// and the next heartbeat, see it.
pub async fn kill(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let reason = reason_of(body, "killed by an administrator")?;
    let ws = &auth.workspace;
    current(&state, ws, &id).await?;
    let closing = Closing { status: SessionStatus::Killed, reason: Some(reason), actor: Some(&auth.key.key_id), kind: "session.killed" };
    let changed = close(&state, ws, std::slice::from_ref(&id), closing).await?;
    let s = current(&state, ws, &id).await?;
    Ok(Json(json!({ "ok": true, "killed": !changed.is_empty(), "session": view(&s) })))
}

/// `POST /enforce/sessions/{id}/end`: the agent closes its own run.
pub async fn end(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Enforce>,
    ApiPath(id): ApiPath<String>,
    request: SignedRequest,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    let s = current(&state, ws, &id).await?;
    check_owner(&auth, &s)?;
    crate::pipeline::require_signature_of(&state, ws, &request.caller(&auth.key), &s.agent_id).await?;
    let closing = Closing { status: SessionStatus::Ended, reason: None, actor: Some(&auth.key.key_id), kind: "session.ended" };
    close(&state, ws, std::slice::from_ref(&id), closing).await?;
    let s = current(&state, ws, &id).await?;
    Ok(Json(json!({ "ok": true, "session": view(&s) })))
}
