//! The conformance suite against SQLite (a fresh file database per test), plus
//! SQLite-specific checks.

use restguard_core::store::{NewUser, StoreHealth, UserStore};
use restguard_store::sqlite::SqliteStore;
use tempfile::TempDir;

/// A migrated store on a new file in a new temporary directory (kept alive by the guard).
async fn fresh() -> (SqliteStore, TempDir) {
    let dir = TempDir::new().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, dir)
}

mod conformance {
    restguard_store::conformance_suite!(guarded: super::fresh());
}

#[tokio::test]
async fn connect_creates_the_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
    store.ping().await.unwrap();
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let (store, _dir) = fresh().await;
    store.migrate().await.unwrap();
    store.create_user(NewUser::new("alice")).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.user_by_username("alice").await.unwrap().is_some());
}

#[tokio::test]
async fn data_survives_reconnect() {
    let (store, dir) = fresh().await;
    let alice = store.create_user(NewUser::new("alice")).await.unwrap();
    store.pool().close().await;
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let again = SqliteStore::connect(&url).await.unwrap();
    again.migrate().await.unwrap();
    assert_eq!(again.user_by_id(alice.id).await.unwrap(), Some(alice));
}

#[tokio::test]
async fn in_memory_database_works() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let alice = store.create_user(NewUser::new("alice")).await.unwrap();
    // Later operations (on whatever pooled connection) see the same database.
    for _ in 0..3 {
        assert_eq!(
            store.user_by_username("alice").await.unwrap().as_ref(),
            Some(&alice)
        );
    }
    store.ping().await.unwrap();
}

#[tokio::test]
async fn bad_path_is_an_error() {
    let err = SqliteStore::connect("sqlite:///nonexistent-dir/x.db")
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
}

#[tokio::test]
async fn non_sqlite_url_is_an_error() {
    assert!(SqliteStore::connect("postgres://localhost/db")
        .await
        .is_err());
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let (store, _dir) = fresh().await;
    let alice = store.create_user(NewUser::new("alice")).await.unwrap();
    sqlx::query("UPDATE users SET date_joined = 'not a number', is_staff = 'x' WHERE id = ?")
        .bind(alice.id.0)
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.user_by_id(alice.id).await.is_err());
    sqlx::query("UPDATE users SET date_joined = ? WHERE id = ?")
        .bind(i64::MAX)
        .bind(alice.id.0)
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.user_by_id(alice.id).await.is_err());
}

#[tokio::test]
async fn closed_pool_is_unavailable() {
    let (store, _dir) = fresh().await;
    store.pool().close().await;
    let err = store.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}
