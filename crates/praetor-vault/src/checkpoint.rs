//! Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes.
//!
//! This is the signing layer: it knows notes, keys and checkpoint text, not storage.
//!
//! # Signed note (c2sp.org/signed-note)
//!
//! ```text
//! <text, ending in a newline>
//! <blank line>
//! — <key name> <base64(4-byte key ID || signature)>
//! ```
//!
//! One signature line per signer, each starting with U+2014 EM DASH and a space. The
//! text is everything up to and including the newline before the *last* blank line.
//!
//! Supported signature types (signed-note "Signature types"):
//!
//! | type | algorithm | key ID | signature bytes | vkey key material |
//! |---|---|---|---|---|
//! | `0x01` | Ed25519 (RFC 8032) over the text | `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pubkey32)[:4]` | 64 bytes | 32-byte public key |
//! | `0x02` | ECDSA P-256 with SHA-256 over the text (as github.com/transparency-dev/witness) | `SHA-256(SPKI DER)[:4]` | ASN.1 DER `Ecdsa-Sig-Value` | DER SubjectPublicKeyInfo |
//!
//! A verifier key ("vkey") is `<name>+<hex key ID>+<base64(type ‖ key material)>`.
//!
//! # Checkpoint (c2sp.org/tlog-checkpoint)
//!
//! ```text
//! <origin>\n<tree size, decimal>\n<base64 root hash>\n[<extension line>\n]*
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, Verifier as _};
use p256::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    LineEnding,
};
use sha2::{Digest, Sha256};

use crate::error::VaultError;
use crate::merkle::Hash;

/// The signed-note signature type of Ed25519 (c2sp.org/signed-note).
pub const SIG_TYPE_ED25519: u8 = 0x01;
/// The signed-note signature type of ECDSA (c2sp.org/signed-note, transparency-dev/witness).
pub const SIG_TYPE_ECDSA: u8 = 0x02;

/// The most signature lines [`open_note`] reads (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;
/// The largest note [`open_note`] reads, in bytes.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

const EM_DASH_PREFIX: &str = "\u{2014} ";

/// A signature algorithm this crate signs and verifies notes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// Ed25519, signed-note type `0x01`.
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256, signed-note type `0x02`.
    EcdsaP256,
}

impl KeyAlgorithm {
    /// The signed-note signature type byte.
    #[must_use]
    pub fn signature_type(self) -> u8 {
        match self {
            Self::Ed25519 => SIG_TYPE_ED25519,
            Self::EcdsaP256 => SIG_TYPE_ECDSA,
        }
    }

    /// `"ed25519"` or `"ecdsa-p256"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256",
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = VaultError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ed25519" => Ok(Self::Ed25519),
            "ecdsa-p256" | "p256" | "ecdsa" => Ok(Self::EcdsaP256),
            _ => Err(VaultError::KeyEncoding {
                reason: format!("unknown key algorithm `{s}`"),
            }),
        }
    }
}

/// Checks a key name: non-empty, no Unicode whitespace, no `+` (signed-note "Format").
///
/// # Errors
/// [`VaultError::InvalidKeyName`].
pub fn check_key_name(name: &str) -> Result<(), VaultError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(VaultError::InvalidKeyName { name: name.into() });
    }
    Ok(())
}

fn key_err(e: impl std::fmt::Display) -> VaultError {
    VaultError::KeyEncoding {
        reason: e.to_string(),
    }
}

fn first4(h: &[u8]) -> u32 {
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// `SHA-256(name || 0x0A || 0x01 || public key)[:4]` (signed-note "Ed25519 signatures").
#[must_use]
pub fn ed25519_key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', SIG_TYPE_ED25519]);
    h.update(public_key);
    first4(&h.finalize())
}

/// `SHA-256(DER SubjectPublicKeyInfo)[:4]` (signed-note type `0x02`).
#[must_use]
pub fn ecdsa_key_id(spki_der: &[u8]) -> u32 {
    first4(&Sha256::digest(spki_der))
}

enum SignerKey {
    Ed25519(ed25519_dalek::SigningKey),
    EcdsaP256(p256::ecdsa::SigningKey),
}

/// A named private key that signs notes (Ed25519 or ECDSA P-256).
pub struct NoteSigner {
    name: String,
    key: SignerKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm())
            .field("key_id", &format_args!("{:08x}", self.key_id()))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A new random key from the operating system's generator (`getrandom`).
    ///
    /// # Errors
    /// [`VaultError::InvalidKeyName`], [`VaultError::Random`].
    pub fn generate(name: &str, algorithm: KeyAlgorithm) -> Result<Self, VaultError> {
        // A random 32-byte string is a valid P-256 scalar except with probability
        // about 2^-32; try again in that case.
        for _ in 0..8 {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| VaultError::Random {
                reason: e.to_string(),
            })?;
            match Self::from_seed(name, algorithm, &seed) {
                Err(VaultError::KeyEncoding { .. }) => {}
                other => return other,
            }
        }
        Err(VaultError::Random {
            reason: "no valid p-256 scalar after 8 draws".into(),
        })
    }

    /// A key from 32 secret bytes: the RFC 8032 seed for Ed25519, the big-endian scalar
    /// for P-256 (which must be in `1..n`).
    ///
    /// # Errors
    /// [`VaultError::InvalidKeyName`], [`VaultError::KeyEncoding`].
    pub fn from_seed(
        name: &str,
        algorithm: KeyAlgorithm,
        seed: &[u8; 32],
    ) -> Result<Self, VaultError> {
        check_key_name(name)?;
        let key = match algorithm {
            KeyAlgorithm::Ed25519 => {
                SignerKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
            }
            KeyAlgorithm::EcdsaP256 => {
                SignerKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(seed).map_err(key_err)?)
            }
        };
        Ok(Self {
            name: name.into(),
            key,
        })
    }

    /// Imports a PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`) of either algorithm,
    /// or a SEC1 P-256 key (`-----BEGIN EC PRIVATE KEY-----`).
    ///
    /// # Errors
    /// [`VaultError::InvalidKeyName`], [`VaultError::KeyEncoding`].
    pub fn from_pkcs8_pem(name: &str, pem: &str) -> Result<Self, VaultError> {
        check_key_name(name)?;
        let pem = pem.trim();
        let key = if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            SignerKey::Ed25519(k)
        } else if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            SignerKey::EcdsaP256(k)
        } else {
            let sk = p256::SecretKey::from_sec1_pem(pem).map_err(|_| VaultError::KeyEncoding {
                reason: "not a pkcs#8 ed25519 or p-256 private key, nor a sec1 p-256 key".into(),
            })?;
            SignerKey::EcdsaP256(p256::ecdsa::SigningKey::from(sk))
        };
        Ok(Self {
            name: name.into(),
            key,
        })
    }

    /// Exports the private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, LF line
    /// endings). Keep it secret.
    ///
    /// # Errors
    /// [`VaultError::KeyEncoding`].
    pub fn to_pkcs8_pem(&self) -> Result<String, VaultError> {
        let pem = match &self.key {
            SignerKey::Ed25519(k) => k.to_pkcs8_pem(LineEnding::LF).map_err(key_err)?,
            SignerKey::EcdsaP256(k) => k.to_pkcs8_pem(LineEnding::LF).map_err(key_err)?,
        };
        Ok(pem.as_str().to_owned())
    }

    /// The key name used in signature lines.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.key {
            SignerKey::Ed25519(_) => KeyAlgorithm::Ed25519,
            SignerKey::EcdsaP256(_) => KeyAlgorithm::EcdsaP256,
        }
    }

    /// The matching verifier.
    #[must_use]
    pub fn verifier(&self) -> NoteVerifier {
        let key = match &self.key {
            SignerKey::Ed25519(k) => VerifierKey::Ed25519(k.verifying_key()),
            SignerKey::EcdsaP256(k) => {
                let vk = *k.verifying_key();
                VerifierKey::EcdsaP256 {
                    spki: p256_spki(&vk),
                    key: vk,
                }
            }
        };
        NoteVerifier::from_key(self.name.clone(), key)
    }

    /// The signed-note key ID.
    #[must_use]
    pub fn key_id(&self) -> u32 {
        self.verifier().key_id()
    }

    /// The verifier key string `<name>+<hex key ID>+<base64(type || key)>`.
    #[must_use]
    pub fn vkey(&self) -> String {
        self.verifier().vkey()
    }

    /// The public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// [`VaultError::KeyEncoding`].
    pub fn public_key_pem(&self) -> Result<String, VaultError> {
        self.verifier().public_key_pem()
    }

    /// Signs `msg`: 64 bytes for Ed25519 (RFC 8032), a DER signature for ECDSA
    /// (RFC 6979 deterministic nonce, SHA-256). Without the key ID prefix.
    ///
    /// # Errors
    /// [`VaultError::KeyEncoding`] if the signing primitive fails.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, VaultError> {
        match &self.key {
            SignerKey::Ed25519(k) => Ok(k.sign(msg).to_bytes().to_vec()),
            SignerKey::EcdsaP256(k) => {
                let sig: p256::ecdsa::DerSignature =
                    p256::ecdsa::signature::Signer::try_sign(k, msg).map_err(key_err)?;
                Ok(sig.as_bytes().to_vec())
            }
        }
    }
}

/// The DER SubjectPublicKeyInfo of a P-256 key. Encoding a valid point cannot fail;
/// an empty vector would only make every key ID and signature check fail.
fn p256_spki(vk: &p256::ecdsa::VerifyingKey) -> Vec<u8> {
    vk.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default()
}

#[derive(Clone)]
enum VerifierKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    EcdsaP256 {
        key: p256::ecdsa::VerifyingKey,
        spki: Vec<u8>,
    },
}

/// A named public key that verifies note signatures.
#[derive(Clone)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifierKey,
}

impl std::fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteVerifier")
            .field("vkey", &self.vkey())
            .finish()
    }
}

impl NoteVerifier {
    fn from_key(name: String, key: VerifierKey) -> Self {
        let key_id = match &key {
            VerifierKey::Ed25519(k) => ed25519_key_id(&name, k.as_bytes()),
            VerifierKey::EcdsaP256 { spki, .. } => ecdsa_key_id(spki),
        };
        Self { name, key_id, key }
    }

    /// Parses a C2SP verifier key `<name>+<hex key ID>+<base64(type || key)>`. The key
    /// ID must match the key; only types `0x01` and `0x02` (P-256) are accepted.
    ///
    /// # Errors
    /// [`VaultError::InvalidKeyName`], [`VaultError::MalformedVerifierKey`],
    /// [`VaultError::UnsupportedKeyType`], [`VaultError::KeyIdMismatch`].
    pub fn parse(vkey: &str) -> Result<Self, VaultError> {
        let malformed = |reason: &str| VaultError::MalformedVerifierKey {
            reason: reason.into(),
        };
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected `<name>+<hex id>+<base64 key>`"));
        };
        check_key_name(name)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("key id must be 8 hex digits"));
        }
        let given = u32::from_str_radix(id_hex, 16)
            .map_err(|_| malformed("key id must be 8 hex digits"))?;
        let raw = B64
            .decode(key_b64)
            .map_err(|_| malformed("key is not valid base64"))?;
        let (&type_byte, material) = raw.split_first().ok_or_else(|| malformed("empty key"))?;
        let key = match type_byte {
            SIG_TYPE_ED25519 => {
                let bytes: [u8; 32] = material
                    .try_into()
                    .map_err(|_| malformed("ed25519 key must be 32 bytes"))?;
                VerifierKey::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                        .map_err(|_| malformed("invalid ed25519 point"))?,
                )
            }
            SIG_TYPE_ECDSA => VerifierKey::EcdsaP256 {
                key: p256::ecdsa::VerifyingKey::from_public_key_der(material)
                    .map_err(|_| malformed("ecdsa key is not a p-256 subjectpublickeyinfo"))?,
                spki: material.to_vec(),
            },
            other => return Err(VaultError::UnsupportedKeyType { type_byte: other }),
        };
        let v = Self::from_key(name.to_owned(), key);
        if v.key_id != given {
            return Err(VaultError::KeyIdMismatch {
                given: id_hex.to_owned(),
                computed: format!("{:08x}", v.key_id),
            });
        }
        Ok(v)
    }

    /// A verifier from a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`) of an
    /// Ed25519 or P-256 key, with the key name the signatures use (a PEM key has none
    /// of its own; Praetor's server names its keys after their algorithm). An Ed25519
    /// key ID is computed over the name, so it must be the signer's.
    ///
    /// # Errors
    /// [`VaultError::InvalidKeyName`], [`VaultError::KeyEncoding`].
    pub fn from_public_key_pem(name: &str, pem: &str) -> Result<Self, VaultError> {
        check_key_name(name)?;
        let pem = pem.trim();
        let key = if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            VerifierKey::Ed25519(k)
        } else {
            let k = p256::ecdsa::VerifyingKey::from_public_key_pem(pem).map_err(|_| {
                VaultError::KeyEncoding {
                    reason: "not an ed25519 or p-256 subjectpublickeyinfo pem".into(),
                }
            })?;
            VerifierKey::EcdsaP256 {
                spki: p256_spki(&k),
                key: k,
            }
        };
        Ok(Self::from_key(name.to_owned(), key))
    }

    /// Accepts either a PEM public key (named `default_name`) or a vkey string.
    ///
    /// # Errors
    /// The errors of [`NoteVerifier::from_public_key_pem`] or [`NoteVerifier::parse`].
    pub fn parse_any(text: &str, default_name: &str) -> Result<Self, VaultError> {
        if text.contains("-----BEGIN") {
            Self::from_public_key_pem(default_name, text)
        } else {
            Self::parse(text)
        }
    }

    /// The key name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same public key under another name (and so, for Ed25519, another key ID).
    ///
    /// # Errors
    /// [`VaultError::InvalidKeyName`].
    pub fn renamed(&self, name: &str) -> Result<Self, VaultError> {
        check_key_name(name)?;
        Ok(Self::from_key(name.to_owned(), self.key.clone()))
    }

    /// The signed-note key ID.
    #[must_use]
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The name and key ID, to say which key this is.
    #[must_use]
    pub fn key_ref(&self) -> KeyRef {
        KeyRef {
            name: self.name.clone(),
            key_id: self.key_id,
        }
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.key {
            VerifierKey::Ed25519(_) => KeyAlgorithm::Ed25519,
            VerifierKey::EcdsaP256 { .. } => KeyAlgorithm::EcdsaP256,
        }
    }

    /// The verifier key string `<name>+<hex key ID>+<base64(type || key)>`.
    #[must_use]
    pub fn vkey(&self) -> String {
        let mut material = vec![self.algorithm().signature_type()];
        match &self.key {
            VerifierKey::Ed25519(k) => material.extend_from_slice(k.as_bytes()),
            VerifierKey::EcdsaP256 { spki, .. } => material.extend_from_slice(spki),
        }
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(material))
    }

    /// The public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// [`VaultError::KeyEncoding`].
    pub fn public_key_pem(&self) -> Result<String, VaultError> {
        match &self.key {
            VerifierKey::Ed25519(k) => k.to_public_key_pem(LineEnding::LF).map_err(key_err),
            VerifierKey::EcdsaP256 { key, .. } => {
                key.to_public_key_pem(LineEnding::LF).map_err(key_err)
            }
        }
    }

    /// Checks a raw signature (without the key ID prefix) over `msg`.
    #[must_use]
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.key {
            VerifierKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .map(|s| k.verify_strict(msg, &s).is_ok())
                .unwrap_or(false),
            VerifierKey::EcdsaP256 { key, .. } => p256::ecdsa::DerSignature::from_bytes(sig)
                .map(|s| key.verify(msg, &s).is_ok())
                .unwrap_or(false),
        }
    }
}

fn check_note_text(text: &str, what: &str) -> Result<(), VaultError> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(VaultError::MalformedNote {
            reason: format!("{what} contains a control character"),
        });
    }
    Ok(())
}

/// Signs `text` (which must end in a newline and contain no control character other
/// than newline) with each signer and returns the signed note.
///
/// # Errors
/// [`VaultError::MalformedNote`] for bad text or no signer; signing errors.
pub fn sign_note<'a, I>(text: &str, signers: I) -> Result<String, VaultError>
where
    I: IntoIterator<Item = &'a NoteSigner>,
{
    if !text.ends_with('\n') {
        return Err(VaultError::MalformedNote {
            reason: "text must end in a newline".into(),
        });
    }
    check_note_text(text, "text")?;
    let mut note = String::with_capacity(text.len() + 128);
    note.push_str(text);
    note.push('\n');
    let mut count = 0;
    for s in signers {
        let mut payload = s.key_id().to_be_bytes().to_vec();
        payload.extend_from_slice(&s.sign(text.as_bytes())?);
        note.push_str(EM_DASH_PREFIX);
        note.push_str(&s.name);
        note.push(' ');
        note.push_str(&B64.encode(payload));
        note.push('\n');
        count += 1;
    }
    if count == 0 {
        return Err(VaultError::MalformedNote {
            reason: "a note needs at least one signer".into(),
        });
    }
    Ok(note)
}

/// One signature line of a note, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key ID (first four bytes of the decoded signature).
    pub key_id: u32,
    /// The signature bytes after the key ID.
    pub signature: Vec<u8>,
}

/// Splits a signed note into its text and signature lines without verifying anything.
///
/// # Errors
/// [`VaultError::MalformedNote`].
pub fn split_note(note: &str) -> Result<(&str, Vec<NoteSignature>), VaultError> {
    let malformed = |reason: &str| VaultError::MalformedNote {
        reason: reason.into(),
    };
    if note.len() > MAX_NOTE_SIZE {
        return Err(malformed("note is too large"));
    }
    check_note_text(note, "note")?;
    let i = note
        .rfind("\n\n")
        .ok_or_else(|| malformed("no blank line before the signatures"))?;
    let (text, sigs) = (&note[..=i], &note[i + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(malformed(
            "signature block must be non-empty and end in a newline",
        ));
    }
    let mut out = Vec::new();
    for line in sigs.split_terminator('\n') {
        if out.len() >= MAX_SIGNATURES {
            return Err(malformed("too many signatures"));
        }
        let rest = line
            .strip_prefix(EM_DASH_PREFIX)
            .ok_or_else(|| malformed("signature line must start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("signature line must be `— <name> <base64>`"))?;
        check_key_name(name).map_err(|_| malformed("invalid key name in signature line"))?;
        let raw = B64
            .decode(b64)
            .map_err(|_| malformed("signature is not valid base64"))?;
        if raw.len() < 5 {
            return Err(malformed("signature is too short"));
        }
        out.push(NoteSignature {
            name: name.to_owned(),
            key_id: first4(&raw),
            signature: raw[4..].to_vec(),
        });
    }
    Ok((text, out))
}

/// Which key signed: its name and key ID. The name alone does not say it: anyone can
/// make a key of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    /// The key name.
    pub name: String,
    /// The signed-note key ID.
    pub key_id: u32,
}

impl std::fmt::Display for KeyRef {
    /// `<name> (key ID <8 hex digits>)`: the key ID as the key's vkey writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (key ID {:08x})", self.name, self.key_id)
    }
}

/// Opens a signed note (c2sp.org/signed-note "Signatures"): signatures from unknown
/// keys (name and key ID not both matching a verifier) are ignored; every signature
/// from a known key must verify, or the whole note is rejected (a repeated line too:
/// as Go's `note.Open`, repeats are dropped only after they verified); at least one
/// known signature must verify. Returns the text and the names of the keys that
/// verified it.
///
/// # Errors
/// [`VaultError::MalformedNote`], [`VaultError::BadSignature`],
/// [`VaultError::NoTrustedSignature`].
pub fn open_note(
    note: &str,
    verifiers: &[NoteVerifier],
) -> Result<(String, Vec<String>), VaultError> {
    let (text, keys) = open_note_keys(note, verifiers)?;
    let mut names: Vec<String> = Vec::new();
    for k in keys {
        if !names.contains(&k.name) {
            names.push(k.name);
        }
    }
    Ok((text, names))
}

/// [`open_note`], returning the name and key ID of each trusted key that verified the
/// note (each once, in the order of their first signature line).
///
/// # Errors
/// The errors of [`open_note`].
pub fn open_note_keys(
    note: &str,
    verifiers: &[NoteVerifier],
) -> Result<(String, Vec<KeyRef>), VaultError> {
    let (text, sigs) = split_note(note)?;
    let mut verified: Vec<KeyRef> = Vec::new();
    for s in &sigs {
        let Some(v) = verifiers
            .iter()
            .find(|v| v.name == s.name && v.key_id == s.key_id)
        else {
            continue;
        };
        if !v.verify(text.as_bytes(), &s.signature) {
            return Err(VaultError::BadSignature {
                name: s.name.clone(),
            });
        }
        let key = v.key_ref();
        if !verified.contains(&key) {
            verified.push(key);
        }
    }
    if verified.is_empty() {
        return Err(VaultError::NoTrustedSignature);
    }
    Ok((text.to_owned(), verified))
}

/// A transparency-log checkpoint (c2sp.org/tlog-checkpoint "Note text").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line, e.g. `praetor.example/ws_1234`.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 6962 root of the tree of `size` leaves.
    pub root: Hash,
    /// Optional extension lines (each non-empty), in order.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    #[must_use]
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n` then extension lines.
    #[must_use]
    pub fn to_body(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint body (the note text, not the signed note).
    ///
    /// # Errors
    /// [`VaultError::MalformedCheckpoint`].
    pub fn parse(text: &str) -> Result<Self, VaultError> {
        let bad = |reason: &str| VaultError::MalformedCheckpoint {
            reason: reason.into(),
        };
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("text must end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("origin line is empty"));
        }
        let size_line = lines.next().ok_or_else(|| bad("missing tree size line"))?;
        let canonical_number = !size_line.is_empty()
            && size_line.bytes().all(|b| b.is_ascii_digit())
            && (size_line == "0" || !size_line.starts_with('0'));
        if !canonical_number {
            return Err(bad(
                "tree size must be a decimal number without leading zeroes",
            ));
        }
        let size: u64 = size_line
            .parse()
            .map_err(|_| bad("tree size does not fit 64 bits"))?;
        let root_line = lines.next().ok_or_else(|| bad("missing root hash line"))?;
        let root_bytes = B64
            .decode(root_line)
            .map_err(|_| bad("root hash is not valid base64"))?;
        let root: Hash = root_bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("root hash must be 32 bytes"))?;
        let mut extensions = Vec::new();
        for line in lines {
            if line.is_empty() {
                return Err(bad("extension lines must be non-empty"));
            }
            extensions.push(line.to_owned());
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint body with each signer.
    ///
    /// # Errors
    /// The errors of [`sign_note`].
    pub fn sign<'a, I>(&self, signers: I) -> Result<String, VaultError>
    where
        I: IntoIterator<Item = &'a NoteSigner>,
    {
        sign_note(&self.to_body(), signers)
    }

    /// Opens a signed checkpoint note and parses its body; returns the checkpoint and
    /// the names of the keys that verified it.
    ///
    /// # Errors
    /// The errors of [`open_note`] and [`Checkpoint::parse`].
    pub fn open(note: &str, verifiers: &[NoteVerifier]) -> Result<(Self, Vec<String>), VaultError> {
        let (text, names) = open_note(note, verifiers)?;
        Ok((Self::parse(&text)?, names))
    }

    /// [`Checkpoint::open`], returning the name and key ID of each trusted key that
    /// verified the note.
    ///
    /// # Errors
    /// The errors of [`open_note`] and [`Checkpoint::parse`].
    pub fn open_keys(
        note: &str,
        verifiers: &[NoteVerifier],
    ) -> Result<(Self, Vec<KeyRef>), VaultError> {
        let (text, keys) = open_note_keys(note, verifiers)?;
        Ok((Self::parse(&text)?, keys))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip_and_strict_parse() {
        let mut c = Checkpoint::new("example.com/log", 20852163, [7u8; 32]);
        c.extensions.push("ext one".into());
        let body = c.to_body();
        assert_eq!(Checkpoint::parse(&body).unwrap(), c);
        for bad in [
            "o\n1\n",
            "\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n01\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n+1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\n",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBw==\n",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            "o\n18446744073709551616\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Checkpoint::parse("o\n0\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").is_ok());
    }

    #[test]
    fn sign_and_open_both_algorithms() {
        let ed = NoteSigner::generate("praetor.test/ws", KeyAlgorithm::Ed25519).unwrap();
        let ec = NoteSigner::generate("praetor.test/ws", KeyAlgorithm::EcdsaP256).unwrap();
        let c = Checkpoint::new("praetor.test/ws", 3, [1u8; 32]);
        let note = c.sign([&ec, &ed]).unwrap();
        let (got, names) = Checkpoint::open(&note, &[ec.verifier()]).unwrap();
        assert_eq!(got, c);
        assert_eq!(names, vec!["praetor.test/ws".to_string()]);
        Checkpoint::open(&note, &[ed.verifier()]).unwrap();
        // A different key with the same name is "unknown": ignored, so no trusted sig.
        let other = NoteSigner::generate("praetor.test/ws", KeyAlgorithm::Ed25519).unwrap();
        assert_eq!(
            Checkpoint::open(&note, &[other.verifier()]),
            Err(VaultError::NoTrustedSignature)
        );
        // Tampered text fails with the known key.
        let tampered = note.replacen("\n3\n", "\n4\n", 1);
        assert_eq!(
            Checkpoint::open(&tampered, &[ec.verifier()]),
            Err(VaultError::BadSignature {
                name: "praetor.test/ws".into()
            })
        );
    }

    /// c2sp.org/signed-note: a line whose name and key ID match a trusted key MUST
    /// verify. A second line for the same key is no exception, whether the good one
    /// comes first or last.
    #[test]
    fn a_repeated_signature_line_of_a_trusted_key_must_verify_too() {
        let ec = NoteSigner::generate("praetor.test/ws", KeyAlgorithm::EcdsaP256).unwrap();
        let note = Checkpoint::new("praetor.test/ws", 3, [1u8; 32]).sign([&ec]).unwrap();
        let good = note.lines().last().unwrap().to_owned();
        let b64 = good.rsplit(' ').next().unwrap();
        let mut raw = B64.decode(b64).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1; // same key ID, broken signature
        let bad = good.replace(b64, &B64.encode(&raw));
        let keys = [ec.verifier()];
        for twice in [format!("{note}{bad}\n"), note.replacen(&good, &format!("{bad}\n{good}"), 1)] {
            assert_eq!(
                open_note(&twice, &keys),
                Err(VaultError::BadSignature { name: "praetor.test/ws".into() }),
                "{twice}"
            );
        }
        // The same good line twice is fine, and the key is named once.
        let (_, names) = open_note(&format!("{note}{good}\n"), &keys).unwrap();
        assert_eq!(names, ["praetor.test/ws"]);
    }

    #[test]
    fn pem_round_trips() {
        for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256] {
            let s = NoteSigner::generate("n", alg).unwrap();
            let pem = s.to_pkcs8_pem().unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let s2 = NoteSigner::from_pkcs8_pem("n", &pem).unwrap();
            assert_eq!(s2.vkey(), s.vkey());
            assert_eq!(s2.algorithm(), alg);
            let pub_pem = s.public_key_pem().unwrap();
            assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
            let v = NoteVerifier::from_public_key_pem("n", &pub_pem).unwrap();
            assert_eq!(v.vkey(), s.vkey());
            let v2 = NoteVerifier::parse(&s.vkey()).unwrap();
            assert_eq!(v2.vkey(), s.vkey());
            assert_eq!(
                NoteVerifier::parse_any(&pub_pem, "n").unwrap().vkey(),
                s.vkey()
            );
            let sig = s.sign(b"msg").unwrap();
            assert!(v.verify(b"msg", &sig));
            assert!(!v.verify(b"msh", &sig));
        }
        assert!(
            NoteSigner::from_pkcs8_pem(
                "n",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
        assert!(NoteVerifier::from_public_key_pem("n", "garbage").is_err());
    }

    #[test]
    fn key_names_are_checked() {
        for bad in ["", "a b", "a+b", "a\u{a0}b", "a\tb"] {
            assert!(
                NoteSigner::generate(bad, KeyAlgorithm::Ed25519).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sign_note_rejects_bad_text() {
        let s = NoteSigner::generate("n", KeyAlgorithm::Ed25519).unwrap();
        assert!(sign_note("no newline", [&s]).is_err());
        assert!(sign_note("ctrl\u{1}\n", [&s]).is_err());
        assert!(sign_note("ok\n", std::iter::empty::<&NoteSigner>()).is_err());
    }
}
