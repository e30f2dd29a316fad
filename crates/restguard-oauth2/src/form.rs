//! `application/x-www-form-urlencoded` parameters with RFC 6749's rules: each parameter at
//! most once (§3.1), an empty value is the same as an absent one.

use std::collections::HashMap;

use crate::error::OAuthError;

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

/// Splits a `scope` parameter into scopes (space-separated, no empties, no repeats).
pub fn split_scope(scope: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    out
}
