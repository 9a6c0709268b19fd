//! Persistence for Praetor. The only crate that knows SQL: one set of queries (`rows`,
//! `vault_rows`) and one group-commit writer, on SQLite or on PostgreSQL.
//!
//! Every write is a [`Txn`]: a list of mutations plus the vault entries that seal them,
//! applied atomically. Backends group many transactions into one commit (one fsync for
//! many decisions), and only then report success, so an answered decision is on disk.

/// Migration text both backends run alike, as a literal for their `concat!`: index the
/// credentials by agent, and mark those rotated before `rotated` existed (SQLite's
/// migration 11, PostgreSQL's 5).
/// A rotation makes the successor in the same millisecond as it revokes the old
/// credential, for the same agent; a revocation makes none.
macro_rules! backfill_rotated_credentials {
    () => {
        r#"
-- Without it the backfill below, and every read of an agent's credentials, scans the
-- whole table for each row.
CREATE INDEX credentials_by_agent ON credentials (workspace_id, agent_id, created_at);
UPDATE credentials SET rotated = 1
WHERE revoked_at IS NOT NULL AND EXISTS (
    SELECT 1 FROM credentials AS successor
    WHERE successor.workspace_id = credentials.workspace_id AND successor.agent_id = credentials.agent_id
      AND successor.credential_id <> credentials.credential_id AND successor.created_at = credentials.revoked_at
);
"#
    };
}
pub(crate) use backfill_rotated_credentials;

/// The table of approved actions, the same on both backends but for the integer type
/// (SQLite's migration 12, PostgreSQL's 6). The xybern SDK runs an approved action
/// without asking again, so its approval is the one record that it ran: an agent's and
/// a session's histories (velocity, sequences) read these rows besides their allowed
/// decisions. `retried` is set when an intercept of the approved action used the
/// approval: that decision is in the history already.
macro_rules! approved_actions_table {
    ($int:literal) => {
        concat!(
            r#"
CREATE TABLE approved_actions (
    workspace_id  TEXT NOT NULL,
    escalation_id TEXT NOT NULL,
    agent_id      TEXT,
    session_id    TEXT,
    action_type   TEXT NOT NULL,
    approved_at   "#,
            $int,
            r#" NOT NULL,
    retried       "#,
            $int,
            r#" NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, escalation_id)
);
CREATE INDEX approved_actions_by_agent ON approved_actions (workspace_id, agent_id, approved_at);
CREATE INDEX approved_actions_by_session ON approved_actions (workspace_id, session_id, approved_at) WHERE session_id IS NOT NULL;
"#
        )
    };
}
pub(crate) use approved_actions_table;

pub mod model;
pub mod postgres;
mod rows;
pub mod sql;
pub mod sql_store;
pub mod sqlite;
mod vault_rows;
mod writer;

pub use sql_store::SqlStore;
pub use rows::{add_read_error, unreadable_json};
pub use vault_rows::VaultCheck;

pub use model::*;

use async_trait::async_trait;
use serde_json::{Map, Value};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store is shut down")]
    Closed,
    #[error("vault error: {0}")]
    Vault(#[from] praetor_vault::VaultError),
    #[error("`{0}` already exists")]
    Conflict(String),
    /// A guarded row changed since the caller read it (another node wrote it): reload
    /// and try again.
    #[error("{0} changed since it was read")]
    Stale(String),
    /// A request-signature nonce was already consumed (on this node or another).
    #[error("{0} was already used")]
    Replayed(String),
    /// The database was migrated by a newer version of Praetor: this store refuses
    /// every read and write (see `sql_store::SchemaGuard`).
    #[error("{0}")]
    Superseded(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One change to the store's state. There is deliberately no way to delete or rewrite
/// a vault entry or a decision.
#[derive(Debug, Clone)]
pub enum Mutation {
    InsertWorkspace(Workspace),
    PutWorkspaceSettings { workspace_id: String, settings: praetor_core::WorkspaceSettings },
    /// Set the named settings on the stored ones, merged in the transaction: another
    /// node's change to other settings meanwhile stays (a whole copy would undo it).
    PatchWorkspaceSettings { workspace_id: String, patch: Map<String, Value> },
    InsertApiKey(ApiKey),
    RevokeApiKey { workspace_id: String, key_id: String, at: Millis },
    /// Insert an agent, or replace its descriptive fields. Trust, the clean streak and
    /// the action counts of an existing agent are left alone: decisions own them.
    PutAgent(Agent),
    /// An administrator sets an agent's trust score (the clean streak restarts).
    SetTrust { workspace_id: String, agent_id: String, trust_score: u8 },
    InsertCredential(Credential),
    PutPolicy(PolicyRecord),
    DeletePolicy { workspace_id: String, policy_id: String },
    /// Insert a decision. `seal` names the index in `Txn::seal` of the entry that seals
    /// it; its sequence number is written into `vault_seq`.
    InsertDecision { row: DecisionRow, seal: Option<usize> },
    AgentActivity(AgentActivity),
    /// Insert or update a session, unless the stored version is newer.
    PutSession(Session),
    /// `rotated`: revoked by a rotation (see `Credential::rotated`). A revocation that
    /// is not a rotation also takes a rotated credential's sessions from it.
    RevokeCredential { workspace_id: String, credential_id: String, at: Millis, rotated: bool },
    /// Insert an authority object, or update it to the version right after the stored
    /// one: any other version is refused (`Stale`), as made from a copy that is behind
    /// the store or ahead of it.
    PutObject(ObjectRecord),
    InsertShadowHit(ShadowHit),
    InsertViolation(Violation),
    /// Enqueue, or record an attempt of, an outbound delivery.
    PutDelivery(Delivery),
    /// Refuse the transaction (`StoreError::Stale`) unless the row still has `etag`:
    /// what the caller decided from is still what the store holds.
    Expect { workspace_id: String, of: Guarded, id: String, etag: String },
    /// Refuse the transaction (`Stale`) unless the agent is active and, when named, the
    /// credential is not revoked (a revocation on another node lands first).
    ExpectActive { workspace_id: String, agent_id: String, credential_id: Option<String> },
    /// Refuse the transaction (`Stale`) unless an admin key other than `key_id` is
    /// unrevoked when it commits: two nodes revoking the last two admin keys at once
    /// would each have read the other key as left.
    ExpectAnotherAdmin { workspace_id: String, key_id: String },
    /// Refuse the transaction (`Stale`) unless key `key_id` is unrevoked when it
    /// commits: a revocation answers with its own time only if it revoked the key.
    ExpectKeyLive { workspace_id: String, key_id: String },
    /// Refuse the transaction (`Stale`) unless the policy is stored as last changed at
    /// `updated_at`, or, with `None`, is not stored: a policy change made from a copy
    /// another node has changed since (edited, deleted, replaced by a pack) would undo
    /// that change.
    ExpectPolicy { workspace_id: String, policy_id: String, updated_at: Option<Millis> },
    /// Refuse the transaction (`Stale`) unless exactly `count` stored policies belong to
    /// pack `pack` (any version): a deploy must replace what is live, and two deploys on
    /// two nodes at once (the first ones of a pack included) would otherwise both stand.
    ExpectPackPolicies { workspace_id: String, pack: String, count: u64 },
    /// Refuse the transaction (`Stale`) if any workspace is stored: the first start's
    /// default workspace. Nodes starting together on an empty database would each
    /// create one. Its transactions hold one lock, [`FIRST_WORKSPACE_LOCK`], in place
    /// of a workspace's.
    ExpectFirstWorkspace,
    /// Give the row a new etag (a write elsewhere changed what it stands for, such as
    /// an agent's credentials).
    Touch { workspace_id: String, of: Guarded, id: String, etag: String },
    /// Claim a due delivery for one attempt, so that only one node sends it: moves its
    /// next attempt to `until`, refused (`Stale`) unless it is still pending with
    /// `attempts` attempts and due at `now`.
    ClaimDelivery { workspace_id: String, delivery_id: String, attempts: u32, now: Millis, until: Millis },
    /// Record how the attempt a claim started ended (`delivery`, with its new status,
    /// attempts and next attempt): refused (`Stale`) unless the delivery is still pending
    /// under that claim, with `claimed_attempts` attempts and due at `claimed_until`. An
    /// attempt that outlived its claim must not overwrite what the node that took the
    /// delivery over since recorded.
    RecordDeliveryAttempt { delivery: Delivery, claimed_attempts: u32, claimed_until: Millis },
    /// Forget change-feed entries older than `before` (every node has long read them).
    PruneChanges { workspace_id: String, before: Millis },
    /// Take or renew the lease `name` until `until`: refused (`Stale`) while another
    /// holder's lease runs at `now`.
    TakeLease { workspace_id: String, name: String, holder: String, now: Millis, until: Millis },
    /// Consume an agent's request-signature nonce until `until`: refused (`Replayed`)
    /// while an earlier use of it is unexpired at `now`.
    ClaimNonce { workspace_id: String, agent_id: String, nonce: String, now: Millis, until: Millis },
    /// Forget nonces expired at `now` (their timestamps are outside the signature window).
    PruneNonces { workspace_id: String, now: Millis },
    /// Deactivate an agent (only that column: a concurrent change to its other fields
    /// on another node stays), giving it a new etag.
    DeactivateAgent { workspace_id: String, agent_id: String, at: Millis, etag: String },
    /// Change the descriptive fields that are `Some`, and only those (a concurrent edit
    /// of other fields, or a deactivation, stays), giving the agent a new etag.
    UpdateAgentFields(AgentFields),
    /// An approval of an escalated action: the action joins its agent's and session's
    /// histories, as an allowed decision does (see `approved_actions_table`).
    InsertApprovedAction(ApprovedAction),
    /// A decision used the approval of escalation `escalation_id` (a retry of the
    /// approved action): the history holds that decision, so the approval's row no
    /// longer counts.
    ApprovedActionRetried { workspace_id: String, escalation_id: String },
}

/// The lock an [`Mutation::ExpectFirstWorkspace`] holds for its transaction, taken
/// where a workspace's lock would be (no workspace id has this form).
pub const FIRST_WORKSPACE_LOCK: &str = "praetor:first-workspace";

impl Mutation {
    /// The workspace whose rows this mutation writes: the lock its transaction holds.
    pub fn workspace_id(&self) -> &str {
        match self {
            Mutation::ExpectFirstWorkspace => FIRST_WORKSPACE_LOCK,
            Mutation::InsertWorkspace(w) => &w.workspace_id,
            Mutation::InsertApiKey(k) => &k.workspace_id,
            Mutation::PutAgent(a) => &a.workspace_id,
            Mutation::UpdateAgentFields(f) => &f.workspace_id,
            Mutation::InsertCredential(c) => &c.workspace_id,
            Mutation::PutPolicy(p) => &p.workspace_id,
            Mutation::InsertDecision { row, .. } => &row.workspace_id,
            Mutation::AgentActivity(a) => &a.workspace_id,
            Mutation::PutSession(s) => &s.workspace_id,
            Mutation::PutObject(o) => &o.workspace_id,
            Mutation::InsertShadowHit(h) => &h.workspace_id,
            Mutation::InsertViolation(v) => &v.workspace_id,
            Mutation::InsertApprovedAction(a) => &a.workspace_id,
            Mutation::PutDelivery(d) | Mutation::RecordDeliveryAttempt { delivery: d, .. } => &d.workspace_id,
            Mutation::PutWorkspaceSettings { workspace_id, .. }
            | Mutation::PatchWorkspaceSettings { workspace_id, .. }
            | Mutation::RevokeApiKey { workspace_id, .. }
            | Mutation::SetTrust { workspace_id, .. }
            | Mutation::DeletePolicy { workspace_id, .. }
            | Mutation::RevokeCredential { workspace_id, .. }
            | Mutation::Expect { workspace_id, .. }
            | Mutation::Touch { workspace_id, .. }
            | Mutation::ClaimDelivery { workspace_id, .. }
            | Mutation::PruneChanges { workspace_id, .. }
            | Mutation::TakeLease { workspace_id, .. }
            | Mutation::ClaimNonce { workspace_id, .. }
            | Mutation::PruneNonces { workspace_id, .. }
            | Mutation::DeactivateAgent { workspace_id, .. }
            | Mutation::ApprovedActionRetried { workspace_id, .. }
            | Mutation::ExpectActive { workspace_id, .. }
            | Mutation::ExpectAnotherAdmin { workspace_id, .. }
            | Mutation::ExpectKeyLive { workspace_id, .. }
            | Mutation::ExpectPolicy { workspace_id, .. }
            | Mutation::ExpectPackPolicies { workspace_id, .. } => workspace_id,
        }
    }

    /// What other nodes must reload once this mutation commits (the change feed's
    /// key), if anything. Decisions' own writes (agent activity, session charges) are
    /// guarded by etags instead, except sessions, whose figures every node shows.
    pub fn feed_key(&self) -> Option<String> {
        Some(match self {
            Mutation::PutWorkspaceSettings { .. } | Mutation::PatchWorkspaceSettings { .. } => "settings".to_owned(),
            Mutation::InsertApiKey(k) => format!("key:{}", k.key_id),
            Mutation::RevokeApiKey { key_id, .. } => format!("key:{key_id}"),
            Mutation::PutAgent(a) => format!("agent:{}", a.agent_id),
            Mutation::UpdateAgentFields(f) => format!("agent:{}", f.agent_id),
            Mutation::SetTrust { agent_id, .. } | Mutation::DeactivateAgent { agent_id, .. } => format!("agent:{agent_id}"),
            Mutation::InsertCredential(c) => format!("agent:{}", c.agent_id),
            Mutation::Touch { of: Guarded::Agent, id, .. } => format!("agent:{id}"),
            Mutation::Touch { of: Guarded::Session, id, .. } => format!("session:{id}"),
            Mutation::PutPolicy(_) | Mutation::DeletePolicy { .. } => "policies".to_owned(),
            Mutation::PutSession(x) => format!("session:{}", x.session_id),
            Mutation::PutObject(o) => format!("object:{}:{}", o.kind, o.object_id),
            _ => return None,
        })
    }
}

/// A vault entry to append: the entry's fields without `seq`, which the sequencer adds.
#[derive(Debug, Clone)]
pub struct SealRequest {
    pub workspace_id: String,
    pub body: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct Txn {
    pub mutations: Vec<Mutation>,
    pub seal: Vec<SealRequest>,
}

/// The vault entries a transaction seals for its decisions, by workspace and decision id.
pub type DecisionEntries<'t> = std::collections::HashMap<(&'t str, &'t str), &'t serde_json::Map<String, serde_json::Value>>;

impl Txn {
    /// Give each decision's vault entry `answer_sha256`, the SHA-256 of the answer text
    /// its row stores (`bodies`: `rows::encode_body` of each mutation), so that the row
    /// can be checked against its entry later (`DecisionRow::departs_from`). Made here,
    /// from the very text written, and not by the caller, which would encode it twice.
    pub(crate) fn seal_answer_digests(&mut self, bodies: &[Option<String>]) {
        let Txn { mutations, seal } = self;
        for (m, body) in mutations.iter().zip(bodies) {
            if let (Mutation::InsertDecision { row, seal: Some(i) }, Some(text)) = (m, body)
                && let Some(s) = seal.get_mut(*i).filter(|s| s.workspace_id == row.workspace_id)
            {
                s.body.insert("answer_sha256".into(), serde_json::Value::String(praetor_core::sha256_hex(text.as_bytes())));
            }
        }
    }

    /// The vault entry this transaction seals for each of its decisions (once per
    /// transaction: a batch of actions holds many decisions and their violations).
    pub fn decision_entries(&self) -> DecisionEntries<'_> {
        self.mutations
            .iter()
            .filter_map(|m| match m {
                Mutation::InsertDecision { row, seal: Some(i) } => {
                    let seal = self.seal.get(*i).filter(|s| s.workspace_id == row.workspace_id)?;
                    Some(((row.workspace_id.as_str(), row.decision_id.as_str()), &seal.body))
                }
                _ => None,
            })
            .collect()
    }
}

/// Where an entry landed in its workspace's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    pub leaf_hash: [u8; 32],
}

/// The current head of one workspace's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    pub size: u64,
    pub root: [u8; 32],
}

/// How the store's group commits are going: the number of commits and of
/// transactions they carried, and percentiles of the commit time (the durable append:
/// one fsync per batch) and of the batch size since start.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CommitStats {
    pub commits: u64,
    pub transactions: u64,
    pub commit_us_p50: u64,
    pub commit_us_p99: u64,
    pub commit_us_max: u64,
    pub commit_us_sum: u64,
    pub batch_p50: u64,
    pub batch_p99: u64,
    pub batch_max: u64,
    /// Batches run again with a savepoint per transaction because one failed.
    pub batches_rerun: u64,
    /// Why the store's batches commit nothing, when several in a row failed on the
    /// database itself (a full disk, an I/O error) and none has committed since.
    pub failing: Option<String>,
}

/// Everything the server loads into memory at start.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub workspaces: Vec<Workspace>,
    pub api_keys: Vec<ApiKey>,
    pub agents: Vec<Agent>,
    pub credentials: Vec<Credential>,
    pub policies: Vec<PolicyRecord>,
    /// Sessions that are still active (closed ones are read from the store on demand).
    pub active_sessions: Vec<Session>,
    /// Authority objects still in force or awaiting action (every role, window and
    /// breakglass; grants not revoked or expired; escalations that are pending or
    /// approved). Ended windows are loaded too: a node reloading a workspace after a gap
    /// in the change feed must see a window revoked elsewhere (the sweep then drops it).
    pub objects: Vec<ObjectRecord>,
    /// Every workspace with entries in the vault. One missing from `workspaces` is a log
    /// whose workspace row was removed: it cannot be continued (its HMAC secret is gone).
    pub logged_workspaces: Vec<String>,
}

/// A queued transaction's outcome (see `Store::submit`).
pub type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Sealed>>> + Send>>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Queue the transaction at once, behind every one queued before it, and return a
    /// future for its outcome. Two transactions submitted in order are applied in that
    /// order (a decision guarded by the etag its predecessor wrote must follow it).
    fn submit(&self, txn: Txn) -> Pending;

    /// Apply the transaction atomically and durably; return where each seal landed,
    /// in the order of `txn.seal`.
    async fn commit(&self, txn: Txn) -> Result<Vec<Sealed>>;

    async fn snapshot(&self) -> Result<Snapshot>;

    /// A key by the hex SHA-256 of its secret (keys made by another process).
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>>;
    /// Every key of a workspace, including ones made by another process.
    async fn list_api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKey>>;

    async fn list_sessions(&self, workspace_id: &str, filter: &SessionFilter) -> Result<Vec<Session>>;
    async fn list_objects(&self, workspace_id: &str, filter: &ObjectFilter) -> Result<Vec<ObjectRecord>>;
    async fn get_object(&self, workspace_id: &str, kind: &str, object_id: &str) -> Result<Option<ObjectRecord>>;
    async fn get_session(&self, workspace_id: &str, session_id: &str) -> Result<Option<Session>>;

    /// Shadow policies' would-be effects since `since` (all shadow policies, or one).
    async fn shadow_report(&self, workspace_id: &str, policy_id: Option<&str>, since: Millis) -> Result<Vec<ShadowSummary>>;

    async fn list_violations(&self, workspace_id: &str, filter: &ViolationFilter) -> Result<Vec<Violation>>;
    async fn get_violation(&self, workspace_id: &str, violation_id: &str) -> Result<Option<Violation>>;

    /// Pending deliveries whose next attempt is due, across workspaces, oldest first.
    /// Pending deliveries due at `now`, the longest due first, without those to the
    /// targets or of the workspaces named (at their bound of attempts at once).
    async fn due_deliveries(&self, now: Millis, limit: u32, skip_targets: &[String], skip_workspaces: &[String]) -> Result<Vec<Delivery>>;
    async fn list_deliveries(&self, workspace_id: &str, webhook_id: Option<&str>, limit: u32) -> Result<Vec<Delivery>>;

    async fn list_decisions(&self, workspace_id: &str, filter: &DecisionFilter) -> Result<(Vec<DecisionRow>, u64)>;
    async fn get_decision(&self, workspace_id: &str, decision_id: &str) -> Result<Option<DecisionRow>>;

    async fn log_head(&self, workspace_id: &str) -> Result<LogHead>;
    /// Entries with `start <= seq < end`.
    async fn vault_entries(&self, workspace_id: &str, start: u64, end: u64) -> Result<Vec<VaultEntryRow>>;
    async fn inclusion_proof(&self, workspace_id: &str, index: u64, size: u64) -> Result<Vec<[u8; 32]>>;
    async fn consistency_proof(&self, workspace_id: &str, first: u64, second: u64) -> Result<Vec<[u8; 32]>>;
    /// The roots of the complete subtrees covering leaves `[0, size)` (for exports that
    /// do not start at 0).
    async fn prefix_hashes(&self, workspace_id: &str, size: u64) -> Result<Vec<[u8; 32]>>;
    async fn tree_root(&self, workspace_id: &str, size: u64) -> Result<[u8; 32]>;
    async fn put_checkpoint(&self, workspace_id: &str, checkpoint: CheckpointRow) -> Result<()>;
    async fn latest_checkpoint(&self, workspace_id: &str) -> Result<Option<CheckpointRow>>;
    /// The smallest stored checkpoint with `size >= at_least`.
    async fn checkpoint_covering(&self, workspace_id: &str, at_least: u64) -> Result<Option<CheckpointRow>>;
    async fn checkpoints_between(&self, workspace_id: &str, from_size: u64, to_size: u64) -> Result<Vec<CheckpointRow>>;

    /// An agent with its credentials and its allowed actions since `since` (at most
    /// `cap`, the newest).
    async fn agent_state(&self, workspace_id: &str, agent_id: &str, since: Millis, cap: u32) -> Result<Option<AgentState>>;
    /// A session with its allowed actions since `since` (at most `cap`, the newest).
    async fn session_state(&self, workspace_id: &str, session_id: &str, since: Millis, cap: u32) -> Result<Option<SessionState>>;
    async fn list_policies(&self, workspace_id: &str) -> Result<Vec<PolicyRecord>>;
    async fn get_workspace(&self, workspace_id: &str) -> Result<Option<Workspace>>;
    async fn get_api_key(&self, workspace_id: &str, key_id: &str) -> Result<Option<ApiKey>>;
    /// The change feed of a workspace after `after` (oldest first, at most `limit`).
    async fn changes_since(&self, workspace_id: &str, after: u64, limit: u32) -> Result<Vec<Change>>;
    /// The last sequence number of every workspace's change feed (absent when empty).
    async fn change_heads(&self) -> Result<std::collections::HashMap<String, u64>>;

    /// An error if the database has been migrated by a newer version of Praetor, in
    /// which case the store refuses every read and write from now on.
    async fn check_schema(&self) -> Result<()>;
    /// Why the store refuses every read and write, once it has found the database
    /// migrated by a newer version.
    fn superseded(&self) -> Option<String>;

    /// This process's name in the change feed (random per start).
    fn node_id(&self) -> &str;

    fn commit_stats(&self) -> CommitStats;

    /// Short human label, e.g. `sqlite` (for `/v1/status`).
    fn kind(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn decision(ws: &str, id: &str, seal: usize) -> Mutation {
        let row = DecisionRow {
            decision_id: id.into(), workspace_id: ws.into(), agent_id: None, session_id: None, action_type: "a".into(),
            decision: "allow".into(), created_at: 0, vault_seq: None, content: None, body: json!({}), sealed_leaf: None, digests: None,
        };
        Mutation::InsertDecision { row, seal: Some(seal) }
    }

    fn seal(ws: &str, n: u64) -> SealRequest {
        SealRequest { workspace_id: ws.into(), body: json!({ "n": n }).as_object().unwrap().clone() }
    }

    /// Two workspaces' decisions with one id never take each other's entry, and a seal
    /// of another workspace than its decision's is nobody's.
    #[test]
    fn decision_entries_are_keyed_by_workspace_and_decision() {
        let txn = Txn {
            mutations: vec![decision("ws_a", "dec_1", 0), decision("ws_b", "dec_1", 1), decision("ws_a", "dec_2", 2)],
            seal: vec![seal("ws_a", 0), seal("ws_b", 1), seal("ws_b", 2)],
        };
        let entries = txn.decision_entries();
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[&("ws_a", "dec_1")]["n"], 0);
        assert_eq!(entries[&("ws_b", "dec_1")]["n"], 1);
        assert!(!entries.contains_key(&("ws_a", "dec_2")));
    }
}
