//! Random identifiers, API keys and their hashes.

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

/// An id for rows written at a high rate (decisions, violations): the same length as
/// `new_id`, but its first 48 bits are the time in milliseconds, so consecutive rows
/// land next to each other in the primary-key index instead of on random pages (each
/// page a commit touches is written again, twice with the WAL). 48 random bits follow.
/// `now_ms` is the time the row records (the server's clock, see `clock.rs`).
pub fn new_time_ordered_id(prefix: &str, now_ms: i64) -> String {
    format!("{prefix}_{:012x}{}", now_ms.max(0) as u64 & 0xffff_ffff_ffff, hex::encode(id_bits::<6>()))
}

/// Random bits for ids made on every decision (its own and each violation's): from the
/// thread's CSPRNG (ChaCha, seeded and reseeded from the OS), which needs no system
/// call, where `random_bytes` makes one each time. Keys and secrets still come from
/// `random_bytes`, straight from the OS.
fn id_bits<const N: usize>() -> [u8; N] {
    use rand::Rng;
    let mut buf = [0u8; N];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// A new API key: `xb_live_` + 40 hex characters (160 random bits). The `xb_` prefix is
/// what the xybern SDK checks before it will talk to a server at all.
pub fn new_api_key() -> String {
    format!("xb_live_{}", hex::encode(random_bytes::<20>()))
}

pub fn key_hash(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

pub use praetor_core::sha256_hex;

pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What a listing may show of a key: its first 12 characters.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ordered_ids_sort_by_time_and_do_not_repeat() {
        let first = new_time_ordered_id("dec", 1_700_000_000_000);
        assert_eq!(first.len(), new_id("dec").len());
        assert!(first.starts_with("dec_018bcfe56800") && first[4..].chars().all(|c| c.is_ascii_hexdigit()), "{first}");
        let same_ms: std::collections::HashSet<String> = (0..10_000).map(|_| new_time_ordered_id("dec", 1_700_000_000_000)).collect();
        assert_eq!(same_ms.len(), 10_000, "ids of one millisecond differ by their random part");
        let later = new_time_ordered_id("dec", 1_700_000_000_001);
        assert!(same_ms.iter().all(|id| later > *id), "an id of a later millisecond sorts after all of them");
    }
}
