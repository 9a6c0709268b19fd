//! Praetor's domain types and the pure decision pipeline (stages 2-4 of DESIGN.md).
//!
//! Nothing here performs I/O, spawns tasks or reads the clock: the caller passes the
//! request, the facts the decision depends on and `now`, so every decision can be
//! replayed from its inputs. The server owns persistence, the vault and HTTP.

// Tests may unwrap; the library itself may not (the workspace lint).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod action;
pub mod authority;
pub mod boundary;
pub mod cases;
pub mod combine;
pub mod decision;
pub mod engine;
pub mod fold;
pub mod glob;
pub mod grant_budget;
mod metadata_texts;
pub mod pack;
pub mod pii;
pub mod policy;
pub mod session;
pub mod trust;

pub use action::{ActionRequest, AgentFacts, Identity, PastAction, PermissionBoundary};
pub use decision::{BoundaryCheck, Decision, ESCALATION_LIMIT_ID, EvalError, Outcome, Triggered, Verdict};
pub use engine::{DecisionInput, decide};
pub use pii::{Category as PiiCategory, PiiMatch};
pub use policy::{
    CompiledPolicySet, Effect, MAX_PENDING_ESCALATIONS_LIMIT, MAX_SETTING_SECONDS, OnRedactedContent, PolicyDef, PolicyError, PolicyMode, PolicyType,
    MAX_CONTENT_PATTERNS_LISTED, WorkspaceSettings, content_patterns_listed,
};
pub use trust::next_trust;

/// SHA-256 of `data` as 64 lowercase hexadecimal characters: how the vault's entries
/// name the content and answer they seal, and how API keys are stored.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: naive UTC with milliseconds, the wire contract's time
/// (§0 rule 9), from milliseconds since the epoch. The same text as the format
/// `%Y-%m-%dT%H:%M:%S%.3fZ`, without parsing a format string on every call.
pub fn iso_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
