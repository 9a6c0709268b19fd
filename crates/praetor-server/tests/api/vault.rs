//! The vault through the API: every decision and every change is sealed, proofs and
//! receipts verify offline with the published key, exports verify as bundles.

use praetor_vault::checkpoint::NoteVerifier;
use praetor_vault::verify::{Bundle, Receipt};
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error};

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

async fn published_keys(s: &TestServer) -> Vec<NoteVerifier> {
    let (_, keys) = s.get("/api/v1/enforce/vault/keys", &s.admin_key).await;
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "an ECDSA P-256 and an Ed25519 key");
    keys.iter().map(|k| NoteVerifier::parse(k["vkey"].as_str().unwrap()).unwrap()).collect()
}

#[tokio::test]
async fn decisions_and_changes_are_sealed_in_order() {
    let s = TestServer::start().await;
    let a = s.agent("sealed").await;
    let pol = s.policy(json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })).await;
    let d1 = s.intercept(json!({ "action_type": "delete_x", "agent_id": a, "action_content": "rm -rf" })).await;
    let d2 = s.intercept(json!({ "action_type": "read", "agent_id": a })).await;
    // The block is a policy violation, sealed inside its decision's entry: one entry each.
    assert_eq!(d2["vault_entry_id"].as_u64().unwrap(), d1["vault_entry_id"].as_u64().unwrap() + 1);
    let (_, page) = s.get("/api/v1/enforce/vault/entries?start=0", &s.admin_key).await;
    let kinds: Vec<&str> = page["entries"].as_array().unwrap().iter().map(|e| e["entry"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["workspace.created", "key.created", "agent.registered", "policy.created", "decision", "decision"]);
    let sealed = &page["entries"][4]["entry"];
    let violations = sealed["violations"].as_array().expect("a decision with a violation seals it");
    assert_eq!(violations.len(), 1);
    let violation = &violations[0];
    assert_eq!((violation["rule_id"].clone(), violation["severity"].clone(), violation["source"].clone()), (json!(pol), json!("high"), json!("policy")));
    let (_, listed) = s.get("/api/v1/violations", &s.admin_key).await;
    assert_eq!(listed["violations"][0]["violation_id"], violation["violation_id"], "the stored violation is the sealed one");
    assert_eq!(listed["violations"][0]["decision_id"], d1["decision_id"]);
    assert!(page["entries"][5]["entry"].get("violations").is_none(), "an allow without warnings records none");
    assert_eq!(sealed["decision_id"], d1["decision_id"]);
    assert_eq!(sealed["decision"], "block");
    assert_eq!(sealed["policies"][0]["policy_id"], json!(pol));
    assert_eq!(sealed["content_sha256"], praetor_server::secrets::sha256_hex(b"rm -rf"));
    assert_eq!(sealed["identity"]["result"], "verified");
    assert_eq!(sealed["seq"], d1["vault_entry_id"]);
    assert_eq!(sealed["time"], "2026-01-07T12:00:00.000Z");
    assert_eq!(page["entries"][4]["leaf_hash"], d1["leaf_hash"]);
    assert!(sealed["policy_set_hash"].as_str().unwrap().len() == 64);
}

#[tokio::test]
async fn proofs_checkpoints_and_receipts_verify_offline() {
    let s = TestServer::start().await;
    let mut last = Value::Null;
    for i in 0..13 {
        last = s.intercept(json!({ "action_type": format!("act{i}") })).await;
    }
    let keys = published_keys(&s).await;
    let (_, cp) = s.get("/api/v1/enforce/vault/checkpoint", &s.admin_key).await;
    let note = cp["checkpoint"]["note"].as_str().unwrap();
    let (parsed, signed_by) = praetor_vault::checkpoint::Checkpoint::open(note, &keys).unwrap();
    assert_eq!(signed_by.len(), 2, "signed with both keys");
    let size = parsed.size;
    assert_eq!(size, 2 + 13);
    let text = s.client.get(s.url("/api/v1/enforce/vault/checkpoint?format=text")).header("X-API-Key", &s.admin_key)
        .send().await.unwrap().text().await.unwrap();
    assert_eq!(text, note);
    // Inclusion of every entry, consistency between every pair of sizes.
    let (_, page) = s.get("/api/v1/enforce/vault/entries", &s.admin_key).await;
    for e in page["entries"].as_array().unwrap() {
        let idx = e["seq"].as_u64().unwrap();
        let (_, p) = s.get(&format!("/api/v1/enforce/vault/proof/inclusion?index={idx}&size={size}"), &s.admin_key).await;
        let proof: Vec<Vec<u8>> = p["proof"].as_array().unwrap().iter().map(unhex).collect();
        praetor_vault::merkle::verify_inclusion(idx, size, &unhex(&e["leaf_hash"]), &proof, &parsed.root).unwrap();
    }
    for first in 1..size {
        let (_, p) = s.get(&format!("/api/v1/enforce/vault/proof/consistency?first={first}&second={size}"), &s.admin_key).await;
        let proof: Vec<Vec<u8>> = p["proof"].as_array().unwrap().iter().map(unhex).collect();
        praetor_vault::merkle::verify_consistency(first, size, &unhex(&p["first_root"]), &parsed.root, &proof).unwrap();
    }
    assert_error(&s.get(&format!("/api/v1/enforce/vault/proof/inclusion?index={size}"), &s.admin_key).await, 400, "invalid_query");
    assert_error(&s.get("/api/v1/enforce/vault/proof/consistency?first=0", &s.admin_key).await, 400, "invalid_query");
    // A receipt verifies with nothing but the published keys, and a changed byte fails.
    let id = last["decision_id"].as_str().unwrap();
    let (_, r) = s.get(&format!("/api/v1/enforce/decisions/{id}/receipt"), &s.admin_key).await;
    let receipt: Receipt = serde_json::from_value(r["receipt"].clone()).unwrap();
    let report = praetor_vault::verify_receipt(&receipt, &keys).unwrap();
    assert_eq!(report.seq, last["vault_entry_id"].as_u64().unwrap());
    let mut forged = receipt.clone();
    forged.entry.leaf = forged.entry.leaf.replace("\"allow\"", "\"block\"");
    assert!(praetor_vault::verify_receipt(&forged, &keys).is_err());
    let stranger = praetor_vault::checkpoint::NoteSigner::generate("praetor-vault", praetor_vault::checkpoint::KeyAlgorithm::Ed25519).unwrap();
    assert!(praetor_vault::verify_receipt(&receipt, &[stranger.verifier()]).is_err(), "only the published key verifies");
}

#[tokio::test]
async fn exports_verify_as_bundles() {
    let s = TestServer::start().await;
    for i in 0..20 {
        s.intercept(json!({ "action_type": format!("a{i}") })).await;
        if i % 7 == 0 {
            // Checkpoints at several sizes, so the bundle carries consistency proofs.
            s.get("/api/v1/enforce/vault/checkpoint", &s.admin_key).await;
        }
    }
    let keys = published_keys(&s).await;
    for path in ["/api/v1/enforce/vault/export", "/api/v1/enforce/vault/export?from=5&to=17"] {
        let (status, body) = s.get(path, &s.admin_key).await;
        assert_eq!(status, 200, "{body}");
        let bundle: Bundle = serde_json::from_value(body).unwrap();
        assert!(bundle.checkpoints.len() >= 2 || path.contains("from"), "{path}");
        let report = praetor_vault::verify_bundle(&bundle, &keys, &mut |_, _| {}).unwrap_or_else(|f| panic!("{path}: {f:?}"));
        assert_eq!(report.end, bundle.end());
        let mut tampered = bundle.clone();
        let victim = tampered.entries.len() / 2;
        tampered.entries[victim].leaf = tampered.entries[victim].leaf.replacen("\"a", "\"b", 1);
        let failure = praetor_vault::verify_bundle(&tampered, &keys, &mut |_, _| {}).unwrap_err();
        assert_eq!(failure.seq, Some(tampered.entries[victim].seq), "{failure:?}");
    }
    // A store that cannot write (here a trigger, as a full disk would) still exports
    // and gives receipts: they sign a checkpoint they cannot keep.
    let decision = s.intercept(json!({ "action_type": "late" })).await;
    let db = rusqlite::Connection::open(s.dir.path().join("praetor.db")).unwrap();
    db.execute_batch("CREATE TRIGGER full_disk BEFORE INSERT ON vault_checkpoints BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;").unwrap();
    let (status, body) = s.get("/api/v1/enforce/vault/export", &s.admin_key).await;
    assert_eq!(status, 200, "{body}");
    let bundle: Bundle = serde_json::from_value(body).unwrap();
    let report = praetor_vault::verify_bundle(&bundle, &keys, &mut |_, _| {}).unwrap_or_else(|f| panic!("{f:?}"));
    assert_eq!(report.end, bundle.end());
    let (status, receipt) = s.get(&format!("/api/v1/enforce/decisions/{}/receipt", decision["decision_id"].as_str().unwrap()), &s.admin_key).await;
    assert_eq!(status, 200, "{receipt}");
    let receipt: Receipt = serde_json::from_value(receipt["receipt"].clone()).unwrap();
    praetor_vault::verify_receipt(&receipt, &keys).unwrap_or_else(|f| panic!("{f:?}"));
    let checkpoints: i64 = db.query_row("SELECT COUNT(*) FROM vault_checkpoints WHERE size = ?1", [bundle.end() as i64], |r| r.get(0)).unwrap();
    assert_eq!(checkpoints, 0, "nothing was stored");
}
