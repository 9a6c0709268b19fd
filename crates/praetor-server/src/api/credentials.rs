//! Credential revocation and agent revocation, with the session cascade: every active
//! session the revoked identity could act through is killed in the same transaction.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_core::session::SessionStatus;
use praetor_store::{Credential, Guarded, Mutation, SessionFilter, Txn};
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

/// Revoke `creds` and kill the sessions of `agent_id`, all in one transaction with its
/// events.
/// `extra` gives the caller's own writes for the same transaction; it is called at each
/// attempt and builds them from this node's copies as they are then (see the retry).
/// Returns the revoked credentials and the killed session ids.
async fn revoke(
    state: &AppState,
    ws: &WorkspaceState,
    actor: &str,
    agent_id: &str,
    creds: Vec<Credential>,
    reason: &str,
    mut extra: impl FnMut() -> (Vec<Mutation>, Vec<praetor_store::SealRequest>),
) -> ApiResult<(Vec<Credential>, Vec<String>)> {
    let now = state.now_ms();
    let cred_ids: Vec<String> = creds.iter().map(|c| c.credential_id.clone()).collect();
    // Revoke in memory first, so nothing can start a session with these credentials
    // while the commit is under way (if the commit fails, memory errs on the safe side).
    {
        let mut map = ws.credentials.write();
        for id in &cred_ids {
            if let Some(c) = map.get_mut(id) {
                c.revoked_at.get_or_insert(now);
            }
        }
    }
    let closing = || Closing { status: SessionStatus::Killed, reason: Some(format!("revoked: {reason}")), actor: Some(actor), kind: "session.killed" };
    let agent_sessions = |limit| SessionFilter { status: Some("active".into()), agent_id: Some(agent_id.to_owned()), limit };
    let mut attempt = 0;
    let mut candidates: Vec<String>;
    // First the revocation, with the kills of the sessions it can see: from its commit
    // on, no node starts a session with these credentials (`ExpectActive`) and every
    // node's next decision for the agent re-reads it.
    let mut killed = loop {
        // The agent's sessions on every node: the ones this node holds and the store's.
        candidates = state.store.list_sessions(&ws.workspace_id, &agent_sessions(1000)).await?.into_iter().map(|s| s.session_id).collect();
        candidates.extend(active_where(ws, |s| s.agent_id == agent_id || s.credential_id.as_ref().is_some_and(|c| cred_ids.contains(c))));
        candidates.sort();
        candidates.dedup();
        crate::pipeline::resync_sessions(state, ws, &candidates).await?;
        let targets = active_where(ws, |s| {
            candidates.contains(&s.session_id) && (s.agent_id == agent_id || s.credential_id.as_ref().is_some_and(|c| cred_ids.contains(c)))
        });
        let (mut mutations, mut seal) = extra();
        let killed = close_in_memory(ws, &targets, &closing(), now);
        for c in &creds {
            mutations.push(Mutation::RevokeCredential { workspace_id: ws.workspace_id.clone(), credential_id: c.credential_id.clone(), at: now });
            seal.push(event(&ws.workspace_id, "credential.revoked", Some(actor), now, json!({
                "credential_id": c.credential_id, "agent_id": c.agent_id, "reason": reason,
            })));
        }
        mutations.push(Mutation::Touch { workspace_id: ws.workspace_id.clone(), of: Guarded::Agent, id: agent_id.to_owned(), etag: new_id("etag") });
        let (m, s) = closing_txn(&ws.workspace_id, &killed, &closing(), now);
        mutations.extend(m);
        seal.extend(s);
        // The caller's grants and escalations and those the kills settled.
        let objects = objects_of(&mutations);
        let result = state.commit(Txn { mutations, seal }).await;
        if result.is_err() {
            // Memory ran ahead of a commit that did not happen. The objects are read
            // back so that a retry changes the store's copies: another node may have
            // moved one on (a grant's use, an approval), and a record built from the
            // older copy would be refused as stale at every attempt.
            crate::pipeline::resync_objects(state, ws, &objects).await?;
        }
        match result {
            Err(praetor_store::StoreError::Stale(_)) if attempt + 1 < crate::sessions::CLOSE_ATTEMPTS => {
                attempt += 1;
                // The agent's own decisions on other nodes keep moving its sessions and
                // grants on; a growing, jittered pause lets the revocation land between them.
                tokio::time::sleep(std::time::Duration::from_micros(crate::secrets::jitter(200 << attempt.min(6)))).await;
            }
            Err(e) => {
                // The agent and its sessions were changed in memory too.
                crate::pipeline::resync(state, ws, &[agent_id.to_owned()], &candidates).await?;
                return Err(e.into());
            }
            Ok(_) => break killed.into_iter().map(|c| c.session).collect::<Vec<_>>(),
        }
    };
    // A margin for the clocks of other nodes, which stamp the sessions they start: a
    // session started just after the revocation may be killed too, none before it
    // survives.
    let committed_at = state.now_ms() + 1_000;
    // Then every session of the agent another node started before the revocation
    // committed but after it was listed: list again until none is left. Sessions
    // started later passed the revocation's check and are not its business.
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
        killed.extend(crate::sessions::close(state, ws, &late, closing()).await?);
    }
    let map = ws.credentials.read();
    let revoked: Vec<Credential> = creds.iter().filter_map(|c| map.get(&c.credential_id).cloned()).collect();
    let killed_ids: Vec<String> = killed.into_iter().map(|s| s.session_id).collect();
    tracing::info!(workspace_id = %ws.workspace_id, agent_id, killed = killed_ids.len(), "revoked");
    Ok((revoked, killed_ids))
}

/// `POST /enforce/credentials/{id}/revoke`: the credential stops working and every
/// active session bound to it or to its agent is killed at once.
pub async fn revoke_credential(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let reason = reason_of(body, "credential revoked")?;
    let ws = &auth.workspace;
    let cred = ws.credentials.read().get(&id).cloned().ok_or_else(|| ApiError::not_found("credential", &id))?;
    let agent_id = cred.agent_id.clone();
    let (mut revoked, killed) = revoke(&state, ws, &auth.key.key_id, &agent_id, vec![cred], &reason, || (vec![], vec![])).await?;
    let credential = revoked.pop().map(|c| credential_view(&c, state.now_ms())).unwrap_or(Value::Null);
    Ok(Json(json!({ "ok": true, "credential": credential, "killed_sessions": killed })))
}

/// `POST /enforce/agents/{id}/revoke`: deactivate the agent, revoke every credential it
/// holds and kill its sessions; its later intercepts are refused.
pub async fn revoke_agent(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let reason = reason_of(body, "agent revoked")?;
    let ws = &auth.workspace;
    let _guard = ws.agent_writes.lock().await;
    let mut agent = ws.agent(&id).ok_or_else(|| ApiError::not_found("agent", &id))?;
    let now = state.now_ms();
    agent.is_active = false;
    agent.updated_at = now;
    let creds: Vec<Credential> =
        ws.credentials.read().values().filter(|c| c.agent_id == id && c.revoked_at.is_none()).cloned().collect();
    // Deactivate in memory first: from here on every request as this agent is refused.
    if let Some(stored) = ws.agents.write().get_mut(&id) {
        stored.is_active = false;
        stored.updated_at = now;
    }
    // The API keys bound to it act only as it: they end with it (a deactivation, which
    // is not a compromise, leaves them; the agent's requests are refused anyway).
    let mut keys: Vec<praetor_store::ApiKey> =
        state.store.list_api_keys(&ws.workspace_id).await?.into_iter().filter(|k| k.agent_id.as_deref() == Some(id.as_str()) && k.revoked_at.is_none()).collect();
    let revoked_keys: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    let mut revoked_grants = Vec::new();
    // Built at each attempt from the copies as they are then (`revoke` reads them back
    // after a refused commit): the grants and escalations change with every use and
    // approval on any node.
    let extra = || {
        // Every grant the agent gave or received ends with it, and so do their re-delegations.
        let grant_records = revoke_grants_of(ws, &id, now);
        revoked_grants = grant_records.iter().map(|r| r.object_id.clone()).collect();
        // Its escalations, pending or approved, can no longer let anything run.
        let settled = settle_agent(ws, &id, &format!("agent `{id}` revoked: {reason}"), &auth.key.key_id, now);
        // Only the flag: a concurrent change to the agent's other fields stays.
        let deactivate = Mutation::DeactivateAgent { workspace_id: ws.workspace_id.clone(), agent_id: id.clone(), at: now, etag: new_id("etag") };
        let mut mutations = vec![deactivate];
        mutations.extend(grant_records.into_iter().chain(settled.records).map(Mutation::PutObject));
        mutations.extend(revoked_keys.iter().map(|k| Mutation::RevokeApiKey { workspace_id: ws.workspace_id.clone(), key_id: k.clone(), at: now }));
        let mut seals = vec![event(&ws.workspace_id, "agent.revoked", Some(&auth.key.key_id), now, json!({
            "agent_id": id, "reason": reason, "revoked_grants": revoked_grants, "revoked_keys": revoked_keys,
        }))];
        seals.extend(settled.seals);
        (mutations, seals)
    };
    let (revoked, killed) = revoke(&state, ws, &auth.key.key_id, &id, creds, &reason, extra).await?;
    for k in &mut keys {
        k.revoked_at = Some(now);
        state.put_key(k.clone());
    }
    Ok(Json(json!({
        "ok": true,
        "agent": crate::api::agents::agent_view(&ws.agent(&id).unwrap_or(agent)),
        "revoked_credentials": revoked.iter().map(|c| credential_view(c, now)).collect::<Vec<_>>(),
        "revoked_grants": revoked_grants,
        "revoked_keys": revoked_keys,
        "killed_sessions": killed,
    })))
}

/// Revoke, in memory, every grant `agent_id` gave or received and their re-delegations,
/// and give their records to store.
fn revoke_grants_of(ws: &WorkspaceState, agent_id: &str, now: i64) -> Vec<praetor_store::ObjectRecord> {
    let mut live = ws.live.lock();
    let roots: Vec<String> = live
        .authority
        .grants
        .values()
        .filter(|g| !g.revoked && (g.source_agent_id == agent_id || g.target_agent_id == agent_id))
        .map(|g| g.grant_id.clone())
        .collect();
    let reason = format!("agent `{agent_id}` revoked");
    let mut records = Vec::new();
    for root in roots {
        records.extend(crate::api::grants::revoke_tree(&mut live.authority, &root, &reason, &ws.workspace_id, now));
    }
    records
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
    let old = ws.credentials.read().get(&id).cloned().ok_or_else(|| ApiError::not_found("credential", &id))?;
    if old.revoked_at.is_some() {
        return Err(ApiError::new(crate::error::Code::Conflict, format!("credential `{id}` is already revoked")));
    }
    let now = state.now_ms();
    let ttl_days = old.expires_at.map(|e| ((e - old.created_at) / 86_400_000).max(1) as u32);
    let (fresh, fresh_json) = crate::api::agents::new_credential(&ws.workspace_id, &old.agent_id, now, ttl_days);
    let txn = Txn {
        mutations: vec![
            Mutation::InsertCredential(fresh.clone()),
            Mutation::RevokeCredential { workspace_id: ws.workspace_id.clone(), credential_id: id.clone(), at: now },
        ],
        seal: vec![event(&ws.workspace_id, "credential.rotated", Some(&auth.key.key_id), now, json!({
            "agent_id": old.agent_id, "old_credential_id": id, "credential_id": fresh.credential_id, "public_key": fresh.public_key,
        }))],
    };
    state.commit(txn).await?;
    let mut map = ws.credentials.write();
    if let Some(c) = map.get_mut(&id) {
        c.revoked_at = Some(now);
    }
    map.insert(fresh.credential_id.clone(), fresh);
    let revoked = map.get(&id).map(|c| credential_view(c, now));
    Ok(Json(json!({ "ok": true, "credential": fresh_json, "revoked": revoked })))
}
