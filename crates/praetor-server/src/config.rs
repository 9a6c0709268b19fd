//! The server's configuration, validated once at start. The binary fills it from
//! flags, `PRAETOR_*` variables and an optional TOML file (flags > env > file > default).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A PostgreSQL URL: keep every record there (several nodes may share it) instead of
    /// in `<data_dir>/praetor.db`.
    pub database_url: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Connections open at once; past it, one that never sent a request in time is
    /// closed to make room, or new ones wait (`listen/`).
    pub max_connections: usize,
    /// Seconds a connection has to send a request's headers, after it connects and
    /// between requests (the keep-alive idle time), before it is closed.
    pub connection_idle_secs: u64,
    /// Seconds a connection's answer may wait for its client to take some of it (about
    /// 64 KB plus the client's receive buffer, `listen::conns::UNSENT_HELD`), before the
    /// connection is closed.
    pub connection_send_secs: u64,
    /// Load demo agents and policies into the default workspace on start.
    pub demo: bool,
    /// How often a signed checkpoint is published while entries arrive, in milliseconds.
    pub checkpoint_interval_ms: u64,
    /// Accepted clock skew of a signed agent request, in seconds.
    pub signature_max_skew_secs: i64,
    /// Where the vault's checkpoint signing keys live; `<data_dir>/keys` when unset.
    pub vault_keys_dir: Option<PathBuf>,
    /// Allow webhook and alert URLs on loopback, link-local and private addresses.
    pub allow_private_targets: bool,
    /// First retry delay of a failed delivery; doubles with each attempt.
    pub delivery_backoff_ms: u64,
    /// Attempts before a delivery is given up (dead letter).
    pub delivery_max_attempts: u32,
    /// The longest one delivery attempt may take as a whole, DNS, connect and answer
    /// (SMTP included, whose own timeout covers only the connect). Held below the 60 s
    /// claim on an attempt whatever it is set to.
    pub delivery_attempt_timeout_ms: u64,
    /// The SMTP server for e-mail alerts.
    pub smtp: Option<SmtpConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Upgrade the connection with STARTTLS (required when set).
    #[serde(default)]
    pub starttls: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    pub from: String,
}

fn default_smtp_port() -> u16 {
    587
}

impl Config {
    pub fn vault_keys_dir(&self) -> PathBuf {
        self.vault_keys_dir.clone().unwrap_or_else(|| self.data_dir.join("keys"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            data_dir: PathBuf::from("./praetor-data"),
            database_url: None,
            max_body_bytes: 1024 * 1024,
            max_connections: 4096,
            connection_idle_secs: 75,
            connection_send_secs: 60,
            demo: false,
            checkpoint_interval_ms: 1000,
            signature_max_skew_secs: 60,
            vault_keys_dir: None,
            allow_private_targets: false,
            delivery_backoff_ms: 1000,
            delivery_max_attempts: 8,
            delivery_attempt_timeout_ms: 30_000,
            smtp: None,
        }
    }
}

/// Input limits. Every input is bounded; each limit is named in the error it causes.
pub mod limits {
    pub const ACTION_TYPE_MAX: usize = 256;
    pub const ID_MAX: usize = 128;
    pub const NAME_MAX: usize = 256;
    pub const CONTENT_MAX: usize = 512 * 1024;
    /// How much of a decision request's body is read before the action is refused as a
    /// decision (`extract::DecisionBody`): bytes in all, of a body over `max_body_bytes`
    /// (counted, hashed and scanned, not kept), and seconds from when reading the body
    /// starts, whatever its size (a body within the limit that has not arrived by then
    /// is refused too). The time bound also bounds the CPU one request can take
    /// (scanning costs from under 1 to about 10 ns a byte by the body's shape, and far
    /// more for a body sent in tiny chunks).
    pub const UNREAD_BODY_MAX: u64 = 1024 * 1024 * 1024;
    pub const UNREAD_BODY_SECONDS: u64 = 5;
    /// Every other request body must arrive within this many seconds of when reading
    /// it starts, or the request is refused (`408`): one still arriving would hold its
    /// connection, and its slot among `max_connections`, for ever. Longer than a
    /// decision's bound: a policy pack of `max_body_bytes` may come over a slow link.
    pub const BODY_SECONDS: u64 = 30;
    pub const BATCH_MAX: usize = 500;
    pub const LIST_MAX: usize = 256;
    pub const POLICIES_PER_WORKSPACE: usize = 10_000;
    /// Content patterns a workspace's policies may list in all, in any mode
    /// (`praetor_core::content_patterns_listed`; packs are checked against it alone
    /// when validated).
    pub const CONTENT_PATTERNS_PER_WORKSPACE: usize = praetor_core::MAX_CONTENT_PATTERNS_LISTED;
    /// Grants in force at once in a workspace: each is held in memory (ended ones leave
    /// it, see `AuthorityState::prune_ended_grants`).
    pub const GRANTS_HELD_PER_WORKSPACE: usize = 10_000;
    /// Open just-in-time windows one agent may have at once: every decision of the
    /// agent looks through them.
    pub const OPEN_WINDOWS_PER_AGENT: usize = 100;
    /// A description, an instruction, a justification.
    pub const TEXT_MAX: usize = 4096;
    /// Free-form JSON a record keeps and shows (a grant's `constraints`), encoded.
    pub const FREE_JSON_MAX: usize = 16 * 1024;
}
