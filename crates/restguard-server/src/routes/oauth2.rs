//! The OAuth2 / OpenID Connect provider's endpoints under `/o/` (CONTRACT §6), on top of
//! [`restguard_oauth2::Provider`].

use axum::{
    body::Bytes,
    extract::{OriginalUri, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use restguard_axum::RequestIp;
use restguard_oauth2::{
    form::Params, provider::AuthorizeRequest, AuthorizeError, ErrorCode, OAuthError, Provider,
};
use serde_json::{json, Map, Value};

use super::pages::{redirect, CheckedForm, PageError, PageResult, Visitor};
use crate::app::AppState;

fn to_axum(response: http::Response<bytes::Bytes>) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The request body, up to the configured limit.
async fn body_bytes(
    state: &AppState,
    request: Request,
) -> Result<(http::request::Parts, Bytes), Response> {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, state.body_limit).await {
        Ok(bytes) => Ok((parts, bytes)),
        Err(_) => {
            let mut e = OAuthError::invalid_request("The request body is too large.");
            e.status = StatusCode::PAYLOAD_TOO_LARGE;
            Err(to_axum(e.into_response()))
        }
    }
}

/// `POST /o/token/`.
pub(crate) async fn token(
    State(state): State<AppState>,
    RequestIp(ip): RequestIp,
    request: Request,
) -> Response {
    let (parts, body) = match body_bytes(&state, request).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    to_axum(
        state
            .oauth
            .token_endpoint(
                parts.headers.get(header::CONTENT_TYPE),
                parts.headers.get(header::AUTHORIZATION),
                &body,
                ip,
            )
            .await,
    )
}

/// `POST /o/revoke_token/`.
pub(crate) async fn revoke(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = match body_bytes(&state, request).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    to_axum(
        state
            .oauth
            .revoke_endpoint(
                parts.headers.get(header::CONTENT_TYPE),
                parts.headers.get(header::AUTHORIZATION),
                &body,
            )
            .await,
    )
}

/// `POST /o/introspect/`.
pub(crate) async fn introspect(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = match body_bytes(&state, request).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    to_axum(
        state
            .oauth
            .introspect_endpoint(
                parts.headers.get(header::CONTENT_TYPE),
                parts.headers.get(header::AUTHORIZATION),
                &body,
            )
            .await,
    )
}

/// `GET|POST /o/userinfo/`.
pub(crate) async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    to_axum(
        state
            .oauth
            .userinfo_endpoint(headers.get(header::AUTHORIZATION))
            .await,
    )
}

/// Discovery and RFC 8414 metadata.
pub(crate) async fn metadata(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.oauth.metadata()).into_response();
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        http::HeaderValue::from_static("*"),
    );
    response
}

/// `GET /o/.well-known/jwks.json`.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.oauth.jwks()).into_response();
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        http::HeaderValue::from_static("*"),
    );
    response
}

fn authorize_failure(e: AuthorizeError) -> PageResult {
    match e {
        AuthorizeError::Page(message) => Err(PageError::BadRequest(message)),
        AuthorizeError::Redirect(url) => Ok(redirect(StatusCode::FOUND, &url, Vec::new())),
    }
}

fn query_pairs(uri: &http::Uri) -> Result<Vec<(String, String)>, PageError> {
    Params::parse_pairs(uri.query().unwrap_or_default().as_bytes())
        .map_err(|_| PageError::BadRequest("The authorization request is malformed.".into()))
}

/// `/o/authorize/?…` to come back to after signing in (without `prompt=login` / `max_age`).
fn authorize_path(pairs: &[(String, String)], drop_prompt_login: bool) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        // After the fresh sign-in, `max_age` is met by construction (and `max_age=0` would
        // otherwise send the browser round forever).
        if drop_prompt_login && k == "max_age" {
            continue;
        }
        if drop_prompt_login && k == "prompt" {
            let rest: Vec<&str> = v
                .split(' ')
                .filter(|p| !p.is_empty() && *p != "login")
                .collect();
            if !rest.is_empty() {
                query.append_pair(k, &rest.join(" "));
            }
            continue;
        }
        query.append_pair(k, v);
    }
    format!("/o/authorize/?{}", query.finish())
}

fn login_redirect(next: &str) -> Response {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    redirect(
        StatusCode::FOUND,
        &format!("/api-auth/login/?{query}"),
        Vec::new(),
    )
}

fn consent_page(state: &AppState, visitor: Visitor, request: &AuthorizeRequest) -> Response {
    let mut context = Map::new();
    context.insert("app_name".into(), json!(request.application.name));
    context.insert("scopes".into(), json!(request.scopes));
    context.insert("redirect_uri".into(), json!(request.redirect_uri));
    let params: Vec<Value> = request
        .params
        .iter()
        .filter(|(k, _)| k != "csrfmiddlewaretoken" && k != "allow")
        .map(|(k, v)| json!([k, v]))
        .collect();
    context.insert("params".into(), Value::Array(params));
    let mut response = visitor.render(
        state,
        StatusCode::OK,
        "oauth_authorize.html",
        "Authorize",
        context,
    );
    allow_form_redirect(&mut response, &request.redirect_uri);
    response
}

/// The page's form POSTs here and is redirected to the client: CSP `form-action` covers that
/// redirect, so the client's origin joins 'self' on this page.
fn allow_form_redirect(response: &mut Response, target: &str) {
    if let Some(source) = csp_source(target) {
        let csp = format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self' {source}; frame-ancestors 'none'; base-uri 'none'"
        );
        if let Ok(value) = http::HeaderValue::from_str(&csp) {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, value);
        }
    }
}

/// A CSP source expression for a redirect URI: its origin, or `scheme:` for private-use
/// schemes (native apps).
fn csp_source(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    let source = match url.host_str() {
        Some(_) => url.origin().ascii_serialization(),
        None => format!("{}:", url.scheme()),
    };
    (source != "null"
        && source
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '\'' | '"')))
    .then_some(source)
}

async fn approve(provider: &Provider, request: &AuthorizeRequest, visitor: &Visitor) -> PageResult {
    let Some(session) = &visitor.session else {
        return Err(PageError::Forbidden);
    };
    match provider
        .issue_code(request, &session.user, session.record.created)
        .await
    {
        Ok(url) => Ok(redirect(StatusCode::FOUND, &url, Vec::new())),
        Err(e) => match e.cause {
            Some(store) => Err(PageError::Store(store)),
            None => Ok(redirect(
                StatusCode::FOUND,
                &provider.error_redirect(request, &e),
                Vec::new(),
            )),
        },
    }
}

/// `GET /o/authorize/`: validate, then sign-in redirect, consent page, or a code.
pub(crate) async fn authorize_form(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> PageResult {
    let pairs = query_pairs(&uri)?;
    let request = match state.oauth.validate_authorize(pairs.clone()).await {
        Ok(r) => r,
        Err(e) => return authorize_failure(e),
    };
    let visitor = Visitor::load(&state, &headers).await?;
    let prompt = |p: &str| request.prompt.iter().any(|x| x == p);
    // OIDC max_age: a sign-in older than that counts as none (prompt=login).
    let stale = visitor.session.as_ref().is_some_and(|session| {
        Provider::needs_fresh_login(
            &request,
            session.record.created,
            time::OffsetDateTime::now_utc(),
        )
    });
    if visitor.session.is_none() || prompt("login") || stale {
        if prompt("none") {
            return Ok(redirect(
                StatusCode::FOUND,
                &state.oauth.authorize_error(
                    &request,
                    ErrorCode::LoginRequired,
                    "The user is not signed in.",
                ),
                Vec::new(),
            ));
        }
        return Ok(login_redirect(&authorize_path(&pairs, true)));
    }
    if request.application.skip_authorization && !prompt("consent") {
        return approve(&state.oauth, &request, &visitor).await;
    }
    if prompt("none") {
        return Ok(redirect(
            StatusCode::FOUND,
            &state.oauth.authorize_error(
                &request,
                ErrorCode::ConsentRequired,
                "The user must approve this client.",
            ),
            Vec::new(),
        ));
    }
    Ok(consent_page(&state, visitor, &request))
}

/// `POST /o/authorize/`: the consent form (CSRF-checked); `allow` present approves.
pub(crate) async fn authorize_submit(
    State(state): State<AppState>,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    let mut pairs = Vec::new();
    let mut allow = false;
    for (k, v) in &form.data.0 {
        let Value::String(v) = v else {
            return Err(PageError::BadRequest("The form is malformed.".into()));
        };
        match k.as_str() {
            "csrfmiddlewaretoken" => {}
            "allow" => allow = true,
            _ => pairs.push((k.clone(), v.clone())),
        }
    }
    let authorize = match state.oauth.validate_authorize(pairs.clone()).await {
        Ok(r) => r,
        Err(e) => return authorize_failure(e),
    };
    if form.visitor.session.is_none() {
        return Ok(login_redirect(&authorize_path(&pairs, true)));
    }
    if !allow {
        return Ok(redirect(
            StatusCode::FOUND,
            &state.oauth.authorize_error(
                &authorize,
                ErrorCode::AccessDenied,
                "The user denied the request.",
            ),
            Vec::new(),
        ));
    }
    approve(&state.oauth, &authorize, &form.visitor).await
}

/// RP-initiated logout's refusals (a 400 page each, never a redirect).
const LOGOUT_MALFORMED: &str = "The logout request is malformed.";
const LOGOUT_BAD_HINT: &str = "The id_token_hint is not valid.";
const LOGOUT_CLIENT_MISMATCH: &str = "The client_id does not match the id_token_hint.";
const LOGOUT_UNREGISTERED: &str = "The post_logout_redirect_uri is not registered for this client.";
/// Longest `state` echoed back to the client (as at the authorize endpoint).
const LOGOUT_STATE_MAX: usize = 2048;

/// The client an RP-initiated logout names, and where it may send the browser afterwards.
struct LogoutTarget {
    app_name: Option<String>,
    redirect: Option<String>,
}

/// Checks a logout request (OIDC RP-Initiated Logout 1.0; CONTRACT §6): an `id_token_hint`
/// must verify (signature, issuer; expiry ignored) before it names the client; a `client_id`
/// beside it must be one of its audiences; a `post_logout_redirect_uri` must be one of that
/// client's registered post-logout URIs, compared exactly. Anything else is a 400 page.
async fn post_logout_target(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<LogoutTarget, PageError> {
    let bad = |message: &str| PageError::BadRequest(message.to_owned());
    let params = Params::from_pairs(pairs.to_vec()).map_err(|_| bad(LOGOUT_MALFORMED))?;
    let hint = match params.get("id_token_hint") {
        None => None,
        Some(hint) => match state.oauth.verify_id_token_hint(hint) {
            Ok(verified) => Some(verified),
            Err(reason) => {
                tracing::info!(%reason, "logout: id_token_hint refused");
                return Err(bad(LOGOUT_BAD_HINT));
            }
        },
    };
    let client_id = match (params.get("client_id"), &hint) {
        (Some(id), Some(hint)) if !hint.audiences.iter().any(|a| a == id) => {
            return Err(bad(LOGOUT_CLIENT_MISMATCH))
        }
        (Some(id), _) => Some(id.to_owned()),
        // A hint for several clients names none of them.
        (None, Some(hint)) => match hint.audiences.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        },
        (None, None) => None,
    };
    let app = match client_id {
        Some(id) if id.len() <= restguard_oauth2::provider::MAX_TOKEN_LEN => {
            state.oauth.store().application_by_client_id(&id).await?
        }
        _ => None,
    };
    let logout_state = params.get("state");
    if logout_state.is_some_and(|s| s.len() > LOGOUT_STATE_MAX) {
        return Err(bad(LOGOUT_MALFORMED));
    }
    let redirect = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let registered = app
                .as_ref()
                .is_some_and(|a| a.post_logout_redirect_uris.iter().any(|r| r == uri));
            let mut url = match url::Url::parse(uri) {
                Ok(url) if registered => url,
                _ => return Err(bad(LOGOUT_UNREGISTERED)),
            };
            if let Some(logout_state) = logout_state {
                url.query_pairs_mut().append_pair("state", logout_state);
            }
            Some(url.to_string())
        }
    };
    Ok(LogoutTarget {
        app_name: app.map(|a| a.name),
        redirect,
    })
}

/// `GET /o/logout/`: RP-initiated logout asks for confirmation (a GET never signs out).
pub(crate) async fn logout_form(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> PageResult {
    let pairs = query_pairs(&uri)?;
    let LogoutTarget {
        app_name,
        redirect: target,
    } = post_logout_target(&state, &pairs).await?;
    let visitor = Visitor::load(&state, &headers).await?;
    if visitor.session.is_none() {
        if let Some(target) = target {
            return Ok(redirect(StatusCode::FOUND, &target, Vec::new()));
        }
    }
    let mut context = Map::new();
    context.insert("app_name".into(), json!(app_name));
    let params: Vec<Value> = pairs.iter().map(|(k, v)| json!([k, v])).collect();
    context.insert("params".into(), Value::Array(params));
    let mut response = visitor.render(
        &state,
        StatusCode::OK,
        "oauth_logout.html",
        "Sign out",
        context,
    );
    if let Some(target) = target {
        allow_form_redirect(&mut response, &target);
    }
    Ok(response)
}

/// `POST /o/logout/`: checks the request again, ends the session, then back to the client's
/// registered post-logout URI if one was given.
pub(crate) async fn logout_submit(State(state): State<AppState>, request: Request) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    let mut pairs = Vec::new();
    for (k, v) in &form.data.0 {
        if let (false, Value::String(v)) = (k == "csrfmiddlewaretoken", v) {
            pairs.push((k.clone(), v.clone()));
        }
    }
    // Checked again (the form's hidden fields are the client's), before anything ends.
    let target = post_logout_target(&state, &pairs).await?.redirect;
    if let Some(key) = state.sessions.cookie(&form.parts.headers) {
        state
            .sessions
            .end_key(&key)
            .await
            .map_err(PageError::from)?;
    }
    let clear = vec![state.sessions.clear_cookie_header()];
    Ok(redirect(
        StatusCode::FOUND,
        target.as_deref().unwrap_or("/api-auth/login/"),
        clear,
    ))
}
