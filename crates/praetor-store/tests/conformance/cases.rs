//! The cases. Each takes a fresh backend and asserts what every backend must do.

use std::sync::Arc;

use praetor_core::WorkspaceSettings;
use praetor_core::session::SessionStatus;
use praetor_store::*;
use serde_json::{Map, Value, json};

use crate::backend::Backend;

const WS: &str = "ws_test";

fn workspace(id: &str) -> Workspace {
    Workspace { workspace_id: id.into(), name: "test".into(), settings: WorkspaceSettings::default(), hmac_secret: vec![7; 32], created_at: 1 }
}

fn body(i: u64) -> Map<String, Value> {
    match json!({ "kind": "decision", "n": i }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn decision(id: &str, at: i64) -> DecisionRow {
    DecisionRow {
        decision_id: id.into(),
        workspace_id: WS.into(),
        agent_id: None,
        session_id: None,
        action_type: "x".into(),
        decision: "allow".into(),
        created_at: at,
        vault_seq: None,
        content: None,
        body: json!({}),
        sealed_leaf: None,
        digests: None,
    }
}

fn decision_txn(id: &str, i: u64) -> Txn {
    Txn {
        mutations: vec![Mutation::InsertDecision { row: decision(id, i as i64), seal: Some(0) }],
        seal: vec![SealRequest { workspace_id: WS.into(), body: body(i) }],
    }
}

fn one(m: Mutation) -> Txn {
    Txn { mutations: vec![m], seal: vec![] }
}

async fn with_workspace(b: &Backend) -> Arc<dyn Store> {
    let store = b.open().await;
    store.commit(one(Mutation::InsertWorkspace(workspace(WS)))).await.unwrap();
    store
}

pub async fn concurrent_commits_get_unique_contiguous_sequence_numbers(b: Backend) {
    let store = with_workspace(&b).await;
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
    let row = store.get_decision(WS, "dec_17").await.unwrap().unwrap();
    let entry = &store.vault_entries(WS, row.vault_seq.unwrap(), row.vault_seq.unwrap() + 1).await.unwrap()[0];
    let sealed: Value = serde_json::from_slice(&entry.leaf).unwrap();
    assert_eq!(sealed["n"], 17);
    assert_eq!(row.sealed_leaf.as_ref(), Some(&entry.leaf), "a decision reads back with its sealed entry");
    let (listed, _) = store.list_decisions(WS, &DecisionFilter { page: 1, per_page: 500, ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 300);
    for r in &listed {
        let leaf: Value = serde_json::from_slice(r.sealed_leaf.as_ref().unwrap()).unwrap();
        assert_eq!(format!("dec_{}", leaf["n"]), r.decision_id, "each listed decision with its own entry");
    }
    // Another workspace's log has the same sequence numbers: each decision still reads
    // back with its own workspace's entry, once.
    store.commit(one(Mutation::InsertWorkspace(workspace("ws_two")))).await.unwrap();
    for i in 0..3u64 {
        let mut txn = decision_txn(&format!("dec_two_{i}"), 1000 + i);
        if let Mutation::InsertDecision { row, .. } = &mut txn.mutations[0] {
            row.workspace_id = "ws_two".into();
        }
        txn.seal[0].workspace_id = "ws_two".into();
        assert_eq!(store.commit(txn).await.unwrap()[0].seq, i);
    }
    let leaf_n = |row: &DecisionRow| serde_json::from_slice::<Value>(row.sealed_leaf.as_ref().unwrap()).unwrap()["n"].clone();
    let (two, total) = store.list_decisions("ws_two", &DecisionFilter { page: 1, per_page: 10, ..Default::default() }).await.unwrap();
    assert_eq!((two.iter().map(leaf_n).collect::<Vec<_>>(), total), (vec![json!(1002), json!(1001), json!(1000)], 3));
    let first = store.list_decisions(WS, &DecisionFilter { page: 1, per_page: 500, ..Default::default() }).await.unwrap().0;
    assert_eq!(first.len(), 300, "no decision joined twice");
    let zero = store.get_decision(WS, "dec_0").await.unwrap().unwrap();
    assert_eq!(leaf_n(&zero), json!(0));
    assert!(store.commit_stats().transactions >= 301);
}

pub async fn a_failing_transaction_leaves_no_trace_and_spares_the_others(b: Backend) {
    let store = with_workspace(&b).await;
    assert_eq!(store.commit(decision_txn("dec_a", 0)).await.unwrap()[0].seq, 0);
    // A duplicate decision id fails after its seal was appended: the seal must be undone.
    let (dup, ok) = tokio::join!(store.commit(decision_txn("dec_a", 1)), store.commit(decision_txn("dec_b", 2)));
    assert!(dup.is_err());
    assert_eq!(ok.unwrap()[0].seq, 1, "the failed transaction did not consume a sequence number");
    // A float cannot be sealed (canonical JSON has none): refused, nothing written.
    let mut bad = decision_txn("dec_c", 3);
    bad.seal[0].body.insert("amount".into(), json!(1.5));
    assert!(store.commit(bad).await.is_err());
    assert!(store.get_decision(WS, "dec_c").await.unwrap().is_none());
    assert_eq!(store.commit(decision_txn("dec_d", 4)).await.unwrap()[0].seq, 2);
    let reports = b.check_vault();
    assert_eq!(reports[0].entries, 3);
    assert_eq!(reports[0].first_bad, None);
}

pub async fn reopening_restores_the_log_without_rebuilding_it(b: Backend) {
    let (size, root) = {
        let store = with_workspace(&b).await;
        for i in 0..37 {
            store.commit(decision_txn(&format!("dec_{i}"), i)).await.unwrap();
        }
        let head = store.log_head(WS).await.unwrap();
        (head.size, head.root)
    };
    let store = b.open().await;
    let head = store.log_head(WS).await.unwrap();
    assert_eq!((head.size, head.root), (size, root));
    assert_eq!(store.commit(decision_txn("dec_next", 99)).await.unwrap()[0].seq, 37);
    let root38 = store.tree_root(WS, 38).await.unwrap();
    let proof = store.consistency_proof(WS, 37, 38).await.unwrap();
    praetor_vault::merkle::verify_consistency(37, 38, &root, &root38, &proof).unwrap();
    assert_eq!(b.check_vault()[0].first_bad, None);
}

pub async fn the_vault_cannot_be_rewritten_through_sql(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(decision_txn("dec_a", 0)).await.unwrap();
    // A violation and a signed checkpoint, which are append-only too.
    let violation = Violation {
        violation_id: "vio_a".into(), workspace_id: WS.into(), rule_id: "rule_a".into(), severity: "high".into(), agent_id: None,
        decision_id: "dec_a".into(), at: 0, body: json!({ "violation_id": "vio_a" }), decision_agent: None,
    };
    store.commit(one(Mutation::InsertViolation(violation))).await.unwrap();
    let root = store.log_head(WS).await.unwrap().root;
    store.put_checkpoint(WS, CheckpointRow { size: 1, root, note: "note".into(), created_at: 1 }).await.unwrap();
    let truncate: &[&str] = match b {
        Backend::Sqlite { .. } => &[], // SQLite has no TRUNCATE (`DELETE` without WHERE is covered)
        Backend::Postgres { .. } => &["TRUNCATE vault_entries", "TRUNCATE vault_hashes", "TRUNCATE decisions", "TRUNCATE violations", "TRUNCATE vault_checkpoints"],
    };
    let statements = [
        "DELETE FROM vault_entries", "UPDATE vault_entries SET created_at = 0", "DELETE FROM vault_hashes", "DELETE FROM decisions",
        "UPDATE violations SET body = '{}'", "DELETE FROM violations", "UPDATE vault_checkpoints SET note = 'x'", "DELETE FROM vault_checkpoints",
    ];
    for sql in statements.iter().chain(truncate) {
        let err = b.raw_sql(sql).expect_err(sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.vault_entries(WS, 0, 10).await.unwrap().len(), 1);
}

/// A database migrated by a newer version is refused at open, with the versions named,
/// before this build reads or writes anything in it; what it held is untouched.
pub async fn a_database_migrated_by_a_newer_version_is_refused(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(decision_txn("dec_a", 0)).await.unwrap();
    drop(store);
    b.raw_sql("INSERT INTO schema_migrations (version, applied_at) VALUES (1000, 0)").unwrap();
    let err = b.try_open().await.err().expect("a newer schema is refused");
    assert!(err.contains("schema version 1000") && err.contains("newer Praetor") && err.contains("knows versions up to"), "{err}");

    // Back at the versions this build knows, it opens and finds everything as it was.
    b.raw_sql("DELETE FROM schema_migrations WHERE version = 1000").unwrap();
    let store = b.open().await;
    assert_eq!(store.vault_entries(WS, 0, 10).await.unwrap().len(), 1);
    assert!(store.get_decision(WS, "dec_a").await.unwrap().is_some());
}

/// A store already open when a newer version migrates its database (another node, or
/// the newer binary run on the same file) commits nothing more and refuses every read:
/// the writer checks the schema inside each batch's transaction, and a store that only
/// reads finds out when asked to check (the server asks every 100 ms).
pub async fn a_running_store_stops_once_a_newer_version_migrates_its_database(b: Backend) {
    let writing = with_workspace(&b).await;
    let reading = b.open().await;
    writing.commit(decision_txn("dec_a", 0)).await.unwrap();
    writing.check_schema().await.unwrap();
    b.raw_sql("INSERT INTO schema_migrations (version, applied_at) VALUES (1000, 0)").unwrap();

    let err = writing.commit(decision_txn("dec_b", 1)).await.expect_err("nothing is committed past a newer migration");
    assert!(matches!(&err, StoreError::Superseded(m) if m.contains("schema version 1000") && m.contains("knows versions up to")), "{err}");
    assert!(writing.superseded().is_some_and(|m| m == err.to_string()));
    assert!(matches!(writing.get_decision(WS, "dec_a").await, Err(StoreError::Superseded(_))), "reads are refused too");

    assert!(reading.superseded().is_none(), "nothing has told the reading store yet");
    assert!(reading.get_decision(WS, "dec_a").await.unwrap().is_some());
    assert!(matches!(reading.check_schema().await, Err(StoreError::Superseded(_))));
    assert!(matches!(reading.get_decision(WS, "dec_a").await, Err(StoreError::Superseded(_))));
    assert!(matches!(reading.commit(decision_txn("dec_c", 2)).await, Err(StoreError::Superseded(_))));
    drop((writing, reading));

    // Back at this build's versions: only what was committed before is there.
    b.raw_sql("DELETE FROM schema_migrations WHERE version = 1000").unwrap();
    let store = b.open().await;
    store.check_schema().await.unwrap();
    assert!(store.get_decision(WS, "dec_a").await.unwrap().is_some());
    for id in ["dec_b", "dec_c"] {
        assert!(store.get_decision(WS, id).await.unwrap().is_none(), "{id} was refused, so it must not be stored");
    }
    assert_eq!(store.log_head(WS).await.unwrap().size, 1);
}

/// A batch that starts while a newer version's migration is running waits for it, and
/// then commits nothing: no write of this version lands after a migration it does not
/// know. (The wait is checked only as "not yet done after 300 ms"; a slow machine could
/// make this pass without the wait, never fail with it.)
pub async fn a_batch_waits_for_a_migration_in_progress_and_then_stops(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(decision_txn("dec_a", 0)).await.unwrap();
    let migration = b.begin_newer_migration();
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.commit(decision_txn("dec_b", 1)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the batch waits for the migration to end");
    crate::backend::off_runtime(move || migration.finish());
    let err = pending.await.unwrap().expect_err("refused once the migration committed");
    assert!(matches!(&err, StoreError::Superseded(m) if m.contains("schema version 1000")), "{err}");
    drop(store);
    b.raw_sql("DELETE FROM schema_migrations WHERE version = 1000").unwrap();
    let store = b.open().await;
    assert!(store.get_decision(WS, "dec_b").await.unwrap().is_none());
    assert_eq!(store.log_head(WS).await.unwrap().size, 1);
}

/// A newer version's migration (run through the real migration code) waits for a batch
/// an older node has in flight before it changes anything, and that node commits
/// nothing after it. On PostgreSQL "changes nothing" is seen from outside: the
/// migration's `ALTER TABLE` would hold `decisions` exclusively, so a read of it would
/// wait; it does not.
pub async fn a_migration_waits_for_batches_in_flight_before_it_changes_anything(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(decision_txn("dec_a", 0)).await.unwrap();
    let batch = b.begin_batch();
    let migration = b.spawn_newer_migration(1000, "ALTER TABLE decisions ADD COLUMN from_a_newer_version TEXT");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!migration.is_finished(), "the migration waits for the batch in flight");
    b.read_within("SELECT COUNT(*) FROM decisions", 200).expect("the waiting migration holds no lock on `decisions` yet");
    crate::backend::off_runtime(move || batch.finish());
    crate::backend::off_runtime(move || migration.join().unwrap()).expect("the migration runs once the batch ends");
    let err = store.commit(decision_txn("dec_b", 1)).await.expect_err("nothing is committed past the migration");
    assert!(matches!(&err, StoreError::Superseded(m) if m.contains("schema version 1000")), "{err}");
}

/// A batch does not wait for a migration without end (PostgreSQL's may wait on a long
/// reader): after 5 s it gives up with an error, and commits nothing.
pub async fn a_batch_held_back_by_a_migration_gives_up_after_five_seconds(b: Backend) {
    let store = with_workspace(&b).await;
    let migration = b.begin_newer_migration();
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), store.commit(decision_txn("dec_a", 0))).await;
    let waited = started.elapsed();
    crate::backend::off_runtime(move || migration.finish());
    let err = outcome.expect("the batch gave up on its own").expect_err("a batch that could not take its lock commits nothing");
    assert!(!matches!(err, StoreError::Superseded(_)), "it never saw the migration: {err}");
    assert!(waited >= std::time::Duration::from_secs(4), "it waited for the lock first ({waited:?}): {err}");
    drop(store);
    b.raw_sql("DELETE FROM schema_migrations WHERE version = 1000").unwrap();
    assert!(b.open().await.get_decision(WS, "dec_a").await.unwrap().is_none());
}

/// Two stores on one database (two nodes, or the server and a CLI command) append to
/// one log: every entry gets its own sequence number, none is lost or sealed twice,
/// and the log verifies.
pub async fn two_writers_on_one_database_share_one_log(b: Backend) {
    let first = with_workspace(&b).await;
    let second = b.open().await;
    first.commit(Txn { mutations: vec![Mutation::PutAgent(agent("agt_x", "x")), Mutation::PutAgent(agent("agt_y", "y"))], seal: vec![] }).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let store = if i % 2 == 0 { first.clone() } else { second.clone() };
        // Decisions also move their agent's counts: batches on both writers update the
        // same rows in different orders, which must not deadlock.
        let mut txn = decision_txn(&format!("dec_{i}"), i);
        let agent_id = if (i / 2) % 2 == 0 { "agt_x" } else { "agt_y" };
        txn.mutations.push(Mutation::AgentActivity(AgentActivity {
            workspace_id: WS.into(), agent_id: agent_id.into(), trust_score: 50, clean_streak: 0, decision: "allow".into(), at: i as i64, etag: format!("e{i}"),
        }));
        tasks.push(tokio::spawn(async move { store.commit(txn).await }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().expect("every commit succeeds")[0].seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "unique and contiguous across writers");
    for store in [&first, &second] {
        assert_eq!(store.log_head(WS).await.unwrap().size, 200, "each writer sees the whole log");
    }
    let agents = first.snapshot().await.unwrap().agents;
    assert_eq!(agents.iter().map(|a| a.total_actions).sum::<u64>(), 200, "every count landed once");
    let report = &b.check_vault()[0];
    assert_eq!((report.entries, report.first_bad.clone()), (200, None));
    // Proofs from either writer verify against the same root.
    let root = first.tree_root(WS, 200).await.unwrap();
    assert_eq!(second.tree_root(WS, 200).await.unwrap(), root);
    let entry = &second.vault_entries(WS, 123, 124).await.unwrap()[0];
    let proof = first.inclusion_proof(WS, 123, 200).await.unwrap();
    praetor_vault::merkle::verify_inclusion(123, 200, &entry.leaf_hash, &proof, &root).unwrap();
}

fn agent(id: &str, name: &str) -> Agent {
    Agent {
        agent_id: id.into(),
        workspace_id: WS.into(),
        name: name.into(),
        framework: "test".into(),
        description: Some("does things".into()),
        capabilities: vec!["read".into()],
        scopes: vec!["db.*".into()],
        permission_boundary: None,
        require_signature: true,
        trust_score: 50,
        clean_streak: 0,
        is_active: true,
        attributes: Map::new(),
        created_at: 10,
        updated_at: 10,
        last_seen_at: None,
        total_actions: 0,
        allowed_actions: 0,
        blocked_actions: 0,
        escalated_actions: 0,
        copy_generation: 0,
        etag: "e0".into(),
    }
}

fn policy(id: &str, decision: &str) -> PolicyRecord {
    let def = serde_json::from_value(json!({ "policy_id": id, "name": id, "policy_type": "action_type", "action_types": ["delete_*"], "decision": decision }))
        .unwrap();
    PolicyRecord { workspace_id: WS.into(), def, created_at: 5, updated_at: 5 }
}

pub async fn records_round_trip_and_updates_keep_what_decisions_own(b: Backend) {
    let store = with_workspace(&b).await;
    let key = ApiKey {
        key_id: "key_1".into(),
        workspace_id: WS.into(),
        key_hash: "ab".repeat(32),
        prefix: "xb_live_ab".into(),
        scopes: vec![Scope::Agent, Scope::Read],
        agent_id: Some("agt_1".into()),
        label: Some("ci".into()),
        created_at: 3,
        revoked_at: None,
    };
    let cred = Credential {
        credential_id: "cred_1".into(),
        workspace_id: WS.into(),
        agent_id: "agt_1".into(),
        algorithm: "ed25519".into(),
        public_key: "pk".into(),
        did: "did:key:z".into(),
        created_at: 11,
        expires_at: Some(1_000),
        revoked_at: None,
        rotated: false,
    };
    store
        .commit(Txn {
            mutations: vec![
                Mutation::InsertApiKey(key.clone()),
                Mutation::PutAgent(agent("agt_1", "one")),
                Mutation::InsertCredential(cred.clone()),
                Mutation::PutPolicy(policy("pol_1", "block")),
                Mutation::PutPolicy(policy("pol_2", "escalate")),
            ],
            seal: vec![],
        })
        .await
        .unwrap();
    assert_eq!(store.api_key_by_hash(&key.key_hash).await.unwrap(), Some(key.clone()));
    assert_eq!(store.api_key_by_hash("cd").await.unwrap(), None);
    // Decisions own trust and counts; a later descriptive update leaves them alone.
    let activity = |decision: &str, trust: u8, at: i64| {
        Mutation::AgentActivity(AgentActivity { workspace_id: WS.into(), agent_id: "agt_1".into(), trust_score: trust, clean_streak: 3, decision: decision.into(), at, etag: format!("e{at}") })
    };
    store.commit(Txn { mutations: vec![activity("allow", 61, 20), activity("block", 55, 21), activity("escalate", 54, 22)], seal: vec![] }).await.unwrap();
    let mut renamed = agent("agt_1", "one");
    renamed.description = None;
    renamed.scopes = vec!["*".into()];
    renamed.updated_at = 30;
    store.commit(one(Mutation::PutAgent(renamed))).await.unwrap();
    store
        .commit(Txn {
            mutations: vec![
                Mutation::RevokeApiKey { workspace_id: WS.into(), key_id: "key_1".into(), at: 40 },
                Mutation::RevokeCredential { workspace_id: WS.into(), credential_id: "cred_1".into(), at: 41, rotated: false },
                Mutation::DeletePolicy { workspace_id: WS.into(), policy_id: "pol_2".into() },
                Mutation::PutWorkspaceSettings { workspace_id: WS.into(), settings: WorkspaceSettings::default() },
            ],
            seal: vec![],
        })
        .await
        .unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.workspaces, vec![workspace(WS)]);
    let a = &snap.agents[0];
    assert_eq!((a.description.as_deref(), a.scopes.clone(), a.updated_at), (None, vec!["*".to_owned()], 30));
    assert_eq!((a.trust_score, a.clean_streak, a.last_seen_at), (54, 3, Some(22)));
    assert_eq!((a.total_actions, a.allowed_actions, a.blocked_actions, a.escalated_actions), (3, 1, 1, 1));
    assert!(a.require_signature && a.is_active);
    assert_eq!(snap.credentials[0].revoked_at, Some(41));
    assert_eq!(snap.credentials[0].expires_at, Some(1_000));
    assert_eq!(snap.api_keys[0].revoked_at, Some(40));
    assert_eq!(store.list_api_keys(WS).await.unwrap()[0].scopes, vec![Scope::Agent, Scope::Read]);
    assert_eq!(snap.policies.iter().map(|p| p.def.policy_id.as_str()).collect::<Vec<_>>(), vec!["pol_1"]);
    assert_eq!(snap.policies[0], policy("pol_1", "block"));
    // An administrator's trust override restarts the streak.
    store.commit(one(Mutation::SetTrust { workspace_id: WS.into(), agent_id: "agt_1".into(), trust_score: 90 })).await.unwrap();
    let a = &store.snapshot().await.unwrap().agents[0];
    assert_eq!((a.trust_score, a.clean_streak), (90, 0));
    // (workspace, name, framework) is unique.
    assert!(store.commit(one(Mutation::PutAgent(agent("agt_2", "one")))).await.is_err());
}

fn session(id: &str, agent: &str, status: SessionStatus, version: u64, at: i64) -> Session {
    Session {
        session_id: id.into(),
        workspace_id: WS.into(),
        agent_id: agent.into(),
        credential_id: None,
        label: Some("run".into()),
        budgets: serde_json::from_value(json!({ "max_actions": 10, "max_spend": { "EUR": "100.50" } })).unwrap(),
        consumed: Default::default(),
        status,
        kill_reason: None,
        attributes: Map::new(),
        created_at: at,
        expires_at: Some(at + 60_000),
        closed_at: None,
        version,
        etag: format!("v{version}"),
        copy_generation: 0,
    }
}

fn object(kind: &str, id: &str, status: &str, version: u64, at: i64) -> ObjectRecord {
    ObjectRecord {
        workspace_id: WS.into(),
        kind: kind.into(),
        object_id: id.into(),
        agent_id: Some("agt_1".into()),
        status: status.into(),
        body: json!({ "v": version }),
        created_at: at,
        updated_at: at,
        version,
    }
}

pub async fn sessions_and_objects_keep_the_newest_version(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(one(Mutation::PutAgent(agent("agt_1", "one")))).await.unwrap();
    let mut s = session("ses_1", "agt_1", SessionStatus::Active, 1, 100);
    store.commit(one(Mutation::PutSession(s.clone()))).await.unwrap();
    s.consumed.actions = 4;
    s.version = 3;
    store.commit(one(Mutation::PutSession(s.clone()))).await.unwrap();
    // An older version arriving late changes nothing.
    let mut stale = s.clone();
    stale.consumed.actions = 2;
    stale.version = 2;
    store.commit(one(Mutation::PutSession(stale))).await.unwrap();
    assert_eq!(store.get_session(WS, "ses_1").await.unwrap(), Some(s.clone()));
    let mut killed = session("ses_2", "agt_1", SessionStatus::Killed, 1, 200);
    killed.kill_reason = Some("operator".into());
    killed.closed_at = Some(250);
    store.commit(one(Mutation::PutSession(killed.clone()))).await.unwrap();
    let all = store.list_sessions(WS, &SessionFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(), vec!["ses_1", "ses_2"], "active first");
    let only_killed = store.list_sessions(WS, &SessionFilter { status: Some("killed".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(only_killed, vec![killed]);
    assert!(store.list_sessions(WS, &SessionFilter { agent_id: Some("agt_x".into()), limit: 10, ..Default::default() }).await.unwrap().is_empty());
    assert_eq!(store.snapshot().await.unwrap().active_sessions, vec![s]);

    let grant = object("grant", "grt_1", "active", 1, 300);
    store.commit(one(Mutation::PutObject(grant.clone()))).await.unwrap();
    // An object version not above the stored one was made from a stale copy: refused
    // (so its writer reloads and decides again), and nothing changes.
    let late = store.commit(one(Mutation::PutObject(object("grant", "grt_1", "active", 1, 300)))).await;
    assert!(matches!(late, Err(StoreError::Stale(ref w)) if w == "grant `grt_1`"), "{late:?}");
    // Nor one past the next version: it was made on top of a change that never
    // committed. The next version is taken.
    store.commit(one(Mutation::PutObject(object("grant", "grt_9", "active", 1, 300)))).await.unwrap();
    let skipped = store.commit(one(Mutation::PutObject(object("grant", "grt_9", "revoked", 3, 305)))).await;
    assert!(matches!(skipped, Err(StoreError::Stale(_))), "{skipped:?}");
    store.commit(one(Mutation::PutObject(object("grant", "grt_9", "active", 2, 306)))).await.expect("the next version");
    store.commit(one(Mutation::PutObject(object("grant", "grt_9", "revoked", 3, 307)))).await.expect("and the one after");
    // A new object comes in at version 1 only: one past it was made on top of a
    // creation that never committed.
    let unborn = store.commit(one(Mutation::PutObject(object("escalation", "esc_1", "denied", 2, 309)))).await;
    assert!(matches!(unborn, Err(StoreError::Stale(_))), "{unborn:?}");
    let resolved = object("escalation", "esc_1", "denied", 2, 310);
    let pending = object("escalation", "esc_2", "pending", 1, 320);
    let raised = Mutation::PutObject(object("escalation", "esc_1", "pending", 1, 310));
    store.commit(Txn { mutations: vec![raised, Mutation::PutObject(resolved.clone()), Mutation::PutObject(pending.clone())], seal: vec![] }).await.unwrap();
    assert_eq!(store.get_object(WS, "grant", "grt_1").await.unwrap(), Some(grant.clone()));
    assert_eq!(store.get_object(WS, "role", "grt_1").await.unwrap(), None);
    let escalations = store.list_objects(WS, &ObjectFilter { kind: "escalation".into(), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(escalations, vec![pending.clone(), resolved.clone()], "newest first");
    let denied =
        store.list_objects(WS, &ObjectFilter { kind: "escalation".into(), status: Some("denied".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(denied, vec![resolved]);
    // The snapshot carries the grants not ended and only the escalations still to act on.
    let ended = [object("grant", "grt_2", "revoked", 1, 330), object("grant", "grt_3", "expired", 1, 340), object("grant", "grt_4", "exhausted", 1, 350)];
    store.commit(Txn { mutations: ended.iter().cloned().map(Mutation::PutObject).collect(), seal: vec![] }).await.unwrap();
    let mut in_snapshot = store.snapshot().await.unwrap().objects;
    in_snapshot.sort_by(|a, b| a.object_id.cmp(&b.object_id));
    assert_eq!(in_snapshot, vec![pending, grant, ended[2].clone()], "a used-up grant may still be drawn on by its re-delegations");
}

pub async fn decisions_filter_and_page(b: Backend) {
    let store = with_workspace(&b).await;
    let mut mutations = Vec::new();
    for i in 0..25i64 {
        let mut row = decision(&format!("dec_{i:02}"), 1_000 + i);
        row.agent_id = Some(if i % 2 == 0 { "agt_even" } else { "agt_odd" }.into());
        row.decision = if i % 5 == 0 { "block" } else { "allow" }.into();
        row.action_type = if i < 10 { "read" } else { "write" }.into();
        row.body = json!({ "i": i });
        mutations.push(Mutation::InsertDecision { row, seal: None });
    }
    store.commit(Txn { mutations, seal: vec![] }).await.unwrap();
    let page = |f: DecisionFilter| {
        let store = store.clone();
        async move { store.list_decisions(WS, &f).await.unwrap() }
    };
    let (rows, total) = page(DecisionFilter { page: 1, per_page: 10, ..Default::default() }).await;
    assert_eq!(total, 25);
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0].decision_id, "dec_24", "newest first");
    let (rows, _) = page(DecisionFilter { page: 3, per_page: 10, ..Default::default() }).await;
    assert_eq!(rows.iter().map(|r| r.decision_id.as_str()).collect::<Vec<_>>(), vec!["dec_04", "dec_03", "dec_02", "dec_01", "dec_00"]);
    let (rows, total) = page(DecisionFilter { decision: Some("block".into()), page: 1, per_page: 50, ..Default::default() }).await;
    assert_eq!((total, rows.len()), (5, 5));
    let (_, total) = page(DecisionFilter { agent_id: Some("agt_odd".into()), action_type: Some("write".into()), page: 1, per_page: 50, ..Default::default() }).await;
    assert_eq!(total, 7);
    let (rows, total) = page(DecisionFilter { since: Some(1_010), until: Some(1_012), page: 1, per_page: 50, ..Default::default() }).await;
    assert_eq!(total, 3);
    assert_eq!(rows[2].body, json!({ "i": 10 }));
    assert_eq!(rows[2].sealed_leaf, None, "no entry sealed it");
    assert_eq!(store.get_decision(WS, "dec_07").await.unwrap().unwrap().agent_id.as_deref(), Some("agt_odd"));
    assert_eq!(store.get_decision("ws_other", "dec_07").await.unwrap(), None, "another workspace sees nothing");
}

fn delivery(id: &str, webhook: Option<&str>, status: &str, next: i64, attempts: u32) -> Delivery {
    Delivery {
        delivery_id: id.into(),
        workspace_id: WS.into(),
        channel: "webhook".into(),
        target: "https://example.com/hook".into(),
        webhook_id: webhook.map(str::to_owned),
        event: "decision.block".into(),
        payload: json!({ "id": id }),
        status: status.into(),
        attempts,
        next_attempt_at: next,
        last_error: None,
        last_status: None,
        created_at: next,
        delivered_at: None,
    }
}

/// A violation stores its own fields; reading it back adds its decision's context from
/// the decision's sealed entry. A row that carries a context field itself (as rows
/// written before decisions sealed their violations did) keeps its own.
pub async fn violations_read_back_their_decisions_sealed_context(b: Backend) {
    let store = with_workspace(&b).await;
    let sealed = json!({ "kind": "decision", "decision_id": "dec_1", "decision": "block", "session_id": "ses_1",
        "action_type": "email.send", "content_sha256": "ab".repeat(32), "metadata": { "amount": "12.5" },
        "violations": [{ "violation_id": "vio_new", "rule_id": "rule_a" }] });
    let Value::Object(entry) = sealed else { unreachable!() };
    let violation = |id: &str, body: Value| Violation {
        violation_id: id.into(),
        workspace_id: WS.into(),
        rule_id: "rule_a".into(),
        severity: "high".into(),
        agent_id: Some("agt_1".into()),
        decision_id: "dec_1".into(),
        at: 10,
        body,
        decision_agent: None,
    };
    let slim = violation("vio_new", json!({ "violation_id": "vio_new", "rule_id": "rule_a", "severity": "high" }));
    let old = violation("vio_old", json!({ "violation_id": "vio_old", "decision": "block", "metadata": { "amount": "written with the row" } }));
    let orphan = Violation { decision_id: "dec_none".into(), ..violation("vio_orphan", json!({ "violation_id": "vio_orphan" })) };
    store
        .commit(Txn {
            mutations: vec![
                Mutation::InsertDecision { row: decision("dec_1", 10), seal: Some(0) },
                Mutation::InsertViolation(slim),
                Mutation::InsertViolation(old),
                Mutation::InsertViolation(orphan.clone()),
            ],
            seal: vec![SealRequest { workspace_id: WS.into(), body: entry }],
        })
        .await
        .unwrap();
    let new = store.get_violation(WS, "vio_new").await.unwrap().unwrap();
    assert_eq!(new.body, json!({ "violation_id": "vio_new", "rule_id": "rule_a", "severity": "high", "decision": "block",
        "session_id": "ses_1", "action_type": "email.send", "content_sha256": "ab".repeat(32), "metadata": { "amount": "12.5" } }));
    let old = store.get_violation(WS, "vio_old").await.unwrap().unwrap();
    assert_eq!(old.body["metadata"]["amount"], "written with the row", "a field the row has is its own");
    assert_eq!(old.body["action_type"], "email.send", "a field it lacks comes from the sealed entry");
    assert_eq!(store.get_violation(WS, "vio_orphan").await.unwrap(), Some(orphan), "no sealed decision: the row as written");
    let listed = store.list_violations(WS, &ViolationFilter { rule_id: Some("rule_a".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().filter(|v| v.decision_id == "dec_1").all(|v| v.body["session_id"] == "ses_1"), "{listed:?}");
}

/// A violation that its decision's sealed entry gives back whole (the sealed
/// violation, the decision's id and time, the row's agent) is stored with an empty body
/// and read back whole; one that differs in any way is stored as it is.
pub async fn a_violation_its_sealed_entry_gives_back_is_stored_once(b: Backend) {
    let store = with_workspace(&b).await;
    let sealed_violation = |id: &str| json!({ "violation_id": id, "rule_id": "rule_a", "rule_name": "Rule A", "source": "policy",
        "severity": "high", "action": "block", "reason": "matched", "overridden_by_breakglass": null });
    let Value::Object(entry) = json!({ "kind": "decision", "time": "2026-12-05T10:00:00.000Z", "decision_id": "dec_1",
        "agent_id": "agt_1", "decision": "block", "action_type": "email.send", "content_sha256": "ab".repeat(32),
        "metadata": { "amount": "12.5" }, "violations": [sealed_violation("vio_a"), sealed_violation("vio_b"), sealed_violation("vio_c"), sealed_violation("vio_d"), sealed_violation("vio_e")] })
    else {
        unreachable!()
    };
    let whole = |id: &str, extra: Value| {
        let mut body = sealed_violation(id);
        body["decision_id"] = json!("dec_1");
        body["agent_id"] = json!("agt_1");
        body["at"] = json!("2026-12-05T10:00:00.000Z");
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        Violation { violation_id: id.into(), workspace_id: WS.into(), rule_id: "rule_a".into(), severity: "high".into(),
            agent_id: Some("agt_1".into()), decision_id: "dec_1".into(), at: 10, body, decision_agent: None }
    };
    let given_back = whole("vio_a", json!({}));
    let other_agent = Violation { agent_id: Some("agt_2".into()), ..whole("vio_b", json!({})) };
    let own_field = whole("vio_c", json!({ "note": "only in the row" }));
    let empty = Violation { body: json!({}), ..whole("vio_d", json!({})) };
    let later = whole("vio_e", json!({}));
    // Not in the entry, and one whose decision has no sealed entry: rows to corrupt below.
    let unsealed = whole("vio_x", json!({}));
    let orphan = Violation { decision_id: "dec_none".into(), ..whole("vio_y", json!({})) };
    assert!(given_back.rebuilds_from(&entry) && !other_agent.rebuilds_from(&entry) && !own_field.rebuilds_from(&entry));
    assert!(later.rebuilds_from(&entry), "it would, were its decision sealed in its own transaction");
    store
        .commit(Txn {
            mutations: vec![
                Mutation::InsertDecision { row: decision("dec_1", 10), seal: Some(0) },
                Mutation::InsertViolation(given_back.clone()),
                Mutation::InsertViolation(other_agent.clone()),
                Mutation::InsertViolation(own_field.clone()),
                Mutation::InsertViolation(empty.clone()),
                Mutation::InsertViolation(unsealed.clone()),
                Mutation::InsertViolation(orphan.clone()),
            ],
            seal: vec![SealRequest { workspace_id: WS.into(), body: entry }],
        })
        .await
        .unwrap();
    // A violation committed after its decision's transaction is stored whole.
    store.commit(Txn { mutations: vec![Mutation::InsertViolation(later.clone())], seal: vec![] }).await.unwrap();
    let stored = |id: &str| b.raw_text(&format!("SELECT body FROM violations WHERE workspace_id = '{WS}' AND violation_id = '{id}'"));
    assert_eq!(stored("vio_a"), "", "none of it");
    // The row's agent is not the body's: kept whole, the body's agent with it.
    assert!(stored("vio_b").contains(r#""agent_id":"agt_1""#), "{}", stored("vio_b"));
    assert!(stored("vio_c").contains("only in the row"), "{}", stored("vio_c"));
    assert_eq!(stored("vio_d"), "{}", "an empty body is a body, even one the entry could fill");
    assert!(stored("vio_x").contains("vio_x") && stored("vio_y").contains("vio_y"));
    assert!(stored("vio_e").contains("vio_e"), "{}", stored("vio_e"));

    // Each reads back as it was given, with its decision's context added.
    let with_context = |v: &Violation| {
        let mut body = v.body.clone();
        for (k, x) in [("decision", json!("block")), ("action_type", json!("email.send")), ("content_sha256", json!("ab".repeat(32))), ("metadata", json!({ "amount": "12.5" }))] {
            body[k] = x;
        }
        body
    };
    let all = [&given_back, &other_agent, &own_field, &empty, &later, &unsealed];
    for v in all {
        let got = store.get_violation(WS, &v.violation_id).await.unwrap().unwrap();
        assert_eq!(got.body, with_context(v), "{}", v.violation_id);
    }
    let listed = store.list_violations(WS, &ViolationFilter { limit: 10, ..Default::default() }).await.unwrap();
    let mut got: Vec<(String, Value)> = listed.into_iter().filter(|v| v.violation_id != "vio_y").map(|v| (v.violation_id, v.body)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, all.iter().map(|v| (v.violation_id.clone(), with_context(v))).collect::<Vec<_>>());

    assert_eq!(store.get_violation(WS, "vio_y").await.unwrap().unwrap().body, orphan.body, "no sealed decision: no context");

    // A row that says its body is in the entry, whose entry does not hold it or which
    // has no sealed entry, or whose body is not JSON, reads as what the row holds and
    // why the rest is missing: not as an empty violation, and without failing the list
    // it falls in.
    b.unguard("violations");
    b.raw_sql(&format!("UPDATE violations SET body = '' WHERE workspace_id = '{WS}' AND violation_id IN ('vio_x', 'vio_y')")).unwrap();
    b.raw_sql(&format!("UPDATE violations SET body = 'not json' WHERE workspace_id = '{WS}' AND violation_id = 'vio_c'")).unwrap();
    let row_part = |v: &Violation, context: bool| {
        let mut part = json!({ "violation_id": v.violation_id, "rule_id": "rule_a", "severity": "high", "agent_id": "agt_1",
            "decision_id": v.decision_id, "at": "1970-01-01T00:00:00.010Z" });
        if context {
            for (k, x) in [("decision", json!("block")), ("action_type", json!("email.send")), ("content_sha256", json!("ab".repeat(32))), ("metadata", json!({ "amount": "12.5" }))] {
                part[k] = x;
            }
        }
        part
    };
    let damaged = [(&unsealed, true, "which does not hold it"), (&orphan, false, "decision `dec_none` has none"), (&own_field, true, "stored body cannot be read (Syntax error at line 1, column 2)")];
    for (v, context, why) in damaged {
        let mut got = store.get_violation(WS, &v.violation_id).await.unwrap().unwrap();
        let error = got.body.as_object_mut().unwrap().remove("read_error").unwrap_or_else(|| panic!("{}: no read_error", v.violation_id));
        assert!(error.as_str().unwrap().contains(why), "{}: {error}", v.violation_id);
        assert_eq!(got.body, row_part(v, context), "{}", v.violation_id);
    }
    let listed = store.list_violations(WS, &ViolationFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 7, "every violation is listed, the damaged ones too");
    for v in &listed {
        let damaged = damaged.iter().any(|(d, ..)| d.violation_id == v.violation_id);
        assert_eq!(v.body.get("read_error").is_some(), damaged, "{}: {}", v.violation_id, v.body);
    }
    let intact = listed.iter().find(|v| v.violation_id == "vio_a").unwrap();
    assert_eq!(intact.body, with_context(&given_back), "the others read as before");

    // A decision whose stored answer is not JSON is read with its columns and a body
    // that says why, in the list and alone.
    b.raw_sql(&format!("UPDATE decisions SET body = '{{\"reasoning\": \"x' WHERE workspace_id = '{WS}' AND decision_id = 'dec_1'")).unwrap();
    let d = store.get_decision(WS, "dec_1").await.unwrap().unwrap();
    assert_eq!((d.decision_id.as_str(), d.created_at, d.vault_seq.is_some()), ("dec_1", 10, true));
    assert_eq!(d.body, json!({ "read_error": "the decision's stored answer cannot be read (Eof error at line 1, column 16)" }), "no text of it is quoted");
    let (rows, total) = store.list_decisions(WS, &DecisionFilter { per_page: 10, ..Default::default() }).await.unwrap();
    assert_eq!((rows.len(), total), (1, 1));
    assert_eq!(rows[0].body, d.body);
    // JSON, but not an answer.
    b.raw_sql(&format!("UPDATE decisions SET body = '\"some text\"' WHERE workspace_id = '{WS}' AND decision_id = 'dec_1'")).unwrap();
    let d = store.get_decision(WS, "dec_1").await.unwrap().unwrap();
    assert_eq!(d.body, json!({ "read_error": "the decision's stored answer is not a JSON object" }));

    // The decision's sealed entry itself damaged (past the append-only guard, as only
    // someone with the database could): a violation whose own body is damaged too says
    // both, and quotes neither.
    let guard_off = match &b {
        Backend::Sqlite { .. } => "DROP TRIGGER vault_entries_no_update",
        Backend::Postgres { .. } => "ALTER TABLE vault_entries DISABLE TRIGGER vault_entries_append_only",
    };
    b.raw_sql(guard_off).unwrap();
    b.raw_sql(&format!("UPDATE vault_entries SET leaf = CAST('\"secret words\"' AS {}) WHERE workspace_id = '{WS}'", match &b {
        Backend::Sqlite { .. } => "BLOB",
        Backend::Postgres { .. } => "BYTEA",
    })).unwrap();
    let got = store.get_violation(WS, "vio_c").await.unwrap().unwrap();
    let why = got.body["read_error"].as_str().unwrap();
    assert!(why.starts_with("the violation's stored body cannot be read (Syntax error at line 1, column 2); the sealed entry of decision `dec_1` cannot be read (Data error at line 1, column 14)"), "{why}");
    assert!(!got.body.to_string().contains("secret"), "{}", got.body);
    let got = store.get_violation(WS, "vio_a").await.unwrap().unwrap();
    assert!(got.body["read_error"].as_str().unwrap().starts_with("the sealed entry of decision `dec_1` cannot be read"), "{}", got.body);
    assert_eq!(store.list_violations(WS, &ViolationFilter { limit: 10, ..Default::default() }).await.unwrap().len(), 7);
}

pub async fn shadow_hits_violations_and_deliveries(b: Backend) {
    let store = with_workspace(&b).await;
    let hit = |pid: &str, did: &str, actual: &str, would: &str, at: i64| {
        Mutation::InsertShadowHit(ShadowHit { workspace_id: WS.into(), policy_id: pid.into(), decision_id: did.into(), actual: actual.into(), would: would.into(), changed: actual != would, at })
    };
    store
        .commit(Txn {
            mutations: vec![hit("pol_a", "d1", "allow", "block", 10), hit("pol_a", "d2", "allow", "block", 11), hit("pol_a", "d3", "block", "block", 12), hit("pol_b", "d4", "allow", "allow", 13), hit("pol_a", "d0", "allow", "block", 1)],
            seal: vec![],
        })
        .await
        .unwrap();
    let report = store.shadow_report(WS, None, 5).await.unwrap();
    assert_eq!(report.len(), 2);
    let a = &report[0];
    assert_eq!((a.policy_id.as_str(), a.matched, a.would_change), ("pol_a", 3, 2));
    assert_eq!(a.transitions, vec![("allow".to_owned(), "block".to_owned(), 2)]);
    assert_eq!(a.examples, vec!["d2".to_owned(), "d1".to_owned()]);
    assert_eq!(store.shadow_report(WS, Some("pol_b"), 0).await.unwrap()[0].would_change, 0);

    let violation = |id: &str, rule: &str, severity: &str, at: i64| Violation {
        violation_id: id.into(),
        workspace_id: WS.into(),
        rule_id: rule.into(),
        severity: severity.into(),
        agent_id: Some("agt_1".into()),
        decision_id: "d1".into(),
        at,
        body: json!({ "context": { "n": at } }), decision_agent: None,
    };
    let (v1, v2, v3) = (violation("vio_1", "rule_a", "high", 10), violation("vio_2", "rule_b", "low", 20), violation("vio_3", "rule_a", "high", 30));
    store.commit(Txn { mutations: vec![Mutation::InsertViolation(v1.clone()), Mutation::InsertViolation(v2), Mutation::InsertViolation(v3.clone())], seal: vec![] }).await.unwrap();
    let high = store.list_violations(WS, &ViolationFilter { severity: Some("high".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(high, vec![v3.clone(), v1.clone()]);
    let recent = store.list_violations(WS, &ViolationFilter { rule_id: Some("rule_a".into()), since: Some(15), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(recent, vec![v3]);
    assert_eq!(store.get_violation(WS, "vio_1").await.unwrap(), Some(v1));

    let (due, later, done) = (delivery("dlv_1", Some("wh_1"), "pending", 100, 0), delivery("dlv_2", Some("wh_1"), "pending", 500, 0), delivery("dlv_3", None, "delivered", 50, 1));
    store.commit(Txn { mutations: vec![Mutation::PutDelivery(due.clone()), Mutation::PutDelivery(later.clone()), Mutation::PutDelivery(done)], seal: vec![] }).await.unwrap();
    assert_eq!(store.due_deliveries(200, 10, &[], &[]).await.unwrap(), vec![due.clone()]);
    // An attempt is recorded on the same row.
    let mut retried = due.clone();
    retried.attempts = 1;
    retried.last_error = Some("the receiver answered 500".into());
    retried.last_status = Some(500);
    retried.next_attempt_at = 1_000;
    store.commit(one(Mutation::PutDelivery(retried.clone()))).await.unwrap();
    assert!(store.due_deliveries(200, 10, &[], &[]).await.unwrap().is_empty());
    assert_eq!(store.due_deliveries(2_000, 10, &[], &[]).await.unwrap().len(), 2);
    let for_hook = store.list_deliveries(WS, Some("wh_1"), 10).await.unwrap();
    assert_eq!(for_hook.len(), 2);
    assert!(for_hook.contains(&retried));
    assert_eq!(store.list_deliveries(WS, None, 10).await.unwrap().len(), 3);
    // A target or a workspace at its bound of attempts at once is read past, however
    // many of its deliveries are due before the others.
    let mut elsewhere = delivery("dlv_4", None, "pending", 1_500, 0);
    elsewhere.target = "https://elsewhere.example/hook".into();
    store.commit(one(Mutation::PutDelivery(elsewhere.clone()))).await.unwrap();
    assert_eq!(store.due_deliveries(2_000, 1, &[], &[]).await.unwrap(), vec![later.clone()], "the longest due first");
    assert_eq!(store.due_deliveries(2_000, 1, &[retried.target.clone()], &[]).await.unwrap(), vec![elsewhere.clone()]);
    assert!(store.due_deliveries(2_000, 10, &[], &[WS.to_owned()]).await.unwrap().is_empty());
    // As many targets as the dispatcher ever leaves out (its open circuits, 16,000, and
    // the 16 at their bound), on either backend.
    let mut many: Vec<String> = (0..16_016).map(|i| format!("https://t{i}.example/hook")).collect();
    many.push(retried.target.clone());
    assert_eq!(store.due_deliveries(2_000, 1, &many, &[]).await.unwrap(), vec![elsewhere]);
}

pub async fn checkpoints_and_proofs(b: Backend) {
    let store = with_workspace(&b).await;
    let mut roots = Vec::new();
    for i in 0..20u64 {
        store.commit(decision_txn(&format!("dec_{i}"), i)).await.unwrap();
        roots.push(store.log_head(WS).await.unwrap().root);
    }
    let signer = praetor_vault::NoteSigner::generate("praetor-test", praetor_vault::checkpoint::KeyAlgorithm::Ed25519).unwrap();
    let cp = |size: u64, root: [u8; 32]| {
        let note = praetor_vault::Checkpoint::new(format!("praetor/{WS}"), size, root).sign([&signer]).unwrap();
        CheckpointRow { size, root, note, created_at: size as i64 }
    };
    // The empty tree's checkpoint (an export of no entries signs one) checks too.
    store.put_checkpoint(WS, cp(0, praetor_vault::merkle::empty_root())).await.unwrap();
    for size in [5u64, 12, 20] {
        store.put_checkpoint(WS, cp(size, roots[size as usize - 1])).await.unwrap();
    }
    // A second checkpoint of the same size (another node's) is ignored, not an error.
    store.put_checkpoint(WS, cp(12, roots[11])).await.unwrap();
    assert_eq!(store.latest_checkpoint(WS).await.unwrap().unwrap().size, 20);
    assert_eq!(store.checkpoint_covering(WS, 6).await.unwrap().unwrap().size, 12);
    assert_eq!(store.checkpoint_covering(WS, 21).await.unwrap(), None);
    assert_eq!(store.checkpoints_between(WS, 5, 12).await.unwrap().iter().map(|c| c.size).collect::<Vec<_>>(), vec![5, 12]);
    for size in [1u64, 7, 20] {
        assert_eq!(store.tree_root(WS, size).await.unwrap(), roots[size as usize - 1]);
    }
    let entries = store.vault_entries(WS, 0, 20).await.unwrap();
    assert_eq!(entries.len(), 20);
    for (i, e) in entries.iter().enumerate() {
        let proof = store.inclusion_proof(WS, i as u64, 20).await.unwrap();
        praetor_vault::merkle::verify_inclusion(i as u64, 20, &e.leaf_hash, &proof, &roots[19]).unwrap();
    }
    let proof = store.consistency_proof(WS, 5, 12).await.unwrap();
    praetor_vault::merkle::verify_consistency(5, 12, &roots[4], &roots[11], &proof).unwrap();
    assert!(!store.prefix_hashes(WS, 12).await.unwrap().is_empty());
    assert!(store.tree_root(WS, 21).await.is_err(), "a size past the log is refused");
    let report = &b.check_vault()[0];
    assert_eq!((report.entries, report.checkpoints, report.first_bad.clone()), (20, 4, None));
    let report = &b.check_vault_with(&[signer.verifier()])[0];
    assert_eq!((report.checkpoints, report.first_bad.clone()), (4, None), "signed by the key given");
    // Another key did not sign them.
    let other = praetor_vault::NoteSigner::generate("praetor-test", praetor_vault::checkpoint::KeyAlgorithm::Ed25519).unwrap();
    let report = &b.check_vault_with(&[other.verifier()])[0];
    assert!(report.first_bad.as_ref().is_some_and(|(_, why)| why.contains("checkpoint at size 0: its signed note does not open")), "{report:?}");
    // A note of another workspace's log (one key signs them all), with this one's root.
    let foreign = praetor_vault::Checkpoint::new("praetor/ws_other", 7, roots[6]).sign([&signer]).unwrap();
    store.put_checkpoint(WS, CheckpointRow { size: 7, root: roots[6], note: foreign, created_at: 7 }).await.unwrap();
    let report = &b.check_vault_with(&[signer.verifier()])[0];
    assert!(report.first_bad.as_ref().is_some_and(|(_, why)| why.contains("its signed note is of the log `praetor/ws_other`")), "{report:?}");
}

/// Text arrives from agents: any Unicode, including NUL and characters outside the
/// Basic Multilingual Plane, comes back exactly as it went in.
pub async fn text_survives_exactly(b: Backend) {
    let store = with_workspace(&b).await;
    let text = "naïve café 😀 \u{0} tab\there 'quoted' \"double\" \\backslash ?1 $1";
    let mut row = decision("dec_text", 1);
    row.content = Some(text.into());
    row.action_type = text.into();
    row.body = json!({ "content": text });
    store.commit(one(Mutation::InsertDecision { row: row.clone(), seal: None })).await.unwrap();
    // Read back with the digest of its answer's text as stored.
    row.digests = Some(RowDigests::of(&serde_json::to_string(&row.body).unwrap(), Some(text)));
    assert_eq!(store.get_decision(WS, "dec_text").await.unwrap(), Some(row));
}

/// `vault check` compares every decision's row with the entry sealed for it (its
/// columns, its content by `content_sha256`, its answer by `answer_sha256`), every
/// violation's row with what its decision's entry seals of it, and what the entries
/// seal with the rows there are; it names the first that departs.
/// Past a bad entry the check goes on, each later entry on its own: two damaged entries
/// are both named, and the untouched ones between and after them pass.
pub async fn vault_check_names_every_bad_entry_not_only_the_first(b: Backend) {
    let store = with_workspace(&b).await;
    for i in 0..10u64 {
        store.commit(decision_txn(&format!("dec_{i}"), i)).await.unwrap();
    }
    let guard_off = match &b {
        Backend::Sqlite { .. } => "DROP TRIGGER vault_entries_no_update",
        Backend::Postgres { .. } => "ALTER TABLE vault_entries DISABLE TRIGGER vault_entries_append_only",
    };
    b.raw_sql(guard_off).unwrap();
    let bytes = match &b {
        Backend::Sqlite { .. } => "BLOB",
        Backend::Postgres { .. } => "BYTEA",
    };
    b.raw_sql(&format!("UPDATE vault_entries SET leaf = CAST('{{\"forged\":1}}' AS {bytes}) WHERE workspace_id = '{WS}' AND seq IN (3, 7)")).unwrap();
    let report = b.check_vault().remove(0);
    assert_eq!(report.first_bad, Some((3, "leaf does not match its leaf hash".to_owned())), "{report:?}");
    assert_eq!(report.more_bad, vec![(7, "leaf does not match its leaf hash".to_owned())], "{report:?}");
    assert_eq!(report.bad_entries, 2);
    // Two entries deleted (a run, named once and counted twice), and a copy of the first
    // entry stored before it: named where they are.
    if matches!(b, Backend::Sqlite { .. }) {
        b.raw_sql("DROP TRIGGER vault_entries_no_delete").unwrap();
    }
    b.raw_sql(&format!("DELETE FROM vault_entries WHERE workspace_id = '{WS}' AND seq IN (5, 6)")).unwrap();
    b.raw_sql(&format!(
        "INSERT INTO vault_entries (workspace_id, seq, leaf, leaf_hash, chain_hash, hmac, created_at)
         SELECT workspace_id, -1, leaf, leaf_hash, chain_hash, hmac, created_at FROM vault_entries WHERE workspace_id = '{WS}' AND seq = 0"
    ))
    .unwrap();
    let report = b.check_vault().remove(0);
    let named: Vec<(u64, String)> = report.first_bad.clone().into_iter().chain(report.more_bad.clone()).collect();
    assert_eq!(
        named,
        vec![
            (0, "a row stored at seq -1 is out of the log's order".to_owned()),
            (3, "leaf does not match its leaf hash".to_owned()),
            (5, "entries 5 to 6 are missing (next stored is 7)".to_owned()),
            (7, "leaf does not match its leaf hash".to_owned()),
        ],
        "{report:?}"
    );
    assert_eq!(report.bad_entries, 5);
}

pub async fn vault_check_compares_decision_and_violation_rows_with_their_entries(b: Backend) {
    let store = with_workspace(&b).await;
    for (i, id) in ["dec_a", "dec_b", "dec_c"].into_iter().enumerate() {
        let mut row = decision(id, 1_000 + i as i64);
        row.agent_id = Some("agt_1".into());
        row.content = Some(format!("content of {id}"));
        row.body = json!({ "reasoning": format!("why {id}"), "trust_score": 0.5 });
        let mut entry = json!({
            "kind": "decision", "decision_id": id, "agent_id": "agt_1", "session_id": null, "action_type": "x", "decision": "allow",
            "time": praetor_core::iso_millis(row.created_at), "content_sha256": praetor_core::sha256_hex(row.content.as_ref().unwrap().as_bytes()),
            "content_redacted": false,
        });
        let mut mutations = vec![Mutation::InsertDecision { row, seal: Some(0) }];
        // dec_b is refused by two rules: one violation's row stores nothing (its entry
        // gives it back), the other's a body of its own.
        if id == "dec_b" {
            entry["violations"] = json!([
                { "violation_id": "vio_1", "rule_id": "rule_a", "severity": "high" },
                { "violation_id": "vio_2", "rule_id": "rule_b", "severity": "low" },
            ]);
            for (vid, rule, severity, body) in [("vio_1", "rule_a", "high", Value::Null), ("vio_2", "rule_b", "low", json!({ "note": "its own" }))] {
                let mut v = Violation {
                    violation_id: vid.into(), workspace_id: WS.into(), rule_id: rule.into(), severity: severity.into(),
                    agent_id: Some("agt_1".into()), decision_id: id.into(), at: 1_001, body, decision_agent: None,
                };
                if v.body.is_null() {
                    v.body = v.rebuilt_body(entry.as_object().unwrap()).unwrap();
                }
                mutations.push(Mutation::InsertViolation(v));
            }
        }
        let seal = SealRequest { workspace_id: WS.into(), body: entry.as_object().unwrap().clone() };
        store.commit(Txn { mutations, seal: vec![seal] }).await.unwrap();
    }
    assert_eq!(b.raw_text("SELECT body FROM violations WHERE violation_id = 'vio_1'"), "", "stored as its entry");
    // The store sealed the digest of each answer's text as it wrote it.
    for id in ["dec_a", "dec_b", "dec_c"] {
        let row = store.get_decision(WS, id).await.unwrap().unwrap();
        let leaf: Value = serde_json::from_slice(row.sealed_leaf.as_ref().unwrap()).unwrap();
        let text = b.raw_text(&format!("SELECT body FROM decisions WHERE decision_id = '{id}'"));
        assert_eq!(leaf["answer_sha256"], json!(praetor_core::sha256_hex(text.as_bytes())), "{id}: {leaf}");
    }
    // A session event between them seals no decision.
    let event = json!({ "kind": "session.started", "session_id": "sess_1" }).as_object().unwrap().clone();
    store.commit(Txn { mutations: vec![], seal: vec![SealRequest { workspace_id: WS.into(), body: event }] }).await.unwrap();
    let report = &b.check_vault()[0];
    assert_eq!((report.entries, report.decisions, report.violations, &report.first_bad, &report.bad_row), (4, 3, 2, &None, &None), "{report:?}");
    let changes = [
        ("decisions", "UPDATE decisions SET content = 'other' WHERE decision_id = 'dec_b'", "decision `dec_b` (entry 1): its content is not the content sealed"),
        ("decisions", "UPDATE decisions SET body = '{\"reasoning\":\"fine\",\"trust_score\":0.5}' WHERE decision_id = 'dec_b'", "its stored answer is not the one sealed"),
        ("decisions", "UPDATE decisions SET agent_id = 'agt_x' WHERE decision_id = 'dec_b'", "its `agent_id` is not the one sealed"),
        ("decisions", "UPDATE decisions SET created_at = 5 WHERE decision_id = 'dec_b'", "its time is not the one sealed"),
        ("decisions", "UPDATE decisions SET vault_seq = 3 WHERE decision_id = 'dec_b'", "its vault entry is not a decision's"),
        ("decisions", "UPDATE decisions SET vault_seq = -1 WHERE decision_id = 'dec_b'", "decision `dec_b` has no vault entry"),
        ("violations", "UPDATE violations SET rule_id = 'rule_c' WHERE violation_id = 'vio_2'", "violation `vio_2` of decision `dec_b`: its `rule_id` is not the one sealed"),
        ("violations", "UPDATE violations SET severity = 'low' WHERE violation_id = 'vio_1'", "its `severity` is not the one sealed"),
        ("violations", "UPDATE violations SET agent_id = 'agt_x' WHERE violation_id = 'vio_1'", "its `agent_id` is not its decision's"),
        ("violations", "UPDATE violations SET at = 7 WHERE violation_id = 'vio_1'", "its time is not its decision's sealed time"),
        ("violations", "UPDATE violations SET decision_id = 'dec_a' WHERE violation_id = 'vio_1'", "violation `vio_1` of decision `dec_a`: its decision's entry does not seal it"),
    ];
    b.unguard("violations");
    for (table, sql, why) in changes {
        let id = if table == "decisions" { "decision_id" } else { "violation_id" };
        b.raw_sql(&format!("CREATE TABLE saved AS SELECT * FROM {table}")).unwrap();
        b.raw_sql(sql).unwrap();
        let report = &b.check_vault()[0];
        let said = report.bad_row.clone().unwrap_or_else(|| panic!("{sql}: not found: {report:?}"));
        assert!(said.contains(why), "{sql}: {said}");
        let columns = if table == "decisions" { "content = s.content, body = s.body, agent_id = s.agent_id, created_at = s.created_at, vault_seq = s.vault_seq" }
            else { "rule_id = s.rule_id, severity = s.severity, at = s.at, decision_id = s.decision_id, agent_id = s.agent_id" };
        b.raw_sql(&format!("UPDATE {table} SET {columns} FROM saved s WHERE {table}.{id} = s.{id}; DROP TABLE saved")).unwrap();
        assert_eq!(b.check_vault()[0].bad_row, None, "restored after {sql}");
    }
    b.raw_sql("DELETE FROM violations WHERE violation_id = 'vio_2'").unwrap();
    assert_eq!(b.check_vault()[0].bad_row.as_deref(), Some("1 of the 2 violations sealed in decision entries have no row"));
    // Deleting a decision takes dropping the append-only trigger first (each backend's syntax).
    b.raw_sql("DROP TRIGGER decisions_no_delete ON decisions").or_else(|_| b.raw_sql("DROP TRIGGER decisions_no_delete")).unwrap();
    b.raw_sql("DELETE FROM decisions WHERE decision_id = 'dec_c'").unwrap();
    let report = &b.check_vault()[0];
    assert_eq!(report.bad_row.as_deref(), Some("entry 2 seals a decision that has no row"), "{report:?}");
}

/// Logs written before a decision's entry sealed its violations hold a
/// `violation.recorded` entry per violation: `vault check` compares such rows with
/// those entries and counts them, and a violation row that nothing seals is named.
pub async fn vault_check_compares_older_violation_rows_with_their_own_entries(b: Backend) {
    let store = with_workspace(&b).await;
    let row = DecisionRow { agent_id: Some("agt_1".into()), ..decision("dec_old", 1_000) };
    let entry = json!({ "kind": "decision", "decision_id": "dec_old", "agent_id": "agt_1", "session_id": null, "action_type": "x",
        "decision": "allow", "time": praetor_core::iso_millis(1_000), "content_sha256": null });
    let recorded = json!({ "kind": "violation.recorded", "violation_id": "vio_old", "rule_id": "rule_a", "severity": "high",
        "decision_id": "dec_old", "agent_id": "agt_1", "time": praetor_core::iso_millis(1_001) });
    let violation = Violation {
        violation_id: "vio_old".into(), workspace_id: WS.into(), rule_id: "rule_a".into(), severity: "high".into(),
        agent_id: Some("agt_1".into()), decision_id: "dec_old".into(), at: 1_000, body: json!({ "violation_id": "vio_old", "rule_id": "rule_a" }),
        decision_agent: None,
    };
    let seal = |v: &Value| SealRequest { workspace_id: WS.into(), body: v.as_object().unwrap().clone() };
    store
        .commit(Txn { mutations: vec![Mutation::InsertDecision { row, seal: Some(0) }, Mutation::InsertViolation(violation)], seal: vec![seal(&entry), seal(&recorded)] })
        .await
        .unwrap();
    let report = &b.check_vault()[0];
    assert_eq!((report.decisions, report.violations, &report.bad_row), (1, 1, &None), "{report:?}");
    b.unguard("violations");
    b.raw_sql("UPDATE violations SET rule_id = 'rule_b' WHERE violation_id = 'vio_old'").unwrap();
    let said = b.check_vault()[0].bad_row.clone().unwrap_or_default();
    assert!(said.contains("vio_old") && said.contains("its `rule_id` is not the one sealed"), "{said}");
    b.raw_sql("UPDATE violations SET rule_id = 'rule_a' WHERE violation_id = 'vio_old'").unwrap();
    // One that nothing seals, beside a decision whose entry seals none.
    b.raw_sql("INSERT INTO violations (workspace_id, violation_id, rule_id, severity, agent_id, decision_id, at, body)
               SELECT workspace_id, 'vio_forged', rule_id, severity, agent_id, decision_id, at, body FROM violations WHERE violation_id = 'vio_old'").unwrap();
    let said = b.check_vault()[0].bad_row.clone().unwrap_or_default();
    assert!(said.contains("vio_forged") && said.contains("its decision's entry does not seal it"), "{said}");
    b.raw_sql("DELETE FROM violations").unwrap();
    assert_eq!(b.check_vault()[0].bad_row.as_deref(), Some("1 of the 1 violations sealed in `violation.recorded` entries have no row"));
}

/// `vault check` of a store an older version wrote, with a column the row pass reads
/// missing: every workspace's log is still verified, each saying its rows were not
/// checked. (On PostgreSQL the check is one transaction, which a failed statement
/// would abort for the workspaces after it.)
pub async fn vault_check_of_an_unmigrated_store_verifies_every_workspace_log(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(one(Mutation::InsertWorkspace(workspace("ws_2")))).await.unwrap();
    for ws in [WS, "ws_2"] {
        let mut txn = decision_txn(&format!("dec_{ws}"), 1);
        txn.seal[0].workspace_id = ws.into();
        if let Some(Mutation::InsertDecision { row, .. }) = txn.mutations.first_mut() {
            row.workspace_id = ws.into();
        }
        store.commit(txn).await.unwrap();
    }
    let before = b.check_vault();
    assert_eq!(before.iter().map(|r| (r.entries, r.decisions, r.rows_unchecked.is_none())).collect::<Vec<_>>(), [(1, 1, true), (1, 1, true)], "{before:?}");
    b.raw_sql("DROP INDEX decisions_by_session").unwrap();
    b.raw_sql("ALTER TABLE decisions DROP COLUMN session_id").unwrap();
    let reports = b.check_vault();
    assert_eq!(reports.len(), 2, "{reports:?}");
    for r in &reports {
        assert_eq!((r.entries, &r.first_bad, r.decisions), (1, &None, 0), "{r:?}");
        assert!(r.rows_unchecked.as_deref().is_some_and(|why| why.contains("session_id")), "{r:?}");
    }
}

fn expect(of: Guarded, id: &str, etag: &str) -> Mutation {
    Mutation::Expect { workspace_id: WS.into(), of, id: id.into(), etag: etag.into() }
}

/// Two nodes decide from copies of one agent and one session: the store takes the
/// first decision made from the current etag and refuses the other (`Stale`), with
/// none of its writes; a touch (a revocation elsewhere) makes every copy stale.
pub async fn etag_guards_refuse_decisions_made_from_stale_copies(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(Txn { mutations: vec![Mutation::PutAgent(agent("agt_1", "one")), Mutation::PutSession(session("sess_1", "agt_1", SessionStatus::Active, 1, 5))], seal: vec![] }).await.unwrap();
    let decide = |from: &str, to: &str, n: u64| {
        let mut txn = decision_txn(&format!("dec_{n}"), n);
        txn.mutations.insert(0, expect(Guarded::Agent, "agt_1", from));
        txn.mutations.insert(1, expect(Guarded::Session, "sess_1", &format!("v{}", n)));
        txn.mutations.push(Mutation::AgentActivity(AgentActivity {
            workspace_id: WS.into(), agent_id: "agt_1".into(), trust_score: 51, clean_streak: 1, decision: "allow".into(), at: n as i64, etag: to.into(),
        }));
        txn.mutations.push(Mutation::PutSession(session("sess_1", "agt_1", SessionStatus::Active, n + 1, 5)));
        txn
    };
    store.commit(decide("e0", "e_a", 1)).await.expect("made from the current copy");
    match store.commit(decide("e0", "e_b", 1)).await {
        Err(StoreError::Stale(what)) => assert_eq!(what, "agent `agt_1`"),
        other => panic!("a decision from a stale agent must be refused, got {other:?}"),
    }
    assert_eq!(store.log_head(WS).await.unwrap().size, 1, "the refused decision sealed nothing");
    assert!(store.get_decision(WS, "dec_1").await.unwrap().is_some());
    let a = store.agent_state(WS, "agt_1", 0, 100).await.unwrap().unwrap().agent;
    assert_eq!((a.etag.as_str(), a.total_actions), ("e_a", 1), "the refused activity did not count");
    // The agent is current but the session moved on: refused on the session.
    let mut stale_session = decide("e_a", "e_c", 2);
    stale_session.mutations[1] = expect(Guarded::Session, "sess_1", "v1");
    assert!(matches!(store.commit(stale_session).await, Err(StoreError::Stale(w)) if w == "session `sess_1`"));
    store.commit(decide("e_a", "e_c", 2)).await.expect("current agent and session");
    // A revocation elsewhere touches the agent: the copy at `e_c` is stale now.
    store.commit(one(Mutation::Touch { workspace_id: WS.into(), of: Guarded::Agent, id: "agt_1".into(), etag: "e_t".into() })).await.unwrap();
    assert!(matches!(store.commit(decide("e_c", "e_d", 3)).await, Err(StoreError::Stale(_))));
    assert!(matches!(store.commit(one(expect(Guarded::Agent, "agt_missing", ""))).await, Err(StoreError::Stale(_))), "a missing row is never current");
}

/// One batch of decisions in which some are refused by checks the writer may hold and
/// send with the rest (an etag guard, a stale object version, a replayed nonce): each
/// refusal is its own transaction's, with none of its writes, and every other decision
/// of the batch commits and seals in order.
pub async fn refusals_inside_one_batch_are_each_their_own(b: Backend) {
    let store = with_workspace(&b).await;
    let grant = |v: u64| Mutation::PutObject(object("grant", "grt_1", "active", v, 10));
    store.commit(Txn { mutations: vec![Mutation::PutAgent(agent("agt_1", "one")), grant(1), grant(2)], seal: vec![] }).await.unwrap();
    let nonce = |n: &str| Mutation::ClaimNonce { workspace_id: WS.into(), agent_id: "agt_1".into(), nonce: n.into(), now: 100, until: 10_000 };
    store.commit(one(nonce("used"))).await.unwrap();
    let reruns = store.commit_stats().batches_rerun;

    let with = |id: &str, i: u64, extra: Vec<Mutation>| {
        let mut txn = decision_txn(id, i);
        txn.mutations.splice(0..0, extra);
        txn
    };
    let activity = |etag: &str| Mutation::AgentActivity(AgentActivity {
        workspace_id: WS.into(), agent_id: "agt_1".into(), trust_score: 60, clean_streak: 1, decision: "allow".into(), at: 5, etag: etag.into(),
    });
    // The writer starts a first transaction and waits for the log; the rest queue up
    // behind it and are taken together as the next batch.
    let held = b.hold_log(WS);
    let first = store.commit(decision_txn("dec_first", 0));
    let (first, batch) = tokio::join!(first, async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let txns = [
            with("dec_ok1", 1, vec![expect(Guarded::Agent, "agt_1", "e0"), activity("e1")]),
            with("dec_stale_agent", 2, vec![expect(Guarded::Agent, "agt_1", "e0"), activity("e_lost")]),
            with("dec_ok2", 3, vec![expect(Guarded::Agent, "agt_1", "e1"), nonce("fresh")]),
            with("dec_stale_object", 4, vec![Mutation::PutObject(object("grant", "grt_1", "revoked", 2, 20))]),
            with("dec_replayed", 5, vec![nonce("used")]),
            with("dec_ok3", 6, vec![Mutation::PutObject(object("grant", "grt_1", "revoked", 3, 30))]),
        ];
        // `submit` queues each at once (a `commit` future only when first polled).
        let pending: Vec<_> = txns.into_iter().map(|t| store.submit(t)).collect();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        held.finish();
        futures_util::future::join_all(pending).await
    });
    assert_eq!(first.unwrap()[0].seq, 0);
    let seqs: Vec<Result<u64, String>> = batch.into_iter().map(|r| r.map(|s| s[0].seq).map_err(|e| e.to_string())).collect();
    assert_eq!(seqs[0], Ok(1));
    assert!(matches!(&seqs[1], Err(e) if e.contains("agent `agt_1`")), "{:?}", seqs[1]);
    assert_eq!(seqs[2], Ok(2));
    assert!(matches!(&seqs[3], Err(e) if e.contains("grant `grt_1`")), "{:?}", seqs[3]);
    assert!(matches!(&seqs[4], Err(e) if e.contains("nonce")), "{:?}", seqs[4]);
    assert_eq!(seqs[5], Ok(3));
    assert!(store.commit_stats().batches_rerun > reruns, "the batch ran again with a savepoint per transaction");

    for (id, kept) in [("dec_ok1", true), ("dec_stale_agent", false), ("dec_ok2", true), ("dec_stale_object", false), ("dec_replayed", false), ("dec_ok3", true)] {
        assert_eq!(store.get_decision(WS, id).await.unwrap().is_some(), kept, "{id}");
    }
    let a = store.agent_state(WS, "agt_1", 0, 100).await.unwrap().unwrap().agent;
    assert_eq!((a.etag.as_str(), a.total_actions), ("e1", 1), "only the current copy's activity counted");
    let grant = store.get_object(WS, "grant", "grt_1").await.unwrap().unwrap();
    assert_eq!((grant.status.as_str(), grant.version), ("revoked", 3));
    assert_eq!(store.log_head(WS).await.unwrap().size, 4);
    assert_eq!(b.check_vault()[0].first_bad, None);
}

/// The database server closes every connection while they are idle (a restart, a
/// failover): the next transaction commits on a new connection, and the next reads
/// read on new ones, none refused.
pub async fn connections_the_database_closed_are_replaced_before_the_next_use(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(decision_txn("dec_a", 0)).await.unwrap();
    // Reads at once, so that every reader thread holds a connection.
    let reads = || futures_util::future::join_all((0..8).map(|_| store.get_decision(WS, "dec_a")));
    assert!(reads().await.iter().all(|r| matches!(r, Ok(Some(_)))));
    if !b.close_connections() {
        return; // SQLite: no connection to lose
    }
    // Give the server time to end them.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for r in reads().await {
        assert!(matches!(r, Ok(Some(_))), "read on a new connection: {r:?}");
    }
    assert_eq!(store.commit(decision_txn("dec_b", 1)).await.expect("committed on a new connection")[0].seq, 1);
    assert_eq!(store.commit(decision_txn("dec_c", 2)).await.unwrap()[0].seq, 2);
    assert_eq!(b.check_vault()[0].entries, 3);
}

/// An approved escalation's action joins the agent's and session's histories read back
/// (the SDK runs it without another decision), until a decision that used the approval
/// is recorded: that decision is the action, and counts in its place.
pub async fn approved_actions_count_in_the_history_until_a_decision_runs_them(b: Backend) {
    let store = with_workspace(&b).await;
    store.commit(Txn { mutations: vec![Mutation::PutAgent(agent("agt_1", "one")), Mutation::PutSession(session("sess_1", "agt_1", SessionStatus::Active, 1, 5))], seal: vec![] }).await.unwrap();
    let approved = |id: &str, at: i64, session: Option<&str>, kind: &str| {
        Mutation::InsertApprovedAction(ApprovedAction {
            workspace_id: WS.into(), escalation_id: id.into(), agent_id: Some("agt_1".into()),
            session_id: session.map(str::to_owned), action_type: kind.into(), at,
        })
    };
    let mut allowed = decision("dec_300", 300);
    allowed.agent_id = Some("agt_1".into());
    allowed.session_id = Some("sess_1".into());
    allowed.action_type = "send".into();
    store.commit(Txn { mutations: vec![
        approved("esc_a", 100, Some("sess_1"), "read_secrets"),
        approved("esc_b", 200, None, "pay"),
        Mutation::InsertDecision { row: allowed, seal: None },
        approved("esc_c", 400, Some("sess_1"), "export"),
        approved("esc_old", 10, Some("sess_1"), "old"),
    ], seal: vec![] }).await.unwrap();
    // Recorded twice (a commit retried after a lost answer): one row.
    store.commit(one(approved("esc_a", 100, Some("sess_1"), "read_secrets"))).await.unwrap();
    let kinds = |h: &[praetor_core::PastAction]| h.iter().map(|p| (p.action_type.clone(), p.at_ms)).collect::<Vec<_>>();
    let st = store.agent_state(WS, "agt_1", 50, 100).await.unwrap().unwrap();
    assert_eq!(
        kinds(&st.history),
        vec![("read_secrets".into(), 100), ("pay".into(), 200), ("send".into(), 300), ("export".into(), 400)],
        "approvals and allowed decisions, merged in time order, within the window"
    );
    let capped = store.agent_state(WS, "agt_1", 0, 2).await.unwrap().unwrap();
    assert_eq!(kinds(&capped.history), vec![("send".into(), 300), ("export".into(), 400)], "the cap keeps the newest of both");
    let s = store.session_state(WS, "sess_1", 50, 100).await.unwrap().unwrap();
    assert_eq!(kinds(&s.history), vec![("read_secrets".into(), 100), ("send".into(), 300), ("export".into(), 400)], "only the session's");
    // A decision used the approval of esc_c: the approval's row no longer counts (the
    // decision's own row does, once it is allowed).
    store.commit(one(Mutation::ApprovedActionRetried { workspace_id: WS.into(), escalation_id: "esc_c".into() })).await.unwrap();
    let st = store.agent_state(WS, "agt_1", 50, 100).await.unwrap().unwrap();
    assert_eq!(kinds(&st.history), vec![("read_secrets".into(), 100), ("pay".into(), 200), ("send".into(), 300)]);
    // The same agent id in another workspace reads none of it.
    let mut twin = agent("agt_1", "twin");
    twin.workspace_id = "ws_other".into();
    store.commit(Txn { mutations: vec![Mutation::InsertWorkspace(workspace("ws_other")), Mutation::PutAgent(twin)], seal: vec![] }).await.unwrap();
    assert_eq!(store.agent_state("ws_other", "agt_1", 0, 100).await.unwrap().unwrap().history, vec![]);
}

/// What a node reloads after a refusal: the row, the credentials and the newest allowed
/// actions within the window, oldest first, for an agent and for a session.
pub async fn agent_and_session_state_read_back_their_history(b: Backend) {
    let store = with_workspace(&b).await;
    let cred = Credential {
        credential_id: "cred_1".into(), workspace_id: WS.into(), agent_id: "agt_1".into(), algorithm: "ed25519".into(),
        public_key: "pk".into(), did: "did:key:z".into(), created_at: 11, expires_at: None, revoked_at: None, rotated: false,
    };
    store.commit(Txn { mutations: vec![Mutation::PutAgent(agent("agt_1", "one")), Mutation::InsertCredential(cred.clone()), Mutation::PutSession(session("sess_1", "agt_1", SessionStatus::Active, 1, 5))], seal: vec![] }).await.unwrap();
    let row = |n: i64, verdict: &str, session: Option<&str>, kind: &str| {
        let mut d = decision(&format!("dec_{n}"), n);
        d.agent_id = Some("agt_1".into());
        d.session_id = session.map(str::to_owned);
        d.decision = verdict.into();
        d.action_type = kind.into();
        Mutation::InsertDecision { row: d, seal: None }
    };
    store.commit(Txn { mutations: vec![
        row(100, "allow", Some("sess_1"), "read"),
        row(200, "block", Some("sess_1"), "delete"),
        row(300, "allow", None, "pay"),
        row(400, "allow", Some("sess_1"), "send"),
        row(500, "allow", Some("sess_1"), "read"),
    ], seal: vec![] }).await.unwrap();
    let st = store.agent_state(WS, "agt_1", 150, 100).await.unwrap().unwrap();
    let kinds = |h: &[praetor_core::PastAction]| h.iter().map(|p| (p.action_type.clone(), p.at_ms)).collect::<Vec<_>>();
    assert_eq!(kinds(&st.history), vec![("pay".into(), 300), ("send".into(), 400), ("read".into(), 500)], "allowed, within the window, oldest first");
    assert_eq!(st.credentials, vec![cred]);
    assert_eq!(st.agent.etag, "e0");
    let capped = store.agent_state(WS, "agt_1", 0, 2).await.unwrap().unwrap();
    assert_eq!(kinds(&capped.history), vec![("send".into(), 400), ("read".into(), 500)], "the cap keeps the newest");
    let s = store.session_state(WS, "sess_1", 0, 100).await.unwrap().unwrap();
    assert_eq!(kinds(&s.history), vec![("read".into(), 100), ("send".into(), 400), ("read".into(), 500)]);
    assert_eq!(s.session.etag, "v1");
    assert!(store.agent_state(WS, "agt_none", 0, 10).await.unwrap().is_none());
    assert!(store.session_state(WS, "sess_none", 0, 10).await.unwrap().is_none());
    assert_eq!(store.get_decision(WS, "dec_100").await.unwrap().unwrap().session_id.as_deref(), Some("sess_1"));
    // A session may start only while its agent is active and its credential unrevoked.
    let active = |c: Option<&str>| one(Mutation::ExpectActive { workspace_id: WS.into(), agent_id: "agt_1".into(), credential_id: c.map(str::to_owned) });
    store.commit(active(Some("cred_1"))).await.expect("active agent, live credential");
    // Revoked by a rotation: no new session, and the store says it was a rotation...
    let revoke = |at, rotated| one(Mutation::RevokeCredential { workspace_id: WS.into(), credential_id: "cred_1".into(), at, rotated });
    let stored = |store: &std::sync::Arc<dyn Store>| {
        let store = store.clone();
        async move { store.agent_state(WS, "agt_1", i64::MAX, 0).await.unwrap().unwrap().credentials[0].clone() }
    };
    store.commit(revoke(50, true)).await.unwrap();
    assert!(matches!(store.commit(active(Some("cred_1"))).await, Err(StoreError::Stale(w)) if w.contains("revoked")));
    assert_eq!((stored(&store).await.revoked_at, stored(&store).await.rotated), (Some(50), true));
    // ...which another rotation does not change, and a revocation (a leak) ends,
    // keeping the time it stopped signing; after that nothing changes it.
    let etag = || async { store.agent_state(WS, "agt_1", i64::MAX, 0).await.unwrap().unwrap().agent.etag };
    let before = etag().await;
    store.commit(revoke(55, true)).await.unwrap();
    assert_eq!((stored(&store).await.revoked_at, stored(&store).await.rotated, etag().await), (Some(50), true, before.clone()));
    store.commit(revoke(60, false)).await.unwrap();
    assert_eq!((stored(&store).await.revoked_at, stored(&store).await.rotated), (Some(50), false));
    let after = etag().await;
    assert_ne!(after, before, "every copy of the agent is stale: its sessions are refused now");
    store.commit(revoke(70, false)).await.unwrap();
    store.commit(revoke(80, true)).await.unwrap();
    assert_eq!((stored(&store).await.revoked_at, stored(&store).await.rotated, etag().await), (Some(50), false, after));
    assert!(matches!(store.commit(active(Some("cred_other"))).await, Err(StoreError::Stale(_))), "an unknown credential is not usable");
    store.commit(active(None)).await.expect("the agent itself is still active");
    let mut off = agent("agt_1", "one");
    off.is_active = false;
    store.commit(one(Mutation::PutAgent(off))).await.unwrap();
    assert!(matches!(store.commit(active(None)).await, Err(StoreError::Stale(w)) if w.contains("not active")));
}

/// The change feed: one entry per changed key, numbered per workspace in commit order,
/// naming the writer; nothing from a refused transaction; pruned by age.
pub async fn the_change_feed_numbers_changes_in_commit_order(b: Backend) {
    let store = with_workspace(&b).await;
    let other = b.open().await;
    assert_ne!(store.node_id(), other.node_id(), "each process has its own name");
    store.commit(Txn { mutations: vec![Mutation::PutAgent(agent("agt_1", "one")), Mutation::PutPolicy(policy("pol_1", "block")), Mutation::PutPolicy(policy("pol_2", "block"))], seal: vec![] }).await.unwrap();
    other.commit(one(Mutation::PutSession(session("sess_1", "agt_1", SessionStatus::Active, 1, 5)))).await.unwrap();
    // A refused transaction leaves no entry.
    assert!(store.commit(Txn { mutations: vec![Mutation::PutPolicy(policy("pol_3", "block")), expect(Guarded::Agent, "agt_1", "wrong")], seal: vec![] }).await.is_err());
    // Decisions' own writes are guarded, not fed.
    store.commit(decision_txn("dec_1", 1)).await.unwrap();
    let changes = store.changes_since(WS, 0, 100).await.unwrap();
    let seen: Vec<(u64, &str, bool)> = changes.iter().map(|c| (c.seq, c.key.as_str(), c.node_id == store.node_id())).collect();
    assert_eq!(seen, vec![(1, "agent:agt_1", true), (2, "policies", true), (3, "session:sess_1", false)]);
    assert_eq!(store.changes_since(WS, 2, 100).await.unwrap().len(), 1);
    assert_eq!(other.change_heads().await.unwrap().get(WS), Some(&3));
    let newest = changes.iter().map(|c| c.at).max().unwrap();
    store.commit(one(Mutation::PruneChanges { workspace_id: WS.into(), before: newest + 1 })).await.unwrap();
    let kept: Vec<u64> = store.changes_since(WS, 0, 100).await.unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(kept, vec![3], "old entries go, the newest stays");
    // Numbering goes on after a prune, so a node that read up to 3 sees 4 next.
    store.commit(one(Mutation::PutPolicy(policy("pol_4", "block")))).await.unwrap();
    assert_eq!(store.changes_since(WS, 3, 100).await.unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(), vec![4]);
}

/// Work one node does for all: a lease has one holder until it expires, and a due
/// delivery is claimed by one node at a time (taken over if that node dies mid-send).
pub async fn leases_and_delivery_claims_have_one_holder(b: Backend) {
    let first = with_workspace(&b).await;
    let second = b.open().await;
    let lease = |holder: &str, now: i64| {
        one(Mutation::TakeLease { workspace_id: WS.into(), name: "checkpoints".into(), holder: holder.into(), now, until: now + 1_000 })
    };
    first.commit(lease("a", 0)).await.expect("a free lease is taken");
    assert!(matches!(second.commit(lease("b", 500)).await, Err(StoreError::Stale(_))), "held by a until 1000");
    first.commit(lease("a", 600)).await.expect("the holder renews");
    assert!(matches!(second.commit(lease("b", 1_500)).await, Err(StoreError::Stale(_))), "renewed until 1600");
    second.commit(lease("b", 1_700)).await.expect("an expired lease is taken over");
    assert!(matches!(first.commit(lease("a", 1_800)).await, Err(StoreError::Stale(_))));

    first.commit(one(Mutation::PutDelivery(delivery("dlv_1", None, "pending", 10, 0)))).await.unwrap();
    let claim = |now: i64| one(Mutation::ClaimDelivery { workspace_id: WS.into(), delivery_id: "dlv_1".into(), attempts: 0, now, until: now + 1_000 });
    first.commit(claim(20)).await.expect("a due delivery is claimed");
    assert!(matches!(second.commit(claim(20)).await, Err(StoreError::Stale(_))), "claimed once");
    assert!(first.due_deliveries(500, 10, &[], &[]).await.unwrap().is_empty(), "a claimed delivery is not due");
    second.commit(claim(1_020)).await.expect("taken over when the claim runs out");
    let record = |d: Delivery, until: i64| one(Mutation::RecordDeliveryAttempt { delivery: d, claimed_attempts: 0, claimed_until: until });
    let mut sent = delivery("dlv_1", None, "delivered", 1_020, 1);
    sent.delivered_at = Some(1_030);
    // The first claim's attempt ends late: its outcome does not overwrite the takeover.
    let late = delivery("dlv_1", None, "pending", 9_999, 1);
    assert!(matches!(first.commit(record(late, 1_020)).await, Err(StoreError::Stale(_))), "the first claim ran out");
    second.commit(record(sent.clone(), 2_020)).await.expect("the claim holder records its attempt");
    assert!(matches!(second.commit(record(sent, 2_020)).await, Err(StoreError::Stale(_))), "recorded once");
    let stored = first.list_deliveries(WS, None, 10).await.unwrap();
    assert_eq!((stored[0].status.as_str(), stored[0].attempts, stored[0].delivered_at), ("delivered", 1, Some(1_030)));
    assert!(matches!(first.commit(claim(5_000)).await, Err(StoreError::Stale(_))), "a delivered one is never claimed");
}

/// Nonces are consumed once per window, across writers; an agent edit writes only the
/// fields it names and a deactivation only its flag, so neither undoes the other.
pub async fn nonces_and_column_wise_agent_edits_hold_across_writers(b: Backend) {
    let first = with_workspace(&b).await;
    let second = b.open().await;
    let claim = |nonce: &str, now: i64| Mutation::ClaimNonce { workspace_id: WS.into(), agent_id: "agt_1".into(), nonce: nonce.into(), now, until: now + 1_000 };
    first.commit(one(claim("n-1", 0))).await.expect("a fresh nonce is claimed");
    assert!(matches!(second.commit(one(claim("n-1", 10))).await, Err(StoreError::Replayed(_))), "consumed on the other writer");
    second.commit(one(claim("n-2", 10))).await.expect("another nonce is fine");
    // A refused claim takes its whole transaction with it, including writes before it.
    let replayed = Txn { mutations: vec![Mutation::PutAgent(agent("agt_9", "replayer")), claim("n-1", 20)], seal: vec![] };
    assert!(matches!(first.commit(replayed).await, Err(StoreError::Replayed(_))));
    assert!(first.agent_state(WS, "agt_9", 0, 10).await.unwrap().is_none(), "nothing of a replayed transaction is written");
    // Once its window is over the nonce may be used again; pruning forgets only what
    // has expired.
    first.commit(one(claim("n-1", 1_000))).await.expect("expired at 1000");
    first.commit(one(Mutation::PruneNonces { workspace_id: WS.into(), now: 1_500 })).await.unwrap();
    assert!(matches!(second.commit(one(claim("n-1", 1_600))).await, Err(StoreError::Replayed(_))), "n-1 runs until 2000: not pruned");
    first.commit(one(Mutation::PruneNonces { workspace_id: WS.into(), now: 2_000 })).await.unwrap();
    second.commit(one(claim("n-1", 1_700))).await.expect("pruned at 2000, so claimable again (the signature window refuses an old one)");

    first.commit(one(Mutation::PutAgent(agent("agt_1", "one")))).await.unwrap();
    let edit = AgentFields {
        workspace_id: WS.into(),
        agent_id: "agt_1".into(),
        description: Some("written on the other node".into()),
        capabilities: None,
        scopes: Some(vec!["db.read".into()]),
        permission_boundary: None,
        require_signature: None,
        updated_at: 250,
        etag: "e_edit".into(),
    };
    second.commit(one(Mutation::UpdateAgentFields(edit))).await.unwrap();
    first.commit(one(Mutation::DeactivateAgent { workspace_id: WS.into(), agent_id: "agt_1".into(), at: 300, etag: "e_off".into() })).await.unwrap();
    let a = first.agent_state(WS, "agt_1", 0, 10).await.unwrap().unwrap().agent;
    assert_eq!((a.is_active, a.description.as_deref(), a.scopes.clone(), a.etag.as_str()), (false, Some("written on the other node"), vec!["db.read".to_owned()], "e_off"));
    assert_eq!((a.capabilities.clone(), a.require_signature, a.updated_at), (vec!["read".to_owned()], true, 300), "fields the edit did not name stay");
}

/// Two nodes revoking the last two admin keys at once: each transaction guards that
/// another admin key is left, and the guard sees the other node's revocation (the
/// transactions of one workspace run one after the other), so one of the two always
/// fails. Many rounds, since which one is a matter of timing.
pub async fn the_last_admin_key_survives_revocations_on_two_writers(b: Backend) {
    let first = with_workspace(&b).await;
    let second = b.open().await;
    // A row another writer wrote first under the same unique key (an agent's name and
    // framework, registered on two nodes at once) is a conflict, the request's error,
    // not a database failure (which health counts).
    first.commit(one(Mutation::PutAgent(agent("agt_a", "same")))).await.unwrap();
    let twin = second.commit(one(Mutation::PutAgent(agent("agt_b", "same")))).await;
    assert!(matches!(twin, Err(StoreError::Conflict(_))), "{twin:?}");
    assert_eq!(second.commit_stats().failing, None);
    let key = |id: &str, scopes: Vec<Scope>| ApiKey {
        key_id: id.into(),
        workspace_id: WS.into(),
        key_hash: format!("{:0>64}", id.len()) + id,
        prefix: "xb_live_x".into(),
        scopes,
        agent_id: None,
        label: None,
        created_at: 1,
        revoked_at: None,
    };
    let revoke = |id: &str| Txn {
        mutations: vec![
            Mutation::ExpectAnotherAdmin { workspace_id: WS.into(), key_id: id.into() },
            Mutation::RevokeApiKey { workspace_id: WS.into(), key_id: id.into(), at: 2 },
        ],
        seal: vec![],
    };
    // A key that reads, and one that is admin among other scopes, do not count until
    // they are admin keys themselves.
    first.commit(one(Mutation::InsertApiKey(key("key_reader", vec![Scope::Read])))).await.unwrap();
    first.commit(one(Mutation::InsertApiKey(key("key_0", vec![Scope::Read, Scope::Admin])))).await.unwrap();
    assert!(matches!(first.commit(revoke("key_0")).await, Err(StoreError::Stale(w)) if w.contains("last admin")));
    let mut survivor = "key_0".to_owned();
    for round in 1..=30 {
        let fresh = format!("key_{round}");
        first.commit(one(Mutation::InsertApiKey(key(&fresh, vec![Scope::Admin])))).await.unwrap();
        let (a, b_) = tokio::join!(first.commit(revoke(&survivor)), second.commit(revoke(&fresh)));
        match (a, b_) {
            (Ok(_), Err(StoreError::Stale(_))) => survivor = fresh,
            (Err(StoreError::Stale(_)), Ok(_)) => {}
            (a, b_) => panic!("round {round}: exactly one revocation stands, got {:?} and {:?}", a.map(|_| ()), b_.map(|_| ())),
        }
        let active: Vec<String> = first.list_api_keys(WS).await.unwrap().into_iter()
            .filter(|k| k.revoked_at.is_none() && k.scopes.contains(&Scope::Admin)).map(|k| k.key_id).collect();
        assert_eq!(active, vec![survivor.clone()], "round {round}");
    }
    // A key revoked once: revoking it again on two writers at once, exactly one stands,
    // and a third is refused; the time stored is the one that stood.
    first.commit(one(Mutation::InsertApiKey(key("key_twice", vec![Scope::Read])))).await.unwrap();
    let once = |at: i64| Txn {
        mutations: vec![
            Mutation::ExpectKeyLive { workspace_id: WS.into(), key_id: "key_twice".into() },
            Mutation::RevokeApiKey { workspace_id: WS.into(), key_id: "key_twice".into(), at },
        ],
        seal: vec![],
    };
    let (a, b_) = tokio::join!(first.commit(once(10)), second.commit(once(20)));
    let stood = match (a, b_) {
        (Ok(_), Err(StoreError::Stale(w))) if w.contains("already revoked") => 10,
        (Err(StoreError::Stale(w)), Ok(_)) if w.contains("already revoked") => 20,
        (a, b_) => panic!("exactly one revocation stands, got {:?} and {:?}", a.map(|_| ()), b_.map(|_| ())),
    };
    assert!(matches!(first.commit(once(30)).await, Err(StoreError::Stale(w)) if w == "key `key_twice` is already revoked"));
    let stored = first.list_api_keys(WS).await.unwrap().into_iter().find(|k| k.key_id == "key_twice").unwrap();
    assert_eq!(stored.revoked_at, Some(stood));
}

/// A policy written or deleted from a copy another writer has changed since is refused
/// (`ExpectPolicy`): by the time it was last changed, or, for one not yet stored, by its
/// absence.
pub async fn policy_changes_from_a_stale_copy_are_refused(b: Backend) {
    let first = with_workspace(&b).await;
    let second = b.open().await;
    let expect = |id: &str, at: Option<i64>| Mutation::ExpectPolicy { workspace_id: WS.into(), policy_id: id.into(), updated_at: at };
    let at = |id: &str, decision: &str, t: i64| Mutation::PutPolicy(PolicyRecord { updated_at: t, ..policy(id, decision) });
    first.commit(Txn { mutations: vec![expect("pol_1", None), at("pol_1", "block", 5)], seal: vec![] }).await.expect("new");
    let stale = |r: Result<Vec<Sealed>>| matches!(r, Err(StoreError::Stale(w)) if w == "policy `pol_1`");
    assert!(stale(second.commit(Txn { mutations: vec![expect("pol_1", None), at("pol_1", "allow", 6)], seal: vec![] }).await), "made elsewhere meanwhile");
    second.commit(Txn { mutations: vec![expect("pol_1", Some(5)), at("pol_1", "escalate", 7)], seal: vec![] }).await.expect("as last read");
    assert!(stale(first.commit(Txn { mutations: vec![expect("pol_1", Some(5)), at("pol_1", "allow", 8)], seal: vec![] }).await), "edited elsewhere meanwhile");
    let deleted = Mutation::DeletePolicy { workspace_id: WS.into(), policy_id: "pol_1".into() };
    first.commit(Txn { mutations: vec![expect("pol_1", Some(7)), deleted], seal: vec![] }).await.expect("deleted as last read");
    assert!(stale(second.commit(Txn { mutations: vec![expect("pol_1", Some(7)), at("pol_1", "allow", 9)], seal: vec![] }).await), "deleted elsewhere meanwhile");
    assert!(first.list_policies(WS).await.unwrap().is_empty(), "the deletion stands");
    // A pack's live definitions are counted exactly (by name, case and all).
    let mut of_pack = policy("pol_p", "block");
    of_pack.def.pack = Some("core@1.0.0".into());
    first.commit(one(Mutation::PutPolicy(of_pack))).await.unwrap();
    let pack = |name: &str, count: u64| one(Mutation::ExpectPackPolicies { workspace_id: WS.into(), pack: name.into(), count });
    assert!(matches!(second.commit(pack("core", 0)).await, Err(StoreError::Stale(w)) if w == "policy pack `core`"), "deployed elsewhere");
    second.commit(pack("core", 1)).await.expect("as held");
    second.commit(pack("Core", 0)).await.expect("another pack");
    second.commit(pack("cor", 0)).await.expect("another pack, a prefix of its name");
}

/// A settings patch is merged with the settings as stored when it commits: another
/// writer's change to other settings stays.
pub async fn settings_patches_merge_with_the_stored_settings(b: Backend) {
    let first = with_workspace(&b).await;
    let second = b.open().await;
    let patch = |v: Value| Mutation::PatchWorkspaceSettings { workspace_id: WS.into(), patch: v.as_object().unwrap().clone() };
    first.commit(one(patch(json!({ "trust_baseline": 70 })))).await.unwrap();
    second.commit(one(patch(json!({ "allow_anonymous": false })))).await.unwrap();
    let stored = first.get_workspace(WS).await.unwrap().unwrap().settings;
    assert_eq!((stored.trust_baseline, stored.allow_anonymous), (70, false));
    assert_eq!(stored.escalation_ttl_seconds, WorkspaceSettings::default().escalation_ttl_seconds, "the rest as it was");
}

/// Two nodes starting together on an empty database each create the default workspace,
/// guarded by `ExpectFirstWorkspace`: exactly one stands, in every round (which one is
/// a matter of timing). Once a workspace is stored the guard refuses, and a workspace
/// made without it is not refused.
pub async fn one_first_workspace_stands_when_two_writers_start_together(b: Backend) {
    let first_start = |id: &str| Txn {
        mutations: vec![Mutation::ExpectFirstWorkspace, Mutation::InsertWorkspace(workspace(id))],
        seal: vec![SealRequest { workspace_id: id.into(), body: body(0) }],
    };
    for round in 0..8 {
        let b = b.another();
        let (one_node, other_node) = (b.open().await, b.open().await);
        let (a, b_) = tokio::join!(one_node.commit(first_start("ws_a")), other_node.commit(first_start("ws_b")));
        let stood = match (&a, &b_) {
            (Ok(_), Err(StoreError::Stale(_))) => "ws_a",
            (Err(StoreError::Stale(_)), Ok(_)) => "ws_b",
            _ => panic!("round {round}: exactly one first workspace stands, got {:?} and {:?}", a.map(|_| ()), b_.map(|_| ())),
        };
        let snapshot = other_node.snapshot().await.unwrap();
        let stored: Vec<&str> = snapshot.workspaces.iter().map(|w| w.workspace_id.as_str()).collect();
        assert_eq!(stored, vec![stood], "round {round}");
        assert_eq!(snapshot.logged_workspaces, vec![stood.to_owned()], "round {round}: the refused one sealed nothing");
        assert_eq!(one_node.commit_stats().failing, None);
    }
    let store = b.open().await;
    store.commit(first_start(WS)).await.expect("the first on an empty database");
    let refused = store.commit(first_start("ws_later")).await;
    assert!(matches!(&refused, Err(StoreError::Stale(w)) if w.contains("first workspace")), "{refused:?}");
    store.commit(one(Mutation::InsertWorkspace(workspace("ws_other")))).await.expect("unguarded");
}
