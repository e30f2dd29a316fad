//! Simple JWT's endpoints: `/api/token/` (obtain), `refresh/`, `verify/`, `blacklist/`,
//! `sliding/`, `sliding/refresh/`, and the JWKS at `/api/token/jwks/`.

use axum::{extract::State, Json};
use std::net::IpAddr;

use restguard::{jwt::JwtError, password::Login};
use restguard_axum::RequestIp;
use restguard_core::{Rejection, User};
use serde_json::{json, Value};

use crate::{
    app::AppState,
    body::{CharRules, Data, Fields, LoginFields},
    error::{ApiError, ApiResult},
    routes::no_store::NoStore,
};

fn rejected(state: &AppState, error: JwtError) -> ApiError {
    match error {
        JwtError::Store(e) => ApiError::Store(e),
        other => match other.endpoint_rejection() {
            Some(rejection) => ApiError::Unauthorized {
                rejection: Box::new(rejection),
                challenge: state.jwt_challenge.clone(),
            },
            None => ApiError::Store(restguard_core::StoreError::backend(other.to_string())),
        },
    }
}

/// Checks `{"username","password"}` (Simple JWT's `TokenObtainSerializer`).
async fn credentials(state: &AppState, ip: Option<IpAddr>, data: &Data) -> ApiResult<User> {
    let LoginFields { username, password } = LoginFields::parse(data)?;
    let no_account = || ApiError::Unauthorized {
        rejection: Box::new(
            Rejection::new("No active account found with the given credentials")
                .with_code("no_active_account"),
        ),
        challenge: state.jwt_challenge.clone(),
    };
    match state.passwords.login(ip, &username, &password).await? {
        Login::Valid(user) => Ok(user),
        Login::Invalid => Err(no_account()),
        Login::Throttled(wait) => Err(ApiError::Throttled(wait)),
    }
}

/// A required token field.
fn token_field(data: &Data, name: &str) -> ApiResult<String> {
    let mut fields = Fields::new(data);
    let value = fields.char(name, CharRules::REQUIRED);
    fields.finish()?;
    value.ok_or(ApiError::NotFound)
}

/// `POST /api/token/` → `{"refresh","access"}`.
pub(crate) async fn obtain(
    State(state): State<AppState>,
    RequestIp(ip): RequestIp,
    data: Data,
) -> ApiResult<NoStore<Json<Value>>> {
    let user = credentials(&state, ip, &data).await?;
    let pair = state
        .jwt
        .issue_pair(&user)
        .await
        .map_err(|e| rejected(&state, e))?;
    state
        .stores
        .users
        .record_login(user.id, time::OffsetDateTime::now_utc())
        .await?;
    Ok(NoStore(Json(
        json!({"refresh": pair.refresh, "access": pair.access}),
    )))
}

/// `POST /api/token/refresh/` `{"refresh"}` → `{"access"}` (+ `"refresh"` with rotation).
pub(crate) async fn refresh(
    State(state): State<AppState>,
    data: Data,
) -> ApiResult<NoStore<Json<Value>>> {
    let token = token_field(&data, "refresh")?;
    let refreshed = state
        .jwt
        .refresh(&token)
        .await
        .map_err(|e| rejected(&state, e))?;
    let mut body = json!({"access": refreshed.access});
    if let Some(refresh) = refreshed.refresh {
        body["refresh"] = json!(refresh);
    }
    Ok(NoStore(Json(body)))
}

/// `POST /api/token/verify/` `{"token"}` → `{}`.
pub(crate) async fn verify(State(state): State<AppState>, data: Data) -> ApiResult<Json<Value>> {
    let token = token_field(&data, "token")?;
    state
        .jwt
        .verify(&token)
        .await
        .map_err(|e| rejected(&state, e))?;
    Ok(Json(json!({})))
}

/// `POST /api/token/blacklist/` `{"refresh"}` → `{}`.
pub(crate) async fn blacklist(State(state): State<AppState>, data: Data) -> ApiResult<Json<Value>> {
    let token = token_field(&data, "refresh")?;
    state
        .jwt
        .blacklist(&token)
        .await
        .map_err(|e| rejected(&state, e))?;
    Ok(Json(json!({})))
}

/// `POST /api/token/sliding/` credentials → `{"token"}`.
pub(crate) async fn sliding_obtain(
    State(state): State<AppState>,
    RequestIp(ip): RequestIp,
    data: Data,
) -> ApiResult<NoStore<Json<Value>>> {
    let user = credentials(&state, ip, &data).await?;
    let token = state
        .jwt
        .issue_sliding(&user)
        .await
        .map_err(|e| rejected(&state, e))?;
    state
        .stores
        .users
        .record_login(user.id, time::OffsetDateTime::now_utc())
        .await?;
    Ok(NoStore(Json(json!({"token": token}))))
}

/// `POST /api/token/sliding/refresh/` `{"token"}` → `{"token"}`.
pub(crate) async fn sliding_refresh(
    State(state): State<AppState>,
    data: Data,
) -> ApiResult<NoStore<Json<Value>>> {
    let token = token_field(&data, "token")?;
    let token = state
        .jwt
        .refresh_sliding(&token)
        .await
        .map_err(|e| rejected(&state, e))?;
    Ok(NoStore(Json(json!({"token": token}))))
}

/// `GET /api/token/jwks/`.
pub(crate) async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json(state.jwt.jwks())
}
