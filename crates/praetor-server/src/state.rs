//! The server's shared state: the store (the record) and the in-memory view the hot
//! path reads (keys, agents, compiled policies, action histories). Every write goes to
//! the store first and to memory only once it is committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use praetor_core::session::SessionStatus;
use praetor_core::{CompiledPolicySet, PastAction, PolicyDef, WorkspaceSettings};
use praetor_store::{Agent, ApiKey, Credential, PolicyRecord, Session, Snapshot, Store, Workspace};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::secrets;

/// A workspace's policies: the records and their compiled form, swapped as one.
pub struct PolicySet {
    pub records: Vec<PolicyRecord>,
    pub compiled: CompiledPolicySet,
    /// SHA-256 over the definitions: which policy set decided (sealed with each decision).
    pub hash: String,
}

impl PolicySet {
    pub fn build(records: Vec<PolicyRecord>) -> Result<PolicySet, praetor_core::PolicyError> {
        Self::build_after(records, None)
    }

    fn build_after(mut records: Vec<PolicyRecord>, in_force: Option<&PolicySet>) -> Result<PolicySet, praetor_core::PolicyError> {
        Self::sort(&mut records);
        let defs: Vec<PolicyDef> = records.iter().map(|r| r.def.clone()).collect();
        let compiled = match in_force {
            Some(set) => CompiledPolicySet::compile_after(&defs, &set.compiled)?,
            None => CompiledPolicySet::compile(&defs)?,
        };
        let hash = compiled.hash_hex();
        Ok(PolicySet { records, compiled, hash })
    }

    /// Put records in the order a set holds them.
    pub fn sort(records: &mut [PolicyRecord]) {
        records.sort_by(|a, b| a.def.policy_id.cmp(&b.def.policy_id));
    }

    /// [`PolicySet::build`] for a server that is serving, whose set in force is
    /// `in_force`: the content patterns it compiled are not compiled again, and what is
    /// compiled (new patterns: 10,000 took 2.4 s in a release build) is compiled off the
    /// runtime's workers, where it would hold up every request queued there. Not
    /// cancellable, so the caller's policy lock covers the whole compile, as when it ran
    /// inline.
    pub fn build_serving(records: Vec<PolicyRecord>, in_force: &PolicySet) -> Result<PolicySet, praetor_core::PolicyError> {
        off_the_workers(|| PolicySet::build_after(records, Some(in_force)))
    }
}

/// Run `f`, which may block for a while, without holding up the other tasks of a
/// multi-threaded runtime: its worker hands its queue to another thread first
/// (`block_in_place`). Elsewhere (no runtime, or one thread) it runs inline. Other
/// futures joined into the calling task wait for `f` too, and inside a `LocalSet` on a
/// multi-threaded runtime it panics (tokio forbids `block_in_place` there); the server
/// calls it only from request handlers and the change feed, which are neither.
pub fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// One agent's or session's recent allowed actions, oldest first, and the times from
/// which it is complete. Two things leave out older actions:
///
/// - the size cap: when it drops an action still inside some window,
///   `complete_from_ms` moves past it, and a policy whose window reaches further back
///   fails closed instead of undercounting (a flood of cheap actions cannot push the
///   expensive ones out of the count);
/// - the window it was kept for: a history holds what the policies in force needed
///   (read from the store since `known_from_ms`, then kept in memory for the window).
///   When a policy change widens the window, older actions were never kept, so
///   `known_from_ms` says where this history starts, and a decision that needs more
///   reads it again from the store ([`History::needs_reading`]). Without this, a rate
///   limit added after a burst would not count the burst.
#[derive(Debug, Clone)]
pub struct History {
    pub actions: VecDeque<PastAction>,
    pub complete_from_ms: i64,
    pub known_from_ms: i64,
}

impl Default for History {
    /// The history of an agent or session that has none in memory: nothing allowed
    /// within the window in force (when the window widens, every agent and session in
    /// memory gets a history that says where it starts: `LiveState::widen_window`).
    fn default() -> Self {
        History { actions: VecDeque::new(), complete_from_ms: i64::MIN, known_from_ms: i64::MIN }
    }
}

impl History {
    /// A history read back from the store: the newest `HISTORY_CAP` allowed actions
    /// since `since`. When the cap cut it, what came before the oldest kept action is
    /// unknown.
    pub fn from_store(actions: Vec<PastAction>, since: i64) -> History {
        let complete_from_ms = match actions.first() {
            Some(oldest) if actions.len() >= HISTORY_CAP => oldest.at_ms + 1,
            _ => i64::MIN,
        };
        History { actions: actions.into(), complete_from_ms, known_from_ms: since }
    }

    /// Take `action` out (its newest entry of that type and time), if it is here.
    pub fn forget(&mut self, action: &PastAction) {
        if let Some(i) = self.actions.iter().rposition(|a| a == action) {
            self.actions.remove(i);
        }
    }

    /// The time from which this history holds every allowed action.
    pub fn from_ms(&self) -> i64 {
        self.complete_from_ms.max(self.known_from_ms)
    }

    /// Whether a window starting at `window_start_ms` reaches before what this history
    /// was kept for, so that the store must be read again (not the cap's doing: reading
    /// again would cut it the same way).
    pub fn needs_reading(&self, window_start_ms: i64) -> bool {
        self.known_from_ms > window_start_ms
    }
}

/// The etag a copy carries until it has been read back with its history: it matches
/// no stored etag, so the first decision made from such a copy is refused as stale and
/// the copy is reloaded (a start-up snapshot holds rows, not their histories).
pub const UNSYNCED: &str = "?";

/// Bounded action histories for velocity and sequence policies, and the live sessions.
#[derive(Default)]
pub struct LiveState {
    pub agent_history: HashMap<String, History>,
    pub session_history: HashMap<String, History>,
    /// Runtime sessions: every active one, and closed ones closed or read from the
    /// store in the last `CLOSED_SESSION_GRACE_MS` (a closed session not here is read
    /// from the store when a request names it).
    pub sessions: HashMap<String, Session>,
    /// When each session was last read from the store into `sessions`: a request loads
    /// the session it names, then evaluates, and the session must not be pruned between.
    pub session_loaded_ms: HashMap<String, i64>,
    /// Roles, windows, grants, breakglass and escalations.
    pub authority: crate::authority::AuthorityState,
}

/// How long a closed session stays in memory after it closed or was last read from the
/// store; after that only the store has it. Without this, every session ever closed
/// would stay in memory until a restart.
pub const CLOSED_SESSION_GRACE_MS: i64 = 60_000;

/// No history grows past this many actions per agent or session, whatever the window.
/// Twice the largest velocity limit, so any limit can be counted.
pub const HISTORY_CAP: usize = 2 * praetor_core::policy::sequence::MAX_VELOCITY as usize;

impl LiveState {
    /// Drop what no policy can look at any more, and empty histories, so memory stays
    /// bounded by the window and the cap.
    pub fn prune(&mut self, now_ms: i64, window_ms: i64) {
        let cutoff = now_ms - window_ms;
        for map in [&mut self.agent_history, &mut self.session_history] {
            map.retain(|_, h| {
                while h.actions.front().is_some_and(|a| a.at_ms < cutoff) {
                    h.actions.pop_front();
                }
                !h.actions.is_empty() || h.complete_from_ms > cutoff || h.known_from_ms > cutoff
            });
        }
    }

    /// The window of the policies in force widened at `now_ms` from `old_window_ms`:
    /// every history in memory, and every agent's and session's without one, holds
    /// only what the old window kept. Each now says so, and a decision that needs more
    /// reads the store ([`History::needs_reading`]).
    pub fn widen_window(&mut self, agents: impl Iterator<Item = String>, now_ms: i64, old_window_ms: i64) {
        let kept_from = now_ms.saturating_sub(old_window_ms.max(0));
        let sessions: Vec<String> = self.sessions.keys().cloned().collect();
        for (map, ids) in [(&mut self.agent_history, agents.collect::<Vec<_>>()), (&mut self.session_history, sessions)] {
            for id in ids {
                let h = map.entry(id).or_default();
                h.known_from_ms = h.known_from_ms.max(kept_from);
            }
        }
    }

    /// Forget closed sessions (and their histories) that closed, and were last read from
    /// the store, more than `CLOSED_SESSION_GRACE_MS` ago. Returns how many went.
    pub fn prune_closed_sessions(&mut self, now_ms: i64) -> usize {
        let cutoff = now_ms - CLOSED_SESSION_GRACE_MS;
        let before = self.sessions.len();
        let loaded = &self.session_loaded_ms;
        self.sessions.retain(|id, s| {
            s.status == SessionStatus::Active
                || s.closed_at.is_some_and(|at| at > cutoff)
                || loaded.get(id).is_some_and(|&at| at > cutoff)
        });
        let sessions = &self.sessions;
        self.session_history.retain(|id, _| sessions.contains_key(id));
        self.session_loaded_ms.retain(|id, _| sessions.contains_key(id));
        before - self.sessions.len()
    }

    pub fn record(history: &mut History, action: PastAction, window_ms: i64) {
        if window_ms <= 0 {
            return;
        }
        let cutoff = action.at_ms - window_ms;
        while history.actions.front().is_some_and(|a| a.at_ms < cutoff) {
            history.actions.pop_front();
        }
        while history.actions.len() >= HISTORY_CAP {
            if let Some(dropped) = history.actions.pop_front() {
                history.complete_from_ms = history.complete_from_ms.max(dropped.at_ms + 1);
            }
        }
        history.actions.push_back(action);
    }
}

pub struct WorkspaceState {
    pub workspace_id: String,
    pub name: String,
    pub settings: RwLock<WorkspaceSettings>,
    pub policies: ArcSwap<PolicySet>,
    pub agents: RwLock<HashMap<String, Agent>>,
    pub credentials: RwLock<HashMap<String, Credential>>,
    /// Held while one decision reads and updates histories and trust, so velocity
    /// limits and trust updates are exact under concurrency. Lock order: live, then agents.
    pub live: Mutex<LiveState>,
    /// Serialises policy writes so each recompiles from a consistent list.
    pub policy_writes: tokio::sync::Mutex<()>,
    /// Held from a request's evaluation until its transaction is queued, so a
    /// workspace's decisions reach the writer in the order they were made (each one's
    /// etag guard expects what the previous one wrote).
    pub decision_order: Mutex<()>,
    /// Serialises agent registration so (name, framework) stays unique, and key
    /// revocation so a workspace keeps an admin key.
    pub agent_writes: tokio::sync::Mutex<()>,
    pub last_prune_ms: AtomicU64,
    /// Counts reloads of agent copies (`Agent::copy_generation`).
    agent_reloads: AtomicU64,
    /// Counts reloads of session copies (`Session::copy_generation`).
    session_reloads: AtomicU64,
    /// Agent ids the store did not hold when a request named them, and when it was
    /// asked: a client naming an unknown agent over and over costs one store read per
    /// `ABSENT_TTL_MS`, not one per request.
    absent_agents: Mutex<HashMap<String, i64>>,
}

/// How long an agent id the store does not hold is taken as absent without asking
/// again. An agent registered on another node meanwhile arrives through the change
/// feed (every 100 ms) regardless.
const ABSENT_TTL_MS: i64 = 1_000;
/// At most this many absent ids are remembered (then the list starts again).
const ABSENT_CAP: usize = 10_000;

impl WorkspaceState {
    fn new(ws: &Workspace, policies: PolicySet) -> WorkspaceState {
        WorkspaceState {
            workspace_id: ws.workspace_id.clone(),
            name: ws.name.clone(),
            settings: RwLock::new(ws.settings.clone()),
            policies: ArcSwap::from_pointee(policies),
            agents: RwLock::new(HashMap::new()),
            credentials: RwLock::new(HashMap::new()),
            live: Mutex::new(LiveState::default()),
            policy_writes: tokio::sync::Mutex::new(()),
            decision_order: Mutex::new(()),
            agent_writes: tokio::sync::Mutex::new(()),
            last_prune_ms: AtomicU64::new(0),
            agent_reloads: AtomicU64::new(0),
            session_reloads: AtomicU64::new(0),
            absent_agents: Mutex::new(HashMap::new()),
        }
    }

    /// Put `set` in force at `now_ms`. When it looks further back than the set it
    /// replaces (a velocity or sequence policy added or widened), the histories in
    /// memory hold too little: each is marked with where it starts
    /// ([`LiveState::widen_window`]). Done under the `live` lock, under which every
    /// evaluation loads the policies: it prunes, records and counts with the window the
    /// marks were made for.
    pub fn replace_policies(&self, set: PolicySet, now_ms: i64) {
        let mut live = self.live.lock();
        let old_window = self.policies.load().compiled.history_window_ms();
        let widened = set.compiled.history_window_ms() > old_window;
        self.policies.store(Arc::new(set));
        if widened {
            let agents: Vec<String> = self.agents.read().keys().cloned().collect();
            live.widen_window(agents.into_iter(), now_ms, old_window);
        }
    }

    /// Whether the store was asked for `agent_id` within `ABSENT_TTL_MS` and did not
    /// hold it.
    pub fn known_absent(&self, agent_id: &str, now_ms: i64) -> bool {
        self.absent_agents.lock().get(agent_id).is_some_and(|at| now_ms - at < ABSENT_TTL_MS)
    }

    /// Remember that the store does not hold `agent_id` (see `known_absent`).
    pub fn mark_absent(&self, agent_id: &str, now_ms: i64) {
        let mut absent = self.absent_agents.lock();
        if absent.len() >= ABSENT_CAP {
            absent.retain(|_, at| now_ms - *at < ABSENT_TTL_MS);
            if absent.len() >= ABSENT_CAP {
                absent.clear();
            }
        }
        absent.insert(agent_id.to_owned(), now_ms);
    }

    pub fn agent(&self, agent_id: &str) -> Option<Agent> {
        self.agents.read().get(agent_id).cloned()
    }

    /// Whether this node holds a copy of the agent (without copying it).
    pub fn holds_agent(&self, agent_id: &str) -> bool {
        self.agents.read().contains_key(agent_id)
    }

    /// The reload generation of the held copy of an agent (`Agent::copy_generation`).
    pub fn agent_generation(&self, agent_id: &str) -> Option<u64> {
        self.agents.read().get(agent_id).map(|a| a.copy_generation)
    }

    /// Replace this node's copy of an agent (its row, credentials and history) with
    /// what the store holds, or forget it when the store has none; unless the copy was
    /// reloaded since it was at generation `seen`
    /// (`None`: not held). After a refused commit every decision chained on the refused
    /// one is refused too, and each would reload the agent; but a reload after the first
    /// reads the store while decisions made from the first are still on their way to it,
    /// so it would set the copy back behind them and get them refused in turn. The first
    /// reload is enough: it already dropped what the refused decisions did to the copy.
    /// Returns whether the store's copy was taken.
    pub fn adopt_agent_unless_reloaded(&self, agent_id: &str, stored: Option<praetor_store::AgentState>, seen: Option<u64>) -> bool {
        self.adopt_agent_if(agent_id, stored, |held| held.map(|a| a.copy_generation) == seen)
    }

    fn adopt_agent_if(&self, agent_id: &str, stored: Option<praetor_store::AgentState>, still: impl FnOnce(Option<&Agent>) -> bool) -> bool {
        let mut live = self.live.lock();
        let mut agents = self.agents.write();
        if !still(agents.get(agent_id)) {
            return false;
        }
        let mut creds = self.credentials.write();
        creds.retain(|_, c| c.agent_id != agent_id);
        match stored {
            Some(st) => {
                for c in st.credentials {
                    creds.insert(c.credential_id.clone(), c);
                }
                live.agent_history.insert(agent_id.to_owned(), History::from_store(st.history, st.history_since));
                let mut agent = st.agent;
                agent.copy_generation = self.agent_reloads.fetch_add(1, Ordering::Relaxed) + 1;
                agents.insert(agent_id.to_owned(), agent);
            }
            None => {
                live.agent_history.remove(agent_id);
                agents.remove(agent_id);
            }
        }
        true
    }

    /// Like `adopt_session`, but a held copy at or past the stored one's `version` is
    /// kept: it is this node's own, with changes (charges, a close) possibly still on
    /// their way to the store, and setting it back would get their successors' commits
    /// refused as stale. A stored copy with a higher version (another node charged or
    /// closed the session) replaces it. Returns whether the stored copy was taken.
    pub fn adopt_session_if_newer(&self, session_id: &str, stored: Option<praetor_store::SessionState>, now_ms: i64) -> bool {
        // Compared and taken under one lock: a close of this node's landing in between
        // would otherwise be overwritten by the older copy read before it.
        let mut live = self.live.lock();
        // Kept only when it is this node's own newer copy: not when another node wrote
        // the same version (the etags differ, and this node's write will be refused) or
        // closed a session this node still holds as active.
        if let (Some(st), Some(held)) = (&stored, live.sessions.get(session_id))
            && (st.session.version < held.version || (st.session.version == held.version && st.session.etag == held.etag))
            && !(st.session.status != SessionStatus::Active && held.status == SessionStatus::Active)
        {
            if held.status != SessionStatus::Active {
                live.session_loaded_ms.insert(session_id.to_owned(), now_ms);
            }
            return false;
        }
        self.adopt_session_locked(&mut live, session_id, stored, now_ms);
        true
    }

    /// The reload generation of the held copy of a session (`Session::copy_generation`).
    pub fn session_generation(&self, session_id: &str) -> Option<u64> {
        self.live.lock().sessions.get(session_id).map(|s| s.copy_generation)
    }

    /// `adopt_session`, unless the copy was reloaded since it was at generation `seen`
    /// (`None`: not held): then what was read may be older than the copy, and is
    /// dropped (see `pipeline::resync`). Returns whether the store's copy was taken.
    pub fn adopt_session_unless_reloaded(&self, session_id: &str, stored: Option<praetor_store::SessionState>, seen: Option<u64>, now_ms: i64) -> bool {
        let mut live = self.live.lock();
        if live.sessions.get(session_id).map(|s| s.copy_generation) != seen {
            return false;
        }
        self.adopt_session_locked(&mut live, session_id, stored, now_ms);
        true
    }

    /// Replace this node's copy of a session (its row and history) with the store's.
    /// `now_ms`: when it was read, which keeps a closed session in memory for a while.
    pub fn adopt_session(&self, session_id: &str, stored: Option<praetor_store::SessionState>, now_ms: i64) {
        self.adopt_session_locked(&mut self.live.lock(), session_id, stored, now_ms);
    }

    fn adopt_session_locked(&self, live: &mut LiveState, session_id: &str, stored: Option<praetor_store::SessionState>, now_ms: i64) {
        match stored {
            Some(st) => {
                live.session_history.insert(session_id.to_owned(), History::from_store(st.history, st.history_since));
                let mut session = st.session;
                session.copy_generation = self.session_reloads.fetch_add(1, Ordering::Relaxed) + 1;
                live.sessions.insert(session_id.to_owned(), session);
                live.session_loaded_ms.insert(session_id.to_owned(), now_ms);
            }
            None => {
                live.session_history.remove(session_id);
                live.sessions.remove(session_id);
                live.session_loaded_ms.remove(session_id);
            }
        }
    }
}

/// Counters for `/metrics` and `/v1/status`.
#[derive(Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub decisions_allow: AtomicU64,
    pub decisions_block: AtomicU64,
    pub decisions_escalate: AtomicU64,
    pub decisions_terminate: AtomicU64,
    pub decision_latency_us_sum: AtomicU64,
    pub errors: AtomicU64,
    /// Escalations turned into blocks because the workspace held its limit.
    pub escalations_refused: AtomicU64,
    /// Requests evaluated again because the store refused their commit as decided from
    /// a stale copy (another node, or a reload, moved an agent or session on).
    pub stale_reevaluations: AtomicU64,
    /// Stored decisions and violations answered with a `read_error` (a damaged row or
    /// sealed entry), counted per read: a client that ignores the field would take the
    /// record as whole, so the damage must be alertable, not only in the log.
    pub records_unreadable: AtomicU64,
}

impl Metrics {
    /// Count the records among `shown` that carry a `read_error`.
    pub fn count_unreadable(&self, shown: &[serde_json::Value]) {
        let damaged = shown.iter().filter(|v| v.get("read_error").is_some()).count() as u64;
        if damaged > 0 {
            self.records_unreadable.fetch_add(damaged, Ordering::Relaxed);
        }
    }

    pub fn count_decision(&self, verdict: praetor_core::Verdict, latency_us: u64) {
        let c = match verdict {
            praetor_core::Verdict::Allow => &self.decisions_allow,
            praetor_core::Verdict::Block => &self.decisions_block,
            praetor_core::Verdict::Escalate => &self.decisions_escalate,
            praetor_core::Verdict::Terminate => &self.decisions_terminate,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.decision_latency_us_sum.fetch_add(latency_us, Ordering::Relaxed);
    }
    pub fn decisions(&self) -> u64 {
        [&self.decisions_allow, &self.decisions_block, &self.decisions_escalate, &self.decisions_terminate]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub started_at: Instant,
    pub metrics: Metrics,
    /// API keys by the hex SHA-256 of the key.
    keys: RwLock<HashMap<String, ApiKey>>,
    workspaces: RwLock<HashMap<String, Arc<WorkspaceState>>>,
    /// Request-signature nonces seen within the freshness window.
    pub nonces: Mutex<crate::signature::NonceCache>,
    pub vault: crate::vault::VaultKeys,
    /// How far this node has read each workspace's change feed (`follow`).
    feed_heads: Mutex<HashMap<String, u64>>,
}

impl AppState {
    /// Build the in-memory view from what the store holds.
    pub async fn load(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        vault: crate::vault::VaultKeys,
    ) -> Result<Arc<AppState>, ApiError> {
        let state = AppState {
            config,
            store,
            clock,
            started_at: Instant::now(),
            metrics: Metrics::default(),
            keys: RwLock::new(HashMap::new()),
            workspaces: RwLock::new(HashMap::new()),
            nonces: Mutex::new(crate::signature::NonceCache::default()),
            vault,
            feed_heads: Mutex::new(HashMap::new()),
        };
        state.take_in_store().await?;
        Ok(Arc::new(state))
    }

    /// Read what the store holds into this view, which holds nothing yet: at load, and
    /// again when another node created the first workspace (`bootstrap::first_start`).
    pub(crate) async fn take_in_store(&self) -> Result<(), ApiError> {
        // The feed heads before the snapshot: a change landing between the two is
        // applied again by the follower, which is harmless; none is missed.
        let feed_heads = self.store.change_heads().await?;
        let snap: Snapshot = self.store.snapshot().await?;
        *self.feed_heads.lock() = feed_heads;
        self.absorb(snap)?;
        let verifiers = self.vault.verifiers();
        for ws in self.workspace_ids() {
            crate::vault::check_log_continues(self.store.as_ref(), &ws, &verifiers).await?;
        }
        Ok(())
    }

    fn absorb(&self, snap: Snapshot) -> Result<(), ApiError> {
        // A log whose workspace row is gone: a first start would make a new workspace
        // beside it, and what was decided would drop out of every view and check.
        if let Some(ws) = snap.logged_workspaces.iter().find(|ws| !snap.workspaces.iter().any(|w| &w.workspace_id == *ws)) {
            return Err(ApiError::new(
                Code::Internal,
                format!(
                    "the store holds the vault log of workspace `{ws}` but not the workspace: its row was removed, and the log cannot be \
                     continued; run `praetor vault check`, and restore the database from a backup"
                ),
            ));
        }
        let mut policies_by_ws: HashMap<String, Vec<PolicyRecord>> = HashMap::new();
        for p in snap.policies {
            policies_by_ws.entry(p.workspace_id.clone()).or_default().push(p);
        }
        for ws in &snap.workspaces {
            let records = policies_by_ws.remove(&ws.workspace_id).unwrap_or_default();
            let set = PolicySet::build(records).map_err(|e| {
                ApiError::new(Code::Internal, format!("stored policies of `{}` do not compile: {e}", ws.workspace_id))
            })?;
            self.workspaces.write().insert(ws.workspace_id.clone(), Arc::new(WorkspaceState::new(ws, set)));
        }
        for mut a in snap.agents {
            a.etag = UNSYNCED.to_owned();
            if let Some(ws) = self.workspace(&a.workspace_id) {
                ws.agents.write().insert(a.agent_id.clone(), a);
            }
        }
        for o in &snap.objects {
            if let Some(ws) = self.workspace(&o.workspace_id) {
                ws.live.lock().authority.absorb(o);
            }
        }
        for mut x in snap.active_sessions {
            x.etag = UNSYNCED.to_owned();
            if let Some(ws) = self.workspace(&x.workspace_id) {
                ws.live.lock().sessions.insert(x.session_id.clone(), x);
            }
        }
        for c in snap.credentials {
            if let Some(ws) = self.workspace(&c.workspace_id) {
                ws.credentials.write().insert(c.credential_id.clone(), c);
            }
        }
        let mut keys = self.keys.write();
        for k in snap.api_keys {
            keys.insert(k.key_hash.clone(), k);
        }
        Ok(())
    }

    pub fn workspace(&self, id: &str) -> Option<Arc<WorkspaceState>> {
        self.workspaces.read().get(id).cloned()
    }

    pub fn workspace_ids(&self) -> Vec<String> {
        self.workspaces.read().keys().cloned().collect()
    }

    pub fn add_workspace(&self, ws: &Workspace) {
        let set = match PolicySet::build(Vec::new()) {
            Ok(set) => set,
            Err(e) => panic!("an empty policy list failed to compile: {e}"),
        };
        self.workspaces.write().insert(ws.workspace_id.clone(), Arc::new(WorkspaceState::new(ws, set)));
    }

    /// This node's copy of the key presented, revoked or not. The map is keyed by the
    /// key's SHA-256; the final comparison is constant-time.
    pub fn key_for(&self, presented: &str) -> Option<ApiKey> {
        let hash = secrets::key_hash(presented);
        let keys = self.keys.read();
        let key = keys.get(&hash)?;
        secrets::ct_eq(&key.key_hash, &hash).then(|| key.clone())
    }

    pub fn feed_head(&self, workspace_id: &str) -> u64 {
        self.feed_heads.lock().get(workspace_id).copied().unwrap_or(0)
    }

    pub fn set_feed_head(&self, workspace_id: &str, seq: u64) {
        // Two readers of the feed may finish out of order: never move back.
        let mut heads = self.feed_heads.lock();
        let head = heads.entry(workspace_id.to_owned()).or_insert(0);
        *head = (*head).max(seq);
    }

    /// Keep `key` as this node's copy. A copy revoked here stays revoked: a read of the
    /// store made before the revocation committed (a request's lookup, the change
    /// feed's reload) must not bring the key back. Only [`AppState::restore_key`] does.
    pub fn put_key(&self, key: ApiKey) {
        let mut keys = self.keys.write();
        if keys.get(&key.key_hash).is_some_and(|held| held.revoked_at.is_some() && key.revoked_at.is_none()) {
            return;
        }
        keys.insert(key.key_hash.clone(), key);
    }

    /// Put back the store's copy of a key whose revocation here did not commit.
    pub fn restore_key(&self, key: ApiKey) {
        self.keys.write().insert(key.key_hash.clone(), key);
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Commit a transaction, with the deliveries its events cause (webhooks, alerts)
    /// enqueued in the same transaction. Every write of the server goes through here.
    pub async fn commit(&self, txn: praetor_store::Txn) -> praetor_store::Result<Vec<praetor_store::Sealed>> {
        self.submit(txn).await
    }

    /// As `commit`, but queued before this returns (see `Store::submit`).
    pub fn submit(&self, mut txn: praetor_store::Txn) -> praetor_store::Pending {
        crate::delivery::enqueue(self, &mut txn);
        self.store.submit(txn)
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn content_policy(i: usize) -> PolicyRecord {
        let def = serde_json::json!({"policy_id": format!("pol_{i}"), "name": format!("p{i}"), "policy_type": "content_pattern",
                                     "decision": "block", "conditions": {"patterns": [format!("token{i}\\d+")]}});
        match serde_json::from_value(def) {
            Ok(def) => PolicyRecord { workspace_id: "ws".into(), def, created_at: 0, updated_at: 0 },
            Err(e) => panic!("{e}"),
        }
    }

    /// On a runtime of one worker, another task runs while a blocking job runs on the
    /// worker: the job waits for that task, which could never run if the job held the
    /// worker (it would give up after 20 s and fail).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn blocking_jobs_leave_the_runtime_worker_to_other_tasks() {
        let (tx, rx) = std::sync::mpsc::channel();
        let job = tokio::spawn(async move {
            // Spawned from the worker, so the other task is queued behind this one.
            tokio::spawn(async move { tx.send(()).ok() });
            off_the_workers(|| rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok())
        });
        assert!(job.await.unwrap_or(false), "the other task did not run while the job blocked");
    }

    /// What `build` gives is given back: the set, or the error naming the field. (The
    /// test body runs on the runtime's `block_on` thread, where `off_the_workers` runs
    /// inline; the test above covers the handoff.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_serving_build_compiles_the_set_and_names_what_does_not_compile() {
        let empty = PolicySet::build(Vec::new()).expect("an empty set");
        let set = PolicySet::build_serving((0..40).map(content_policy).collect(), &empty).expect("the set");
        assert_eq!((set.records.len(), set.compiled.patterns_compiled()), (40, 40));
        let again = PolicySet::build_serving((0..41).map(content_policy).collect(), &set).expect("the set and one more");
        assert_eq!((again.records.len(), again.compiled.patterns_compiled()), (41, 1), "only the new policy's pattern is compiled");
        let mut bad = content_policy(0);
        bad.def.conditions = serde_json::json!({"patterns": ["(unclosed"]});
        let e = PolicySet::build_serving(vec![bad], &set).err().map(|e| e.field);
        assert_eq!(e.as_deref(), Some("conditions.patterns[0]"));
    }

    fn act(t: &str, at_ms: i64) -> PastAction {
        PastAction { action_type: t.into(), at_ms }
    }

    #[test]
    fn a_history_at_its_cap_records_from_when_it_is_complete() {
        let mut h = History::default();
        LiveState::record(&mut h, act("pay", 1), 3_600_000);
        for i in 0..HISTORY_CAP as i64 {
            LiveState::record(&mut h, act("noop", 2 + i), 3_600_000);
        }
        assert_eq!(h.actions.len(), HISTORY_CAP);
        assert_eq!(h.complete_from_ms, 2, "the dropped `pay` at t=1 makes anything before t=2 unknown");
        assert!(h.actions.iter().all(|a| a.action_type == "noop"));
    }

    fn session(id: &str, status: SessionStatus, closed_at: Option<i64>) -> Session {
        Session {
            session_id: id.into(),
            workspace_id: "ws".into(),
            agent_id: "agt".into(),
            credential_id: None,
            label: None,
            budgets: Default::default(),
            consumed: Default::default(),
            status,
            kill_reason: None,
            attributes: Default::default(),
            created_at: 0,
            expires_at: None,
            closed_at,
            version: 1,
            etag: String::new(),
            copy_generation: 0,
        }
    }

    #[test]
    fn closed_sessions_are_forgotten_once_both_closed_and_read_long_enough_ago() {
        const G: i64 = CLOSED_SESSION_GRACE_MS;
        let now = 10 * G;
        let mut live = LiveState::default();
        // (id, status, closed at, last read from the store at)
        let cases = [
            ("active-old", SessionStatus::Active, None, Some(0)),
            ("closed-long-ago", SessionStatus::Ended, Some(now - G - 1), None),
            ("closed-long-ago-read-long-ago", SessionStatus::Killed, Some(0), Some(now - G - 1)),
            ("closed-recently", SessionStatus::Killed, Some(now - G + 1), None),
            ("closed-long-ago-read-recently", SessionStatus::Expired, Some(0), Some(now - 1)),
            ("closed-with-no-time", SessionStatus::Terminated, None, None),
        ];
        for (id, status, closed_at, loaded) in cases {
            live.sessions.insert(id.into(), session(id, status, closed_at));
            live.session_history.insert(id.into(), History::default());
            if let Some(at) = loaded {
                live.session_loaded_ms.insert(id.into(), at);
            }
        }
        assert_eq!(live.prune_closed_sessions(now), 3);
        let mut kept: Vec<&str> = live.sessions.keys().map(String::as_str).collect();
        kept.sort();
        assert_eq!(kept, ["active-old", "closed-long-ago-read-recently", "closed-recently"]);
        let mut histories: Vec<&str> = live.session_history.keys().map(String::as_str).collect();
        histories.sort();
        assert_eq!(histories, kept, "a forgotten session's history goes with it");
        assert!(live.session_loaded_ms.keys().all(|id| live.sessions.contains_key(id)), "no read time outlives its session");
        assert_eq!(live.session_loaded_ms.len(), 2);
    }

    #[test]
    fn pruning_keeps_memory_bounded_by_the_window() {
        let mut live = LiveState::default();
        for i in 0..100 {
            LiveState::record(live.agent_history.entry(format!("a{i}")).or_default(), act("x", i), 1_000);
        }
        live.prune(5_000, 1_000);
        assert!(live.agent_history.is_empty(), "histories wholly outside the window are dropped");
    }
}
