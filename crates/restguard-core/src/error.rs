//! Authentication errors and their one mapping to the wire (CONTRACT §1).

use std::{borrow::Cow, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::{identity::Scheme, store::StoreError};

/// Why a credential was refused: DRF's `AuthenticationFailed` with its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// DRF's human message.
    pub detail: Cow<'static, str>,
    /// Stable machine code.
    pub code: Cow<'static, str>,
    /// Extra body members (Simple JWT's `messages`).
    pub extra: Option<Map<String, Value>>,
    /// A challenge replacing the authenticator's usual one when it is the route's first
    /// (OAuth2 adds `error="invalid_token"`).
    pub challenge: Option<HeaderValue>,
    /// Always 403, whatever the route's challenge (DRF raises `PermissionDenied` for CSRF
    /// failures).
    pub forbidden: bool,
}

impl Rejection {
    /// A rejection with `code` `authentication_failed`.
    pub fn new(detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            detail: detail.into(),
            code: Cow::Borrowed("authentication_failed"),
            extra: None,
            challenge: None,
            forbidden: false,
        }
    }

    /// Makes the rejection a 403 regardless of the route's challenge (CSRF failures).
    pub fn forbidden(mut self) -> Self {
        self.forbidden = true;
        self
    }

    /// Replaces the code.
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = code.into();
        self
    }

    /// Adds body members beside `detail` and `code`.
    pub fn with_extra(mut self, extra: Map<String, Value>) -> Self {
        self.extra = Some(extra);
        self
    }

    /// Replaces the challenge when this authenticator is the route's first.
    pub fn with_challenge(mut self, challenge: HeaderValue) -> Self {
        self.challenge = Some(challenge);
        self
    }
}

/// Everything the chain can refuse a request for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials and a permission needs a user.
    #[error("authentication credentials were not provided")]
    NotAuthenticated,
    /// Credentials present but invalid.
    #[error("authentication failed: {}", .0.detail)]
    AuthenticationFailed(Box<Rejection>),
    /// Authenticated, but a permission said no.
    #[error("permission denied")]
    PermissionDenied {
        /// A permission's own message, if it has one.
        detail: Option<Cow<'static, str>>,
    },
    /// A throttle said wait.
    #[error("throttled for {wait:?}")]
    Throttled {
        /// How long until a request would be allowed.
        wait: Duration,
    },
    /// A malformed header (for example, more than one `Authorization`).
    #[error("invalid header: {detail}")]
    InvalidHeader {
        /// DRF-style message.
        detail: &'static str,
    },
    /// A store the request needs is down.
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
}

impl AuthError {
    /// `AuthenticationFailed` with DRF's message and code `authentication_failed`.
    pub fn failed(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::AuthenticationFailed(Box::new(Rejection::new(detail)))
    }
}

impl From<Rejection> for AuthError {
    fn from(r: Rejection) -> Self {
        Self::AuthenticationFailed(Box::new(r))
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e)
    }
}

/// A refused request, ready to become a response: the error plus the route's challenge.
#[derive(Debug)]
#[non_exhaustive]
pub struct Denial {
    /// What went wrong.
    pub error: AuthError,
    /// `WWW-Authenticate` of the route's first authenticator (`None`: 403 instead of 401).
    pub challenge: Option<HeaderValue>,
    /// The scheme whose authenticator refused the credentials, when one did.
    pub scheme: Option<Scheme>,
    /// The scope of the throttle that refused the request (`anon`, `user`, a scope name,
    /// `login`), when one did.
    pub throttle_scope: Option<Cow<'static, str>>,
}

/// What a refusal was about, for counting (metrics): which stage said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenialKind {
    /// No credentials, or credentials that were refused (401/403).
    Authentication,
    /// Authenticated, but a permission said no.
    Permission,
    /// A throttle said wait.
    Throttle,
    /// A malformed header.
    InvalidHeader,
    /// A store failed.
    Unavailable,
}

/// Why a request was refused, attached by [`Denial::into_response`] to the response's
/// extensions so that outer middleware (metrics) can count refusals without reading bodies.
///
/// ```
/// use restguard_core::{error::{DenialKind, DenialReason}, AuthError, Denial, Scheme};
/// let denial = Denial::new(AuthError::failed("Invalid token."), None).with_scheme(Scheme::Token);
/// let response = denial.into_response();
/// let reason = response.extensions().get::<DenialReason>().unwrap();
/// assert_eq!(reason.kind, DenialKind::Authentication);
/// assert_eq!(reason.code, "authentication_failed");
/// assert_eq!(reason.scheme, Some(Scheme::Token));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DenialReason {
    /// Which stage refused.
    pub kind: DenialKind,
    /// The body's `code` (`not_authenticated`, `token_not_valid`, `throttled`, …).
    pub code: Cow<'static, str>,
    /// The scheme whose authenticator refused the credentials, when one did.
    pub scheme: Option<Scheme>,
    /// The refusing throttle's scope, when one did.
    pub throttle_scope: Option<Cow<'static, str>>,
}

impl Denial {
    /// Pairs an error with the challenge that applies.
    pub fn new(error: AuthError, challenge: Option<HeaderValue>) -> Self {
        Self {
            error,
            challenge,
            scheme: None,
            throttle_scope: None,
        }
    }

    /// Names the scheme whose authenticator refused the credentials.
    pub fn with_scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = Some(scheme);
        self
    }

    /// Names the scope of the throttle that refused the request.
    pub fn with_throttle_scope(mut self, scope: impl Into<Cow<'static, str>>) -> Self {
        self.throttle_scope = Some(scope.into());
        self
    }

    /// What this refusal was about (without building the body).
    pub fn reason(&self) -> DenialReason {
        let (kind, code): (DenialKind, Cow<'static, str>) = match &self.error {
            AuthError::NotAuthenticated => (
                DenialKind::Authentication,
                Cow::Borrowed("not_authenticated"),
            ),
            AuthError::AuthenticationFailed(r) => (DenialKind::Authentication, r.code.clone()),
            AuthError::PermissionDenied { .. } => {
                (DenialKind::Permission, Cow::Borrowed("permission_denied"))
            }
            AuthError::Throttled { .. } => (DenialKind::Throttle, Cow::Borrowed("throttled")),
            AuthError::InvalidHeader { .. } => {
                (DenialKind::InvalidHeader, Cow::Borrowed("invalid_header"))
            }
            AuthError::Unavailable(e) if e.is_unavailable() => (
                DenialKind::Unavailable,
                Cow::Borrowed("service_unavailable"),
            ),
            AuthError::Unavailable(_) => (DenialKind::Unavailable, Cow::Borrowed("error")),
        };
        DenialReason {
            kind,
            code,
            scheme: self.scheme,
            throttle_scope: self.throttle_scope.clone(),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        match &self.error {
            AuthError::AuthenticationFailed(r) if r.forbidden => StatusCode::FORBIDDEN,
            AuthError::NotAuthenticated | AuthError::AuthenticationFailed(_) => {
                if self.challenge.is_some() {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::FORBIDDEN
                }
            }
            AuthError::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            AuthError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::InvalidHeader { .. } => StatusCode::BAD_REQUEST,
            AuthError::Unavailable(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Unavailable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body (`detail`, `code`, and any extra members).
    pub fn body(&self) -> Value {
        let (detail, code): (Cow<'_, str>, &str) = match &self.error {
            AuthError::NotAuthenticated => (
                "Authentication credentials were not provided.".into(),
                "not_authenticated",
            ),
            AuthError::AuthenticationFailed(r) => {
                let mut body = json!({ "detail": r.detail, "code": r.code });
                if let (Some(extra), Value::Object(map)) = (&r.extra, &mut body) {
                    map.extend(extra.clone());
                }
                return body;
            }
            AuthError::PermissionDenied { detail } => (
                detail.clone().unwrap_or(Cow::Borrowed(
                    "You do not have permission to perform this action.",
                )),
                "permission_denied",
            ),
            AuthError::Throttled { wait } => (throttled_message(*wait).into(), "throttled"),
            AuthError::InvalidHeader { detail } => ((*detail).into(), "invalid_header"),
            AuthError::Unavailable(e) if e.is_unavailable() => (
                "Service temporarily unavailable.".into(),
                "service_unavailable",
            ),
            AuthError::Unavailable(_) => ("A server error occurred.".into(), "error"),
        };
        json!({ "detail": detail, "code": code })
    }

    /// The complete response: status, `WWW-Authenticate` / `Retry-After`, JSON body.
    ///
    /// ```
    /// use restguard_core::{AuthError, Denial};
    /// let challenge = http::HeaderValue::from_static("Token");
    /// let response = Denial::new(AuthError::NotAuthenticated, Some(challenge)).into_response();
    /// assert_eq!(response.status(), 401);
    /// assert_eq!(response.headers()["www-authenticate"], "Token");
    /// ```
    pub fn into_response(self) -> Response<Bytes> {
        let status = self.status();
        let body = self.body();
        let mut response = json_response(status, &body);
        response.extensions_mut().insert(self.reason());
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            if let Some(challenge) = self.challenge {
                headers.insert(header::WWW_AUTHENTICATE, challenge);
            }
        }
        let retry_after = match &self.error {
            AuthError::Throttled { wait } => Some(retry_after_seconds(*wait)),
            AuthError::Unavailable(e) if e.is_unavailable() => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Whole seconds to wait, rounded up, at least 1 (DRF rounds up too).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// DRF's throttled message.
fn throttled_message(wait: Duration) -> String {
    let secs = retry_after_seconds(wait);
    let unit = if secs == 1 { "second" } else { "seconds" };
    format!("Request was throttled. Expected available in {secs} {unit}.")
}

/// A JSON response with `Content-Type: application/json`.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_authenticated_without_challenge_is_403() {
        let d = Denial::new(AuthError::NotAuthenticated, None);
        assert_eq!(d.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            d.body(),
            json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"})
        );
    }

    #[test]
    fn throttled_message_is_drfs() {
        let r = Denial::new(
            AuthError::Throttled {
                wait: Duration::from_millis(200),
            },
            None,
        )
        .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        let body: Value = serde_json::from_slice(r.body()).unwrap_or_default();
        assert_eq!(
            body["detail"],
            "Request was throttled. Expected available in 1 second."
        );
        let d = Denial::new(
            AuthError::Throttled {
                wait: Duration::from_secs(59),
            },
            None,
        );
        assert_eq!(
            d.body()["detail"],
            "Request was throttled. Expected available in 59 seconds."
        );
    }

    #[test]
    fn forbidden_rejections_are_403_even_with_a_challenge() {
        let d = Denial::new(
            Rejection::new("CSRF Failed: CSRF token missing.")
                .with_code("csrf_failed")
                .forbidden()
                .into(),
            Some(HeaderValue::from_static("Token")),
        );
        assert_eq!(d.status(), StatusCode::FORBIDDEN);
        let r = d.into_response();
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn extra_members_join_the_body() {
        let mut extra = Map::new();
        extra.insert("messages".into(), json!([]));
        let d = Denial::new(
            Rejection::new("Given token not valid for any token type")
                .with_code("token_not_valid")
                .with_extra(extra)
                .into(),
            Some(HeaderValue::from_static("Bearer realm=\"api\"")),
        );
        assert_eq!(d.status(), 401);
        assert_eq!(
            d.body(),
            json!({"detail": "Given token not valid for any token type", "code": "token_not_valid", "messages": []})
        );
    }
}
