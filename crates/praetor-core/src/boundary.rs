//! The agent's own limits, checked before any policy: `scopes` (the action-type globs
//! the agent may perform; empty means no restriction) and `permission_boundary`
//! (`allowed_action_types`: when non-empty, the action must match one;
//! `denied_action_types`: the action must match none).
//!
//! Globs match ignoring ASCII case, as every action-type glob does (`crate::glob`).
//! Agent globs are parsed per decision (they change with the agent, not with the policy
//! set). An invalid glob fails closed: it never grants a scope and always denies. The
//! server should reject them when an agent is registered (`validate`).

use crate::action::{AgentFacts, PermissionBoundary};
use crate::glob::Glob;
use crate::policy::PolicyError;

fn matches(pattern: &str, action_type: &str) -> Option<bool> {
    Glob::action_type(pattern).ok().map(|g| g.is_match(action_type))
}

/// How an action falls outside the agent's boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// Not among what the agent may do (`scopes`, `allowed_action_types`): a just-in-time
    /// window or a delegation grant can cover it.
    NotGranted(String),
    /// Explicitly denied (`denied_action_types`): nothing but breakglass lifts it.
    Denied(String),
}

impl Outside {
    pub fn reason(&self) -> &str {
        match self {
            Outside::NotGranted(r) | Outside::Denied(r) => r,
        }
    }
}

/// Why `action_type` is outside the agent's boundary, or `None` when it is within.
pub fn check(agent: &AgentFacts, action_type: &str) -> Option<String> {
    classify(agent, action_type).map(|o| o.reason().to_owned())
}

/// As `check`, telling a missing grant from an explicit denial. Denials win.
pub fn classify(agent: &AgentFacts, action_type: &str) -> Option<Outside> {
    if let Some(reason) = denied(agent, action_type) {
        return Some(Outside::Denied(reason));
    }
    if !agent.scopes.is_empty() && !agent.scopes.iter().any(|p| matches(p, action_type) == Some(true)) {
        return Some(Outside::NotGranted(format!("action type `{action_type}` is outside the agent's scopes")));
    }
    let b = agent.permission_boundary.as_ref()?;
    if !b.allowed_action_types.is_empty()
        && !b
            .allowed_action_types
            .iter()
            .any(|p| matches(p, action_type) == Some(true))
    {
        return Some(Outside::NotGranted(format!(
            "action type `{action_type}` is not in permission_boundary.allowed_action_types"
        )));
    }
    None
}

/// An explicit `permission_boundary.denied_action_types` match (or an invalid glob
/// there), which nothing covers.
pub fn denied(agent: &AgentFacts, action_type: &str) -> Option<String> {
    let b = agent.permission_boundary.as_ref()?;
    for p in &b.denied_action_types {
        match matches(p, action_type) {
            Some(true) => {
                return Some(format!(
                    "action type `{action_type}` matches permission_boundary.denied_action_types `{p}`"
                ));
            }
            None => {
                return Some(format!(
                    "permission_boundary.denied_action_types has an invalid glob `{p}`"
                ));
            }
            Some(false) => {}
        }
    }
    None
}

/// Check an agent's new globs (they compile and are spelled visibly, see
/// `crate::glob::spelling`); errors name `scopes[i]` or
/// `permission_boundary.allowed_action_types[i]` / `denied_action_types[i]`.
pub fn validate(scopes: &[String], boundary: Option<&PermissionBoundary>) -> Result<(), PolicyError> {
    let each = |list: &[String], field: &str| -> Result<(), PolicyError> {
        for (i, p) in list.iter().enumerate() {
            crate::glob::validate(p).map_err(|e| e.at(format!("{field}[{i}]")))?;
        }
        Ok(())
    };
    each(scopes, "scopes")?;
    if let Some(b) = boundary {
        each(&b.allowed_action_types, "permission_boundary.allowed_action_types")?;
        each(&b.denied_action_types, "permission_boundary.denied_action_types")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(scopes: &[&str], allowed: &[&str], denied: &[&str]) -> AgentFacts {
        let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        AgentFacts {
            agent_id: "a".into(),
            name: "a".into(),
            trust_score: 80,
            scopes: v(scopes),
            permission_boundary: Some(PermissionBoundary {
                allowed_action_types: v(allowed),
                denied_action_types: v(denied),
            }),
        }
    }

    #[test]
    fn empty_lists_restrict_nothing() {
        assert_eq!(check(&agent(&[], &[], &[]), "anything"), None);
    }

    #[test]
    fn invalid_globs_fail_closed() {
        assert!(check(&agent(&["[bad"], &[], &[]), "x").is_some());
        assert!(check(&agent(&[], &[], &["[bad"]), "x").is_some());
        assert!(check(&agent(&["*"], &["[bad", "x"], &[]), "x").is_none());
    }

    #[test]
    fn scopes_and_denials_ignore_ascii_case() {
        let a = agent(&["db.*"], &[], &["db.drop*"]);
        assert!(matches!(classify(&a, "db.DROP_table"), Some(Outside::Denied(_))));
        assert_eq!(check(&a, "DB.read"), None);
        assert!(check(&agent(&[], &["db.read"], &[]), "DB.READ").is_none());
    }

    #[test]
    fn validate_refuses_invisible_characters_and_edge_whitespace() {
        let b = PermissionBoundary { allowed_action_types: vec![], denied_action_types: vec!["db.drop\u{200b}*".into()] };
        assert_eq!(validate(&[], Some(&b)).unwrap_err().field, "permission_boundary.denied_action_types[0]");
        assert_eq!(validate(&["db.* ".into()], None).unwrap_err().field, "scopes[0]");
    }

    #[test]
    fn validate_names_fields() {
        let b = PermissionBoundary {
            allowed_action_types: vec![],
            denied_action_types: vec!["ok".into(), "[".into()],
        };
        assert_eq!(
            validate(&["a".into()], Some(&b)).unwrap_err().field,
            "permission_boundary.denied_action_types[1]"
        );
        assert_eq!(validate(&["".into()], None).unwrap_err().field, "scopes[0]");
        assert!(validate(&["db.*".into()], None).is_ok());
    }
}
