//! One configuration, from flags, `PRAETOR_*` variables and an optional TOML file:
//! flags > environment > file > default (clap resolves the first two). Validated once,
//! with errors that name the bad key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use praetor_server::Config;
use serde::Deserialize;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "PRAETOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8787].
    #[arg(long, env = "PRAETOR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory: the SQLite store, vault keys and admin.key [default: ./praetor-data].
    #[arg(long, env = "PRAETOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep every record in PostgreSQL (postgres://user:password@host/db) instead of
    /// SQLite in the data directory; several nodes may share one database.
    #[arg(long = "database", env = "PRAETOR_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Load demo agents and policies on start.
    #[arg(long, env = "PRAETOR_DEMO")]
    pub demo: bool,
    /// Largest request body, in bytes [default: 1048576].
    #[arg(long, env = "PRAETOR_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Connections open at once; past it, one that never sent a request in time is
    /// closed to make room, or new ones wait [default: 4096].
    #[arg(long, env = "PRAETOR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a connection has to send a request's headers, after connecting and
    /// between requests [default: 75].
    #[arg(long, env = "PRAETOR_CONNECTION_IDLE_SECS")]
    pub connection_idle_secs: Option<u64>,
    /// Seconds an answer may wait for its client to take some of it (about 64 KB plus
    /// the client's receive buffer) before its connection is closed [default: 60].
    #[arg(long, env = "PRAETOR_CONNECTION_SEND_SECS")]
    pub connection_send_secs: Option<u64>,
    /// How often a signed checkpoint is published while entries arrive, in ms [default: 1000].
    #[arg(long, env = "PRAETOR_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// Threads answering requests [default: one per core but one, at least one; the
    /// store's writer has a thread of its own].
    #[arg(long, env = "PRAETOR_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Directory of the vault's checkpoint signing keys (PKCS#8 PEM, 0600); made on first
    /// start if empty [default: <data-dir>/keys].
    #[arg(long, env = "PRAETOR_VAULT_KEYS_DIR")]
    pub vault_keys_dir: Option<PathBuf>,
    /// Allow webhook and alert URLs on loopback, link-local and private addresses.
    #[arg(long, env = "PRAETOR_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,
    /// First retry delay of a failed delivery, in ms (doubles each attempt) [default: 1000].
    #[arg(long, env = "PRAETOR_DELIVERY_BACKOFF_MS")]
    pub delivery_backoff_ms: Option<u64>,
    /// SMTP server for e-mail alerts (also `[smtp]` in the config file).
    #[arg(long, env = "PRAETOR_SMTP_HOST")]
    pub smtp_host: Option<String>,
    #[arg(long, env = "PRAETOR_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    #[arg(long, env = "PRAETOR_SMTP_STARTTLS")]
    pub smtp_starttls: Option<bool>,
    #[arg(long, env = "PRAETOR_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// Prefer the environment or the config file for the password (flags show in `ps`).
    #[arg(long, env = "PRAETOR_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    #[arg(long, env = "PRAETOR_SMTP_FROM")]
    pub smtp_from: Option<String>,
}

/// The TOML file's keys. Unknown keys are an error naming them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    demo: Option<bool>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    connection_idle_secs: Option<u64>,
    connection_send_secs: Option<u64>,
    checkpoint_interval_ms: Option<u64>,
    worker_threads: Option<usize>,
    signature_max_skew_secs: Option<i64>,
    vault_keys_dir: Option<PathBuf>,
    allow_private_targets: Option<bool>,
    delivery_backoff_ms: Option<u64>,
    delivery_max_attempts: Option<u32>,
    smtp: Option<praetor_server::config::SmtpConfig>,
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file `{}`", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file `{}`: {}", path.display(), e.message()))
}

/// Where a server keeps its records and keys, for the commands that open them offline
/// (`keys create`, `vault check`, `vault rotate-keys`).
#[derive(Debug)]
pub struct Location {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub vault_keys_dir: Option<PathBuf>,
}

/// The flags every offline command that opens a server's files takes.
#[derive(Debug, Clone, Args)]
pub struct ServerFiles {
    /// The server's TOML configuration file, for the settings this command reads
    /// (`data_dir`, `database_url`, `vault_keys_dir`).
    #[arg(long, env = "PRAETOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// [default: ./praetor-data]
    #[arg(long, env = "PRAETOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The same store and keys the server's configuration names: flags and `PRAETOR_*`
/// variables (given here) over the TOML file `server.config` over the defaults. Without
/// it, a server configured by its file would be checked at `./praetor-data`, which it
/// does not use.
pub fn locate(server: ServerFiles, database_url: Option<String>, vault_keys_dir: Option<PathBuf>) -> anyhow::Result<Location> {
    let file = match &server.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let mut cfg = Config::default();
    if let Some(d) = server.data_dir.or(file.data_dir) {
        cfg.data_dir = d;
    }
    cfg.database_url = database_url.or(file.database_url);
    check_database_url(cfg.database_url.as_deref())?;
    Ok(Location { data_dir: cfg.data_dir, database_url: cfg.database_url, vault_keys_dir: vault_keys_dir.or(file.vault_keys_dir) })
}

/// What `praetor serve` runs with: the server's configuration and the process's own.
pub struct Settings {
    pub server: Config,
    /// The request-handling runtime's worker threads.
    pub worker_threads: usize,
}

/// One runtime worker per core but one, at least one. The store's writer is a thread of
/// its own, the one serial stage of every decision and busy under load: with as many
/// workers as cores, workers and writer contend for the cores, and the runtime's
/// wake-ups and work stealing between its workers cost CPU. On 2 cores one worker used
/// 15-18 % less server CPU per decision at concurrency 64 than two, for 10-15 % more
/// decisions per second, and no change at concurrency 1 (BENCHMARKS.md, "Session 6").
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

pub fn build(args: &ServeArgs) -> anyhow::Result<Settings> {
    let file = match &args.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let mut cfg = Config::default();
    if let Some(l) = &file.listen {
        cfg.listen = l.parse().map_err(|e| anyhow::anyhow!("config key `listen`: `{l}` is not an address: {e}"))?;
    }
    if let Some(d) = file.data_dir {
        cfg.data_dir = d;
    }
    cfg.demo = file.demo.unwrap_or(false);
    if let Some(m) = file.max_body_bytes {
        cfg.max_body_bytes = m;
    }
    if let Some(m) = file.max_connections {
        cfg.max_connections = m;
    }
    if let Some(s) = file.connection_idle_secs {
        cfg.connection_idle_secs = s;
    }
    if let Some(s) = file.connection_send_secs {
        cfg.connection_send_secs = s;
    }
    if let Some(c) = file.checkpoint_interval_ms {
        cfg.checkpoint_interval_ms = c;
    }
    if let Some(s) = file.signature_max_skew_secs {
        cfg.signature_max_skew_secs = s;
    }
    cfg.vault_keys_dir = args.vault_keys_dir.clone().or(file.vault_keys_dir);
    cfg.allow_private_targets = args.allow_private_targets || file.allow_private_targets.unwrap_or(false);
    if let Some(b) = args.delivery_backoff_ms.or(file.delivery_backoff_ms) {
        cfg.delivery_backoff_ms = b;
    }
    if let Some(a) = file.delivery_max_attempts {
        cfg.delivery_max_attempts = a;
    }
    cfg.smtp = file.smtp;
    if let Some(host) = &args.smtp_host {
        let from = args.smtp_from.clone().or(cfg.smtp.as_ref().map(|s| s.from.clone()))
            .ok_or_else(|| anyhow::anyhow!("config key `smtp.from`: required with an SMTP host (PRAETOR_SMTP_FROM)"))?;
        cfg.smtp = Some(praetor_server::config::SmtpConfig {
            host: host.clone(),
            port: args.smtp_port.or(cfg.smtp.as_ref().map(|s| s.port)).unwrap_or(587),
            starttls: args.smtp_starttls.or(cfg.smtp.as_ref().map(|s| s.starttls)).unwrap_or(false),
            username: args.smtp_username.clone().or(cfg.smtp.as_ref().and_then(|s| s.username.clone())),
            password: args.smtp_password.clone().or(cfg.smtp.as_ref().and_then(|s| s.password.clone())),
            from,
        });
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    cfg.database_url = args.database_url.clone().or(file.database_url.clone());
    cfg.demo |= args.demo;
    if let Some(m) = args.max_body_bytes {
        cfg.max_body_bytes = m;
    }
    if let Some(m) = args.max_connections {
        cfg.max_connections = m;
    }
    if let Some(s) = args.connection_idle_secs {
        cfg.connection_idle_secs = s;
    }
    if let Some(s) = args.connection_send_secs {
        cfg.connection_send_secs = s;
    }
    if let Some(c) = args.checkpoint_interval_ms {
        cfg.checkpoint_interval_ms = c;
    }
    validate(&cfg)?;
    let worker_threads = args.worker_threads.or(file.worker_threads).unwrap_or_else(default_worker_threads);
    if !(1..=1024).contains(&worker_threads) {
        bail!("config key `worker_threads`: {worker_threads} is outside 1..=1024");
    }
    Ok(Settings { server: cfg, worker_threads })
}

fn validate(cfg: &Config) -> anyhow::Result<()> {
    if !(1024..=64 * 1024 * 1024).contains(&cfg.max_body_bytes) {
        bail!("config key `max_body_bytes`: {} is outside 1024..=67108864", cfg.max_body_bytes);
    }
    if !(50..=60_000).contains(&cfg.checkpoint_interval_ms) {
        bail!("config key `checkpoint_interval_ms`: {} is outside 50..=60000", cfg.checkpoint_interval_ms);
    }
    if !(10..=600_000).contains(&cfg.delivery_backoff_ms) {
        bail!("config key `delivery_backoff_ms`: {} is outside 10..=600000", cfg.delivery_backoff_ms);
    }
    if !(1..=50).contains(&cfg.delivery_max_attempts) {
        bail!("config key `delivery_max_attempts`: {} is outside 1..=50", cfg.delivery_max_attempts);
    }
    if !(1..=3600).contains(&cfg.connection_idle_secs) {
        bail!("config key `connection_idle_secs`: {} is outside 1..=3600", cfg.connection_idle_secs);
    }
    if !(1..=3600).contains(&cfg.connection_send_secs) {
        bail!("config key `connection_send_secs`: {} is outside 1..=3600", cfg.connection_send_secs);
    }
    if !(16..=1_000_000).contains(&cfg.max_connections) {
        bail!("config key `max_connections`: {} is outside 16..=1000000", cfg.max_connections);
    }
    if !(1..=3600).contains(&cfg.signature_max_skew_secs) {
        bail!("config key `signature_max_skew_secs`: {} is outside 1..=3600", cfg.signature_max_skew_secs);
    }
    check_database_url(cfg.database_url.as_deref())
}

fn check_database_url(url: Option<&str>) -> anyhow::Result<()> {
    if let Some(url) = url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        bail!(
            "config key `database_url`: `{}` is not a PostgreSQL URL (postgres://user:password@host:5432/db)",
            praetor_store::postgres::redact_url(url)
        );
    }
    Ok(())
}
