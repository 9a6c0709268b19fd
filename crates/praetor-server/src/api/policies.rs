//! Policies: list, create, read, replace, delete. Every change recompiles the
//! workspace's set once, is sealed in the vault, and only then takes effect.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_core::{CompiledPolicySet, PolicyDef};
use praetor_store::{Mutation, PolicyRecord, Txn};
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::clock::iso;
use crate::config::limits;
use crate::error::{ApiError, ApiResult, Code};
use crate::events::event;
use crate::extract::{ApiJson, ApiPath};
use crate::secrets::new_id;
use crate::state::{AppState, PolicySet, WorkspaceState};

pub fn policy_view(p: &PolicyRecord) -> Value {
    let mut v = serde_json::to_value(&p.def).unwrap_or_default();
    // `enabled` says whether the policy is evaluated at all: `mode: disabled` turns it
    // off as `enabled: false` does, and a view saying `true` for it would mislead.
    if let Value::Object(m) = &mut v {
        m.insert("enabled".into(), json!(p.def.is_evaluated()));
    }
    // A governance rule carries its alert targets: their URLs are cut to their host,
    // as the rules API shows them.
    if let Some(g) = v.get_mut("governance") {
        super::rules::redact_alert_secrets(g);
    }
    if let Value::Object(m) = &mut v {
        m.insert("created_at".into(), json!(iso(p.created_at)));
        m.insert("updated_at".into(), json!(iso(p.updated_at)));
    }
    v
}

/// A policy as `auth` may read it: a key bound to one agent does not see where a
/// governance rule's alerts go (the workspace's people and services; the rules API
/// refuses such keys altogether).
fn view_for(auth: &Authorized<perm::Read>, p: &PolicyRecord) -> Value {
    let mut v = policy_view(p);
    if auth.bound_agent().is_some()
        && let Some(g) = v.get_mut("governance").and_then(Value::as_object_mut)
    {
        g.remove("alert");
    }
    v
}

/// A policy deployed by a pack changes only with the pack (a new version, or a rollback).
fn managed_by_pack(rec: &PolicyRecord) -> ApiResult<()> {
    if let Some(p) = &rec.def.pack {
        return Err(ApiError::new(Code::Conflict, format!("policy `{}` is managed by policy pack `{p}`; deploy a new version of the pack", rec.def.policy_id)));
    }
    if rec.def.governance.is_some() {
        return Err(ApiError::new(Code::Conflict, format!("`{}` is a governance rule; change it through /api/v1/rules", rec.def.policy_id)));
    }
    Ok(())
}

fn policy_error(e: praetor_core::PolicyError) -> ApiError {
    ApiError::new(Code::InvalidPolicy, e.to_string())
}

/// A change may not take the workspace past its content-pattern limit. One that does
/// not raise the count is let through, so that a store over the limit (written before
/// there was one) can still be edited and brought under it. Counted from the
/// definitions, before the set compiles.
fn within_pattern_limit(after: &[PolicyRecord], before: &[PolicyRecord], field: &str) -> ApiResult<()> {
    let now = praetor_core::content_patterns_listed(after.iter().map(|r| &r.def));
    if now <= limits::CONTENT_PATTERNS_PER_WORKSPACE {
        return Ok(());
    }
    let was = praetor_core::content_patterns_listed(before.iter().map(|r| &r.def));
    if now > was {
        return Err(ApiError::new(
            Code::InvalidPolicy,
            format!(
                "`{field}`: the workspace's policies would list {now} content patterns; the limit is {} (they list {was})",
                limits::CONTENT_PATTERNS_PER_WORKSPACE
            ),
        ));
    }
    Ok(())
}

fn validate(def: &PolicyDef) -> ApiResult<()> {
    if def.name.trim().is_empty() || def.name.len() > limits::NAME_MAX {
        return Err(ApiError::new(Code::InvalidPolicy, format!("policy field `name`: must be 1-{} bytes", limits::NAME_MAX)));
    }
    CompiledPolicySet::validate(def).map_err(policy_error)
}

pub async fn list(auth: Authorized<perm::Read>) -> ApiResult<Json<Value>> {
    let set = auth.workspace.policies.load();
    let mut records: Vec<&PolicyRecord> = set.records.iter().collect();
    records.sort_by(|a, b| b.def.priority.cmp(&a.def.priority).then_with(|| a.created_at.cmp(&b.created_at)));
    let views: Vec<Value> = records.into_iter().map(|r| view_for(&auth, r)).collect();
    Ok(Json(json!({ "ok": true, "policies": views, "total": views.len(), "policy_set_hash": set.hash })))
}

pub async fn get(auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let set = auth.workspace.policies.load();
    let rec = set.records.iter().find(|r| r.def.policy_id == id).ok_or_else(|| ApiError::not_found("policy", &id))?;
    Ok(Json(json!({ "ok": true, "policy": view_for(&auth, rec) })))
}

/// Apply a change to the workspace's policy list: compile the new list, commit the
/// change with its vault event, then swap it in.
pub async fn change(
    state: &AppState,
    ws: &WorkspaceState,
    actor: &str,
    kind: &str,
    edit: impl FnOnce(&mut Vec<PolicyRecord>) -> ApiResult<(Vec<Mutation>, Value)>,
) -> ApiResult<Value> {
    let _guard = ws.policy_writes.lock().await;
    let before = ws.policies.load();
    let mut records = before.records.clone();
    let (mut mutations, fields) = edit(&mut records)?;
    // Each policy written or deleted must still be as this node holds it: another
    // node's change since (an edit, a delete, a pack) is refused here, not undone
    // (`409`: the retry reads it first). One written anew gets a later `updated_at`
    // than the one it replaces, even within the same millisecond, so that the guard
    // tells every version apart.
    let mut guards = Vec::new();
    for m in &mut mutations {
        let (policy_id, written) = match m {
            Mutation::PutPolicy(p) => (p.def.policy_id.clone(), Some(p)),
            Mutation::DeletePolicy { policy_id, .. } => (policy_id.clone(), None),
            _ => continue,
        };
        let held = before.records.iter().find(|r| r.def.policy_id == policy_id).map(|r| r.updated_at);
        if let (Some(p), Some(held)) = (written, held)
            && p.updated_at <= held
        {
            p.updated_at = held + 1;
            if let Some(r) = records.iter_mut().find(|r| r.def.policy_id == policy_id) {
                r.updated_at = p.updated_at;
            }
        }
        guards.push(Mutation::ExpectPolicy { workspace_id: ws.workspace_id.clone(), policy_id, updated_at: held });
    }
    mutations.splice(0..0, guards);
    // A rule's patterns are its condition's (`rules.rs`), a policy's its conditions'.
    let field = if kind.starts_with("rule.") { "condition.patterns" } else { "conditions.patterns" };
    within_pattern_limit(&records, &before.records, field)?;
    let set = PolicySet::build_serving(records, &before).map_err(policy_error)?;
    let mut fields = fields;
    if let Value::Object(m) = &mut fields {
        m.insert("policy_set_hash".into(), json!(set.hash));
    }
    let txn = Txn { mutations, seal: vec![event(&ws.workspace_id, kind, Some(actor), state.now_ms(), fields)] };
    if let Err(e) = state.commit(txn).await {
        // What this node held was stale (another node's change, or one of its own whose
        // request was cancelled before memory took it): hold what is stored, so the
        // retry the answer asks for can succeed.
        if matches!(e, praetor_store::StoreError::Stale(_)) {
            crate::follow::load_stored_policies(state, ws).await?;
        }
        return Err(e.into());
    }
    let (hash, patterns_compiled) = (set.hash.clone(), set.compiled.patterns_compiled());
    ws.replace_policies(set, state.now_ms());
    tracing::info!(workspace_id = %ws.workspace_id, kind, policy_set_hash = %hash, patterns_compiled, "policies changed");
    Ok(json!({ "policy_set_hash": hash }))
}

/// Refuse the fields a policy written here does not set, rather than drop them: a
/// client sending `pack` would believe it made a pack's policy, one sending another
/// `policy_id` in a `PUT` that it edited that policy. `path_id` is the id the path
/// names, if any.
fn refuse_fields_not_written_here(def: &PolicyDef, path_id: Option<&str>) -> ApiResult<()> {
    if def.pack.is_some() {
        return Err(ApiError::invalid("pack", "is set by deploying a policy pack (`POST /enforce/packs`); a policy written here belongs to none"));
    }
    if def.governance.is_some() {
        return Err(ApiError::invalid("governance", "is set by the rules API (`/api/v1/rules`)"));
    }
    match path_id {
        None if !def.policy_id.is_empty() => Err(ApiError::invalid("policy_id", "is chosen by the server: leave it out")),
        Some(id) if !def.policy_id.is_empty() && def.policy_id != id => {
            Err(ApiError::invalid("policy_id", format!("names another policy than the path's `{id}`: leave it out, or give the same")))
        }
        _ => Ok(()),
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiJson(mut def): ApiJson<PolicyDef>,
) -> ApiResult<Json<Value>> {
    refuse_fields_not_written_here(&def, None)?;
    validate(&def)?;
    def.policy_id = new_id("pol");
    let now = state.now_ms();
    let record = PolicyRecord { workspace_id: auth.workspace.workspace_id.clone(), def, created_at: now, updated_at: now };
    let rec = record.clone();
    let out = change(&state, &auth.workspace, &auth.key.key_id, "policy.created", move |records| {
        if records.len() >= limits::POLICIES_PER_WORKSPACE {
            return Err(ApiError::new(Code::InvalidPolicy, "this workspace has reached its policy limit"));
        }
        records.push(rec.clone());
        Ok((vec![Mutation::PutPolicy(rec.clone())], json!({ "policy_id": rec.def.policy_id, "policy": rec.def })))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "policy": policy_view(&record), "policy_set_hash": out["policy_set_hash"] })))
}

pub async fn replace(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut def): ApiJson<PolicyDef>,
) -> ApiResult<Json<Value>> {
    refuse_fields_not_written_here(&def, Some(&id))?;
    validate(&def)?;
    def.policy_id = id.clone();
    let now = state.now_ms();
    let ws_id = auth.workspace.workspace_id.clone();
    let mut updated = None;
    let out = change(&state, &auth.workspace, &auth.key.key_id, "policy.updated", |records| {
        let rec = records.iter_mut().find(|r| r.def.policy_id == id).ok_or_else(|| ApiError::not_found("policy", &id))?;
        managed_by_pack(rec)?;
        *rec = PolicyRecord { workspace_id: ws_id, def, created_at: rec.created_at, updated_at: now };
        updated = Some(rec.clone());
        Ok((vec![Mutation::PutPolicy(rec.clone())], json!({ "policy_id": id, "policy": rec.def })))
    })
    .await?;
    let view = updated.as_ref().map(policy_view).unwrap_or_default();
    Ok(Json(json!({ "ok": true, "policy": view, "policy_set_hash": out["policy_set_hash"] })))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let ws_id = auth.workspace.workspace_id.clone();
    let out = change(&state, &auth.workspace, &auth.key.key_id, "policy.deleted", |records| {
        if let Some(rec) = records.iter().find(|r| r.def.policy_id == id) {
            managed_by_pack(rec)?;
        }
        let before = records.len();
        records.retain(|r| r.def.policy_id != id);
        if records.len() == before {
            return Err(ApiError::not_found("policy", &id));
        }
        Ok((vec![Mutation::DeletePolicy { workspace_id: ws_id, policy_id: id.clone() }], json!({ "policy_id": id })))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "deleted": true, "policy_set_hash": out["policy_set_hash"] })))
}

/// `POST /enforce/policies/{id}/promote`: a shadow (or disabled) policy starts enforcing,
/// which also enables it. One already enforcing is a conflict: the caller meant another.
pub async fn promote(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let now = state.now_ms();
    let mut promoted = None;
    let out = change(&state, &auth.workspace, &auth.key.key_id, "policy.promoted", |records| {
        let rec = records.iter_mut().find(|r| r.def.policy_id == id).ok_or_else(|| ApiError::not_found("policy", &id))?;
        managed_by_pack(rec)?;
        let from = if rec.def.enabled { rec.def.mode } else { praetor_core::policy::PolicyMode::Disabled };
        if from == praetor_core::policy::PolicyMode::Enforce {
            return Err(ApiError::new(Code::Conflict, format!("policy `{id}` is already enforced")));
        }
        rec.def.mode = praetor_core::policy::PolicyMode::Enforce;
        rec.def.enabled = true;
        rec.updated_at = now;
        promoted = Some(rec.clone());
        Ok((vec![Mutation::PutPolicy(rec.clone())], json!({ "policy_id": id, "from": from, "to": "enforce" })))
    })
    .await?;
    let view = promoted.as_ref().map(policy_view).unwrap_or_default();
    Ok(Json(json!({ "ok": true, "policy": view, "policy_set_hash": out["policy_set_hash"] })))
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowQuery {
    policy_id: Option<String>,
    since: Option<String>,
}

/// `GET /enforce/shadow/report?policy_id=&since=`: per shadow policy, how many decisions
/// it matched, how many it would have changed, from what to what, with examples.
pub async fn shadow_report(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<ShadowQuery>,
) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let since = match &q.since {
        Some(s) => crate::extract::query_time("since", s)?,
        None => 0,
    };
    let set = auth.workspace.policies.load();
    let rows = state.store.shadow_report(&auth.workspace.workspace_id, q.policy_id.as_deref(), since).await?;
    // Every shadow policy is listed, also those that have not matched yet.
    let mut report: Vec<Value> = set
        .records
        .iter()
        .filter(|r| r.def.mode == praetor_core::policy::PolicyMode::Shadow)
        .filter(|r| q.policy_id.as_deref().is_none_or(|p| p == r.def.policy_id))
        .map(|r| {
            let s = rows.iter().find(|x| x.policy_id == r.def.policy_id).cloned().unwrap_or_default();
            json!({
                "policy_id": r.def.policy_id, "name": r.def.name, "decision": r.def.decision,
                "matched": s.matched, "would_change": s.would_change,
                "transitions": s.transitions.iter().map(|(f, t, n)| json!({ "from": f, "to": t, "count": n })).collect::<Vec<_>>(),
                "examples": s.examples,
            })
        })
        .collect();
    // A policy promoted since still has its shadow record: report it as history.
    let listed: Vec<String> = report.iter().filter_map(|r| r["policy_id"].as_str().map(str::to_owned)).collect();
    for s in rows.iter().filter(|s| !listed.contains(&s.policy_id)) {
        report.push(json!({
            "policy_id": s.policy_id, "no_longer_shadow": true, "matched": s.matched, "would_change": s.would_change,
            "transitions": s.transitions.iter().map(|(f, t, n)| json!({ "from": f, "to": t, "count": n })).collect::<Vec<_>>(),
            "examples": s.examples,
        }));
    }
    Ok(Json(json!({ "ok": true, "since": q.since, "policies": report })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` one-pattern content policies and `globs` action-type ones.
    fn set_of(n: usize, globs: usize) -> Vec<PolicyRecord> {
        let content = (0..n).map(|i| json!({"name": format!("c{i}"), "policy_type": "content_pattern", "decision": "block", "conditions": {"patterns": [format!("secret{i}")]}}));
        let glob = (0..globs).map(|i| json!({"name": format!("g{i}"), "policy_type": "action_type", "action_types": [format!("x{i}.*")], "decision": "block"}));
        content
            .chain(glob)
            .enumerate()
            .map(|(i, mut v)| {
                v["policy_id"] = json!(format!("pol_{i}"));
                match serde_json::from_value(v) {
                    Ok(def) => PolicyRecord { workspace_id: "ws".into(), def, created_at: 0, updated_at: 0 },
                    Err(e) => panic!("{e}"),
                }
            })
            .collect()
    }

    /// A store already over the limit (from before there was one) can still be edited
    /// and shrunk; only a change that raises the count past the limit is refused.
    #[test]
    fn only_changes_that_add_patterns_past_the_limit_are_refused() {
        let limit = limits::CONTENT_PATTERNS_PER_WORKSPACE;
        let over = set_of(limit + 10, 0);
        assert!(within_pattern_limit(&set_of(limit + 10, 1), &over, "conditions.patterns").is_ok(), "a change adding no pattern");
        assert!(within_pattern_limit(&set_of(limit + 5, 0), &over, "conditions.patterns").is_ok(), "a change removing some");
        let e = within_pattern_limit(&set_of(limit + 11, 0), &over, "conditions.patterns").err().map(|e| e.message).unwrap_or_default();
        assert!(e.contains(&format!("would list {} content patterns", limit + 11)) && e.contains(&format!("they list {}", limit + 10)), "{e}");
        assert!(within_pattern_limit(&set_of(limit, 0), &set_of(limit - 1, 0), "conditions.patterns").is_ok(), "up to the limit");
    }
}
