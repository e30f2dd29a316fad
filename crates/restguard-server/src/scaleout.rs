//! Running as one of several instances: the Redis throttle counters named by `redis.url`
//! (one [`RedisThrottleStore`], one connection manager, per process serves the rate throttles,
//! the login throttle and `/readyz`), the cache-invalidation bus (Redis pub/sub), and the
//! request deadline that turns a store that stopped answering in the middle of a request into
//! a 503.

use std::sync::{Arc, Mutex, OnceLock};

use restguard::throttle::FailMode;
use restguard_core::{
    invalidation::{Invalidation, InvalidationBus},
    store::StoreError,
    throttle::ThrottleStore,
};
use restguard_store::redis::{
    RedisInvalidationBus, RedisOptions, RedisSessionStore, RedisThrottleStore,
};

use crate::config::RedisConfig;

/// The counters every throttle of this process shares, and what an outage does.
#[derive(Clone)]
pub(crate) struct SharedThrottle {
    pub(crate) store: Arc<dyn ThrottleStore>,
    pub(crate) fail: FailMode,
}

/// The Redis stores opened by this process: (URL and prefix, store, fail-closed).
type Opened = Vec<(String, Arc<RedisThrottleStore>, bool)>;

fn opened() -> &'static Mutex<Opened> {
    static OPENED: OnceLock<Mutex<Opened>> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(Vec::new()))
}

/// The shared throttle counters of `config`, or `None` when `redis.url` is unset (throttles
/// stay in process). A malformed URL is an error naming the key.
pub(crate) fn shared_throttle(config: &RedisConfig) -> Result<Option<SharedThrottle>, String> {
    let Some(url) = &config.url else {
        return Ok(None);
    };
    let fail = if config.throttle_fail_closed {
        FailMode::Closed
    } else {
        FailMode::Open
    };
    let id = format!("{}\u{0}{}", url.0, config.key_prefix.0);
    let mut opened = opened().lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, store, _)) = opened.iter().find(|(k, _, _)| *k == id) {
        return Ok(Some(SharedThrottle {
            store: store.clone(),
            fail,
        }));
    }
    if !(url.0.starts_with("redis://") || url.0.starts_with("rediss://")) {
        return Err("redis.url: expected redis://HOST[:PORT][/DB]".into());
    }
    let options = RedisOptions::default()
        .key_prefix(config.key_prefix.0.clone())
        .timeout(config.timeout.0);
    let store = Arc::new(
        RedisThrottleStore::new(&url.0, options)
            .map_err(|e| format!("redis.url: {}", crate::error_chain(&e)))?,
    );
    opened.push((id, store.clone(), config.throttle_fail_closed));
    Ok(Some(SharedThrottle { store, fail }))
}

/// The cache-invalidation bus of `config`: Redis pub/sub on `<key_prefix>invalidations` when
/// `redis.url` is set and `redis.invalidations` is on; `None` otherwise (caches then expire on
/// their own, after `*.cache_ttl`).
pub(crate) fn invalidation_bus(
    config: &RedisConfig,
) -> Result<Option<Arc<dyn InvalidationBus>>, String> {
    let Some(url) = config.url.as_ref().filter(|_| config.invalidations) else {
        return Ok(None);
    };
    let options = RedisOptions::default()
        .key_prefix(config.key_prefix.0.clone())
        .timeout(config.timeout.0);
    let bus = RedisInvalidationBus::new(&url.0, &options)
        .map_err(|e| format!("redis.url: {}", crate::error_chain(&e)))?;
    Ok(Some(Arc::new(bus)))
}

/// Tells the other instances that `event` is stale; a bus that is down is logged (the change
/// is in the database; the others see it when their caches expire), never an error.
pub(crate) async fn announce(bus: Option<&Arc<dyn InvalidationBus>>, event: Invalidation) {
    if let Some(bus) = bus {
        if let Err(e) = bus.publish(event).await {
            tracing::warn!(error = %e, "could not publish a cache invalidation; other instances see the change within their cache lifetime");
        }
    }
}

fn session_store() -> &'static OnceLock<Arc<RedisSessionStore>> {
    static SESSIONS: OnceLock<Arc<RedisSessionStore>> = OnceLock::new();
    &SESSIONS
}

/// Registers the Redis session store (`redis.sessions`) for `/readyz`.
pub(crate) fn set_session_store(store: Arc<RedisSessionStore>) {
    let _ = session_store().set(store);
}

/// Redis's state for `/readyz`: `None` without Redis; otherwise whether it answers. An error
/// when it does not and something needs it: sessions in Redis, or throttles failing closed.
pub(crate) async fn redis_readiness() -> Result<Option<&'static str>, StoreError> {
    let stores: Opened = opened().lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut state = None;
    if let Some(sessions) = session_store().get() {
        sessions.ping().await?;
        state = Some("ok");
    }
    for (_, store, fail_closed) in stores {
        match store.ping().await {
            Ok(()) => state = state.or(Some("ok")),
            Err(e) if fail_closed => return Err(e),
            Err(_) => state = Some("unavailable"),
        }
    }
    Ok(state)
}

/// Middleware answering 503 + `Retry-After` (the contract's "storage unavailable") when a
/// request takes longer than `server.request_timeout`: a database that stops answering in the
/// middle of a request (a black-holed network) is otherwise bounded only by the kernel's TCP
/// timeouts. The request's work is dropped, which rolls back any open transaction.
pub(crate) async fn deadline(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => crate::error::ApiError::Store(StoreError::unavailable(format!(
            "request exceeded server.request_timeout ({limit:?})"
        )))
        .into_response(),
    }
}
