//! `application/x-www-form-urlencoded` parameters with RFC 6749's rules: each parameter at
//! most once (§3.1), an empty value is the same as an absent one.

use std::collections::HashMap;

use crate::error::{ErrorCode, OAuthError};

/// Longest form body read by the endpoints (the server's body limit applies first).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Request parameters, each at most once.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: HashMap<String, String>,
    order: Vec<String>,
}

impl Params {
    /// Parses a form body or a query string. A repeated parameter, bytes that are not UTF-8 or
    /// a body over [`MAX_FORM_BYTES`] is `invalid_request`.
    ///
    /// ```
    /// use restguard_oauth2::form::Params;
    /// let p = Params::parse(b"grant_type=client_credentials&scope=read+write").unwrap();
    /// assert_eq!(p.get("scope"), Some("read write"));
    /// assert!(Params::parse(b"a=1&a=2").is_err());
    /// ```
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        Self::parse_pairs(body).and_then(Self::from_pairs)
    }

    /// Parses into pairs without the duplicate rule.
    pub fn parse_pairs(body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
        if body.len() > MAX_FORM_BYTES {
            return Err(OAuthError::invalid_request(
                "The request body is too large.",
            ));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| OAuthError::invalid_request("The request body is not valid UTF-8."))?;
        let mut pairs = Vec::new();
        for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
            if k.contains('\u{FFFD}')
                || v.contains('\u{FFFD}')
                || k.contains('\0')
                || v.contains('\0')
            {
                return Err(OAuthError::invalid_request("Malformed parameter encoding."));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(pairs)
    }

    /// Builds parameters from pairs; a repeated name is `invalid_request`.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        let mut params = Self::default();
        for (k, v) in pairs {
            if params.values.contains_key(&k) {
                return Err(OAuthError::invalid_request(format!(
                    "Parameter {k:?} is repeated."
                )));
            }
            params.order.push(k.clone());
            params.values.insert(k, v);
        }
        Ok(params)
    }

    /// The value of `name`; empty values count as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Every parameter in request order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.order
            .iter()
            .filter_map(|k| self.values.get(k).map(|v| (k.as_str(), v.as_str())))
    }
}

/// Most scopes one `scope` string may name (RFC 6749 sets no limit; a client has a handful).
pub const MAX_SCOPES: usize = 64;
/// Longest single scope, in bytes.
pub const MAX_SCOPE_LEN: usize = 128;

/// Splits a `scope` string (a request parameter, a CLI flag, an admin form field) into its
/// scopes: separated by spaces, empty ones skipped, repeats dropped, in order. More than
/// [`MAX_SCOPES`] scopes (repeats counted) or one longer than [`MAX_SCOPE_LEN`] bytes is
/// `invalid_scope`. Linear in the length of `scope`: it stops at the first scope past the
/// cap, and the repeat check compares with at most [`MAX_SCOPES`] kept scopes.
///
/// ```
/// use restguard_oauth2::form::parse_scope;
/// assert_eq!(parse_scope("read  write read").unwrap(), ["read", "write"]);
/// assert!(parse_scope(&"s ".repeat(65)).is_err());
/// assert!(parse_scope(&"x".repeat(129)).is_err());
/// ```
pub fn parse_scope(scope: &str) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for (n, s) in scope.split(' ').filter(|s| !s.is_empty()).enumerate() {
        if n >= MAX_SCOPES {
            return Err(OAuthError::new(ErrorCode::InvalidScope)
                .describe(format!("Too many scopes: at most {MAX_SCOPES}.")));
        }
        if s.len() > MAX_SCOPE_LEN {
            return Err(OAuthError::new(ErrorCode::InvalidScope).describe(format!(
                "A scope is too long: at most {MAX_SCOPE_LEN} characters."
            )));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_caps_hold_at_the_edges() {
        let names: Vec<String> = (0..MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert_eq!(
            parse_scope(&names.join(" ")).ok().map(|v| v.len()),
            Some(64)
        );
        let over = format!("{} extra", names.join(" "));
        let err = parse_scope(&over).expect_err("65 scopes");
        assert_eq!(err.code, ErrorCode::InvalidScope);
        assert_eq!(
            err.description.as_deref(),
            Some("Too many scopes: at most 64.")
        );
        // Repeats count towards the cap, so a long run of one scope stops early too.
        assert!(parse_scope(&"read ".repeat(100_000)).is_err());
        assert_eq!(
            parse_scope(&"x".repeat(MAX_SCOPE_LEN))
                .ok()
                .map(|v| v.len()),
            Some(1)
        );
        let err = parse_scope(&"x".repeat(MAX_SCOPE_LEN + 1)).expect_err("too long");
        assert_eq!(
            err.description.as_deref(),
            Some("A scope is too long: at most 128 characters.")
        );
        assert_eq!(parse_scope("   ").ok(), Some(Vec::new()));
    }
}
