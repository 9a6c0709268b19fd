//! The backends the conformance suite runs on: a SQLite file in a temporary directory,
//! or a fresh schema of the PostgreSQL database named by `PRAETOR_TEST_DATABASE_URL`
//! (dropped afterwards). Without that variable the PostgreSQL cases are skipped, or
//! fail when `PRAETOR_REQUIRE_POSTGRES=1` (CI), saying what is missing.

use std::sync::Arc;

use praetor_store::postgres::PostgresStore;
use praetor_store::sqlite::SqliteStore;
use praetor_store::{Store, VaultCheck};

pub enum Backend {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin_url: String, schema: String, url: String },
}

/// The PostgreSQL URL for tests, or `None` when the cases should be skipped.
pub fn postgres_url() -> Option<String> {
    match std::env::var("PRAETOR_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("PRAETOR_REQUIRE_POSTGRES").as_deref() == Ok("1") => panic!(
            "PRAETOR_REQUIRE_POSTGRES=1 but PRAETOR_TEST_DATABASE_URL is not set: point it at a PostgreSQL \
             database (e.g. postgres://postgres@127.0.0.1:5432/test), or run scripts/test.sh, which starts one"
        ),
        _ => {
            eprintln!("skipped: PRAETOR_TEST_DATABASE_URL is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// `url` with `search_path` set to `schema`, so each case has its own tables, and the
/// schema as the connections' application name, so a case can find its own.
pub fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}&application_name={schema}")
}

/// Run `f` on a plain thread: the synchronous PostgreSQL client may not block inside
/// the async runtime.
pub fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("thread")
}

fn admin(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    off_runtime(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        c.batch_execute(&sql).map_err(|e| e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string()))
    })
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite { dir: tempfile::tempdir().unwrap() }
    }

    pub fn postgres() -> Option<Backend> {
        let admin_url = postgres_url()?;
        let schema = format!("praetor_t_{:016x}", rand_u64());
        admin(&admin_url, &format!("CREATE SCHEMA {schema}")).unwrap_or_else(|e| panic!("cannot create a test schema: {e}"));
        let url = with_schema(&admin_url, &schema);
        Some(Backend::Postgres { admin_url, schema, url })
    }

    /// A new, empty database on the same backend.
    pub fn another(&self) -> Backend {
        match self {
            Backend::Sqlite { .. } => Backend::sqlite(),
            Backend::Postgres { .. } => Backend::postgres().expect("PostgreSQL was reachable a moment ago"),
        }
    }

    /// Open the store (again): a second open is a restart, or a second node.
    pub async fn open(&self) -> Arc<dyn Store> {
        self.try_open().await.unwrap_or_else(|e| panic!("open the store: {e}"))
    }

    /// Open the store, or say why it cannot be opened.
    pub async fn try_open(&self) -> Result<Arc<dyn Store>, String> {
        match self {
            Backend::Sqlite { dir } => Ok(Arc::new(SqliteStore::open(dir.path().join("praetor.db")).map_err(|e| e.to_string())?)),
            Backend::Postgres { url, .. } => {
                let url = url.clone();
                let store = off_runtime(move || PostgresStore::connect(&url)).map_err(|e| e.to_string())?;
                Ok(Arc::new(store))
            }
        }
    }

    /// `praetor vault check` on what the store holds (checkpoint signatures unchecked).
    pub fn check_vault(&self) -> Vec<VaultCheck> {
        self.check_vault_with(&[])
    }

    /// `praetor vault check`, the checkpoints' signatures checked with `verifiers`.
    pub fn check_vault_with(&self, verifiers: &[praetor_vault::NoteVerifier]) -> Vec<VaultCheck> {
        match self {
            Backend::Sqlite { dir } => praetor_store::sqlite::check_vault_file(&dir.path().join("praetor.db"), verifiers, &mut |_, _, _| {}).unwrap(),
            Backend::Postgres { url, .. } => {
                let (url, verifiers) = (url.clone(), verifiers.to_vec());
                off_runtime(move || praetor_store::postgres::check_vault_database(&url, &verifiers, &mut |_, _, _| {}).unwrap())
            }
        }
    }

    /// Lift the append-only guards of `table` (its triggers), as an attacker with the
    /// database could, to tamper with it.
    pub fn unguard(&self, table: &str) {
        match self {
            Backend::Sqlite { .. } => self.raw_sql(&format!("DROP TRIGGER IF EXISTS {table}_no_update; DROP TRIGGER IF EXISTS {table}_no_delete")),
            Backend::Postgres { .. } => self.raw_sql(&format!("ALTER TABLE {table} DISABLE TRIGGER USER")),
        }
        .unwrap();
    }

    /// The text in the first column of the first row of `sql`, read directly.
    pub fn raw_text(&self, sql: &str) -> String {
        match self {
            Backend::Sqlite { dir } => {
                let conn = rusqlite::Connection::open(dir.path().join("praetor.db")).unwrap();
                conn.query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Backend::Postgres { url, .. } => {
                let (url, sql) = (url.clone(), sql.to_owned());
                off_runtime(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    c.query_one(&sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
                })
            }
        }
    }

    /// Run raw SQL as an operator with database access would (no store in between).
    pub fn raw_sql(&self, sql: &str) -> Result<(), String> {
        match self {
            Backend::Sqlite { dir } => {
                let conn = rusqlite::Connection::open(dir.path().join("praetor.db")).unwrap();
                conn.execute_batch(sql).map_err(|e| e.to_string())
            }
            Backend::Postgres { url, .. } => admin(url, sql),
        }
    }
}

/// A transaction another connection holds open, until [`Held::finish`] commits it.
pub struct Held {
    finish: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Held {
    pub fn finish(self) {
        self.finish.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

const NEWER_MIGRATION: &str = "INSERT INTO schema_migrations (version, applied_at) VALUES (1000, 0)";

impl Backend {
    /// Begin a transaction with `sqlite` or `postgres` (whichever this is) on a
    /// connection of its own and hold it open.
    fn hold(&self, sqlite: &str, postgres: &str) -> Held {
        let (started, has_started) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let thread = match self {
            Backend::Sqlite { dir } => {
                let (path, sql) = (dir.path().join("praetor.db"), sqlite.to_owned());
                std::thread::spawn(move || {
                    let c = rusqlite::Connection::open(path).unwrap();
                    c.execute_batch(&sql).unwrap();
                    started.send(()).unwrap();
                    finished.recv().unwrap();
                    c.execute_batch("COMMIT").unwrap();
                })
            }
            Backend::Postgres { url, .. } => {
                let (url, sql) = (url.clone(), postgres.to_owned());
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    c.batch_execute(&sql).unwrap();
                    started.send(()).unwrap();
                    finished.recv().unwrap();
                    c.batch_execute("COMMIT").unwrap();
                })
            }
        };
        has_started.recv().unwrap();
        Held { finish, thread }
    }

    /// A newer version's migration in progress: schema version 1000 recorded in a
    /// transaction that holds the schema as a migration does (SQLite: the file's write
    /// lock; PostgreSQL: `schema_migrations` exclusively).
    pub fn begin_newer_migration(&self) -> Held {
        self.hold(
            &format!("BEGIN IMMEDIATE; {NEWER_MIGRATION}"),
            &format!("BEGIN; LOCK TABLE schema_migrations IN EXCLUSIVE MODE; {NEWER_MIGRATION}"),
        )
    }

    /// A batch of an older node in flight: its transaction begun as the writer begins
    /// one (see each backend's `WriterConn::begin`).
    pub fn begin_batch(&self) -> Held {
        self.hold("BEGIN IMMEDIATE", "BEGIN ISOLATION LEVEL READ COMMITTED; LOCK TABLE schema_migrations IN SHARE MODE")
    }

    /// Another process holding the log of `ws`, as a writer in the middle of a batch
    /// does: this store's writer waits for it before it appends, and the transactions
    /// queued meanwhile form its next batch.
    pub fn hold_log(&self, ws: &str) -> Held {
        self.hold(
            "BEGIN IMMEDIATE",
            &format!("BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('praetor:vault:' || current_schema() || ':' || '{ws}', 0))"),
        )
    }

    /// Have the database server close every connection the case's stores hold, as a
    /// restart or an administrator would. `false` on SQLite, which has none.
    pub fn close_connections(&self) -> bool {
        match self {
            Backend::Sqlite { .. } => false,
            Backend::Postgres { admin_url, schema, .. } => {
                admin(admin_url, &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{schema}'")).unwrap();
                true
            }
        }
    }

    /// Run a newer version's migrations on a thread: this build's, then `sql` as
    /// migration `version` (through the same code as a real start).
    pub fn spawn_newer_migration(&self, version: i64, sql: &str) -> std::thread::JoinHandle<Result<(), String>> {
        let sql = sql.to_owned();
        match self {
            Backend::Sqlite { dir } => {
                let path = dir.path().join("praetor.db");
                std::thread::spawn(move || praetor_store::sqlite::migrate_as_newer_version(&path, version, &sql).map_err(|e| e.to_string()))
            }
            Backend::Postgres { url, .. } => {
                let url = url.clone();
                std::thread::spawn(move || praetor_store::postgres::migrate_as_newer_version(&url, version, &sql).map_err(|e| e.to_string()))
            }
        }
    }

    /// Run `sql` on a connection of its own, giving up after `timeout_ms` if it has to
    /// wait for a lock (PostgreSQL; SQLite's readers never wait in WAL mode).
    pub fn read_within(&self, sql: &str, timeout_ms: u32) -> Result<(), String> {
        match self {
            Backend::Sqlite { dir } => {
                let conn = rusqlite::Connection::open(dir.path().join("praetor.db")).unwrap();
                conn.query_row(sql, [], |_| Ok(())).map_err(|e| e.to_string())
            }
            Backend::Postgres { url, .. } => admin(url, &format!("SET statement_timeout = {timeout_ms}; {sql}")),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { admin_url, schema, .. } = self {
            let _ = admin(admin_url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}
