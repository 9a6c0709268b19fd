//! RFC 6962 / RFC 9162 Merkle tree math over a storage-agnostic "stored hashes" layout.
//!
//! This is the pure Merkle layer: no I/O, no tile encoding, no signing.
//!
//! # Hashing (RFC 6962 §2.1, RFC 9162 §2.1.1)
//!
//! - leaf hash: `SHA-256(0x00 || leaf bytes)`
//! - interior node: `SHA-256(0x01 || left || right)`
//! - the root of the empty tree: `SHA-256("")`
//! - `MTH(D[n])` for `n > 1` splits at `k`, the largest power of two smaller than `n`:
//!   `node(MTH(D[0:k]), MTH(D[k:n]))`.
//!
//! # Stored hashes
//!
//! The log persists, for every *complete* (perfect, aligned) subtree, its hash, once,
//! at the moment the subtree becomes complete. The hash of the subtree at `level` `L`
//! (covering `2^L` leaves) and position `n` (covering leaves `[n*2^L, (n+1)*2^L)`) lives
//! at the storage index [`stored_hash_index`]`(L, n)`. Indexes are dense and
//! append-only: appending leaf `n` writes its leaf hash and then the hashes of the
//! subtrees it completes, at consecutive indexes (the same numbering as Go's
//! `golang.org/x/mod/sumdb/tlog`). A tree of `n` leaves has
//! [`stored_hash_count`]`(n) = 2n - popcount(n)` stored hashes.
//!
//! Every tree hash, inclusion proof and consistency proof for any size up to the
//! current one is a fold of `O(log n)` stored hashes, so a server never rebuilds the
//! tree: it reads the few stored hashes a request needs through a [`HashReader`].
//!
//! All hash comparisons are constant time (`subtle`).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::VaultError;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The length of a [`Hash`](type@Hash) in bytes.
pub const HASH_SIZE: usize = 32;

/// The largest number of leaves a log may hold (2^62), so that every storage index
/// (`< 2^63`) fits an `i64` column.
pub const MAX_LOG_SIZE: u64 = 1 << 62;

/// `SHA-256(0x00 || data)`: the hash of a leaf (RFC 6962 §2.1).
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node (RFC 6962 §2.1).
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `SHA-256("")`: the root of the empty tree (RFC 6962 §2.1).
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// Constant-time equality of two byte strings (lengths are not secret).
#[must_use]
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The storage index of the hash of the complete subtree at `level` (covering `2^level`
/// leaves) and position `n` (leaves `[n << level, (n + 1) << level)`).
///
/// The hash of level `L`, position `n` is stored right after level `L-1`'s position
/// `2n+1` (the subtree's right child, whose append completes it). Reduced to level 0
/// that is the position after the leaf `m = ((n + 1) << L) - 1`, the subtree's last
/// leaf, whose own hash is stored at `m + m/2 + m/4 + … = 2m - popcount(m)`; the `L`
/// parents completed by that leaf follow it in level order.
#[must_use]
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    let last_leaf = ((n + 1) << level) - 1;
    2 * last_leaf - u64::from(last_leaf.count_ones()) + u64::from(level)
}

/// The number of stored hashes of a tree with `n` leaves: `2n - popcount(n)`.
#[must_use]
pub fn stored_hash_count(n: u64) -> u64 {
    2 * n - u64::from(n.count_ones())
}

/// Reads stored hashes by storage index (see [`stored_hash_index`]).
///
/// Implementations return exactly one hash per requested index, in the requested
/// order, or [`VaultError::MissingHash`].
pub trait HashReader {
    /// Returns the stored hashes at `indexes`, in that order.
    ///
    /// # Errors
    /// [`VaultError::MissingHash`] for an index that is not stored, or a storage error.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, VaultError>;
}

/// A slice of stored hashes indexed by position: `slice[i]` is stored hash `i`.
impl HashReader for [Hash] {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, VaultError> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.get(i))
                    .copied()
                    .ok_or(VaultError::MissingHash { index: i })
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, VaultError> {
        self.as_slice().read_hashes(indexes)
    }
}

/// A sparse map of stored hashes, e.g. the ones an async store fetched for the
/// indexes of [`inclusion_proof_indexes`] or [`consistency_proof_indexes`].
impl HashReader for std::collections::BTreeMap<u64, Hash> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, VaultError> {
        indexes
            .iter()
            .map(|i| {
                self.get(i)
                    .copied()
                    .ok_or(VaultError::MissingHash { index: *i })
            })
            .collect()
    }
}

impl<S: std::hash::BuildHasher> HashReader for std::collections::HashMap<u64, Hash, S> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, VaultError> {
        indexes
            .iter()
            .map(|i| {
                self.get(i)
                    .copied()
                    .ok_or(VaultError::MissingHash { index: *i })
            })
            .collect()
    }
}

impl<R: HashReader + ?Sized> HashReader for &R {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, VaultError> {
        (**self).read_hashes(indexes)
    }
}

/// A reader over persisted hashes plus hashes appended since, not yet persisted.
///
/// Stored hashes are append-only and dense, so the pending ones are the contiguous
/// indexes `base_count..base_count + pending.len()`. Use it to serve a proof for an
/// entry of a batch that is still being written.
#[derive(Debug, Clone, Copy)]
pub struct OverlayReader<'a, R: ?Sized> {
    base: &'a R,
    base_count: u64,
    pending: &'a [Hash],
}

impl<'a, R: HashReader + ?Sized> OverlayReader<'a, R> {
    /// `base` holds stored hashes `0..base_count`; `pending[i]` is stored hash
    /// `base_count + i`.
    #[must_use]
    pub fn new(base: &'a R, base_count: u64, pending: &'a [Hash]) -> Self {
        Self {
            base,
            base_count,
            pending,
        }
    }
}

impl<R: HashReader + ?Sized> HashReader for OverlayReader<'_, R> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, VaultError> {
        let from_base: Vec<u64> = indexes
            .iter()
            .copied()
            .filter(|&i| i < self.base_count)
            .collect();
        let base = if from_base.is_empty() {
            Vec::new()
        } else {
            self.base.read_hashes(&from_base)?
        };
        if base.len() != from_base.len() {
            return Err(VaultError::ReaderCount {
                expected: from_base.len(),
                got: base.len(),
            });
        }
        let mut base = base.into_iter();
        let mut out = Vec::with_capacity(indexes.len());
        for &i in indexes {
            if i < self.base_count {
                out.push(base.next().ok_or(VaultError::MissingHash { index: i })?);
            } else {
                let h = usize::try_from(i - self.base_count)
                    .ok()
                    .and_then(|p| self.pending.get(p))
                    .ok_or(VaultError::MissingHash { index: i })?;
                out.push(*h);
            }
        }
        Ok(out)
    }
}

/// Reads `indexes` and checks the reader kept its contract on the count.
fn read_exact<R: HashReader + ?Sized>(
    reader: &R,
    indexes: &[u64],
) -> Result<Vec<Hash>, VaultError> {
    let hashes = reader.read_hashes(indexes)?;
    if hashes.len() == indexes.len() {
        Ok(hashes)
    } else {
        Err(VaultError::ReaderCount {
            expected: indexes.len(),
            got: hashes.len(),
        })
    }
}

fn check_size(size: u64) -> Result<(), VaultError> {
    if size > MAX_LOG_SIZE {
        Err(VaultError::TreeTooLarge { size })
    } else {
        Ok(())
    }
}

/// The largest power of two strictly smaller than `n` (`n >= 2`), RFC 6962 §2.1's `k`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The stored-hash indexes of the maximal complete subtrees that make up `[lo, hi)`,
/// left to right. Every range the RFC 6962 recursion produces starts at a multiple of
/// a power of two at least as large as its first subtree, so the greedy split is the
/// RFC one and folding the hashes right to left gives `MTH(D[lo:hi])`.
fn subtree_indexes(mut lo: u64, hi: u64, out: &mut Vec<u64>) {
    while lo < hi {
        let size = hi - lo;
        let mut level = 63 - size.leading_zeros();
        if lo != 0 {
            level = level.min(lo.trailing_zeros());
        }
        out.push(stored_hash_index(level, lo >> level));
        lo += 1 << level;
    }
}

/// Folds complete-subtree hashes (left to right) into the hash of their range.
fn fold_right(hashes: &[Hash]) -> Hash {
    let mut iter = hashes.iter().rev();
    match iter.next() {
        None => empty_root(),
        Some(last) => iter.fold(*last, |acc, left| node_hash(left, &acc)),
    }
}

/// Reads the hashes of several ranges `[lo, hi)` with one call to the reader.
fn range_hashes<R: HashReader + ?Sized>(
    ranges: &[(u64, u64)],
    reader: &R,
) -> Result<Vec<Hash>, VaultError> {
    let mut indexes = Vec::new();
    let mut bounds = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        let start = indexes.len();
        subtree_indexes(lo, hi, &mut indexes);
        bounds.push((start, indexes.len()));
    }
    let hashes = read_exact(reader, &indexes)?;
    Ok(bounds
        .into_iter()
        .map(|(a, b)| fold_right(&hashes[a..b]))
        .collect())
}

/// The stored hashes to persist when appending record `n` whose leaf hash is
/// `leaf_hash`: the leaf hash itself, then one hash for each subtree the leaf completes
/// (`trailing_ones(n)` of them), lowest level first. They belong at the consecutive
/// indexes starting at [`stored_hash_index`]`(0, n)`.
///
/// `reader` must hold the stored hashes of records `0..n`; it is asked only for the
/// left siblings of the completed subtrees (`O(log n)` reads). [`Frontier::push_stored`]
/// computes the same hashes without a reader.
///
/// # Errors
/// [`VaultError::LogFull`]; reader errors.
pub fn stored_hashes_for_record<R: HashReader + ?Sized>(
    n: u64,
    leaf_hash: Hash,
    reader: &R,
) -> Result<Vec<Hash>, VaultError> {
    if n >= MAX_LOG_SIZE {
        return Err(VaultError::LogFull);
    }
    let completed = n.trailing_ones();
    // Level i's left sibling is the complete subtree at position (n >> i) - 1.
    let indexes: Vec<u64> = (0..completed)
        .map(|i| stored_hash_index(i, (n >> i) - 1))
        .collect();
    let siblings = read_exact(reader, &indexes)?;
    let mut out = Vec::with_capacity(siblings.len() + 1);
    let mut h = leaf_hash;
    out.push(h);
    for left in &siblings {
        h = node_hash(left, &h);
        out.push(h);
    }
    Ok(out)
}

/// The root of the tree of the first `size` leaves (`SHA-256("")` for `size == 0`),
/// from `popcount(size)` stored hashes.
///
/// # Errors
/// [`VaultError::TreeTooLarge`]; reader errors.
pub fn tree_hash<R: HashReader + ?Sized>(size: u64, reader: &R) -> Result<Hash, VaultError> {
    check_size(size)?;
    if size == 0 {
        return Ok(empty_root());
    }
    Ok(fold_right(&prefix_hashes(size, reader)?))
}

/// The hashes of the maximal complete subtrees covering leaves `[0, size)`, left to
/// right (the tree's "compact range" or frontier). Used to start a [`Frontier`] or a
/// bundle that does not begin at leaf 0.
///
/// # Errors
/// [`VaultError::TreeTooLarge`]; reader errors.
pub fn prefix_hashes<R: HashReader + ?Sized>(
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, VaultError> {
    read_exact(reader, &tree_hash_indexes(size)?)
}

/// The stored-hash indexes [`tree_hash`] and [`prefix_hashes`] read for `size`.
///
/// # Errors
/// [`VaultError::TreeTooLarge`].
pub fn tree_hash_indexes(size: u64) -> Result<Vec<u64>, VaultError> {
    check_size(size)?;
    let mut idx = Vec::new();
    subtree_indexes(0, size, &mut idx);
    Ok(idx)
}

/// The stored-hash indexes [`prove_inclusion`] reads, so that a store can fetch them in
/// one query and answer from a map.
///
/// # Errors
/// [`VaultError::IndexOutOfRange`], [`VaultError::TreeTooLarge`].
pub fn inclusion_proof_indexes(index: u64, size: u64) -> Result<Vec<u64>, VaultError> {
    check_size(size)?;
    if index >= size {
        return Err(VaultError::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    inclusion_ranges(index, 0, size, &mut ranges);
    Ok(ranges_indexes(&ranges))
}

/// The stored-hash indexes [`prove_consistency`] reads.
///
/// # Errors
/// The size errors of [`prove_consistency`].
pub fn consistency_proof_indexes(size1: u64, size2: u64) -> Result<Vec<u64>, VaultError> {
    Ok(ranges_indexes(&consistency_ranges_checked(size1, size2)?))
}

fn ranges_indexes(ranges: &[(u64, u64)]) -> Vec<u64> {
    let mut idx = Vec::new();
    for &(lo, hi) in ranges {
        subtree_indexes(lo, hi, &mut idx);
    }
    idx
}

fn consistency_ranges_checked(size1: u64, size2: u64) -> Result<Vec<(u64, u64)>, VaultError> {
    check_size(size2)?;
    if size1 > size2 {
        return Err(VaultError::InvalidTreeSizes { size1, size2 });
    }
    if size1 == 0 {
        return Err(VaultError::EmptyTreeConsistency);
    }
    let mut ranges = Vec::new();
    consistency_ranges(size1, 0, size2, true, &mut ranges);
    Ok(ranges)
}

/// The node ranges of `PATH(index, D[lo:hi])`, RFC 6962 §2.1.1, leaf side first.
fn inclusion_ranges(index: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    if hi - lo <= 1 {
        return;
    }
    let k = split_point(hi - lo);
    if index < lo + k {
        inclusion_ranges(index, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        inclusion_ranges(index, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// The node ranges of `SUBPROOF(m, D[lo:hi], b)`, RFC 6962 §2.1.2.
fn consistency_ranges(m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
    if m == hi {
        if !complete {
            out.push((lo, hi));
        }
        return;
    }
    let k = split_point(hi - lo);
    if m <= lo + k {
        consistency_ranges(m, lo, lo + k, complete, out);
        out.push((lo + k, hi));
    } else {
        consistency_ranges(m, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

/// The number of hashes in an inclusion proof for `index` in a tree of `size`
/// (`index < size`).
#[must_use]
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let mut r = Vec::new();
    inclusion_ranges(index, 0, size, &mut r);
    r.len()
}

/// The number of hashes in a consistency proof from `size1` to `size2`
/// (`0 < size1 <= size2`).
#[must_use]
pub fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let mut r = Vec::new();
    consistency_ranges(size1, 0, size2, true, &mut r);
    r.len()
}

/// The RFC 6962 §2.1.1 audit path of leaf `index` in the tree of the first `size`
/// leaves, sibling of the leaf first. Reads `O(log size)` stored hashes.
///
/// # Errors
/// [`VaultError::IndexOutOfRange`] unless `index < size`,
/// [`VaultError::TreeTooLarge`]; reader errors.
pub fn prove_inclusion<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, VaultError> {
    check_size(size)?;
    if index >= size {
        return Err(VaultError::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    inclusion_ranges(index, 0, size, &mut ranges);
    range_hashes(&ranges, reader)
}

/// The RFC 6962 §2.1.2 consistency proof from the tree of `size1` leaves to the tree of
/// `size2` leaves. Empty when the sizes are equal. Reads `O(log size2)` stored hashes.
///
/// # Errors
/// [`VaultError::InvalidTreeSizes`] when `size1 > size2`,
/// [`VaultError::EmptyTreeConsistency`] when `size1 == 0`,
/// [`VaultError::TreeTooLarge`]; reader errors.
pub fn prove_consistency<R: HashReader + ?Sized>(
    size1: u64,
    size2: u64,
    reader: &R,
) -> Result<Vec<Hash>, VaultError> {
    range_hashes(&consistency_ranges_checked(size1, size2)?, reader)
}

fn proof_hash<P: AsRef<[u8]>>(p: &P) -> Result<Hash, VaultError> {
    let b = p.as_ref();
    Hash::try_from(b).map_err(|_| VaultError::BadHashLength {
        what: "proof hash",
        len: b.len(),
    })
}

/// Recomputes the root from a leaf hash and its inclusion proof
/// (RFC 9162 §2.1.3.2), checking `index < size`, a 32-byte leaf hash and a proof of
/// exactly the length the tree shape implies.
///
/// # Errors
/// [`VaultError::IndexOutOfRange`], [`VaultError::BadHashLength`],
/// [`VaultError::ProofLength`].
pub fn root_from_inclusion_proof<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[P],
) -> Result<Hash, VaultError> {
    if index >= size {
        return Err(VaultError::IndexOutOfRange { index, size });
    }
    let leaf = Hash::try_from(leaf_hash).map_err(|_| VaultError::BadHashLength {
        what: "leaf hash",
        len: leaf_hash.len(),
    })?;
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(VaultError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    // RFC 9162 §2.1.3.2 steps 1-5.
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = leaf;
    for p in proof {
        let p = proof_hash(p)?;
        if snode == 0 {
            return Err(VaultError::InclusionMismatch);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(&p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, &p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VaultError::InclusionMismatch);
    }
    Ok(r)
}

/// Verifies an RFC 6962 / RFC 9162 inclusion proof of `leaf_hash` at `index` in the
/// tree of `size` leaves with root `root`.
///
/// Stricter than the bare RFC: `index < size`, a 32-byte leaf hash, and a proof of
/// exactly the length the tree shape implies.
///
/// # Errors
/// The errors of [`root_from_inclusion_proof`], or [`VaultError::InclusionMismatch`].
pub fn verify_inclusion<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), VaultError> {
    let computed = root_from_inclusion_proof(index, size, leaf_hash, proof)?;
    if hashes_equal(&computed, root) {
        Ok(())
    } else {
        Err(VaultError::InclusionMismatch)
    }
}

/// Verifies an RFC 6962 / RFC 9162 consistency proof between the tree of `size1`
/// leaves with root `root1` and the tree of `size2` leaves with root `root2`.
///
/// Rules (stricter than the bare RFC): `size2 < size1` is an error; `size1 == 0` is an
/// error, even `0 -> 0`; `size1 == size2` needs an empty proof and equal roots;
/// otherwise an empty proof is an error, and the proof must have exactly the length
/// the tree shapes imply.
///
/// # Errors
/// [`VaultError::InvalidTreeSizes`], [`VaultError::EmptyTreeConsistency`],
/// [`VaultError::NonEmptyProof`], [`VaultError::RootMismatch`],
/// [`VaultError::ProofLength`], [`VaultError::BadHashLength`],
/// [`VaultError::ConsistencyMismatch`].
pub fn verify_consistency<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[P],
) -> Result<(), VaultError> {
    if size2 < size1 {
        return Err(VaultError::InvalidTreeSizes { size1, size2 });
    }
    if size1 == 0 {
        return Err(VaultError::EmptyTreeConsistency);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(VaultError::NonEmptyProof);
        }
        return if hashes_equal(root1, root2) {
            Ok(())
        } else {
            Err(VaultError::RootMismatch)
        };
    }
    let expected = consistency_proof_len(size1, size2);
    if proof.len() != expected {
        return Err(VaultError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    let mut path = Vec::with_capacity(proof.len() + 1);
    // RFC 9162 §2.1.4.2 step 2: when size1 is a power of two, its root is the first
    // node of the path and is not sent.
    if size1.is_power_of_two() {
        path.push(
            Hash::try_from(root1).map_err(|_| VaultError::BadHashLength {
                what: "first root",
                len: root1.len(),
            })?,
        );
    }
    for p in proof {
        path.push(proof_hash(p)?);
    }
    // Steps 3-4.
    let mut fnode = size1 - 1;
    let mut snode = size2 - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5.
    let (first, rest) = path.split_first().ok_or(VaultError::ConsistencyMismatch)?;
    let mut fr = *first;
    let mut sr = *first;
    // Step 6.
    for c in rest {
        if snode == 0 {
            return Err(VaultError::ConsistencyMismatch);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7. Evaluate both comparisons (no early exit) before deciding.
    let ok1 = hashes_equal(&fr, root1);
    let ok2 = hashes_equal(&sr, root2);
    if snode == 0 && ok1 && ok2 {
        Ok(())
    } else {
        Err(VaultError::ConsistencyMismatch)
    }
}

/// The right edge of a tree: the roots of its maximal complete subtrees, left to right
/// (one per set bit of `size`, largest first). `O(log n)` hashes that are enough to
/// append leaves, compute every new root and produce the new stored hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A frontier from its parts: `nodes` must hold `popcount(size)` hashes, the roots
    /// of the complete subtrees covering `[0, size)` from left to right.
    ///
    /// # Errors
    /// [`VaultError::BadFrontier`] on a count mismatch.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, VaultError> {
        if nodes.len() == size.count_ones() as usize {
            Ok(Self { size, nodes })
        } else {
            Err(VaultError::BadFrontier {
                size,
                got: nodes.len(),
            })
        }
    }

    /// Rebuilds the frontier of the tree of `size` leaves from `popcount(size)` stored
    /// hashes.
    ///
    /// # Errors
    /// Reader errors.
    pub fn restore<R: HashReader + ?Sized>(size: u64, reader: &R) -> Result<Self, VaultError> {
        Self::from_parts(size, prefix_hashes(size, reader)?)
    }

    /// The number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The complete-subtree roots, left to right.
    #[must_use]
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// The tree root (RFC 6962 §2.1 `MTH`), `SHA-256("")` when empty.
    #[must_use]
    pub fn root(&self) -> Hash {
        fold_right(&self.nodes)
    }

    /// Appends a leaf hash.
    ///
    /// # Errors
    /// [`VaultError::LogFull`] at [`MAX_LOG_SIZE`] leaves.
    pub fn push(&mut self, leaf_hash: Hash) -> Result<(), VaultError> {
        self.push_inner(leaf_hash, |_| {})
    }

    /// Appends a leaf hash and returns the stored hashes it creates with their storage
    /// indexes: the leaf hash, then the hash of each subtree it completes (the same as
    /// [`stored_hashes_for_record`], without a reader).
    ///
    /// # Errors
    /// [`VaultError::LogFull`] at [`MAX_LOG_SIZE`] leaves.
    pub fn push_stored(&mut self, leaf_hash: Hash) -> Result<Vec<(u64, Hash)>, VaultError> {
        if self.size >= MAX_LOG_SIZE {
            return Err(VaultError::LogFull);
        }
        let first = stored_hash_index(0, self.size);
        let mut out = Vec::with_capacity(1 + self.size.trailing_ones() as usize);
        self.push_inner(leaf_hash, |h| out.push(h))?;
        Ok((first..).zip(out).collect())
    }

    fn push_inner(
        &mut self,
        leaf_hash: Hash,
        mut emit: impl FnMut(Hash),
    ) -> Result<(), VaultError> {
        if self.size >= MAX_LOG_SIZE {
            return Err(VaultError::LogFull);
        }
        let mut h = leaf_hash;
        emit(h);
        // Each trailing one bit of the old size is a complete subtree that the new
        // leaf's subtree now merges with.
        for _ in 0..self.size.trailing_ones() {
            let left = self.nodes.pop().ok_or(VaultError::BadFrontier {
                size: self.size,
                got: 0,
            })?;
            h = node_hash(&left, &h);
            emit(h);
        }
        self.nodes.push(h);
        self.size += 1;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stored_hash_index_matches_go_layout() {
        // Go tlog: level 0 positions 0,1 at 0,1; level 1 position 0 at 2; leaf 2 at 3,
        // leaf 3 at 4, level1/1 at 5, level2/0 at 6, leaf 4 at 7.
        assert_eq!(stored_hash_index(0, 0), 0);
        assert_eq!(stored_hash_index(0, 1), 1);
        assert_eq!(stored_hash_index(1, 0), 2);
        assert_eq!(stored_hash_index(0, 2), 3);
        assert_eq!(stored_hash_index(0, 3), 4);
        assert_eq!(stored_hash_index(1, 1), 5);
        assert_eq!(stored_hash_index(2, 0), 6);
        assert_eq!(stored_hash_index(0, 4), 7);
        for n in 0..1000u64 {
            assert_eq!(
                stored_hash_count(n + 1),
                stored_hash_index(0, n) + 1 + u64::from(n.trailing_ones())
            );
        }
    }

    #[test]
    fn frontier_matches_stored_hashes_for_record() {
        let mut stored: Vec<Hash> = Vec::new();
        let mut f = Frontier::new();
        for n in 0..200u64 {
            let lh = leaf_hash(&n.to_be_bytes());
            let want = stored_hashes_for_record(n, lh, &stored).unwrap();
            let got = f.push_stored(lh).unwrap();
            assert_eq!(got.iter().map(|x| x.1).collect::<Vec<_>>(), want);
            for (i, (idx, h)) in got.iter().enumerate() {
                assert_eq!(*idx, stored.len() as u64 + i as u64);
                let _ = h;
            }
            stored.extend(want);
            assert_eq!(stored.len() as u64, stored_hash_count(n + 1));
            assert_eq!(f.root(), tree_hash(n + 1, &stored).unwrap());
            assert_eq!(Frontier::restore(n + 1, &stored).unwrap(), f);
        }
    }

    #[test]
    fn overlay_reader_reads_both_sides() {
        let all: Vec<Hash> = (0..10u8).map(|i| [i; 32]).collect();
        let (base, pending) = all.split_at(6);
        let r = OverlayReader::new(base, 6, pending);
        assert_eq!(
            r.read_hashes(&[9, 0, 6, 5]).unwrap(),
            vec![[9; 32], [0; 32], [6; 32], [5; 32]]
        );
        assert_eq!(
            r.read_hashes(&[10]),
            Err(VaultError::MissingHash { index: 10 })
        );
    }

    #[test]
    fn index_helpers_match_what_provers_read() {
        use std::collections::BTreeMap;
        let mut f = Frontier::new();
        let mut stored: Vec<Hash> = Vec::new();
        for n in 0..77u64 {
            stored.extend(
                f.push_stored(leaf_hash(&n.to_le_bytes()))
                    .unwrap()
                    .into_iter()
                    .map(|x| x.1),
            );
        }
        let pick = |idx: Vec<u64>| -> BTreeMap<u64, Hash> {
            idx.into_iter().map(|i| (i, stored[i as usize])).collect()
        };
        for (i, s) in [(0u64, 77u64), (76, 77), (33, 64), (5, 6)] {
            let m = pick(inclusion_proof_indexes(i, s).unwrap());
            assert_eq!(
                prove_inclusion(i, s, &m).unwrap(),
                prove_inclusion(i, s, &stored).unwrap()
            );
        }
        for (a, b) in [(1u64, 77u64), (64, 77), (33, 70), (7, 7)] {
            let m = pick(consistency_proof_indexes(a, b).unwrap());
            assert_eq!(
                prove_consistency(a, b, &m).unwrap(),
                prove_consistency(a, b, &stored).unwrap()
            );
        }
        let m = pick(tree_hash_indexes(77).unwrap());
        assert_eq!(tree_hash(77, &m).unwrap(), f.root());
        assert_eq!(
            prove_inclusion(0, u64::MAX, &stored),
            Err(VaultError::TreeTooLarge { size: u64::MAX })
        );
        assert!(tree_hash(MAX_LOG_SIZE + 1, &stored).is_err());
        assert!(consistency_proof_indexes(1, u64::MAX).is_err());
    }

    #[test]
    fn split_point_is_largest_power_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn empty_tree_root() {
        assert_eq!(tree_hash(0, &Vec::<Hash>::new()).unwrap(), empty_root());
        assert_eq!(Frontier::new().root(), empty_root());
    }
}
