//! `action_type` policies: match on the action type alone.
//!
//! Conditions: `{ "match": "listed" | "unlisted" }` (default `listed`).
//! - `listed`: the policy matches the actions whose type matches one of `action_types`
//!   (a deny-list when the decision is `block`).
//! - `unlisted`: an allow-list. The policy is evaluated for every action and matches when
//!   the type matches none of `action_types` (`block` everything not listed).
//!
//! `action_types` must not be empty for this kind.

use super::conditions::Obj;
use super::{Hit, PolicyDef, PolicyError};
use crate::glob::{Glob, GlobList};

#[derive(Debug)]
pub(crate) struct Rule {
    unlisted: bool,
    globs: GlobList,
}

impl Rule {
    pub(crate) fn globs(&self) -> &GlobList {
        &self.globs
    }

    pub(crate) fn is_unlisted(&self) -> bool {
        self.unlisted
    }

    pub(crate) fn eval(&self, action_type: &str, scope_hit: Option<&Glob>) -> Option<Hit> {
        if self.unlisted {
            if self.globs.is_match(action_type) {
                return None;
            }
            return Some(Hit::new(format!(
                "action type `{action_type}` is not in the allowed list"
            )));
        }
        // Listed: being in scope is the match.
        let glob = scope_hit.or_else(|| self.globs.find(action_type))?;
        Some(Hit::new(format!(
            "action type `{action_type}` matches `{}`",
            glob.as_str()
        )))
    }
}

pub(crate) fn compile(def: &PolicyDef, globs: GlobList) -> Result<Rule, PolicyError> {
    let c = Obj::new(&def.conditions, "conditions", &["match"])?;
    let unlisted = match c.str("match")? {
        None | Some("listed") => false,
        Some("unlisted") => true,
        Some(other) => {
            return Err(c.err("match", format!("expected `listed` or `unlisted`, found `{other}`")));
        }
    };
    if globs.is_empty() {
        return Err(PolicyError::new(
            "action_types",
            "must not be empty for an `action_type` policy",
        ));
    }
    Ok(Rule { unlisted, globs })
}

#[cfg(test)]
mod tests {
    use crate::engine::tests::{Fx, ids};
    use crate::policy::tests::err_of;
    use crate::{Outcome, Verdict};
    use serde_json::json;

    #[test]
    fn listed_matches_in_scope_actions() {
        let fx = Fx::new(vec![json!({"name": "No deletes", "policy_type": "action_type",
                                      "action_types": ["delete_*"], "decision": "block"})]);
        let d = fx.decide("delete_user");
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.outcome, Outcome::Refused);
        assert_eq!(d.triggered[0].reason, "action type `delete_user` matches `delete_*`");
        assert_eq!(
            d.reasoning,
            "blocked by policy `No deletes` (p1): action type `delete_user` matches `delete_*`"
        );
        assert!(d.violation);
        assert_eq!(fx.decide("undelete_x").verdict, Verdict::Allow);
    }

    #[test]
    fn unlisted_is_an_allow_list() {
        let fx = Fx::new(vec![json!({"name": "Only reads", "policy_type": "action_type",
                                      "action_types": ["db.read", "tool.*"], "decision": "block",
                                      "conditions": {"match": "unlisted"}})]);
        assert_eq!(fx.decide("db.read").verdict, Verdict::Allow);
        assert_eq!(fx.decide("tool.search").verdict, Verdict::Allow);
        let d = fx.decide("db.write");
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(ids(&d.triggered), vec!["p1"]);
        assert_eq!(
            d.triggered[0].reason,
            "action type `db.write` is not in the allowed list"
        );
    }

    #[test]
    fn validation() {
        let e = err_of(json!({"name": "x", "policy_type": "action_type", "decision": "block"}));
        assert_eq!(e.field, "action_types");
        let e = err_of(json!({"name": "x", "policy_type": "action_type", "action_types": ["a"],
                              "decision": "block", "conditions": {"match": "some"}}));
        assert_eq!(e.field, "conditions.match");
        let e = err_of(json!({"name": "x", "policy_type": "action_type", "action_types": ["a"],
                              "decision": "block", "conditions": {"mtch": "listed"}}));
        assert_eq!(e.field, "conditions.mtch");
    }
}
