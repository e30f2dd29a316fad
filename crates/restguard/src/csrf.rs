//! Django-compatible CSRF protection (`django/middleware/csrf.py` of Django 5.2), on `http`
//! types, with no I/O.
//!
//! * A **secret** is 32 characters of `[a-zA-Z0-9]`; the `csrftoken` cookie holds it as is
//!   (Django ≥ 4.1). Cookies of older Django versions hold a 64-character *masked* token; they
//!   are still accepted and unmasked ([`parse_cookie`]).
//! * A **token** is the secret masked with a fresh random mask ([`mask`]): 32 mask characters
//!   followed by the cipher, each character `(index(secret) + index(mask)) mod 62`. This is what
//!   `GET /api/csrf/` returns as `csrfToken` and what pages put in `csrfmiddlewaretoken`. A fresh
//!   mask per response defeats BREACH-style compression attacks; any masked form of the secret
//!   (and the bare secret itself) is accepted back.
//! * [`CsrfPolicy::check`] is Django's `CsrfViewMiddleware.process_view`, step for step and with
//!   Django's reason strings: safe methods pass; an `Origin` header must be the request's own
//!   origin or a trusted one; without `Origin`, an HTTPS request needs a secure `Referer` from
//!   the same host or a trusted one; then the cookie must be set and well-formed, and the token
//!   from the form field `csrfmiddlewaretoken` (POST only) or the `X-CSRFToken` header must
//!   match it (compared in constant time).
//!
//! Header values are read as Latin-1, as WSGI and ASGI Django do, so a non-ASCII byte counts as
//! one (invalid) character, exactly as in Django.
//!
//! # Example: the session scheme's check and its 403
//!
//! ```
//! use http::{Method, Request};
//! use restguard::csrf::{CsrfFailure, CsrfPolicy, CsrfSecret, CSRF_FAILURE_CODE};
//! use restguard_core::{error::Rejection, AuthError, Denial};
//!
//! let policy = CsrfPolicy::new(["https://*.example.com"]);
//!
//! // `GET /api/csrf/`: reuse the cookie's secret (or make one), answer a fresh masked token.
//! let secret = CsrfSecret::generate();
//! let csrf_token = secret.mask(); // {"csrfToken": csrf_token}
//! let set_cookie = policy.set_cookie_header(&secret, true); // Set-Cookie: csrftoken=<secret>; …
//! assert!(set_cookie.to_str().is_ok_and(|v| v.starts_with("csrftoken=")));
//!
//! // A later AJAX POST from https://app.example.com.
//! let request = Request::builder()
//!     .method(Method::POST)
//!     .uri("/api/things/")
//!     .header("origin", "https://app.example.com")
//!     .header("cookie", format!("sessionid=abc; csrftoken={}", secret.as_str()))
//!     .header("x-csrftoken", &csrf_token)
//!     .body(())
//!     .expect("valid request");
//! let (parts, ()) = request.into_parts();
//! assert_eq!(policy.check(&parts, None, true, "api.example.com"), Ok(()));
//!
//! // The same request without the token: 403 {"detail":"CSRF Failed: CSRF token missing.","code":"csrf_failed"}.
//! let mut parts = parts;
//! parts.headers.remove("x-csrftoken");
//! let failure: CsrfFailure = policy
//!     .check(&parts, None, true, "api.example.com")
//!     .expect_err("no token");
//! assert_eq!(failure.reason(), "CSRF token missing.");
//! let rejection = Rejection::new(failure.detail()).with_code(CSRF_FAILURE_CODE);
//! let response = Denial::new(AuthError::from(rejection), None).into_response();
//! assert_eq!(response.status(), 403);
//! assert_eq!(
//!     response.body().as_ref(),
//!     br#"{"detail":"CSRF Failed: CSRF token missing.","code":"csrf_failed"}"#
//! );
//! ```

use std::{borrow::Cow, fmt, net::Ipv6Addr};

use http::{header, request::Parts, HeaderMap, HeaderValue, Method};
use rand::{rngs::OsRng, RngCore};
use subtle::ConstantTimeEq;

/// Length of a secret (Django's `CSRF_SECRET_LENGTH`).
pub const CSRF_SECRET_LENGTH: usize = 32;
/// Length of a masked token (Django's `CSRF_TOKEN_LENGTH`).
pub const CSRF_TOKEN_LENGTH: usize = 2 * CSRF_SECRET_LENGTH;
/// The 62 characters of secrets and tokens, in Django's order (`ascii_letters + digits`); the
/// cipher works on indices into this string.
pub const CSRF_ALLOWED_CHARS: &str =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// The form field carrying the token in a POSTed HTML form.
pub const CSRF_FORM_FIELD: &str = "csrfmiddlewaretoken";
/// The default request header carrying the token (Django's `HTTP_X_CSRFTOKEN`).
pub const DEFAULT_HEADER_NAME: &str = "X-CSRFToken";
/// The default cookie holding the secret (Django's `CSRF_COOKIE_NAME`).
pub const DEFAULT_COOKIE_NAME: &str = "csrftoken";
/// Lifetime of the CSRF cookie in seconds: one year, Django's `CSRF_COOKIE_AGE`.
pub const CSRF_COOKIE_AGE: u64 = 60 * 60 * 24 * 7 * 52;
/// The `code` of a CSRF failure's JSON body (CONTRACT §1).
pub const CSRF_FAILURE_CODE: &str = "csrf_failed";

const CHARS: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Index of `c` in [`CSRF_ALLOWED_CHARS`].
fn char_index(c: u8) -> Option<u8> {
    match c {
        b'a'..=b'z' => Some(c - b'a'),
        b'A'..=b'Z' => Some(c - b'A' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        _ => None,
    }
}

/// Index of an allowed character (callers have checked the format).
fn idx(c: u8) -> usize {
    usize::from(char_index(c).unwrap_or(0))
}

/// 32 random characters of [`CSRF_ALLOWED_CHARS`] from the OS RNG, uniformly (Django's
/// `_get_new_csrf_string`): bytes below 248 = 4 × 62 are reduced mod 62, others discarded.
fn new_csrf_string() -> [u8; CSRF_SECRET_LENGTH] {
    const LIMIT: u8 = 4 * 62;
    let mut out = [0u8; CSRF_SECRET_LENGTH];
    let mut filled = 0;
    let mut buf = [0u8; 48];
    while filled < CSRF_SECRET_LENGTH {
        OsRng.fill_bytes(&mut buf);
        for &b in buf.iter().filter(|&&b| b < LIMIT) {
            if filled == CSRF_SECRET_LENGTH {
                break;
            }
            out[filled] = CHARS[usize::from(b % 62)];
            filled += 1;
        }
    }
    out
}

/// Why a cookie value or token is not a well-formed secret or token (Django's
/// `InvalidTokenFormat`). `Display` is Django's phrase without a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTokenFormat {
    /// Neither 32 nor 64 characters long.
    #[error("has incorrect length")]
    IncorrectLength,
    /// A character outside `[a-zA-Z0-9]`.
    #[error("has invalid characters")]
    InvalidCharacters,
}

/// Django's `_check_token_format`: 32 or 64 characters (counted as Unicode scalar values,
/// like Python's `len`), all in `[a-zA-Z0-9]`. Length is checked first.
///
/// ```
/// use restguard::csrf::{check_token_format, InvalidTokenFormat};
/// assert_eq!(check_token_format(&"a".repeat(32)), Ok(()));
/// assert_eq!(check_token_format("abc"), Err(InvalidTokenFormat::IncorrectLength));
/// assert_eq!(check_token_format(&"-".repeat(64)), Err(InvalidTokenFormat::InvalidCharacters));
/// ```
pub fn check_token_format(token: &str) -> Result<(), InvalidTokenFormat> {
    let len = token.chars().count();
    if len != CSRF_TOKEN_LENGTH && len != CSRF_SECRET_LENGTH {
        return Err(InvalidTokenFormat::IncorrectLength);
    }
    if !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InvalidTokenFormat::InvalidCharacters);
    }
    Ok(())
}

/// A CSRF secret: 32 characters of `[a-zA-Z0-9]`, the value of the `csrftoken` cookie.
/// `Debug` does not show it; equality is constant-time.
#[derive(Clone)]
pub struct CsrfSecret([u8; CSRF_SECRET_LENGTH]);

impl fmt::Debug for CsrfSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfSecret([redacted])")
    }
}

impl PartialEq for CsrfSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for CsrfSecret {}

impl CsrfSecret {
    /// A new random secret from the OS RNG (≈ 190 bits).
    pub fn generate() -> Self {
        Self(new_csrf_string())
    }

    /// A secret from its 32-character form (an unmasked cookie value).
    ///
    /// ```
    /// use restguard::csrf::CsrfSecret;
    /// assert!(CsrfSecret::from_secret(&"x".repeat(32)).is_ok());
    /// assert!(CsrfSecret::from_secret(&"x".repeat(64)).is_err()); // a masked token: use `unmask`
    /// ```
    pub fn from_secret(secret: &str) -> Result<Self, InvalidTokenFormat> {
        check_token_format(secret)?;
        let bytes: [u8; CSRF_SECRET_LENGTH] = secret
            .as_bytes()
            .try_into()
            .map_err(|_| InvalidTokenFormat::IncorrectLength)?;
        Ok(Self(bytes))
    }

    /// The secret itself: the value to put in the `csrftoken` cookie. Never put it in a page
    /// or a JSON body — those get [`CsrfSecret::mask`].
    pub fn as_str(&self) -> &str {
        // Always ASCII alphanumerics, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// A fresh masked token for this secret; see [`mask`].
    pub fn mask(&self) -> String {
        mask(self)
    }

    /// Whether `token` (masked or not) matches this secret; see [`does_token_match`].
    pub fn matches(&self, token: &str) -> bool {
        does_token_match(token, self)
    }
}

fn mask_bytes(secret: &[u8; CSRF_SECRET_LENGTH], mask: &[u8; CSRF_SECRET_LENGTH]) -> String {
    let mut out = String::with_capacity(CSRF_TOKEN_LENGTH);
    out.extend(mask.iter().map(|&m| char::from(m)));
    out.extend(
        secret
            .iter()
            .zip(mask)
            .map(|(&s, &m)| char::from(CHARS[(idx(s) + idx(m)) % CHARS.len()])),
    );
    out
}

/// A fresh 64-character masked token for `secret` (Django's `_mask_cipher_secret`, what
/// `get_token()` returns): a new random 32-character mask, then per character
/// `CHARS[(index(secret) + index(mask)) mod 62]`.
///
/// ```
/// use restguard::csrf::{mask, unmask, CsrfSecret};
/// let secret = CsrfSecret::generate();
/// let (a, b) = (mask(&secret), mask(&secret));
/// assert_eq!(a.len(), 64);
/// assert_ne!(a, b); // a new mask each time…
/// assert_eq!(unmask(&a), Ok(secret.clone())); // …for the same secret
/// assert_eq!(unmask(&b), Ok(secret));
/// ```
pub fn mask(secret: &CsrfSecret) -> String {
    mask_bytes(&secret.0, &new_csrf_string())
}

/// [`mask`] with a given mask instead of a random one: deterministic, for compatibility tests.
/// Production code wants [`mask`]. `mask` must be 32 characters of `[a-zA-Z0-9]`.
///
/// ```
/// use restguard::csrf::{mask_with, CsrfSecret};
/// let secret = CsrfSecret::from_secret(&"b".repeat(32)).expect("valid");
/// let token = mask_with(&secret, &"9".repeat(32)).expect("valid mask");
/// // index('b') + index('9') = 1 + 61 = 62 ≡ 0 → 'a'
/// assert_eq!(token, format!("{}{}", "9".repeat(32), "a".repeat(32)));
/// ```
pub fn mask_with(secret: &CsrfSecret, mask: &str) -> Result<String, InvalidTokenFormat> {
    let mask = CsrfSecret::from_secret(mask)?;
    Ok(mask_bytes(&secret.0, &mask.0))
}

/// The secret inside a 64-character masked token (Django's `_unmask_cipher_token`).
///
/// ```
/// use restguard::csrf::{unmask, InvalidTokenFormat};
/// assert_eq!(unmask(&"a".repeat(32)), Err(InvalidTokenFormat::IncorrectLength));
/// let secret = unmask(&"a".repeat(64)).expect("well-formed");
/// assert_eq!(secret.as_str(), "a".repeat(32));
/// ```
pub fn unmask(token: &str) -> Result<CsrfSecret, InvalidTokenFormat> {
    check_token_format(token)?;
    let bytes = token.as_bytes();
    if bytes.len() != CSRF_TOKEN_LENGTH {
        return Err(InvalidTokenFormat::IncorrectLength);
    }
    let (mask, cipher) = bytes.split_at(CSRF_SECRET_LENGTH);
    let mut out = [0u8; CSRF_SECRET_LENGTH];
    for ((o, &c), &m) in out.iter_mut().zip(cipher).zip(mask) {
        *o = CHARS[(idx(c) + CHARS.len() - idx(m)) % CHARS.len()];
    }
    Ok(CsrfSecret(out))
}

/// The secret held by a `csrftoken` cookie value (Django's `_get_secret`): a 32-character
/// secret as is, or a 64-character masked token of Django < 4.1, unmasked.
///
/// ```
/// use restguard::csrf::{parse_cookie, CsrfSecret, InvalidTokenFormat};
/// let secret = CsrfSecret::generate();
/// assert_eq!(parse_cookie(secret.as_str()), Ok(secret.clone()));
/// assert_eq!(parse_cookie(&secret.mask()), Ok(secret)); // legacy masked cookie
/// assert_eq!(parse_cookie("short"), Err(InvalidTokenFormat::IncorrectLength));
/// ```
pub fn parse_cookie(value: &str) -> Result<CsrfSecret, InvalidTokenFormat> {
    check_token_format(value)?;
    if value.len() == CSRF_TOKEN_LENGTH {
        unmask(value)
    } else {
        CsrfSecret::from_secret(value)
    }
}

/// Whether a request token matches the secret (Django's `_does_token_match`): a 64-character
/// token is unmasked first, a 32-character one is compared as is; the comparison is
/// constant-time. A malformed token never matches.
pub fn does_token_match(token: &str, secret: &CsrfSecret) -> bool {
    if check_token_format(token).is_err() {
        return false;
    }
    let candidate = if token.len() == CSRF_TOKEN_LENGTH {
        match unmask(token) {
            Ok(s) => s,
            Err(_) => return false,
        }
    } else {
        match CsrfSecret::from_secret(token) {
            Ok(s) => s,
            Err(_) => return false,
        }
    };
    candidate == *secret
}

/// Whether a method needs no CSRF check: `GET`, `HEAD`, `OPTIONS`, `TRACE` (RFC 9110's safe
/// methods, as Django lists them). Every other method, custom ones included, is checked.
pub fn is_safe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Where the request's token came from, as Django words it in reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The `csrfmiddlewaretoken` form field; shown as `POST`.
    Post,
    /// A header, with its name as Django prints it (`X-Csrftoken`); shown as
    /// `the 'X-Csrftoken' HTTP header`.
    Header(String),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Post => f.write_str("POST"),
            Self::Header(name) => write!(f, "the {} HTTP header", python_repr(name)),
        }
    }
}

/// Why a request failed the CSRF check. `Display` is exactly Django's reason; the API answers
/// 403 `{"detail":"CSRF Failed: <reason>","code":"csrf_failed"}` ([`CsrfFailure::detail`],
/// [`CSRF_FAILURE_CODE`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfFailure {
    /// The `Origin` header is neither the request's own origin nor trusted.
    #[error("Origin checking failed - {origin} does not match any trusted origins.")]
    BadOrigin {
        /// The `Origin` header as sent.
        origin: String,
    },
    /// HTTPS request with neither `Origin` nor `Referer`.
    #[error("Referer checking failed - no Referer.")]
    NoReferer,
    /// The `Referer` is not an absolute URL with a host.
    #[error("Referer checking failed - Referer is malformed.")]
    MalformedReferer,
    /// HTTPS request with a non-`https` `Referer`.
    #[error("Referer checking failed - Referer is insecure while host is secure.")]
    InsecureReferer,
    /// The `Referer`'s host is neither the request's host nor trusted.
    #[error("Referer checking failed - {referer} does not match any trusted origins.")]
    BadReferer {
        /// The `Referer` as Python's `urlsplit(…).geturl()` normalises it.
        referer: String,
    },
    /// No CSRF cookie.
    #[error("CSRF cookie not set.")]
    NoCookie,
    /// The CSRF cookie is malformed.
    #[error("CSRF cookie {0}.")]
    BadCookie(InvalidTokenFormat),
    /// Neither the form field nor the header carries a token.
    #[error("CSRF token missing.")]
    TokenMissing,
    /// The request token is malformed.
    #[error("CSRF token from {token_source} {reason}.")]
    BadToken {
        /// Form field or header.
        token_source: TokenSource,
        /// What is wrong with it.
        reason: InvalidTokenFormat,
    },
    /// The request token does not match the cookie's secret.
    #[error("CSRF token from {token_source} incorrect.")]
    TokenIncorrect {
        /// Form field or header.
        token_source: TokenSource,
    },
}

impl CsrfFailure {
    /// Django's reason string, e.g. `CSRF cookie not set.`.
    pub fn reason(&self) -> String {
        self.to_string()
    }

    /// The API's `detail`: `CSRF Failed: <reason>` (DRF's `SessionAuthentication`).
    pub fn detail(&self) -> String {
        format!("CSRF Failed: {self}")
    }
}

/// Django's CSRF settings and its `process_view` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrfPolicy {
    /// Django's `CSRF_TRUSTED_ORIGINS`: origins such as `https://admin.example.com`, or
    /// `https://*.example.com` for the domain and all its subdomains (scheme must match, the
    /// port is part of the host). The request's own origin is always trusted. For the HTTPS
    /// `Referer` check only the host part of each entry counts, as in Django.
    pub trusted_origins: Vec<String>,
    /// The header carrying the token (Django's `CSRF_HEADER_NAME`); matched
    /// case-insensitively. Default `X-CSRFToken`.
    pub header_name: String,
    /// The cookie holding the secret (Django's `CSRF_COOKIE_NAME`). Default `csrftoken`.
    pub cookie_name: String,
    /// Treat every request as HTTPS, whatever `is_https` says (a deployment whose public URL
    /// is `https://` behind a TLS-terminating proxy): the `Referer` rules then always apply
    /// and the request's own origin is `https://<host>`.
    pub secure_request: bool,
}

impl Default for CsrfPolicy {
    fn default() -> Self {
        Self {
            trusted_origins: Vec::new(),
            header_name: DEFAULT_HEADER_NAME.to_owned(),
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
            secure_request: false,
        }
    }
}

impl CsrfPolicy {
    /// Django's defaults with these trusted origins.
    pub fn new<I, S>(trusted_origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            trusted_origins: trusted_origins.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Checks an unsafe request the way Django's `CsrfViewMiddleware.process_view` does (and
    /// DRF's `SessionAuthentication.enforce_csrf` runs it):
    ///
    /// 1. `GET`, `HEAD`, `OPTIONS`, `TRACE` pass.
    /// 2. With an `Origin` header: it must equal `http(s)://<host>` or a trusted origin.
    /// 3. Otherwise, on HTTPS: the `Referer` must be an `https` URL whose host is `host` or
    ///    a trusted origin's host.
    /// 4. The CSRF cookie must be present and well-formed.
    /// 5. The token — `form_token` on `POST` when non-empty, else the `X-CSRFToken` header —
    ///    must be well-formed and match the cookie's secret.
    ///
    /// * `form_token`: the `csrfmiddlewaretoken` value of an
    ///   `application/x-www-form-urlencoded` or `multipart/form-data` body (the last one if
    ///   repeated, like Django's `request.POST.get`); `None` for other bodies. It is ignored
    ///   for methods other than `POST`, as in Django.
    /// * `is_https`: whether the request came over TLS (Django's `request.is_secure()`).
    /// * `host`: the validated `Host` of the request including any port (Django's
    ///   `request.get_host()`); empty when the host is not allowed, which makes the
    ///   same-origin comparisons fail as Django's `DisallowedHost` does.
    pub fn check(
        &self,
        parts: &Parts,
        form_token: Option<&str>,
        is_https: bool,
        host: &str,
    ) -> Result<(), CsrfFailure> {
        if is_safe_method(&parts.method) {
            return Ok(());
        }
        let secure = is_https || self.secure_request;
        if let Some(origin) = header_latin1(&parts.headers, header::ORIGIN.as_str()) {
            if !self.origin_verified(&origin, secure, host) {
                return Err(CsrfFailure::BadOrigin { origin });
            }
        } else if secure {
            self.check_referer(&parts.headers, host)?;
        }
        self.check_token(parts, form_token)
    }

    /// The secret of the request's CSRF cookie: `Ok(None)` without one, an error when it is
    /// malformed (Django's `_get_secret`).
    pub fn request_secret(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<CsrfSecret>, InvalidTokenFormat> {
        match cookie_value(headers, &self.cookie_name) {
            None => Ok(None),
            Some(value) => parse_cookie(&value).map(Some),
        }
    }

    /// The secret to use for this request and whether the cookie must be (re)set: the
    /// cookie's secret when it is well-formed, else a new one (Django's `process_request` +
    /// `get_token`). Answer `secret.mask()` as the token; set the cookie with
    /// [`CsrfPolicy::set_cookie_header`] when the flag is true (Django resets it on every
    /// `get_token` call to renew its expiry; doing so is always harmless). A legacy masked
    /// cookie counts as needing the reset, so that it is replaced by the bare secret.
    pub fn secret_or_generate(&self, headers: &HeaderMap) -> (CsrfSecret, bool) {
        match cookie_value(headers, &self.cookie_name) {
            Some(value) => match parse_cookie(&value) {
                Ok(secret) => (secret, value.len() != CSRF_SECRET_LENGTH),
                Err(_) => (CsrfSecret::generate(), true),
            },
            None => (CsrfSecret::generate(), true),
        }
    }

    /// A `Set-Cookie` value for the CSRF cookie as Django sets it: the bare secret,
    /// `Max-Age` one year, `Path=/`, `SameSite=Lax`, readable by JavaScript (no `HttpOnly`),
    /// and `Secure` when `secure`.
    ///
    /// ```
    /// use restguard::csrf::{CsrfPolicy, CsrfSecret};
    /// let secret = CsrfSecret::from_secret(&"k".repeat(32)).expect("valid");
    /// let value = CsrfPolicy::default().set_cookie_header(&secret, true);
    /// assert_eq!(
    ///     value,
    ///     format!("csrftoken={}; Max-Age=31449600; Path=/; SameSite=Lax; Secure", "k".repeat(32))
    /// );
    /// ```
    pub fn set_cookie_header(&self, secret: &CsrfSecret, secure: bool) -> HeaderValue {
        let value = format!(
            "{}={}; Max-Age={CSRF_COOKIE_AGE}; Path=/; SameSite=Lax{}",
            self.cookie_name,
            secret.as_str(),
            if secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| {
            // Only an unusable cookie name gets here; fall back to the default one.
            let fallback = format!(
                "{DEFAULT_COOKIE_NAME}={}; Max-Age={CSRF_COOKIE_AGE}; Path=/; SameSite=Lax{}",
                secret.as_str(),
                if secure { "; Secure" } else { "" }
            );
            HeaderValue::from_str(&fallback).unwrap_or(HeaderValue::from_static(""))
        })
    }

    /// The header name as Django prints it in reasons: `X-CSRFToken` → `X-Csrftoken`
    /// (`HttpHeaders.parse_header_name` of the `HTTP_…` setting).
    pub fn header_display_name(&self) -> String {
        python_title(&self.header_name.replace('_', "-"))
    }

    /// Django's `_origin_verified`.
    fn origin_verified(&self, origin: &str, secure: bool, host: &str) -> bool {
        if !host.is_empty() {
            let scheme = if secure { "https" } else { "http" };
            if origin
                .strip_prefix(scheme)
                .and_then(|r| r.strip_prefix("://"))
                == Some(host)
            {
                return true;
            }
        }
        if self
            .trusted_origins
            .iter()
            .any(|t| !t.contains('*') && t == origin)
        {
            return true;
        }
        let Some(parsed) = urlsplit(origin) else {
            return false;
        };
        self.trusted_origins
            .iter()
            .filter(|t| t.contains('*'))
            .filter_map(|t| urlsplit(t))
            .any(|t| {
                t.scheme == parsed.scheme
                    && is_same_domain(&parsed.netloc, t.netloc.trim_start_matches('*'))
            })
    }

    /// Django's `_check_referer` (no `CSRF_COOKIE_DOMAIN`: the host must match exactly).
    fn check_referer(&self, headers: &HeaderMap, host: &str) -> Result<(), CsrfFailure> {
        let referer =
            header_latin1(headers, header::REFERER.as_str()).ok_or(CsrfFailure::NoReferer)?;
        let referer = urlsplit(&referer).ok_or(CsrfFailure::MalformedReferer)?;
        if referer.scheme.is_empty() || referer.netloc.is_empty() {
            return Err(CsrfFailure::MalformedReferer);
        }
        if referer.scheme != "https" {
            return Err(CsrfFailure::InsecureReferer);
        }
        let trusted = self
            .trusted_origins
            .iter()
            .filter_map(|t| urlsplit(t))
            .any(|t| is_same_domain(&referer.netloc, t.netloc.trim_start_matches('*')));
        if trusted || (!host.is_empty() && is_same_domain(&referer.netloc, host)) {
            return Ok(());
        }
        Err(CsrfFailure::BadReferer {
            referer: referer.geturl(),
        })
    }

    /// Django's `_check_token`.
    fn check_token(&self, parts: &Parts, form_token: Option<&str>) -> Result<(), CsrfFailure> {
        let secret = match self.request_secret(&parts.headers) {
            Err(reason) => return Err(CsrfFailure::BadCookie(reason)),
            Ok(None) => return Err(CsrfFailure::NoCookie),
            Ok(Some(secret)) => secret,
        };
        let form = if parts.method == Method::POST {
            form_token.unwrap_or("")
        } else {
            ""
        };
        let (token, token_source): (Cow<'_, str>, _) = if form.is_empty() {
            match header_latin1(&parts.headers, &self.header_name) {
                Some(value) => (
                    Cow::Owned(value),
                    TokenSource::Header(self.header_display_name()),
                ),
                None => return Err(CsrfFailure::TokenMissing),
            }
        } else {
            (Cow::Borrowed(form), TokenSource::Post)
        };
        if let Err(reason) = check_token_format(&token) {
            return Err(CsrfFailure::BadToken {
                token_source,
                reason,
            });
        }
        if !does_token_match(&token, &secret) {
            return Err(CsrfFailure::TokenIncorrect { token_source });
        }
        Ok(())
    }
}

/// Bytes as Latin-1 text (how WSGI/ASGI Django reads header values).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// All values of a header joined with `,` (as servers fold repeated headers into one
/// `META` entry); `None` when absent (or the name is not a valid header name).
fn header_latin1(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = latin1(first.as_bytes());
    for v in values {
        out.push(',');
        out.push_str(&latin1(v.as_bytes()));
    }
    Some(out)
}

/// Python's `str.isspace` (what `str.strip()` removes).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// The value of the cookie `name` in the request's `Cookie` header(s), read the way Django
/// reads cookies (last occurrence wins, whitespace trimmed, quotes removed); `None` when absent.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("cookie", http::HeaderValue::from_static("a=1; sessionid=abc"));
/// assert_eq!(restguard::csrf::request_cookie(&headers, "sessionid").as_deref(), Some("abc"));
/// assert_eq!(restguard::csrf::request_cookie(&headers, "b"), None);
/// ```
pub fn request_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_value(headers, name)
}

/// The value of cookie `name` as Django's `parse_cookie` reads it from all `Cookie` headers
/// (joined with `; `): split on `;`, name and value trimmed, the value unquoted the way
/// `http.cookies._unquote` does, the last occurrence winning.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for header in headers.get_all(header::COOKIE) {
        for chunk in latin1(header.as_bytes()).split(';') {
            let (key, value) = chunk.split_once('=').unwrap_or(("", chunk));
            if key.trim_matches(py_space) == name {
                found = Some(py_unquote(value.trim_matches(py_space)));
            }
        }
    }
    found
}

/// Python's `http.cookies._unquote`.
fn py_unquote(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 2 || chars[0] != '"' || chars[chars.len() - 1] != '"' {
        return value.to_owned();
    }
    let inner = &chars[1..chars.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == '\\' {
            let octal =
                |j: usize, max: char| inner.get(i + j).is_some_and(|c| ('0'..=max).contains(c));
            if octal(1, '3') && octal(2, '7') && octal(3, '7') {
                let code = inner[i + 1..i + 4]
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + (u32::from(*c) - u32::from('0')));
                out.extend(char::from_u32(code));
                i += 4;
                continue;
            }
            if let Some(&next) = inner.get(i + 1) {
                if next != '\n' {
                    out.push(next);
                    i += 2;
                    continue;
                }
            }
        }
        out.push(inner[i]);
        i += 1;
    }
    out
}

/// Django's `is_same_domain`: `pattern` (lower-cased) equals `host`, or starts with `.` and
/// `host` is that domain or one of its subdomains. `host` is not lower-cased.
fn is_same_domain(host: &str, pattern: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    let pattern = pattern.to_lowercase();
    (pattern.starts_with('.') && (host.ends_with(&pattern) || host == &pattern[1..]))
        || pattern == host
}

/// The parts of Python's `urllib.parse.SplitResult` that the checks use.
#[derive(Debug, PartialEq, Eq)]
struct SplitUrl {
    scheme: String,
    netloc: String,
    path: String,
    query: String,
    fragment: String,
}

impl SplitUrl {
    /// `urlunsplit` for a URL with a scheme and a netloc (empty `?` / `#` dropped).
    fn geturl(&self) -> String {
        let mut url = String::new();
        if !self.scheme.is_empty() {
            url.push_str(&self.scheme);
            url.push(':');
        }
        url.push_str("//");
        url.push_str(&self.netloc);
        if !self.path.is_empty() && !self.path.starts_with('/') {
            url.push('/');
        }
        url.push_str(&self.path);
        if !self.query.is_empty() {
            url.push('?');
            url.push_str(&self.query);
        }
        if !self.fragment.is_empty() {
            url.push('#');
            url.push_str(&self.fragment);
        }
        url
    }
}

/// Python 3.11's `urllib.parse.urlsplit`; `None` where it raises `ValueError` (unbalanced or
/// invalid bracketed hosts). Its NFKC check of non-ASCII netlocs cannot fire on Latin-1
/// header values and is left out.
fn urlsplit(url: &str) -> Option<SplitUrl> {
    let url: String = url
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let mut rest = url.as_str();
    let mut scheme = String::new();
    if let Some(i) = rest.find(':') {
        let candidate = &rest[..i];
        if i > 0
            && candidate.as_bytes()[0].is_ascii_alphabetic()
            && candidate
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            scheme = candidate.to_ascii_lowercase();
            rest = &rest[i + 1..];
        }
    }
    let mut netloc = "";
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        netloc = &after[..end];
        rest = &after[end..];
        let (open, close) = (netloc.contains('['), netloc.contains(']'));
        if open != close {
            return None;
        }
        if open {
            let after_open = netloc.split_once('[').map_or("", |(_, a)| a);
            let bracketed = after_open.split(']').next().unwrap_or("");
            if !bracketed_host_ok(bracketed) {
                return None;
            }
        }
    }
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Some(SplitUrl {
        scheme,
        netloc: netloc.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        fragment: fragment.to_owned(),
    })
}

/// Python's `_check_bracketed_host`: `v<hex>.<anything>` (IPvFuture) or an IPv6 address
/// (optionally with a `%scope`); an IPv4 address or anything else is invalid.
fn bracketed_host_ok(host: &str) -> bool {
    if let Some(future) = host.strip_prefix('v') {
        let hex_len = future.bytes().take_while(u8::is_ascii_hexdigit).count();
        return hex_len > 0
            && future[hex_len..]
                .strip_prefix('.')
                .is_some_and(|tail| !tail.is_empty());
    }
    let addr = match host.split_once('%') {
        Some((addr, scope)) if !scope.is_empty() && !scope.contains('%') => addr,
        Some(_) => return false,
        None => host,
    };
    addr.parse::<Ipv6Addr>().is_ok()
}

/// Python's `str.title()` (ASCII-cased letters are what header names contain).
fn python_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        if c.is_alphabetic() {
            if prev_cased {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_cased = true;
        } else {
            out.push(c);
            prev_cased = false;
        }
    }
    out
}

/// Python's `repr` of a string without quotes or backslashes inside (header names).
fn python_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).uri("/api/thing/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    struct Fixture {
        secret: CsrfSecret,
        token: String,
        cookie: String,
    }

    fn fixture() -> Fixture {
        let secret = CsrfSecret::generate();
        let token = secret.mask();
        let cookie = format!("csrftoken={}", secret.as_str());
        Fixture {
            secret,
            token,
            cookie,
        }
    }

    fn reason(r: Result<(), CsrfFailure>) -> Option<String> {
        r.err().map(|e| e.reason())
    }

    const HEADER_INCORRECT: &str = "CSRF token from the 'X-Csrftoken' HTTP header incorrect.";

    #[test]
    fn mask_unmask_round_trip() {
        for _ in 0..500 {
            let secret = CsrfSecret::generate();
            let token = mask(&secret);
            assert_eq!(token.len(), CSRF_TOKEN_LENGTH);
            assert!(check_token_format(&token).is_ok());
            assert_eq!(unmask(&token).unwrap(), secret);
            assert!(secret.matches(&token));
            assert!(secret.matches(secret.as_str()));
        }
    }

    #[test]
    fn mask_uses_every_char_and_wraps() {
        let secret = CsrfSecret::from_secret(&CSRF_ALLOWED_CHARS[..32]).unwrap();
        let token = mask_with(&secret, &CSRF_ALLOWED_CHARS[30..62]).unwrap();
        assert_eq!(unmask(&token).unwrap(), secret);
        // index 31 ('F') + index 61 ('9') = 92 mod 62 = 30 → 'E'
        assert_eq!(token.as_bytes()[63], b'E');
        assert_eq!(
            mask_with(&secret, "short"),
            Err(InvalidTokenFormat::IncorrectLength)
        );
    }

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = CsrfSecret::generate();
        let b = CsrfSecret::generate();
        assert_ne!(a, b);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a.as_str().len(), CSRF_SECRET_LENGTH);
    }

    #[test]
    fn generation_covers_all_chars_evenly() {
        let mut counts = [0u32; 62];
        for _ in 0..2000 {
            for b in CsrfSecret::generate().as_str().bytes() {
                counts[idx(b)] += 1;
            }
        }
        // 64 000 draws, 1 032 expected per character; ±25 % is > 8 standard deviations.
        assert!(
            counts.iter().all(|&c| (774..=1290).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn debug_redacts() {
        let secret = CsrfSecret::generate();
        let shown = format!("{secret:?}");
        assert_eq!(shown, "CsrfSecret([redacted])");
        assert!(!shown.contains(secret.as_str()));
    }

    #[test]
    fn token_format() {
        assert_eq!(
            check_token_format(""),
            Err(InvalidTokenFormat::IncorrectLength)
        );
        assert_eq!(
            check_token_format(&"a".repeat(33)),
            Err(InvalidTokenFormat::IncorrectLength)
        );
        // 31 ASCII + one 2-byte char = 32 characters: a length Python accepts, bad characters.
        assert_eq!(
            check_token_format(&format!("{}é", "a".repeat(31))),
            Err(InvalidTokenFormat::InvalidCharacters)
        );
        assert_eq!(check_token_format(&"Z9".repeat(32)), Ok(()));
        assert!(!does_token_match("nope", &CsrfSecret::generate()));
    }

    #[test]
    fn safe_methods_pass_without_anything() {
        let policy = CsrfPolicy::default();
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert_eq!(policy.check(&parts(m, &[]), None, true, "h"), Ok(()));
        }
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(
            reason(policy.check(&parts(purge, &[]), None, false, "h")).as_deref(),
            Some("CSRF cookie not set.")
        );
    }

    #[test]
    fn header_success_and_failures() {
        let f = fixture();
        let p = CsrfPolicy::default();
        let check = |headers: &[(&str, &str)]| {
            reason(p.check(&parts(Method::POST, headers), None, false, "testserver"))
        };
        assert_eq!(
            check(&[("cookie", &f.cookie), ("X-CSRFToken", &f.token)]),
            None
        );
        assert_eq!(
            check(&[("cookie", &f.cookie), ("x-csrftoken", &f.token)]),
            None
        );
        assert_eq!(
            check(&[("cookie", &f.cookie), ("x-csrftoken", f.secret.as_str())]),
            None
        );
        assert_eq!(
            check(&[("X-CSRFToken", &f.token)]).as_deref(),
            Some("CSRF cookie not set.")
        );
        assert_eq!(
            check(&[("cookie", &f.cookie)]).as_deref(),
            Some("CSRF token missing.")
        );
        let other = CsrfSecret::generate().mask();
        assert_eq!(
            check(&[("cookie", &f.cookie), ("x-csrftoken", &other)]).as_deref(),
            Some(HEADER_INCORRECT)
        );
        assert_eq!(
            check(&[("cookie", &f.cookie), ("x-csrftoken", &f.token[1..])]).as_deref(),
            Some("CSRF token from the 'X-Csrftoken' HTTP header has incorrect length.")
        );
        let bad_chars = format!("{}!", &f.token[1..]);
        assert_eq!(
            check(&[("cookie", &f.cookie), ("x-csrftoken", &bad_chars)]).as_deref(),
            Some("CSRF token from the 'X-Csrftoken' HTTP header has invalid characters.")
        );
    }

    #[test]
    fn form_field_success_and_failures() {
        let f = fixture();
        let p = CsrfPolicy::default();
        let headers = [("cookie", f.cookie.as_str())];
        let post = |form: Option<&str>| {
            reason(p.check(&parts(Method::POST, &headers), form, false, "testserver"))
        };
        assert_eq!(post(Some(&f.token)), None);
        assert_eq!(post(Some(f.secret.as_str())), None);
        assert_eq!(post(Some("")).as_deref(), Some("CSRF token missing."));
        assert_eq!(post(None).as_deref(), Some("CSRF token missing."));
        assert_eq!(
            post(Some(&CsrfSecret::generate().mask())).as_deref(),
            Some("CSRF token from POST incorrect.")
        );
        assert_eq!(
            post(Some("abc")).as_deref(),
            Some("CSRF token from POST has incorrect length.")
        );
        assert_eq!(
            post(Some(&"-".repeat(32))).as_deref(),
            Some("CSRF token from POST has invalid characters.")
        );
        // The form field wins over the header; PUT ignores the form field.
        let both = [("cookie", f.cookie.as_str()), ("x-csrftoken", "bad")];
        assert_eq!(
            p.check(&parts(Method::POST, &both), Some(&f.token), false, "t"),
            Ok(())
        );
        assert_eq!(
            reason(p.check(&parts(Method::PUT, &headers), Some(&f.token), false, "t")).as_deref(),
            Some("CSRF token missing.")
        );
    }

    #[test]
    fn cookie_rules() {
        let f = fixture();
        let p = CsrfPolicy::default();
        let check = |cookie: &str| {
            reason(p.check(
                &parts(
                    Method::DELETE,
                    &[("cookie", cookie), ("x-csrftoken", &f.token)],
                ),
                None,
                false,
                "testserver",
            ))
        };
        // Legacy 64-character masked cookie (Django < 4.1).
        assert_eq!(check(&format!("csrftoken={}", f.secret.mask())), None);
        assert_eq!(check(&format!("csrftoken=\"{}\"", f.secret.as_str())), None);
        assert_eq!(
            check(&format!("a=b; csrftoken = {} ; c=d", f.secret.as_str())),
            None
        );
        assert_eq!(
            check("csrftoken=").as_deref(),
            Some("CSRF cookie has incorrect length.")
        );
        assert_eq!(
            check(&format!("csrftoken={}", "*".repeat(32))).as_deref(),
            Some("CSRF cookie has invalid characters.")
        );
        assert_eq!(
            check(&format!("CSRFTOKEN={}", f.secret.as_str())).as_deref(),
            Some("CSRF cookie not set.")
        );
        let other = CsrfSecret::generate();
        assert_eq!(
            check(&format!(
                "csrftoken={}; csrftoken={}",
                other.as_str(),
                f.secret.as_str()
            )),
            None
        );
        assert_eq!(
            check(&format!("csrftoken={}", other.as_str())).as_deref(),
            Some(HEADER_INCORRECT)
        );
    }

    #[test]
    fn origin_rules() {
        let f = fixture();
        let check = |p: &CsrfPolicy, origin: &str, secure: bool, host: &str| {
            let headers = [
                ("origin", origin),
                ("cookie", f.cookie.as_str()),
                ("x-csrftoken", f.token.as_str()),
            ];
            reason(p.check(&parts(Method::POST, &headers), None, secure, host))
        };
        let bad = |origin: &str| {
            Some(format!(
                "Origin checking failed - {origin} does not match any trusted origins."
            ))
        };
        let plain = CsrfPolicy::default();
        assert_eq!(
            check(&plain, "http://testserver", false, "testserver"),
            None
        );
        assert_eq!(
            check(&plain, "https://testserver", true, "testserver"),
            None
        );
        assert_eq!(check(&plain, "https://h:8443", true, "h:8443"), None);
        assert_eq!(
            check(&plain, "http://testserver", true, "testserver"),
            bad("http://testserver")
        );
        assert_eq!(check(&plain, "null", false, "testserver"), bad("null"));
        // A disallowed host (empty) is never the same origin.
        assert_eq!(check(&plain, "http://", false, ""), bad("http://"));

        let wild = CsrfPolicy::new(["https://*.example.com", "https://trusted.com"]);
        for good in [
            "https://app.example.com",
            "https://a.b.example.com",
            "https://example.com",
            "https://trusted.com",
        ] {
            assert_eq!(check(&wild, good, true, "testserver"), None, "{good}");
        }
        for origin in [
            "http://app.example.com",
            "https://evilexample.com",
            "https://app.example.com:8443",
            "http://trusted.com",
            "https://[::1",
        ] {
            assert_eq!(check(&wild, origin, true, "testserver"), bad(origin));
        }
    }

    #[test]
    fn https_referer_rules() {
        let f = fixture();
        let check = |p: &CsrfPolicy, secure: bool, referer: Option<&str>| {
            let mut headers = vec![("cookie", f.cookie.as_str()), ("x-csrftoken", &f.token)];
            if let Some(r) = referer {
                headers.push(("referer", r));
            }
            reason(p.check(&parts(Method::POST, &headers), None, secure, "testserver"))
        };
        let p = CsrfPolicy::default();
        assert_eq!(check(&p, true, Some("https://testserver/page")), None);
        assert_eq!(check(&p, true, Some("HTTPS://testserver/")), None);
        assert_eq!(
            check(&p, true, None).as_deref(),
            Some("Referer checking failed - no Referer.")
        );
        for malformed in [
            "not a url",
            "",
            "https:///x",
            "https://[::1/x",
            "https://[1.2.3.4]/",
        ] {
            assert_eq!(
                check(&p, true, Some(malformed)).as_deref(),
                Some("Referer checking failed - Referer is malformed."),
                "{malformed}"
            );
        }
        assert_eq!(
            check(&p, true, Some("http://testserver/")).as_deref(),
            Some("Referer checking failed - Referer is insecure while host is secure.")
        );
        assert_eq!(
            check(&p, true, Some("https://evil.com/p?q=1#f")).as_deref(),
            Some("Referer checking failed - https://evil.com/p?q=1#f does not match any trusted origins.")
        );
        assert_eq!(
            check(&p, true, Some("https://evil.com?")).as_deref(),
            Some("Referer checking failed - https://evil.com does not match any trusted origins.")
        );
        // Plain HTTP skips the Referer rules entirely.
        assert_eq!(check(&p, false, None), None);
        assert_eq!(check(&p, false, Some("http://evil.com/")), None);
        // `secure_request` forces them.
        let forced = CsrfPolicy {
            secure_request: true,
            ..CsrfPolicy::default()
        };
        assert_eq!(
            check(&forced, false, None).as_deref(),
            Some("Referer checking failed - no Referer.")
        );

        let wild = CsrfPolicy::new(["https://*.example.com", "https://trusted.com"]);
        assert_eq!(check(&wild, true, Some("https://app.example.com/x")), None);
        assert_eq!(check(&wild, true, Some("https://example.com/")), None);
        assert_eq!(check(&wild, true, Some("https://trusted.com/")), None);
        assert_eq!(
            check(&wild, true, Some("http://trusted.com/")).as_deref(),
            Some("Referer checking failed - Referer is insecure while host is secure.")
        );
    }

    #[test]
    fn origin_header_skips_referer_check() {
        let p = CsrfPolicy::default();
        let r = p.check(
            &parts(Method::POST, &[("origin", "https://testserver")]),
            None,
            true,
            "testserver",
        );
        assert_eq!(r, Err(CsrfFailure::NoCookie));
    }

    #[test]
    fn failure_detail_and_display() {
        let f = CsrfFailure::BadCookie(InvalidTokenFormat::IncorrectLength);
        assert_eq!(f.reason(), "CSRF cookie has incorrect length.");
        assert_eq!(f.detail(), "CSRF Failed: CSRF cookie has incorrect length.");
        let f = CsrfFailure::TokenIncorrect {
            token_source: TokenSource::Post,
        };
        assert_eq!(f.to_string(), "CSRF token from POST incorrect.");
    }

    #[test]
    fn custom_header_name_display() {
        let p = CsrfPolicy {
            header_name: "X-XSRF-TOKEN".into(),
            ..CsrfPolicy::default()
        };
        assert_eq!(p.header_display_name(), "X-Xsrf-Token");
        assert_eq!(CsrfPolicy::default().header_display_name(), "X-Csrftoken");
        assert_eq!(python_title("x_1abc"), "X_1Abc");
        assert_eq!(python_repr("it's"), "\"it's\"");
    }

    #[test]
    fn secret_or_generate_and_request_secret() {
        let p = CsrfPolicy::default();
        let secret = CsrfSecret::generate();
        let with = |v: String| parts(Method::GET, &[("cookie", &v)]).headers;
        let (s, reset) = p.secret_or_generate(&with(format!("csrftoken={}", secret.as_str())));
        assert_eq!((s, reset), (secret.clone(), false));
        let (s, reset) = p.secret_or_generate(&with(format!("csrftoken={}", secret.mask())));
        assert_eq!((s, reset), (secret.clone(), true));
        let (s, reset) = p.secret_or_generate(&with("csrftoken=junk".into()));
        assert!(reset && s != secret);
        assert_eq!(p.request_secret(&HeaderMap::new()), Ok(None));
        assert_eq!(
            p.request_secret(&with("csrftoken=junk".into())),
            Err(InvalidTokenFormat::IncorrectLength)
        );
    }

    #[test]
    fn urlsplit_like_python() {
        let u = urlsplit("  Https://h:1/p?q#f").unwrap();
        assert_eq!(
            (
                u.scheme.as_str(),
                u.netloc.as_str(),
                u.path.as_str(),
                u.query.as_str(),
                u.fragment.as_str()
            ),
            ("https", "h:1", "/p", "q", "f")
        );
        assert_eq!(urlsplit("https://h#a?b").unwrap().fragment, "a?b");
        assert_eq!(urlsplit("1a://x").unwrap().scheme, "");
        assert!(urlsplit("https://[v1.x]/").is_some());
        assert!(urlsplit("https://[v1.]/").is_none());
        assert!(urlsplit("https://[fe80::1%25eth0]/").is_some());
        assert!(urlsplit("https://[fe80::1%]/").is_none());
        assert!(urlsplit("https://]x[/").is_none());
    }

    #[test]
    fn unquote_like_python() {
        assert_eq!(py_unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(py_unquote("\"\\141\""), "a");
        assert_eq!(py_unquote("\"x\\\""), "x\\");
        assert_eq!(py_unquote("\""), "\"");
        assert_eq!(py_unquote("plain"), "plain");
    }
}
