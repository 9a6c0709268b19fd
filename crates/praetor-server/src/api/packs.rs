//! Policy packs (policy as code): validate, deploy all or nothing, list, versions, roll
//! back. Each deployed version is kept (kind `pack_version` in the objects table) with
//! the policy ids it deployed, so a rollback restores exactly what was live.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_core::pack::{self, PackError, PolicyPack};
use praetor_core::PolicyDef;
use praetor_store::{Mutation, ObjectFilter, ObjectRecord, PolicyRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::clock::iso;
use crate::config::limits;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ApiJson, ApiPath, RawBody};
use crate::secrets::new_id;
use crate::state::{AppState, WorkspaceState};

pub const PACK_VERSION_KIND: &str = "pack_version";

/// A deployed version of a pack, as kept for rollbacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackVersion {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    /// The definitions with the policy ids they were deployed under.
    pub definitions: Vec<PolicyDef>,
    pub deployed_at: i64,
    pub deployed_by: String,
}

fn errors_json(errors: &[PackError]) -> Value {
    json!(errors)
}

fn invalid(errors: Vec<PackError>) -> ApiError {
    let first = errors.first().map(|e| match e.index {
        Some(i) => format!("policy_definitions[{i}].{}: {}", e.field, e.message),
        None => format!("`{}`: {}", e.field, e.message),
    });
    ApiError::new(Code::InvalidPolicy, format!("the pack has {} error(s); first: {}", errors.len(), first.unwrap_or_default()))
}

/// [`pack::validate`], which compiles every content pattern the pack lists (up to the
/// workspace's 1,000), off the runtime's workers.
fn checked(doc: &Value) -> Result<PolicyPack, Vec<pack::PackError>> {
    crate::state::off_the_workers(|| pack::validate(doc))
}

/// `POST /enforce/policy-packs/validate`: a dry run, JSON or YAML body.
pub async fn validate(_auth: Authorized<perm::Read>, RawBody(raw): RawBody) -> ApiResult<Json<Value>> {
    let doc = pack::parse_document(&raw).map_err(|e| ApiError::new(Code::MalformedJson, e.message))?;
    Ok(Json(match checked(&doc) {
        Ok(p) => json!({ "ok": true, "valid": true, "name": p.name, "version": p.version, "policies": p.policy_definitions.len(), "errors": [] }),
        Err(errors) => json!({ "ok": true, "valid": false, "errors": errors_json(&errors) }),
    }))
}

async fn versions_of(state: &AppState, ws: &WorkspaceState, name: &str) -> ApiResult<Vec<PackVersion>> {
    let filter = ObjectFilter { kind: PACK_VERSION_KIND.into(), status: None, agent_id: None, limit: 1000 };
    let mut v: Vec<PackVersion> = state
        .store
        .list_objects(&ws.workspace_id, &filter)
        .await?
        .into_iter()
        .filter_map(|r| serde_json::from_value::<PackVersion>(r.body).ok())
        .filter(|p| p.name == name)
        .collect();
    v.sort_by_key(|p| p.deployed_at);
    Ok(v)
}

fn live_version(ws: &WorkspaceState, name: &str) -> Option<String> {
    let prefix = format!("{name}@");
    ws.policies.load().records.iter().find_map(|r| r.def.pack.as_ref().and_then(|p| p.strip_prefix(&prefix)).map(str::to_owned))
}

/// Swap the pack's live policies for `defs` in one transaction, sealed, and keep the
/// version record. All or nothing: the new set must compile with everything else.
async fn install(
    state: &AppState,
    ws: &WorkspaceState,
    actor: &str,
    event_kind: &str,
    version: PackVersion,
    is_new_version: bool,
) -> ApiResult<Value> {
    let tag = format!("{}@{}", version.name, version.version);
    let prefix = format!("{}@", version.name);
    let now = state.now_ms();
    let previous = live_version(ws, &version.name);
    let ws_id = ws.workspace_id.clone();
    let record_version = version.clone();
    let out = super::policies::change(state, ws, actor, event_kind, move |records| {
        let live = records.iter().filter(|r| r.def.pack.as_ref().is_some_and(|p| p.starts_with(&prefix))).count();
        let mut mutations = vec![Mutation::ExpectPackPolicies { workspace_id: ws_id.clone(), pack: record_version.name.clone(), count: live as u64 }];
        for old in records.iter().filter(|r| r.def.pack.as_ref().is_some_and(|p| p.starts_with(&prefix))) {
            mutations.push(Mutation::DeletePolicy { workspace_id: ws_id.clone(), policy_id: old.def.policy_id.clone() });
        }
        records.retain(|r| !r.def.pack.as_ref().is_some_and(|p| p.starts_with(&prefix)));
        let mut ids = Vec::new();
        for def in &record_version.definitions {
            let mut def = def.clone();
            def.pack = Some(tag.clone());
            ids.push(def.policy_id.clone());
            let rec = PolicyRecord { workspace_id: ws_id.clone(), def, created_at: now, updated_at: now };
            mutations.push(Mutation::PutPolicy(rec.clone()));
            records.push(rec);
        }
        if records.len() > limits::POLICIES_PER_WORKSPACE {
            return Err(ApiError::new(Code::InvalidPolicy, format!(
                "deploying `{tag}` would give the workspace {} policies; the limit is {}", records.len(), limits::POLICIES_PER_WORKSPACE
            )));
        }
        if is_new_version {
            mutations.push(Mutation::PutObject(ObjectRecord {
                workspace_id: ws_id.clone(),
                kind: PACK_VERSION_KIND.into(),
                object_id: tag.clone(),
                agent_id: None,
                status: "deployed".into(),
                body: serde_json::to_value(&record_version).unwrap_or(Value::Null),
                created_at: now,
                updated_at: now,
                version: 1,
            }));
        }
        Ok((mutations, json!({ "pack": record_version.name, "version": record_version.version, "previous_version": previous, "policy_ids": ids })))
    })
    .await?;
    Ok(out)
}

/// `POST /enforce/policy-packs`: deploy a new version, atomically. The previous version
/// stays stored.
pub async fn deploy(State(state): State<Arc<AppState>>, auth: Authorized<perm::PoliciesWrite>, RawBody(raw): RawBody) -> ApiResult<Json<Value>> {
    let doc = pack::parse_document(&raw).map_err(|e| ApiError::new(Code::MalformedJson, e.message))?;
    let PolicyPack { name, version, description, policy_definitions } = match checked(&doc) {
        Ok(p) => p,
        Err(errors) => {
            let mut e = invalid(errors.clone());
            e.message = format!("{} (nothing was deployed)", e.message);
            return Err(e);
        }
    };
    let ws = &auth.workspace;
    if versions_of(&state, ws, &name).await?.iter().any(|v| v.version == version) {
        return Err(ApiError::new(Code::Conflict, format!("pack `{name}` version `{version}` is already deployed; versions are immutable")));
    }
    let definitions: Vec<PolicyDef> = policy_definitions.into_iter().map(|mut d| { d.policy_id = new_id("pol"); d }).collect();
    let v = PackVersion { name: name.clone(), version: version.clone(), description, definitions, deployed_at: state.now_ms(), deployed_by: auth.key.key_id.clone() };
    let out = install(&state, ws, &auth.key.key_id, "pack.deployed", v, true).await?;
    Ok(Json(json!({ "ok": true, "name": name, "version": version, "policy_set_hash": out["policy_set_hash"] })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RollbackBody {
    version: Option<String>,
}

/// `POST /enforce/policy-packs/{name}/rollback`: to the version before the live one, or
/// to a named version.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::PoliciesWrite>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<RollbackBody>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    let versions = versions_of(&state, ws, &name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found("policy pack", &name));
    }
    let live = live_version(ws, &name);
    let target = match &body.version {
        Some(v) => versions.iter().find(|p| &p.version == v).ok_or_else(|| ApiError::invalid("version", format!("pack `{name}` has no version `{v}`")))?,
        // Which version is live is read from its policies: with none (an empty version
        // deployed last) there is no "version before it" to go back to, and picking the
        // newest would re-install that same version and answer as if rolled back.
        None if live.is_none() => {
            return Err(ApiError::new(Code::Conflict, format!(
                "pack `{name}` has no live version to roll back from (the last one deployed has no policies): name the `version` to go to"
            )));
        }
        None => {
            let pos = versions.iter().position(|p| Some(&p.version) == live.as_ref()).unwrap_or(versions.len());
            versions[..pos].last().ok_or_else(|| ApiError::new(Code::Conflict, format!("pack `{name}` has no version before `{}`", live.clone().unwrap_or_default())))?
        }
    };
    if Some(&target.version) == live.as_ref() {
        return Err(ApiError::new(Code::Conflict, format!("pack `{name}` version `{}` is already live", target.version)));
    }
    let out = install(&state, ws, &auth.key.key_id, "pack.rolled_back", target.clone(), false).await?;
    Ok(Json(json!({ "ok": true, "name": name, "version": target.version, "from": live, "policy_set_hash": out["policy_set_hash"] })))
}

pub async fn list(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>) -> ApiResult<Json<Value>> {
    let filter = ObjectFilter { kind: PACK_VERSION_KIND.into(), status: None, agent_id: None, limit: 1000 };
    let mut names: Vec<String> = state
        .store
        .list_objects(&auth.workspace.workspace_id, &filter)
        .await?
        .into_iter()
        .filter_map(|r| r.body.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    let packs: Vec<Value> = names.iter().map(|n| json!({ "name": n, "live_version": live_version(&auth.workspace, n) })).collect();
    Ok(Json(json!({ "ok": true, "packs": packs })))
}

pub async fn versions(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(name): ApiPath<String>) -> ApiResult<Json<Value>> {
    let versions = versions_of(&state, &auth.workspace, &name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found("policy pack", &name));
    }
    let live = live_version(&auth.workspace, &name);
    let rows: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "version": v.version, "description": v.description, "policies": v.definitions.len(),
                         "deployed_at": iso(v.deployed_at), "deployed_by": v.deployed_by, "live": Some(&v.version) == live.as_ref() }))
        .collect();
    Ok(Json(json!({ "ok": true, "name": name, "live_version": live, "versions": rows })))
}
