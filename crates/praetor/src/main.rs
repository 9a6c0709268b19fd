//! `praetor`: the one binary. CLI and glue only; the product lives in the crates.

mod bench;
mod config;
mod offline;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The server allocates and frees many small buffers per request (JSON, maps, strings)
/// on several threads; glibc's allocator was about a tenth of the server's CPU
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "praetor", version, about = "The authorisation plane for AI agents")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "PRAETOR_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<config::ServeArgs>),
    /// Manage API keys in a data directory (works while the server runs).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Verify the provenance vault offline.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Load-test a running server: decisions per second and latency percentiles.
    Bench(bench::BenchArgs),
    /// Work with policy definitions offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key; it is printed once.
    Create {
        /// admin, approvals, agent or read; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Bind an `agent` key to one agent.
        #[arg(long)]
        agent_id: Option<String>,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        server: config::ServerFiles,
        /// Make it in the PostgreSQL store at this URL (nodes that share one) instead of
        /// the data directory's SQLite.
        #[arg(long = "database", env = "PRAETOR_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Check an export bundle: leaves, chain, tree, checkpoint signatures, consistency.
    /// Several bundles, in order, are checked as one log: each must carry on exactly
    /// where the one before it ended (an export is at most 200,000 entries a request).
    Verify {
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
        /// The public key to trust: a C2SP vkey or a PEM public key, in a file. Repeatable.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The log the bundles must be of (its signed origin, `praetor/<workspace id>`):
        /// one server's key signs every workspace's log.
        #[arg(long)]
        origin: Option<String>,
    },
    /// Check one decision receipt (entry, inclusion proof, signed checkpoint): the API's
    /// answer, whose decision_id, decision and vault_entry_id must match the proven
    /// entry, or the bare receipt.
    VerifyReceipt {
        receipt: PathBuf,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The log the receipt must be of (its signed origin).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Re-verify a server's own store, including the per-entry HMACs and the signatures
    /// of its stored checkpoints.
    Check {
        #[command(flatten)]
        server: config::ServerFiles,
        /// Check the PostgreSQL store at this URL instead of the data directory's SQLite.
        #[arg(long = "database", env = "PRAETOR_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The keys directory whose signing and retired keys the checkpoints must verify
        /// with, when the server uses `--vault-keys-dir` (default `<data-dir>/keys`).
        #[arg(long, env = "PRAETOR_VAULT_KEYS_DIR")]
        vault_keys_dir: Option<PathBuf>,
        /// Trust these public keys (C2SP vkey or PEM files) instead of a keys directory.
        /// Repeatable.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// Retire the checkpoint signing keys and make new ones (with the server stopped).
    /// The retired public keys stay published, so old checkpoints still verify.
    RotateKeys {
        #[command(flatten)]
        server: config::ServerFiles,
        /// The keys directory, when the server uses `--vault-keys-dir`.
        #[arg(long, env = "PRAETOR_VAULT_KEYS_DIR")]
        vault_keys_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy pack (JSON or YAML) offline, with the server's checks; also
    /// accepts one policy, a list, or `{"policies": [...]}`.
    Validate { file: PathBuf },
    /// Deploy a policy pack to a running server (all or nothing).
    Deploy {
        file: PathBuf,
        #[arg(long, env = "PRAETOR_URL", default_value = "http://127.0.0.1:8787")]
        server: String,
        /// An admin API key.
        #[arg(long, env = "PRAETOR_KEY")]
        key: String,
    },
    /// Run decision cases (the corpus format) against a pack, offline: a pack's unit tests.
    /// Expected `policies` name the pack's policies by their `name`.
    Test { pack: PathBuf, cases: PathBuf },
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PRAETOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Bench(args) => bench::run(args),
        Command::Keys { command: KeysCommand::Create { scopes, agent_id, label, server, database_url } } => {
            config::locate(server, database_url, None)
                .and_then(|at| offline::create_key(&at.data_dir, at.database_url.as_deref(), &scopes, agent_id, label))
        }
        Command::Vault { command } => match command {
            VaultCommand::Verify { bundles, keys, origin } => offline::verify_bundles(&bundles, &keys, origin.as_deref()),
            VaultCommand::VerifyReceipt { receipt, keys, origin } => offline::verify_receipt(&receipt, &keys, origin.as_deref()),
            VaultCommand::Check { server, database_url, vault_keys_dir, keys } => config::locate(server, database_url, vault_keys_dir)
                .and_then(|at| offline::check_store(&at.data_dir, at.database_url.as_deref(), at.vault_keys_dir.as_deref(), &keys)),
            VaultCommand::RotateKeys { server, vault_keys_dir } => config::locate(server, None, vault_keys_dir)
                .and_then(|at| offline::rotate_keys(&at.data_dir, at.vault_keys_dir.as_deref())),
        },
        Command::Policy { command } => match command {
            PolicyCommand::Validate { file } => offline::validate_policies(&file),
            PolicyCommand::Deploy { file, server, key } => offline::deploy_pack(&file, &server, &key),
            PolicyCommand::Test { pack, cases } => offline::test_pack(&pack, &cases),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: config::ServeArgs) -> anyhow::Result<ExitCode> {
    let config::Settings { server: cfg, worker_threads } = config::build(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads).enable_all().build()?;
    runtime.block_on(async move {
        let (state, started) = praetor_server::open(cfg).await?;
        if let Some(key) = &started.admin_key {
            // Written by the first start before its commit (`bootstrap::first_start`).
            let path = state.config.data_dir.join(praetor_server::bootstrap::ADMIN_KEY_FILE);
            println!("Created workspace `{}`.", started.workspace_id);
            println!("Admin API key (shown once; also written to {}):", path.display());
            println!("  {key}");
        }
        if started.demo_loaded {
            println!("Loaded demo agents and policies.");
        }
        // The key is shown before the port is opened: a port already taken fails the
        // start after a first start has made its workspace, and its key is shown then.
        let listening = praetor_server::listen(state.config.listen).await?;
        println!("Praetor listening on http://{}  (API at /api/v1)", listening.local_addr()?);
        listening.serve(state).await?;
        Ok(ExitCode::SUCCESS)
    })
}
