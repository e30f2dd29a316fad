//! RFC 6749 errors (`{"error", "error_description"?}`) and their one mapping to responses.

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use restguard_core::StoreError;
use serde_json::{json, Value};

/// The `error` codes of RFC 6749 §4.1.2.1 / §5.2, RFC 6750 §3.1 and OIDC Core §3.1.2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Missing, repeated or malformed parameter.
    InvalidRequest,
    /// Client authentication failed (401).
    InvalidClient,
    /// The code, refresh token or resource owner credentials are invalid.
    InvalidGrant,
    /// This client may not use this grant or response type.
    UnauthorizedClient,
    /// The server does not offer this grant type.
    UnsupportedGrantType,
    /// The scope is unknown, or wider than allowed.
    InvalidScope,
    /// The resource owner denied the request.
    AccessDenied,
    /// The server does not offer this response type.
    UnsupportedResponseType,
    /// `prompt=none` and nobody is signed in.
    LoginRequired,
    /// `prompt=none` and the user would have to consent.
    ConsentRequired,
    /// A bearer token is invalid (401, RFC 6750).
    InvalidToken,
    /// A bearer token lacks a scope (403, RFC 6750).
    InsufficientScope,
    /// Something broke on our side.
    ServerError,
    /// Try again later (storage down, or too many failed password attempts).
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An OAuth2 endpoint error.
#[derive(Debug, thiserror::Error)]
#[error("{}", code.as_str())]
pub struct OAuthError {
    /// The `error` code.
    pub code: ErrorCode,
    /// `error_description`, if any (never carries a secret).
    pub description: Option<Cow<'static, str>>,
    /// HTTP status.
    pub status: StatusCode,
    /// `Retry-After` in seconds.
    pub retry_after: Option<u64>,
    /// The storage failure behind a `server_error` / `temporarily_unavailable` (logged only).
    #[source]
    pub cause: Option<StoreError>,
}

impl OAuthError {
    /// An error with its RFC status (400, or 401 for `invalid_client` / `invalid_token`, 403
    /// for `insufficient_scope`).
    pub fn new(code: ErrorCode) -> Self {
        let status = match code {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            code,
            description: None,
            status,
            retry_after: None,
            cause: None,
        }
    }

    /// Adds `error_description`.
    pub fn describe(mut self, description: impl Into<Cow<'static, str>>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// `invalid_request` with a description.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest).describe(description)
    }

    /// `invalid_grant` with a description.
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant).describe(description)
    }

    /// `invalid_client` (the same answer for unknown clients and wrong secrets).
    pub fn invalid_client() -> Self {
        Self::new(ErrorCode::InvalidClient).describe("Client authentication failed.")
    }

    /// Too many failed password attempts: 429 with `Retry-After`.
    pub fn throttled(wait: std::time::Duration) -> Self {
        let secs = restguard_core::error::retry_after_seconds(wait);
        let mut e = Self::new(ErrorCode::TemporarilyUnavailable).describe(format!(
            "Too many failed attempts. Try again in {secs} seconds."
        ));
        e.status = StatusCode::TOO_MANY_REQUESTS;
        e.retry_after = Some(secs);
        e
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        match &self.description {
            Some(d) => json!({"error": self.code.as_str(), "error_description": d}),
            None => json!({"error": self.code.as_str()}),
        }
    }

    /// The response: status, JSON body, `Cache-Control: no-store`, `Pragma: no-cache`,
    /// `WWW-Authenticate` for 401/403, `Retry-After` when set.
    pub fn into_response(self) -> Response<Bytes> {
        if let Some(cause) = &self.cause {
            tracing::error!(error = %cause, source = ?std::error::Error::source(cause), "oauth2 endpoint store failure");
        }
        let mut response = restguard_core::error::json_response(self.status, &self.body());
        no_store(response.headers_mut());
        let challenge = match self.code {
            ErrorCode::InvalidClient => Some(HeaderValue::from_static("Basic realm=\"oauth2\"")),
            ErrorCode::InvalidToken => Some(HeaderValue::from_static(
                "Bearer realm=\"api\", error=\"invalid_token\"",
            )),
            ErrorCode::InsufficientScope => Some(HeaderValue::from_static(
                "Bearer realm=\"api\", error=\"insufficient_scope\"",
            )),
            _ => None,
        };
        if let Some(c) = challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        let mut err = if e.is_unavailable() {
            let mut err = Self::new(ErrorCode::TemporarilyUnavailable)
                .describe("Service temporarily unavailable.");
            err.retry_after = Some(1);
            err
        } else {
            Self::new(ErrorCode::ServerError)
        };
        err.cause = Some(e);
        err
    }
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A JSON response with the no-store headers.
pub fn json_no_store(status: StatusCode, body: &Value) -> Response<Bytes> {
    let mut response = restguard_core::error::json_response(status, body);
    no_store(response.headers_mut());
    response
}
