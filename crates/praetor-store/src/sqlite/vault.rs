//! The vault's storage adapter for SQLite: stored hashes as a `HashReader`, the
//! per-workspace appender, proofs, checkpoints, and the full self-check behind
//! `praetor vault check`.

use praetor_vault::merkle::{Frontier, HashReader, leaf_hash, stored_hash_count};
use praetor_vault::{GENESIS_CHAIN_HASH, LogState, VaultError, canonical_json, chain_hash, verify_entry_hmac};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use crate::model::{CheckpointRow, VaultEntryRow};
use crate::{LogHead, Result, Sealed, StoreError};

/// Reads a workspace's stored hashes through one connection. On the writer's
/// connection it also sees the current batch's uncommitted hashes.
pub struct SqlHashReader<'c> {
    conn: &'c Connection,
    ws: &'c str,
}

impl HashReader for SqlHashReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, VaultError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash FROM vault_hashes WHERE workspace_id = ?1 AND idx = ?2")
            .map_err(|e| VaultError::Storage { reason: e.to_string() })?;
        indexes
            .iter()
            .map(|&i| {
                let blob: Option<Vec<u8>> = stmt
                    .query_row(params![self.ws, i as i64], |r| r.get(0))
                    .optional()
                    .map_err(|e| VaultError::Storage { reason: e.to_string() })?;
                blob.and_then(|b| b.try_into().ok()).ok_or(VaultError::MissingHash { index: i })
            })
            .collect()
    }
}

fn hash32(blob: Vec<u8>, what: &str) -> rusqlite::Result<[u8; 32]> {
    blob.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, format!("{what} is not 32 bytes").into())
    })
}

fn log_size(conn: &Connection, ws: &str) -> Result<u64> {
    let max: Option<i64> =
        conn.query_row("SELECT MAX(seq) FROM vault_entries WHERE workspace_id = ?1", [ws], |r| r.get(0))?;
    Ok(max.map(|m| m as u64 + 1).unwrap_or(0))
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
    pub fn restore(conn: &Connection, ws: &str) -> Result<OpenLog> {
        let secret: Vec<u8> = conn
            .query_row("SELECT hmac_secret FROM workspaces WHERE workspace_id = ?1", [ws], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::Corrupt(format!("workspace `{ws}` does not exist")))?;
        let size = log_size(conn, ws)?;
        let chain_head = if size == 0 {
            GENESIS_CHAIN_HASH
        } else {
            let blob: Vec<u8> = conn.query_row(
                "SELECT chain_hash FROM vault_entries WHERE workspace_id = ?1 AND seq = ?2",
                params![ws, (size - 1) as i64],
                |r| r.get(0),
            )?;
            hash32(blob, "chain hash")?
        };
        let state = LogState::restore(size, chain_head, &SqlHashReader { conn, ws })?;
        Ok(OpenLog { ws: ws.to_owned(), secret, state })
    }

    /// Seal one entry: add its `seq`, encode it canonically, extend the tree and chain,
    /// and write the entry and its new stored hashes (uncommitted until the batch commits).
    pub fn append(&mut self, conn: &Connection, body: &Map<String, Value>) -> Result<Sealed> {
        let seq = self.state.size();
        let mut body = body.clone();
        body.insert("seq".into(), Value::from(seq));
        let time_ms = chrono_free_now_ms();
        // `canonical_json` produced these bytes, so they are canonical by construction:
        // append by hash rather than have the appender parse and re-encode them.
        let leaf = canonical_json(&Value::Object(body))?;
        let mut next = self.state.clone();
        let a = next.append_leaf_hash(leaf_hash(&leaf), &self.secret)?;
        conn.prepare_cached(
            "INSERT INTO vault_entries (workspace_id, seq, leaf, leaf_hash, chain_hash, hmac, created_at)
             VALUES (?1,?2,?3,?4,?5,?6,?7)",
        )?
        .execute(params![self.ws, a.seq as i64, leaf, a.leaf_hash.as_slice(), a.chain_hash.as_slice(), a.hmac.as_slice(), time_ms])?;
        let mut insert = conn.prepare_cached("INSERT INTO vault_hashes (workspace_id, idx, hash) VALUES (?1,?2,?3)")?;
        for (idx, hash) in &a.new_stored_hashes {
            insert.execute(params![self.ws, *idx as i64, hash.as_slice()])?;
        }
        self.state = next;
        Ok(Sealed { seq: a.seq, leaf_hash: a.leaf_hash })
    }

    pub fn head(&self) -> LogHead {
        LogHead { size: self.state.size(), root: self.state.root() }
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

pub fn read_head(conn: &Connection, ws: &str) -> Result<LogHead> {
    let size = log_size(conn, ws)?;
    let frontier = Frontier::restore(size, &SqlHashReader { conn, ws })?;
    Ok(LogHead { size, root: frontier.root() })
}

pub fn entries(conn: &Connection, ws: &str, start: u64, end: u64) -> Result<Vec<VaultEntryRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, leaf, leaf_hash, chain_hash, hmac, created_at FROM vault_entries
         WHERE workspace_id = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![ws, start as i64, end as i64], entry_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<VaultEntryRow> {
    Ok(VaultEntryRow {
        seq: r.get::<_, i64>(0)? as u64,
        leaf: r.get(1)?,
        leaf_hash: hash32(r.get(2)?, "leaf hash")?,
        chain_hash: hash32(r.get(3)?, "chain hash")?,
        hmac: hash32(r.get(4)?, "hmac")?,
        created_at: r.get(5)?,
    })
}

fn check_size(conn: &Connection, ws: &str, size: u64) -> Result<()> {
    let have = log_size(conn, ws)?;
    if size > have {
        return Err(VaultError::InvalidTreeSizes { size1: size, size2: have }.into());
    }
    Ok(())
}

pub fn inclusion_proof(conn: &Connection, ws: &str, index: u64, size: u64) -> Result<Vec<[u8; 32]>> {
    check_size(conn, ws, size)?;
    Ok(praetor_vault::merkle::prove_inclusion(index, size, &SqlHashReader { conn, ws })?)
}

pub fn consistency_proof(conn: &Connection, ws: &str, first: u64, second: u64) -> Result<Vec<[u8; 32]>> {
    check_size(conn, ws, second)?;
    Ok(praetor_vault::merkle::prove_consistency(first, second, &SqlHashReader { conn, ws })?)
}

pub fn tree_root(conn: &Connection, ws: &str, size: u64) -> Result<[u8; 32]> {
    check_size(conn, ws, size)?;
    Ok(praetor_vault::merkle::tree_hash(size, &SqlHashReader { conn, ws })?)
}

pub fn prefix_hashes(conn: &Connection, ws: &str, size: u64) -> Result<Vec<[u8; 32]>> {
    check_size(conn, ws, size)?;
    Ok(praetor_vault::merkle::prefix_hashes(size, &SqlHashReader { conn, ws })?)
}

pub fn insert_checkpoint(conn: &Connection, ws: &str, cp: &CheckpointRow) -> Result<()> {
    conn.execute(
        "INSERT INTO vault_checkpoints (workspace_id, size, root, note, created_at) VALUES (?1,?2,?3,?4,?5)
         ON CONFLICT (workspace_id, size) DO NOTHING",
        params![ws, cp.size as i64, cp.root.as_slice(), cp.note, cp.created_at],
    )?;
    Ok(())
}

pub fn checkpoint_from_row(r: &Row<'_>) -> rusqlite::Result<Result<CheckpointRow>> {
    Ok(Ok(CheckpointRow {
        size: r.get::<_, i64>(0)? as u64,
        root: hash32(r.get(1)?, "checkpoint root")?,
        note: r.get(2)?,
        created_at: r.get(3)?,
    }))
}

/// `tail` is appended to `WHERE workspace_id = ?1`; `?2` binds `arg`.
pub fn checkpoint_where(conn: &Connection, ws: &str, tail: &str, arg: u64) -> Result<Option<CheckpointRow>> {
    let sql = format!("SELECT size, root, note, created_at FROM vault_checkpoints WHERE workspace_id = ?1 {tail}");
    let mut stmt = conn.prepare(&sql)?;
    let row = if tail.contains("?2") {
        stmt.query_row(params![ws, arg as i64], checkpoint_from_row).optional()?
    } else {
        stmt.query_row(params![ws], checkpoint_from_row).optional()?
    };
    row.transpose()
}

/// The result of re-verifying a workspace's stored log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultCheck {
    pub workspace_id: String,
    pub entries: u64,
    pub checkpoints: u64,
    /// The first bad sequence number and what is wrong with it.
    pub first_bad: Option<(u64, String)>,
}

/// Re-verify everything stored for one workspace: each leaf against its leaf hash, the
/// chain, each HMAC, every stored tree hash against a recomputation, and each
/// checkpoint's root. Reports the first bad sequence number. `progress(done, total)`.
pub fn check_vault(conn: &Connection, ws: &str, progress: &mut dyn FnMut(u64, u64)) -> Result<VaultCheck> {
    let secret: Vec<u8> = conn.query_row("SELECT hmac_secret FROM workspaces WHERE workspace_id = ?1", [ws], |r| r.get(0))?;
    let total: i64 = conn.query_row("SELECT COUNT(*) FROM vault_entries WHERE workspace_id = ?1", [ws], |r| r.get(0))?;
    let total = total as u64;
    let mut report = VaultCheck { workspace_id: ws.to_owned(), entries: total, checkpoints: 0, first_bad: None };
    let mut stmt = conn.prepare(
        "SELECT seq, leaf, leaf_hash, chain_hash, hmac, created_at FROM vault_entries WHERE workspace_id = ?1 ORDER BY seq",
    )?;
    let mut rows = stmt.query([ws])?;
    let mut prev_chain = GENESIS_CHAIN_HASH;
    let mut frontier = Frontier::new();
    let mut recomputed_hashes: Vec<[u8; 32]> = Vec::new();
    let mut expected_seq = 0u64;
    let mut roots_by_size = std::collections::HashMap::new();
    let checkpoint_sizes: Vec<(u64, [u8; 32])> = {
        let mut s = conn.prepare("SELECT size, root FROM vault_checkpoints WHERE workspace_id = ?1 ORDER BY size")?;
        let r = s.query_map([ws], |r| Ok((r.get::<_, i64>(0)? as u64, hash32(r.get(1)?, "checkpoint root")?)))?;
        r.collect::<rusqlite::Result<Vec<_>>>()?
    };
    report.checkpoints = checkpoint_sizes.len() as u64;
    let wanted: std::collections::HashSet<u64> = checkpoint_sizes.iter().map(|(s, _)| *s).collect();
    let fail = |seq: u64, msg: String| Some((seq, msg));
    while let Some(row) = rows.next()? {
        let e = match entry_from_row(row) {
            Ok(e) => e,
            Err(err) => {
                report.first_bad = fail(expected_seq, format!("entry row is malformed: {err}"));
                return Ok(report);
            }
        };
        if e.seq != expected_seq {
            report.first_bad = fail(expected_seq, format!("entry {expected_seq} is missing (next stored is {})", e.seq));
            return Ok(report);
        }
        if praetor_vault::check_canonical(&e.leaf).is_err() {
            report.first_bad = fail(e.seq, "leaf is not canonical json".into());
            return Ok(report);
        }
        if let Some(seq) = serde_json::from_slice::<Value>(&e.leaf).ok().and_then(|v| v.get("seq").and_then(Value::as_u64))
            && seq != e.seq {
                report.first_bad = fail(e.seq, format!("leaf says seq {seq} but is stored at {}", e.seq));
                return Ok(report);
            }
        let lh = leaf_hash(&e.leaf);
        if !praetor_vault::merkle::hashes_equal(&lh, &e.leaf_hash) {
            report.first_bad = fail(e.seq, "leaf does not match its leaf hash".into());
            return Ok(report);
        }
        let ch = chain_hash(&prev_chain, &lh);
        if !praetor_vault::merkle::hashes_equal(&ch, &e.chain_hash) {
            report.first_bad = fail(e.seq, "chain hash does not follow from the previous entry".into());
            return Ok(report);
        }
        if !verify_entry_hmac(&secret, e.seq, &lh, &ch, &e.hmac) {
            report.first_bad = fail(e.seq, "hmac does not verify under the workspace secret".into());
            return Ok(report);
        }
        prev_chain = ch;
        recomputed_hashes.extend(frontier.push_stored(lh)?.into_iter().map(|(_, h)| h));
        expected_seq += 1;
        if wanted.contains(&expected_seq) {
            roots_by_size.insert(expected_seq, frontier.root());
        }
        if expected_seq.is_multiple_of(10_000) {
            progress(expected_seq, total);
        }
    }
    progress(expected_seq, total);
    for (size, root) in checkpoint_sizes {
        match roots_by_size.get(&size) {
            Some(r) if praetor_vault::merkle::hashes_equal(r, &root) => {}
            Some(_) => {
                report.first_bad = fail(size - 1, format!("checkpoint at size {size} does not match the entries"));
                return Ok(report);
            }
            None => {
                report.first_bad = fail(expected_seq, format!("a checkpoint covers {size} entries but only {expected_seq} are stored"));
                return Ok(report);
            }
        }
    }
    // Every stored tree hash must equal the recomputed one: a tampered node would
    // make the server serve proofs that do not verify.
    let stored_count: i64 = conn.query_row("SELECT COUNT(*) FROM vault_hashes WHERE workspace_id = ?1", [ws], |r| r.get(0))?;
    if stored_count as u64 != stored_hash_count(expected_seq) {
        report.first_bad = fail(expected_seq, format!(
            "the store holds {stored_count} tree hashes; {} entries need {}", expected_seq, stored_hash_count(expected_seq)));
        return Ok(report);
    }
    let mut hs = conn.prepare("SELECT idx, hash FROM vault_hashes WHERE workspace_id = ?1 ORDER BY idx")?;
    let mut hrows = hs.query([ws])?;
    while let Some(r) = hrows.next()? {
        let idx = r.get::<_, i64>(0)? as u64;
        let hash = hash32(r.get(1)?, "tree hash")?;
        let ok = recomputed_hashes.get(idx as usize).is_some_and(|h| praetor_vault::merkle::hashes_equal(h, &hash));
        if !ok {
            let seq = seq_of_stored_hash(idx);
            report.first_bad = fail(seq, format!("stored tree hash {idx} does not match the entries"));
            return Ok(report);
        }
    }
    Ok(report)
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
