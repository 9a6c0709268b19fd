//! Following the change feed: several nodes share one database, and each keeps a copy
//! of policies, settings, keys, agents, sessions and authority objects in memory. Every
//! transaction that changes one of them appends its key to the workspace's feed (see
//! `praetor_store::Mutation::feed_key`); this task reads the feed a few times a second
//! and reloads what other nodes changed, so a policy created on one node decides on
//! every node within a second. Decisions do not wait for it: what a decision counts
//! (budgets, velocity, kills, revocations) is guarded by etags at commit.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use praetor_store::{Change, Mutation, Txn};

use crate::error::ApiResult;
use crate::state::{AppState, PolicySet, WorkspaceState};

/// How often the feed is read: well inside the one second a change may take.
const POLL: Duration = Duration::from_millis(100);
/// At most this many entries per read (a node that fell behind catches up over reads).
const PAGE: u32 = 1000;
/// Entries older than this are pruned; a node further behind reloads the workspace.
const KEEP_MS: i64 = 10 * 60 * 1000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub fn spawn_follower(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            // A node of this version must stop serving once a newer one migrates the
            // shared database, even a node that only reads; the store logs it once.
            if let Err(e) = state.store.check_schema().await {
                if !matches!(e, praetor_store::StoreError::Superseded(_)) {
                    tracing::warn!(error = %e, "cannot check the database's schema version");
                }
                continue;
            }
            for ws_id in state.workspace_ids() {
                let Some(ws) = state.workspace(&ws_id) else { continue };
                if let Err(e) = follow(&state, &ws).await {
                    tracing::warn!(workspace_id = %ws_id, error = %e.message, "cannot follow the change feed");
                }
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                prune(&state).await;
            }
        }
    })
}

/// Apply one workspace's new feed entries written by other nodes.
pub async fn follow(state: &AppState, ws: &WorkspaceState) -> ApiResult<()> {
    let after = state.feed_head(&ws.workspace_id);
    let changes = state.store.changes_since(&ws.workspace_id, after, PAGE).await?;
    let Some(last) = changes.last().map(|c| c.seq) else { return Ok(()) };
    let contiguous = changes.first().is_some_and(|c| c.seq == after + 1) && changes.windows(2).all(|w| w[1].seq == w[0].seq + 1);
    if !contiguous {
        // Entries this node never read were pruned: reload everything it holds.
        tracing::warn!(workspace_id = %ws.workspace_id, after, first = changes[0].seq, "missed change-feed entries; reloading the workspace");
        reload_workspace(state, ws).await?;
    } else {
        apply(state, ws, &changes).await?;
    }
    state.set_feed_head(&ws.workspace_id, last);
    Ok(())
}

async fn apply(state: &AppState, ws: &WorkspaceState, changes: &[Change]) -> ApiResult<()> {
    let own = state.store.node_id();
    // This node's own changes are in memory already, but for its policy changes: one
    // whose request was cancelled after its commit was queued never reached memory, and
    // the node would go on deciding with the set before it (reloading costs one read).
    let keys: BTreeSet<&str> = changes.iter().filter(|c| c.node_id != own || c.key == "policies").map(|c| c.key.as_str()).collect();
    if keys.is_empty() {
        return Ok(());
    }
    tracing::debug!(workspace_id = %ws.workspace_id, changes = keys.len(), "applying other nodes' changes");
    let mut agents = Vec::new();
    let mut sessions = Vec::new();
    let mut objects = Vec::new();
    for key in keys {
        match key.split_once(':') {
            None if key == "policies" => reload_policies(state, ws).await?,
            None if key == "settings" => reload_settings(state, ws).await?,
            Some(("agent", id)) => agents.push(id.to_owned()),
            // Only sessions this node holds: others are read when a request names them.
            Some(("session", id)) if ws.live.lock().sessions.contains_key(id) => sessions.push(id.to_owned()),
            Some(("session", _)) => {}
            Some(("key", id)) => reload_key(state, ws, id).await?,
            Some(("object", rest)) => match rest.split_once(':') {
                Some((kind, id)) => objects.push((kind.to_owned(), id.to_owned())),
                None => tracing::warn!(key, "malformed change-feed key"),
            },
            _ => tracing::warn!(key, "unknown change-feed key"),
        }
    }
    crate::pipeline::resync(state, ws, &agents, &[]).await?;
    refresh_sessions(state, ws, &sessions).await?;
    crate::pipeline::resync_objects(state, ws, &objects).await
}

/// Sessions another node changed: the store's copy is taken unless this node holds a
/// newer one of its own (`pipeline::refresh_session`). This node's own changes may be
/// in memory before they are in the store (a close on its way), and a read made before
/// them that lands after them must not set the session back; a copy of this node's
/// that another node's write made stale is refused at its next commit and read again.
async fn refresh_sessions(state: &AppState, ws: &WorkspaceState, sessions: &[String]) -> ApiResult<()> {
    for id in sessions {
        crate::pipeline::refresh_session(state, ws, id).await?;
    }
    Ok(())
}

async fn reload_policies(state: &AppState, ws: &WorkspaceState) -> ApiResult<()> {
    // Under the policy lock: a policy write on this node rebuilds from the set in
    // memory, which must not be replaced between its read and its store.
    let _guard = ws.policy_writes.lock().await;
    load_stored_policies(state, ws).await
}

/// Put the stored policies in force on this node. The caller holds `policy_writes`.
///
/// Compared as records, not by the set's hash: a policy written again unchanged (a `PUT`
/// of the same definition, a rule updated to what it was) keeps the hash but not its
/// `updated_at`, and an edit here guards on the `updated_at` it holds, so holding the
/// old one would refuse every edit of it as stale, and every retry. Records already in
/// force (this node's own writes, as the change feed brings them back) are not compiled
/// again.
pub async fn load_stored_policies(state: &AppState, ws: &WorkspaceState) -> ApiResult<()> {
    let mut records = state.store.list_policies(&ws.workspace_id).await?;
    PolicySet::sort(&mut records);
    let in_force = ws.policies.load_full();
    if records == in_force.records {
        return Ok(());
    }
    let set = match PolicySet::build_serving(records, &in_force) {
        Ok(set) => set,
        Err(e) => {
            // Keep deciding with the set in force (a newer node may have written what
            // this one cannot compile), and go on following the feed.
            tracing::error!(workspace_id = %ws.workspace_id, error = %e, "policies changed on another node do not compile here; keeping the current set");
            return Ok(());
        }
    };
    tracing::info!(workspace_id = %ws.workspace_id, policy_set_hash = %set.hash, patterns_compiled = set.compiled.patterns_compiled(),
                   "the stored policies differ from those in force here; now in force");
    ws.replace_policies(set, state.now_ms());
    Ok(())
}

async fn reload_settings(state: &AppState, ws: &WorkspaceState) -> ApiResult<()> {
    let _guard = ws.policy_writes.lock().await;
    if let Some(stored) = state.store.get_workspace(&ws.workspace_id).await? {
        *ws.settings.write() = stored.settings;
    }
    Ok(())
}

async fn reload_key(state: &AppState, ws: &WorkspaceState, key_id: &str) -> ApiResult<()> {
    if let Some(key) = state.store.get_api_key(&ws.workspace_id, key_id).await? {
        state.put_key(key);
    }
    Ok(())
}

/// Everything of a workspace this node holds, read again.
async fn reload_workspace(state: &AppState, ws: &WorkspaceState) -> ApiResult<()> {
    reload_policies(state, ws).await?;
    reload_settings(state, ws).await?;
    for key in state.store.list_api_keys(&ws.workspace_id).await? {
        state.put_key(key);
    }
    let agents: Vec<String> = ws.agents.read().keys().cloned().collect();
    let sessions: Vec<String> = ws.live.lock().sessions.keys().cloned().collect();
    crate::pipeline::resync(state, ws, &agents, &[]).await?;
    refresh_sessions(state, ws, &sessions).await?;
    let snapshot = state.store.snapshot().await?;
    {
        let mut live = ws.live.lock();
        for o in snapshot.objects.iter().filter(|o| o.workspace_id == ws.workspace_id) {
            live.authority.absorb(o);
        }
    }
    for a in snapshot.agents.iter().filter(|a| a.workspace_id == ws.workspace_id && !ws.holds_agent(&a.agent_id)) {
        crate::pipeline::resync(state, ws, std::slice::from_ref(&a.agent_id), &[]).await?;
    }
    Ok(())
}

/// Forget change-feed entries every node has read, and nonces whose signatures are too
/// old to be accepted again.
async fn prune(state: &AppState) {
    let now = state.now_ms();
    for ws_id in state.workspace_ids() {
        let mutations = vec![
            Mutation::PruneChanges { workspace_id: ws_id.clone(), before: now - KEEP_MS },
            // A margin of one signature window for other nodes' clocks: a nonce is
            // forgotten only once no node can still accept its signature.
            Mutation::PruneNonces { workspace_id: ws_id.clone(), now: now - 2 * state.config.signature_max_skew_secs * 1000 },
        ];
        if let Err(e) = state.store.commit(Txn { mutations, seal: Vec::new() }).await {
            tracing::warn!(workspace_id = %ws_id, error = %e, "cannot prune the change feed and nonces");
        }
    }
}
