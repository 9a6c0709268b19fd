//! `threshold` policies: match when the agent's trust score is below `trust_threshold`
//! (a top-level field, required, 0-100). Takes no conditions.
//!
//! An anonymous request has no trust score; unknown trust counts as below any
//! threshold, so the policy matches (and says so in its reason).

use super::conditions::Obj;
use super::{Hit, PolicyDef, PolicyError};
use crate::engine::EvalCtx;

#[derive(Debug)]
pub(crate) struct Rule {
    threshold: u8,
}

impl Rule {
    pub(crate) fn eval(&self, cx: &EvalCtx<'_>) -> Option<Hit> {
        match cx.input.agent {
            None => Some(Hit::new(format!(
                "anonymous request: trust unknown, counted as below threshold {}",
                self.threshold
            ))),
            Some(a) if a.trust_score < self.threshold => Some(Hit::new(format!(
                "trust score {} is below threshold {}",
                a.trust_score, self.threshold
            ))),
            Some(_) => None,
        }
    }
}

pub(crate) fn compile(def: &PolicyDef) -> Result<Rule, PolicyError> {
    Obj::new(&def.conditions, "conditions", &[])?;
    let threshold = def
        .trust_threshold
        .ok_or_else(|| PolicyError::new("trust_threshold", "required for a `threshold` policy"))?;
    Ok(Rule { threshold })
}

#[cfg(test)]
mod tests {
    use crate::engine::tests::Fx;
    use crate::policy::tests::err_of;
    use crate::{Outcome, Verdict};
    use serde_json::json;

    fn fx() -> Fx {
        Fx::new(vec![
            json!({"name": "Low trust", "policy_type": "threshold", "trust_threshold": 50,
                             "decision": "escalate"}),
        ])
    }

    #[test]
    fn below_threshold_matches() {
        let d = fx().trust(49).decide("x");
        assert_eq!((d.verdict, d.outcome), (Verdict::Escalate, Outcome::Escalated));
        assert_eq!(d.triggered[0].reason, "trust score 49 is below threshold 50");
        assert!(d.violation);
        assert_eq!(fx().trust(50).decide("x").verdict, Verdict::Allow);
    }

    #[test]
    fn anonymous_counts_as_below() {
        let d = fx().anonymous().decide("x");
        assert_eq!(d.verdict, Verdict::Escalate);
        assert!(d.triggered[0].reason.starts_with("anonymous request"));
    }

    #[test]
    fn threshold_zero_never_matches_an_agent() {
        let fx = Fx::new(vec![
            json!({"name": "z", "policy_type": "threshold", "trust_threshold": 0,
                                      "decision": "block"}),
        ]);
        assert_eq!(fx.trust(0).decide("x").verdict, Verdict::Allow);
    }

    #[test]
    fn validation() {
        assert_eq!(
            err_of(json!({"name": "t", "policy_type": "threshold", "decision": "block"})).field,
            "trust_threshold"
        );
        let e = err_of(
            json!({"name": "t", "policy_type": "threshold", "decision": "block", "trust_threshold": 5,
                              "conditions": {"min": 3}}),
        );
        assert_eq!(e.field, "conditions.min");
    }
}
