//! Keyed digests of machine-generated secrets and secret generation.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use restguard_core::store::{SecretDigest, SecretStore, StoreError};
use sha2::Sha256;

/// HMAC-SHA-256 under a server key. Machine-generated secrets carry ≥ 128 random bits, so a
/// fast keyed digest is enough (CONTRACT §10); the key keeps a stolen table from being
/// checked against guesses without it.
#[derive(Clone)]
pub struct SecretDigester {
    /// HMAC state with the key already absorbed (the key pads are hashed once, not per
    /// digest: digests sit on every token and session check).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for SecretDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigester([redacted])")
    }
}

/// The name of the digest key in the [`SecretStore`].
pub const DIGEST_KEY_NAME: &str = "secret_digest_key";

impl SecretDigester {
    /// A digester with an explicit key.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(&key)
                .expect("HMAC accepts any key length"),
        }
    }

    /// Loads the shared key from the store, creating it on first use.
    pub async fn from_store(store: &dyn SecretStore) -> Result<Self, StoreError> {
        let candidate = random_bytes::<32>();
        let stored = store.secret_or_insert(DIGEST_KEY_NAME, &candidate).await?;
        let key: [u8; 32] = stored.as_slice().try_into().map_err(|_| {
            StoreError::backend(std::io::Error::other(
                "stored digest key has the wrong length",
            ))
        })?;
        Ok(Self::new(key))
    }

    /// The digest of `secret`.
    ///
    /// ```
    /// use restguard::digest::SecretDigester;
    /// let d = SecretDigester::new([7; 32]);
    /// assert_eq!(d.digest("abc"), d.digest("abc"));
    /// assert_ne!(d.digest("abc"), d.digest("abd"));
    /// ```
    pub fn digest(&self, secret: &str) -> SecretDigest {
        let mut mac = self.keyed.clone();
        mac.update(secret.as_bytes());
        SecretDigest(mac.finalize().into_bytes().into())
    }
}

/// `N` bytes from the operating system's RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A URL-safe random secret: `prefix` followed by 256 random bits in base64url (43 chars).
///
/// ```
/// let key = restguard::digest::random_secret("rg_");
/// assert!(key.starts_with("rg_") && key.len() == 46);
/// ```
pub fn random_secret(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 43);
    s.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(random_bytes::<32>(), &mut s);
    s
}
