//! Store wrappers that seal what they write and open what they read, so every service built
//! on them (the digester, the JWT key ring, the id_token signer) works with plain keys while
//! the database holds only sealed ones.

use std::sync::Arc;

use async_trait::async_trait;
use restguard_core::store::{
    Rewrap, SecretStore, SigningKey, SigningKeyStore, StoreError, Stores, WrappedKey,
};
use time::OffsetDateTime;

use super::{KeyEncryptionKey, SealContext};

/// `stores` with its server secrets and signing keys sealed under `kek`.
///
/// ```
/// # async fn f() -> Result<(), restguard_core::store::StoreError> {
/// use std::sync::Arc;
/// use restguard::{digest::SecretDigester, sealing::{seal_stores, KeyEncryptionKey}};
/// use restguard_core::store::Stores;
/// use restguard_store::memory::MemoryStore;
///
/// let backend = Arc::new(MemoryStore::new());
/// let stores = seal_stores(Stores::from_backend(backend.clone()), Arc::new(KeyEncryptionKey::generate()));
/// let digester = SecretDigester::from_store(stores.secrets.as_ref()).await?;
/// // The backend holds the digest key sealed.
/// let stored = restguard_core::store::SecretStore::secret_or_insert(backend.as_ref(), "secret_digest_key", b"").await?;
/// assert!(restguard::sealing::sealed_by(&stored).is_some());
/// # let _ = digester; Ok(()) }
/// ```
pub fn seal_stores(mut stores: Stores, kek: Arc<KeyEncryptionKey>) -> Stores {
    stores.secrets = Arc::new(SealedSecretStore {
        inner: stores.secrets.clone(),
        kek: kek.clone(),
    });
    stores.signing_keys = Arc::new(SealedSigningKeyStore {
        inner: stores.signing_keys.clone(),
        kek,
    });
    stores
}

fn unreadable(what: &str, e: super::SealError) -> StoreError {
    StoreError::backend(std::io::Error::other(format!("{what}: {e}")))
}

/// A [`SecretStore`] whose values are sealed under a key-encryption key.
pub struct SealedSecretStore {
    inner: Arc<dyn SecretStore>,
    kek: Arc<KeyEncryptionKey>,
}

impl SealedSecretStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn SecretStore>, kek: Arc<KeyEncryptionKey>) -> Self {
        Self { inner, kek }
    }
}

#[async_trait]
impl SecretStore for SealedSecretStore {
    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let context = SealContext::of(WrappedKey::ServerSecret { name });
        let sealed = self.kek.seal(&context, candidate);
        let stored = self.inner.secret_or_insert(name, &sealed).await?;
        self.kek
            .open(&context, &stored)
            .map_err(|e| unreadable(&format!("server secret {name:?}"), e))
    }

    /// The stored (sealed) values, as the backend holds them.
    async fn rewrap_keys(&self, rewrap: &Rewrap<'_>) -> Result<u64, StoreError> {
        self.inner.rewrap_keys(rewrap).await
    }
}

/// A [`SigningKeyStore`] whose private keys are sealed under a key-encryption key.
pub struct SealedSigningKeyStore {
    inner: Arc<dyn SigningKeyStore>,
    kek: Arc<KeyEncryptionKey>,
}

impl SealedSigningKeyStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn SigningKeyStore>, kek: Arc<KeyEncryptionKey>) -> Self {
        Self { inner, kek }
    }

    fn context(key: &SigningKey) -> SealContext {
        SealContext::of(WrappedKey::SigningKey {
            kid: &key.kid,
            algorithm: &key.algorithm,
        })
    }

    fn sealed(&self, key: SigningKey) -> SigningKey {
        let private_key = self.kek.seal(&Self::context(&key), &key.private_key);
        SigningKey { private_key, ..key }
    }
}

#[async_trait]
impl SigningKeyStore for SealedSigningKeyStore {
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.inner
            .signing_keys()
            .await?
            .into_iter()
            .map(|key| {
                let private_key = self
                    .kek
                    .open(&Self::context(&key), &key.private_key)
                    .map_err(|e| unreadable(&format!("signing key {}", key.kid), e))?;
                Ok(SigningKey { private_key, ..key })
            })
            .collect()
    }

    async fn add_first_signing_key(&self, key: SigningKey) -> Result<bool, StoreError> {
        self.inner.add_first_signing_key(self.sealed(key)).await
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.inner.rotate_signing_key(self.sealed(key), at).await
    }

    async fn delete_retired_signing_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.inner.delete_retired_signing_keys(before).await
    }
}

#[cfg(test)]
mod tests {
    use restguard_store::memory::MemoryStore;

    use super::*;
    use crate::sealing::sealed_by;

    fn key(kid: &str, at: i64) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            algorithm: "EdDSA".into(),
            private_key: format!("-----BEGIN PRIVATE KEY----- {kid}").into_bytes(),
            public_jwk: Some("{}".into()),
            created: OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH),
            retired_at: None,
        }
    }

    #[tokio::test]
    async fn signing_keys_are_sealed_in_the_backend_and_open_through_the_wrapper() {
        let backend = Arc::new(MemoryStore::new());
        let kek = Arc::new(KeyEncryptionKey::generate());
        let stores = seal_stores(Stores::from_backend(backend.clone()), kek.clone());
        assert!(stores
            .signing_keys
            .add_first_signing_key(key("k1", 1))
            .await
            .unwrap());
        let now = OffsetDateTime::from_unix_timestamp(2).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        stores
            .signing_keys
            .rotate_signing_key(key("k2", 2), now)
            .await
            .unwrap();
        let raw = backend.signing_keys().await.unwrap();
        assert!(raw
            .iter()
            .all(|k| sealed_by(&k.private_key) == Some(kek.id())));
        let opened = stores.signing_keys.signing_keys().await.unwrap();
        assert_eq!(opened[0].private_key, key("k1", 1).private_key);
        assert_eq!(opened[1].private_key, key("k2", 2).private_key);
        assert_eq!(opened[0].retired_at, Some(now));
        // Under another key nothing opens, and the error names both keys.
        let other = seal_stores(
            Stores::from_backend(backend.clone()),
            Arc::new(KeyEncryptionKey::generate()),
        );
        let err = other
            .signing_keys
            .signing_keys()
            .await
            .expect_err("wrong key");
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert!(text.contains(&kek.id().to_string()), "{text}");
        assert!(other.secrets.secret_or_insert("x", b"y").await.is_ok());
        assert!(stores.secrets.secret_or_insert("x", b"z").await.is_err());
    }
}
