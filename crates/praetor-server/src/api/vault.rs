//! The vault's read API: checkpoints, keys, entries, proofs, receipts and export
//! bundles. There is no write or delete endpoint.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use praetor_store::{CheckpointRow, VaultEntryRow};
use praetor_vault::verify::{BUNDLE_FORMAT, Bundle, ConsistencyProof, Entry, RECEIPT_FORMAT, Receipt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::clock::iso;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use crate::vault::{checkpoint_at, fresh_checkpoint, origin};

/// Largest number of entries one `entries` page or one export bundle carries.
const ENTRIES_PAGE_MAX: u64 = 1_000;
const EXPORT_MAX: u64 = 200_000;

fn hexes(hashes: &[[u8; 32]]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn checkpoint_json(cp: &CheckpointRow, ws: &str) -> Value {
    json!({
        "origin": origin(ws),
        "size": cp.size,
        "root_hash": hex::encode(cp.root),
        "root_hash_base64": base64::engine::general_purpose::STANDARD.encode(cp.root),
        "note": cp.note,
        "created_at": iso(cp.created_at),
    })
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointQuery {
    format: Option<String>,
}

/// `GET /enforce/vault/checkpoint[?format=text]`: the latest signed checkpoint as JSON,
/// or as the C2SP signed-note text.
pub async fn checkpoint(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<CheckpointQuery>,
) -> ApiResult<Response> {
    let ws = &auth.workspace.workspace_id;
    let cp = fresh_checkpoint(&state, ws).await?;
    match q.format.as_deref() {
        Some("text") => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], cp.note).into_response()),
        None | Some("json") => Ok(Json(json!({ "ok": true, "checkpoint": checkpoint_json(&cp, ws) })).into_response()),
        Some(other) => Err(ApiError::new(Code::InvalidQuery, format!("`format`: `{other}` is not json or text"))),
    }
}

pub async fn keys(State(state): State<Arc<AppState>>, _auth: Authorized<perm::Read>) -> Json<Value> {
    Json(json!({ "ok": true, "keys": key_views(&state) }))
}

/// Every public key checkpoints verify with: its name in signature lines, its C2SP key
/// ID (a rotated key keeps its name), and whether it still signs.
fn key_views(state: &AppState) -> Vec<Value> {
    state
        .vault
        .public_keys()
        .into_iter()
        .map(|(k, status)| {
            json!({ "name": k.name, "key_id": k.key_id, "algorithm": k.algorithm, "vkey": k.vkey, "public_key_pem": k.public_key_pem, "status": status })
        })
        .collect()
}

fn entry_json(e: &VaultEntryRow) -> Value {
    json!({
        "seq": e.seq,
        "leaf": String::from_utf8_lossy(&e.leaf),
        "entry": serde_json::from_slice::<Value>(&e.leaf).unwrap_or(Value::Null),
        "leaf_hash": hex::encode(e.leaf_hash),
        "chain_hash": hex::encode(e.chain_hash),
    })
}

fn export_entry(e: &VaultEntryRow) -> Entry {
    Entry {
        seq: e.seq,
        leaf: String::from_utf8_lossy(&e.leaf).into_owned(),
        leaf_hash: hex::encode(e.leaf_hash),
        chain_hash: hex::encode(e.chain_hash),
        prev_chain_hash: None,
        hmac: None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RangeQuery {
    start: Option<u64>,
    end: Option<u64>,
}

/// `GET /enforce/vault/entries?start=&end=`: entries `start <= seq < end`, at most 1,000.
pub async fn entries(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let ws = &auth.workspace.workspace_id;
    let head = state.store.log_head(ws).await?;
    let start = q.start.unwrap_or(0);
    let end = q.end.unwrap_or(head.size).min(head.size).min(start.saturating_add(ENTRIES_PAGE_MAX));
    if start > end {
        return Err(ApiError::new(Code::InvalidQuery, format!("`start` ({start}) is past `end` ({end})")));
    }
    let rows = state.store.vault_entries(ws, start, end).await?;
    Ok(Json(json!({ "ok": true, "size": head.size, "start": start, "end": end, "entries": rows.iter().map(entry_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct InclusionQuery {
    index: Option<u64>,
    size: Option<u64>,
}

pub async fn inclusion(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let ws = &auth.workspace.workspace_id;
    let index = q.index.ok_or_else(|| ApiError::new(Code::InvalidQuery, "`index` is required"))?;
    let head = state.store.log_head(ws).await?;
    let size = q.size.unwrap_or(head.size);
    if index >= size || size > head.size {
        return Err(ApiError::new(Code::InvalidQuery, format!("need `index` < `size` <= {} (the log's size); got {index} and {size}", head.size)));
    }
    let proof = state.store.inclusion_proof(ws, index, size).await?;
    let root = state.store.tree_root(ws, size).await?;
    Ok(Json(json!({ "ok": true, "index": index, "size": size, "root_hash": hex::encode(root), "proof": hexes(&proof) })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistencyQuery {
    first: Option<u64>,
    second: Option<u64>,
}

pub async fn consistency(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Json<Value>> {
    auth.whole_workspace()?;
    let ws = &auth.workspace.workspace_id;
    let first = q.first.ok_or_else(|| ApiError::new(Code::InvalidQuery, "`first` is required"))?;
    let head = state.store.log_head(ws).await?;
    let second = q.second.unwrap_or(head.size);
    if first == 0 || first > second || second > head.size {
        return Err(ApiError::new(Code::InvalidQuery, format!("need 0 < `first` <= `second` <= {} (the log's size); got {first} and {second}", head.size)));
    }
    let proof = state.store.consistency_proof(ws, first, second).await?;
    let (r1, r2) = (state.store.tree_root(ws, first).await?, state.store.tree_root(ws, second).await?);
    Ok(Json(json!({ "ok": true, "first": first, "second": second, "first_root": hex::encode(r1), "second_root": hex::encode(r2), "proof": hexes(&proof) })))
}

/// `GET /enforce/decisions/{id}/receipt`: the decision's vault entry, its inclusion
/// proof and a signed checkpoint that covers it — all an auditor needs offline.
pub async fn receipt(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let ws = &auth.workspace.workspace_id;
    let row = state
        .store
        .get_decision(ws, &id)
        .await?
        .filter(|row| auth.may_see(row.agent_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("decision", &id))?;
    // A receipt proves the entry its row points to: that must be this decision's. Every
    // decision is sealed before it is answered, so a row without an entry is damaged too.
    let damaged = |why: String| {
        tracing::warn!(decision_id = %id, seq = ?row.vault_seq, reason = %why, "a decision's receipt was refused: its row or entry is damaged");
        state.metrics.records_unreadable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::new(Code::RecordDamaged, format!("decision `{id}`: {why}; `praetor vault check` reports such damage"))
    };
    let seq = row.vault_seq.ok_or_else(|| damaged("its row names no vault entry".to_owned()))?;
    let sealed: serde_json::Map<String, Value> = row
        .sealed_leaf
        .as_deref()
        .and_then(|leaf| serde_json::from_slice(leaf).ok())
        .ok_or_else(|| damaged(format!("vault entry {seq} is missing or unreadable")))?;
    // A key bound to one agent sees a decision only as its entry seals it (as
    // `GET /enforce/decisions/{id}` does): a row that departs from its entry is, for
    // that key, not found (and still logged and counted as damaged).
    if let Some(why) = row.departs_from(&sealed) {
        let error = damaged(format!("its row does not match vault entry {seq}: {why}"));
        return Err(if auth.bound_agent().is_some() { ApiError::not_found("decision", &id) } else { error });
    }
    if !auth.may_see(sealed.get("agent_id").and_then(Value::as_str)) {
        return Err(ApiError::not_found("decision", &id));
    }
    let cp = match state.store.checkpoint_covering(ws, seq + 1).await? {
        Some(cp) => cp,
        None => fresh_checkpoint(&state, ws).await?,
    };
    let entry = state
        .store
        .vault_entries(ws, seq, seq + 1)
        .await?
        .pop()
        .ok_or_else(|| damaged(format!("vault entry {seq} is missing")))?;
    let proof = state.store.inclusion_proof(ws, seq, cp.size).await?;
    let receipt = Receipt {
        format: RECEIPT_FORMAT.into(),
        origin: origin(ws),
        entry: export_entry(&entry),
        inclusion_proof: hexes(&proof),
        checkpoint: cp.note.clone(),
    };
    let keys = key_views(&state);
    Ok(Json(json!({
        "ok": true,
        "decision_id": id,
        "decision": sealed.get("decision"),
        "vault_entry_id": seq,
        "receipt": receipt,
        "keys": keys,
    })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ExportQuery {
    from: Option<u64>,
    to: Option<u64>,
}

/// `GET /enforce/vault/export?from=&to=`: entries `from <= seq < to` with every stored
/// checkpoint in that range, a signed checkpoint at `to`, consistency proofs between
/// consecutive checkpoints, and the public keys.
pub async fn export(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Json<Bundle>> {
    auth.whole_workspace()?;
    let ws = &auth.workspace.workspace_id;
    let head = fresh_checkpoint(&state, ws).await?;
    let from = q.from.unwrap_or(0);
    let to = q.to.unwrap_or(head.size).min(head.size);
    if from > to {
        return Err(ApiError::new(Code::InvalidQuery, format!("`from` ({from}) is past `to` ({to})")));
    }
    if to - from > EXPORT_MAX {
        return Err(ApiError::new(Code::InvalidQuery, format!("at most {EXPORT_MAX} entries per export; page with `from` and `to`")));
    }
    let last = checkpoint_at(&state, ws, to).await?;
    let mut cps = state.store.checkpoints_between(ws, from.max(1), to).await?;
    if cps.last().map(|c| c.size) != Some(last.size) {
        cps.push(last);
    }
    let mut proofs = Vec::new();
    for pair in cps.windows(2) {
        let (a, b) = (pair[0].size, pair[1].size);
        if a != 0 && a != b {
            let proof = state.store.consistency_proof(ws, a, b).await?;
            proofs.push(ConsistencyProof { size1: a, size2: b, proof: hexes(&proof) });
        }
    }
    let rows = state.store.vault_entries(ws, from, to).await?;
    let mut entries: Vec<Entry> = rows.iter().map(export_entry).collect();
    if from > 0 {
        let prev = state.store.vault_entries(ws, from - 1, from).await?;
        if let (Some(first), Some(p)) = (entries.first_mut(), prev.first()) {
            first.prev_chain_hash = Some(hex::encode(p.chain_hash));
        }
    }
    let prefix = if from > 0 { state.store.prefix_hashes(ws, from).await? } else { Vec::new() };
    let keys = state.vault.public_keys().into_iter().map(|(k, _)| k).collect();
    Ok(Json(Bundle {
        format: BUNDLE_FORMAT.into(),
        origin: origin(ws),
        keys,
        start: from,
        prefix_hashes: hexes(&prefix),
        entries,
        checkpoints: cps.into_iter().map(|c| c.note).collect(),
        consistency_proofs: proofs,
    }))
}
