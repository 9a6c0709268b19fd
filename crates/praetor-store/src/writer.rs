//! The single writer of one process: it owns the read-write connection, groups every
//! pending transaction into one database commit (one fsync), and sequences the vault,
//! so entry order is commit order. Callers wait for their transaction's commit before
//! answering. The same writer runs on both backends; on a shared database (several
//! nodes on one PostgreSQL) each batch first takes the log's lock for every workspace
//! it seals into and reloads the appender if another node appended meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::model::CheckpointRow;
use crate::sql::Db;
use crate::{CommitStats, Mutation, Result, Sealed, StoreError, Txn, rows, vault_rows as vault};

/// What the writer needs of a backend's read-write connection beyond plain SQL.
pub trait WriterConn: Db + Send + 'static {
    /// Begin the batch's transaction, taking whatever write lock the backend has.
    fn begin(&self) -> Result<()>;
    /// Hold `ws`'s log against every other writer until the transaction ends.
    fn lock_log(&self, ws: &str) -> Result<()>;
}

/// At most this many transactions share one commit.
const MAX_BATCH: usize = 1024;

enum Job {
    Commit(Txn, oneshot::Sender<Result<Vec<Sealed>>>),
    Checkpoint(String, CheckpointRow, oneshot::Sender<Result<()>>),
}

pub struct WriterHandle {
    jobs: Sender<Job>,
    stats: Arc<Mutex<Recorder>>,
    node_id: String,
}

/// Commit time and batch size distributions, recorded once per batch.
struct Recorder {
    commit_us: Histogram<u64>,
    batch: Histogram<u64>,
    transactions: u64,
    commit_us_sum: u64,
}

impl Recorder {
    fn new() -> Result<Recorder> {
        let h = |max| Histogram::new_with_bounds(1, max, 2).map_err(|e| StoreError::Database(format!("histogram: {e}")));
        Ok(Recorder { commit_us: h(60_000_000)?, batch: h(1_000_000)?, transactions: 0, commit_us_sum: 0 })
    }

    fn record(&mut self, micros: u64, batch: usize) {
        let _ = self.commit_us.record(micros.max(1));
        let _ = self.batch.record((batch as u64).max(1));
        self.transactions += batch as u64;
        self.commit_us_sum += micros;
    }
}

impl WriterHandle {
    pub async fn commit(&self, txn: Txn) -> Result<Vec<Sealed>> {
        self.submit(txn).await
    }

    /// Queue the transaction now (jobs are applied in the order they are queued) and
    /// return a future for its outcome.
    pub fn submit(&self, txn: Txn) -> crate::Pending {
        let (tx, rx) = oneshot::channel();
        let queued = self.jobs.send(Job::Commit(txn, tx)).map_err(|_| StoreError::Closed);
        Box::pin(async move {
            queued?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    pub async fn put_checkpoint(&self, ws: String, cp: CheckpointRow) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Checkpoint(ws, cp, tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// This process's name in the change feed.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn stats(&self) -> CommitStats {
        let r = self.stats.lock();
        CommitStats {
            commits: r.commit_us.len(),
            transactions: r.transactions,
            commit_us_p50: r.commit_us.value_at_quantile(0.5),
            commit_us_p99: r.commit_us.value_at_quantile(0.99),
            commit_us_max: r.commit_us.max(),
            commit_us_sum: r.commit_us_sum,
            batch_p50: r.batch.value_at_quantile(0.5),
            batch_p99: r.batch.value_at_quantile(0.99),
            batch_max: r.batch.max(),
        }
    }
}

pub fn spawn<C: WriterConn>(conn: C) -> Result<WriterHandle> {
    let (jobs, rx) = mpsc::channel();
    let stats = Arc::new(Mutex::new(Recorder::new()?));
    let node_id = new_node_id()?;
    let mut writer = Writer { conn, checked: HashSet::new(), logs: HashMap::new(), stats: stats.clone(), node_id: node_id.clone() };
    std::thread::Builder::new()
        .name("praetor-store-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
    Ok(WriterHandle { jobs, stats, node_id })
}

/// A random name for this process in the change feed: it skips its own entries.
fn new_node_id() -> Result<String> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Database(format!("no randomness for the node id: {e}")))?;
    Ok(format!("node_{}", hex::encode(raw)))
}

struct Writer<C> {
    conn: C,
    /// The workspaces whose appender this batch has checked against the stored log
    /// (the batch's transaction holds their logs' locks from its start).
    checked: HashSet<String>,
    /// Per-workspace appender state, restored from the store on first use and checked
    /// against the stored size each time a batch takes the log (another process may
    /// have appended since).
    logs: HashMap<String, vault::OpenLog>,
    stats: Arc<Mutex<Recorder>>,
    node_id: String,
}

enum Reply {
    Commit(oneshot::Sender<Result<Vec<Sealed>>>, Result<Vec<Sealed>>),
    Checkpoint(oneshot::Sender<Result<()>>, Result<()>),
}

impl<C: WriterConn> Writer<C> {
    fn run(&mut self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
        tracing::info!("store writer stopped");
    }

    fn run_batch(&mut self, batch: Vec<Job>) {
        let started = std::time::Instant::now();
        let size = batch.len();
        let mut replies = Vec::with_capacity(batch.len());
        self.checked.clear();
        if let Err(e) = self.conn.begin().and_then(|()| self.lock_logs_of(&batch)) {
            let _ = self.conn.batch("ROLLBACK");
            let msg = format!("cannot begin a transaction: {e}");
            for job in batch {
                replies.push(fail(job, &msg));
            }
            return send_all(replies);
        }
        let mut poisoned: Option<String> = None;
        for job in batch {
            if let Some(msg) = &poisoned {
                replies.push(fail(job, msg));
                continue;
            }
            let reply = match job {
                Job::Commit(txn, tx) => {
                    let res = self.in_savepoint(|w| w.apply_txn(&txn));
                    Reply::Commit(tx, res.map_err(|e| e.into_job_error(&mut poisoned)))
                }
                Job::Checkpoint(ws, cp, tx) => {
                    let res = self.in_savepoint(|w| vault::insert_checkpoint(&w.conn, &ws, &cp));
                    Reply::Checkpoint(tx, res.map_err(|e| e.into_job_error(&mut poisoned)))
                }
            };
            replies.push(reply);
        }
        let commit = match &poisoned {
            // A savepoint could not be released or rolled back: the transaction's state
            // is unknown, so none of the batch may stand.
            Some(msg) => Err(StoreError::Database(msg.clone())),
            None => self.conn.batch("COMMIT"),
        };
        if let Err(e) = commit {
            tracing::error!(error = %e, "group commit failed; every transaction in it is refused");
            let _ = self.conn.batch("ROLLBACK");
            // The in-memory appenders ran ahead of the disk: rebuild them from the store.
            self.logs.clear();
            let msg = format!("commit failed: {e}");
            replies = replies.into_iter().map(|r| r.into_failure(&msg)).collect();
        }
        self.stats.lock().record(started.elapsed().as_micros() as u64, size);
        send_all(replies);
    }

    /// Run `f` in a savepoint: on error its writes are undone and the appenders it
    /// touched are restored, and the rest of the batch goes on.
    fn in_savepoint<T>(&mut self, f: impl FnOnce(&mut Writer<C>) -> Result<T>) -> Result<T, JobError> {
        self.conn.batch("SAVEPOINT job").map_err(|e| JobError::Poisoned(e.to_string()))?;
        match f(self) {
            Ok(v) => {
                self.conn.batch("RELEASE job").map_err(|e| JobError::Poisoned(e.to_string()))?;
                Ok(v)
            }
            Err(e) => {
                // Undo the job's writes; its appends are forgotten by rebuilding the
                // appenders from the store (through this connection, so the batch's
                // earlier, uncommitted appends are seen).
                self.logs.clear();
                self.checked.clear();
                self.conn.batch("ROLLBACK TO job; RELEASE job").map_err(|e| JobError::Poisoned(e.to_string()))?;
                Err(JobError::Failed(e))
            }
        }
    }

    /// Take the lock of every workspace the batch writes (its rows or its log) before
    /// any write, in one order (sorted): writers on other processes then touch a
    /// workspace's rows one batch at a time, so no two batches can each hold a row the
    /// other waits for (no deadlock between nodes).
    fn lock_logs_of(&mut self, batch: &[Job]) -> Result<()> {
        let mut workspaces: Vec<&str> = batch
            .iter()
            .flat_map(|job| match job {
                Job::Commit(txn, _) => txn
                    .seal
                    .iter()
                    .map(|s| s.workspace_id.as_str())
                    .chain(txn.mutations.iter().map(Mutation::workspace_id))
                    .collect::<Vec<_>>(),
                Job::Checkpoint(ws, ..) => vec![ws.as_str()],
            })
            .collect();
        workspaces.sort_unstable();
        workspaces.dedup();
        for ws in workspaces {
            self.conn.lock_log(ws)?;
        }
        Ok(())
    }

    /// Make `self.logs[ws]` ready to append. The batch holds the log's lock (taken at
    /// its start, see `lock_logs_of`); the first time it seals into a workspace, an
    /// appender whose size no longer matches the store (another process appended) is
    /// rebuilt from it.
    fn open_log(&mut self, ws: &str) -> Result<()> {
        if !self.checked.contains(ws) {
            self.checked.insert(ws.to_owned());
            if let Some(log) = self.logs.get(ws) {
                let stored = vault::log_size(&self.conn, ws)?;
                if stored != log.size() {
                    tracing::info!(workspace = ws, cached = log.size(), stored, "another process appended to the log; reloading its appender");
                    self.logs.remove(ws);
                }
            }
        }
        if !self.logs.contains_key(ws) {
            let log = vault::OpenLog::restore(&self.conn, ws)?;
            self.logs.insert(ws.to_owned(), log);
        }
        Ok(())
    }

    /// Order within a transaction: plain mutations, then seals (a workspace created in
    /// this transaction already has its secret), then decisions (which record their
    /// seal's sequence number).
    fn apply_txn(&mut self, txn: &Txn) -> Result<Vec<Sealed>> {
        for m in txn.mutations.iter().filter(|m| !matches!(m, Mutation::InsertDecision { .. })) {
            rows::apply(&self.conn, m, &[])?;
        }
        let mut sealed = Vec::with_capacity(txn.seal.len());
        for req in &txn.seal {
            self.open_log(&req.workspace_id)?;
            let log = self
                .logs
                .get_mut(&req.workspace_id)
                .ok_or_else(|| StoreError::Corrupt("appender vanished".into()))?;
            sealed.push(log.append(&self.conn, &req.body)?);
        }
        let seqs: Vec<u64> = sealed.iter().map(|s| s.seq).collect();
        for m in txn.mutations.iter().filter(|m| matches!(m, Mutation::InsertDecision { .. })) {
            rows::apply(&self.conn, m, &seqs)?;
        }
        self.record_changes(txn)?;
        Ok(sealed)
    }

    /// Tell other nodes what this transaction changed that they hold in memory: one
    /// feed entry per distinct key (the workspace's lock is held, see `lock_logs_of`).
    fn record_changes(&self, txn: &Txn) -> Result<()> {
        let mut seen = HashSet::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        for m in &txn.mutations {
            if let Some(key) = m.feed_key()
                && seen.insert((m.workspace_id(), key.clone()))
            {
                rows::insert_change(&self.conn, m.workspace_id(), &self.node_id, &key, now)?;
            }
        }
        Ok(())
    }
}

/// How one job failed: on its own (the batch goes on) or leaving the transaction in an
/// unknown state (the whole batch is refused).
enum JobError {
    Failed(StoreError),
    Poisoned(String),
}

impl JobError {
    fn into_job_error(self, poisoned: &mut Option<String>) -> StoreError {
        match self {
            JobError::Failed(e) => e,
            JobError::Poisoned(msg) => {
                let msg = format!("savepoint failed: {msg}");
                *poisoned = Some(msg.clone());
                StoreError::Database(msg)
            }
        }
    }
}

fn fail(job: Job, msg: &str) -> Reply {
    match job {
        Job::Commit(_, tx) => Reply::Commit(tx, Err(StoreError::Database(msg.to_owned()))),
        Job::Checkpoint(_, _, tx) => Reply::Checkpoint(tx, Err(StoreError::Database(msg.to_owned()))),
    }
}

impl Reply {
    fn into_failure(self, msg: &str) -> Reply {
        match self {
            Reply::Commit(tx, _) => Reply::Commit(tx, Err(StoreError::Database(msg.to_owned()))),
            Reply::Checkpoint(tx, _) => Reply::Checkpoint(tx, Err(StoreError::Database(msg.to_owned()))),
        }
    }
}

fn send_all(replies: Vec<Reply>) {
    for r in replies {
        // A caller that stopped waiting is not an error: its transaction still stands.
        match r {
            Reply::Commit(tx, res) => drop(tx.send(res)),
            Reply::Checkpoint(tx, res) => drop(tx.send(res)),
        }
    }
}
