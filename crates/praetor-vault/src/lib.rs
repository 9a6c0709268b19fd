//! Praetor's provenance vault: the tamper-evident log every decision is sealed in.
//!
//! Pure code: no async, no I/O, no SQL. Three layers:
//!
//! 1. **Merkle math** ([`merkle`]): RFC 6962 hashing, a stored-hashes layout that
//!    serves roots and proofs from `O(log n)` stored hashes, proof verification, and
//!    the in-memory [`merkle::Frontier`]. With [`chain`] (hash chain + HMAC),
//!    [`canonical`] (the leaf encoding) and [`log`] (the appender state machine).
//! 2. **Signed checkpoints** ([`checkpoint`]): C2SP tlog-checkpoint bodies in C2SP
//!    signed notes, Ed25519 and ECDSA P-256 keys.
//! 3. **Storage adapter interface** ([`merkle::HashReader`]): the one trait a store
//!    implements to serve proofs; [`log::Appended`] lists what it must persist.
//!
//! [`verify`] checks export bundles and receipts offline with nothing but a public key.
//! The formats are specified in `docs/vault.md`.

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod error;
pub mod log;
pub mod merkle;
pub mod verify;

pub use canonical::{CanonicalWithSlot, canonical_json, check_canonical, parse_canonical, to_canonical_json};
pub use chain::{GENESIS_CHAIN_HASH, chain_hash, entry_hmac, verify_entry_hmac};
pub use checkpoint::{
    Checkpoint, KeyAlgorithm, KeyRef, NoteSigner, NoteVerifier, open_note, open_note_keys, sign_note,
};
pub use error::VaultError;
pub use log::{Appended, LogState};
pub use merkle::{
    Frontier, Hash, HashReader, OverlayReader, leaf_hash, node_hash, prove_consistency,
    prove_inclusion, tree_hash, verify_consistency, verify_inclusion,
};
pub use verify::{Bundle, Failure, Receipt, Report, check_continues, verify_bundle, verify_receipt};
