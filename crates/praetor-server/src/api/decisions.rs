//! Stored decisions: the list with filters, and one decision in full.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use praetor_store::{DecisionFilter, DecisionRow};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// A stored decision as the API shows it: its answer (joined with its sealed entry, see
/// `answer`), its content and its entry's sequence number. One whose answer cannot be
/// joined with its entry is still shown: the part its row holds, the row's columns
/// (its id, agent, session, action, verdict and time) and, in `read_error`, why. One
/// whose row departs from its entry shows what the entry seals and no content.
pub fn decision_view(row: &DecisionRow) -> Value {
    view(row).0
}

/// [`decision_view`], and whether the row was compared with its sealed entry (the view
/// then names the agent the entry seals).
fn view(row: &DecisionRow) -> (Value, bool) {
    let (mut v, row_withheld, compared) = match crate::answer::read(row) {
        Ok(joined) => (joined.answer, joined.row_withheld, true),
        Err(why) => (row_part(row, why), false, false),
    };
    if let Some(why) = v.get("read_error") {
        tracing::warn!(decision_id = %row.decision_id, reason = %why, "a stored decision cannot be read whole; returning what can be read");
    }
    if let Value::Object(m) = &mut v {
        m.insert("action_content".into(), if row_withheld { Value::Null } else { json!(row.content) });
        m.insert("vault_entry_id".into(), json!(row.vault_seq));
    }
    (v, compared)
}

/// The views of `rows` that `auth` may see. A key bound to one agent reads rows by
/// their agent column, which someone with the database could change: it sees only
/// decisions whose sealed entry names its agent too (so none that cannot be compared
/// with an entry).
pub fn visible_views(auth: &Authorized<perm::Read>, rows: &[DecisionRow]) -> Vec<Value> {
    rows.iter()
        .filter(|row| auth.may_see(row.agent_id.as_deref()))
        .map(view)
        .filter(|(v, compared)| auth.bound_agent().is_none() || (*compared && auth.may_see(v.get("agent_id").and_then(Value::as_str))))
        .map(|(v, _)| v)
        .collect()
}

/// What a decision's row holds when its answer cannot be joined with its sealed entry.
fn row_part(row: &DecisionRow, why: String) -> Value {
    let mut part = match &row.body {
        Value::Object(rest) => rest.clone(),
        _ => serde_json::Map::new(),
    };
    let columns = [
        ("decision_id", json!(row.decision_id)),
        ("agent_id", json!(row.agent_id)),
        ("session_id", json!(row.session_id)),
        ("action_type", json!(row.action_type)),
        ("decision", json!(row.decision)),
        ("created_at", json!(crate::clock::iso(row.created_at))),
    ];
    for (field, value) in columns {
        part.entry(field).or_insert(value);
    }
    praetor_store::add_read_error(&mut part, why);
    Value::Object(part)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ListQuery {
    agent_id: Option<String>,
    decision: Option<String>,
    action_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

fn time_param(name: &str, v: Option<String>) -> ApiResult<Option<i64>> {
    v.map(|s| {
        crate::extract::query_time(name, &s)
    })
    .transpose()
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(d) = &q.decision
        && !["allow", "block", "escalate", "terminate"].contains(&d.as_str()) {
            return Err(ApiError::new(Code::InvalidQuery, format!("`decision`: `{d}` is not allow, block, escalate or terminate")));
        }
    let per_page = crate::extract::page_size("per_page", q.per_page, 50, 500)?;
    if let (Some(b), Some(asked)) = (auth.bound_agent(), q.agent_id.as_deref())
        && b != asked {
            return Err(ApiError::new(Code::InsufficientScope, "this key is bound to another agent"));
        }
    let filter = DecisionFilter {
        agent_id: auth.bound_agent().map(str::to_owned).or(q.agent_id),
        decision: q.decision,
        action_type: q.action_type,
        since: time_param("since", q.since)?,
        until: time_param("until", q.until)?,
        page: crate::extract::page_number(q.page)?,
        per_page,
    };
    let (rows, total) = state.store.list_decisions(&auth.workspace.workspace_id, &filter).await?;
    let items = visible_views(&auth, &rows);
    state.metrics.count_unreadable(&items);
    Ok(Json(json!({ "ok": true, "decisions": items, "total": total, "page": filter.page, "per_page": per_page })))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let row = state.store.get_decision(&auth.workspace.workspace_id, &id).await?;
    let view = visible_views(&auth, row.as_slice()).pop().ok_or_else(|| ApiError::not_found("decision", &id))?;
    state.metrics.count_unreadable(std::slice::from_ref(&view));
    Ok(Json(json!({ "ok": true, "decision": view })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(body: Value, sealed_leaf: Option<&[u8]>) -> DecisionRow {
        DecisionRow {
            decision_id: "dec_01".into(), workspace_id: "ws_1".into(), agent_id: Some("agt_1".into()), session_id: None,
            action_type: "email.send".into(), decision: "block".into(), created_at: 10, vault_seq: Some(7),
            content: Some("hi".into()), body, sealed_leaf: sealed_leaf.map(<[u8]>::to_vec), digests: None,
        }
    }

    #[test]
    fn a_decision_that_cannot_be_joined_is_shown_with_its_row_and_why() {
        let part = json!({ "reasoning": "r", "trust_score": 70 });
        let view = decision_view(&row(part.clone(), None));
        assert_eq!(view, json!({
            "reasoning": "r", "trust_score": 70, "decision_id": "dec_01", "agent_id": "agt_1", "session_id": null,
            "action_type": "email.send", "decision": "block", "created_at": "1970-01-01T00:00:00.010Z",
            "action_content": "hi", "vault_entry_id": 7,
            "read_error": "the decision has no sealed entry to join its answer with",
        }));
        // Its own part unreadable too: both reasons, the row's first.
        let view = decision_view(&row(json!({ "read_error": "the decision's stored answer cannot be read (x)" }), Some(b"[]")));
        assert_eq!(view["decision_id"], "dec_01");
        let why = view["read_error"].as_str().unwrap();
        assert!(why.starts_with("the decision's stored answer cannot be read (x); the decision's sealed entry cannot be read"), "{why}");
    }
}

