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

/// The built-in id of a block that replaced an escalation the workspace could not hold.
pub const ESCALATION_LIMIT_ID: &str = "__escalation_limit";

/// One policy (or built-in check) that matched the request.
/// Built-in ids start with `__`: `__identity`, `__boundary`, `__default`,
/// `__escalation_limit`.
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
    /// For an escalated action in a session: what it will cost the session's budgets.
    /// The server charges it when a person approves, since the SDK then runs the
    /// action without asking again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_charge: Option<crate::session::Charge>,
    /// The session must end because of this decision (a budget ran out): the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_session: Option<String>,
    /// What windows, grants, approvals and breakglass did for this decision.
    #[serde(default)]
    pub authority: crate::authority::AuthorityOutcome,
}

impl Decision {
    /// A decision with nothing but its verdict, what triggered it and why: no evaluation
    /// errors, within scope, not a violation, no shadow matches, charge or authority.
    pub fn plain(verdict: Verdict, outcome: Outcome, triggered: Vec<Triggered>, reasoning: String) -> Decision {
        Decision {
            verdict,
            outcome,
            triggered,
            errors: Vec::new(),
            boundary: BoundaryCheck::WithinScope,
            reasoning,
            violation: false,
            shadow: Vec::new(),
            charge: None,
            approval_charge: None,
            ends_session: None,
            authority: Default::default(),
        }
    }

    /// Whether this is a block that replaced an escalation (`block_instead_of_escalating`).
    pub fn escalation_refused(&self) -> bool {
        self.verdict == Verdict::Block && self.triggered.first().is_some_and(|t| t.policy_id == ESCALATION_LIMIT_ID)
    }

    /// True for `block`, `escalate` and `terminate`.
    pub fn refuses(&self) -> bool {
        self.verdict != Verdict::Allow
    }

    /// Turn an `escalate` into a `block` because no escalation can be opened (the
    /// workspace holds as many as it may): fail closed, and say so first in `triggered`
    /// (`__escalation_limit`) and in the reasoning. The policies that asked for the
    /// escalation stay in `triggered`; trust counts it as the escalation it replaced
    /// (see `trust`). Any other verdict is left as it is.
    pub fn block_instead_of_escalating(&mut self, reason: String) {
        if self.verdict != Verdict::Escalate {
            return;
        }
        self.verdict = Verdict::Block;
        self.outcome = Outcome::Refused;
        self.reasoning = format!("{reason} (the action would otherwise have been escalated: {})", self.reasoning);
        self.triggered.insert(
            0,
            Triggered { policy_id: ESCALATION_LIMIT_ID.to_owned(), name: "escalation limit".to_owned(), decision: "block".to_owned(), reason },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escalated() -> Decision {
        let triggered = Triggered { policy_id: "pol_1".into(), name: "big payments".into(), decision: "escalate".into(), reason: "amount > 1000".into() };
        Decision::plain(Verdict::Escalate, Outcome::Escalated, vec![triggered], "big payments: amount > 1000".into())
    }

    #[test]
    fn an_escalation_that_cannot_be_opened_blocks_and_names_the_limit_first() {
        let mut d = escalated();
        d.block_instead_of_escalating("10 escalations are open".into());
        assert_eq!((d.verdict, d.outcome), (Verdict::Block, Outcome::Refused));
        let ids: Vec<&str> = d.triggered.iter().map(|t| t.policy_id.as_str()).collect();
        assert_eq!(ids, ["__escalation_limit", "pol_1"]);
        assert_eq!(d.triggered[0].decision, "block");
        assert!(d.reasoning.starts_with("10 escalations are open"), "{}", d.reasoning);
        assert!(d.reasoning.contains("big payments: amount > 1000"), "{}", d.reasoning);
    }

    #[test]
    fn only_an_escalation_is_turned_into_a_block() {
        for (verdict, outcome) in [(Verdict::Allow, Outcome::Allowed), (Verdict::Block, Outcome::Refused), (Verdict::Terminate, Outcome::Terminated)] {
            let mut d = escalated();
            d.verdict = verdict;
            d.outcome = outcome;
            let before = d.clone();
            d.block_instead_of_escalating("full".into());
            assert_eq!(d, before);
            assert!(!d.escalation_refused());
        }
        let mut d = escalated();
        d.block_instead_of_escalating("full".into());
        assert!(d.escalation_refused());
    }
}
