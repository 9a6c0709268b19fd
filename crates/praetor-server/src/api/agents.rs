//! Agents: registration (with a fresh Ed25519 credential), listing, updates,
//! deactivation and history.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use base64::Engine;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use praetor_core::action::PermissionBoundary;
use praetor_store::{Agent, Credential, DecisionFilter, Mutation, Txn};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::credentials::credential_view;
use crate::auth::{Authorized, perm};
use crate::authority::Settled;
use crate::clock::iso;
use crate::config::limits;
use crate::error::{ApiError, ApiResult};
use crate::events::event;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::secrets::{new_id, random_bytes};
use crate::state::AppState;

/// The longest credential lifetime a registration may ask for: ten years.
const CREDENTIAL_TTL_DAYS_MAX: u32 = 3650;
/// The most the passport fields may take, encoded as JSON.
const PASSPORT_MAX_BYTES: usize = 16 * 1024;
/// The passport fields the xybern SDK may send (wire §5.1); kept as descriptive
/// attributes of the agent.
const PASSPORT_FIELDS: &[&str] = &[
    "permissions", "delegation_policy", "credential_ttl_days", "model", "prompt_hash", "environment",
    "risk_class", "owner", "permitted_models", "approved_tools", "data_clearance", "purpose",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    name: String,
    #[serde(default)]
    framework: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    permission_boundary: Option<PermissionBoundary>,
    #[serde(default)]
    require_signature: bool,
    // Passport fields: stored as attributes.
    #[serde(default)]
    permissions: Option<Value>,
    #[serde(default)]
    delegation_policy: Option<Value>,
    #[serde(default)]
    credential_ttl_days: Option<u32>,
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    prompt_hash: Option<Value>,
    #[serde(default)]
    environment: Option<Value>,
    #[serde(default)]
    risk_class: Option<Value>,
    #[serde(default)]
    owner: Option<Value>,
    #[serde(default)]
    permitted_models: Option<Value>,
    #[serde(default)]
    approved_tools: Option<Value>,
    #[serde(default)]
    data_clearance: Option<Value>,
    #[serde(default)]
    purpose: Option<Value>,
}

fn check_text(field: &str, v: &str, max: usize) -> ApiResult<()> {
    if v.len() > max {
        return Err(ApiError::invalid(field, format!("is {} bytes long; the limit is {max}", v.len())));
    }
    Ok(())
}

fn check_list(field: &str, items: &[String]) -> ApiResult<()> {
    if items.len() > limits::LIST_MAX {
        return Err(ApiError::invalid(field, format!("has {} items; the limit is {}", items.len(), limits::LIST_MAX)));
    }
    for (i, item) in items.iter().enumerate() {
        check_text(&format!("{field}[{i}]"), item, limits::NAME_MAX)?;
    }
    Ok(())
}

/// Scopes and boundaries are action-type globs: refuse one that does not compile,
/// naming it (`scopes[2]`).
fn check_globs(scopes: &[String], boundary: Option<&PermissionBoundary>) -> ApiResult<()> {
    praetor_core::boundary::validate(scopes, boundary)
        .map_err(|e| ApiError::new(crate::error::Code::InvalidField, format!("`{}`: {}", e.field, e.message)))
}

/// The agent as the API shows it (wire §5.2 names; `trust_level` is the same number
/// as `trust_score`).
pub fn agent_view(a: &Agent) -> Value {
    let mut v = json!({
        "agent_id": a.agent_id,
        "name": a.name,
        "framework": a.framework,
        "description": a.description,
        "capabilities": a.capabilities,
        "scopes": a.scopes,
        "permission_boundary": a.permission_boundary,
        "require_signature": a.require_signature,
        "trust_score": a.trust_score,
        "trust_level": a.trust_score,
        "is_active": a.is_active,
        "created_at": iso(a.created_at),
        "updated_at": iso(a.updated_at),
        "last_seen_at": a.last_seen_at.map(iso),
        "total_actions": a.total_actions,
        "allowed_actions": a.allowed_actions,
        "blocked_actions": a.blocked_actions,
        "escalated_actions": a.escalated_actions,
    });
    if let Value::Object(m) = &mut v {
        m.insert("attributes".into(), Value::Object(a.attributes.clone()));
    }
    v
}

/// A fresh Ed25519 credential. Returns the stored record and the private key, which
/// is shown once and never stored.
pub fn new_credential(workspace_id: &str, agent_id: &str, now_ms: i64, ttl_days: Option<u32>) -> (Credential, Value) {
    let signing = SigningKey::from_bytes(&random_bytes::<32>());
    let b64 = base64::engine::general_purpose::STANDARD;
    let public_key = b64.encode(signing.verifying_key().as_bytes());
    let credential = Credential {
        credential_id: new_id("cred"),
        workspace_id: workspace_id.to_owned(),
        agent_id: agent_id.to_owned(),
        algorithm: "ed25519".into(),
        public_key,
        did: format!("did:praetor:{workspace_id}:{agent_id}"),
        created_at: now_ms,
        expires_at: ttl_days.map(|d| now_ms + i64::from(d) * 86_400_000),
        revoked_at: None,
        rotated: false,
    };
    let pem = signing.to_pkcs8_pem(Default::default()).map(|p| p.to_string()).unwrap_or_default();
    let mut view = credential_view(&credential, now_ms);
    if let Value::Object(m) = &mut view {
        m.insert("private_key".into(), json!(b64.encode(signing.to_bytes())));
        m.insert("private_key_pem".into(), json!(pem));
        m.insert("private_key_notice".into(), json!("shown once; Praetor does not store it"));
    }
    (credential, view)
}

pub async fn register(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::RegisterAgents>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> ApiResult<Json<Value>> {
    if auth.bound_agent().is_some() {
        return Err(ApiError::new(crate::error::Code::InsufficientScope, "a key bound to one agent cannot register agents"));
    }
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "must be a non-empty string without control characters"));
    }
    check_text("name", &name, limits::NAME_MAX)?;
    let framework = body.framework.clone().unwrap_or_else(|| "custom".into());
    check_text("framework", &framework, limits::NAME_MAX)?;
    if let Some(d) = &body.description {
        check_text("description", d, 4096)?;
    }
    check_list("capabilities", &body.capabilities)?;
    check_list("scopes", &body.scopes)?;
    if let Some(b) = &body.permission_boundary {
        check_list("permission_boundary.allowed_action_types", &b.allowed_action_types)?;
        check_list("permission_boundary.denied_action_types", &b.denied_action_types)?;
    }
    check_globs(&body.scopes, body.permission_boundary.as_ref())?;
    if body.credential_ttl_days.is_some_and(|d| !(1..=CREDENTIAL_TTL_DAYS_MAX).contains(&d)) {
        return Err(ApiError::invalid("credential_ttl_days", format!("must be between 1 and {CREDENTIAL_TTL_DAYS_MAX}")));
    }
    // The passport is held in memory and shown in every listing of the agent.
    let passport = body_attributes(&body);
    let passport_bytes = serde_json::to_vec(&passport).map_or(0, |b| b.len());
    if passport_bytes > PASSPORT_MAX_BYTES {
        // Named by its largest field, the one to look at first.
        let size = |v: &Value| serde_json::to_vec(v).map_or(0, |b| b.len());
        let largest = passport.iter().max_by_key(|(_, v)| size(v)).map_or("permissions", |(k, _)| k.as_str());
        return Err(ApiError::invalid(largest, format!(
            "the passport fields ({}) take {passport_bytes} bytes as JSON; the limit is {PASSPORT_MAX_BYTES}", PASSPORT_FIELDS.join(", ")
        )));
    }
    let ws = &auth.workspace;
    // One registration at a time per workspace keeps (name, framework) unique.
    let _guard = ws.agent_writes.lock().await;
    let existing = ws.agents.read().values().find(|a| a.name == name && a.framework == framework).cloned();
    if let Some(agent) = existing {
        return Ok(Json(json!({ "ok": true, "created": false, "agent": agent_view(&agent) })));
    }
    let now = state.now_ms();
    let attributes = passport;
    let agent = Agent {
        agent_id: new_id("agt"),
        workspace_id: ws.workspace_id.clone(),
        name,
        framework,
        description: body.description,
        capabilities: body.capabilities,
        scopes: body.scopes,
        permission_boundary: body.permission_boundary,
        require_signature: body.require_signature,
        trust_score: ws.settings.read().trust_baseline,
        clean_streak: 0,
        is_active: true,
        attributes,
        created_at: now,
        updated_at: now,
        last_seen_at: None,
        total_actions: 0,
        allowed_actions: 0,
        blocked_actions: 0,
        escalated_actions: 0,
        copy_generation: 0,
        etag: new_id("etag"),
    };
    let (credential, credential_json) = new_credential(&ws.workspace_id, &agent.agent_id, now, body.credential_ttl_days);
    let txn = Txn {
        mutations: vec![Mutation::PutAgent(agent.clone()), Mutation::InsertCredential(credential.clone())],
        seal: vec![event(
            &ws.workspace_id,
            "agent.registered",
            Some(&auth.key.key_id),
            now,
            json!({"agent_id": agent.agent_id, "name": agent.name, "framework": agent.framework,
                   "credential_id": credential.credential_id, "public_key": credential.public_key}),
        )],
    };
    if let Err(e) = state.commit(txn).await {
        // Another node registered the same name and framework meanwhile: registering is
        // idempotent, so that agent is the answer, once the change feed brings it here.
        if matches!(e, praetor_store::StoreError::Conflict(_)) && crate::follow::follow(&state, ws).await.is_ok() {
            let registered = ws.agents.read().values().find(|a| a.name == agent.name && a.framework == agent.framework).cloned();
            if let Some(other) = registered {
                return Ok(Json(json!({ "ok": true, "created": false, "agent": agent_view(&other) })));
            }
        }
        return Err(e.into());
    }
    ws.agents.write().insert(agent.agent_id.clone(), agent.clone());
    ws.credentials.write().insert(credential.credential_id.clone(), credential);
    tracing::info!(workspace_id = %ws.workspace_id, agent_id = %agent.agent_id, "agent registered");
    Ok(Json(json!({ "ok": true, "created": true, "agent": agent_view(&agent), "credential": credential_json })))
}

fn body_attributes(body: &RegisterBody) -> Map<String, Value> {
    let values = [
        &body.permissions, &body.delegation_policy, &body.credential_ttl_days.map(Value::from), &body.model,
        &body.prompt_hash, &body.environment, &body.risk_class, &body.owner, &body.permitted_models,
        &body.approved_tools, &body.data_clearance, &body.purpose,
    ];
    PASSPORT_FIELDS
        .iter()
        .zip(values)
        .filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v)))
        .collect()
}

pub async fn list(State(_state): State<Arc<AppState>>, auth: Authorized<perm::Read>) -> ApiResult<Json<Value>> {
    // A key bound to one agent lists that agent only.
    let mut agents: Vec<Agent> = auth.workspace.agents.read().values().filter(|a| auth.may_see(Some(&a.agent_id))).cloned().collect();
    agents.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.agent_id.cmp(&b.agent_id)));
    let views: Vec<Value> = agents.iter().map(agent_view).collect();
    Ok(Json(json!({ "ok": true, "agents": views, "total": views.len() })))
}

fn find(auth_ws: &crate::state::WorkspaceState, id: &str) -> ApiResult<Agent> {
    auth_ws.agent(id).ok_or_else(|| ApiError::not_found("agent", id))
}

pub async fn get(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    if !auth.may_see(Some(&id)) {
        return Err(ApiError::not_found("agent", &id));
    }
    let agent = find(&auth.workspace, &id)?;
    let creds: Vec<Value> = auth
        .workspace
        .credentials
        .read()
        .values()
        .filter(|c| c.agent_id == agent.agent_id)
        .map(|c| credential_view(c, state.now_ms()))
        .collect();
    Ok(Json(json!({ "ok": true, "agent": agent_view(&agent), "credentials": creds })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    permission_boundary: Option<PermissionBoundary>,
    #[serde(default)]
    require_signature: Option<bool>,
    /// An administrator may set the trust score directly (0-100).
    #[serde(default)]
    trust_score: Option<u8>,
}

pub async fn patch(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    let _guard = ws.agent_writes.lock().await;
    if let Some(d) = &body.description {
        check_text("description", d, 4096)?;
    }
    if let Some(c) = &body.capabilities {
        check_list("capabilities", c)?;
    }
    if let Some(s) = &body.scopes {
        check_list("scopes", s)?;
    }
    if let Some(b) = &body.permission_boundary {
        check_list("permission_boundary.allowed_action_types", &b.allowed_action_types)?;
        check_list("permission_boundary.denied_action_types", &b.denied_action_types)?;
    }
    if let Some(t) = body.trust_score
        && t > 100 {
            return Err(ApiError::invalid("trust_score", "must be between 0 and 100"));
        }
    let changed: Vec<&str> = [
        ("description", body.description.is_some()),
        ("capabilities", body.capabilities.is_some()),
        ("scopes", body.scopes.is_some()),
        ("permission_boundary", body.permission_boundary.is_some()),
        ("require_signature", body.require_signature.is_some()),
        ("trust_score", body.trust_score.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| *name)
    .collect();
    let agent = find(ws, &id)?;
    check_globs(body.scopes.as_deref().unwrap_or(&agent.scopes), body.permission_boundary.as_ref().or(agent.permission_boundary.as_ref()))?;
    // Only the fields the body names are written: an edit or a deactivation made
    // meanwhile through another node stays.
    let edit = praetor_store::AgentFields {
        workspace_id: ws.workspace_id.clone(),
        agent_id: id.clone(),
        description: body.description,
        capabilities: body.capabilities,
        scopes: body.scopes,
        permission_boundary: body.permission_boundary,
        require_signature: body.require_signature,
        updated_at: state.now_ms(),
        etag: new_id("etag"),
    };
    let change = AgentChange { mutations: vec![Mutation::UpdateAgentFields(edit)], trust_override: body.trust_score, settled: Settled::default() };
    commit_agent_change(&state, &auth, agent, change, "agent.updated", json!({ "changed": changed })).await
}

/// `POST /enforce/agents/{id}/deactivate`: the agent's later intercepts are refused,
/// and its escalations, pending or approved, are settled (expired): none can let
/// anything run any more.
///
/// Two commits, as a revocation makes (`api::credentials`): first the deactivation
/// alone, which no guard can refuse, so neither the agent's own decisions on other
/// nodes nor an approval meanwhile can make it fail; then the escalations, retried
/// while other nodes move them on. If they keep losing, the deactivation stands and the
/// answer says what is left (`cleanup_incomplete`, `cleanup_left`); deactivating again
/// finishes it, and the sweeper expires them meanwhile (an escalation of a deactivated
/// agent is void, whoever approves it).
pub async fn deactivate(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::AgentsWrite>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    let _guard = ws.agent_writes.lock().await;
    let mut agent = find(ws, &id)?;
    agent.is_active = false;
    let deactivate = Mutation::DeactivateAgent { workspace_id: ws.workspace_id.clone(), agent_id: id.clone(), at: state.now_ms(), etag: new_id("etag") };
    let change = AgentChange { mutations: vec![deactivate], trust_override: None, settled: Settled::default() };
    let Json(mut answer) = commit_agent_change(&state, &auth, agent, change, "agent.deactivated", json!({})).await?;
    let reason = format!("agent `{id}` deactivated");
    let left = crate::authority::settle_agent_retrying(&state, ws, &id, &reason, &auth.key.key_id).await;
    answer["cleanup_incomplete"] = json!(left.is_some());
    if let Some((why, escalations)) = left {
        tracing::warn!(workspace_id = %ws.workspace_id, agent_id = %id, error = %why, left = ?escalations,
            "deactivated, but settling its escalations is incomplete: deactivate again to finish it");
        answer["cleanup_left"] = json!({ "escalation": escalations });
        answer["cleanup_error"] = json!(why);
    }
    Ok(Json(answer))
}

/// What an edit or a deactivation writes: `mutations` change the agent's descriptive
/// fields; `settled` are the escalations it settled in memory.
struct AgentChange {
    mutations: Vec<Mutation>,
    trust_override: Option<u8>,
    settled: Settled,
}

/// Commit `change`, sealed, then take the agent back from the store: what it holds now
/// includes changes other nodes made meanwhile, and the live figures (trust, counts)
/// decisions wrote.
async fn commit_agent_change(
    state: &AppState,
    auth: &Authorized<perm::AgentsWrite>,
    agent: Agent,
    change: AgentChange,
    kind: &str,
    fields: Value,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    let now = state.now_ms();
    let AgentChange { mut mutations, trust_override, settled } = change;
    let mut fields = fields;
    if let Value::Object(m) = &mut fields {
        m.insert("agent_id".into(), json!(agent.agent_id));
        m.insert("is_active".into(), json!(agent.is_active));
        if let Some(t) = trust_override {
            m.insert("trust_score".into(), json!(t));
        }
    }
    if let Some(t) = trust_override {
        mutations.push(Mutation::SetTrust { workspace_id: ws.workspace_id.clone(), agent_id: agent.agent_id.clone(), trust_score: t });
    }
    let touched = settled.touched();
    mutations.extend(settled.records.into_iter().map(Mutation::PutObject));
    let mut seal = vec![event(&ws.workspace_id, kind, Some(&auth.key.key_id), now, fields)];
    seal.extend(settled.seals);
    if let Err(e) = state.commit(Txn { mutations, seal }).await {
        // The escalations were settled in memory for a commit that did not happen.
        crate::pipeline::resync_objects(state, ws, &touched).await?;
        return Err(e.into());
    }
    // The change is committed: a failed read-back must not report it as failed (a
    // retry would make it twice). The copy then reloads on its next decision, its
    // etag no longer being the store's.
    let stored = match crate::pipeline::resync(state, ws, std::slice::from_ref(&agent.agent_id), &[]).await {
        Ok(()) => ws.agent(&agent.agent_id).unwrap_or(agent),
        Err(e) => {
            tracing::warn!(workspace_id = %ws.workspace_id, agent_id = %agent.agent_id, error = %e.message, "agent changed; reading it back failed");
            agent
        }
    };
    Ok(Json(json!({ "ok": true, "agent": agent_view(&stored) })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryQuery {
    page: Option<u32>,
    per_page: Option<u32>,
    limit: Option<u32>,
}

pub async fn history(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    find(&auth.workspace, &id)?;
    if !auth.may_see(Some(&id)) {
        return Err(ApiError::not_found("agent", &id));
    }
    let field = if q.per_page.is_some() { "per_page" } else { "limit" };
    let per_page = crate::extract::page_size(field, q.per_page.or(q.limit), 50, 500)?;
    let filter = DecisionFilter {
        agent_id: Some(id.clone()),
        page: crate::extract::page_number(q.page)?,
        per_page,
        ..DecisionFilter::default()
    };
    let (rows, total) = state.store.list_decisions(&auth.workspace.workspace_id, &filter).await?;
    let items = crate::api::decisions::visible_views(&auth, &rows);
    state.metrics.count_unreadable(&items);
    Ok(Json(json!({ "ok": true, "agent_id": id, "history": items, "total": total })))
}
