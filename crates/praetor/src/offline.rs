//! The commands that work on files and data directories, without a server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use praetor_core::{CompiledPolicySet, PolicyDef};
use praetor_store::{Mutation, Store, Txn};
use praetor_server::vault::{KEY_NAME_ED25519, KEY_NAME_P256};
use praetor_vault::checkpoint::{KeyAlgorithm, KeyRef, NoteVerifier};
use praetor_vault::verify::{Bundle, Receipt, Report};
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// `println!` for the commands' reports, which stops writing, rather than panicking,
/// once the reader has gone (`praetor vault verify … | head -1`): the command still
/// finishes its work and exits with its own status.
macro_rules! say {
    ($($arg:tt)*) => { crate::offline::say(format_args!($($arg)*)) };
}

pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    static READER_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if READER_GONE.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            READER_GONE.store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            eprintln!("cannot write the report: {e}");
        }
    }
}

/// Read trusted keys: each file holds a C2SP vkey or a PEM public key. A PEM key has no
/// name of its own: it gets the name Praetor's server signs with for its algorithm (and
/// only that one: under the other name a P-256 key, whose key ID does not depend on the
/// name, would also match signature lines of that name).
fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<NoteVerifier>> {
    let mut keys = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read key file `{}`", p.display()))?;
        let key = parse_key(text.trim()).map_err(|e| anyhow::anyhow!("key file `{}`: {e}", p.display()))?;
        keys.push(key);
    }
    Ok(keys)
}

fn parse_key(text: &str) -> Result<NoteVerifier, praetor_vault::VaultError> {
    if !text.contains("-----BEGIN") {
        return NoteVerifier::parse(text);
    }
    // The name is needed to read the key, and the key to know the name: read it under
    // a placeholder, then rename it (which recomputes an Ed25519 key ID).
    let key = NoteVerifier::from_public_key_pem(KEY_NAME_P256, text)?;
    key.renamed(praetor_key_name(key.algorithm()))
}

/// The name Praetor's server gives its signing key of this algorithm.
fn praetor_key_name(algorithm: KeyAlgorithm) -> &'static str {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => KEY_NAME_P256,
        KeyAlgorithm::Ed25519 => KEY_NAME_ED25519,
    }
}

/// `name (key ID xxxxxxxx), ...`: a name alone does not tell a key from another of the
/// same name.
fn signers(keys: &[KeyRef]) -> String {
    keys.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// One bundle file, parsed.
fn read_bundle(path: &Path) -> anyhow::Result<Bundle> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read bundle `{}`", path.display()))?;
    Bundle::from_json(&bytes).map_err(|e| anyhow::anyhow!("bundle `{}`: {e}", path.display()))
}

/// `praetor vault verify`: each bundle on its own, and each after the first as the
/// continuation of the ones before it (`check_continues`), in order. A thread reads and
/// parses the next bundle while this one is checked (a bundle is hundreds of
/// megabytes; parsing is a third of the work). Up to three are in memory at once: the
/// one checked, the next being parsed (with its file's bytes), and the one before while
/// a thread frees it.
/// The failure when a log is not the one `expected` (the signed origin names it).
fn other_origin(origin: &str, expected: Option<&str>) -> Option<String> {
    expected.filter(|e| *e != origin).map(|e| format!("the log is `{origin}`, not `{e}`"))
}

pub fn verify_bundles(paths: &[PathBuf], key_paths: &[PathBuf], origin: Option<&str>) -> anyhow::Result<ExitCode> {
    let keys = load_keys(key_paths)?;
    let mut before: Option<Report> = None;
    let mut first_start = 0;
    let verdict = std::thread::scope(|scope| -> anyhow::Result<Option<ExitCode>> {
        // A rendezvous channel: the reader parses bundle k+1, then waits until bundle k
        // is done. Returning early drops the receiver, which ends the reader.
        let (parsed, bundles) = std::sync::mpsc::sync_channel::<anyhow::Result<Bundle>>(0);
        scope.spawn(move || {
            for path in paths {
                if parsed.send(read_bundle(path)).is_err() {
                    return;
                }
            }
        });
        for path in paths {
            let bundle = bundles.recv().map_err(|_| anyhow::anyhow!("the bundle reader stopped"))??;
            let linked = before.as_ref().map_or(Ok(()), |b| praetor_vault::check_continues(b, &bundle));
            let result = linked.and_then(|()| {
                let bar = progress_bar(bundle.entries.len() as u64);
                bar.set_message(format!("verifying {}", path.display()));
                let result = praetor_vault::verify_bundle(&bundle, &keys, &mut |done, _| bar.set_position(done));
                bar.finish_and_clear();
                result.and_then(|r| match other_origin(&r.origin, origin) {
                    Some(why) => Err(praetor_vault::Failure { seq: None, message: why }),
                    None => Ok(r),
                })
            });
            // Freeing 200,000 entries takes a while: not on the way to the next bundle.
            scope.spawn(move || drop(bundle));
            match result {
                Ok(r) => {
                    say!(
                        "OK: `{}`: entries {}..{} of `{}`; {} checkpoints, {} consistency proofs; signed by {}; root {}",
                        path.display(), r.start, r.end, r.origin, r.checkpoints, r.consistency_proofs, signers(&r.signers), hex::encode(r.root)
                    );
                    // A bundle without entries leaves the chain where the ones before it did.
                    let chain_head = r.chain_head.or_else(|| before.as_ref().and_then(|b| b.chain_head));
                    if before.is_none() {
                        first_start = r.start;
                    }
                    before = Some(Report { chain_head, ..r });
                }
                Err(f) => {
                    match f.seq {
                        Some(seq) => say!("FAILED: `{}` at entry {seq}: {}", path.display(), f.message),
                        None => say!("FAILED: `{}`: {}", path.display(), f.message),
                    }
                    return Ok(Some(ExitCode::from(1)));
                }
            }
        }
        Ok(None)
    })?;
    if let Some(failed) = verdict {
        return Ok(failed);
    }
    if let (Some(r), true) = (&before, paths.len() > 1) {
        say!("OK: {} bundles, one log: entries {first_start}..{} of `{}`, root {}", paths.len(), r.end, r.origin, hex::encode(r.root));
    }
    // Say what OK does not cover, so that no one reads more into it (docs/vault.md §9).
    let first_link = if first_start > 0 && before.as_ref().is_some_and(|r| r.chain_head.is_some()) {
        format!("; the chain link before entry {first_start} (its `prev_chain_hash` is taken as given)")
    } else {
        String::new()
    };
    say!("Not checked offline: the entries' HMACs, which need the workspace secret (of an `hmac` an entry carries, only the form was checked; `praetor vault check` checks them on the server){first_link}");
    Ok(ExitCode::SUCCESS)
}

/// A receipt file as `verify-receipt` reads it: the API's answer
/// (`GET /enforce/decisions/{id}/receipt`: `ok`, `decision_id`, `decision`,
/// `vault_entry_id`, `receipt`, `keys`) or a bare receipt. Serde's derive refuses a
/// repeated field, as the bundle's parse does (a generic JSON value would silently keep
/// the last one); the bare receipt's fields are only looked for here, so that a
/// document that is both shapes is refused rather than read as one of them.
#[derive(serde::Deserialize)]
struct ReceiptFile {
    ok: Option<bool>,
    decision_id: Option<String>,
    /// `Some(Value::Null)` for `"decision": null` (an entry without a decision), `None`
    /// when the field is absent.
    #[serde(default, deserialize_with = "present")]
    decision: Option<Value>,
    vault_entry_id: Option<u64>,
    receipt: Option<Receipt>,
    /// Informational (a verifier trusts only the keys it is given); declared so that a
    /// repeated one is refused like any other.
    #[allow(dead_code)]
    keys: Option<IgnoredAny>,
    format: Option<IgnoredAny>,
    origin: Option<IgnoredAny>,
    entry: Option<IgnoredAny>,
    inclusion_proof: Option<IgnoredAny>,
    checkpoint: Option<IgnoredAny>,
}

/// Reads a field that is present, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

/// What the API's answer says about the entry its receipt proves. Unchecked until
/// compared with the proven leaf.
struct AnswerClaims {
    decision_id: String,
    decision: Value,
    vault_entry_id: u64,
}

/// Parses a receipt file: the receipt, and the claims of the API's answer around it
/// when the file is one.
fn parse_receipt_file(bytes: &[u8]) -> anyhow::Result<(Receipt, Option<AnswerClaims>)> {
    let file: ReceiptFile = serde_json::from_slice(bytes)?;
    let bare_fields = [&file.format, &file.origin, &file.entry, &file.inclusion_proof, &file.checkpoint];
    let Some(receipt) = file.receipt else {
        if file.ok.is_some() || file.decision_id.is_some() || file.decision.is_some() || file.vault_entry_id.is_some() {
            bail!("it has the API answer's `ok`, `decision_id`, `decision` or `vault_entry_id` but no `receipt`: those claims could not be checked");
        }
        return Ok((Receipt::from_json(bytes)?, None));
    };
    if bare_fields.iter().any(|f| f.is_some()) {
        bail!("it is both the API's answer (it has `receipt`) and a bare receipt (it has `format`, `origin`, `entry`, `inclusion_proof` or `checkpoint`): which one is meant is ambiguous");
    }
    if file.ok != Some(true) {
        bail!("the API's answer must have `\"ok\": true`");
    }
    let missing = |field: &str| anyhow::anyhow!("the API's answer has no `{field}`");
    let claims = AnswerClaims {
        decision_id: file.decision_id.ok_or_else(|| missing("decision_id"))?,
        decision: file.decision.ok_or_else(|| missing("decision"))?,
        vault_entry_id: file.vault_entry_id.ok_or_else(|| missing("vault_entry_id"))?,
    };
    Ok((receipt, Some(claims)))
}

/// What a verified entry seals that a reader of the receipt cares about: its kind and,
/// for a decision, its id and decision. The leaf was checked to be canonical JSON.
struct Sealed {
    kind: Option<String>,
    decision_id: Option<String>,
    decision: Value,
}

fn sealed_of(leaf: &str) -> Sealed {
    let fields: serde_json::Map<String, Value> = serde_json::from_str(leaf).unwrap_or_default();
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    Sealed { kind: text("kind"), decision_id: text("decision_id"), decision: fields.get("decision").cloned().unwrap_or(Value::Null) }
}

/// The differences between what the API's answer claims and what the proven entry is.
fn claim_mismatches(claims: &AnswerClaims, seq: u64, sealed: &Sealed) -> Vec<String> {
    let mut wrong = Vec::new();
    if claims.vault_entry_id != seq {
        wrong.push(format!("`vault_entry_id` is {} but the receipt proves entry {seq}", claims.vault_entry_id));
    }
    if sealed.decision_id.as_deref() != Some(claims.decision_id.as_str()) {
        let sealed_id = sealed.decision_id.as_deref().map_or_else(|| "no decision_id".to_owned(), |id| format!("`{id}`"));
        wrong.push(format!("`decision_id` is `{}` but the entry seals {sealed_id}", claims.decision_id));
    }
    if claims.decision != sealed.decision {
        wrong.push(format!("`decision` is {} but the entry seals {}", claims.decision, sealed.decision));
    }
    wrong
}

pub fn verify_receipt(path: &Path, key_paths: &[PathBuf], origin: Option<&str>) -> anyhow::Result<ExitCode> {
    let keys = load_keys(key_paths)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read receipt `{}`", path.display()))?;
    let (receipt, claims) = parse_receipt_file(&bytes).with_context(|| format!("receipt `{}` is refused", path.display()))?;
    let verified = praetor_vault::verify_receipt(&receipt, &keys)
        .and_then(|r| match other_origin(&r.origin, origin) {
            Some(why) => Err(praetor_vault::Failure { seq: None, message: why }),
            None => Ok(r),
        });
    let r = match verified {
        Ok(r) => r,
        Err(f) => {
            match f.seq {
                Some(seq) => say!("FAILED at entry {seq}: {}", f.message),
                None => say!("FAILED: {}", f.message),
            }
            return Ok(ExitCode::from(1));
        }
    };
    let sealed = sealed_of(&receipt.entry.leaf);
    if let Some(claims) = &claims {
        let wrong = claim_mismatches(claims, r.seq, &sealed);
        if !wrong.is_empty() {
            say!("FAILED at entry {}: the API's answer around the receipt does not match the entry it proves: {}", r.seq, wrong.join("; "));
            return Ok(ExitCode::from(1));
        }
    }
    // A receipt stands for a decision: the proof of another entry (a policy change, a
    // session event) proves no decision, and a script reading the exit code must not
    // take it for one.
    let id = match (&sealed.kind, &sealed.decision_id) {
        (Some(kind), Some(id)) if kind == "decision" => id,
        (kind, _) => {
            let what = kind.as_ref().map_or_else(|| "an entry without a `kind`".to_owned(), |k| format!("a `{k}` entry"));
            say!(
                "FAILED at entry {}: the entry it proves is {what}, not a decision (its inclusion in `{}` at tree size {} is proven, but it is no decision receipt)",
                r.seq, r.origin, r.tree_size
            );
            return Ok(ExitCode::from(1));
        }
    };
    say!(
        "OK: entry {} (leaf hash {}) is in `{}` at tree size {}, root {}, signed by {}",
        r.seq, hex::encode(r.leaf_hash), r.origin, r.tree_size, hex::encode(r.root), signers(&r.signers)
    );
    let decision = sealed.decision.as_str().map_or_else(|| sealed.decision.to_string(), str::to_owned);
    say!("The entry seals decision `{id}`: {decision}");
    if claims.is_some() {
        say!("The API's answer around the receipt (decision_id, decision, vault_entry_id) matches the entry");
    }
    say!("Not checked offline: the entry's chain hash, which needs every entry before it, and its HMAC, if it carries one, which needs the workspace secret (of those, only the form was checked)");
    Ok(ExitCode::SUCCESS)
}

/// `praetor vault check`: the SQLite store in `data_dir`, or the PostgreSQL one at
/// `database_url` (read in one repeatable-read snapshot while nodes keep writing).
pub fn check_store(data_dir: &Path, database_url: Option<&str>, keys_dir: Option<&Path>, keys: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let verifiers = if keys.is_empty() {
        let dir = keys_dir.map(Path::to_path_buf).unwrap_or_else(|| data_dir.join("keys"));
        let found = praetor_server::vault::VaultKeys::public_keys_in(&dir)?;
        if found.is_empty() {
            eprintln!(
                "warning: checkpoint signatures are not checked: no vault keys in `{}` (give --vault-keys-dir or --key); their sizes and roots are",
                dir.display()
            );
        }
        found
    } else {
        load_keys(keys)?
    };
    let bar = progress_bar(0);
    bar.set_message("checking");
    let mut progress = |ws: &str, done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(ws.to_owned());
    };
    let reports = match database_url {
        Some(url) => praetor_store::postgres::check_vault_database(url, &verifiers, &mut progress),
        None => praetor_store::sqlite::check_vault_file(&data_dir.join("praetor.db"), &verifiers, &mut progress),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    if reports.is_empty() {
        say!("FAILED: the store holds no workspace and no vault entries: nothing was verified");
        return Ok(ExitCode::from(1));
    }
    let mut ok = true;
    for r in &reports {
        match (&r.first_bad, &r.bad_row) {
            (None, None) if r.rows_unchecked.is_some() => say!(
                "OK: workspace `{}`: {} entries and {} checkpoints verified; its rows were not checked ({}): a store an older version wrote is checked whole once this version has migrated it (start `praetor serve` on a copy)",
                r.workspace_id, r.entries, r.checkpoints, r.rows_unchecked.as_deref().unwrap_or_default()
            ),
            (None, None) => say!(
                "OK: workspace `{}`: {} entries, {} checkpoints, {} decision rows and {} violation rows verified",
                r.workspace_id, r.entries, r.checkpoints, r.decisions, r.violations
            ),
            (Some((seq, why)), _) => {
                ok = false;
                say!("FAILED: workspace `{}` at entry {seq}: {why}", r.workspace_id);
                for (seq, why) in &r.more_bad {
                    say!("FAILED: workspace `{}` at entry {seq} too: {why}", r.workspace_id);
                }
                if r.bad_entries > 1 {
                    say!("FAILED: workspace `{}`: {} entries bad or missing in all", r.workspace_id, r.bad_entries);
                }
            }
            (None, Some(why)) => {
                ok = false;
                say!("FAILED: workspace `{}`: {why}", r.workspace_id);
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn create_key(data_dir: &Path, database_url: Option<&str>, scopes: &[String], agent_id: Option<String>, label: Option<String>) -> anyhow::Result<ExitCode> {
    let db = data_dir.join("praetor.db");
    if database_url.is_none() && !db.exists() {
        bail!("no Praetor store in `{}`: run `praetor serve` once first (or give --database for nodes on PostgreSQL)", data_dir.display());
    }
    let scopes = praetor_server::api::system::parse_scopes(scopes, agent_id.as_deref()).map_err(|m| anyhow::anyhow!(m))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let store: std::sync::Arc<dyn Store> = match database_url {
            Some(url) => std::sync::Arc::new(praetor_store::postgres::PostgresStore::connect(url).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => std::sync::Arc::new(praetor_store::sqlite::SqliteStore::open(&db).map_err(|e| anyhow::anyhow!("{e}"))?),
        };
        let snap = store.snapshot().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let ws = snap.workspaces.first().context("the store has no workspace")?;
        let mut mutations = Vec::new();
        if let Some(a) = &agent_id {
            match snap.agents.iter().find(|x| &x.agent_id == a && x.workspace_id == ws.workspace_id) {
                None => bail!("`--agent-id`: agent `{a}` does not exist"),
                Some(x) if !x.is_active => bail!("`--agent-id`: agent `{a}` is deactivated; a key bound to it could not act"),
                // A revocation a running server commits meanwhile refuses this key.
                Some(_) => mutations.push(Mutation::ExpectActive { workspace_id: ws.workspace_id.clone(), agent_id: a.clone(), credential_id: None }),
            }
        }
        let now = chrono_now_ms();
        let (key, secret) = praetor_server::api::system::mint_key(&ws.workspace_id, scopes, agent_id, label, now);
        mutations.push(Mutation::InsertApiKey(key.clone()));
        let txn = Txn {
            mutations,
            seal: vec![praetor_server::events::event(&ws.workspace_id, "key.created", Some("cli"), now,
                json!({ "key_id": key.key_id, "scopes": key.scopes, "agent_id": key.agent_id }))],
        };
        store.commit(txn).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        // The secret exists only in this output: a failure to write it (a closed pipe
        // included) is this command's failure, with the key named so it can be revoked.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "Created key `{}` with scopes {} (shown once):\n{secret}", key.key_id, scopes.join(", "))
            .and_then(|()| out.flush())
            .with_context(|| format!("key `{}` was created but its secret could not be shown; revoke it and create another", key.key_id))?;
        Ok(ExitCode::SUCCESS)
    })
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn read_pack(path: &Path) -> anyhow::Result<Result<praetor_core::pack::PolicyPack, Vec<praetor_core::pack::PackError>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let doc = praetor_core::pack::parse_document(&bytes).map_err(|e| anyhow::anyhow!("`{}`: {}", path.display(), e.message))?;
    Ok(praetor_core::pack::validate(&doc))
}

fn print_pack_errors(errors: &[praetor_core::pack::PackError]) {
    for e in errors {
        match e.index {
            Some(i) => say!("  policy_definitions[{i}].{}: {}", e.field, e.message),
            None => say!("  `{}`: {}", e.field, e.message),
        }
    }
}

/// A pack (`name`, `version`, `policy_definitions`) gets the server's pack checks; one
/// policy, a list or `{"policies": [...]}` is compiled as a set.
pub fn validate_policies(path: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let value = praetor_core::pack::parse_document(&bytes).map_err(|e| anyhow::anyhow!("`{}`: {}", path.display(), e.message))?;
    if value.get("policy_definitions").is_some() {
        return Ok(match praetor_core::pack::validate(&value) {
            Ok(p) => {
                say!("OK: pack `{}` version {} with {} policies is valid", p.name, p.version, p.policy_definitions.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                say!("INVALID: {} error(s)", errors.len());
                print_pack_errors(&errors);
                ExitCode::from(1)
            }
        });
    }
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut m) if m.contains_key("policies") => match m.remove("policies") {
            Some(Value::Array(items)) => items,
            _ => bail!("`policies` must be a list"),
        },
        other => vec![other],
    };
    let mut defs = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let def: PolicyDef = serde_json::from_value(item).map_err(|e| anyhow::anyhow!("policy #{i}: {e}"))?;
        defs.push(def);
    }
    match CompiledPolicySet::compile(&defs) {
        Ok(_) => {
            say!("OK: {} policies are valid", defs.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say!("INVALID: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `praetor policy deploy FILE --server URL --key KEY`.
pub fn deploy_pack(path: &Path, server: &str, key: &str) -> anyhow::Result<ExitCode> {
    if let Err(errors) = read_pack(path)? {
        say!("INVALID (not sent): {} error(s)", errors.len());
        print_pack_errors(&errors);
        return Ok(ExitCode::from(1));
    }
    let body = std::fs::read(path)?;
    let url = format!("{}/api/v1/enforce/policy-packs", server.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, answer): (reqwest::StatusCode, Value) = runtime.block_on(async {
        let res = reqwest::Client::new().post(&url).header("X-API-Key", key).body(body).send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = res.status();
        Ok::<_, anyhow::Error>((status, res.json().await.context("the server did not answer JSON")?))
    })?;
    if status.is_success() {
        say!("Deployed pack `{}` version {} (policy set {})", answer["name"].as_str().unwrap_or("?"), answer["version"].as_str().unwrap_or("?"), answer["policy_set_hash"].as_str().unwrap_or("?"));
        Ok(ExitCode::SUCCESS)
    } else {
        say!("REFUSED ({status}): {}", answer["error"]["message"].as_str().unwrap_or("no message"));
        Ok(ExitCode::from(1))
    }
}

/// `praetor policy test PACK CASES`: every case against the pack, offline.
pub fn test_pack(pack_path: &Path, cases_path: &Path) -> anyhow::Result<ExitCode> {
    let pack = match read_pack(pack_path)? {
        Ok(p) => p,
        Err(errors) => {
            say!("INVALID pack: {} error(s)", errors.len());
            print_pack_errors(&errors);
            return Ok(ExitCode::from(1));
        }
    };
    let text = std::fs::read_to_string(cases_path).with_context(|| format!("cannot read `{}`", cases_path.display()))?;
    let file: praetor_core::cases::CorpusFile = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("`{}`: {e}", cases_path.display()))?;
    let (mut passed, mut failed) = (0, 0);
    for case in &file.cases {
        match praetor_core::cases::run_against(case, &pack.policy_definitions) {
            Ok(()) => passed += 1,
            Err(why) => {
                failed += 1;
                say!("FAIL `{}`:\n    {why}", case.name);
            }
        }
    }
    say!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn rotate_keys(data_dir: &Path, keys_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !data_dir.join("praetor.db").exists() {
        bail!("no Praetor store in `{}`", data_dir.display());
    }
    let dir = keys_dir.map(Path::to_path_buf).unwrap_or_else(|| data_dir.join("keys"));
    let retired = praetor_server::vault::VaultKeys::rotate(&dir)?;
    for vkey in retired {
        say!("retired (still published): {vkey}");
    }
    say!("New signing keys are in place; restart the server to use them.");
    Ok(ExitCode::SUCCESS)
}
