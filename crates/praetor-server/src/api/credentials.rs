//! Credential revocation and agent revocation, with the session cascade: the
//! revocation commits first, on its own, then every active session the revoked identity
//! could act through is killed (see `revoke`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_core::session::SessionStatus;
use praetor_store::{Credential, Guarded, Mutation, SealRequest, Session, SessionFilter, Txn};
use crate::secrets::new_id;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::clock::iso;
use crate::error::{ApiError, ApiResult};
use crate::events::event;
use crate::extract::{ApiJson, ApiPath};
use crate::sessions::{Closing, active_where, close_in_memory, closing_txn};
use crate::state::{AppState, WorkspaceState};

use super::sessions::{ReasonBody, reason_of};

/// A credential as the API shows it; `status` is `revoked`, `expired` (at `now_ms`) or
/// `active`.
pub fn credential_view(c: &Credential, now_ms: i64) -> Value {
    let status = if c.revoked_at.is_some() {
        "revoked"
    } else if c.expires_at.is_some_and(|e| e <= now_ms) {
        "expired"
    } else {
        "active"
    };
    json!({
        "credential_id": c.credential_id,
        "agent_id": c.agent_id,
        "algorithm": c.algorithm,
        "public_key": c.public_key,
        "did": c.did,
        "created_at": iso(c.created_at),
        "expires_at": c.expires_at.map(iso),
        "revoked_at": c.revoked_at.map(iso),
        "rotated": c.rotated,
        "status": status,
    })
}

/// The authority objects `mutations` write.
fn objects_of(mutations: &[Mutation]) -> Vec<(String, String)> {
    mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::PutObject(r) => Some((r.kind.clone(), r.object_id.clone())),
            _ => None,
        })
        .collect()
}

/// A transaction's writes and their vault events.
type Writes = (Vec<Mutation>, Vec<SealRequest>);

/// What a revocation did. Once `revoke` returns, the revocation itself stands; `left`
/// names what its clean-up could not commit (sessions, grants and escalations other
/// nodes kept moving on, or a store failure), which another revoke of the same agent or
/// credential finishes.
#[derive(Default)]
struct Revocation {
    /// The credentials it was asked to revoke, as they are now.
    credentials: Vec<Credential>,
    /// Those of them it revoked (the others were revoked already).
    revoked: Vec<String>,
    killed: Vec<String>,
    /// The authority objects the clean-up wrote, as `(kind, id)`.
    written: Vec<(String, String)>,
    /// What the clean-up left, by kind (`session`, `grant`, `escalation`).
    left: BTreeMap<String, Vec<String>>,
    /// Why the clean-up is incomplete, if it is.
    failure: Option<String>,
}

impl Revocation {
    /// Record that the clean-up stopped at `error` (the first one is kept), leaving
    /// `left` (`(kind, id)`).
    fn stopped(&mut self, error: String, left: impl IntoIterator<Item = (String, String)>) {
        for (kind, id) in left {
            let ids = self.left.entry(kind).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.failure.get_or_insert(error);
    }

    /// Add the answer's fields about the clean-up to `answer`.
    fn answer(&self, mut answer: Value) -> Json<Value> {
        answer["cleanup_incomplete"] = json!(self.failure.is_some());
        if let Some(why) = &self.failure {
            answer["cleanup_left"] = json!(self.left);
            answer["cleanup_error"] = json!(why);
        }
        Json(answer)
    }
}

/// Revoke `creds`, then kill the sessions of `agent_id` and clean up, in two steps.
///
/// `creds` are the store's copies, read by the caller under `agent_writes`, so that a
/// credential the store holds revoked already by an earlier revoke is not revoked
/// again, and one it holds active or only rotated is (`still_to_revoke`), whatever this
/// node's copy says.
///
/// First the revocation, in one transaction no guard can refuse: the credentials
/// revoked with their events, the agent's etag moved on, and `unguarded`, the caller's
/// own unguarded writes and events (an agent's deactivation, its keys). From its commit
/// on, no node starts a session with these credentials (`ExpectActive`), and every
/// node's next decision for the agent is refused by its etag guard and re-reads it. If
/// this commit fails, nothing was revoked: memory is read back and the error returned.
///
/// Then the clean-up (`clean_up`), guarded by the etags and versions of what it
/// writes: the kills, and `guarded`, the caller's writes (grants, escalations), called
/// at each attempt to build them from this node's copies as they are then. If other
/// nodes keep moving them on past every attempt, the revocation still stands and the
/// result says what was left.
#[allow(clippy::too_many_arguments)]
async fn revoke(
    state: &AppState,
    ws: &WorkspaceState,
    actor: &str,
    agent_id: &str,
    creds: Vec<Credential>,
    reason: &str,
    unguarded: Writes,
    guarded: impl FnMut() -> Writes,
) -> ApiResult<Revocation> {
    let now = state.now_ms();
    let cred_ids: Vec<String> = creds.iter().map(|c| c.credential_id.clone()).collect();
    let fresh: Vec<String> = creds.iter().filter(|c| still_to_revoke(c)).map(|c| c.credential_id.clone()).collect();
    let revoked: Vec<Credential> = creds.into_iter().map(|c| Credential { revoked_at: c.revoked_at.or(Some(now)), rotated: false, ..c }).collect();
    // Revoke in memory first, so nothing can start a session with these credentials
    // while the commit is under way (if the commit fails, memory errs on the safe side
    // until it is read back).
    {
        let mut map = ws.credentials.write();
        for c in revoked.iter().filter(|c| fresh.contains(&c.credential_id)) {
            let held = map.entry(c.credential_id.clone()).or_insert_with(|| c.clone());
            held.revoked_at.get_or_insert(now);
            held.rotated = false;
        }
    }
    let (mut mutations, seal) = unguarded;
    for id in &fresh {
        mutations.push(Mutation::RevokeCredential { workspace_id: ws.workspace_id.clone(), credential_id: id.clone(), at: now, rotated: false });
    }
    if !mutations.is_empty() {
        // Every node's next decision for the agent re-reads it. (Nothing revoked, as
        // when a revoke only finishes another's clean-up: nothing to re-read.)
        mutations.push(Mutation::Touch { workspace_id: ws.workspace_id.clone(), of: Guarded::Agent, id: agent_id.to_owned(), etag: new_id("etag") });
    }
    if (!mutations.is_empty() || !seal.is_empty())
        && let Err(e) = state.commit(Txn { mutations, seal }).await
    {
        // Memory ran ahead of a commit that did not happen: the agent and its
        // credentials are read back. If the store cannot answer that either, this
        // node forgets its copy, which the next request naming the agent reads again,
        // rather than refuse the agent on a revocation the store never got.
        if let Err(reload) = crate::pipeline::resync(state, ws, &[agent_id.to_owned()], &[]).await {
            tracing::warn!(workspace_id = %ws.workspace_id, agent_id, error = %reload.message, "cannot read back a failed revocation; forgetting this node's copy of the agent");
            ws.adopt_agent_unless_reloaded(agent_id, None, ws.agent_generation(agent_id));
        }
        return Err(e.into());
    }
    // A margin for the clocks of other nodes, which stamp the sessions they start: a
    // session started just after the revocation may be killed too, none before it
    // survives.
    let committed_at = state.now_ms() + 1_000;
    let closing = || Closing { status: SessionStatus::Killed, reason: Some(format!("revoked: {reason}")), actor: Some(actor), kind: "session.killed" };
    let mut done = Revocation { credentials: revoked, revoked: fresh, ..Revocation::default() };
    if let Err(e) = clean_up(state, ws, (agent_id, &cred_ids), committed_at, &closing, guarded, &mut done).await {
        done.stopped(e.message, []);
    }
    match &done.failure {
        None => tracing::info!(workspace_id = %ws.workspace_id, agent_id, killed = done.killed.len(), "revoked"),
        Some(why) => tracing::warn!(
            workspace_id = %ws.workspace_id, agent_id, killed = done.killed.len(), left = ?done.left, error = %why,
            "revoked, but the clean-up is incomplete: revoke again to finish it"
        ),
    }
    Ok(done)
}

/// Whether a revocation changes `c` (the store's copy): it is still active, or a
/// rotation revoked it, whose sessions go on until it is revoked.
fn still_to_revoke(c: &Credential) -> bool {
    c.revoked_at.is_none() || c.rotated
}

/// The `credential.revoked` event of a revoke of `c` (the store's copy, as it was): one
/// already revoked says since when (`already_revoked_at`), and whether by a rotation
/// (`was_rotated`, whose sessions this revoke ends).
fn credential_revoked(workspace_id: &str, actor: &str, now: i64, c: &Credential, reason: &str) -> SealRequest {
    event(workspace_id, "credential.revoked", Some(actor), now, json!({
        "credential_id": c.credential_id, "agent_id": c.agent_id, "reason": reason,
        "already_revoked_at": c.revoked_at.map(iso), "was_rotated": c.rotated,
    }))
}

/// A revocation's clean-up: kill every active session of `agent_id` or bound to
/// `cred_ids`, with `guarded`, in one transaction retried while other nodes move them
/// on; then the sessions the listing missed that started no later than the revocation
/// (`committed_at`). Records in `done` what it did and, when it gives up, what it left.
async fn clean_up<'a>(
    state: &AppState,
    ws: &WorkspaceState,
    (agent_id, cred_ids): (&str, &[String]),
    committed_at: i64,
    closing: &(dyn Fn() -> Closing<'a> + Sync),
    mut guarded: impl FnMut() -> Writes,
    done: &mut Revocation,
) -> ApiResult<()> {
    let agent_sessions = |limit| SessionFilter { status: Some("active".into()), agent_id: Some(agent_id.to_owned()), limit };
    let bound = |s: &Session| s.agent_id == agent_id || s.credential_id.as_ref().is_some_and(|c| cred_ids.contains(c));
    let mut attempt = 0;
    loop {
        let now = state.now_ms();
        // The agent's sessions on every node: the ones this node holds and the store's.
        let mut candidates: Vec<String> =
            state.store.list_sessions(&ws.workspace_id, &agent_sessions(1000)).await?.into_iter().map(|s| s.session_id).collect();
        candidates.extend(active_where(ws, bound));
        candidates.sort();
        candidates.dedup();
        crate::pipeline::resync_sessions(state, ws, &candidates).await?;
        let targets = active_where(ws, |s| candidates.contains(&s.session_id) && bound(s));
        let cleaning = {
            // In the decision order, as every change of sessions and objects is.
            let _order = ws.decision_order.lock();
            let (mut mutations, mut seal) = guarded();
            let killed = close_in_memory(ws, &targets, &closing(), now);
            let (m, s) = closing_txn(&ws.workspace_id, &killed, &closing(), now);
            mutations.extend(m);
            seal.extend(s);
            // The caller's grants and escalations and those the kills settled.
            let objects = objects_of(&mutations);
            (!mutations.is_empty()).then(|| (killed, objects, state.submit(Txn { mutations, seal })))
        };
        let Some((killed, objects, pending)) = cleaning else {
            break; // nothing (left) to clean up
        };
        let Err(e) = pending.await else {
            done.killed.extend(killed.into_iter().map(|c| c.session.session_id));
            done.written = objects;
            break;
        };
        // Memory ran ahead of a commit that did not happen. The objects are read back
        // so that a retry changes the store's copies: another node may have moved one
        // on (a grant's use, an approval), and a record built from the older copy would
        // be refused as stale at every attempt. The sessions are read back at the next
        // attempt's listing.
        let read_back = crate::pipeline::resync_objects(state, ws, &objects).await;
        if matches!(e, praetor_store::StoreError::Stale(_)) && attempt + 1 < crate::sessions::CLOSE_ATTEMPTS && read_back.is_ok() {
            attempt += 1;
            // Decisions other nodes made for the agent before they saw the revocation
            // may still move its sessions and grants on; a growing, jittered pause lets
            // the clean-up land between them.
            tokio::time::sleep(std::time::Duration::from_micros(crate::secrets::jitter(200 << attempt.min(6)))).await;
            continue;
        }
        let sessions = killed.into_iter().map(|c| ("session".to_owned(), c.session.session_id));
        done.stopped(ApiError::from(e).message, sessions.chain(objects));
        read_back?;
        return crate::pipeline::resync_sessions(state, ws, &candidates).await;
    }
    // Then every session of the agent another node started, by its clock, no later
    // than the revocation but after the listing above: list again until none is left.
    // Sessions started later passed the revocation's check and are not its business.
    for _ in 0..crate::sessions::CLOSE_ATTEMPTS {
        let late: Vec<String> = state
            .store
            .list_sessions(&ws.workspace_id, &agent_sessions(10_000))
            .await?
            .into_iter()
            .filter(|s| s.created_at <= committed_at)
            .map(|s| s.session_id)
            .collect();
        if late.is_empty() {
            break;
        }
        match crate::sessions::close(state, ws, &late, closing()).await {
            Ok(closed) => done.killed.extend(closed.into_iter().map(|s| s.session_id)),
            Err(e) => {
                done.stopped(e.message, late.into_iter().map(|id| ("session".to_owned(), id)));
                break;
            }
        }
    }
    Ok(())
}

/// `POST /enforce/credentials/{id}/revoke`: the credential stops working and every
/// active session bound to it or to its agent is killed. Revoking a revoked credential
/// again finishes a clean-up the first revoke left (`cleanup_incomplete`).
pub async fn revoke_credential(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let reason = reason_of(body, "credential revoked")?;
    let ws = &auth.workspace;
    let actor = auth.key.key_id.as_str();
    // One revocation of an agent's credentials at a time on this node: a second one
    // reads the store after the first has committed or failed.
    let _guard = ws.agent_writes.lock().await;
    let held = ws.credentials.read().get(&id).cloned().ok_or_else(|| ApiError::not_found("credential", &id))?;
    let agent_id = held.agent_id.clone();
    let stored = stored_credentials(&state, ws, &agent_id).await?;
    let cred = stored.and_then(|(_, creds)| creds.into_iter().find(|c| c.credential_id == id)).unwrap_or(held);
    // Every revoke is sealed, as the operator's act with its reason.
    let seal = vec![credential_revoked(&ws.workspace_id, actor, state.now_ms(), &cred, &reason)];
    // The escalations raised by requests it signed can no longer let anything run
    // (those of the sessions it started end with their kills).
    let now = state.now_ms();
    let guarded = || {
        let mut live = ws.live.lock();
        let why = format!("credential `{id}` revoked: {reason}");
        let settled = crate::authority::settle(&mut live.authority, |e| e.credential_id.as_deref() == Some(id.as_str()), &why, Some(actor), &ws.workspace_id, now);
        (settled.records.into_iter().map(Mutation::PutObject).collect(), settled.seals)
    };
    let done = revoke(&state, ws, actor, &agent_id, vec![cred], &reason, (Vec::new(), seal), guarded).await?;
    let credential = done.credentials.last().map(|c| credential_view(c, state.now_ms())).unwrap_or(Value::Null);
    Ok(done.answer(json!({ "ok": true, "credential": credential, "killed_sessions": done.killed })))
}

/// `POST /enforce/agents/{id}/revoke`: deactivate the agent, revoke every credential it
/// holds and the API keys bound to it, then kill its sessions, revoke its grants and
/// settle its escalations; its later intercepts are refused. Revoking a revoked agent
/// again finishes a clean-up the first revoke left (`cleanup_incomplete`).
pub async fn revoke_agent(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let reason = reason_of(body, "agent revoked")?;
    let ws = &auth.workspace;
    let actor = auth.key.key_id.as_str();
    let _guard = ws.agent_writes.lock().await;
    let mut agent = ws.agent(&id).ok_or_else(|| ApiError::not_found("agent", &id))?;
    // Read from the store before anything changes in memory: what it holds active is
    // what this revocation revokes (a credential or key made on another node a moment
    // ago included), and a failed read leaves nothing changed.
    let (was_active, creds) = match stored_credentials(&state, ws, &id).await? {
        Some(stored) => stored,
        None => (agent.is_active, ws.credentials.read().values().filter(|c| c.agent_id == id).cloned().collect()),
    };
    let bound_to_it = |k: &praetor_store::ApiKey| k.agent_id.as_deref() == Some(id.as_str()) && k.revoked_at.is_none();
    let keys: Vec<praetor_store::ApiKey> = state.store.list_api_keys(&ws.workspace_id).await?.into_iter().filter(bound_to_it).collect();
    let revoked_keys: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    let now = state.now_ms();
    agent.is_active = false;
    agent.updated_at = now;
    // Deactivate in memory first: from here on every request as this agent is refused.
    if let Some(stored) = ws.agents.write().get_mut(&id) {
        stored.is_active = false;
        stored.updated_at = now;
    }
    // The API keys bound to it act only as it: they end with it (a deactivation, which
    // is not a compromise, leaves them; the agent's requests are refused anyway). From
    // here on they answer 401 on this node.
    for k in &keys {
        state.put_key(praetor_store::ApiKey { revoked_at: Some(now), ..k.clone() });
    }
    // Only the flag: a concurrent change to the agent's other fields stays.
    let mut mutations = vec![Mutation::DeactivateAgent { workspace_id: ws.workspace_id.clone(), agent_id: id.clone(), at: now, etag: new_id("etag") }];
    mutations.extend(revoked_keys.iter().map(|k| Mutation::RevokeApiKey { workspace_id: ws.workspace_id.clone(), key_id: k.clone(), at: now }));
    // Every revoke is sealed, as the operator's act with its reason: a second one (to
    // finish a clean-up) says the agent was already inactive, and lists only what the
    // first left to revoke (none, unless a credential was rotated).
    // What `revoke` revokes: the credentials still active, and those a rotation revoked
    // (whose sessions end now).
    let fresh: Vec<&Credential> = creds.iter().filter(|c| still_to_revoke(c)).collect();
    let fresh_ids: Vec<&String> = fresh.iter().map(|c| &c.credential_id).collect();
    let mut seal = vec![event(&ws.workspace_id, "agent.revoked", Some(actor), now, json!({
        "agent_id": id, "reason": reason, "was_active": was_active, "revoked_credentials": fresh_ids, "revoked_keys": revoked_keys,
    }))];
    seal.extend(fresh.iter().map(|c| credential_revoked(&ws.workspace_id, actor, now, c, &reason)));
    // Built at each attempt from the copies as they are then (a refused attempt reads
    // them back): the grants and escalations change with every use and approval on any
    // node.
    let guarded = || {
        // Every grant the agent gave or received ends with it, and so do their re-delegations.
        let (mut mutations, mut seals) = revoke_grants_of(ws, &id, &reason, actor, now);
        // Its escalations, pending or approved, can no longer let anything run.
        let settled = settle_agent(ws, &id, &format!("agent `{id}` revoked: {reason}"), actor, now);
        mutations.extend(settled.records.into_iter().map(Mutation::PutObject));
        seals.extend(settled.seals);
        (mutations, seals)
    };
    let mut done = match revoke(&state, ws, actor, &id, creds, &reason, (mutations, seal), guarded).await {
        Ok(done) => done,
        Err(e) => {
            // Nothing was revoked: the keys are taken as the store holds them. If the
            // store cannot say, they stay refused on this node (until it restarts, or
            // the revoke is tried again): a key wrongly refused is safer than one
            // wrongly accepted.
            if let Ok(stored) = state.store.list_api_keys(&ws.workspace_id).await {
                stored.into_iter().filter(|k| revoked_keys.contains(&k.key_id)).for_each(|k| state.restore_key(k));
            }
            return Err(e);
        }
    };
    let mut revoked_keys = revoked_keys;
    revoked_keys.extend(revoke_late_keys(&state, ws, &id, &revoked_keys, (actor, &reason), &mut done).await);
    let revoked_grants: Vec<&String> = done.written.iter().filter(|(kind, _)| kind == "grant").map(|(_, g)| g).collect();
    Ok(done.answer(json!({
        "ok": true,
        "agent": crate::api::agents::agent_view(&ws.agent(&id).unwrap_or(agent)),
        // As sealed: false when the agent was already inactive (a revoke again).
        "was_active": was_active,
        "revoked_credentials": done.credentials.iter().filter(|c| done.revoked.contains(&c.credential_id)).map(|c| credential_view(c, now)).collect::<Vec<_>>(),
        "revoked_grants": revoked_grants,
        "revoked_keys": revoked_keys,
        "killed_sessions": done.killed,
    })))
}

/// Revoke the keys bound to `agent_id` that were committed (by another node, or by
/// `praetor keys create`) after the revocation listed them but before it deactivated the
/// agent. None can be committed after that (`ExpectActive`), so one more listing finds
/// every one. Returns those it revoked; what it could not revoke is left in `done`, and
/// stays refused on this node.
async fn revoke_late_keys(
    state: &AppState,
    ws: &WorkspaceState,
    agent_id: &str,
    listed: &[String],
    (actor, reason): (&str, &str),
    done: &mut Revocation,
) -> Vec<String> {
    let late: Vec<praetor_store::ApiKey> = match state.store.list_api_keys(&ws.workspace_id).await {
        Ok(keys) => keys
            .into_iter()
            .filter(|k| k.agent_id.as_deref() == Some(agent_id) && k.revoked_at.is_none() && !listed.contains(&k.key_id))
            .collect(),
        Err(e) => {
            done.stopped(ApiError::from(e).message, []);
            return Vec::new();
        }
    };
    if late.is_empty() {
        return Vec::new();
    }
    let now = state.now_ms();
    let ids: Vec<String> = late.iter().map(|k| k.key_id.clone()).collect();
    for k in late {
        state.put_key(praetor_store::ApiKey { revoked_at: Some(now), ..k });
    }
    let txn = Txn {
        mutations: ids.iter().map(|k| Mutation::RevokeApiKey { workspace_id: ws.workspace_id.clone(), key_id: k.clone(), at: now }).collect(),
        seal: ids
            .iter()
            .map(|k| event(&ws.workspace_id, "key.revoked", Some(actor), now, json!({ "key_id": k, "agent_id": agent_id, "reason": format!("agent `{agent_id}` revoked: {reason}") })))
            .collect(),
    };
    match state.commit(txn).await {
        Ok(_) => ids,
        Err(e) => {
            done.stopped(ApiError::from(e).message, ids.into_iter().map(|k| ("key".to_owned(), k)));
            Vec::new()
        }
    }
}

/// The store's copy of whether `agent_id` is active and of its credentials, revoked
/// ones included (`None` when the store does not hold the agent).
async fn stored_credentials(state: &AppState, ws: &WorkspaceState, agent_id: &str) -> ApiResult<Option<(bool, Vec<Credential>)>> {
    // No history: only the agent's row and credentials are wanted.
    let stored = state.store.agent_state(&ws.workspace_id, agent_id, i64::MAX, 0).await?;
    Ok(stored.map(|st| (st.agent.is_active, st.credentials)))
}

/// Revoke, in memory, every grant `agent_id` gave or received and their re-delegations,
/// and give their records to store, with a `grant.revoked` event for each grant reached
/// first (with the re-delegations it reached).
fn revoke_grants_of(ws: &WorkspaceState, agent_id: &str, reason: &str, actor: &str, now: i64) -> Writes {
    let mut live = ws.live.lock();
    let roots: Vec<String> = live
        .authority
        .grants
        .values()
        .filter(|g| !g.revoked && (g.source_agent_id == agent_id || g.target_agent_id == agent_id))
        .map(|g| g.grant_id.clone())
        .collect();
    let why = format!("agent `{agent_id}` revoked");
    let (mut mutations, mut seals) = Writes::default();
    for root in roots {
        let records = crate::api::grants::revoke_tree(&mut live.authority, &root, &why, &ws.workspace_id, now);
        if records.is_empty() {
            continue; // a re-delegation of a grant revoked before it
        }
        let ids: Vec<&String> = records.iter().map(|r| &r.object_id).collect();
        seals.push(event(&ws.workspace_id, "grant.revoked", Some(actor), now, json!({
            "grant_id": root, "revoked": ids, "agent_id": agent_id, "reason": format!("{why}: {reason}"),
        })));
        mutations.extend(records.into_iter().map(Mutation::PutObject));
    }
    (mutations, seals)
}

/// Settle the open escalations of an agent that is being revoked or deactivated.
pub fn settle_agent(ws: &WorkspaceState, agent_id: &str, reason: &str, actor: &str, now: i64) -> crate::authority::Settled {
    let mut live = ws.live.lock();
    crate::authority::settle(&mut live.authority, |e| e.agent_id.as_deref() == Some(agent_id), reason, Some(actor), &ws.workspace_id, now)
}

pub async fn list_for_agent(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    if !auth.may_see(Some(&id)) {
        return Err(ApiError::not_found("agent", &id));
    }
    auth.workspace.agent(&id).ok_or_else(|| ApiError::not_found("agent", &id))?;
    let mut creds: Vec<Credential> = auth.workspace.credentials.read().values().filter(|c| c.agent_id == id).cloned().collect();
    creds.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let now = state.now_ms();
    Ok(Json(json!({ "ok": true, "agent_id": id, "credentials": creds.iter().map(|c| credential_view(c, now)).collect::<Vec<_>>() })))
}

/// The agent's newest credential that is neither revoked nor expired.
pub async fn active_for_agent(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    if !auth.may_see(Some(&id)) {
        return Err(ApiError::not_found("agent", &id));
    }
    auth.workspace.agent(&id).ok_or_else(|| ApiError::not_found("agent", &id))?;
    let now = state.now_ms();
    let active = auth
        .workspace
        .credentials
        .read()
        .values()
        .filter(|c| c.agent_id == id && c.revoked_at.is_none() && c.expires_at.is_none_or(|e| e > now))
        .max_by_key(|c| c.created_at)
        .cloned()
        .ok_or_else(|| ApiError::new(crate::error::Code::NotFound, format!("agent `{id}` has no active credential")))?;
    Ok(Json(json!({ "ok": true, "credential": credential_view(&active, now) })))
}

/// `POST /enforce/credentials/{id}/rotate`: a new keypair (the private key is shown
/// once) replaces the credential, which is revoked. Rotation is routine hygiene, not a
/// compromise: live sessions go on (use revoke for a leaked key).
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    // Not while a revocation on this node reads the agent's credentials; one on
    // another node that commits first refuses this rotation (`ExpectActive` below).
    let _guard = ws.agent_writes.lock().await;
    let old = ws.credentials.read().get(&id).cloned().ok_or_else(|| ApiError::not_found("credential", &id))?;
    if old.revoked_at.is_some() {
        return Err(ApiError::new(crate::error::Code::Conflict, format!("credential `{id}` is already revoked")));
    }
    let now = state.now_ms();
    let ttl_days = old.expires_at.map(|e| ((e - old.created_at) / 86_400_000).max(1) as u32);
    let (fresh, fresh_json) = crate::api::agents::new_credential(&ws.workspace_id, &old.agent_id, now, ttl_days);
    let txn = Txn {
        mutations: vec![
            // A revoked agent, or a credential revoked meanwhile, gets no new credential.
            Mutation::ExpectActive { workspace_id: ws.workspace_id.clone(), agent_id: old.agent_id.clone(), credential_id: Some(id.clone()) },
            Mutation::InsertCredential(fresh.clone()),
            Mutation::RevokeCredential { workspace_id: ws.workspace_id.clone(), credential_id: id.clone(), at: now, rotated: true },
        ],
        seal: vec![event(&ws.workspace_id, "credential.rotated", Some(&auth.key.key_id), now, json!({
            "agent_id": old.agent_id, "old_credential_id": id, "credential_id": fresh.credential_id, "public_key": fresh.public_key,
        }))],
    };
    state.commit(txn).await?;
    let mut map = ws.credentials.write();
    if let Some(c) = map.get_mut(&id) {
        c.revoked_at = Some(now);
        c.rotated = true;
    }
    map.insert(fresh.credential_id.clone(), fresh);
    let revoked = map.get(&id).map(|c| credential_view(c, now));
    Ok(Json(json!({ "ok": true, "credential": fresh_json, "revoked": revoked })))
}
