//! The binary as users run it: `praetor serve` in a child process, then the offline
//! commands on what it left behind. Covers tamper detection, the SIGKILL crash test,
//! configuration errors and `keys create`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_praetor");

struct Server {
    child: Child,
    base: String,
    key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(dir: &Path) -> Server {
    start_with(dir, &[])
}

fn start_with(dir: &Path, extra: &[&str]) -> Server {
    start_with_env(dir, extra, &[])
}

fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    // `free_port` only finds a port that was free: another test's server may take it
    // before this one binds it. Then this server exits (its port is taken), or the port
    // answers for the other server, which does not know this directory's key. Either
    // way, start again on another port.
    for _ in 0..5 {
        if let Some(server) = try_start(dir, extra, env) {
            return server;
        }
    }
    panic!("praetor serve did not start on any of 5 ports");
}

/// One start on a port `free_port` found: the server, once it answers with this data
/// directory's admin key, or `None` when the port turned out to be another's.
fn try_start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Option<Server> {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .args(["--checkpoint-interval-ms", "100"])
        .args(extra)
        .env("PRAETOR_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start praetor serve");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("the server's status") {
            // Started again only when the port is indeed another's: a server that
            // exited for any other reason is a failure, not to be hidden by a retry.
            assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err(), "praetor serve exited ({status}) with its port free");
            return None;
        }
        if reqwest::blocking_get(&format!("{base}/healthz")).unwrap_or(false)
            && let Ok(key) = std::fs::read_to_string(dir.join("admin.key"))
        {
            let key = key.trim().to_owned();
            if reqwest::accepts_key(&format!("{base}/api/v1/enforce/agents"), &key) {
                return Some(Server { child, base, key });
            }
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("praetor serve did not become healthy, with this directory's admin key, in 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tiny blocking helper over reqwest's async client.
mod reqwest {
    pub use ::reqwest::*;
    pub fn blocking_get(url: &str) -> Result<bool> {
        let rt = tokio_rt();
        rt.block_on(async { Ok(::reqwest::get(url).await?.status().is_success()) })
    }
    /// Whether `key` is accepted at `url` (any failure, or an answer from something
    /// that is not this server, is a no).
    pub fn accepts_key(url: &str, key: &str) -> bool {
        let rt = tokio_rt();
        rt.block_on(async {
            let Ok(answer) = ::reqwest::Client::new().get(url).header("X-API-Key", key).send().await else { return false };
            answer.json::<serde_json::Value>().await.is_ok_and(|v| v["ok"] == serde_json::json!(true))
        })
    }
    pub fn tokio_rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }
}

fn call(method: &str, url: &str, key: &str, body: Option<&Value>) -> Value {
    let rt = reqwest::tokio_rt();
    rt.block_on(async {
        let c = ::reqwest::Client::new();
        let req = match method {
            "GET" => c.get(url),
            _ => c.post(url).json(body.unwrap_or(&json!({}))),
        };
        req.header("X-API-Key", key).send().await.expect("request").json().await.expect("json")
    })
}

fn praetor(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("PRAETOR_LOG", "warn").output().expect("run praetor")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A data directory with `n` decisions, the server stopped. Returns the published key file.
fn populated(dir: &Path, n: usize) -> PathBuf {
    let s = start(dir);
    call("POST", &format!("{}/api/v1/enforce/policies", s.base), &s.key,
        Some(&json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })));
    for i in 0..n {
        let t = if i % 3 == 0 { "delete_row" } else { "read_row" };
        call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": t, "action_content": format!("row {i}") })));
    }
    let cp = call("GET", &format!("{}/api/v1/enforce/vault/checkpoint", s.base), &s.key, None);
    assert!(cp["checkpoint"]["size"].as_u64().unwrap() >= n as u64);
    let keys = call("GET", &format!("{}/api/v1/enforce/vault/keys", s.base), &s.key, None);
    let key_file = dir.join("vault.vkey");
    std::fs::write(&key_file, keys["keys"][0]["vkey"].as_str().unwrap()).unwrap();
    let bundle = call("GET", &format!("{}/api/v1/enforce/vault/export", s.base), &s.key, None);
    std::fs::write(dir.join("bundle.json"), serde_json::to_vec(&bundle).unwrap()).unwrap();
    // An export of no entries signs and stores the empty tree's checkpoint: no damage.
    let empty = call("GET", &format!("{}/api/v1/enforce/vault/export?from=0&to=0", s.base), &s.key, None);
    assert!(empty["checkpoints"][0].as_str().is_some_and(|note| note.contains("\n0\n")), "{empty}");
    // The same log exported in two parts, as a long one must be (an export is capped).
    let half = bundle["entries"].as_array().unwrap().len() / 2;
    for (name, range) in [("part1.json", format!("from=0&to={half}")), ("part2.json", format!("from={half}"))] {
        let part = call("GET", &format!("{}/api/v1/enforce/vault/export?{range}", s.base), &s.key, None);
        std::fs::write(dir.join(name), serde_json::to_vec(&part).unwrap()).unwrap();
    }
    drop(s);
    key_file
}

fn tamper(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("praetor.db")).unwrap();
    // An attacker with the database file can drop the append-only triggers.
    for table in ["vault_entries", "violations", "vault_checkpoints"] {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {table}_no_update; DROP TRIGGER IF EXISTS {table}_no_delete;")).unwrap();
    }
    conn.execute_batch(sql).unwrap();
}

fn check(dir: &Path) -> Output {
    praetor(&["vault", "check", "--data-dir", dir.to_str().unwrap()])
}

#[test]
fn vault_check_and_verify_pass_on_an_honest_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = populated(dir.path(), 30);
    let out = check(dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK"), "{}", text(&out));
    let bundle = dir.path().join("bundle.json");
    let out = praetor(&["vault", "verify", bundle.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // One server key signs every workspace's log: `--origin` names the one expected.
    let origin = serde_json::from_slice::<Value>(&std::fs::read(&bundle).unwrap()).unwrap()["origin"].as_str().expect("origin").to_owned();
    let out = praetor(&["vault", "verify", bundle.to_str().unwrap(), "--key", key.to_str().unwrap(), "--origin", &origin]);
    assert!(out.status.success(), "{}", text(&out));
    // A reader that has gone (`| head -1`) stops the report, not the command: it still
    // exits with its own status (it panicked with 101 on the broken pipe).
    let mut child = Command::new(BIN)
        .args(["vault", "verify", bundle.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = praetor(&["vault", "verify", bundle.to_str().unwrap(), "--key", key.to_str().unwrap(), "--origin", "praetor/ws_other"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&format!("the log is `{origin}`, not `praetor/ws_other`")), "{}", text(&out));
}

#[test]
fn vault_verify_checks_an_export_in_parts_as_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = populated(dir.path(), 30);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (first, second, key) = (path("part1.json"), path("part2.json"), key.to_str().unwrap().to_owned());
    let out = praetor(&["vault", "verify", &first, &second, "--key", &key]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK: 2 bundles, one log: entries 0.."), "{}", text(&out));
    // Each part verifies alone, but not as the continuation of a part that does not
    // end where it starts.
    for (order, why) in [([&second, &first], "starts at entry 0"), ([&first, &first], "starts at entry 0")] {
        let out = praetor(&["vault", "verify", order[0], order[1], "--key", &key]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(why), "expected `{why}` in\n{}", text(&out));
    }
}

/// Bundles are read ahead while the one before is checked: a failure in the first of
/// several ends the run at once with that failure, whatever the reader holds.
#[test]
fn vault_verify_stops_at_a_bad_first_bundle_with_more_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = populated(dir.path(), 30);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let mut first: Value = serde_json::from_slice(&std::fs::read(path("part1.json")).unwrap()).unwrap();
    let leaf = first["entries"][3]["leaf"].as_str().unwrap().replacen("\"kind\":\"", "\"kind\":\"X", 1);
    first["entries"][3]["leaf"] = json!(leaf);
    let seq = first["entries"][3]["seq"].as_u64().unwrap();
    std::fs::write(path("bad1.json"), serde_json::to_vec(&first).unwrap()).unwrap();
    let (bad, second, key) = (path("bad1.json"), path("part2.json"), key.to_str().unwrap().to_owned());
    let out = praetor(&["vault", "verify", &bad, &second, &second, &second, "--key", &key]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&format!("FAILED: `{bad}` at entry {seq}")), "{}", text(&out));
    assert!(!text(&out).contains("part2.json"), "nothing after the failure is reported:\n{}", text(&out));
    // A bundle that cannot be read is named when its turn comes, after the good ones.
    let out = praetor(&["vault", "verify", &path("part1.json"), &path("missing.json"), "--key", &key]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK: `") && text(&out).contains("missing.json"), "{}", text(&out));
}

#[test]
fn vault_check_names_the_first_bad_entry() {
    let cases: &[(&str, &str, &str)] = &[
        ("one changed byte", "UPDATE vault_entries SET leaf = CAST(replace(CAST(leaf AS TEXT), '_row', '_rox') AS BLOB) WHERE seq = 12", "entry 12"),
        ("a deleted row", "DELETE FROM vault_entries WHERE seq = 9", "entry 9"),
        ("two swapped rows", "UPDATE vault_entries SET seq = -1 WHERE seq = 5; UPDATE vault_entries SET seq = 5 WHERE seq = 6; UPDATE vault_entries SET seq = 6 WHERE seq = -1;", "entry 5"),
        ("a truncated log", "DELETE FROM vault_entries WHERE seq >= 20", "entry 20"),
        ("an extra tree hash", "INSERT INTO vault_hashes (workspace_id, idx, hash) SELECT workspace_id, 999999, hash FROM vault_hashes LIMIT 1", "tree hashes"),
        // The signed notes receipts and exports hand out are checked, not only the rows'
        // sizes and roots: a garbled one, and one of another size.
        ("a garbled checkpoint note", "UPDATE vault_checkpoints SET note = 'garbage' WHERE size = (SELECT MAX(size) FROM vault_checkpoints)", "its signed note does not open"),
        ("another checkpoint's note", "UPDATE vault_checkpoints SET note = (SELECT note FROM vault_checkpoints WHERE size > 0 ORDER BY size LIMIT 1)
            WHERE size = (SELECT MAX(size) FROM vault_checkpoints)", "its signed note is of size"),
        // A log whose workspace row is gone is not passed over.
        ("a deleted workspace row", "PRAGMA foreign_keys = OFF; DELETE FROM workspaces", "no `workspaces` row"),
    ];
    for (what, sql, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        populated(dir.path(), 25);
        tamper(dir.path(), sql);
        let out = check(dir.path());
        assert!(!out.status.success(), "{what}: check passed\n{}", text(&out));
        assert!(text(&out).contains(expect), "{what}: expected `{expect}` in\n{}", text(&out));
    }
}

/// The checkpoints' signatures are checked with the keys directory's signing and retired
/// keys, or with the keys given: a store whose retired keys are lost, or a key that did
/// not sign them, fails.
#[test]
fn vault_check_verifies_checkpoint_signatures_with_active_and_retired_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = populated(dir.path(), 6);
    let data = dir.path().to_str().unwrap();
    let out = praetor(&["vault", "check", "--data-dir", data, "--key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = praetor(&["vault", "rotate-keys", "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out));
    let out = check(dir.path());
    assert!(out.status.success(), "signed by keys now retired, which the directory keeps:
{}", text(&out));
    std::fs::remove_dir_all(dir.path().join("keys/retired")).unwrap();
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("its signed note does not open"), "{}", text(&out));
    // Without any key the signatures cannot be checked, and the check says so.
    let empty = tempfile::tempdir().unwrap();
    let out = praetor(&["vault", "check", "--data-dir", data, "--vault-keys-dir", empty.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("checkpoint signatures are not checked"), "{}", text(&out));
}

/// `vault check` goes on past a bad entry and names every bad one (up to 20), each
/// checked on its own: the entries between and after them, untouched, pass.
#[test]
fn vault_check_names_every_bad_entry() {
    let changed = |seq: u32| format!("UPDATE vault_entries SET leaf = CAST(replace(CAST(leaf AS TEXT), '_row', '_rox') AS BLOB) WHERE seq = {seq};");
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path(), 25);
    tamper(dir.path(), &format!("{} DELETE FROM vault_entries WHERE seq IN (9, 10); {} {}", changed(5), changed(12), changed(20)));
    let out = check(dir.path());
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 5, "{text}");
    assert!(failed[0].contains("at entry 5: leaf does not match its leaf hash"), "{text}");
    assert!(failed[1].contains("at entry 9 too: entries 9 to 10 are missing (next stored is 11)"), "{text}");
    assert!(failed[2].contains("at entry 12 too: leaf does not match") && failed[3].contains("at entry 20 too"), "{text}");
    assert!(failed[4].contains("5 entries bad or missing in all"), "{text}");
    // The count is given whenever more than one is bad, also when each is named.
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path(), 25);
    tamper(dir.path(), &format!("{} {}", changed(5), changed(12)));
    let text_two = self::text(&check(dir.path()));
    let failed: Vec<&str> = text_two.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 3, "{text_two}");
    assert!(failed[2].contains("2 entries bad or missing in all"), "{text_two}");
    // Past 20, the count. (Each of the 25 decisions' entries holds `_row`.)
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path(), 25);
    tamper(dir.path(), "UPDATE vault_entries SET leaf = CAST(replace(CAST(leaf AS TEXT), '_row', '_rox') AS BLOB) WHERE instr(CAST(leaf AS TEXT), '_row') > 0;");
    let text_all = self::text(&check(dir.path()));
    assert_eq!(text_all.lines().filter(|l| l.contains(" at entry ")).count(), 20, "{text_all}");
    assert!(text_all.contains("25 entries bad or missing in all"), "{text_all}");
}

/// `vault check` compares each decision's and violation's row with what is sealed of
/// it: a row changed, pointed elsewhere, forged, unreadable or deleted after it was
/// sealed is named.
#[test]
fn vault_check_names_a_row_changed_after_it_was_sealed() {
    // The sixth decision of the log, by its entry, and the seventh's entry.
    let sixth = "(SELECT vault_seq FROM decisions ORDER BY vault_seq LIMIT 1 OFFSET 5)";
    let seventh = "(SELECT vault_seq FROM decisions ORDER BY vault_seq LIMIT 1 OFFSET 6)";
    let cases = [
        ("changed content", format!("UPDATE decisions SET content = 'row 999' WHERE vault_seq = {sixth}"), "its content is not the content sealed"),
        ("a changed answer", format!("UPDATE decisions SET body = json_set(body, '$.reasoning', 'fine') WHERE vault_seq = {sixth}"), "`answer_sha256`"),
        ("a changed verdict", "UPDATE decisions SET decision = 'allow' WHERE vault_seq = (SELECT MIN(vault_seq) FROM decisions WHERE decision = 'block')".to_owned(), "its `decision` is not the one sealed"),
        ("a row pointed at another entry", format!("UPDATE decisions SET vault_seq = {seventh} WHERE vault_seq = {sixth}"), "its `decision_id` is not the one sealed"),
        ("a row without its entry", format!("UPDATE decisions SET vault_seq = NULL WHERE vault_seq = {sixth}"), "has no vault entry"),
        ("a deleted row", format!("DROP TRIGGER IF EXISTS decisions_no_delete; DELETE FROM decisions WHERE vault_seq = {sixth}"), "seals a decision that has no row"),
        ("a row past the log", format!("INSERT INTO decisions (workspace_id, decision_id, agent_id, action_type, decision, created_at, vault_seq, content, body)
            SELECT workspace_id, 'dec_forged', agent_id, action_type, 'allow', created_at, 999999, content, body FROM decisions WHERE vault_seq = {sixth}"),
            "decision `dec_forged` (entry 999999): its entry is missing"),
        ("a row that cannot be read", format!("UPDATE decisions SET created_at = 'noon' WHERE vault_seq = {sixth}"), "its row cannot be read"),
        ("a changed violation", "UPDATE violations SET rule_id = 'other' WHERE rowid = (SELECT MIN(rowid) FROM violations)".to_owned(), "its `rule_id` is not the one sealed"),
        ("a deleted violation", "DELETE FROM violations WHERE rowid = (SELECT MIN(rowid) FROM violations)".to_owned(), "1 of the 4 violations sealed in decision entries have no row"),
        ("a violation's body rewritten", "UPDATE violations SET body = '{\"reason\":\"forged\",\"action\":\"allow\"}' WHERE rowid = (SELECT MIN(rowid) FROM violations)".to_owned(),
            "its stored `action` is not the one sealed"),
        ("a violation's decision context rewritten", "UPDATE violations SET body = '{\"decision\":\"allow\"}' WHERE rowid = (SELECT MIN(rowid) FROM violations)".to_owned(),
            "its stored `decision` is not the one sealed"),
        ("a violation's body unreadable", "UPDATE violations SET body = 'not json' WHERE rowid = (SELECT MIN(rowid) FROM violations)".to_owned(),
            "its stored body is not a JSON object"),
        ("a violation's body made null", "UPDATE violations SET body = 'null' WHERE rowid = (SELECT MIN(rowid) FROM violations)".to_owned(),
            "its stored body is not a JSON object"),
    ];
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path(), 12);
    let out = check(dir.path());
    assert!(out.status.success() && text(&out).contains("12 decision rows and 4 violation rows verified"), "{}", text(&out));
    // The database with its WAL, if the stopped server left one.
    let files = ["praetor.db", "praetor.db-wal", "praetor.db-shm"];
    let pristine: Vec<Option<Vec<u8>>> = files.iter().map(|f| std::fs::read(dir.path().join(f)).ok()).collect();
    for (what, sql, expect) in cases {
        for (f, bytes) in files.iter().zip(&pristine) {
            match bytes {
                Some(b) => std::fs::write(dir.path().join(f), b).unwrap(),
                None => drop(std::fs::remove_file(dir.path().join(f))),
            }
        }
        tamper(dir.path(), &sql);
        let out = check(dir.path());
        assert_eq!(out.status.code(), Some(1), "{what}: check passed\n{}", text(&out));
        assert!(text(&out).contains(expect), "{what}: expected `{expect}` in\n{}", text(&out));
    }
}

/// A store an older version wrote, whose rows lack a column this version reads (here
/// `session_id`, added by a migration): its log is still verified, and the check says
/// its rows were not, and why, rather than failing.
#[test]
fn vault_check_of_an_unmigrated_store_verifies_the_log_and_says_the_rows_were_not() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path(), 6);
    tamper(dir.path(), "DROP INDEX decisions_by_session; ALTER TABLE decisions DROP COLUMN session_id;");
    let out = check(dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("checkpoints verified; its rows were not checked") && text(&out).contains("session_id"), "{}", text(&out));
}

/// `vault check` of a store a server is writing to (the check reads one snapshot):
/// entries, tree hashes and rows appended while it runs are no damage.
#[test]
fn vault_check_passes_while_the_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    call("POST", &format!("{}/api/v1/enforce/policies", s.base), &s.key,
        Some(&json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })));
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, key, stop, sent) = (format!("{}/api/v1/enforce/intercept", s.base), s.key.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let t = if i % 2 == 0 { "delete_row" } else { "read_row" };
                    call("POST", &url, &key, Some(&json!({ "action_type": t, "action_content": format!("w{w} {i}") })));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Checks run until at least 8 have run and the writers have sent more than 50
    // decisions meanwhile, however slow the machine (a fixed time once let too few
    // decisions through on a busy CI machine), and at most 200.
    let before = sent.load(Ordering::Relaxed);
    let mut outs: Vec<Output> = Vec::new();
    while outs.len() < 8 || (sent.load(Ordering::Relaxed) - before <= 50 && outs.len() < 200) {
        outs.push(check(dir.path()));
    }
    let during = sent.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writers.into_iter().for_each(|w| w.join().unwrap());
    for out in &outs {
        assert!(out.status.success(), "a check during {during} decisions failed:\n{}", text(out));
    }
    assert!(during > 50, "the writers sent only {during} decisions during {} checks", outs.len());
}

#[test]
fn vault_verify_names_the_first_bad_entry_of_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let key = populated(dir.path(), 20);
    let path = dir.path().join("bundle.json");
    let mut bundle: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // Every leaf has a `kind`: change one byte of it.
    let original = bundle["entries"][11]["leaf"].as_str().unwrap().to_owned();
    let victim = original.replacen("\"kind\":\"", "\"kind\":\"X", 1);
    assert_ne!(victim, original);
    bundle["entries"][11]["leaf"] = json!(victim);
    let seq = bundle["entries"][11]["seq"].as_u64().unwrap();
    std::fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let out = praetor(&["vault", "verify", path.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&format!("entry {seq}")), "{}", text(&out));
    // Removing an entry is caught too.
    bundle["entries"].as_array_mut().unwrap().remove(4);
    std::fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let out = praetor(&["vault", "verify", path.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// A client sends decisions as fast as it can; the server is killed with SIGKILL and
/// restarted; every decision the client was answered is in the vault, and the whole
/// log verifies.
#[test]
fn answered_decisions_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path());
    let url = format!("{}/api/v1/enforce/intercept", s.base);
    let key = s.key.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (url, key, stop) = (url.clone(), key.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let rt = reqwest::tokio_rt();
            rt.block_on(async move {
                let c = ::reqwest::Client::new();
                let mut answered = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let res = c.post(&url).header("X-API-Key", &key).json(&json!({ "action_type": format!("w{w}.{i}") })).send().await;
                    match res {
                        Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                            Ok(v) => answered.push((v["decision_id"].as_str().unwrap().to_owned(), v["vault_entry_id"].as_u64().unwrap())),
                            Err(_) => break,
                        },
                        _ => break,
                    }
                }
                answered
            })
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: Vec<(String, u64)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(answered.len() > 20, "the client got only {} answers before the kill", answered.len());
    let out = check(dir.path());
    assert!(out.status.success(), "the log does not verify after SIGKILL:\n{}", text(&out));
    let s = start(dir.path());
    for (id, seq) in &answered {
        let d = call("GET", &format!("{}/api/v1/enforce/decisions/{id}", s.base), &s.key, None);
        assert_eq!(d["decision"]["vault_entry_id"].as_u64(), Some(*seq), "decision {id} was answered but is not stored");
        let e = call("GET", &format!("{}/api/v1/enforce/vault/entries?start={seq}&end={}", s.base, seq + 1), &s.key, None);
        assert_eq!(e["entries"][0]["entry"]["decision_id"], json!(id), "decision {id} is not sealed at {seq}");
    }
    // The restarted server goes on appending to the same log.
    let next = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "after" })));
    assert!(next["vault_entry_id"].as_u64().unwrap() > answered.iter().map(|a| a.1).max().unwrap());
    drop(s);
    let out = check(dir.path());
    assert!(out.status.success(), "{}", text(&out));
}

/// A store whose log lost its tail, or whose workspace row is gone, is refused at start
/// with the reason, instead of serving and failing every decision (or starting a new
/// workspace beside the old log). The same store intact starts.
#[test]
fn serve_refuses_a_store_whose_log_cannot_be_continued() {
    let cases = [
        ("the last entry deleted", "DELETE FROM vault_entries WHERE seq = (SELECT MAX(seq) FROM vault_entries)", "but a signed checkpoint covers"),
        ("the workspace row deleted", "PRAGMA foreign_keys = OFF; DELETE FROM workspaces", "but not the workspace: its row was removed"),
    ];
    for (what, sql, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        populated(dir.path(), 4);
        tamper(dir.path(), sql);
        let out = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", dir.path().to_str().unwrap()])
            .env("PRAETOR_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: served");
        assert!(text(&out).contains(expect), "{what}: expected `{expect}` in\n{}", text(&out));
        assert!(text(&out).contains("praetor vault check"), "{what}: {}", text(&out));
    }
    // Keys of its own: it would sign checkpoints no auditor trusts, for good.
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path(), 4);
    let own_keys = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", dir.path().to_str().unwrap()])
        .args(["--vault-keys-dir", own_keys.path().to_str().unwrap()])
        .env("PRAETOR_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "served with keys that signed none of its checkpoints");
    assert!(text(&out).contains("every node must use the same keys directory"), "{}", text(&out));
    assert_eq!(own_keys.path().read_dir().unwrap().count(), 0, "keys made for the refused start were written");
    // A mistyped directory is not even made.
    let typo = own_keys.path().join("vault-kyes");
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", dir.path().to_str().unwrap()])
        .args(["--vault-keys-dir", typo.to_str().unwrap()])
        .env("PRAETOR_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success() && !typo.exists(), "{}", text(&out));
    // With its own keys (rotated ones too: their public keys stay in `retired/`) it starts.
    drop(start(dir.path()));
    assert!(praetor(&["vault", "rotate-keys", "--data-dir", dir.path().to_str().unwrap()]).status.success());
    drop(start(dir.path()));
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("praetor.toml");
    std::fs::write(&cfg, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = praetor(&["serve", "--config", cfg.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("lisen"), "{}", text(&out));
    std::fs::write(&cfg, "max_body_bytes = 10\n").unwrap();
    let out = praetor(&["serve", "--config", cfg.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("max_body_bytes"), "{}", text(&out));
    std::fs::write(&cfg, "worker_threads = 0\n").unwrap();
    let out = praetor(&["serve", "--config", cfg.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("worker_threads"), "{}", text(&out));
    std::fs::write(&cfg, "connection_send_secs = 0\n").unwrap();
    let out = praetor(&["serve", "--config", cfg.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("connection_send_secs"), "{}", text(&out));
    let out = Command::new(BIN).args(["serve", "--data-dir", dir.path().to_str().unwrap()])
        .env("PRAETOR_LISTEN", "not-an-address").output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).to_lowercase().contains("listen"), "{}", text(&out));
}

#[test]
fn keys_create_works_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let out = praetor(&["keys", "create", "--scope", "read", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let new_key = stdout.lines().find(|l| l.starts_with("xb_live_")).expect("the key is printed").trim().to_owned();
    let agents = call("GET", &format!("{}/api/v1/enforce/agents", s.base), &new_key, None);
    assert_eq!(agents["ok"], true, "{agents}");
    let denied = call("POST", &format!("{}/api/v1/enforce/policies", s.base), &new_key, Some(&json!({})));
    assert_eq!(denied["error"]["code"], "insufficient_scope");
    // The CLI sealed its `key.created` event into the same log the server appends to:
    // the server must go on appending after it, not collide with it.
    for i in 0..3 {
        let d = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": format!("after_cli_{i}") })));
        assert_eq!(d["decision"], "allow", "{d}");
    }
    let p = call("POST", &format!("{}/api/v1/enforce/policies", s.base), &s.key,
        Some(&json!({ "name": "p", "policy_type": "action_type", "action_types": ["x"], "decision": "block" })));
    assert_eq!(p["ok"], true, "{p}");
    // The key made by the CLI is listed, and can be revoked, through the API.
    let keys = call("GET", &format!("{}/api/v1/enforce/keys", s.base), &s.key, None);
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{keys}");
    let out = praetor(&["keys", "create", "--scope", "read", "--data-dir", dir.path().to_str().unwrap()]);
    let unused = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("xb_live_")).unwrap().trim().to_owned();
    let keys = call("GET", &format!("{}/api/v1/enforce/keys", s.base), &s.key, None);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 3, "{keys}");
    let unused_id = keys["keys"].as_array().unwrap().iter()
        .find(|k| unused.starts_with(k["prefix"].as_str().unwrap()))
        .map(|k| k["key_id"].as_str().unwrap().to_owned())
        .expect("a never-used CLI key is listed");
    let revoked = call("POST", &format!("{}/api/v1/enforce/keys/{unused_id}/revoke", s.base), &s.key, Some(&json!({})));
    assert_eq!(revoked["ok"], true, "{revoked}");
    let refused = call("GET", &format!("{}/api/v1/enforce/agents", s.base), &unused, None);
    assert_eq!(refused["error"]["code"], "invalid_api_key");
    // A secret that could not be shown is a failure, naming the key to revoke.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(BIN).args(["keys", "create", "--scope", "read", "--data-dir", dir.path().to_str().unwrap()])
        .env("PRAETOR_LOG", "warn").stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an error, as any other: {}", text(&out));
    assert!(text(&out).contains("was created but its secret could not be shown; revoke it"), "{}", text(&out));
    let out = praetor(&["keys", "create", "--scope", "root", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("scopes[0]"), "{}", text(&out));
    // No key is made for a revoked agent: it could act as nobody, and would outlive the
    // revocation that revoked the agent's keys.
    let agent = call("POST", &format!("{}/api/v1/enforce/agents", s.base), &s.key, Some(&json!({ "name": "gone" })));
    let agent_id = agent["agent"]["agent_id"].as_str().expect("agent_id").to_owned();
    let bound = |id: &str| praetor(&["keys", "create", "--scope", "agent", "--agent-id", id, "--data-dir", dir.path().to_str().unwrap()]);
    assert!(bound(&agent_id).status.success(), "an active agent gets a bound key");
    let revoked = call("POST", &format!("{}/api/v1/enforce/agents/{agent_id}/revoke", s.base), &s.key, Some(&json!({ "reason": "compromised" })));
    assert_eq!(revoked["revoked_keys"].as_array().map(Vec::len), Some(1), "{revoked}");
    let out = bound(&agent_id);
    assert!(!out.status.success());
    assert!(text(&out).contains("`--agent-id`") && text(&out).contains("deactivated"), "{}", text(&out));
    drop(s);
    let out = check(dir.path());
    assert!(out.status.success(), "{}", text(&out));
    // The admin key file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn rotated_keys_stay_published_and_old_receipts_verify() {
    let dir = tempfile::tempdir().unwrap();
    let old_key = populated(dir.path(), 5);
    let s = start(dir.path());
    let d = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "before" })));
    let receipt = call("GET", &format!("{}/api/v1/enforce/decisions/{}/receipt", s.base, d["decision_id"].as_str().unwrap()), &s.key, None);
    let receipt_path = dir.path().join("receipt.json");
    std::fs::write(&receipt_path, serde_json::to_vec(&receipt).unwrap()).unwrap();
    // Not while a server signs with them: it would go on signing with retired keys.
    let out = praetor(&["vault", "rotate-keys", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success() && text(&out).contains("a server is signing with the keys"), "{}", text(&out));
    assert!(!dir.path().join("keys/retired").exists(), "nothing was retired");
    drop(s);
    // A directory without keys (a typo) is refused, and not made.
    let typo = dir.path().join("kyes");
    let out = praetor(&["vault", "rotate-keys", "--data-dir", dir.path().to_str().unwrap(), "--vault-keys-dir", typo.to_str().unwrap()]);
    assert!(!out.status.success() && text(&out).contains("nothing to rotate") && !typo.exists(), "{}", text(&out));
    let out = praetor(&["vault", "rotate-keys", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let s = start(dir.path());
    let keys = call("GET", &format!("{}/api/v1/enforce/vault/keys", s.base), &s.key, None);
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "two active, two retired: {keys:?}");
    let old_vkey = std::fs::read_to_string(&old_key).unwrap();
    assert!(keys.iter().any(|k| k["vkey"] == json!(old_vkey.trim()) && k["status"] == "retired"));
    // A rotated key keeps its name; its key ID (the vkey's second field) tells it apart,
    // in the list and in a receipt's answer alike.
    for k in keys {
        assert_eq!(k["key_id"].as_str(), k["vkey"].as_str().unwrap().split('+').nth(1), "{k}");
    }
    let ids: std::collections::HashSet<&str> = keys.iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "{keys:?}");
    // The old receipt still verifies with the old key; new checkpoints do not carry it.
    let out = praetor(&["vault", "verify-receipt", receipt_path.to_str().unwrap(), "--key", old_key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let d = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "after" })));
    let fresh = call("GET", &format!("{}/api/v1/enforce/decisions/{}/receipt", s.base, d["decision_id"].as_str().unwrap()), &s.key, None);
    assert_eq!(fresh["keys"].as_array().unwrap(), keys, "the receipt's answer lists the keys as /vault/keys does");
    std::fs::write(&receipt_path, serde_json::to_vec(&fresh).unwrap()).unwrap();
    let out = praetor(&["vault", "verify-receipt", receipt_path.to_str().unwrap(), "--key", old_key.to_str().unwrap()]);
    assert!(!out.status.success(), "a retired key must not sign new checkpoints\n{}", text(&out));
    let new_key = dir.path().join("new.vkey");
    std::fs::write(&new_key, keys[0]["vkey"].as_str().unwrap()).unwrap();
    let out = praetor(&["vault", "verify-receipt", receipt_path.to_str().unwrap(), "--key", new_key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = praetor(&["vault", "verify-receipt", receipt_path.to_str().unwrap(), "--key", new_key.to_str().unwrap(), "--origin", "praetor/ws_other"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not `praetor/ws_other`"), "{}", text(&out));
    // The whole log, old and new checkpoints, verifies with both keys.
    drop(s);
    let out = check(dir.path());
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn demo_mode_shows_decisions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), &["--demo"]);
    let agents = call("GET", &format!("{}/api/v1/enforce/agents", s.base), &s.key, None);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 3, "{agents}");
    let policies = call("GET", &format!("{}/api/v1/enforce/policies", s.base), &s.key, None);
    assert!(policies["policies"].as_array().unwrap().len() >= 5, "{policies}");
    let d = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "delete_customer" })));
    assert_eq!(d["decision"], "block", "{d}");
    let pay = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key,
        Some(&json!({ "action_type": "payment.send", "metadata": { "amount": 25000, "currency": "EUR" } })));
    assert_eq!(pay["decision"], "escalate", "{pay}");
    assert!(pay["escalation_id"].as_str().is_some());
    drop(s);
    // A restart with --demo again loads nothing twice.
    let s = start_with(dir.path(), &["--demo"]);
    let agents = call("GET", &format!("{}/api/v1/enforce/agents", s.base), &s.key, None);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 3);
}

#[test]
fn vault_keys_can_live_outside_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let keys_dir = keys.path().join("vault-keys");
    let s = start_with(dir.path(), &["--vault-keys-dir", keys_dir.to_str().unwrap()]);
    call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "x" })));
    let published = call("GET", &format!("{}/api/v1/enforce/vault/keys", s.base), &s.key, None);
    drop(s);
    assert!(keys_dir.join("vault-ecdsa-p256.pem").is_file() && keys_dir.join("vault-ed25519.pem").is_file());
    assert!(!dir.path().join("keys").exists(), "nothing is written to the default place");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys_dir.join("vault-ed25519.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Restarted with the same directory, the same keys sign.
    let s = start_with(dir.path(), &["--vault-keys-dir", keys_dir.to_str().unwrap()]);
    let again = call("GET", &format!("{}/api/v1/enforce/vault/keys", s.base), &s.key, None);
    assert_eq!(published["keys"], again["keys"]);
}

/// `keys create`, `vault check` and `vault rotate-keys` read the server's configuration
/// file (`--config`, or `PRAETOR_CONFIG`) for its data directory and keys directory,
/// under flags and variables. (They used to look only at `./praetor-data` and its
/// `keys/`: a server configured by its file was checked without its keys.)
#[test]
fn offline_commands_open_what_the_configuration_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("vault-keys");
    let data = dir.path().join("data");
    let s = start_with(&data, &["--vault-keys-dir", keys_dir.to_str().unwrap()]);
    call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "x" })));
    let cp = call("GET", &format!("{}/api/v1/enforce/vault/checkpoint", s.base), &s.key, None);
    assert!(cp["checkpoint"]["size"].as_u64().unwrap() >= 1, "{cp}");
    drop(s);
    let config = dir.path().join("praetor.toml");
    std::fs::write(&config, format!("data_dir = {:?}\nvault_keys_dir = {:?}\n", data, keys_dir)).unwrap();
    // Run from an empty directory: nothing may come from `./praetor-data`.
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
        Command::new(BIN).args(args).current_dir(elsewhere.path()).env("PRAETOR_LOG", "warn").envs(env.iter().copied()).output().unwrap()
    };
    let config_arg = config.to_str().unwrap();
    let out = run(&["vault", "check", "--config", config_arg], &[]);
    assert!(out.status.success() && !text(&out).contains("not checked"), "signatures checked with the file's keys directory: {}", text(&out));
    let out = run(&["vault", "check"], &[("PRAETOR_CONFIG", config.as_os_str())]);
    assert!(out.status.success() && !text(&out).contains("not checked"), "PRAETOR_CONFIG: {}", text(&out));
    // A flag goes over the file: another data directory, empty, fails.
    let out = run(&["vault", "check", "--config", config_arg, "--data-dir", elsewhere.path().to_str().unwrap()], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = run(&["keys", "create", "--scope", "read", "--config", config_arg], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let key = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("xb_live_")).expect("the key is printed").trim().to_owned();
    let out = run(&["vault", "rotate-keys", "--config", config_arg], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(keys_dir.join("retired").read_dir().unwrap().count() >= 2, "the file's keys directory was rotated");
    assert!(!elsewhere.path().join("praetor-data").exists(), "nothing was made at the default place");
    // The server finds the key in its store, and its old checkpoints still verify.
    let s = start_with(&data, &["--vault-keys-dir", keys_dir.to_str().unwrap()]);
    let agents = call("GET", &format!("{}/api/v1/enforce/agents", s.base), &key, None);
    assert_eq!(agents["ok"], true, "{agents}");
    drop(s);
    let out = run(&["vault", "check", "--config", config_arg], &[]);
    assert!(out.status.success() && !text(&out).contains("not checked"), "{}", text(&out));
    // A bad file is named.
    std::fs::write(&config, "data_dirr = \"x\"\n").unwrap();
    let out = run(&["vault", "check", "--config", config_arg], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("data_dirr"), "{}", text(&out));
}

#[test]
fn policy_packs_are_validated_tested_and_deployed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack.yaml");
    std::fs::write(&pack, "name: guard\nversion: 2.0.0\npolicy_definitions:\n  - name: no deletes\n    policy_type: action_type\n    action_types: ['delete_*']\n    decision: block\n  - name: big payments\n    policy_type: metadata\n    action_types: ['pay']\n    decision: escalate\n    conditions: { rule: { field: amount, op: '>', value: 1000 } }\n").unwrap();
    let out = praetor(&["policy", "validate", pack.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"name":"guard","version":"2.1","policy_definitions":[{"name":"x","policy_type":"action_type","action_types":["a"],"decision":"block"},{"name":"y","policy_type":"pii","decision":"block","conditions":{"categories":["dna"]}}]}"#).unwrap();
    let out = praetor(&["policy", "validate", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("`version`"), "{}", text(&out));
    assert!(text(&out).contains("policy_definitions[1].conditions.categories"), "{}", text(&out));
    // A pack's unit tests, offline.
    let cases = dir.path().join("cases.json");
    std::fs::write(&cases, serde_json::to_vec(&json!({ "cases": [
        { "name": "deletes are blocked", "request": { "action_type": "delete_user" }, "expect": { "decision": "block", "policies": ["no deletes"] } },
        { "name": "big payments wait", "request": { "action_type": "pay", "metadata": { "amount": 5000 } }, "expect": { "decision": "escalate", "policies": ["big payments"] } },
        { "name": "small payments pass", "request": { "action_type": "pay", "metadata": { "amount": 5 } }, "expect": { "decision": "allow", "policies": [] } }
    ]})).unwrap()).unwrap();
    let out = praetor(&["policy", "test", pack.to_str().unwrap(), cases.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 passed, 0 failed"), "{}", text(&out));
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, serde_json::to_vec(&json!({ "cases": [
        { "name": "mistaken", "request": { "action_type": "delete_user" }, "expect": { "decision": "allow", "policies": [] } }
    ]})).unwrap()).unwrap();
    let out = praetor(&["policy", "test", pack.to_str().unwrap(), wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("0 passed, 1 failed"), "{}", text(&out));
    // Deploy to a running server.
    let s = start(dir.path().join("data").as_path());
    let out = praetor(&["policy", "deploy", pack.to_str().unwrap(), "--server", &s.base, "--key", &s.key]);
    assert!(out.status.success(), "{}", text(&out));
    let d = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "delete_user" })));
    assert_eq!(d["decision"], "block");
    let out = praetor(&["policy", "deploy", broken.to_str().unwrap(), "--server", &s.base, "--key", &s.key]);
    assert_eq!(out.status.code(), Some(1), "an invalid pack is not sent: {}", text(&out));
}

/// A minimal HTTP receiver: answers 200 to every POST and hands each body over.
fn http_receiver(listener: std::net::TcpListener) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    rx
}

#[test]
fn a_delivery_queued_while_the_receiver_is_down_arrives_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver's port, held from the start by a socket that is bound but not
    // listening: attempts to it are refused, as by a receiver that is down, and no other
    // test's server can take the port before the receiver comes up on it.
    let receiver = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    receiver.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = receiver.local_addr().unwrap().as_socket().unwrap().port();
    let args = ["--allow-private-targets", "--delivery-backoff-ms", "2000"];
    let mut s = start_with(dir.path(), &args);
    let hook = call("POST", &format!("{}/api/v1/enforce/webhooks", s.base), &s.key,
        Some(&json!({ "url": format!("http://127.0.0.1:{port}/hook"), "events": ["decision.*"] })));
    assert_eq!(hook["ok"], true, "{hook}");
    let d = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "while_down" })));
    // Killed once a refused attempt is recorded, with the next one 2 s away: not in the
    // middle of an attempt, whose claim would hold the delivery for a minute after the
    // restart (`delivery::CLAIM_MS`, the multi-node guard against two nodes sending it).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = call("GET", &format!("{}/api/v1/enforce/deliveries", s.base), &s.key, None);
        if listed["deliveries"].as_array().is_some_and(|l| l.iter().any(|d| d["attempts"].as_u64().is_some_and(|n| n > 0))) {
            break;
        }
        assert!(Instant::now() < deadline, "no refused attempt recorded: {listed}");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    receiver.listen(16).unwrap();
    let rx = http_receiver(receiver.into());
    let s = start_with(dir.path(), &args);
    let body = rx.recv_timeout(Duration::from_secs(20)).expect("the queued delivery arrives after the restart");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "decision.allow");
    assert_eq!(v["data"]["decision_id"], d["decision_id"]);
    drop(s);
}

/// With private targets refused, deliveries never go through a proxy the environment
/// names: the proxy, not `SafeResolver`, would resolve the target's name and could reach
/// the loopback or the metadata service. The delivery is attempted, straight to its
/// target (a documentation address, routed nowhere, so it fails), without the proxy
/// seeing a connection.
#[test]
fn deliveries_ignore_proxies_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let reached = http_receiver(proxy);
    let env = [("HTTP_PROXY", proxy_url.as_str()), ("http_proxy", proxy_url.as_str()), ("HTTPS_PROXY", proxy_url.as_str()), ("ALL_PROXY", proxy_url.as_str())];
    let s = start_with_env(dir.path(), &["--delivery-backoff-ms", "100"], &env);
    let hook = call("POST", &format!("{}/api/v1/enforce/webhooks", s.base), &s.key,
        Some(&json!({ "url": "http://203.0.113.10/hook", "events": ["decision.*"] })));
    assert_eq!(hook["ok"], true, "{hook}");
    call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "via_proxy" })));
    let deadline = Instant::now() + Duration::from_secs(20);
    let attempted = loop {
        let listed = call("GET", &format!("{}/api/v1/enforce/deliveries", s.base), &s.key, None);
        if let Some(d) = listed["deliveries"].as_array().and_then(|l| l.iter().find(|d| d["attempts"].as_u64().is_some_and(|n| n > 0))) {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "no delivery attempt recorded: {listed}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reached.try_recv().is_err(), "the proxy was used; the attempt: {attempted}");
    drop(s);
}

/// `praetor bench` works against a live server in every scenario (a smoke test: the
/// figures mean nothing here, only that the tool sets up, drives and reports).
#[test]
fn bench_runs_every_scenario_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    for (scenario, requests) in [("simple", 200u64), ("realistic", 300), ("session", 400)] {
        let out = praetor(&["bench", "--url", &s.base, "--key", &s.key, "--concurrency", "4", "--requests", &requests.to_string(),
            "--scenario", scenario, "--json"]);
        assert!(out.status.success(), "{scenario}: {}", text(&out));
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{scenario}: {e}: {}", text(&out)));
        assert_eq!(summary["scenario"], scenario);
        assert_eq!(summary["errors"], 0, "{summary}");
        assert_eq!(summary["requests"], requests, "{summary}");
        let counted: u64 = summary["decisions"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(counted, requests, "every request is one decision: {summary}");
        assert!(summary["decisions_per_second"].as_f64().unwrap() > 0.0);
        for q in ["p50", "p90", "p99", "p99_9"] {
            assert!(summary["latency_us"][q].as_u64().unwrap() > 0, "{q}: {summary}");
        }
        let count = |d: &str| summary["decisions"][d].as_u64().unwrap_or(0);
        match scenario {
            "simple" => assert_eq!(count("allow"), requests, "{summary}"),
            "realistic" => assert!(count("allow") > 0 && count("block") > 0, "the realistic mix allows and refuses: {summary}"),
            _ => {
                // 50 actions per session: each 51st action terminates it and a new one starts.
                assert!(count("terminate") >= 4, "{summary}");
                assert!(summary["sessions_started"].as_u64().unwrap() > 4, "{summary}");
            }
        }
    }
    // The bench removed its policies; its sessions are over.
    let policies = call("GET", &format!("{}/api/v1/enforce/policies", s.base), &s.key, None);
    assert!(!policies.to_string().contains("bench:"), "{policies}");
    let active = call("GET", &format!("{}/api/v1/enforce/sessions?status=active", s.base), &s.key, None);
    assert_eq!(active["sessions"].as_array().map(Vec::len), Some(0), "{active}");
}

/// `verify-receipt` takes the API's answer or the bare receipt, says what it proved, and
/// refuses the forgeries that used to print OK: a forged bare receipt with the genuine
/// one beside it under `receipt`, an answer whose claims differ from the entry, and a
/// repeated `entry` key.
#[test]
fn verify_receipt_proves_the_entry_and_refuses_what_it_does_not_prove() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    call("POST", &format!("{}/api/v1/enforce/policies", s.base), &s.key,
        Some(&json!({ "name": "No deletes", "policy_type": "action_type", "action_types": ["delete_*"], "decision": "block" })));
    let d = call("POST", &format!("{}/api/v1/enforce/intercept", s.base), &s.key, Some(&json!({ "action_type": "delete_row" })));
    let id = d["decision_id"].as_str().unwrap().to_owned();
    let answer = call("GET", &format!("{}/api/v1/enforce/decisions/{id}/receipt", s.base), &s.key, None);
    let keys = call("GET", &format!("{}/api/v1/enforce/vault/keys", s.base), &s.key, None);
    // A genuine proof of an entry that is no decision (the workspace's first, at the
    // size the decision's checkpoint signs).
    let size = answer["receipt"]["checkpoint"].as_str().unwrap().lines().nth(1).unwrap().to_owned();
    let bundle = call("GET", &format!("{}/api/v1/enforce/vault/export", s.base), &s.key, None);
    let proof = call("GET", &format!("{}/api/v1/enforce/vault/proof/inclusion?index=0&size={size}", s.base), &s.key, None);
    drop(s);
    let key = dir.path().join("vault.vkey");
    std::fs::write(&key, keys["keys"][0]["vkey"].as_str().unwrap()).unwrap();
    let verify = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        praetor(&["vault", "verify-receipt", path.to_str().unwrap(), "--key", key.to_str().unwrap()])
    };
    let bare = answer["receipt"].clone();
    let seq = bare["entry"]["seq"].as_u64().unwrap();
    assert_eq!(answer["decision"], "block");

    // Honest: the answer and the bare receipt; both say what was proven.
    let leaf_hash = bare["entry"]["leaf_hash"].as_str().unwrap();
    for (name, doc) in [("answer.json", &answer), ("bare.json", &bare)] {
        let out = verify(name, &serde_json::to_vec(doc).unwrap());
        let t = text(&out);
        assert!(out.status.success(), "{name}: {t}");
        assert!(t.contains(&format!("OK: entry {seq} (leaf hash {leaf_hash})")), "{name}: {t}");
        assert!(t.contains(&format!("decision `{id}`: block")), "{name}: {t}");
        assert!(t.contains("Not checked offline: the entry's chain hash"), "{name}: {t}");
    }

    // A proven entry that is no decision is no decision receipt.
    let mut not_a_decision = bare.clone();
    not_a_decision["entry"] = bundle["entries"][0].clone();
    not_a_decision["inclusion_proof"] = proof["proof"].clone();
    let out = verify("not_a_decision.json", &serde_json::to_vec(&not_a_decision).unwrap());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED at entry 0: the entry it proves is a `workspace.created` entry, not a decision"), "{}", text(&out));

    // A forged leaf (the decision changed, its leaf hash recomputed).
    let mut forged = bare.clone();
    let leaf = forged["entry"]["leaf"].as_str().unwrap().replacen("\"decision\":\"block\"", "\"decision\":\"allow\"", 1);
    assert_ne!(leaf, bare["entry"]["leaf"].as_str().unwrap());
    forged["entry"]["leaf_hash"] = json!(hex::encode(praetor_vault::leaf_hash(leaf.as_bytes())));
    forged["entry"]["leaf"] = json!(leaf);

    // 1. The forged bare receipt, with the genuine one beside it under `receipt`.
    let mut shadow = forged.clone();
    shadow["receipt"] = bare.clone();
    let out = verify("shadow.json", &serde_json::to_vec(&shadow).unwrap());
    assert!(!out.status.success() && text(&out).contains("both"), "{}", text(&out));
    // The genuine answer with a bare receipt's fields beside it, too.
    let mut both = answer.clone();
    both["entry"] = forged["entry"].clone();
    let out = verify("both.json", &serde_json::to_vec(&both).unwrap());
    assert!(!out.status.success() && text(&out).contains("both"), "{}", text(&out));

    // 2. The answer with its claims changed.
    for (field, value) in [("decision", json!("allow")), ("decision_id", json!("dec_someone_else")), ("vault_entry_id", json!(seq + 1))] {
        let mut changed = answer.clone();
        changed[field] = value;
        let out = verify("changed.json", &serde_json::to_vec(&changed).unwrap());
        assert_eq!(out.status.code(), Some(1), "{field}: {}", text(&out));
        assert!(text(&out).contains(&format!("`{field}` is")), "{field}: {}", text(&out));
    }
    // Claims without the receipt they would be checked against are refused.
    let mut claims_on_bare = bare.clone();
    claims_on_bare["decision"] = json!("allow");
    let out = verify("claims.json", &serde_json::to_vec(&claims_on_bare).unwrap());
    assert!(!out.status.success(), "{}", text(&out));

    // 3. A repeated key: the forged entry first, the genuine one last.
    let rest = serde_json::to_string(&bare).unwrap();
    let doc = format!("{{\"entry\":{},{}", serde_json::to_string(&forged["entry"]).unwrap(), &rest[1..]);
    let out = verify("dupkey.json", doc.as_bytes());
    assert!(!out.status.success() && text(&out).contains("duplicate field `entry`"), "{}", text(&out));
    // ... and in the answer's wrapper.
    let rest = serde_json::to_string(&answer).unwrap();
    let doc = format!("{{\"decision\":\"allow\",{}", &rest[1..]);
    let out = verify("dupkey2.json", doc.as_bytes());
    assert!(!out.status.success() && text(&out).contains("duplicate field `decision`"), "{}", text(&out));
}

/// OK says what an offline check could not cover: the HMACs (they need the secret), and
/// for an export that does not start at entry 0 the link before its first entry. A
/// garbled `hmac` is refused although its value cannot be checked.
#[test]
fn vault_verify_says_what_it_did_not_check() {
    let dir = tempfile::tempdir().unwrap();
    let key = populated(dir.path(), 10);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let key = key.to_str().unwrap().to_owned();
    let out = praetor(&["vault", "verify", &path("bundle.json"), "--key", &key]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Not checked offline: the entries' HMACs"), "{}", text(&out));
    assert!(!text(&out).contains("chain link before"), "{}", text(&out));
    let second: Value = serde_json::from_slice(&std::fs::read(path("part2.json")).unwrap()).unwrap();
    let start = second["start"].as_u64().unwrap();
    assert!(start > 0);
    let out = praetor(&["vault", "verify", &path("part2.json"), "--key", &key]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("the chain link before entry {start}")), "{}", text(&out));
    // Checked as the continuation of the first part, that link is checked.
    let out = praetor(&["vault", "verify", &path("part1.json"), &path("part2.json"), "--key", &key]);
    assert!(out.status.success() && !text(&out).contains("chain link before"), "{}", text(&out));

    let mut bundle: Value = serde_json::from_slice(&std::fs::read(path("bundle.json")).unwrap()).unwrap();
    bundle["entries"][4]["hmac"] = json!("zz-not-hex");
    let seq = bundle["entries"][4]["seq"].as_u64().unwrap();
    std::fs::write(path("garbled.json"), serde_json::to_vec(&bundle).unwrap()).unwrap();
    let out = praetor(&["vault", "verify", &path("garbled.json"), "--key", &key]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&format!("at entry {seq}: `hmac`")), "{}", text(&out));
}

/// A one-entry log signed by `signer`, as a bundle file in `dir`.
fn signed_bundle(dir: &Path, file: &str, signer: &praetor_vault::NoteSigner) -> PathBuf {
    use praetor_vault::verify::{Entry, build_bundle};
    let origin = "praetor/ws_keys";
    let mut log = praetor_vault::LogState::new();
    let (leaf, appended) = log.append_value(&json!({ "seq": 0, "kind": "workspace.created" }), b"secret").unwrap();
    let stored: Vec<praetor_vault::Hash> = appended.new_stored_hashes.iter().map(|x| x.1).collect();
    let note = praetor_vault::Checkpoint::new(origin, 1, log.root()).sign([signer]).unwrap();
    let entry = Entry::from_appended(String::from_utf8(leaf).unwrap(), &appended, false);
    let bundle = build_bundle(origin, vec![], 0, vec![entry], vec![note], &stored).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    path
}

/// A PEM key has no name: it is trusted under the name the server gives a key of its
/// algorithm, and only that one (a P-256 key's ID does not depend on the name, so under
/// the Ed25519 name it matched lines of that name too). OK names each signing key with
/// its key ID, so a key of the same name is told apart.
#[test]
fn pem_keys_are_named_after_their_algorithm_and_signers_are_named_with_their_key_id() {
    use praetor_vault::{KeyAlgorithm, NoteSigner};
    let dir = tempfile::tempdir().unwrap();
    let verify = |bundle: &Path, key: &str| {
        let key_path = dir.path().join("key");
        std::fs::write(&key_path, key).unwrap();
        praetor(&["vault", "verify", bundle.to_str().unwrap(), "--key", key_path.to_str().unwrap()])
    };
    for (alg, name, other) in [
        (KeyAlgorithm::EcdsaP256, "praetor-vault-p256", "praetor-vault-ed25519"),
        (KeyAlgorithm::Ed25519, "praetor-vault-ed25519", "praetor-vault-p256"),
    ] {
        let seed = [7u8; 32];
        let signer = NoteSigner::from_seed(name, alg, &seed).unwrap();
        let pem = signer.public_key_pem().unwrap();
        let good = signed_bundle(dir.path(), "good.json", &signer);
        for key in [pem.clone(), signer.vkey()] {
            let out = verify(&good, &key);
            assert!(out.status.success(), "{}", text(&out));
            let signed_by = format!("signed by {name} (key ID {:08x});", signer.key_id());
            assert!(text(&out).contains(&signed_by), "expected `{signed_by}` in\n{}", text(&out));
        }
        // The same key signing under the other algorithm's name is not trusted by its PEM.
        let renamed = NoteSigner::from_seed(other, alg, &seed).unwrap();
        let out = verify(&signed_bundle(dir.path(), "renamed.json", &renamed), &pem);
        assert_eq!(out.status.code(), Some(1), "{alg}: {}", text(&out));
        assert!(text(&out).contains("no verified signature from a trusted key"), "{}", text(&out));
    }
    // Another key of the same name: trusted if given, and named by its own key ID.
    let genuine = NoteSigner::from_seed("praetor-vault-p256", KeyAlgorithm::EcdsaP256, &[1u8; 32]).unwrap();
    let attacker = NoteSigner::from_seed("praetor-vault-p256", KeyAlgorithm::EcdsaP256, &[2u8; 32]).unwrap();
    assert_ne!(genuine.key_id(), attacker.key_id());
    let forged = signed_bundle(dir.path(), "forged.json", &attacker);
    let out = verify(&forged, &attacker.public_key_pem().unwrap());
    assert!(text(&out).contains(&format!("praetor-vault-p256 (key ID {:08x})", attacker.key_id())), "{}", text(&out));
    assert_eq!(verify(&forged, &genuine.vkey()).status.code(), Some(1));
}

/// The first start keeps its admin key before it commits the workspace: a file left by
/// another database this data directory served is moved aside and replaced by a
/// working key, mode 0600, rather than refused, and a later start leaves the key alone.
#[test]
fn a_first_start_replaces_an_admin_key_left_by_one_that_did_not_finish() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.key"), "pk_left_by_a_start_that_died\n").unwrap();
    let s = start(dir.path());
    assert_ne!(s.key, "pk_left_by_a_start_that_died");
    let aside: Vec<String> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("admin.key.") && n.ends_with(".orphan")).collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join(&aside[0])).unwrap(), "pk_left_by_a_start_that_died\n");
    let mode = std::fs::metadata(dir.path().join("admin.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let agents = call("GET", &format!("{}/api/v1/enforce/agents", s.base), &s.key, None);
    assert_eq!(agents["ok"], json!(true), "the key in admin.key is the workspace's: {agents}");
    drop(s);
    let again = start(dir.path());
    assert_eq!(std::fs::read_to_string(dir.path().join("admin.key")).unwrap().trim(), again.key);
}

/// A first start stages its admin key (`admin.key.<random>.new`) before its commit and
/// names it `admin.key` after. One that died in between leaves a stored key under the
/// staged name: the next start names it `admin.key`. A staged key this store does not
/// hold (never stored, or another database's that this directory served) is moved
/// aside, never deleted; one younger than a minute is left alone, as another node's
/// first start may be under way in a shared data directory.
#[test]
fn a_stored_admin_key_a_first_start_did_not_name_is_named_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let key = s.key.clone();
    drop(s);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let stage = |name: &str, secret: &str, old: bool| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        if old {
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(an_hour_ago).unwrap();
        }
        path
    };
    std::fs::rename(dir.path().join("admin.key"), dir.path().join("held")).unwrap();
    let stored = stage("admin.key.1a2b3c4d5e6f7a8b.new", &key, true);
    let never_stored = stage("admin.key.0000000000000000.new", "xb_live_never_stored", true);
    let under_way = stage("admin.key.1111111111111111.new", "xb_live_under_way", false);
    let s = start(dir.path());
    assert_eq!(s.key, key, "admin.key holds the stored key again");
    assert!(!stored.exists() && !never_stored.exists(), "the stored one was named, the other moved aside");
    assert!(under_way.exists(), "a staged key younger than a minute is left alone");
    let aside: Vec<String> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".orphan")).collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join(&aside[0])).unwrap(), "xb_live_never_stored\n");
    let agents = call("GET", &format!("{}/api/v1/enforce/agents", s.base), &s.key, None);
    assert_eq!(agents["ok"], json!(true), "{agents}");
}

/// A port already taken fails the start, naming the address once; a first start has
/// made its workspace by then, and shows its admin key before it fails (it was made and
/// never shown).
#[test]
fn a_taken_port_fails_the_start_after_the_admin_key_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["serve", "--listen", &addr, "--data-dir", dir.path().to_str().unwrap()]).env("PRAETOR_LOG", "error").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(text(&out).matches("Address already in use").count(), 1, "{}", text(&out));
    assert!(text(&out).contains(&format!("cannot listen on `{addr}`")), "{}", text(&out));
    let key = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Admin API key (shown once"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(key.trim()), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "{}", text(&out));
}
