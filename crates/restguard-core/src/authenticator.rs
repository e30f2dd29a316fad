//! The [`Authenticator`] trait: one authentication scheme.

use std::net::IpAddr;

use async_trait::async_trait;
use http::{request::Parts, HeaderValue};

use crate::{error::AuthError, identity::Identity, identity::Scheme, store::StoreError};

/// What an authenticator sees of a request: the head (never the body) and the client IP.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// Method, URI, headers and extensions.
    pub parts: &'a Parts,
    /// The client's IP address, when known (socket address or trusted proxy header).
    pub client_ip: Option<IpAddr>,
    /// The single `Authorization` header, already checked not to be repeated.
    pub authorization: Option<&'a HeaderValue>,
}

impl<'a> RequestContext<'a> {
    /// Builds a context, rejecting repeated `Authorization` headers (CONTRACT §10).
    ///
    /// ```
    /// use restguard_core::RequestContext;
    /// let (parts, _) = http::Request::builder()
    ///     .header("authorization", "Token a")
    ///     .header("authorization", "Token b")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// assert!(RequestContext::new(&parts, None).is_err());
    /// ```
    pub fn new(parts: &'a Parts, client_ip: Option<IpAddr>) -> Result<Self, AuthError> {
        let mut values = parts.headers.get_all(http::header::AUTHORIZATION).iter();
        let authorization = values.next();
        if values.next().is_some() {
            return Err(AuthError::InvalidHeader {
                detail: "Multiple Authorization headers.",
            });
        }
        Ok(Self {
            parts,
            client_ip,
            authorization,
        })
    }

    /// The credentials after a matching keyword, without allocating: `None` when the header
    /// is absent or has another keyword (the authenticator abstains), otherwise how many
    /// whitespace-separated words follow it (DRF's `len(auth)` checks).
    ///
    /// ```
    /// use restguard_core::{authenticator::Credentials, RequestContext};
    /// let (parts, _) = http::Request::builder()
    ///     .header("authorization", "token abc")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// let ctx = RequestContext::new(&parts, None).unwrap();
    /// assert_eq!(ctx.credentials(&["Token"], true), Some(Credentials::One(b"abc")));
    /// assert_eq!(ctx.credentials(&["Bearer"], true), None);
    /// ```
    pub fn credentials<K: AsRef<str>>(
        &self,
        keywords: &[K],
        case_insensitive: bool,
    ) -> Option<Credentials<'a>> {
        let value = self.authorization?.as_bytes();
        let (keyword, rest) = next_word(value)?;
        let matches = keywords.iter().any(|k| {
            let k = k.as_ref().as_bytes();
            if case_insensitive {
                k.eq_ignore_ascii_case(keyword)
            } else {
                k == keyword
            }
        });
        if !matches {
            return None;
        }
        Some(match next_word(rest) {
            None => Credentials::Missing,
            Some((one, rest)) => match next_word(rest) {
                None => Credentials::One(one),
                Some(_) => Credentials::Several(one),
            },
        })
    }
}

/// The first word of `s` and what follows it; `None` when `s` is blank. Words are separated
/// by spaces and tabs, the only blanks a header value can hold. The end of a word is found
/// with `memchr` (SIMD): on a JWT the scan runs over a few hundred bytes on every request.
fn next_word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = s.iter().position(|b| *b != b' ' && *b != b'\t')?;
    let s = &s[start..];
    let end = memchr::memchr2(b' ', b'\t', s).unwrap_or(s.len());
    Some(s.split_at(end))
}

/// What follows the keyword of an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// The keyword alone.
    Missing,
    /// Exactly one word.
    One(&'a [u8]),
    /// More than one word (the first one given).
    Several(&'a [u8]),
}

/// One authenticator's answer (DRF's three outcomes).
#[derive(Debug)]
pub enum Outcome {
    /// Not this scheme's credentials (no header, other keyword): try the next authenticator.
    Abstain,
    /// The credentials are valid.
    Authenticated(Identity),
    /// This scheme's credentials, but invalid: the request fails.
    Failed(AuthError),
}

/// An authentication scheme.
///
/// Implementations parse only what they own and must never panic on request input.
/// Storage failures are returned as `Err` (they become 503), distinct from bad
/// credentials (`Ok(Outcome::Failed)`).
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Which scheme this is.
    fn scheme(&self) -> Scheme;

    /// The `WWW-Authenticate` challenge used when this is the route's first authenticator
    /// and the request is not authenticated; `None` makes such responses 403 (DRF's rule).
    fn challenge(&self) -> Option<HeaderValue>;

    /// Looks at the request and answers.
    async fn authenticate(&self, request: &RequestContext<'_>) -> Result<Outcome, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(value: &str) -> Option<Credentials<'static>> {
        let value: &'static str = Box::leak(value.to_owned().into_boxed_str());
        let (parts, _) = http::Request::builder()
            .header("authorization", value)
            .body(())
            .unwrap()
            .into_parts();
        let parts: &'static Parts = Box::leak(Box::new(parts));
        RequestContext::new(parts, None)
            .unwrap()
            .credentials(&["Token", "Bearer"], false)
    }

    #[test]
    fn words_split_on_runs_of_spaces_and_tabs() {
        assert_eq!(words("Token abc"), Some(Credentials::One(b"abc")));
        assert_eq!(words("  Token \t abc\t "), Some(Credentials::One(b"abc")));
        assert_eq!(words("Token"), Some(Credentials::Missing));
        assert_eq!(words("Token   \t"), Some(Credentials::Missing));
        assert_eq!(words("Token a b"), Some(Credentials::Several(b"a")));
        assert_eq!(words("Token a\tb c"), Some(Credentials::Several(b"a")));
        assert_eq!(words("token abc"), None, "keywords are case-sensitive here");
        assert_eq!(words("Tokenabc"), None);
        assert_eq!(words("Basic abc"), None);
        assert_eq!(words(" "), None);
        let jwt = format!("Bearer {}", "x.".repeat(200) + "y");
        assert!(matches!(words(&jwt), Some(Credentials::One(t)) if t.len() == 401));
    }
}
