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

use praetor_vault::CanonicalWithSlot;

use crate::model::CheckpointRow;
use crate::sql::Db;
use crate::sql_store::SchemaGuard;
use crate::{CommitStats, Mutation, Result, Sealed, StoreError, Txn, rows, vault_rows as vault};

/// What the writer needs of a backend's read-write connection beyond plain SQL.
pub trait WriterConn: Db + Send + 'static {
    /// Begin the batch's transaction, taking whatever write lock the backend has.
    fn begin(&self) -> Result<()>;
    /// Hold `ws`'s log against every other writer until the transaction ends.
    fn lock_log(&self, ws: &str) -> Result<()>;
    /// Commit the batch's transaction; an error if it cannot stand as a whole.
    fn commit(&self) -> Result<()> {
        self.batch("COMMIT")
    }
}

/// At most this many transactions share one commit.
const MAX_BATCH: usize = 1024;

/// A committed transaction goes back to its caller with the outcome, to be freed there:
/// freeing its JSON trees on the writer thread cost the one serial stage 3-4 % of its time.
type Committed = (Prepared, Result<Vec<Sealed>>);

/// A transaction as the writer takes it: the work that needs no database (the
/// canonical bytes of each vault entry but its `seq`, the JSON text of the large row
/// bodies) is done on the caller's thread first, as the writer thread is the one
/// serial stage.
struct Prepared {
    txn: Txn,
    /// Or why the transaction cannot be encoded: it fails when applied, as it would
    /// have failed encoding on the writer.
    encoded: Result<Encoded>,
}

struct Encoded {
    /// One per `txn.seal`.
    entries: Vec<CanonicalWithSlot>,
    /// One per `txn.mutations`: `rows::encode_body`.
    bodies: Vec<Option<String>>,
}

impl Prepared {
    fn new(mut txn: Txn) -> Prepared {
        let encoded = (|| {
            // Only violations look their decision's entry up.
            let decisions = if txn.mutations.iter().any(|m| matches!(m, Mutation::InsertViolation(_))) { txn.decision_entries() } else { Default::default() };
            let bodies: Vec<Option<String>> = txn.mutations.iter().map(|m| rows::encode_body(m, &decisions).transpose()).collect::<Result<_>>()?;
            drop(decisions);
            txn.seal_answer_digests(&bodies);
            let entries = txn.seal.iter().map(|s| CanonicalWithSlot::new(&s.body, "seq")).collect::<Result<_, _>>()?;
            Ok(Encoded { entries, bodies })
        })();
        Prepared { txn, encoded }
    }
}

enum Job {
    Commit(Prepared, oneshot::Sender<Committed>),
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
    /// Batches run a second time, with savepoints, because a job failed without them.
    reruns: u64,
    /// Batches in a row that committed nothing and failed on a database error.
    failed_in_a_row: u32,
    /// Why, once `FAILING_AFTER` such batches came in a row, until a batch commits again.
    failing: Option<String>,
}

/// How many batches in a row must fail on a database error before the store reports
/// itself failing. One request's own error (a constraint, a trigger) fails one batch;
/// a full disk or a lost database fails every one.
const FAILING_AFTER: u32 = 3;

impl Recorder {
    fn new() -> Result<Recorder> {
        let h = |max| Histogram::new_with_bounds(1, max, 2).map_err(|e| StoreError::Database(format!("histogram: {e}")));
        Ok(Recorder { commit_us: h(60_000_000)?, batch: h(1_000_000)?, transactions: 0, commit_us_sum: 0, reruns: 0, failed_in_a_row: 0, failing: None })
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
        let queued = self.jobs.send(Job::Commit(Prepared::new(txn), tx)).map_err(|_| StoreError::Closed);
        Box::pin(async move {
            queued?;
            let (prepared, outcome) = rx.await.map_err(|_| StoreError::Closed)?;
            drop(prepared);
            outcome
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
            batches_rerun: r.reruns,
            failing: r.failing.clone(),
        }
    }
}

pub fn spawn<C: WriterConn>(conn: C, schema: Arc<SchemaGuard>) -> Result<WriterHandle> {
    let (jobs, rx) = mpsc::channel();
    let stats = Arc::new(Mutex::new(Recorder::new()?));
    let node_id = new_node_id()?;
    let mut writer = Writer { conn, schema, checked: HashSet::new(), logs: HashMap::new(), stats: stats.clone(), node_id: node_id.clone(), careful_until: None };
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
    /// Checked in every batch's transaction: nothing is committed once a newer version
    /// has migrated the database.
    schema: Arc<SchemaGuard>,
    /// The workspaces whose appender this batch has checked against the stored log
    /// (the batch's transaction holds their logs' locks from its start).
    checked: HashSet<String>,
    /// Per-workspace appender state, restored from the store on first use and checked
    /// against the stored size each time a batch takes the log (another process may
    /// have appended since).
    logs: HashMap<String, vault::OpenLog>,
    stats: Arc<Mutex<Recorder>>,
    node_id: String,
    /// Until when batches run with a savepoint per job (see `commit_batch`).
    careful_until: Option<std::time::Instant>,
}

/// What one job gives back once committed.
enum Outcome {
    Sealed(Vec<Sealed>),
    Stored,
}

/// After a job fails in a batch run without savepoints, batches use savepoints for
/// this long: failures come in bursts (another node deciding for the same agents), and
/// each one would otherwise cost the batch a second run.
const CAREFUL_FOR: std::time::Duration = std::time::Duration::from_secs(1);

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
        let results = self.commit_batch(&batch);
        {
            let mut stats = self.stats.lock();
            stats.record(started.elapsed().as_micros() as u64, batch.len());
            // A refusal (a stale copy, a conflict) is the request's; database errors
            // with nothing committed, batch after batch, are the store's, and health
            // reports them.
            if results.iter().any(Result::is_ok) {
                stats.failed_in_a_row = 0;
                stats.failing = None;
            } else if let Some(e) = results.iter().find_map(|r| r.as_ref().err().filter(|e| matches!(e, StoreError::Database(_) | StoreError::Closed))) {
                stats.failed_in_a_row += 1;
                if stats.failed_in_a_row >= FAILING_AFTER {
                    stats.failing = Some(e.to_string());
                }
            }
        }
        for (job, res) in batch.into_iter().zip(results) {
            // A caller that stopped waiting is not an error: its transaction still stands.
            match job {
                Job::Commit(txn, tx) => drop(tx.send((
                    txn,
                    res.map(|o| match o {
                        Outcome::Sealed(s) => s,
                        Outcome::Stored => Vec::new(),
                    }),
                ))),
                Job::Checkpoint(.., tx) => drop(tx.send(res.map(drop))),
            }
        }
    }

    /// Commit the batch, one result per job. A job's failure must not touch the rest of
    /// its batch, which savepoints give; but a savepoint per job is expensive (SQLite
    /// copies each page a job first touches to a sub-journal, PostgreSQL pays two more
    /// round trips). So the batch runs without them first, and only when a job fails is
    /// it rolled back and run again with a savepoint per job.
    fn commit_batch(&mut self, batch: &[Job]) -> Vec<Result<Outcome>> {
        let careful = self.careful_until.is_some_and(|until| std::time::Instant::now() < until);
        if !careful {
            match self.try_batch(batch, false) {
                Some(results) => return results,
                None => self.stats.lock().reruns += 1,
            }
        }
        // With savepoints a failed job is answered on its own: this run always ends.
        let results = self.try_batch(batch, true).unwrap_or_else(|| every(batch.len(), "internal error: a batch with savepoints asked to run again"));
        if results.iter().any(Result::is_err) {
            self.careful_until = Some(std::time::Instant::now() + CAREFUL_FOR);
        }
        results
    }

    /// Apply `batch` in one transaction and commit it. Without `savepoints`, the first
    /// job that fails rolls the whole transaction back and `None` is returned: nothing
    /// of the batch was written, and it must run again with them.
    fn try_batch(&mut self, batch: &[Job], savepoints: bool) -> Option<Vec<Result<Outcome>>> {
        self.checked.clear();
        // Known already: not even a transaction (a round trip, on PostgreSQL).
        if let Err(StoreError::Superseded(why)) = self.schema.refuse_if_superseded() {
            return Some(superseded(batch.len(), &why));
        }
        if let Err(e) = self.conn.begin().and_then(|()| self.schema.check(&self.conn)).and_then(|()| self.lock_logs_of(batch)) {
            self.abandon();
            return Some(match e {
                StoreError::Superseded(why) => superseded(batch.len(), &why),
                e => every(batch.len(), &format!("cannot begin a transaction: {e}")),
            });
        }
        let mut results = Vec::with_capacity(batch.len());
        let mut poisoned: Option<String> = None;
        for job in batch {
            if let Some(msg) = &poisoned {
                results.push(Err(StoreError::Database(msg.clone())));
                continue;
            }
            if savepoints {
                results.push(self.in_savepoint(|w| w.apply_job(job)).map_err(|e| e.into_job_error(&mut poisoned)));
                continue;
            }
            match self.apply_job(job) {
                Ok(outcome) => results.push(Ok(outcome)),
                Err(e) => return self.run_again(&e),
            }
        }
        // Writes the backend held (`Db::execute_later`) fail here at the latest; which
        // job they belonged to is found by the run with savepoints.
        if !savepoints && let Err(e) = self.conn.flush() {
            return self.run_again(&e);
        }
        let commit = match &poisoned {
            // A savepoint could not be released or rolled back: the transaction's state
            // is unknown, so none of the batch may stand.
            Some(msg) => Err(StoreError::Database(msg.clone())),
            None => self.conn.commit(),
        };
        if let Err(e) = commit {
            tracing::error!(error = %e, "group commit failed; every transaction in it is refused");
            self.abandon();
            return Some(every(batch.len(), &format!("commit failed: {e}")));
        }
        Some(results)
    }

    /// A job of a batch without savepoints failed: nothing of the batch stands, and it
    /// must run again with them.
    fn run_again(&mut self, e: &StoreError) -> Option<Vec<Result<Outcome>>> {
        tracing::debug!(error = %e, "a job failed in a batch without savepoints; running the batch again with them");
        self.abandon();
        None
    }

    /// Roll the batch's transaction back. The in-memory appenders ran ahead of the
    /// store: they are rebuilt from it on next use.
    fn abandon(&mut self) {
        self.conn.discard();
        let _ = self.conn.batch("ROLLBACK");
        self.logs.clear();
        self.checked.clear();
    }

    fn apply_job(&mut self, job: &Job) -> Result<Outcome> {
        match job {
            Job::Commit(prepared, _) => self.apply_txn(prepared).map(Outcome::Sealed),
            Job::Checkpoint(ws, cp, _) => vault::insert_checkpoint(&self.conn, ws, cp).map(|()| Outcome::Stored),
        }
    }

    /// Run `f` in a savepoint: on error its writes are undone and the appenders it
    /// touched are restored, and the rest of the batch goes on.
    fn in_savepoint<T>(&mut self, f: impl FnOnce(&mut Writer<C>) -> Result<T>) -> Result<T, JobError> {
        self.conn.batch("SAVEPOINT job").map_err(|e| JobError::Poisoned(e.to_string()))?;
        // The job's held writes are sent and checked before its savepoint is released,
        // so a failure among them is its own.
        match f(self).and_then(|v| self.conn.flush().map(|()| v)) {
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
                self.conn.discard();
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
                Job::Commit(prepared, _) => prepared
                    .txn
                    .seal
                    .iter()
                    .map(|s| s.workspace_id.as_str())
                    .chain(prepared.txn.mutations.iter().map(Mutation::workspace_id))
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
    fn apply_txn(&mut self, prepared: &Prepared) -> Result<Vec<Sealed>> {
        let (txn, encoded) = (&prepared.txn, prepared.encoded.as_ref().map_err(Clone::clone)?);
        let is_decision = |m: &Mutation| matches!(m, Mutation::InsertDecision { .. });
        let mutations = || txn.mutations.iter().zip(&encoded.bodies);
        for (m, body) in mutations().filter(|(m, _)| !is_decision(m)) {
            rows::apply(&self.conn, m, &[], body.as_deref())?;
        }
        let mut sealed = Vec::with_capacity(txn.seal.len());
        for (req, entry) in txn.seal.iter().zip(&encoded.entries) {
            self.open_log(&req.workspace_id)?;
            let log = self
                .logs
                .get_mut(&req.workspace_id)
                .ok_or_else(|| StoreError::Corrupt("appender vanished".into()))?;
            sealed.push(log.append(&self.conn, entry)?);
        }
        let seqs: Vec<u64> = sealed.iter().map(|s| s.seq).collect();
        for (m, body) in mutations().filter(|(m, _)| is_decision(m)) {
            rows::apply(&self.conn, m, &seqs, body.as_deref())?;
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

/// The same failure for each of `n` jobs.
fn every(n: usize, msg: &str) -> Vec<Result<Outcome>> {
    (0..n).map(|_| Err(StoreError::Database(msg.to_owned()))).collect()
}

/// The same refusal for each of `n` jobs: a newer version migrated the database.
fn superseded(n: usize, why: &str) -> Vec<Result<Outcome>> {
    (0..n).map(|_| Err(StoreError::Superseded(why.to_owned()))).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{DecisionRow, SealRequest, Workspace};
    use praetor_core::WorkspaceSettings;
    use serde_json::{Value, json};

    const WS: &str = "ws_w";

    fn writer(dir: &tempfile::TempDir) -> Writer<rusqlite::Connection> {
        let (conn, schema) = crate::sqlite::open_migrated(&dir.path().join("w.db")).unwrap();
        let stats = Arc::new(Mutex::new(Recorder::new().unwrap()));
        Writer { conn, schema, checked: HashSet::new(), logs: HashMap::new(), stats, node_id: "node_test".into(), careful_until: None }
    }

    /// A transaction that creates workspace `ws` (for this crate's tests).
    pub(crate) fn create_workspace(ws: &str) -> Txn {
        let ws = Workspace { workspace_id: ws.into(), name: "w".into(), settings: WorkspaceSettings::default(), hmac_secret: vec![1; 32], created_at: 1 };
        Txn { mutations: vec![Mutation::InsertWorkspace(ws)], seal: vec![] }
    }

    /// A transaction that stores decision `id` in `ws` and seals it (for this crate's tests).
    pub(crate) fn decision_in(ws: &str, id: &str, n: u64, content: Option<String>) -> Txn {
        let body = match json!({ "kind": "decision", "n": n }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let row = DecisionRow {
            decision_id: id.into(),
            workspace_id: ws.into(),
            agent_id: None,
            session_id: None,
            action_type: "x".into(),
            decision: "allow".into(),
            created_at: n as i64,
            vault_seq: None,
            content,
            body: json!({ "n": n }),
            sealed_leaf: None,
            digests: None,
        };
        Txn { mutations: vec![Mutation::InsertDecision { row, seal: Some(0) }], seal: vec![SealRequest { workspace_id: ws.into(), body }] }
    }

    fn decision(id: &str, n: u64) -> Txn {
        decision_in(WS, id, n, None)
    }

    /// Run exactly these transactions as one batch; the sealed sequence number of
    /// each, or `None` where it was refused.
    fn run(w: &mut Writer<rusqlite::Connection>, txns: Vec<Txn>) -> Vec<Option<u64>> {
        let mut waiting = Vec::new();
        let batch = txns
            .into_iter()
            .map(|t| {
                let (tx, rx) = oneshot::channel();
                waiting.push(rx);
                Job::Commit(Prepared::new(t), tx)
            })
            .collect();
        w.run_batch(batch);
        waiting.into_iter().map(|mut rx| rx.try_recv().unwrap().1.ok().map(|s| s.first().map_or(u64::MAX, |s| s.seq))).collect()
    }

    fn stored_seqs(w: &Writer<rusqlite::Connection>) -> Vec<i64> {
        let mut seqs = Vec::new();
        w.conn
            .query("SELECT vault_seq FROM decisions ORDER BY vault_seq", &[], &mut |r| {
                seqs.push(r.get::<i64>(0)?);
                Ok(())
            })
            .unwrap();
        seqs
    }

    #[test]
    fn a_failing_job_spares_its_batch_with_and_without_savepoints() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir);
        let create = create_workspace(WS);

        // Without savepoints: the duplicate id fails after its seal was appended, so the
        // batch is rolled back and run again with them.
        assert!(w.careful_until.is_none());
        let got = run(&mut w, vec![create, decision("dec_a", 0), decision("dec_a", 1), decision("dec_b", 2)]);
        assert_eq!(got, vec![Some(u64::MAX), Some(0), None, Some(1)]);
        assert!(w.careful_until.is_some(), "a failure switches the next batches to savepoints");

        assert_eq!(w.stats.lock().reruns, 1);

        // With savepoints from the start (the switch holds for a while): the same
        // outcome, in one run.
        let got = run(&mut w, vec![decision("dec_c", 3), decision("dec_b", 4), decision("dec_d", 5)]);
        assert_eq!(got, vec![Some(2), None, Some(3)]);
        assert_eq!(w.stats.lock().reruns, 1, "the batch ran once, with savepoints");

        // Back without savepoints: a clean batch, and the log goes on where it was.
        w.careful_until = None;
        assert_eq!(run(&mut w, vec![decision("dec_e", 6), decision("dec_f", 7)]), vec![Some(4), Some(5)]);
        assert!(w.careful_until.is_none());
        assert_eq!(stored_seqs(&w), vec![0, 1, 2, 3, 4, 5]);
        drop(w);
        let checks = crate::sqlite::check_vault_file(&dir.path().join("w.db"), &[], &mut |_, _, _| {}).unwrap();
        assert_eq!(checks[0].entries, 6);
        assert_eq!(checks[0].first_bad, None);
    }
}
