//! Escalations (wire §3): a person approves or rejects an escalated action. An approval
//! is actionable only while fresh, binds to the exact action, and is sealed with the
//! approver's identity.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_store::{Guarded, Mutation, ObjectFilter, StoreError, Txn};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::authority::{Escalation, Object, touched, update};
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{AppState, History, LiveState, WorkspaceState};
use praetor_core::PastAction;

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

/// Why `e`, still open, can no longer allow its action: its agent is gone or
/// deactivated, or its session closed. Checked at every read, not only when the agent or
/// session changes, as defence in depth: on several nodes a close and an escalation
/// can cross each other (the sweeper settles such ones, `expire_due`). The session is
/// read from the store unless this node holds a copy as new; an agent this node does
/// not hold is looked up in the store, since on several nodes that usually means the
/// change feed has not brought it yet, not that it is gone.
async fn void_reason(state: &AppState, ws: &WorkspaceState, e: &Escalation) -> ApiResult<Option<String>> {
    if !e.is_open() {
        return Ok(None);
    }
    if let Some(sid) = &e.session_id {
        crate::pipeline::refresh_session(state, ws, sid).await?;
    }
    // Read from the store even if a request named the agent as unknown a moment ago
    // (`known_absent`): the escalation proves the agent existed.
    if let Some(a) = &e.agent_id
        && !ws.holds_agent(a)
    {
        crate::pipeline::resync(state, ws, std::slice::from_ref(a), &[]).await?;
    }
    let agent = e.agent_id.as_deref().and_then(|a| ws.agent(a));
    let now = state.now_ms();
    let held_grant = {
        let live = ws.live.lock();
        let credentials = ws.credentials.read();
        if let Some(why) = e.void_reason(agent.as_ref(), e.session_id.as_deref().and_then(|s| live.sessions.get(s)), &credentials, now) {
            return Ok(Some(why));
        }
        e.grant_id.as_ref().map(|g| live.authority.grants.get(g).cloned())
    };
    // An ended grant has left memory (`prune_ended_grants`): the store says why. One
    // not revoked or expired is taken in (as `revoke_grant` does), so that an approval
    // checks it and answers with its real state (used up, say); it then stays while
    // this escalation is open.
    let grant = match (held_grant, &e.grant_id) {
        (Some(Some(g)), _) => Some(g),
        (_, Some(id)) => {
            let stored = crate::api::grants::stored_grant(state, ws, id).await?;
            if let Some(g) = stored.as_ref().filter(|g| !matches!(g.status_at(now), "revoked" | "expired")) {
                ws.live.lock().authority.grants.entry(id.clone()).or_insert_with(|| g.clone());
            }
            stored
        }
        (_, None) => return Ok(None),
    };
    Ok(e.grant_void_reason(grant.as_ref(), now))
}

/// The escalation as it stands now: an open one whose agent or session is gone reads
/// `expired`, with the reason, and never `allow`, even before that is stored.
async fn current(state: &AppState, ws: &WorkspaceState, mut e: Escalation) -> ApiResult<Escalation> {
    if let Some(why) = void_reason(state, ws, &e).await? {
        e.void(&why);
    }
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
    let limit = crate::extract::page_size("limit", q.limit, 100, 1000)?;
    let mut rows = Vec::new();
    for status in stored_statuses {
        let filter = ObjectFilter { kind: Escalation::KIND.into(), status, agent_id: agent.clone(), limit };
        rows.extend(state.store.list_objects(&ws.workspace_id, &filter).await?);
    }
    let held: Vec<Escalation> = {
        let live = ws.live.lock();
        rows.iter().filter_map(Escalation::from_record).map(|e| live.authority.escalations.get(&e.escalation_id).cloned().unwrap_or(e)).collect()
    };
    let mut views = Vec::with_capacity(held.len());
    for e in held {
        let e = current(&state, ws, e).await?;
        // A pending escalation past its expiry is listed as expired even before the sweeper runs.
        if q.status.as_deref().is_none_or(|s| e.status_at(now) == s) {
            views.push(e.view(now, fresh));
        }
    }
    Ok(Json(json!({ "ok": true, "escalations": views, "total": views.len() })))
}

pub async fn get(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let e = find(&state, &auth.workspace, &id).await?;
    visible(&auth, &e)?;
    let e = current(&state, &auth.workspace, e).await?;
    Ok(Json(json!({ "ok": true, "escalation": e.view(state.now_ms(), freshness_ms(&auth.workspace)) })))
}

/// `GET /enforce/escalations/{id}/status`: what the SDK polls. `decision` is `allow`
/// only while an approval is fresh and unused, and its agent and session still active.
pub async fn status(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let e = find(&state, &auth.workspace, &id).await?;
    visible(&auth, &e)?;
    let e = current(&state, &auth.workspace, e).await?;
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

/// `POST /enforce/escalations/{id}/resolve`: approvals scope (which keys with the
/// `agent` scope never have, `perm::Approvals`), and no key resolves an escalation it
/// raised.
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
    let ws = &auth.workspace;
    let found = find(&state, ws, &id).await?;
    let key_id = auth.key.key_id.clone();
    // An escalation whose agent or session is gone is settled now (sealed, with why)
    // rather than approved: an approval would let its action run after the revocation.
    if let Some(why) = void_reason(&state, ws, &found).await? {
        let now = state.now_ms();
        crate::authority::settle_now(&state, ws, |a| crate::authority::settle(a, |e| e.escalation_id == id, &why, Some(&key_id), &ws.workspace_id, now)).await?;
        return Err(ApiError::new(Code::Conflict, format!("escalation `{id}` can no longer be resolved: {why}")));
    }
    let reason = body.reason;
    // The SDK runs an approved action without intercepting it again, so its approval
    // is the one time it is counted: in its session's budgets, its grant, and its
    // agent's and session's histories.
    let view = if resolution == "approved" {
        approve(&state, ws, &id, reason, &key_id).await?
    } else {
        let fresh = freshness_ms(ws);
        update(&state, ws, "escalation.resolved", &key_id.clone(), move |a, now| {
            let mut e = a.escalations.get_mut(&id).ok_or_else(|| ApiError::not_found("escalation", &id))?;
            check_resolvable(&e, &key_id, now)?;
            record_resolution(&mut e, resolution, reason.as_ref(), &key_id, now, fresh);
            let record = touched(&mut *e, &ws.workspace_id, now);
            Ok((vec![record], resolved_fields(&e), e.view(now, fresh)))
        })
        .await?
    };
    Ok(Json(json!({ "ok": true, "escalation": view })))
}

/// Whether `key_id` may resolve `e` at `now`: not the key that raised it, and only
/// while it is pending.
fn check_resolvable(e: &Escalation, key_id: &str, now: i64) -> ApiResult<()> {
    if e.raised_by_key == key_id {
        return Err(ApiError::new(Code::InsufficientScope, "the key that raised an escalation cannot resolve it"));
    }
    match e.status_at(now) {
        "pending" => Ok(()),
        other => {
            let why = e.resolution_reason.as_deref().filter(|_| other == "expired").map(|r| format!(" ({r})")).unwrap_or_default();
            Err(ApiError::new(Code::Conflict, format!("escalation `{}` is already {other}{why}", e.escalation_id)))
        }
    }
}

fn record_resolution(e: &mut Escalation, resolution: &str, reason: Option<&String>, key_id: &str, now: i64, fresh: i64) {
    e.state = resolution.to_owned();
    e.resolution_reason = reason.cloned();
    e.approver_key = Some(key_id.to_owned());
    e.resolved_at = Some(now);
    e.fresh_until = (resolution == "approved").then(|| now.saturating_add(fresh));
}

/// The sealed fields of an `escalation.resolved` event.
fn resolved_fields(e: &Escalation) -> Value {
    json!({
        "escalation_id": e.escalation_id, "decision_id": e.decision_id, "agent_id": e.agent_id,
        "resolution": e.state, "reason": e.resolution_reason, "approver": e.approver_key, "action_hash": e.action_hash,
    })
}

/// Approve escalation `id` and count its action, in the same transaction: its session
/// is charged the action's cost (`approval_charge`), its grant one use and what the
/// action takes (`grant_id`, `grant_charge`), and the action joins its agent's and
/// session's histories, which velocity and sequence policies read. Refused (`409`) when
/// the session or grant cannot cover it, or the session is over or the grant no longer
/// usable: the approver may reject it instead. A commit refused because another node
/// changed one of them meanwhile is made again from the store's copies, after a short
/// pause.
async fn approve(state: &AppState, ws: &WorkspaceState, id: &str, reason: Option<String>, key_id: &str) -> ApiResult<Value> {
    let fresh = freshness_ms(ws);
    let mut attempt = 1;
    loop {
        let (pending, view, undo) = {
            // In the decision order, as a decision's charge is: a decision on this node
            // made after this change reaches the writer after it, and its etag guard
            // expects what this one writes.
            let _order = ws.decision_order.lock();
            let (txn, view, undo) = approve_in_memory(ws, id, reason.as_ref(), key_id, state.now_ms(), fresh)?;
            (state.submit(txn), view, undo)
        };
        let Err(err) = pending.await else { return Ok(view) };
        // Memory ran ahead of the store: put it back as it was, so that no read shows
        // an approval (`allow`) or a charge the store does not hold, even if the store
        // cannot be read now.
        let session_id = undo.session.as_ref().map(|(s, _)| s.session_id.clone());
        let grant_id = undo.grant.as_ref().map(|(g, _)| g.grant_id.clone());
        let agent_id = undo.counted.as_ref().and_then(|c| c.agent.as_ref().map(|(a, _, _)| a.clone()));
        undo.apply(ws);
        match err {
            StoreError::Stale(what) if attempt < crate::authority::UPDATE_ATTEMPTS => {
                crate::pipeline::resync(state, ws, &agent_id.into_iter().collect::<Vec<_>>(), &session_id.into_iter().collect::<Vec<_>>()).await?;
                let mut objects = vec![(Escalation::KIND.to_owned(), id.to_owned())];
                objects.extend(grant_id.map(|g| (<crate::authority::Grant as crate::authority::Object>::KIND.to_owned(), g)));
                crate::pipeline::resync_objects(state, ws, &objects).await?;
                attempt += 1;
                tracing::debug!(workspace_id = %ws.workspace_id, %what, attempt, "approving an escalation whose session or grant changed elsewhere; again");
                tokio::time::sleep(std::time::Duration::from_micros(crate::secrets::jitter(200 << attempt.min(6)))).await;
            }
            other => return Err(other.into()),
        }
    }
}

/// The escalation, session and grant as they were before an approval changed them in
/// memory, to put back if its commit fails, and the action it added to the histories.
/// Each is put back only while it is still as the approval left it (its version, or
/// the session's or agent's etag): a reload or a later change since is newer than both.
struct Undo {
    escalation: (Escalation, u64),
    session: Option<(praetor_store::Session, String)>,
    grant: Option<(crate::authority::Grant, u64)>,
    counted: Option<Counted>,
}

/// What an approval added to the histories: the action, the session whose history
/// holds it, and the agent whose history holds it with its etag before and after.
struct Counted {
    action: PastAction,
    session: Option<String>,
    agent: Option<(String, String, String)>,
}

impl Undo {
    fn apply(self, ws: &WorkspaceState) {
        let mut guard = ws.live.lock();
        if let Some(c) = &self.counted {
            // Only from a history the approval's etag still stands for: one read back
            // from the store since never held the action (the store refused it).
            let session_as_left = c.session.as_ref().zip(self.session.as_ref()).is_some_and(|(s, (_, after))| guard.sessions.get(s).is_some_and(|s| &s.etag == after));
            if session_as_left && let Some(h) = c.session.as_ref().and_then(|s| guard.session_history.get_mut(s)) {
                h.forget(&c.action);
            }
            if let Some((agent_id, before, after)) = &c.agent
                && let Some(a) = ws.agents.write().get_mut(agent_id).filter(|a| &a.etag == after)
            {
                a.etag = before.clone();
                if let Some(h) = guard.agent_history.get_mut(agent_id) {
                    h.forget(&c.action);
                }
            }
        }
        let LiveState { sessions, authority, .. } = &mut *guard;
        let (before, after) = self.escalation;
        if let Some(mut e) = authority.escalations.get_mut(&before.escalation_id).filter(|e| e.version == after) {
            *e = before;
        }
        if let Some((before, after)) = self.session
            && let Some(s) = sessions.get_mut(&before.session_id).filter(|s| s.etag == after)
        {
            *s = before;
        }
        if let Some((before, after)) = self.grant
            && let Some(g) = authority.grants.get_mut(&before.grant_id).filter(|g| g.version == after)
        {
            *g = before;
        }
    }
}

/// Add the action of `e`, approved at `now`, to its agent's and session's histories,
/// as an allowed decision adds its own (`pipeline::evaluate_with`), with its row
/// (`InsertApprovedAction`) in `mutations`. The agent's etag moves on, so that every
/// node's next decision for it reads the history again. (The session's moves on in
/// `approve_in_memory`.) Called under the live lock, then the agents' (the lock order).
fn count_in_histories(
    ws: &WorkspaceState,
    e: &Escalation,
    (agent_history, session_history): (&mut HashMap<String, History>, &mut HashMap<String, History>),
    window: i64,
    now: i64,
    mutations: &mut Vec<Mutation>,
) -> Counted {
    // At the newest action's time if that is later: the histories stay in time order.
    let newest = |h: Option<&History>| h.and_then(|h| h.actions.back()).map_or(i64::MIN, |a| a.at_ms);
    let at = now
        .max(newest(e.agent_id.as_ref().and_then(|a| agent_history.get(a))))
        .max(newest(e.session_id.as_ref().and_then(|s| session_history.get(s))));
    let action = PastAction { action_type: e.action_type.clone(), at_ms: at };
    if let Some(s) = &e.session_id {
        LiveState::record(session_history.entry(s.clone()).or_default(), action.clone(), window);
    }
    let agent = e.agent_id.as_ref().and_then(|agent_id| {
        let etag = crate::secrets::new_id("etag");
        let touch = Mutation::Touch { workspace_id: ws.workspace_id.clone(), of: Guarded::Agent, id: agent_id.clone(), etag: etag.clone() };
        let mut agents = ws.agents.write();
        let Some(held) = agents.get_mut(agent_id) else {
            // An agent this node does not hold has no history here to add to; it reads
            // the approval's row when it is read in.
            mutations.push(touch);
            return None;
        };
        // Expected as held: the new etag must not pass off this node's copy as the
        // store's when another node (or a refused decision of this one) changed the
        // agent since. Refused, the approval reads the agent back and is made again.
        mutations.push(Mutation::Expect { workspace_id: ws.workspace_id.clone(), of: Guarded::Agent, id: agent_id.clone(), etag: held.etag.clone() });
        mutations.push(touch);
        LiveState::record(agent_history.entry(agent_id.clone()).or_default(), action.clone(), window);
        let before = std::mem::replace(&mut held.etag, etag.clone());
        Some((agent_id.clone(), before, etag))
    });
    mutations.push(Mutation::InsertApprovedAction(praetor_store::ApprovedAction {
        workspace_id: ws.workspace_id.clone(),
        escalation_id: e.escalation_id.clone(),
        agent_id: e.agent_id.clone(),
        session_id: e.session_id.clone(),
        action_type: e.action_type.clone(),
        at,
    }));
    Counted { action, session: e.session_id.clone(), agent }
}

fn conflict(message: String) -> ApiError {
    ApiError::new(Code::Conflict, message)
}

/// `approve`'s change in memory, under the live lock: every check first, then
/// the approval and the charges, with what to commit, the view and how to undo it. The
/// commit is guarded by the session's etag, the escalation's and the grant's versions
/// (the store takes only the version right after its own, so a decision made on this
/// approval before it commits cannot commit if it does not) and the grantors active.
fn approve_in_memory(ws: &WorkspaceState, id: &str, reason: Option<&String>, key_id: &str, now: i64, fresh: i64) -> ApiResult<(Txn, Value, Undo)> {
    let mut guard = ws.live.lock();
    // Under the live lock, as an evaluation loads them: the window the histories are
    // kept for (`pipeline::evaluate_with`).
    let window = ws.policies.load().compiled.history_window_ms();
    let LiveState { sessions, authority, agent_history, session_history, .. } = &mut *guard;
    let e = authority.escalations.get(id).ok_or_else(|| ApiError::not_found("escalation", id))?.clone();
    check_resolvable(&e, key_id, now)?;
    // Checked in the store just before (`void_reason`), which reads the session in: one
    // not held here now is one a sweep let go meanwhile.
    if let Some(session_id) = e.session_id.as_deref() {
        let session = sessions.get(session_id).ok_or_else(|| conflict(format!("session `{session_id}` of escalation `{id}` is not held here; try again")))?;
        if let Some(why) = crate::authority::closed_session_reason(session).or_else(|| crate::authority::past_ttl_reason(session, now)) {
            return Err(conflict(format!("escalation `{id}` can no longer be approved: {why}")));
        }
        if let Some(why) = e.approval_charge.as_ref().and_then(|charge| praetor_core::session::exceeded(&crate::pipeline::session_facts(session), charge)) {
            return Err(conflict(format!(
                "approving escalation `{id}` would take session `{session_id}` past its budget: {why}; reject it instead, or leave it to expire"
            )));
        }
    }
    if let Some(grant_id) = &e.grant_id {
        // Checked in the store just before (`void_reason`): one not held here is one the
        // change feed has not brought yet.
        let grant = authority.grants.get(grant_id).ok_or_else(|| conflict(format!("grant `{grant_id}` of escalation `{id}` is not held here yet; try again")))?;
        let problem = crate::authority::grant_problem(authority, &ws.agents.read(), grant, e.agent_id.as_deref(), Some(&e.action_type), now);
        if let Some(why) = problem {
            return Err(conflict(format!("escalation `{id}` can no longer be approved: grant `{grant_id}` cannot be used: {why}")));
        }
        if let Some(why) = e.grant_charge.as_ref().and_then(|taken| praetor_core::grant_budget::exceeded(&grant.limits_left(), taken)) {
            return Err(conflict(format!(
                "approving escalation `{id}` would take grant `{grant_id}` past its budget: {why}; reject it instead, or leave it to expire"
            )));
        }
    }
    // Every check passed: approve, and charge.
    let mut mutations = Vec::new();
    let mut fields = serde_json::Map::new();
    // The session's etag moves on even when nothing is charged: its history changes,
    // and every node's next decision in it must read that.
    let session = match e.session_id.as_deref() {
        Some(session_id) => {
            let s = sessions.get_mut(session_id).ok_or_else(|| conflict(format!("session `{session_id}` is not held here; try again")))?;
            let before = s.clone();
            let prior_etag = std::mem::replace(&mut s.etag, crate::secrets::new_id("etag"));
            if let Some(charge) = &e.approval_charge {
                s.consumed.add(charge);
                fields.insert("session_charge".into(), crate::sessions::charge_view(charge));
                fields.insert("session_consumed".into(), json!(s.consumed));
            }
            s.version += 1;
            mutations.push(Mutation::Expect { workspace_id: ws.workspace_id.clone(), of: Guarded::Session, id: session_id.to_owned(), etag: prior_etag });
            mutations.push(Mutation::PutSession(s.clone()));
            fields.insert("session_id".into(), json!(session_id));
            Some((before, s.etag.clone()))
        }
        None => None,
    };
    let grant = match &e.grant_id {
        Some(grant_id) => {
            let g = authority.grants.get_mut(grant_id).ok_or_else(|| conflict(format!("grant `{grant_id}` is not held here; try again")))?;
            let before = g.clone();
            g.uses += 1;
            if let Some(taken) = &e.grant_charge {
                g.used.add(taken);
            }
            mutations.push(Mutation::PutObject(touched(g, &ws.workspace_id, now)));
            fields.insert("grant_id".into(), json!(grant_id));
            fields.insert("grant_consumed".into(), g.consumed_view());
            let version = g.version;
            // The grantors were read from this node's copies: the store must still hold
            // them active, as for a decision through the grant.
            for giver in crate::authority::grantors(authority, grant_id) {
                mutations.push(Mutation::ExpectActive { workspace_id: ws.workspace_id.clone(), agent_id: giver, credential_id: None });
            }
            Some((before, version))
        }
        None => None,
    };
    let counted = count_in_histories(ws, &e, (agent_history, session_history), window, now, &mut mutations);
    let mut esc = authority.escalations.get_mut(id).ok_or_else(|| ApiError::not_found("escalation", id))?;
    record_resolution(&mut esc, "approved", reason, key_id, now, fresh);
    // (An escalation recorded before its cost was kept charges its session on the
    // retry instead.)
    esc.charged_at_approval = e.approval_charge.is_some() || e.grant_id.is_some();
    esc.counted_at = Some(counted.action.at_ms);
    mutations.push(Mutation::PutObject(touched(&mut *esc, &ws.workspace_id, now)));
    let mut sealed = resolved_fields(&esc);
    sealed.as_object_mut().expect("an object").extend(fields);
    let seal = vec![crate::events::event(&ws.workspace_id, "escalation.resolved", Some(key_id), now, sealed)];
    let undo = Undo { escalation: (e, esc.version), session, grant, counted: Some(counted) };
    Ok((Txn { mutations, seal }, esc.view(now, fresh), undo))
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

/// Open escalations held here whose agent (held here) is deactivated, whose session
/// (held here) is closed, or whose grant (held here) is revoked or expired, with why: the revocation or close settled the ones its node
/// held, and these are the ones it could not see yet (another node's, not yet fed to
/// it). One whose agent or session is not held is left alone: on several nodes that is
/// usually one the change feed has not brought yet; a later sweep settles it once the
/// feed has, and a resolve meanwhile looks them up in the store (`void_reason`).
fn voided(ws: &WorkspaceState, now: i64) -> Vec<(String, String)> {
    let live = ws.live.lock();
    let agents = ws.agents.read();
    let credentials = ws.credentials.read();
    live.authority
        .escalations
        .values()
        .filter(|e| e.is_open() && e.session_id.as_ref().is_none_or(|s| live.sessions.contains_key(s)))
        .filter(|e| e.agent_id.as_ref().is_none_or(|a| agents.contains_key(a)))
        .filter_map(|e| {
            let why = e.void_reason(e.agent_id.as_ref().and_then(|a| agents.get(a)), e.session_id.as_ref().and_then(|s| live.sessions.get(s)), &credentials, now).or_else(|| {
                // A grant not held here is left to a resolve or a read (`void_reason`),
                // which look it up in the store.
                let held = live.authority.grants.get(e.grant_id.as_ref()?)?;
                e.grant_void_reason(Some(held), now)
            })?;
            Some((e.escalation_id.clone(), why))
        })
        .collect()
}

/// Expire pending escalations past their time, and settle open ones whose agent or
/// session is gone (called by the sweeper).
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
    let voided = voided(ws, now);
    // One node expires them for all (the lease is taken only when there is work, so an
    // idle workspace costs no writes).
    if (due.is_empty() && voided.is_empty()) || !crate::vault::hold_lease(state, &ws.workspace_id, "escalations", EXPIRY_LEASE_MS).await? {
        return Ok(());
    }
    crate::authority::settle_now(state, ws, |a| {
        let mut settled = crate::authority::Settled::default();
        for (id, why) in &voided {
            // `settle` takes only the ones still open: the feed may have settled one meanwhile.
            settled.extend(crate::authority::settle(a, |e| &e.escalation_id == id, why, None, &ws.workspace_id, now));
        }
        settled
    })
    .await?;
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
