//! `GET|POST /api-auth/login/` and `GET|POST /api-auth/logout/` (DRF's browsable-API login).

use axum::{
    extract::{Query, Request, State},
    http::{HeaderMap, StatusCode},
};
use restguard_axum::RequestIp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{redirect, safe_next, CheckedForm, PageError, PageResult, Visitor};
use crate::{
    app::AppState,
    routes::session::{log_in, USERNAME_MAX},
};

/// Django's `AuthenticationForm` message for bad credentials.
const BAD_LOGIN: &str =
    "Please enter a correct username and password. Note that both fields may be case-sensitive.";

#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

fn login_page(
    state: &AppState,
    visitor: Visitor,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
    field_errors: Map<String, Value>,
) -> axum::response::Response {
    let mut context = Map::new();
    context.insert("next".into(), json!(next));
    context.insert("username".into(), json!(username));
    context.insert("error".into(), json!(error));
    context.insert("field_errors".into(), Value::Object(field_errors));
    visitor.render(state, status, "login.html", "Sign in", context)
}

/// `GET /api-auth/login/?next=…`: the sign-in form.
pub(crate) async fn login_form(
    State(state): State<AppState>,
    Query(query): Query<NextQuery>,
    headers: HeaderMap,
) -> PageResult {
    let visitor = Visitor::load(&state, &headers).await?;
    let next = safe_next(query.next.as_deref());
    Ok(login_page(
        &state,
        visitor,
        StatusCode::OK,
        &next,
        "",
        None,
        Map::new(),
    ))
}

/// `POST /api-auth/login/`: CSRF, then a throttled password check, then a new session and a
/// redirect to `next` (a same-site path) or `/account/`.
pub(crate) async fn login_submit(
    State(state): State<AppState>,
    RequestIp(ip): RequestIp,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    let next = safe_next(Some(&form.field("next")));
    let username = form.field("username").trim().to_owned();
    let password = form.field("password");
    let mut field_errors = Map::new();
    if username.is_empty() {
        field_errors.insert("username".into(), json!(["This field is required."]));
    } else if username.chars().count() > USERNAME_MAX {
        field_errors.insert(
            "username".into(),
            json!([format!(
                "Ensure this value has at most {USERNAME_MAX} characters (it has {}).",
                username.chars().count()
            )]),
        );
    }
    if password.is_empty() {
        field_errors.insert("password".into(), json!(["This field is required."]));
    }
    let shown_username: String = username.chars().take(USERNAME_MAX).collect();
    if !field_errors.is_empty() {
        return Ok(login_page(
            &state,
            form.visitor,
            StatusCode::BAD_REQUEST,
            &next,
            &shown_username,
            Some("Please correct the errors below."),
            field_errors,
        ));
    }
    let logged_in = match log_in(
        &state,
        &form.parts,
        ip,
        &username,
        &restguard_core::secret::SecretString::new(password),
    )
    .await
    {
        Ok(Some(logged_in)) => logged_in,
        Ok(None) => {
            return Ok(login_page(
                &state,
                form.visitor,
                StatusCode::OK,
                &next,
                &shown_username,
                Some(BAD_LOGIN),
                Map::new(),
            ))
        }
        Err(crate::error::ApiError::Throttled(wait)) => {
            let secs = restguard_core::error::retry_after_seconds(wait);
            let mut response = login_page(
                &state,
                form.visitor,
                StatusCode::TOO_MANY_REQUESTS,
                &next,
                &shown_username,
                Some(&format!(
                    "Too many failed sign-in attempts. Try again in {secs} seconds."
                )),
                Map::new(),
            );
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
            return Ok(response);
        }
        Err(other) => return Err(other.into()),
    };
    Ok(redirect(
        StatusCode::FOUND,
        &next,
        logged_in.cookies.to_vec(),
    ))
}

/// `GET /api-auth/logout/`: a confirmation form (only POST signs out).
pub(crate) async fn logout_form(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let visitor = Visitor::load(&state, &headers).await?;
    Ok(visitor.render(
        &state,
        StatusCode::OK,
        "logout.html",
        "Sign out",
        Map::new(),
    ))
}

/// `POST /api-auth/logout/`: CSRF, then the session is deleted server-side and the cookie
/// cleared.
pub(crate) async fn logout_submit(State(state): State<AppState>, request: Request) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    if let Some(key) = state.sessions.cookie(&form.parts.headers) {
        state
            .sessions
            .end_key(&key)
            .await
            .map_err(PageError::from)?;
    }
    let mut visitor = form.visitor;
    visitor.replace(None, vec![state.sessions.clear_cookie_header()], None);
    let mut context = Map::new();
    context.insert("signed_out".into(), json!(true));
    Ok(visitor.render(&state, StatusCode::OK, "logout.html", "Signed out", context))
}
