//! Escalations (wire §3): a person approves or rejects an escalated action. An approval
//! is actionable only while fresh, binds to the exact action, and is sealed with the
//! approver's identity.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_store::{ObjectFilter, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::authority::{Escalation, Object, touched, update};
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{AppState, WorkspaceState};

fn freshness_ms(ws: &WorkspaceState) -> i64 {
    ws.settings.read().approval_freshness_ms()
}

/// The escalation from memory, or from the store (a resolved one may be only there).
async fn find(state: &AppState, ws: &WorkspaceState, id: &str) -> ApiResult<Escalation> {
    if let Some(e) = ws.live.lock().authority.escalations.get(id) {
        return Ok(e.clone());
    }
    let rec = state.store.get_object(&ws.workspace_id, Escalation::KIND, id).await?;
    let e = rec.as_ref().and_then(Escalation::from_record).ok_or_else(|| ApiError::not_found("escalation", id))?;
    ws.live.lock().authority.escalations.insert_if_absent(e.clone());
    Ok(e)
}

fn visible<P: crate::auth::Permission>(auth: &Authorized<P>, e: &Escalation) -> ApiResult<()> {
    if auth.may_see(e.agent_id.as_deref()) { Ok(()) } else { Err(ApiError::not_found("escalation", &e.escalation_id)) }
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
        && !["pending", "approved", "rejected", "expired"].contains(&s.as_str()) {
            return Err(ApiError::new(Code::InvalidQuery, format!("`status`: `{s}` is not pending, approved, rejected or expired")));
        }
    let ws = &auth.workspace;
    let agent = auth.bound_agent().map(str::to_owned).or(q.agent_id);
    // A pending escalation past its expiry counts as expired before the sweeper has
    // stored that: asking for `expired` also reads the stored `pending` ones.
    let stored_statuses: Vec<Option<String>> = match q.status.as_deref() {
        Some("expired") => vec![Some("expired".into()), Some("pending".into())],
        other => vec![other.map(str::to_owned)],
    };
    let now = state.now_ms();
    let fresh = freshness_ms(ws);
    let mut rows = Vec::new();
    for status in stored_statuses {
        let filter = ObjectFilter { kind: Escalation::KIND.into(), status, agent_id: agent.clone(), limit: q.limit.unwrap_or(100) };
        rows.extend(state.store.list_objects(&ws.workspace_id, &filter).await?);
    }
    let live = ws.live.lock();
    let views: Vec<Value> = rows
        .iter()
        .filter_map(Escalation::from_record)
        .map(|e| live.authority.escalations.get(&e.escalation_id).cloned().unwrap_or(e))
        // A pending escalation past its expiry is listed as expired even before the sweeper runs.
        .filter(|e| q.status.as_deref().is_none_or(|s| e.status_at(now) == s))
        .map(|e| e.view(now, fresh))
        .collect();
    Ok(Json(json!({ "ok": true, "escalations": views, "total": views.len() })))
}

pub async fn get(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let e = find(&state, &auth.workspace, &id).await?;
    visible(&auth, &e)?;
    Ok(Json(json!({ "ok": true, "escalation": e.view(state.now_ms(), freshness_ms(&auth.workspace)) })))
}

/// `GET /enforce/escalations/{id}/status`: what the SDK polls. `decision` is `allow`
/// only while an approval is fresh and unused.
pub async fn status(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let e = find(&state, &auth.workspace, &id).await?;
    visible(&auth, &e)?;
    let now = state.now_ms();
    let v = e.view(now, freshness_ms(&auth.workspace));
    Ok(Json(json!({
        "ok": true,
        "escalation_id": e.escalation_id,
        "status": v["status"],
        "decision": v["decision"],
        "resolution_reason": e.resolution_reason,
        "resolved_at": v["resolved_at"],
        "fresh_until": v["fresh_until"],
        "expires_at": v["expires_at"],
        "decision_id": e.decision_id,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    resolution: String,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /enforce/escalations/{id}/resolve`: approvals scope; agent-scoped keys never
/// resolve, and no key resolves an escalation it raised.
pub async fn resolve(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Approvals>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> ApiResult<Json<Value>> {
    let resolution = match body.resolution.as_str() {
        "approved" | "approve" => "approved",
        "rejected" | "reject" => "rejected",
        other => return Err(ApiError::invalid("resolution", format!("`{other}` is not approved or rejected"))),
    };
    if body.reason.as_ref().is_some_and(|r| r.len() > 2048) {
        return Err(ApiError::invalid("reason", "is longer than 2048 bytes"));
    }
    if auth.key.scopes.contains(&Scope::Agent) || auth.bound_agent().is_some() {
        return Err(ApiError::new(Code::InsufficientScope, "agent keys cannot resolve escalations"));
    }
    let ws = &auth.workspace;
    find(&state, ws, &id).await?;
    let key_id = auth.key.key_id.clone();
    let fresh = freshness_ms(ws);
    let reason = body.reason;
    let view = update(&state, ws, "escalation.resolved", &key_id.clone(), move |a, now| {
        let mut e = a.escalations.get_mut(&id).ok_or_else(|| ApiError::not_found("escalation", &id))?;
        if e.raised_by_key == key_id {
            return Err(ApiError::new(Code::InsufficientScope, "the key that raised an escalation cannot resolve it"));
        }
        match e.status_at(now) {
            "pending" => {}
            other => return Err(ApiError::new(Code::Conflict, format!("escalation `{id}` is already {other}"))),
        }
        e.state = resolution.to_owned();
        e.resolution_reason = reason.clone();
        e.approver_key = Some(key_id.clone());
        e.resolved_at = Some(now);
        let record = touched(&mut *e, &ws.workspace_id, now);
        let fields = json!({
            "escalation_id": e.escalation_id, "decision_id": e.decision_id, "agent_id": e.agent_id,
            "resolution": resolution, "reason": reason, "approver": key_id, "action_hash": e.action_hash,
        });
        Ok((vec![record], fields, e.view(now, fresh)))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "escalation": view })))
}

/// Escalations that can no longer change a decision (resolved, expired, used, or
/// approved but stale) leave memory; the store keeps them and `find` reads them back.
pub fn prune_settled(ws: &WorkspaceState, now: i64) {
    let fresh = freshness_ms(ws);
    ws.live.lock().authority.escalations.retain(|e| match e.status_at(now) {
        "pending" => true,
        "approved" => e.decision_at(now, fresh) == "allow",
        _ => false,
    });
}

/// How long the node expiring escalations keeps the job after its last sweep.
const EXPIRY_LEASE_MS: i64 = 5_000;

/// Expire pending escalations past their time (called by the sweeper).
pub async fn expire_due(state: &AppState, ws: &WorkspaceState) -> ApiResult<()> {
    let now = state.now_ms();
    let due: Vec<String> = ws
        .live
        .lock()
        .authority
        .escalations
        .values()
        .filter(|e| e.state == "pending" && now >= e.expires_at)
        .map(|e| e.escalation_id.clone())
        .collect();
    // One node expires them for all (the lease is taken only when there is work, so an
    // idle workspace costs no writes).
    if due.is_empty() || !crate::vault::hold_lease(state, &ws.workspace_id, "escalations", EXPIRY_LEASE_MS).await? {
        return Ok(());
    }
    for id in due {
        // Checked again at the write: the feed may have brought another node's
        // approval or denial while this node took the lease.
        let still_due = ws.live.lock().authority.escalations.get(&id).is_some_and(|e| e.state == "pending" && state.now_ms() >= e.expires_at);
        if !still_due {
            continue;
        }
        update(state, ws, "escalation.expired", "server", |a, now| {
            let Some(mut e) = a.escalations.get_mut(&id).filter(|e| e.state == "pending") else { return Ok((vec![], json!({}), ())) };
            e.state = "expired".into();
            let record = touched(&mut *e, &ws.workspace_id, now);
            Ok((vec![record], json!({ "escalation_id": e.escalation_id, "decision_id": e.decision_id }), ()))
        })
        .await?;
    }
    Ok(())
}
