//! API tokens: `/api-token-auth/`, `/api/tokens/…`, `/api/auth/logout[all]/`.

use std::time::Duration;

use axum::{
    extract::{FromRequestParts, Path, State},
    http::{request::Parts, StatusCode},
    Json,
};
use restguard::{password::Login, token::IssuedToken};
use restguard_axum::{AuthenticatedUser, Rejected, RequestIp, RouteChallenge};
use restguard_core::{
    store::{ApiToken, TokenId},
    AuthError, Denial, Scheme, UserId,
};
use serde_json::{json, Value};

use crate::{
    app::AppState,
    body::{CharRules, Data, Fields, LoginFields},
    error::{ApiError, ApiResult},
    routes::{no_store::NoStore, rfc3339},
};

/// Longest token name.
const NAME_MAX: usize = 64;
/// Longest lifetime a token may be given (10 years).
const EXPIRES_IN_MAX: i64 = 10 * 365 * 86_400;

fn token_json(t: &ApiToken) -> Value {
    json!({
        "id": t.id.0,
        "name": t.name,
        "prefix": t.prefix,
        "created": rfc3339(t.created),
        "last_used": t.last_used.map(rfc3339),
        "expiry": t.expiry.map(rfc3339),
    })
}

fn issued_json(issued: &IssuedToken) -> Value {
    json!({
        "id": issued.token.id.0,
        "name": issued.token.name,
        "token": issued.key.expose(),
        "expiry": issued.token.expiry.map(rfc3339),
    })
}

/// `POST /api-token-auth/` — DRF's `obtain_auth_token` (a new token on every call).
pub(crate) async fn obtain(
    State(state): State<AppState>,
    RequestIp(ip): RequestIp,
    data: Data,
) -> ApiResult<NoStore<Json<Value>>> {
    let LoginFields { username, password } = LoginFields::parse(&data)?;
    let user = match state.passwords.login(ip, &username, &password).await? {
        Login::Valid(user) => user,
        Login::Invalid => {
            return Err(ApiError::non_field(
                "Unable to log in with provided credentials.",
            ))
        }
        Login::Throttled(wait) => return Err(ApiError::Throttled(wait)),
    };
    let issued = state.tokens.issue(user.id, "", None).await?;
    Ok(NoStore(Json(json!({"token": issued.key.expose()}))))
}

/// `GET /api/tokens/`.
pub(crate) async fn list(
    State(state): State<AppState>,
    identity: AuthenticatedUser,
) -> ApiResult<Json<Value>> {
    let tokens = state.tokens.list(identity.user.id).await?;
    Ok(Json(Value::Array(tokens.iter().map(token_json).collect())))
}

/// `POST /api/tokens/` `{"name"?, "expires_in"?}`.
pub(crate) async fn create(
    State(state): State<AppState>,
    identity: AuthenticatedUser,
    data: Data,
) -> ApiResult<NoStore<(StatusCode, Json<Value>)>> {
    let mut fields = Fields::new(&data);
    let name = fields.char(
        "name",
        CharRules {
            required: false,
            allow_blank: true,
            trim: true,
            max_length: Some(NAME_MAX),
        },
    );
    let expires_in = fields.optional_int("expires_in", 1, EXPIRES_IN_MAX);
    fields.finish()?;
    let expires_in = expires_in.map(|s| Duration::from_secs(s.unsigned_abs()));
    let issued = state
        .tokens
        .issue(identity.user.id, name.as_deref().unwrap_or(""), expires_in)
        .await?;
    Ok(NoStore((StatusCode::CREATED, Json(issued_json(&issued)))))
}

fn parse_id(raw: &str) -> ApiResult<TokenId> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .map(TokenId)
        .ok_or(ApiError::NotFound)
}

/// `DELETE /api/tokens/<id>/`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    identity: AuthenticatedUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    if state.tokens.revoke(identity.user.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// `POST /api/tokens/<id>/rotate/`.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    identity: AuthenticatedUser,
    Path(id): Path<String>,
) -> ApiResult<NoStore<(StatusCode, Json<Value>)>> {
    let id = parse_id(&id)?;
    let issued = state
        .tokens
        .rotate(identity.user.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(NoStore((StatusCode::CREATED, Json(issued_json(&issued)))))
}

/// The API token that authenticated the request (knox's `request.auth`).
///
/// `/api/auth/logout/` runs the first-party chain (CONTRACT §3), so a JWT, Basic or session
/// caller is authenticated there, but presents no API token to end. knox's logout view
/// authenticates API tokens only; such a caller is answered as it would be: no credentials
/// (401 with the route's challenge, `Token`). Sessions end at `/api/session/logout/`, JWT
/// refresh tokens at `/api/token/blacklist/`.
pub(crate) struct PresentedToken {
    user: UserId,
    token: TokenId,
}

impl<S: Send + Sync> FromRequestParts<S> for PresentedToken {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let AuthenticatedUser { user, auth } =
            AuthenticatedUser::from_request_parts(parts, state).await?;
        let token = match auth.scheme {
            Scheme::Token => auth
                .credential_id
                .as_deref()
                .and_then(|id| id.parse::<i64>().ok()),
            _ => None,
        };
        match token {
            Some(id) => Ok(Self {
                user: user.id,
                token: TokenId(id),
            }),
            None => {
                let challenge = parts
                    .extensions
                    .get::<RouteChallenge>()
                    .and_then(|c| c.0.clone());
                Err(Rejected(Denial::new(
                    AuthError::NotAuthenticated,
                    challenge,
                )))
            }
        }
    }
}

/// `POST /api/auth/logout/` — revokes the presenting API token (knox).
pub(crate) async fn logout(
    State(state): State<AppState>,
    presented: PresentedToken,
) -> ApiResult<StatusCode> {
    state.tokens.revoke(presented.user, presented.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/auth/logoutall/` — revokes every token of the user (knox).
pub(crate) async fn logout_all(
    State(state): State<AppState>,
    identity: AuthenticatedUser,
) -> ApiResult<StatusCode> {
    state.tokens.revoke_all(identity.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
