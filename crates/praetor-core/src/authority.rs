//! Authority beyond the agent's own scopes: roles (RBAC), just-in-time temporal
//! windows, delegation grants, breakglass and human approvals. The server resolves each
//! object (is the window still open, is the grant still valid, is breakglass active);
//! the engine applies them, in one place, in this order (`docs/decisions.md`):
//!
//! 1. identity, a closed session (kill, expiry, revocation): always first, never lifted;
//! 2. roles and scopes: a role's denied type, trust below a role's minimum, or an
//!    explicit boundary denial refuses; an action outside the agent's scopes or its
//!    roles' allowed types is refused unless an open window or the request's grant
//!    covers it; a grant named by the request must be valid and cover the action;
//! 3. policies, combined;
//! 4. a fresh human approval of this exact action turns `escalate` into `allow`;
//! 5. breakglass turns the refusals of steps 2-3 into `allow`, recording what it
//!    overrode;
//! 6. the grant's amount, row and recipient budgets (`crate::grant_budget`), then
//!    session budgets.

use serde::{Deserialize, Serialize};

use crate::action::AgentFacts;
use crate::decision::Triggered;
use crate::glob::Glob;

fn any_match(patterns: &[String], action_type: &str) -> Option<String> {
    patterns.iter().find(|p| Glob::action_type(p).is_ok_and(|g| g.is_match(action_type))).cloned()
}

/// A role assigned to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleFacts {
    pub role_id: String,
    pub name: String,
    /// When non-empty (in any of the agent's roles), the action must match one of them
    /// across the agent's roles, or be covered by a window or grant.
    #[serde(default)]
    pub allowed_action_types: Vec<String>,
    /// Matching any refuses.
    #[serde(default)]
    pub denied_action_types: Vec<String>,
    #[serde(default)]
    pub min_trust_level: Option<u8>,
}

/// An open just-in-time window of the agent. Its `scopes` and `action_types` are both
/// action-type globs; either covers an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowFacts {
    pub window_id: String,
    pub scopes: Vec<String>,
    pub action_types: Vec<String>,
}

impl WindowFacts {
    fn covers(&self, action_type: &str) -> bool {
        any_match(&self.scopes, action_type).is_some() || any_match(&self.action_types, action_type).is_some()
    }
}

/// The delegation grant a request names. `problem` says why it cannot be used (revoked,
/// expired, exhausted, meant for another agent); `None` means it is valid now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantFacts {
    pub grant_id: String,
    pub problem: Option<String>,
    pub scopes: Vec<String>,
    pub action_types: Vec<String>,
    /// What the grant has left of its amount, row and recipient budgets
    /// (`crate::grant_budget`); unlimited when empty.
    #[serde(default)]
    pub left: crate::grant_budget::GrantLimits,
    /// Why the grant is used up, when `problem` is `None` only because a paid approval
    /// of this action took its last use: then only that approval's action may run
    /// through it (`ApprovalFacts::paid_grant`), and anything else is refused for this.
    #[serde(default)]
    pub spent: Option<String>,
}

impl GrantFacts {
    fn covers(&self, action_type: &str) -> bool {
        any_match(&self.scopes, action_type).is_some() || any_match(&self.action_types, action_type).is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakglassFacts {
    pub breakglass_id: String,
    pub justification: String,
}

/// A fresh human approval of exactly this action (same agent, same action hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalFacts {
    pub escalation_id: String,
    pub approver: String,
    pub reason: Option<String>,
    /// The action's cost was charged to its session when the approval was given: the
    /// action it allows is not charged to the session again.
    #[serde(default)]
    pub paid: bool,
    /// The grant the approval charged when it was given (one use, and what the action
    /// takes): the action it allows through that grant, and only that one, is not
    /// charged to it again.
    #[serde(default)]
    pub paid_grant: Option<String>,
    /// The approval added the action to its agent's and session's histories when it was
    /// given: the action it allows is that one, and is not counted again.
    #[serde(default)]
    pub counted: bool,
}

/// Everything beyond the agent's own scopes that bears on one decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct Authority<'a> {
    pub roles: &'a [RoleFacts],
    pub windows: &'a [WindowFacts],
    pub grant: Option<&'a GrantFacts>,
    pub breakglass: Option<&'a BreakglassFacts>,
    pub approval: Option<&'a ApprovalFacts>,
}

/// What authority did for a decision, reported in the answer and sealed in the vault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthorityOutcome {
    /// The window or grant that let an action outside the agent's scopes or roles run:
    /// `window:<id>` or `grant:<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_by: Option<String>,
    /// The grant to charge one use to (the action was allowed under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_used: Option<String>,
    /// What the action takes from the grant's amount, row and recipient budgets, when
    /// it limits any (`crate::grant_budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_charge: Option<crate::grant_budget::Quantities>,
    /// For an escalated action through a grant: the grant its approval will charge (one
    /// use, and `grant_charge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_on_approval: Option<String>,
    /// The action runs on an approval that charged its session when it was given
    /// (`ApprovalFacts::paid`): the session is not charged again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paid_at_approval: bool,
    /// The action runs through the grant its approval charged when it was given
    /// (`ApprovalFacts::paid_grant`): the grant is not charged again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grant_paid_at_approval: bool,
    /// The escalation whose approval let this action run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Breakglass that overrode refusals, and what it overrode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakglass_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<Triggered>,
}

/// Step 2 refused: the built-in id (`__role`, `__boundary`, `__grant`), its name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: &'static str,
    pub name: &'static str,
    pub reason: String,
    /// A boundary refusal sets `boundary_check: outside_scope`.
    pub outside_scope: bool,
}

fn refuse(id: &'static str, name: &'static str, reason: String, outside_scope: bool) -> Refusal {
    Refusal { id, name, reason, outside_scope }
}

/// A role's refusal, which no window or grant covers: a denied type, or trust below
/// the role's minimum.
fn role_denial(agent: &AgentFacts, roles: &[RoleFacts], action_type: &str) -> Option<Refusal> {
    for r in roles {
        for p in &r.denied_action_types {
            let reason = match Glob::action_type(p) {
                Ok(g) if g.is_match(action_type) => format!("role `{}` denies `{action_type}` (`{p}`)", r.name),
                Ok(_) => continue,
                // A denial that no longer compiles (stored before a rule of the glob
                // syntax tightened) denies everything, as a boundary's does: a denial
                // is never dropped unread. (An allow list's does not match, which also
                // fails closed.)
                Err(_) => format!("role `{}` has an invalid denied glob `{p}`", r.name),
            };
            return Some(refuse("__role", "role", reason, false));
        }
        if let Some(min) = r.min_trust_level
            && agent.trust_score < min
        {
            return Some(refuse("__role", "role", format!("role `{}` needs trust {min}; the agent has {}", r.name, agent.trust_score), false));
        }
    }
    None
}

/// What refuses the agent `action_type` whatever covers it (a window, a grant): its
/// roles' denials and trust minimums, and its explicit boundary denial. Every grantor
/// along a chain of grants must pass it for the grant to be used.
pub fn denial(agent: &AgentFacts, roles: &[RoleFacts], action_type: &str) -> Option<Refusal> {
    role_denial(agent, roles, action_type)
        .or_else(|| crate::boundary::denied(agent, action_type).map(|reason| refuse("__boundary", "boundary", reason, true)))
}

/// Step 2: roles, scopes, windows and the request's grant. Returns what covered an
/// action outside the agent's own limits, or why it is refused.
pub fn check(agent: Option<&AgentFacts>, authority: &Authority<'_>, action_type: &str) -> Result<AuthorityOutcome, Refusal> {
    let mut out = AuthorityOutcome::default();
    // A grant the request names must be usable and cover the action, whatever else.
    if let Some(g) = authority.grant {
        if let Some(problem) = &g.problem {
            return Err(refuse("__grant", "delegation grant", format!("grant `{}` cannot be used: {problem}", g.grant_id), false));
        }
        if !g.covers(action_type) {
            return Err(refuse(
                "__grant",
                "delegation grant",
                format!("grant `{}` does not cover action type `{action_type}`", g.grant_id),
                false,
            ));
        }
        out.grant_used = Some(g.grant_id.clone());
    }
    let cover = authority
        .windows
        .iter()
        .find(|w| w.covers(action_type))
        .map(|w| format!("window:{}", w.window_id))
        .or_else(|| authority.grant.map(|g| format!("grant:{}", g.grant_id)));
    let Some(agent) = agent else {
        return Ok(out);
    };
    if let Some(r) = role_denial(agent, authority.roles, action_type) {
        return Err(r);
    }
    let mut needs_cover: Option<(&'static str, &'static str, String, bool)> = None;
    let restricting: Vec<&RoleFacts> = authority.roles.iter().filter(|r| !r.allowed_action_types.is_empty()).collect();
    if !restricting.is_empty() && !restricting.iter().any(|r| any_match(&r.allowed_action_types, action_type).is_some()) {
        let names: Vec<&str> = restricting.iter().map(|r| r.name.as_str()).collect();
        needs_cover = Some(("__role", "role", format!("action type `{action_type}` is not allowed by the agent's roles ({})", names.join(", ")), false));
    }
    match crate::boundary::classify(agent, action_type) {
        Some(crate::boundary::Outside::Denied(reason)) => return Err(refuse("__boundary", "boundary", reason, true)),
        Some(crate::boundary::Outside::NotGranted(reason)) if needs_cover.is_none() => {
            needs_cover = Some(("__boundary", "boundary", reason, true));
        }
        _ => {}
    }
    if let Some((id, name, reason, outside)) = needs_cover {
        match cover {
            Some(c) => out.covered_by = Some(c),
            None => return Err(refuse(id, name, reason, outside)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(scopes: &[&str]) -> AgentFacts {
        AgentFacts {
            agent_id: "a".into(),
            name: "a".into(),
            trust_score: 60,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            permission_boundary: None,
        }
    }

    fn role(allowed: &[&str], denied: &[&str], min: Option<u8>) -> RoleFacts {
        RoleFacts {
            role_id: "r".into(),
            name: "analyst".into(),
            allowed_action_types: allowed.iter().map(|s| s.to_string()).collect(),
            denied_action_types: denied.iter().map(|s| s.to_string()).collect(),
            min_trust_level: min,
        }
    }

    fn window(scopes: &[&str]) -> WindowFacts {
        WindowFacts { window_id: "tw".into(), scopes: scopes.iter().map(|s| s.to_string()).collect(), action_types: vec![] }
    }

    #[test]
    fn roles_restrict_and_windows_cover() {
        let roles = [role(&["report.*"], &[], None)];
        let a = agent(&[]);
        let auth = Authority { roles: &roles, ..Authority::default() };
        assert!(check(Some(&a), &auth, "report.read").is_ok());
        let refused = check(Some(&a), &auth, "db.write").unwrap_err();
        assert_eq!(refused.id, "__role");
        let windows = [window(&["db.*"])];
        let auth = Authority { roles: &roles, windows: &windows, ..Authority::default() };
        assert_eq!(check(Some(&a), &auth, "db.write").unwrap().covered_by.as_deref(), Some("window:tw"));
    }

    #[test]
    fn denials_and_trust_minimums_are_not_covered() {
        let roles = [role(&[], &["db.drop*"], None)];
        let windows = [window(&["*"])];
        let auth = Authority { roles: &roles, windows: &windows, ..Authority::default() };
        assert_eq!(check(Some(&agent(&[])), &auth, "db.drop_table").unwrap_err().id, "__role");
        let roles = [role(&[], &[], Some(70))];
        let auth = Authority { roles: &roles, windows: &windows, ..Authority::default() };
        assert!(check(Some(&agent(&[])), &auth, "x").unwrap_err().reason.contains("trust 70"));
    }

    #[test]
    fn a_role_denial_that_does_not_compile_denies() {
        // Stored before the glob syntax tightened: dropped unread, it would let the
        // action it was written to deny through; it denies, as a boundary's does.
        let roles = [role(&[], &["[db.drop*"], None)];
        let windows = [window(&["*"])];
        let auth = Authority { roles: &roles, windows: &windows, ..Authority::default() };
        let refused = check(Some(&agent(&["*"])), &auth, "db.drop_table").unwrap_err();
        assert_eq!(refused.id, "__role");
        assert!(refused.reason.contains("invalid denied glob `[db.drop*`"), "{}", refused.reason);
    }

    /// Action types are matched ignoring ASCII case everywhere: `db.DROP_table` is the
    /// same action as `db.drop_table` to the tool that runs it.
    #[test]
    fn roles_windows_and_grants_ignore_ascii_case() {
        let roles = [role(&["report.*"], &["report.delete*"], None)];
        let a = agent(&[]);
        let auth = Authority { roles: &roles, ..Authority::default() };
        assert_eq!(check(Some(&a), &auth, "REPORT.Delete_all").unwrap_err().id, "__role");
        assert!(check(Some(&a), &auth, "Report.Read").is_ok());
        let windows = [window(&["db.*"])];
        let auth = Authority { roles: &roles, windows: &windows, ..Authority::default() };
        assert!(check(Some(&a), &auth, "DB.write").is_ok());
        let grant = GrantFacts { grant_id: "g".into(), problem: None, scopes: vec!["pay.*".into()], action_types: vec![], left: Default::default(), spent: None };
        let auth = Authority { grant: Some(&grant), ..Authority::default() };
        assert!(check(Some(&agent(&["read.*"])), &auth, "PAY.send").is_ok());
    }

    #[test]
    fn denial_is_what_nothing_covers() {
        let mut a = agent(&["read.*"]);
        assert_eq!(denial(&a, &[], "pay.send"), None, "outside the scopes is not a denial: a grant may cover it");
        let roles = [role(&["report.*"], &["pay.*"], None)];
        assert_eq!(denial(&a, &roles, "pay.send").unwrap().id, "__role");
        assert_eq!(denial(&a, &roles, "db.read"), None, "a role's allowed list is not a denial");
        a.permission_boundary = Some(crate::action::PermissionBoundary { allowed_action_types: vec![], denied_action_types: vec!["pay.*".into()] });
        let r = denial(&a, &[], "pay.send").unwrap();
        assert_eq!((r.id, r.outside_scope), ("__boundary", true));
    }

    #[test]
    fn scopes_are_covered_by_a_valid_grant_only() {
        let a = agent(&["read.*"]);
        let grant = GrantFacts { grant_id: "g".into(), problem: None, scopes: vec!["pay.*".into()], action_types: vec![], left: Default::default(), spent: None };
        let auth = Authority { grant: Some(&grant), ..Authority::default() };
        let out = check(Some(&a), &auth, "pay.send").unwrap();
        assert_eq!((out.covered_by.as_deref(), out.grant_used.as_deref()), (Some("grant:g"), Some("g")));
        assert_eq!(check(Some(&a), &auth, "mail.send").unwrap_err().id, "__grant");
        let spent = GrantFacts { problem: Some("max_uses (2) reached".into()), ..grant.clone() };
        let auth = Authority { grant: Some(&spent), ..Authority::default() };
        assert!(check(Some(&a), &auth, "pay.send").unwrap_err().reason.contains("max_uses"));
        let auth = Authority::default();
        let r = check(Some(&a), &auth, "pay.send").unwrap_err();
        assert!(r.outside_scope && r.id == "__boundary");
    }
}
