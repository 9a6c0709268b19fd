//! `POST /enforce/intercept`, `/enforce/batch` and `/enforce/agent-comm`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Authorized, perm};
use crate::config::limits;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{DecisionBody, RawBody, parse_json};
use crate::answer::Answer;
use crate::pipeline::{self, Caller, InterceptBody, SignedBody};
use crate::state::AppState;

pub async fn intercept(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Enforce>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: DecisionBody,
) -> ApiResult<Json<Answer>> {
    let intercepted = match &body {
        DecisionBody::Whole(raw) => pipeline::intercept(parse_json::<InterceptBody>(raw)?, "")?,
        DecisionBody::Unread(over) => {
            pipeline::intercept_unread(over.named("action_type"), over.named("agent_id"), over.named("session_id"), Map::new(), over.reason())
        }
    };
    let caller = Caller::new(&auth.key, &headers, method.as_str(), uri.path(), body.signed());
    decide_one(&state, &auth, &caller, intercepted, None).await
}

/// Decide and record one action; its answer.
async fn decide_one(
    state: &AppState,
    auth: &Authorized<perm::Enforce>,
    caller: &Caller<'_>,
    intercepted: pipeline::Intercepted,
    hand_off_target: Option<&str>,
) -> ApiResult<Json<Answer>> {
    let mut answers = pipeline::decide_and_record(state, &auth.workspace, caller, vec![intercepted], hand_off_target).await?;
    answers.pop().map(Json).ok_or_else(|| ApiError::new(Code::Internal, "the decision was not recorded"))
}

/// Its actions take unknown fields as `/enforce/intercept` does, but the batch itself
/// has none: a `session_id` beside `actions` would otherwise be dropped, and the actions
/// decided outside the session (a killed one among them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    actions: Vec<InterceptBody>,
}

/// Evaluate up to 500 actions; all of them are recorded in one commit.
pub async fn batch(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Enforce>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawBody(raw): RawBody,
) -> ApiResult<Json<BatchAnswer>> {
    let body: BatchBody = parse_json(&raw)?;
    if body.actions.len() > limits::BATCH_MAX {
        return Err(ApiError::new(
            Code::BatchTooLarge,
            format!("`actions` has {} items; the limit is {}", body.actions.len(), limits::BATCH_MAX),
        ));
    }
    let mut intercepted = Vec::with_capacity(body.actions.len());
    for (i, action) in body.actions.into_iter().enumerate() {
        intercepted.push(pipeline::intercept(action, &format!("actions[{i}]."))?);
    }
    let caller = Caller::new(&auth.key, &headers, method.as_str(), uri.path(), SignedBody::Raw(&raw));
    let results = pipeline::decide_and_record(&state, &auth.workspace, &caller, intercepted, None).await?;
    let count = |d: &str| results.iter().filter(|r| r.sealed.decision == d).count();
    Ok(Json(BatchAnswer {
        ok: true,
        total: results.len(),
        allowed: count("allow"),
        blocked: count("block") + count("terminate"),
        escalated: count("escalate"),
        results,
    }))
}

/// A batch's answer: each action's answer as `/enforce/intercept` gives it (fields in
/// the same order), and the counts of each decision.
#[derive(serde::Serialize)]
pub struct BatchAnswer {
    ok: bool,
    total: usize,
    allowed: usize,
    blocked: usize,
    escalated: usize,
    results: Vec<Answer>,
}

/// `POST /enforce/agent-comm`: one agent instructing another (wire §2.5), decided as an
/// `agent_instruction` action of the source agent. Unknown fields are refused: the SDK
/// sends only these, and a `content` or `grant_id` dropped unread would let a hand-off
/// pass policies that never saw it.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AgentCommBody {
    source_agent_id: Option<String>,
    target_agent_id: Option<String>,
    instruction: Option<String>,
    metadata: Option<Map<String, Value>>,
    chain_id: Option<String>,
    chain_step: Option<u64>,
    parent_decision_id: Option<String>,
    session_id: Option<String>,
}

/// A hand-off as the `agent_instruction` action of its source agent, and its target.
fn hand_off_action(body: AgentCommBody) -> ApiResult<(pipeline::Intercepted, String)> {
    let source = body.source_agent_id.ok_or_else(|| ApiError::invalid("source_agent_id", "is required"))?;
    let target = body.target_agent_id.ok_or_else(|| ApiError::invalid("target_agent_id", "is required"))?;
    let mut metadata = body.metadata.unwrap_or_default();
    metadata.insert("target_agent_id".into(), json!(target));
    let as_action = InterceptBody {
        action_type: Some("agent_instruction".into()),
        agent_id: Some(source),
        action_content: Some(body.instruction.unwrap_or_else(|| format!("hand-off to {target}"))),
        metadata: Some(metadata),
        session_id: body.session_id,
        chain_id: body.chain_id,
        chain_step: body.chain_step,
        parent_decision_id: body.parent_decision_id,
        ..InterceptBody::default()
    };
    let intercepted = pipeline::intercept(as_action, "")?;
    pipeline::check_id_pub("target_agent_id", &target)?;
    Ok((intercepted, target))
}

pub async fn agent_comm(
    State(state): State<Arc<AppState>>,
    auth: Authorized<perm::Enforce>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: DecisionBody,
) -> ApiResult<Json<Answer>> {
    let (intercepted, target) = match &body {
        DecisionBody::Whole(raw) => {
            let (intercepted, target) = hand_off_action(parse_json(raw)?)?;
            (intercepted, Some(target))
        }
        DecisionBody::Unread(over) => {
            let target = over.named("target_agent_id").filter(|t| pipeline::check_id_pub("target_agent_id", t).is_ok()).map(str::to_owned);
            let metadata = target.iter().map(|t| ("target_agent_id".to_owned(), json!(t))).collect();
            let unread = pipeline::intercept_unread(Some("agent_instruction"), over.named("source_agent_id"), over.named("session_id"), metadata, over.reason());
            (unread, target)
        }
    };
    let caller = Caller::new(&auth.key, &headers, method.as_str(), uri.path(), body.signed());
    decide_one(&state, &auth, &caller, intercepted, target.as_deref()).await
}
