//! Keys at rest (CONTRACT §10): secrets the server must be able to read back — JWT and
//! id_token signing keys, the digest key, later TOTP secrets — are stored *sealed* under a
//! key-encryption key (KEK) that is not in the database, so a copy of the database alone
//! mints nothing.
//!
//! A [`KeyEncryptionKey`] is 32 random bytes. Sealing is XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`; 192-bit random nonces, so random nonces never repeat in practice)
//! under a key derived from the KEK with HKDF-SHA-256. Every sealed value is bound, as
//! associated data, to a [`SealContext`] naming its purpose and row, so a value copied into
//! another row (or another purpose) does not open. A sealed value names the KEK that sealed
//! it by its [`KekId`] (also derived with HKDF, so it reveals nothing of the key); a wrong
//! key is told apart from a damaged value, and rotation can tell old values from new.
//!
//! The stored form is ASCII: `restguard-sealed:v1:<kek id>:<base64url(nonce ‖ ciphertext)>`.
//!
//! ```
//! use restguard::sealing::{KeyEncryptionKey, SealContext, SealError};
//!
//! let kek = KeyEncryptionKey::generate();
//! let row = SealContext::new("totp_secret").with("42");
//! let sealed = kek.seal(&row, b"JBSWY3DPEHPK3PXP");
//! assert_eq!(kek.open(&row, &sealed).unwrap(), b"JBSWY3DPEHPK3PXP");
//! // Another row, another key: refused.
//! assert!(kek.open(&SealContext::new("totp_secret").with("43"), &sealed).is_err());
//! let other = KeyEncryptionKey::generate();
//! assert!(matches!(other.open(&row, &sealed), Err(SealError::WrongKey { .. })));
//! ```
//!
//! The server keeps the KEK in a file beside the database or in an environment variable, and
//! wraps its stores with [`seal_stores`]; [`seal_in_place`] seals values stored in clear by
//! older versions and [`rewrap_under`] rotates the KEK, each in one transaction.

mod rewrap;
mod stores;

use std::fmt;

use base64::{
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
    Engine,
};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    Key, XChaCha20Poly1305, XNonce,
};
use hkdf::Hkdf;
use restguard_core::{secret::SecretString, store::WrappedKey};
use sha2::Sha256;

use crate::digest::random_bytes;

pub use rewrap::{inventory, rewrap_under, seal_in_place, Inventory, UnlockError};
pub use stores::{seal_stores, SealedSecretStore, SealedSigningKeyStore};

/// What every sealed value starts with.
const PREFIX: &str = "restguard-sealed:v1:";
/// Bytes of an XChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag.
const TAG_LEN: usize = 16;
/// Bytes of a [`KekId`].
const KEK_ID_LEN: usize = 8;
/// HKDF salt: separates this use of the KEK from any other.
const HKDF_SALT: &[u8] = b"restguard key-encryption key v1";

/// Why a value could not be opened or a key not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The value was sealed under another key-encryption key.
    #[error("sealed under key-encryption key {sealed_with}, not {have}")]
    WrongKey {
        /// The key that sealed it.
        sealed_with: KekId,
        /// The key at hand.
        have: KekId,
    },
    /// The value names this key but does not open: altered, truncated, or moved from
    /// another row.
    #[error("sealed value does not open under key-encryption key {0}: damaged or moved from another row")]
    Damaged(KekId),
    /// The value is not in the sealed format.
    #[error("not a sealed value")]
    NotSealed,
    /// A key-encryption key given as text is not base64 of 32 bytes.
    #[error(
        "a key-encryption key is base64 of 32 bytes (generate one with `openssl rand -base64 32`)"
    )]
    BadKey,
}

/// The public name of a key-encryption key: 8 bytes derived from it (16 hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KekId([u8; KEK_ID_LEN]);

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KekId({self})")
    }
}

impl KekId {
    fn parse(hex: &str) -> Option<KekId> {
        if hex.len() != 2 * KEK_ID_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut id = [0u8; KEK_ID_LEN];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(KekId(id))
    }
}

/// What a sealed value is for: a purpose and the parts that identify its row. It is the
/// associated data of the AEAD, never stored.
///
/// ```
/// use restguard::sealing::SealContext;
/// let a = SealContext::new("jwt_signing_keys.private_key").with("kid-1").with("RS256");
/// let b = SealContext::new("jwt_signing_keys.private_key").with("kid-1R").with("S256");
/// assert_ne!(a, b); // parts are length-prefixed: no two rows share a context
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext(Vec<u8>);

impl SealContext {
    /// A context for `purpose` (a stable name, such as the table and column).
    pub fn new(purpose: &str) -> Self {
        SealContext(Vec::new()).with(purpose)
    }

    /// Adds one identifying part of the row.
    pub fn with(mut self, part: &str) -> Self {
        self.0.extend_from_slice(&(part.len() as u64).to_be_bytes());
        self.0.extend_from_slice(part.as_bytes());
        self
    }

    /// The context of a value held by a [`SecretStore`](restguard_core::store::SecretStore)
    /// (see [`WrappedKey`]).
    pub fn of(slot: WrappedKey<'_>) -> Self {
        match slot {
            WrappedKey::ServerSecret { name } => Self::new("server_secrets.value").with(name),
            WrappedKey::SigningKey { kid, algorithm } => Self::new("jwt_signing_keys.private_key")
                .with(kid)
                .with(algorithm),
            // `WrappedKey` is non-exhaustive only towards other crates.
            #[allow(unreachable_patterns)]
            _ => Self::new("unknown"),
        }
    }
}

/// The key-encryption key: seals and opens values (see the [module](self) documentation).
#[derive(Clone)]
pub struct KeyEncryptionKey {
    id: KekId,
    cipher: XChaCha20Poly1305,
    /// The key itself, for writing it out (key files, rotation).
    raw: [u8; 32],
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyEncryptionKey({})", self.id)
    }
}

impl KeyEncryptionKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_bytes(random_bytes::<32>())
    }

    /// The key with these bytes.
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), &raw);
        let mut sealing = [0u8; 32];
        let mut id = [0u8; KEK_ID_LEN];
        // Both lengths are far below HKDF-SHA-256's limit (8160 bytes).
        let _ = hkdf.expand(b"xchacha20poly1305 sealing key", &mut sealing);
        let _ = hkdf.expand(b"key id", &mut id);
        KeyEncryptionKey {
            id: KekId(id),
            cipher: XChaCha20Poly1305::new(&Key::from(sealing)),
            raw,
        }
    }

    /// Parses a key written as base64 of 32 bytes (standard or URL-safe alphabet, padded or
    /// not; surrounding whitespace ignored), as [`encoded`](Self::encoded) writes it.
    ///
    /// ```
    /// use restguard::sealing::KeyEncryptionKey;
    /// let kek = KeyEncryptionKey::generate();
    /// let again = KeyEncryptionKey::parse(kek.encoded().expose()).unwrap();
    /// assert_eq!(again.id(), kek.id());
    /// assert!(KeyEncryptionKey::parse("c2hvcnQ=").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let raw = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(SealError::BadKey)?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Self::from_bytes(raw))
    }

    /// The key as standard base64 (what a key file or `RESTGUARD_SERVER__SECRET_KEY` holds).
    pub fn encoded(&self) -> SecretString {
        SecretString::new(STANDARD.encode(self.raw))
    }

    /// The key's public name.
    pub fn id(&self) -> KekId {
        self.id
    }

    /// Seals `plaintext` for `context`.
    pub fn seal(&self, context: &SealContext, plaintext: &[u8]) -> Vec<u8> {
        let header = format!("{PREFIX}{}:", self.id);
        let nonce = random_bytes::<NONCE_LEN>();
        let aad = associated_data(&header, context);
        let ciphertext = match self.cipher.encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        ) {
            Ok(ciphertext) => ciphertext,
            // Encryption fails only for messages of more than 256 GiB.
            Err(_) => unreachable!("XChaCha20-Poly1305 seals any message under 256 GiB"),
        };
        let mut payload = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&ciphertext);
        let mut out = header.into_bytes();
        out.extend_from_slice(URL_SAFE_NO_PAD.encode(payload).as_bytes());
        out
    }

    /// Opens a value sealed for `context` by [`seal`](Self::seal).
    pub fn open(&self, context: &SealContext, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (id, header, payload) = split(sealed).ok_or(SealError::NotSealed)?;
        if id != self.id {
            return Err(SealError::WrongKey {
                sealed_with: id,
                have: self.id,
            });
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SealError::Damaged(id))?;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Damaged(id));
        }
        let (nonce, ciphertext) = payload.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Damaged(id))?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated_data(header, context),
                },
            )
            .map_err(|_| SealError::Damaged(id))
    }
}

/// The key that sealed `value`, or `None` when it is not a sealed value (a value stored in
/// clear by an older version).
///
/// ```
/// use restguard::sealing::{sealed_by, KeyEncryptionKey, SealContext};
/// let kek = KeyEncryptionKey::generate();
/// assert_eq!(sealed_by(&kek.seal(&SealContext::new("x"), b"v")), Some(kek.id()));
/// assert_eq!(sealed_by(b"-----BEGIN PRIVATE KEY-----"), None);
/// ```
pub fn sealed_by(value: &[u8]) -> Option<KekId> {
    split(value).map(|(id, _, _)| id)
}

/// `(kek id, header, payload)` of a sealed value.
fn split(value: &[u8]) -> Option<(KekId, &str, &str)> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix(PREFIX)?;
    let (id, payload) = rest.split_once(':')?;
    let id = KekId::parse(id)?;
    let header = &text[..PREFIX.len() + 2 * KEK_ID_LEN + 1];
    Some((id, header, payload))
}

/// The header (version and key id) and the context: what the tag authenticates besides the
/// ciphertext.
fn associated_data(header: &str, context: &SealContext) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.0.len());
    aad.extend_from_slice(header.as_bytes());
    aad.extend_from_slice(&context.0);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let kek = KeyEncryptionKey::from_bytes([7; 32]);
        let context = SealContext::of(WrappedKey::SigningKey {
            kid: "k1",
            algorithm: "RS256",
        });
        let sealed = kek.seal(&context, b"-----BEGIN PRIVATE KEY-----");
        let text = std::str::from_utf8(&sealed).expect("ASCII");
        assert!(text.starts_with(&format!("restguard-sealed:v1:{}:", kek.id())));
        assert!(!text.contains("BEGIN"));
        assert_eq!(
            kek.open(&context, &sealed).expect("opens"),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // Two seals of one value differ (random nonce).
        assert_ne!(kek.seal(&context, b"x"), kek.seal(&context, b"x"));
        // Another row.
        let other_row = SealContext::of(WrappedKey::SigningKey {
            kid: "k2",
            algorithm: "RS256",
        });
        assert!(matches!(
            kek.open(&other_row, &sealed),
            Err(SealError::Damaged(_))
        ));
        // Another purpose.
        let secret = SealContext::of(WrappedKey::ServerSecret { name: "k1" });
        assert!(matches!(
            kek.open(&secret, &sealed),
            Err(SealError::Damaged(_))
        ));
        // A flipped bit anywhere in the payload.
        for i in [PREFIX.len() + 17, sealed.len() - 1, sealed.len() / 2] {
            let mut bad = sealed.clone();
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert!(kek.open(&context, &bad).is_err(), "byte {i}");
        }
        // Truncated, or not sealed at all.
        assert!(kek.open(&context, &sealed[..sealed.len() - 10]).is_err());
        assert!(matches!(
            kek.open(&context, b"plain"),
            Err(SealError::NotSealed)
        ));
        // Another key: named, not mistaken for damage.
        let other = KeyEncryptionKey::from_bytes([8; 32]);
        match other.open(&context, &sealed) {
            Err(SealError::WrongKey { sealed_with, have }) => {
                assert_eq!((sealed_with, have), (kek.id(), other.id()));
            }
            got => panic!("{got:?}"),
        }
        // A header rewritten to claim the other key does not open under it either.
        let forged = text.replace(&kek.id().to_string(), &other.id().to_string());
        assert!(matches!(
            other.open(&context, forged.as_bytes()),
            Err(SealError::Damaged(_))
        ));
    }

    #[test]
    fn keys_parse_from_base64_and_print_nowhere() {
        let kek = KeyEncryptionKey::from_bytes([9; 32]);
        let text = kek.encoded();
        assert_eq!(text.expose().len(), 44);
        for variant in [
            text.expose().to_owned(),
            format!("  {}\n", text.expose()),
            text.expose().trim_end_matches('=').to_owned(),
            URL_SAFE_NO_PAD.encode([9; 32]),
        ] {
            assert_eq!(
                KeyEncryptionKey::parse(&variant).expect("parses").id(),
                kek.id()
            );
        }
        for bad in [
            "",
            "not base64!",
            &STANDARD.encode([1; 31]),
            &STANDARD.encode([1; 33]),
        ] {
            assert!(
                matches!(KeyEncryptionKey::parse(bad), Err(SealError::BadKey)),
                "{bad}"
            );
        }
        assert_eq!(
            format!("{kek:?}"),
            format!("KeyEncryptionKey({})", kek.id())
        );
        assert!(!format!("{kek:?}").contains(text.expose()));
        assert_ne!(kek.id(), KeyEncryptionKey::from_bytes([10; 32]).id());
    }
}
