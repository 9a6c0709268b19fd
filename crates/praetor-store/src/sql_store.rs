//! [`SqlStore`]: the [`Store`] both backends share. A backend supplies connections;
//! the writer thread, the reader pool and every query are the same code.

use std::sync::{Arc, OnceLock};
use std::sync::mpsc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::model::*;
use crate::sql::Db;
use crate::writer::WriterHandle;
use crate::{LogHead, Result, Sealed, Snapshot, Store, StoreError, Txn, rows, vault_rows as vault};

/// Reader threads, each with its own connection.
const READERS: usize = 4;

/// A read to run on a reader thread, given its connection (or why there is none) and
/// whether this is its last try. It answers through its own channel and says whether
/// the connection is still good, or, when the connection was found broken before the
/// last try, does not answer and asks to run again on a new one.
type ReadJob = Box<dyn FnMut(Result<&dyn Db>, bool) -> ReadOutcome + Send>;

enum ReadOutcome {
    Answered { connection_good: bool },
    RunAgain,
}

/// What a backend provides to [`SqlStore`].
pub trait Backend: Send + Sync + 'static {
    type Reader: Db + Send + 'static;
    /// Short label for `/v1/status`.
    const KIND: &'static str;
    /// A new read connection.
    fn reader(&self) -> Result<Self::Reader>;
}

pub struct SqlStore<B: Backend> {
    backend: Arc<B>,
    writer: WriterHandle,
    reads: mpsc::Sender<ReadJob>,
    schema: Arc<SchemaGuard>,
}

impl<B: Backend> SqlStore<B> {
    pub(crate) fn new(backend: B, writer: WriterHandle, schema: Arc<SchemaGuard>) -> Result<SqlStore<B>> {
        let backend = Arc::new(backend);
        let (reads, jobs) = mpsc::channel::<ReadJob>();
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..READERS {
            let (backend, jobs) = (backend.clone(), jobs.clone());
            std::thread::Builder::new()
                .name(format!("praetor-store-reader-{i}"))
                .spawn(move || reader_loop(&*backend, &jobs))
                .map_err(|e| StoreError::Database(format!("cannot start a reader thread: {e}")))?;
        }
        Ok(SqlStore { backend, writer, reads, schema })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Run `f` on a reader thread's connection. Readers are plain threads, not the async
    /// runtime's blocking pool: a synchronous database client may not block a thread
    /// the runtime knows about.
    ///
    /// A read whose connection the database server had closed (a restart, a failover)
    /// runs once more on a new connection: reads change nothing, so they may.
    async fn read<T: Send + 'static>(&self, f: impl Fn(&dyn Db) -> Result<T> + Send + 'static) -> Result<T> {
        self.schema.refuse_if_superseded()?;
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let job: ReadJob = Box::new(move |db, last_try| {
            let out = match db {
                Ok(db) => {
                    let out = f(db);
                    if out.is_err() && db.is_broken() && !last_try {
                        return ReadOutcome::RunAgain;
                    }
                    out
                }
                Err(e) => Err(e),
            };
            let connection_good = out.is_ok();
            if let Some(tx) = tx.take() {
                let _ = tx.send(out);
            }
            ReadOutcome::Answered { connection_good }
        });
        self.reads.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Database("the reader stopped before answering".into()))?
    }
}

/// One reader thread: take jobs until the store is dropped. A connection is opened on
/// first use, and replaced after a job that failed (it may be broken); a job whose
/// connection was found broken runs once more on a new one.
fn reader_loop<B: Backend>(backend: &B, jobs: &Mutex<mpsc::Receiver<ReadJob>>) {
    let mut conn: Option<B::Reader> = None;
    loop {
        let mut job = match jobs.lock().recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        for last_try in [false, true] {
            let c = match &conn {
                Some(c) => c,
                None => match backend.reader() {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open a read connection");
                        job(Err(e), true);
                        break;
                    }
                },
            };
            match job(Ok(c), last_try) {
                ReadOutcome::Answered { connection_good } => {
                    if !connection_good {
                        conn = None;
                    }
                    break;
                }
                ReadOutcome::RunAgain => {
                    tracing::warn!("a read connection was closed by the database; reading again on a new one");
                    conn = None;
                }
            }
        }
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    async fn commit(&self, txn: Txn) -> Result<Vec<Sealed>> {
        self.writer.commit(txn).await
    }

    fn submit(&self, txn: Txn) -> crate::Pending {
        self.writer.submit(txn)
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

    async fn list_sessions(&self, workspace_id: &str, filter: &SessionFilter) -> Result<Vec<Session>> {
        let (ws, filter) = (workspace_id.to_owned(), filter.clone());
        self.read(move |c| rows::list_sessions(c, &ws, &filter)).await
    }

    async fn list_objects(&self, workspace_id: &str, filter: &ObjectFilter) -> Result<Vec<ObjectRecord>> {
        let (ws, filter) = (workspace_id.to_owned(), filter.clone());
        self.read(move |c| rows::list_objects(c, &ws, &filter)).await
    }

    async fn get_object(&self, workspace_id: &str, kind: &str, object_id: &str) -> Result<Option<ObjectRecord>> {
        let (ws, kind, id) = (workspace_id.to_owned(), kind.to_owned(), object_id.to_owned());
        self.read(move |c| rows::get_object(c, &ws, &kind, &id)).await
    }

    async fn get_session(&self, workspace_id: &str, session_id: &str) -> Result<Option<Session>> {
        let (ws, id) = (workspace_id.to_owned(), session_id.to_owned());
        self.read(move |c| rows::get_session(c, &ws, &id)).await
    }

    async fn shadow_report(&self, workspace_id: &str, policy_id: Option<&str>, since: Millis) -> Result<Vec<ShadowSummary>> {
        let (ws, pid) = (workspace_id.to_owned(), policy_id.map(str::to_owned));
        self.read(move |c| rows::shadow_report(c, &ws, pid.as_deref(), since)).await
    }

    async fn list_violations(&self, workspace_id: &str, filter: &ViolationFilter) -> Result<Vec<Violation>> {
        let (ws, filter) = (workspace_id.to_owned(), filter.clone());
        self.read(move |c| rows::list_violations(c, &ws, &filter)).await
    }

    async fn get_violation(&self, workspace_id: &str, violation_id: &str) -> Result<Option<Violation>> {
        let (ws, id) = (workspace_id.to_owned(), violation_id.to_owned());
        self.read(move |c| rows::get_violation(c, &ws, &id)).await
    }

    async fn due_deliveries(&self, now: Millis, limit: u32, skip_targets: &[String], skip_workspaces: &[String]) -> Result<Vec<Delivery>> {
        let (targets, workspaces) = (skip_targets.to_vec(), skip_workspaces.to_vec());
        self.read(move |c| rows::due_deliveries(c, now, limit, &targets, &workspaces)).await
    }

    async fn list_deliveries(&self, workspace_id: &str, webhook_id: Option<&str>, limit: u32) -> Result<Vec<Delivery>> {
        let (ws, wh) = (workspace_id.to_owned(), webhook_id.map(str::to_owned));
        self.read(move |c| rows::list_deliveries(c, &ws, wh.as_deref(), limit)).await
    }

    async fn list_decisions(&self, workspace_id: &str, filter: &DecisionFilter) -> Result<(Vec<DecisionRow>, u64)> {
        let (ws, filter) = (workspace_id.to_owned(), filter.clone());
        self.read(move |c| rows::list_decisions(c, &ws, &filter)).await
    }

    async fn get_decision(&self, workspace_id: &str, decision_id: &str) -> Result<Option<DecisionRow>> {
        let (ws, id) = (workspace_id.to_owned(), decision_id.to_owned());
        self.read(move |c| rows::get_decision(c, &ws, &id)).await
    }

    /// Read from the database, not from this process's writer: another process (a CLI
    /// command, another node) may have appended since.
    async fn log_head(&self, workspace_id: &str) -> Result<LogHead> {
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
        self.read(move |c| vault::latest_checkpoint(c, &ws)).await
    }

    async fn checkpoint_covering(&self, workspace_id: &str, at_least: u64) -> Result<Option<CheckpointRow>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::checkpoint_covering(c, &ws, at_least)).await
    }

    async fn checkpoints_between(&self, workspace_id: &str, from_size: u64, to_size: u64) -> Result<Vec<CheckpointRow>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| vault::checkpoints_between(c, &ws, from_size, to_size)).await
    }

    async fn agent_state(&self, workspace_id: &str, agent_id: &str, since: Millis, cap: u32) -> Result<Option<AgentState>> {
        let (ws, id) = (workspace_id.to_owned(), agent_id.to_owned());
        self.read(move |c| rows::agent_state(c, &ws, &id, since, cap)).await
    }

    async fn session_state(&self, workspace_id: &str, session_id: &str, since: Millis, cap: u32) -> Result<Option<SessionState>> {
        let (ws, id) = (workspace_id.to_owned(), session_id.to_owned());
        self.read(move |c| rows::session_state(c, &ws, &id, since, cap)).await
    }

    async fn list_policies(&self, workspace_id: &str) -> Result<Vec<PolicyRecord>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| rows::list_policies(c, &ws)).await
    }

    async fn get_workspace(&self, workspace_id: &str) -> Result<Option<Workspace>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| rows::get_workspace(c, &ws)).await
    }

    async fn get_api_key(&self, workspace_id: &str, key_id: &str) -> Result<Option<ApiKey>> {
        let (ws, id) = (workspace_id.to_owned(), key_id.to_owned());
        self.read(move |c| rows::get_api_key(c, &ws, &id)).await
    }

    async fn changes_since(&self, workspace_id: &str, after: u64, limit: u32) -> Result<Vec<Change>> {
        let ws = workspace_id.to_owned();
        self.read(move |c| rows::changes_since(c, &ws, after, limit)).await
    }

    async fn change_heads(&self) -> Result<std::collections::HashMap<String, u64>> {
        self.read(rows::change_heads).await
    }

    async fn check_schema(&self) -> Result<()> {
        let schema = self.schema.clone();
        self.read(move |c| schema.check(c)).await
    }

    fn superseded(&self) -> Option<String> {
        self.schema.superseded()
    }

    fn node_id(&self) -> &str {
        self.writer.node_id()
    }

    fn commit_stats(&self) -> crate::CommitStats {
        self.writer.stats()
    }

    fn kind(&self) -> &'static str {
        B::KIND
    }
}

/// The schema versions this build knows, and whether the database has since been
/// migrated past them by a newer Praetor. A newer version may store rows this build
/// would misread (since `8b9c282` a decision row holds only the part of its answer that
/// its vault entry cannot give back), so from the moment the store finds that out, it
/// refuses every read and write until the process is replaced: at start
/// ([`migrate`]), before every batch the writer commits, and whenever
/// [`Store::check_schema`] is asked (the server does every 100 ms).
pub(crate) struct SchemaGuard {
    kind: &'static str,
    known: i64,
    superseded: OnceLock<String>,
}

impl SchemaGuard {
    /// An error if the database holds a migration this build does not know.
    pub(crate) fn check(&self, db: &dyn Db) -> Result<()> {
        self.refuse_if_superseded()?;
        let Some(message) = self.newer(db)? else { return Ok(()) };
        if self.superseded.set(message.clone()).is_ok() {
            tracing::error!(backend = self.kind, known = self.known, "the database was migrated by a newer Praetor; this node refuses every read and write from now on");
        }
        Err(StoreError::Superseded(message))
    }

    /// What is wrong if the database holds a migration this build does not know.
    fn newer(&self, db: &dyn Db) -> Result<Option<String>> {
        Ok(highest_applied(db)?.filter(|&applied| applied > self.known).map(|applied| newer_schema(self.kind, applied, self.known)))
    }

    /// An error if the database was found migrated past this build (no query).
    pub(crate) fn refuse_if_superseded(&self) -> Result<()> {
        match self.superseded.get() {
            Some(message) => Err(StoreError::Superseded(message.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn superseded(&self) -> Option<String> {
        self.superseded.get().cloned()
    }
}

fn highest_applied(db: &dyn Db) -> Result<Option<i64>> {
    // `MAX` of no rows is one NULL row.
    let applied: Option<Option<i64>> = db.value("SELECT MAX(version) FROM schema_migrations", crate::sql::args![])?;
    Ok(applied.flatten())
}

fn newer_schema(kind: &str, applied: i64, known: i64) -> String {
    format!(
        "the {kind} database is at schema version {applied}, written by a newer Praetor; this build knows versions up to {known}. \
         Run the newer version (nodes of two versions cannot share a database, and going back to an older version is not supported)"
    )
}

/// Run each migration not yet recorded in `schema_migrations`, in order, each in its
/// own transaction, after `hold` (a statement that keeps every other node's batches
/// out until the migration commits; none on SQLite, whose migration takes the file's
/// write lock). `applied_at` is seconds since the epoch. Returns the guard the store
/// checks from then on.
///
/// A database that already holds a migration this build does not know was written by
/// a newer version (see [`SchemaGuard`]): it is refused, before anything is read or
/// written. So a change to what rows mean ships with a migration, even one that
/// changes no table. And every migration must run in its transaction, after `hold`:
/// one that cannot (PostgreSQL's `CREATE INDEX CONCURRENTLY`, say) would change the
/// database while older nodes still commit.
pub(crate) fn migrate(db: &dyn Db, migrations: &[(i64, &str)], kind: &'static str, hold: Option<&str>) -> Result<Arc<SchemaGuard>> {
    db.batch("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")?;
    let known = migrations.iter().map(|(version, _)| *version).max().unwrap_or(0);
    let guard = Arc::new(SchemaGuard { kind, known, superseded: OnceLock::new() });
    if let Some(message) = guard.newer(db)? {
        return Err(StoreError::Superseded(message));
    }
    // SQLite takes the file's write lock at once: processes opening one new file
    // together then migrate it one after the other. (PostgreSQL's migrations run under
    // an advisory lock already.)
    let begin = if kind == "sqlite" { "BEGIN IMMEDIATE" } else { "BEGIN" };
    let done = |version: i64| -> Result<bool> {
        Ok(db.value::<i64>("SELECT version FROM schema_migrations WHERE version = ?1", crate::sql::args![version])?.is_some())
    };
    for (version, sql) in migrations {
        if done(*version)? {
            continue;
        }
        db.batch(begin)?;
        // Again inside the transaction: another process may have applied it meanwhile.
        match done(*version) {
            Ok(true) => {
                db.batch("COMMIT")?;
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                let _ = db.batch("ROLLBACK");
                return Err(e);
            }
        }
        let applied = hold.map_or(Ok(()), |hold| db.batch(hold)).and_then(|()| db.batch(sql)).and_then(|()| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", crate::sql::args![*version, now])
        });
        match applied {
            Ok(_) => db.batch("COMMIT")?,
            Err(e) => {
                let _ = db.batch("ROLLBACK");
                return Err(StoreError::Database(format!("{kind} migration {version} failed: {e}")));
            }
        }
        tracing::info!(version, backend = kind, "applied migration");
    }
    Ok(guard)
}
