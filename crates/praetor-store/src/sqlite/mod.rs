//! The SQLite backend: one writer thread that groups transactions into one commit
//! (and sequences the vault), and a small pool of read connections (WAL mode).

mod rows;
mod schema;
mod vault;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, params};

use crate::model::*;
use crate::{LogHead, Result, Sealed, Snapshot, Store, StoreError, Txn};

pub use vault::VaultCheck;

/// Re-verify every workspace's log in the database at `path` (read-only): leaves,
/// chain, HMACs, stored tree hashes and checkpoint roots. `progress(done, total)`.
pub fn check_vault_file(path: &Path, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Vec<VaultCheck>> {
    if !path.exists() {
        return Err(StoreError::Database(format!("no database at `{}`", path.display())));
    }
    let conn = open_connection(path, true)?;
    let mut stmt = conn.prepare("SELECT workspace_id FROM workspaces ORDER BY created_at")?;
    let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut reports = Vec::new();
    for ws in ids {
        reports.push(vault::check_vault(&conn, &ws, &mut |done, total| progress(&ws, done, total))?);
    }
    Ok(reports)
}

const READERS: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    writer: writer::WriterHandle,
    readers: Arc<ReaderPool>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.idle.lock().pop() {
            Some(c) => c,
            None => open_connection(&self.path, true)?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock();
        if idle.len() < READERS {
            idle.push(conn);
        }
        out
    }
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
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for (version, sql) in schema::MIGRATIONS {
        let done: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if done {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
            [version],
        )?;
        tx.commit()?;
        tracing::info!(version, "applied sqlite migration");
    }
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database file and run pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_connection(&path, false)?;
        migrate(&mut conn)?;
        let writer = writer::spawn(conn)?;
        Ok(SqliteStore {
            readers: Arc::new(ReaderPool { path: path.clone(), idle: Mutex::new(Vec::new()) }),
            path,
            writer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| StoreError::Database(format!("reader task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, txn: Txn) -> Result<Vec<Sealed>> {
        self.writer.commit(txn).await
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        self.read(rows::load_snapshot).await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let hash = key_hash.to_owned();
        self.read(move |c| rows::api_key_by_hash(c, &hash)).await
    }

    async fn list_api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKey>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| rows::list_api_keys(c, &ws)).await
    }

    async fn list_objects(&self, workspace_id: &str, filter: &ObjectFilter) -> Result<Vec<ObjectRecord>> {
        let ws = workspace_id.to_owned();
        let filter = filter.clone();
        self.read(move |c| rows::list_objects(c, &ws, &filter)).await
    }

    async fn get_object(&self, workspace_id: &str, kind: &str, object_id: &str) -> Result<Option<ObjectRecord>> {
        let (ws, kind, id) = (workspace_id.to_owned(), kind.to_owned(), object_id.to_owned());
        self.read(move |c| rows::get_object(c, &ws, &kind, &id)).await
    }

    async fn list_sessions(&self, workspace_id: &str, filter: &SessionFilter) -> Result<Vec<Session>> {
        let ws = workspace_id.to_owned();
        let filter = filter.clone();
        self.read(move |c| rows::list_sessions(c, &ws, &filter)).await
    }

    async fn get_session(&self, workspace_id: &str, session_id: &str) -> Result<Option<Session>> {
        let ws = workspace_id.to_owned();
        let id = session_id.to_owned();
        self.read(move |c| rows::get_session(c, &ws, &id)).await
    }

    async fn shadow_report(&self, workspace_id: &str, policy_id: Option<&str>, since: Millis) -> Result<Vec<ShadowSummary>> {
        let ws = workspace_id.to_owned();
        let pid = policy_id.map(str::to_owned);
        self.read(move |c| rows::shadow_report(c, &ws, pid.as_deref(), since)).await
    }

    async fn list_violations(&self, workspace_id: &str, filter: &ViolationFilter) -> Result<Vec<Violation>> {
        let ws = workspace_id.to_owned();
        let filter = filter.clone();
        self.read(move |c| rows::list_violations(c, &ws, &filter)).await
    }

    async fn get_violation(&self, workspace_id: &str, violation_id: &str) -> Result<Option<Violation>> {
        let (ws, id) = (workspace_id.to_owned(), violation_id.to_owned());
        self.read(move |c| rows::get_violation(c, &ws, &id)).await
    }

    async fn due_deliveries(&self, now: Millis, limit: u32) -> Result<Vec<Delivery>> {
        self.read(move |c| rows::due_deliveries(c, now, limit)).await
    }

    async fn list_deliveries(&self, workspace_id: &str, webhook_id: Option<&str>, limit: u32) -> Result<Vec<Delivery>> {
        let ws = workspace_id.to_owned();
        let wh = webhook_id.map(str::to_owned);
        self.read(move |c| rows::list_deliveries(c, &ws, wh.as_deref(), limit)).await
    }

    async fn list_decisions(&self, workspace_id: &str, filter: &DecisionFilter) -> Result<(Vec<DecisionRow>, u64)> {
        let ws = workspace_id.to_owned();
        let filter = filter.clone();
        self.read(move |c| rows::list_decisions(c, &ws, &filter)).await
    }

    async fn get_decision(&self, workspace_id: &str, decision_id: &str) -> Result<Option<DecisionRow>> {
        let ws = workspace_id.to_owned();
        let id = decision_id.to_owned();
        self.read(move |c| rows::get_decision(c, &ws, &id)).await
    }

    async fn log_head(&self, workspace_id: &str) -> Result<LogHead> {
        if let Some(head) = self.writer.head(workspace_id) {
            return Ok(head);
        }
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::read_head(c, &ws)).await
    }

    async fn vault_entries(&self, workspace_id: &str, start: u64, end: u64) -> Result<Vec<VaultEntryRow>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::entries(c, &ws, start, end)).await
    }

    async fn inclusion_proof(&self, workspace_id: &str, index: u64, size: u64) -> Result<Vec<[u8; 32]>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::inclusion_proof(c, &ws, index, size)).await
    }

    async fn consistency_proof(&self, workspace_id: &str, first: u64, second: u64) -> Result<Vec<[u8; 32]>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::consistency_proof(c, &ws, first, second)).await
    }

    async fn prefix_hashes(&self, workspace_id: &str, size: u64) -> Result<Vec<[u8; 32]>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::prefix_hashes(c, &ws, size)).await
    }

    async fn tree_root(&self, workspace_id: &str, size: u64) -> Result<[u8; 32]> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::tree_root(c, &ws, size)).await
    }

    async fn put_checkpoint(&self, workspace_id: &str, cp: CheckpointRow) -> Result<()> {
        self.writer.put_checkpoint(workspace_id.to_owned(), cp).await
    }

    async fn latest_checkpoint(&self, workspace_id: &str) -> Result<Option<CheckpointRow>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::checkpoint_where(c, &ws, "ORDER BY size DESC LIMIT 1", 0)).await
    }

    async fn checkpoint_covering(&self, workspace_id: &str, at_least: u64) -> Result<Option<CheckpointRow>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::checkpoint_where(c, &ws, "AND size >= ?2 ORDER BY size ASC LIMIT 1", at_least))
            .await
    }

    async fn checkpoints_between(&self, workspace_id: &str, from_size: u64, to_size: u64) -> Result<Vec<CheckpointRow>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT size, root, note, created_at FROM vault_checkpoints
                 WHERE workspace_id = ?1 AND size >= ?2 AND size <= ?3 ORDER BY size",
            )?;
            let rows = stmt.query_map(params![ws, from_size as i64, to_size as i64], vault::checkpoint_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?.into_iter().collect()
        })
        .await
    }

    fn commit_stats(&self) -> crate::CommitStats {
        self.writer.stats()
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}
