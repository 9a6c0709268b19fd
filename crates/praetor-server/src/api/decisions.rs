//! Stored decisions: the list with filters, and one decision in full.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use praetor_store::{DecisionFilter, DecisionRow};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Authorized, perm};
use crate::clock::parse_time;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// A stored decision as the API shows it: its answer (joined with its sealed entry, see
/// `answer`), its content and its entry's sequence number.
pub fn decision_view(row: &DecisionRow) -> Value {
    let mut v = crate::answer::read(&row.body, row.sealed_leaf.as_deref());
    if let Value::Object(m) = &mut v {
        m.insert("action_content".into(), json!(row.content));
        m.insert("vault_entry_id".into(), json!(row.vault_seq));
    }
    v
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
        parse_time(&s).ok_or_else(|| ApiError::new(Code::InvalidQuery, format!("`{name}`: not an RFC 3339 time: `{s}`")))
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
    let per_page = q.per_page.unwrap_or(50);
    if per_page == 0 || per_page > 500 {
        return Err(ApiError::new(Code::InvalidQuery, "`per_page`: must be between 1 and 500"));
    }
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
        page: q.page.unwrap_or(1).max(1),
        per_page,
    };
    let (rows, total) = state.store.list_decisions(&auth.workspace.workspace_id, &filter).await?;
    let items: Vec<Value> = rows.iter().map(decision_view).collect();
    Ok(Json(json!({ "ok": true, "decisions": items, "total": total, "page": filter.page, "per_page": per_page })))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Read>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = state
        .store
        .get_decision(&auth.workspace.workspace_id, &id)
        .await?
        .filter(|row| auth.may_see(row.agent_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("decision", &id))?;
    Ok(Json(json!({ "ok": true, "decision": decision_view(&row) })))
}
