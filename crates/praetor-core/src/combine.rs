//! Stage 4: combine the matching policies into one verdict.
//!
//! - The most restrictive effect among live matches wins:
//!   `block > escalate > allow_with_warning > allow`.
//! - Verdicts: `block` → Block/refused, `escalate` → Escalate/escalated,
//!   `allow_with_warning` → Allow/allowed_with_warning, `allow` → Allow/allowed.
//! - No live match: the workspace `default_decision` applies. A default that refuses or
//!   warns is reported as `__default` in `triggered`; a default allow reports nothing.
//! - `triggered` lists every live match, most restrictive first, then priority (high
//!   first), then policy id; `shadow` the same for shadow policies.
//! - `violation` is true when the verdict refuses (block/escalate) because of a policy
//!   match or a fail-closed error; never for the default decision.

use crate::decision::{BoundaryCheck, Decision, EvalError, Outcome, Triggered, Verdict};
use crate::policy::{CompiledPolicy, Effect, WorkspaceSettings};

/// The verdict and outcome an effect maps to.
pub fn verdict_of(effect: Effect) -> (Verdict, Outcome) {
    match effect {
        Effect::Block => (Verdict::Block, Outcome::Refused),
        Effect::Escalate => (Verdict::Escalate, Outcome::Escalated),
        Effect::AllowWithWarning => (Verdict::Allow, Outcome::AllowedWithWarning),
        Effect::Allow => (Verdict::Allow, Outcome::Allowed),
    }
}

fn verb(effect: Effect) -> &'static str {
    match effect {
        Effect::Block => "blocked",
        Effect::Escalate => "escalated",
        Effect::AllowWithWarning => "allowed with warning",
        Effect::Allow => "allowed",
    }
}

/// One match, before sorting.
#[derive(Debug)]
pub(crate) struct Entry {
    effect: Effect,
    priority: i32,
    triggered: Triggered,
}

impl Entry {
    pub(crate) fn new(p: &CompiledPolicy, effect: Effect, reason: String) -> Entry {
        Entry {
            effect,
            priority: p.priority,
            triggered: Triggered {
                policy_id: p.id.clone(),
                name: p.name.clone(),
                decision: effect.as_str().to_owned(),
                reason,
            },
        }
    }
}

fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        b.effect
            .cmp(&a.effect)
            .then(b.priority.cmp(&a.priority))
            .then_with(|| a.triggered.policy_id.cmp(&b.triggered.policy_id))
    });
}

pub(crate) fn finish(
    mut live: Vec<Entry>,
    mut shadow: Vec<Entry>,
    errors: Vec<EvalError>,
    settings: &WorkspaceSettings,
) -> Decision {
    sort(&mut live);
    sort(&mut shadow);
    let shadow: Vec<Triggered> = shadow.into_iter().map(|e| e.triggered).collect();
    let Some(top) = live.first().map(|e| e.effect) else {
        let effect = settings.default_decision;
        let (verdict, outcome) = verdict_of(effect);
        let triggered = if effect == Effect::Allow {
            Vec::new()
        } else {
            vec![Triggered {
                policy_id: "__default".to_owned(),
                name: "default decision".to_owned(),
                decision: effect.as_str().to_owned(),
                reason: format!("no policy matched; the workspace default is {effect}"),
            }]
        };
        return Decision {
            verdict,
            outcome,
            triggered,
            errors,
            boundary: BoundaryCheck::WithinScope,
            reasoning: format!("no policy matched; default {effect}"),
            violation: false,
            shadow,
            charge: None,
            approval_charge: None,
            ends_session: None,
            authority: Default::default(),
        };
    };
    let (verdict, outcome) = verdict_of(top);
    let reasoning = {
        let first = &live[0].triggered;
        let mut s = format!(
            "{} by policy `{}` ({}): {}",
            verb(top),
            first.name,
            first.policy_id,
            first.reason
        );
        let others: Vec<String> = live[1..]
            .iter()
            .take_while(|e| e.effect == top)
            .map(|e| format!("`{}` ({})", e.triggered.name, e.triggered.policy_id))
            .collect();
        if !others.is_empty() {
            s.push_str("; also ");
            s.push_str(&others.join(", "));
        }
        s
    };
    Decision {
        verdict,
        outcome,
        triggered: live.into_iter().map(|e| e.triggered).collect(),
        errors,
        boundary: BoundaryCheck::WithinScope,
        reasoning,
        violation: top.refuses(),
        shadow,
        charge: None,
        approval_charge: None,
        ends_session: None,
        authority: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effect_order_is_restrictiveness() {
        assert!(Effect::Block > Effect::Escalate);
        assert!(Effect::Escalate > Effect::AllowWithWarning);
        assert!(Effect::AllowWithWarning > Effect::Allow);
        assert_eq!(
            verdict_of(Effect::AllowWithWarning),
            (Verdict::Allow, Outcome::AllowedWithWarning)
        );
    }

    #[test]
    fn default_escalate_is_reported() {
        let s = WorkspaceSettings {
            default_decision: Effect::Escalate,
            ..WorkspaceSettings::default()
        };
        let d = finish(vec![], vec![], vec![], &s);
        assert_eq!((d.verdict, d.outcome), (Verdict::Escalate, Outcome::Escalated));
        assert_eq!(d.triggered[0].policy_id, "__default");
        assert_eq!(
            d.triggered[0].reason,
            "no policy matched; the workspace default is escalate"
        );
        assert!(!d.violation);
    }
}
