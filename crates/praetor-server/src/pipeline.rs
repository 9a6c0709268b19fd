//! The I/O edges of a decision: stage 1 (intercept: parse and bound), stage 2
//! (identify), the call into the pure engine (stages 3-4), and stage 5 (record: the
//! vault append and the decision row, committed before the answer leaves).


use axum::http::HeaderMap;
use praetor_core::{
    ActionRequest, Decision, DecisionInput, Identity, PastAction, Verdict, decide, trust::next_trust,
};
use praetor_core::session::{SessionFacts, SessionStatus};
use praetor_store::{Agent, AgentActivity, ApiKey, DecisionRow, Guarded, Mutation, SealRequest, Session, Txn};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::answer::{Answer, ApprovedBy, FromEntry, OpenedEscalation, Receipt, Rest, ShadowAnswer};
use crate::clock::iso;
use crate::config::limits;
use crate::error::{ApiError, ApiResult, Code};
use crate::secrets::{new_time_ordered_id, sha256_hex};
use crate::signature::{self, SignedHeaders};
use crate::state::{AppState, LiveState, WorkspaceState};

/// `POST /enforce/intercept`, as the xybern SDK and agent-guard send it (wire §2.1).
/// Unknown fields are accepted: the SDK sends many (warrants, stamps, commitments) that
/// this server does not act on yet, and refusing them would break the SDK.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InterceptBody {
    pub action_type: Option<String>,
    pub agent_id: Option<String>,
    pub action_content: Option<String>,
    /// agent-guard's name for `action_content`.
    pub content: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub session_id: Option<String>,
    pub chain_id: Option<String>,
    pub chain_step: Option<u64>,
    pub parent_decision_id: Option<String>,
    pub grant_id: Option<String>,
}

/// A request that passed stage 1.
#[derive(Debug, Clone)]
pub struct Intercepted {
    pub request: ActionRequest,
    pub agent_id: Option<String>,
    pub content_sha256: Option<String>,
    pub chain: Map<String, Value>,
}

fn check_len(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max {
        return Err(ApiError::invalid(field, format!("is {} bytes long; the limit is {max}", value.len())));
    }
    Ok(())
}

fn check_id(field: &str, value: &str) -> ApiResult<()> {
    check_len(field, value, limits::ID_MAX)?;
    if value.is_empty() || value.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(field, "must be a non-empty string without control characters"));
    }
    Ok(())
}

/// The action's content from `action_content` or agent-guard's `content`, with the
/// name of the field it came from. A body with both is refused unless they are the same
/// text: evaluating one and dropping the other would let the dropped one pass every
/// content policy unread.
fn one_content(action_content: Option<String>, content: Option<String>, f: &impl Fn(&str) -> String) -> ApiResult<Option<(&'static str, String)>> {
    match (action_content, content) {
        (Some(a), Some(c)) if a != c => {
            let (a, c) = (f("action_content"), f("content"));
            Err(ApiError::invalid(&a, format!("differs from `{c}`; the two are names for one content: send one, or the same text in both")))
        }
        (Some(a), _) => Ok(Some(("action_content", a))),
        (None, Some(c)) => Ok(Some(("content", c))),
        (None, None) => Ok(None),
    }
}

fn check_action_type(field: &str, action_type: &str) -> ApiResult<()> {
    check_len(field, action_type, limits::ACTION_TYPE_MAX)?;
    if action_type.trim().is_empty() || action_type.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(field, "must be a non-empty string without control characters"));
    }
    // Invisible characters or edge whitespace would give one action a second spelling
    // that no action-type glob matches.
    praetor_core::glob::spelling(action_type).map_err(|m| ApiError::invalid(field, m))
}

/// Stage 1 for a request whose body is over the size limit, so was not parsed: the
/// action as its body's top-level members name it (`extract::TopLevelStrings`),
/// refused unread (`__unread`) for `reason`. A value that would not pass stage 1 is
/// left out: an action type as `unread`, an agent or session as none named.
pub fn intercept_unread(action_type: Option<&str>, agent_id: Option<&str>, session_id: Option<&str>, metadata: Map<String, Value>, reason: String) -> Intercepted {
    let id = |v: Option<&str>| v.filter(|v| check_id("", v).is_ok()).map(str::to_owned);
    let action_type = action_type.filter(|t| check_action_type("", t).is_ok()).unwrap_or("unread");
    Intercepted {
        request: ActionRequest {
            action_type: action_type.to_owned(),
            metadata,
            session_id: id(session_id),
            refused_unread: Some(reason),
            ..ActionRequest::default()
        },
        agent_id: id(agent_id),
        content_sha256: None,
        chain: Map::new(),
    }
}

/// Why content of this size is not evaluated, if it is over the limit. Such an action
/// is still decided (blocked, `__unread`) and sealed, and its content kept as any
/// action's (the body limit bounds it): answering an error instead would let a
/// fail-open client run it (wire rule 1), and an agent pad an action past what the
/// policies read.
fn content_over_limit(field: impl FnOnce() -> String, content: &str) -> Option<String> {
    (content.len() > limits::CONTENT_MAX)
        .then(|| format!("`{}` is {} bytes long; the limit is {}", field(), content.len(), limits::CONTENT_MAX))
}

/// Stage 1: bound and validate. `prefix` names the body's position in a batch
/// (`actions[3].`) so errors point at the right element.
pub fn intercept(body: InterceptBody, prefix: &str) -> ApiResult<Intercepted> {
    let f = |name: &str| format!("{prefix}{name}");
    let action_type = body.action_type.ok_or_else(|| ApiError::invalid(&f("action_type"), "is required"))?;
    check_action_type(&f("action_type"), &action_type)?;
    if let Some(a) = &body.agent_id {
        check_id(&f("agent_id"), a)?;
    }
    if let Some(s) = &body.session_id {
        check_id(&f("session_id"), s)?;
    }
    let content = one_content(body.action_content, body.content, &f)?;
    let refused_unread = content.as_ref().and_then(|(field, text)| content_over_limit(|| f(field), text));
    let content = content.map(|(_, text)| text);
    let metadata = body.metadata.unwrap_or_default();
    let claimed_hash = match metadata.get("content_sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Some(h.to_ascii_lowercase()),
        Some(_) => return Err(ApiError::invalid(&f("metadata.content_sha256"), "must be 64 hexadecimal characters")),
    };
    let content_redacted = content.is_none() && claimed_hash.is_some();
    let content_sha256 = match &content {
        Some(c) => Some(sha256_hex(c.as_bytes())),
        None => claimed_hash,
    };
    let mut chain = Map::new();
    for (k, v) in [("chain_id", body.chain_id.map(Value::from)), ("chain_step", body.chain_step.map(Value::from)),
        ("parent_decision_id", body.parent_decision_id.map(Value::from)), ("grant_id", body.grant_id.map(Value::from))]
    {
        if let Some(v) = v {
            if let Value::String(s) = &v {
                check_id(&f(k), s)?;
            }
            chain.insert(k.to_owned(), v);
        }
    }
    Ok(Intercepted {
        request: ActionRequest { action_type, content, content_redacted, metadata, session_id: body.session_id, refused_unread },
        agent_id: body.agent_id,
        content_sha256,
        chain,
    })
}

/// The body a request signature covers: the bytes, or, for a body too large to keep,
/// their SHA-256 (hex), which is what the signed message holds.
#[derive(Clone, Copy)]
pub enum SignedBody<'a> {
    Raw(&'a [u8]),
    Sha256(&'a str),
}

impl SignedBody<'_> {
    fn sha256(&self) -> std::borrow::Cow<'_, str> {
        match self {
            SignedBody::Raw(raw) => sha256_hex(raw).into(),
            SignedBody::Sha256(hash) => (*hash).into(),
        }
    }
}

/// The request-level facts stage 2 needs beyond the body: the key and, for agents
/// that require it, the request signature.
pub struct Caller<'a> {
    pub key: &'a ApiKey,
    pub headers: &'a HeaderMap,
    pub method: &'a str,
    pub path: &'a str,
    pub body: SignedBody<'a>,
    /// Agents whose signature on this request was already verified (a batch carries
    /// one signature and one nonce for all its actions).
    pub verified: parking_lot::Mutex<Vec<String>>,
    /// Agents whose nonce this request has consumed: an evaluation repeated after a
    /// stale read verifies the signature again but does not see its own nonce as reused.
    pub nonce_consumed: parking_lot::Mutex<Vec<String>>,
    /// Set when the store refused this request's nonce: another node (or this one,
    /// before a restart) already consumed it, so the request is a replay.
    pub nonce_replayed: std::sync::atomic::AtomicBool,
}

impl<'a> Caller<'a> {
    pub fn new(key: &'a ApiKey, headers: &'a HeaderMap, method: &'a str, path: &'a str, body: SignedBody<'a>) -> Caller<'a> {
        Caller {
            key,
            headers,
            method,
            path,
            body,
            verified: parking_lot::Mutex::new(Vec::new()),
            nonce_consumed: parking_lot::Mutex::new(Vec::new()),
            nonce_replayed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Verify signatures again on the next evaluation (the credentials were reloaded).
    pub fn forget_verified(&self) {
        self.verified.lock().clear();
    }
}

/// The outcome of stages 2-4 for one action, before it is recorded.
pub struct Evaluated {
    pub decision_id: String,
    pub at_ms: i64,
    pub intercepted: Intercepted,
    pub identity: Identity,
    pub agent: Option<Agent>,
    pub decision: Decision,
    pub trust_after: Option<u8>,
    pub activity: Option<AgentActivity>,
    pub policy_set_hash: String,
    pub policies_evaluated: usize,
    pub started: std::time::Instant,
    /// The session after this decision (consumption, or its end), to persist.
    pub session_update: Option<Session>,
    /// What the decision changed among grants, escalations and breakglass.
    pub authority: crate::authority::Changes,
    /// The approver, when a person's approval let this action run.
    pub approver: Option<String>,
    /// The escalation whose approval let this action run and already added it to the
    /// histories (`Escalation::counted_at`): this decision is the action, so
    /// the approval's row stops counting (`ApprovedActionRetried`).
    pub counted_approval: Option<String>,
    /// The rule and policy violations this decision records.
    pub violations: Vec<Value>,
    /// The etags of the agent and session this decision was made from (the store
    /// refuses the decision if either changed meanwhile: another node wrote it), and
    /// the request nonce it consumes.
    pub guards: Vec<Mutation>,
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Stage 2: who is acting. A verified signature adds the claim of its nonce to
/// `claims`, so the store refuses the decision if another node consumed it first.
fn identify(
    state: &AppState,
    ws: &WorkspaceState,
    caller: &Caller<'_>,
    agent_id: Option<&str>,
    session: Option<&SessionRef>,
    now_ms: i64,
    claims: &mut Vec<Mutation>,
) -> (Identity, Option<Agent>) {
    let failed = |check: &str, reason: String| (Identity::Failed { check: check.to_owned(), reason }, None);
    // A request in a session acts as the session's agent (wire §4: RuntimeSession sends
    // `agent_id: null`); naming another agent is refused.
    let agent_id = match session {
        Some(SessionRef::Unknown(id)) => {
            return failed("unknown_session", format!("session `{id}` does not exist in this workspace"));
        }
        Some(SessionRef::Known(s)) => match agent_id {
            Some(a) if a != s.agent_id => {
                return failed("session_agent_mismatch", format!("session `{}` belongs to agent `{}`, not `{a}`", s.session_id, s.agent_id));
            }
            _ => Some(s.agent_id.as_str()),
        },
        None => agent_id,
    };
    let bound = caller.key.agent_id.as_deref();
    let agent_id = match (agent_id, bound) {
        (None, None) if !ws.settings.read().allow_anonymous => {
            return failed(
                "anonymous_refused",
                "this workspace refuses requests that name no agent (settings.allow_anonymous is false): name the acting agent or use a key bound to it".into(),
            );
        }
        (None, None) => return (Identity::Anonymous, None),
        (None, Some(b)) => b,
        (Some(a), Some(b)) if a != b => {
            return failed("key_bound_to_other_agent", format!("this key is bound to agent `{b}`, not `{a}`"));
        }
        (Some(a), _) => a,
    };
    let Some(agent) = ws.agent(agent_id) else {
        return failed("unknown_agent", format!("agent `{agent_id}` is not registered in this workspace"));
    };
    if !agent.is_active {
        return failed("agent_deactivated", format!("agent `{agent_id}` is deactivated"));
    }
    // A session started with a credential ends with its revocation: the revocation
    // kills it, and should that clean-up not land, the session still acts no more. (A
    // rotation is not a revocation of this kind: its sessions go on.)
    if let Some(SessionRef::Known(s)) = session
        && let Some(c) = &s.credential_id
        && ws.credentials.read().get(c).is_some_and(|c| c.revoked_at.is_some() && !c.rotated)
    {
        return failed("credential_revoked", format!("session `{}` was started with credential `{c}`, which is revoked", s.session_id));
    }
    if agent.require_signature
        && !caller.verified.lock().contains(&agent.agent_id)
        && let Err(f) = check_signature(state, ws, caller, &agent, now_ms, claims)
    {
        return failed(f.check, f.reason);
    }
    (Identity::Verified, Some(agent))
}

/// The request's signature by `agent`, which requires one: verified against its
/// credentials, and its nonce consumed on this node and claimed in `claims`, so the
/// store refuses the commit if another node (or this one before a restart) consumed it
/// first. Once per request and agent (`Caller::verified`).
fn check_signature(
    state: &AppState,
    ws: &WorkspaceState,
    caller: &Caller<'_>,
    agent: &Agent,
    now_ms: i64,
    claims: &mut Vec<Mutation>,
) -> Result<(), signature::SignatureFailure> {
    let creds: Vec<_> = ws.credentials.read().values().filter(|c| c.agent_id == agent.agent_id).cloned().collect();
    let headers = SignedHeaders {
        credential_id: header(caller.headers, "x-praetor-credential"),
        timestamp: header(caller.headers, "x-praetor-timestamp"),
        nonce: header(caller.headers, "x-praetor-nonce"),
        signature: header(caller.headers, "x-praetor-signature"),
    };
    let skew = state.config.signature_max_skew_secs;
    signature::verify(&headers, caller.method, caller.path, &caller.body.sha256(), &agent.agent_id, &creds, now_ms, skew)?;
    let nonce = headers.nonce.unwrap_or_default();
    let window_ms = 2 * skew * 1000;
    if caller.nonce_replayed.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(signature::SignatureFailure::nonce_reused());
    }
    let already_consumed = caller.nonce_consumed.lock().contains(&agent.agent_id);
    if !already_consumed {
        if !state.nonces.lock().consume(&agent.agent_id, nonce, now_ms, window_ms) {
            return Err(signature::SignatureFailure::nonce_reused());
        }
        caller.nonce_consumed.lock().push(agent.agent_id.clone());
    }
    // Claimed again on every evaluation: a refused commit claimed nothing.
    claims.push(Mutation::ClaimNonce {
        workspace_id: ws.workspace_id.clone(),
        agent_id: agent.agent_id.clone(),
        nonce: nonce.to_owned(),
        now: now_ms,
        until: now_ms + window_ms,
    });
    caller.verified.lock().push(agent.agent_id.clone());
    Ok(())
}

/// For a request outside the decision path that acts as agent `agent_id` (delegating
/// its authority, starting or ending its sessions): an agent that requires signatures
/// signs these as it signs its actions, unless an admin key makes the request (an admin
/// acts on the agent, not as it; a key that also acts for agents is no admin here).
/// The agent is read as the store has it, other nodes' changes taken in first (these
/// requests do not catch up as other non-decision requests do, nor carry a decision's
/// etag guard): a `require_signature` set on another node a moment ago counts, and a
/// node that cannot catch up refuses (`503`) rather than decide from its copy. The nonce
/// is claimed in a commit of its own, before the request's change: a replay is refused
/// even if the change then fails, and a nonce so claimed is spent.
pub async fn require_signature_of(state: &AppState, ws: &WorkspaceState, caller: &Caller<'_>, agent_id: &str) -> ApiResult<()> {
    let scopes = &caller.key.scopes;
    if scopes.contains(&praetor_store::Scope::Admin) && !scopes.contains(&praetor_store::Scope::Agent) {
        return Ok(());
    }
    crate::follow::follow(state, ws).await?;
    if !ws.holds_agent(agent_id) {
        resync(state, ws, &[agent_id.to_owned()], &[]).await?;
    }
    let agent = ws.agent(agent_id).ok_or_else(|| ApiError::not_found("agent", agent_id))?;
    if !agent.require_signature {
        return Ok(());
    }
    let refused = |f: signature::SignatureFailure| {
        ApiError::new(Code::SignatureRefused, format!("agent `{}` requires signed requests ({}): {}", agent.agent_id, f.check, f.reason))
    };
    let mut claims = Vec::new();
    check_signature(state, ws, caller, &agent, state.now_ms(), &mut claims).map_err(refused)?;
    match state.commit(Txn { mutations: claims, seal: vec![] }).await {
        Err(praetor_store::StoreError::Replayed(_)) => Err(refused(signature::SignatureFailure::nonce_reused())),
        other => other.map(|_| ()).map_err(ApiError::from),
    }
}

/// Why a hand-off to `target` fails identity, if it does; an active target is expected
/// active when the decision commits.
fn check_hand_off_target(ws: &WorkspaceState, target: &str, guards: &mut Vec<Mutation>) -> Option<(&'static str, String)> {
    let held_active = ws.agents.read().get(target).map(|a| a.is_active);
    match held_active {
        Some(true) => {
            guards.push(Mutation::ExpectActive { workspace_id: ws.workspace_id.clone(), agent_id: target.to_owned(), credential_id: None });
            None
        }
        Some(false) => Some(("target_deactivated", format!("target agent `{target}` is deactivated"))),
        None => Some(("unknown_target", format!("target agent `{target}` is not registered in this workspace"))),
    }
}

/// Stages 2-4 for one action. Histories and trust are read and updated under the
/// workspace's live lock, so concurrent decisions on this node see each other exactly
/// (and the etag guards make decisions on other nodes refuse each other's stale
/// copies). `hand_off_target` is the agent a hand-off (`/enforce/agent-comm`) is
/// addressed to: unknown or inactive, identity fails and the engine blocks; active, the
/// commit expects it still active (a revocation on another node lands first).
fn evaluate_with(
    state: &AppState,
    ws: &WorkspaceState,
    caller: &Caller<'_>,
    intercepted: Intercepted,
    hand_off_target: Option<&str>,
) -> Evaluated {
    let started = std::time::Instant::now();
    let now_ms = state.now_ms();
    let session_ref = intercepted.request.session_id.as_ref().map(|id| match ws.live.lock().sessions.get(id) {
        Some(s) => SessionRef::Known(Box::new(s.clone())),
        None => SessionRef::Unknown(id.clone()),
    });
    let mut guards = Vec::new();
    let (mut identity, agent) = identify(state, ws, caller, intercepted.agent_id.as_deref(), session_ref.as_ref(), now_ms, &mut guards);
    if let Some((check, reason)) = hand_off_target.and_then(|target| check_hand_off_target(ws, target, &mut guards))
        && !matches!(identity, Identity::Failed { .. })
    {
        identity = Identity::Failed { check: check.to_owned(), reason };
    }
    let settings = ws.settings.read().clone();

    let mut live = ws.live.lock();
    // A decision that read the clock before another took this lock and recorded a later
    // action is made at that action's time: the histories stay in time order, and the
    // windows counted from `now` reach every action recorded before this one.
    let newest = |h: Option<&crate::state::History>| h.and_then(|h| h.actions.back()).map_or(i64::MIN, |a| a.at_ms);
    let clock_ms = now_ms;
    let now_ms = now_ms
        .max(newest(agent.as_ref().and_then(|a| live.agent_history.get(&a.agent_id))))
        .max(newest(intercepted.request.session_id.as_ref().and_then(|s| live.session_history.get(s))));
    // The policies are loaded under the lock `WorkspaceState::replace_policies` swaps
    // them under: the window this evaluation prunes and records histories with, and
    // counts them against, is the one the marks of `LiveState::widen_window` were made
    // for. Loaded before the lock, an evaluation that took the old (narrower) set
    // could trim a history just read again for the new window, which would then read
    // as complete while missing what was trimmed.
    let policies = ws.policies.load();
    let window = policies.compiled.history_window_ms();
    // By this node's clock: another node's ahead of it must not trim every other
    // agent's history early.
    maybe_prune(ws, &mut live, clock_ms, window);
    // Trust is read here, under the lock that serialises its updates, not from the
    // copy stage 2 made: a threshold policy must see the score as it is now.
    let agent_facts = agent.as_ref().map(|a| {
        let mut f = crate::authority::agent_facts(a);
        if let Some(current) = ws.agents.read().get(&a.agent_id) {
            f.trust_score = current.trust_score;
        }
        f
    });
    // Read the session again under the lock: concurrent decisions in it count exactly.
    // A closed session answers `terminate` before identity (a revoked agent's run is
    // over), but only to its own agent: a request naming someone else's session learns
    // nothing of it.
    let foreign = matches!(&identity, Identity::Failed { check, .. } if check == "session_agent_mismatch" || check == "key_bound_to_other_agent");
    let session_facts = match &session_ref {
        // (The copy read above if the session has left memory since: only a closed
        // session leaves, and a closed session no longer changes.)
        Some(SessionRef::Known(s)) if !foreign => live.sessions.get(&s.session_id).or(Some(&**s)).map(session_facts),
        _ => None,
    };
    let acting_agent = agent.as_ref().map(|a| a.agent_id.as_str());
    let grant_id = intercepted.chain.get("grant_id").and_then(Value::as_str);
    // The action's hash binds an approval to it: it is needed to find one (only when the
    // workspace holds an unused approval) and to open one (only when this decision
    // escalates).
    let action_hash = || {
        crate::authority::action_hash(
            acting_agent,
            intercepted.request.session_id.as_deref(),
            &intercepted.request.action_type,
            intercepted.content_sha256.as_deref(),
            &intercepted.request.metadata,
        )
    };
    let lookup_hash = live.authority.escalations.any_unused_approval().then(action_hash);
    let authority_facts = {
        let agents = ws.agents.read();
        crate::authority::facts(&live.authority, &agents, acting_agent, &intercepted.request.action_type, grant_id, lookup_hash.as_deref(), now_ms, &settings)
    };
    // An approval of this action that added it to the histories when it was given: the
    // action is evaluated as it was when it escalated, without that entry (otherwise a
    // velocity limit would count the approved action against itself).
    let approved_entry = authority_facts
        .approval
        .as_ref()
        .filter(|a| a.counted)
        .and_then(|a| live.authority.escalations.get(&a.escalation_id))
        .and_then(|e| Some(PastAction { action_type: e.action_type.clone(), at_ms: e.counted_at? }));
    let mut decision = {
        // Borrow the histories in place (no copy): both maps are fields of `live`.
        let LiveState { agent_history, session_history, .. } = &mut *live;
        let agent_h = agent.as_ref().and_then(|a| agent_history.get_mut(&a.agent_id));
        let agent_from = agent_h.as_ref().map_or(i64::MIN, |h| h.from_ms());
        let agent_hist = without(agent_h.map(contiguous).unwrap_or(&[]), approved_entry.as_ref());
        let session_h = intercepted.request.session_id.as_ref().and_then(|s| session_history.get_mut(s));
        let session_from = session_h.as_ref().map_or(i64::MIN, |h| h.from_ms());
        let session_hist = without(session_h.map(contiguous).unwrap_or(&[]), approved_entry.as_ref());
        let input = DecisionInput {
            request: &intercepted.request,
            identity: &identity,
            agent: agent_facts.as_ref(),
            agent_history: &agent_hist,
            session_history: &session_hist,
            agent_history_from_ms: agent_from,
            session_history_from_ms: session_from,
            session: session_facts.as_ref(),
            authority: authority_facts.authority(),
            now_ms,
        };
        decide(&input, &policies.compiled, &settings)
    };
    let agent_id = agent.as_ref().map(|a| a.agent_id.as_str());
    refuse_escalation_over_limit(&mut decision, &live.authority.escalations, agent_id, &settings);
    let decision_id = new_time_ordered_id("dec", now_ms);
    let new_etag = format!("e_{decision_id}");
    if let Some(f) = &session_facts
        && let Some(s) = live.sessions.get(&f.session_id)
    {
        guards.push(guard(&ws.workspace_id, Guarded::Session, &s.session_id, &s.etag));
    }
    let session_update = session_facts.as_ref().and_then(|f| apply_to_session(&mut live, f, &decision, now_ms, &new_etag));
    let (violations, queue) = violations_of(&decision, &policies.records, now_ms);
    let hash = match lookup_hash {
        Some(h) => h,
        None if decision.verdict == Verdict::Escalate => action_hash(),
        None => String::new(),
    };
    let opening = crate::authority::Opening {
        workspace_id: &ws.workspace_id,
        decision_id: &decision_id,
        agent_id: acting_agent,
        session_id: intercepted.request.session_id.as_deref(),
        action_type: &intercepted.request.action_type,
        action_hash: &hash,
        key_id: &caller.key.key_id,
        // Identity is verified by a signature only for agents that require one.
        credential_id: match (&identity, &agent) {
            (Identity::Verified, Some(a)) if a.require_signature => header(caller.headers, "x-praetor-credential"),
            _ => None,
        },
        queue,
    };
    if let Some(used) = decision.authority.grant_used.as_deref() {
        // The grantors were read from this node's copies, which another node's
        // revocation may not have reached yet: the store must still hold them active.
        for giver in crate::authority::grantors(&live.authority, used) {
            guards.push(Mutation::ExpectActive { workspace_id: ws.workspace_id.clone(), agent_id: giver, credential_id: None });
        }
    }
    let mut authority_changes = crate::authority::apply(&mut live.authority, &decision, grant_id, &opening, now_ms, &settings);
    // A decision that ends its session (a budget ran out) settles the session's open
    // escalations in its own transaction, as every other close does.
    if let Some(s) = &session_update {
        let settled = crate::authority::settle_session(&mut live.authority, s, None, &ws.workspace_id, now_ms);
        authority_changes.records.extend(settled.records);
        authority_changes.seals.extend(settled.seals);
    }
    let approver = authority_facts.approval.as_ref().filter(|_| decision.authority.approved_by.is_some()).map(|a| a.approver.clone());
    // An approval that added its action to the histories when it was given: this
    // decision, its retry, is that action. It moves to this decision's time, as in the
    // store (whose approval row stops counting, `ApprovedActionRetried`, while this
    // decision's row counts).
    let counted_approval = decision.authority.approved_by.clone().filter(|_| approved_entry.is_some());

    if decision.verdict == Verdict::Allow {
        if let Some(entry) = approved_entry.as_ref().filter(|_| counted_approval.is_some()) {
            let agent_h = agent.as_ref().and_then(|a| live.agent_history.get_mut(&a.agent_id));
            agent_h.into_iter().for_each(|h| h.forget(entry));
            let session_h = intercepted.request.session_id.as_ref().and_then(|s| live.session_history.get_mut(s));
            session_h.into_iter().for_each(|h| h.forget(entry));
        }
        let past = PastAction { action_type: intercepted.request.action_type.clone(), at_ms: now_ms };
        if let Some(a) = &agent {
            LiveState::record(live.agent_history.entry(a.agent_id.clone()).or_default(), past.clone(), window);
        }
        if let Some(s) = &intercepted.request.session_id {
            LiveState::record(live.session_history.entry(s.clone()).or_default(), past, window);
        }
    }

    let mut trust_after = None;
    let mut activity = None;
    if let Some(a) = &agent {
        let mut agents = ws.agents.write();
        if let Some(current) = agents.get_mut(&a.agent_id) {
            // Guard the etag of the copy this decision was made from. If the copy was
            // reloaded since stage 2 identified with it (its credentials, scopes) and the
            // two etags differ, guard both: only one can be the store's, so the decision
            // is refused and made again from the new copy, whichever of the two is stale.
            guards.push(guard(&ws.workspace_id, Guarded::Agent, &a.agent_id, &current.etag));
            if current.copy_generation != a.copy_generation && current.etag != a.etag {
                guards.push(guard(&ws.workspace_id, Guarded::Agent, &a.agent_id, &a.etag));
            }
            current.etag = new_etag.clone();
            let (score, streak) = next_trust(current.trust_score, current.clean_streak, &decision, settings.trust_baseline);
            current.trust_score = score;
            current.clean_streak = streak;
            current.last_seen_at = Some(now_ms);
            current.total_actions += 1;
            match decision.verdict {
                Verdict::Allow => current.allowed_actions += 1,
                Verdict::Escalate => current.escalated_actions += 1,
                Verdict::Block | Verdict::Terminate => current.blocked_actions += 1,
            }
            trust_after = Some(score);
            activity = Some(AgentActivity {
                workspace_id: ws.workspace_id.clone(),
                agent_id: a.agent_id.clone(),
                trust_score: score,
                clean_streak: streak,
                decision: decision.verdict.as_str().to_owned(),
                at: now_ms,
                etag: new_etag.clone(),
            });
        }
    }
    drop(live);

    Evaluated {
        decision_id,
        at_ms: now_ms,
        intercepted,
        identity,
        agent,
        decision,
        trust_after,
        activity,
        policy_set_hash: policies.hash.clone(),
        policies_evaluated: policies.records.iter().filter(|r| r.def.enabled).count(),
        started,
        session_update,
        authority: authority_changes,
        approver,
        counted_approval,
        violations,
        guards,
    }
}

fn guard(workspace_id: &str, of: Guarded, id: &str, etag: &str) -> Mutation {
    Mutation::Expect { workspace_id: workspace_id.to_owned(), of, id: id.to_owned(), etag: etag.to_owned() }
}

/// Every escalation is held in memory until it settles and the sweeper prunes it: when
/// the workspace holds `max_pending_escalations` already, or the agent its share
/// (`max_pending_escalations_per_agent`), an action that would open one more is blocked
/// instead, so a flood of escalations (a runaway agent, a policy too eager) cannot grow
/// memory without bound, and one agent's flood does not block every other agent's
/// escalations. Fails closed; the answer names the limit.
fn refuse_escalation_over_limit(
    decision: &mut praetor_core::Decision,
    held: &crate::authority::Escalations,
    agent_id: Option<&str>,
    settings: &praetor_core::WorkspaceSettings,
) {
    if decision.verdict != Verdict::Escalate {
        return;
    }
    let (all, own) = (held.len() as u64, held.held_by(agent_id) as u64);
    let reason = if own >= settings.max_pending_escalations_per_agent {
        let who = agent_id.map_or_else(|| "requests naming no agent hold".to_owned(), |a| format!("agent `{a}` holds"));
        format!(
            "{who} {own} escalations, their share (max_pending_escalations_per_agent = {}): approve, reject or let some expire, or raise the limit",
            settings.max_pending_escalations_per_agent
        )
    } else if all >= settings.max_pending_escalations {
        format!(
            "the workspace holds {all} escalations, its limit (max_pending_escalations = {}): approve, reject or let some expire, or raise the limit",
            settings.max_pending_escalations
        )
    } else {
        return;
    };
    tracing::debug!(all, own, "escalation refused: {reason}");
    decision.block_instead_of_escalating(reason);
}

/// The violations a decision records: every matching governance rule (with its own
/// severity and action) and every matching policy whose effect is not a plain allow
/// (block: high, escalate: medium, allow_with_warning: low), including those breakglass
/// overrode. Also the review queue of a matching `redirect` rule. Each violation gets
/// its id here: the decision's vault entry seals it under that id.
fn violations_of(d: &praetor_core::Decision, records: &[praetor_store::PolicyRecord], now_ms: i64) -> (Vec<Value>, Option<String>) {
    let mut out = Vec::new();
    let mut queue = None;
    for t in d.triggered.iter().chain(&d.authority.overridden) {
        if t.policy_id.starts_with("__") {
            continue;
        }
        let Some(rec) = records.iter().find(|r| r.def.policy_id == t.policy_id) else { continue };
        let (kind, severity, action) = match &rec.def.governance {
            Some(g) => {
                let action = g["action"].as_str().unwrap_or("flag").to_owned();
                if action == "redirect" && queue.is_none() {
                    queue = g["queue"].as_str().map(str::to_owned);
                }
                ("rule", g["severity"].as_str().unwrap_or("medium").to_owned(), action)
            }
            None => match t.decision.as_str() {
                "block" => ("policy", "high".to_owned(), "block".to_owned()),
                "escalate" => ("policy", "medium".to_owned(), "escalate".to_owned()),
                "allow_with_warning" => ("policy", "low".to_owned(), "allow_with_warning".to_owned()),
                _ => continue,
            },
        };
        out.push(json!({
            "violation_id": new_time_ordered_id("vio", now_ms),
            "rule_id": t.policy_id, "rule_name": t.name, "source": kind, "severity": severity, "action": action,
            "reason": t.reason, "overridden_by_breakglass": d.authority.breakglass_id,
        }));
    }
    (out, queue)
}

/// What a request's `session_id` names.
#[derive(Debug, Clone)]
pub enum SessionRef {
    Known(Box<Session>),
    Unknown(String),
}

pub fn session_facts(s: &Session) -> SessionFacts {
    SessionFacts {
        session_id: s.session_id.clone(),
        status: s.status,
        reason: s.kill_reason.clone(),
        expires_at_ms: s.expires_at,
        budgets: s.budgets.clone(),
        consumed: s.consumed.clone(),
    }
}

/// Charge an allowed action to its session, or end the session when the decision says
/// a budget ran out. Returns the session to persist when it changed.
fn apply_to_session(live: &mut LiveState, facts: &SessionFacts, d: &praetor_core::Decision, now_ms: i64, etag: &str) -> Option<Session> {
    let s = live.sessions.get_mut(&facts.session_id)?;
    if let Some(charge) = &d.charge {
        s.consumed.add(charge);
    } else if let Some(reason) = &d.ends_session {
        s.status = SessionStatus::Terminated;
        s.kill_reason = Some(reason.clone());
        s.closed_at = Some(now_ms);
    } else {
        return None;
    }
    s.version += 1;
    s.etag = etag.to_owned();
    Some(s.clone())
}

/// Make sure a session named by a request is in memory (a closed one may only be in
/// the store), so the decision sees its real state. False when no such session exists.
/// A closed session held already counts as read now, which keeps the sweeper from
/// forgetting it while this request is on its way to evaluation.
pub async fn load_session(state: &AppState, ws: &WorkspaceState, session_id: &str) -> ApiResult<bool> {
    {
        let mut live = ws.live.lock();
        if let Some(s) = live.sessions.get(session_id) {
            if s.status != SessionStatus::Active {
                live.session_loaded_ms.insert(session_id.to_owned(), state.now_ms());
            }
            return Ok(true);
        }
    }
    let (since, cap) = history_bounds(state, ws);
    let Some(st) = state.store.session_state(&ws.workspace_id, session_id, since, cap).await? else { return Ok(false) };
    if !ws.live.lock().sessions.contains_key(session_id) {
        ws.adopt_session(session_id, Some(st), state.now_ms());
    }
    Ok(true)
}

/// Whether a session the store holds, named by this request, has left memory since it
/// was loaded (the sweeper forgets closed sessions): then it must be read again, or the
/// request would be decided as naming no session at all.
fn session_gone(ws: &WorkspaceState, loaded: &[&str]) -> bool {
    if loaded.is_empty() {
        return false;
    }
    let live = ws.live.lock();
    loaded.iter().any(|sid| !live.sessions.contains_key(*sid))
}

/// How far back, and how many, allowed actions a history read from the store needs.
fn history_bounds(state: &AppState, ws: &WorkspaceState) -> (i64, u32) {
    let window = ws.policies.load().compiled.history_window_ms().max(0);
    (state.now_ms().saturating_sub(window), crate::state::HISTORY_CAP as u32)
}

/// Reload agents and sessions from the store (another node changed them).
pub async fn resync(state: &AppState, ws: &WorkspaceState, agents: &[String], sessions: &[String]) -> ApiResult<()> {
    let (since, cap) = history_bounds(state, ws);
    for id in agents {
        // Two reloads of one agent may overlap (the change feed's and a read-back after
        // a change): the one that started first can finish last, and would set the
        // copy back to before the other's change. A reload that another overtook reads
        // again, so that what is kept was read after every change made before it.
        for attempt in 1.. {
            let seen = ws.agent_generation(id);
            let st = state.store.agent_state(&ws.workspace_id, id, since, cap).await?;
            if ws.adopt_agent_unless_reloaded(id, st, seen) {
                break;
            }
            if attempt == MAX_ATTEMPTS {
                tracing::warn!(workspace_id = %ws.workspace_id, agent_id = %id, "agent kept being reloaded meanwhile; keeping the latest reload");
                break;
            }
        }
    }
    // A session's read that another reload overtook is dropped rather than read again:
    // sessions are reloaded after every refused commit, and the many requests of one
    // busy session refused together would otherwise keep overtaking each other's reads.
    // The reload kept may still be behind the store; the session's next commit is then
    // refused too, and reads it again.
    for id in sessions {
        let seen = ws.session_generation(id);
        let st = state.store.session_state(&ws.workspace_id, id, since, cap).await?;
        if !ws.adopt_session_unless_reloaded(id, st, seen, state.now_ms()) {
            tracing::debug!(workspace_id = %ws.workspace_id, session_id = %id, "a newer reload of the session landed first; keeping it");
        }
    }
    Ok(())
}

/// After a refused commit: reload the agents the request was decided from, unless
/// another refused request reloaded them since (`adopt_agent_unless_reloaded`), and its
/// sessions.
async fn resync_after_refusal(state: &AppState, ws: &WorkspaceState, touched: &Touched) -> ApiResult<()> {
    let (since, cap) = history_bounds(state, ws);
    for (id, seen) in &touched.agents {
        if ws.agent_generation(id) != *seen {
            continue; // reloaded since: no need to read the store
        }
        let st = state.store.agent_state(&ws.workspace_id, id, since, cap).await?;
        ws.adopt_agent_unless_reloaded(id, st, *seen);
    }
    resync_sessions(state, ws, &touched.sessions).await?;
    recheck_grantors(state, ws, &touched.grantors).await
}

/// After a refused commit of decisions through grants or hand-offs: a grantor or a
/// hand-off's target the store holds inactive (revoked or deactivated on another node)
/// is marked so in this node's copy, so the decision made again refuses the grant or
/// the hand-off. Only the flag: taking the store's whole copy would set it back behind
/// the agent's own decisions on their way to the store (`adopt_agent_unless_reloaded`),
/// and the change feed brings the rest.
async fn recheck_grantors(state: &AppState, ws: &WorkspaceState, grantors: &[String]) -> ApiResult<()> {
    for id in grantors {
        // No history: only the agent's row is wanted.
        let stored = state.store.agent_state(&ws.workspace_id, id, i64::MAX, 0).await?;
        if stored.is_none_or(|st| !st.agent.is_active)
            && let Some(held) = ws.agents.write().get_mut(id)
        {
            held.is_active = false;
        }
    }
    Ok(())
}

/// Read a session from the store for an answer about it (its status, a heartbeat),
/// keeping this node's copy when it is as new or newer (`adopt_session_if_newer`):
/// unlike `resync`, which follows a refused commit and must drop what memory ran
/// ahead with, this is asked while the session's decisions may be in flight.
pub async fn refresh_session(state: &AppState, ws: &WorkspaceState, session_id: &str) -> ApiResult<()> {
    let (since, cap) = history_bounds(state, ws);
    let stored = state.store.session_state(&ws.workspace_id, session_id, since, cap).await?;
    ws.adopt_session_if_newer(session_id, stored, state.now_ms());
    Ok(())
}

pub async fn resync_sessions(state: &AppState, ws: &WorkspaceState, sessions: &[String]) -> ApiResult<()> {
    resync(state, ws, &[], sessions).await
}

/// Reload authority objects from the store (a change made in memory was not committed,
/// or another node changed them).
pub async fn resync_objects(state: &AppState, ws: &WorkspaceState, objects: &[(String, String)]) -> ApiResult<()> {
    for (kind, id) in objects {
        let stored = state.store.get_object(&ws.workspace_id, kind, id).await?;
        let mut live = ws.live.lock();
        match stored {
            Some(r) => live.authority.absorb(&r),
            None => live.authority.forget(kind, id),
        }
    }
    Ok(())
}

/// At most this many evaluations of one request when other nodes keep changing what
/// it was decided from; then the caller is told to retry.
const MAX_ATTEMPTS: u32 = 50;

/// Stages 2-5 for a request's actions: evaluate, then record in one commit. When the
/// store refuses the commit because an agent or session changed since this node read
/// it (another node decided for it, killed it, revoked it), the copies are reloaded
/// and the actions evaluated again: a decision is never made from a stale copy.
pub async fn decide_and_record(
    state: &AppState,
    ws: &WorkspaceState,
    caller: &Caller<'_>,
    actions: Vec<Intercepted>,
    hand_off_target: Option<&str>,
) -> ApiResult<Vec<Answer>> {
    let mut attempt = 0;
    loop {
        let mut loaded = Vec::new();
        for sid in actions.iter().filter_map(|i| i.request.session_id.as_deref()) {
            if load_session(state, ws, sid).await? {
                loaded.push(sid);
            }
        }
        let named = named_agents(ws, caller, &actions);
        load_unknown_agents(state, ws, &named).await?;
        // A target registered on another node is read from the store, not refused
        // until the change feed brings it.
        if let Some(target) = hand_off_target {
            load_unknown_agents(state, ws, &[target.to_owned()]).await?;
        }
        read_short_histories(state, ws, named, &actions).await?;
        let evaluated_now = {
            // The sweeper forgets closed sessions under this lock too: a session present
            // here stays present through the evaluation.
            let _order = ws.decision_order.lock();
            if session_gone(ws, &loaded) {
                None
            } else {
                let evaluated: Vec<Evaluated> = actions
                    .iter()
                    .map(|i| evaluate_with(state, ws, caller, i.clone(), hand_off_target))
                    .collect();
                let touched = Touched::of(ws, &evaluated);
                Some((touched, record(state, ws, evaluated)))
            }
        };
        let Some((touched, recording)) = evaluated_now else {
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(ApiError::new(Code::StoreUnavailable, "a session named by the request kept leaving memory; retry the request"));
            }
            continue;
        };
        match recording.await {
            // The commit was refused and nothing of it written, but evaluation already
            // changed this node's copies: reload them, then evaluate again.
            Err(e @ (praetor_store::StoreError::Stale(_) | praetor_store::StoreError::Replayed(_))) => {
                attempt += 1;
                let replayed = matches!(e, praetor_store::StoreError::Replayed(_));
                if replayed {
                    // Another node (or this one before a restart) consumed the nonce:
                    // identity now fails as a reused nonce, recorded like any refusal.
                    tracing::warn!(workspace_id = %ws.workspace_id, error = %e, "signed request replayed");
                    caller.nonce_replayed.store(true, std::sync::atomic::Ordering::Relaxed);
                } else {
                    tracing::debug!(workspace_id = %ws.workspace_id, error = %e, attempt, "decided from a stale copy; reloading");
                    state.metrics.stale_reevaluations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                resync_after_refusal(state, ws, &touched).await?;
                resync_objects(state, ws, &touched.objects).await?;
                caller.forget_verified();
                if attempt >= MAX_ATTEMPTS {
                    return Err(ApiError::new(Code::StoreUnavailable, format!("{e}: it kept changing on other nodes; retry the request")));
                }
                if !replayed {
                    tokio::time::sleep(std::time::Duration::from_micros(crate::secrets::jitter(200 << attempt.min(6)))).await;
                }
            }
            Err(e) => {
                // The store failed (not a refusal): nothing was written, but evaluation
                // changed this node's copies (trust, a session's budget, an escalation
                // opened). Read them back, as after a refusal, so that memory does not
                // claim what the store never got; if the store cannot answer that
                // either, the etag guards still refuse every decision made from them.
                if let Err(reload) = resync_after_refusal(state, ws, &touched).await.and(resync_objects(state, ws, &touched.objects).await) {
                    tracing::warn!(workspace_id = %ws.workspace_id, error = %reload.message, "cannot read back what a failed commit changed in memory");
                }
                return Err(e.into());
            }
            Ok(answers) => return Ok(answers),
        }
    }
}

/// The agents a request's actions may be decided for: those they name, the caller's
/// key's agent and the agents of the sessions they name.
fn named_agents(ws: &WorkspaceState, caller: &Caller<'_>, actions: &[Intercepted]) -> Vec<String> {
    let mut named: Vec<String> = actions.iter().filter_map(|i| i.agent_id.clone()).collect();
    named.extend(caller.key.agent_id.clone());
    {
        let live = ws.live.lock();
        let sessions = actions.iter().filter_map(|i| i.request.session_id.as_ref()).filter_map(|s| live.sessions.get(s));
        named.extend(sessions.map(|s| s.agent_id.clone()));
    }
    named.sort();
    named.dedup();
    named
}

/// A request, or an escalation read back, may name an agent registered on another node
/// a moment ago, before this node's change feed brought it: look it up in the store
/// before taking it as unknown.
async fn load_unknown_agents(state: &AppState, ws: &WorkspaceState, named: &[String]) -> ApiResult<()> {
    let now = state.now_ms();
    let missing: Vec<String> = named.iter().filter(|a| !ws.holds_agent(a) && !ws.known_absent(a, now)).cloned().collect();
    if !missing.is_empty() {
        resync(state, ws, &missing, &[]).await?;
        for a in missing.iter().filter(|a| !ws.holds_agent(a)) {
            ws.mark_absent(a, now);
        }
    }
    Ok(())
}

/// Since the policies in force widened their window, the histories in memory of the
/// request's agents and sessions may start too late for it (`History::needs_reading`):
/// read those again from the store before evaluating, so that a velocity or sequence
/// policy added after a burst counts the burst. (One that still finds its history
/// short, because the window widened again in between, fails closed.)
async fn read_short_histories(state: &AppState, ws: &WorkspaceState, agents: Vec<String>, actions: &[Intercepted]) -> ApiResult<()> {
    let window = ws.policies.load().compiled.history_window_ms();
    if window <= 0 {
        return Ok(());
    }
    let start = state.now_ms().saturating_sub(window);
    let (agents, sessions) = {
        let live = ws.live.lock();
        let short = |h: Option<&crate::state::History>| h.is_some_and(|h| h.needs_reading(start));
        let agents: Vec<String> = agents.into_iter().filter(|a| short(live.agent_history.get(a))).collect();
        let mut sessions: Vec<String> =
            actions.iter().filter_map(|i| i.request.session_id.clone()).filter(|s| short(live.session_history.get(s))).collect();
        sessions.sort();
        sessions.dedup();
        (agents, sessions)
    };
    if agents.is_empty() && sessions.is_empty() {
        return Ok(());
    }
    tracing::debug!(workspace_id = %ws.workspace_id, agents = agents.len(), sessions = sessions.len(), "the policies' window widened; reading histories again");
    resync(state, ws, &agents, &sessions).await
}

/// What a set of evaluations read and changed, to reload when their commit is refused.
struct Touched {
    /// With the reload generation of the copy the request was decided from.
    agents: Vec<(String, Option<u64>)>,
    sessions: Vec<String>,
    objects: Vec<(String, String)>,
    /// The grantors of the grants used and the targets of hand-offs, which the commit
    /// expected active.
    grantors: Vec<String>,
}

impl Touched {
    fn of(ws: &WorkspaceState, evaluated: &[Evaluated]) -> Touched {
        let mut t = Touched { agents: Vec::new(), sessions: Vec::new(), objects: Vec::new(), grantors: Vec::new() };
        for e in evaluated {
            for g in &e.guards {
                match g {
                    Mutation::Expect { of: Guarded::Agent, id, .. } => t.agents.push((id.clone(), ws.agent_generation(id))),
                    Mutation::Expect { of: Guarded::Session, id, .. } => t.sessions.push(id.clone()),
                    Mutation::ExpectActive { agent_id, .. } => t.grantors.push(agent_id.clone()),
                    _ => {}
                }
            }
            t.objects.extend(e.authority.records.iter().map(|r| (r.kind.clone(), r.object_id.clone())));
        }
        t.agents.sort();
        t.agents.dedup_by(|a, b| a.0 == b.0);
        t.sessions.sort();
        t.sessions.dedup();
        t.objects.sort();
        t.objects.dedup();
        t.grantors.sort();
        t.grantors.dedup();
        t
    }
}

/// The verdict had a shadow policy with this effect been enforced: the more restrictive
/// of the two (`allow_with_warning` is an allow). A terminated run stays terminated.
pub fn would_decide_for(d: &praetor_core::Decision, shadow_effect: &str) -> &'static str {
    // With no live policy matched, the workspace default decided: an enforced shadow
    // policy would have matched instead of it, in either direction.
    // (A block at the escalation limit replaced the default's escalation.)
    let default_decided = d.triggered.iter().all(|t| t.policy_id == "__default" || t.policy_id == praetor_core::ESCALATION_LIMIT_ID);
    if default_decided && matches!(d.verdict, Verdict::Allow | Verdict::Escalate | Verdict::Block) {
        return match shadow_effect {
            "block" => "block",
            "escalate" => "escalate",
            _ => "allow",
        };
    }
    would_decide(d.verdict, shadow_effect)
}

pub fn would_decide(actual: Verdict, shadow_effect: &str) -> &'static str {
    let rank = |v: &str| match v {
        "terminate" => 3,
        "block" => 2,
        "escalate" => 1,
        _ => 0,
    };
    let shadow = match shadow_effect {
        "block" => "block",
        "escalate" => "escalate",
        _ => "allow",
    };
    if rank(shadow) > rank(actual.as_str()) { shadow } else { actual.as_str() }
}

fn contiguous(h: &mut crate::state::History) -> &[PastAction] {
    h.actions.make_contiguous()
}

/// `history` without its newest entry equal to `entry`, if there is one (copied only
/// then: nearly always it is borrowed as it is).
fn without<'h>(history: &'h [PastAction], entry: Option<&PastAction>) -> std::borrow::Cow<'h, [PastAction]> {
    match entry.and_then(|e| history.iter().rposition(|a| a == e)) {
        Some(i) => {
            let mut copy = history.to_vec();
            copy.remove(i);
            std::borrow::Cow::Owned(copy)
        }
        None => std::borrow::Cow::Borrowed(history),
    }
}

/// Prune histories at most once a second: memory stays bounded without paying for a
/// sweep on every decision.
fn maybe_prune(ws: &WorkspaceState, live: &mut LiveState, now_ms: i64, window_ms: i64) {
    use std::sync::atomic::Ordering;
    let last = ws.last_prune_ms.load(Ordering::Relaxed) as i64;
    if now_ms - last >= 1000 {
        live.prune(now_ms, window_ms);
        ws.last_prune_ms.store(now_ms.max(0) as u64, Ordering::Relaxed);
    }
}

/// The vault entry that seals one decision (docs/vault.md, "decision entries").
/// No floats: every field is a string, an integer, a boolean or null.
/// The fields it shares with the answer are taken from the answer's `FromEntry`, so that
/// reading the decision back (`answer::rebuild`) gives the answer back.
fn vault_entry(ws: &WorkspaceState, e: &Evaluated, answer: &FromEntry) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), json!("decision"));
    m.insert("time".into(), json!(answer.created_at));
    m.insert("workspace_id".into(), json!(ws.workspace_id));
    m.insert("decision_id".into(), json!(answer.decision_id));
    m.insert("agent_id".into(), json!(answer.agent_id));
    m.insert("session_id".into(), json!(answer.session_id));
    m.insert("action_type".into(), json!(answer.action_type));
    m.insert("content_sha256".into(), json!(e.intercepted.content_sha256));
    m.insert("content_redacted".into(), json!(e.intercepted.request.content_redacted));
    m.insert("decision".into(), json!(answer.decision));
    m.insert("outcome".into(), json!(answer.outcome));
    m.insert("policies".into(), serde_json::to_value(&answer.policies_triggered).unwrap_or(Value::Null));
    m.insert("policy_set_hash".into(), json!(answer.policy_set_hash));
    m.insert("identity".into(), serde_json::to_value(&answer.identity).unwrap_or(Value::Null));
    m.insert("approver".into(), json!(e.approver));
    let auth = &e.decision.authority;
    if auth != &praetor_core::authority::AuthorityOutcome::default() {
        m.insert("authority".into(), serde_json::to_value(auth).unwrap_or(Value::Null));
    }
    if let Some(id) = &answer.escalation_id {
        m.insert("escalation_id".into(), json!(id));
    }
    if !e.decision.shadow.is_empty() {
        m.insert("shadow".into(), serde_json::to_value(&e.decision.shadow).unwrap_or(Value::Null));
    }
    // A decision's violations are sealed in its own entry, with the request metadata a
    // rule may have judged, rather than in an entry of their own each.
    if !e.violations.is_empty() {
        m.insert("violations".into(), Value::Array(e.violations.clone()));
        m.insert("metadata".into(), crate::events::floats_as_strings(Value::Object(e.intercepted.request.metadata.clone())));
    }
    m
}

/// The API answer for one decision (wire §2.2 plus the authorisation object fields),
/// all but where it was sealed (`Receipt`, known once committed).
fn response(ws: &WorkspaceState, e: &Evaluated) -> Answer {
    let d = &e.decision;
    let req = &e.intercepted.request;
    let jurisdiction = match req.metadata.get("jurisdiction") {
        Some(Value::String(j)) => Some(j.clone()),
        _ => ws.settings.read().default_jurisdiction.clone(),
    };
    let auth = &d.authority;
    let sealed = FromEntry {
        ok: true,
        decision: d.verdict.as_str(),
        outcome: d.outcome.as_str(),
        policy_result: d.outcome.as_str(),
        decision_id: e.decision_id.clone(),
        authorisation_id: e.decision_id.replacen("dec_", "auth_", 1),
        policies_triggered: d.triggered.clone(),
        agent_id: e.agent.as_ref().map(|a| &a.agent_id).or(e.intercepted.agent_id.as_ref()).cloned(),
        action_type: req.action_type.clone(),
        identity: e.identity.clone(),
        policy_set_hash: e.policy_set_hash.clone(),
        created_at: iso(e.at_ms),
        session_id: req.session_id.clone(),
        escalation_id: e.authority.opened.as_ref().map(|esc| esc.escalation_id.clone()),
    };
    let rest = Rest {
        reasoning: d.reasoning.clone(),
        shadow_policies: d
            .shadow
            .iter()
            .map(|t| {
                let would = would_decide_for(d, &t.decision);
                ShadowAnswer {
                    policy_id: t.policy_id.clone(),
                    name: t.name.clone(),
                    decision: t.decision.clone(),
                    reason: t.reason.clone(),
                    would_decide: would,
                    would_change: would != d.verdict.as_str(),
                }
            })
            .collect(),
        errors: d.errors.clone(),
        trust_score: e.trust_after,
        permission_scope: e.agent.as_ref().map(|a| a.scopes.clone()).unwrap_or_default(),
        policy_evaluated: e.policies_evaluated,
        boundary_check: d.boundary,
        jurisdiction,
        escalation: e.authority.opened.as_ref().map(|esc| OpenedEscalation {
            escalation_id: esc.escalation_id.clone(),
            status: "pending",
            expires_at: iso(esc.expires_at),
        }),
        delegation: e.authority.delegation.clone(),
        breakglass_id: auth.breakglass_id.clone(),
        overridden_policies: auth.breakglass_id.as_ref().map(|_| auth.overridden.clone()),
        covered_by: auth.covered_by.clone(),
        approved_by: auth.approved_by.as_ref().map(|a| ApprovedBy { escalation_id: a.clone(), approver: e.approver.clone() }),
        chain: e.intercepted.chain.clone(),
    };
    Answer { sealed, rest, receipt: Receipt::default() }
}

/// The stored record of one of a decision's violations: the violation as its decision's
/// vault entry seals it, and who and when. The rest of the decision's context (its
/// verdict, action, content hash, metadata) is sealed once, in the decision's entry, and
/// joined back when the violation is read (`Violation::add_decision_context`).
fn violation_row(ws: &WorkspaceState, e: &Evaluated, v: &Value) -> praetor_store::Violation {
    let agent_id = e.agent.as_ref().map(|a| a.agent_id.clone());
    let mut body = v.clone();
    if let Value::Object(m) = &mut body {
        m.insert("decision_id".into(), json!(e.decision_id));
        m.insert("agent_id".into(), json!(agent_id));
        m.insert("at".into(), json!(iso(e.at_ms)));
    }
    praetor_store::Violation {
        violation_id: v["violation_id"].as_str().unwrap_or_default().to_owned(),
        workspace_id: ws.workspace_id.clone(),
        rule_id: v["rule_id"].as_str().unwrap_or_default().to_owned(),
        severity: v["severity"].as_str().unwrap_or("medium").to_owned(),
        agent_id,
        decision_id: e.decision_id.clone(),
        at: e.at_ms,
        body,
        decision_agent: None,
    }
}

/// Stage 5: seal every evaluated action and store its decision in one transaction,
/// and answer only once it is committed.
/// The transaction is built and queued before this returns (so a workspace's decisions
/// reach the writer in the order they were made); the future waits for its commit.
fn record<'a>(
    state: &'a AppState,
    ws: &WorkspaceState,
    mut evaluated: Vec<Evaluated>,
) -> impl std::future::Future<Output = praetor_store::Result<Vec<Answer>>> + 'a {
    let mut txn = Txn::default();
    let mut bodies = Vec::with_capacity(evaluated.len());
    // Where each decision's own entry sits among the transaction's seals (session
    // events may be sealed between them).
    let mut seal_of = Vec::with_capacity(evaluated.len());
    // A grantor is expected active once per transaction, however many of its actions
    // went through its grants. (Empty, and not allocated, when no grant was used.)
    let mut grantors_expected: std::collections::HashSet<String> = std::collections::HashSet::new();
    for e in &mut evaluated {
        let i = txn.seal.len();
        seal_of.push(i);
        for g in &e.guards {
            if let Mutation::ExpectActive { agent_id, credential_id: None, .. } = g
                && !grantors_expected.insert(agent_id.clone())
            {
                continue;
            }
            txn.mutations.push(g.clone());
        }
        // The store adds `answer_sha256` to the entry: the digest of the row's part of
        // the answer as it encodes it (`Txn::seal_answer_digests`).
        let body = response(ws, e);
        let entry = vault_entry(ws, e, &body.sealed);
        let stored = body.rest.to_row();
        crate::answer::debug_assert_gives_back(&body, &entry, &stored);
        txn.seal.push(SealRequest { workspace_id: ws.workspace_id.clone(), body: entry });
        txn.mutations.push(Mutation::InsertDecision {
            row: DecisionRow {
                decision_id: e.decision_id.clone(),
                workspace_id: ws.workspace_id.clone(),
                agent_id: e.agent.as_ref().map(|a| a.agent_id.clone()).or_else(|| e.intercepted.agent_id.clone()),
                session_id: e.intercepted.request.session_id.clone(),
                action_type: e.intercepted.request.action_type.clone(),
                decision: e.decision.verdict.as_str().to_owned(),
                created_at: e.at_ms,
                vault_seq: None,
                // Moved, not copied (up to 512 KiB): nothing reads it after this.
                content: e.intercepted.request.content.take(),
                body: stored,
                sealed_leaf: None,
                digests: None,
            },
            seal: Some(i),
        });
        if let Some(a) = &e.activity {
            txn.mutations.push(Mutation::AgentActivity(a.clone()));
        }
        for r in &e.authority.records {
            txn.mutations.push(Mutation::PutObject(r.clone()));
        }
        if let Some(id) = &e.counted_approval {
            txn.mutations.push(Mutation::ApprovedActionRetried { workspace_id: ws.workspace_id.clone(), escalation_id: id.clone() });
        }
        for v in &e.violations {
            txn.mutations.push(Mutation::InsertViolation(violation_row(ws, e, v)));
        }
        for t in &e.decision.shadow {
            let would = would_decide_for(&e.decision, &t.decision);
            txn.mutations.push(Mutation::InsertShadowHit(praetor_store::ShadowHit {
                workspace_id: ws.workspace_id.clone(),
                policy_id: t.policy_id.clone(),
                decision_id: e.decision_id.clone(),
                actual: e.decision.verdict.as_str().to_owned(),
                would: would.to_owned(),
                changed: would != e.decision.verdict.as_str(),
                at: e.at_ms,
            }));
        }
        if let Some(x) = &e.session_update {
            txn.mutations.push(Mutation::PutSession(x.clone()));
            if x.status == SessionStatus::Terminated {
                txn.seal.push(crate::events::event(&ws.workspace_id, "session.budget_exceeded", None, e.at_ms, json!({
                    "session_id": x.session_id, "agent_id": x.agent_id, "decision_id": e.decision_id,
                    "reason": x.kill_reason, "consumed": x.consumed,
                })));
            }
        }
        txn.seal.extend(e.authority.seals.iter().cloned());
        bodies.push(body);
    }
    let pending = state.submit(txn);
    async move {
        let sealed = pending.await?;
        let own = seal_of.iter().map(|&i| sealed.get(i).copied());
        for ((body, e), s) in bodies.iter_mut().zip(&evaluated).zip(own) {
            let Some(s) = s else { continue };
            let latency_us = e.started.elapsed().as_micros() as u64;
            body.receipt = Receipt { vault_entry_id: Some(s.seq), leaf_hash: Some(hex::encode(s.leaf_hash)), latency_ms: Some(latency_us as f64 / 1000.0) };
            state.metrics.count_decision(e.decision.verdict, latency_us);
            if e.decision.escalation_refused() {
                state.metrics.escalations_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            tracing::debug!(decision_id = %e.decision_id, decision = e.decision.verdict.as_str(), latency_us, "decided");
        }
        Ok(bodies)
    }
}

pub fn check_id_pub(field: &str, value: &str) -> ApiResult<()> {
    check_id(field, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use praetor_core::{Decision, Outcome, Triggered};

    fn default_escalation() -> Decision {
        let triggered = Triggered { policy_id: "__default".into(), name: "default".into(), decision: "escalate".into(), reason: "no policy matched".into() };
        Decision::plain(Verdict::Escalate, Outcome::Escalated, vec![triggered], "no policy matched".into())
    }

    #[test]
    fn a_shadow_policy_would_still_replace_a_default_refused_at_the_escalation_limit() {
        let mut d = default_escalation();
        assert_eq!(would_decide_for(&d, "allow"), "allow");
        d.block_instead_of_escalating("the workspace is full".into());
        assert_eq!(would_decide_for(&d, "allow"), "allow", "the default decided, so a matching shadow allow would have allowed");
        assert_eq!(would_decide_for(&d, "block"), "block");
    }
}
