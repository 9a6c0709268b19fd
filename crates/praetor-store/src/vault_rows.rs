//! The vault's storage adapter, for both backends: stored hashes as a `HashReader`,
//! the per-workspace appender, proofs, checkpoints, and the full self-check behind
//! `praetor vault check`.

use praetor_vault::merkle::{Frontier, HashReader, leaf_hash, stored_hash_count};
use praetor_vault::{CanonicalWithSlot, GENESIS_CHAIN_HASH, LogState, VaultError, chain_hash, verify_entry_hmac};
use serde_json::Value;

use crate::model::{CheckpointRow, VaultEntryRow};
use crate::sql::{Db, Row, args};
use crate::{LogHead, Result, Sealed, StoreError};

/// Reads a workspace's stored hashes through one connection. On the writer's
/// connection it also sees the current batch's uncommitted hashes.
pub struct SqlHashReader<'c> {
    conn: &'c dyn Db,
    ws: &'c str,
}

impl HashReader for SqlHashReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, VaultError> {
        indexes
            .iter()
            .map(|&i| {
                let hash: Option<[u8; 32]> = self
                    .conn
                    .value("SELECT hash FROM vault_hashes WHERE workspace_id = ?1 AND idx = ?2", args![self.ws, i])
                    .map_err(|e| VaultError::Storage { reason: e.to_string() })?;
                hash.ok_or(VaultError::MissingHash { index: i })
            })
            .collect()
    }
}

/// The number of entries in a workspace's log.
pub fn log_size(conn: &dyn Db, ws: &str) -> Result<u64> {
    let max: Option<i64> = conn.value("SELECT MAX(seq) FROM vault_entries WHERE workspace_id = ?1", args![ws])?.flatten();
    Ok(max.map(|m| m as u64 + 1).unwrap_or(0))
}

/// Every workspace that has entries in the vault, whether or not the store still lists
/// it: one indexed lookup per workspace.
pub fn logged_workspaces(conn: &dyn Db) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut after = String::new();
    while let Some(ws) = conn.value::<Option<String>>("SELECT MIN(workspace_id) FROM vault_entries WHERE workspace_id > ?1", args![after])?.flatten() {
        after.clone_from(&ws);
        found.push(ws);
    }
    Ok(found)
}

/// One workspace's appender, as the writer keeps it.
#[derive(Clone)]
pub struct OpenLog {
    ws: String,
    secret: Vec<u8>,
    state: LogState,
}

impl OpenLog {
    /// Rebuild from the store in O(log n) reads: the size, the last chain hash and the
    /// frontier's stored hashes. No tree is recomputed.
    pub fn restore(conn: &dyn Db, ws: &str) -> Result<OpenLog> {
        let secret: Vec<u8> = conn
            .value("SELECT hmac_secret FROM workspaces WHERE workspace_id = ?1", args![ws])?
            .ok_or_else(|| StoreError::Corrupt(format!("workspace `{ws}` does not exist")))?;
        let size = log_size(conn, ws)?;
        let chain_head = if size == 0 {
            GENESIS_CHAIN_HASH
        } else {
            conn.value("SELECT chain_hash FROM vault_entries WHERE workspace_id = ?1 AND seq = ?2", args![ws, size - 1])?
                .ok_or_else(|| StoreError::Corrupt(format!("entry {} of `{ws}` is missing", size - 1)))?
        };
        let state = LogState::restore(size, chain_head, &SqlHashReader { conn, ws })?;
        Ok(OpenLog { ws: ws.to_owned(), secret, state })
    }

    /// Seal one entry: fill in its `seq`, extend the tree and chain, and write the entry
    /// and its new stored hashes (uncommitted until the batch commits).
    pub fn append(&mut self, conn: &dyn Db, entry: &CanonicalWithSlot) -> Result<Sealed> {
        let seq = self.state.size();
        let time_ms = chrono_free_now_ms();
        // `CanonicalWithSlot` produced these bytes, so they are canonical by
        // construction: append by hash rather than have the appender parse and
        // re-encode them.
        let leaf = entry.fill(seq);
        let mut next = self.state.clone();
        let a = next.append_leaf_hash(leaf_hash(&leaf), &self.secret)?;
        // Sent with the batch's other writes (see `Db::execute_later`): should one fail,
        // the writer rebuilds every appender from the store before its next append.
        conn.insert_row_later(
            "INSERT INTO vault_entries (workspace_id, seq, leaf, leaf_hash, chain_hash, hmac, created_at)
             VALUES (?1,?2,?3,?4,?5,?6,?7)",
            args![self.ws, a.seq, leaf, a.leaf_hash, a.chain_hash, a.hmac, time_ms],
        )?;
        for (idx, hash) in &a.new_stored_hashes {
            conn.insert_row_later("INSERT INTO vault_hashes (workspace_id, idx, hash) VALUES (?1,?2,?3)", args![self.ws, *idx, hash])?;
        }
        self.state = next;
        Ok(Sealed { seq: a.seq, leaf_hash: a.leaf_hash })
    }

    pub fn size(&self) -> u64 {
        self.state.size()
    }
}

/// Wall-clock milliseconds for the row's `created_at` (informational; the sealed
/// time is inside the leaf).
fn chrono_free_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn read_head(conn: &dyn Db, ws: &str) -> Result<LogHead> {
    let size = log_size(conn, ws)?;
    let frontier = Frontier::restore(size, &SqlHashReader { conn, ws })?;
    Ok(LogHead { size, root: frontier.root() })
}

pub fn entries(conn: &dyn Db, ws: &str, start: u64, end: u64) -> Result<Vec<VaultEntryRow>> {
    conn.all(
        "SELECT seq, leaf, leaf_hash, chain_hash, hmac, created_at FROM vault_entries
         WHERE workspace_id = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq",
        args![ws, start, end],
        entry_from_row,
    )
}

fn entry_from_row(r: &dyn Row) -> Result<VaultEntryRow> {
    Ok(VaultEntryRow {
        seq: r.get(0)?,
        leaf: r.get(1)?,
        leaf_hash: r.get(2)?,
        chain_hash: r.get(3)?,
        hmac: r.get(4)?,
        created_at: r.get(5)?,
    })
}

fn check_size(conn: &dyn Db, ws: &str, size: u64) -> Result<()> {
    let have = log_size(conn, ws)?;
    if size > have {
        return Err(VaultError::InvalidTreeSizes { size1: size, size2: have }.into());
    }
    Ok(())
}

pub fn inclusion_proof(conn: &dyn Db, ws: &str, index: u64, size: u64) -> Result<Vec<[u8; 32]>> {
    check_size(conn, ws, size)?;
    Ok(praetor_vault::merkle::prove_inclusion(index, size, &SqlHashReader { conn, ws })?)
}

pub fn consistency_proof(conn: &dyn Db, ws: &str, first: u64, second: u64) -> Result<Vec<[u8; 32]>> {
    check_size(conn, ws, second)?;
    Ok(praetor_vault::merkle::prove_consistency(first, second, &SqlHashReader { conn, ws })?)
}

pub fn tree_root(conn: &dyn Db, ws: &str, size: u64) -> Result<[u8; 32]> {
    check_size(conn, ws, size)?;
    Ok(praetor_vault::merkle::tree_hash(size, &SqlHashReader { conn, ws })?)
}

pub fn prefix_hashes(conn: &dyn Db, ws: &str, size: u64) -> Result<Vec<[u8; 32]>> {
    check_size(conn, ws, size)?;
    Ok(praetor_vault::merkle::prefix_hashes(size, &SqlHashReader { conn, ws })?)
}

pub fn insert_checkpoint(conn: &dyn Db, ws: &str, cp: &CheckpointRow) -> Result<()> {
    conn.execute(
        "INSERT INTO vault_checkpoints (workspace_id, size, root, note, created_at) VALUES (?1,?2,?3,?4,?5)
         ON CONFLICT (workspace_id, size) DO NOTHING",
        args![ws, cp.size, cp.root, cp.note, cp.created_at],
    )?;
    Ok(())
}

fn checkpoint_from_row(r: &dyn Row) -> Result<CheckpointRow> {
    Ok(CheckpointRow { size: r.get(0)?, root: r.get(1)?, note: r.get(2)?, created_at: r.get(3)? })
}

const CHECKPOINT_COLUMNS: &str = "size, root, note, created_at";

pub fn latest_checkpoint(conn: &dyn Db, ws: &str) -> Result<Option<CheckpointRow>> {
    conn.first(
        &format!("SELECT {CHECKPOINT_COLUMNS} FROM vault_checkpoints WHERE workspace_id = ?1 ORDER BY size DESC LIMIT 1"),
        args![ws],
        checkpoint_from_row,
    )
}

/// The smallest checkpoint with `size >= at_least`.
pub fn checkpoint_covering(conn: &dyn Db, ws: &str, at_least: u64) -> Result<Option<CheckpointRow>> {
    conn.first(
        &format!("SELECT {CHECKPOINT_COLUMNS} FROM vault_checkpoints WHERE workspace_id = ?1 AND size >= ?2 ORDER BY size ASC LIMIT 1"),
        args![ws, at_least],
        checkpoint_from_row,
    )
}

pub fn checkpoints_between(conn: &dyn Db, ws: &str, from_size: u64, to_size: u64) -> Result<Vec<CheckpointRow>> {
    conn.all(
        &format!("SELECT {CHECKPOINT_COLUMNS} FROM vault_checkpoints WHERE workspace_id = ?1 AND size >= ?2 AND size <= ?3 ORDER BY size"),
        args![ws, from_size, to_size],
        checkpoint_from_row,
    )
}

/// The result of re-verifying a workspace's stored log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultCheck {
    pub workspace_id: String,
    pub entries: u64,
    pub checkpoints: u64,
    /// The first bad sequence number and what is wrong with it.
    pub first_bad: Option<(u64, String)>,
    /// The bad entries found after the first, up to [`BAD_ENTRIES_LISTED`] in all with
    /// it: the walk goes on past a bad entry, checking each later one on its own, so
    /// that an auditor sees how far tampering reaches.
    pub more_bad: Vec<(u64, String)>,
    /// How many entries the walk found bad or missing (a run of missing entries counts
    /// each, and is named once), listed or not.
    pub bad_entries: u64,
    /// Decision rows checked against the entries sealed for them (none when the log
    /// itself is bad).
    pub decisions: u64,
    /// Violation rows checked against their decisions' entries.
    pub violations: u64,
    /// The first decision or violation row that departs from what is sealed of it, or
    /// a sealed decision or violation that has no row, and what is wrong.
    pub bad_row: Option<String>,
    /// Why the rows could not be checked at all (a store an older version wrote, not
    /// migrated yet), when they could not.
    pub rows_unchecked: Option<String>,
}

/// Re-verify everything stored for one workspace: each leaf against its leaf hash, the
/// chain, each HMAC, every stored tree hash against a recomputation, and each
/// checkpoint's root; then each decision's and violation's row against what is sealed
/// of it ([`check_decision_rows`], [`check_violation_rows`]). Reports the first bad
/// sequence number, or the first bad row; rows that cannot be read at all (a store an
/// older version wrote) are reported as not checked. `progress(done, total)`.
pub fn check_vault(conn: &dyn Db, ws: &str, verifiers: &[praetor_vault::NoteVerifier], progress: &mut dyn FnMut(u64, u64)) -> Result<VaultCheck> {
    let mut report = check_log(conn, ws, verifiers, progress)?;
    if report.first_bad.is_none()
        && let Err(e) = check_rows(conn, ws, &mut report, progress)
    {
        report.check.rows_unchecked = Some(e.to_string());
    }
    Ok(report.check)
}

/// The decision rows, then the violation rows, of a log that checked out.
fn check_rows(conn: &dyn Db, ws: &str, report: &mut LogCheck, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let decisions = check_decision_rows(conn, ws, &report.sealed_decisions, progress)?;
    report.check.decisions = decisions.rows;
    report.check.bad_row = decisions.bad;
    if report.check.bad_row.is_none() {
        let logged = report.sealed_decisions.len() as u64;
        let (violations, bad) = check_violation_rows(conn, ws, logged, decisions.sealed_violations, &report.older_violations)?;
        report.check.violations = violations;
        report.check.bad_row = bad;
    }
    Ok(())
}

impl VaultCheck {
    /// A report on `ws` with nothing checked yet.
    fn empty(ws: &str) -> VaultCheck {
        VaultCheck {
            workspace_id: ws.to_owned(), entries: 0, checkpoints: 0, first_bad: None, more_bad: Vec::new(), bad_entries: 0, decisions: 0,
            violations: 0, bad_row: None, rows_unchecked: None,
        }
    }
}

/// A log's check, with which of its entries seal a decision.
struct LogCheck {
    check: VaultCheck,
    /// By sequence number, for every entry checked.
    sealed_decisions: Vec<bool>,
    /// The violations sealed in `violation.recorded` entries (logs written, at least
    /// partly, before a decision's entry sealed its violations), by id.
    older_violations: OlderViolations,
}

impl std::ops::Deref for LogCheck {
    type Target = VaultCheck;
    fn deref(&self) -> &VaultCheck {
        &self.check
    }
}

/// What [`check_decision_rows`] found.
struct DecisionRows {
    rows: u64,
    bad: Option<String>,
    /// The violations the checked rows' entries seal.
    sealed_violations: u64,
}

/// Each decision row of `ws` against the entry sealed for it
/// ([`crate::DecisionRow::departs_from`]), and every decision entry the log check
/// covered (`sealed_decisions`, by sequence number) against the rows: one without a
/// row was deleted. A row sealed after that check (by a server still writing: a row
/// and its entry commit together) is compared with its entry too, but not counted.
fn check_decision_rows(conn: &dyn Db, ws: &str, sealed_decisions: &[bool], progress: &mut dyn FnMut(u64, u64)) -> Result<DecisionRows> {
    let logged = sealed_decisions.len() as u64;
    let total: u64 = conn.value("SELECT COUNT(*) FROM decisions WHERE workspace_id = ?1", args![ws])?.unwrap_or(0);
    let mut has_row = vec![false; sealed_decisions.len()];
    let (mut checked, mut bad, mut sealed_violations) = (0u64, None, 0u64);
    crate::rows::each_decision(conn, ws, &mut |row| {
        if bad.is_some() {
            return Ok(());
        }
        checked += 1;
        if checked.is_multiple_of(10_000) {
            progress(checked, total);
        }
        let row = match row {
            Ok(row) => row,
            Err((id, e)) => {
                bad = Some(format!("decision `{id}`: its row cannot be read ({e})"));
                return Ok(());
            }
        };
        let Some(seq) = row.vault_seq else {
            bad = Some(format!("decision `{}` has no vault entry", row.decision_id));
            return Ok(());
        };
        let Some(entry) = row.sealed_leaf.as_deref().and_then(|leaf| serde_json::from_slice::<serde_json::Map<String, Value>>(leaf).ok()) else {
            bad = Some(format!("decision `{}` (entry {seq}): its entry is missing or unreadable", row.decision_id));
            return Ok(());
        };
        if let Some(why) = row.departs_from(&entry) {
            bad = Some(format!("decision `{}` (entry {seq}): {why}", row.decision_id));
        } else if seq < logged
            && let Some(found) = has_row.get_mut(seq as usize)
        {
            *found = true;
            sealed_violations += entry.get("violations").and_then(Value::as_array).map_or(0, |v| v.len() as u64);
        }
        Ok(())
    })?;
    progress(checked, total);
    if bad.is_none()
        && let Some(seq) = (0..sealed_decisions.len()).find(|&s| sealed_decisions[s] && !has_row[s])
    {
        bad = Some(format!("entry {seq} seals a decision that has no row"));
    }
    Ok(DecisionRows { rows: checked, bad, sealed_violations })
}

/// Each violation row of `ws` against what is sealed of it
/// ([`crate::Violation::departs_from`]): in its decision's entry, or, for logs written
/// before decisions sealed their violations, in a `violation.recorded` entry of its
/// own (`older`). Then the rows compared against what the log check covered (decisions
/// sealed before `logged`, whose entries seal `sealed` violations, and every older
/// entry): fewer rows means some were deleted. The rows checked, and the first problem.
fn check_violation_rows(conn: &dyn Db, ws: &str, logged: u64, sealed: u64, older: &OlderViolations) -> Result<(u64, Option<String>)> {
    let (mut checked, mut matched, mut matched_older, mut bad) = (0u64, 0u64, 0usize, None);
    // In order of time, then decision: a decision's violation rows come together, and
    // its entry is parsed once for all of them (and decisions and entries are read in
    // the order they were stored).
    let mut last_entry: Option<(i64, Option<serde_json::Map<String, Value>>)> = None;
    conn.query(
        "SELECT v.violation_id, v.rule_id, v.severity, v.agent_id, v.decision_id, v.at, d.vault_seq, e.leaf, v.body FROM violations v
         LEFT JOIN decisions d ON d.workspace_id = v.workspace_id AND d.decision_id = v.decision_id
         LEFT JOIN vault_entries e ON e.workspace_id = d.workspace_id AND e.seq = d.vault_seq
         WHERE v.workspace_id = ?1 ORDER BY v.at, v.decision_id",
        args![ws],
        &mut |r| {
            if bad.is_some() {
                return Ok(());
            }
            checked += 1;
            let read = || -> Result<ViolationRow> {
                // The body the row stores itself, if any (see `VIOLATION_BODY_IN_ENTRY`);
                // one that is not JSON is kept as its text, which departs (as `null` does).
                let stored: String = r.get(8)?;
                let own_body = (!stored.is_empty()).then(|| serde_json::from_str(&stored).unwrap_or(Value::String(stored)));
                let v = crate::Violation {
                    violation_id: r.get(0)?, workspace_id: ws.to_owned(), rule_id: r.get(1)?, severity: r.get(2)?, agent_id: r.get(3)?,
                    decision_id: r.get(4)?, at: r.get(5)?, body: Value::Null, decision_agent: None,
                };
                Ok((v, r.get(6)?, r.get(7)?, own_body))
            };
            let (v, seq, leaf, own_body) = match read() {
                Ok(read) => read,
                Err(e) => {
                    let id: String = r.get(0).unwrap_or_default();
                    bad = Some(format!("violation `{id}`: its row cannot be read ({e})"));
                    return Ok(());
                }
            };
            let entry = match (seq, &last_entry) {
                (Some(seq), Some((cached, entry))) if *cached == seq => entry,
                _ => {
                    let parsed = leaf.and_then(|leaf| serde_json::from_slice::<serde_json::Map<String, Value>>(&leaf).ok());
                    &last_entry.insert((seq.unwrap_or(-1), parsed)).1
                }
            };
            let why = match (entry.as_ref(), older.get(&v.violation_id)) {
                (None, _) => Some("its decision has no readable sealed entry".to_owned()),
                (Some(entry), Some(own)) if !entry.contains_key("violations") => v.departs_from(own).or_else(|| {
                    matched_older += 1;
                    None
                }),
                (Some(entry), _) => v
                    .departs_from(entry)
                    .or_else(|| own_body.as_ref().and_then(|body| v.stored_body_departs(body, entry)))
                    .or_else(|| {
                        matched += u64::from(seq.is_some_and(|s| (0..logged as i64).contains(&s)));
                        None
                    }),
            };
            if let Some(why) = why {
                bad = Some(format!("violation `{}` of decision `{}`: {why}", v.violation_id, v.decision_id));
            }
            Ok(())
        },
    )?;
    if bad.is_none() && matched < sealed {
        bad = Some(format!("{} of the {sealed} violations sealed in decision entries have no row", sealed - matched));
    }
    if bad.is_none() && matched_older < older.len() {
        bad = Some(format!("{} of the {} violations sealed in `violation.recorded` entries have no row", older.len() - matched_older, older.len()));
    }
    Ok((checked, bad))
}

/// A violation row as `check_violation_rows` reads it: the violation's columns, its
/// decision's entry number and leaf, and the body the row stores itself, if any.
type ViolationRow = (crate::Violation, Option<i64>, Option<Vec<u8>>, Option<Value>);

/// The log part of [`check_vault`].
fn check_log(conn: &dyn Db, ws: &str, verifiers: &[praetor_vault::NoteVerifier], progress: &mut dyn FnMut(u64, u64)) -> Result<LogCheck> {
    let secret: Vec<u8> = conn
        .value("SELECT hmac_secret FROM workspaces WHERE workspace_id = ?1", args![ws])?
        .ok_or_else(|| StoreError::Corrupt(format!("workspace `{ws}` does not exist")))?;
    let total: u64 = conn.value("SELECT COUNT(*) FROM vault_entries WHERE workspace_id = ?1", args![ws])?.unwrap_or(0);
    let mut report = VaultCheck { entries: total, ..VaultCheck::empty(ws) };
    let mut sealed_decisions = Vec::new();
    let mut older_violations = OlderViolations::new();
    let checkpoint_sizes: Vec<(u64, [u8; 32])> =
        conn.all("SELECT size, root FROM vault_checkpoints WHERE workspace_id = ?1 ORDER BY size", args![ws], |r| Ok((r.get(0)?, r.get(1)?)))?;
    report.checkpoints = checkpoint_sizes.len() as u64;
    let wanted: std::collections::HashSet<u64> = checkpoint_sizes.iter().map(|(s, _)| *s).collect();
    // The chain hash the next entry must follow from; none after a missing or bad
    // entry, whose successor is then checked on its own (its leaf hash, and its HMAC
    // over its stored chain hash and sequence number).
    let mut link = Some(GENESIS_CHAIN_HASH);
    let mut frontier = Frontier::new();
    let mut recomputed_hashes: Vec<[u8; 32]> = Vec::new();
    let mut expected_seq = 0u64;
    // The empty tree has a root too: an export of no entries signs a checkpoint of it.
    let mut roots_by_size = std::collections::HashMap::from([(0, frontier.root())]);
    let mut bad = BadEntries::default();
    conn.query(
        "SELECT seq, leaf, leaf_hash, chain_hash, hmac, created_at FROM vault_entries WHERE workspace_id = ?1 ORDER BY seq",
        args![ws],
        &mut |row| {
            // Rows come in order of `seq`, which is unique. One before the next expected
            // number (a negative `seq`) is out of the log's order, and named where the
            // walk is; one further on leaves a gap.
            let stored_seq: Option<i64> = row.get(0).ok();
            if let Some(seq) = stored_seq.filter(|&s| s < 0 || (s as u64) < expected_seq) {
                bad.add(expected_seq, format!("a row stored at seq {seq} is out of the log's order"));
                link = None;
                return Ok(());
            }
            if let Some(seq) = stored_seq.map(|s| s as u64).filter(|&s| s > expected_seq) {
                let what = if seq - expected_seq > 1 { format!("entries {expected_seq} to {} are missing", seq - 1) } else { format!("entry {expected_seq} is missing") };
                bad.add_many(expected_seq, seq - expected_seq, format!("{what} (next stored is {seq})"));
                expected_seq = seq;
                link = None;
            }
            let e = match entry_from_row(row) {
                Ok(e) => e,
                Err(err) => {
                    bad.add(expected_seq, format!("entry row is malformed: {err}"));
                    expected_seq += 1;
                    link = None;
                    return Ok(());
                }
            };
            let checked = check_entry(&e, link.as_ref(), &secret);
            expected_seq += 1;
            match checked {
                Err(why) => {
                    bad.add(e.seq, why);
                    link = None;
                }
                Ok((_, ch, _)) if !bad.is_empty() => link = Some(ch),
                Ok((lh, ch, leaf)) => {
                    let kind = leaf.get("kind").and_then(Value::as_str);
                    link = Some(ch);
                    sealed_decisions.push(kind == Some("decision"));
                    if kind == Some("violation.recorded")
                        && let Some(id) = leaf.get("violation_id").and_then(Value::as_str)
                    {
                        older_violations.insert(id.to_owned(), older_violation_entry(&leaf));
                    }
                    recomputed_hashes.extend(frontier.push_stored(lh)?.into_iter().map(|(_, h)| h));
                    if wanted.contains(&expected_seq) {
                        roots_by_size.insert(expected_seq, frontier.root());
                    }
                }
            }
            if expected_seq.is_multiple_of(10_000) {
                progress(expected_seq, total);
            }
            Ok(())
        },
    )?;
    if !bad.is_empty() {
        // The tree, the checkpoints and the rows are not checked past a bad entry: they
        // would all disagree from there on.
        report.bad_entries = bad.count;
        let mut listed = bad.listed.into_iter();
        report.first_bad = listed.next();
        report.more_bad = listed.collect();
        return Ok(LogCheck { check: report, sealed_decisions, older_violations });
    }
    progress(expected_seq, total);
    let fail = |seq: u64, msg: String| Some((seq, msg));
    for (size, root) in checkpoint_sizes {
        match roots_by_size.get(&size) {
            Some(r) if praetor_vault::merkle::hashes_equal(r, &root) => {}
            Some(_) => {
                report.first_bad = fail(size.saturating_sub(1), format!("checkpoint at size {size} does not match the entries"));
                return Ok(LogCheck { check: report, sealed_decisions, older_violations });
            }
            None => {
                report.first_bad = fail(expected_seq, format!("a checkpoint covers {size} entries but only {expected_seq} are stored"));
                return Ok(LogCheck { check: report, sealed_decisions, older_violations });
            }
        }
    }
    // Each signed note against its row, whose root the entries gave: read one at a time
    // (a long-lived log has one a second while it grows).
    conn.query("SELECT size, root, note FROM vault_checkpoints WHERE workspace_id = ?1 ORDER BY size", args![ws], &mut |r| {
        if report.first_bad.is_none() {
            let (size, root, note): (u64, [u8; 32], String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if let Some(why) = note_departs(&note, ws, size, &root, verifiers) {
                report.first_bad = fail(size.saturating_sub(1), format!("checkpoint at size {size}: {why}"));
            }
        }
        Ok(())
    })?;
    if report.first_bad.is_some() {
        return Ok(LogCheck { check: report, sealed_decisions, older_violations });
    }
    // Every stored tree hash must equal the recomputed one: a tampered node would
    // make the server serve proofs that do not verify. Hashes past the entries checked
    // are left alone: a server still writing appended them after the walk.
    let needed = stored_hash_count(expected_seq);
    let stored_count: u64 = conn.value("SELECT COUNT(*) FROM vault_hashes WHERE workspace_id = ?1 AND idx < ?2", args![ws, needed])?.unwrap_or(0);
    if stored_count != needed {
        report.first_bad = fail(expected_seq, format!("the store holds {stored_count} of the {needed} tree hashes {expected_seq} entries need"));
        return Ok(LogCheck { check: report, sealed_decisions, older_violations });
    }
    let all_hashes: u64 = conn.value("SELECT COUNT(*) FROM vault_hashes WHERE workspace_id = ?1", args![ws])?.unwrap_or(0);
    let entries_now: u64 = conn.value("SELECT COUNT(*) FROM vault_entries WHERE workspace_id = ?1", args![ws])?.unwrap_or(0);
    if all_hashes > needed && entries_now == expected_seq {
        report.first_bad = fail(expected_seq, format!("the store holds {all_hashes} tree hashes; {expected_seq} entries need {needed}"));
        return Ok(LogCheck { check: report, sealed_decisions, older_violations });
    }
    conn.query("SELECT idx, hash FROM vault_hashes WHERE workspace_id = ?1 AND idx < ?2 ORDER BY idx", args![ws, needed], &mut |r| {
        if report.first_bad.is_some() {
            return Ok(());
        }
        let idx: u64 = r.get(0)?;
        let hash: Option<[u8; 32]> = r.get(1).ok();
        let ok = hash.is_some_and(|hash| recomputed_hashes.get(idx as usize).is_some_and(|h| praetor_vault::merkle::hashes_equal(h, &hash)));
        if !ok {
            report.first_bad = fail(seq_of_stored_hash(idx), format!("stored tree hash {idx} does not match the entries"));
        }
        Ok(())
    })?;
    Ok(LogCheck { check: report, sealed_decisions, older_violations })
}

/// Where a stored checkpoint's signed note departs from its row (whose size and root
/// the entries were checked against): a note that is not a checkpoint, one of another
/// size or root, or, when `verifiers` are given, one no trusted key signed. The note is
/// what receipts and exports hand out, and a row rewritten with the entries would
/// otherwise pass.
fn note_departs(note: &str, ws: &str, size: u64, root: &[u8; 32], verifiers: &[praetor_vault::NoteVerifier]) -> Option<String> {
    let text = if verifiers.is_empty() {
        praetor_vault::checkpoint::split_note(note).map(|(text, _)| text.to_owned())
    } else {
        praetor_vault::checkpoint::open_note(note, verifiers).map(|(text, _)| text)
    };
    let signed = match text.and_then(|text| praetor_vault::Checkpoint::parse(&text)) {
        Ok(cp) => cp,
        Err(e) => return Some(format!("its signed note does not open: {e}")),
    };
    if signed.size != size || !praetor_vault::merkle::hashes_equal(&signed.root, root) {
        return Some(format!("its signed note is of size {} and another root than its row's", signed.size));
    }
    // One key signs every workspace's log: the note must name this one (`<origin>/<ws>`).
    if signed.origin.rsplit_once('/').is_none_or(|(_, of)| of != ws) {
        return Some(format!("its signed note is of the log `{}`, not this workspace's", signed.origin));
    }
    None
}

/// An entry that checked out: its leaf hash, its chain hash and its leaf.
type CheckedEntry = ([u8; 32], [u8; 32], Value);

/// At most this many bad entries are named in a report (the first among them).
pub const BAD_ENTRIES_LISTED: usize = 20;

/// The bad entries a walk found: the first [`BAD_ENTRIES_LISTED`], and how many.
#[derive(Default)]
struct BadEntries {
    listed: Vec<(u64, String)>,
    count: u64,
}

impl BadEntries {
    fn add(&mut self, seq: u64, why: String) {
        self.add_many(seq, 1, why);
    }

    /// `n` entries from `seq` on, named once (a run of missing entries).
    fn add_many(&mut self, seq: u64, n: u64, why: String) {
        self.count = self.count.saturating_add(n);
        if self.listed.len() < BAD_ENTRIES_LISTED {
            self.listed.push((seq, why));
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Violations sealed in `violation.recorded` entries, by id: each as a decision entry
/// sealing it alone (its decision and agent, no time: such an entry's time is when it
/// was sealed), for [`crate::Violation::departs_from`].
type OlderViolations = std::collections::HashMap<String, serde_json::Map<String, Value>>;

fn older_violation_entry(leaf: &Value) -> serde_json::Map<String, Value> {
    let field = |f: &str| leaf.get(f).cloned().unwrap_or(Value::Null);
    let sealed: serde_json::Map<String, Value> = ["violation_id", "rule_id", "severity"].iter().map(|f| ((*f).to_owned(), field(f))).collect();
    [("decision_id", field("decision_id")), ("agent_id", field("agent_id")), ("violations", Value::Array(vec![Value::Object(sealed)]))]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// Check one stored entry: its canonical form, leaf hash, chain hash (when the chain
/// hash it must follow from is known: `link`) and HMAC; or the first problem. Without
/// a link (after a missing or bad entry) the HMAC is checked over the entry's stored
/// chain hash: only the key holder could have made that.
fn check_entry(e: &VaultEntryRow, link: Option<&[u8; 32]>, secret: &[u8]) -> Result<CheckedEntry, String> {
    let Ok(leaf) = praetor_vault::parse_canonical(&e.leaf) else {
        return Err("leaf is not canonical json".into());
    };
    if let Some(seq) = leaf.get("seq").and_then(Value::as_u64)
        && seq != e.seq
    {
        return Err(format!("leaf says seq {seq} but is stored at {}", e.seq));
    }
    let lh = leaf_hash(&e.leaf);
    if !praetor_vault::merkle::hashes_equal(&lh, &e.leaf_hash) {
        return Err("leaf does not match its leaf hash".into());
    }
    let ch = match link {
        Some(prev) => chain_hash(prev, &lh),
        None => e.chain_hash,
    };
    if !praetor_vault::merkle::hashes_equal(&ch, &e.chain_hash) {
        return Err("chain hash does not follow from the previous entry".into());
    }
    if !verify_entry_hmac(secret, e.seq, &lh, &ch, &e.hmac) {
        return Err("hmac does not verify under the workspace secret".into());
    }
    Ok((lh, ch, leaf))
}

/// The first entry whose append produced stored hash `idx` (for error messages).
fn seq_of_stored_hash(idx: u64) -> u64 {
    // stored_hash_count(n) is increasing; find the smallest n with count(n+1) > idx.
    let (mut lo, mut hi) = (0u64, idx + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if stored_hash_count(mid + 1) > idx { hi = mid } else { lo = mid + 1 }
    }
    lo
}

/// [`check_vault`] for every workspace in the database, oldest first. With
/// `savepoint_per_workspace` (PostgreSQL, where a failed statement aborts the whole
/// transaction) each workspace is checked inside a savepoint.
pub fn check_every_vault(
    conn: &dyn Db,
    savepoint_per_workspace: bool,
    verifiers: &[praetor_vault::NoteVerifier],
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Vec<VaultCheck>> {
    let ids: Vec<String> = conn.all("SELECT workspace_id FROM workspaces ORDER BY created_at", args![], |r| r.get(0))?;
    // A log whose workspace row is gone cannot be checked (its HMAC secret went with
    // it), and would otherwise be passed over in silence.
    let mut reports: Vec<VaultCheck> = logged_workspaces(conn)?
        .into_iter()
        .filter(|ws| !ids.contains(ws))
        .map(|ws| VaultCheck {
            entries: conn.value("SELECT COUNT(*) FROM vault_entries WHERE workspace_id = ?1", args![ws]).ok().flatten().unwrap_or(0),
            first_bad: Some((0, "the store holds this log but no `workspaces` row for it: the row was removed, and with it the log's HMAC secret".to_owned())),
            bad_entries: 1,
            ..VaultCheck::empty(&ws)
        })
        .collect();
    for ws in ids {
        // Inside one transaction (PostgreSQL's snapshot) a statement that fails, such
        // as a row pass on a database an older version wrote, aborts the transaction:
        // each workspace gets a savepoint so that the next one is still checked.
        if savepoint_per_workspace {
            conn.batch("SAVEPOINT check_workspace")?;
        }
        let report = check_vault(conn, &ws, verifiers, &mut |done, total| progress(&ws, done, total));
        if savepoint_per_workspace {
            conn.batch("ROLLBACK TO SAVEPOINT check_workspace; RELEASE SAVEPOINT check_workspace")?;
        }
        reports.push(report?);
    }
    Ok(reports)
}
