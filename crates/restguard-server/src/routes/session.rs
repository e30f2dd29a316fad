//! Session login for single-page apps (CONTRACT §4): `GET /api/csrf/`,
//! `POST /api/session/login/`, `POST /api/session/logout/`.
//!
//! These routes fix an open policy and run Django's CSRF check themselves, with the form
//! field `csrfmiddlewaretoken` (form bodies) or the `X-CSRFToken` header: login CSRF is
//! enforced even though nobody is logged in yet, as Django's `LoginView` does.

use axum::{
    extract::{FromRequest, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use http::request::Parts;
use restguard::{
    csrf::{CsrfSecret, CSRF_FORM_FIELD},
    password::Login,
    session::{request_host, request_is_https},
};
use restguard_axum::RequestIp;
use restguard_core::{secret::SecretString, User};
use serde_json::{json, Value};

use crate::{
    app::AppState,
    body::{Data, LoginFields},
    error::{ApiError, ApiResult},
};

pub(crate) use crate::body::USERNAME_MAX;

/// Whether the body is a form (the only kind whose `csrfmiddlewaretoken` Django reads).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|ct| ct == "application/x-www-form-urlencoded" || ct == "multipart/form-data")
}

/// The request head and its parsed body.
pub(crate) async fn read_request(state: &AppState, request: Request) -> ApiResult<(Parts, Data)> {
    let (parts, body) = request.into_parts();
    let data = Data::from_request(Request::from_parts(parts.clone(), body), state).await?;
    Ok((parts, data))
}

/// The form token of a parsed body, as Django's `request.POST.get("csrfmiddlewaretoken")`.
pub(crate) fn form_token<'a>(parts: &Parts, data: &'a Data) -> Option<&'a str> {
    if !is_form(&parts.headers) {
        return None;
    }
    data.0.get(CSRF_FORM_FIELD).and_then(Value::as_str)
}

/// Django's CSRF check for this request; `Err` is Django's reason.
pub(crate) fn csrf_check(state: &AppState, parts: &Parts, data: &Data) -> Result<(), String> {
    state
        .csrf
        .check(
            parts,
            form_token(parts, data),
            request_is_https(parts),
            &request_host(parts),
        )
        .map_err(|failure| failure.reason())
}

/// `Set-Cookie` for a CSRF secret.
pub(crate) fn csrf_cookie(state: &AppState, secret: &CsrfSecret) -> http::HeaderValue {
    state
        .csrf
        .set_cookie_header(secret, state.csrf_cookie_secure)
}

/// `GET /api/csrf/` → `{"csrfToken": <masked token>}` and the `csrftoken` cookie.
pub(crate) async fn csrf_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (secret, _) = state.csrf.secret_or_generate(&headers);
    let mut response = Json(json!({"csrfToken": secret.mask()})).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, csrf_cookie(&state, &secret));
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(header::VARY, http::HeaderValue::from_static("Cookie"));
    response
}

/// The outcome of a password login with a new session.
pub(crate) struct LoggedIn {
    pub(crate) user: User,
    /// `Set-Cookie` values: the new session, the rotated CSRF secret.
    pub(crate) cookies: [http::HeaderValue; 2],
}

/// A throttled password check, then a new session (Django's `login()`): the session the
/// request came with, if any, is deleted (no fixation), and the CSRF secret is rotated.
pub(crate) async fn log_in(
    state: &AppState,
    parts: &Parts,
    ip: Option<std::net::IpAddr>,
    username: &str,
    password: &SecretString,
) -> ApiResult<Option<LoggedIn>> {
    let user = match state.passwords.login(ip, username, password).await? {
        Login::Valid(user) => user,
        Login::Invalid => return Ok(None),
        Login::Throttled(wait) => return Err(ApiError::Throttled(wait)),
    };
    if let Some(old) = state.sessions.cookie(&parts.headers) {
        state.sessions.end_key(&old).await?;
    }
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let started = state.sessions.start(&user, &user_agent, ip).await?;
    state
        .stores
        .users
        .record_login(user.id, time::OffsetDateTime::now_utc())
        .await?;
    let csrf = CsrfSecret::generate();
    Ok(Some(LoggedIn {
        user,
        cookies: [
            state.sessions.set_cookie_header(&started),
            csrf_cookie(state, &csrf),
        ],
    }))
}

/// `POST /api/session/login/` `{"username","password"}` + CSRF → 200 `{"id","username"}`.
pub(crate) async fn login(
    State(state): State<AppState>,
    RequestIp(ip): RequestIp,
    request: Request,
) -> ApiResult<Response> {
    let (parts, data) = read_request(&state, request).await?;
    csrf_check(&state, &parts, &data)
        .map_err(|reason| ApiError::Csrf(format!("CSRF Failed: {reason}")))?;
    let LoginFields { username, password } = LoginFields::parse(&data)?;
    let bad = || ApiError::non_field("Unable to log in with provided credentials.");
    let Some(logged_in) = log_in(&state, &parts, ip, &username, &password).await? else {
        return Err(bad());
    };
    let mut response = Json(json!({
        "id": logged_in.user.id.0,
        "username": logged_in.user.username,
    }))
    .into_response();
    for cookie in logged_in.cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    // The new session cookie is a credential.
    Ok(crate::routes::no_store::NoStore(response).into_response())
}

/// `POST /api/session/logout/` + CSRF → 204; the session is deleted server-side.
pub(crate) async fn logout(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let (parts, data) = read_request(&state, request).await?;
    csrf_check(&state, &parts, &data)
        .map_err(|reason| ApiError::Csrf(format!("CSRF Failed: {reason}")))?;
    if let Some(key) = state.sessions.cookie(&parts.headers) {
        state.sessions.end_key(&key).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.sessions.clear_cookie_header());
    Ok(response)
}
