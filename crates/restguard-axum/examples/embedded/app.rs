//! The example's router, shared with the test that exercises it.

use std::sync::Arc;

use axum::{routing::get, Json, Router};
use restguard::{
    basic::Basic,
    password::{HasherConfig, PasswordAuth, PasswordHasher},
    token::{TokenAuth, TokenService},
};
use restguard_axum::{AuthLayer, Authenticated, AuthenticatedUser};
use restguard_core::{
    permission::{AllowAny, IsAdminUser, IsAuthenticated},
    secret::SecretString,
    store::{NewUser, Stores},
    Policy, PolicyTable, RouteRule, StoreError,
};
use restguard_store::memory::MemoryStore;
use serde_json::{json, Value};

/// The router: `/me` under the global default (Token, then Basic; authenticated users),
/// `/public/…` open to anyone, `/admin/…` for staff only.
pub(crate) async fn router(stores: Stores, passwords: PasswordAuth) -> Result<Router, StoreError> {
    let tokens = TokenService::from_stores(&stores).await?;
    let token = Arc::new(TokenAuth::new(tokens));
    let basic = Arc::new(Basic::new(passwords));

    let default = Policy::builder()
        .shared_authenticator(token.clone())
        .shared_authenticator(basic.clone())
        .permission(IsAuthenticated)
        .build();
    let public = Policy::builder()
        .shared_authenticator(token.clone())
        .permission(AllowAny)
        .build();
    let admin = Policy::builder()
        .shared_authenticator(token)
        .shared_authenticator(basic)
        .permission(IsAdminUser)
        .build();
    let table = PolicyTable::new(default)
        .with_route(RouteRule::prefix("/public/"), public)
        .with_route(RouteRule::prefix("/admin/"), admin);

    Ok(Router::new()
        .route("/me", get(me))
        .route("/public/status", get(status))
        .route("/admin/stats", get(|| async { Json(json!({"users": 1})) }))
        .layer(AuthLayer::new(table)))
}

async fn me(AuthenticatedUser { user, auth }: AuthenticatedUser) -> Json<Value> {
    Json(json!({
        "username": user.username,
        "scheme": auth.scheme.as_str(),
    }))
}

async fn status(user: Option<Authenticated>) -> Json<Value> {
    Json(json!({
        "ok": true,
        "user": user.and_then(|Authenticated(i)| i.user().map(|u| u.username.clone())),
    }))
}

/// An in-memory store with the user `alice` / `wonderland`, and the router over it.
#[allow(dead_code)] // used by the binary, not by the test
pub(crate) async fn demo() -> Result<Router, Box<dyn std::error::Error>> {
    let stores = Stores::from_backend(Arc::new(MemoryStore::new()));
    let passwords = PasswordAuth::new(
        stores.users.clone(),
        PasswordHasher::new(HasherConfig::default()),
    );
    let hash = passwords
        .hasher()
        .hash(&SecretString::new("wonderland"))
        .await?;
    stores
        .users
        .create_user(NewUser {
            password_hash: Some(hash),
            ..NewUser::new("alice")
        })
        .await?;
    Ok(router(stores, passwords).await?)
}
