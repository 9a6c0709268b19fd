//! Runtime containment: closing sessions (kill, end, expiry, revocation cascade) and
//! the sweeper that expires silent sessions on time. Every transition is sealed.

use std::sync::Arc;

use praetor_core::session::SessionStatus;
use praetor_store::{Guarded, Mutation, SealRequest, Session, Txn};
use serde_json::{Value, json};

use crate::authority::Settled;
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

/// What one action costs its session, as the API and the vault show it: the spend as
/// a decimal string under its currency, like `budgets.max_spend`.
pub fn charge_view(c: &praetor_core::session::Charge) -> Value {
    let spend: serde_json::Map<String, Value> = c.spend.iter().map(|(cur, amount)| (cur.clone(), json!(amount.to_string()))).collect();
    json!({ "actions": c.actions, "spend": spend, "tokens": c.tokens })
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

/// A session closed in memory, the etag it had (the store refuses the close if another
/// node changed the session since), and its escalations the close settled.
pub struct Closed {
    pub session: Session,
    pub prior_etag: String,
    pub settled: Settled,
}

/// The escalations `closed` settled, to read back when the close is not committed.
pub fn settled_objects(closed: &[Closed]) -> Vec<(String, String)> {
    closed.iter().flat_map(|c| c.settled.touched()).collect()
}

/// Mark active sessions closed in memory, with their open escalations (under the same
/// lock, so no decision sees the one without the other), and return their new state;
/// closed ones are left alone. The caller persists and seals them (`closing_txn`), and
/// reads the escalations back (`settled_objects`) if that fails.
pub fn close_in_memory(ws: &WorkspaceState, ids: &[String], closing: &Closing<'_>, now_ms: i64) -> Vec<Closed> {
    let mut guard = ws.live.lock();
    let live = &mut *guard;
    let mut changed = Vec::new();
    for id in ids {
        let Some(s) = live.sessions.get_mut(id).filter(|s| s.status == SessionStatus::Active) else { continue };
        let prior_etag = std::mem::replace(&mut s.etag, crate::secrets::new_id("etag"));
        s.status = closing.status;
        s.kill_reason = closing.reason.clone();
        s.closed_at = Some(now_ms);
        s.version += 1;
        let session = s.clone();
        let settled = crate::authority::settle_session(&mut live.authority, &session, closing.actor, &ws.workspace_id, now_ms);
        changed.push(Closed { session, prior_etag, settled });
    }
    changed
}

/// The store writes and vault events for closed sessions.
pub fn closing_txn(ws_id: &str, closed: &[Closed], closing: &Closing<'_>, now_ms: i64) -> (Vec<Mutation>, Vec<SealRequest>) {
    let mut mutations = Vec::new();
    let mut seals = Vec::new();
    for c in closed {
        let s = &c.session;
        mutations.push(Mutation::Expect { workspace_id: ws_id.to_owned(), of: Guarded::Session, id: s.session_id.clone(), etag: c.prior_etag.clone() });
        mutations.push(Mutation::PutSession(s.clone()));
        mutations.extend(c.settled.records.iter().cloned().map(Mutation::PutObject));
        seals.push(event(ws_id, closing.kind, closing.actor, now_ms, json!({
            "session_id": s.session_id, "agent_id": s.agent_id, "credential_id": s.credential_id,
            "reason": closing.reason, "consumed": s.consumed,
        })));
        seals.extend(c.settled.seals.iter().cloned());
    }
    (mutations, seals)
}

/// At most this many tries to close sessions other nodes keep changing.
pub const CLOSE_ATTEMPTS: u32 = 20;

/// Close sessions and commit the change with its vault events. The sessions are read
/// from the store first (another node may have charged or closed them; a copy of this
/// node's own that is as new is kept, see `refresh_session`); a close refused because
/// one changed in between is tried again from the store's copy.
pub async fn close(state: &AppState, ws: &WorkspaceState, ids: &[String], closing: Closing<'_>) -> ApiResult<Vec<Session>> {
    let mut attempt = 0;
    loop {
        if attempt == 0 {
            for id in ids {
                crate::pipeline::refresh_session(state, ws, id).await?;
            }
        } else {
            crate::pipeline::resync(state, ws, &[], ids).await?;
        }
        let (closed, pending) = {
            // In the decision order: a decision in one of these sessions made after the
            // close reaches the writer after it (and is refused by its etag guard).
            let _order = ws.decision_order.lock();
            let now = state.now_ms();
            let closed = close_in_memory(ws, ids, &closing, now);
            if closed.is_empty() {
                return Ok(Vec::new());
            }
            let (mutations, seal) = closing_txn(&ws.workspace_id, &closed, &closing, now);
            (closed, state.submit(Txn { mutations, seal }))
        };
        let result = pending.await;
        if result.is_err() {
            // Memory ran ahead of the store: read the settled escalations back, so that
            // a retry settles them again (the sessions are read back below).
            crate::pipeline::resync_objects(state, ws, &settled_objects(&closed)).await?;
        }
        match result {
            Err(praetor_store::StoreError::Stale(what)) if attempt + 1 < CLOSE_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(workspace_id = %ws.workspace_id, %what, attempt, "closing a session changed elsewhere; again");
            }
            Err(e) => {
                // Memory ran ahead of the store: read the sessions back.
                crate::pipeline::resync(state, ws, &[], ids).await?;
                return Err(e.into());
            }
            Ok(_) => {
                for c in &closed {
                    let s = &c.session;
                    tracing::info!(workspace_id = %ws.workspace_id, session_id = %s.session_id, status = s.status.as_str(), "session closed");
                }
                return Ok(closed.into_iter().map(|c| c.session).collect());
            }
        }
    }
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
    if state.store.superseded().is_some() {
        return; // see `delivery::dispatch_due`
    }
    let now = state.now_ms();
    for ws_id in state.workspace_ids() {
        let Some(ws) = state.workspace(&ws_id) else { continue };
        if let Err(e) = crate::api::escalations::expire_due(state, &ws).await {
            tracing::warn!(workspace_id = %ws_id, error = %e.message, "escalation expiry not recorded");
        }
        crate::api::escalations::prune_settled(&ws, now);
        let ended = ws.live.lock().authority.prune_ended_grants(now);
        if ended > 0 {
            tracing::debug!(workspace_id = %ws_id, ended, "ended grants left memory (the store keeps them)");
        }
        let ended = ws.live.lock().authority.prune_ended_windows(now);
        if ended > 0 {
            tracing::debug!(workspace_id = %ws_id, ended, "ended windows left memory (the store keeps them)");
        }
        // Under the decision order: a request that found its session loaded keeps it
        // until its evaluation is over (see `pipeline::decide_and_record`).
        let forgotten = {
            let _order = ws.decision_order.lock();
            ws.live.lock().prune_closed_sessions(now)
        };
        if forgotten > 0 {
            tracing::debug!(workspace_id = %ws_id, forgotten, "closed sessions left memory (the store keeps them)");
        }
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
