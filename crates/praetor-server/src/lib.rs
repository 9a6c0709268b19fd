//! Praetor's HTTP server: the router, authentication, the pipeline's I/O edges and the
//! vault's checkpoint publisher. `router(state)` is apart from `serve()` so tests can
//! drive the whole application over a real listener of their own.

pub mod answer;
pub mod api;
pub mod auth;
pub mod authority;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod error;
pub mod events;
pub mod extract;
pub mod follow;
pub mod listen;
pub mod numbers;
pub mod pipeline;
pub mod secrets;
pub mod sessions;
pub mod signature;
pub mod state;
pub mod vault;
#[cfg(test)]
pub(crate) mod test_rng;

use std::sync::Arc;

pub use api::router;
pub use config::Config;
pub use state::AppState;

use praetor_store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the store at `{path}`: {reason}")]
    Store { path: String, reason: String },
    #[error("{0}")]
    Keys(#[from] vault::KeyFileError),
    #[error("cannot start: {0}")]
    Start(String),
    #[error("cannot listen on `{addr}`")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Open the store (PostgreSQL when `config.database_url` is set, else SQLite in
/// `config.data_dir`) and the vault keys, build the state, and create the default
/// workspace (and demo data) when needed.
pub async fn open(config: Config) -> Result<(Arc<AppState>, bootstrap::Started), ServeError> {
    // The detectors' table of look-alike letters takes some tens of milliseconds to
    // build: build it beside the start, not in the first request that needs it.
    std::thread::spawn(praetor_core::fold::prepare);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ServeError::Start(format!("cannot create the data directory `{}`: {e}", config.data_dir.display())))?;
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => {
            let shown = praetor_store::postgres::redact_url(url);
            let store = praetor_store::postgres::PostgresStore::connect(url)
                .map_err(|e| ServeError::Store { path: shown.clone(), reason: e.to_string() })?;
            tracing::info!(database = %shown, "using PostgreSQL");
            Arc::new(store)
        }
        None => {
            let db_path = config.data_dir.join("praetor.db");
            let store = praetor_store::sqlite::SqliteStore::open(&db_path)
                .map_err(|e| ServeError::Store { path: db_path.display().to_string(), reason: e.to_string() })?;
            Arc::new(store)
        }
    };
    // Keys missing from the directory are made in memory and saved only once the store
    // has been checked against them: a mistyped `--vault-keys-dir` is refused (none of
    // its keys signed the store's checkpoints) without new key files in it.
    let keys_dir = config.vault_keys_dir();
    // Held while this node serves, from before its keys are read: a rotation would
    // retire the keys it signs with. A directory that does not exist yet is held once
    // this start has made it.
    let keys_in_use = vault::KeysInUse::take(&keys_dir);
    let keys = vault::VaultKeys::load_or_generate(&keys_dir)?;
    let made_here = keys.made_here();
    let clock: Arc<dyn clock::Clock> = Arc::new(clock::SystemClock);
    let load = |keys| AppState::load(config.clone(), store.clone(), clock.clone(), keys);
    let mut state = match load(keys).await {
        Ok(state) => state,
        // Keys made here for an empty directory: another node sharing it may have saved
        // its own and signed a checkpoint with them since this start read it. Read the
        // directory again; if it still lacks keys, the refusal stands.
        Err(_) if made_here => {
            let keys = vault::VaultKeys::load_or_generate(&keys_dir)?;
            load(keys).await.map_err(|e| ServeError::Start(e.message))?
        }
        Err(e) => return Err(ServeError::Start(e.message)),
    };
    if !state.vault.save_new(&keys_dir)? {
        // Another node sharing the directory saved its keys first: serve with those.
        let keys = vault::VaultKeys::load_or_generate(&keys_dir)?;
        state = load(keys).await.map_err(|e| ServeError::Start(e.message))?;
    }
    let keys_in_use = keys_in_use.or_else(|| vault::KeysInUse::take(&keys_dir));
    let mut started = bootstrap::first_start(&state).await.map_err(|e| ServeError::Start(e.message))?;
    started.keys_in_use = keys_in_use;
    Ok((state, started))
}

/// A port open and the signal handlers installed, after the store is opened (a signal
/// during the open stops the process by its default action, and a connection is
/// refused until the node can answer it) and before "listening" is said: a supervisor
/// may connect or signal as soon as it reads that.
pub struct Listening {
    listener: tokio::net::TcpListener,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// Install the signal handlers, then open the port. The handlers come first: a signal
/// sent once a client can connect then always stops the server cleanly, never by the
/// default action.
pub async fn listen(addr: std::net::SocketAddr) -> Result<Listening, ServeError> {
    let shutdown = Box::pin(shutdown_signal().map_err(|e| ServeError::Start(format!("cannot install the signal handlers: {e}")))?);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
    Ok(Listening { listener, shutdown })
}

impl Listening {
    /// The address the port was opened on (the port chosen, for `--listen …:0`).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve `state` until SIGINT or SIGTERM.
    pub async fn serve(self, state: Arc<AppState>) -> Result<(), ServeError> {
        let Listening { listener, shutdown } = self;
        let checkpointer = vault::spawn_checkpointer(state.clone());
        let sweeper = sessions::spawn_sweeper(state.clone());
        let dispatcher = delivery::spawn_dispatcher(state.clone());
        let follower = follow::spawn_follower(state.clone());
        let addr = listener.local_addr().map_or_else(|_| state.config.listen.to_string(), |a| a.to_string());
        tracing::info!(%addr, data_dir = %state.config.data_dir.display(), "praetor is serving");
        let limits = listen::Limits {
            max_connections: state.config.max_connections,
            idle: std::time::Duration::from_secs(state.config.connection_idle_secs),
            send_within: std::time::Duration::from_secs(state.config.connection_send_secs),
        };
        let app = router(state);
        listen::serve(listener, app, limits, shutdown).await;
        checkpointer.abort();
        sweeper.abort();
        dispatcher.abort();
        follower.abort();
        Ok(())
    }
}

/// Install the SIGINT and SIGTERM handlers now (not at the first poll, which comes only
/// once serving has begun) and return the future that ends at either signal.
/// (Elsewhere, Ctrl-C's handler is installed at the first poll.)
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}
