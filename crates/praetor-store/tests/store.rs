//! The SQLite store: group commit, atomicity of each transaction inside a batch, the
//! vault sequence, restore after reopening, and the self-check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use praetor_core::WorkspaceSettings;
use praetor_store::sqlite::SqliteStore;
use praetor_store::{DecisionRow, Mutation, SealRequest, Store, Txn, Workspace};
use serde_json::{Map, Value, json};

fn workspace() -> Workspace {
    Workspace {
        workspace_id: "ws_test".into(),
        name: "test".into(),
        settings: WorkspaceSettings::default(),
        hmac_secret: vec![7; 32],
        created_at: 1,
    }
}

fn body(i: u64) -> Map<String, Value> {
    match json!({ "kind": "decision", "n": i }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn decision_txn(id: &str, i: u64) -> Txn {
    Txn {
        mutations: vec![Mutation::InsertDecision {
            row: DecisionRow {
                decision_id: id.into(),
                workspace_id: "ws_test".into(),
                agent_id: None,
                action_type: "x".into(),
                decision: "allow".into(),
                created_at: i as i64,
                vault_seq: None,
                content: None,
                body: json!({}),
            },
            seal: Some(0),
        }],
        seal: vec![SealRequest { workspace_id: "ws_test".into(), body: body(i) }],
    }
}

async fn open(dir: &std::path::Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(dir.join("praetor.db")).expect("open"))
}

#[tokio::test]
async fn concurrent_commits_get_unique_contiguous_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.commit(Txn { mutations: vec![Mutation::InsertWorkspace(workspace())], seal: vec![] }).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.commit(decision_txn(&format!("dec_{i}"), i)).await.unwrap()[0].seq }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..300).collect::<Vec<_>>());
    // Each decision row carries its own entry's sequence number.
    let row = store.get_decision("ws_test", "dec_17").await.unwrap().unwrap();
    let entry = &store.vault_entries("ws_test", row.vault_seq.unwrap(), row.vault_seq.unwrap() + 1).await.unwrap()[0];
    let sealed: Value = serde_json::from_slice(&entry.leaf).unwrap();
    assert_eq!(sealed["n"], 17);
}

#[tokio::test]
async fn a_failing_transaction_leaves_no_trace_and_spares_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.commit(Txn { mutations: vec![Mutation::InsertWorkspace(workspace())], seal: vec![] }).await.unwrap();
    assert_eq!(store.commit(decision_txn("dec_a", 0)).await.unwrap()[0].seq, 0);
    // A duplicate decision id fails after its seal was appended: the seal must be undone.
    let (dup, ok) = tokio::join!(store.commit(decision_txn("dec_a", 1)), store.commit(decision_txn("dec_b", 2)));
    assert!(dup.is_err());
    assert_eq!(ok.unwrap()[0].seq, 1, "the failed transaction did not consume a sequence number");
    // A float cannot be sealed (canonical JSON has none): refused, nothing written.
    let mut bad = decision_txn("dec_c", 3);
    bad.seal[0].body.insert("amount".into(), json!(1.5));
    assert!(store.commit(bad).await.is_err());
    assert!(store.get_decision("ws_test", "dec_c").await.unwrap().is_none());
    assert_eq!(store.commit(decision_txn("dec_d", 4)).await.unwrap()[0].seq, 2);
    let reports = praetor_store::sqlite::check_vault_file(&dir.path().join("praetor.db"), &mut |_, _, _| {}).unwrap();
    assert_eq!(reports[0].entries, 3);
    assert_eq!(reports[0].first_bad, None);
}

#[tokio::test]
async fn reopening_restores_the_log_without_rebuilding_it() {
    let dir = tempfile::tempdir().unwrap();
    let (size, root) = {
        let store = open(dir.path()).await;
        store.commit(Txn { mutations: vec![Mutation::InsertWorkspace(workspace())], seal: vec![] }).await.unwrap();
        for i in 0..37 {
            store.commit(decision_txn(&format!("dec_{i}"), i)).await.unwrap();
        }
        let head = store.log_head("ws_test").await.unwrap();
        (head.size, head.root)
    };
    let store = open(dir.path()).await;
    let head = store.log_head("ws_test").await.unwrap();
    assert_eq!((head.size, head.root), (size, root));
    assert_eq!(store.commit(decision_txn("dec_next", 99)).await.unwrap()[0].seq, 37);
    let root38 = store.tree_root("ws_test", 38).await.unwrap();
    let proof = store.consistency_proof("ws_test", 37, 38).await.unwrap();
    praetor_vault::merkle::verify_consistency(37, 38, &root, &root38, &proof).unwrap();
    let reports = praetor_store::sqlite::check_vault_file(&dir.path().join("praetor.db"), &mut |_, _, _| {}).unwrap();
    assert_eq!(reports[0].first_bad, None);
}

#[tokio::test]
async fn the_vault_cannot_be_rewritten_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.commit(Txn { mutations: vec![Mutation::InsertWorkspace(workspace())], seal: vec![] }).await.unwrap();
    store.commit(decision_txn("dec_a", 0)).await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("praetor.db")).unwrap();
    for sql in ["DELETE FROM vault_entries", "UPDATE vault_entries SET leaf = x'00'", "DELETE FROM vault_hashes", "DELETE FROM decisions"] {
        let err = conn.execute_batch(sql).expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}
