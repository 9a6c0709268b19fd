//! The records Praetor keeps. Plain data: no SQL here, so every backend shares them.

use praetor_core::policy::PolicyDef;
use praetor_core::session::{Budgets, Consumed, SessionStatus};
use praetor_core::{WorkspaceSettings, action::PermissionBoundary};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Milliseconds since the Unix epoch. Every stored time uses it.
pub type Millis = i64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub workspace_id: String,
    pub name: String,
    pub settings: WorkspaceSettings,
    /// Secret for the vault's per-entry HMAC. Never leaves the server.
    #[serde(skip_serializing)]
    pub hmac_secret: Vec<u8>,
    pub created_at: Millis,
}

/// What a key may do. `Agent` keys may be bound to one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Admin,
    Approvals,
    Agent,
    Read,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "admin" => Some(Scope::Admin),
            "approvals" => Some(Scope::Approvals),
            "agent" => Some(Scope::Agent),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Approvals => "approvals",
            Scope::Agent => "agent",
            Scope::Read => "read",
        }
    }
}

/// An API key as stored: only the SHA-256 of the secret, never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: String,
    pub workspace_id: String,
    /// Hex SHA-256 of the full key string.
    #[serde(skip_serializing)]
    pub key_hash: String,
    /// The first characters of the key, to recognise it in listings (`xb_live_ab12…`).
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub agent_id: Option<String>,
    pub label: Option<String>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub agent_id: String,
    pub workspace_id: String,
    pub name: String,
    pub framework: String,
    pub description: Option<String>,
    pub capabilities: Vec<String>,
    pub scopes: Vec<String>,
    pub permission_boundary: Option<PermissionBoundary>,
    pub require_signature: bool,
    pub trust_score: u8,
    pub clean_streak: u32,
    pub is_active: bool,
    /// Passport and other descriptive fields the wire contract allows (model, owner, …).
    pub attributes: Map<String, Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub last_seen_at: Option<Millis>,
    pub total_actions: u64,
    pub allowed_actions: u64,
    pub blocked_actions: u64,
    pub escalated_actions: u64,
    /// Changes with every write to the agent, its credentials or its action history.
    /// A decision made against a copy whose etag the store no longer holds is refused
    /// (`StoreError::Stale`), so several nodes never count from a stale copy.
    #[serde(default, skip_serializing)]
    pub etag: String,
    /// Which reload of this node's copy this is (not stored): a decision identified
    /// with an earlier copy must not be guarded with a later copy's etag.
    #[serde(skip)]
    pub copy_generation: u64,
}

/// An agent's public key. The private key is shown once at creation and never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    pub credential_id: String,
    pub workspace_id: String,
    pub agent_id: String,
    pub algorithm: String,
    /// Base64 of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    pub did: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    /// Revoked by a rotation, which is hygiene, not a compromise: the sessions started
    /// with it go on. A revocation afterwards (a leak) sets it back to false.
    #[serde(default)]
    pub rotated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub workspace_id: String,
    pub def: PolicyDef,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A stored decision: the indexed columns plus its answer, as the server chose to keep
/// it (the server keeps only what the decision's sealed entry cannot give back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    pub decision_id: String,
    pub workspace_id: String,
    pub agent_id: Option<String>,
    /// The runtime session the action ran in, if any.
    #[serde(default)]
    pub session_id: Option<String>,
    pub action_type: String,
    pub decision: String,
    pub created_at: Millis,
    pub vault_seq: Option<u64>,
    /// The action content as received (kept beside the log; the vault seals its hash).
    pub content: Option<String>,
    /// The decision's answer as the server stored it.
    pub body: Value,
    /// The decision's sealed vault entry (its leaf's bytes), when read back; not
    /// written (the entry is the log's).
    #[serde(skip)]
    pub sealed_leaf: Option<Vec<u8>>,
    /// The digests of what the row stores, made when it is read back (on the store's
    /// reader thread rather than the API's: content runs to 512 KiB).
    #[serde(skip)]
    pub digests: Option<RowDigests>,
}

/// SHA-256 (hex) of a decision row's stored answer text and content, as its sealed
/// entry names them (`answer_sha256`, `content_sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDigests {
    pub body_sha256: String,
    pub content_sha256: Option<String>,
}

impl RowDigests {
    /// The digests of `body_text` (the answer's stored text) and `content`.
    pub fn of(body_text: &str, content: Option<&str>) -> RowDigests {
        RowDigests { body_sha256: praetor_core::sha256_hex(body_text.as_bytes()), content_sha256: content.map(|c| praetor_core::sha256_hex(c.as_bytes())) }
    }
}

impl DecisionRow {
    /// Where this row departs from `entry`, the vault entry sealed for it: the columns
    /// the entry repeats, the content (by `content_sha256`) and the stored answer (by
    /// `answer_sha256`); `None` when they all match. Nothing else shows that a row was
    /// changed after it was sealed: reading it back shows the entry's own fields, but
    /// the content and the rest of the answer are the row's, and lists filter by its
    /// columns. A field the entry lacks (entries sealed by older versions have no
    /// `answer_sha256`) is not compared; nobody can remove one from a sealed entry
    /// without breaking its hashes. Nor is an empty `session_id` of a row sealed before
    /// `answer_sha256` existed: the column came after the entries' field, and rows of
    /// that time were not filled in.
    pub fn departs_from(&self, entry: &Map<String, Value>) -> Option<String> {
        if entry.get("kind").and_then(Value::as_str) != Some("decision") {
            return Some("its vault entry is not a decision's".into());
        }
        let older = !entry.contains_key("answer_sha256");
        let columns = [
            ("decision_id", Some(self.decision_id.as_str())),
            ("agent_id", self.agent_id.as_deref()),
            ("session_id", self.session_id.as_deref()),
            ("action_type", Some(self.action_type.as_str())),
            ("decision", Some(self.decision.as_str())),
        ];
        for (field, column) in columns {
            if field == "session_id" && older && column.is_none() {
                continue;
            }
            if entry.get(field).is_some_and(|sealed| sealed.as_str() != column) {
                return Some(format!("its `{field}` is not the one sealed in its entry"));
            }
        }
        if entry.get("time").is_some_and(|t| t.as_str() != Some(praetor_core::iso_millis(self.created_at).as_str())) {
            return Some("its time is not the one sealed in its entry".into());
        }
        // A row not read from the store has its digests made here.
        let made;
        let digests = match &self.digests {
            Some(d) => d,
            None => {
                made = RowDigests::of(&serde_json::to_string(&self.body).unwrap_or_default(), self.content.as_deref());
                &made
            }
        };
        if let Some(sealed) = entry.get("content_sha256") {
            let redacted = entry.get("content_redacted") == Some(&Value::Bool(true));
            let matches = match (digests.content_sha256.as_deref(), sealed.as_str()) {
                (Some(content), Some(hash)) => content == hash,
                (None, None) => true,
                // Content the client only gave the hash of was never stored.
                (None, Some(_)) => redacted,
                (Some(_), None) => false,
            };
            if !matches {
                return Some("its content is not the content sealed in its entry (`content_sha256`)".into());
            }
        }
        if entry.get("answer_sha256").is_some_and(|sealed| sealed.as_str() != Some(digests.body_sha256.as_str())) {
            return Some("its stored answer is not the one sealed in its entry (`answer_sha256`)".into());
        }
        None
    }
}

/// The per-decision change to an agent's live figures, applied in the decision's batch.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentActivity {
    pub workspace_id: String,
    pub agent_id: String,
    pub trust_score: u8,
    pub clean_streak: u32,
    pub decision: String,
    pub at: Millis,
    /// The agent's etag after this decision.
    pub etag: String,
}

/// An approved escalated action, which joins its agent's and session's histories (see
/// `Mutation::InsertApprovedAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedAction {
    pub workspace_id: String,
    pub escalation_id: String,
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub action_type: String,
    /// When it was approved: when it counts in the histories.
    pub at: Millis,
}

/// The rows that carry an etag (see `Agent::etag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    Agent,
    Session,
}

/// An agent as stored, with what a decision about it reads: its credentials and its
/// recent allowed actions (newest last), read after the row so that they are never
/// older than its etag.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentState {
    pub agent: Agent,
    pub credentials: Vec<Credential>,
    pub history: Vec<praetor_core::PastAction>,
    /// The time from which `history` holds every allowed action (the `since` it was
    /// read with), up to its cap.
    pub history_since: Millis,
}

/// A session as stored, with its recent allowed actions (newest last).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    pub session: Session,
    pub history: Vec<praetor_core::PastAction>,
    /// As [`AgentState::history_since`].
    pub history_since: Millis,
}

/// One entry of a workspace's change feed: something other nodes must reload (`key` is
/// `policies`, `settings`, `agent:<id>`, `session:<id>`, `key:<id>` or
/// `object:<kind>:<id>`), written in the transaction that changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub node_id: String,
    pub key: String,
    pub at: Millis,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionFilter {
    pub agent_id: Option<String>,
    pub decision: Option<String>,
    pub action_type: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub page: u32,
    pub per_page: u32,
}

/// One sealed vault entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultEntryRow {
    pub seq: u64,
    pub leaf: Vec<u8>,
    pub leaf_hash: [u8; 32],
    pub chain_hash: [u8; 32],
    pub hmac: [u8; 32],
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub size: u64,
    pub root: [u8; 32],
    pub note: String,
    pub created_at: Millis,
}

/// A runtime session: live budgets and a kill switch around one agent's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub workspace_id: String,
    pub agent_id: String,
    pub credential_id: Option<String>,
    pub label: Option<String>,
    pub budgets: Budgets,
    pub consumed: Consumed,
    pub status: SessionStatus,
    pub kill_reason: Option<String>,
    /// `prompt_hash` and other descriptive fields.
    pub attributes: Map<String, Value>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub closed_at: Option<Millis>,
    /// Grows with every change; a write with a lower version than the stored one is
    /// stale and ignored, so concurrent updates land in order.
    pub version: u64,
    /// Changes with every write; see `Agent::etag`.
    #[serde(default, skip_serializing)]
    pub etag: String,
    /// Which reload of this node's copy this is (not stored; see
    /// `Agent::copy_generation`).
    #[serde(skip)]
    pub copy_generation: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionFilter {
    pub status: Option<String>,
    pub agent_id: Option<String>,
    pub limit: u32,
}

/// An authority object (role, temporal window, delegation grant, breakglass,
/// escalation) as stored: its kind, indexed columns and the record as JSON. The server
/// owns the typed records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub workspace_id: String,
    pub kind: String,
    pub object_id: String,
    pub agent_id: Option<String>,
    pub status: String,
    pub body: Value,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectFilter {
    pub kind: String,
    pub status: Option<String>,
    pub agent_id: Option<String>,
    pub limit: u32,
}

/// One shadow policy's match on one decision: what was decided, and what would have been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowHit {
    pub workspace_id: String,
    pub policy_id: String,
    pub decision_id: String,
    pub actual: String,
    pub would: String,
    pub changed: bool,
    pub at: Millis,
}

/// Per shadow policy: how often it matched, how many decisions it would have changed,
/// from what to what, and a few examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowSummary {
    pub policy_id: String,
    pub matched: u64,
    pub would_change: u64,
    /// `(from, to, count)` for the changed decisions.
    pub transitions: Vec<(String, String, u64)>,
    pub examples: Vec<String>,
}

/// A rule or policy violation: which rule, how severe, and the decision's full context.
///
/// `body` is stored as written: the violation's own fields. The decision's context is
/// sealed once, in the decision's vault entry; reading a violation back adds to `body`
/// the [`VIOLATION_CONTEXT`] fields of that entry it does not already have
/// ([`Violation::add_decision_context`]). Rows written before violations were sealed
/// inside their decision's entry carry the context in `body` themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub violation_id: String,
    pub workspace_id: String,
    pub rule_id: String,
    pub severity: String,
    pub agent_id: Option<String>,
    pub decision_id: String,
    pub at: Millis,
    pub body: Value,
    /// The agent its decision's sealed entry names, when read back with that entry.
    /// Keys bound to one agent see a violation only if this names their agent too: the
    /// row's own `agent_id` could have been changed by anyone with the database.
    #[serde(skip)]
    pub decision_agent: Option<String>,
}

/// The fields of a decision's vault entry that a violation of that decision shows.
pub const VIOLATION_CONTEXT: [&str; 5] = ["decision", "session_id", "action_type", "content_sha256", "metadata"];

/// The fields of a violation's body that are not in the violation as sealed in its
/// decision's entry. A row stores none of the body when these, and the sealed
/// violation, give it back exactly; see [`Violation::rebuilds_from`].
const VIOLATION_OWN: [&str; 3] = ["decision_id", "agent_id", "at"];

impl Violation {
    /// The violation as sealed in its decision's `entry` (its `violations`, by id).
    fn sealed_in<'e>(&self, entry: &'e Map<String, Value>) -> Option<&'e Map<String, Value>> {
        entry.get("violations")?.as_array()?.iter().filter_map(Value::as_object).find(|v| v.get("violation_id").and_then(Value::as_str) == Some(self.violation_id.as_str()))
    }

    /// The values of [`VIOLATION_OWN`] that a rebuilt body gets: the entry's decision
    /// id and time (the body's `at` is the decision's time, as the entry writes it) and
    /// the row's agent. `None` if the entry lacks one.
    fn own_fields(&self, entry: &Map<String, Value>) -> Option<[(&'static str, Value); 3]> {
        let agent = self.agent_id.as_ref().map_or(Value::Null, |a| Value::String(a.clone()));
        let [decision_id, agent_id, at] = VIOLATION_OWN;
        Some([(decision_id, entry.get("decision_id")?.clone()), (agent_id, agent), (at, entry.get("time")?.clone())])
    }

    /// Whether this violation's whole body is what [`Violation::rebuilt_body`] makes
    /// from its decision's sealed `entry`: then its row needs to store none of it.
    /// Checked field by field rather than by rebuilding (this runs for every violation
    /// a decision records).
    pub fn rebuilds_from(&self, entry: &Map<String, Value>) -> bool {
        let (Value::Object(body), Some(sealed), Some(own)) = (&self.body, self.sealed_in(entry), self.own_fields(entry)) else { return false };
        body.len() == sealed.len() + own.len()
            && own.iter().all(|(f, v)| !sealed.contains_key(*f) && body.get(*f) == Some(v))
            && sealed.iter().all(|(k, v)| body.get(k) == Some(v))
    }

    /// Where this violation's row departs from what its decision's sealed `entry`
    /// seals of it (in `violations`, by id): its decision, agent, rule, severity and
    /// time; or that the entry does not seal it. `None` when they match. (A row names
    /// an agent only when it was registered, and then the entry names the same one; the
    /// entry also names agents that were not.)
    pub fn departs_from(&self, entry: &Map<String, Value>) -> Option<String> {
        let Some(sealed) = self.sealed_in(entry) else {
            return Some("its decision's entry does not seal it".into());
        };
        if entry.get("decision_id").and_then(Value::as_str) != Some(self.decision_id.as_str()) {
            return Some("its `decision_id` is not its decision's".into());
        }
        if let Some(agent) = &self.agent_id
            && entry.get("agent_id").is_some_and(|sealed| sealed.as_str() != Some(agent.as_str()))
        {
            return Some("its `agent_id` is not its decision's".into());
        }
        for (field, column) in [("rule_id", &self.rule_id), ("severity", &self.severity)] {
            if sealed.get(field).is_some_and(|v| v.as_str() != Some(column.as_str())) {
                return Some(format!("its `{field}` is not the one sealed in its decision's entry"));
            }
        }
        if entry.get("time").is_some_and(|t| t.as_str() != Some(praetor_core::iso_millis(self.at).as_str())) {
            return Some("its time is not its decision's sealed time".into());
        }
        None
    }

    /// The whole body of this violation, whose row stored none of it, from its
    /// decision's sealed `entry`; `None` if the entry cannot give it back.
    pub fn rebuilt_body(&self, entry: &Map<String, Value>) -> Option<Value> {
        let (sealed, own) = (self.sealed_in(entry)?, self.own_fields(entry)?);
        if own.iter().any(|(f, _)| sealed.contains_key(*f)) {
            return None;
        }
        let mut body = sealed.clone();
        body.extend(own.into_iter().map(|(f, v)| (f.to_owned(), v)));
        Some(Value::Object(body))
    }

    /// Where a body the row stores itself (rows written before a decision's entry gave
    /// its violations' bodies back, or with fields of their own) departs from what that
    /// entry seals: each field the body holds that the entry seals (of the violation,
    /// or of its decision: its id, time, agent and context) must hold the sealed value
    /// (a body may leave one out). `None` when they agree, or when the entry does not
    /// seal the violation (older logs seal it in an entry of its own).
    pub fn stored_body_departs(&self, body: &Value, entry: &Map<String, Value>) -> Option<String> {
        let sealed = self.sealed_in(entry)?;
        let Value::Object(body) = body else { return Some("its stored body is not a JSON object".into()) };
        let sealed_value = |field: &str| -> Option<&Value> {
            sealed.get(field).or_else(|| match field {
                "decision_id" => entry.get("decision_id"),
                "at" => entry.get("time"),
                // A row names an agent only when it was registered (the entry also names
                // agents that were not): a body without one departs from nothing.
                "agent_id" if !body.get("agent_id").is_none_or(Value::is_null) => entry.get("agent_id"),
                f if VIOLATION_CONTEXT.contains(&f) => entry.get(f),
                _ => None,
            })
        };
        body.iter()
            .find(|(field, stored)| sealed_value(field).is_some_and(|value| value != *stored))
            .map(|(field, _)| format!("its stored `{field}` is not the one sealed in its decision's entry"))
    }

    /// Complete `body` with its decision's context from the decision's sealed entry
    /// (a field `body` already has is kept).
    pub fn add_decision_context(&mut self, entry: &Map<String, Value>) {
        let Value::Object(body) = &mut self.body else { return };
        for field in VIOLATION_CONTEXT {
            if let Some(v) = entry.get(field)
                && !body.contains_key(field)
            {
                body.insert(field.to_owned(), v.clone());
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViolationFilter {
    pub rule_id: Option<String>,
    pub severity: Option<String>,
    pub agent_id: Option<String>,
    pub since: Option<Millis>,
    pub limit: u32,
}

/// One outbound message: a signed webhook call, a Slack message or an e-mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivery_id: String,
    pub workspace_id: String,
    /// `webhook`, `slack` or `email`.
    pub channel: String,
    /// The URL or the e-mail address.
    pub target: String,
    pub webhook_id: Option<String>,
    pub event: String,
    pub payload: Value,
    /// `pending`, `delivered` or `dead` (given up).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Millis,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
}

/// An edit of an agent's descriptive fields: `None` leaves a field as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentFields {
    pub workspace_id: String,
    pub agent_id: String,
    pub description: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub permission_boundary: Option<PermissionBoundary>,
    pub require_signature: Option<bool>,
    pub updated_at: Millis,
    pub etag: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// Rows sealed before `answer_sha256` (and before the `session_id` column, which
    /// was added without filling it) have no session in their row: that alone is not
    /// a departure; in a row sealed since, it is.
    #[test]
    fn an_older_row_without_its_session_does_not_depart() {
        let row = DecisionRow {
            decision_id: "dec_1".into(), workspace_id: "ws".into(), agent_id: None, session_id: None, action_type: "x".into(),
            decision: "allow".into(), created_at: 0, vault_seq: Some(0), content: None, body: json!({}), sealed_leaf: None, digests: None,
        };
        let mut entry = json!({ "kind": "decision", "decision_id": "dec_1", "agent_id": null, "session_id": "sess_1", "action_type": "x",
            "decision": "allow", "time": praetor_core::iso_millis(0), "content_sha256": null });
        assert_eq!(row.departs_from(entry.as_object().unwrap()), None);
        entry["answer_sha256"] = json!(praetor_core::sha256_hex(b"{}"));
        assert_eq!(row.departs_from(entry.as_object().unwrap()).as_deref(), Some("its `session_id` is not the one sealed in its entry"));
        let in_session = DecisionRow { session_id: Some("sess_1".into()), ..row.clone() };
        assert_eq!(in_session.departs_from(entry.as_object().unwrap()), None);
        let other_session = DecisionRow { session_id: Some("sess_2".into()), ..row };
        entry.as_object_mut().unwrap().remove("answer_sha256");
        assert!(other_session.departs_from(entry.as_object().unwrap()).is_some(), "a session that is there is compared");
    }

    /// `rebuilds_from` (checked in place, when a violation is stored) says yes exactly
    /// when `rebuilt_body` (when it is read) gives the body back.
    #[test]
    fn a_violation_is_stored_slim_exactly_when_its_entry_rebuilds_it() {
        let sealed = json!({ "violation_id": "vio_1", "rule_id": "r", "severity": "high", "reason": "x" });
        let entry = |violation: Value| -> Map<String, Value> {
            let e = json!({ "decision_id": "dec_1", "time": "2026-12-05T10:00:00.000Z", "violations": [{ "violation_id": "vio_0" }, violation] });
            e.as_object().unwrap().clone()
        };
        let without = |mut e: Map<String, Value>, field: &str| {
            e.remove(field);
            e
        };
        let whole = json!({ "violation_id": "vio_1", "rule_id": "r", "severity": "high", "reason": "x",
            "decision_id": "dec_1", "agent_id": "agt_1", "at": "2026-12-05T10:00:00.000Z" });
        let with = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut b = whole.as_object().unwrap().clone();
            edit(&mut b);
            Value::Object(b)
        };
        let cases = [
            ("as the pipeline writes it", whole.clone(), entry(sealed.clone()), Some("agt_1"), true),
            ("no agent", with(&|b| drop(b.insert("agent_id".into(), Value::Null))), entry(sealed.clone()), None, true),
            ("the row's agent differs", whole.clone(), entry(sealed.clone()), Some("agt_2"), false),
            ("a field of its own", with(&|b| drop(b.insert("note".into(), json!(1)))), entry(sealed.clone()), Some("agt_1"), false),
            ("a sealed field missing", with(&|b| drop(b.remove("reason"))), entry(sealed.clone()), Some("agt_1"), false),
            ("a sealed field differs", with(&|b| drop(b.insert("severity".into(), json!("low")))), entry(sealed.clone()), Some("agt_1"), false),
            ("another time", with(&|b| drop(b.insert("at".into(), json!("2026-12-05T10:00:01.000Z")))), entry(sealed.clone()), Some("agt_1"), false),
            ("not in the entry", whole.clone(), entry(json!({ "violation_id": "vio_9" })), Some("agt_1"), false),
            ("an entry without a time", with(&|b| {
                b.insert("note".into(), json!(1));
                b.remove("at");
            }), without(entry(sealed.clone()), "time"), Some("agt_1"), false),
            ("an entry without a decision id", with(&|b| {
                b.insert("note".into(), json!(1));
                b.remove("decision_id");
            }), without(entry(sealed.clone()), "decision_id"), Some("agt_1"), false),
            ("the sealed one has an `at`", with(&|b| drop(b.insert("at".into(), json!("sealed")))), entry(json!({ "violation_id": "vio_1", "rule_id": "r", "severity": "high", "reason": "x", "at": "sealed" })), Some("agt_1"), false),
        ];
        for (case, body, entry, agent, slim) in cases {
            let v = Violation { violation_id: "vio_1".into(), workspace_id: "ws".into(), rule_id: "r".into(), severity: "high".into(),
                agent_id: agent.map(str::to_owned), decision_id: "dec_1".into(), at: 0, body: body.clone(), decision_agent: None };
            assert_eq!(v.rebuilds_from(&entry), slim, "{case}");
            let rebuilt = Violation { body: Value::Null, ..v.clone() }.rebuilt_body(&entry);
            assert_eq!(rebuilt.as_ref() == Some(&body), slim, "{case}: {rebuilt:?}");
        }
    }
}
