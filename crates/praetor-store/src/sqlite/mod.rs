//! The SQLite backend: one file in WAL mode, one writer thread that groups transactions
//! into one commit (and sequences the vault), and a small pool of read connections.

mod schema;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::sql::{Arg, Cell, Db, Row, ToArg};
use crate::sql_store::{Backend, SqlStore};
use crate::writer::WriterConn;
use crate::{Result, StoreError, vault_rows};

pub use crate::vault_rows::VaultCheck;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            // A row another request (or process) wrote first: that request's, not the
            // store's failure (health does not count it).
            rusqlite::Error::SqliteFailure(f, message)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                StoreError::Conflict(message.clone().unwrap_or_else(|| "a unique key".to_owned()))
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// The store on one SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

pub struct Sqlite {
    path: PathBuf,
    /// Dropped with the store, which stops the checkpoint thread.
    _checkpoints: mpsc::Sender<()>,
}

impl Sqlite {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Backend for Sqlite {
    type Reader = Connection;
    const KIND: &'static str = "sqlite";

    fn reader(&self) -> Result<Connection> {
        open_connection(&self.path, true)
    }
}

impl SqlStore<Sqlite> {
    /// Open (creating if needed) the database file and run pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        owner_only(&path)?;
        let conn = open_connection(&path, false)?;
        let guard = crate::sql_store::migrate(&conn, schema::MIGRATIONS, "sqlite", None)?;
        // The checkpoint thread does this work; the writer's own checkpoint is only a
        // backstop, see `spawn_checkpoints`.
        // A larger page cache than the default 2 MB for the writer: the pages every
        // commit goes back to (index right edges, agents, the log's tail) stay in it.
        // temp_store=MEMORY: savepoints (see the writer) keep their sub-journal in memory
        // instead of spilling it to a temporary file. journal_size_limit: the WAL file
        // is cut back to about the backstop's size once it starts over.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}; PRAGMA cache_size=-16384; PRAGMA temp_store=MEMORY;
             PRAGMA journal_size_limit={};",
            (WRITER_CHECKPOINT_PAGES as u64 + 1000) * 4096
        ))?;
        let checkpoints = spawn_checkpoints(open_connection(&path, false)?)?;
        let writer = crate::writer::spawn(conn, guard.clone())?;
        SqlStore::new(Sqlite { path, _checkpoints: checkpoints }, writer, guard)
    }
}

/// The database holds webhook signing secrets, the vault's HMAC secrets and every
/// decision: readable by its owner only. A new file is created so (SQLite gives its WAL
/// and shared-memory files the database file's mode); an existing one that others may
/// read is narrowed, with its WAL and shared-memory files.
#[cfg(unix)]
fn owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let cannot = |e: std::io::Error| StoreError::Database(format!("cannot make `{}` readable by its owner only: {e}", path.display()));
    if !path.exists() {
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => return Ok(()),
            // Another process created it at the same moment: checked below like any.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cannot(e)),
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::metadata(&file) else { continue };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(cannot)?;
            tracing::warn!(file = %file.display(), "the database file was readable by others; now by its owner only");
        }
    }
    Ok(())
}

/// File modes are Unix's; elsewhere the directory's permissions must protect the file.
#[cfg(not(unix))]
fn owner_only(_path: &Path) -> Result<()> {
    Ok(())
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// The WAL size (in pages) at which the writer checkpoints itself.
const WRITER_CHECKPOINT_PAGES: u32 = 8000;

/// Copy the WAL back into the database file on a thread and connection of its own,
/// so that commits do not wait for it: with SQLite's default, the writer does it
/// itself after the commit that crosses 1,000 pages, and the decisions of the next
/// batch wait behind the copy and its fsync (the commit latency's long tail).
///
/// A passive checkpoint never blocks the writer, but the WAL only starts over when a
/// checkpoint has copied everything before the writer's next commit; under constant
/// writes that may never happen. So the writer keeps its own automatic checkpoint as
/// a backstop at `WRITER_CHECKPOINT_PAGES`: by then this thread has usually copied
/// nearly all of the WAL, the writer's checkpoint copies the rest, and the WAL starts
/// over. (As with SQLite's default, a reader holding an old snapshot, or this thread
/// holding the checkpoint lock at that moment, puts the restart off to a later commit.)
fn spawn_checkpoints(conn: Connection) -> Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("praetor-store-checkpoints".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own checkpoint still bounds the WAL");
                }
            }
        })
        .map_err(|e| StoreError::Database(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(stop)
}

/// For the conformance tests: migrate the file at `path` as a newer version would, with
/// one more migration than this build has. Not for anything else.
#[doc(hidden)]
pub fn migrate_as_newer_version(path: &Path, version: i64, sql: &str) -> Result<()> {
    let conn = open_connection(path, false)?;
    let mut migrations = schema::MIGRATIONS.to_vec();
    migrations.push((version, sql));
    crate::sql_store::migrate(&conn, &migrations, "sqlite", None).map(drop)
}

/// The writer's connection on a fresh file, migrated (for the writer's own tests).
#[cfg(test)]
pub(crate) fn open_migrated(path: &Path) -> Result<(Connection, std::sync::Arc<crate::sql_store::SchemaGuard>)> {
    let conn = open_connection(path, false)?;
    let guard = crate::sql_store::migrate(&conn, schema::MIGRATIONS, "sqlite", None)?;
    Ok((conn, guard))
}

/// Re-verify every workspace's log in the database at `path` (read-only): leaves,
/// chain, HMACs, stored tree hashes, checkpoint roots and notes (their signatures with
/// `verifiers`, when given). `progress(done, total)`.
pub fn check_vault_file(path: &Path, verifiers: &[praetor_vault::NoteVerifier], progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Vec<VaultCheck>> {
    if !path.exists() {
        return Err(StoreError::Database(format!("no database at `{}`", path.display())));
    }
    let conn = open_connection(path, true)?;
    // One read transaction: every table is read as of one commit, as on PostgreSQL, so a
    // server writing meanwhile cannot make the log, its tree hashes and its rows
    // disagree. (It holds the WAL's restart back while it runs; the checkpoints still
    // copy what came before it.) No savepoint per workspace, as PostgreSQL needs: a
    // statement that fails (a column an older version lacks) does not end a SQLite
    // transaction, and one whose error does (out of memory, I/O) stops the check.
    conn.execute_batch("BEGIN")?;
    let out = vault_rows::check_every_vault(&conn, false, verifiers, progress);
    let _ = conn.execute_batch("COMMIT");
    out
}

pub(crate) fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers never block the writer. synchronous=FULL: a commit is fsynced
    // before it returns, which is what "durable before the answer" rests on.
    set_wal(&conn)?;
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    // Without the query planner stability guarantee, a statement whose plan looked at a
    // bound value (every `LIMIT ?`: the change feed, the delivery queue, history and
    // list reads) is marked expired whenever that parameter is bound again, and so is
    // compiled anew at each run. Our plans never depend on a bound value (the store
    // never runs ANALYZE, so there are no per-value statistics to use either).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// Put the file in WAL mode. Switching a new file needs it alone, and SQLite may answer
/// `SQLITE_BUSY` at once rather than wait for that: processes opening a new file
/// together try again, within the same 5 s as the busy timeout (a lock held longer is
/// an error, as before).
fn set_wal(conn: &Connection) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match conn.execute_batch("PRAGMA journal_mode=WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return Ok(done?),
        }
    }
}

impl WriterConn for Connection {
    fn begin(&self) -> Result<()> {
        // IMMEDIATE takes the file's write lock now, so no other process (e.g. `praetor
        // keys create`) commits between this batch's reads and its writes.
        Ok(self.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn lock_log(&self, _ws: &str) -> Result<()> {
        Ok(()) // the file's write lock, taken by `begin`, already holds every log
    }
}

struct SqliteArg<'a>(Arg<'a>);

impl rusqlite::ToSql for SqliteArg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Arg::Null => ValueRef::Null,
            Arg::Int(i) => ValueRef::Integer(i),
            Arg::Text(s) => ValueRef::Text(s.as_bytes()),
            Arg::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

fn bind<'a>(args: &'a [&'a dyn ToArg]) -> Vec<SqliteArg<'a>> {
    args.iter().map(|a| SqliteArg(a.arg())).collect()
}

impl Row for rusqlite::Row<'_> {
    fn cell(&self, index: usize) -> Result<Cell> {
        Ok(match self.get_ref(index)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(f) => return Err(StoreError::Corrupt(format!("column {index} holds a float ({f})"))),
            ValueRef::Text(t) => Cell::Text(String::from_utf8(t.to_vec()).map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))?),
            ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
        })
    }
}

impl Db for Connection {
    fn execute(&self, sql: &str, args: &[&dyn ToArg]) -> Result<u64> {
        let mut stmt = self.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(bind(args)))? as u64)
    }

    fn query(&self, sql: &str, args: &[&dyn ToArg], each: &mut dyn FnMut(&dyn Row) -> Result<()>) -> Result<()> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(bind(args)))?;
        while let Some(row) = rows.next()? {
            each(row)?;
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.execute_batch(sql)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::writer::tests::{create_workspace, decision_in};

    /// Pages the database holds (committed, WAL included) and pages its main file holds.
    fn pages(path: &Path) -> (u64, u64) {
        let conn = open_connection(path, true).unwrap();
        let logical: u64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (logical, std::fs::metadata(path).unwrap().len() / page_size)
    }

    type EntryRow = (i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i64);

    fn stored_entries(path: &Path) -> Vec<EntryRow> {
        let conn = open_connection(path, true).unwrap();
        let mut stmt = conn.prepare("SELECT seq, leaf, leaf_hash, chain_hash, hmac, created_at FROM vault_entries ORDER BY seq").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn vault_table_sql(path: &Path) -> String {
        let conn = open_connection(path, true).unwrap();
        conn.query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'vault_entries'", [], |r| r.get(0)).unwrap()
    }

    /// A cached statement with `LIMIT ?` (the change feed's, the delivery queue's, the
    /// history reads') runs again without being compiled again, and the plans that use
    /// a partial index still use it.
    #[tokio::test]
    async fn statements_bound_again_are_not_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("praetor.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = open_connection(&path, true).unwrap();
        let feed = "SELECT seq, node_id, key, at FROM changes WHERE workspace_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
        for limit in [10, 20, 10, 500] {
            Db::query(&conn, feed, crate::sql::args!["ws", 0i64, limit], &mut |_| Ok(())).unwrap();
        }
        let recompiled = conn.prepare_cached(feed).unwrap().get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(recompiled, 0, "the change feed's statement was compiled again {recompiled} times");

        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT action_type, created_at FROM decisions
                 WHERE workspace_id = ?1 AND session_id = ?2 AND decision = 'allow' AND created_at >= ?3
                 ORDER BY created_at DESC LIMIT ?4",
            )
            .unwrap()
            .query_map(rusqlite::params!["ws", "ses", 0, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(plan.iter().any(|step| step.contains("decisions_by_session")), "{plan:?}");
    }

    /// Processes opening one new database file at once (nodes sharing a data directory
    /// on one host) migrate it one after the other: every open succeeds, and every
    /// migration is applied once. (Each checked "not applied" before its transaction,
    /// and the later ones failed: "table workspaces already exists".)
    #[test]
    fn stores_opening_one_new_file_at_once_all_open() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("praetor.db");
            let barrier = std::sync::Barrier::new(4);
            let opened: Vec<std::result::Result<(), String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            SqliteStore::open(&path).map(drop).map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(opened.iter().all(std::result::Result::is_ok), "{opened:?}");
            let conn = rusqlite::Connection::open(&path).unwrap();
            let applied: i64 = conn.query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
            assert_eq!(applied, schema::MIGRATIONS.len() as i64);
        }
    }

    /// A file another process holds locked fails the open after the busy timeout, as
    /// before the WAL switch was retried (each retry could wait the timeout again:
    /// about 40 minutes in all).
    #[test]
    fn a_file_locked_by_another_process_fails_the_open_instead_of_waiting_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("praetor.db");
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("CREATE TABLE held (x); BEGIN EXCLUSIVE; INSERT INTO held VALUES (1);").unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let opener = path.clone();
        std::thread::spawn(move || done.send(SqliteStore::open(&opener).map(drop).map_err(|e| e.to_string())));
        // Far above the 5 s busy timeout; the old loop would have waited 40 minutes.
        let opened = finished.recv_timeout(Duration::from_secs(60)).expect("the open returns while the lock is held");
        assert!(opened.as_ref().is_err_and(|e| e.contains("locked")), "{opened:?}");
        drop(holder);
    }

    /// `vault check` reads the store as of one commit, and the server goes on committing
    /// while it runs: decisions sealed during the check are neither counted nor in the
    /// way, and the next check covers them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vault_check_reads_one_state_while_the_server_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("praetor.db");
        let store = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        for ws in ["ws_s", "ws_t"] {
            store.commit(create_workspace(ws)).await.unwrap();
            for i in 0..30 {
                store.commit(decision_in(ws, &format!("dec_{ws}_{i}"), i, Some("x".repeat(300)))).await.unwrap();
            }
        }
        let runtime = tokio::runtime::Handle::current();
        let (writer_store, check_path) = (store.clone(), path.clone());
        let (checks, committed_during) = tokio::task::spawn_blocking(move || {
            let mut committed = 0;
            let checks = check_vault_file(&check_path, &[], &mut |ws, done, total| {
                // While the first workspace is checked, after its log's walk and again
                // after its decision rows' pass: to both workspaces.
                if ws == "ws_s" && done == total && committed < 20 {
                    for _ in 0..10 {
                        for ws in ["ws_s", "ws_t"] {
                            let txn = decision_in(ws, &format!("dec_{ws}_{}", 30 + committed), 30 + committed, None);
                            runtime.block_on(writer_store.commit(txn)).expect("the server commits while a check runs");
                        }
                        committed += 1;
                    }
                }
            })
            .unwrap();
            (checks, committed)
        })
        .await
        .unwrap();
        assert_eq!(committed_during, 20);
        for c in &checks {
            assert_eq!((c.entries, c.decisions, c.first_bad.clone(), c.bad_row.clone()), (30, 30, None, None), "{c:?}");
        }
        for c in check_vault_file(&path, &[], &mut |_, _, _| {}).unwrap() {
            assert_eq!((c.entries, c.decisions, c.first_bad.clone()), (50, 50, None), "{c:?}");
        }
    }

    #[tokio::test]
    async fn migration_9_moves_every_vault_entry_into_a_rowid_table_and_keeps_it_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("praetor.db");
        // A database as migration 8 left it, with a sealed log.
        {
            let conn = open_connection(&path, false).unwrap();
            let guard = crate::sql_store::migrate(&conn, &schema::MIGRATIONS[..8], "sqlite", None).unwrap();
            let writer = crate::writer::spawn(conn, guard).unwrap();
            writer.commit(create_workspace("ws_m")).await.unwrap();
            for i in 0..40 {
                writer.commit(decision_in("ws_m", &format!("dec_{i}"), i, Some("x".repeat(900)))).await.unwrap();
            }
        }
        assert!(vault_table_sql(&path).contains("WITHOUT ROWID"));
        let before = stored_entries(&path);
        assert_eq!(before.len(), 40);

        let store = SqliteStore::open(&path).unwrap();
        assert!(!vault_table_sql(&path).contains("WITHOUT ROWID"), "{}", vault_table_sql(&path));
        assert_eq!(stored_entries(&path), before, "every entry, byte for byte");

        // Still append-only.
        let conn = open_connection(&path, false).unwrap();
        for statement in ["UPDATE vault_entries SET created_at = 0", "DELETE FROM vault_entries WHERE seq = 3"] {
            let err = conn.execute_batch(statement).unwrap_err().to_string();
            assert!(err.contains("append-only"), "{statement}: {err}");
        }
        drop(conn);

        // The log goes on from where it was, and verifies as a whole.
        for i in 40..45 {
            store.commit(decision_in("ws_m", &format!("dec_{i}"), i, None)).await.unwrap();
        }
        drop(store);
        let checks = check_vault_file(&path, &[], &mut |_, _, _| {}).unwrap();
        assert_eq!((checks[0].entries, checks[0].first_bad.clone()), (45, None));
    }

    #[tokio::test]
    async fn migration_11_tells_rotated_credentials_from_revoked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("praetor.db");
        // A database as migration 10 left it: one credential rotated at 200 (its
        // successor made at 200), one revoked at 300, one active.
        {
            let conn = open_connection(&path, false).unwrap();
            drop(crate::sql_store::migrate(&conn, &schema::MIGRATIONS[..10], "sqlite", None).unwrap());
            conn.execute_batch(
                "INSERT INTO workspaces (workspace_id, name, settings, hmac_secret, created_at) VALUES ('ws', 'w', '{}', x'00', 1);
                 INSERT INTO agents (workspace_id, agent_id, name, framework, capabilities, scopes, require_signature, trust_score,
                     clean_streak, is_active, attributes, created_at, updated_at, etag)
                     VALUES ('ws', 'agt', 'a', 'f', '[]', '[]', 0, 50, 0, 1, '{}', 1, 1, 'e');
                 INSERT INTO credentials (credential_id, workspace_id, agent_id, algorithm, public_key, did, created_at, revoked_at) VALUES
                     ('old', 'ws', 'agt', 'ed25519', 'k1', 'd', 100, 200),
                     ('new', 'ws', 'agt', 'ed25519', 'k2', 'd', 200, 300),
                     ('now', 'ws', 'agt', 'ed25519', 'k3', 'd', 250, NULL);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let creds = store.agent_state("ws", "agt", i64::MAX, 0).await.unwrap().unwrap().credentials;
        let flags: Vec<(&str, Option<i64>, bool)> = creds.iter().map(|c| (c.credential_id.as_str(), c.revoked_at, c.rotated)).collect();
        assert_eq!(flags, [("old", Some(200), true), ("new", Some(300), false), ("now", None, false)]);
    }

    #[tokio::test]
    async fn the_checkpoint_thread_copies_the_wal_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("praetor.db");
        let store = SqliteStore::open(&path).unwrap();
        store.commit(create_workspace("ws_c")).await.unwrap();
        for i in 0..300 {
            store.commit(decision_in("ws_c", &format!("dec_{i}"), i, Some("c".repeat(500)))).await.unwrap();
        }
        // Far below the writer's own checkpoint threshold: only the checkpoint thread
        // can have copied these pages into the main file.
        let (logical, _) = pages(&path);
        assert!(logical > 60 && logical < u64::from(WRITER_CHECKPOINT_PAGES), "{logical} pages");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (logical, in_file) = pages(&path);
            if in_file >= logical {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the main file still has {in_file} of {logical} pages");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The database holds secrets: a new one is its owner's alone, WAL included, and an
    /// existing one that others could read is narrowed when opened.
    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("praetor.db");
        let mode = |suffix: &str| std::fs::metadata(format!("{}{suffix}", path.display())).unwrap().permissions().mode() & 0o777;
        let store = SqliteStore::open(&path).unwrap();
        store.commit(create_workspace("ws_p")).await.unwrap();
        assert_eq!((mode(""), mode("-wal")), (0o600, 0o600));
        drop(store);
        for suffix in ["", "-wal"] {
            std::fs::set_permissions(format!("{}{suffix}", path.display()), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let _store = SqliteStore::open(&path).unwrap();
        assert_eq!((mode(""), mode("-wal")), (0o600, 0o600));
    }
}
