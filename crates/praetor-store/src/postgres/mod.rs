//! The PostgreSQL backend, for several Praetor nodes sharing one database.
//!
//! The same writer as SQLite's runs in each node: it groups its node's transactions
//! into one PostgreSQL transaction (one commit, one WAL flush). Before a batch appends to
//! a workspace's log it takes that log's transaction-scoped advisory lock, so exactly
//! one node at a time sequences entries into a given log, and it reloads its appender
//! when the stored size shows another node appended meanwhile. A node that dies holds
//! nothing: its open transaction is rolled back and the lock released with it, so no
//! acknowledged entry is lost and none is sealed twice.

mod schema;

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

use crate::sql::{Arg, Cell, Db, Refusal, Row, ToArg, postgres_placeholders, row_chunks};
use crate::sql_store::{Backend, SqlStore};
use crate::writer::WriterConn;
use crate::{Result, StoreError, VaultCheck, vault_rows};

/// The store on a PostgreSQL database shared by every node.
pub type PostgresStore = SqlStore<Postgres>;

pub struct Postgres {
    config: tokio_postgres::Config,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message (e.g. a constraint's name) says more than the
        // client's summary.
        match e.as_db_error() {
            // A row another request (or node) wrote first: that request's, not the
            // store's failure (health does not count it).
            Some(db) if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict(db.constraint().unwrap_or("a unique key").to_owned())
            }
            Some(db) => StoreError::Database(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Database(e.to_string()),
        }
    }
}

/// `url` with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn parse_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::Database(format!("`{}` is not a PostgreSQL URL: {e}", redact_url(url))))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("praetor");
    }
    Ok(config)
}

impl Backend for Postgres {
    type Reader = PgConn;
    const KIND: &'static str = "postgres";

    fn reader(&self) -> Result<PgConn> {
        PgConn::connect(&self.config)
    }
}

impl SqlStore<Postgres> {
    /// Connect to the database at `url` (`postgres://user:password@host/db`), run
    /// pending migrations, and start this node's writer.
    ///
    /// Blocks the calling thread until connected; safe to call from async code (the
    /// connection blocks a thread of its own).
    pub fn connect(url: &str) -> Result<PostgresStore> {
        let config = parse_config(url)?;
        let for_thread = config.clone();
        let (conn, guard) = std::thread::spawn(move || {
            let conn = PgConn::connect(&for_thread)?;
            let guard = migrate(&conn)?;
            conn.session_pending.set(true);
            conn.set_writer_session()?;
            Ok::<_, StoreError>((conn, guard))
        })
        .join()
        .map_err(|_| StoreError::Database("the connecting thread panicked".into()))??;
        let writer = crate::writer::spawn(conn, guard.clone())?;
        SqlStore::new(Postgres { config }, writer, guard)
    }
}

/// The writer's session: a commit returns only once durable, and a node that stalls
/// inside a batch (paused, cut off) loses its session, and with it the log locks, instead
/// of holding every other node's writer forever. Set with `SET` rather than as
/// connection options, which poolers such as PgBouncer refuse or drop.
const WRITER_SESSION: &str = "SET synchronous_commit = on; SET idle_in_transaction_session_timeout = '15s'";

/// Migrations under a session-level advisory lock: nodes that start together run them
/// once, one after the other. Each migration holds `schema_migrations` exclusively
/// before it changes anything (the writer's batches hold it shared, see `begin`): it
/// waits for the batches running on other nodes and keeps new ones out until it
/// commits, so a node of the older version commits nothing after a migration it does
/// not know.
fn migrate(conn: &PgConn) -> Result<std::sync::Arc<crate::sql_store::SchemaGuard>> {
    migrate_with(conn, schema::MIGRATIONS)
}

fn migrate_with(conn: &PgConn, migrations: &[(i64, &str)]) -> Result<std::sync::Arc<crate::sql_store::SchemaGuard>> {
    conn.batch("SELECT pg_advisory_lock(hashtextextended('praetor:migrations:' || current_schema(), 0))")?;
    let out = crate::sql_store::migrate(conn, migrations, "postgres", Some("LOCK TABLE schema_migrations IN EXCLUSIVE MODE"));
    conn.batch("SELECT pg_advisory_unlock(hashtextextended('praetor:migrations:' || current_schema(), 0))")?;
    out
}

/// For the conformance tests: migrate the database at `url` as a newer version would,
/// with one more migration than this build has. Not for anything else.
#[doc(hidden)]
pub fn migrate_as_newer_version(url: &str, version: i64, sql: &str) -> Result<()> {
    let conn = PgConn::connect(&parse_config(url)?)?;
    let mut migrations = schema::MIGRATIONS.to_vec();
    migrations.push((version, sql));
    migrate_with(&conn, &migrations).map(drop)
}

/// Re-verify every workspace's log in the database at `url` (see
/// [`crate::sqlite::check_vault_file`]).
pub fn check_vault_database(url: &str, verifiers: &[praetor_vault::NoteVerifier], progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Vec<VaultCheck>> {
    let conn = PgConn::connect(&parse_config(url)?)?;
    conn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
    let out = vault_rows::check_every_vault(&conn, true, verifiers, progress);
    let _ = conn.batch("COMMIT");
    out
}

/// One connection, with its prepared statements. A connection the server closed is
/// replaced before the writer's next transaction, or by the reader pool, which then
/// runs the read again (`Db::is_broken`).
///
/// Like the synchronous `postgres` client, it owns a single-threaded runtime that runs
/// the connection while a call waits for its answer; it is used from one thread at a
/// time, never from async code. Unlike that client, it can send several statements
/// before reading their answers: writes given to `execute_later` are held and sent
/// together with the next statement that waits for an answer (or `flush`), so a batch
/// of decisions costs a few round trips instead of several per decision.
pub struct PgConn {
    config: tokio_postgres::Config,
    runtime: tokio::runtime::Runtime,
    client: RefCell<Client>,
    statements: RefCell<HashMap<String, Statement>>,
    held: RefCell<Vec<Pending>>,
    /// Where in `held` the rows of each `insert_row_later` statement are gathered.
    row_groups: RefCell<HashMap<String, usize>>,
    /// The writer's connection (a new one too, after a reconnect) has yet to be given
    /// `WRITER_SESSION`: set before its next transaction, until that succeeds.
    session_pending: std::cell::Cell<bool>,
}

/// What is held for the next round trip.
enum Pending {
    One(Held),
    /// Rows for one single-row `INSERT` statement (SQLite placeholders), sent as
    /// multi-row inserts where the first of them was given.
    Rows { sql: String, rows: Vec<Vec<Cell>> },
}

/// A write held for the next round trip, with its arguments copied.
struct Held {
    statement: Statement,
    args: Vec<Cell>,
    /// The error when it changes (or, for a query, returns) no row.
    refused: Option<StoreError>,
}

impl PgConn {
    fn connect(config: &tokio_postgres::Config) -> Result<PgConn> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start the PostgreSQL connection's runtime: {e}")))?;
        let client = runtime.block_on(open(config))?;
        Ok(PgConn {
            config: config.clone(),
            runtime,
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
            held: RefCell::new(Vec::new()),
            row_groups: RefCell::new(HashMap::new()),
            session_pending: std::cell::Cell::new(false),
        })
    }

    /// Give the writer's connection its session settings if it has not got them yet.
    fn set_writer_session(&self) -> Result<()> {
        if self.session_pending.get() {
            self.batch(WRITER_SESSION)?;
            self.session_pending.set(false);
        }
        Ok(())
    }

    /// The prepared form of `sql` (SQLite placeholders), prepared once per connection.
    fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let prepared = {
            let client = self.client.borrow();
            self.runtime.block_on(client.prepare(&postgres_placeholders(sql)))?
        };
        self.statements.borrow_mut().insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }

    /// Replace a connection the server closed (restart, failover, idle timeout).
    fn reconnect_if_closed(&self) -> Result<()> {
        if self.client.borrow().is_closed() {
            tracing::warn!("the PostgreSQL connection was closed; reconnecting");
            self.discard();
            *self.client.borrow_mut() = self.runtime.block_on(open(&self.config))?;
            self.statements.borrow_mut().clear();
            self.session_pending.set(true);
        }
        self.set_writer_session()
    }

    /// Send the held writes, then `then`, in one round trip, and wait for every answer.
    /// The first held write that failed is the error, whatever `then` gave: it ran
    /// after that failure. (A write whose arguments cannot be encoded, such as text with
    /// a NUL, fails without being sent while those after it are sent: every caller
    /// rolls its transaction or savepoint back on any error from here, so nothing sent
    /// after a failure stands.)
    fn with_held<T>(&self, then: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let held = self.take_held()?;
        let client = self.client.borrow();
        let sends = held.iter().map(|h| {
            let args: Vec<PgArg<'_>> = h.args.iter().map(|c| PgArg(c.arg())).collect();
            Box::pin(client.execute_raw(&h.statement, args))
        });
        let (outcomes, last) = self.runtime.block_on(in_order(sends.collect(), then));
        for (h, outcome) in held.into_iter().zip(outcomes) {
            if let (0, Some(refused)) = (outcome?, h.refused) {
                return Err(refused);
            }
        }
        last
    }

    /// The held writes as statements to send, in order, each group of rows as
    /// multi-row inserts (`row_chunks`).
    fn take_held(&self) -> Result<Vec<Held>> {
        let pending = std::mem::take(&mut *self.held.borrow_mut());
        self.row_groups.borrow_mut().clear();
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            match p {
                Pending::One(h) => out.push(h),
                Pending::Rows { sql, rows } => {
                    for (statement, args) in row_chunks(&sql, rows) {
                        out.push(Held { statement: self.statement(&statement)?, args, refused: None });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Run `first` and then `last` to completion, each future first polled in order. A
/// statement's future sends it when first polled, so they reach the server, and run
/// there, in this order; the answers are then read as they come.
async fn in_order<F: std::future::Future + Unpin, L: std::future::Future>(mut first: Vec<F>, last: L) -> (Vec<F::Output>, L::Output) {
    use std::task::Poll;
    let mut done: Vec<Option<F::Output>> = first.iter().map(|_| None).collect();
    let mut last = std::pin::pin!(last);
    let mut last_done = None;
    std::future::poll_fn(|cx| {
        for (f, out) in first.iter_mut().zip(done.iter_mut()) {
            if out.is_none()
                && let Poll::Ready(v) = std::pin::Pin::new(f).poll(cx)
            {
                *out = Some(v);
            }
        }
        if last_done.is_none()
            && let Poll::Ready(v) = last.as_mut().poll(cx)
        {
            last_done = Some(v);
        }
        if done.iter().all(Option::is_some) && last_done.is_some() { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    (done.into_iter().flatten().collect(), last_done.expect("polled to completion"))
}

/// Open a connection, its driver running on the calling runtime.
async fn open(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the PostgreSQL connection ended");
        }
    });
    Ok(client)
}

#[derive(Debug)]
struct PgArg<'a>(Arg<'a>);

impl ToSql for PgArg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(i) => match *ty {
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            // Free text from agents is kept as bytes (see the schema): PostgreSQL's
            // text cannot hold NUL.
            Arg::Text(s) if *ty == Type::BYTEA => s.as_bytes().to_sql(ty, out),
            Arg::Text(s) if s.contains('\0') => Err("text with a NUL character cannot be stored in PostgreSQL".into()),
            Arg::Text(s) => s.to_sql(ty, out),
            Arg::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true // checked per value in `to_sql`, which names the mismatch
    }

    to_sql_checked!();
}

impl Row for tokio_postgres::Row {
    fn cell(&self, index: usize) -> Result<Cell> {
        let ty = self.columns().get(index).map(|c| c.type_().clone()).ok_or_else(|| StoreError::Corrupt(format!("no column {index}")))?;
        let cell = match ty {
            Type::INT8 => self.try_get::<_, Option<i64>>(index)?.map(Cell::Int),
            Type::INT4 => self.try_get::<_, Option<i32>>(index)?.map(|i| Cell::Int(i.into())),
            Type::INT2 => self.try_get::<_, Option<i16>>(index)?.map(|i| Cell::Int(i.into())),
            Type::BOOL => self.try_get::<_, Option<bool>>(index)?.map(|b| Cell::Int(b.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => self.try_get::<_, Option<String>>(index)?.map(Cell::Text),
            Type::BYTEA => self.try_get::<_, Option<Vec<u8>>>(index)?.map(Cell::Bytes),
            other => return Err(StoreError::Corrupt(format!("column {index} has the unexpected type {other}"))),
        };
        Ok(cell.unwrap_or(Cell::Null))
    }
}

impl Db for PgConn {
    fn execute(&self, sql: &str, args: &[&dyn ToArg]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let bound: Vec<PgArg<'_>> = args.iter().map(|a| PgArg(a.arg())).collect();
        let client = self.client.borrow();
        self.with_held(async { Ok(client.execute_raw(&stmt, bound).await?) })
    }

    fn query(&self, sql: &str, args: &[&dyn ToArg], each: &mut dyn FnMut(&dyn Row) -> Result<()>) -> Result<()> {
        use futures_util::StreamExt;
        let stmt = self.statement(sql)?;
        let bound: Vec<PgArg<'_>> = args.iter().map(|a| PgArg(a.arg())).collect();
        let client = self.client.borrow();
        self.with_held(async {
            // Streamed, not collected: `vault check` reads millions of rows.
            let mut rows = std::pin::pin!(client.query_raw(&stmt, bound).await?);
            while let Some(row) = rows.next().await {
                each(&row?)?;
            }
            Ok(())
        })
    }

    fn batch(&self, sql: &str) -> Result<()> {
        let client = self.client.borrow();
        self.with_held(async { Ok(client.batch_execute(sql).await?) })
    }

    fn execute_later(&self, sql: &str, args: &[&dyn ToArg], refused: Option<Refusal<'_>>) -> Result<()> {
        let statement = self.statement(sql)?;
        let args = args.iter().map(|a| Cell::from(a.arg())).collect();
        self.held.borrow_mut().push(Pending::One(Held { statement, args, refused: refused.map(|r| r()) }));
        Ok(())
    }

    fn insert_row_later(&self, sql: &str, args: &[&dyn ToArg]) -> Result<()> {
        let row = args.iter().map(|a| Cell::from(a.arg())).collect();
        let mut held = self.held.borrow_mut();
        let mut groups = self.row_groups.borrow_mut();
        match groups.get(sql).and_then(|&i| held.get_mut(i)) {
            Some(Pending::Rows { rows, .. }) => rows.push(row),
            _ => {
                groups.insert(sql.to_owned(), held.len());
                held.push(Pending::Rows { sql: sql.to_owned(), rows: vec![row] });
            }
        }
        Ok(())
    }

    fn expect_row_later(&self, sql: &str, args: &[&dyn ToArg], refused: Refusal<'_>) -> Result<()> {
        // A query's row count is what `execute` gives back for it.
        self.execute_later(sql, args, Some(refused))
    }

    fn flush(&self) -> Result<()> {
        if self.held.borrow().is_empty() {
            return Ok(());
        }
        self.with_held(async { Ok(()) })
    }

    fn discard(&self) {
        self.held.borrow_mut().clear();
        self.row_groups.borrow_mut().clear();
    }

    fn is_broken(&self) -> bool {
        self.client.borrow().is_closed()
    }
}

impl WriterConn for PgConn {
    fn begin(&self) -> Result<()> {
        self.reconnect_if_closed()?;
        // Read committed whatever the server's default: each statement must see what
        // other nodes committed before this batch took the workspace locks (etag
        // checks, the feed's next number, the log's size). `schema_migrations` is held
        // shared until the batch ends, so a migration by a newer node (which holds it
        // exclusively, see `migrate`) waits for the batch, and the writer's check of the
        // schema, next, sees every migration committed before (same round trip). A
        // migration can hold it for long (its DDL waiting on a long reader): the batch
        // gives up after 5 s, as a SQLite batch does on the file's lock, and its
        // requests are answered 503 rather than left hanging.
        const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '5s'; \
             LOCK TABLE schema_migrations IN SHARE MODE; SET LOCAL lock_timeout TO DEFAULT";
        match self.batch(BEGIN) {
            // The server closed the connection while it was idle (a restart, a failover,
            // an administrator): found only now, when the connection is next driven.
            // Nothing of the batch was sent, so it begins again on a new connection
            // rather than being refused.
            Err(e) if self.client.borrow().is_closed() => {
                tracing::warn!(error = %e, "the PostgreSQL connection was closed while idle");
                self.reconnect_if_closed()?;
                self.batch(BEGIN)
            }
            began => began,
        }
    }

    fn lock_log(&self, ws: &str) -> Result<()> {
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended('praetor:vault:' || current_schema() || ':' || ?1, 0))", crate::sql::args![ws])?;
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        // PostgreSQL answers COMMIT in an aborted transaction with a silent rollback; the
        // SELECT fails there instead, so a batch that cannot stand is never reported as
        // committed (same round trip).
        self.batch("SELECT 1; COMMIT")
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact_url("postgres://praetor:s3cret@db:5432/praetor"), "postgres://praetor:***@db:5432/praetor");
        assert_eq!(redact_url("postgres://praetor@db/praetor"), "postgres://praetor@db/praetor");
        assert_eq!(redact_url("postgres:///praetor?host=/run/postgresql"), "postgres:///praetor?host=/run/postgresql");
    }
}
