//! Governance rules (`/api/v1/rules`) and violations (`/api/v1/violations`). A rule is
//! compiled to a `composite` policy that carries the rule as written, so rules and
//! policies run in the same engine; it is active as soon as it is created.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_core::policy::{Effect, PolicyMode, PolicyType};
use praetor_core::PolicyDef;
use praetor_store::{Mutation, PolicyRecord, ViolationFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::clock::iso;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::secrets::new_id;
use crate::state::AppState;

use super::policies::change;

pub const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];
/// The most addresses one rule's alert may name.
const ALERT_EMAILS_MAX: usize = 50;

/// A rule as users write it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub condition: Value,
    /// `block`, `flag` (allow and record a violation), `alert` (allow, record and
    /// notify), `redirect` (hold for human review in a named queue).
    pub action: String,
    pub severity: String,
    #[serde(default)]
    pub alert: Option<AlertTargets>,
    /// When the rule applies; always when absent.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// The review queue of a `redirect` rule.
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub mode: Option<PolicyMode>,
    #[serde(default)]
    pub priority: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTargets {
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub slack_webhook_url: Option<String>,
}

/// The rule applies only inside these hours and days (business hours, a blackout, a
/// review window), in a time zone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub hours: Vec<u8>,
    #[serde(default)]
    pub days: Vec<String>,
}

fn utc() -> String {
    "UTC".into()
}

/// Translate the rules API's condition language into the engine's composite tree, naming
/// the bad node on error: `{"type": "contains_pii", "categories": [...]}`,
/// `{"type": "content_matches", "patterns": [...]}`, `{"type": "action_type",
/// "action_types": [...]}`, `{"trust_score_below": 0.7}` (0-1), `{"field", "op",
/// "value"}`, and `all` / `any` / `not`. A node is exactly one of these, with only its
/// own keys (`node_kind`): nothing in a node is dropped unread.
pub fn translate(cond: &Value, path: &str) -> ApiResult<Value> {
    let bad = |msg: &str| ApiError::new(Code::InvalidPolicy, format!("rule field `{path}`: {msg}"));
    let obj = cond.as_object().ok_or_else(|| bad("a condition is an object"))?;
    node_kind(obj).map_err(|m| bad(&m))?;
    if let Some(list) = obj.get("all").or(obj.get("any")) {
        let key = if obj.contains_key("all") { "all" } else { "any" };
        let items = list.as_array().filter(|a| !a.is_empty()).ok_or_else(|| bad(&format!("`{key}` takes a non-empty list")))?;
        let inner: ApiResult<Vec<Value>> = items.iter().enumerate().map(|(i, c)| translate(c, &format!("{path}.{key}[{i}]"))).collect();
        return Ok(json!({ key: inner? }));
    }
    if let Some(c) = obj.get("not") {
        return Ok(json!({ "not": translate(c, &format!("{path}.not"))? }));
    }
    if let Some(t) = obj.get("trust_score_below") {
        return Ok(json!({ "trust_below": trust_below(t).ok_or_else(|| bad("`trust_score_below` is a number from 0 to 1"))? }));
    }
    if obj.contains_key("field") {
        return Ok(json!({ "metadata": cond }));
    }
    let mut rest = obj.clone();
    let kind = rest.remove("type").and_then(|t| t.as_str().map(str::to_owned)).ok_or_else(|| bad("needs `type`, `field`, `trust_score_below`, `all`, `any` or `not`"))?;
    Ok(match kind.as_str() {
        "contains_pii" => json!({ "pii": rest }),
        "content_matches" => json!({ "content_pattern": rest }),
        "action_type" => json!({ "action_type": rest.get("action_types").cloned().unwrap_or(Value::Null) }),
        other => return Err(bad(&format!("unknown condition type `{other}`"))),
    })
}

/// The engine's `trust_below` (whole scores 0-100) for `trust_score_below` (0-1): a
/// whole score is below `x` exactly when it is below `ceil(100 x)`, so `0.704` is 71
/// (70 is below 70.4). Read from the number as written, not its binary value: `0.1` is
/// 10, where `0.1 * 100.0` in floats is 10.000000000000002.
fn trust_below(t: &Value) -> Option<u64> {
    use rust_decimal::Decimal;
    use rust_decimal::prelude::ToPrimitive;
    let Value::Number(n) = t else { return None };
    let text = n.to_string();
    let x = text.parse::<Decimal>().or_else(|_| Decimal::from_scientific(&text)).ok()?;
    (Decimal::ZERO..=Decimal::ONE).contains(&x).then(|| (x * Decimal::ONE_HUNDRED).ceil().to_u64())?
}

/// The keys that say what a condition node is; a node has exactly one of them.
const NODE_KINDS: [&str; 6] = ["all", "any", "not", "trust_score_below", "field", "type"];

/// Check that a node is one kind and holds only that kind's keys; the message names
/// the keys that do not belong.
fn node_kind(obj: &serde_json::Map<String, Value>) -> Result<(), String> {
    let kinds: Vec<&str> = NODE_KINDS.into_iter().filter(|k| obj.contains_key(*k)).collect();
    let allowed: &[&str] = match kinds.as_slice() {
        [] => return Err("needs `type`, `field`, `trust_score_below`, `all`, `any` or `not`".to_owned()),
        [_, _, ..] => return Err(format!("mixes {}: a condition is one of them (combine with `all` or `any`)", quoted(&kinds))),
        ["field"] => &["field", "op", "value"],
        ["type"] => match obj.get("type").and_then(Value::as_str) {
            Some("contains_pii") => &["type", "categories", "fields"],
            Some("content_matches") => &["type", "patterns", "case_insensitive", "fields"],
            Some("action_type") => &["type", "action_types"],
            // `translate` names the unknown type.
            _ => return Ok(()),
        },
        [one] => std::slice::from_ref(one),
    };
    let unknown: Vec<&str> = obj.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
    if unknown.is_empty() { Ok(()) } else { Err(format!("unknown key {} (this condition takes {})", quoted(&unknown), quoted(allowed))) }
}

/// `a`, `b`
fn quoted(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

/// The policy a rule runs as.
fn to_policy(body: &RuleBody, policy_id: String) -> ApiResult<PolicyDef> {
    let effect = match body.action.as_str() {
        "block" => Effect::Block,
        "flag" | "alert" => Effect::AllowWithWarning,
        "redirect" => Effect::Escalate,
        other => return Err(ApiError::invalid("action", format!("`{other}` is not block, flag, alert or redirect"))),
    };
    if !SEVERITIES.contains(&body.severity.as_str()) {
        return Err(ApiError::invalid("severity", format!("`{}` is not critical, high, medium or low", body.severity)));
    }
    if body.action == "redirect" && body.queue.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid("queue", "a `redirect` rule names the review queue"));
    }
    // An alert with nowhere to go would be a `flag` that looks like an alert.
    let no_target = |a: &AlertTargets| a.emails.is_empty() && a.webhook_url.is_none() && a.slack_webhook_url.is_none();
    if body.action == "alert" && body.alert.as_ref().is_none_or(no_target) {
        return Err(ApiError::invalid("alert", "an `alert` rule names where to send it: `emails`, `webhook_url` or `slack_webhook_url`"));
    }
    if let Some(a) = &body.alert {
        if a.emails.len() > ALERT_EMAILS_MAX {
            return Err(ApiError::invalid("alert.emails", format!("has {} addresses; the limit is {ALERT_EMAILS_MAX}", a.emails.len())));
        }
        for (i, e) in a.emails.iter().enumerate() {
            // No control characters: a CR or LF would be refused only when the mail is
            // sent, long after the rule was accepted.
            if !e.contains('@') || e.len() > 254 || e.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(ApiError::invalid(&format!("alert.emails[{i}]"), format!("`{e}` is not an e-mail address")));
            }
        }
        for (field, url) in [("alert.webhook_url", &a.webhook_url), ("alert.slack_webhook_url", &a.slack_webhook_url)] {
            if let Some(u) = url
                && (!(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2048) {
                    return Err(ApiError::invalid(field, "must be an http(s) URL"));
                }
        }
    }
    let mut when = translate(&body.condition, "condition")?;
    if let Some(s) = &body.schedule {
        if s.hours.is_empty() && s.days.is_empty() {
            return Err(ApiError::invalid("schedule", "names `hours` or `days`"));
        }
        // Inside the schedule = not outside the allowed hours and days.
        let mut t = json!({ "timezone": s.timezone });
        if !s.hours.is_empty() {
            t["allowed_hours"] = json!(s.hours);
        }
        if !s.days.is_empty() {
            t["allowed_days"] = json!(s.days);
        }
        when = json!({ "all": [when, { "not": { "temporal": t } }] });
    }
    Ok(PolicyDef {
        policy_id,
        name: body.name.clone(),
        description: body.description.clone(),
        policy_type: PolicyType::Composite,
        action_types: Vec::new(),
        decision: effect,
        priority: body.priority.unwrap_or(0),
        enabled: true,
        mode: body.mode.unwrap_or_default(),
        trust_threshold: None,
        conditions: json!({ "when": when }),
        pack: None,
        governance: Some(serde_json::to_value(body).unwrap_or(Value::Null)),
    })
}

/// `https://hooks.slack.com/...` → `https://hooks.slack.com/…`: the path of a Slack
/// incoming webhook is its credential.
pub fn redact_url(u: &str) -> String {
    match reqwest::Url::parse(u) {
        Ok(p) => format!("{}://{}/…", p.scheme(), p.host_str().unwrap_or("?")),
        Err(_) => "…".into(),
    }
}

/// A rule as written, with its alert URLs cut to their host: a Slack incoming
/// webhook's path is its credential, and other webhooks often carry one in the path
/// or query.
pub fn redact_alert_secrets(governance: &mut Value) {
    for field in ["slack_webhook_url", "webhook_url"] {
        if let Some(url) = governance.get("alert").and_then(|a| a.get(field)).and_then(Value::as_str).map(redact_url) {
            governance["alert"][field] = json!(url);
        }
    }
}

fn rule_view(r: &PolicyRecord) -> Value {
    let mut v = r.def.governance.clone().unwrap_or(Value::Null);
    redact_alert_secrets(&mut v);
    if let Value::Object(m) = &mut v {
        m.insert("rule_id".into(), json!(r.def.policy_id));
        m.insert("mode".into(), json!(r.def.mode));
        m.insert("active".into(), json!(r.def.enabled && r.def.mode == PolicyMode::Enforce));
        m.insert("created_at".into(), json!(iso(r.created_at)));
        m.insert("updated_at".into(), json!(iso(r.updated_at)));
    }
    v
}

fn check_compiles(def: &PolicyDef) -> ApiResult<()> {
    let scheduled = def.governance.as_ref().and_then(|g| g.get("schedule")).is_some_and(|s| !s.is_null());
    praetor_core::CompiledPolicySet::validate(def).map_err(|e| {
        let field = rule_field(&e.field, scheduled);
        ApiError::new(Code::InvalidPolicy, format!("rule field `{field}`: {}", e.message))
    })
}

/// The field of the rule as written for a field of the policy it compiles to: the
/// condition is `conditions.when`, and a schedule is joined to it as
/// `all[condition, not(temporal)]` (see `to_policy`).
fn rule_field(field: &str, scheduled: bool) -> String {
    let Some(rest) = field.strip_prefix("conditions.when") else { return field.to_owned() };
    if scheduled {
        if let Some(r) = rest.strip_prefix(".all[0]") {
            return format!("condition{r}");
        }
        if let Some(r) = rest.strip_prefix(".all[1].not.temporal") {
            return format!("schedule{}", r.replace("allowed_hours", "hours").replace("allowed_days", "days"));
        }
    }
    format!("condition{rest}")
}

/// Outbound safety for a rule's alert URLs.
async fn check_alert_targets(state: &AppState, body: &RuleBody) -> ApiResult<()> {
    if let Some(a) = &body.alert {
        for (field, url) in [("alert.webhook_url", &a.webhook_url), ("alert.slack_webhook_url", &a.slack_webhook_url)] {
            if let Some(u) = url {
                crate::delivery::check_target(u, state.config.allow_private_targets).await.map_err(|e| ApiError::invalid(field, e))?;
            }
        }
    }
    Ok(())
}

pub async fn create(State(state): State<Arc<AppState>>, auth: Authorized<perm::PoliciesWrite>, ApiJson(body): ApiJson<RuleBody>) -> ApiResult<Json<Value>> {
    let def = to_policy(&body, new_id("rule"))?;
    check_alert_targets(&state, &body).await?;
    check_compiles(&def)?;
    let now = state.now_ms();
    let rec = PolicyRecord { workspace_id: auth.workspace.workspace_id.clone(), def, created_at: now, updated_at: now };
    let view = rule_view(&rec);
    change(&state, &auth.workspace, &auth.key.key_id, "rule.created", move |records| {
        // Every rule is a compiled policy: the workspace's policy limit holds for rules too.
        if records.len() >= crate::config::limits::POLICIES_PER_WORKSPACE {
            return Err(ApiError::new(Code::InvalidPolicy, "this workspace has reached its policy limit (rules count as policies)"));
        }
        records.push(rec.clone());
        Ok((vec![Mutation::PutPolicy(rec.clone())], json!({ "rule": rule_view(&rec) })))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "rule": view })))
}

pub async fn list(auth: Authorized<perm::Read>) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let set = auth.workspace.policies.load();
    let mut rules: Vec<&PolicyRecord> = set.records.iter().filter(|r| r.def.governance.is_some()).collect();
    rules.sort_by_key(|r| r.created_at);
    Ok(Json(json!({ "ok": true, "rules": rules.into_iter().map(rule_view).collect::<Vec<_>>() })))
}

pub async fn get(auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let set = auth.workspace.policies.load();
    let r = set.records.iter().find(|r| r.def.policy_id == id && r.def.governance.is_some()).ok_or_else(|| ApiError::not_found("rule", &id))?;
    Ok(Json(json!({ "ok": true, "rule": rule_view(r) })))
}

pub async fn replace(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RuleBody>,
) -> ApiResult<Json<Value>> {
    let def = to_policy(&body, id.clone())?;
    check_alert_targets(&state, &body).await?;
    check_compiles(&def)?;
    let now = state.now_ms();
    let mut out = None;
    change(&state, &auth.workspace, &auth.key.key_id, "rule.updated", |records| {
        let rec = records.iter_mut().find(|r| r.def.policy_id == id && r.def.governance.is_some() && r.def.pack.is_none()).ok_or_else(|| ApiError::not_found("rule", &id))?;
        rec.def = def;
        rec.updated_at = now;
        out = Some(rule_view(rec));
        Ok((vec![Mutation::PutPolicy(rec.clone())], json!({ "rule": rule_view(rec) })))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "rule": out })))
}

pub async fn delete(State(state): State<Arc<AppState>>, auth: Authorized<perm::PoliciesWrite>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let ws_id = auth.workspace.workspace_id.clone();
    change(&state, &auth.workspace, &auth.key.key_id, "rule.deleted", |records| {
        let before = records.len();
        records.retain(|r| !(r.def.policy_id == id && r.def.governance.is_some() && r.def.pack.is_none()));
        if records.len() == before {
            return Err(ApiError::not_found("rule", &id));
        }
        Ok((vec![Mutation::DeletePolicy { workspace_id: ws_id, policy_id: id.clone() }], json!({ "rule_id": id })))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "deleted": true })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ViolationQuery {
    rule_id: Option<String>,
    severity: Option<String>,
    since: Option<String>,
    agent_id: Option<String>,
    limit: Option<u32>,
}

/// Whether `auth` may see violation `v`: a key bound to one agent only when both the
/// row and its decision's sealed entry name that agent.
fn visible(auth: &Authorized<perm::Read>, v: &praetor_store::Violation) -> bool {
    auth.bound_agent().is_none() || (auth.may_see(v.agent_id.as_deref()) && auth.may_see(v.decision_agent.as_deref()))
}

pub async fn violations(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<ViolationQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(s) = &q.severity
        && !SEVERITIES.contains(&s.as_str()) {
            return Err(ApiError::new(Code::InvalidQuery, format!("`severity`: `{s}` is not critical, high, medium or low")));
        }
    let since = match &q.since {
        Some(s) => Some(crate::extract::query_time("since", s)?),
        None => None,
    };
    let agent_id = auth.bound_agent().map(str::to_owned).or(q.agent_id);
    let filter = ViolationFilter { rule_id: q.rule_id, severity: q.severity, agent_id, since, limit: crate::extract::page_size("limit", q.limit, 100, 1000)? };
    let rows = state.store.list_violations(&auth.workspace.workspace_id, &filter).await?;
    let bodies: Vec<Value> = rows.into_iter().filter(|v| visible(&auth, v)).map(|v| v.body).collect();
    state.metrics.count_unreadable(&bodies);
    Ok(Json(json!({ "ok": true, "total": bodies.len(), "violations": bodies })))
}

pub async fn violation(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let v = state
        .store
        .get_violation(&auth.workspace.workspace_id, &id)
        .await?
        .filter(|v| visible(&auth, v))
        .ok_or_else(|| ApiError::not_found("violation", &id))?;
    state.metrics.count_unreadable(std::slice::from_ref(&v.body));
    Ok(Json(json!({ "ok": true, "violation": v.body })))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn trust_score_below_matches_every_whole_score_below_it() {
        // A whole score s is below x exactly when s < ceil(100 x).
        for (x, below) in [(json!(0.704), 71), (json!(0.7), 70), (json!(0.1), 10), (json!(0.29), 29), (json!(0.001), 1), (json!(0), 0), (json!(1), 100), (json!(1.0), 100)] {
            assert_eq!(super::trust_below(&x), Some(below), "{x}");
        }
        for bad in [json!(1.01), json!(-0.1), json!("0.5"), json!(null), json!(70)] {
            assert_eq!(super::trust_below(&bad), None, "{bad}");
        }
        assert_eq!(super::translate(&json!({"trust_score_below": 0.704}), "condition").unwrap(), json!({"trust_below": 71}));
    }
}
