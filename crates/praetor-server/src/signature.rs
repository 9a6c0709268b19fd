//! Signed agent requests. An agent set to `require_signature` signs each intercept with
//! the Ed25519 private key of one of its credentials:
//!
//! ```text
//! X-Praetor-Credential: cred_…
//! X-Praetor-Timestamp:  1767787200          (Unix seconds, within ±60 s of the server)
//! X-Praetor-Nonce:      <8-128 chars of [A-Za-z0-9_-]>, never reused
//! X-Praetor-Signature:  base64(Ed25519 signature)
//!
//! signed message = "praetor-request-v1\n" METHOD "\n" PATH "\n" TIMESTAMP "\n" NONCE "\n" hex(SHA-256(body))
//! ```
//! PATH is the request path as sent (e.g. `/api/v1/enforce/intercept`), without the query.

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use praetor_store::Credential;

use crate::secrets::sha256_hex;

/// The identity check that failed, and why (reported in the decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFailure {
    pub check: &'static str,
    pub reason: String,
}

fn fail(check: &'static str, reason: impl Into<String>) -> SignatureFailure {
    SignatureFailure { check, reason: reason.into() }
}

impl SignatureFailure {
    /// A nonce this node, or the store, has seen used.
    pub fn nonce_reused() -> SignatureFailure {
        fail("nonce_reused", "this request's nonce was already used")
    }
}

pub struct SignedHeaders<'a> {
    pub credential_id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
}

pub fn signed_message(method: &str, path: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    signed_message_of_hash(method, path, timestamp, nonce, &sha256_hex(body))
}

/// The signed message of a body known by its SHA-256 (hex): one too large to keep.
pub fn signed_message_of_hash(method: &str, path: &str, timestamp: &str, nonce: &str, body_sha256: &str) -> String {
    format!("praetor-request-v1\n{method}\n{path}\n{timestamp}\n{nonce}\n{body_sha256}")
}

/// Verify a request signature against the agent's credentials. Does not consume the
/// nonce: the caller does that after success, so a bad signature cannot burn a nonce.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    headers: &SignedHeaders<'_>,
    method: &str,
    path: &str,
    body_sha256: &str,
    agent_id: &str,
    credentials: &[Credential],
    now_ms: i64,
    max_skew_secs: i64,
) -> Result<(), SignatureFailure> {
    let (Some(cred_id), Some(ts), Some(nonce), Some(sig)) =
        (headers.credential_id, headers.timestamp, headers.nonce, headers.signature)
    else {
        return Err(fail(
            "signature_missing",
            "agent requires a signature: send X-Praetor-Credential, X-Praetor-Timestamp, X-Praetor-Nonce and X-Praetor-Signature",
        ));
    };
    let ts_secs: i64 = ts.parse().map_err(|_| fail("signature_invalid", "`X-Praetor-Timestamp` is not Unix seconds"))?;
    // `abs_diff`: the timestamp is the caller's, and `i64::MIN` must be refused as
    // expired, not overflow.
    if (now_ms / 1000).abs_diff(ts_secs) > max_skew_secs.unsigned_abs() {
        return Err(fail("signature_expired", format!("signature timestamp is more than {max_skew_secs} s from the server's clock")));
    }
    if nonce.len() < 8 || nonce.len() > 128 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(fail("signature_invalid", "`X-Praetor-Nonce` must be 8-128 characters of [A-Za-z0-9_-]"));
    }
    let cred = credentials
        .iter()
        .find(|c| c.credential_id == cred_id && c.agent_id == agent_id)
        .ok_or_else(|| fail("signature_invalid", format!("credential `{cred_id}` does not belong to agent `{agent_id}`")))?;
    // A rotated key is told apart from a revoked one: its holder signs with the new key.
    if cred.revoked_at.is_some() && cred.rotated {
        return Err(fail("credential_rotated", format!("credential `{cred_id}` was rotated: sign with its successor")));
    }
    if cred.revoked_at.is_some() {
        return Err(fail("credential_revoked", format!("credential `{cred_id}` is revoked")));
    }
    if cred.expires_at.is_some_and(|e| e <= now_ms) {
        return Err(fail("credential_expired", format!("credential `{cred_id}` has expired")));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_bytes: [u8; 32] = b64
        .decode(&cred.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| fail("signature_invalid", "stored public key is malformed"))?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| fail("signature_invalid", "stored public key is malformed"))?;
    let sig_bytes: [u8; 64] = b64
        .decode(sig.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| fail("signature_invalid", "`X-Praetor-Signature` is not a base64 Ed25519 signature"))?;
    let message = signed_message_of_hash(method, path, ts, nonce, body_sha256);
    key.verify_strict(message.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| fail("signature_invalid", "the signature does not verify with the credential's public key"))
}

/// Nonces seen within the freshness window. Bounded: entries older than the window
/// are dropped, and a nonce older than the window is refused by the timestamp check
/// anyway, so forgetting it is safe.
#[derive(Default)]
pub struct NonceCache {
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl NonceCache {
    /// Record `nonce` for `agent_id`; false if it was already used.
    pub fn consume(&mut self, agent_id: &str, nonce: &str, now_ms: i64, window_ms: i64) -> bool {
        while let Some((at, _)) = self.order.front() {
            if *at >= now_ms - window_ms {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.seen.remove(&key);
            }
        }
        let key = format!("{agent_id}\u{0}{nonce}");
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key.clone(), now_ms);
        self.order.push_back((now_ms, key));
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
