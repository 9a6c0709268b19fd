//! Integration tests of praetor-vault: public vectors, property tests, tamper tests.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use proptest::prelude::*;
use serde_json::{Value, json};

use praetor_vault::chain::{GENESIS_CHAIN_HASH, chain_hash};
use praetor_vault::checkpoint::{
    Checkpoint, KeyAlgorithm, NoteSigner, NoteVerifier, ecdsa_key_id, open_note, sign_note,
};
use praetor_vault::merkle::{
    Frontier, Hash, HashReader, OverlayReader, empty_root, leaf_hash, node_hash, prove_consistency,
    prove_inclusion, stored_hash_count, tree_hash, verify_consistency, verify_inclusion,
};
use praetor_vault::verify::{
    Bundle, Entry, PublicKeyInfo, Receipt, build_bundle, build_receipt, verify_bundle,
    verify_hmacs, verify_receipt,
};
use praetor_vault::{LogState, VaultError, check_continues};

// ---------------------------------------------------------------------------
// Vectors

fn vectors_dir() -> PathBuf {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors"
    ));
    assert!(
        dir.join("merkle").is_dir() && dir.join("signed-note").is_dir(),
        "the public test vectors are missing: expected them at `{}` (`../shared/vectors` \
         from the workspace root); these tests must not pass without them",
        dir.display()
    );
    dir.to_path_buf()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad json in `{}`: {e}", path.display()))
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut items: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list `{}`: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    items.sort();
    for p in items {
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

fn b64_list(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().map(b64).collect(),
        other => panic!("unexpected proof {other}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn unhex32(s: &str) -> Hash {
    unhex(s).try_into().unwrap()
}

#[test]
fn merkle_inclusion_vectors() {
    let mut files = Vec::new();
    json_files(&vectors_dir().join("merkle/inclusion"), &mut files);
    assert!(
        files.len() >= 70,
        "only {} inclusion vectors found",
        files.len()
    );
    let (mut ok, mut err) = (0, 0);
    for f in &files {
        let v = read_json(f);
        let want_err = v["wantErr"].as_bool().unwrap();
        let res = verify_inclusion(
            v["leafIdx"].as_u64().unwrap(),
            v["treeSize"].as_u64().unwrap(),
            &b64(&v["leafHash"]),
            &b64_list(&v["proof"]),
            &b64(&v["root"]),
        );
        assert_eq!(
            res.is_err(),
            want_err,
            "{}: {} -> {res:?}",
            f.display(),
            v["desc"]
        );
        if want_err { err += 1 } else { ok += 1 }
    }
    assert!(ok >= 5 && err >= 60, "ok {ok}, err {err}");
}

#[test]
fn merkle_consistency_vectors() {
    let mut files = Vec::new();
    json_files(&vectors_dir().join("merkle/consistency"), &mut files);
    assert!(
        files.len() >= 90,
        "only {} consistency vectors found",
        files.len()
    );
    let (mut ok, mut err) = (0, 0);
    for f in &files {
        let v = read_json(f);
        let want_err = v["wantErr"].as_bool().unwrap();
        let res = verify_consistency(
            v["size1"].as_u64().unwrap(),
            v["size2"].as_u64().unwrap(),
            &b64(&v["root1"]),
            &b64(&v["root2"]),
            &b64_list(&v["proof"]),
        );
        assert_eq!(
            res.is_err(),
            want_err,
            "{}: {} -> {res:?}",
            f.display(),
            v["desc"]
        );
        if want_err { err += 1 } else { ok += 1 }
    }
    assert!(ok >= 5 && err >= 80, "ok {ok}, err {err}");
}

/// Builds a log of `leaves` and returns its stored hashes.
fn build_stored(leaves: &[Vec<u8>]) -> (Frontier, Vec<Hash>) {
    let mut f = Frontier::new();
    let mut stored = Vec::new();
    for l in leaves {
        for (idx, h) in f.push_stored(leaf_hash(l)).unwrap() {
            assert_eq!(idx, stored.len() as u64);
            stored.push(h);
        }
    }
    (f, stored)
}

#[test]
fn rfc6962_reference_roots_and_proofs() {
    let v = read_json(&vectors_dir().join("merkle/rfc6962_reference_roots.json"));
    let leaves: Vec<Vec<u8>> = v["leaves_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| unhex(s.as_str().unwrap()))
        .collect();
    let roots: Vec<Hash> = v["roots_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| unhex32(s.as_str().unwrap()))
        .collect();
    assert_eq!(roots.len(), 9);
    let (_, stored) = build_stored(&leaves);
    for (size, root) in roots.iter().enumerate() {
        assert_eq!(
            &tree_hash(size as u64, &stored).unwrap(),
            root,
            "size {size}"
        );
        let (f, _) = build_stored(&leaves[..size]);
        assert_eq!(&f.root(), root, "frontier size {size}");
        assert_eq!(
            &LogState::restore(size as u64, GENESIS_CHAIN_HASH, &stored)
                .unwrap()
                .root(),
            root
        );
    }
    assert_eq!(roots[0], empty_root());
    for (i, h) in v["node_hashes_by_level"]["level0"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(leaf_hash(&leaves[i]), unhex32(h.as_str().unwrap()));
    }
    for k in v["inclusion_kat"].as_array().unwrap() {
        let (index, size) = (k["index"].as_u64().unwrap(), k["size"].as_u64().unwrap());
        let want: Vec<Hash> = k["proof_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| unhex32(s.as_str().unwrap()))
            .collect();
        let got = prove_inclusion(index, size, &stored).unwrap();
        assert_eq!(got, want, "inclusion {index}/{size}");
        verify_inclusion(
            index,
            size,
            &leaf_hash(&leaves[index as usize]),
            &got,
            &roots[size as usize],
        )
        .unwrap();
    }
    for k in v["consistency_kat"].as_array().unwrap() {
        let (s1, s2) = (k["size1"].as_u64().unwrap(), k["size2"].as_u64().unwrap());
        let want: Vec<Hash> = k["proof_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| unhex32(s.as_str().unwrap()))
            .collect();
        let got = prove_consistency(s1, s2, &stored).unwrap();
        assert_eq!(got, want, "consistency {s1}->{s2}");
        verify_consistency(s1, s2, &roots[s1 as usize], &roots[s2 as usize], &got).unwrap();
    }
    let p = &v["primitive_kat"];
    assert_eq!(empty_root(), unhex32(p["empty_root"].as_str().unwrap()));
    assert_eq!(leaf_hash(b""), unhex32(p["leaf_empty"].as_str().unwrap()));
    assert_eq!(
        leaf_hash(b"L123456"),
        unhex32(p["leaf_L123456"].as_str().unwrap())
    );
    let mut n = Vec::new();
    n.extend_from_slice(b"N123");
    n.extend_from_slice(b"N456");
    // node_hash takes two 32-byte hashes; the KAT hashes arbitrary bytes, so check
    // the construction SHA-256(0x01 || l || r) on a real pair instead and the KAT with
    // sha2 directly.
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    h.update(&n);
    let kat: Hash = h.finalize().into();
    assert_eq!(kat, unhex32(p["node_N123_N456"].as_str().unwrap()));
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    h.update(a);
    h.update(b);
    let want: Hash = h.finalize().into();
    assert_eq!(node_hash(&a, &b), want);
}

#[test]
fn signed_note_vectors() {
    let v = read_json(&vectors_dir().join("signed-note/signed_note_vectors.json"));
    let (mut checked, mut ecdsa_valid, mut unsupported) = (0, 0, 0);
    for t in v["vectors"].as_array().unwrap() {
        let desc = t["desc"].as_str().unwrap();
        let vkey = t["vkey"].as_str().unwrap();
        let note = t["note"].as_str().unwrap();
        let valid = t["valid"].as_bool().unwrap();
        match NoteVerifier::parse(vkey) {
            Err(VaultError::UnsupportedKeyType { type_byte }) => {
                // Cosignatures (0x04) and RFC 6962 STH notes (0x05) are out of scope.
                assert!(matches!(type_byte, 0x04 | 0x05), "{desc}");
                unsupported += 1;
            }
            Err(e) => panic!("{desc}: vkey does not parse: {e}"),
            Ok(verifier) => {
                let res = open_note(note, std::slice::from_ref(&verifier));
                assert_eq!(res.is_ok(), valid, "{desc}: {res:?}");
                if valid {
                    let (text, names) = res.unwrap();
                    assert!(note.starts_with(&text));
                    assert_eq!(names, vec![verifier.name().to_string()]);
                    if verifier.algorithm() == KeyAlgorithm::EcdsaP256 {
                        ecdsa_valid += 1;
                        // Key ID of type 0x02 is SHA-256(SPKI)[:4].
                        let raw = B64.decode(vkey.splitn(3, '+').nth(2).unwrap()).unwrap();
                        assert_eq!(ecdsa_key_id(&raw[1..]), verifier.key_id());
                        // ECDSA checkpoints parse as checkpoints too.
                        let cp = Checkpoint::parse(&text).unwrap();
                        assert_eq!(cp.to_body(), text);
                    }
                    // The vkey round-trips.
                    assert_eq!(verifier.vkey(), vkey);
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 12 && ecdsa_valid == 2 && unsupported <= 5,
        "{checked} {ecdsa_valid} {unsupported}"
    );

    for t in v["key_id_vectors"].as_array().unwrap() {
        let desc = t["desc"].as_str().unwrap();
        let res = NoteVerifier::parse(t["vkey"].as_str().unwrap());
        let valid = t["valid"].as_bool().unwrap();
        if valid && matches!(res, Err(VaultError::UnsupportedKeyType { type_byte: 0x05 })) {
            continue;
        }
        assert_eq!(res.is_ok(), valid, "{desc}: {res:?}");
    }

    for t in v["signing_kats"].as_array().unwrap() {
        let seed: [u8; 32] = unhex(t["seed_hex"].as_str().unwrap()).try_into().unwrap();
        let name = t["name"].as_str().unwrap();
        let text = t["text"].as_str().unwrap();
        let s = NoteSigner::from_seed(name, KeyAlgorithm::Ed25519, &seed).unwrap();
        assert_eq!(s.vkey(), t["want_vkey"].as_str().unwrap());
        let note = sign_note(text, [&s]).unwrap();
        let want_line = t["want_sig_line"].as_str().unwrap();
        let want_line = if want_line.ends_with('\n') {
            want_line.to_string()
        } else {
            format!("{want_line}\n")
        };
        assert_eq!(note, format!("{text}\n{want_line}"), "{}", t["desc"]);
        // A PKCS#8 round trip keeps the key.
        let pem = s.to_pkcs8_pem().unwrap();
        assert_eq!(
            NoteSigner::from_pkcs8_pem(name, &pem).unwrap().vkey(),
            s.vkey()
        );
    }

    // The generated Ed25519 log signature on the C2SP example checkpoint, byte for byte.
    let g = &v["generated_details"];
    let seed: [u8; 32] = unhex(g["log_seed_hex"].as_str().unwrap())
        .try_into()
        .unwrap();
    let s =
        NoteSigner::from_seed("example.com/behind-the-sofa", KeyAlgorithm::Ed25519, &seed).unwrap();
    assert_eq!(s.vkey(), g["log_vkey"].as_str().unwrap());
    let msg = g["cosignature_signed_message"].as_str().unwrap();
    let body = msg.splitn(3, '\n').nth(2).unwrap();
    let cp = Checkpoint::parse(body).unwrap();
    assert_eq!(cp.size, 20852163);
    let note = cp.sign([&s]).unwrap();
    assert_eq!(
        note,
        format!("{body}\n{}", g["log_signature_line"].as_str().unwrap())
    );
}

#[test]
fn malformed_vkeys_and_notes_are_rejected() {
    let good = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    NoteVerifier::parse(good).unwrap();
    for bad in [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+c74f20a3",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+",
        "PeterNeumann+xyz4f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(NoteVerifier::parse(bad).is_err(), "{bad}");
    }
    let v = NoteVerifier::parse(good).unwrap();
    let note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    open_note(note, std::slice::from_ref(&v)).unwrap();
    for bad in [
        note.trim_end_matches('\n').to_string(),
        note.replace("— ", "-- "),
        note.replace("\n\n", "\n"),
        note.replace("problem,", "problem,\u{1}"),
        note.replace("JnAM=", "JnAM"),
        format!("{note}— PeterNeumann AAAA\n"),
    ] {
        assert!(
            open_note(&bad, std::slice::from_ref(&v)).is_err(),
            "{bad:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Property tests against a naive RFC 6962 implementation

fn ref_mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = ref_split(n);
            node_hash(&ref_mth(&leaves[..k]), &ref_mth(&leaves[k..]))
        }
    }
}

fn ref_split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn ref_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = ref_split(n);
    if m < k {
        let mut p = ref_path(m, &leaves[..k]);
        p.push(ref_mth(&leaves[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &leaves[k..]);
        p.push(ref_mth(&leaves[..k]));
        p
    }
}

fn ref_subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b { Vec::new() } else { vec![ref_mth(leaves)] };
    }
    let k = ref_split(n);
    if m <= k {
        let mut p = ref_subproof(m, &leaves[..k], b);
        p.push(ref_mth(&leaves[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &leaves[k..], false);
        p.push(ref_mth(&leaves[..k]));
        p
    }
}

fn flip(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn proofs_match_reference_and_detect_bit_flips(
        leaves in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..300),
        picks in prop::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 24),
    ) {
        let n = leaves.len();
        let lh: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
        let (frontier, stored) = build_stored(&leaves);
        prop_assert_eq!(stored.len() as u64, stored_hash_count(n as u64));
        let root = ref_mth(&lh);
        prop_assert_eq!(frontier.root(), root);
        prop_assert_eq!(tree_hash(n as u64, &stored).unwrap(), root);

        // Every inclusion proof in the full tree.
        for i in 0..n {
            let p = prove_inclusion(i as u64, n as u64, &stored).unwrap();
            prop_assert_eq!(&p, &ref_path(i, &lh));
            prop_assert!(verify_inclusion(i as u64, n as u64, &lh[i], &p, &root).is_ok());
        }
        // Every consistency proof into the full tree, and every proof from a smaller
        // tree for a sample of sizes.
        for m in 1..=n {
            let p = prove_consistency(m as u64, n as u64, &stored).unwrap();
            prop_assert_eq!(&p, &ref_subproof(m, &lh, true));
            let r1 = ref_mth(&lh[..m]);
            prop_assert!(verify_consistency(m as u64, n as u64, &r1, &root, &p).is_ok());
        }
        for &(a, b, bit) in &picks {
            let s2 = 1 + (a as usize % n);
            let s1 = 1 + (b as usize % s2);
            let i = (b as usize) % s2;
            let (r1, r2) = (ref_mth(&lh[..s1]), ref_mth(&lh[..s2]));

            // Inclusion in an older tree, then one flipped bit anywhere.
            let p = prove_inclusion(i as u64, s2 as u64, &stored).unwrap();
            prop_assert_eq!(&p, &ref_path(i, &lh[..s2]));
            prop_assert!(verify_inclusion(i as u64, s2 as u64, &lh[i], &p, &r2).is_ok());
            let mut blob: Vec<u8> = p.iter().flatten().copied().chain(r2).chain(lh[i]).collect();
            let nbits = blob.len() * 8;
            flip(&mut blob, bit as usize % nbits);
            let (pb, rest) = blob.split_at(p.len() * 32);
            let (rb, lb) = rest.split_at(32);
            let pf: Vec<&[u8]> = pb.chunks(32).collect();
            prop_assert!(verify_inclusion(i as u64, s2 as u64, lb, &pf, rb).is_err());

            // Consistency between two older trees, then one flipped bit anywhere.
            let p = prove_consistency(s1 as u64, s2 as u64, &stored).unwrap();
            prop_assert_eq!(&p, &ref_subproof(s1, &lh[..s2], true));
            prop_assert!(verify_consistency(s1 as u64, s2 as u64, &r1, &r2, &p).is_ok());
            let mut blob: Vec<u8> = p.iter().flatten().copied().chain(r1).chain(r2).collect();
            let nbits = blob.len() * 8;
            flip(&mut blob, bit as usize % nbits);
            let (pb, rest) = blob.split_at(p.len() * 32);
            let (r1b, r2b) = rest.split_at(32);
            let pf: Vec<&[u8]> = pb.chunks(32).collect();
            prop_assert!(verify_consistency(s1 as u64, s2 as u64, r1b, r2b, &pf).is_err());
            // Wrong sizes fail too.
            if s2 > s1 + 1 {
                prop_assert!(verify_consistency(s1 as u64 + 1, s2 as u64, &r1, &r2, &p).is_err());
            }
        }
    }

    #[test]
    fn batched_appends_with_overlay_reader(
        batches in prop::collection::vec(1usize..20, 1..15),
    ) {
        let mut state = LogState::new();
        let mut persisted: Vec<Hash> = Vec::new();
        let mut seq = 0u64;
        let mut leaves = Vec::new();
        for b in batches {
            let mut pending: Vec<Hash> = Vec::new();
            for _ in 0..b {
                let leaf = format!("{{\"seq\":{seq}}}");
                let a = state.append(leaf.as_bytes(), b"k").unwrap();
                prop_assert_eq!(a.new_stored_hashes[0].0, persisted.len() as u64 + pending.len() as u64);
                pending.extend(a.new_stored_hashes.iter().map(|x| x.1));
                leaves.push(leaf_hash(leaf.as_bytes()));
                // A proof for the entry just appended, before the batch is persisted.
                let r = OverlayReader::new(&persisted, persisted.len() as u64, &pending);
                let p = prove_inclusion(seq, seq + 1, &r).unwrap();
                prop_assert!(verify_inclusion(seq, seq + 1, &leaves[seq as usize], &p, &state.root()).is_ok());
                prop_assert_eq!(tree_hash(seq + 1, &r).unwrap(), state.root());
                seq += 1;
            }
            persisted.extend(pending);
            let restored = LogState::restore(state.size(), state.chain_head(), &persisted).unwrap();
            prop_assert_eq!(&restored, &state);
        }
    }
}

// ---------------------------------------------------------------------------
// Bundles and receipts

const ORIGIN: &str = "praetor.test/ws_1";
const SECRET: &[u8] = b"workspace secret";

struct TestLog {
    state: LogState,
    stored: Vec<Hash>,
    entries: Vec<Entry>,
    notes: Vec<(u64, String)>,
    ec: NoteSigner,
    ed: NoteSigner,
}

impl TestLog {
    fn new() -> Self {
        Self {
            state: LogState::new(),
            stored: Vec::new(),
            entries: Vec::new(),
            notes: Vec::new(),
            ec: NoteSigner::generate(ORIGIN, KeyAlgorithm::EcdsaP256).unwrap(),
            ed: NoteSigner::generate(ORIGIN, KeyAlgorithm::Ed25519).unwrap(),
        }
    }

    fn append(&mut self, n: u64) {
        for _ in 0..n {
            let seq = self.state.size();
            let v = json!({
                "seq": seq, "decision": "allow", "agent_id": "agent/é😀",
                "reason": "quote\" slash/ newline\n", "amount_cents": seq * 100,
            });
            let (leaf, a) = self.state.append_value(&v, SECRET).unwrap();
            self.stored.extend(a.new_stored_hashes.iter().map(|x| x.1));
            self.entries.push(Entry::from_appended(
                String::from_utf8(leaf).unwrap(),
                &a,
                true,
            ));
        }
    }

    fn checkpoint(&mut self) {
        let cp = Checkpoint::new(ORIGIN, self.state.size(), self.state.root());
        self.notes
            .push((self.state.size(), cp.sign([&self.ec, &self.ed]).unwrap()));
    }

    fn keys(&self) -> Vec<PublicKeyInfo> {
        vec![
            PublicKeyInfo::from_verifier(&self.ec.verifier()).unwrap(),
            PublicKeyInfo::from_verifier(&self.ed.verifier()).unwrap(),
        ]
    }

    fn bundle(&self, start: u64, end: u64) -> Bundle {
        let mut entries: Vec<Entry> = self.entries[start as usize..end as usize].to_vec();
        if start > 0 && !entries.is_empty() {
            entries[0].prev_chain_hash = Some(self.entries[start as usize - 1].chain_hash.clone());
        }
        let notes = self
            .notes
            .iter()
            .filter(|(s, _)| *s >= start && *s <= end)
            .map(|(_, n)| n.clone())
            .collect();
        build_bundle(ORIGIN, self.keys(), start, entries, notes, &self.stored).unwrap()
    }
}

fn test_log() -> TestLog {
    let mut log = TestLog::new();
    log.append(10);
    log.checkpoint();
    log.append(15);
    log.checkpoint();
    log.append(25);
    log.checkpoint();
    log
}

fn check(
    bundle: &Bundle,
    keys: &[NoteVerifier],
) -> Result<praetor_vault::Report, praetor_vault::Failure> {
    verify_bundle(bundle, keys, &mut |_, _| {})
}

#[test]
fn bundle_verifies_and_round_trips_through_json() {
    let log = test_log();
    let b = log.bundle(0, 50);
    assert_eq!(b.consistency_proofs.len(), 2);
    let mut calls = Vec::new();
    let r = verify_bundle(&b, &[log.ec.verifier()], &mut |d, t| calls.push((d, t))).unwrap();
    assert_eq!(
        (r.start, r.end, r.checkpoints, r.consistency_proofs),
        (0, 50, 3, 2)
    );
    assert_eq!(r.root, log.state.root());
    assert_eq!(r.chain_head, Some(log.state.chain_head()));
    assert_eq!(calls.last(), Some(&(50, 50)));
    // Ed25519 alone, and through JSON.
    let json = serde_json::to_vec(&b).unwrap();
    let b2 = Bundle::from_json(&json).unwrap();
    assert_eq!(b2, b);
    check(&b2, &[log.ed.verifier()]).unwrap();
    // A bundle exported before keys carried their key ID still reads and verifies.
    let mut older: serde_json::Value = serde_json::from_slice(&json).unwrap();
    for key in older["keys"].as_array_mut().unwrap() {
        assert_eq!(key["key_id"].as_str().map(str::len), Some(8), "{key}");
        key.as_object_mut().unwrap().remove("key_id");
    }
    let older = Bundle::from_json(&serde_json::to_vec(&older).unwrap()).unwrap();
    assert!(older.keys.iter().all(|k| k.key_id.is_empty()));
    check(&older, &[log.ec.verifier()]).unwrap();
    // Keys given as PEM (named by origin) or vkey.
    let pem = log.ec.public_key_pem().unwrap();
    check(&b2, &[NoteVerifier::parse_any(&pem, ORIGIN).unwrap()]).unwrap();
    check(
        &b2,
        &[NoteVerifier::parse_any(&log.ed.vkey(), ORIGIN).unwrap()],
    )
    .unwrap();
    // HMACs with the secret.
    assert_eq!(verify_hmacs(&b.entries, SECRET), Ok(50));
    assert_eq!(verify_hmacs(&b.entries, b"wrong").unwrap_err().seq, Some(0));
    let mut b3 = b.clone();
    b3.entries[7].hmac = Some("00".repeat(32));
    assert_eq!(verify_hmacs(&b3.entries, SECRET).unwrap_err().seq, Some(7));
}

#[test]
fn bundles_in_parts_verify_as_one_log_and_a_gap_a_forged_prefix_or_a_broken_chain_do_not() {
    let log = test_log();
    let keys = [log.ec.verifier()];
    let parts = [log.bundle(0, 10), log.bundle(10, 25), log.bundle(25, 50)];
    let mut before = check(&parts[0], &keys).unwrap();
    for next in &parts[1..] {
        check_continues(&before, next).unwrap();
        before = check(next, &keys).unwrap();
    }
    assert_eq!((before.end, before.root), (50, log.state.root()));

    let first = check(&parts[0], &keys).unwrap();
    // A gap: entries 10..25 left out.
    let f = check_continues(&first, &parts[2]).unwrap_err();
    assert_eq!(f.seq, Some(10), "{f}");
    // A tree prefix that is not the tree verified so far.
    let mut forged = parts[1].clone();
    forged.prefix_hashes[0] = "11".repeat(32);
    assert_eq!(check_continues(&first, &forged).unwrap_err().seq, Some(10));
    // A first entry chained onto another predecessor than the last entry verified.
    let elsewhere = praetor_vault::Report { chain_head: Some([7; 32]), ..first.clone() };
    let f = check_continues(&elsewhere, &parts[1]).unwrap_err();
    assert_eq!(f.seq, Some(10));
    assert!(f.message.contains("chained"), "{f}");
    // Another log.
    let mut foreign = parts[1].clone();
    foreign.origin = "example.com/other".into();
    assert_eq!(check_continues(&first, &foreign).unwrap_err().seq, None);
}

#[test]
fn bundle_not_starting_at_zero() {
    let log = test_log();
    let b = log.bundle(12, 50);
    assert_eq!(b.prefix_hashes.len(), 2); // 12 = 8 + 4
    assert_eq!(b.checkpoints.len(), 2);
    let r = check(&b, &[log.ec.verifier()]).unwrap();
    assert_eq!((r.start, r.end), (12, 50));
    // Deleting the first entry is caught by `start`.
    let mut t = b.clone();
    t.entries.remove(0);
    assert_eq!(check(&t, &[log.ec.verifier()]).unwrap_err().seq, Some(12));
    // A forged prefix hash breaks the first root.
    let mut t = b.clone();
    t.prefix_hashes[1] = "11".repeat(32);
    let f = check(&t, &[log.ec.verifier()]).unwrap_err();
    assert_eq!(f.seq, Some(12), "{f}");
    // The first entry needs its predecessor's chain hash.
    let mut t = b.clone();
    t.entries[0].prev_chain_hash = None;
    assert_eq!(check(&t, &[log.ec.verifier()]).unwrap_err().seq, Some(12));
    let mut t = b;
    t.entries[0].prev_chain_hash = Some("22".repeat(32));
    assert_eq!(check(&t, &[log.ec.verifier()]).unwrap_err().seq, Some(12));
    // A bundle exactly at a checkpoint with no entries.
    let e = log.bundle(25, 25);
    assert_eq!(check(&e, &[log.ec.verifier()]).unwrap().end, 25);
}

#[test]
fn bundle_tampering_is_detected_at_the_first_bad_seq() {
    let log = test_log();
    let keys = [log.ec.verifier()];
    let b = log.bundle(0, 50);

    // One changed byte in a leaf.
    let mut t = b.clone();
    t.entries[17].leaf = t.entries[17].leaf.replacen("allow", "allaw", 1);
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(17), "{f}");
    assert!(f.message.contains("leaf hash"), "{f}");

    // One changed byte in a leaf hash.
    let mut t = b.clone();
    let c = if t.entries[3].leaf_hash.starts_with('0') {
        "1"
    } else {
        "0"
    };
    t.entries[3].leaf_hash.replace_range(0..1, c);
    assert_eq!(check(&t, &keys).unwrap_err().seq, Some(3));

    // A changed leaf with its leaf hash recomputed breaks the chain there.
    let mut t = b.clone();
    t.entries[17].leaf = t.entries[17].leaf.replacen("allow", "block", 1);
    t.entries[17].leaf_hash = hex::encode(leaf_hash(t.entries[17].leaf.as_bytes()));
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(17), "{f}");
    assert!(f.message.contains("chain"), "{f}");

    // ... and with the whole chain recomputed, the tree root no longer matches the
    // checkpoint that covers it (entries 10..25).
    let mut prev = t.entries[16].chain_hash.clone();
    for e in &mut t.entries[17..] {
        let ch = chain_hash(&unhex32(&prev), &unhex32(&e.leaf_hash));
        e.chain_hash = hex::encode(ch);
        prev = e.chain_hash.clone();
    }
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(10), "{f}");
    assert!(f.message.contains("10..25"), "{f}");

    // A leaf that names another place than the one it sits at, hash recomputed.
    let mut t = b.clone();
    assert!(t.entries[17].leaf.contains("\"seq\":17"), "{}", t.entries[17].leaf);
    t.entries[17].leaf = t.entries[17].leaf.replacen("\"seq\":17", "\"seq\":18", 1);
    t.entries[17].leaf_hash = hex::encode(leaf_hash(t.entries[17].leaf.as_bytes()));
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(17), "{f}");
    assert!(f.message.contains("the leaf says it is entry 18"), "{f}");

    // A deleted entry.
    let mut t = b.clone();
    t.entries.remove(30);
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(30), "{f}");
    assert!(f.message.contains("missing"), "{f}");

    // Two swapped entries: out of order, not missing.
    let mut t = b.clone();
    t.entries.swap(20, 21);
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(20), "{f}");
    assert!(f.message.contains("expected entry 20, found entry 21 (entries out of order"), "{f}");
    // Swapped contents with the sequence numbers kept in place.
    let mut t = b.clone();
    t.entries.swap(20, 21);
    t.entries[20].seq = 20;
    t.entries[21].seq = 21;
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(20), "{f}");

    // Truncation: the last checkpoint covers 50 entries, only 45 are present.
    let mut t = b.clone();
    t.entries.truncate(45);
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(45), "{f}");
    assert!(f.message.contains("truncated"), "{f}");
    // Truncation with the last checkpoint dropped too leaves entries unsigned.
    t.checkpoints.pop();
    t.consistency_proofs.pop();
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(25), "{f}");

    // An extra entry not covered by a checkpoint.
    let mut more = test_log();
    more.append(1);
    let t = more.bundle(0, 51);
    assert_eq!(check(&t, &[more.ec.verifier()]).unwrap_err().seq, Some(50));

    // A leaf that is valid JSON but not canonical, with a matching leaf hash.
    let mut t = b.clone();
    t.entries[5].leaf = t.entries[5].leaf.replacen(":", ": ", 1);
    t.entries[5].leaf_hash = hex::encode(leaf_hash(t.entries[5].leaf.as_bytes()));
    let f = check(&t, &keys).unwrap_err();
    assert_eq!(f.seq, Some(5), "{f}");
    assert!(f.message.contains("canonical"), "{f}");
}

#[test]
fn bundle_level_failures() {
    let log = test_log();
    let keys = [log.ec.verifier()];
    let b = log.bundle(0, 50);
    // An untrusted key.
    let other = NoteSigner::generate(ORIGIN, KeyAlgorithm::EcdsaP256).unwrap();
    let f = check(&b, &[other.verifier()]).unwrap_err();
    assert_eq!(f.seq, None);
    assert!(f.message.contains("trusted"), "{f}");
    assert!(check(&b, &[]).is_err());
    // A tampered checkpoint.
    let mut t = b.clone();
    t.checkpoints[1] = t.checkpoints[1].replacen("\n25\n", "\n26\n", 1);
    assert_eq!(check(&t, &keys).unwrap_err().seq, None);
    // A wrong or missing consistency proof.
    let mut t = b.clone();
    t.consistency_proofs[0].proof[0] = "33".repeat(32);
    assert!(check(&t, &keys).unwrap_err().message.contains("consistent"));
    let mut t = b.clone();
    t.consistency_proofs.clear();
    assert!(
        check(&t, &keys)
            .unwrap_err()
            .message
            .contains("missing consistency")
    );
    // Checkpoints out of order, wrong format, wrong origin.
    let mut t = b.clone();
    t.checkpoints.swap(0, 1);
    assert!(check(&t, &keys).is_err());
    let mut t = b.clone();
    t.format = "something-else".into();
    assert!(check(&t, &keys).is_err());
    let mut t = b.clone();
    t.origin = "praetor.test/other".into();
    assert!(check(&t, &keys).unwrap_err().message.contains("origin"));
    // No checkpoints at all.
    let mut t = b;
    t.checkpoints.clear();
    assert!(check(&t, &keys).is_err());
}

#[test]
fn receipts() {
    let log = test_log();
    let keys = [log.ec.verifier(), log.ed.verifier()];
    let (size, note) = log.notes[2].clone();
    for seq in [0u64, 1, 24, 25, 49] {
        let r = build_receipt(
            ORIGIN,
            log.entries[seq as usize].clone(),
            note.clone(),
            &log.stored,
        )
        .unwrap();
        let rep = verify_receipt(&r, &keys).unwrap();
        assert_eq!((rep.seq, rep.tree_size), (seq, size));
        assert_eq!(rep.leaf_hash, leaf_hash(r.entry.leaf.as_bytes()));
        assert_eq!(rep.signed_by, vec![ORIGIN.to_string()]);
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(Receipt::from_json(&json).unwrap(), r);
        let tp = r.to_tlog_proof();
        assert!(tp.starts_with(&format!(
            "c2sp.org/tlog-proof@v1\nextra {}\nindex {seq}\n",
            B64.encode(&r.entry.leaf)
        )));
        assert!(tp.ends_with(&format!("\n\n{note}")));
    }
    let r = build_receipt(
        ORIGIN,
        log.entries[7].clone(),
        log.notes[0].1.clone(),
        &log.stored,
    )
    .unwrap();
    verify_receipt(&r, &keys).unwrap();
    // Tampering.
    let mut t = r.clone();
    t.entry.leaf = t.entry.leaf.replacen("allow", "allaw", 1);
    assert_eq!(verify_receipt(&t, &keys).unwrap_err().seq, Some(7));
    let mut t = r.clone();
    t.entry.seq = 6;
    assert_eq!(verify_receipt(&t, &keys).unwrap_err().seq, Some(6));
    let mut t = r.clone();
    t.inclusion_proof.pop();
    assert!(verify_receipt(&t, &keys).is_err());
    let mut t = r.clone();
    t.inclusion_proof[0] = "44".repeat(32);
    assert!(verify_receipt(&t, &keys).is_err());
    let other = NoteSigner::generate(ORIGIN, KeyAlgorithm::Ed25519).unwrap();
    assert!(verify_receipt(&r, &[other.verifier()]).is_err());
    // An entry beyond the checkpoint.
    assert!(
        build_receipt(
            ORIGIN,
            log.entries[12].clone(),
            log.notes[0].1.clone(),
            &log.stored
        )
        .is_err()
    );
    let mut t = r;
    t.entry = log.entries[12].clone();
    assert_eq!(verify_receipt(&t, &keys).unwrap_err().seq, Some(12));
}

#[test]
fn missing_stored_hashes_are_errors_not_panics() {
    let log = test_log();
    let short: Vec<Hash> = log.stored[..10].to_vec();
    assert!(matches!(
        prove_inclusion(3, 50, &short),
        Err(VaultError::MissingHash { .. })
    ));
    assert!(matches!(
        tree_hash(50, &short),
        Err(VaultError::MissingHash { .. })
    ));
    assert!(matches!(
        LogState::restore(50, GENESIS_CHAIN_HASH, &short),
        Err(VaultError::MissingHash { .. })
    ));
    assert!(prove_inclusion(50, 50, &log.stored).is_err());
    assert!(prove_consistency(0, 5, &log.stored).is_err());
    assert!(prove_consistency(6, 5, &log.stored).is_err());
    assert_eq!(
        prove_consistency(5, 5, &log.stored).unwrap(),
        Vec::<Hash>::new()
    );
    struct Liar;
    impl HashReader for Liar {
        fn read_hashes(&self, _: &[u64]) -> Result<Vec<Hash>, VaultError> {
            Ok(vec![])
        }
    }
    assert!(matches!(
        tree_hash(3, &Liar),
        Err(VaultError::ReaderCount { .. })
    ));
}

/// How long verifying a million-entry bundle takes (printed); run with
/// `cargo test --release -p praetor-vault --test vault -- --ignored --nocapture million`.
#[test]
#[ignore = "slow in debug builds; run in release"]
fn million_entry_bundle() {
    let mut log = TestLog::new();
    let t0 = std::time::Instant::now();
    for i in 0..10u64 {
        log.append(100_000);
        if i % 3 == 0 || i == 9 {
            log.checkpoint();
        }
    }
    let b = log.bundle(0, 1_000_000);
    let json = serde_json::to_vec(&b).unwrap();
    eprintln!("built in {:?}, {} MB", t0.elapsed(), json.len() >> 20);
    let t1 = std::time::Instant::now();
    let b = Bundle::from_json(&json).unwrap();
    let parsed = t1.elapsed();
    let r = check(&b, &[log.ec.verifier()]).unwrap();
    eprintln!(
        "parsed in {parsed:?}, verified in {:?} ({} entries)",
        t1.elapsed(),
        r.end
    );
    // A measurement, not a speed check (BENCHMARKS.md has the figures): it checks only
    // that the whole bundle verified.
    assert_eq!(r.end, 1_000_000);
}

/// The worked example of `docs/vault.md` §12.
#[test]
fn docs_worked_example() {
    let mut state = LogState::new();
    let a0 = state.append(br#"{"a":1}"#, b"secret").unwrap();
    let a1 = state.append("{\"b\":\"é\"}".as_bytes(), b"secret").unwrap();
    assert_eq!(
        hex::encode(a0.leaf_hash),
        "c7261463ebd776f4650b6d0fe942d9cc38c925d90f77d440ab6df8d5dd258c5f"
    );
    assert_eq!(
        hex::encode(a1.leaf_hash),
        "7a535a45f55f1758391c619ba6d0ec4cba4eb62d6412ddc2cd4906ecd5f0f73e"
    );
    assert_eq!(
        hex::encode(a0.chain_hash),
        "37c086d32b1f152e01511484813cc939e3a7870f95bc573da2677f64001f764b"
    );
    assert_eq!(
        hex::encode(a1.chain_hash),
        "bf907fdd71c4af872a1d36f41d59c39cb1b3ad68d29e961c6833c0bf664f2925"
    );
    assert_eq!(
        hex::encode(a0.hmac),
        "129b4207c6d4d7cedb012b302288e832652214656cfa52713d879b01de7e8762"
    );
    assert_eq!(
        hex::encode(state.root()),
        "0d6182fa2f045ab37b2646ecd8f3eca6157c414b86f3aa7bc100432f145852db"
    );
    assert_eq!(
        B64.encode(state.root()),
        "DWGC+i8EWrN7Jkbs2PPsphV8QUuG86p7wQBDLxRYUts="
    );
    let idx: Vec<u64> = a0
        .new_stored_hashes
        .iter()
        .chain(&a1.new_stored_hashes)
        .map(|x| x.0)
        .collect();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(a1.new_stored_hashes[1].1, state.root());
    let stored: Vec<Hash> = a0
        .new_stored_hashes
        .iter()
        .chain(&a1.new_stored_hashes)
        .map(|x| x.1)
        .collect();
    assert_eq!(prove_inclusion(1, 2, &stored).unwrap(), vec![a0.leaf_hash]);
}

/// A bundle large enough that its leaves are checked in windows, each on several threads
/// (more than 65,536 entries): it verifies, and of two bad leaves in different windows
/// the first is the one named.
#[test]
fn a_large_bundle_is_checked_in_parallel_and_names_its_first_bad_leaf() {
    let mut log = TestLog::new();
    log.append(70_000);
    log.checkpoint();
    let b = log.bundle(0, 70_000);
    let mut calls = Vec::new();
    let r = verify_bundle(&b, &[log.ec.verifier()], &mut |d, t| calls.push((d, t))).unwrap();
    assert_eq!((r.start, r.end, r.root), (0, 70_000, log.state.root()));
    assert_eq!(calls, [(65_536, 70_000), (70_000, 70_000)]);
    let tamper = |b: &mut Bundle, i: usize| b.entries[i].leaf = b.entries[i].leaf.replacen("allow", "alloW", 1);
    let mut late = b.clone();
    tamper(&mut late, 68_001);
    assert_eq!(check(&late, &[log.ec.verifier()]).unwrap_err().seq, Some(68_001));
    let mut both = late.clone();
    tamper(&mut both, 30_000);
    assert_eq!(check(&both, &[log.ec.verifier()]).unwrap_err().seq, Some(30_000));
}

/// A checkpoint at every size gives as many consistency proofs as entries; with junk
/// proofs for pairs no checkpoint needs mixed in and the order reversed, each pair
/// still finds its own proof, and a bad one is still named.
#[test]
fn a_bundle_with_many_checkpoints_and_proofs_is_checked_pair_by_pair() {
    let mut log = TestLog::new();
    for _ in 0..150 {
        log.append(1);
        log.checkpoint();
    }
    let keys = [log.ed.verifier()];
    let mut b = log.bundle(0, 150);
    assert_eq!(b.consistency_proofs.len(), 149);
    let junk = (0..5_000u64).map(|i| praetor_vault::verify::ConsistencyProof {
        size1: 1_000 + i,
        size2: 2_000 + i,
        proof: vec!["55".repeat(32)],
    });
    b.consistency_proofs.extend(junk);
    b.consistency_proofs.reverse();
    let r = check(&b, &keys).unwrap();
    assert_eq!((r.end, r.checkpoints, r.consistency_proofs), (150, 150, 149));
    assert_eq!(r.root, log.state.root());

    // The proof of one pair in the middle, broken: that pair is named.
    let mut t = b.clone();
    let p = t
        .consistency_proofs
        .iter_mut()
        .find(|p| (p.size1, p.size2) == (77, 78))
        .unwrap();
    p.proof[0] = "66".repeat(32);
    let f = check(&t, &keys).unwrap_err();
    assert!(f.message.contains("sizes 77 and 78"), "{f}");
    // Left out: named as missing.
    let mut t = b;
    t.consistency_proofs.retain(|p| (p.size1, p.size2) != (77, 78));
    let f = check(&t, &keys).unwrap_err();
    assert!(f.message.contains("missing consistency proof from size 77 to size 78"), "{f}");
}

/// Two proofs for one `(size1, size2)` pair make a bundle ambiguous: it is rejected,
/// whether both are genuine, one is not, or the pair is one no checkpoint needs.
#[test]
fn two_consistency_proofs_for_one_pair_are_rejected() {
    let log = test_log();
    let keys = [log.ec.verifier()];
    let b = log.bundle(0, 50);
    let genuine = b.consistency_proofs[1].clone();
    let mut forged = genuine.clone();
    forged.proof[0] = "77".repeat(32);
    let unused = praetor_vault::verify::ConsistencyProof { size1: 3, size2: 4, proof: vec![] };
    for (extra, pair) in [(genuine.clone(), (25, 50)), (forged, (25, 50)), (unused, (3, 4))] {
        let mut t = b.clone();
        t.consistency_proofs.push(extra.clone());
        t.consistency_proofs.push(extra);
        // Order does not matter: the genuine one first or last.
        t.consistency_proofs.rotate_right(1);
        let f = check(&t, &keys).unwrap_err();
        assert_eq!(f.seq, None, "{f}");
        assert!(
            f.message.contains(&format!("two proofs from size {} to size {}", pair.0, pair.1)),
            "{f}"
        );
    }
    // The same genuine proof twice is still two.
    let mut t = b;
    t.consistency_proofs.push(genuine);
    assert!(check(&t, &keys).unwrap_err().message.contains("two proofs"));
}

/// Verification stops at the first checkpoint past the last entry: no later checkpoint
/// is opened and no consistency proof to it is checked (broken ones change nothing),
/// and the failure is the truncation, at `end`.
#[test]
fn a_checkpoint_past_the_end_stops_before_its_consistency_proofs() {
    let log = test_log();
    let mut t = log.bundle(0, 50);
    t.entries.truncate(20);
    for p in &mut t.consistency_proofs {
        p.proof[0] = "88".repeat(32);
    }
    t.checkpoints[2] = "not a note".into();
    let f = check(&t, &[log.ec.verifier()]).unwrap_err();
    assert_eq!(f.seq, Some(20), "{f}");
    assert!(f.message.contains("truncated") && f.message.contains("covers 25 entries"), "{f}");
    // Proofs between checkpoints within the entries are still checked.
    let mut t = log.bundle(0, 50);
    t.entries.truncate(30);
    t.consistency_proofs[0].proof[0] = "88".repeat(32);
    assert!(check(&t, &[log.ec.verifier()]).unwrap_err().message.contains("not consistent"));
}

/// Picks one hash field of a bundle.
type HashField = fn(&mut Bundle) -> &mut String;

/// Hashes are 64 lowercase hex digits, nothing else: the same hash in uppercase (or
/// with one uppercase digit) is refused, naming the field.
#[test]
fn hashes_in_uppercase_hex_are_refused_naming_the_field() {
    let log = test_log();
    let keys = [log.ec.verifier()];
    let b = log.bundle(12, 50);
    let upper = |s: &mut String| *s = s.to_uppercase();
    let one_upper = |s: &mut String| {
        let i = s.find(|c: char| c.is_ascii_lowercase()).unwrap();
        s.replace_range(i..=i, &s[i..=i].to_uppercase());
    };
    for change in [upper, one_upper] {
        let cases: [(HashField, &str, Option<u64>); 5] = [
            (|t| &mut t.entries[3].leaf_hash, "`leaf_hash`", Some(15)),
            (|t| &mut t.entries[4].chain_hash, "`chain_hash`", Some(16)),
            (|t| t.entries[0].prev_chain_hash.as_mut().unwrap(), "`prev_chain_hash`", Some(12)),
            (|t| &mut t.prefix_hashes[1], "`prefix_hashes`", None),
            (|t| &mut t.consistency_proofs[0].proof[0], "`consistency_proofs` 25..50", None),
        ];
        for (field, name, seq) in cases {
            let mut t = b.clone();
            change(field(&mut t));
            let f = check(&t, &keys).unwrap_err();
            assert_eq!(f.seq, seq, "{name}: {f}");
            assert!(f.message.contains(name) && f.message.contains("lowercase hex"), "{name}: {f}");
        }
    }
    let r = build_receipt(ORIGIN, log.entries[7].clone(), log.notes[0].1.clone(), &log.stored).unwrap();
    verify_receipt(&r, &keys).unwrap();
    for (i, name) in [(0, "`leaf_hash`"), (1, "`chain_hash`"), (2, "`inclusion_proof`")] {
        let mut t = r.clone();
        let field = match i {
            0 => &mut t.entry.leaf_hash,
            1 => &mut t.entry.chain_hash,
            _ => &mut t.inclusion_proof[0],
        };
        *field = field.to_uppercase();
        let f = verify_receipt(&t, &keys).unwrap_err();
        assert_eq!(f.seq, Some(7), "{name}: {f}");
        assert!(f.message.contains(name) && f.message.contains("lowercase hex"), "{name}: {f}");
    }
}

/// An `hmac` cannot be checked offline, nor a receipt's chain hash, but where present
/// they must be well-formed (64 lowercase hex digits): garbage there fails at its entry.
#[test]
fn unverifiable_fields_must_still_be_well_formed() {
    let log = test_log();
    let keys = [log.ec.verifier()];
    let b = log.bundle(0, 50);
    assert!(b.entries.iter().all(|e| e.hmac.is_some()));
    check(&b, &keys).unwrap();
    let mut no_hmacs = b.clone();
    no_hmacs.entries.iter_mut().for_each(|e| e.hmac = None);
    check(&no_hmacs, &keys).unwrap();
    let garbled = ["zz-not-hex".to_string(), String::new(), "ab".repeat(31), "AB".repeat(32)];
    for bad in &garbled {
        let mut t = b.clone();
        t.entries[9].hmac = Some(bad.clone());
        let f = check(&t, &keys).unwrap_err();
        assert_eq!(f.seq, Some(9), "{bad:?}: {f}");
        assert!(f.message.contains("`hmac`"), "{f}");
        assert_eq!(verify_hmacs(&t.entries, SECRET).unwrap_err().seq, Some(9));
    }

    let r = build_receipt(ORIGIN, log.entries[7].clone(), log.notes[0].1.clone(), &log.stored).unwrap();
    // A well-formed but wrong chain hash, prev chain hash or HMAC is not detectable
    // from one entry: the receipt still verifies (and the CLI says what it did not check).
    let mut t = r.clone();
    t.entry.chain_hash = "11".repeat(32);
    t.entry.prev_chain_hash = Some("22".repeat(32));
    t.entry.hmac = Some("33".repeat(32));
    verify_receipt(&t, &keys).unwrap();
    for bad in &garbled {
        for field in ["chain_hash", "prev_chain_hash", "hmac"] {
            let mut t = r.clone();
            match field {
                "chain_hash" => t.entry.chain_hash = bad.clone(),
                "prev_chain_hash" => t.entry.prev_chain_hash = Some(bad.clone()),
                _ => t.entry.hmac = Some(bad.clone()),
            }
            let f = verify_receipt(&t, &keys).unwrap_err();
            assert_eq!(f.seq, Some(7), "{field} {bad:?}: {f}");
            assert!(f.message.contains(&format!("`{field}`")), "{field}: {f}");
        }
    }
}

/// Reports name each key that signed by name and key ID: the test log's two keys share
/// one name, and are still two signers.
#[test]
fn reports_name_each_signing_key_with_its_key_id() {
    let log = test_log();
    let keys = [log.ec.verifier(), log.ed.verifier()];
    let r = check(&log.bundle(0, 50), &keys).unwrap();
    assert_eq!(r.signed_by, [ORIGIN]);
    let refs: Vec<praetor_vault::KeyRef> = keys.iter().map(NoteVerifier::key_ref).collect();
    assert_eq!(r.signers, refs);
    assert_eq!(refs[0].to_string(), format!("{ORIGIN} (key ID {:08x})", log.ec.key_id()));
    let receipt = build_receipt(ORIGIN, log.entries[3].clone(), log.notes[0].1.clone(), &log.stored).unwrap();
    assert_eq!(verify_receipt(&receipt, &keys[1..]).unwrap().signers, refs[1..]);
    // Renaming a key keeps the key; an Ed25519 key ID follows the name, a P-256 one does not.
    let ed = log.ed.verifier().renamed("other").unwrap();
    assert_eq!((ed.name(), ed.algorithm()), ("other", KeyAlgorithm::Ed25519));
    assert_ne!(ed.key_id(), log.ed.key_id());
    assert_eq!(log.ec.verifier().renamed("other").unwrap().key_id(), log.ec.key_id());
    assert!(log.ec.verifier().renamed("bad name").is_err());
}
