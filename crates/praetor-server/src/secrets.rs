//! Random identifiers, API keys and their hashes.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS RNG failing is unrecoverable for a security product: refuse to go on.
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("the operating system's random number generator failed: {e}");
    }
    buf
}

/// `prefix_` + 24 hex characters (96 random bits).
/// A random wait in `[0, max)` (microseconds), to spread out retries.
pub fn jitter(max: u64) -> u64 {
    u64::from_le_bytes(random_bytes::<8>()) % max.max(1)
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(random_bytes::<12>()))
}

/// A new API key: `xb_live_` + 40 hex characters (160 random bits). The `xb_` prefix is
/// what the xybern SDK checks before it will talk to a server at all.
pub fn new_api_key() -> String {
    format!("xb_live_{}", hex::encode(random_bytes::<20>()))
}

pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What a listing may show of a key: its first 12 characters.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(12).collect()
}
