//! The inputs of one decision: the proposed action and the facts about who proposes it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One action an agent proposes, after stage 1 (intercept) has parsed and bounded it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub action_type: String,
    /// The action's content. `None` when the client sent none, or redacted it.
    pub content: Option<String>,
    /// True when the client withheld the content on purpose (`action_content: null`
    /// together with `metadata.content_sha256`). Content policies then follow the
    /// workspace's `on_redacted_content` setting instead of seeing an empty string.
    pub content_redacted: bool,
    pub metadata: Map<String, Value>,
    pub session_id: Option<String>,
    /// Set when the action is too large to evaluate (its content, or the whole request,
    /// is over a size limit): why. The engine blocks it before any policy runs, so an
    /// agent cannot pass the content policies by padding an action past what they read,
    /// and the refusal is a decision like any other (sealed; an answer, not an error a
    /// fail-open client would run the action on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_unread: Option<String>,
}

/// What stage 2 (identify) established about the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Identity {
    /// A known, active agent (signature checked where the agent requires one).
    Verified,
    /// No agent named (`agent_id: null`): policies still apply, agent facts are absent.
    Anonymous,
    /// The identity check failed; the decision blocks. `check` names which check:
    /// `unknown_agent`, `agent_deactivated`, `signature_missing`, `signature_invalid`,
    /// `signature_expired`, `nonce_reused`, `key_bound_to_other_agent`.
    Failed { check: String, reason: String },
}

/// The facts about the acting agent that policies may read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentFacts {
    pub agent_id: String,
    pub name: String,
    /// Integer trust score, 0-100.
    pub trust_score: u8,
    /// Action-type globs the agent may perform. Empty means no scope restriction.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Optional boundary: `allowed_action_types` / `denied_action_types` globs.
    #[serde(default)]
    pub permission_boundary: Option<PermissionBoundary>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionBoundary {
    #[serde(default)]
    pub allowed_action_types: Vec<String>,
    #[serde(default)]
    pub denied_action_types: Vec<String>,
}

/// An earlier action that ran (allowed, or approved by a person), as velocity and
/// sequence policies see it.
/// `at_ms` is milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAction {
    pub action_type: String,
    pub at_ms: i64,
}
