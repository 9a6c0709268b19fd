//! The SQLite backend: one file in WAL mode, one writer thread that groups transactions
//! into one commit (and sequences the vault), and a small pool of read connections.

mod schema;

use std::path::{Path, PathBuf};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::sql::{Arg, Cell, Db, Row, ToArg};
use crate::sql_store::{Backend, SqlStore};
use crate::writer::WriterConn;
use crate::{Result, StoreError, vault_rows};

pub use crate::vault_rows::VaultCheck;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// The store on one SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

pub struct Sqlite {
    path: PathBuf,
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
        let conn = open_connection(&path, false)?;
        crate::sql_store::migrate(&conn, schema::MIGRATIONS, "sqlite")?;
        let writer = crate::writer::spawn(conn)?;
        SqlStore::new(Sqlite { path }, writer)
    }
}

/// Re-verify every workspace's log in the database at `path` (read-only): leaves,
/// chain, HMACs, stored tree hashes and checkpoint roots. `progress(done, total)`.
pub fn check_vault_file(path: &Path, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Vec<VaultCheck>> {
    if !path.exists() {
        return Err(StoreError::Database(format!("no database at `{}`", path.display())));
    }
    let conn = open_connection(path, true)?;
    vault_rows::check_every_vault(&conn, progress)
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
