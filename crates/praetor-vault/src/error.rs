//! The crate's one error type.

use thiserror::Error;

/// Every error the vault's functions return.
///
/// Messages are lowercase without a trailing period; user input is in backticks.
/// Offline verification of whole bundles and receipts reports a [`crate::verify::Failure`]
/// instead, which names the first bad sequence number.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VaultError {
    /// A JSON number that is not an integer (or does not fit i64/u64) was found.
    #[error("floats are not allowed in canonical json, found one at `{path}`")]
    FloatNotAllowed { path: String },

    /// A value nests arrays and objects deeper than a leaf may (`canonical::MAX_DEPTH`).
    #[error("json nests deeper than {max} levels at `{path}`")]
    TooDeep { path: String, max: usize },

    /// Text that should be JSON does not parse.
    #[error("invalid json: {reason}")]
    InvalidJson { reason: String },

    /// A leaf is not in the canonical JSON encoding (re-encoding changes its bytes).
    #[error("leaf is not canonical json")]
    NonCanonicalLeaf,

    /// A leaf index is not below the tree size.
    #[error("leaf index `{index}` is out of range for tree size `{size}`")]
    IndexOutOfRange { index: u64, size: u64 },

    /// `size1` is greater than `size2`, or a request names a size the log does not have.
    #[error("invalid tree sizes: `{size1}` then `{size2}`")]
    InvalidTreeSizes { size1: u64, size2: u64 },

    /// A consistency proof from the empty tree was asked for or offered.
    #[error("consistency proofs from an empty tree are not defined")]
    EmptyTreeConsistency,

    /// A proof does not have the length the tree shape implies.
    #[error("proof has {got} hashes, the tree shape implies {expected}")]
    ProofLength { expected: usize, got: usize },

    /// A byte string that must be a 32-byte SHA-256 hash has another length.
    #[error("{what} must be 32 bytes, got {len}")]
    BadHashLength { what: &'static str, len: usize },

    /// An inclusion proof does not lead to the expected root.
    #[error("inclusion proof does not verify against the root")]
    InclusionMismatch,

    /// A consistency proof does not lead to both roots.
    #[error("consistency proof does not verify against the roots")]
    ConsistencyMismatch,

    /// Equal tree sizes with different roots.
    #[error("roots of equal-size trees differ")]
    RootMismatch,

    /// A consistency proof between equal sizes must be empty.
    #[error("proof between equal tree sizes must be empty")]
    NonEmptyProof,

    /// A hash reader does not hold a stored hash that is needed.
    #[error("stored hash `{index}` is not available")]
    MissingHash { index: u64 },

    /// A hash reader returned a different number of hashes than asked for.
    #[error("hash reader returned {got} hashes for {expected} indexes")]
    ReaderCount { expected: usize, got: usize },

    /// A frontier does not fit its tree size.
    #[error("frontier of {got} hashes does not fit tree size `{size}`")]
    BadFrontier { size: u64, got: usize },

    /// The tree cannot grow any more.
    #[error("log is full")]
    LogFull,

    /// A tree size beyond [`crate::merkle::MAX_LOG_SIZE`] was asked for.
    #[error("tree size `{size}` is larger than any log can be")]
    TreeTooLarge { size: u64 },

    /// A signed note does not follow c2sp.org/signed-note.
    #[error("malformed note: {reason}")]
    MalformedNote { reason: String },

    /// A key name is empty or contains a space or `+`.
    #[error("invalid key name `{name}`")]
    InvalidKeyName { name: String },

    /// A verifier key string does not follow c2sp.org/signed-note.
    #[error("malformed verifier key: {reason}")]
    MalformedVerifierKey { reason: String },

    /// A key or vkey names a signature type this crate does not implement.
    #[error("unsupported signature type `0x{type_byte:02x}`")]
    UnsupportedKeyType { type_byte: u8 },

    /// A vkey's key ID does not match its key.
    #[error("key id `{given}` does not match the key (expected `{computed}`)")]
    KeyIdMismatch { given: String, computed: String },

    /// A signature from a trusted key does not verify.
    #[error("signature by `{name}` does not verify")]
    BadSignature { name: String },

    /// No signature from a trusted key is on the note.
    #[error("note has no verified signature from a trusted key")]
    NoTrustedSignature,

    /// A checkpoint body does not follow c2sp.org/tlog-checkpoint.
    #[error("malformed checkpoint: {reason}")]
    MalformedCheckpoint { reason: String },

    /// A key could not be decoded or encoded (PEM, PKCS#8, SPKI, raw bytes).
    #[error("key encoding error: {reason}")]
    KeyEncoding { reason: String },

    /// The operating system's random number generator failed.
    #[error("random number generator failed: {reason}")]
    Random { reason: String },

    /// The storage behind a [`crate::merkle::HashReader`] failed (for example a
    /// database error).
    #[error("storage error: {reason}")]
    Storage { reason: String },

    /// A hex or base64 field does not decode.
    #[error("`{field}` is not valid {encoding}")]
    BadEncoding {
        field: String,
        encoding: &'static str,
    },
}
