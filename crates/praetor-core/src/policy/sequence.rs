//! `sequence` policies: match on what the agent (or session) did before.
//!
//! Conditions: exactly one of
//! ```json
//! { "velocity": { "max": 5,                     // required, >= 1
//!                 "window_seconds": 60,         // required, 1 - 2,592,000 (30 days)
//!                 "per": "agent",               // "agent" (default) | "session"
//!                 "counted_action_types": ["payment.*"] } }
//!                 // default: the policy's action_types, or every action when empty
//! { "ordered":  { "first": ["db.read*"],        // required globs
//!                 "then": ["email.send"],       // required globs
//!                 "within_seconds": 300,        // required, 1 - 2,592,000
//!                 "per": "agent" } }
//! ```
//! History is the caller's list of earlier *allowed* actions, oldest first.
//! - velocity matches when the number of past actions of counted types with
//!   `now - window < at <= now` is already `>= max`: this action would be the
//!   `(max+1)`-th in the window.
//! - ordered matches when the current action matches `then` and a past action matching
//!   `first` happened with `now - within < at <= now`.
//! - `per: "session"` reads the session's history; without a session it is empty, so
//!   nothing is counted and the policy does not match.
//!
//! Both are also scoped by the policy's `action_types`, like every policy.

use super::conditions::Obj;
use super::{Hit, PolicyDef, PolicyError};
use crate::action::PastAction;
use crate::engine::EvalCtx;
use crate::glob::GlobList;

pub const MAX_WINDOW_SECONDS: u64 = 30 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Per {
    Agent,
    Session,
}

impl Per {
    fn parse(c: &Obj<'_>) -> Result<Per, PolicyError> {
        match c.str("per")? {
            None | Some("agent") => Ok(Per::Agent),
            Some("session") => Ok(Per::Session),
            Some(other) => Err(c.err("per", format!("expected `agent` or `session`, found `{other}`"))),
        }
    }

    fn who(self) -> &'static str {
        match self {
            Per::Agent => "by this agent",
            Per::Session => "in this session",
        }
    }
}

#[derive(Debug)]
pub(crate) enum Rule {
    Velocity {
        max: u64,
        window_ms: i64,
        per: Per,
        counted: Option<GlobList>,
        counted_text: String,
    },
    Ordered {
        first: GlobList,
        then: GlobList,
        within_ms: i64,
        per: Per,
    },
}

fn globs_text(g: &GlobList) -> String {
    g.iter()
        .map(|g| format!("`{}`", g.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn compile(def: &PolicyDef, scope: &GlobList) -> Result<Rule, PolicyError> {
    let c = Obj::new(&def.conditions, "conditions", &["velocity", "ordered"])?;
    match (c.has("velocity"), c.has("ordered")) {
        (true, true) => Err(c.err("ordered", "give exactly one of `velocity` and `ordered`")),
        (false, false) => Err(PolicyError::new(
            "conditions",
            "one of `velocity` or `ordered` is required",
        )),
        (true, false) => {
            let v = c
                .object("velocity", &["max", "window_seconds", "per", "counted_action_types"])?
                .ok_or_else(|| c.err("velocity", "required"))?;
            let max = v
                .uint("max", 1, MAX_VELOCITY)?
                .ok_or_else(|| v.err("max", "required"))?;
            let window = v
                .uint("window_seconds", 1, MAX_WINDOW_SECONDS)?
                .ok_or_else(|| v.err("window_seconds", "required"))?;
            let per = Per::parse(&v)?;
            let counted = match v.str_list("counted_action_types")? {
                Some(list) if list.is_empty() => return Err(v.err("counted_action_types", "must not be empty")),
                Some(list) => Some(GlobList::new(&list, &v.field("counted_action_types"))?),
                None if scope.is_empty() => None,
                None => Some(scope.clone()),
            };
            let counted_text = counted
                .as_ref()
                .map_or_else(String::new, |g| format!("{} ", globs_text(g)));
            Ok(Rule::Velocity {
                max,
                window_ms: window as i64 * 1000,
                per,
                counted,
                counted_text,
            })
        }
        (false, true) => {
            let o = c
                .object("ordered", &["first", "then", "within_seconds", "per"])?
                .ok_or_else(|| c.err("ordered", "required"))?;
            let first = GlobList::new(&o.required_str_list("first")?, &o.field("first"))?;
            let then = GlobList::new(&o.required_str_list("then")?, &o.field("then"))?;
            let within = o
                .uint("within_seconds", 1, MAX_WINDOW_SECONDS)?
                .ok_or_else(|| o.err("within_seconds", "required"))?;
            Ok(Rule::Ordered {
                first,
                then,
                within_ms: within as i64 * 1000,
                per: Per::parse(&o)?,
            })
        }
    }
}

/// The largest `velocity.max`: a history keeps at least this many actions, so any
/// valid limit can be counted.
pub const MAX_VELOCITY: u64 = 10_000;

/// The entries of `history` (oldest first) with `now - window < at`. An entry stamped
/// after `now` (by a clock ahead of the one that read `now`: another node's, or a
/// concurrent decision's that read it later) is counted: it happened, and leaving it
/// out would let an action past a limit it has reached.
fn window(history: &[PastAction], now_ms: i64, window_ms: i64) -> &[PastAction] {
    let from = now_ms.saturating_sub(window_ms);
    let lo = history.partition_point(|a| a.at_ms <= from);
    &history[lo..]
}

impl Rule {
    /// The action-type globs this rule holds.
    pub(crate) fn glob_lists(&self) -> Vec<&GlobList> {
        match self {
            Rule::Velocity { counted, .. } => counted.iter().collect(),
            Rule::Ordered { first, then, .. } => vec![first, then],
        }
    }

    pub(crate) fn window_ms(&self) -> i64 {
        match self {
            Rule::Velocity { window_ms, .. } => *window_ms,
            Rule::Ordered { within_ms, .. } => *within_ms,
        }
    }

    pub(crate) fn eval(&self, cx: &EvalCtx<'_>) -> Result<Option<Hit>, String> {
        let now = cx.input.now_ms;
        let (per, window_ms) = match self {
            Rule::Velocity { per, window_ms, .. } => (*per, *window_ms),
            Rule::Ordered { per, within_ms, .. } => (*per, *within_ms),
        };
        let from = match per {
            Per::Agent => cx.input.agent_history_from_ms,
            Per::Session => cx.input.session_history_from_ms,
        };
        if now.saturating_sub(window_ms) < from {
            return Err(format!(
                "the {} history is incomplete for this window (older actions were dropped at the size cap), so it cannot be counted",
                match per {
                    Per::Agent => "agent's",
                    Per::Session => "session's",
                }
            ));
        }
        Ok(self.eval_complete(cx))
    }

    fn eval_complete(&self, cx: &EvalCtx<'_>) -> Option<Hit> {
        let now = cx.input.now_ms;
        let history = |per: Per| match per {
            Per::Agent => cx.input.agent_history,
            Per::Session => cx.input.session_history,
        };
        match self {
            Rule::Velocity {
                max,
                window_ms,
                per,
                counted,
                counted_text,
            } => {
                let recent = window(history(*per), now, *window_ms);
                let n = match counted {
                    None => recent.len() as u64,
                    Some(g) => recent.iter().filter(|a| g.is_match(&a.action_type)).count() as u64,
                };
                (n >= *max).then(|| {
                    Hit::new(format!(
                        "velocity: {n} {counted_text}actions {} in the last {}s (max {max})",
                        per.who(),
                        window_ms / 1000
                    ))
                })
            }
            Rule::Ordered {
                first,
                then,
                within_ms,
                per,
            } => {
                let action_type = &cx.input.request.action_type;
                let t = then.find(action_type)?;
                let recent = window(history(*per), now, *within_ms);
                let prior = recent.iter().rev().find(|a| first.is_match(&a.action_type))?;
                Some(Hit::new(format!(
                    "sequence: `{action_type}` (matches `{}`) follows `{}` {}s earlier {} (within {}s)",
                    t.as_str(),
                    prior.action_type,
                    (now - prior.at_ms).max(0) / 1000,
                    per.who(),
                    within_ms / 1000
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;
    use crate::engine::tests::Fx;
    use crate::policy::tests::err_of;
    use serde_json::{Value, json};

    fn velocity(v: Value, action_types: Value) -> Value {
        json!({"name": "rate", "policy_type": "sequence", "decision": "block", "action_types": action_types,
               "conditions": {"velocity": v}})
    }

    #[test]
    fn window_bounds() {
        let h: Vec<PastAction> = [10, 20, 30, 40]
            .iter()
            .map(|&t| PastAction {
                action_type: "a".into(),
                at_ms: t,
            })
            .collect();
        assert_eq!(window(&h, 40, 20).len(), 2, "(20, 40]");
        assert_eq!(window(&h, 40, 40).len(), 4);
        assert_eq!(window(&h, 35, 100).len(), 4, "an entry stamped after now is counted");
        assert_eq!(window(&[], 35, 100).len(), 0);
    }

    #[test]
    fn velocity_counts_the_window() {
        let fx = Fx::new(vec![velocity(
            json!({"max": 3, "window_seconds": 60}),
            json!(["pay.*"]),
        )]);
        // 3 payments in the last minute: the 4th is blocked.
        let d = fx
            .clone()
            .history(&[("pay.card", 50), ("pay.card", 30), ("db.read", 20), ("pay.iban", 10)])
            .decide("pay.card");
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(
            d.triggered[0].reason,
            "velocity: 3 `pay.*` actions by this agent in the last 60s (max 3)"
        );
        // One of them just left the window (exactly 60 s ago is outside).
        let d = fx
            .clone()
            .history(&[("pay.card", 60), ("pay.card", 30), ("pay.iban", 10)])
            .decide("pay.card");
        assert_eq!(d.verdict, Verdict::Allow);
        // Out of scope actions are not limited.
        let d = fx
            .history(&[("pay.card", 5), ("pay.card", 4), ("pay.card", 3)])
            .decide("db.read");
        assert_eq!(d.verdict, Verdict::Allow);
    }

    #[test]
    fn actions_stamped_after_now_count() {
        // A concurrent decision that read the clock later, or another node whose clock is
        // ahead, recorded an action after this decision's `now`: it still counts.
        let v = velocity(json!({"max": 1, "window_seconds": 60}), json!(["pay.*"]));
        assert_eq!(Fx::new(vec![v]).history(&[("pay.send", -1)]).decide("pay.send").verdict, Verdict::Block);
        let o = json!({"name": "no exfil", "policy_type": "sequence", "decision": "block",
                       "conditions": {"ordered": {"first": ["db.read*"], "then": ["email.send"], "within_seconds": 300}}});
        let d = Fx::new(vec![o]).history(&[("db.read_users", -1)]).decide("email.send");
        assert_eq!(d.verdict, Verdict::Block);
        assert!(d.triggered[0].reason.contains("follows `db.read_users` 0s earlier"), "{}", d.triggered[0].reason);
    }

    #[test]
    fn counted_and_ordered_types_ignore_ascii_case() {
        let v = velocity(json!({"max": 2, "window_seconds": 60, "counted_action_types": ["pay.*"]}), json!(["PAY.*"]));
        let d = Fx::new(vec![v]).history(&[("Pay.card", 30), ("PAY.iban", 10)]).decide("pay.CARD");
        assert_eq!(d.verdict, Verdict::Block);
        let o = json!({"name": "o", "policy_type": "sequence", "decision": "block",
                       "conditions": {"ordered": {"first": ["db.READ*"], "then": ["http.post"], "within_seconds": 60}}});
        assert_eq!(Fx::new(vec![o]).history(&[("DB.read_all", 10)]).decide("HTTP.Post").verdict, Verdict::Block);
    }

    #[test]
    fn new_definitions_with_invisible_characters_in_globs_are_refused() {
        let o = json!({"name": "o", "policy_type": "sequence", "decision": "block",
                       "conditions": {"ordered": {"first": ["db.read"], "then": ["http.\u{200b}post"], "within_seconds": 60}}});
        assert_eq!(crate::policy::tests::err_of(o).field, "conditions.ordered.then[0]");
    }

    #[test]
    fn velocity_counted_types_and_sessions() {
        let p = velocity(
            json!({"max": 2, "window_seconds": 3600, "per": "session", "counted_action_types": ["email.*"]}),
            json!([]),
        );
        let fx = Fx::new(vec![p]);
        let d = fx
            .clone()
            .history(&[("email.send", 100), ("email.send", 50)])
            .decide("x");
        assert_eq!(d.verdict, Verdict::Allow, "agent history is not session history");
        let d = fx
            .clone()
            .session_history(&[("email.send", 100), ("email.send", 50)])
            .decide("x");
        assert_eq!(d.verdict, Verdict::Block);
        assert!(d.triggered[0].reason.contains("in this session"));
        let d = fx.session_history(&[("email.send", 100), ("db.read", 50)]).decide("x");
        assert_eq!(d.verdict, Verdict::Allow);
    }

    #[test]
    fn velocity_without_scope_counts_everything() {
        let fx = Fx::new(vec![velocity(json!({"max": 2, "window_seconds": 10}), json!([]))]);
        let d = fx.clone().history(&[("a", 5), ("b", 2)]).decide("c");
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(
            d.triggered[0].reason,
            "velocity: 2 actions by this agent in the last 10s (max 2)"
        );
        assert_eq!(fx.history(&[("a", 15), ("b", 2)]).decide("c").verdict, Verdict::Allow);
    }

    #[test]
    fn ordered() {
        let p = json!({"name": "exfil", "policy_type": "sequence", "decision": "escalate",
                       "conditions": {"ordered": {"first": ["db.read*"], "then": ["email.send"], "within_seconds": 300}}});
        let fx = Fx::new(vec![p]);
        let d = fx.clone().history(&[("db.read_users", 120)]).decide("email.send");
        assert_eq!(d.verdict, Verdict::Escalate);
        assert_eq!(
            d.triggered[0].reason,
            "sequence: `email.send` (matches `email.send`) follows `db.read_users` 120s earlier by this agent (within 300s)"
        );
        assert_eq!(
            fx.clone()
                .history(&[("db.read_users", 300)])
                .decide("email.send")
                .verdict,
            Verdict::Allow
        );
        assert_eq!(
            fx.clone()
                .history(&[("db.read_users", 10)])
                .decide("email.draft")
                .verdict,
            Verdict::Allow
        );
        assert_eq!(fx.decide("email.send").verdict, Verdict::Allow);
    }

    #[test]
    fn validation() {
        let base = |c: Value| json!({"name": "s", "policy_type": "sequence", "decision": "block", "conditions": c});
        assert_eq!(err_of(base(json!({}))).field, "conditions");
        assert_eq!(
            err_of(base(json!({"velocity": {"max": 0, "window_seconds": 5}}))).field,
            "conditions.velocity.max"
        );
        assert_eq!(
            err_of(base(json!({"velocity": {"max": 1}}))).field,
            "conditions.velocity.window_seconds"
        );
        assert_eq!(
            err_of(base(
                json!({"velocity": {"max": 1, "window_seconds": 5, "per": "team"}})
            ))
            .field,
            "conditions.velocity.per"
        );
        assert_eq!(
            err_of(base(json!({"velocity": {"max": 1, "window_seconds": 5, "maxx": 1}}))).field,
            "conditions.velocity.maxx"
        );
        assert_eq!(
            err_of(base(
                json!({"velocity": {"max": 1, "window_seconds": 5, "counted_action_types": ["[x"]}})
            ))
            .field,
            "conditions.velocity.counted_action_types[0]"
        );
        assert_eq!(
            err_of(base(
                json!({"ordered": {"first": [], "then": ["a"], "within_seconds": 5}})
            ))
            .field,
            "conditions.ordered.first"
        );
        assert_eq!(
            err_of(base(json!({"ordered": {"first": ["a"], "then": ["b"]}}))).field,
            "conditions.ordered.within_seconds"
        );
        let both = json!({"velocity": {"max": 1, "window_seconds": 5}, "ordered": {"first": ["a"], "then": ["b"], "within_seconds": 5}});
        assert_eq!(err_of(base(both)).field, "conditions.ordered");
        assert_eq!(
            err_of(base(json!({"velocity": {"max": 1, "window_seconds": 2_592_001}}))).field,
            "conditions.velocity.window_seconds"
        );
    }

    #[test]
    fn an_incomplete_history_fails_closed_instead_of_undercounting() {
        use crate::{ActionRequest, CompiledPolicySet, DecisionInput, Identity, PolicyDef, WorkspaceSettings, decide};
        let defs: Vec<PolicyDef> = serde_json::from_value(json!([
            {"policy_id": "p1", "name": "pay rate", "policy_type": "sequence", "decision": "block",
             "conditions": {"velocity": {"max": 2, "window_seconds": 3600, "counted_action_types": ["pay"]}}}
        ]))
        .unwrap();
        let set = CompiledPolicySet::compile(&defs).unwrap();
        let req = ActionRequest { action_type: "pay".into(), ..ActionRequest::default() };
        let now = 10_000_000;
        let mut input = DecisionInput {
            request: &req,
            identity: &Identity::Anonymous,
            agent: None,
            agent_history: &[],
            session_history: &[],
            agent_history_from_ms: i64::MIN,
            session_history_from_ms: i64::MIN,
            session: None,
            authority: Default::default(),
            now_ms: now,
        };
        assert_eq!(decide(&input, &set, &WorkspaceSettings::default()).verdict, Verdict::Allow);
        // Ten minutes ago the history was cut at its cap: a one-hour window cannot be counted.
        input.agent_history_from_ms = now - 600_000;
        let d = decide(&input, &set, &WorkspaceSettings::default());
        assert_eq!(d.verdict, Verdict::Block);
        assert!(d.errors[0].message.contains("incomplete"), "{d:?}");
        // A max above the history cap is refused at validation.
        let too_big = serde_json::from_value::<PolicyDef>(velocity(json!({"max": 10_001, "window_seconds": 60}), json!([]))).unwrap();
        assert!(CompiledPolicySet::compile(&[too_big]).is_err());
    }
}
