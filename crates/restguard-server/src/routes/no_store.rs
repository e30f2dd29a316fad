//! Responses that carry a credential may not be kept by any cache (CONTRACT §10).

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue};

/// A response with `Cache-Control: no-store` and, for HTTP/1.0 caches, `Pragma: no-cache`
/// (what RFC 6749 §5.1 asks of token responses, and DOT sends): for every answer that holds
/// a token, key or secret.
pub(crate) struct NoStore<T>(pub(crate) T);

impl<T: IntoResponse> IntoResponse for NoStore<T> {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}
