//! First start: the default workspace and its admin key; `--demo` agents and policies.

use std::sync::Arc;

use praetor_core::{PolicyDef, WorkspaceSettings};
use praetor_store::{Agent, Mutation, PolicyRecord, Scope, StoreError, Txn, Workspace};
use serde_json::{Map, json};

use crate::api::system::mint_key;
use crate::error::{ApiError, ApiResult, Code};
use crate::events::event;
use crate::secrets::{new_id, random_bytes};
use crate::state::{AppState, PolicySet};

/// What the first start created, for the binary to show once.
#[derive(Debug, Default)]
pub struct Started {
    pub workspace_id: String,
    /// The admin key, when this start created it. Shown once, never stored in clear.
    pub admin_key: Option<String>,
    pub demo_loaded: bool,
    /// The hold on the keys directory (`praetor serve` keeps it while it serves); none
    /// for a state built in memory.
    pub keys_in_use: Option<crate::vault::KeysInUse>,
}

pub const DEFAULT_WORKSPACE_NAME: &str = "default";

/// Where the first start keeps its admin key, in the data directory (mode 0600).
pub const ADMIN_KEY_FILE: &str = "admin.key";

pub async fn first_start(state: &Arc<AppState>) -> ApiResult<Started> {
    let mut started = Started::default();
    let existing = state.workspace_ids();
    let workspace_id = match existing.into_iter().next() {
        Some(id) => {
            recover_admin_key(state);
            id
        }
        None => match create_first_workspace(state).await? {
            Some((id, key)) => {
                started.admin_key = Some(key);
                id
            }
            None => {
                // Another node on the same database started at the same time and
                // created it: serve that one, as a later start would.
                state.take_in_store().await?;
                let id = state.workspace_ids().into_iter().next().ok_or_else(|| {
                    ApiError::new(Code::Internal, "another node created the first workspace, but the store holds none")
                })?;
                tracing::info!(workspace_id = %id, "another node created the first workspace at the same time; serving it");
                id
            }
        },
    };
    if state.config.demo {
        started.demo_loaded = load_demo(state, &workspace_id).await?;
    }
    started.workspace_id = workspace_id;
    Ok(started)
}

/// The first start's admin key is written, durably, before the workspace that holds it
/// is committed: a start that died between the commit and the file would leave a
/// workspace whose only key nobody was ever shown. It is written under a name of this
/// start's own (`admin.key.<random>.new`), and only the start whose commit created the
/// workspace names it `admin.key` (`publish_admin_key`); one that lost to another node
/// on the same database removes its own. Nodes may share a data directory: none touches
/// another's file. A start that died before naming its file leaves it for the next one
/// (`recover_admin_key`).
async fn create_first_workspace(state: &Arc<AppState>) -> ApiResult<Option<(String, String)>> {
    let dir = state.config.data_dir.clone();
    let staged = dir.join(format!("{ADMIN_KEY_FILE}.{}{STAGED}", hex::encode(random_bytes::<8>())));
    let keep = |secret: &str| {
        crate::vault::write_private(&staged, format!("{secret}\n").as_bytes())
            .map_err(|e| ApiError::new(Code::Internal, format!("cannot write the admin key: {e}")))
    };
    match create_workspace_keeping(state, DEFAULT_WORKSPACE_NAME, Some(Mutation::ExpectFirstWorkspace), keep).await {
        Ok(Some(created)) => {
            publish_admin_key(&dir, &staged, &created.1, state.now_ms())?;
            Ok(Some(created))
        }
        Ok(None) => {
            if let Err(e) = std::fs::remove_file(&staged) {
                tracing::warn!(path = %staged.display(), error = %e, "cannot remove an admin key that was never stored");
            }
            Ok(None)
        }
        Err(e) => {
            if staged.exists() {
                // The commit may have stood (a connection lost after it was sent).
                tracing::warn!(path = %staged.display(), "the first start failed; its admin key is left here in case the workspace was stored");
            }
            Err(e)
        }
    }
}

/// The suffix of an admin key written before its workspace was committed.
const STAGED: &str = ".new";

/// How old a staged admin key must be for a start to take it as left behind, not as
/// another node's first start under way in a shared data directory.
const STAGED_LEFT_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Name the staged admin key `admin.key`. A file already there holding another key
/// holds no key of this store (no workspace was stored before this commit, and only one
/// commit creates the first): it was left by another database this data directory
/// served, and is moved aside (in case it is that store's only copy). One holding this
/// key was named by another start sharing the directory (`recover_admin_key`, while
/// this start stalled for over a minute): nothing is left to do.
fn publish_admin_key(dir: &std::path::Path, staged: &std::path::Path, secret: &str, now_ms: i64) -> ApiResult<()> {
    let path = dir.join(ADMIN_KEY_FILE);
    let failed = |e: std::io::Error| ApiError::new(Code::Internal, format!("cannot name the admin key `{}`: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(held) if held.trim() == secret => {
            let _ = std::fs::remove_file(staged);
            return Ok(());
        }
        Ok(_) => move_aside(dir, &path, now_ms, "an admin key file that no stored workspace has was moved aside").map_err(failed)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    match std::fs::rename(staged, &path) {
        Ok(()) => {}
        // Renamed by another start while this one stalled for over a minute: to
        // `admin.key`, or aside (its key was not stored yet when that start looked).
        // Written again from memory then; a copy aside stays.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !std::fs::read_to_string(&path).is_ok_and(|held| held.trim() == secret) {
                crate::vault::write_private(&path, format!("{secret}\n").as_bytes()).map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
            }
        }
        Err(e) => return Err(failed(e)),
    }
    crate::vault::sync_dir(dir).map_err(|e| ApiError::new(Code::Internal, e.to_string()))
}

/// Rename an admin key file to `admin.key.<ms>.<random>.orphan`, saying why.
fn move_aside(dir: &std::path::Path, path: &std::path::Path, now_ms: i64, why: &str) -> std::io::Result<()> {
    let aside = dir.join(format!("{ADMIN_KEY_FILE}.{now_ms}.{}.orphan", hex::encode(random_bytes::<4>())));
    std::fs::rename(path, &aside)?;
    tracing::warn!(path = %path.display(), moved_to = %aside.display(), "{why}");
    Ok(())
}

/// At a start that finds its workspace, the admin keys first starts staged and did not
/// name (`create_first_workspace`):
/// - one this store holds becomes `admin.key` if no `admin.key` is there (its first
///   start died between the commit and naming it);
/// - one it does not hold is moved aside: never stored, or stored in another database
///   this data directory served, whose only copy it may be;
/// - one younger than `STAGED_LEFT_AFTER` is left alone (another node's first start may
///   be under way in a shared directory), with a warning if `admin.key` is missing.
fn recover_admin_key(state: &AppState) {
    let dir = &state.config.data_dir;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!("{ADMIN_KEY_FILE}.");
    let published = dir.join(ADMIN_KEY_FILE);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(&prefix) && name.ends_with(STAGED)) {
            continue;
        }
        let path = entry.path();
        if !crate::vault::written_before(&entry, STAGED_LEFT_AFTER) {
            if !published.exists() {
                tracing::warn!(path = %path.display(), "no admin.key, and a first start staged an admin key here less than a minute ago \
                    (under way on another node, or it died): a start after a minute names it if the store holds it");
            }
            continue;
        }
        let Ok(secret) = std::fs::read_to_string(&path) else { continue };
        let renamed = match state.key_for(secret.trim()) {
            Some(_) if !published.exists() => std::fs::rename(&path, &published).map(|()| {
                tracing::warn!(path = %published.display(), "the stored admin key a first start did not name was named admin.key");
            }),
            Some(_) => {
                tracing::warn!(path = %path.display(), "a staged admin key holds a stored key, and admin.key holds another: left as it is");
                Ok(())
            }
            None => move_aside(dir, &path, state.now_ms(), "a staged admin key this store does not hold (never stored, or another database's) was moved aside"),
        };
        if let Err(e) = renamed.map_err(|e| e.to_string()).and_then(|()| crate::vault::sync_dir(dir).map_err(|e| e.to_string())) {
            tracing::warn!(path = %path.display(), error = %e, "cannot rename a staged admin key");
        }
    }
}

/// Create a workspace with a fresh HMAC secret and an admin key. Returns the
/// workspace id and the key, which is shown once.
pub async fn create_workspace(state: &Arc<AppState>, name: &str) -> ApiResult<(String, String)> {
    create_workspace_keeping(state, name, None, |_| Ok(()))
        .await?
        .ok_or_else(|| ApiError::new(Code::Internal, "a workspace without a guard was refused as stale"))
}

/// `create_workspace`, giving the admin key to `keep` before the workspace is
/// committed (a failure there creates nothing), and committing `guard` with it: `None`
/// when the guard refused it.
async fn create_workspace_keeping(
    state: &Arc<AppState>,
    name: &str,
    guard: Option<Mutation>,
    keep: impl FnOnce(&str) -> ApiResult<()>,
) -> ApiResult<Option<(String, String)>> {
    let now = state.now_ms();
    let ws = Workspace {
        workspace_id: new_id("ws"),
        name: name.into(),
        settings: WorkspaceSettings::default(),
        hmac_secret: random_bytes::<32>().to_vec(),
        created_at: now,
    };
    let (key, secret) = mint_key(&ws.workspace_id, vec![Scope::Admin], None, Some("admin (first start)".into()), now);
    keep(&secret)?;
    let guarded = guard.is_some();
    let txn = Txn {
        mutations: guard.into_iter().chain([Mutation::InsertWorkspace(ws.clone()), Mutation::InsertApiKey(key.clone())]).collect(),
        seal: vec![
            event(&ws.workspace_id, "workspace.created", None, now, json!({ "name": ws.name })),
            event(&ws.workspace_id, "key.created", None, now, json!({ "key_id": key.key_id, "scopes": key.scopes })),
        ],
    };
    match state.commit(txn).await {
        Ok(_) => {}
        Err(StoreError::Stale(_)) if guarded => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    state.add_workspace(&ws);
    state.put_key(key);
    Ok(Some((ws.workspace_id, secret)))
}

fn demo_policies() -> Vec<serde_json::Value> {
    vec![
        json!({"name": "No destructive deletes", "policy_type": "action_type", "action_types": ["delete_*", "db.drop*"],
               "decision": "block", "priority": 100, "description": "Agents may not delete records or drop tables."}),
        json!({"name": "Large payments need a person", "policy_type": "metadata", "action_types": ["payment.*"],
               "decision": "escalate", "priority": 90,
               "conditions": {"rule": {"field": "amount", "op": ">", "value": 10000}}}),
        json!({"name": "No PII in outbound e-mail", "policy_type": "pii", "action_types": ["email.*"],
               "decision": "block", "priority": 80, "conditions": {"categories": ["ssn", "credit_card", "iban"]}}),
        json!({"name": "No secrets anywhere", "policy_type": "pii", "decision": "block", "priority": 85,
               "conditions": {"categories": ["secret"]}}),
        json!({"name": "Low-trust agents are watched", "policy_type": "threshold", "decision": "escalate",
               "priority": 50, "trust_threshold": 40}),
        json!({"name": "Send rate", "policy_type": "sequence", "action_types": ["email.send"], "decision": "block",
               "priority": 60, "conditions": {"velocity": {"max": 20, "window_seconds": 60}}}),
    ]
}

/// Demo agents and policies, loaded once into a workspace that has no agents yet.
async fn load_demo(state: &Arc<AppState>, workspace_id: &str) -> ApiResult<bool> {
    let Some(ws) = state.workspace(workspace_id) else { return Ok(false) };
    if !ws.agents.read().is_empty() || !ws.policies.load().records.is_empty() {
        return Ok(false);
    }
    let now = state.now_ms();
    let mut txn = Txn::default();
    let mut agents = Vec::new();
    for (name, framework, scopes) in [
        ("support-bot", "langchain", vec!["email.*", "ticket.*", "kb.search"]),
        ("finance-agent", "crewai", vec!["payment.*", "invoice.*", "db.read"]),
        ("ops-agent", "custom", vec![]),
    ] {
        let agent = Agent {
            agent_id: new_id("agt"),
            workspace_id: workspace_id.to_owned(),
            name: name.into(),
            framework: framework.into(),
            description: Some(format!("demo agent `{name}`")),
            capabilities: Vec::new(),
            scopes: scopes.into_iter().map(String::from).collect(),
            permission_boundary: None,
            require_signature: false,
            trust_score: ws.settings.read().trust_baseline,
            clean_streak: 0,
            is_active: true,
            attributes: Map::new(),
            created_at: now,
            updated_at: now,
            last_seen_at: None,
            total_actions: 0,
            allowed_actions: 0,
            blocked_actions: 0,
            escalated_actions: 0,
            copy_generation: 0,
            etag: crate::secrets::new_id("etag"),
        };
        txn.seal.push(event(workspace_id, "agent.registered", None, now, json!({"agent_id": agent.agent_id, "name": name, "demo": true})));
        txn.mutations.push(Mutation::PutAgent(agent.clone()));
        agents.push(agent);
    }
    let mut records = Vec::new();
    for p in demo_policies() {
        let mut def: PolicyDef = serde_json::from_value(p).map_err(|e| crate::error::ApiError::new(crate::error::Code::Internal, format!("demo policy: {e}")))?;
        def.policy_id = new_id("pol");
        let rec = PolicyRecord { workspace_id: workspace_id.to_owned(), def, created_at: now, updated_at: now };
        txn.seal.push(event(workspace_id, "policy.created", None, now, json!({"policy_id": rec.def.policy_id, "policy": rec.def, "demo": true})));
        txn.mutations.push(Mutation::PutPolicy(rec.clone()));
        records.push(rec);
    }
    let set = PolicySet::build(records).map_err(|e| crate::error::ApiError::new(crate::error::Code::Internal, format!("demo policies: {e}")))?;
    match state.commit(txn).await {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => {
            // Another node starting with `--demo` registered the same demo agents first;
            // its agents and policies reach this node through the change feed.
            tracing::info!(workspace_id, "another node loaded the demo data at the same time");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    let _guard = ws.policy_writes.lock().await;
    ws.replace_policies(set, state.now_ms());
    let mut map = ws.agents.write();
    for a in agents {
        map.insert(a.agent_id.clone(), a);
    }
    tracing::info!(workspace_id, "demo agents and policies loaded");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    /// Another database's `admin.key` is moved aside for this store's; one that already
    /// holds this start's key (named by another start sharing the directory while this
    /// one stalled) is kept, and the start succeeds.
    #[test]
    fn publishing_keeps_every_key_and_finishes_one_already_named() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("admin.key.00.new");
        std::fs::write(dir.path().join(ADMIN_KEY_FILE), "xb_live_other_database\n").unwrap();
        std::fs::write(&staged, "xb_live_ours\n").unwrap();
        publish_admin_key(dir.path(), &staged, "xb_live_ours", 7).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(ADMIN_KEY_FILE)).unwrap(), "xb_live_ours\n");
        let left = names(dir.path());
        assert!(left.len() == 2 && left[0] == ADMIN_KEY_FILE && left[1].starts_with("admin.key.7.") && left[1].ends_with(".orphan"), "{left:?}");
        assert_eq!(std::fs::read_to_string(dir.path().join(&left[1])).unwrap(), "xb_live_other_database\n");

        // Named meanwhile by another start: the staged file is gone, admin.key holds it.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADMIN_KEY_FILE), "xb_live_ours\n").unwrap();
        publish_admin_key(dir.path(), &dir.path().join("admin.key.01.new"), "xb_live_ours", 8).unwrap();
        assert_eq!(names(dir.path()), [ADMIN_KEY_FILE]);

        // Moved aside meanwhile by another start (not stored yet when it looked): the
        // key is written again from memory.
        let dir = tempfile::tempdir().unwrap();
        publish_admin_key(dir.path(), &dir.path().join("admin.key.02.new"), "xb_live_ours", 9).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(ADMIN_KEY_FILE)).unwrap(), "xb_live_ours\n");
    }
}
