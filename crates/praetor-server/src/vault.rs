//! The server's side of the vault: the checkpoint signing keys (kept in the data
//! directory, 0600), checkpoint signing, and the task that publishes a signed
//! checkpoint at least every interval while entries arrive.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use praetor_store::CheckpointRow;
use praetor_vault::checkpoint::{Checkpoint, KeyAlgorithm, NoteSigner, NoteVerifier};
use praetor_vault::verify::PublicKeyInfo;

use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;

/// The key names in checkpoint signature lines, one per algorithm (C2SP signed-note:
/// a name identifies a key, so two keys get two names).
pub const KEY_NAME_P256: &str = "praetor-vault-p256";
pub const KEY_NAME_ED25519: &str = "praetor-vault-ed25519";
pub const KEY_NAMES: [&str; 2] = [KEY_NAME_P256, KEY_NAME_ED25519];

pub struct VaultKeys {
    /// Active signers: ECDSA P-256 first, then Ed25519. Every checkpoint carries both.
    pub signers: Vec<NoteSigner>,
    /// Public keys of rotated-out signers, still published so old checkpoints verify.
    pub retired: Vec<NoteVerifier>,
    /// Which of `signers` were made by `load_or_generate` and are not saved yet.
    unsaved: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key file `{path}` is not a valid key: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("a server is signing with the keys in `{dir}` (it holds a lock on the directory): stop every server using them first, then rotate")]
    InUse { dir: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.to_owned(), source }
}

/// A serving node's hold on its keys directory: a shared lock on the directory itself
/// (opened read-only, so a read-only directory from a secret store serves as well, and
/// nothing is written in it), kept while this value lives. `praetor vault rotate-keys`
/// takes the lock alone, so it refuses while any process on this host holds one: the
/// keys it would retire are the ones being signed with. Nodes on other hosts, with copies
/// of the directory, are not seen.
#[derive(Debug)]
pub struct KeysInUse {
    _dir: std::fs::File,
}

impl KeysInUse {
    /// Take the hold, waiting while a rotation runs. `None` (after a warning) where the
    /// directory cannot be opened or locked (it does not exist yet, or the platform
    /// cannot lock a directory): a node serves anyway, unseen by a rotation.
    pub fn take(dir: &Path) -> Option<KeysInUse> {
        if !dir.is_dir() {
            return None;
        }
        let unheld = |e: std::io::Error| {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot hold the vault keys directory: `praetor vault rotate-keys` will not see that this node signs with its keys");
            None
        };
        let f = match std::fs::File::open(dir) {
            Ok(f) => f,
            Err(e) => return unheld(e),
        };
        match f.try_lock_shared() {
            Ok(()) => return Some(KeysInUse { _dir: f }),
            Err(std::fs::TryLockError::Error(e)) => return unheld(e),
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!(dir = %dir.display(), "the vault keys directory is locked (a rotation running?): waiting for it");
            }
        }
        match f.lock_shared() {
            Ok(()) => Some(KeysInUse { _dir: f }),
            Err(e) => unheld(e),
        }
    }
}

/// The exclusive lock a rotation holds on `dir`, or why it cannot have it.
fn lock_for_rotation(dir: &Path) -> Result<Option<std::fs::File>, KeyFileError> {
    let f = std::fs::File::open(dir).map_err(io(dir))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Err(KeyFileError::InUse { dir: dir.to_owned() }),
        // A platform that cannot lock a directory: nothing to see, as before the lock.
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot lock the vault keys directory: a server using it would not be seen");
            Ok(None)
        }
    }
}

fn read_signer(path: &Path, name: &str) -> Result<NoteSigner, KeyFileError> {
    let pem = std::fs::read_to_string(path).map_err(io(path))?;
    NoteSigner::from_pkcs8_pem(name, &pem).map_err(|e| KeyFileError::Invalid { path: path.to_owned(), reason: e.to_string() })
}

/// The signing key files, in the order of `VaultKeys::signers`.
const KEY_FILES: [(&str, KeyAlgorithm, &str); 2] = [
    ("vault-ecdsa-p256.pem", KeyAlgorithm::EcdsaP256, KEY_NAME_P256),
    ("vault-ed25519.pem", KeyAlgorithm::Ed25519, KEY_NAME_ED25519),
];

/// Remove staged key files (`<key file>.<pid>.<random>.new`) a process left when it
/// died between linking one and removing it: each is another name of a private key,
/// which a rotation would not delete. Only those older than a minute: a younger one may
/// be another node's save under way.
fn remove_left_staged_keys(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let staged = KEY_FILES.iter().any(|(file, ..)| name.starts_with(&format!("{file}."))) && name.ends_with(".new");
        if staged && written_before(&entry, std::time::Duration::from_secs(60)) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::warn!(path = %entry.path().display(), "removed a staged signing key file a process left behind"),
                Err(e) => tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a staged signing key file left behind"),
            }
        }
    }
}

/// Whether the file was last written at least `age` ago.
pub(crate) fn written_before(entry: &std::fs::DirEntry, age: std::time::Duration) -> bool {
    entry.metadata().and_then(|m| m.modified()).ok().and_then(|at| at.elapsed().ok()).is_some_and(|elapsed| elapsed >= age)
}

/// Save a new signing key at `path`; `false` if another process made one there first.
/// Nodes that share a keys directory may start together: the key is written whole
/// under a name of this process's, then linked to `path` only if no key is there yet.
/// (Each node would otherwise sign with a key of its own, or read a file half written.)
fn save_signer(path: &Path, signer: &NoteSigner) -> Result<bool, KeyFileError> {
    let pem = signer.to_pkcs8_pem().map_err(|e| KeyFileError::Invalid { path: path.to_owned(), reason: e.to_string() })?;
    let staged = path.with_extension(format!("pem.{}.{}.new", std::process::id(), hex::encode(crate::secrets::random_bytes::<4>())));
    write_private(&staged, pem.as_bytes())?;
    let linked = std::fs::hard_link(&staged, path);
    let _ = std::fs::remove_file(&staged);
    let linked = match linked {
        // A filesystem without hard links: created in place, as before (a reader at that
        // very moment could find it half written).
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => match write_private(path, pem.as_bytes()) {
            Err(KeyFileError::Io { source, .. }) => Err(source),
            Err(invalid) => return Err(invalid),
            Ok(()) => Ok(()),
        },
        linked => linked,
    };
    match linked {
        Ok(()) => {
            sync_dir(path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
            tracing::info!(path = %path.display(), algorithm = ?signer.algorithm(), "created a vault signing key");
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            tracing::info!(path = %path.display(), "another process created this vault signing key at the same time; using it");
            Ok(false)
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// Write a secret file readable by its owner only, durably (see `write_durably`).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyFileError> {
    write_durably(path, contents, 0o600)
}

/// Create `path` (it must not exist) with `mode`, and make it survive a power loss
/// before returning: its contents and its name in the directory are both synced.
/// What follows may depend on it: a key that is shown, a private key deleted once its
/// public key is kept.
fn write_durably(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyFileError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    sync_dir(path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// Sync a directory, so that the files created or removed in it stay so. (Unix only:
/// elsewhere a directory cannot be opened as a file.)
pub(crate) fn sync_dir(dir: &Path) -> Result<(), KeyFileError> {
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl VaultKeys {
    /// Load the signing keys from `dir` (`<dir>/vault-ecdsa-p256.pem`,
    /// `<dir>/vault-ed25519.pem`), creating any that are missing, plus the retired public
    /// keys in `<dir>/retired/*.pub` (one C2SP vkey per file).
    pub fn load_or_create(dir: &Path) -> Result<VaultKeys, KeyFileError> {
        let keys = VaultKeys::load_or_generate(dir)?;
        match keys.save_new(dir)? {
            true => Ok(keys),
            // Another process saved its own first: the files hold every key now.
            false => VaultKeys::load_or_generate(dir),
        }
    }

    /// Load the signing keys in `dir` and make any that are missing in memory only,
    /// writing nothing (see `save_new`): a server checks them against the store first,
    /// so that a mistyped `--vault-keys-dir` is refused without new key files in it.
    pub fn load_or_generate(dir: &Path) -> Result<VaultKeys, KeyFileError> {
        remove_left_staged_keys(dir);
        let mut keys = VaultKeys { signers: Vec::new(), retired: Vec::new(), unsaved: Vec::new() };
        for (file, alg, name) in KEY_FILES {
            let path = dir.join(file);
            if path.exists() {
                keys.signers.push(read_signer(&path, name)?);
            } else {
                let signer = NoteSigner::generate(name, alg).map_err(|e| KeyFileError::Invalid { path: path.clone(), reason: e.to_string() })?;
                keys.unsaved.push(keys.signers.len());
                keys.signers.push(signer);
            }
        }
        keys.retired = retired_keys(dir)?;
        Ok(keys)
    }

    /// Whether `load_or_generate` made any key, the directory lacking it.
    pub fn made_here(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// Write the keys `load_or_generate` made into `dir`. `false` when another process
    /// made some of them there meanwhile (nodes sharing a keys directory that start
    /// together): the files then hold keys other than these, and the caller loads them.
    pub fn save_new(&self, dir: &Path) -> Result<bool, KeyFileError> {
        if self.unsaved.is_empty() {
            return Ok(true);
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut all_ours = true;
        for &i in &self.unsaved {
            let (file, ..) = KEY_FILES[i];
            all_ours &= save_signer(&dir.join(file), &self.signers[i])?;
        }
        Ok(all_ours)
    }

    /// The public keys of the signing keys in `dir` and of those retired there: what
    /// every checkpoint the server signed verifies with. Nothing is created (`praetor
    /// vault check` reads them).
    pub fn public_keys_in(dir: &Path) -> Result<Vec<NoteVerifier>, KeyFileError> {
        let mut verifiers = Vec::new();
        for (file, _, name) in KEY_FILES {
            let path = dir.join(file);
            if path.exists() {
                // Readable by the server's user only: another user checking a copy goes
                // on with the retired keys, or with `--key`.
                let pem = match std::fs::read_to_string(&path) {
                    Ok(pem) => pem,
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        tracing::warn!(path = %path.display(), "cannot read a signing key file; its public key is not used");
                        continue;
                    }
                    Err(e) => return Err(io(&path)(e)),
                };
                let signer = NoteSigner::from_pkcs8_pem(name, &pem).map_err(|e| KeyFileError::Invalid { path: path.clone(), reason: e.to_string() })?;
                verifiers.push(signer.verifier());
            }
        }
        verifiers.extend(retired_keys(dir)?);
        Ok(verifiers)
    }

    /// Retire the active signing keys in `dir`: keep each one's public key in
    /// `<dir>/retired/<name>-<key id>.pub` (still published, so old checkpoints verify),
    /// delete the private key, and make new ones. Refused while a server on this host
    /// uses the directory (`KeysInUse`); the server loads keys at start. Returns the
    /// retired vkeys.
    pub fn rotate(dir: &Path) -> Result<Vec<String>, KeyFileError> {
        // A mistyped directory would otherwise be made, and keys made in it "retired".
        if !KEY_FILES.iter().any(|(file, ..)| dir.join(file).exists()) {
            return Err(KeyFileError::Invalid { path: dir.to_owned(), reason: "holds no signing key: nothing to rotate (a mistyped directory?)".into() });
        }
        let _alone = lock_for_rotation(dir)?;
        let current = VaultKeys::load_or_create(dir)?;
        let retired_dir = dir.join("retired");
        std::fs::create_dir_all(&retired_dir).map_err(io(&retired_dir))?;
        let mut retired = Vec::new();
        for signer in &current.signers {
            let vkey = signer.vkey();
            let path = retired_dir.join(format!("{}-{:08x}.pub", signer.name(), signer.key_id()));
            // Synced before the private key goes: after a power loss in between, old
            // checkpoints must still have a published key to verify against.
            if path.exists() {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
            write_durably(&path, format!("{vkey}\n").as_bytes(), 0o644)?;
            retired.push(vkey);
        }
        sync_dir(dir)?; // the `retired` directory's own entry
        for (file, ..) in KEY_FILES {
            let path = dir.join(file);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        sync_dir(dir)?;
        VaultKeys::load_or_create(dir)?;
        Ok(retired)
    }

    /// Keys made in memory only (tests).
    pub fn ephemeral() -> VaultKeys {
        let signers = KEY_FILES.into_iter().filter_map(|(_, alg, name)| NoteSigner::generate(name, alg).ok()).collect();
        VaultKeys { signers, retired: Vec::new(), unsaved: Vec::new() }
    }

    pub fn verifiers(&self) -> Vec<NoteVerifier> {
        self.signers.iter().map(NoteSigner::verifier).chain(self.retired.iter().cloned()).collect()
    }

    pub fn public_keys(&self) -> Vec<(PublicKeyInfo, &'static str)> {
        let active = self.signers.iter().map(|s| (s.verifier(), "active"));
        let retired = self.retired.iter().map(|v| (v.clone(), "retired"));
        active.chain(retired).filter_map(|(v, status)| PublicKeyInfo::from_verifier(&v).ok().map(|i| (i, status))).collect()
    }
}

/// The retired public keys in `<dir>/retired/*.pub` (one C2SP vkey per file).
fn retired_keys(dir: &Path) -> Result<Vec<NoteVerifier>, KeyFileError> {
    let mut retired = Vec::new();
    let retired_dir = dir.join("retired");
    if retired_dir.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(&retired_dir).map_err(io(&retired_dir))?.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "pub")) {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let v = NoteVerifier::parse(text.trim()).map_err(|e| KeyFileError::Invalid { path: path.clone(), reason: e.to_string() })?;
            retired.push(v);
        }
    }
    Ok(retired)
}

/// A workspace's log origin: the first line of its checkpoints.
pub fn origin(workspace_id: &str) -> String {
    format!("praetor/{workspace_id}")
}

/// Sign and store a checkpoint of the workspace's log at `size` (which must not exceed
/// the committed head), and return the stored one (another signer may have won the race
/// for the same size; both are valid).
pub async fn checkpoint_at(state: &AppState, workspace_id: &str, size: u64) -> ApiResult<CheckpointRow> {
    let root = state.store.tree_root(workspace_id, size).await?;
    let cp = Checkpoint::new(origin(workspace_id), size, root);
    let note = cp
        .sign(state.vault.signers.iter())
        .map_err(|e| ApiError::new(Code::Internal, format!("cannot sign a checkpoint: {e}")))?;
    let row = CheckpointRow { size, root, note, created_at: state.now_ms() };
    if let Err(e) = state.store.put_checkpoint(workspace_id, row.clone()).await {
        // The signature stands without its row: it signs the log's own size and root.
        // Keeping it serves later reads; a store that cannot write (a full disk) must
        // not stop an export or a receipt, which only read.
        tracing::warn!(workspace_id, size, error = %e, "a checkpoint was signed but could not be stored; answering with it anyway");
        return Ok(row);
    }
    Ok(state.store.checkpoint_covering(workspace_id, size).await?.filter(|c| c.size == size).unwrap_or(row))
}

/// Refuse to serve a workspace whose log is shorter than a checkpoint signed of it:
/// entries were removed, and every append would fail (its tree hashes are still
/// there). The checkpoint is read first: the head only grows, so another node
/// appending and signing meanwhile cannot make an intact log look short. Refuse too
/// when none of this node's keys (`verifiers`: active and retired) signed that
/// checkpoint: a node with a keys directory of its own would sign checkpoints no
/// auditor trusts, and they cannot be taken back.
pub async fn check_log_continues(store: &dyn praetor_store::Store, workspace_id: &str, verifiers: &[NoteVerifier]) -> ApiResult<()> {
    let Some(signed) = store.latest_checkpoint(workspace_id).await? else { return Ok(()) };
    if praetor_vault::checkpoint::open_note(&signed.note, verifiers).is_err() {
        return Err(ApiError::new(
            Code::Internal,
            format!(
                "none of the vault keys here (active or in `retired/`) signed the latest checkpoint of workspace `{workspace_id}` \
                 (size {}): every node must use the same keys directory (docs/deploy.md); after a lost keys directory, put the \
                 old public keys (vkeys) in its `retired/`",
                signed.size
            ),
        ));
    }
    let head = store.log_head(workspace_id).await?;
    if head.size < signed.size {
        return Err(ApiError::new(
            Code::Internal,
            format!(
                "the vault log of workspace `{workspace_id}` holds {} entries, but a signed checkpoint covers {}: entries were removed; \
                 run `praetor vault check`, and restore the database from a backup",
                head.size, signed.size
            ),
        ));
    }
    Ok(())
}

/// The latest checkpoint, signing one at the head first if the head has moved on.
pub async fn fresh_checkpoint(state: &AppState, workspace_id: &str) -> ApiResult<CheckpointRow> {
    let head = state.store.log_head(workspace_id).await?;
    match state.store.latest_checkpoint(workspace_id).await? {
        Some(cp) if cp.size >= head.size => Ok(cp),
        _ => checkpoint_at(state, workspace_id, head.size).await,
    }
}

/// Publish a checkpoint for every workspace whose log grew, every `interval`. With
/// several nodes on one database, one of them does it: the holder of the workspace's
/// `checkpoints` lease, renewed each round and taken over by another node once it has
/// run out (three rounds, at least a second, after its holder stopped renewing).
pub fn spawn_checkpointer(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = state.config.checkpoint_interval_ms.max(50);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lease_ms = (3 * interval).max(1_000) as i64;
        loop {
            tick.tick().await;
            if state.store.superseded().is_some() {
                continue; // see `delivery::dispatch_due`
            }
            for ws in state.workspace_ids() {
                match hold_lease(&state, &ws, "checkpoints", lease_ms).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(workspace_id = %ws, error = %e, "cannot take the checkpoint lease");
                        continue;
                    }
                }
                if let Err(e) = fresh_checkpoint(&state, &ws).await {
                    tracing::warn!(workspace_id = %ws, error = %e.message, "checkpoint not published");
                }
            }
        }
    })
}

/// Take or renew a workspace's lease for this node; `false` while another node holds it.
pub async fn hold_lease(state: &AppState, workspace_id: &str, name: &str, lease_ms: i64) -> praetor_store::Result<bool> {
    let now = state.now_ms();
    let take = praetor_store::Mutation::TakeLease {
        workspace_id: workspace_id.to_owned(),
        name: name.to_owned(),
        holder: state.store.node_id().to_owned(),
        now,
        until: now + lease_ms,
    };
    match state.store.commit(praetor_store::Txn { mutations: vec![take], seal: Vec::new() }).await {
        Ok(_) => Ok(true),
        Err(praetor_store::StoreError::Stale(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes sharing an empty keys directory and starting together all sign with the
    /// same keys, the ones the files hold, and leave no staged file behind.
    #[test]
    fn processes_creating_the_keys_at_once_agree_on_them() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(6);
            let made: Vec<Vec<String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..6)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            let keys = VaultKeys::load_or_create(dir.path()).unwrap();
                            keys.signers.iter().map(NoteSigner::vkey).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let on_disk: Vec<String> = VaultKeys::load_or_create(dir.path()).unwrap().signers.iter().map(NoteSigner::vkey).collect();
            assert!(made.iter().all(|m| m == &on_disk), "{made:?} against {on_disk:?}");
            let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            assert_eq!(names, ["vault-ecdsa-p256.pem", "vault-ed25519.pem"]);
        }
    }
}
