//! Benchmarks: appends, proof generation from stored hashes, and offline verification
//! of a 100,000-entry bundle. Run with `cargo bench -p praetor-vault`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

use praetor_vault::checkpoint::{Checkpoint, KeyAlgorithm, NoteSigner};
use praetor_vault::merkle::{Hash, prove_consistency, prove_inclusion};
use praetor_vault::verify::{Entry, build_bundle, verify_bundle};
use praetor_vault::{LogState, to_canonical_json};

const ORIGIN: &str = "praetor.bench/ws";
const SECRET: &[u8] = b"bench secret";

fn leaf(seq: u64) -> Vec<u8> {
    to_canonical_json(&json!({
        "seq": seq, "decision": "allow", "agent_id": "agent-42", "action_type": "send_email",
        "policies": ["pii-guard", "velocity"], "decided_at": "2025-01-01T00:00:00Z",
    }))
    .unwrap_or_default()
}

struct Built {
    state: LogState,
    stored: Vec<Hash>,
    entries: Vec<Entry>,
}

fn build(n: u64) -> Built {
    let mut state = LogState::new();
    let mut stored = Vec::new();
    let mut entries = Vec::new();
    for seq in 0..n {
        let l = leaf(seq);
        let a = state.append(&l, SECRET).unwrap_or_else(|e| panic!("{e}"));
        stored.extend(a.new_stored_hashes.iter().map(|x| x.1));
        entries.push(Entry::from_appended(
            String::from_utf8_lossy(&l).into_owned(),
            &a,
            false,
        ));
    }
    Built {
        state,
        stored,
        entries,
    }
}

fn bench_append(c: &mut Criterion) {
    let leaves: Vec<Vec<u8>> = (0..1000).map(leaf).collect();
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(leaves.len() as u64));
    g.bench_function("1000 canonical leaves", |b| {
        b.iter_batched(
            LogState::new,
            |mut state| {
                for l in &leaves {
                    black_box(state.append(l, SECRET).ok());
                }
                state
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn bench_proofs(c: &mut Criterion) {
    let built = build(100_000);
    let n = built.state.size();
    c.bench_function("prove_inclusion n=100k", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(prove_inclusion(i, n, &built.stored).ok())
        });
    });
    c.bench_function("prove_consistency n=100k", |b| {
        let mut i = 1u64;
        b.iter(|| {
            i = (i + 7919) % (n - 1) + 1;
            black_box(prove_consistency(i, n, &built.stored).ok())
        });
    });
}

/// The canonical encoding of a decision-sized entry (a blocked decision with two
/// violations), whole and with its `seq` left to fill in, as the server seals one.
fn bench_canonical(c: &mut Criterion) {
    let entry = json!({
        "kind": "decision", "time": "2026-12-05T20:00:00.000Z", "workspace_id": "ws_0123456789abcdef01234567",
        "decision_id": "dec_019aef0123456789abcdef01", "agent_id": "agt_0123456789abcdef01234567",
        "session_id": null, "action_type": "payment.send", "content_sha256": "ab".repeat(32),
        "content_redacted": false, "decision": "block", "outcome": "blocked",
        "policies": [
            {"policy_id": "pol_0123456789abcdef01234567", "name": "global rate", "decision": "block", "reason": "101 actions in 60 s (limit 100)"},
            {"policy_id": "pol_abcdef0123456789abcdef01", "name": "large payments", "decision": "escalate", "reason": "amount 12 > 10"},
        ],
        "policy_set_hash": "cd".repeat(32), "identity": {"result": "verified"}, "approver": null,
        "violations": [
            {"violation_id": "vio_019aef0123456789abcdef01", "rule_id": "pol_0123456789abcdef01234567", "rule_name": "global rate",
             "source": "policy", "severity": "high", "action": "block", "reason": "101 actions in 60 s (limit 100)", "overridden_by_breakglass": null},
            {"violation_id": "vio_019aef0123456789abcdef02", "rule_id": "pol_abcdef0123456789abcdef01", "rule_name": "large payments",
             "source": "policy", "severity": "medium", "action": "escalate", "reason": "amount 12 > 10", "overridden_by_breakglass": null},
        ],
        "metadata": {"amount": "12", "currency": "EUR", "tokens": 40},
    });
    let serde_json::Value::Object(object) = entry.clone() else { unreachable!() };
    let mut g = c.benchmark_group("canonical");
    g.bench_function("decision entry", |b| b.iter(|| black_box(praetor_vault::canonical_json(&entry).ok())));
    g.bench_function("decision entry, seq to fill", |b| {
        b.iter(|| black_box(praetor_vault::CanonicalWithSlot::new(&object, "seq").ok()))
    });
    g.finish();
}

fn bench_verify(c: &mut Criterion) {
    let built = build(100_000);
    let signer = NoteSigner::from_seed(ORIGIN, KeyAlgorithm::EcdsaP256, &[7u8; 32])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut notes = Vec::new();
    for size in [25_000u64, 50_000, 100_000] {
        let root = praetor_vault::tree_hash(size, &built.stored).unwrap_or_else(|e| panic!("{e}"));
        notes.push(
            Checkpoint::new(ORIGIN, size, root)
                .sign([&signer])
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let bundle = build_bundle(ORIGIN, Vec::new(), 0, built.entries, notes, &built.stored)
        .unwrap_or_else(|e| panic!("{e}"));
    let keys = [signer.verifier()];
    let mut g = c.benchmark_group("verify_bundle");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("100k entries", |b| {
        b.iter(|| black_box(verify_bundle(&bundle, &keys, &mut |_, _| {}).is_ok()));
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_canonical, bench_proofs, bench_verify);
criterion_main!(benches);
