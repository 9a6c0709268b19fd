//! Webhooks: register a URL for event globs; each delivery is signed, retried with
//! backoff and kept until delivered or given up.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_store::{Mutation, Txn};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::authority::{create, touched, update};
use crate::delivery::{Webhook, check_target, delivery_view};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::secrets::{new_id, random_bytes};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

pub async fn create_webhook(State(state): State<Arc<AppState>>, auth: Authorized<perm::PoliciesWrite>, ApiJson(b): ApiJson<CreateBody>) -> ApiResult<Json<Value>> {
    if b.url.len() > 2048 {
        return Err(ApiError::invalid("url", "is longer than 2048 bytes"));
    }
    if b.description.as_ref().is_some_and(|d| d.len() > 4096) {
        return Err(ApiError::invalid("description", "is longer than 4096 bytes"));
    }
    check_target(&b.url, state.config.allow_private_targets).await.map_err(|e| ApiError::invalid("url", e))?;
    if b.events.is_empty() || b.events.len() > 64 {
        return Err(ApiError::invalid("events", "names 1-64 event globs, e.g. `decision.block`, `session.*`"));
    }
    for (i, e) in b.events.iter().enumerate() {
        crate::delivery::event_glob(e).map_err(|m| ApiError::invalid(&format!("events[{i}]"), m))?;
    }
    let secret = hex::encode(random_bytes::<32>());
    let w = Webhook {
        webhook_id: new_id("wh"),
        url: b.url,
        events: b.events,
        description: b.description,
        secret: secret.clone(),
        deleted: false,
        created_at: state.now_ms(),
        version: 0,
    };
    // Sealed with its URL cut to the host (the vault is read with any key) and the
    // whole URL's hash, which names it for an auditor who holds it.
    let mut sealed = w.view(false);
    sealed["url_sha256"] = json!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(w.url.as_bytes())));
    let view = w.view(true);
    create(&state, &auth.workspace, w, "webhook.created", &auth.key.key_id, json!({ "webhook": sealed })).await?;
    Ok(Json(json!({ "ok": true, "webhook": view, "secret": secret, "notice": "the signing secret is shown once" })))
}

pub async fn list_webhooks(auth: Authorized<perm::Read>) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let live = auth.workspace.live.lock();
    let mut hooks: Vec<&Webhook> = live.authority.webhooks.values().filter(|w| !w.deleted).collect();
    hooks.sort_by_key(|w| w.created_at);
    // The whole URL only to a key that may change webhooks.
    let full_url = auth.key.scopes.iter().any(|s| <perm::PoliciesWrite as crate::auth::Permission>::GRANTED_TO.contains(s));
    Ok(Json(json!({ "ok": true, "webhooks": hooks.into_iter().map(|w| w.view(full_url)).collect::<Vec<_>>() })))
}

fn live_hook<'a>(a: &'a mut crate::authority::AuthorityState, id: &str) -> ApiResult<&'a mut Webhook> {
    a.webhooks.get_mut(id).filter(|w| !w.deleted).ok_or_else(|| ApiError::not_found("webhook", id))
}

pub async fn delete_webhook(State(state): State<Arc<AppState>>, auth: Authorized<perm::PoliciesWrite>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let ws_id = auth.workspace.workspace_id.clone();
    update(&state, &auth.workspace, "webhook.deleted", &auth.key.key_id, |a, now| {
        let w = live_hook(a, &id)?;
        w.deleted = true;
        Ok((vec![touched(w, &ws_id, now)], json!({ "webhook_id": id }), ()))
    })
    .await?;
    Ok(Json(json!({ "ok": true, "deleted": true })))
}

/// The new secret is committed first and only then used, so a failed rotation leaves
/// the old secret in force rather than an unknown one.
pub async fn rotate_secret(State(state): State<Arc<AppState>>, auth: Authorized<perm::PoliciesWrite>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace;
    let secret = hex::encode(random_bytes::<32>());
    let now = state.now_ms();
    let mut next = {
        let mut live = ws.live.lock();
        live_hook(&mut live.authority, &id)?.clone()
    };
    next.secret = secret.clone();
    let record = touched(&mut next, &ws.workspace_id, now);
    let txn = Txn {
        mutations: vec![Mutation::PutObject(record)],
        seal: vec![crate::events::event(&ws.workspace_id, "webhook.secret_rotated", Some(&auth.key.key_id), now, json!({ "webhook_id": id }))],
    };
    state.commit(txn).await?;
    if let Some(w) = ws.live.lock().authority.webhooks.get_mut(&id)
        && w.version < next.version {
            *w = next;
        }
    Ok(Json(json!({ "ok": true, "secret": secret, "notice": "the new signing secret is shown once; the old one stops working now" })))
}

/// `POST /enforce/webhooks/{id}/test`: enqueue a `webhook.test` delivery.
pub async fn test_webhook(State(state): State<Arc<AppState>>, auth: Authorized<perm::PoliciesWrite>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    let (url, ws_id) = {
        let mut live = auth.workspace.live.lock();
        let w = live_hook(&mut live.authority, &id)?;
        (w.url.clone(), auth.workspace.workspace_id.clone())
    };
    let now = state.now_ms();
    let payload = json!({ "event": "webhook.test", "workspace_id": ws_id, "occurred_at": crate::clock::iso(now), "data": { "webhook_id": id } });
    let d = crate::delivery::delivery(&ws_id, "webhook", &url, Some(&id), "webhook.test", payload, now);
    let delivery_id = d.delivery_id.clone();
    state.store.commit(Txn { mutations: vec![Mutation::PutDelivery(d)], seal: vec![] }).await?;
    Ok(Json(json!({ "ok": true, "delivery_id": delivery_id })))
}

pub async fn deliveries(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    if !auth.workspace.live.lock().authority.webhooks.contains_key(&id) {
        return Err(ApiError::not_found("webhook", &id));
    }
    let rows = state.store.list_deliveries(&auth.workspace.workspace_id, Some(&id), 200).await?;
    Ok(Json(json!({ "ok": true, "deliveries": rows.iter().map(delivery_view).collect::<Vec<_>>() })))
}

/// Every delivery of the workspace (webhooks and alerts).
pub async fn all_deliveries(State(state): State<Arc<AppState>>, auth: Authorized<perm::Read>) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let rows = state.store.list_deliveries(&auth.workspace.workspace_id, None, 200).await?;
    Ok(Json(json!({ "ok": true, "deliveries": rows.iter().map(delivery_view).collect::<Vec<_>>() })))
}
