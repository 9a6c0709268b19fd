//! A decision is a value with diagnostics: the verdict, every policy that matched and
//! why, and every evaluation error (cedar's `Response { decision, diagnostics }`).

use serde::{Deserialize, Serialize};

/// The four wire values of `decision` (xybern-wire.md §0 rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Escalate,
    Block,
    Terminate,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Escalate => "escalate",
            Verdict::Block => "block",
            Verdict::Terminate => "terminate",
        }
    }
}

/// The richer `outcome` field (wire §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    AllowedWithWarning,
    Escalated,
    Refused,
    Terminated,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::AllowedWithWarning => "allowed_with_warning",
            Outcome::Escalated => "escalated",
            Outcome::Refused => "refused",
            Outcome::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundaryCheck {
    WithinScope,
    OutsideScope,
}

/// One policy (or built-in check) that matched the request.
/// Built-in ids start with `__`: `__identity`, `__boundary`, `__default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triggered {
    pub policy_id: String,
    pub name: String,
    /// The effect this policy asks for: `allow | allow_with_warning | escalate | block`.
    pub decision: String,
    pub reason: String,
}

/// A policy that could not be evaluated. A policy whose effect could refuse makes the
/// decision refuse (fail closed); the error is reported either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalError {
    pub policy_id: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub outcome: Outcome,
    /// Every matching policy, most restrictive first, then by priority (high first).
    pub triggered: Vec<Triggered>,
    pub errors: Vec<EvalError>,
    pub boundary: BoundaryCheck,
    /// Human text: why this verdict.
    pub reasoning: String,
    /// True when the refusal was for a policy or boundary violation (trust falls).
    pub violation: bool,
    /// Matches of shadow-mode policies, ordered like `triggered`. They never change the
    /// verdict; they show what a policy would do before it is made live.
    #[serde(default)]
    pub shadow: Vec<Triggered>,
    /// For an allowed action in a session: what it costs the session's budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<crate::session::Charge>,
    /// The session must end because of this decision (a budget ran out): the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_session: Option<String>,
    /// What windows, grants, approvals and breakglass did for this decision.
    #[serde(default)]
    pub authority: crate::authority::AuthorityOutcome,
}

impl Decision {
    /// True for `block`, `escalate` and `terminate`.
    pub fn refuses(&self) -> bool {
        self.verdict != Verdict::Allow
    }
}
