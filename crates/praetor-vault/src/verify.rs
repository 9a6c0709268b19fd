//! Offline verification of export bundles and receipts, with nothing but public keys.
//!
//! A [`Bundle`] is a contiguous range of log entries `[start, end)` with the signed
//! checkpoints that cover them; [`verify_bundle`] recomputes every leaf hash, the hash
//! chain and the Merkle roots in one streaming pass (`O(n)` time, `O(log n)` memory
//! besides the bundle itself) and checks them against the signed checkpoints. A
//! [`Receipt`] is one entry with an inclusion proof and a signed checkpoint;
//! [`verify_receipt`] checks it. The JSON shapes are specified in `docs/vault.md`.
//!
//! What cannot be checked offline: the per-entry HMACs (they need the workspace
//! secret; see [`verify_hmacs`]; only their form is checked), for a bundle that does
//! not start at 0 the chain link before its first entry (`prev_chain_hash` is taken as
//! given; the Merkle roots still bind every entry to the signed checkpoints), and a
//! receipt's chain hash (it needs the entries before it).

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::canonical::parse_canonical;
use crate::chain::{GENESIS_CHAIN_HASH, chain_hash, verify_entry_hmac};
use crate::checkpoint::{Checkpoint, KeyRef, NoteVerifier, split_note};
use crate::error::VaultError;
use crate::log::Appended;
use crate::merkle::{
    Frontier, Hash, HashReader, hashes_equal, leaf_hash, prefix_hashes, prove_consistency,
    prove_inclusion, verify_consistency, verify_inclusion,
};

/// The `format` of a bundle.
pub const BUNDLE_FORMAT: &str = "praetor-vault-bundle-v1";
/// The `format` of a receipt.
pub const RECEIPT_FORMAT: &str = "praetor-vault-receipt-v1";

/// A public key as published in a bundle, for information only: a verifier must get
/// the key it trusts out of band, never from the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    /// The key name in signature lines.
    pub name: String,
    /// The C2SP key ID (the first 4 bytes of the key's hash), 8 lowercase hex digits:
    /// a rotated key keeps its name, and this tells the two apart. (Absent from bundles
    /// exported before it was published.)
    #[serde(default)]
    pub key_id: String,
    /// `"ed25519"` or `"ecdsa-p256"`.
    pub algorithm: String,
    /// The C2SP verifier key `<name>+<hex key ID>+<base64(type || key)>`.
    pub vkey: String,
    /// The SubjectPublicKeyInfo PEM.
    pub public_key_pem: String,
}

impl PublicKeyInfo {
    /// Describes a verifier.
    ///
    /// # Errors
    /// [`VaultError::KeyEncoding`].
    pub fn from_verifier(v: &NoteVerifier) -> Result<Self, VaultError> {
        Ok(Self {
            name: v.name().to_owned(),
            key_id: format!("{:08x}", v.key_id()),
            algorithm: v.algorithm().as_str().to_owned(),
            vkey: v.vkey(),
            public_key_pem: v.public_key_pem()?,
        })
    }
}

/// One log entry as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The sequence number (leaf index), from 0.
    pub seq: u64,
    /// The leaf: canonical JSON, carried as a JSON string so its bytes are exact.
    pub leaf: String,
    /// `SHA-256(0x00 || leaf)`, lowercase hex.
    pub leaf_hash: String,
    /// `SHA-256(prev chain hash || leaf_hash)`, lowercase hex.
    pub chain_hash: String,
    /// The chain hash of entry `seq - 1`, lowercase hex: required on the first entry
    /// of a bundle that does not start at 0, optional (and checked) elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_chain_hash: Option<String>,
    /// `HMAC-SHA256(secret, u64be(seq) || leaf_hash || chain_hash)`, lowercase hex;
    /// optional, only checkable with the secret ([`verify_hmacs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<String>,
}

impl Entry {
    /// The exported form of an entry the log appended.
    #[must_use]
    pub fn from_appended(leaf: String, appended: &Appended, with_hmac: bool) -> Self {
        Self {
            seq: appended.seq,
            leaf,
            leaf_hash: hex::encode(appended.leaf_hash),
            chain_hash: hex::encode(appended.chain_hash),
            prev_chain_hash: None,
            hmac: with_hmac.then(|| hex::encode(appended.hmac)),
        }
    }
}

/// A consistency proof between two checkpoint sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub size1: u64,
    /// The newer tree size.
    pub size2: u64,
    /// The RFC 6962 §2.1.2 proof, lowercase hex hashes.
    pub proof: Vec<String>,
}

/// An export of entries `[start, start + entries.len())` with the checkpoints that
/// cover them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The log's origin (the first line of every checkpoint).
    pub origin: String,
    /// The log's public keys, for information.
    #[serde(default)]
    pub keys: Vec<PublicKeyInfo>,
    /// The sequence number of the first entry (the tree size before it).
    pub start: u64,
    /// The roots of the maximal complete subtrees covering leaves `[0, start)`, left
    /// to right, lowercase hex (`popcount(start)` of them; empty when `start == 0`).
    #[serde(default)]
    pub prefix_hashes: Vec<String>,
    /// The entries, in sequence order, without gaps.
    pub entries: Vec<Entry>,
    /// Signed checkpoint notes, in non-decreasing size order, each of size in
    /// `[start, end]`; the last one must cover every entry (size `end`).
    pub checkpoints: Vec<String>,
    /// A consistency proof for each pair of consecutive checkpoints of different,
    /// non-zero sizes.
    #[serde(default)]
    pub consistency_proofs: Vec<ConsistencyProof>,
}

impl Bundle {
    /// Parses a bundle from JSON bytes.
    ///
    /// # Errors
    /// [`VaultError::InvalidJson`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, VaultError> {
        serde_json::from_slice(bytes).map_err(|e| VaultError::InvalidJson {
            reason: e.to_string(),
        })
    }

    /// The sequence number after the last entry.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.start + self.entries.len() as u64
    }
}

/// One entry with the proof that a signed checkpoint includes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Always [`RECEIPT_FORMAT`].
    pub format: String,
    /// The log's origin.
    pub origin: String,
    /// The entry.
    pub entry: Entry,
    /// The RFC 6962 §2.1.1 inclusion proof of `entry.seq` in the checkpoint's tree,
    /// lowercase hex, leaf side first.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

impl Receipt {
    /// Parses a receipt from JSON bytes.
    ///
    /// # Errors
    /// [`VaultError::InvalidJson`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, VaultError> {
        serde_json::from_slice(bytes).map_err(|e| VaultError::InvalidJson {
            reason: e.to_string(),
        })
    }

    /// The receipt as a C2SP `tlog-proof@v1` text: the `extra` line carries the leaf
    /// bytes (base64), then the index, the proof hashes (base64) and the checkpoint.
    /// Proof hashes that are not 64 lowercase hex digits are left out (the proof then
    /// fails).
    #[must_use]
    pub fn to_tlog_proof(&self) -> String {
        let mut s = String::from("c2sp.org/tlog-proof@v1\n");
        s.push_str(&format!(
            "extra {}\n",
            B64.encode(self.entry.leaf.as_bytes())
        ));
        s.push_str(&format!("index {}\n", self.entry.seq));
        for p in &self.inclusion_proof {
            if let Some(h) = decode_hash(p) {
                s.push_str(&B64.encode(h));
                s.push('\n');
            }
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }
}

/// A verification failure: the first bad sequence number, when one entry is to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The first sequence number found bad (`None` for a bundle-level problem such as
    /// a bad signature).
    pub seq: Option<u64>,
    /// What is wrong, lowercase.
    pub message: String,
}

impl Failure {
    fn at(seq: u64, message: impl Into<String>) -> Self {
        Self {
            seq: Some(seq),
            message: message.into(),
        }
    }

    fn bundle(message: impl Into<String>) -> Self {
        Self {
            seq: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "entry {seq}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Failure {}

/// What a successful bundle verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The log's origin.
    pub origin: String,
    /// The first sequence number of the bundle.
    pub start: u64,
    /// The sequence number after the last entry (= the size of the last checkpoint).
    pub end: u64,
    /// The number of checkpoints verified.
    pub checkpoints: usize,
    /// The number of consistency proofs verified.
    pub consistency_proofs: usize,
    /// The names of the trusted keys whose signatures verified.
    pub signed_by: Vec<String>,
    /// The name and key ID of each trusted key whose signatures verified (two keys
    /// may share a name).
    pub signers: Vec<KeyRef>,
    /// The tree root at `end`.
    pub root: Hash,
    /// The chain hash of the last entry (`None` for a bundle without entries).
    pub chain_head: Option<Hash>,
}

/// What a successful receipt verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptReport {
    /// The log's origin.
    pub origin: String,
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry's leaf hash, recomputed from its leaf: what the proof proves included.
    pub leaf_hash: Hash,
    /// The size of the checkpoint that includes it.
    pub tree_size: u64,
    /// The checkpoint's root.
    pub root: Hash,
    /// The names of the trusted keys whose signatures verified.
    pub signed_by: Vec<String>,
    /// The name and key ID of each trusted key whose signatures verified.
    pub signers: Vec<KeyRef>,
}

/// Decodes a hash written as 64 lowercase hex digits, the one spelling docs/vault.md
/// allows. `hex` alone also takes uppercase, which would let a document's bytes change
/// without its verification noticing.
fn decode_hash(s: &str) -> Option<Hash> {
    if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok().map(|()| h)
}

fn decode_hashes(v: &[String]) -> Option<Vec<Hash>> {
    v.iter().map(|s| decode_hash(s)).collect()
}

/// How many entries' leaves are checked together (on every core) before the entries
/// are followed in order.
const LEAF_WINDOW: usize = 65_536;

/// `check_leaf` of every entry, in order. Leaves are independent of each other and
/// checking them (parsing, re-encoding, hashing) is most of a bundle's work, so they
/// are checked on every available core; the caller still meets the results, and so
/// the first failure, in sequence order.
fn check_leaves(entries: &[Entry]) -> Vec<Result<Hash, Failure>> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Below a few thousand entries threads cost more than they save.
    check_leaves_on(entries, threads, 4096)
}

/// `check_leaves` on up to `threads` threads, each with at least `least` entries.
fn check_leaves_on(entries: &[Entry], threads: usize, least: usize) -> Vec<Result<Hash, Failure>> {
    let chunk = entries.len().div_ceil(threads.max(1)).max(least.max(1));
    if chunk >= entries.len() {
        return entries.iter().map(check_leaf).collect();
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = entries
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(check_leaf).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// Checks that an entry's `hmac`, where present, is well-formed (an HMAC-SHA256 is 32
/// bytes). Its value needs the workspace secret ([`verify_hmacs`]), so offline this is
/// all that can be checked of it; without it a garbled `hmac` would pass unnoticed.
fn check_hmac_form(e: &Entry) -> Result<(), Failure> {
    match e.hmac.as_deref() {
        Some(tag) if decode_hash(tag).is_none() => Err(Failure::at(
            e.seq,
            "`hmac` is not 64 lowercase hex digits (its value is not checkable offline, its form is)",
        )),
        _ => Ok(()),
    }
}

/// Checks one entry's leaf encoding and leaf hash; returns the leaf hash.
fn check_leaf(e: &Entry) -> Result<Hash, Failure> {
    let leaf = parse_canonical(e.leaf.as_bytes())
        .map_err(|err| Failure::at(e.seq, format!("leaf is not valid canonical json: {err}")))?;
    // A leaf that says where it sits must sit there (the signer wrote it so; a bundle
    // that moved it would also fail its hashes, but this names what is wrong).
    if let Some(said) = leaf.get("seq")
        && said.as_u64() != Some(e.seq)
    {
        return Err(Failure::at(e.seq, format!("the leaf says it is entry {said}")));
    }
    let computed = leaf_hash(e.leaf.as_bytes());
    let given = decode_hash(&e.leaf_hash)
        .ok_or_else(|| Failure::at(e.seq, "`leaf_hash` is not 64 lowercase hex digits"))?;
    if !hashes_equal(&computed, &given) {
        return Err(Failure::at(
            e.seq,
            "leaf hash does not match the leaf bytes",
        ));
    }
    Ok(computed)
}

/// The trusted keys that signed the checkpoints verified so far, each once.
#[derive(Default)]
struct Signers {
    names: Vec<String>,
    keys: Vec<KeyRef>,
}

impl Signers {
    fn add(&mut self, keys: Vec<KeyRef>) {
        for k in keys {
            if !self.names.contains(&k.name) {
                self.names.push(k.name.clone());
            }
            if !self.keys.contains(&k) {
                self.keys.push(k);
            }
        }
    }
}

fn open_checkpoint(
    i: usize,
    note: &str,
    origin: &str,
    keys: &[NoteVerifier],
    signers: &mut Signers,
) -> Result<Checkpoint, Failure> {
    let (cp, signed) = Checkpoint::open_keys(note, keys)
        .map_err(|e| Failure::bundle(format!("checkpoint {i}: {e}")))?;
    if cp.origin != origin {
        return Err(Failure::bundle(format!(
            "checkpoint {i}: origin `{}` is not the log's origin `{origin}`",
            cp.origin
        )));
    }
    signers.add(signed);
    Ok(cp)
}

/// The failure of a bundle whose checkpoint of `size` lies past its last entry.
fn truncated(size: u64, end: u64) -> Failure {
    Failure::at(
        end,
        format!(
            "bundle is truncated: a checkpoint covers {size} entries but the bundle ends before entry {end}"
        ),
    )
}

/// The consistency proofs by `(size1, size2)`, so that each pair of checkpoints finds
/// its proof in constant time: a linear search per pair made a bundle with many
/// checkpoints (or many junk proofs) quadratic. Two proofs for the same pair make the
/// bundle ambiguous (which one was meant?), so that is a failure, not a choice.
fn index_consistency_proofs(
    proofs: &[ConsistencyProof],
) -> Result<HashMap<(u64, u64), &ConsistencyProof>, Failure> {
    let mut by_sizes = HashMap::with_capacity(proofs.len());
    for p in proofs {
        if by_sizes.insert((p.size1, p.size2), p).is_some() {
            return Err(Failure::bundle(format!(
                "`consistency_proofs` has two proofs from size {} to size {}",
                p.size1, p.size2
            )));
        }
    }
    Ok(by_sizes)
}

/// How often [`verify_bundle`] reports progress, in entries.
const PROGRESS_EVERY: u64 = 1 << 16;

/// Verifies a bundle offline against trusted public keys.
///
/// In order: the format; every checkpoint's signatures (c2sp.org/signed-note rules,
/// at least one trusted signature each), origin, size order and size within
/// `[start, end]` (a larger one means the bundle is truncated); the consistency proof
/// between each pair of consecutive checkpoints (looked up by its two sizes; two
/// proofs for one pair are a failure); then, streaming over the entries: sequence
/// numbers without gaps, each leaf canonical JSON, each leaf hash recomputed, each
/// chain link recomputed, and the Merkle root recomputed and compared with every
/// checkpoint when the tree reaches its size. Finally the last checkpoint must cover
/// the last entry. Every step is linear in the size of the bundle.
///
/// `progress(done, total)` is called every 65,536 entries and at the end.
///
/// # Errors
/// The first [`Failure`]; entry-level failures name the first bad sequence number.
pub fn verify_bundle(
    bundle: &Bundle,
    keys: &[NoteVerifier],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, Failure> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(Failure::bundle(format!(
            "unknown bundle format `{}`, expected `{BUNDLE_FORMAT}`",
            bundle.format
        )));
    }
    if keys.is_empty() {
        return Err(Failure::bundle("no trusted public key given"));
    }
    let start = bundle.start;
    let total = bundle.entries.len() as u64;
    let end = start
        .checked_add(total)
        .ok_or_else(|| Failure::bundle("`start` is out of range"))?;

    // 1. Checkpoints: signatures, origin, order.
    if bundle.checkpoints.is_empty() {
        return Err(Failure::bundle(
            "bundle has no checkpoint: nothing is signed",
        ));
    }
    let mut signers = Signers::default();
    let mut cps = Vec::with_capacity(bundle.checkpoints.len());
    // The size of the first checkpoint past the last entry, if any.
    let mut past_end = None;
    for (i, note) in bundle.checkpoints.iter().enumerate() {
        let cp = open_checkpoint(i, note, &bundle.origin, keys, &mut signers)?;
        if let Some(prev) = cps.last().map(|c: &Checkpoint| c.size)
            && cp.size < prev
        {
            return Err(Failure::bundle(format!(
                "checkpoint {i}: size {} is smaller than the previous checkpoint's {prev}",
                cp.size
            )));
        }
        if cp.size < start {
            return Err(Failure::bundle(format!(
                "checkpoint {i}: size {} ends before the bundle's first entry {start}",
                cp.size
            )));
        }
        // A checkpoint past the last entry can never be reached: the bundle is
        // truncated. Stop here, so that no later checkpoint is opened and no
        // consistency proof is checked for a tree the bundle cannot show. The failure
        // is reported after the entries, so that a bad entry before `end` (a deleted
        // one, say) is still the one named.
        if cp.size > end {
            past_end = Some(cp.size);
            break;
        }
        cps.push(cp);
    }

    // 2. Consistency between consecutive checkpoints (RFC 6962 §2.1.2).
    let proofs = index_consistency_proofs(&bundle.consistency_proofs)?;
    let mut consistency_checked = 0;
    for pair in cps.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.size == b.size || a.size == 0 {
            continue;
        }
        let p = proofs
            .get(&(a.size, b.size))
            .ok_or_else(|| {
                Failure::bundle(format!(
                    "missing consistency proof from size {} to size {}",
                    a.size, b.size
                ))
            })?;
        let proof = decode_hashes(&p.proof).ok_or_else(|| {
            Failure::bundle(format!(
                "`consistency_proofs` {}..{} has a hash that is not 64 lowercase hex digits",
                a.size, b.size
            ))
        })?;
        verify_consistency(a.size, b.size, &a.root, &b.root, &proof).map_err(|e| {
            Failure::bundle(format!(
                "checkpoints of sizes {} and {} are not consistent: {e}",
                a.size, b.size
            ))
        })?;
        consistency_checked += 1;
    }

    // 3. The tree before the first entry.
    let prefix = decode_hashes(&bundle.prefix_hashes)
        .ok_or_else(|| Failure::bundle("`prefix_hashes` has a hash that is not 64 lowercase hex digits"))?;
    let mut frontier = Frontier::from_parts(start, prefix)
        .map_err(|e| Failure::bundle(format!("`prefix_hashes` does not fit `start`: {e}")))?;

    // 4. Stream over the entries.
    let mut next_cp = 0usize;
    // The first sequence number not yet covered by a matching checkpoint root.
    let mut covered_to = start;
    let check_roots = |frontier: &Frontier, next_cp: &mut usize, covered_to: &mut u64| {
        while let Some(cp) = cps.get(*next_cp) {
            if cp.size != frontier.size() {
                break;
            }
            if !hashes_equal(&frontier.root(), &cp.root) {
                let msg = if *covered_to == cp.size {
                    format!(
                        "the tree of size {} does not match the signed checkpoint (`prefix_hashes` is wrong)",
                        cp.size
                    )
                } else {
                    format!(
                        "tree root at size {} does not match the signed checkpoint: entries {}..{} differ from what was signed",
                        cp.size, covered_to, cp.size
                    )
                };
                return Err(Failure {
                    seq: Some(*covered_to),
                    message: msg,
                });
            }
            *covered_to = cp.size;
            *next_cp += 1;
        }
        Ok(())
    };
    check_roots(&frontier, &mut next_cp, &mut covered_to)?;

    let mut prev_chain = GENESIS_CHAIN_HASH;
    // Leaves are checked a window at a time (in parallel within it), so progress moves
    // and a bad entry early in a bundle stops the work soon after it.
    let leaf_hashes = bundle
        .entries
        .chunks(LEAF_WINDOW)
        .flat_map(check_leaves);
    for (pos, (e, leaf)) in bundle.entries.iter().zip(leaf_hashes).enumerate() {
        let expected = start + pos as u64;
        if e.seq != expected {
            // Entry `expected` further on is out of order, not missing.
            let later = || bundle.entries[pos + 1..].iter().any(|later| later.seq == expected);
            return Err(if e.seq > expected && !later() {
                Failure::at(
                    expected,
                    format!(
                        "entry {expected} is missing (the next entry present is {})",
                        e.seq
                    ),
                )
            } else {
                Failure::at(
                    expected,
                    format!(
                        "expected entry {expected}, found entry {} (entries out of order or duplicated)",
                        e.seq
                    ),
                )
            });
        }
        let lh = leaf?;
        check_hmac_form(e)?;
        let given_prev = match &e.prev_chain_hash {
            Some(s) => Some(decode_hash(s).ok_or_else(|| {
                Failure::at(expected, "`prev_chain_hash` is not 64 lowercase hex digits")
            })?),
            None => None,
        };
        if pos == 0 && start > 0 {
            prev_chain = given_prev.ok_or_else(|| {
                Failure::at(
                    expected,
                    "`prev_chain_hash` is required on the first entry of a bundle that does not start at 0",
                )
            })?;
        } else if let Some(p) = given_prev
            && !hashes_equal(&p, &prev_chain)
        {
            return Err(Failure::at(
                expected,
                "`prev_chain_hash` does not match the previous entry's chain hash",
            ));
        }
        let ch = chain_hash(&prev_chain, &lh);
        let given = decode_hash(&e.chain_hash)
            .ok_or_else(|| Failure::at(expected, "`chain_hash` is not 64 lowercase hex digits"))?;
        if !hashes_equal(&ch, &given) {
            return Err(Failure::at(
                expected,
                "chain hash does not match the previous chain hash and this leaf hash",
            ));
        }
        prev_chain = ch;
        frontier
            .push(lh)
            .map_err(|err| Failure::at(expected, err.to_string()))?;
        check_roots(&frontier, &mut next_cp, &mut covered_to)?;
        let done = pos as u64 + 1;
        if done.is_multiple_of(PROGRESS_EVERY) {
            progress(done, total);
        }
    }

    // 5. Every checkpoint reached (those kept are all within `end`, so only the one
    // step 1 stopped at can be missed); every entry covered.
    if let Some(size) = past_end.or_else(|| cps.get(next_cp).map(|c| c.size)) {
        return Err(truncated(size, end));
    }
    let last_size = cps.last().map_or(start, |c| c.size);
    if last_size < end {
        return Err(Failure::at(
            last_size,
            format!("entries {last_size}..{end} are not covered by any signed checkpoint"),
        ));
    }
    progress(total, total);
    Ok(Report {
        origin: bundle.origin.clone(),
        start,
        end,
        checkpoints: cps.len(),
        consistency_proofs: consistency_checked,
        signed_by: signers.names,
        signers: signers.keys,
        root: frontier.root(),
        chain_head: (total > 0).then_some(prev_chain),
    })
}

/// Checks that `next` carries on the log exactly where the bundles verified before it
/// ended (`before`: the report of the last of them, with the chain head of the last
/// entry any of them had): the same origin, the next sequence number, a tree prefix
/// whose root is the root already verified, and a first entry chained onto the last
/// one. Each bundle is still verified on its own with [`verify_bundle`]; this only
/// links them, so that an export in several parts is checked as one log.
///
/// # Errors
/// A [`Failure`] naming the first sequence number of `next` (or the bundle) when it
/// does not continue `before`.
pub fn check_continues(before: &Report, next: &Bundle) -> Result<(), Failure> {
    if next.origin != before.origin {
        return Err(Failure::bundle(format!(
            "the bundle is of log `{}`, the bundles before it of `{}`",
            next.origin, before.origin
        )));
    }
    if next.start != before.end {
        return Err(Failure::at(
            before.end.min(next.start),
            format!(
                "the bundle starts at entry {}, but the entry after the bundles before it is {}",
                next.start, before.end
            ),
        ));
    }
    let prefix = decode_hashes(&next.prefix_hashes)
        .ok_or_else(|| Failure::bundle("`prefix_hashes` has a hash that is not 64 lowercase hex digits"))?;
    let tree = Frontier::from_parts(next.start, prefix)
        .map_err(|e| Failure::bundle(format!("`prefix_hashes` does not fit `start`: {e}")))?;
    if !hashes_equal(&tree.root(), &before.root) {
        return Err(Failure::at(
            next.start,
            "`prefix_hashes` do not give the tree the bundles before it end with",
        ));
    }
    if let (Some(head), Some(first)) = (&before.chain_head, next.entries.first()) {
        let given = first.prev_chain_hash.as_deref().and_then(decode_hash);
        if !given.is_some_and(|g| hashes_equal(&g, head)) {
            return Err(Failure::at(
                next.start,
                "the first entry is not chained onto the last entry of the bundles before it",
            ));
        }
    }
    Ok(())
}

/// Verifies a receipt offline: the checkpoint's signatures and origin, the leaf's
/// encoding and hash, and the inclusion proof of the leaf in the checkpoint's tree.
/// The chain hash cannot be checked from one entry, nor the HMAC without the secret:
/// of those (and of `prev_chain_hash`) only the form is checked, where present.
///
/// # Errors
/// A [`Failure`] naming the entry when the entry or proof is bad.
pub fn verify_receipt(receipt: &Receipt, keys: &[NoteVerifier]) -> Result<ReceiptReport, Failure> {
    if receipt.format != RECEIPT_FORMAT {
        return Err(Failure::bundle(format!(
            "unknown receipt format `{}`, expected `{RECEIPT_FORMAT}`",
            receipt.format
        )));
    }
    if keys.is_empty() {
        return Err(Failure::bundle("no trusted public key given"));
    }
    let mut signers = Signers::default();
    let cp = open_checkpoint(
        0,
        &receipt.checkpoint,
        &receipt.origin,
        keys,
        &mut signers,
    )?;
    let seq = receipt.entry.seq;
    if seq >= cp.size {
        return Err(Failure::at(
            seq,
            format!("entry is not covered by the checkpoint of size {}", cp.size),
        ));
    }
    let lh = check_leaf(&receipt.entry)?;
    // The chain hashes and the HMAC of one entry cannot be checked (they need the
    // entries before it and the secret), but a garbled one must not pass silently.
    if decode_hash(&receipt.entry.chain_hash).is_none() {
        return Err(Failure::at(seq, "`chain_hash` is not 64 lowercase hex digits"));
    }
    if receipt
        .entry
        .prev_chain_hash
        .as_deref()
        .is_some_and(|p| decode_hash(p).is_none())
    {
        return Err(Failure::at(
            seq,
            "`prev_chain_hash` is not 64 lowercase hex digits",
        ));
    }
    check_hmac_form(&receipt.entry)?;
    let proof = decode_hashes(&receipt.inclusion_proof).ok_or_else(|| {
        Failure::at(
            seq,
            "`inclusion_proof` has a hash that is not 64 lowercase hex digits",
        )
    })?;
    verify_inclusion(seq, cp.size, &lh, &proof, &cp.root)
        .map_err(|e| Failure::at(seq, format!("inclusion proof does not verify: {e}")))?;
    Ok(ReceiptReport {
        origin: cp.origin,
        seq,
        leaf_hash: lh,
        tree_size: cp.size,
        root: cp.root,
        signed_by: signers.names,
        signers: signers.keys,
    })
}

/// Checks the HMAC of every entry with the workspace secret (server side: the secret
/// never leaves the server). Every entry must carry an `hmac`. The HMAC is checked
/// over the entry's `leaf_hash` and `chain_hash` fields as given; [`verify_bundle`]
/// checks that those match the leaves. Returns the number of entries checked.
///
/// # Errors
/// A [`Failure`] naming the first entry whose HMAC is missing or wrong.
pub fn verify_hmacs(entries: &[Entry], secret: &[u8]) -> Result<u64, Failure> {
    for e in entries {
        let lh = decode_hash(&e.leaf_hash)
            .ok_or_else(|| Failure::at(e.seq, "`leaf_hash` is not 64 lowercase hex digits"))?;
        let ch = decode_hash(&e.chain_hash)
            .ok_or_else(|| Failure::at(e.seq, "`chain_hash` is not 64 lowercase hex digits"))?;
        let tag = e
            .hmac
            .as_deref()
            .ok_or_else(|| Failure::at(e.seq, "entry has no `hmac`"))?;
        let tag = decode_hash(tag)
            .ok_or_else(|| Failure::at(e.seq, "`hmac` is not 64 lowercase hex digits"))?;
        if !verify_entry_hmac(secret, e.seq, &lh, &ch, &tag) {
            return Err(Failure::at(e.seq, "hmac does not match"));
        }
    }
    Ok(entries.len() as u64)
}

fn checkpoint_of_note(note: &str) -> Result<Checkpoint, VaultError> {
    let (text, _) = split_note(note)?;
    Checkpoint::parse(text)
}

/// Assembles a bundle: computes `prefix_hashes` for `start` and the consistency proofs
/// between consecutive checkpoints from the stored hashes. `entries` must start at
/// `start` (with `prev_chain_hash` set on the first one when `start > 0`);
/// `checkpoint_notes` are signed notes in size order. Nothing is verified here.
///
/// # Errors
/// [`VaultError::MalformedNote`], [`VaultError::MalformedCheckpoint`], reader errors.
pub fn build_bundle<R: HashReader + ?Sized>(
    origin: &str,
    keys: Vec<PublicKeyInfo>,
    start: u64,
    entries: Vec<Entry>,
    checkpoint_notes: Vec<String>,
    reader: &R,
) -> Result<Bundle, VaultError> {
    let sizes = checkpoint_notes
        .iter()
        .map(|n| checkpoint_of_note(n).map(|c| c.size))
        .collect::<Result<Vec<_>, _>>()?;
    let mut consistency_proofs = Vec::new();
    for w in sizes.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a == b || a == 0 {
            continue;
        }
        let proof = prove_consistency(a, b, reader)?;
        consistency_proofs.push(ConsistencyProof {
            size1: a,
            size2: b,
            proof: proof.iter().map(hex::encode).collect(),
        });
    }
    Ok(Bundle {
        format: BUNDLE_FORMAT.to_owned(),
        origin: origin.to_owned(),
        keys,
        start,
        prefix_hashes: prefix_hashes(start, reader)?
            .iter()
            .map(hex::encode)
            .collect(),
        entries,
        checkpoints: checkpoint_notes,
        consistency_proofs,
    })
}

/// Assembles a receipt: the inclusion proof of `entry.seq` in the tree of the
/// checkpoint `checkpoint_note` (a signed note) from the stored hashes.
///
/// # Errors
/// [`VaultError::MalformedNote`], [`VaultError::MalformedCheckpoint`],
/// [`VaultError::IndexOutOfRange`], reader errors.
pub fn build_receipt<R: HashReader + ?Sized>(
    origin: &str,
    entry: Entry,
    checkpoint_note: String,
    reader: &R,
) -> Result<Receipt, VaultError> {
    let cp = checkpoint_of_note(&checkpoint_note)?;
    let proof = prove_inclusion(entry.seq, cp.size, reader)?;
    Ok(Receipt {
        format: RECEIPT_FORMAT.to_owned(),
        origin: origin.to_owned(),
        entry,
        inclusion_proof: proof.iter().map(hex::encode).collect(),
        checkpoint: checkpoint_note,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(seq: u64, leaf: String) -> Entry {
        let hash = hex::encode(leaf_hash(leaf.as_bytes()));
        Entry { seq, leaf, leaf_hash: hash.clone(), chain_hash: hash, prev_chain_hash: None, hmac: None }
    }

    #[test]
    fn leaves_checked_on_several_threads_give_the_results_of_one_in_order() {
        let mut entries: Vec<Entry> = (0..1000).map(|i| entry(i, format!("{{\"n\":{i}}}"))).collect();
        entries[130].leaf = "{\"n\": 130}".into(); // whitespace: not canonical
        entries[611].leaf_hash = "00".repeat(32); // a hash that does not match
        entries[900].leaf = "{\"n\":1.5}".into(); // a float
        let one = check_leaves_on(&entries, 1, 1);
        for (threads, least) in [(2, 1), (3, 1), (7, 10), (64, 1), (4, 5000)] {
            assert_eq!(check_leaves_on(&entries, threads, least), one, "{threads} threads, at least {least} each");
        }
        let failed: Vec<u64> = one.iter().filter_map(|r| r.as_ref().err()).filter_map(|f| f.seq).collect();
        assert_eq!(failed, [130, 611, 900]);
        assert_eq!(check_leaves_on(&[], 3, 1), vec![]);
    }
}
