//! Decision cases in the language-neutral corpus format (`tests/corpus/*.json`): parse
//! them and run them through `CompiledPolicySet::compile` + `decide`. Used by the corpus
//! test and by `praetor policy test` (a pack's unit tests).
//! The same files are run against the HTTP API and the SDKs, so this runner also checks
//! that each case can be replayed over the wire:
//! - every `history` entry is decided first, in time order, at its own time, with the
//!   history before it, and must be allowed (the server only records allowed actions);
//! - the agent's trust score is carried through those replays with `next_trust`, as the
//!   server would, and the final decision uses the resulting score.
//!
//! Case format (all keys other than `name`, `policies`, `request`, `expect` optional):
//! ```json
//! { "name": "…",
//!   "settings": { WorkspaceSettings },
//!   "policies": [ PolicyDef without policy_id: ids "p1", "p2"… in order unless given ],
//!   "agent": { "trust_score": 80, "scopes": [], "permission_boundary": null },
//!   "now": "2026-01-07T12:00:00Z",
//!   "history": [ { "action_type": "db.read", "seconds_ago": 120, "session_id": "s1" } ],
//!   "request": { "action_type": "…", "action_content": "…" | null, "metadata": {}, "session_id": "s1" },
//!   "expect": { "decision": "block", "outcome": "refused", "policies": ["p1"],
//!               "boundary_check": "within_scope", "shadow": [], "errors": [], "violation": true } }
//! ```
//! A history entry's session defaults to the request's `session_id`. An anonymous case
//! (no `agent`) has no agent history.
//!
//! Precedence cases add `authority` (and take no `history`): the agent's roles, open
//! windows, the grant the request names, active breakglass and the session it runs in:
//! ```json
//! "authority": { "roles": [ { "name", "allowed_action_types", "denied_action_types", "min_trust_level" } ],
//!                "windows": [ { "scopes": [], "action_types": [] } ],
//!                "grant": { "scopes": [], "action_types": [], "revoked": false,
//!                           "left": { "max_amount": { "USD": 10 }, "max_rows": 5, "max_recipients": 2 } },
//!                "breakglass": { "justification": "…" },
//!                "session": { "budgets": { "max_actions": 0 }, "killed": "reason" } }
//! ```

use std::collections::BTreeSet;

use crate::{
    ActionRequest, AgentFacts, CompiledPolicySet, Decision, DecisionInput, Identity, PastAction, PermissionBoundary,
    PolicyDef, WorkspaceSettings, decide, next_trust,
};
use crate::authority::{Authority, BreakglassFacts, GrantFacts, RoleFacts, WindowFacts};
use crate::session::{SessionFacts, SessionStatus};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

const DEFAULT_NOW: &str = "2026-01-07T12:00:00Z";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusFile {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    settings: Option<WorkspaceSettings>,
    #[serde(default)]
    pub policies: Vec<Value>,
    #[serde(default)]
    agent: Option<AgentSpec>,
    #[serde(default)]
    now: Option<String>,
    #[serde(default)]
    history: Vec<HistoryEntry>,
    #[serde(default)]
    authority: Option<AuthoritySpec>,
    request: RequestSpec,
    expect: Expect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuthoritySpec {
    #[serde(default)]
    roles: Vec<RoleSpec>,
    #[serde(default)]
    windows: Vec<ScopeSpec>,
    #[serde(default)]
    grant: Option<GrantSpec>,
    #[serde(default)]
    breakglass: Option<BreakglassSpec>,
    #[serde(default)]
    session: Option<SessionSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleSpec {
    name: String,
    #[serde(default)]
    allowed_action_types: Vec<String>,
    #[serde(default)]
    denied_action_types: Vec<String>,
    #[serde(default)]
    min_trust_level: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeSpec {
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    action_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantSpec {
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    action_types: Vec<String>,
    #[serde(default)]
    revoked: bool,
    /// What the grant has left of its amount, row and recipient budgets.
    #[serde(default)]
    left: crate::grant_budget::GrantLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakglassSpec {
    justification: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionSpec {
    #[serde(default)]
    budgets: crate::session::Budgets,
    #[serde(default)]
    killed: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSpec {
    trust_score: u8,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    permission_boundary: Option<PermissionBoundary>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryEntry {
    action_type: String,
    seconds_ago: i64,
    #[serde(default)]
    session_id: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestSpec {
    action_type: String,
    /// Absent → `None`; `null` → `Some(None)`.
    #[serde(default, deserialize_with = "present")]
    action_content: Option<Option<String>>,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    session_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: String,
    #[serde(default)]
    outcome: Option<String>,
    policies: Vec<String>,
    #[serde(default)]
    boundary_check: Option<String>,
    #[serde(default)]
    shadow: Option<Vec<String>>,
    #[serde(default)]
    errors: Option<Vec<String>>,
    #[serde(default)]
    violation: Option<bool>,
}


fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("bad time `{s}`: {e}"))
}

fn wire(v: impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn set(v: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

/// Run one case against its own `policies`; `Err` describes every mismatch.
pub fn run(case: &Case) -> Result<(), String> {
    let mut defs = Vec::new();
    for (i, v) in case.policies.iter().enumerate() {
        let mut d: PolicyDef = serde_json::from_value(v.clone()).map_err(|e| format!("policies[{i}]: {e}"))?;
        if d.policy_id.is_empty() {
            d.policy_id = format!("p{}", i + 1);
        }
        defs.push(d);
    }
    run_with(case, &defs)
}

/// Run one case against the given policies (its own `policies` are ignored): a pack's
/// unit tests. Expected policy ids name the pack's policies by `name`.
pub fn run_against(case: &Case, defs: &[PolicyDef]) -> Result<(), String> {
    let named: Vec<PolicyDef> = defs.iter().map(|d| PolicyDef { policy_id: d.name.clone(), ..d.clone() }).collect();
    run_with(case, &named)
}

fn run_with(case: &Case, defs: &[PolicyDef]) -> Result<(), String> {
    let defs = defs.to_vec();
    let set_ = CompiledPolicySet::compile(&defs).map_err(|e| format!("compile: {e}"))?;
    let settings = case.settings.clone().unwrap_or_default();
    let now_ms = parse_time(case.now.as_deref().unwrap_or(DEFAULT_NOW))?;
    let mut agent = case.agent.as_ref().map(|a| AgentFacts {
        agent_id: "agt_corpus".to_owned(),
        name: "corpus agent".to_owned(),
        trust_score: a.trust_score,
        scopes: a.scopes.clone(),
        permission_boundary: a.permission_boundary.clone(),
    });
    let identity = if agent.is_some() {
        Identity::Verified
    } else {
        Identity::Anonymous
    };
    let session = case.request.session_id.clone();

    // Replay the history, oldest first, as the HTTP runner will.
    let mut entries: Vec<&HistoryEntry> = case.history.iter().collect();
    entries.sort_by_key(|h| std::cmp::Reverse(h.seconds_ago));
    let mut agent_hist: Vec<PastAction> = Vec::new();
    let mut all_hist: Vec<(Option<String>, PastAction)> = Vec::new();
    let mut streak = 0u32;
    for h in entries {
        let at_ms = now_ms - h.seconds_ago * 1000;
        let h_session = h.session_id.clone().or_else(|| session.clone());
        let session_hist: Vec<PastAction> = all_hist
            .iter()
            .filter(|(s, _)| h_session.is_some() && *s == h_session)
            .map(|(_, a)| a.clone())
            .collect();
        let request = ActionRequest {
            action_type: h.action_type.clone(),
            session_id: h_session.clone(),
            ..ActionRequest::default()
        };
        let input = DecisionInput {
            request: &request,
            identity: &identity,
            agent: agent.as_ref(),
            agent_history: &agent_hist,
            session_history: &session_hist,
            agent_history_from_ms: i64::MIN,
            session_history_from_ms: i64::MIN,
            session: None,
            authority: Default::default(),
            now_ms: at_ms,
        };
        let d = decide(&input, &set_, &settings);
        if d.verdict.as_str() != "allow" {
            return Err(format!(
                "history entry `{}` ({}s ago) is not allowed when replayed ({}: {}); the HTTP runner could not record it",
                h.action_type,
                h.seconds_ago,
                d.verdict.as_str(),
                d.reasoning
            ));
        }
        if let Some(a) = agent.as_mut() {
            let (score, k) = next_trust(a.trust_score, streak, &d, settings.trust_baseline);
            a.trust_score = score;
            streak = k;
        }
        let past = PastAction {
            action_type: h.action_type.clone(),
            at_ms,
        };
        if agent.is_some() {
            agent_hist.push(past.clone());
        }
        all_hist.push((h_session, past));
    }

    let (content, redacted) = match &case.request.action_content {
        None => (None, false),
        Some(Some(s)) => (Some(s.clone()), false),
        Some(None) => (None, case.request.metadata.contains_key("content_sha256")),
    };
    let request = ActionRequest {
        action_type: case.request.action_type.clone(),
        content,
        content_redacted: redacted,
        metadata: case.request.metadata.clone(),
        session_id: session.clone(),
        refused_unread: None,
    };
    let session_hist: Vec<PastAction> = all_hist
        .iter()
        .filter(|(s, _)| session.is_some() && *s == session)
        .map(|(_, a)| a.clone())
        .collect();
    let input = DecisionInput {
        request: &request,
        identity: &identity,
        agent: agent.as_ref(),
        agent_history: &agent_hist,
        session_history: &session_hist,
        agent_history_from_ms: i64::MIN,
        session_history_from_ms: i64::MIN,
        session: None,
        authority: Default::default(),
        now_ms,
    };
    let facts = authority_facts(case)?;
    let session_facts = case.authority.as_ref().and_then(|a| a.session.as_ref()).map(|sp| SessionFacts {
        session_id: "s1".into(),
        status: if sp.killed.is_some() { SessionStatus::Killed } else { SessionStatus::Active },
        reason: sp.killed.clone(),
        expires_at_ms: None,
        budgets: sp.budgets.clone(),
        consumed: Default::default(),
    });
    let input = DecisionInput { authority: facts.authority(), session: session_facts.as_ref(), ..input };
    let d = decide(&input, &set_, &settings);
    check(&case.expect, &d)
}

/// The engine's authority facts for a precedence case.
struct Facts {
    roles: Vec<RoleFacts>,
    windows: Vec<WindowFacts>,
    grant: Option<GrantFacts>,
    breakglass: Option<BreakglassFacts>,
}

impl Facts {
    fn authority(&self) -> Authority<'_> {
        Authority { roles: &self.roles, windows: &self.windows, grant: self.grant.as_ref(), breakglass: self.breakglass.as_ref(), approval: None }
    }
}

fn authority_facts(case: &Case) -> Result<Facts, String> {
    let Some(a) = &case.authority else {
        return Ok(Facts { roles: vec![], windows: vec![], grant: None, breakglass: None });
    };
    if !case.history.is_empty() {
        return Err("a case with `authority` takes no `history`".into());
    }
    Ok(Facts {
        roles: a
            .roles
            .iter()
            .enumerate()
            .map(|(i, r)| RoleFacts {
                role_id: format!("r{}", i + 1),
                name: r.name.clone(),
                allowed_action_types: r.allowed_action_types.clone(),
                denied_action_types: r.denied_action_types.clone(),
                min_trust_level: r.min_trust_level,
            })
            .collect(),
        windows: a
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| WindowFacts { window_id: format!("w{}", i + 1), scopes: w.scopes.clone(), action_types: w.action_types.clone() })
            .collect(),
        grant: a.grant.as_ref().map(|g| GrantFacts {
            grant_id: "g1".into(),
            problem: g.revoked.then(|| "revoked".to_owned()),
            scopes: g.scopes.clone(),
            action_types: g.action_types.clone(),
            left: g.left.clone(),
            spent: None,
        }),
        breakglass: a.breakglass.as_ref().map(|b| BreakglassFacts { breakglass_id: "bg1".into(), justification: b.justification.clone() }),
    })
}

fn check(e: &Expect, d: &Decision) -> Result<(), String> {
    let mut problems = Vec::new();
    if d.verdict.as_str() != e.decision {
        problems.push(format!(
            "decision: expected `{}`, got `{}`",
            e.decision,
            d.verdict.as_str()
        ));
    }
    if let Some(o) = &e.outcome
        && d.outcome.as_str() != o
    {
        problems.push(format!("outcome: expected `{o}`, got `{}`", d.outcome.as_str()));
    }
    let got = set(d.triggered.iter().map(|t| t.policy_id.clone()));
    if got != set(e.policies.iter().cloned()) {
        problems.push(format!("policies: expected {:?}, got {:?}", e.policies, got));
    }
    if let Some(b) = &e.boundary_check
        && &wire(d.boundary) != b
    {
        problems.push(format!("boundary_check: expected `{b}`, got `{}`", wire(d.boundary)));
    }
    if let Some(s) = &e.shadow {
        let got = set(d.shadow.iter().map(|t| t.policy_id.clone()));
        if got != set(s.iter().cloned()) {
            problems.push(format!("shadow: expected {s:?}, got {got:?}"));
        }
    }
    if let Some(errs) = &e.errors {
        let got = set(d.errors.iter().map(|t| t.policy_id.clone()));
        if got != set(errs.iter().cloned()) {
            problems.push(format!("errors: expected {errs:?}, got {got:?}"));
        }
    }
    if let Some(v) = e.violation
        && d.violation != v
    {
        problems.push(format!("violation: expected {v}, got {}", d.violation));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.push(format!("reasoning was: {}", d.reasoning));
        Err(problems.join("\n    "))
    }
}

