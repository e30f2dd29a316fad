//! Compact JWS parsing and claim validation, written to refuse everything unexpected
//! before any expensive work: size, shape, header members, algorithm, `kid`, signature, then
//! claims and their types.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::{Map, Value};

use super::{
    keys::{KeySet, LoadedKey},
    TokenProblem, TokenType,
};

/// Longest token examined, in bytes; longer ones are refused before decoding anything.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest `jti` accepted.
const MAX_JTI_LEN: usize = 255;
/// Header members that would let the token choose its own key: never honoured (RFC 8725).
const FORBIDDEN_HEADERS: [&str; 6] = ["jwk", "jku", "x5u", "x5c", "x5t", "crit"];

/// True when `token` is three non-empty base64url segments (Bearer disambiguation,
/// CONTRACT §1). Linear, no decoding.
pub fn is_jwt_shaped(token: &[u8]) -> bool {
    let mut segments = 0;
    let mut len = 0;
    for &b in token {
        if b == b'.' {
            if len == 0 {
                return false;
            }
            segments += 1;
            len = 0;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            len += 1;
        } else {
            return false;
        }
    }
    segments == 2 && len > 0
}

/// What a caller expects of a token.
pub(crate) struct Expect<'a> {
    pub(crate) types: &'a [TokenType],
    pub(crate) now: i64,
    pub(crate) leeway: i64,
    pub(crate) issuer: Option<&'a str>,
    pub(crate) audience: Option<&'a str>,
}

/// A token whose signature and claims checked out.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) token_type: TokenType,
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) jti: String,
    /// `user_id` as a string (integers are accepted and converted), if present.
    pub(crate) user_id: Option<String>,
    /// Sliding tokens' `refresh_exp`.
    pub(crate) refresh_exp: Option<i64>,
    pub(crate) claims: Map<String, Value>,
}

fn decode_json(segment: &str) -> Result<Map<String, Value>, TokenProblem> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenProblem::Invalid)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenProblem::Invalid),
    }
}

/// A NumericDate: a JSON number (never a string), whole seconds (fractions floored).
fn numeric_date(value: &Value) -> Result<i64, TokenProblem> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
            .ok_or(TokenProblem::Invalid),
        _ => Err(TokenProblem::Invalid),
    }
}

/// The key named by the header, after checking the header.
pub(crate) enum KeyLookup {
    Found(std::sync::Arc<LoadedKey>),
    /// A well-formed header naming a `kid` we do not have (maybe rotated elsewhere).
    UnknownKid,
}

/// Checks size, shape and header; finds the key.
pub(crate) fn check_header(token: &str, keys: &KeySet) -> Result<KeyLookup, TokenProblem> {
    if token.len() > MAX_TOKEN_BYTES || !is_jwt_shaped(token.as_bytes()) {
        return Err(TokenProblem::Invalid);
    }
    let header_segment = token.split('.').next().unwrap_or_default();
    let header = decode_json(header_segment)?;
    if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return Err(TokenProblem::Invalid);
    }
    let algorithm = keys.signing.algorithm;
    if header.get("alg").and_then(Value::as_str) != Some(algorithm.as_str()) {
        return Err(TokenProblem::Invalid);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(TokenProblem::Invalid),
    }
    match header.get("kid") {
        // Tokens minted elsewhere with the configured secret (Simple JWT, PyJWT) carry no
        // `kid`: only the current signing key may verify them.
        None => Ok(KeyLookup::Found(keys.signing.clone())),
        Some(Value::String(kid)) => Ok(keys
            .verifying
            .get(kid)
            .cloned()
            .map_or(KeyLookup::UnknownKid, KeyLookup::Found)),
        Some(_) => Err(TokenProblem::Invalid),
    }
}

/// Verifies the signature with `key` and validates the claims.
pub(crate) fn verify_with(
    token: &str,
    key: &LoadedKey,
    expect: &Expect<'_>,
) -> Result<Verified, TokenProblem> {
    let Some((message, signature)) = token.rsplit_once('.') else {
        return Err(TokenProblem::Invalid);
    };
    let valid = jsonwebtoken::crypto::verify(
        signature,
        message.as_bytes(),
        &key.decoding,
        key.algorithm.jsonwebtoken(),
    )
    .unwrap_or(false);
    if !valid {
        return Err(TokenProblem::Invalid);
    }
    let payload = message.split('.').nth(1).unwrap_or_default();
    let claims = decode_json(payload)?;
    validate(claims, expect)
}

fn validate(claims: Map<String, Value>, expect: &Expect<'_>) -> Result<Verified, TokenProblem> {
    let (now, leeway) = (expect.now, expect.leeway);
    // Registered time claims first (PyJWT's order inside Simple JWT's decode).
    let exp = match claims.get("exp") {
        None => return Err(TokenProblem::NoExp),
        Some(v) => numeric_date(v)?,
    };
    let iat = match claims.get("iat") {
        None => return Err(TokenProblem::Invalid),
        Some(v) => numeric_date(v)?,
    };
    if let Some(nbf) = claims.get("nbf") {
        if numeric_date(nbf)? > now.saturating_add(leeway) {
            return Err(TokenProblem::Invalid);
        }
    }
    if iat > now.saturating_add(leeway) {
        return Err(TokenProblem::Invalid);
    }
    match (expect.issuer, claims.get("iss")) {
        (None, _) => {}
        (Some(want), Some(Value::String(got))) if want == got => {}
        (Some(_), _) => return Err(TokenProblem::Invalid),
    }
    match (expect.audience, claims.get("aud")) {
        (None, None) => {}
        (Some(want), Some(Value::String(got))) if want == got => {}
        (Some(want), Some(Value::Array(list)))
            if list.iter().any(|a| a.as_str() == Some(want))
                && list.iter().all(Value::is_string) => {}
        // A token for some audience, where none is configured, is someone else's (PyJWT).
        _ => return Err(TokenProblem::Invalid),
    }
    if exp <= now.saturating_sub(leeway) {
        return Err(TokenProblem::Expired);
    }
    // Simple JWT's own checks: id, then type.
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j.clone(),
        Some(Value::String(j)) if !j.is_empty() => return Err(TokenProblem::Invalid),
        Some(Value::String(_)) | None => return Err(TokenProblem::NoId),
        Some(_) => return Err(TokenProblem::Invalid),
    };
    let token_type = match claims.get("token_type") {
        None => return Err(TokenProblem::NoType),
        Some(Value::String(t)) => match TokenType::from_claim(t) {
            Some(t) if expect.types.contains(&t) => t,
            _ => return Err(TokenProblem::WrongType),
        },
        Some(_) => return Err(TokenProblem::Invalid),
    };
    let user_id = match claims.get("user_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(_) => return Err(TokenProblem::Invalid),
    };
    let refresh_exp = match claims.get("refresh_exp") {
        None => None,
        Some(v) => Some(numeric_date(v)?),
    };
    if token_type == TokenType::Sliding && refresh_exp.is_none() {
        return Err(TokenProblem::Invalid);
    }
    Ok(Verified {
        token_type,
        exp,
        iat,
        jti,
        user_id,
        refresh_exp,
        claims,
    })
}

/// Signs `claims` with `key`: `header.claims.signature`.
pub(crate) fn sign(claims: &Value, key: &LoadedKey) -> Result<String, jsonwebtoken::errors::Error> {
    let mut token = String::with_capacity(320);
    token.push_str(&key.encoded_header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims.to_string().as_bytes(), &mut token);
    let signature = jsonwebtoken::crypto::sign(
        token.as_bytes(),
        &key.encoding,
        key.algorithm.jsonwebtoken(),
    )?;
    token.push('.');
    token.push_str(&signature);
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(is_jwt_shaped(b"a.b.c"));
        assert!(is_jwt_shaped(b"eyJh-_.eyJ9.sig"));
        assert!(!is_jwt_shaped(b"a.b"));
        assert!(!is_jwt_shaped(b"a.b.c.d"));
        assert!(!is_jwt_shaped(b"a..c"));
        assert!(!is_jwt_shaped(b"a.b."));
        assert!(!is_jwt_shaped(b".b.c"));
        assert!(!is_jwt_shaped(b"a.b=.c"));
        assert!(!is_jwt_shaped(b"rg_opaque-token_value"));
        assert!(!is_jwt_shaped(b""));
    }
}
