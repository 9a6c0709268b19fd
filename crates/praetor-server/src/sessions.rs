//! Runtime containment: closing sessions (kill, end, expiry, revocation cascade) and
//! the sweeper that expires silent sessions on time. Every transition is sealed.

use std::sync::Arc;

use praetor_core::session::SessionStatus;
use praetor_store::{Mutation, SealRequest, Session, Txn};
use serde_json::{Value, json};

use crate::clock::iso;
use crate::error::ApiResult;
use crate::events::event;
use crate::state::{AppState, WorkspaceState};

/// The session as the API shows it.
pub fn view(s: &Session) -> Value {
    let remaining_actions = s.budgets.max_actions.map(|m| m.saturating_sub(s.consumed.actions));
    json!({
        "session_id": s.session_id,
        "agent_id": s.agent_id,
        "credential_id": s.credential_id,
        "label": s.label,
        "status": s.status.as_str(),
        "budgets": s.budgets,
        "consumed": s.consumed,
        "remaining_actions": remaining_actions,
        "kill_reason": s.kill_reason,
        "attributes": s.attributes,
        "created_at": iso(s.created_at),
        "expires_at": s.expires_at.map(iso),
        "closed_at": s.closed_at.map(iso),
    })
}

/// Why a session is being closed, and by whom.
pub struct Closing<'a> {
    pub status: SessionStatus,
    pub reason: Option<String>,
    /// The API key id, `None` for the server itself (sweeper, cascade source named in `reason`).
    pub actor: Option<&'a str>,
    /// The vault event kind: `session.killed`, `session.ended`, `session.expired`.
    pub kind: &'a str,
}

/// Mark active sessions closed in memory and return their new state; closed ones are
/// left alone. The caller persists and seals them (`closing_txn`).
pub fn close_in_memory(ws: &WorkspaceState, ids: &[String], closing: &Closing<'_>, now_ms: i64) -> Vec<Session> {
    let mut live = ws.live.lock();
    let mut changed = Vec::new();
    for id in ids {
        if let Some(s) = live.sessions.get_mut(id)
            && s.status == SessionStatus::Active {
                s.status = closing.status;
                s.kill_reason = closing.reason.clone();
                s.closed_at = Some(now_ms);
                s.version += 1;
                changed.push(s.clone());
            }
    }
    changed
}

/// The store writes and vault events for closed sessions.
pub fn closing_txn(ws_id: &str, closed: &[Session], closing: &Closing<'_>, now_ms: i64) -> (Vec<Mutation>, Vec<SealRequest>) {
    let mutations = closed.iter().map(|s| Mutation::PutSession(s.clone())).collect();
    let seals = closed
        .iter()
        .map(|s| {
            event(ws_id, closing.kind, closing.actor, now_ms, json!({
                "session_id": s.session_id, "agent_id": s.agent_id, "credential_id": s.credential_id,
                "reason": closing.reason, "consumed": s.consumed,
            }))
        })
        .collect();
    (mutations, seals)
}

/// Close sessions and commit the change with its vault events.
pub async fn close(state: &AppState, ws: &WorkspaceState, ids: &[String], closing: Closing<'_>) -> ApiResult<Vec<Session>> {
    let now = state.now_ms();
    let closed = close_in_memory(ws, ids, &closing, now);
    if !closed.is_empty() {
        let (mutations, seal) = closing_txn(&ws.workspace_id, &closed, &closing, now);
        state.commit(Txn { mutations, seal }).await?;
        for s in &closed {
            tracing::info!(workspace_id = %ws.workspace_id, session_id = %s.session_id, status = s.status.as_str(), "session closed");
        }
    }
    Ok(closed)
}

/// Active sessions that match `pred`.
pub fn active_where(ws: &WorkspaceState, pred: impl Fn(&Session) -> bool) -> Vec<String> {
    ws.live
        .lock()
        .sessions
        .values()
        .filter(|s| s.status == SessionStatus::Active && pred(s))
        .map(|s| s.session_id.clone())
        .collect()
}

/// Expire every active session past its `expires_at`, a few times a second, so a
/// silent agent's session ends on time.
pub fn spawn_sweeper(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep(&state).await;
        }
    })
}

pub async fn sweep(state: &AppState) {
    let now = state.now_ms();
    for ws_id in state.workspace_ids() {
        let Some(ws) = state.workspace(&ws_id) else { continue };
        if let Err(e) = crate::api::escalations::expire_due(state, &ws).await {
            tracing::warn!(workspace_id = %ws_id, error = %e.message, "escalation expiry not recorded");
        }
        crate::api::escalations::prune_settled(&ws, now);
        let due = active_where(&ws, |s| s.expires_at.is_some_and(|at| at <= now));
        if due.is_empty() {
            continue;
        }
        let closing = Closing { status: SessionStatus::Expired, reason: Some("ttl_seconds reached".into()), actor: None, kind: "session.expired" };
        if let Err(e) = close(state, &ws, &due, closing).await {
            tracing::warn!(workspace_id = %ws_id, error = %e.message, "session expiry not recorded");
        }
    }
}
