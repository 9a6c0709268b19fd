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

/// Where the string opened by the quote at `open` closes (the index of its closing
/// quote), skipping escaped characters; `None` if `bytes` ends first.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut at = open + 1;
    loop {
        // Most of a body's bytes are in strings (the action's content), so this jumps.
        let off = memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes[at + off] == b'\\' {
            at += off + 2;
        } else {
            return Some(at + off);
        }
    }
}

/// Where `bytes`, read as JSON, first opens an array or object more than `max` levels
/// deep (outside strings), if anywhere. Malformed JSON is the parser's to report.
fn nested_past(bytes: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        match b {
            b'"' => at = string_end(bytes, at)?,
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

/// The string members named `keys` of the top-level object that `prefix`, the start of
/// a JSON body cut off anywhere, holds whole. A body too large to parse is still
/// decided (and refused): these say whose action it was and what kind. Members after
/// the cut, and values that are not strings, are not found.
pub fn leading_strings(prefix: &[u8], keys: &[&str]) -> std::collections::HashMap<String, String> {
    let mut found = std::collections::HashMap::new();
    let text = |from: usize, to: usize| serde_json::from_slice::<String>(&prefix[from..=to]).ok();
    let mut at = match prefix.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(i) if prefix[i] == b'{' => i + 1,
        _ => return found,
    };
    let (mut depth, mut key, mut expect_key) = (1usize, None::<String>, true);
    while let Some(&b) = prefix.get(at) {
        match b {
            b'"' => {
                let Some(end) = string_end(prefix, at) else { break };
                if depth == 1 && expect_key {
                    key = text(at, end);
                } else if depth == 1
                    && let (Some(k), Some(v)) = (key.take(), text(at, end))
                    && keys.contains(&k.as_str())
                {
                    found.entry(k).or_insert(v);
                }
                at = end;
            }
            b':' if depth == 1 => expect_key = false,
            b',' if depth == 1 => (expect_key, key) = (true, None),
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        at += 1;
    }
    found
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

/// The body of a decision request (`/enforce/intercept`, `/enforce/agent-comm`).
/// Within the body limit it is the raw body, as `RawBody`. Past it, the rest is still
/// read (up to `limits::UNREAD_BODY_MAX`), counted and hashed but not kept: the action
/// is then decided as refused unread, an answer rather than a `413` that a fail-open
/// client would run the action on (wire rule 1).
pub enum DecisionBody {
    Whole(Bytes),
    OverLimit(OverLimit),
}

/// What was read of a body past the limit.
pub struct OverLimit {
    /// The first `limit` bytes.
    pub prefix: Bytes,
    pub limit: usize,
    /// The body's length and SHA-256 (hex), all of it.
    pub length: u64,
    pub sha256: String,
}

impl OverLimit {
    /// Why the action was not evaluated, with what identifies the body that was sent.
    pub fn reason(&self) -> String {
        format!("the request body is {} bytes long (SHA-256 {}); the limit is {}", self.length, self.sha256, self.limit)
    }
}

impl FromRequest<std::sync::Arc<crate::state::AppState>> for DecisionBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &std::sync::Arc<crate::state::AppState>) -> Result<Self, Self::Rejection> {
        let unread_max = crate::config::limits::UNREAD_BODY_MAX;
        // A declared length past what is read at all is refused before reading any.
        let declared = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > unread_max) {
            return Err(ApiError::new(Code::PayloadTooLarge, format!("request body is larger than {unread_max} bytes")));
        }
        read_decision_body(req.into_body(), state.config.max_body_bytes, unread_max).await
    }
}

async fn read_decision_body(mut body: axum::body::Body, limit: usize, unread_max: u64) -> Result<DecisionBody, ApiError> {
    use http_body_util::BodyExt;
    use sha2::Digest;
    let too_large = || ApiError::new(Code::PayloadTooLarge, format!("request body is larger than {unread_max} bytes"));
    let mut kept: Vec<Bytes> = Vec::new();
    let (mut length, mut over) = (0u64, None::<sha2::Sha256>);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::new(Code::MalformedJson, format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        length += data.len() as u64;
        if length > unread_max {
            return Err(too_large());
        }
        match &mut over {
            Some(hash) => hash.update(&data),
            None if length > limit as u64 => {
                let mut hash = sha2::Sha256::new();
                kept.iter().for_each(|b| hash.update(b));
                hash.update(&data);
                kept.push(data);
                over = Some(hash);
            }
            None => kept.push(data),
        }
    }
    let whole = match kept.len() {
        1 => kept.pop().unwrap_or_default(),
        _ => Bytes::from(kept.concat()),
    };
    Ok(match over {
        None => DecisionBody::Whole(whole),
        Some(hash) => DecisionBody::OverLimit(OverLimit {
            prefix: whole.slice(..limit),
            limit,
            length,
            sha256: hex::encode(hash.finalize()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::{DecisionBody, leading_strings, nested_past, read_decision_body};
    use axum::body::{Body, Bytes};

    #[test]
    fn leading_strings_are_the_whole_top_level_string_members() {
        let keys = ["action_type", "agent_id", "session_id"];
        let got = |body: &str| {
            let mut v: Vec<_> = leading_strings(body.as_bytes(), &keys).into_iter().collect();
            v.sort();
            v
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        // Nested members of the same name, and non-string values, are not taken.
        let body = r#" {"metadata": {"agent_id": "inner", "x": ["action_type", "y"]}, "chain_step": 3,
                        "action_type" : "pay\u0021", "agent_id":"agt_1", "action_content": "aaaaaaaa"#;
        assert_eq!(got(body), vec![pair("action_type", "pay!"), pair("agent_id", "agt_1")]);
        // A member cut off by the end of the prefix is not taken, nor anything after it.
        assert_eq!(got(r#"{"action_type": "pay", "agent_id": "agt_"#), vec![pair("action_type", "pay")]);
        // Escaped quotes inside strings do not end them; a key is only a key before `:`.
        assert_eq!(got(r#"{"x": "\"agent_id\": \"no\"", "session_id": "s1"}"#), vec![pair("session_id", "s1")]);
        assert_eq!(got(r#"{"action_type": 5, "x": "action_type"}"#), vec![]);
        // The first of a repeated member, and only inside a top-level object.
        assert_eq!(got(r#"{"agent_id": "a", "agent_id": "b"}"#), vec![pair("agent_id", "a")]);
        assert_eq!(got(r#"["action_type", "pay"]"#), vec![]);
        assert_eq!(got(r#"{"action_type": "a"} {"agent_id": "b"}"#), vec![pair("action_type", "a")]);
    }

    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let frames = chunks.iter().map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c)));
        Body::from_stream(futures_util::stream::iter(frames.collect::<Vec<_>>()))
    }

    #[tokio::test]
    async fn a_decision_body_past_the_limit_is_read_to_the_end_and_hashed_not_kept() {
        let whole = |b: DecisionBody| match b {
            DecisionBody::Whole(bytes) => bytes,
            DecisionBody::OverLimit(_) => panic!("expected the whole body"),
        };
        // Within the limit, however it is framed, the body is the body.
        assert_eq!(whole(read_decision_body(chunked(&[b"{\"a\"", b":1}"]), 7, 100).await.unwrap()), Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(whole(read_decision_body(Body::from("1234567"), 7, 100).await.unwrap()), Bytes::from_static(b"1234567"));
        // One byte past it, in a later frame: the first `limit` bytes, and the length
        // and hash of all of it.
        let DecisionBody::OverLimit(over) = read_decision_body(chunked(&[b"1234", b"5678", b"90"]), 7, 100).await.unwrap() else {
            panic!("expected a body over the limit")
        };
        assert_eq!((over.prefix.as_ref(), over.limit, over.length), (b"1234567".as_slice(), 7, 10));
        assert_eq!(over.sha256, praetor_core::sha256_hex(b"1234567890"));
        assert!(over.reason().contains("10 bytes long") && over.reason().contains(&over.sha256), "{}", over.reason());
        // Past what is read at all: an error (413), however it is framed.
        for body in [chunked(&[b"1234", b"5678", b"90", b"1"]), Body::from("12345678901")] {
            let err = read_decision_body(body, 7, 10).await.err().expect("over the reading cap");
            assert_eq!(err.code, crate::error::Code::PayloadTooLarge);
        }
    }

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
