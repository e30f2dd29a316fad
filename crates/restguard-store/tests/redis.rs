//! Redis throttle counters: exact counts, atomicity across connections, waits, and the
//! failed-login `record`. Needs `RESTGUARD_TEST_REDIS_URL` (each test uses its own key
//! prefix); without it the tests print why they skip (and fail under
//! `RESTGUARD_REQUIRE_SERVICES=1`).

use std::{sync::Arc, time::Duration};

use restguard_core::{rate::Rate, throttle::ThrottleStore};
use restguard_store::{
    redis::{RedisOptions, RedisThrottleStore},
    testing::{service_url, RedisPrefix, REDIS_URL_VAR},
};

fn rate(requests: u32, period: Duration) -> Rate {
    Rate { requests, period }
}

/// `n` stores (each its own connection) on one fresh prefix (deleted with the guard), or
/// `None` to skip.
fn stores(test: &str, n: usize) -> Option<(Vec<Arc<RedisThrottleStore>>, RedisPrefix)> {
    let url = service_url(REDIS_URL_VAR, test)?;
    let guard = RedisPrefix::new(&url);
    let prefix = guard.prefix().to_owned();
    let stores = (0..n)
        .map(|_| {
            Arc::new(
                RedisThrottleStore::new(
                    &url,
                    RedisOptions::default()
                        .key_prefix(prefix.clone())
                        .timeout(Duration::from_secs(2)),
                )
                .expect("redis url"),
            )
        })
        .collect();
    Some((stores, guard))
}

#[tokio::test]
async fn hit_allows_exactly_n_then_waits() {
    let Some((stores, _guard)) = stores("redis hit", 1) else {
        return;
    };
    let store = &stores[0];
    store.ping().await.unwrap();
    let r = rate(3, Duration::from_secs(60));
    for _ in 0..3 {
        assert_eq!(store.hit("k", r).await.unwrap(), None);
    }
    let wait = store.hit("k", r).await.unwrap().expect("fourth waits");
    assert!(
        wait <= Duration::from_secs(60) && wait > Duration::from_secs(58),
        "{wait:?}"
    );
    // A refused hit is not counted; other keys are independent.
    assert!(store.check("k", r).await.unwrap().is_some());
    assert_eq!(store.hit("other", r).await.unwrap(), None);
}

#[tokio::test]
async fn window_slides() {
    let Some((stores, _guard)) = stores("redis window", 1) else {
        return;
    };
    let store = &stores[0];
    let r = rate(2, Duration::from_millis(300));
    assert_eq!(store.hit("k", r).await.unwrap(), None);
    assert_eq!(store.hit("k", r).await.unwrap(), None);
    assert!(store.hit("k", r).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.hit("k", r).await.unwrap(), None);
}

#[tokio::test]
async fn check_does_not_count_and_record_always_counts() {
    let Some((stores, _guard)) = stores("redis record", 1) else {
        return;
    };
    let store = &stores[0];
    let r = rate(2, Duration::from_secs(60));
    for _ in 0..5 {
        assert_eq!(store.check("login", r).await.unwrap(), None);
    }
    store.record("login", r).await.unwrap();
    assert_eq!(store.check("login", r).await.unwrap(), None);
    store.record("login", r).await.unwrap();
    assert!(store.check("login", r).await.unwrap().is_some());
    // Recording past the limit keeps the window at the limit.
    for _ in 0..10 {
        store.record("login", r).await.unwrap();
    }
    assert!(store.check("login", r).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_hits_from_several_connections_admit_exactly_the_limit() {
    let Some((stores, _guard)) = stores("redis concurrent", 5) else {
        return;
    };
    let r = rate(20, Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move { store.hit("shared", r).await }));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_none() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20);
}

#[tokio::test]
async fn prefixes_are_separate() {
    let Some((a, _ga)) = stores("redis prefix", 1) else {
        return;
    };
    let (b, _gb) = stores("redis prefix", 1).expect("same environment");
    let r = rate(1, Duration::from_secs(60));
    assert_eq!(a[0].hit("k", r).await.unwrap(), None);
    assert_eq!(b[0].hit("k", r).await.unwrap(), None);
    assert!(a[0].hit("k", r).await.unwrap().is_some());
}

#[tokio::test]
async fn redis_invalidation_bus_conformance() {
    use restguard_core::invalidation::InvalidationBus as _;
    use restguard_store::redis::RedisInvalidationBus;
    let Some(url) = service_url(REDIS_URL_VAR, "redis invalidation bus") else {
        return;
    };
    let guard = RedisPrefix::new(&url);
    let options = RedisOptions::default()
        .key_prefix(guard.prefix().to_owned())
        .timeout(Duration::from_secs(2));
    // Two buses, two connections: as two instances.
    let publisher = RedisInvalidationBus::new(&url, &options).expect("redis url");
    let subscriber = RedisInvalidationBus::new(&url, &options).expect("redis url");
    restguard_store::conformance::invalidation_bus_delivers(
        Arc::new(publisher),
        Arc::new(subscriber),
    )
    .await
    .unwrap();
    // Another prefix (another deployment) hears nothing of it: channels are prefixed.
    let other = RedisInvalidationBus::new(
        &url,
        &options
            .clone()
            .key_prefix(format!("{}other:", guard.prefix())),
    )
    .expect("redis url");
    let heard = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = heard.clone();
    other.subscribe(Arc::new(move |event| {
        if event != restguard_core::invalidation::Invalidation::All {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = RedisInvalidationBus::new(&url, &options).expect("redis url");
    for _ in 0..3 {
        publisher
            .publish(restguard_core::invalidation::Invalidation::User(
                restguard_core::UserId(1),
            ))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redis_invalidation_bus_outage_is_an_unavailable_error() {
    use restguard_core::invalidation::{Invalidation, InvalidationBus};
    use restguard_store::redis::RedisInvalidationBus;
    // Nothing listens on port 1: publishing fails fast as unavailable, never panics.
    let bus = RedisInvalidationBus::new(
        "redis://127.0.0.1:1/",
        &RedisOptions::default().timeout(Duration::from_millis(300)),
    )
    .expect("url");
    bus.subscribe(Arc::new(|_| {}));
    let error = bus.publish(Invalidation::All).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
}
