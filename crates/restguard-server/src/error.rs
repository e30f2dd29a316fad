//! The server's error type, mapped in one place to the contract's responses.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};
use restguard_axum::Rejected;
use restguard_core::{error::json_response, AuthError, Denial, Rejection, Scheme, StoreError};
use serde_json::{json, Map, Value};

/// Everything a server endpoint can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Field errors, DRF serializer style (`{"field": ["message"]}`).
    #[error("validation failed")]
    Validation(Map<String, Value>),
    /// The body is not valid JSON (or has duplicate members).
    #[error("parse error: {0}")]
    Parse(String),
    /// The body is larger than `server.body_limit`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A content type no parser handles.
    #[error("unsupported media type {0}")]
    UnsupportedMediaType(String),
    /// No such resource.
    #[error("not found")]
    NotFound,
    /// The path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed(Method),
    /// Refused credentials or token on an open JWT endpoint (obtain / refresh / verify /
    /// blacklist): 401 with the scheme's challenge (counted as a `jwt` failure).
    #[error("unauthorized: {}", .rejection.detail)]
    Unauthorized {
        /// Body `detail` and `code`.
        rejection: Box<Rejection>,
        /// `WWW-Authenticate`.
        challenge: HeaderValue,
    },
    /// Too many attempts (login throttle).
    #[error("throttled")]
    Throttled(std::time::Duration),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Django's CSRF check refused the request: 403 `{"detail":"CSRF Failed: …","code":"csrf_failed"}`.
    #[error("{0}")]
    Csrf(String),
}

impl ApiError {
    /// `{"non_field_errors": [message]}`.
    pub(crate) fn non_field(message: &str) -> Self {
        let mut map = Map::new();
        map.insert("non_field_errors".into(), json!([message]));
        Self::Validation(map)
    }
}

fn detail(status: StatusCode, detail: &str, code: &str) -> Response {
    json_response(status, &json!({"detail": detail, "code": code})).map(axum::body::Body::from)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Validation(map) => {
                json_response(StatusCode::BAD_REQUEST, &Value::Object(map)).map(Into::into)
            }
            ApiError::Parse(msg) => detail(
                StatusCode::BAD_REQUEST,
                &format!("JSON parse error - {msg}"),
                "parse_error",
            ),
            ApiError::PayloadTooLarge => detail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body is too large.",
                "payload_too_large",
            ),
            ApiError::UnsupportedMediaType(media) => detail(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Unsupported media type \"{media}\" in request."),
                "unsupported_media_type",
            ),
            ApiError::NotFound => detail(StatusCode::NOT_FOUND, "Not found.", "not_found"),
            ApiError::MethodNotAllowed(method) => detail(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("Method \"{method}\" not allowed."),
                "method_not_allowed",
            ),
            ApiError::Unauthorized {
                rejection,
                challenge,
            } => Rejected(
                Denial::new(AuthError::AuthenticationFailed(rejection), Some(challenge))
                    .with_scheme(Scheme::Jwt),
            )
            .into_response(),
            ApiError::Throttled(wait) => Rejected(
                Denial::new(AuthError::Throttled { wait }, None).with_throttle_scope("login"),
            )
            .into_response(),
            ApiError::Csrf(message) => detail(StatusCode::FORBIDDEN, &message, "csrf_failed"),
            ApiError::Store(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store failure");
                let mut response =
                    Rejected(Denial::new(AuthError::Unavailable(e), None)).into_response();
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                response
            }
        }
    }
}

/// Handler result.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
