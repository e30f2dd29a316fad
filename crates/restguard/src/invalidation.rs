//! A service's link to an [`InvalidationBus`]: the services that cache checks (tokens,
//! sessions, JWT users) publish what their changes made stale, and drop what other instances
//! report. Publishing never fails a request: a bus that is down is logged (at most every
//! 10 s) and the caches' lifetime applies, as without a bus.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc, OnceLock,
};

use restguard_core::{
    invalidation::{Invalidation, InvalidationBus},
    store::SecretDigest,
    UserId,
};
use time::OffsetDateTime;

/// At most one outage warning per this many seconds (per process).
const WARN_EVERY_SECONDS: i64 = 10;

/// The bus a service publishes to, once attached (the token, session and JWT services here,
/// the OAuth2 provider in `restguard-oauth2`).
///
/// ```
/// use std::sync::Arc;
/// use restguard::invalidation::BusLink;
/// use restguard_core::invalidation::{Invalidation, InvalidationBus};
///
/// struct Cache;
/// impl Cache {
///     fn drop_cached(&self, _event: Invalidation) {}
/// }
/// # async fn f(bus: Arc<dyn InvalidationBus>) {
/// let link = BusLink::default();
/// let cache = Arc::new(Cache);
/// link.attach(bus, &cache, Cache::drop_cached);
/// link.publish(Invalidation::All).await;
/// # }
/// ```
#[derive(Default)]
pub struct BusLink(OnceLock<Arc<dyn InvalidationBus>>);

impl std::fmt::Debug for BusLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusLink")
            .field("attached", &self.0.get().is_some())
            .finish()
    }
}

impl BusLink {
    /// Attaches `bus` (the first one wins) and has it call `drop_cached` on `owner` for every
    /// event, for as long as `owner` lives (the bus holds only a weak reference).
    pub fn attach<T: Send + Sync + 'static>(
        &self,
        bus: Arc<dyn InvalidationBus>,
        owner: &Arc<T>,
        drop_cached: fn(&T, Invalidation),
    ) {
        if self.0.set(bus.clone()).is_ok() {
            let owner = Arc::downgrade(owner);
            bus.subscribe(Arc::new(move |event| {
                if let Some(owner) = owner.upgrade() {
                    drop_cached(&owner, event);
                }
            }));
        }
    }

    /// Tells the other instances (and this one's subscribers); logs when the bus is
    /// unreachable. Does nothing before [`attach`](Self::attach).
    pub async fn publish(&self, event: Invalidation) {
        let Some(bus) = self.0.get() else {
            return;
        };
        if let Err(e) = bus.publish(event).await {
            static LAST_WARNING: AtomicI64 = AtomicI64::new(0);
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let last = LAST_WARNING.load(Ordering::Relaxed);
            if now - last >= WARN_EVERY_SECONDS
                && LAST_WARNING
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    error = %e,
                    "could not publish a cache invalidation; other instances see the change when their caches expire"
                );
            }
        }
    }
}

/// Drops what `event` made stale from a cache of checks keyed by digest, whose entries know
/// their user.
pub(crate) fn drop_from<V: Send + Sync + 'static>(
    cache: &moka::sync::Cache<SecretDigest, Arc<V>>,
    event: Invalidation,
    user_of: fn(&V) -> UserId,
) {
    match event {
        Invalidation::User(user_id) => {
            // Invalidation closures only fail when not enabled; the services' builders enable
            // them.
            let _ = cache.invalidate_entries_if(move |_, cached| user_of(cached) == user_id);
        }
        Invalidation::Digest(digest) => cache.invalidate(&digest),
        _ => cache.invalidate_all(),
    }
}
