//! The cost of sealing: 64 concurrent decision transactions committed through the
//! writer (one group commit, one fsync), with and without their vault entries. The
//! difference is what the vault adds to the durable write; the fsync is paid either way.
//!
//! Run: `cargo bench -p praetor-store --bench commit`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use praetor_core::WorkspaceSettings;
use praetor_store::sqlite::SqliteStore;
use praetor_store::{DecisionRow, Mutation, SealRequest, Store, Txn, Workspace};
use serde_json::{Value, json};

const BATCH: usize = 64;

fn txn(n: u64, seal: bool) -> Txn {
    let body = json!({"decision": "allow", "outcome": "allowed", "reasoning": "no policy matched; default allow",
                      "policies_triggered": [], "trust_score": 80});
    let entry = match json!({"kind": "decision", "decision_id": format!("dec_{n}"), "action_type": "tool.search",
                            "decision": "allow", "policies": [], "content_sha256": "ab".repeat(32),
                            "policy_set_hash": "cd".repeat(32), "identity": {"result": "verified"}}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    Txn {
        mutations: vec![Mutation::InsertDecision {
            row: DecisionRow {
                decision_id: format!("dec_{n}_{seal}"),
                workspace_id: "ws_bench".into(),
                agent_id: Some("agt_bench".into()),
                session_id: None,
                action_type: "tool.search".into(),
                decision: "allow".into(),
                created_at: n as i64,
                vault_seq: None,
                content: Some("search the knowledge base for Q3 revenue".into()),
                body,
                sealed_leaf: None,
                digests: None,
            },
            seal: seal.then_some(0),
        }],
        seal: if seal { vec![SealRequest { workspace_id: "ws_bench".into(), body: entry }] } else { vec![] },
    }
}

fn bench_commit(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    };
    let store = match SqliteStore::open(dir.path().join("bench.db")) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("open: {e}"),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let ws = Workspace {
        workspace_id: "ws_bench".into(),
        name: "bench".into(),
        settings: WorkspaceSettings::default(),
        hmac_secret: vec![1; 32],
        created_at: 0,
    };
    if let Err(e) = rt.block_on(store.commit(Txn { mutations: vec![Mutation::InsertWorkspace(ws)], seal: vec![] })) {
        panic!("workspace: {e}");
    }
    let mut n = 0u64;
    let mut g = c.benchmark_group("group_commit_64_decisions");
    g.throughput(Throughput::Elements(BATCH as u64));
    for seal in [false, true] {
        g.bench_function(if seal { "with_vault" } else { "without_vault" }, |b| {
            b.iter(|| {
                let batch: Vec<Txn> = (0..BATCH).map(|_| { n += 1; txn(n, seal) }).collect();
                rt.block_on(async {
                    let tasks: Vec<_> = batch.into_iter().map(|t| { let s = store.clone(); tokio::spawn(async move { s.commit(t).await }) }).collect();
                    for t in tasks {
                        if let Ok(Err(e)) = t.await {
                            panic!("commit: {e}");
                        }
                    }
                });
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench_commit
}
criterion_main!(benches);
