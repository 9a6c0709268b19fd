//! The appender state machine: storage-agnostic, synchronous, no I/O.
//!
//! A sequencer keeps one [`LogState`] per log in memory. For each new record it calls
//! [`LogState::append`], which returns everything the storage layer must persist (the
//! entry row and the new stored hashes); [`LogState::root`] gives the tree root to
//! sign, when one is wanted (it costs a hash per level of the tree's right edge, so it
//! is not computed for every append). Several appends
//! can be made before persisting them as one batch: the state carries the tree's
//! right edge (a [`Frontier`]) and the chain head, so appending never reads storage.
//! After a restart, [`LogState::restore`] rebuilds the state from the persisted size,
//! the last chain hash and `popcount(size)` stored hashes.
//!
//! Order of operations for a server:
//!
//! 1. at start: `LogState::restore(size, last_chain_hash, &store_reader)`;
//! 2. per batch: `append` each record (in sequence order), collect the [`Appended`]s;
//! 3. persist, in one transaction, every entry row and every `(index, hash)` of
//!    `new_stored_hashes`; only then answer the requests and sign a checkpoint for
//!    the state's `root()`;
//! 4. if persisting fails, drop the state and `restore` it from storage again (the
//!    appends of the failed batch are forgotten).

use serde_json::Value;

use crate::canonical::{canonical_json, parse_canonical};
use crate::chain::{GENESIS_CHAIN_HASH, chain_hash, entry_hmac};
use crate::error::VaultError;
use crate::merkle::{Frontier, Hash, HashReader, leaf_hash};

/// What one append produced: the entry to persist and the stored hashes it creates
/// (the new root, when one is wanted, is [`LogState::root`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry's sequence number (its leaf index), from 0.
    pub seq: u64,
    /// `SHA-256(0x00 || leaf)`.
    pub leaf_hash: Hash,
    /// `SHA-256(previous chain hash || leaf_hash)`.
    pub chain_hash: Hash,
    /// `HMAC-SHA256(secret, u64be(seq) || leaf_hash || chain_hash)`.
    pub hmac: Hash,
    /// The stored hashes this append creates, `(storage index, hash)`, indexes
    /// consecutive and ascending.
    pub new_stored_hashes: Vec<(u64, Hash)>,
}

/// The in-memory state of one log: its size, chain head and tree frontier.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogState {
    chain_head: Hash,
    frontier: Frontier,
}

impl LogState {
    /// The state of an empty log.
    #[must_use]
    pub fn new() -> Self {
        Self {
            chain_head: GENESIS_CHAIN_HASH,
            frontier: Frontier::new(),
        }
    }

    /// Rebuilds the state of a log of `size` entries whose last chain hash is
    /// `chain_head` (use [`GENESIS_CHAIN_HASH`] when `size == 0`), reading
    /// `popcount(size)` stored hashes.
    ///
    /// # Errors
    /// Reader errors.
    pub fn restore<R: HashReader + ?Sized>(
        size: u64,
        chain_head: Hash,
        reader: &R,
    ) -> Result<Self, VaultError> {
        Ok(Self {
            chain_head,
            frontier: Frontier::restore(size, reader)?,
        })
    }

    /// A state from its parts (e.g. kept by the caller across a restart).
    #[must_use]
    pub fn from_parts(chain_head: Hash, frontier: Frontier) -> Self {
        Self {
            chain_head,
            frontier,
        }
    }

    /// The number of entries.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The chain hash of the last entry ([`GENESIS_CHAIN_HASH`] when empty).
    #[must_use]
    pub fn chain_head(&self) -> Hash {
        self.chain_head
    }

    /// The current tree root.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The tree's right edge.
    #[must_use]
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Appends a leaf. `leaf_bytes` must already be canonical JSON
    /// ([`crate::canonical`]); `secret` keys the entry's HMAC.
    ///
    /// The state changes only on success.
    ///
    /// # Errors
    /// [`VaultError::NonCanonicalLeaf`], [`VaultError::InvalidJson`],
    /// [`VaultError::FloatNotAllowed`], [`VaultError::TooDeep`], [`VaultError::LogFull`].
    pub fn append(&mut self, leaf_bytes: &[u8], secret: &[u8]) -> Result<Appended, VaultError> {
        // Appended now, so held to what writers may write (`canonical::MAX_DEPTH`), not
        // only to what checkers read.
        canonical_json(&parse_canonical(leaf_bytes)?)?;
        self.append_leaf_hash(leaf_hash(leaf_bytes), secret)
    }

    /// Encodes `value` as canonical JSON and appends it; returns the leaf bytes too.
    ///
    /// # Errors
    /// [`VaultError::FloatNotAllowed`], [`VaultError::LogFull`].
    pub fn append_value(
        &mut self,
        value: &Value,
        secret: &[u8],
    ) -> Result<(Vec<u8>, Appended), VaultError> {
        let leaf = canonical_json(value)?;
        let appended = self.append_leaf_hash(leaf_hash(&leaf), secret)?;
        Ok((leaf, appended))
    }

    /// Appends a leaf by its precomputed leaf hash (the caller vouches for the leaf
    /// being canonical JSON).
    ///
    /// # Errors
    /// [`VaultError::LogFull`].
    pub fn append_leaf_hash(
        &mut self,
        leaf_hash: Hash,
        secret: &[u8],
    ) -> Result<Appended, VaultError> {
        let seq = self.frontier.size();
        let new_stored_hashes = self.frontier.push_stored(leaf_hash)?;
        let chain = chain_hash(&self.chain_head, &leaf_hash);
        self.chain_head = chain;
        Ok(Appended {
            seq,
            leaf_hash,
            chain_hash: chain,
            hmac: entry_hmac(secret, seq, &leaf_hash, &chain),
            new_stored_hashes,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::merkle::{prove_inclusion, stored_hash_count, tree_hash, verify_inclusion};

    #[test]
    fn append_persist_restore_round_trip() {
        let secret = b"s3cret";
        let mut state = LogState::new();
        let mut stored: Vec<Hash> = Vec::new();
        let mut batch = Vec::new();
        for i in 0..37u64 {
            let leaf = format!("{{\"i\":{i}}}");
            let a = state.append(leaf.as_bytes(), secret).unwrap();
            assert_eq!(a.seq, i);
            batch.push(a);
            if i % 5 == 4 {
                for a in batch.drain(..) {
                    for (idx, h) in a.new_stored_hashes {
                        assert_eq!(idx, stored.len() as u64);
                        stored.push(h);
                    }
                }
                let restored =
                    LogState::restore(state.size(), state.chain_head(), &stored).unwrap();
                assert_eq!(restored, state);
                assert_eq!(stored.len() as u64, stored_hash_count(state.size()));
                assert_eq!(tree_hash(state.size(), &stored).unwrap(), state.root());
                let p = prove_inclusion(i, state.size(), &stored).unwrap();
                let lh = leaf_hash(leaf.as_bytes());
                verify_inclusion(i, state.size(), &lh, &p, &state.root()).unwrap();
            }
        }
    }

    #[test]
    fn rejects_non_canonical_leaves_without_changing_state() {
        let mut state = LogState::new();
        assert_eq!(
            state.append(b"{\"b\":1, \"a\":2}", b"k"),
            Err(VaultError::NonCanonicalLeaf)
        );
        assert!(matches!(
            state.append(b"{\"a\":1.5}", b"k"),
            Err(VaultError::FloatNotAllowed { .. })
        ));
        assert_eq!(state, LogState::new());
        let (leaf, a) = state
            .append_value(&serde_json::json!({"b": 1, "a": "x"}), b"k")
            .unwrap();
        assert_eq!(leaf, br#"{"a":"x","b":1}"#.to_vec());
        assert_eq!(
            a.chain_hash,
            chain_hash(&GENESIS_CHAIN_HASH, &leaf_hash(&leaf))
        );
    }
}
