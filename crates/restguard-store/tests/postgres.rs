//! The conformance suite against PostgreSQL (a scratch schema per test, so tests run in
//! parallel), plus PostgreSQL-specific checks. Needs `RESTGUARD_TEST_POSTGRES_URL`; without
//! it every test prints why it skips (and fails under `RESTGUARD_REQUIRE_SERVICES=1`).

use std::time::{Duration, Instant};

use restguard_core::store::{NewUser, StoreHealth, UserStore};
use restguard_store::{
    postgres::{PostgresOptions, PostgresStore},
    testing::{service_url, ScratchSchema, POSTGRES_URL_VAR},
};

/// A migrated store in a new scratch schema (dropped with the guard), or `None` to skip.
async fn fresh() -> Option<(PostgresStore, ScratchSchema)> {
    let base = service_url(POSTGRES_URL_VAR, "postgres")?;
    let schema = ScratchSchema::create(&base).await;
    let store =
        PostgresStore::connect_with(schema.url(), &PostgresOptions::default().max_connections(4))
            .await
            .expect("connect");
    store.migrate().await.expect("migrate");
    Some((store, schema))
}

mod conformance {
    restguard_store::conformance_suite!(guarded: super::fresh());
}

#[tokio::test]
async fn migrate_is_idempotent_and_concurrent() {
    let Some((store, schema)) = fresh().await else {
        return;
    };
    let other = PostgresStore::connect(schema.url()).await.unwrap();
    let (a, b) = tokio::join!(store.migrate(), other.migrate());
    a.unwrap();
    b.unwrap();
    store.create_user(NewUser::new("alice")).await.unwrap();
    store.migrate().await.unwrap();
    assert!(other.user_by_username("alice").await.unwrap().is_some());
}

#[tokio::test]
async fn unreachable_server_is_unavailable_within_the_timeout() {
    if service_url(POSTGRES_URL_VAR, "postgres").is_none() {
        return;
    }
    // Nothing listens on port 1 of loopback: connection refused.
    let store = PostgresStore::connect_with(
        "postgres://postgres@127.0.0.1:1/postgres",
        &PostgresOptions::default().acquire_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = store.user_by_username("alice").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn statement_timeout_is_unavailable() {
    let Some((_, schema)) = fresh().await else {
        return;
    };
    let store = PostgresStore::connect_with(
        schema.url(),
        &PostgresOptions::default().statement_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let err = sqlx::query("SELECT pg_sleep(2)")
        .execute(store.pool())
        .await
        .unwrap_err();
    let db = err.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("57014"));
}

#[tokio::test]
async fn closed_pool_is_unavailable() {
    let Some((store, _schema)) = fresh().await else {
        return;
    };
    store.ping().await.unwrap();
    store.pool().close().await;
    let err = store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}
