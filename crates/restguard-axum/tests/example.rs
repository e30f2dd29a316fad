//! Exercises the `embedded` example's router: global default plus two overrides.

#[path = "../examples/embedded/app.rs"]
mod app;

use std::sync::Arc;

use axum::{body::Body, http::Request};
use base64::Engine as _;
use http_body_util::BodyExt;
use restguard::password::{HasherConfig, PasswordAuth, PasswordHasher};
use restguard_core::{
    secret::SecretString,
    store::{NewUser, Stores},
};
use restguard_store::memory::MemoryStore;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn setup() -> axum::Router {
    let stores = Stores::from_backend(Arc::new(MemoryStore::new()));
    let hasher = PasswordHasher::new(HasherConfig {
        memory_kib: 1024,
        iterations: 1,
        ..HasherConfig::default()
    });
    let passwords = PasswordAuth::new(stores.users.clone(), hasher);
    for (name, staff) in [("alice", false), ("root", true)] {
        let hash = passwords
            .hasher()
            .hash(&SecretString::new("pw"))
            .await
            .expect("test setup");
        stores
            .users
            .create_user(NewUser {
                password_hash: Some(hash),
                is_staff: staff,
                ..NewUser::new(name)
            })
            .await
            .expect("test setup");
    }
    app::router(stores, passwords).await.expect("test setup")
}

async fn call(app: &axum::Router, path: &str, user: Option<&str>) -> (u16, Option<String>, Value) {
    let mut request = Request::get(path);
    if let Some(user) = user {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("test setup"))
        .await
        .expect("test setup");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("test setup").to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("test setup")
        .to_bytes();
    (
        status,
        challenge,
        serde_json::from_slice(&body).expect("test setup"),
    )
}

#[tokio::test]
async fn default_policy_requires_a_user() {
    let app = setup().await;
    assert_eq!(
        call(&app, "/me", None).await,
        (
            401,
            Some("Token".into()),
            json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"})
        )
    );
    assert_eq!(
        call(&app, "/me", Some("alice")).await,
        (200, None, json!({"username": "alice", "scheme": "basic"}))
    );
}

#[tokio::test]
async fn public_override_allows_anyone() {
    let app = setup().await;
    assert_eq!(
        call(&app, "/public/status", None).await,
        (200, None, json!({"ok": true, "user": null}))
    );
}

#[tokio::test]
async fn admin_override_requires_staff() {
    let app = setup().await;
    assert_eq!(
        call(&app, "/admin/stats", Some("alice")).await,
        (
            403,
            None,
            json!({"detail": "You do not have permission to perform this action.", "code": "permission_denied"})
        )
    );
    assert_eq!(
        call(&app, "/admin/stats", Some("root")).await,
        (200, None, json!({"users": 1}))
    );
    let (status, challenge, _) = call(&app, "/admin/stats", None).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Token")));
}
