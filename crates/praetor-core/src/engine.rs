//! Stages 3 and 4 of the pipeline: evaluate every policy, then combine.
//!
//! The order of one decision:
//! 0. **Closed session.** An action in a session that is killed, expired, ended or
//!    out of budget answers `terminate` (`__session`), before anything else.
//! 1. **Identity.** `Identity::Failed` blocks at once (`__identity`); no policy runs and
//!    it is not a violation (the agent may not even be who it says). Then an action too
//!    large to evaluate (`ActionRequest::refused_unread`) blocks the same way
//!    (`__unread`): no policy, approval or breakglass runs, and it is not a violation.
//! 2. **Boundary.** A known agent's `scopes` and `permission_boundary` are checked; an
//!    action outside them blocks at once (`__boundary`, a violation). Anonymous
//!    requests are within scope.
//! 3. **Policies.** Every enabled policy whose `action_types` match is evaluated (see
//!    `crate::policy` for each kind). Shadow policies are evaluated the same way and
//!    reported in `Decision::shadow`, never in the verdict.
//! 4. **Combine** (`crate::combine`): the most restrictive effect wins; with no match the
//!    workspace default applies.
//! 5. **Budgets** (`crate::session`): an allowed action in a session is charged; the
//!    charge that would exceed a budget answers `terminate` (`__budget`) and ends the
//!    session, and so does an escalated action's. An escalation within the budgets
//!    carries its cost (`approval_charge`), which the server charges when a person
//!    approves (the SDK then runs the action without asking again); the retry an
//!    approval so paid for allows is not charged again. An unreadable cost is refused.
//!
//! Fail closed: a policy that cannot be evaluated (a metadata type error, a time out of
//! range) is reported in `errors`; if its effect is `block` or `escalate` it also counts
//! as matching with that effect and the reason `evaluation error: …`.
//!
//! Redacted content (`content_redacted`): `content_pattern` and `pii` policies that read
//! `content` cannot see it. With `on_redacted_content: skip` the content is not
//! evaluated (metadata still is). With `escalate` / `block`, such a policy whose own
//! effect is `escalate` or `block` and that found nothing in the metadata matches with
//! the reason `content redacted` and the effect `min(setting, own effect)`. Policies whose
//! effect is `allow` or `allow_with_warning` never match because of redaction: unseen
//! content must not satisfy an allow rule.
//!
//! Work is shared between policies: each field is read at most once per distinct
//! content pattern and once by the PII detectors (for the union of the categories in
//! use), lazily, only when an in-scope policy needs it.

use std::cell::OnceCell;

use crate::action::{ActionRequest, AgentFacts, Identity, PastAction};
use crate::combine::{self, Entry};
use crate::decision::{BoundaryCheck, Decision, EvalError, Outcome, Triggered, Verdict};
use crate::fold::{self, Folded};
use crate::metadata_texts::{self, PatternTexts, Piece};
use crate::pii::{self, PiiMatch};
use crate::authority::{self, Authority};
use crate::session::{self, SessionFacts};
use crate::policy::{CompiledPolicySet, Effect, Hit, OnRedactedContent, PolicyMode, WorkspaceSettings};
use crate::policy::content_pattern::FieldScreen;

/// Everything one decision depends on. `now_ms` is milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct DecisionInput<'a> {
    pub request: &'a ActionRequest,
    pub identity: &'a Identity,
    /// `None` for anonymous requests and failed identities.
    pub agent: Option<&'a AgentFacts>,
    /// Earlier allowed actions of this agent, oldest first.
    pub agent_history: &'a [PastAction],
    /// Earlier allowed actions in this session, oldest first (empty without a session).
    pub session_history: &'a [PastAction],
    /// The histories hold every allowed action at or after these times (ms); earlier
    /// ones may have been dropped (a history that hit its size cap). A velocity or
    /// sequence policy whose window reaches further back cannot count exactly and fails
    /// closed. `i64::MIN` when nothing was dropped.
    pub agent_history_from_ms: i64,
    pub session_history_from_ms: i64,
    /// The runtime session the action runs in, if any: its status and budgets.
    pub session: Option<&'a SessionFacts>,
    /// Roles, open windows, the request's grant, breakglass and approvals.
    pub authority: Authority<'a>,
    pub now_ms: i64,
}

/// Decide one action. Pure: same input, same decision.
pub fn decide(input: &DecisionInput<'_>, policies: &CompiledPolicySet, settings: &WorkspaceSettings) -> Decision {
    // A run that is over stays over, whoever asks: a killed, expired or exhausted
    // session (and so a revoked agent's or credential's) answers `terminate` first.
    if let Some(reason) = input.session.and_then(|s| s.closed_reason(input.now_ms)) {
        return terminate("__session", "session", reason, None);
    }
    if let Identity::Failed { check, reason } = input.identity {
        return identity_failure(check, reason);
    }
    if let Some(reason) = &input.request.refused_unread {
        return Decision::plain(Verdict::Block, Outcome::Refused, vec![builtin("__unread", "unread", "block", reason.clone())], format!("blocked: refused unread: {reason}"));
    }
    let mut decision = match authority::check(input.agent, &input.authority, &input.request.action_type) {
        Err(r) => authority_refusal(r),
        Ok(outcome) => {
            let mut d = decide_policies(input, policies, settings);
            d.authority = outcome;
            d
        }
    };
    decision = approve(decision, &input.authority);
    decision = break_glass(decision, &input.authority);
    let grant = input.authority.grant.filter(|g| decision.authority.grant_used.as_ref() == Some(&g.grant_id));
    // The grant an approval this decision runs on charged when it was given.
    let paid_grant = input.authority.approval.filter(|_| decision.authority.approved_by.is_some()).and_then(|a| a.paid_grant.as_deref());
    match (decision.verdict, grant) {
        (Verdict::Allow, Some(g)) if paid_grant == Some(g.grant_id.as_str()) => decision.authority.grant_paid_at_approval = true,
        // Used up: only the paid approval's own action could still run through it.
        (Verdict::Allow | Verdict::Escalate, Some(g)) if g.spent.is_some() => {
            let why = format!("cannot be used: {}", g.spent.as_deref().unwrap_or_default());
            decision = grant_refusal(decision, g, why);
        }
        (Verdict::Allow, Some(g)) => decision = charge_grant(decision, input.request, g),
        (Verdict::Escalate, Some(g)) => decision = hold_grant_for_approval(decision, input.request, g),
        _ => {}
    }
    if decision.verdict != Verdict::Allow {
        // A refused action is not charged to the grant it named.
        decision.authority.grant_used = None;
    }
    match input.session {
        Some(_) if decision.verdict == Verdict::Allow && decision.authority.paid_at_approval => decision,
        Some(s) if decision.verdict == Verdict::Allow => charge_session(decision, input.request, s),
        // An escalation whose cost cannot be read, or would exceed a budget, could never
        // be allowed once approved: it is refused (or the session terminated) now rather
        // than put before a person whose approval the SDK would act on.
        Some(s) if decision.verdict == Verdict::Escalate => match session::charge_for(input.request, &s.budgets) {
            Err(e) => cost_unreadable(decision, &e),
            Ok(charge) => match session::exceeded(s, &charge) {
                Some(reason) => {
                    // The policies that escalated stay listed after the budget, so their
                    // violations (and alerts, and review queue) are recorded as for any
                    // escalation.
                    let matched: Vec<_> = decision.triggered.iter().filter(|t| t.policy_id != "__default").cloned().collect();
                    let violation = decision.violation;
                    let mut ended = terminate("__budget", "budget", format!("session `{}`: {reason}", s.session_id), Some(decision));
                    ended.triggered.extend(matched);
                    ended.violation = violation;
                    ended
                }
                None => Decision { approval_charge: Some(charge), ..decision },
            },
        },
        _ => decision,
    }
}

/// An allowed action through a grant that limits amounts, rows or recipients takes
/// what its metadata states from what the grant has left; one it cannot read, or past
/// what is left, is refused as any other grant refusal is (`__grant`).
fn charge_grant(mut decision: Decision, request: &ActionRequest, g: &authority::GrantFacts) -> Decision {
    match grant_take(request, g) {
        Ok(taken) => {
            decision.authority.grant_charge = taken;
            decision
        }
        Err(problem) => grant_refusal(decision, g, problem),
    }
}

/// An escalated action through a grant: its approval will charge the grant one use and
/// what the action takes (the SDK runs an approved action without asking again), so
/// one the grant cannot cover is refused now rather than put before a person.
fn hold_grant_for_approval(mut decision: Decision, request: &ActionRequest, g: &authority::GrantFacts) -> Decision {
    match grant_take(request, g) {
        Ok(taken) => {
            decision.authority.grant_on_approval = Some(g.grant_id.clone());
            decision.authority.grant_charge = taken;
            decision
        }
        Err(problem) => grant_refusal(decision, g, problem),
    }
}

/// What `request` takes from the grant's amount, row and recipient budgets (`None`
/// when it limits none), or why it cannot.
fn grant_take(request: &ActionRequest, g: &authority::GrantFacts) -> Result<Option<crate::grant_budget::Quantities>, String> {
    if g.left.is_unlimited() {
        return Ok(None);
    }
    let taken = crate::grant_budget::charge_for(request, &g.left).map_err(|e| format!("`{}` {}", e.field, e.message))?;
    match crate::grant_budget::exceeded(&g.left, &taken) {
        Some(past) => Err(format!("past its budget: {past}")),
        None => Ok(Some(taken)),
    }
}

/// `block` (`__grant`): the grant cannot cover the action. The policies that matched
/// stay listed after it, so their violations are recorded (not the built-ins, such as a
/// breakglass that no longer allows anything).
fn grant_refusal(decision: Decision, g: &authority::GrantFacts, problem: String) -> Decision {
    let refusal = authority::Refusal { id: "__grant", name: "delegation grant", reason: format!("grant `{}`: {problem}", g.grant_id), outside_scope: false };
    let mut refused = authority_refusal(refusal);
    refused.triggered.extend(decision.triggered.into_iter().filter(|t| !t.policy_id.starts_with("__")));
    refused.shadow = decision.shadow;
    refused
}

/// Budgets come last: an action the policies allow is charged to its session, and the
/// charge that would exceed a budget terminates the session (see `crate::session`).
fn charge_session(mut decision: Decision, request: &ActionRequest, s: &SessionFacts) -> Decision {
    let charge = match session::charge_for(request, &s.budgets) {
        Ok(c) => c,
        Err(e) => return cost_unreadable(decision, &e),
    };
    if let Some(reason) = session::exceeded(s, &charge) {
        return terminate("__budget", "budget", format!("session `{}`: {reason}", s.session_id), Some(decision));
    }
    decision.charge = Some(charge);
    decision
}

/// `block`: the action's cost, in a session, cannot be read or counted (`ChargeError`).
/// The policies that matched stay listed after it, so their violations are recorded
/// as for any refused action.
fn cost_unreadable(decision: Decision, e: &session::ChargeError) -> Decision {
    let reason = format!("`{}` {}", e.field, e.message);
    let mut triggered = vec![builtin("__budget", "budget", Effect::Block.as_str(), reason.clone())];
    triggered.extend(decision.triggered.into_iter().filter(|t| t.policy_id != "__default"));
    Decision {
        verdict: Verdict::Block,
        outcome: Outcome::Refused,
        reasoning: format!("blocked: the action's cost cannot be read: {reason}"),
        triggered,
        errors: Vec::new(),
        boundary: decision.boundary,
        violation: false,
        shadow: decision.shadow,
        charge: None,
        approval_charge: None,
        ends_session: None,
        authority: Default::default(),
    }
}

fn builtin(id: &str, name: &str, effect: &str, reason: String) -> Triggered {
    Triggered { policy_id: id.to_owned(), name: name.to_owned(), decision: effect.to_owned(), reason }
}

/// `terminate`: the whole run stops. A budget termination also ends the session.
fn terminate(id: &str, name: &str, reason: String, after: Option<Decision>) -> Decision {
    let ends_session = (id == "__budget").then(|| reason.clone());
    let (boundary, shadow) = match after {
        Some(d) => (d.boundary, d.shadow),
        None => (BoundaryCheck::WithinScope, Vec::new()),
    };
    Decision {
        verdict: Verdict::Terminate,
        outcome: Outcome::Terminated,
        reasoning: format!("terminated: {reason}"),
        triggered: vec![builtin(id, name, "terminate", reason)],
        errors: Vec::new(),
        boundary,
        violation: false,
        shadow,
        charge: None,
        approval_charge: None,
        ends_session,
        authority: Default::default(),
    }
}

/// Step 4: a fresh approval of exactly this action lets an escalated action run.
fn approve(mut d: Decision, authority: &Authority<'_>) -> Decision {
    let Some(a) = authority.approval else { return d };
    if d.verdict == Verdict::Allow && (a.paid || a.counted) {
        // The policies allow the action now (they changed since it was escalated), but
        // its approval already counted it (charged its session and grant, added it to
        // the histories): the approval is used up by it, and the action is not counted
        // twice.
        d.authority.approved_by = Some(a.escalation_id.clone());
        d.authority.paid_at_approval = a.paid;
        d.reasoning = format!("{} (it was counted when escalation `{}` was approved)", d.reasoning, a.escalation_id);
        return d;
    }
    if d.verdict != Verdict::Escalate {
        return d;
    }
    d.verdict = Verdict::Allow;
    d.outcome = Outcome::Allowed;
    d.violation = false;
    d.reasoning = format!(
        "allowed: escalation `{}` was approved by `{}`{} (it had been: {})",
        a.escalation_id,
        a.approver,
        a.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
        d.reasoning
    );
    d.authority.approved_by = Some(a.escalation_id.clone());
    d.authority.paid_at_approval = a.paid;
    d
}

/// Step 5: breakglass overrides refusals of roles, scopes and policies (never identity,
/// closed sessions, named grants that cannot be used, or budgets). The refusals it
/// overrode stay on the record.
fn break_glass(mut d: Decision, authority: &Authority<'_>) -> Decision {
    let Some(bg) = authority.breakglass else { return d };
    if !matches!(d.verdict, Verdict::Block | Verdict::Escalate) {
        return d;
    }
    // A grant the request named that is revoked, spent or does not cover the action is
    // a revocation, which breakglass never lifts.
    if d.triggered.iter().any(|t| t.policy_id == "__grant") {
        return d;
    }
    d.authority.overridden = std::mem::take(&mut d.triggered);
    d.authority.breakglass_id = Some(bg.breakglass_id.clone());
    d.triggered = vec![Triggered {
        policy_id: "__breakglass".to_owned(),
        name: "breakglass".to_owned(),
        decision: Effect::Allow.as_str().to_owned(),
        reason: format!("breakglass `{}`: {}", bg.breakglass_id, bg.justification),
    }];
    d.reasoning = format!("allowed under breakglass `{}` ({}); it overrode: {}", bg.breakglass_id, bg.justification, d.reasoning);
    d.verdict = Verdict::Allow;
    d.outcome = Outcome::AllowedWithWarning;
    d.violation = false;
    d
}

fn authority_refusal(r: authority::Refusal) -> Decision {
    let mut d = boundary_refusal(r.reason);
    d.triggered[0].policy_id = r.id.to_owned();
    d.triggered[0].name = r.name.to_owned();
    if !r.outside_scope {
        d.boundary = BoundaryCheck::WithinScope;
    }
    d
}

/// Policies and combine: what decides an action once identity, the session's state and
/// the agent's authority allow it to be considered.
fn decide_policies(input: &DecisionInput<'_>, policies: &CompiledPolicySet, settings: &WorkspaceSettings) -> Decision {
    let action_type = input.request.action_type.as_str();
    let cx = EvalCtx::new(*input, policies, settings);
    let mut live: Vec<Entry> = Vec::new();
    let mut shadow: Vec<Entry> = Vec::new();
    let mut errors: Vec<EvalError> = Vec::new();
    for p in policies.policies() {
        let scope_hit = if p.scope.is_empty() {
            None
        } else {
            match p.scope.find(action_type) {
                Some(g) => Some(g),
                None => continue,
            }
        };
        let target = if p.mode == PolicyMode::Shadow {
            &mut shadow
        } else {
            &mut live
        };
        match p.eval(scope_hit, &cx) {
            Ok(Some(hit)) => target.push(Entry::new(p, hit.effect.unwrap_or(p.effect), hit.reason)),
            Ok(None) => {}
            Err(message) => {
                if p.effect.refuses() {
                    target.push(Entry::new(p, p.effect, format!("evaluation error: {message}")));
                }
                errors.push(EvalError {
                    policy_id: p.id.clone(),
                    message,
                });
            }
        }
    }
    combine::finish(live, shadow, errors, settings)
}

fn identity_failure(check: &str, reason: &str) -> Decision {
    let triggered = Triggered {
        policy_id: "__identity".to_owned(),
        name: "identity".to_owned(),
        decision: Effect::Block.as_str().to_owned(),
        reason: reason.to_owned(),
    };
    Decision::plain(Verdict::Block, Outcome::Refused, vec![triggered], format!("blocked: identity check `{check}` failed: {reason}"))
}

fn boundary_refusal(reason: String) -> Decision {
    let reasoning = format!("blocked: {reason}");
    let triggered = Triggered { policy_id: "__boundary".to_owned(), name: "boundary".to_owned(), decision: Effect::Block.as_str().to_owned(), reason };
    Decision { boundary: BoundaryCheck::OutsideScope, violation: true, ..Decision::plain(Verdict::Block, Outcome::Refused, vec![triggered], reasoning) }
}

/// What a content-reading policy can see of the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentView<'a> {
    Visible(&'a str),
    Redacted,
    Absent,
}

/// The per-request state shared by the policies of one decision: the input and the
/// lazily computed scans of each field.
pub(crate) struct EvalCtx<'a> {
    pub input: DecisionInput<'a>,
    settings: &'a WorkspaceSettings,
    set: &'a CompiledPolicySet,
    /// Per content pattern: does it match the content?
    content_patterns: OnceCell<Vec<OnceCell<bool>>>,
    /// Per content pattern: the first metadata string it matches, by path.
    metadata_patterns: OnceCell<Vec<OnceCell<Option<String>>>>,
    /// The metadata texts content patterns read, listed once per request.
    pattern_texts: OnceCell<PatternTexts<'a>>,
    /// Which content patterns may match the content, its folded form, and the metadata
    /// texts: each read once for all patterns (`PatternBank::screen`), once a field has
    /// been asked about more than a few patterns (`FieldScreen`).
    content_screen: FieldScreen,
    folded_screen: FieldScreen,
    metadata_screen: FieldScreen,
    content_pii: OnceCell<Vec<PiiMatch>>,
    metadata_pii: OnceCell<Vec<(String, PiiMatch)>>,
    /// The visible content folded for detection (`crate::fold`), if folding changes it.
    folded_content: OnceCell<Option<Folded>>,
}

impl<'a> EvalCtx<'a> {
    fn new(input: DecisionInput<'a>, set: &'a CompiledPolicySet, settings: &'a WorkspaceSettings) -> EvalCtx<'a> {
        EvalCtx {
            input,
            settings,
            set,
            content_patterns: OnceCell::new(),
            metadata_patterns: OnceCell::new(),
            pattern_texts: OnceCell::new(),
            content_screen: FieldScreen::default(),
            folded_screen: FieldScreen::default(),
            metadata_screen: FieldScreen::default(),
            content_pii: OnceCell::new(),
            metadata_pii: OnceCell::new(),
            folded_content: OnceCell::new(),
        }
    }

    pub(crate) fn content(&self) -> ContentView<'a> {
        let r = self.input.request;
        if r.content_redacted {
            ContentView::Redacted
        } else {
            match &r.content {
                Some(s) => ContentView::Visible(s.as_str()),
                None => ContentView::Absent,
            }
        }
    }

    fn visible_content(&self) -> Option<&'a str> {
        match self.content() {
            ContentView::Visible(s) => Some(s),
            _ => None,
        }
    }

    /// The visible content folded for detection, when folding changes it.
    fn folded_content(&self) -> Option<&Folded> {
        self.folded_content.get_or_init(|| self.visible_content().and_then(fold::fold)).as_ref()
    }

    /// Does content pattern `slot` match the visible content, as sent or folded?
    /// Computed once per request.
    pub(crate) fn content_matches(&self, slot: usize) -> bool {
        let Some(text) = self.visible_content() else {
            return false;
        };
        let bank = &self.set.patterns;
        let cells = self
            .content_patterns
            .get_or_init(|| (0..bank.len()).map(|_| OnceCell::new()).collect());
        let matches = |screen: &FieldScreen, text: &str| !screen.rules_out(bank, slot, text) && bank.is_match(slot, text);
        cells.get(slot).is_some_and(|c| {
            *c.get_or_init(|| matches(&self.content_screen, text) || self.folded_content().is_some_and(|f| matches(&self.folded_screen, &f.text)))
        })
    }

    /// The path of the first metadata string (in key order) that content pattern `slot`
    /// matches. Computed once per request.
    pub(crate) fn metadata_match(&self, slot: usize) -> Option<&str> {
        let bank = &self.set.patterns;
        let cells = self
            .metadata_patterns
            .get_or_init(|| (0..bank.len()).map(|_| OnceCell::new()).collect());
        cells
            .get(slot)?
            .get_or_init(|| {
                let request: &'a ActionRequest = self.input.request;
                let texts = self.pattern_texts.get_or_init(|| PatternTexts::new(&request.metadata));
                if self.metadata_screen.rules_out(bank, slot, &texts.joined) || bank.is_match_in_none(slot, &texts.joined) {
                    return None;
                }
                texts.first_match(|s| bank.is_match(slot, s))
            })
            .as_deref()
    }

    /// PII in the content, for every category any PII policy uses.
    pub(crate) fn content_pii(&self) -> &[PiiMatch] {
        self.content_pii.get_or_init(|| {
            let mut out = Vec::new();
            if let Some(text) = self.visible_content() {
                scan_folded_too(text, self.folded_content(), &mut out, |t, out| pii::scan_into(t, self.set.pii_categories, out));
            }
            out
        })
    }

    /// PII in metadata strings, object keys and numbers, with their paths. A number
    /// (or an array of numbers) is read as the digits it is written with, for the
    /// categories a number can hold. A key holding PII is named by its position in the
    /// paths below it, so a reason never repeats it.
    pub(crate) fn metadata_pii(&self) -> &[(String, PiiMatch)] {
        self.metadata_pii.get_or_init(|| {
            let all = self.set.pii_categories;
            let numeric = pii::NUMBER_CATEGORIES.intersection(all);
            let mut out = Vec::new();
            let mut buf = Vec::new();
            metadata_texts::walk(&self.input.request.metadata, !numeric.is_empty(), &mut |path, piece| {
                buf.clear();
                // A number's digits are never folded: they are ASCII already.
                match piece {
                    Piece::Key(s) => scan_folded_too(s, fold::fold(s).as_ref(), &mut buf, |t, out| pii::scan_into(t, all, out)),
                    Piece::Value(s) => scan_folded_too(s, fold::fold(s).as_ref(), &mut buf, |t, out| pii::scan_value_into(t, all, out)),
                    Piece::Number(s) => {
                        pii::scan_value_into(s, numeric, &mut buf);
                        if let Some(key) = metadata_texts::last_key(path)
                            && numeric.contains(pii::Category::Ssn)
                        {
                            pii::scan_ssn_number_into(s, key, &mut buf);
                        }
                    }
                }
                if !buf.is_empty() {
                    let p = metadata_texts::path_text(path);
                    out.extend(buf.iter().map(|m| (p.clone(), *m)));
                }
                !buf.is_empty()
            });
            out
        })
    }

    /// The match a content policy with effect `effect` reports when the content it needs
    /// is redacted, per `on_redacted_content`.
    pub(crate) fn redacted_content_hit(&self, effect: Effect) -> Option<Hit> {
        let setting = match self.settings.on_redacted_content {
            OnRedactedContent::Skip => return None,
            OnRedactedContent::Escalate => Effect::Escalate,
            OnRedactedContent::Block => Effect::Block,
        };
        if !effect.refuses() {
            return None;
        }
        Some(Hit {
            reason: "content redacted".to_owned(),
            effect: Some(setting.min(effect)),
        })
    }
}

/// `scan` over `text`, then over its folded form (`crate::fold`) if there is one: a
/// match found only there is added with its range put back into `text`'s.
fn scan_folded_too(text: &str, folded: Option<&Folded>, out: &mut Vec<PiiMatch>, scan: impl Fn(&str, &mut Vec<PiiMatch>)) {
    let first = out.len();
    scan(text, out);
    let Some(folded) = folded else { return };
    let mut more = Vec::new();
    scan(&folded.text, &mut more);
    for m in more {
        let (start, end) = folded.original_range(text, m.start, m.end);
        if !out[first..].iter().any(|o| o.category == m.category && o.start < end && start < o.end) {
            out.push(PiiMatch { category: m.category, start, end });
        }
    }
    out[first..].sort_unstable_by_key(|m| (m.start, m.category, m.end));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::PolicyDef;
    use serde_json::{Value, json};

    /// A test fixture: policies (ids `p1`, `p2`… unless given), settings and request
    /// facts, built fluently, decided by action type.
    #[derive(Clone)]
    pub(crate) struct Fx {
        defs: Vec<PolicyDef>,
        pub settings: WorkspaceSettings,
        pub agent: Option<AgentFacts>,
        pub identity: Identity,
        pub request: ActionRequest,
        pub agent_history: Vec<PastAction>,
        pub session_history: Vec<PastAction>,
        pub now_ms: i64,
    }

    pub(crate) fn ids(t: &[Triggered]) -> Vec<&str> {
        t.iter().map(|x| x.policy_id.as_str()).collect()
    }

    /// 2026-01-07T12:00:00Z, a Wednesday.
    pub(crate) const NOW: i64 = 1_767_787_200_000;

    impl Fx {
        pub(crate) fn new(policies: Vec<Value>) -> Fx {
            let defs = policies
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut d: PolicyDef = serde_json::from_value(v).unwrap();
                    if d.policy_id.is_empty() {
                        d.policy_id = format!("p{}", i + 1);
                    }
                    d
                })
                .collect();
            Fx {
                defs,
                settings: WorkspaceSettings::default(),
                agent: Some(AgentFacts {
                    agent_id: "agt_1".into(),
                    name: "agent".into(),
                    trust_score: 80,
                    scopes: vec![],
                    permission_boundary: None,
                }),
                identity: Identity::Verified,
                request: ActionRequest::default(),
                agent_history: vec![],
                session_history: vec![],
                now_ms: NOW,
            }
        }

        pub(crate) fn settings(mut self, v: Value) -> Fx {
            self.settings = serde_json::from_value(v).unwrap();
            self
        }
        pub(crate) fn trust(mut self, t: u8) -> Fx {
            if let Some(a) = self.agent.as_mut() {
                a.trust_score = t;
            }
            self
        }
        pub(crate) fn anonymous(mut self) -> Fx {
            self.agent = None;
            self.identity = Identity::Anonymous;
            self
        }
        pub(crate) fn agent(mut self, v: Value) -> Fx {
            self.agent = Some(serde_json::from_value(v).unwrap());
            self
        }
        pub(crate) fn content(mut self, s: &str) -> Fx {
            self.request.content = Some(s.to_owned());
            self
        }
        pub(crate) fn unread(mut self, reason: &str) -> Fx {
            self.request.refused_unread = Some(reason.to_owned());
            self
        }
        pub(crate) fn redacted(mut self) -> Fx {
            self.request.content = None;
            self.request.content_redacted = true;
            self
        }
        pub(crate) fn metadata(mut self, v: Value) -> Fx {
            let Value::Object(m) = v else {
                panic!("metadata must be an object")
            };
            self.request.metadata = m;
            self
        }
        pub(crate) fn at(mut self, ms: i64) -> Fx {
            self.now_ms = ms;
            self
        }
        fn past(&self, h: &[(&str, i64)]) -> Vec<PastAction> {
            let mut v: Vec<PastAction> = h
                .iter()
                .map(|(t, secs)| PastAction {
                    action_type: (*t).to_owned(),
                    at_ms: self.now_ms - secs * 1000,
                })
                .collect();
            v.sort_by_key(|a| a.at_ms);
            v
        }
        /// Earlier actions of the agent: (action type, seconds ago).
        pub(crate) fn history(mut self, h: &[(&str, i64)]) -> Fx {
            self.agent_history = self.past(h);
            self
        }
        pub(crate) fn session_history(mut self, h: &[(&str, i64)]) -> Fx {
            self.session_history = self.past(h);
            self
        }
        pub(crate) fn compiled(&self) -> CompiledPolicySet {
            CompiledPolicySet::compile(&self.defs).unwrap()
        }
        pub(crate) fn decide(&self, action_type: &str) -> Decision {
            self.decide_with(&self.compiled(), action_type)
        }
        /// Decide with `set` in place of this fixture's own policies.
        pub(crate) fn decide_with(&self, set: &CompiledPolicySet, action_type: &str) -> Decision {
            let mut request = self.request.clone();
            request.action_type = action_type.to_owned();
            let input = DecisionInput {
                request: &request,
                identity: &self.identity,
                agent: self.agent.as_ref(),
                agent_history: &self.agent_history,
                session_history: &self.session_history,
                agent_history_from_ms: i64::MIN,
                session_history_from_ms: i64::MIN,
                session: None,
                authority: Default::default(),
                now_ms: self.now_ms,
            };
            decide(&input, set, &self.settings)
        }
    }

    fn block(name: &str, types: &[&str]) -> Value {
        json!({"name": name, "policy_type": "action_type", "action_types": types, "decision": "block"})
    }

    #[test]
    fn identity_failure_blocks_before_policies() {
        let mut fx = Fx::new(vec![json!({"name": "allow all", "policy_type": "action_type",
                                          "action_types": ["*"], "decision": "allow"})]);
        fx.identity = Identity::Failed {
            check: "signature_invalid".into(),
            reason: "signature does not verify".into(),
        };
        fx.agent = None;
        let d = fx.decide("x");
        assert_eq!((d.verdict, d.outcome), (Verdict::Block, Outcome::Refused));
        assert_eq!(ids(&d.triggered), vec!["__identity"]);
        assert_eq!(d.triggered[0].name, "identity");
        assert_eq!(d.triggered[0].decision, "block");
        assert_eq!(d.triggered[0].reason, "signature does not verify");
        assert!(!d.violation);
        assert_eq!(
            d.reasoning,
            "blocked: identity check `signature_invalid` failed: signature does not verify"
        );
    }

    #[test]
    fn an_unread_action_blocks_before_any_policy() {
        let reason = "`action_content` is 600000 bytes long; the limit is 524288";
        let fx = Fx::new(vec![json!({"name": "allow all", "policy_type": "action_type",
                                      "action_types": ["*"], "decision": "allow"})])
        .unread(reason);
        let d = fx.decide("x");
        assert_eq!((d.verdict, d.outcome), (Verdict::Block, Outcome::Refused));
        assert_eq!(ids(&d.triggered), vec!["__unread"]);
        assert_eq!((d.triggered[0].name.as_str(), d.triggered[0].reason.as_str()), ("unread", reason));
        assert!(!d.violation, "no rule was broken: trust is not lowered");
        assert_eq!(d.reasoning, format!("blocked: refused unread: {reason}"));
        // A failed identity is still the one named: it is the more basic refusal.
        let mut fx = fx;
        fx.identity = Identity::Failed { check: "unknown_agent".into(), reason: "who".into() };
        fx.agent = None;
        assert_eq!(ids(&fx.decide("x").triggered), vec!["__identity"]);
    }

    #[test]
    fn boundary_scopes_and_permission_boundary() {
        let fx = Fx::new(vec![
            json!({"name": "allow", "policy_type": "action_type", "action_types": ["*"], "decision": "allow"}),
        ]);
        let scoped = fx
            .clone()
            .agent(json!({"agent_id": "a", "name": "n", "trust_score": 80, "scopes": ["db.read*", "tool.*"]}));
        assert_eq!(scoped.decide("tool.search").boundary, BoundaryCheck::WithinScope);
        let d = scoped.decide("db.write");
        assert_eq!((d.verdict, d.boundary), (Verdict::Block, BoundaryCheck::OutsideScope));
        assert_eq!(ids(&d.triggered), vec!["__boundary"]);
        assert!(d.violation);
        assert_eq!(
            d.triggered[0].reason,
            "action type `db.write` is outside the agent's scopes"
        );

        let bounded = fx.clone().agent(json!({"agent_id": "a", "name": "n", "trust_score": 80,
            "permission_boundary": {"allowed_action_types": ["db.*"], "denied_action_types": ["db.drop*"]}}));
        assert_eq!(bounded.decide("db.read").verdict, Verdict::Allow);
        let d = bounded.decide("db.drop_table");
        assert_eq!(d.boundary, BoundaryCheck::OutsideScope);
        assert_eq!(
            d.triggered[0].reason,
            "action type `db.drop_table` matches permission_boundary.denied_action_types `db.drop*`"
        );
        let d = bounded.decide("email.send");
        assert_eq!(
            d.triggered[0].reason,
            "action type `email.send` is not in permission_boundary.allowed_action_types"
        );

        let anon = fx.anonymous();
        assert_eq!(anon.decide("anything").boundary, BoundaryCheck::WithinScope);
    }

    #[test]
    fn combine_orders_by_effect_then_priority_then_id() {
        let fx = Fx::new(vec![
            json!({"name": "warn", "policy_type": "action_type", "action_types": ["x"], "decision": "allow_with_warning", "priority": 100}),
            json!({"name": "esc", "policy_type": "action_type", "action_types": ["x"], "decision": "escalate"}),
            json!({"name": "blk-lo", "policy_type": "action_type", "action_types": ["x"], "decision": "block", "priority": 1}),
            json!({"name": "blk-hi", "policy_type": "action_type", "action_types": ["x"], "decision": "block", "priority": 9}),
            json!({"name": "blk-lo2", "policy_type": "action_type", "action_types": ["*"], "decision": "block", "priority": 1, "policy_id": "a_first"}),
            json!({"name": "allow", "policy_type": "action_type", "action_types": ["x"], "decision": "allow", "priority": 50}),
        ]);
        let d = fx.decide("x");
        assert_eq!(ids(&d.triggered), vec!["p4", "a_first", "p3", "p2", "p1", "p6"]);
        assert_eq!(d.verdict, Verdict::Block);
        assert!(
            d.reasoning.starts_with(
                "blocked by policy `blk-hi` (p4): action type `x` matches `x`; also `blk-lo2` (a_first), `blk-lo` (p3)"
            ),
            "{}",
            d.reasoning
        );
    }

    #[test]
    fn effects_map_to_verdicts() {
        for (effect, verdict, outcome, violation) in [
            ("block", Verdict::Block, Outcome::Refused, true),
            ("escalate", Verdict::Escalate, Outcome::Escalated, true),
            ("allow_with_warning", Verdict::Allow, Outcome::AllowedWithWarning, false),
            ("allow", Verdict::Allow, Outcome::Allowed, false),
        ] {
            let d = Fx::new(vec![
                json!({"name": "n", "policy_type": "action_type", "action_types": ["x"], "decision": effect}),
            ])
            .decide("x");
            assert_eq!(
                (d.verdict, d.outcome, d.violation),
                (verdict, outcome, violation),
                "{effect}"
            );
            assert_eq!(d.triggered[0].decision, effect);
        }
    }

    #[test]
    fn default_decision() {
        let d = Fx::new(vec![block("b", &["delete_*"])]).decide("read");
        assert_eq!((d.verdict, d.outcome), (Verdict::Allow, Outcome::Allowed));
        assert!(d.triggered.is_empty());
        assert_eq!(d.reasoning, "no policy matched; default allow");

        let deny = Fx::new(vec![block("b", &["delete_*"])]).settings(json!({"default_decision": "block"}));
        let d = deny.decide("read");
        assert_eq!((d.verdict, d.outcome), (Verdict::Block, Outcome::Refused));
        assert_eq!(ids(&d.triggered), vec!["__default"]);
        assert_eq!(d.triggered[0].decision, "block");
        assert!(!d.violation, "a default refusal is not a violation");
        assert_eq!(d.reasoning, "no policy matched; default block");

        let warn = Fx::new(vec![]).settings(json!({"default_decision": "allow_with_warning"}));
        let d = warn.decide("read");
        assert_eq!((d.verdict, d.outcome), (Verdict::Allow, Outcome::AllowedWithWarning));
        assert_eq!(ids(&d.triggered), vec!["__default"]);

        // An allow policy that matches overrides a default block.
        let allow = Fx::new(vec![
            json!({"name": "reads", "policy_type": "action_type", "action_types": ["read"], "decision": "allow"}),
        ])
        .settings(json!({"default_decision": "block"}));
        let d = allow.decide("read");
        assert_eq!((d.verdict, d.outcome), (Verdict::Allow, Outcome::Allowed));
        assert_eq!(ids(&d.triggered), vec!["p1"]);
        assert_eq!(
            d.reasoning,
            "allowed by policy `reads` (p1): action type `read` matches `read`"
        );
    }

    #[test]
    fn empty_action_types_scope_every_action() {
        let p = json!({"name": "low trust anywhere", "policy_type": "threshold", "trust_threshold": 90, "decision": "escalate"});
        let fx = Fx::new(vec![p]);
        for t in ["a", "db.read", "x:y/z"] {
            assert_eq!(fx.decide(t).verdict, Verdict::Escalate, "{t}");
        }
        let scoped = json!({"name": "low trust on payments", "policy_type": "threshold", "trust_threshold": 90,
                            "decision": "escalate", "action_types": ["payment.*"]});
        let fx = Fx::new(vec![scoped]);
        assert_eq!(fx.decide("payment.send").verdict, Verdict::Escalate);
        assert_eq!(fx.decide("payments").verdict, Verdict::Allow);
    }

    #[test]
    fn disabled_policies_are_skipped() {
        let mut p = block("b", &["*"]);
        p["enabled"] = json!(false);
        let d = Fx::new(vec![p]).decide("x");
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.triggered.is_empty());
    }

    #[test]
    fn shadow_policies_never_change_the_verdict() {
        let mut s = block("shadow block", &["x"]);
        s["mode"] = json!("shadow");
        let warn =
            json!({"name": "w", "policy_type": "action_type", "action_types": ["x"], "decision": "allow_with_warning"});
        let d = Fx::new(vec![s.clone(), warn]).decide("x");
        assert_eq!((d.verdict, d.outcome), (Verdict::Allow, Outcome::AllowedWithWarning));
        assert_eq!(ids(&d.triggered), vec!["p2"]);
        assert_eq!(ids(&d.shadow), vec!["p1"]);
        assert!(!d.violation);
        let d = Fx::new(vec![s])
            .settings(json!({"default_decision": "escalate"}))
            .decide("x");
        assert_eq!(
            d.verdict,
            Verdict::Escalate,
            "default still applies when only shadow policies match"
        );
        assert_eq!(ids(&d.triggered), vec!["__default"]);
        assert_eq!(ids(&d.shadow), vec!["p1"]);
    }

    fn bad_metadata_rule(effect: &str) -> Value {
        json!({"name": "amount", "policy_type": "metadata", "decision": effect,
               "conditions": {"rule": {"field": "amount", "op": ">", "value": 100}}})
    }

    #[test]
    fn fail_closed_on_evaluation_errors() {
        for (effect, verdict) in [("block", Verdict::Block), ("escalate", Verdict::Escalate)] {
            let d = Fx::new(vec![bad_metadata_rule(effect)])
                .metadata(json!({"amount": "a lot"}))
                .decide("pay");
            assert_eq!(d.verdict, verdict, "{effect}");
            assert_eq!(ids(&d.triggered), vec!["p1"]);
            assert_eq!(
                d.triggered[0].reason,
                "evaluation error: field `amount` is a string, not a number, for `>`"
            );
            assert_eq!(d.errors.len(), 1);
            assert_eq!(d.errors[0].policy_id, "p1");
            assert!(d.violation);
        }
    }

    #[test]
    fn erroring_allow_policies_are_reported_only() {
        for effect in ["allow", "allow_with_warning"] {
            let d = Fx::new(vec![bad_metadata_rule(effect)])
                .metadata(json!({"amount": "a lot"}))
                .decide("pay");
            assert_eq!((d.verdict, d.outcome), (Verdict::Allow, Outcome::Allowed), "{effect}");
            assert!(d.triggered.is_empty());
            assert_eq!(ids_of_errors(&d), vec!["p1"]);
        }
        // and the default still applies
        let d = Fx::new(vec![bad_metadata_rule("allow")])
            .settings(json!({"default_decision": "block"}))
            .metadata(json!({"amount": "a lot"}))
            .decide("pay");
        assert_eq!(ids(&d.triggered), vec!["__default"]);
    }

    fn ids_of_errors(d: &Decision) -> Vec<&str> {
        d.errors.iter().map(|e| e.policy_id.as_str()).collect()
    }

    #[test]
    fn shadow_errors_do_not_fail_closed() {
        let mut p = bad_metadata_rule("block");
        p["mode"] = json!("shadow");
        let d = Fx::new(vec![p]).metadata(json!({"amount": "a lot"})).decide("pay");
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(ids(&d.shadow), vec!["p1"]);
        assert_eq!(ids_of_errors(&d), vec!["p1"]);
    }

    fn content_block() -> Value {
        json!({"name": "secrets", "policy_type": "content_pattern", "decision": "block",
               "conditions": {"patterns": ["password"]}})
    }

    fn pii_block() -> Value {
        json!({"name": "pii", "policy_type": "pii", "decision": "block"})
    }

    #[test]
    fn redacted_content_skip() {
        for p in [content_block(), pii_block()] {
            let d = Fx::new(vec![p.clone()]).redacted().decide("x");
            assert_eq!(d.verdict, Verdict::Allow);
            assert!(d.triggered.is_empty());
            // metadata is still evaluated
            let d = Fx::new(vec![p])
                .redacted()
                .metadata(json!({"note": "password bob@example.com"}))
                .decide("x");
            assert_eq!(d.verdict, Verdict::Block);
        }
    }

    #[test]
    fn redacted_content_escalate_and_block() {
        for p in [content_block(), pii_block()] {
            let d = Fx::new(vec![p.clone()])
                .settings(json!({"on_redacted_content": "escalate"}))
                .redacted()
                .decide("x");
            assert_eq!(d.verdict, Verdict::Escalate);
            assert_eq!(d.triggered[0].reason, "content redacted");
            assert_eq!(d.triggered[0].decision, "escalate");
            assert!(d.violation);
            let d = Fx::new(vec![p])
                .settings(json!({"on_redacted_content": "block"}))
                .redacted()
                .decide("x");
            assert_eq!(d.verdict, Verdict::Block);
            assert_eq!(d.triggered[0].reason, "content redacted");
        }
    }

    #[test]
    fn redaction_never_exceeds_the_policy_effect() {
        let mut esc = content_block();
        esc["decision"] = json!("escalate");
        let d = Fx::new(vec![esc])
            .settings(json!({"on_redacted_content": "block"}))
            .redacted()
            .decide("x");
        assert_eq!(d.verdict, Verdict::Escalate);
        assert_eq!(d.triggered[0].decision, "escalate");
        // An allow-type content policy never matches because of redaction.
        let mut warn = content_block();
        warn["decision"] = json!("allow_with_warning");
        let d = Fx::new(vec![warn])
            .settings(json!({"on_redacted_content": "block", "default_decision": "block"}))
            .redacted()
            .decide("x");
        assert_eq!(ids(&d.triggered), vec!["__default"]);
    }

    #[test]
    fn redaction_ignores_metadata_only_policies() {
        let p = json!({"name": "m", "policy_type": "content_pattern", "decision": "block",
                       "conditions": {"patterns": ["x"], "fields": ["metadata"]}});
        let d = Fx::new(vec![p])
            .settings(json!({"on_redacted_content": "block"}))
            .redacted()
            .decide("a");
        assert_eq!(d.verdict, Verdict::Allow);
    }

    #[test]
    fn redaction_with_a_metadata_match_reports_the_match() {
        let d = Fx::new(vec![content_block()])
            .settings(json!({"on_redacted_content": "escalate"}))
            .redacted()
            .metadata(json!({"q": "password"}))
            .decide("x");
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.triggered[0].reason, "metadata.q matches pattern `password`");
    }

    #[test]
    fn every_kind_together() {
        let fx = Fx::new(vec![
            block("deletes", &["delete_*"]),
            json!({"name": "low trust", "policy_type": "threshold", "trust_threshold": 30, "decision": "escalate"}),
            content_block(),
            pii_block(),
            json!({"name": "big", "policy_type": "metadata", "decision": "escalate",
                   "conditions": {"rule": {"field": "amount", "op": ">", "value": 1000}}}),
            json!({"name": "night", "policy_type": "temporal", "decision": "allow_with_warning",
                   "conditions": {"blocked_hours": [0, 1, 2, 3, 4, 5]}}),
            json!({"name": "rate", "policy_type": "sequence", "decision": "block",
                   "conditions": {"velocity": {"max": 10, "window_seconds": 60}}}),
        ]);
        let d = fx
            .clone()
            .content("hello")
            .metadata(json!({"amount": 5}))
            .decide("read");
        assert_eq!((d.verdict, d.outcome), (Verdict::Allow, Outcome::Allowed));
        let d = fx
            .clone()
            .trust(10)
            .content("my password")
            .metadata(json!({"amount": 5000}))
            .decide("delete_user");
        assert_eq!(ids(&d.triggered), vec!["p1", "p3", "p2", "p5"]);
        let night = fx.at(NOW - 9 * 3600 * 1000).decide("read");
        assert_eq!(
            (night.verdict, night.outcome),
            (Verdict::Allow, Outcome::AllowedWithWarning)
        );
        assert_eq!(
            night.reasoning,
            "allowed with warning by policy `night` (p6): local time wed 2026-01-07 03:00 UTC: hour 3 is in blocked_hours"
        );
    }

    #[test]
    fn scans_are_shared_and_stable() {
        // Two PII policies with different categories over the same content.
        let cards = json!({"name": "cards", "policy_type": "pii", "decision": "block", "conditions": {"categories": ["credit_card"]}});
        let mail = json!({"name": "mail", "policy_type": "pii", "decision": "escalate", "conditions": {"categories": ["email"]}});
        let fx = Fx::new(vec![cards, mail]);
        let d = fx.clone().content("bob@example.com").decide("x");
        assert_eq!(ids(&d.triggered), vec!["p2"]);
        let d = fx.content("4111111111111111 bob@example.com").decide("x");
        assert_eq!(ids(&d.triggered), vec!["p1", "p2"]);
    }

    #[test]
    fn decide_is_deterministic() {
        let fx = Fx::new(vec![content_block(), pii_block()]).content("password 4111111111111111");
        assert_eq!(fx.decide("x"), fx.decide("x"));
    }
}
