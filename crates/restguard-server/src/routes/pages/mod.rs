//! Server-rendered pages: sign-in / sign-out (`/api-auth/…`), `/account/`, and the staff-only
//! `/admin/`.
//!
//! Templates are embedded (`include_str!`) and rendered with `minijinja`, which escapes every
//! value in `.html` templates. Every page works without JavaScript: actions are plain form
//! POSTs carrying `csrfmiddlewaretoken`, checked with Django's algorithm before anything
//! else. The pages fix an open policy in the table and identify the visitor by the session
//! cookie themselves; anonymous visitors are redirected to the sign-in form.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod admin_apps;
pub(crate) mod admin_rights;
pub(crate) mod auth;

use std::sync::OnceLock;

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use http::request::Parts;
use minijinja::Environment;
use restguard::{csrf::CsrfSecret, session::ActiveSession};
use restguard_core::{store::SessionRecord, StoreError, User};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::{
    app::AppState,
    body::Data,
    error::ApiError,
    routes::session::{csrf_check, csrf_cookie, read_request},
};

const TEMPLATES: [(&str, &str); 13] = [
    ("base.html", include_str!("../../../templates/base.html")),
    ("login.html", include_str!("../../../templates/login.html")),
    (
        "logout.html",
        include_str!("../../../templates/logout.html"),
    ),
    ("error.html", include_str!("../../../templates/error.html")),
    (
        "account.html",
        include_str!("../../../templates/account.html"),
    ),
    (
        "admin_users.html",
        include_str!("../../../templates/admin_users.html"),
    ),
    (
        "admin_user.html",
        include_str!("../../../templates/admin_user.html"),
    ),
    (
        "_tokens_table.html",
        include_str!("../../../templates/_tokens_table.html"),
    ),
    (
        "_sessions_table.html",
        include_str!("../../../templates/_sessions_table.html"),
    ),
    (
        "_apps_table.html",
        include_str!("../../../templates/_apps_table.html"),
    ),
    (
        "oauth_authorize.html",
        include_str!("../../../templates/oauth_authorize.html"),
    ),
    (
        "oauth_logout.html",
        include_str!("../../../templates/oauth_logout.html"),
    ),
    (
        "admin_apps.html",
        include_str!("../../../templates/admin_apps.html"),
    ),
];

/// The stylesheet, served at `/static/restguard.css`.
pub(crate) const STYLESHEET: &str = include_str!("../../../static/restguard.css");
/// The account page's script, served at `/static/account.js`.
pub(crate) const ACCOUNT_JS: &str = include_str!("../../../static/account.js");

fn environment() -> &'static Result<Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| format!("template {name}: {e}"))?;
        }
        Ok(env)
    })
}

/// Renders an embedded template.
fn render_template(name: &str, context: &Value) -> Result<String, String> {
    let env = environment().as_ref().map_err(Clone::clone)?;
    env.get_template(name)
        .and_then(|t| t.render(context))
        .map_err(|e| format!("template {name}: {e}"))
}

/// Headers every page carries: HTML, no caching, no framing, same-origin everything.
fn page_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// An HTML response.
fn html(status: StatusCode, body: String, cookies: Vec<HeaderValue>) -> Response {
    let mut response = (status, body).into_response();
    page_headers(response.headers_mut());
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A redirect (`303 See Other` after a POST, `302 Found` otherwise).
pub(crate) fn redirect(status: StatusCode, location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Why a page could not be shown; each becomes a readable HTML page (or a redirect).
#[derive(Debug)]
pub(crate) enum PageError {
    /// Django's CSRF check failed (403).
    Csrf(String),
    /// Anonymous visitor: 302 to the sign-in form, coming back to this path afterwards.
    LoginRequired(String),
    /// Signed in but not allowed (403).
    Forbidden,
    /// Signed in, allowed in, but not to do this (403 with the reason).
    Refused(&'static str),
    /// No such thing (404).
    NotFound,
    /// A malformed request (400).
    BadRequest(String),
    /// Too many failed password attempts (429).
    Throttled(std::time::Duration),
    /// A store failed (503 / 500).
    Store(StoreError),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Store(e) => Self::Store(e),
            ApiError::Throttled(wait) => Self::Throttled(wait),
            ApiError::Csrf(reason) => Self::Csrf(reason),
            ApiError::NotFound => Self::NotFound,
            ApiError::PayloadTooLarge => Self::BadRequest("The form is too large.".into()),
            ApiError::UnsupportedMediaType(_) | ApiError::Parse(_) => {
                Self::BadRequest("The form could not be read.".into())
            }
            other => Self::BadRequest(other.to_string()),
        }
    }
}

fn error_page(
    status: StatusCode,
    heading: &str,
    message: &str,
    reason: Option<&str>,
    hint: Option<&str>,
) -> Response {
    let context = json!({
        "title": heading,
        "heading": heading,
        "message": message,
        "reason": reason,
        "hint": hint,
        "back": "/account/",
        "back_label": "Back to your account",
    });
    match render_template("error.html", &context) {
        Ok(body) => html(status, body, Vec::new()),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the error page");
            html(
                status,
                format!("<!doctype html><title>{status}</title><p>{status}</p>"),
                Vec::new(),
            )
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Csrf(reason) => error_page(
                StatusCode::FORBIDDEN,
                "Forbidden (403)",
                "CSRF verification failed. Request aborted.",
                Some(&reason),
                Some("The form was stale or did not come from this site. Reload the page and try again."),
            ),
            PageError::LoginRequired(next) => {
                let query = serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
                redirect(StatusCode::FOUND, &format!("/api-auth/login/?{query}"), Vec::new())
            }
            PageError::Forbidden => error_page(
                StatusCode::FORBIDDEN,
                "Forbidden (403)",
                "You do not have permission to view this page.",
                None,
                None,
            ),
            PageError::Refused(message) => error_page(
                StatusCode::FORBIDDEN,
                "Forbidden (403)",
                message,
                None,
                None,
            ),
            PageError::NotFound => error_page(
                StatusCode::NOT_FOUND,
                "Not found (404)",
                "There is nothing here.",
                None,
                None,
            ),
            PageError::BadRequest(message) => error_page(
                StatusCode::BAD_REQUEST,
                "Bad request (400)",
                &message,
                None,
                None,
            ),
            PageError::Throttled(wait) => {
                let secs = restguard_core::error::retry_after_seconds(wait);
                let mut response = error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts (429)",
                    &format!("Too many failed sign-in attempts. Try again in {secs} seconds."),
                    None,
                    None,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                response
            }
            PageError::Store(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store failure");
                let (status, message) = if e.is_unavailable() {
                    (StatusCode::SERVICE_UNAVAILABLE, "The service is temporarily unavailable. Try again in a moment.")
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, "A server error occurred.")
                };
                let mut response = error_page(status, "Unavailable", message, None, None);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                response
            }
        }
    }
}

/// Page handler result.
pub(crate) type PageResult = Result<Response, PageError>;

/// Who is looking at a page, and the CSRF secret its forms use.
pub(crate) struct Visitor {
    pub(crate) session: Option<ActiveSession>,
    csrf: CsrfSecret,
    /// The CSRF cookie must be (re)set with the page.
    set_csrf_cookie: bool,
    /// Extra `Set-Cookie` values (a new session, a rotated CSRF secret).
    pub(crate) cookies: Vec<HeaderValue>,
}

impl Visitor {
    /// Reads the session and the CSRF cookie of a request.
    pub(crate) async fn load(state: &AppState, headers: &HeaderMap) -> Result<Self, PageError> {
        let session = state.sessions.from_headers(headers).await?;
        let (csrf, set_csrf_cookie) = state.csrf.secret_or_generate(headers);
        Ok(Self {
            session,
            csrf,
            set_csrf_cookie,
            cookies: Vec::new(),
        })
    }

    /// The signed-in user, or a redirect to the sign-in form that comes back to `next`.
    pub(crate) fn require(&self, next: &str) -> Result<&ActiveSession, PageError> {
        self.session
            .as_ref()
            .ok_or_else(|| PageError::LoginRequired(next.to_owned()))
    }

    /// Replaces the session (after a login or a password change) and the CSRF secret.
    pub(crate) fn replace(
        &mut self,
        session: Option<ActiveSession>,
        cookies: Vec<HeaderValue>,
        csrf: Option<CsrfSecret>,
    ) {
        self.session = session;
        self.cookies.extend(cookies);
        if let Some(csrf) = csrf {
            self.csrf = csrf;
            self.set_csrf_cookie = false;
        }
    }

    /// Renders `template` with the page basics (user, CSRF token) added to `context`.
    pub(crate) fn render(
        mut self,
        state: &AppState,
        status: StatusCode,
        template: &str,
        title: &str,
        mut context: Map<String, Value>,
    ) -> Response {
        context.insert("title".into(), json!(title));
        context.entry("field_errors").or_insert_with(|| json!({}));
        context.insert("csrf_token".into(), json!(self.csrf.mask()));
        context.insert("csrf_cookie_name".into(), json!(state.csrf.cookie_name));
        if let Some(session) = &self.session {
            context.insert("user".into(), user_json(&session.user));
        }
        if self.set_csrf_cookie {
            self.cookies.push(csrf_cookie(state, &self.csrf));
        }
        match render_template(template, &Value::Object(context)) {
            Ok(body) => html(status, body, self.cookies),
            Err(e) => {
                tracing::error!(error = %e, "cannot render a page");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Server error",
                    "A server error occurred.",
                    None,
                    None,
                )
            }
        }
    }
}

/// A POSTed form whose CSRF token has been checked, and its visitor.
pub(crate) struct CheckedForm {
    pub(crate) parts: Parts,
    pub(crate) data: Data,
    pub(crate) visitor: Visitor,
}

impl CheckedForm {
    /// Reads the body and runs Django's CSRF check before anything else.
    pub(crate) async fn read(state: &AppState, request: Request) -> Result<Self, PageError> {
        let (parts, data) = read_request(state, request).await?;
        csrf_check(state, &parts, &data).map_err(PageError::Csrf)?;
        let visitor = Visitor::load(state, &parts.headers).await?;
        Ok(Self {
            parts,
            data,
            visitor,
        })
    }

    /// A text field (absent: empty).
    pub(crate) fn field(&self, name: &str) -> String {
        match self.data.0.get(name) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        }
    }
}

/// A date as the pages show it: `2024-05-06 07:08 UTC`.
pub(crate) fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// A user for templates.
pub(crate) fn user_json(user: &User) -> Value {
    let full_name = format!("{} {}", user.first_name, user.last_name)
        .trim()
        .to_owned();
    json!({
        "id": user.id.0,
        "username": user.username,
        "email": user.email,
        "full_name": full_name,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "date_joined": when(user.date_joined),
        "last_login": user.last_login.map(when),
    })
}

/// API tokens for templates.
pub(crate) fn tokens_json(tokens: &[restguard_core::store::ApiToken]) -> Value {
    Value::Array(
        tokens
            .iter()
            .map(|t| {
                json!({
                    "id": t.id.0,
                    "name": t.name,
                    "prefix": t.prefix,
                    "created": when(t.created),
                    "last_used": t.last_used.map(when),
                    "expiry": t.expiry.map(when),
                })
            })
            .collect(),
    )
}

/// The user's usable sessions for templates, the current one marked.
pub(crate) fn sessions_json(
    state: &AppState,
    sessions: &[SessionRecord],
    user: &User,
    current: Option<restguard_core::store::SessionId>,
) -> Value {
    let now = OffsetDateTime::now_utc();
    Value::Array(
        sessions
            .iter()
            .filter(|s| state.sessions.is_current(s, user, now))
            .map(|s| {
                json!({
                    "id": s.id.0,
                    "created": when(s.created),
                    "last_seen": when(s.last_seen),
                    "user_agent": s.user_agent,
                    "ip": s.ip,
                    "current": Some(s.id) == current,
                })
            })
            .collect(),
    )
}

/// Django's `url_has_allowed_host_and_scheme` for a `next` parameter, restricted to
/// same-site paths: a relative path starting with exactly one `/` and no backslash or control
/// character; anything else is `/account/`.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && n.len() <= 2048 =>
        {
            n.to_owned()
        }
        _ => "/account/".to_owned(),
    }
}

/// Password rules for new passwords (a subset of Django's validators), as form messages.
pub(crate) fn password_problems(username: &str, password: &str, again: &str) -> Map<String, Value> {
    let mut errors = Map::new();
    let mut first = Vec::new();
    if password.chars().count() < 8 {
        first.push("This password is too short. It must contain at least 8 characters.");
    }
    if password.len() > restguard::password::MAX_PASSWORD_BYTES {
        first.push("This password is too long.");
    }
    if !password.is_empty() && password.chars().all(|c| c.is_ascii_digit()) {
        first.push("This password is entirely numeric.");
    }
    if !username.is_empty() && password.eq_ignore_ascii_case(username) {
        first.push("The password is too similar to the username.");
    }
    if !first.is_empty() {
        errors.insert("new_password1".into(), json!(first));
    }
    if password != again {
        errors.insert(
            "new_password2".into(),
            json!(["The two password fields didn’t match."]),
        );
    }
    errors
}

/// Sets a new password (CONTRACT §10): the hash and `credentials_changed_at` in the store
/// (which revokes the user's API tokens), then every session of the user ends, and the
/// in-process caches forget them. Returns the updated user.
pub(crate) async fn set_password(
    state: &AppState,
    user: &User,
    password: &str,
) -> Result<User, PageError> {
    let hash = state
        .passwords
        .hasher()
        .hash(&restguard_core::secret::SecretString::new(password))
        .await
        .map_err(|e| PageError::Store(StoreError::unavailable(e)))?;
    let at = OffsetDateTime::now_utc();
    if !state.stores.users.set_password(user.id, &hash, at).await? {
        return Err(PageError::NotFound);
    }
    forget_user(state, user.id).await;
    state.sessions.end_all(user.id, None).await?;
    state
        .stores
        .users
        .user_by_id(user.id)
        .await?
        .ok_or(PageError::NotFound)
}

/// Drops the user from every credential cache: this process's at once, the other instances'
/// through the invalidation bus (when `redis.url` is set).
pub(crate) async fn forget_user(state: &AppState, id: restguard_core::UserId) {
    state.tokens.forget_user(id);
    state.sessions.forget_user(id);
    state.jwt.forget_user(id);
    state.oauth.forget_user(id);
    crate::scaleout::announce(
        state.invalidations.as_ref(),
        restguard_core::invalidation::Invalidation::User(id),
    )
    .await;
}

/// The OAuth2 applications a user has authorized, for templates.
pub(crate) async fn authorized_apps_json(
    state: &AppState,
    user_id: restguard_core::UserId,
) -> Result<Value, PageError> {
    let apps = state
        .stores
        .oauth
        .authorized_applications(user_id, OffsetDateTime::now_utc())
        .await?;
    Ok(Value::Array(
        apps.iter()
            .map(|a| {
                json!({
                    "id": a.application.id.0,
                    "client_id": a.application.client_id,
                    "name": a.application.name,
                    "scopes": a.scopes,
                    "last_issued": when(a.last_issued),
                })
            })
            .collect(),
    ))
}

/// Revokes what a user granted an application (CONTRACT §6): its tokens and its unexpired
/// codes end at once, on every instance. `false` when there was nothing to revoke.
pub(crate) async fn revoke_application_grant(
    state: &AppState,
    user_id: restguard_core::UserId,
    application: restguard_core::store::ApplicationId,
) -> Result<bool, PageError> {
    Ok(state
        .oauth
        .revoke_authorization(user_id, application)
        .await?
        > 0)
}

/// `GET /static/restguard.css`.
pub(crate) async fn stylesheet() -> Response {
    static_asset("text/css; charset=utf-8", STYLESHEET)
}

/// `GET /static/account.js`.
pub(crate) async fn account_js() -> Response {
    static_asset("text/javascript; charset=utf-8", ACCOUNT_JS)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_same_site_path() {
        assert_eq!(safe_next(Some("/o/authorize/?a=1")), "/o/authorize/?a=1");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "evil",
            "",
            "/\nx",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(Some(bad)), "/account/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/account/");
    }

    #[test]
    fn templates_compile_and_escape() {
        let mut context = Map::new();
        context.insert("title".into(), json!("t"));
        context.insert("next".into(), json!("/account/"));
        context.insert("username".into(), json!("<script>alert(1)</script>"));
        context.insert("csrf_token".into(), json!("x"));
        context.insert("field_errors".into(), json!({}));
        let out = render_template("login.html", &Value::Object(context)).expect("renders");
        assert!(out.contains("&lt;script&gt;"));
        assert!(!out.contains("<script>alert"));
        for (name, _) in TEMPLATES {
            assert!(environment()
                .as_ref()
                .expect("env")
                .get_template(name)
                .is_ok());
        }
    }
}
