//! `GET /api/me/`.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use restguard_axum::AuthenticatedUser;
use serde::Serialize;

/// The body of `/api/me/`, serialised straight from borrowed fields: this is the benchmark's
/// authenticated route, so no intermediate JSON tree and no copies.
#[derive(Serialize)]
struct Me<'a> {
    id: i64,
    username: &'a str,
    email: &'a str,
    is_staff: bool,
    is_superuser: bool,
    auth: MeAuth<'a>,
}

#[derive(Serialize)]
struct MeAuth<'a> {
    scheme: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<&'a [String]>,
}

/// The caller and how they authenticated.
pub(crate) async fn me(identity: AuthenticatedUser) -> Response {
    let user = &identity.user;
    let body = Me {
        id: user.id.0,
        username: &user.username,
        email: &user.email,
        is_staff: user.is_staff,
        is_superuser: user.is_superuser,
        auth: MeAuth {
            scheme: identity.auth.scheme.as_str(),
            scopes: identity.auth.scopes.as_deref(),
        },
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        // Serialising plain strings and booleans cannot fail.
        Err(_) => http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
