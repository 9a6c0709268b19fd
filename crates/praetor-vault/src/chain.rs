//! The hash chain and the per-entry HMAC.
//!
//! Next to the Merkle tree, each entry carries a link of a simple hash chain and an
//! HMAC under the workspace's secret:
//!
//! ```text
//! chain_{-1} = 32 zero bytes                       (genesis)
//! chain_n    = SHA-256(chain_{n-1} || leaf_hash_n)  (64 bytes hashed, no prefix byte)
//! hmac_n     = HMAC-SHA256(secret, u64be(n) || leaf_hash_n || chain_n)
//!              (8 + 32 + 32 = 72 bytes of message; RFC 2104 with SHA-256)
//! ```
//!
//! `leaf_hash_n` is the RFC 6962 leaf hash `SHA-256(0x00 || leaf_n)`. The chain lets a
//! reader check the order of entries without any tree math; the HMAC lets the server
//! (which holds the secret) detect rows forged by someone with write access to the
//! database but not the secret. Neither is signed: the signed checkpoints over the
//! Merkle tree are what a third party trusts.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The chain value before the first entry: 32 zero bytes.
pub const GENESIS_CHAIN_HASH: Hash = [0u8; 32];

/// `SHA-256(prev || leaf_hash)`: the chain value of an entry.
#[must_use]
pub fn chain_hash(prev: &Hash, leaf_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(leaf_hash);
    h.finalize().into()
}

/// The HMAC key block of RFC 2104 §2: a key longer than the 64-byte SHA-256 block is
/// replaced by its hash, then the key is zero-padded to the block size. Passing the
/// block itself gives the same MAC as passing `secret` and cannot fail.
fn key_block(secret: &[u8]) -> [u8; 64] {
    let mut block = [0u8; 64];
    if secret.len() > block.len() {
        let h: Hash = Sha256::digest(secret).into();
        block[..32].copy_from_slice(&h);
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    block
}

fn entry_mac(secret: &[u8], seq: u64, leaf_hash: &Hash, chain_hash: &Hash) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&key_block(secret).into());
    mac.update(&seq.to_be_bytes());
    mac.update(leaf_hash);
    mac.update(chain_hash);
    mac
}

/// `HMAC-SHA256(secret, u64be(seq) || leaf_hash || chain_hash)`.
#[must_use]
pub fn entry_hmac(secret: &[u8], seq: u64, leaf_hash: &Hash, chain_hash: &Hash) -> Hash {
    entry_mac(secret, seq, leaf_hash, chain_hash)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks an entry's HMAC in constant time.
#[must_use]
pub fn verify_entry_hmac(
    secret: &[u8],
    seq: u64,
    leaf_hash: &Hash,
    chain_hash: &Hash,
    tag: &[u8],
) -> bool {
    entry_mac(secret, seq, leaf_hash, chain_hash)
        .verify_slice(tag)
        .is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chain_is_sha256_of_concatenation() {
        let lh = [7u8; 32];
        let mut buf = Vec::new();
        buf.extend_from_slice(&GENESIS_CHAIN_HASH);
        buf.extend_from_slice(&lh);
        let want: Hash = Sha256::digest(&buf).into();
        assert_eq!(chain_hash(&GENESIS_CHAIN_HASH, &lh), want);
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?" is not
        // our message layout, so check the layout against a direct HMAC instead.
        let secret = b"Jefe";
        let (lh, ch) = ([1u8; 32], [2u8; 32]);
        let mut msg = Vec::new();
        msg.extend_from_slice(&5u64.to_be_bytes());
        msg.extend_from_slice(&lh);
        msg.extend_from_slice(&ch);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
        mac.update(&msg);
        let want: Hash = mac.finalize().into_bytes().into();
        assert_eq!(entry_hmac(secret, 5, &lh, &ch), want);
        assert!(verify_entry_hmac(secret, 5, &lh, &ch, &want));
        assert!(!verify_entry_hmac(secret, 6, &lh, &ch, &want));
        assert!(!verify_entry_hmac(b"other", 5, &lh, &ch, &want));
        assert!(!verify_entry_hmac(secret, 5, &lh, &ch, &want[..31]));
    }

    #[test]
    fn key_block_equals_plain_key_for_all_lengths() {
        for len in [0usize, 1, 31, 63, 64, 65, 100, 200] {
            let secret = vec![0xa5u8; len];
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret).unwrap();
            mac.update(&1u64.to_be_bytes());
            mac.update(&[3u8; 32]);
            mac.update(&[4u8; 32]);
            let want: Hash = mac.finalize().into_bytes().into();
            assert_eq!(
                entry_hmac(&secret, 1, &[3u8; 32], &[4u8; 32]),
                want,
                "len {len}"
            );
        }
    }

    #[test]
    fn rfc4231_case2() {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
