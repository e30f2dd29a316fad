//! `GET /auth/verify`: forward-auth for reverse proxies (CONTRACT §7) — nginx `auth_request`,
//! Traefik `forwardAuth`, Envoy `ext_authz` (HTTP).
//!
//! The proxy sends the original request's headers (credentials, cookies) plus the original
//! URI (`X-Forwarded-Uri` or `X-Original-URI`) and method (`X-Forwarded-Method` or
//! `X-Original-Method`; default `GET`). Envoy's HTTP `ext_authz` sends neither: it repeats
//! the original method and path under its `path_prefix`, so with `path_prefix: /auth/verify`
//! the check `POST /auth/verify/reports/1?x=1` describes `POST /reports/1?x=1`.
//! restguard evaluates the policy configured for that
//! path and method — authenticators, permissions, throttles — and answers 200 with
//! `X-Auth-User`, `X-Auth-User-Id`, `X-Auth-Scheme` (and `X-Auth-Scopes`) for the upstream,
//! or the contract's 401/403/429/503 with its body and headers.

use std::sync::Arc;

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
    Extension, Json,
};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use restguard_axum::{client_ip, Rejected};
use restguard_core::{Denial, PolicyTable, RequestContext};
use serde_json::json;

/// `X-Auth-User`: the username.
pub(crate) const X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
/// `X-Auth-User-Id`: the user's id.
pub(crate) const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
/// `X-Auth-Scheme`: `basic`, `token`, `session`, `jwt` or `oauth2`.
pub(crate) const X_AUTH_SCHEME: HeaderName = HeaderName::from_static("x-auth-scheme");
/// `X-Auth-Scopes`: space-separated scopes (OAuth2).
pub(crate) const X_AUTH_SCOPES: HeaderName = HeaderName::from_static("x-auth-scopes");
/// `X-Auth-Client-Id`: the OAuth2 client of a client-credentials token (no user).
pub(crate) const X_AUTH_CLIENT_ID: HeaderName = HeaderName::from_static("x-auth-client-id");

fn header<'a>(request: &'a Request, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| request.headers().get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn bad_header(detail: &str) -> Response {
    restguard_core::error::json_response(
        StatusCode::BAD_REQUEST,
        &json!({"detail": detail, "code": "invalid_header"}),
    )
    .map(axum::body::Body::from)
}

/// The path of the forward-auth endpoint; Envoy's `path_prefix`.
pub(crate) const VERIFY_PATH: &str = "/auth/verify";

/// The original URI in Envoy's shape: the request's own path below [`VERIFY_PATH`], with its
/// query.
fn envoy_original(uri: &Uri) -> Option<&str> {
    let path_and_query = uri.path_and_query()?.as_str();
    let rest = path_and_query.strip_prefix(VERIFY_PATH)?;
    rest.starts_with('/').then_some(rest)
}

/// The forward-auth decision for the request the proxy describes.
pub(crate) async fn verify(
    Extension(table): Extension<Arc<PolicyTable>>,
    request: Request,
) -> Response {
    let described = header(&request, &["x-forwarded-uri", "x-original-uri"]);
    let envoy = described.is_none();
    let Some(original) = described.or_else(|| envoy_original(request.uri())) else {
        return bad_header("Missing X-Forwarded-Uri or X-Original-URI header.");
    };
    let Ok(uri) = original.parse::<Uri>() else {
        return bad_header("Invalid X-Forwarded-Uri or X-Original-URI header.");
    };
    let method = match header(&request, &["x-forwarded-method", "x-original-method"]) {
        None if envoy => request.method().clone(),
        None => Method::GET,
        Some(m) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => return bad_header("Invalid X-Forwarded-Method header."),
        },
    };
    let (mut parts, _body) = request.into_parts();
    let ip = client_ip(&parts);
    // The request as the upstream would see it: its method and URI, the proxy's copy of its
    // headers.
    parts.method = method;
    parts.uri = uri;
    let policy = table.policy_for(&parts.method, parts.uri.path());
    let outcome = match RequestContext::new(&parts, ip) {
        Ok(context) => policy.evaluate(&context).await,
        Err(error) => Err(Denial::new(error, policy.challenge())),
    };
    match outcome {
        Err(denial) => Rejected(denial).into_response(),
        Ok(identity) => {
            let mut response = Json(json!({})).into_response();
            if let Some(identity) = identity {
                let headers = response.headers_mut();
                if let Some(user) = identity.user() {
                    if let Ok(name) = HeaderValue::from_bytes(user.username.as_bytes()) {
                        headers.insert(X_AUTH_USER, name);
                    }
                    headers.insert(X_AUTH_USER_ID, HeaderValue::from(user.id.0));
                }
                if let Some(client_id) = identity.client_id() {
                    if let Ok(value) = HeaderValue::from_str(client_id) {
                        headers.insert(X_AUTH_CLIENT_ID, value);
                    }
                }
                headers.insert(
                    X_AUTH_SCHEME,
                    HeaderValue::from_static(identity.auth.scheme.as_str()),
                );
                if let Some(scopes) = &identity.auth.scopes {
                    if let Ok(value) = HeaderValue::from_str(&scopes.join(" ")) {
                        headers.insert(X_AUTH_SCOPES, value);
                    }
                }
            }
            response
        }
    }
}
