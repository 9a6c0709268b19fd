//! Authority objects: roles, just-in-time windows, delegation grants, breakglass and
//! escalations. They live in the workspace's `LiveState` (read by every decision under
//! its lock) and in the store's `objects` table. This module turns them into the
//! engine's facts for one decision, and applies what the decision changed (a grant use,
//! an approval consumed, a new escalation).

use std::collections::HashMap;

use praetor_core::grant_budget::{GrantLimits, Quantities};
use praetor_core::authority::{ApprovalFacts, Authority, BreakglassFacts, GrantFacts, RoleFacts, WindowFacts};
use praetor_core::{Decision, Triggered, Verdict, WorkspaceSettings};
use praetor_store::ObjectRecord;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::clock::iso;
use crate::secrets::{new_id, sha256_hex};

/// A typed authority record, stored as JSON in the `objects` table.
pub trait Object: Serialize + DeserializeOwned + Clone {
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn agent(&self) -> Option<&str>;
    fn status(&self, now_ms: i64) -> &'static str;
    fn version(&mut self) -> &mut u64;
    fn created_at(&self) -> i64;

    fn to_record(&self, workspace_id: &str, now_ms: i64) -> ObjectRecord {
        let mut copy = self.clone();
        let version = *copy.version();
        ObjectRecord {
            workspace_id: workspace_id.to_owned(),
            kind: Self::KIND.to_owned(),
            object_id: self.id().to_owned(),
            agent_id: self.agent().map(str::to_owned),
            status: self.status(now_ms).to_owned(),
            body: serde_json::to_value(self).unwrap_or(Value::Null),
            created_at: self.created_at(),
            updated_at: now_ms,
            version,
        }
    }

    fn from_record(r: &ObjectRecord) -> Option<Self> {
        serde_json::from_value(r.body.clone()).ok()
    }
}

macro_rules! object_impl {
    ($t:ty, $kind:expr, $id:ident) => {
        impl Object for $t {
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.$id
            }
            fn agent(&self) -> Option<&str> {
                self.agent_ref()
            }
            fn status(&self, now_ms: i64) -> &'static str {
                self.status_at(now_ms)
            }
            fn version(&mut self) -> &mut u64 {
                &mut self.version
            }
            fn created_at(&self) -> i64 {
                self.created_at
            }
        }
    };
}
pub(crate) use object_impl;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Role {
    pub role_id: String,
    pub name: String,
    pub description: Option<String>,
    pub allowed_action_types: Vec<String>,
    pub denied_action_types: Vec<String>,
    pub min_trust_level: Option<u8>,
    pub agent_ids: Vec<String>,
    pub created_at: i64,
    pub version: u64,
}

impl Role {
    fn status_at(&self, _now: i64) -> &'static str {
        "active"
    }
    fn agent_ref(&self) -> Option<&str> {
        None
    }
}
object_impl!(Role, "role", role_id);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub window_id: String,
    pub agent_id: String,
    pub scopes: Vec<String>,
    pub action_types: Vec<String>,
    pub reason: Option<String>,
    pub revoked: bool,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub version: u64,
}

impl Window {
    fn agent_ref(&self) -> Option<&str> {
        Some(self.agent_id.as_str())
    }

    pub fn status_at(&self, now: i64) -> &'static str {
        if self.revoked {
            "revoked"
        } else if now >= self.expires_at {
            "expired"
        } else {
            "open"
        }
    }
}
object_impl!(Window, "window", window_id);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub grant_id: String,
    pub source_agent_id: String,
    pub target_agent_id: String,
    pub scopes: Vec<String>,
    pub action_types: Vec<String>,
    pub parent_grant_id: Option<String>,
    pub max_uses: Option<u64>,
    pub uses: u64,
    /// Uses carved out for re-delegations: they are no longer the grant's to spend.
    pub reserved: u64,
    /// Limits on the totals of the actions allowed through it beyond their count:
    /// amount, rows, recipients (`praetor_core::grant_budget`).
    #[serde(default)]
    pub limits: GrantLimits,
    /// What its actions took from `limits`.
    #[serde(default)]
    pub used: Quantities,
    /// What it lent re-delegations out of `limits`: no longer its to spend.
    #[serde(default)]
    pub lent: Quantities,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub revoke_reason: Option<String>,
    pub instruction: Option<String>,
    pub constraints: Value,
    pub created_by: String,
    pub created_at: i64,
    pub version: u64,
}

impl Grant {
    fn agent_ref(&self) -> Option<&str> {
        Some(self.target_agent_id.as_str())
    }

    pub fn status_at(&self, now: i64) -> &'static str {
        if self.revoked {
            "revoked"
        } else if self.expires_at.is_some_and(|e| now >= e) {
            "expired"
        } else if self.remaining().is_some_and(|r| r == 0) {
            "exhausted"
        } else {
            "active"
        }
    }

    /// What it has left of `limits`, after its actions and what it lent.
    pub fn limits_left(&self) -> GrantLimits {
        let mut taken = self.used.clone();
        taken.add(&self.lent);
        self.limits.left(&taken)
    }

    /// Uses left to spend (`None`: unlimited).
    pub fn remaining(&self) -> Option<u64> {
        self.max_uses.map(|m| m.saturating_sub(self.uses + self.reserved))
    }

    /// `problem`, except that uses already spent are none: for the action of an approval
    /// that charged its use when it was given.
    pub fn problem_past_uses(&self, agent_id: Option<&str>, now: i64) -> Option<String> {
        match self.status_at(now) {
            "exhausted" => self.holder_problem(agent_id),
            _ => self.problem(agent_id, now),
        }
    }

    /// Why the grant cannot be used by `agent_id` now.
    pub fn problem(&self, agent_id: Option<&str>, now: i64) -> Option<String> {
        match self.status_at(now) {
            "active" => self.holder_problem(agent_id),
            "revoked" => Some(format!("revoked ({})", self.revoke_reason.as_deref().unwrap_or("no reason given"))),
            "expired" => Some("expired".into()),
            _ => Some(format!("max_uses ({}) reached", self.max_uses.unwrap_or(0))),
        }
    }

    /// Why `agent_id` is not the one the grant was made for.
    fn holder_problem(&self, agent_id: Option<&str>) -> Option<String> {
        match agent_id {
            Some(a) if a == self.target_agent_id => None,
            Some(a) => Some(format!("it was granted to `{}`, not `{a}`", self.target_agent_id)),
            None => Some("the request names no agent".into()),
        }
    }

    /// Its budgets as the SDK sends them: `max_actions` (its `max_uses`) and `limits`.
    pub fn budgets_view(&self) -> Value {
        let mut v = json!(self.limits);
        v["max_actions"] = json!(self.max_uses);
        v
    }

    /// What its actions used: their count and what they took from `limits`.
    pub fn consumed_view(&self) -> Value {
        let mut v = json!(self.used);
        v["actions"] = json!(self.uses);
        v
    }

    pub fn view(&self, now: i64) -> Value {
        json!({
            "grant_id": self.grant_id,
            "source_agent_id": self.source_agent_id,
            "target_agent_id": self.target_agent_id,
            "attenuated_scopes": self.scopes,
            "scopes": self.scopes,
            "action_types": self.action_types,
            "parent_grant_id": self.parent_grant_id,
            "status": self.status_at(now),
            "is_valid": self.status_at(now) == "active",
            "uses": self.uses,
            "max_uses": self.max_uses,
            "remaining_uses": self.remaining(),
            "budgets": self.budgets_view(),
            "consumed": self.consumed_view(),
            "lent": self.lent,
            "expires_at": self.expires_at.map(iso),
            "instruction": self.instruction,
            "constraints": self.constraints,
            "created_at": iso(self.created_at),
        })
    }
}
object_impl!(Grant, "grant", grant_id);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review {
    pub outcome: String,
    pub notes: Option<String>,
    pub reviewer: String,
    pub reviewed_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Breakglass {
    pub breakglass_id: String,
    pub agent_id: String,
    pub justification: String,
    pub severity: String,
    pub closed_at: Option<i64>,
    pub triggered_by: String,
    pub review: Option<Review>,
    /// Decisions whose refusal it overrode.
    pub overrides: u64,
    pub created_at: i64,
    pub expires_at: i64,
    pub version: u64,
}

impl Breakglass {
    fn agent_ref(&self) -> Option<&str> {
        Some(self.agent_id.as_str())
    }

    pub fn status_at(&self, now: i64) -> &'static str {
        if self.closed_at.is_some() || now >= self.expires_at {
            "closed"
        } else {
            "active"
        }
    }
}
object_impl!(Breakglass, "breakglass", breakglass_id);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Escalation {
    pub escalation_id: String,
    pub decision_id: String,
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub action_type: String,
    /// SHA-256 of the action's canonical form: an approval binds to exactly this action.
    pub action_hash: String,
    pub reasoning: String,
    pub policies: Vec<Triggered>,
    pub raised_by_key: String,
    /// The credential that signed the request that raised it (agents that sign their
    /// requests): revoking it voids the escalation, as revoking the credential a session
    /// was started with voids that session's.
    #[serde(default)]
    pub credential_id: Option<String>,
    /// `pending | approved | rejected | expired`
    pub state: String,
    pub resolution_reason: Option<String>,
    pub approver_key: Option<String>,
    pub resolved_at: Option<i64>,
    /// Until when an approval lets its action run, fixed when it is given (the
    /// freshness setting then); none in records from before it was kept.
    #[serde(default)]
    pub fresh_until: Option<i64>,
    /// The decision that used the approval (an approval authorises one action once).
    pub used_by_decision: Option<String>,
    /// The review queue a `redirect` rule sent it to.
    #[serde(default)]
    pub queue: Option<String>,
    /// What the action costs its session (raised in one): charged when it is
    /// approved, since the SDK runs an approved action without asking again. None in
    /// records from before it was kept; their action is charged on its retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_charge: Option<praetor_core::session::Charge>,
    /// The grant the request named, which the approval charges one use and
    /// `grant_charge` (what the action takes from its amount, row and recipient
    /// budgets, when it limits any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_charge: Option<Quantities>,
    /// The approval was charged to the session (`approval_charge`) and the grant
    /// (`grant_id`): the retry it allows is not charged again.
    #[serde(default)]
    pub charged_at_approval: bool,
    /// When the approval added the action to its agent's and session's histories
    /// (velocity and sequence policies), since the SDK runs it without asking again: the
    /// retry it allows is that action, evaluated without it and not added again. None
    /// in records from before this was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_at: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    pub version: u64,
}

impl Escalation {
    fn agent_ref(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    pub fn status_at(&self, now: i64) -> &'static str {
        match self.state.as_str() {
            "pending" if now >= self.expires_at => "expired",
            "pending" => "pending",
            "approved" => "approved",
            "rejected" => "rejected",
            _ => "expired",
        }
    }

    /// Approved and not used by a decision: a retry of its action may still be allowed.
    fn is_unused_approval(&self) -> bool {
        self.state == "approved" && self.used_by_decision.is_none()
    }

    /// Pending, or approved and unused: it may yet allow its action.
    pub fn is_open(&self) -> bool {
        self.state == "pending" || self.is_unused_approval()
    }

    /// What it was raised for is gone (its agent, its session): it expires, saying why
    /// in `resolution_reason` (which the SDK reports), and never allows.
    pub fn void(&mut self, reason: &str) {
        self.state = "expired".into();
        self.resolution_reason = Some(reason.to_owned());
    }

    /// Why it can no longer authorise its action, whatever a person decides: its agent
    /// is gone or deactivated, or the session it was raised in is closed. `agent` and
    /// `session` are its agent and session as held; one it names that is not held
    /// counts as gone (fail closed), so a caller looks both up in the store first, or
    /// skips escalations whose agent or session it does not hold (the sweeper).
    /// `credentials` are this node's copies of credentials: a session started with one
    /// revoked (not rotated) acts no more (`pipeline::identify`), so nor does an
    /// approval of its escalation, should the revocation's kill not have landed.
    pub fn void_reason(
        &self,
        agent: Option<&praetor_store::Agent>,
        session: Option<&praetor_store::Session>,
        credentials: &HashMap<String, praetor_store::Credential>,
        now: i64,
    ) -> Option<String> {
        if let Some(a) = &self.agent_id {
            match agent {
                None => return Some(format!("agent `{a}` no longer exists")),
                Some(x) if !x.is_active => return Some(format!("agent `{a}` is deactivated")),
                Some(_) => {}
            }
        }
        if let Some(c) = &self.credential_id
            && credentials.get(c).is_some_and(|c| c.revoked_at.is_some() && !c.rotated)
        {
            return Some(format!("it was raised by a request signed with credential `{c}`, which is revoked"));
        }
        let id = self.session_id.as_ref()?;
        match session {
            None => Some(format!("session `{id}` no longer exists")),
            // A session past its `ttl_seconds` is over, as the engine reads it, even
            // before the sweeper has stored its expiry.
            Some(s) => closed_session_reason(s).or_else(|| past_ttl_reason(s, now)).or_else(|| {
                let c = s.credential_id.as_ref()?;
                let revoked = credentials.get(c).is_some_and(|c| c.revoked_at.is_some() && !c.rotated);
                revoked.then(|| format!("session `{id}` was started with credential `{c}`, which is revoked"))
            }),
        }
    }

    /// Why an escalation raised through a grant can no longer let its action run: the
    /// grant (`grant`, as held or as stored; `None` when neither has it) is revoked or
    /// expired. A grant used up is no reason: the approval itself may have taken its
    /// last use.
    pub fn grant_void_reason(&self, grant: Option<&Grant>, now: i64) -> Option<String> {
        let id = self.grant_id.as_ref()?;
        let Some(g) = grant else { return Some(format!("grant `{id}`, which it was raised through, no longer exists")) };
        match g.status_at(now) {
            "revoked" => Some(format!("grant `{id}`, which it was raised through, is revoked ({})", g.revoke_reason.as_deref().unwrap_or("no reason given"))),
            "expired" => Some(format!("grant `{id}`, which it was raised through, has expired")),
            _ => None,
        }
    }

    /// Until when an approval lets its action run: the freshness in force when it was
    /// given (`fresh_until`), cut shorter if the setting has been lowered since. Raising
    /// the setting does not bring a stale approval back.
    fn fresh_until(&self, freshness_ms: i64) -> Option<i64> {
        let by_setting = self.resolved_at.filter(|_| self.state == "approved")?.saturating_add(freshness_ms);
        Some(self.fresh_until.map_or(by_setting, |given| given.min(by_setting)))
    }

    /// What the SDK acts on: `allow` only while an approval is fresh.
    pub fn decision_at(&self, now: i64, freshness_ms: i64) -> &'static str {
        match self.status_at(now) {
            "pending" => "pending",
            "approved" if self.fresh_until(freshness_ms).is_some_and(|until| now < until) && self.used_by_decision.is_none() => "allow",
            _ => "block",
        }
    }

    pub fn view(&self, now: i64, freshness_ms: i64) -> Value {
        json!({
            "escalation_id": self.escalation_id,
            "decision_id": self.decision_id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "action_type": self.action_type,
            "action_hash": self.action_hash,
            "reasoning": self.reasoning,
            "policies_triggered": self.policies,
            "status": self.status_at(now),
            "decision": self.decision_at(now, freshness_ms),
            "resolution_reason": self.resolution_reason,
            "approver": self.approver_key,
            "resolved_at": self.resolved_at.map(iso),
            "fresh_until": self.fresh_until(freshness_ms).map(iso),
            "used_by_decision": self.used_by_decision,
            "queue": self.queue,
            "session_charge": self.approval_charge.as_ref().map(crate::sessions::charge_view),
            "grant_id": self.grant_id,
            "grant_charge": self.grant_charge,
            "charged_at_approval": self.charged_at_approval,
            "counted_at": self.counted_at.map(iso),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
        })
    }
}
object_impl!(Escalation, "escalation", escalation_id);

/// Why an active session is over by its clock: past its `ttl_seconds`.
pub fn past_ttl_reason(s: &praetor_store::Session, now: i64) -> Option<String> {
    s.expires_at.filter(|&at| now >= at).map(|_| format!("session `{}` is expired (past its ttl_seconds)", s.session_id))
}

/// Why a closed session's escalations can no longer allow (`None` while it is active).
pub fn closed_session_reason(s: &praetor_store::Session) -> Option<String> {
    if s.status == praetor_core::session::SessionStatus::Active {
        return None;
    }
    let why = s.kill_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    Some(format!("session `{}` is {}{why}", s.session_id, s.status.as_str()))
}

/// Escalations settled because what they were raised for is gone: their records to
/// store and their `escalation.expired` events to seal, in the same transaction as
/// the change that settled them.
#[derive(Default, Clone)]
pub struct Settled {
    pub records: Vec<ObjectRecord>,
    pub seals: Vec<praetor_store::SealRequest>,
}

impl Settled {
    pub fn extend(&mut self, other: Settled) {
        self.records.extend(other.records);
        self.seals.extend(other.seals);
    }

    /// The objects changed, to read back if the transaction is not committed.
    pub fn touched(&self) -> Vec<(String, String)> {
        self.records.iter().map(|r| (r.kind.clone(), r.object_id.clone())).collect()
    }
}

/// The vault event of an escalation that expired: on time (`reason` `None`) or because
/// its agent or session is gone.
pub fn expired_event(ws_id: &str, e: &Escalation, actor: Option<&str>, now: i64) -> praetor_store::SealRequest {
    crate::events::event(ws_id, "escalation.expired", actor, now, json!({
        "escalation_id": e.escalation_id, "decision_id": e.decision_id, "agent_id": e.agent_id,
        "session_id": e.session_id, "reason": e.resolution_reason,
    }))
}

/// Void the open escalations `which` selects (`Escalation::void`), in memory, and give
/// what to commit. Revoking or deactivating an agent, and closing a session, settle its
/// escalations so that no approval given before or after lets the action run.
pub fn settle(
    state: &mut AuthorityState,
    which: impl Fn(&Escalation) -> bool,
    reason: &str,
    actor: Option<&str>,
    ws_id: &str,
    now: i64,
) -> Settled {
    let ids: Vec<String> = state.escalations.values().filter(|e| e.is_open() && which(e)).map(|e| e.escalation_id.clone()).collect();
    let mut out = Settled::default();
    for id in ids {
        if let Some(mut e) = state.escalations.get_mut(&id) {
            e.void(reason);
            out.records.push(touched(&mut *e, ws_id, now));
            out.seals.push(expired_event(ws_id, &e, actor, now));
        }
    }
    out
}

/// Settle the open escalations raised in `session`, now closed.
pub fn settle_session(state: &mut AuthorityState, session: &praetor_store::Session, actor: Option<&str>, ws_id: &str, now: i64) -> Settled {
    let Some(reason) = closed_session_reason(session) else { return Settled::default() };
    settle(state, |e| e.session_id.as_deref() == Some(session.session_id.as_str()), &reason, actor, ws_id, now)
}

/// A workspace's escalations in memory, by id and by the action each one binds to.
/// Every decision looks for a fresh approval of its own action; under load pending
/// escalations pile up, and scanning them all cost more than the rest of the decision.
#[derive(Default)]
pub struct Escalations {
    by_id: HashMap<String, Escalation>,
    /// Ids by action hash (an escalation's action never changes).
    by_action: HashMap<String, Vec<String>>,
    /// How many are approved and not yet used: while there are none, no decision can
    /// be an approved retry, and a decision need not hash its action to look for one.
    unused_approvals: usize,
    /// How many each agent holds (`None`: raised by requests that named no agent).
    by_agent: HashMap<Option<String>, usize>,
}

/// An escalation borrowed for a change, from `Escalations::get_mut`: when it is
/// dropped, the count of unused approvals follows whatever the change did.
pub struct EscalationMut<'a> {
    escalation: &'a mut Escalation,
    unused_approvals: &'a mut usize,
    was_unused_approval: bool,
}

impl std::ops::Deref for EscalationMut<'_> {
    type Target = Escalation;
    fn deref(&self) -> &Escalation {
        self.escalation
    }
}

impl std::ops::DerefMut for EscalationMut<'_> {
    fn deref_mut(&mut self) -> &mut Escalation {
        self.escalation
    }
}

impl Drop for EscalationMut<'_> {
    fn drop(&mut self) {
        *self.unused_approvals -= usize::from(self.was_unused_approval);
        *self.unused_approvals += usize::from(self.escalation.is_unused_approval());
    }
}

impl Escalations {
    pub fn get(&self, id: &str) -> Option<&Escalation> {
        self.by_id.get(id)
    }

    /// For changing an escalation's state; its `action_hash` and `agent_id` must stay
    /// as they are.
    pub fn get_mut(&mut self, id: &str) -> Option<EscalationMut<'_>> {
        let escalation = self.by_id.get_mut(id)?;
        let was_unused_approval = escalation.is_unused_approval();
        Some(EscalationMut { escalation, unused_approvals: &mut self.unused_approvals, was_unused_approval })
    }

    /// Whether any escalation is approved and not yet used (fresh or not): only then
    /// can a decision be the retry an approval allows.
    pub fn any_unused_approval(&self) -> bool {
        self.unused_approvals > 0
    }

    pub fn values(&self) -> impl Iterator<Item = &Escalation> {
        self.by_id.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many are held: the open ones, and settled ones until the sweeper prunes them.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// How many are held that `agent_id` raised (`None`: requests naming no agent).
    pub fn held_by(&self, agent_id: Option<&str>) -> usize {
        self.by_agent.get(&agent_id.map(str::to_owned)).copied().unwrap_or(0)
    }

    /// The escalations raised for this exact action.
    pub fn for_action<'a>(&'a self, action_hash: &str) -> impl Iterator<Item = &'a Escalation> {
        self.by_action.get(action_hash).into_iter().flatten().filter_map(|id| self.by_id.get(id))
    }

    pub fn insert(&mut self, e: Escalation) {
        let (id, hash) = (e.escalation_id.clone(), e.action_hash.clone());
        self.unused_approvals += usize::from(e.is_unused_approval());
        *self.by_agent.entry(e.agent_id.clone()).or_default() += 1;
        if let Some(old) = self.by_id.insert(id.clone(), e) {
            self.unindex(&old);
        }
        self.by_action.entry(hash).or_default().push(id);
    }

    /// Keep what is in memory (it may be newer than the store's copy just read).
    pub fn insert_if_absent(&mut self, e: Escalation) {
        if !self.by_id.contains_key(&e.escalation_id) {
            self.insert(e);
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Escalation> {
        let e = self.by_id.remove(id)?;
        self.unindex(&e);
        Some(e)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Escalation) -> bool) {
        let gone: Vec<String> = self.by_id.values().filter(|e| !keep(e)).map(|e| e.escalation_id.clone()).collect();
        for id in gone {
            self.remove(&id);
        }
    }

    fn unindex(&mut self, e: &Escalation) {
        self.unused_approvals -= usize::from(e.is_unused_approval());
        if let Some(held) = self.by_agent.get_mut(&e.agent_id) {
            *held -= 1;
            if *held == 0 {
                self.by_agent.remove(&e.agent_id);
            }
        }
        if let Some(ids) = self.by_action.get_mut(&e.action_hash) {
            ids.retain(|id| id != &e.escalation_id);
            if ids.is_empty() {
                self.by_action.remove(&e.action_hash);
            }
        }
    }
}

/// Every authority object of a workspace, by id.
#[derive(Default)]
pub struct AuthorityState {
    pub roles: HashMap<String, Role>,
    pub windows: HashMap<String, Window>,
    pub grants: HashMap<String, Grant>,
    pub breakglass: HashMap<String, Breakglass>,
    pub escalations: Escalations,
    pub webhooks: HashMap<String, crate::delivery::Webhook>,
}

impl AuthorityState {
    /// Grants that have ended leave memory (the store and the vault keep them): revoked
    /// or expired ones, and used-up ones that never lent uses to a re-delegation. A
    /// grant is never used again once it has ended, so only lookups by id (`verify`,
    /// `revoke`) need it, and they read the store. A used-up grant that lent uses stays
    /// until it is revoked or expires: its re-delegations' chains go through it, and
    /// this node may not hold every one of them yet (the change feed brings a parent
    /// and its child one after the other). Without this every grant ever made stayed in
    /// memory. Returns how many left.
    pub fn prune_ended_grants(&mut self, now: i64) -> usize {
        let ended = |g: &Grant| match g.status_at(now) {
            "active" => false,
            "exhausted" => g.reserved == 0,
            _ => true,
        };
        // Most sweeps find none: the escalations are not read then.
        if !self.grants.values().any(ended) {
            return 0;
        }
        let before = self.grants.len();
        // A grant an open escalation was raised through stays while it is open: its
        // approval charges the grant, the retry it allows runs through it (even once the
        // approval took its last use), and a revoked or expired one voids it.
        let named: std::collections::HashSet<&str> = self.escalations.values().filter(|e| e.is_open()).filter_map(|e| e.grant_id.as_deref()).collect();
        self.grants.retain(|id, g| named.contains(id.as_str()) || !ended(g));
        before - self.grants.len()
    }

    /// Windows that have ended (expired or revoked) leave memory: decisions scan only
    /// an agent's open ones, and reads of an ended one go to the store. Without this
    /// every window ever opened stayed, and each decision scanned them all. Returns how
    /// many left.
    pub fn prune_ended_windows(&mut self, now: i64) -> usize {
        let before = self.windows.len();
        self.windows.retain(|_, w| w.status_at(now) == "open");
        before - self.windows.len()
    }

    /// Drop an object the store does not hold (a change that was never committed).
    pub fn forget(&mut self, kind: &str, id: &str) {
        match kind {
            Role::KIND => drop(self.roles.remove(id)),
            Window::KIND => drop(self.windows.remove(id)),
            Grant::KIND => drop(self.grants.remove(id)),
            Breakglass::KIND => drop(self.breakglass.remove(id)),
            Escalation::KIND => drop(self.escalations.remove(id)),
            crate::delivery::WEBHOOK_KIND => drop(self.webhooks.remove(id)),
            _ => {}
        }
    }

    /// Take in a stored object of any kind (snapshot at start, or a store read).
    pub fn absorb(&mut self, r: &ObjectRecord) {
        fn put<T: Object>(map: &mut HashMap<String, T>, r: &ObjectRecord) {
            if let Some(o) = T::from_record(r) {
                map.insert(r.object_id.clone(), o);
            }
        }
        match r.kind.as_str() {
            Role::KIND => put(&mut self.roles, r),
            Window::KIND => put(&mut self.windows, r),
            Grant::KIND => put(&mut self.grants, r),
            Breakglass::KIND => put(&mut self.breakglass, r),
            Escalation::KIND => {
                if let Some(e) = Escalation::from_record(r) {
                    self.escalations.insert(e);
                }
            }
            crate::delivery::WEBHOOK_KIND => put(&mut self.webhooks, r),
            crate::api::packs::PACK_VERSION_KIND => {}
            other => tracing::warn!(kind = other, "unknown authority object kind in the store"),
        }
    }
}

/// The canonical form of an action, hashed: what an approval binds to. An action in a
/// session carries the session's id, so an approval given for it is good in that
/// session only; an action outside any session hashes as it always did (no
/// `session_id` key), so the two can never be confused.
pub fn action_hash(agent_id: Option<&str>, session_id: Option<&str>, action_type: &str, content_sha256: Option<&str>, metadata: &Map<String, Value>) -> String {
    let mut form = json!({
        "agent_id": agent_id,
        "action_type": action_type,
        "content_sha256": content_sha256,
        "metadata": metadata,
    });
    if let (Some(s), Value::Object(m)) = (session_id, &mut form) {
        m.insert("session_id".into(), json!(s));
    }
    let form = crate::events::floats_as_strings(form);
    let bytes = praetor_vault::canonical_json(&form).unwrap_or_else(|_| form.to_string().into_bytes());
    sha256_hex(&bytes)
}

/// The engine's facts for one decision, owned so they outlive the borrow of the state.
#[derive(Default)]
pub struct Facts {
    pub roles: Vec<RoleFacts>,
    pub windows: Vec<WindowFacts>,
    pub grant: Option<GrantFacts>,
    pub breakglass: Option<BreakglassFacts>,
    pub approval: Option<ApprovalFacts>,
}

impl Facts {
    pub fn authority(&self) -> Authority<'_> {
        Authority {
            roles: &self.roles,
            windows: &self.windows,
            grant: self.grant.as_ref(),
            breakglass: self.breakglass.as_ref(),
            approval: self.approval.as_ref(),
        }
    }
}

fn role_facts(state: &AuthorityState, agent_id: &str) -> Vec<RoleFacts> {
    state
        .roles
        .values()
        .filter(|r| r.agent_ids.iter().any(|x| x == agent_id))
        .map(|r| RoleFacts {
            role_id: r.role_id.clone(),
            name: r.name.clone(),
            allowed_action_types: r.allowed_action_types.clone(),
            denied_action_types: r.denied_action_types.clone(),
            min_trust_level: r.min_trust_level,
        })
        .collect()
}

fn covers(patterns: &[String], action_type: &str) -> bool {
    patterns.iter().any(|p| praetor_core::glob::Glob::action_type(p).is_ok_and(|g| g.is_match(action_type)))
}

/// The engine's view of an agent's own authority.
pub fn agent_facts(agent: &praetor_store::Agent) -> praetor_core::AgentFacts {
    praetor_core::AgentFacts {
        agent_id: agent.agent_id.clone(),
        name: agent.name.clone(),
        trust_score: agent.trust_score,
        scopes: agent.scopes.clone(),
        permission_boundary: agent.permission_boundary.clone(),
    }
}

/// What refuses `agent` the action type whatever covers it: its roles' denials and
/// trust minimums, its boundary denial (`praetor_core::authority::denial`).
pub fn denial(state: &AuthorityState, agent: &praetor_store::Agent, action_type: &str) -> Option<praetor_core::authority::Refusal> {
    praetor_core::authority::denial(&agent_facts(agent), &role_facts(state, &agent.agent_id), action_type)
}

/// Why the grantor `src` of a grant in a chain cannot lend `action_type` now: it must
/// exist and be active; the root grantor (`root`) must be able to do the action itself
/// (its scopes, boundary and roles), and a grantor that re-delegated a grant it
/// received must not be denied it (its boundary's and roles' denials), since it holds
/// the action only through that grant. With no action type, only that it is active.
fn grantor_problem(state: &AuthorityState, agents: &HashMap<String, praetor_store::Agent>, src: &str, action_type: Option<&str>, root: bool) -> Option<String> {
    let Some(source) = agents.get(src) else {
        return Some(format!("the grantor `{src}` no longer exists"));
    };
    if !source.is_active {
        return Some(format!("the grantor `{src}` is deactivated"));
    }
    let t = action_type?;
    if !root {
        return denial(state, source, t).map(|r| format!("the grantor `{src}` is denied `{t}`: {}", r.reason));
    }
    let roles = role_facts(state, src);
    let own = Authority { roles: &roles, ..Authority::default() };
    praetor_core::authority::check(Some(&agent_facts(source)), &own, t)
        .err()
        .map(|r| format!("the grantor `{src}` may not do `{t}` itself: {}", r.reason))
}

/// Authority flows down a chain of grants from an agent that holds it natively. At use
/// time every grant in the chain must still be in force (not revoked or expired) and
/// cover the action, and every grantor along it must be active and not denied the
/// action, the root grantor able to do it itself (`grantor_problem`), so revoking or
/// restricting any grantor reaches every grant made from it. With no action type, the
/// chain is checked for being in force and its grantors for being active.
fn chain_problem(state: &AuthorityState, grant: &Grant, action_type: Option<&str>, agents: &HashMap<String, praetor_store::Agent>, now: i64) -> Option<String> {
    let mut g = grant;
    for _ in 0..64 {
        if let Some(problem) = grantor_problem(state, agents, &g.source_agent_id, action_type, g.parent_grant_id.is_none()) {
            return Some(problem);
        }
        let Some(pid) = &g.parent_grant_id else { return None };
        let Some(parent) = state.grants.get(pid) else {
            return Some(format!("its parent grant `{pid}` no longer exists"));
        };
        if parent.revoked {
            return Some(format!("its parent grant `{pid}` is revoked"));
        }
        if parent.expires_at.is_some_and(|e| now >= e) {
            return Some(format!("its parent grant `{pid}` has expired"));
        }
        if let Some(t) = action_type
            && !covers(&parent.scopes, t)
            && !covers(&parent.action_types, t)
        {
            return Some(format!("its parent grant `{pid}` does not cover `{t}`"));
        }
        g = parent;
    }
    Some("its chain of grants is too deep".into())
}

/// The grantors a use of `grant_id` rests on: its own and those of the grants above it.
/// A decision that uses the grant commits only while each is still active in the store
/// (`Mutation::ExpectActive`): a grantor revoked or deactivated on another node stops
/// the grant at once, before this node's copy of the grantor has caught up.
pub fn grantors(state: &AuthorityState, grant_id: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut next = state.grants.get(grant_id);
    // As deep as `chain_problem` looks, which also bounds a chain that loops.
    for _ in 0..64 {
        let Some(g) = next else { break };
        if !found.contains(&g.source_agent_id) {
            found.push(g.source_agent_id.clone());
        }
        next = g.parent_grant_id.as_deref().and_then(|id| state.grants.get(id));
    }
    found
}

/// Why `agent_id` cannot use the grant now (for `action_type`, when given): the grant
/// itself (`Grant::problem`), then its whole chain (`chain_problem`).
pub fn grant_problem(
    state: &AuthorityState,
    agents: &HashMap<String, praetor_store::Agent>,
    grant: &Grant,
    agent_id: Option<&str>,
    action_type: Option<&str>,
    now: i64,
) -> Option<String> {
    grant.problem(agent_id, now).or_else(|| chain_problem(state, grant, action_type, agents, now))
}

/// Whether `agent_id` can use the grant for `action_type` now (`Err`: why not). A grant
/// whose last use a paid approval of this action took (`paid_for`) is still usable, but
/// only for that approval's action: `Ok(Some(why it is used up))`.
fn grant_usable(
    state: &AuthorityState,
    agents: &HashMap<String, praetor_store::Agent>,
    g: &Grant,
    agent_id: Option<&str>,
    action_type: &str,
    paid_for: bool,
    now: i64,
) -> Result<Option<String>, String> {
    match grant_problem(state, agents, g, agent_id, Some(action_type), now) {
        None => Ok(None),
        Some(spent) if paid_for && g.status_at(now) == "exhausted" => match g.problem_past_uses(agent_id, now).or_else(|| chain_problem(state, g, Some(action_type), agents, now)) {
            None => Ok(Some(spent)),
            Some(other) => Err(other),
        },
        Some(problem) => Err(problem),
    }
}

/// Gather what bears on this decision.
#[allow(clippy::too_many_arguments)]
pub fn facts(
    state: &AuthorityState,
    agents: &HashMap<String, praetor_store::Agent>,
    agent_id: Option<&str>,
    action_type: &str,
    grant_id: Option<&str>,
    // `None` when no escalation is an unused approval: there is none to find.
    action_hash: Option<&str>,
    now: i64,
    settings: &WorkspaceSettings,
) -> Facts {
    let mut f = Facts::default();
    if let Some(a) = agent_id {
        f.roles = role_facts(state, a);
        f.windows = state
            .windows
            .values()
            .filter(|w| w.agent_id == a && w.status_at(now) == "open")
            .map(|w| WindowFacts { window_id: w.window_id.clone(), scopes: w.scopes.clone(), action_types: w.action_types.clone() })
            .collect();
        f.breakglass = state
            .breakglass
            .values()
            .filter(|b| b.agent_id == a && b.status_at(now) == "active")
            .min_by_key(|b| b.created_at)
            .map(|b| BreakglassFacts { breakglass_id: b.breakglass_id.clone(), justification: b.justification.clone() });
    }
    let freshness = settings.approval_freshness_ms();
    f.approval = action_hash
        .into_iter()
        .flat_map(|h| state.escalations.for_action(h))
        .filter(|e| e.agent_id.as_deref() == agent_id)
        .filter(|e| e.decision_at(now, freshness) == "allow")
        // One raised through a grant since revoked or expired is void (the sweeper
        // settles it), whatever grant the retry names: the approval was for an action
        // under that grant. One whose grant this node does not hold is not used here.
        .filter(|e| e.grant_id.as_ref().is_none_or(|g| state.grants.get(g).is_some_and(|g| !matches!(g.status_at(now), "revoked" | "expired"))))
        .min_by_key(|e| e.created_at)
        .map(|e| ApprovalFacts {
            escalation_id: e.escalation_id.clone(),
            approver: e.approver_key.clone().unwrap_or_default(),
            reason: e.resolution_reason.clone(),
            paid: e.charged_at_approval,
            paid_grant: e.grant_id.clone().filter(|_| e.charged_at_approval),
            counted: e.counted_at.is_some(),
        });
    // The grant a paid approval of this action already charged.
    let paid_from = f.approval.as_ref().and_then(|a| a.paid_grant.clone());
    f.grant = grant_id.map(|id| match state.grants.get(id) {
        Some(g) => {
            let usable = grant_usable(state, agents, g, agent_id, action_type, paid_from.as_deref() == Some(id), now);
            GrantFacts {
                grant_id: id.to_owned(),
                problem: usable.as_ref().err().cloned(),
                scopes: g.scopes.clone(),
                action_types: g.action_types.clone(),
                left: g.limits_left(),
                spent: usable.ok().flatten(),
            }
        }
        None => GrantFacts {
            grant_id: id.to_owned(),
            problem: Some("no grant by this id is in force in this workspace (an ended one is no longer held)".into()),
            scopes: Vec::new(),
            action_types: Vec::new(),
            left: GrantLimits::default(),
            spent: None,
        },
    });
    f
}

/// What one decision changed among the authority objects.
#[derive(Default)]
pub struct Changes {
    pub records: Vec<ObjectRecord>,
    /// The escalation this decision opened.
    pub opened: Option<Escalation>,
    /// `delegation` for the answer: the grant named and its budget.
    pub delegation: Option<Value>,
    /// Vault events of the change (escalations settled when the decision ended its session).
    pub seals: Vec<praetor_store::SealRequest>,
}

pub struct Opening<'a> {
    pub workspace_id: &'a str,
    pub decision_id: &'a str,
    pub agent_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub action_type: &'a str,
    pub action_hash: &'a str,
    pub key_id: &'a str,
    /// The credential that signed the request, if it was verified by a signature.
    pub credential_id: Option<&'a str>,
    pub queue: Option<String>,
}

/// Apply a decision to the authority objects: charge the grant, consume the approval,
/// count the breakglass override, open an escalation.
pub fn apply(state: &mut AuthorityState, d: &Decision, grant_id: Option<&str>, o: &Opening<'_>, now: i64, settings: &WorkspaceSettings) -> Changes {
    let mut ch = Changes::default();
    // An action on an approval that charged the grant when it was given is not charged again.
    if let Some(g) = d.authority.grant_used.as_deref().filter(|_| !d.authority.grant_paid_at_approval).and_then(|id| state.grants.get_mut(id)) {
        g.uses += 1;
        if let Some(taken) = &d.authority.grant_charge {
            g.used.add(taken);
        }
        g.version += 1;
        ch.records.push(g.to_record(o.workspace_id, now));
    }
    if let Some(g) = grant_id.and_then(|id| state.grants.get(id)) {
        ch.delegation = Some(json!({
            "grant_id": g.grant_id,
            "source_agent_id": g.source_agent_id,
            "budget": { "used": g.uses, "budget": g.budgets_view(), "consumed": g.consumed_view() },
        }));
    }
    if let Some(mut e) = d.authority.approved_by.as_deref().and_then(|id| state.escalations.get_mut(id)) {
        e.used_by_decision = Some(o.decision_id.to_owned());
        e.version += 1;
        ch.records.push(e.to_record(o.workspace_id, now));
    }
    if let Some(b) = d.authority.breakglass_id.as_deref().and_then(|id| state.breakglass.get_mut(id)) {
        b.overrides += 1;
        b.version += 1;
        ch.records.push(b.to_record(o.workspace_id, now));
    }
    if d.verdict == Verdict::Escalate {
        let e = Escalation {
            escalation_id: new_id("esc"),
            decision_id: o.decision_id.to_owned(),
            agent_id: o.agent_id.map(str::to_owned),
            session_id: o.session_id.map(str::to_owned),
            action_type: o.action_type.to_owned(),
            action_hash: o.action_hash.to_owned(),
            reasoning: d.reasoning.clone(),
            policies: d.triggered.clone(),
            raised_by_key: o.key_id.to_owned(),
            credential_id: o.credential_id.map(str::to_owned),
            state: "pending".into(),
            resolution_reason: None,
            approver_key: None,
            resolved_at: None,
            fresh_until: None,
            used_by_decision: None,
            queue: o.queue.clone(),
            approval_charge: d.approval_charge.clone(),
            grant_id: d.authority.grant_on_approval.clone(),
            grant_charge: d.authority.grant_on_approval.as_ref().and(d.authority.grant_charge.clone()),
            charged_at_approval: false,
            counted_at: None,
            created_at: now,
            expires_at: now + settings.escalation_ttl_ms(),
            version: 1,
        };
        state.escalations.insert(e.clone());
        ch.records.push(e.to_record(o.workspace_id, now));
        ch.opened = Some(e);
    }
    ch
}

/// Create an authority object: commit it with its vault event, then add it to memory.
pub async fn create<T: Object>(
    state: &crate::state::AppState,
    ws: &crate::state::WorkspaceState,
    mut obj: T,
    event_kind: &str,
    actor: &str,
    fields: Value,
) -> crate::error::ApiResult<T> {
    let now = state.now_ms();
    *obj.version() = 1;
    let record = obj.to_record(&ws.workspace_id, now);
    let txn = praetor_store::Txn {
        mutations: vec![praetor_store::Mutation::PutObject(record.clone())],
        seal: vec![crate::events::event(&ws.workspace_id, event_kind, Some(actor), now, fields)],
    };
    state.commit(txn).await?;
    ws.live.lock().authority.absorb(&record);
    Ok(obj)
}

/// Change authority objects in memory under the live lock (so concurrent decisions see
/// one order of events), then commit them with one vault event. `change` returns the
/// changed objects' records and the event's fields.
pub async fn update<R>(
    state: &crate::state::AppState,
    ws: &crate::state::WorkspaceState,
    event_kind: &str,
    actor: &str,
    change: impl FnOnce(&mut AuthorityState, i64) -> crate::error::ApiResult<(Vec<ObjectRecord>, Value, R)>,
) -> crate::error::ApiResult<R> {
    Ok(try_update(state, ws, event_kind, actor, change).await??)
}

/// At most this many tries of an operator's close or revoke while decisions on other
/// nodes keep moving the object on.
pub const UPDATE_ATTEMPTS: u32 = 20;

/// `update` for an operator's close or revoke of an object that decisions change too
/// (a grant's uses, a breakglass's overrides, each a new version): on several nodes the
/// copy here is often behind, and the store refuses the write as stale. The objects are
/// then read back and `change` applied again, a bounded number of times, so that the
/// operator's write wins over the agent's use instead of answering `409`.
pub async fn update_retrying<R>(
    state: &crate::state::AppState,
    ws: &crate::state::WorkspaceState,
    event_kind: &str,
    actor: &str,
    mut change: impl FnMut(&mut AuthorityState, i64) -> crate::error::ApiResult<(Vec<ObjectRecord>, Value, R)>,
) -> crate::error::ApiResult<R> {
    let mut attempt = 1;
    loop {
        match try_update(state, ws, event_kind, actor, &mut change).await? {
            Err(praetor_store::StoreError::Stale(what)) if attempt < UPDATE_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(workspace_id = %ws.workspace_id, %what, attempt, "an object changed elsewhere; applying the change again");
            }
            other => return Ok(other?),
        }
    }
}

/// Settle (expire) every open escalation of `agent_id` held here, in its own
/// transaction, applied again while other nodes move them on (an approval, a use), at
/// most `UPDATE_ATTEMPTS` times with a growing, jittered pause. `None` when every one
/// is settled; otherwise why the last attempt failed and the escalations it left.
pub async fn settle_agent_retrying(
    state: &crate::state::AppState,
    ws: &crate::state::WorkspaceState,
    agent_id: &str,
    reason: &str,
    actor: &str,
) -> Option<(String, Vec<String>)> {
    let mut attempt = 1;
    loop {
        let (pending, touched) = {
            // In the decision order, as `settle_now`.
            let _order = ws.decision_order.lock();
            let settled = crate::api::credentials::settle_agent(ws, agent_id, reason, actor, state.now_ms());
            if settled.records.is_empty() {
                return None;
            }
            let touched = settled.touched();
            let txn = praetor_store::Txn { mutations: settled.records.into_iter().map(praetor_store::Mutation::PutObject).collect(), seal: settled.seals };
            (state.submit(txn), touched)
        };
        let Err(e) = pending.await else { return None };
        // Memory was settled for a commit that did not happen: take the store's back,
        // so that the next attempt settles the versions other nodes wrote.
        let read_back = crate::pipeline::resync_objects(state, ws, &touched).await;
        if !matches!(e, praetor_store::StoreError::Stale(_)) || read_back.is_err() || attempt >= UPDATE_ATTEMPTS {
            return Some((crate::error::ApiError::from(e).message, touched.into_iter().map(|(_, id)| id).collect()));
        }
        attempt += 1;
        tokio::time::sleep(std::time::Duration::from_micros(crate::secrets::jitter(200 << attempt.min(6)))).await;
    }
}

/// One try of `update`: the outer error is the change's own refusal (or a failed read
/// back); the inner one a commit that failed, after which the objects were read back
/// from the store.
async fn try_update<R>(
    state: &crate::state::AppState,
    ws: &crate::state::WorkspaceState,
    event_kind: &str,
    actor: &str,
    change: impl FnOnce(&mut AuthorityState, i64) -> crate::error::ApiResult<(Vec<ObjectRecord>, Value, R)>,
) -> crate::error::ApiResult<praetor_store::Result<R>> {
    let (pending, touched, out) = {
        // In the decision order: a decision made after this change (using a grant it
        // changed, say) reaches the writer after it, so the store never holds the
        // decision's later version of an object before this one's.
        let _order = ws.decision_order.lock();
        let now = state.now_ms();
        let (records, fields, out) = change(&mut ws.live.lock().authority, now)?;
        let touched: Vec<(String, String)> = records.iter().map(|r| (r.kind.clone(), r.object_id.clone())).collect();
        let txn = praetor_store::Txn {
            mutations: records.into_iter().map(praetor_store::Mutation::PutObject).collect(),
            seal: vec![crate::events::event(&ws.workspace_id, event_kind, Some(actor), now, fields)],
        };
        (state.submit(txn), touched, out)
    };
    if let Err(e) = pending.await {
        // Memory was changed for a commit that did not happen (another node moved an
        // object on, or the store failed): take the store's objects back.
        crate::pipeline::resync_objects(state, ws, &touched).await?;
        return Ok(Err(e));
    }
    Ok(Ok(out))
}

/// Settle escalations in memory (`settle` says which, and why) and commit them on their
/// own, with their events, in the decision order (a decision on one of them made after
/// reaches the writer after, as `try_update`); if the commit fails, read them back.
pub async fn settle_now(
    state: &crate::state::AppState,
    ws: &crate::state::WorkspaceState,
    settle: impl FnOnce(&mut AuthorityState) -> Settled,
) -> crate::error::ApiResult<()> {
    let (pending, touched) = {
        let _order = ws.decision_order.lock();
        let settled = settle(&mut ws.live.lock().authority);
        if settled.records.is_empty() {
            return Ok(());
        }
        let touched = settled.touched();
        let txn = praetor_store::Txn { mutations: settled.records.into_iter().map(praetor_store::Mutation::PutObject).collect(), seal: settled.seals };
        (state.submit(txn), touched)
    };
    if let Err(e) = pending.await {
        crate::pipeline::resync_objects(state, ws, &touched).await?;
        return Err(e.into());
    }
    Ok(())
}

/// Bump an object's version and give its record, after an in-place change.
pub fn touched<T: Object>(obj: &mut T, workspace_id: &str, now: i64) -> ObjectRecord {
    *obj.version() += 1;
    obj.to_record(workspace_id, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escalation(id: &str, agent: &str, hash: &str) -> Escalation {
        Escalation {
            escalation_id: id.into(),
            decision_id: format!("dec_{id}"),
            agent_id: Some(agent.into()),
            session_id: None,
            action_type: "x".into(),
            action_hash: hash.into(),
            reasoning: String::new(),
            policies: Vec::new(),
            raised_by_key: "key".into(),
            credential_id: None,
            state: "pending".into(),
            resolution_reason: None,
            approver_key: None,
            resolved_at: None,
            fresh_until: None,
            used_by_decision: None,
            queue: None,
            approval_charge: None,
            grant_id: None,
            grant_charge: None,
            charged_at_approval: false,
            counted_at: None,
            created_at: 1,
            expires_at: 2,
            version: 1,
        }
    }

    fn ids<'a>(it: impl Iterator<Item = &'a Escalation>) -> Vec<String> {
        let mut v: Vec<String> = it.map(|e| e.escalation_id.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn escalations_are_found_by_action_until_they_leave() {
        let mut all = Escalations::default();
        all.insert(escalation("e1", "a", "h1"));
        all.insert(escalation("e2", "b", "h1"));
        all.insert(escalation("e3", "a", "h2"));
        assert_eq!(ids(all.for_action("h1")), ["e1", "e2"]);
        assert_eq!(ids(all.for_action("h2")), ["e3"]);
        assert_eq!(all.for_action("h3").count(), 0);

        // A newer copy replaces the old one without listing it twice.
        let mut approved = escalation("e1", "a", "h1");
        approved.state = "approved".into();
        all.insert(approved);
        assert_eq!(ids(all.for_action("h1")), ["e1", "e2"]);
        assert_eq!(all.get("e1").unwrap().state, "approved");
        all.insert_if_absent(escalation("e1", "a", "h1"));
        assert_eq!(all.get("e1").unwrap().state, "approved", "what memory holds is kept");

        all.remove("e2");
        assert_eq!(ids(all.for_action("h1")), ["e1"]);
        all.retain(|e| e.escalation_id != "e1");
        assert_eq!(all.for_action("h1").count(), 0);
        assert!(!all.by_action.contains_key("h1"), "an emptied entry leaves the index");
        assert_eq!(ids(all.values()), ["e3"]);
    }

    #[test]
    fn escalations_are_counted_per_agent_through_every_change() {
        let mut all = Escalations::default();
        all.insert(escalation("e1", "a", "h1"));
        all.insert(escalation("e2", "a", "h2"));
        all.insert(escalation("e3", "b", "h3"));
        all.insert(Escalation { agent_id: None, ..escalation("e4", "-", "h4") });
        assert_eq!((all.held_by(Some("a")), all.held_by(Some("b")), all.held_by(None), all.held_by(Some("c"))), (2, 1, 1, 0));
        all.insert(escalation("e1", "a", "h1"));
        assert_eq!(all.held_by(Some("a")), 2, "a newer copy is not counted twice");
        all.insert_if_absent(escalation("e3", "b", "h3"));
        assert_eq!(all.held_by(Some("b")), 1);
        all.remove("e1");
        all.retain(|e| e.escalation_id != "e4");
        assert_eq!((all.held_by(Some("a")), all.held_by(None)), (1, 0));
        all.remove("e2");
        all.remove("e3");
        assert!(all.by_agent.is_empty(), "agents holding none leave the count");
    }

    #[test]
    fn unused_approvals_are_counted_through_every_change() {
        let mut all = Escalations::default();
        all.insert(escalation("e1", "a", "h1"));
        all.insert(escalation("e2", "a", "h2"));
        assert!(!all.any_unused_approval(), "pending escalations approve nothing");

        all.get_mut("e1").unwrap().state = "approved".into();
        assert!(all.any_unused_approval(), "an approval made through get_mut counts");
        all.get_mut("e1").unwrap().used_by_decision = Some("dec_x".into());
        assert!(!all.any_unused_approval(), "a used approval no longer counts");

        // A copy from the store replaces the one in memory, and its count with it.
        let mut approved = escalation("e2", "a", "h2");
        approved.state = "approved".into();
        all.insert(approved.clone());
        assert!(all.any_unused_approval());
        all.insert(approved);
        all.remove("e2");
        assert!(!all.any_unused_approval(), "replacing and removing leave no stale count");

        let mut approved = escalation("e3", "b", "h3");
        approved.state = "approved".into();
        all.insert(approved);
        all.get_mut("e3").unwrap().version += 1;
        assert!(all.any_unused_approval(), "a change that leaves it approved keeps it counted");
        all.retain(|e| e.escalation_id != "e3");
        assert!(!all.any_unused_approval());
    }

    fn grant(id: &str, from: &str, to: &str, parent: Option<&str>) -> Grant {
        Grant {
            grant_id: id.into(),
            source_agent_id: from.into(),
            target_agent_id: to.into(),
            scopes: vec!["pay.*".into()],
            action_types: Vec::new(),
            parent_grant_id: parent.map(str::to_owned),
            max_uses: None,
            uses: 0,
            reserved: 0,
            limits: Default::default(),
            used: Default::default(),
            lent: Default::default(),
            expires_at: None,
            revoked: false,
            revoke_reason: None,
            instruction: None,
            constraints: Value::Null,
            created_by: "key".into(),
            created_at: 1,
            version: 1,
        }
    }

    #[test]
    fn a_grants_grantors_are_every_grantor_up_its_chain() {
        let mut state = AuthorityState::default();
        for g in [grant("g1", "root", "middle", None), grant("g2", "middle", "leaf", Some("g1")), grant("g3", "leaf", "last", Some("g2"))] {
            state.grants.insert(g.grant_id.clone(), g);
        }
        assert_eq!(grantors(&state, "g3"), ["leaf", "middle", "root"]);
        assert_eq!(grantors(&state, "g1"), ["root"]);
        assert!(grantors(&state, "missing").is_empty());
        // Authority lent back and on: each grantor once, up to the root.
        state.grants.insert("g4".into(), grant("g4", "last", "middle", Some("g3")));
        state.grants.insert("g5".into(), grant("g5", "middle", "other", Some("g4")));
        assert_eq!(grantors(&state, "g5"), ["middle", "last", "leaf", "root"]);
        // A chain that loops (which delegation never makes) still ends.
        state.grants.get_mut("g1").unwrap().parent_grant_id = Some("g5".into());
        assert_eq!(grantors(&state, "g3"), ["leaf", "middle", "root", "last"]);
    }
}
