//! Our own JSON extractor, so a malformed body gets our error shape and a message that
//! names the bad field (`metadata.amount: invalid type …`).

use axum::body::Bytes;
use bytes::BytesMut;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state, std::time::Duration::from_secs(crate::config::limits::BODY_SECONDS)).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The whole body, within `max_body_bytes` and within `time` of when reading starts.
async fn read_body<S: Send + Sync>(req: Request, state: &S, time: std::time::Duration) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(time, Bytes::from_request(req, state)).await {
        Err(_) => Err(ApiError::new(Code::RequestTimeout, format!("the request body did not arrive within {} s", time.as_secs_f64()))),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::new(Code::PayloadTooLarge, "request body is larger than the limit"))
        }
        Ok(Err(rejection)) => Err(ApiError::new(Code::MalformedJson, format!("cannot read the request body: {rejection}"))),
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
    // Numbers a float would round are read as the strings they are written as. The body
    // as sent must be JSON first: quoting a number where a key belongs would mend it.
    // (`IgnoredAny` checks the syntax only: it reads no number's value.)
    let rewritten = crate::numbers::as_strings(bytes);
    if rewritten.is_some() && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return parse_exact(bytes);
    }
    let bytes = rewritten.as_ref().map_or(bytes, |(body, _)| body.as_slice());
    parse_exact(bytes).map_err(|mut e| {
        if let Some((_, literals)) = &rewritten {
            let shown: Vec<String> = literals.iter().take(3).map(|l| format!("`{}`", l.chars().take(40).collect::<String>())).collect();
            e.message = format!("{} (a number a 64-bit float does not hold exactly is read as the text it is written as: {})", e.message, shown.join(", "));
        }
        e
    })
}

/// `parse_json` on a body whose numbers are all exact.
fn parse_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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
pub(crate) fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
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

/// A page size or count a query asks for: `default` when absent; outside `1..=max`
/// it is refused, naming `field` (not quietly read as something else).
pub fn page_size(field: &str, asked: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match asked {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::new(Code::InvalidQuery, format!("`{field}`: must be between 1 and {max}"))),
    }
}

/// A page number: 1 when absent, counted from 1.
pub fn page_number(asked: Option<u32>) -> Result<u32, ApiError> {
    match asked {
        Some(0) => Err(ApiError::new(Code::InvalidQuery, "`page`: pages are counted from 1")),
        other => Ok(other.unwrap_or(1)),
    }
}

/// A time in a query: RFC 3339, or milliseconds since the epoch.
pub fn query_time(field: &str, text: &str) -> Result<i64, ApiError> {
    crate::clock::parse_time(text)
        .ok_or_else(|| ApiError::new(Code::InvalidQuery, format!("`{field}`: `{text}` is neither an RFC 3339 time nor milliseconds since the epoch")))
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
        read_body(req, state, std::time::Duration::from_secs(crate::config::limits::BODY_SECONDS)).await.map(RawBody)
    }
}

/// A request that may carry an agent's signature (`signature.rs`): what the signature
/// covers (the method, the path as sent, the body) and the headers that carry it.
pub struct SignedRequest {
    pub method: axum::http::Method,
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: Bytes,
}

impl SignedRequest {
    /// The caller a signature check reads, with `key` as the request's API key.
    pub fn caller<'a>(&'a self, key: &'a praetor_store::ApiKey) -> crate::pipeline::Caller<'a> {
        crate::pipeline::Caller::new(key, &self.headers, self.method.as_str(), &self.path, crate::pipeline::SignedBody::Raw(&self.body))
    }
}

impl<S: Send + Sync> FromRequest<S> for SignedRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The path as the client sent and signed it, before the router's nesting.
        let path = match req.extensions().get::<axum::extract::OriginalUri>() {
            Some(original) => original.path().to_owned(),
            None => req.uri().path().to_owned(),
        };
        let (method, headers) = (req.method().clone(), req.headers().clone());
        let RawBody(body) = RawBody::from_request(req, state).await?;
        Ok(SignedRequest { method, path, headers, body })
    }
}

/// The top-level members a refused-unread decision is attributed by: the action, its
/// agent and session (`/enforce/intercept`), a hand-off's source and target
/// (`/enforce/agent-comm`).
pub const NAMING_MEMBERS: [&str; 5] = ["action_type", "agent_id", "session_id", "source_agent_id", "target_agent_id"];

/// Strings longer than this (raw, as sent) are not taken: no key, id or action type is
/// this long, even written all in `\u` escapes (six bytes a character).
const NAMING_VALUE_MAX: usize = 6 * crate::config::limits::ACTION_TYPE_MAX;

/// Finds the string members named `keys` of a top-level JSON object fed to it in
/// pieces, keeping nothing else: a body too large to keep is still decided (and
/// refused), and these say whose action it was and of what kind. The first of a
/// repeated member is taken; members that are not strings, or nested in another
/// object, are not. Malformed JSON is read as far as it can be.
pub struct TopLevelStrings {
    keys: &'static [&'static str],
    found: std::collections::HashMap<String, String>,
    /// 1 inside the top-level object; 0 before it.
    depth: usize,
    finished: bool,
    expect_key: bool,
    in_string: bool,
    escaped: bool,
    /// The raw bytes of the string being read, when it is a key at depth 1 or the value
    /// of a wanted one; `None` past `NAMING_VALUE_MAX`.
    capture: Option<Option<Vec<u8>>>,
    capturing_key: bool,
    /// The key whose value comes next.
    key: Option<String>,
}

impl TopLevelStrings {
    pub fn new(keys: &'static [&'static str]) -> TopLevelStrings {
        TopLevelStrings {
            keys,
            found: Default::default(),
            depth: 0,
            finished: false,
            expect_key: true,
            in_string: false,
            escaped: false,
            capture: None,
            capturing_key: false,
            key: None,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() && !self.finished {
            if self.in_string {
                at = self.read_string(bytes, at);
                continue;
            }
            let b = bytes[at];
            at += 1;
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'{' if self.depth == 0 => self.depth = 1,
                _ if self.depth == 0 => self.finished = true,
                b'"' => self.open_string(),
                b':' if self.depth == 1 => self.expect_key = false,
                b',' if self.depth == 1 => (self.expect_key, self.key) = (true, None),
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    self.finished = self.depth == 0;
                }
                _ => {}
            }
        }
    }

    pub fn found(self) -> std::collections::HashMap<String, String> {
        self.found
    }

    fn open_string(&mut self) {
        self.in_string = true;
        self.escaped = false;
        let wanted_value = !self.expect_key && self.key.as_deref().is_some_and(|k| self.keys.contains(&k) && !self.found.contains_key(k));
        self.capturing_key = self.depth == 1 && self.expect_key;
        self.capture = (self.depth == 1 && (self.capturing_key || wanted_value)).then(|| Some(Vec::new()));
    }

    /// Read string bytes from `at`; where the next piece starts.
    fn read_string(&mut self, bytes: &[u8], at: usize) -> usize {
        if self.escaped {
            self.escaped = false;
            self.take(&bytes[at..at + 1]);
            return at + 1;
        }
        // Most of a body's bytes are in strings (the action's content), so this jumps.
        let Some(off) = memchr::memchr2(b'"', b'\\', &bytes[at..]) else {
            self.take(&bytes[at..]);
            return bytes.len();
        };
        self.take(&bytes[at..at + off + 1]);
        if bytes[at + off] == b'\\' {
            self.escaped = true;
        } else {
            self.in_string = false;
            self.close_string();
        }
        at + off + 1
    }

    fn take(&mut self, piece: &[u8]) {
        if let Some(slot) = &mut self.capture {
            match slot {
                Some(raw) if raw.len() + piece.len() <= NAMING_VALUE_MAX + 1 => raw.extend_from_slice(piece),
                _ => *slot = None,
            }
        }
    }

    /// A string ended (its raw bytes captured up to and with the closing quote).
    fn close_string(&mut self) {
        let text = match self.capture.take() {
            Some(Some(mut raw)) => {
                raw.insert(0, b'"');
                serde_json::from_slice::<String>(&raw).ok()
            }
            _ => None,
        };
        if self.depth != 1 {
            return;
        }
        if self.capturing_key {
            self.key = text;
        } else if let (Some(k), Some(v)) = (self.key.take(), text) {
            self.found.entry(k).or_insert(v);
        }
    }
}


/// The body of a decision request (`/enforce/intercept`, `/enforce/agent-comm`).
/// Within the body limit, and arrived within `UNREAD_BODY_SECONDS` of when reading
/// starts, it is the raw body, as `RawBody`. Past the limit, the rest is still read,
/// counted, hashed and scanned for the members that name the action (`NAMING_MEMBERS`),
/// but not kept, up to `UNREAD_BODY_MAX` bytes; a body still arriving when its time is
/// up is taken as read so far, whatever its size. The action is then decided as refused
/// unread, an answer rather than an error that a fail-open client would run the action
/// on (wire rule 1). Reading stops at those bounds rather than answering `413` or
/// waiting on: the SDK sends a body under a 10 s timeout, and an error or a timeout
/// both run the action.
pub enum DecisionBody {
    Whole(Bytes),
    Unread(UnreadBody),
}

/// What was read of a body past the limit, or of one that did not arrive in time.
pub struct UnreadBody {
    pub limit: usize,
    /// The bytes read, all of the body's unless `cut` says why not, and their SHA-256.
    pub length: u64,
    pub sha256: String,
    pub cut: Option<Cut>,
    /// Whether the body is over the limit (as read, or as its declared length says);
    /// if not, it was still arriving when its time was up.
    pub over_limit: bool,
    /// Its top-level string members among `NAMING_MEMBERS`, as far as it was read.
    pub named: std::collections::HashMap<String, String>,
}

/// Why a body was not read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Size(u64),
    Time(std::time::Duration),
    /// The client stopped sending: a broken connection or a malformed chunk.
    Broken,
}

impl DecisionBody {
    /// What a request signature covers: the body, or the hash of one not kept.
    pub fn signed(&self) -> crate::pipeline::SignedBody<'_> {
        match self {
            DecisionBody::Whole(raw) => crate::pipeline::SignedBody::Raw(raw),
            DecisionBody::Unread(over) => crate::pipeline::SignedBody::Sha256(&over.sha256),
        }
    }
}

impl UnreadBody {
    /// Why the action was not evaluated, with what identifies the body that was sent.
    pub fn reason(&self) -> String {
        let (length, sha256, limit) = (self.length, &self.sha256, self.limit);
        match self.cut {
            None => format!("the request body is {length} bytes long (SHA-256 {sha256}); the limit is {limit}"),
            Some(Cut::Time(t)) if !self.over_limit => format!(
                "the request body did not arrive within {} s: {length} bytes were read (SHA-256 {sha256}) and no more",
                t.as_secs_f64()
            ),
            Some(cut) => {
                let why = match cut {
                    Cut::Size(max) => format!("reading stops at {max} bytes"),
                    Cut::Time(t) => format!("reading stops after {} s", t.as_secs_f64()),
                    Cut::Broken => "the client stopped sending".to_owned(),
                };
                format!("the request body is over the limit of {limit} bytes; {length} were read (SHA-256 {sha256}) and no more ({why})")
            }
        }
    }

    pub fn named(&self, member: &str) -> Option<&str> {
        self.named.get(member).map(String::as_str)
    }
}

impl FromRequest<std::sync::Arc<crate::state::AppState>> for DecisionBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &std::sync::Arc<crate::state::AppState>) -> Result<Self, Self::Rejection> {
        use crate::config::limits::{UNREAD_BODY_MAX, UNREAD_BODY_SECONDS};
        let bounds = UnreadBounds { bytes: UNREAD_BODY_MAX, time: std::time::Duration::from_secs(UNREAD_BODY_SECONDS) };
        read_decision_body(req.into_body(), state.config.max_body_bytes, bounds).await
    }
}

/// How much of a decision body is read: bytes in all, once past the limit, and time
/// from when reading starts (after the headers), whatever the body's size.
#[derive(Clone, Copy)]
struct UnreadBounds {
    bytes: u64,
    time: std::time::Duration,
}

/// What is read of a body not kept: not the bytes, only what identifies them.
struct Tally {
    hash: sha2::Sha256,
    scan: TopLevelStrings,
}

impl Tally {
    fn new() -> Tally {
        use sha2::Digest;
        Tally { hash: sha2::Sha256::new(), scan: TopLevelStrings::new(&NAMING_MEMBERS) }
    }

    /// From the bytes kept so far, which it takes (and frees).
    fn from_kept(kept: &mut BytesMut) -> Tally {
        let mut past = Tally::new();
        past.feed(&std::mem::take(kept));
        past
    }

    fn feed(&mut self, data: &[u8]) {
        use sha2::Digest;
        self.hash.update(data);
        self.scan.feed(data);
    }
}

async fn read_decision_body(mut body: axum::body::Body, limit: usize, bounds: UnreadBounds) -> Result<DecisionBody, ApiError> {
    use http_body_util::BodyExt;
    use sha2::Digest;
    // Every decision body is timed from now (after the headers): the answer comes
    // within the client's timeout however slowly the body arrives, declared or chunked,
    // within the limit or past it. (Reading has no other clock: without this, a client
    // could hold a request open for as long as it kept sending nothing.)
    let deadline = tokio::time::Instant::now() + bounds.time;
    // A body whose declared length is over the limit is refused unread whatever it
    // holds (the SDK always declares one), so none of it is kept.
    let declared_over = axum::body::HttpBody::size_hint(&body).exact().is_some_and(|n| n > limit as u64);
    let mut unread = declared_over.then(Tally::new);
    // One buffer however the body is framed: many small frames held one by one would
    // cost far more than their bytes.
    let mut kept = BytesMut::new();
    let (mut length, mut cut) = (0u64, None);
    loop {
        let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
            cut = Some(Cut::Time(bounds.time));
            break;
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(_)) if unread.is_some() => {
                cut = Some(Cut::Broken);
                break;
            }
            Some(Err(e)) => return Err(ApiError::new(Code::MalformedJson, format!("cannot read the request body: {e}"))),
        };
        let Ok(data) = frame.into_data() else { continue };
        length += data.len() as u64;
        if unread.is_none() && length > limit as u64 {
            unread = Some(Tally::from_kept(&mut kept));
        }
        match &mut unread {
            Some(past) => past.feed(&data),
            None => kept.extend_from_slice(&data),
        }
        if unread.is_some() && length >= bounds.bytes {
            cut = Some(Cut::Size(bounds.bytes));
            break;
        }
    }
    // A body within the limit that did not arrive in time is refused as read so far.
    if cut.is_some() && unread.is_none() {
        unread = Some(Tally::from_kept(&mut kept));
    }
    Ok(match unread {
        None => DecisionBody::Whole(kept.freeze()),
        Some(past) => DecisionBody::Unread(UnreadBody {
            limit,
            length,
            sha256: hex::encode(past.hash.finalize()),
            cut,
            over_limit: declared_over || length > limit as u64,
            named: past.scan.found(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::{ApiJson, Cut, DecisionBody, RawBody, UnreadBody, TopLevelStrings, UnreadBounds, nested_past, read_decision_body};
    use axum::extract::{FromRequest, Request};
    use futures_util::StreamExt;
    use axum::body::{Body, Bytes};
    use serde_json::{Map, Value};

    const KEYS: [&str; 3] = ["action_type", "agent_id", "session_id"];

    /// `TopLevelStrings` over one buffer.
    fn top_level_strings(bytes: &[u8], keys: &'static [&'static str]) -> std::collections::HashMap<String, String> {
        let mut scan = TopLevelStrings::new(keys);
        scan.feed(bytes);
        scan.found()
    }


    #[test]
    fn top_level_strings_are_the_whole_top_level_string_members() {
        let got = |body: &str| {
            let mut v: Vec<_> = top_level_strings(body.as_bytes(), &KEYS).into_iter().collect();
            v.sort();
            v
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        // Nested members of the same name, and non-string values, are not taken.
        let body = r#" {"metadata": {"agent_id": "inner", "x": ["action_type", "y"]}, "chain_step": 3,
                        "action_type" : "pay\u0021", "agent_id":"agt_1", "action_content": "aaaaaaaa"#;
        assert_eq!(got(body), vec![pair("action_type", "pay!"), pair("agent_id", "agt_1")]);
        // A member cut off by the end is not taken.
        assert_eq!(got(r#"{"action_type": "pay", "agent_id": "agt_"#), vec![pair("action_type", "pay")]);
        // Escaped quotes inside strings do not end them; a key is only a key before `:`.
        assert_eq!(got(r#"{"x": "\"agent_id\": \"no\"", "session_id": "s1"}"#), vec![pair("session_id", "s1")]);
        assert_eq!(got(r#"{"action_type": 5, "x": "action_type"}"#), vec![]);
        // The first of a repeated member, and only inside a top-level object.
        assert_eq!(got(r#"{"agent_id": "a", "agent_id": "b"}"#), vec![pair("agent_id", "a")]);
        assert_eq!(got(r#"["action_type", "pay"]"#), vec![]);
        assert_eq!(got(r#"{"action_type": "a"} {"agent_id": "b"}"#), vec![pair("action_type", "a")]);
        // After a member too large to hold, as the SDK sends a session (after metadata).
        let late = format!(r#"{{"action_type":"x","metadata":{{"blob":"{}"}},"session_id":"ses_1"}}"#, "b".repeat(100_000));
        assert_eq!(got(&late), vec![pair("action_type", "x"), pair("session_id", "ses_1")]);
        // A value longer than any id is not taken.
        assert_eq!(got(&format!(r#"{{"agent_id": "{}"}}"#, "a".repeat(2000))), vec![]);
    }

    use crate::test_rng::Rng;

    /// Random pieces of JSON for the fuzz tests.
    impl Rng {
        fn string(&mut self) -> String {
            const PIECES: [&str; 12] = ["a", "agent_id", "\"", "\\", "{", "}", "[", "]", ":", ",", "é", "\u{1F600}"];
            (0..self.below(6)).map(|_| PIECES[self.below(PIECES.len())]).collect()
        }
        fn value(&mut self, depth: usize) -> Value {
            match self.below(if depth > 4 { 4 } else { 6 }) {
                0 => Value::Null,
                1 => Value::from(self.below(1000) as u64),
                2 | 3 => Value::String(self.string()),
                4 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
                _ => Value::Object(self.object(depth + 1)),
            }
        }
        fn object(&mut self, depth: usize) -> Map<String, Value> {
            let mut m = Map::new();
            for _ in 0..self.below(6) {
                let k = if self.below(2) == 0 { KEYS[self.below(3)].to_owned() } else { self.string() };
                m.insert(k, self.value(depth));
            }
            m
        }
        /// `v` as JSON text, with random whitespace and strings sometimes `\u`-escaped.
        fn write(&mut self, v: &Value, out: &mut String) {
            let ws = |r: &mut Rng, out: &mut String| out.push_str([" ", "", "\n", "\t ", ""][r.below(5)]);
            match v {
                Value::Object(m) => {
                    out.push('{');
                    for (i, (k, v)) in m.iter().enumerate() {
                        out.push_str(if i > 0 { "," } else { "" });
                        ws(self, out);
                        self.write(&Value::String(k.clone()), out);
                        ws(self, out);
                        out.push(':');
                        ws(self, out);
                        self.write(v, out);
                    }
                    out.push('}');
                }
                Value::Array(a) => {
                    out.push('[');
                    for (i, v) in a.iter().enumerate() {
                        out.push_str(if i > 0 { "," } else { "" });
                        self.write(v, out);
                    }
                    out.push(']');
                }
                Value::String(s) if self.below(3) == 0 && s.chars().all(|c| (c as u32) < 0x10000) => {
                    out.push('"');
                    s.chars().for_each(|c| out.push_str(&format!("\\u{:04x}", c as u32)));
                    out.push('"');
                }
                other => out.push_str(&other.to_string()),
            }
        }
    }

    /// On valid JSON, fed whole or in any pieces, exactly the top-level string members;
    /// on a prefix of it, some of them (never a nested or a wrong value).
    #[test]
    fn top_level_strings_agree_with_serde_whole_in_pieces_and_cut() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let mut nonempty = 0;
        for _ in 0..3000 {
            let obj = r.object(0);
            let mut text = String::new();
            r.write(&Value::Object(obj.clone()), &mut text);
            assert_eq!(serde_json::from_str::<Map<String, Value>>(&text).expect("valid"), obj);
            let want: std::collections::HashMap<String, String> =
                obj.iter().filter(|(k, _)| KEYS.contains(&k.as_str())).filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect();
            nonempty += usize::from(!want.is_empty());
            assert_eq!(top_level_strings(text.as_bytes(), &KEYS), want, "{text}");
            let mut pieces = TopLevelStrings::new(&KEYS);
            let mut at = 0;
            while at < text.len() {
                let to = (at + 1 + r.below(8)).min(text.len());
                pieces.feed(&text.as_bytes()[at..to]);
                at = to;
            }
            assert_eq!(pieces.found(), want, "in pieces: {text}");
            for cut in 0..=text.len() {
                for (k, v) in &top_level_strings(&text.as_bytes()[..cut], &KEYS) {
                    assert_eq!(want.get(k), Some(v), "prefix {:?} of {text}", &text.as_bytes()[..cut]);
                }
            }
        }
        assert!(nonempty > 500, "{nonempty}");
    }

    /// JSON text written by hand (repeated members, escaped keys, `\/`, surrogate pairs,
    /// odd spacing), to compare the scanner with serde's reading of a struct, as
    /// `InterceptBody` is read.
    mod hand_written {
        use super::Rng;

        fn string(r: &mut Rng, s: &str) -> String {
            let mut out = String::from("\"");
            for c in s.chars() {
                match (c, r.below(4)) {
                    ('"', _) => out.push_str("\\\""),
                    ('\\', _) => out.push_str("\\\\"),
                    (c, 0) if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04X}", c as u32)),
                    (c, 1) if (c as u32) >= 0x10000 => {
                        let v = c as u32 - 0x10000;
                        out.push_str(&format!("\\ud{:03x}\\ud{:03x}", 0x800 + (v >> 10), 0xC00 + (v & 0x3FF)));
                    }
                    ('/', _) => out.push_str("\\/"),
                    (c, _) => out.push(c),
                }
            }
            out.push('"');
            out
        }
        pub fn ws(r: &mut Rng) -> &'static str {
            [" ", "", "\n", "\t", "\r\n ", ""][r.below(6)]
        }
        fn text(r: &mut Rng) -> String {
            const P: [&str; 10] = ["a", "agt_1", "\"", "\\", "é", "\u{1F600}", "/", "{", "}", ":"];
            (0..r.below(5)).map(|_| P[r.below(P.len())]).collect()
        }
        fn value(r: &mut Rng, depth: usize) -> String {
            match r.below(if depth > 3 { 4 } else { 7 }) {
                0 => "null".into(),
                1 => "-12.5e3".into(),
                2 | 3 => {
                    let t = text(r);
                    string(r, &t)
                }
                4 => format!("[{}]", (0..r.below(3)).map(|_| value(r, depth + 1)).collect::<Vec<_>>().join(",")),
                _ => object(r, depth + 1),
            }
        }
        pub fn object(r: &mut Rng, depth: usize) -> String {
            let keys = ["action_type", "agent_id", "session_id", "source_agent_id", "target_agent_id", "metadata", "x"];
            let members: Vec<String> = (0..r.below(7))
                .map(|_| {
                    let k = if r.below(3) > 0 { keys[r.below(keys.len())].to_owned() } else { text(r) };
                    let k = string(r, &k);
                    let (a, b, c) = (ws(r), ws(r), ws(r));
                    format!("{a}{k}{b}:{c}{}", value(r, depth))
                })
                .collect();
            format!("{{{}{}}}", members.join(","), ws(r))
        }
    }

    /// Whenever serde reads the bytes as a struct, the scanner names exactly its string
    /// members, fed whole or in pieces of 1-3 bytes.
    #[test]
    fn top_level_strings_agree_with_serde_struct_reading() {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Named {
            action_type: Option<Value>,
            agent_id: Option<Value>,
            session_id: Option<Value>,
            source_agent_id: Option<Value>,
            target_agent_id: Option<Value>,
        }
        let mut r = Rng(0xDEAD_BEEF_1234_5678);
        let mut agreed = 0;
        for _ in 0..100_000 {
            let body = format!("{}{}{}", hand_written::ws(&mut r), hand_written::object(&mut r, 0), hand_written::ws(&mut r));
            let scanned = top_level_strings(body.as_bytes(), &super::NAMING_MEMBERS);
            let mut pieces = TopLevelStrings::new(&super::NAMING_MEMBERS);
            for piece in body.as_bytes().chunks(1 + r.below(3)) {
                pieces.feed(piece);
            }
            assert_eq!(pieces.found(), scanned, "{body}");
            if let Ok(n) = serde_json::from_str::<Named>(&body) {
                agreed += 1;
                let want: std::collections::HashMap<String, String> = [
                    ("action_type", n.action_type), ("agent_id", n.agent_id), ("session_id", n.session_id),
                    ("source_agent_id", n.source_agent_id), ("target_agent_id", n.target_agent_id),
                ]
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Some(Value::String(s)) => Some((k.to_owned(), s)),
                    _ => None,
                })
                .collect();
                assert_eq!(scanned, want, "{body}");
            }
        }
        assert!(agreed > 50_000, "{agreed}");
    }

    #[test]
    fn top_level_strings_never_panic_on_garbage() {
        let mut r = Rng(12345);
        const ALPHA: &[u8] = b"{}[]\":,\\ u0aeg_ids\xff\xc3";
        for _ in 0..200_000 {
            let mut bytes: Vec<u8> = (0..r.below(40)).map(|_| ALPHA[r.below(ALPHA.len())]).collect();
            if r.below(2) == 0 {
                bytes.insert(0, b'{');
            }
            let _ = top_level_strings(&bytes, &KEYS);
        }
        for s in ["}", "]", "{]", "{}}}}", "{]]]]\"agent_id\":\"x\"", "{\"a\\", "{\"", "{\"agent_id\":\"\\", "{\"agent_id\":\"\\u12"] {
            assert!(top_level_strings(s.as_bytes(), &KEYS).is_empty(), "{s}");
        }
        let deep = format!("{{\"x\":{}", "[".repeat(2_000_000));
        assert!(top_level_strings(deep.as_bytes(), &KEYS).is_empty());
    }

    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let frames = chunks.iter().map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c)));
        Body::from_stream(futures_util::stream::iter(frames.collect::<Vec<_>>()))
    }

    const BOUNDS: UnreadBounds = UnreadBounds { bytes: 100, time: std::time::Duration::from_secs(60) };

    async fn unread(body: Body, limit: usize, bounds: UnreadBounds) -> UnreadBody {
        match read_decision_body(body, limit, bounds).await {
            Ok(DecisionBody::Unread(over)) => over,
            Ok(DecisionBody::Whole(b)) => panic!("expected a body refused unread, got {b:?}"),
            Err(e) => panic!("expected a body refused unread, got {}", e.message),
        }
    }

    #[tokio::test]
    async fn a_decision_body_past_the_limit_is_read_to_the_end_hashed_and_scanned_not_kept() {
        let whole = |b: Result<DecisionBody, crate::error::ApiError>| match b {
            Ok(DecisionBody::Whole(bytes)) => bytes,
            _ => panic!("expected the whole body"),
        };
        // Within the limit, however it is framed, the body is the body.
        assert_eq!(whole(read_decision_body(chunked(&[b"{\"a\"", b":1}"]), 7, BOUNDS).await), Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(whole(read_decision_body(Body::from("1234567"), 7, BOUNDS).await), Bytes::from_static(b"1234567"));
        // Past it, in a later frame: the length and hash of all of it, and the members
        // that name the action, wherever they are.
        let body: [&'static [u8]; 4] = [b"{\"agent_id\":\"a", b"1\",\"x\":\"", b"yyyyyy\",", b"\"session_id\":\"s\"}"];
        let over = unread(chunked(&body), 20, BOUNDS).await;
        let all = body.concat();
        assert_eq!((over.limit, over.length, over.cut), (20, all.len() as u64, None));
        assert_eq!(over.sha256, praetor_core::sha256_hex(&all));
        assert_eq!((over.named("agent_id"), over.named("session_id"), over.named("action_type")), (Some("a1"), Some("s"), None));
        assert_eq!(over.reason(), format!("the request body is {} bytes long (SHA-256 {}); the limit is 20", all.len(), over.sha256));
    }

    /// Reading past the limit stops at a size, a time, or a broken body, and the action
    /// is still refused as a decision (not an error a fail-open client would run).
    #[tokio::test]
    async fn reading_past_the_limit_stops_at_its_bounds() {
        // At the size bound, after the frame that reaches it (frames are what is read).
        let small = UnreadBounds { bytes: 10, ..BOUNDS };
        let over = unread(chunked(&[b"{\"agent_id\"", b":\"a\"", b"}xxxxxxx"]), 7, small).await;
        assert_eq!((over.cut, over.length, over.named("agent_id")), (Some(Cut::Size(10)), 11, None));
        let over = unread(Body::from("{\"agent_id\":\"a\"}xxxxxxx"), 7, small).await;
        assert_eq!((over.cut, over.length, over.named("agent_id")), (Some(Cut::Size(10)), 23, Some("a")));
        let over = unread(chunked(&[b"{\"agent_id\":\"a\",", b"\"x\":\"", b"yyyyyyyyyyyyyyyyyy"]), 7, UnreadBounds { bytes: 30, ..BOUNDS }).await;
        assert_eq!((over.cut, over.named("agent_id"), over.length), (Some(Cut::Size(30)), Some("a"), 39));
        assert_eq!(over.sha256, praetor_core::sha256_hex(b"{\"agent_id\":\"a\",\"x\":\"yyyyyyyyyyyyyyyyyy"));
        assert!(over.reason().contains("39 were read") && over.reason().contains("reading stops at 30 bytes"), "{}", over.reason());
        // At the time bound: a client that stops sending past the limit but holds on.
        let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{\"agent_id\":\"a\",\"x\":\"yy"))])
            .chain(futures_util::stream::pending());
        let quick = UnreadBounds { time: std::time::Duration::from_millis(50), ..BOUNDS };
        let over = unread(Body::from_stream(stalled), 7, quick).await;
        assert_eq!((over.cut, over.named("agent_id")), (Some(Cut::Time(quick.time)), Some("a")));
        assert!(over.reason().contains("reading stops after 0.05 s"), "{}", over.reason());
        // A body that breaks off: past the limit, refused as read so far; within it, an error.
        let broken = |first: &'static [u8]| {
            Body::from_stream(futures_util::stream::iter([Ok(Bytes::from_static(first)), Err(std::io::Error::other("reset"))]))
        };
        let over = unread(broken(b"{\"agent_id\":\"a\",\"x\":\"yy"), 7, BOUNDS).await;
        assert_eq!((over.cut, over.named("agent_id")), (Some(Cut::Broken), Some("a")));
        let err = read_decision_body(broken(b"{}"), 7, BOUNDS).await.err().expect("broken within the limit");
        assert_eq!(err.code, crate::error::Code::MalformedJson);
    }

    /// A body whose declared length (Content-Length, as the SDK sends) is over the limit
    /// is timed from when reading starts: one whose first bytes come slowly is still refused
    /// within the bound, and one that breaks off before the limit is refused too.
    #[tokio::test]
    async fn a_body_declared_over_the_limit_is_timed_from_the_start() {
        use std::pin::Pin;
        use std::task::{Context, Poll};
        struct Declared<B>(B, u64);
        impl<B: http_body::Body + Unpin> http_body::Body for Declared<B> {
            type Data = B::Data;
            type Error = B::Error;
            fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
                Pin::new(&mut self.0).poll_frame(cx)
            }
            fn size_hint(&self) -> http_body::SizeHint {
                http_body::SizeHint::with_exact(self.1)
            }
        }
        let declared = |frames: Vec<Result<Bytes, std::io::Error>>, then_stall: bool| {
            let frames = futures_util::stream::iter(frames);
            let stream: Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send>> =
                if then_stall { Box::pin(frames.chain(futures_util::stream::pending())) } else { Box::pin(frames) };
            Body::new(Declared(http_body_util::StreamBody::new(stream.map(|r| r.map(http_body::Frame::data))), 1000))
        };
        let quick = UnreadBounds { time: std::time::Duration::from_millis(50), ..BOUNDS };
        // (Without the declared length's clock this would wait for ever: the guard fails it.)
        let stalled = unread(declared(vec![Ok(Bytes::from_static(b"{\"agent_id\":\"a\","))], true), 100, quick);
        let over = tokio::time::timeout(std::time::Duration::from_secs(5), stalled).await.expect("answered within its bound");
        assert_eq!((over.cut, over.length, over.named("agent_id")), (Some(Cut::Time(quick.time)), 16, Some("a")));
        assert_eq!(over.sha256, praetor_core::sha256_hex(b"{\"agent_id\":\"a\","));
        assert!(over.over_limit && over.reason().contains("over the limit of 100 bytes; 16 were read"), "{}", over.reason());
        let broken = vec![Ok(Bytes::from_static(b"{\"agent_id\":\"a\",")), Err(std::io::Error::other("reset"))];
        let over = unread(declared(broken, false), 100, quick).await;
        assert_eq!((over.cut, over.named("agent_id")), (Some(Cut::Broken), Some("a")));
    }

    /// A body of frames as (wait before, bytes); after the last, the client holds on and
    /// sends nothing more (or, with `end`, ends the body).
    fn paced(frames: Vec<(u64, &'static [u8])>, end: bool) -> Body {
        let stream = futures_util::stream::unfold(frames.into_iter(), move |mut rest| async move {
            match rest.next() {
                Some((wait, bytes)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    Some((Ok::<_, std::io::Error>(Bytes::from_static(bytes)), rest))
                }
                None if end => None,
                None => futures_util::future::pending().await,
            }
        });
        Body::from_stream(stream)
    }

    /// Every other body (a policy, a pack, a batch) must arrive within its bound too: one
    /// still arriving held its connection for ever. (Found by review.)
    #[tokio::test(start_paused = true)]
    async fn every_other_body_must_arrive_within_its_bound() {
        use tokio::time::Instant;
        let bound = std::time::Duration::from_secs(crate::config::limits::BODY_SECONDS);
        let started = Instant::now();
        let stalled = ApiJson::<serde_json::Value>::from_request(Request::new(paced(vec![(0, b"{\"name\":")], false)), &()).await;
        assert_eq!(started.elapsed(), bound);
        match stalled {
            Err(e) => assert_eq!((e.code.as_str(), e.message.as_str()), ("request_timeout", "the request body did not arrive within 30 s")),
            Ok(_) => panic!("a body that never ends was read"),
        }
        let started = Instant::now();
        let raw = RawBody::from_request(Request::new(paced(vec![], false)), &()).await;
        assert!(raw.is_err_and(|e| e.code.as_str() == "request_timeout") && started.elapsed() == bound);
        // Slow but whole in time: read.
        let slow = ApiJson::<serde_json::Value>::from_request(Request::new(paced(vec![(0, b"{\"a\""), (29_000, b":1}")], true)), &()).await;
        assert!(slow.is_ok_and(|ApiJson(v)| v == serde_json::json!({ "a": 1 })));
    }

    /// Every decision body is timed from when reading starts, chunked or declared,
    /// within the limit or past it (tokio's clock is paused: the waits are exact).
    #[tokio::test(start_paused = true)]
    async fn every_decision_body_is_timed_from_when_reading_starts() {
        use std::time::Duration;
        use tokio::time::Instant;
        let quick = UnreadBounds { time: Duration::from_millis(50), ..BOUNDS };
        // Chunked, passing the limit 30 ms in: cut 50 ms from the start, not from the limit.
        let started = Instant::now();
        let late = unread(paced(vec![(0, b"{\"agent_id\":\"a\","), (30, b"\"x\":\"yyyyyyyyyy")], false), 20, quick).await;
        assert_eq!(started.elapsed(), quick.time);
        assert_eq!((late.cut, late.length, late.named("agent_id")), (Some(Cut::Time(quick.time)), 31, Some("a")));
        assert!(late.reason().contains("over the limit of 20 bytes; 31 were read") && late.reason().contains("reading stops after 0.05 s"), "{}", late.reason());
        // Within the limit and still arriving when the time is up: refused as read so far,
        // with what names it and the hash of those bytes.
        let started = Instant::now();
        let slow = unread(paced(vec![(0, b"{\"agent_id\":\"a\","), (20, b"\"action_type\":\"pay\",")], false), 1000, quick).await;
        assert_eq!(started.elapsed(), quick.time);
        assert_eq!((slow.cut, slow.length, slow.over_limit), (Some(Cut::Time(quick.time)), 36, false));
        assert_eq!((slow.named("agent_id"), slow.named("action_type")), (Some("a"), Some("pay")));
        assert_eq!(slow.sha256, praetor_core::sha256_hex(b"{\"agent_id\":\"a\",\"action_type\":\"pay\","));
        assert_eq!(slow.reason(), format!("the request body did not arrive within 0.05 s: 36 bytes were read (SHA-256 {}) and no more", slow.sha256));
        // Nothing at all: refused too, naming nothing.
        let silent = unread(paced(vec![], false), 1000, quick).await;
        assert_eq!((silent.cut, silent.length, silent.named.len()), (Some(Cut::Time(quick.time)), 0, 0));
        // A body that ends in time, however its frames are spaced, is the body.
        let paced_in_time = paced(vec![(0, b"{\"a\""), (20, b":"), (20, b"1}")], true);
        match read_decision_body(paced_in_time, 1000, quick).await {
            Ok(DecisionBody::Whole(bytes)) => assert_eq!(bytes, Bytes::from_static(b"{\"a\":1}")),
            _ => panic!("a body that arrived in time is read whole"),
        }
    }

    /// A valid action type (200 bytes, under its limit) written in `\u` escapes is 1,200
    /// bytes as sent: serde reads it, so the scanner must too.
    #[test]
    fn an_escaped_action_type_within_its_limit_is_named() {
        let body = format!(r#"{{"action_type":"{}","agent_id":"{}"}}"#, "\\u0061".repeat(200), "\\u0062".repeat(128));
        let small: crate::pipeline::InterceptBody = serde_json::from_str(&body).unwrap();
        let found = top_level_strings(body.as_bytes(), &super::NAMING_MEMBERS);
        assert_eq!(found.get("agent_id").map(String::len), Some(128));
        assert_eq!(found.get("action_type"), small.action_type.as_ref());
    }

    fn nest(levels: usize, inner: &str) -> String {
        format!("{}{inner}{}", "[".repeat(levels), "]".repeat(levels))
    }

    /// Quoting a number a float would round never mends a body that is not JSON (a number
    /// where a key belongs), and a body that is JSON keeps its huge numbers as text.
    #[test]
    fn rewriting_numbers_never_mends_malformed_json() {
        let err = super::parse_json::<serde_json::Value>(br#"{"metadata": {12345678901234567890123: 1}}"#).unwrap_err();
        assert_eq!(err.code, crate::error::Code::MalformedJson, "{}", err.message);
        let ok: serde_json::Value = super::parse_json(br#"{"metadata": {"a": 12345678901234567890123, "b": 1e400}}"#).unwrap();
        assert_eq!(ok["metadata"], serde_json::json!({"a": "12345678901234567890123", "b": "1e400"}));
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

/// Ids a body names (agents, credentials, grants, ...), checked while it is parsed: at
/// most `limits::ID_MAX` bytes, not empty, without control characters. The error names
/// the field (the parser's path) and never repeats the value, which may be megabytes.
/// For fields: `#[serde(deserialize_with = "id::required")]`, or `id::optional` beside
/// `default`.
pub mod id {
    use serde::de::{Deserializer, Error};
    use serde::Deserialize;

    use crate::config::limits::ID_MAX;

    fn check<E: Error>(v: String) -> Result<String, E> {
        if v.len() > ID_MAX {
            return Err(E::custom(format!("an id is at most {ID_MAX} bytes; this one is {}", v.len())));
        }
        if v.is_empty() || v.chars().any(char::is_control) {
            return Err(E::custom("an id is a non-empty string without control characters"));
        }
        Ok(v)
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        check(String::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<String>::deserialize(d)?.map(check).transpose()
    }
}
