//! Whole-store operations on sealed values, each one transaction of
//! [`SecretStore::rewrap_keys`]: what the store holds, sealing values stored in clear by
//! older versions, and moving everything to a new key-encryption key.

use std::{collections::BTreeMap, sync::Mutex};

use restguard_core::store::{SecretStore, StoreError, WrappedKey};

use super::{sealed_by, KekId, KeyEncryptionKey, SealContext, SealError};

/// What a store holds: how many values each key-encryption key sealed, and how many are in
/// clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Sealed values by the key that sealed them.
    pub sealed: BTreeMap<KekId, u64>,
    /// Values stored in clear (by a version before keys were sealed).
    pub clear: u64,
}

/// Why the store's values could not be opened or re-sealed. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnlockError {
    /// A value is sealed under another key-encryption key.
    #[error(
        "{slot} is encrypted under key-encryption key {sealed_with}, but the key given is {have}"
    )]
    WrongKey {
        /// Which value.
        slot: String,
        /// The key that sealed it.
        sealed_with: KekId,
        /// The key given.
        have: KekId,
    },
    /// A value names the key but does not open.
    #[error(
        "{slot} does not open under key-encryption key {kek}: damaged, or moved from another row"
    )]
    Damaged {
        /// Which value.
        slot: String,
        /// The key.
        kek: KekId,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

fn describe(slot: WrappedKey<'_>) -> String {
    match slot {
        WrappedKey::ServerSecret { name } => format!("server secret {name:?}"),
        WrappedKey::SigningKey { kid, algorithm } => format!("{algorithm} signing key {kid}"),
        #[allow(unreachable_patterns)]
        _ => "a stored key".to_owned(),
    }
}

/// Opens `value` (sealed under `kek`) for `slot`; the error travels through the store's
/// rewrap boxed, and [`unlock_error`] takes it out again.
fn open(
    kek: &KeyEncryptionKey,
    slot: WrappedKey<'_>,
    value: &[u8],
) -> Result<Vec<u8>, UnlockError> {
    kek.open(&SealContext::of(slot), value)
        .map_err(|e| match e {
            SealError::WrongKey { sealed_with, have } => UnlockError::WrongKey {
                slot: describe(slot),
                sealed_with,
                have,
            },
            _ => UnlockError::Damaged {
                slot: describe(slot),
                kek: kek.id(),
            },
        })
}

/// The typed error back from the store's.
fn unlock_error(e: StoreError) -> UnlockError {
    match e {
        StoreError::Backend(source) => match source.downcast::<UnlockError>() {
            Ok(problem) => *problem,
            Err(other) => UnlockError::Store(StoreError::Backend(other)),
        },
        other => UnlockError::Store(other),
    }
}

/// What `store` holds (reads only; writes nothing).
pub async fn inventory(store: &dyn SecretStore) -> Result<Inventory, StoreError> {
    let inventory = Mutex::new(Inventory::default());
    store
        .rewrap_keys(&|_, value| {
            let mut inventory = inventory.lock().map_err(|_| "inventory lock poisoned")?;
            match sealed_by(value) {
                Some(id) => *inventory.sealed.entry(id).or_default() += 1,
                None => inventory.clear += 1,
            }
            Ok(None)
        })
        .await?;
    Ok(inventory.into_inner().unwrap_or_default())
}

/// Checks that every sealed value of `store` opens under `kek`, and seals under it the values
/// stored in clear (a database from before keys were sealed), in one transaction. Returns how
/// many were sealed now. A value sealed under another key, or one that does not open: an
/// error, and nothing written.
pub async fn seal_in_place(
    store: &dyn SecretStore,
    kek: &KeyEncryptionKey,
) -> Result<u64, UnlockError> {
    store
        .rewrap_keys(&|slot, value| {
            if sealed_by(value).is_some() {
                open(kek, slot, value)?;
                Ok(None)
            } else {
                Ok(Some(kek.seal(&SealContext::of(slot), value)))
            }
        })
        .await
        .map_err(unlock_error)
}

/// Re-seals every value of `store` under `new`, in one transaction: values sealed under `old`
/// are opened and sealed again, values in clear are sealed, values already under `new` stay
/// (so running it again after an interruption is harmless). Returns how many were re-sealed.
/// A value under a third key, or one that does not open: an error, and nothing written.
pub async fn rewrap_under(
    store: &dyn SecretStore,
    old: &KeyEncryptionKey,
    new: &KeyEncryptionKey,
) -> Result<u64, UnlockError> {
    store
        .rewrap_keys(&|slot, value| match sealed_by(value) {
            Some(id) if id == new.id() => {
                open(new, slot, value)?;
                Ok(None)
            }
            Some(_) => {
                let plain = open(old, slot, value)?;
                Ok(Some(new.seal(&SealContext::of(slot), &plain)))
            }
            None => Ok(Some(new.seal(&SealContext::of(slot), value))),
        })
        .await
        .map_err(unlock_error)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use restguard_core::store::{SigningKey, SigningKeyStore};
    use restguard_store::memory::MemoryStore;
    use time::OffsetDateTime;

    use super::*;

    fn key(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            algorithm: "HS256".into(),
            private_key: format!("secret of {kid}").into_bytes(),
            public_jwk: None,
            created: OffsetDateTime::UNIX_EPOCH,
            retired_at: None,
        }
    }

    #[tokio::test]
    async fn clear_values_are_sealed_in_place_then_moved_to_a_new_key() {
        let store = Arc::new(MemoryStore::new());
        store
            .secret_or_insert("digest", b"digest key")
            .await
            .unwrap();
        store.add_first_signing_key(key("k1")).await.unwrap();
        assert_eq!(
            inventory(store.as_ref()).await.unwrap(),
            Inventory {
                sealed: BTreeMap::new(),
                clear: 2
            }
        );
        let old = KeyEncryptionKey::generate();
        assert_eq!(seal_in_place(store.as_ref(), &old).await.unwrap(), 2);
        assert_eq!(seal_in_place(store.as_ref(), &old).await.unwrap(), 0);
        assert_eq!(
            inventory(store.as_ref()).await.unwrap().sealed,
            BTreeMap::from([(old.id(), 2)])
        );
        // Another key: refused, nothing written.
        let stranger = KeyEncryptionKey::generate();
        match seal_in_place(store.as_ref(), &stranger).await {
            Err(UnlockError::WrongKey {
                sealed_with, have, ..
            }) => assert_eq!((sealed_with, have), (old.id(), stranger.id())),
            other => panic!("{other:?}"),
        }
        // Rotation.
        let new = KeyEncryptionKey::generate();
        assert_eq!(rewrap_under(store.as_ref(), &old, &new).await.unwrap(), 2);
        assert_eq!(rewrap_under(store.as_ref(), &old, &new).await.unwrap(), 0);
        let sealed = store.secret_or_insert("digest", b"").await.unwrap();
        assert_eq!(
            new.open(
                &SealContext::of(WrappedKey::ServerSecret { name: "digest" }),
                &sealed
            )
            .unwrap(),
            b"digest key"
        );
        assert!(matches!(
            seal_in_place(store.as_ref(), &old).await,
            Err(UnlockError::WrongKey { .. })
        ));
        // A value moved to another row does not open: damaged.
        let keys = store.signing_keys().await.unwrap();
        store
            .add_first_signing_key(SigningKey {
                kid: "k2".into(),
                algorithm: "HS384".into(),
                private_key: keys[0].private_key.clone(),
                ..key("k2")
            })
            .await
            .unwrap();
        match seal_in_place(store.as_ref(), &new).await {
            Err(UnlockError::Damaged { slot, kek }) => {
                assert_eq!((slot.as_str(), kek), ("HS384 signing key k2", new.id()));
            }
            other => panic!("{other:?}"),
        }
    }
}
