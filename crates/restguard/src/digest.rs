//! Keyed digests of machine-generated secrets and secret generation.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use restguard_core::store::{SecretDigest, SecretStore, StoreError};
use sha2::Sha256;

/// HMAC-SHA-256 under a server key. Machine-generated secrets carry ≥ 128 random bits, so a
/// fast keyed digest is enough (CONTRACT §10); the key keeps a stolen table from being
/// checked against guesses without it.
///
/// Digests are primary keys of write-heavy tables (refresh tokens, OAuth2 tokens). A random
/// key sends every insert to a different B-tree page, so SQLite writes (and checkpoints) a
/// whole page per row; the secrets made by [`ordered_secret`] therefore start with a
/// time-ordered *locator*, and the digest keeps that locator in its first 8 bytes in place of
/// HMAC output (the other 24 bytes, 192 bits, stay keyed). New rows then land at the right
/// edge of the index, a batch of inserts shares a few pages, and the locator reveals nothing
/// the row's `created` column does not already hold.
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

    /// Loads the shared key from the store, creating it on first use. To keep the key sealed
    /// at rest, pass a store wrapped by [`seal_stores`](crate::sealing::seal_stores) (the
    /// server does).
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
        self.digest_located(secret_locator(secret), secret)
    }

    /// The digest of `secret`, its first bytes replaced by `locator` when there is one (see
    /// the type's documentation). The JWT service passes the time-ordered part of a `jti`.
    ///
    /// ```
    /// use restguard::digest::SecretDigester;
    /// let d = SecretDigester::new([7; 32]);
    /// let located = d.digest_located(Some([1; 8]), "abc");
    /// assert_eq!(located.0[..8], [1; 8]);
    /// assert_eq!(located.0[8..], d.digest("abc").0[8..]);
    /// ```
    pub fn digest_located(&self, locator: Option<[u8; LOCATOR_LEN]>, secret: &str) -> SecretDigest {
        let mut mac = self.keyed.clone();
        mac.update(secret.as_bytes());
        let mut digest: [u8; 32] = mac.finalize().into_bytes().into();
        if let Some(locator) = locator {
            digest[..LOCATOR_LEN].copy_from_slice(&locator);
        }
        SecretDigest(digest)
    }
}

/// Bytes of the time-ordered locator in front of secrets and digests.
pub const LOCATOR_LEN: usize = 8;

/// base64url characters of a secret made by [`ordered_secret`] after its prefix: the locator
/// and 256 random bits (40 bytes).
const SECRET_CHARS: usize = 54;

/// A fresh locator: milliseconds since the Unix epoch (48 bits) and a per-process counter
/// (UUIDv7's first 8 bytes), so locators made later sort after earlier ones.
pub fn new_locator() -> [u8; LOCATOR_LEN] {
    uuid_locator(&uuid::Uuid::now_v7())
}

/// A UUIDv7's first 8 bytes: its millisecond and the front of its counter.
fn uuid_locator(id: &uuid::Uuid) -> [u8; LOCATOR_LEN] {
    let mut locator = [0u8; LOCATOR_LEN];
    locator.copy_from_slice(&id.as_bytes()[..LOCATOR_LEN]);
    locator
}

/// A unique, time-ordered identifier in 32 lowercase hex (a UUIDv7): `jti`s and token family
/// ids, which index rows that are written at the rate tokens are issued.
///
/// ```
/// let (a, b) = (restguard::digest::ordered_id(), restguard::digest::ordered_id());
/// assert!(a.len() == 32 && a < b);
/// ```
pub fn ordered_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The locator of an id made by [`ordered_id`] (a UUIDv7's first 8 bytes); `None` for other
/// strings — `jti`s minted elsewhere, or before they were UUIDv7 — whose digests stay plain.
///
/// ```
/// use restguard::digest::{ordered_id, ordered_id_locator};
/// assert!(ordered_id_locator(&ordered_id()).is_some());
/// assert_eq!(ordered_id_locator("0123456789abcdef0123456789abcdef"), None); // not v7
/// ```
pub fn ordered_id_locator(id: &str) -> Option<[u8; LOCATOR_LEN]> {
    if id.len() != 32 {
        return None;
    }
    let id = uuid::Uuid::try_parse(id).ok()?;
    (id.get_version_num() == 7).then(|| uuid_locator(&id))
}

/// The locator of a secret made by [`ordered_secret`]: the first 8 bytes its last 54
/// characters decode to. `None` for other strings (secrets made before locators existed keep
/// their plain digest, so they still match).
fn secret_locator(secret: &str) -> Option<[u8; LOCATOR_LEN]> {
    let start = secret.len().checked_sub(SECRET_CHARS)?;
    let head = secret.get(start..start + 12)?;
    let mut decoded = [0u8; 9];
    match URL_SAFE_NO_PAD.decode_slice(head, &mut decoded) {
        Ok(9) => {
            let mut locator = [0u8; LOCATOR_LEN];
            locator.copy_from_slice(&decoded[..LOCATOR_LEN]);
            Some(locator)
        }
        _ => None,
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

/// A secret for rows written at the rate they are issued (OAuth2 tokens and codes): `prefix`
/// followed by, in base64url (54 chars), a time-ordered locator ([`new_locator`], not secret)
/// and 256 random bits. Its digest starts with the locator (see [`SecretDigester`]).
///
/// ```
/// let token = restguard::digest::ordered_secret("rgat_");
/// assert!(token.starts_with("rgat_") && token.len() == 5 + 54);
/// ```
pub fn ordered_secret(prefix: &str) -> String {
    let mut bytes = [0u8; LOCATOR_LEN + 32];
    bytes[..LOCATOR_LEN].copy_from_slice(&new_locator());
    OsRng.fill_bytes(&mut bytes[LOCATOR_LEN..]);
    let mut s = String::with_capacity(prefix.len() + SECRET_CHARS);
    s.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_later_secrets_sort_after_earlier_ones() {
        let digester = SecretDigester::new([3; 32]);
        let digests: Vec<SecretDigest> = (0..1000)
            .map(|_| digester.digest(&ordered_secret("rgat_")))
            .collect();
        // UUIDv7 orders by the millisecond and a counter; within one millisecond the counter
        // may carry past the locator's 8 bytes, so equal locators are allowed.
        assert!(digests
            .windows(2)
            .all(|w| w[0].0[..LOCATOR_LEN] <= w[1].0[..LOCATOR_LEN]));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = digester.digest(&ordered_secret("rgat_"));
        assert!(digests[999].0[..LOCATOR_LEN] < later.0[..LOCATOR_LEN]);
    }

    #[test]
    fn the_locator_is_the_front_of_the_digest_and_the_rest_is_keyed() {
        let digester = SecretDigester::new([3; 32]);
        let other_key = SecretDigester::new([4; 32]);
        let secret = ordered_secret("rgat_");
        let digest = digester.digest(&secret);
        assert_eq!(
            Some(digest.0[..LOCATOR_LEN].try_into().unwrap()),
            secret_locator(&secret)
        );
        assert_ne!(
            digest.0[LOCATOR_LEN..],
            other_key.digest(&secret).0[LOCATOR_LEN..]
        );
        // Same locator, other random part: other digest.
        let mut twin = secret.clone();
        twin.pop();
        twin.push(if secret.ends_with('A') { 'B' } else { 'A' });
        assert_ne!(digester.digest(&twin), digest);
    }

    #[test]
    fn secrets_without_a_locator_keep_the_plain_hmac() {
        let digester = SecretDigester::new([3; 32]);
        let legacy = random_secret("rgat_");
        assert_eq!(secret_locator(&legacy), None);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[3; 32]).unwrap();
        mac.update(legacy.as_bytes());
        let plain: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(digester.digest(&legacy).0, plain);
        // Not base64url where the locator would be, or multi-byte text: no locator, no panic.
        assert_eq!(secret_locator(&"!".repeat(60)), None);
        assert_eq!(secret_locator(&"é".repeat(40)), None);
    }
}
