//! `GET /api/me/`.

use axum::Json;
use restguard_axum::Authenticated;
use serde_json::{json, Value};

/// The caller and how they authenticated.
pub(crate) async fn me(Authenticated(identity): Authenticated) -> Json<Value> {
    let user = &identity.user;
    let mut auth = json!({"scheme": identity.auth.scheme.as_str()});
    if let Some(scopes) = &identity.auth.scopes {
        auth["scopes"] = json!(scopes);
    }
    Json(json!({
        "id": user.id.0,
        "username": user.username,
        "email": user.email,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "auth": auth,
    }))
}
