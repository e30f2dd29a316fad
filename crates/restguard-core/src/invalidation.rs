//! Cache invalidation across instances: every instance keeps short-lived in-process caches of
//! token, session and JWT-user checks; an [`InvalidationBus`] carries "this is stale" from the
//! instance (or CLI) that changed something to every other instance, so a revocation is
//! refused everywhere at once instead of after the caches' lifetime. The store stays the
//! system of record: a lost message only means the cache lifetime applies, as without a bus.

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use crate::{
    identity::UserId,
    store::{SecretDigest, StoreError},
};

/// What became stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Invalidation {
    /// Everything cached about one user: their password changed, they were deactivated or
    /// deleted, or some of their tokens or sessions ended.
    User(UserId),
    /// The cached check of one credential, by the digest its cache is keyed by (an API token,
    /// a session id, a JWT `jti`).
    Digest(SecretDigest),
    /// Everything: delivered to subscribers that may have missed messages (after the bus
    /// reconnected).
    All,
}

impl Invalidation {
    /// A compact, stable text form (`u:<id>`, `d:<64 hex>`, `all`) for buses that carry text.
    ///
    /// ```
    /// use restguard_core::{invalidation::Invalidation, UserId};
    /// let event = Invalidation::User(UserId(42));
    /// assert_eq!(event.encode(), "u:42");
    /// assert_eq!(Invalidation::decode("u:42"), Some(event));
    /// assert_eq!(Invalidation::decode("junk"), None);
    /// ```
    pub fn encode(&self) -> String {
        match self {
            Self::User(id) => format!("u:{id}"),
            Self::Digest(digest) => {
                let mut out = String::with_capacity(66);
                out.push_str("d:");
                for byte in digest.0 {
                    out.push(char::from(HEX[usize::from(byte >> 4)]));
                    out.push(char::from(HEX[usize::from(byte & 0xf)]));
                }
                out
            }
            Self::All => "all".to_owned(),
        }
    }

    /// Parses [`encode`](Self::encode)'s form; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        if text == "all" {
            return Some(Self::All);
        }
        if let Some(id) = text.strip_prefix("u:") {
            return id.parse().ok().map(|id| Self::User(UserId(id)));
        }
        let hex = text.strip_prefix("d:")?.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self::Digest(SecretDigest(digest)))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Something to call with every invalidation.
pub type InvalidationHandler = Arc<dyn Fn(Invalidation) + Send + Sync>;

/// Carries [`Invalidation`]s between instances (Redis pub/sub in `restguard-store`; an
/// in-process bus for one process and tests).
#[async_trait]
pub trait InvalidationBus: Send + Sync + fmt::Debug + 'static {
    /// Tells every subscriber of every instance (this one included). An error means the
    /// others learn of the change only when their caches expire; callers log it and go on.
    async fn publish(&self, event: Invalidation) -> Result<(), StoreError>;

    /// Calls `handler` for every event published from now on by any instance, and with
    /// [`Invalidation::All`] whenever events may have been missed (a reconnection). Handlers
    /// must be quick (they drop cache entries).
    fn subscribe(&self, handler: InvalidationHandler);
}
