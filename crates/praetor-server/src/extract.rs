//! Our own JSON extractor, so a malformed body gets our error shape and a message that
//! names the bad field (`metadata.amount: invalid type …`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Code::PayloadTooLarge, "request body is larger than the limit")
            } else {
                ApiError::new(Code::MalformedJson, format!("cannot read the request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parse a JSON body into `T`, classifying the failure and naming the field. Every
/// body of this API is an object: serde would also read a struct from an array of its
/// fields in order (`["delete_user"]` as an intercept), which no client means.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::new(Code::InvalidField, "the body must be a JSON object, not an array"));
    }
    if let Some(at) = nested_past(bytes, BODY_DEPTH_MAX) {
        return Err(ApiError::new(Code::InvalidField, format!("the body nests arrays and objects more than {BODY_DEPTH_MAX} levels deep (at byte {at})")));
    }
    // Nearly every body parses: do that without tracking the path, which allocates a
    // string per object key, and parse again with it only to say what is wrong.
    // (`from_slice` also refuses anything after the value, as `de.end()` does below.)
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let msg = strip_position(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io => {
                ApiError::new(Code::MalformedJson, format!("body is not valid JSON: {}", inner))
            }
            serde_json::error::Category::Data => {
                if msg.starts_with("unknown field") {
                    ApiError::new(Code::UnknownField, field_message(&path, &msg))
                } else if msg.starts_with("missing field") {
                    ApiError::new(Code::MissingField, field_message(&path, &msg))
                } else {
                    ApiError::new(Code::InvalidField, field_message(&path, &msg))
                }
            }
        }
    })?;
    // One JSON value and nothing after it: `{...} trailing` or `{...}{...}` is malformed,
    // not "the first object".
    de.end().map_err(|e| ApiError::new(Code::MalformedJson, format!("body is not valid JSON: {e}")))?;
    Ok(value)
}

/// The deepest a body may nest arrays and objects. What a request sends is sealed in the
/// vault a level or two deeper than it came, and a leaf may nest at most
/// `praetor_vault::canonical::MAX_DEPTH` levels, so that every verifier can read it
/// again; no client needs more than this.
pub const BODY_DEPTH_MAX: usize = 64;

/// Where `bytes`, read as JSON, first opens an array or object more than `max` levels
/// deep (outside strings), if anywhere. Malformed JSON is the parser's to report.
fn nested_past(bytes: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        match b {
            // A string: skip to its closing quote, past escaped characters. Most of a
            // body's bytes are in strings (the action's content), so this jumps.
            b'"' => loop {
                at += 1;
                match memchr::memchr2(b'"', b'\\', bytes.get(at..).unwrap_or_default()) {
                    Some(off) if bytes[at + off] == b'\\' => at += off + 1,
                    Some(off) => {
                        at += off;
                        break;
                    }
                    None => return None,
                }
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some(at);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    None
}

fn field_message(path: &str, msg: &str) -> String {
    if path.is_empty() || path == "." { msg.to_owned() } else { format!("`{path}`: {msg}") }
}

/// serde_json appends " at line 1 column 20"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Query-string extractor with our error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded_deserializer(query);
        de.map(ApiQuery)
    }
}

fn serde_urlencoded_deserializer<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{query}").parse().map_err(|_| {
        ApiError::new(Code::InvalidQuery, "the query string is not valid")
    })?)
    .map(|q| q.0)
    .map_err(|e| ApiError::new(Code::InvalidQuery, strip_position(&e.body_text())))
}

/// Path parameters, with a rejection (a segment that is not UTF-8) in our error shape
/// rather than axum's plain text.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Path parameters are ids and names: bounded like them, and never echoed when
        // they are not (an error or a `not_found` repeats the id it was given).
        if let Ok(params) = axum::extract::RawPathParams::from_request_parts(parts, state).await
            && let Some((name, value)) = params.iter().find(|(_, v)| v.len() > crate::config::limits::ID_MAX)
        {
            return Err(ApiError::new(
                Code::InvalidField,
                format!("`{name}` in the path is {} bytes long; the limit is {}", value.len(), crate::config::limits::ID_MAX),
            ));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::new(Code::InvalidField, format!("the path: {}", e.body_text())))
    }
}

/// The raw body, for handlers that must hash exactly what was sent (signed requests).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Code::PayloadTooLarge, "request body is larger than the limit")
            } else {
                ApiError::new(Code::MalformedJson, format!("cannot read the request body: {rejection}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::nested_past;

    fn nest(levels: usize, inner: &str) -> String {
        format!("{}{inner}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert_eq!(nested_past(nest(3, "1").as_bytes(), 3), None);
        assert_eq!(nested_past(nest(4, "1").as_bytes(), 3), Some(3), "the fourth opening, at byte 3");
        // Brackets inside strings, with escaped quotes and backslashes around them.
        let quoted = r#"{"a": "[[[[{{{{", "b": "\"[[[[", "c": "\\", "d": [[1]]}"#;
        assert_eq!(nested_past(quoted.as_bytes(), 3), None);
        assert_eq!(nested_past(quoted.as_bytes(), 2), Some(quoted.rfind("[[").unwrap() + 1));
        let after_escaped_backslash = r#"{"x": "\\\\", "y": [[[1]]]}"#;
        assert_eq!(nested_past(after_escaped_backslash.as_bytes(), 3), Some(after_escaped_backslash.find("[[[").unwrap() + 2));
        // Siblings do not add up; an unterminated string ends the scan.
        assert_eq!(nested_past(b"[[1],[2],[3]]", 2), None);
        assert_eq!(nested_past(br#"{"a": "[[[[[[ "#, 1), None);
        assert_eq!(nested_past(br#"{"a": "\"#, 1), None);
    }
}
