//! One error shape for every 4xx/5xx: `{"ok": false, "error": {"code", "message", "type"}}`.
//! SDKs switch on `code`, never on `message`. The table below is the only place codes
//! are defined.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

macro_rules! error_codes {
    ($($variant:ident => ($status:ident, $code:literal, $kind:literal)),* $(,)?) => {
        /// Every error code Praetor's API can return.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code { $($variant),* }

        impl Code {
            pub fn status(self) -> StatusCode {
                match self { $(Code::$variant => StatusCode::$status),* }
            }
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }
            pub fn kind(self) -> &'static str {
                match self { $(Code::$variant => $kind),* }
            }
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];
        }
    };
}

error_codes! {
    MalformedJson      => (BAD_REQUEST, "malformed_json", "invalid_request"),
    InvalidField       => (BAD_REQUEST, "invalid_field", "invalid_request"),
    MissingField       => (BAD_REQUEST, "missing_field", "invalid_request"),
    UnknownField       => (BAD_REQUEST, "unknown_field", "invalid_request"),
    InvalidPolicy      => (BAD_REQUEST, "invalid_policy", "invalid_request"),
    BatchTooLarge      => (BAD_REQUEST, "batch_too_large", "invalid_request"),
    InvalidQuery       => (BAD_REQUEST, "invalid_query", "invalid_request"),
    MissingApiKey      => (UNAUTHORIZED, "missing_api_key", "auth"),
    InvalidApiKey      => (UNAUTHORIZED, "invalid_api_key", "auth"),
    InsufficientScope  => (FORBIDDEN, "insufficient_scope", "auth"),
    // An agent that requires signatures did not sign a request that acts as it (outside
    // the decision path, where such a request is a `block` decision instead).
    SignatureRefused   => (FORBIDDEN, "signature_refused", "auth"),
    RouteNotFound      => (NOT_FOUND, "route_not_found", "not_found"),
    NotFound           => (NOT_FOUND, "not_found", "not_found"),
    MethodNotAllowed   => (METHOD_NOT_ALLOWED, "method_not_allowed", "invalid_request"),
    Conflict           => (CONFLICT, "conflict", "invalid_request"),
    PayloadTooLarge    => (PAYLOAD_TOO_LARGE, "payload_too_large", "invalid_request"),
    RequestTimeout     => (REQUEST_TIMEOUT, "request_timeout", "invalid_request"),
    StoreUnavailable   => (SERVICE_UNAVAILABLE, "store_unavailable", "internal"),
    // A stored record departs from what the vault sealed of it, or its entry is gone:
    // damage `praetor vault check` names. Its own code, so a client can tell it from a
    // passing failure and an operator can alert on it.
    RecordDamaged      => (INTERNAL_SERVER_ERROR, "record_damaged", "internal"),
    Internal           => (INTERNAL_SERVER_ERROR, "internal", "internal"),
}

/// The longest error message, in bytes, before its cut.
pub const MESSAGE_MAX: usize = 1024;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    /// An error whose message is cut to `MESSAGE_MAX` bytes: messages quote what the
    /// request sent (a value refused, an id not found), which may be megabytes.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        let mut message = message.into();
        if message.len() > MESSAGE_MAX {
            let mut end = MESSAGE_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            let cut = message.len() - end;
            message.truncate(end);
            message.push_str(&format!("… ({cut} bytes more)"));
        }
        ApiError { code, message }
    }
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(Code::InvalidField, format!("`{field}`: {message}"))
    }
    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(Code::NotFound, format!("{what} `{id}` not found"))
    }
}

impl From<praetor_store::StoreError> for ApiError {
    fn from(e: praetor_store::StoreError) -> Self {
        match e {
            praetor_store::StoreError::Conflict(what) => {
                ApiError::new(Code::Conflict, format!("another request wrote a record with the same key first ({what}); read it, or retry"))
            }
            praetor_store::StoreError::Stale(what) => ApiError::new(Code::Conflict, format!("{what} was changed by another request or node; retry")),
            praetor_store::StoreError::Replayed(what) => ApiError::new(Code::Conflict, format!("{what} was already used")),
            // The operator's remedy is in the message (run the newer version); the store
            // logged it once when it found out.
            praetor_store::StoreError::Superseded(why) => ApiError::new(Code::StoreUnavailable, why),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(Code::StoreUnavailable, "the store could not complete the request")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "ok": false,
            "error": { "code": self.code.as_str(), "message": self.message, "type": self.code.kind() }
        });
        (self.code.status(), axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
