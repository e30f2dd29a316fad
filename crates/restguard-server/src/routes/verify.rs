//! `GET /auth/verify`: forward-auth for reverse proxies (CONTRACT §7) — nginx `auth_request`,
//! Traefik `forwardAuth`, Envoy `ext_authz` (HTTP).
//!
//! The proxy sends the original request's headers (credentials, cookies) plus its URI and
//! method in **one configured pair** of headers (`forward_auth.uri_header`, default
//! `X-Forwarded-Uri`; `forward_auth.method_header`, default `X-Forwarded-Method`). nginx's
//! `auth_request` passes the client's own headers on to the check, so anything else that
//! could describe the request is refused rather than believed: either header of the pair
//! missing or repeated, or another spelling (`X-Forwarded-Uri`, `X-Original-URI`,
//! `X-Forwarded-Method`, `X-Original-Method`) present → 400 `invalid_header`. The proxy's
//! `proxy_set_header` replaces what a client wrote under the configured names.
//!
//! Envoy's HTTP `ext_authz` repeats the original method and path under its `path_prefix`, so
//! with `path_prefix: /auth/verify` the check `POST /auth/verify/reports/1?x=1` describes
//! `POST /reports/1?x=1` (and `/auth/verify/` describes `/`); there the request line is the
//! only description, and any of the headers above is refused.
//!
//! The path is normalised ([`crate::original_path`]) and looked up in the forward-auth table
//! — the `[[route]]` entries and the `[auth]` default, never restguard's own endpoints — and
//! that policy is evaluated: authenticators, permissions, throttles. The answer is 200 with
//! `X-Auth-User`, `X-Auth-User-Id`, `X-Auth-Scheme` (and `X-Auth-Scopes`) for the upstream, or
//! the contract's 401/403/429/503 with its body and headers.

use std::sync::Arc;

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
    Extension, Json,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use restguard_axum::{client_ip, Rejected};
use restguard_core::{Denial, PolicyTable, RequestContext};
use serde_json::json;

use crate::{config::ForwardAuthConfig, original_path};

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

fn bad_header(detail: &str) -> Response {
    restguard_core::error::json_response(
        StatusCode::BAD_REQUEST,
        &json!({"detail": detail, "code": "invalid_header"}),
    )
    .map(axum::body::Body::from)
}

/// The path of the forward-auth endpoint; Envoy's `path_prefix`.
pub(crate) const VERIFY_PATH: &str = "/auth/verify";

/// Every spelling proxies use for the original URI and method, and how messages name it.
const SPELLINGS: [(HeaderName, &str); 4] = [
    (
        HeaderName::from_static("x-forwarded-uri"),
        "X-Forwarded-Uri",
    ),
    (HeaderName::from_static("x-original-uri"), "X-Original-URI"),
    (
        HeaderName::from_static("x-forwarded-method"),
        "X-Forwarded-Method",
    ),
    (
        HeaderName::from_static("x-original-method"),
        "X-Original-Method",
    ),
];

/// Headers the check reads for what they are, which therefore cannot describe the request.
const RESERVED: [HeaderName; 5] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
    http::header::HOST,
    HeaderName::from_static("x-forwarded-for"),
];

/// One header of the configured pair: its name and its spelling in messages.
#[derive(Debug, Clone)]
struct Describing {
    name: HeaderName,
    spelling: String,
}

impl Describing {
    fn from_config(spelling: &str, key: &str) -> Result<Self, String> {
        let name = HeaderName::from_bytes(spelling.trim().as_bytes())
            .map_err(|_| format!("{key}: {spelling:?} is not a header name"))?;
        if RESERVED.contains(&name) {
            return Err(format!(
                "{key}: {spelling:?} carries something else; choose a header of its own (X-Forwarded-Uri, X-Original-URI, …)"
            ));
        }
        Ok(Self {
            name,
            spelling: spelling.trim().to_owned(),
        })
    }

    /// The header's one value: missing, repeated, unreadable or empty is a 400 detail.
    fn single<'a>(&self, headers: &'a HeaderMap) -> Result<&'a str, String> {
        let mut values = headers.get_all(&self.name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(if headers.contains_key(&self.name) {
                format!("Multiple {} headers.", self.spelling)
            } else {
                format!("Missing {} header.", self.spelling)
            });
        };
        value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("Invalid {} header.", self.spelling))
    }
}

/// The forward-auth endpoint's configuration: its policy table and the header pair.
#[derive(Debug)]
pub(crate) struct ForwardAuth {
    /// The `[[route]]` entries and the `[auth]` default, matched on normalised paths.
    table: PolicyTable,
    uri: Describing,
    method: Describing,
}

/// The request a check describes.
struct Described {
    method: Method,
    uri: Uri,
    /// The normalised path the table is matched on.
    path: String,
}

impl ForwardAuth {
    /// `table` must be the forward-auth table (never the server's own); a bad `[forward_auth]`
    /// is an error naming the key.
    pub(crate) fn new(table: PolicyTable, config: &ForwardAuthConfig) -> Result<Self, String> {
        let uri = Describing::from_config(&config.uri_header, "forward_auth.uri_header")?;
        let method = Describing::from_config(&config.method_header, "forward_auth.method_header")?;
        if uri.name == method.name {
            return Err(
                "forward_auth.method_header: must differ from forward_auth.uri_header".into(),
            );
        }
        Ok(Self { table, uri, method })
    }

    /// What the request describes, or the 400 `detail` saying why it describes nothing
    /// trustworthy.
    fn described(&self, request: &Request) -> Result<Described, String> {
        let headers = request.headers();
        let envoy = envoy_original(request.uri());
        // Only the configured pair may describe the request, and in Envoy's form nothing
        // but the request line: any other description may have been written by the client.
        let configured = |name: &HeaderName| {
            envoy.is_none() && (*name == self.uri.name || *name == self.method.name)
        };
        let unexpected = SPELLINGS
            .iter()
            .map(|(name, spelling)| (name.clone(), (*spelling).to_owned()))
            .chain([
                (self.uri.name.clone(), self.uri.spelling.clone()),
                (self.method.name.clone(), self.method.spelling.clone()),
            ])
            .find(|(name, _)| !configured(name) && headers.contains_key(name));
        if let Some((_, spelling)) = unexpected {
            return Err(format!("Unexpected {spelling} header."));
        }
        let (target, method) = match envoy {
            Some(target) => (target, request.method().clone()),
            None => {
                let target = self.uri.single(headers)?;
                let method = self.method.single(headers)?;
                let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("Invalid {} header.", self.method.spelling))?;
                (target, method)
            }
        };
        let path = original_path::normalize(target)
            .map_err(|reason| format!("Invalid original path: {reason}."))?;
        let uri = target
            .parse::<Uri>()
            .map_err(|_| format!("Invalid {} header.", self.uri.spelling))?;
        Ok(Described { method, uri, path })
    }
}

/// The original URI in Envoy's shape: the request's own path below [`VERIFY_PATH`], with its
/// query (`/auth/verify/` is the site root).
fn envoy_original(uri: &Uri) -> Option<&str> {
    let path_and_query = uri.path_and_query()?.as_str();
    let rest = path_and_query.strip_prefix(VERIFY_PATH)?;
    rest.starts_with('/').then_some(rest)
}

/// The forward-auth decision for the request the proxy describes.
pub(crate) async fn verify(
    Extension(forward_auth): Extension<Arc<ForwardAuth>>,
    request: Request,
) -> Response {
    let described = match forward_auth.described(&request) {
        Ok(described) => described,
        Err(detail) => return bad_header(&detail),
    };
    let (mut parts, _body) = request.into_parts();
    let ip = client_ip(&parts);
    // The request as the upstream would see it: its method and URI, the proxy's copy of its
    // headers.
    parts.method = described.method;
    parts.uri = described.uri;
    let policy = forward_auth
        .table
        .policy_for(&parts.method, &described.path);
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

#[cfg(test)]
mod tests {
    use restguard_core::Policy;

    use super::*;

    fn pair(uri: &str, method: &str) -> Result<ForwardAuth, String> {
        let config = ForwardAuthConfig {
            uri_header: uri.into(),
            method_header: method.into(),
        };
        ForwardAuth::new(PolicyTable::new(Policy::default()), &config)
    }

    #[test]
    fn the_header_pair_is_checked_at_startup() {
        let default = ForwardAuthConfig::default();
        let ok = pair(&default.uri_header, &default.method_header).expect("the defaults");
        assert_eq!(ok.uri.spelling, "X-Forwarded-Uri");
        assert_eq!(ok.method.name, "x-forwarded-method");
        assert!(pair("X-Original-URI", "X-Original-Method").is_ok());
        assert_eq!(
            pair("X-Forwarded-Uri", "x-forwarded-uri").err().as_deref(),
            Some("forward_auth.method_header: must differ from forward_auth.uri_header")
        );
        assert_eq!(
            pair("X Uri", "X-Forwarded-Method").err().as_deref(),
            Some("forward_auth.uri_header: \"X Uri\" is not a header name")
        );
        for reserved in ["Authorization", "cookie", "Host", "X-Forwarded-For"] {
            let error = pair("X-Forwarded-Uri", reserved).err().unwrap_or_default();
            assert!(error.starts_with("forward_auth.method_header: "), "{error}");
        }
    }
}
