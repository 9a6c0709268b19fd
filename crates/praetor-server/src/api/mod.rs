//! The HTTP API: one module per resource, mounted at `/api/v1` and `/v1`.

pub mod agents;
pub mod credentials;
pub mod decisions;
pub mod escalations;
pub mod grants;
pub mod intercept;
pub mod packs;
pub mod policies;
pub mod rules;
pub mod sessions;
pub mod settings;
pub mod system;
pub mod webhooks;
pub mod vault;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::error::{ApiError, Code};
use crate::state::AppState;

fn enforce_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/enforce/intercept", post(intercept::intercept))
        .route("/enforce/batch", post(intercept::batch))
        .route("/enforce/agent-comm", post(intercept::agent_comm))
        .route("/enforce/agents", get(agents::list).post(agents::register))
        .route("/enforce/agents/{id}", get(agents::get).patch(agents::patch))
        .route("/enforce/agents/{id}/deactivate", post(agents::deactivate))
        .route("/enforce/agents/{id}/history", get(agents::history))
        .route("/enforce/agents/{id}/revoke", post(credentials::revoke_agent))
        .route("/enforce/credentials/{id}/revoke", post(credentials::revoke_credential))
        .route("/enforce/credentials/{id}/rotate", post(credentials::rotate))
        .route("/enforce/agents/{id}/credentials", get(credentials::list_for_agent))
        .route("/enforce/agents/{id}/credentials/active", get(credentials::active_for_agent))
        .route("/enforce/agents/{id}/delegations", get(grants::agent_delegations))
        .route("/enforce/agents/{id}/temporal-windows", get(grants::agent_windows))
        .route("/enforce/escalations", get(escalations::list))
        .route("/enforce/escalations/{id}", get(escalations::get))
        .route("/enforce/escalations/{id}/status", get(escalations::status))
        .route("/enforce/escalations/{id}/resolve", post(escalations::resolve))
        .route("/enforce/delegate", post(grants::delegate))
        .route("/enforce/delegate/verify", post(grants::verify_grant))
        .route("/enforce/delegate/{id}/revoke", post(grants::revoke_grant))
        .route("/enforce/delegations", get(grants::list_delegations))
        .route("/enforce/temporal-windows", post(grants::open_window))
        .route("/enforce/temporal-windows/check", get(grants::check_window))
        .route("/enforce/temporal-windows/{id}/extend", post(grants::extend_window))
        .route("/enforce/temporal-windows/{id}/revoke", post(grants::revoke_window))
        .route("/enforce/breakglass", post(grants::trigger_breakglass))
        .route("/enforce/breakglass/stats", get(grants::breakglass_stats))
        .route("/enforce/breakglass/{id}/close", post(grants::close_breakglass))
        .route("/enforce/breakglass/{id}/review", post(grants::review_breakglass))
        .route("/enforce/roles", get(grants::list_roles).post(grants::create_role))
        .route("/enforce/roles/{id}/agents", get(grants::role_agents))
        .route("/enforce/roles/{id}/assign", post(grants::assign_role))
        .route("/enforce/roles/{id}/unassign", post(grants::unassign_role))
        .route("/enforce/sessions", get(sessions::list))
        .route("/enforce/sessions/start", post(sessions::start))
        .route("/enforce/sessions/{id}", get(sessions::get))
        .route("/enforce/sessions/{id}/heartbeat", post(sessions::heartbeat))
        .route("/enforce/sessions/{id}/kill", post(sessions::kill))
        .route("/enforce/sessions/{id}/end", post(sessions::end))
        .route("/enforce/policies", get(policies::list).post(policies::create))
        .route("/enforce/policies/{id}", get(policies::get).put(policies::replace).delete(policies::delete))
        .route("/enforce/policies/{id}/promote", post(policies::promote))
        .route("/enforce/shadow/report", get(policies::shadow_report))
        .route("/enforce/policy-packs", get(packs::list).post(packs::deploy))
        .route("/enforce/policy-packs/validate", post(packs::validate))
        .route("/enforce/policy-packs/{name}/versions", get(packs::versions))
        .route("/enforce/policy-packs/{name}/rollback", post(packs::rollback))
        .route("/enforce/decisions", get(decisions::list))
        .route("/enforce/decisions/{id}", get(decisions::get))
        .route("/enforce/decisions/{id}/receipt", get(vault::receipt))
        .route("/enforce/red-lines", get(system::red_lines))
        .route("/enforce/keys", get(system::list_keys).post(system::create_key))
        .route("/enforce/keys/{id}/revoke", post(system::revoke_key))
        .route("/enforce/vault/checkpoint", get(vault::checkpoint))
        .route("/enforce/vault/keys", get(vault::keys))
        .route("/enforce/vault/entries", get(vault::entries))
        .route("/enforce/vault/proof/inclusion", get(vault::inclusion))
        .route("/enforce/vault/proof/consistency", get(vault::consistency))
        .route("/enforce/vault/export", get(vault::export))
        .route("/enforce/settings", get(settings::get).put(settings::put))
        .route("/rules", get(rules::list).post(rules::create))
        .route("/rules/{id}", get(rules::get).put(rules::replace).delete(rules::delete))
        .route("/violations", get(rules::violations))
        .route("/violations/{id}", get(rules::violation))
        .route("/enforce/webhooks", get(webhooks::list_webhooks).post(webhooks::create_webhook))
        .route("/enforce/webhooks/{id}", axum::routing::delete(webhooks::delete_webhook))
        .route("/enforce/webhooks/{id}/test", post(webhooks::test_webhook))
        .route("/enforce/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/enforce/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/enforce/deliveries", get(webhooks::all_deliveries))
        .route("/status", get(system::status))
}

async fn not_found() -> ApiError {
    ApiError::new(Code::RouteNotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(Code::MethodNotAllowed, "this endpoint does not accept that method")
}

/// Count requests and error responses for `/metrics`.
async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    state.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let res = next.run(req).await;
    if res.status().is_client_error() || res.status().is_server_error() {
        state.metrics.errors.fetch_add(1, Ordering::Relaxed);
    }
    res
}

/// The whole application, apart from any listener (so tests can drive it directly).
pub fn router(state: Arc<AppState>) -> Router {
    let api = enforce_routes().method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/api/v1", api.clone())
        .nest("/v1", api)
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        // Inside `count`, so that the 500 a panic becomes is counted as an error.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// A handler that panicked (a bug) is answered in the one error shape, `500 internal`,
/// rather than by a dropped connection, and logged.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("a panic");
    tracing::error!(panic = what, "a request's handler panicked");
    axum::response::IntoResponse::into_response(ApiError::new(Code::Internal, "the request failed inside the server (a bug; the server log has it)"))
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    /// A handler that panics is answered `500 internal` in the one error shape, and the
    /// server goes on answering.
    #[tokio::test]
    async fn a_panicking_handler_is_answered_in_the_error_shape() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app = axum::Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(super::panicked));
        let get_ = |uri: &str| axum::http::Request::get(uri).body(axum::body::Body::empty()).expect("request");
        let res = app.clone().oneshot(get_("/boom")).await.expect("answered");
        assert_eq!(res.status(), 500);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!((&body["ok"], &body["error"]["code"]), (&serde_json::json!(false), &serde_json::json!("internal")), "{body}");
        assert_eq!(app.oneshot(get_("/fine")).await.expect("answered").status(), 200);
    }
}
