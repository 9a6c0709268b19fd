//! Delegation grants, just-in-time temporal windows, breakglass and roles. Authority
//! only narrows: a grant never carries a scope its source lacks, a re-delegation never
//! exceeds its parent's remaining scopes, uses or lifetime, and revoking a grant revokes
//! its children. Every change is sealed.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_core::glob::Glob;
use praetor_core::grant_budget::GrantLimits;
use praetor_store::ObjectRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::authority::{AuthorityState, Breakglass, Grant, Object, Review, Role, Window, create, touched, update, update_retrying};
use crate::clock::iso;
use crate::config::limits;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ApiJson, ApiPath, ApiQuery, SignedRequest, parse_json};
use crate::secrets::new_id;
use crate::state::{AppState, WorkspaceState};

/// The longest any window, grant or breakglass may last: 30 days.
const MAX_DURATION_SECONDS: i64 = 30 * 86_400;

fn check_globs(field: &str, list: &[String], required: bool) -> ApiResult<()> {
    if required && list.is_empty() {
        return Err(ApiError::invalid(field, "must name at least one action-type glob"));
    }
    if list.len() > limits::LIST_MAX {
        return Err(ApiError::invalid(field, format!("has more than {} items", limits::LIST_MAX)));
    }
    for (i, g) in list.iter().enumerate() {
        praetor_core::glob::validate(g).map_err(|e| ApiError::invalid(&format!("{field}[{i}]"), e.message))?;
    }
    Ok(())
}

/// Is every action type `scope` (a glob) matches also matched by one of `allowed`?
/// Decided conservatively, so a grant can only narrow: `scope` is within `a` when they
/// are equal, when `a` is `*`, or when `a` is a literal prefix followed by `*` (`pay.*`)
/// and `scope` starts with that literal prefix. Anything else (`?`, classes, escapes,
/// inner stars in `a`) is not treated as covering.
///
/// Action-type globs match ignoring ASCII case, so letters compare that way too
/// (`Pay.*` is within `pay.*`): a literal prefix without special characters is
/// literal in `scope` as well, whatever its case. Equal globs compare that way only
/// without a class, whose ranges do not fold into the same sets (`[A-z]` holds `_`,
/// `[a-z]` does not).
fn within(scope: &str, allowed: &[String]) -> bool {
    const SPECIAL: &[char] = &['*', '?', '[', ']', '\\'];
    let same = |a: &str| a == scope || (!scope.contains('[') && a.eq_ignore_ascii_case(scope));
    allowed.iter().any(|a| {
        if a == "*" || same(a) {
            return true;
        }
        match a.strip_suffix('*') {
            Some(prefix) if !prefix.contains(SPECIAL) => {
                scope.len() >= prefix.len() && scope.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            _ => false,
        }
    })
}

/// A duration given in one of `fields` (its name, its value, the seconds in one of its
/// units), bounded; an error names the field that was sent. Two given at once are
/// refused: which one was meant is not for the server to guess.
fn duration_ms(fields: &[(&str, Option<i64>, i64)]) -> ApiResult<Option<i64>> {
    let given: Vec<(&str, i64, i64)> = fields.iter().filter_map(|&(name, value, unit)| value.map(|v| (name, v, unit))).collect();
    match given.as_slice() {
        [] => Ok(None),
        // Saturating: a product too large to hold is past the limit, not wrapped into it.
        [(name, value, unit)] => match value.saturating_mul(*unit) {
            s if s <= 0 || s > MAX_DURATION_SECONDS => {
                Err(ApiError::invalid(name, format!("must be between 1 second and {} days", MAX_DURATION_SECONDS / 86_400)))
            }
            s => Ok(Some(s * 1000)),
        },
        [(first, ..), (second, ..), ..] => Err(ApiError::invalid(second, format!("give one of `{first}` and `{second}`, not both"))),
    }
}

/// The two ways a window or a breakglass gives its length.
fn seconds_or_minutes(seconds: Option<i64>, minutes: Option<i64>) -> ApiResult<Option<i64>> {
    duration_ms(&[("duration_seconds", seconds, 1), ("duration_minutes", minutes, 60)])
}

fn agent_active(ws: &WorkspaceState, field: &str, id: &str) -> ApiResult<praetor_store::Agent> {
    let a = ws.agent(id).ok_or_else(|| ApiError::not_found("agent", id))?;
    if !a.is_active {
        return Err(ApiError::invalid(field, format!("agent `{id}` is deactivated")));
    }
    Ok(a)
}

// ── delegation ──────────────────────────────────────────────────────────────────────

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateBody {
    #[serde(deserialize_with = "crate::extract::id::required")]
    source_agent_id: String,
    #[serde(deserialize_with = "crate::extract::id::required")]
    target_agent_id: String,
    scopes: Vec<String>,
    #[serde(default)]
    action_types: Vec<String>,
    #[serde(default)]
    duration_minutes: Option<i64>,
    #[serde(default)]
    duration_seconds: Option<i64>,
    #[serde(default)]
    ttl_hours: Option<i64>,
    #[serde(default)]
    max_uses: Option<u64>,
    #[serde(default)]
    budgets: Option<GrantBudgets>,
    #[serde(default, deserialize_with = "crate::extract::id::optional")]
    parent_grant_id: Option<String>,
    #[serde(default)]
    instruction: Option<String>,
    #[serde(default)]
    constraints: Option<Value>,
}

/// A delegation's budgets, as the xybern SDK sends them: `max_actions` (as `max_uses`),
/// and totals over the actions allowed through the grant (`praetor_core::grant_budget`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GrantBudgets {
    #[serde(default)]
    max_actions: Option<u64>,
    /// `{CUR: n}`; read into `GrantLimits` (`grant_limits`), naming the field on error.
    #[serde(default)]
    max_amount: Option<Value>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    max_recipients: Option<u64>,
}

/// The limits `budgets` sets beyond the count of actions, checked: `max_amount` a map of
/// currency codes to non-negative decimals, at most `LIST_MAX` of them.
fn grant_limits(budgets: &GrantBudgets) -> ApiResult<GrantLimits> {
    let max_amount = match &budgets.max_amount {
        None | Some(Value::Null) => Default::default(),
        Some(v) => {
            let read: GrantLimits = serde_json::from_value(json!({ "max_amount": v }))
                .map_err(|e| ApiError::invalid("budgets.max_amount", format!("must map currency codes to non-negative amounts: {e}")))?;
            read.max_amount
        }
    };
    if max_amount.len() > limits::LIST_MAX {
        return Err(ApiError::invalid("budgets.max_amount", format!("names {} currencies; the limit is {}", max_amount.len(), limits::LIST_MAX)));
    }
    if let Some(bad) = max_amount.keys().find(|c| !praetor_core::session::is_currency_code(c)) {
        return Err(ApiError::invalid(&format!("budgets.max_amount.{bad}"), format!("is not a currency code ({})", praetor_core::session::CURRENCY_CODE_SHAPE)));
    }
    Ok(GrantLimits { max_amount, max_rows: budgets.max_rows, max_recipients: budgets.max_recipients })
}

/// The field of the `i`th of a delegation's scopes followed by its action types.
fn scope_field(b: &DelegateBody, i: usize) -> String {
    match i.checked_sub(b.scopes.len()) {
        None => format!("scopes[{i}]"),
        Some(j) => format!("action_types[{j}]"),
    }
}

pub async fn delegate(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Enforce>,
    request: SignedRequest,
) -> ApiResult<Json<Value>> {
    let b: DelegateBody = parse_json(&request.body)?;
    let ws = &auth.workspace;
    // Authority is delegated by an administrator, or by the source agent itself through
    // a key bound to it; an unbound agent key cannot hand out another agent's authority.
    let is_admin = auth.key.scopes.contains(&praetor_store::Scope::Admin);
    if !is_admin && auth.bound_agent() != Some(b.source_agent_id.as_str()) {
        return Err(ApiError::new(Code::InsufficientScope, "only an admin key, or a key bound to the source agent, can delegate its authority"));
    }
    // An enforce request does not catch up with other nodes by itself: a delegation
    // between agents registered (or changed) on another node a moment ago reads them
    // as they are (and is refused, `503`, when it cannot).
    crate::follow::follow(&state, ws).await?;
    let source = agent_active(ws, "source_agent_id", &b.source_agent_id)?;
    agent_active(ws, "target_agent_id", &b.target_agent_id)?;
    // The source's own key alone does not lend its authority when it signs its actions.
    crate::pipeline::require_signature_of(&state, ws, &request.caller(&auth.key), &source.agent_id).await?;
    if b.source_agent_id == b.target_agent_id {
        return Err(ApiError::invalid("target_agent_id", "an agent cannot delegate to itself"));
    }
    check_globs("scopes", &b.scopes, true)?;
    check_globs("action_types", &b.action_types, false)?;
    if b.instruction.as_ref().is_some_and(|i| i.len() > 4096) {
        return Err(ApiError::invalid("instruction", "is longer than 4096 bytes"));
    }
    // Kept in memory, shown in every listing and sealed: bounded like an agent's passport.
    let constraints_bytes = b.constraints.as_ref().and_then(|c| serde_json::to_vec(c).ok()).map_or(0, |c| c.len());
    if constraints_bytes > limits::FREE_JSON_MAX {
        return Err(ApiError::invalid("constraints", format!("takes {constraints_bytes} bytes as JSON; the limit is {}", limits::FREE_JSON_MAX)));
    }
    // A grantor cannot lend what it is denied (its boundary's or its roles' denials),
    // whether it holds the scope itself or through the parent grant.
    {
        let live = ws.live.lock();
        for (i, s) in b.scopes.iter().chain(&b.action_types).enumerate() {
            if let Some(r) = crate::authority::denial(&live.authority, &source, s) {
                return Err(ApiError::invalid(&scope_field(&b, i), format!("`{s}` is denied to the source agent `{}`: {}", source.agent_id, r.reason)));
            }
        }
    }
    let ttl = duration_ms(&[("duration_seconds", b.duration_seconds, 1), ("duration_minutes", b.duration_minutes, 60), ("ttl_hours", b.ttl_hours, 3600)])?;
    let limits = b.budgets.as_ref().map(grant_limits).transpose()?.unwrap_or_default();
    // A grant of no uses is ended when it is made.
    if b.max_uses == Some(0) {
        return Err(ApiError::invalid("max_uses", "must be at least 1"));
    }
    if b.budgets.as_ref().and_then(|x| x.max_actions) == Some(0) {
        return Err(ApiError::invalid("budgets.max_actions", "must be at least 1"));
    }
    let max_uses = match (b.max_uses, b.budgets.as_ref().and_then(|x| x.max_actions)) {
        (Some(u), Some(a)) => Some(u.min(a)),
        (u, a) => u.or(a),
    };
    // A grant never carries a scope its source lacks. For a re-delegation the source's
    // authority is the parent grant (checked below), not its own scopes.
    if b.parent_grant_id.is_none() && !source.scopes.is_empty() {
        for (i, s) in b.scopes.iter().chain(&b.action_types).enumerate() {
            if !within(s, &source.scopes) {
                return Err(ApiError::invalid(&scope_field(&b, i), format!("`{s}` is outside the source agent's scopes")));
            }
        }
    }
    let grant_id = new_id("gr");
    let key_id = auth.key.key_id.clone();
    let id = grant_id.clone();
    // Retried from the store's copies while decisions move the parent on (its uses).
    let view = update_retrying(&state, ws, "grant.created", &key_id.clone(), move |a, now| {
        // Every grant held in memory counts: those in force, and ended ones until the
        // sweeper lets them go (`prune_ended_grants`, within a second or so). Counted
        // under the lock the grant is added under, so concurrent delegations on this
        // node cannot pass the limit together.
        let held = a.grants.len();
        if held >= limits::GRANTS_HELD_PER_WORKSPACE {
            return Err(ApiError::new(Code::Conflict, format!(
                "the workspace holds {held} grants (in force, or ended and not yet let go), the most it may ({}); revoke some first", limits::GRANTS_HELD_PER_WORKSPACE
            )));
        }
        // Carved out of the parent under the same lock as the commit's order (`update`):
        // no decision on the parent falls between the carve and its commit.
        let asked = Terms { max_uses, limits: limits.clone(), expires_at: ttl.map(|t| now + t) };
        let (terms, parent) = match &b.parent_grant_id {
            Some(pid) => {
                let carved = carve_from_parent(a, ws, &b, pid, asked, now)?;
                (carved.terms, Some(carved.parent))
            }
            None => (asked, None),
        };
        let grant = Grant {
            grant_id: id.clone(),
            source_agent_id: b.source_agent_id.clone(),
            target_agent_id: b.target_agent_id.clone(),
            scopes: b.scopes.clone(),
            action_types: b.action_types.clone(),
            parent_grant_id: b.parent_grant_id.clone(),
            max_uses: terms.max_uses,
            uses: 0,
            reserved: 0,
            limits: terms.limits,
            used: Default::default(),
            lent: Default::default(),
            expires_at: terms.expires_at,
            revoked: false,
            revoke_reason: None,
            instruction: b.instruction.clone(),
            constraints: b.constraints.clone().unwrap_or(Value::Null),
            created_by: key_id.clone(),
            created_at: now,
            version: 1,
        };
        let view = grant.view(now);
        let record = crate::authority::Object::to_record(&grant, &ws.workspace_id, now);
        a.grants.insert(grant.grant_id.clone(), grant);
        let records = parent.into_iter().chain([record]).collect();
        Ok((records, json!({ "grant": view }), view))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "grant_id": grant_id, "grant": view })))
}

/// What a grant may spend: uses, amount, row and recipient limits, and until when.
struct Terms {
    max_uses: Option<u64>,
    limits: GrantLimits,
    expires_at: Option<i64>,
}

/// A re-delegation's terms once carved out of its parent, and the parent's new record.
struct Carved {
    terms: Terms,
    parent: ObjectRecord,
}

/// Carve a re-delegation asking for `asked` out of parent grant `pid`: the parent and
/// its whole chain must be in force, every grantor along it active; the scopes within
/// the parent's; uses, amounts, rows and recipients within what it has left (what the
/// child does not set it is lent all that is left); and no later expiry. Every check
/// comes before the parent changes, so a refusal leaves it as it was.
fn carve_from_parent(a: &mut AuthorityState, ws: &WorkspaceState, b: &DelegateBody, pid: &str, asked: Terms, now: i64) -> ApiResult<Carved> {
    let parent = a.grants.get(pid).ok_or_else(|| ApiError::not_found("grant", pid))?;
    let problem = crate::authority::grant_problem(a, &ws.agents.read(), parent, Some(&b.source_agent_id), None, now);
    if let Some(problem) = problem {
        return Err(ApiError::invalid("parent_grant_id", format!("grant `{pid}` cannot be re-delegated by this source: {problem}")));
    }
    let parent_scopes: Vec<String> = parent.scopes.iter().chain(&parent.action_types).cloned().collect();
    for (i, s) in b.scopes.iter().chain(&b.action_types).enumerate() {
        if !within(s, &parent_scopes) {
            return Err(ApiError::invalid(&scope_field(b, i), format!("`{s}` is not within the parent grant's scopes")));
        }
    }
    let uses_left = parent.remaining();
    let max_uses = match uses_left {
        Some(left) => {
            let n = asked.max_uses.unwrap_or(left);
            if n > left {
                return Err(ApiError::invalid("max_uses", format!("{n} exceeds the {left} uses the parent grant has left")));
            }
            Some(n)
        }
        None => asked.max_uses,
    };
    let limits_left = parent.limits_left();
    let limits = limits_left.carve(&asked.limits).map_err(|e| ApiError::invalid(e.field, e.message))?;
    let expires_at = match (asked.expires_at, parent.expires_at) {
        (Some(x), Some(p)) => Some(x.min(p)),
        (x, p) => x.or(p),
    };
    let parent = a.grants.get_mut(pid).ok_or_else(|| ApiError::not_found("grant", pid))?;
    if uses_left.is_some() {
        parent.reserved += max_uses.unwrap_or(0);
    }
    parent.lent.add(&limits_left.lent_to(&limits));
    Ok(Carved { terms: Terms { max_uses, limits, expires_at }, parent: touched(parent, &ws.workspace_id, now) })
}

/// Revoke a grant and, recursively, every grant re-delegated from it.
pub fn revoke_tree(a: &mut AuthorityState, root: &str, reason: &str, ws_id: &str, now: i64) -> Vec<ObjectRecord> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(id) = stack.pop() {
        if let Some(g) = a.grants.get_mut(&id)
            && !g.revoked {
                g.revoked = true;
                g.revoke_reason = Some(reason.to_owned());
                out.push(touched(g, ws_id, now));
            }
        stack.extend(a.grants.values().filter(|c| c.parent_grant_id.as_deref() == Some(&id) && !c.revoked).map(|c| c.grant_id.clone()));
    }
    out
}

pub async fn revoke_grant(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<super::sessions::ReasonBody>,
) -> ApiResult<Json<Value>> {
    let reason = super::sessions::reason_of(body, "revoked")?;
    let ws = &auth.workspace;
    let ws_id = ws.workspace_id.clone();
    // An ended grant has left memory (`prune_ended_grants`); the store says how it
    // ended. One the store holds otherwise (made on another node a moment ago, or used
    // up) is taken in and revoked.
    let held = ws.live.lock().authority.grants.contains_key(&id);
    if !held && let Some(g) = stored_grant(&state, ws, &id).await? {
        let status = g.status_at(state.now_ms());
        if matches!(status, "revoked" | "expired") {
            return Err(ApiError::new(Code::Conflict, format!("grant `{id}` has already ended ({status})")));
        }
        ws.live.lock().authority.grants.entry(id.clone()).or_insert(g);
    }
    let revoked = update_retrying(&state, ws, "grant.revoked", &auth.key.key_id, |a, now| {
        if !a.grants.contains_key(&id) {
            return Err(ApiError::not_found("grant", &id));
        }
        let records = revoke_tree(a, &id, &reason, &ws_id, now);
        let ids: Vec<String> = records.iter().map(|r| r.object_id.clone()).collect();
        Ok((records, json!({ "grant_id": id, "revoked": ids, "reason": reason }), ids))
    })
    .await?;
    // The escalations raised through them are void: settled now, in a transaction of
    // their own (as an agent revocation's are). Should this fail, a decision still
    // refuses their approvals and the sweeper settles them (`authority::facts`).
    let why = format!("grant `{id}` was revoked: {reason}");
    let settled = crate::authority::settle_now(&state, ws, |a| {
        crate::authority::settle(a, |e| e.grant_id.as_ref().is_some_and(|g| revoked.contains(g)), &why, Some(&auth.key.key_id), &ws_id, state.now_ms())
    })
    .await;
    if let Err(e) = settled {
        tracing::warn!(workspace_id = %ws_id, grant_id = %id, error = %e.message, "the escalations raised through a revoked grant are not settled yet; the sweeper will");
    }
    Ok(Json(json!({ "ok": true, "revoked": revoked })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    #[serde(deserialize_with = "crate::extract::id::required")]
    grant_id: String,
    #[serde(default, deserialize_with = "crate::extract::id::optional")]
    agent_id: Option<String>,
    #[serde(default)]
    action_type: Option<String>,
}

/// `POST /enforce/delegate/verify`: is this grant valid for this agent and action now?
pub async fn verify_grant(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiJson(b): ApiJson<VerifyBody>,
) -> ApiResult<Json<Value>> {
    let now = state.now_ms();
    // An ended grant has left memory (`prune_ended_grants`): read from the store, it
    // answers why it is not valid.
    let held = auth.workspace.live.lock().authority.grants.get(&b.grant_id).cloned();
    let g = match held {
        Some(g) => Some(g),
        None => stored_grant(&state, &auth.workspace, &b.grant_id).await?,
    };
    let g = g
        .filter(|g| auth.may_see(Some(&g.source_agent_id)) || auth.may_see(Some(&g.target_agent_id)))
        .ok_or_else(|| ApiError::not_found("grant", &b.grant_id))?;
    let g = &g;
    let live = auth.workspace.live.lock();
    let agent = b.agent_id.as_deref().or(Some(g.target_agent_id.as_str()));
    // The whole chain, as a decision checks it: every grantor active and not denied.
    let mut reason = crate::authority::grant_problem(&live.authority, &auth.workspace.agents.read(), g, agent, b.action_type.as_deref(), now);
    if reason.is_none()
        && let Some(t) = &b.action_type {
            let covered = g.scopes.iter().chain(&g.action_types).any(|p| Glob::action_type(p).is_ok_and(|x| x.is_match(t)));
            if !covered {
                reason = Some(format!("action type `{t}` is outside the grant"));
            }
        }
    Ok(Json(json!({ "ok": true, "valid": reason.is_none(), "reason": reason, "grant": g.view(now) })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DelegationsQuery {
    direction: Option<String>,
    status: Option<String>,
}

/// The store's copy of a grant.
pub(crate) async fn stored_grant(state: &AppState, ws: &WorkspaceState, id: &str) -> ApiResult<Option<Grant>> {
    let record = state.store.get_object(&ws.workspace_id, <Grant as crate::authority::Object>::KIND, id).await?;
    Ok(record.as_ref().and_then(crate::authority::Object::from_record))
}

/// The most grants a listing reads from the store, newest first.
const STORED_GRANTS_READ: u32 = 1000;

/// The grants matching `pred`, newest first: those held in memory, and, unless only
/// active ones are asked for (`active_only`: memory holds every grant in force), the
/// newest [`STORED_GRANTS_READ`] the store holds (of those `to` received, when named),
/// which include the ended grants memory let go. Of two copies of a grant, the later
/// version is shown.
async fn grants_where(state: &AppState, ws: &WorkspaceState, active_only: bool, to: Option<&str>, pred: impl Fn(&Grant) -> bool) -> ApiResult<Vec<Value>> {
    let mut found: std::collections::HashMap<String, Grant> = std::collections::HashMap::new();
    if !active_only {
        // A grant is stored under the agent it was given to.
        let kind = <Grant as crate::authority::Object>::KIND.to_owned();
        let filter = praetor_store::ObjectFilter { kind, status: None, agent_id: to.map(str::to_owned), limit: STORED_GRANTS_READ };
        for record in state.store.list_objects(&ws.workspace_id, &filter).await? {
            if let Some(g) = <Grant as crate::authority::Object>::from_record(&record) {
                found.insert(g.grant_id.clone(), g);
            }
        }
    }
    let now = state.now_ms();
    {
        let live = ws.live.lock();
        for g in live.authority.grants.values() {
            if found.get(&g.grant_id).is_none_or(|stored| stored.version <= g.version) {
                found.insert(g.grant_id.clone(), g.clone());
            }
        }
    }
    let mut v: Vec<Grant> = found.into_values().filter(|g| pred(g)).collect();
    v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.grant_id.cmp(&b.grant_id)));
    Ok(v.iter().map(|g| g.view(now)).collect())
}

pub async fn list_delegations(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>) -> ApiResult<Json<Value>> {
    let rows = grants_where(&state, &auth.workspace, false, None, |g| auth.may_see(Some(&g.source_agent_id)) || auth.may_see(Some(&g.target_agent_id))).await?;
    Ok(Json(json!({ "ok": true, "delegations": rows, "total": rows.len() })))
}

/// `GET /enforce/agents/{id}/delegations?direction=given|received&status=active`.
pub async fn agent_delegations(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DelegationsQuery>,
) -> ApiResult<Json<Value>> {
    let direction = q.direction.as_deref().unwrap_or("both");
    if !["given", "received", "both"].contains(&direction) {
        return Err(ApiError::new(Code::InvalidQuery, format!("`direction`: `{direction}` is not given, received or both")));
    }
    if let Some(s) = q.status.as_deref()
        && !["active", "exhausted", "revoked", "expired"].contains(&s)
    {
        return Err(ApiError::new(Code::InvalidQuery, format!("`status`: `{s}` is not active, exhausted, revoked or expired")));
    }
    if !auth.may_see(Some(&id)) {
        return Err(ApiError::not_found("agent", &id));
    }
    let now = state.now_ms();
    let active_only = q.status.as_deref() == Some("active");
    let to = (direction == "received").then_some(id.as_str());
    let rows = grants_where(&state, &auth.workspace, active_only, to, |g| {
        let side = match direction {
            "given" => g.source_agent_id == id,
            "received" => g.target_agent_id == id,
            _ => g.source_agent_id == id || g.target_agent_id == id,
        };
        side && q.status.as_deref().is_none_or(|s| g.status_at(now) == s)
    })
    .await?;
    Ok(Json(json!({ "ok": true, "delegations": rows, "total": rows.len() })))
}

// ── temporal windows ────────────────────────────────────────────────────────────────

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    #[serde(deserialize_with = "crate::extract::id::required")]
    agent_id: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    action_types: Vec<String>,
    #[serde(default)]
    duration_minutes: Option<i64>,
    #[serde(default)]
    duration_seconds: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

fn window_view(w: &Window, now: i64) -> Value {
    json!({
        "window_id": w.window_id, "agent_id": w.agent_id, "scopes": w.scopes, "action_types": w.action_types,
        "reason": w.reason, "status": w.status_at(now), "expires_at": iso(w.expires_at), "created_at": iso(w.created_at),
    })
}

/// `POST /enforce/temporal-windows`: for a bounded time, the agent may do what the
/// window's scopes and action types name even where its scopes or roles would refuse.
pub async fn open_window(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Approvals>,
    ApiJson(b): ApiJson<WindowBody>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    agent_active(ws, "agent_id", &b.agent_id)?;
    if b.scopes.is_empty() && b.action_types.is_empty() {
        return Err(ApiError::invalid("scopes", "a window must name scopes or action_types"));
    }
    check_globs("scopes", &b.scopes, false)?;
    check_globs("action_types", &b.action_types, false)?;
    let ms = seconds_or_minutes(b.duration_seconds, b.duration_minutes)?
        .ok_or_else(|| ApiError::invalid("duration_minutes", "is required"))?;
    if b.reason.as_ref().is_some_and(|r| r.len() > 2048) {
        return Err(ApiError::invalid("reason", "is longer than 2048 bytes"));
    }
    let now = state.now_ms();
    let open = ws.live.lock().authority.windows.values().filter(|w| w.agent_id == b.agent_id && w.status_at(now) == "open").count();
    if open >= limits::OPEN_WINDOWS_PER_AGENT {
        return Err(ApiError::new(
            Code::Conflict,
            format!("agent `{}` has {open} open windows, the most it may ({}); revoke some first", b.agent_id, limits::OPEN_WINDOWS_PER_AGENT),
        ));
    }
    let w = Window {
        window_id: new_id("tw"),
        agent_id: b.agent_id,
        scopes: b.scopes,
        action_types: b.action_types,
        reason: b.reason,
        revoked: false,
        created_by: auth.key.key_id.clone(),
        created_at: now,
        expires_at: now + ms,
        version: 0,
    };
    let view = window_view(&w, now);
    create(&state, ws, w, "window.opened", &auth.key.key_id, json!({ "window": view })).await?;
    Ok(Json(json!({ "ok": true, "window": view })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ExtendBody {
    duration_minutes: Option<i64>,
    duration_seconds: Option<i64>,
    reason: Option<String>,
}

pub async fn extend_window(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Approvals>,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<ExtendBody>,
) -> ApiResult<Json<Value>> {
    let ms = seconds_or_minutes(b.duration_seconds, b.duration_minutes)?
        .ok_or_else(|| ApiError::invalid("duration_minutes", "is required"))?;
    let ws_id = auth.workspace.workspace_id.clone();
    if let Some(ended) = take_in_window(&state, &auth, &id).await? {
        return Err(ApiError::new(Code::Conflict, format!("window `{id}` is {}", ended.status_at(state.now_ms()))));
    }
    let view = update(&state, &auth.workspace, "window.extended", &auth.key.key_id, |a, now| {
        let w = a.windows.get_mut(&id).ok_or_else(|| ApiError::not_found("window", &id))?;
        if w.status_at(now) != "open" {
            return Err(ApiError::new(Code::Conflict, format!("window `{id}` is {}", w.status_at(now))));
        }
        w.expires_at = (w.expires_at + ms).min(now + MAX_DURATION_SECONDS * 1000);
        let record = touched(w, &ws_id, now);
        Ok((vec![record], json!({ "window_id": id, "expires_at": iso(w.expires_at), "reason": b.reason }), window_view(w, now)))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "window": view })))
}

pub async fn revoke_window(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Approvals>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let ws_id = auth.workspace.workspace_id.clone();
    // An ended window has nothing left to revoke: answered as it is, nothing written.
    if let Some(ended) = take_in_window(&state, &auth, &id).await? {
        return Ok(Json(json!({ "ok": true, "window": window_view(&ended, state.now_ms()) })));
    }
    let view = update(&state, &auth.workspace, "window.revoked", &auth.key.key_id, |a, now| {
        let w = a.windows.get_mut(&id).ok_or_else(|| ApiError::not_found("window", &id))?;
        w.revoked = true;
        let record = touched(w, &ws_id, now);
        Ok((vec![record], json!({ "window_id": id }), window_view(w, now)))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "window": view })))
}

/// A window this node does not hold (memory drops ended ones at the sweep, and holds
/// one another node opened once the change feed brings it), from the store: an open
/// one is taken in, so that the change goes on as usual (`None`); an ended one is
/// returned. One the store lacks does not exist.
async fn take_in_window(state: &AppState, auth: &Authorized<perm::Approvals>, id: &str) -> ApiResult<Option<Window>> {
    if auth.workspace.live.lock().authority.windows.contains_key(id) {
        return Ok(None);
    }
    let stored = state.store.get_object(&auth.workspace.workspace_id, Window::KIND, id).await?;
    let Some((record, window)) = stored.and_then(|r| Window::from_record(&r).map(|w| (r, w))) else {
        return Err(ApiError::not_found("window", id));
    };
    if window.status_at(state.now_ms()) != "open" {
        return Ok(Some(window));
    }
    // Unless the change feed brought a copy meanwhile, which is as new or newer.
    let mut live = auth.workspace.live.lock();
    if !live.authority.windows.contains_key(id) {
        live.authority.absorb(&record);
    }
    Ok(None)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CheckQuery {
    agent_id: Option<String>,
    scope: Option<String>,
}

/// `GET /enforce/temporal-windows/check?agent_id=&scope=`: is a window open that covers it?
pub async fn check_window(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<CheckQuery>,
) -> ApiResult<Json<Value>> {
    let agent = q.agent_id.ok_or_else(|| ApiError::new(Code::InvalidQuery, "`agent_id` is required"))?;
    if !auth.may_see(Some(&agent)) {
        return Err(ApiError::not_found("agent", &agent));
    }
    let now = state.now_ms();
    let live = auth.workspace.live.lock();
    let open = live.authority.windows.values().find(|w| {
        w.agent_id == agent
            && w.status_at(now) == "open"
            && q.scope.as_deref().is_none_or(|s| w.scopes.iter().chain(&w.action_types).any(|p| p == s || Glob::action_type(p).is_ok_and(|g| g.is_match(s))))
    });
    Ok(Json(json!({ "ok": true, "open": open.is_some(), "window": open.map(|w| window_view(w, now)) })))
}

pub async fn agent_windows(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    if !auth.may_see(Some(&id)) {
        return Err(ApiError::not_found("agent", &id));
    }
    let now = state.now_ms();
    // Open windows from memory (the newest copy), ended ones from the store.
    let filter = praetor_store::ObjectFilter { kind: Window::KIND.into(), status: None, agent_id: Some(id.clone()), limit: 1000 };
    let stored = state.store.list_objects(&auth.workspace.workspace_id, &filter).await?;
    let mut by_id: std::collections::HashMap<String, Window> =
        stored.iter().filter_map(Window::from_record).map(|w| (w.window_id.clone(), w)).collect();
    by_id.extend(auth.workspace.live.lock().authority.windows.values().filter(|w| w.agent_id == id).map(|w| (w.window_id.clone(), w.clone())));
    let mut v: Vec<Window> = by_id.into_values().collect();
    v.sort_by_key(|w| std::cmp::Reverse(w.created_at));
    let rows: Vec<Value> = v.iter().map(|w| window_view(w, now)).collect();
    Ok(Json(json!({ "ok": true, "windows": rows, "total": rows.len() })))
}

// ── breakglass ──────────────────────────────────────────────────────────────────────

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakglassBody {
    #[serde(deserialize_with = "crate::extract::id::required")]
    agent_id: String,
    justification: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    duration_minutes: Option<i64>,
    #[serde(default)]
    duration_seconds: Option<i64>,
}

fn breakglass_view(b: &Breakglass, now: i64) -> Value {
    json!({
        "breakglass_id": b.breakglass_id, "agent_id": b.agent_id, "justification": b.justification, "severity": b.severity,
        "status": b.status_at(now), "triggered_by": b.triggered_by, "overrides": b.overrides,
        "review": b.review.as_ref().map(|r| json!({ "outcome": r.outcome, "notes": r.notes, "reviewer": r.reviewer, "reviewed_at": iso(r.reviewed_at) })),
        "created_at": iso(b.created_at), "expires_at": iso(b.expires_at), "closed_at": b.closed_at.map(iso),
    })
}

/// `POST /enforce/breakglass`: for a bounded time, the agent's policy and role refusals
/// are overridden to `allow`, each override recorded. Identity failures, killed sessions
/// and revoked credentials are never overridden.
pub async fn trigger_breakglass(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Approvals>,
    ApiJson(b): ApiJson<BreakglassBody>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    agent_active(ws, "agent_id", &b.agent_id)?;
    let justification = b.justification.trim().to_owned();
    if justification.is_empty() || justification.len() > 4096 {
        return Err(ApiError::invalid("justification", "is required (1-4096 bytes)"));
    }
    let severity = b.severity.unwrap_or_else(|| "high".into());
    if !["critical", "high", "medium", "low"].contains(&severity.as_str()) {
        return Err(ApiError::invalid("severity", format!("`{severity}` is not critical, high, medium or low")));
    }
    let ms = seconds_or_minutes(b.duration_seconds, b.duration_minutes)?.unwrap_or(60 * 60 * 1000);
    let now = state.now_ms();
    let bg = Breakglass {
        breakglass_id: new_id("bg"),
        agent_id: b.agent_id,
        justification,
        severity,
        closed_at: None,
        triggered_by: auth.key.key_id.clone(),
        review: None,
        overrides: 0,
        created_at: now,
        expires_at: now + ms,
        version: 0,
    };
    let view = breakglass_view(&bg, now);
    create(&state, ws, bg, "breakglass.triggered", &auth.key.key_id, json!({ "breakglass": view })).await?;
    tracing::warn!(workspace_id = %ws.workspace_id, agent_id = %view["agent_id"], "breakglass triggered");
    Ok(Json(json!({ "ok": true, "breakglass_id": view["breakglass_id"], "breakglass": view })))
}

pub async fn close_breakglass(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Approvals>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let ws_id = auth.workspace.workspace_id.clone();
    let view = update_retrying(&state, &auth.workspace, "breakglass.closed", &auth.key.key_id, |a, now| {
        let b = a.breakglass.get_mut(&id).ok_or_else(|| ApiError::not_found("breakglass", &id))?;
        b.closed_at.get_or_insert(now);
        let record = touched(b, &ws_id, now);
        Ok((vec![record], json!({ "breakglass_id": id, "overrides": b.overrides }), breakglass_view(b, now)))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "breakglass": view })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    outcome: String,
    #[serde(default)]
    notes: Option<String>,
}

/// The after-the-fact review of a breakglass use.
pub async fn review_breakglass(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Approvals>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> ApiResult<Json<Value>> {
    if !["justified", "unjustified", "needs_follow_up"].contains(&body.outcome.as_str()) {
        return Err(ApiError::invalid("outcome", format!("`{}` is not justified, unjustified or needs_follow_up", body.outcome)));
    }
    if body.notes.as_ref().is_some_and(|n| n.len() > 8192) {
        return Err(ApiError::invalid("notes", "is longer than 8192 bytes"));
    }
    let ws_id = auth.workspace.workspace_id.clone();
    let reviewer = auth.key.key_id.clone();
    // Retried from the store's copy while decisions move the breakglass on (its uses).
    let view = update_retrying(&state, &auth.workspace, "breakglass.reviewed", &auth.key.key_id, |a, now| {
        let b = a.breakglass.get_mut(&id).ok_or_else(|| ApiError::not_found("breakglass", &id))?;
        if b.triggered_by == reviewer {
            return Err(ApiError::new(Code::InsufficientScope, "the key that triggered breakglass cannot review it"));
        }
        // A final review stands: a later one replacing it would hide an `unjustified`
        // finding from every view but the vault. `needs_follow_up` asks for the next.
        if let Some(r) = b.review.as_ref().filter(|r| r.outcome != "needs_follow_up") {
            return Err(ApiError::new(Code::Conflict, format!("breakglass `{id}` was already reviewed ({}) by key `{}` at {}", r.outcome, r.reviewer, iso(r.reviewed_at))));
        }
        // A final review covers every override: while the breakglass is active, more
        // may follow, which no review would then see.
        if body.outcome != "needs_follow_up" && b.status_at(now) == "active" {
            return Err(ApiError::new(Code::Conflict, format!(
                "breakglass `{id}` is active until {}: close it first, or give `needs_follow_up` now and the final review once it has ended",
                iso(b.expires_at)
            )));
        }
        b.review = Some(Review { outcome: body.outcome.clone(), notes: body.notes.clone(), reviewer: reviewer.clone(), reviewed_at: now });
        let record = touched(b, &ws_id, now);
        Ok((vec![record], json!({ "breakglass_id": id, "outcome": body.outcome, "notes": body.notes }), breakglass_view(b, now)))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "breakglass": view })))
}

pub async fn breakglass_stats(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let now = state.now_ms();
    let live = auth.workspace.live.lock();
    let all: Vec<&Breakglass> = live.authority.breakglass.values().collect();
    let count = |f: &dyn Fn(&Breakglass) -> bool| all.iter().filter(|b| f(b)).count();
    let mut by_time: Vec<&Breakglass> = all.clone();
    by_time.sort_by_key(|b| std::cmp::Reverse(b.created_at));
    let recent: Vec<Value> = by_time.into_iter().take(20).map(|b| breakglass_view(b, now)).collect();
    Ok(Json(json!({
        "ok": true,
        "total": all.len(),
        "active": count(&|b| b.status_at(now) == "active"),
        "closed": count(&|b| b.status_at(now) == "closed"),
        // A `needs_follow_up` review is not final: counted on its own, and as unreviewed.
        "reviewed": count(&|b| b.review.as_ref().is_some_and(|r| r.outcome != "needs_follow_up")),
        "needs_follow_up": count(&|b| b.review.as_ref().is_some_and(|r| r.outcome == "needs_follow_up")),
        "unreviewed": count(&|b| b.review.as_ref().is_none_or(|r| r.outcome == "needs_follow_up") && b.status_at(now) == "closed"),
        "overrides": all.iter().map(|b| b.overrides).sum::<u64>(),
        "recent": recent,
    })))
}

// ── roles ───────────────────────────────────────────────────────────────────────────

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    allowed_action_types: Vec<String>,
    #[serde(default)]
    denied_action_types: Vec<String>,
    #[serde(default)]
    min_trust_level: Option<u8>,
}

fn role_view(r: &Role) -> Value {
    json!({
        "role_id": r.role_id, "name": r.name, "description": r.description, "allowed_action_types": r.allowed_action_types,
        "denied_action_types": r.denied_action_types, "min_trust_level": r.min_trust_level, "agent_ids": r.agent_ids,
        "created_at": iso(r.created_at),
    })
}

pub async fn create_role(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiJson(b): ApiJson<RoleBody>,
) -> ApiResult<Json<Value>> {
    let name = b.name.trim().to_owned();
    if name.is_empty() || name.len() > limits::NAME_MAX {
        return Err(ApiError::invalid("name", format!("must be 1-{} bytes", limits::NAME_MAX)));
    }
    check_globs("allowed_action_types", &b.allowed_action_types, false)?;
    check_globs("denied_action_types", &b.denied_action_types, false)?;
    if b.description.as_ref().is_some_and(|d| d.len() > limits::TEXT_MAX) {
        return Err(ApiError::invalid("description", format!("is longer than {} bytes", limits::TEXT_MAX)));
    }
    if b.min_trust_level.is_some_and(|t| t > 100) {
        return Err(ApiError::invalid("min_trust_level", "must be between 0 and 100"));
    }
    let ws = &auth.workspace;
    if ws.live.lock().authority.roles.values().any(|r| r.name == name) {
        return Err(ApiError::new(Code::Conflict, format!("a role named `{name}` already exists")));
    }
    let role = Role {
        role_id: new_id("role"),
        name,
        description: b.description,
        allowed_action_types: b.allowed_action_types,
        denied_action_types: b.denied_action_types,
        min_trust_level: b.min_trust_level,
        agent_ids: Vec::new(),
        created_at: state.now_ms(),
        version: 0,
    };
    let view = role_view(&role);
    create(&state, ws, role, "role.created", &auth.key.key_id, json!({ "role": view })).await?;
    Ok(Json(json!({ "ok": true, "role": view })))
}

pub async fn list_roles(auth: Authorized<perm::Read>) -> Json<Value> {
    let live = auth.workspace.live.lock();
    let mut v: Vec<&Role> = live.authority.roles.values().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    // A key bound to one agent sees what each role allows, but of its members only its
    // own agent (as `/roles/{id}/agents` is refused to it).
    let rows: Vec<Value> = v
        .into_iter()
        .map(|r| {
            let mut view = role_view(r);
            if auth.bound_agent().is_some() {
                view["agent_ids"] = json!(r.agent_ids.iter().filter(|a| auth.may_see(Some(a.as_str()))).collect::<Vec<_>>());
            }
            view
        })
        .collect();
    Json(json!({ "ok": true, "roles": rows, "total": rows.len() }))
}

pub async fn role_agents(auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let ids = auth.workspace.live.lock().authority.roles.get(&id).map(|r| r.agent_ids.clone()).ok_or_else(|| ApiError::not_found("role", &id))?;
    let agents: Vec<Value> = ids.iter().filter_map(|a| auth.workspace.agent(a)).map(|a| crate::api::agents::agent_view(&a)).collect();
    Ok(Json(json!({ "ok": true, "role_id": id, "agents": agents })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    #[serde(deserialize_with = "crate::extract::id::required")]
    agent_id: String,
}

async fn set_assignment(state: &AppState, auth: &Authorized<perm::PoliciesWrite>, id: String, agent_id: String, assign: bool) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    ws.agent(&agent_id).ok_or_else(|| ApiError::not_found("agent", &agent_id))?;
    let ws_id = ws.workspace_id.clone();
    let kind = if assign { "role.assigned" } else { "role.unassigned" };
    let view = update(state, ws, kind, &auth.key.key_id, |a, now| {
        let r = a.roles.get_mut(&id).ok_or_else(|| ApiError::not_found("role", &id))?;
        let present = r.agent_ids.contains(&agent_id);
        if assign && !present {
            r.agent_ids.push(agent_id.clone());
        } else if !assign {
            r.agent_ids.retain(|x| x != &agent_id);
        }
        let record = touched(r, &ws_id, now);
        Ok((vec![record], json!({ "role_id": id, "agent_id": agent_id }), role_view(r)))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "role": view })))
}

pub async fn assign_role(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<AssignBody>,
) -> ApiResult<Json<Value>> {
    set_assignment(&state, &auth, id, b.agent_id, true).await
}

pub async fn unassign_role(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<AssignBody>,
) -> ApiResult<Json<Value>> {
    set_assignment(&state, &auth, id, b.agent_id, false).await
}

#[cfg(test)]
mod tests {
    use super::within;

    fn w(scope: &str, allowed: &[&str]) -> bool {
        within(scope, &allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_scope_is_within_only_when_it_surely_narrows() {
        assert!(w("pay.small", &["pay.*"]));
        assert!(w("pay.*", &["pay.*"]));
        assert!(w("pay.[ab]*", &["pay.*"]));
        assert!(w("anything", &["*"]));
        assert!(w("report.read", &["report.read"]));
        assert!(!w("pay.*", &["pay.?"]), "`?` matches one character, `*` many");
        assert!(!w("[!b]", &["*b*"]));
        assert!(!w("pay.*", &["pay.small"]));
        assert!(!w("db.*", &["pay.*"]));
        assert!(!w("pay*", &["pay.*"]));
        assert!(!w("x", &["a*b*"]));
        // Letters compare ignoring ASCII case, as action-type globs match.
        assert!(w("Pay.Small", &["pay.*"]));
        assert!(w("DB.DROP*", &["db.drop*"]));
        assert!(w("REPORT.read", &["report.READ"]));
        assert!(!w("pay.ſmall", &["pay.small"]), "only ASCII letters fold");
        assert!(!w("[A-z]", &["[a-z]"]), "a class's range does not fold: `[A-z]` holds `_`");
    }

    use crate::test_rng::Rng;

    /// Random action-type globs for `within_never_widens`.
    impl Rng {
        fn glob(&mut self) -> String {
            const GLOB: &[&str] = &["a", "A", "b", "B", "_", ".", "*", "?", "[a-b]", "[A-z]", "[!a]", "\\*", "z"];
            (0..1 + self.below(4)).map(|_| GLOB[self.below(GLOB.len())]).collect()
        }
        /// `g` as it is, in upper case or in lower case.
        fn recase(&mut self, g: &str) -> String {
            match self.below(3) {
                0 => g.to_ascii_uppercase(),
                1 => g.to_ascii_lowercase(),
                _ => g.to_owned(),
            }
        }
    }

    /// Whatever `within` lets through is a narrowing: every action type a scope it
    /// accepts matches is matched by the glob it was accepted under (random globs and
    /// texts over a small alphabet that hits the special characters and both cases).
    #[test]
    fn within_never_widens() {
        use praetor_core::glob::Glob;
        const TEXT: &[char] = &['a', 'A', 'b', 'B', '_', '.', '*', 'z', 'Z', '`'];
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let (mut accepted, mut checked) = (0, 0);
        for _ in 0..40_000 {
            // Often the same glob in another case: the parent, the child or both.
            let base = r.glob();
            let parent = r.recase(&base);
            let child = if r.below(2) == 0 { r.recase(&base) } else { r.glob() };
            let (Ok(p), Ok(c)) = (Glob::action_type(&parent), Glob::action_type(&child)) else { continue };
            if !w(&child, &[&parent]) {
                continue;
            }
            accepted += 1;
            for _ in 0..50 {
                let text: String = (0..1 + r.below(5)).map(|_| TEXT[r.below(TEXT.len())]).collect();
                if c.is_match(&text) {
                    checked += 1;
                    assert!(p.is_match(&text), "`{child}` was taken as within `{parent}`, but matches `{text}` and it does not");
                }
            }
        }
        assert!(accepted > 1_000 && checked > 10_000, "the test must exercise the check: {accepted} accepted, {checked} texts");
    }
}
