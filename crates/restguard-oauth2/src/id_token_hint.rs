//! Verifying an `id_token_hint` (OpenID Connect RP-Initiated Logout 1.0 §2; CONTRACT §6):
//! before a hint may pick the client whose post-logout URIs a logout can return to, its
//! signature must check out against one of the provider's published id_token keys (the
//! JWKS, which keeps retired keys while tokens signed with them may still be around) and its
//! issuer must be this provider. Its expiry is ignored, as the specification allows: a user
//! often signs out long after their id_token expired.
//!
//! Verification works on the public keys only (the JWKS the provider serves), so it never
//! touches private key material.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey};
use restguard::jwt::{is_jwt_shaped, MAX_TOKEN_BYTES};
use serde_json::{Map, Value};

/// Header members that would let the token choose its own key: never honoured (RFC 8725).
const FORBIDDEN_HEADERS: [&str; 6] = ["jwk", "jku", "x5u", "x5c", "x5t", "crit"];

/// What a verified hint tells the logout endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHint {
    /// The `aud` claim: the client ids it was issued to.
    pub audiences: Vec<String>,
    /// The `sub` claim, if any.
    pub subject: Option<String>,
}

/// Why a hint was refused (for the log; the client only learns that it is not valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHint {
    /// Too long, not three base64url segments, or a segment is not a JSON object.
    #[error("the id_token_hint is not a JWT")]
    Malformed,
    /// `alg` is not an algorithm the provider signs id_tokens with (`none` included), the
    /// header names its own key, or its `kid` is not a published key of that algorithm.
    #[error("the id_token_hint names no published key")]
    UnknownKey,
    /// The signature does not verify with the named key.
    #[error("the id_token_hint's signature does not verify")]
    BadSignature,
    /// `iss` is not this provider.
    #[error("the id_token_hint was issued by someone else")]
    WrongIssuer,
    /// No `aud`, or one that is neither a string nor a list of strings.
    #[error("the id_token_hint has no audience")]
    NoAudience,
}

fn segment(text: &str) -> Result<Map<String, Value>, InvalidHint> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| InvalidHint::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(InvalidHint::Malformed),
    }
}

/// The published key `kid` for `alg`, as a decoding key.
fn published_key(jwks: &Value, kid: &str, alg: &str) -> Result<DecodingKey, InvalidHint> {
    let jwk = jwks
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|k| {
            k.get("kid").and_then(Value::as_str) == Some(kid)
                && k.get("alg").and_then(Value::as_str) == Some(alg)
        })
        .ok_or(InvalidHint::UnknownKey)?;
    let member = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or(InvalidHint::UnknownKey)
    };
    let key = match alg {
        "RS256" => DecodingKey::from_rsa_components(member("n")?, member("e")?),
        "EdDSA" => DecodingKey::from_ed_components(member("x")?),
        _ => return Err(InvalidHint::UnknownKey),
    };
    key.map_err(|_| InvalidHint::UnknownKey)
}

/// Verifies `token` against the keys of `jwks` (a JWKS with `kid` and `alg` on every key)
/// and the expected `issuer`. Only `RS256` and `EdDSA` — the algorithms the provider signs
/// id_tokens with — are accepted; `exp` is not checked.
///
/// ```
/// use restguard_oauth2::id_token_hint::{verify, InvalidHint};
/// let jwks = serde_json::json!({"keys": []});
/// // `alg: none` (an empty signature) never verifies.
/// let none = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwOi8vYS9vIiwiYXVkIjoiYyJ9.";
/// assert!(verify(none, &jwks, "http://a/o").is_err());
/// assert_eq!(verify("not-a-jwt", &jwks, "http://a/o"), Err(InvalidHint::Malformed));
/// ```
pub fn verify(token: &str, jwks: &Value, issuer: &str) -> Result<VerifiedHint, InvalidHint> {
    if token.len() > MAX_TOKEN_BYTES || !is_jwt_shaped(token.as_bytes()) {
        return Err(InvalidHint::Malformed);
    }
    let (message, signature) = token.rsplit_once('.').ok_or(InvalidHint::Malformed)?;
    let (header, payload) = message.split_once('.').ok_or(InvalidHint::Malformed)?;
    let header = segment(header)?;
    let claims = segment(payload)?;
    if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return Err(InvalidHint::UnknownKey);
    }
    let (Some(alg), Some(kid)) = (
        header.get("alg").and_then(Value::as_str),
        header.get("kid").and_then(Value::as_str),
    ) else {
        return Err(InvalidHint::UnknownKey);
    };
    let algorithm = match alg {
        "RS256" => Algorithm::RS256,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(InvalidHint::UnknownKey),
    };
    let key = published_key(jwks, kid, alg)?;
    let valid = jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, algorithm)
        .unwrap_or(false);
    if !valid {
        return Err(InvalidHint::BadSignature);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(InvalidHint::WrongIssuer);
    }
    let audiences = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(InvalidHint::NoAudience)?,
        _ => return Err(InvalidHint::NoAudience),
    };
    if audiences.is_empty() {
        return Err(InvalidHint::NoAudience);
    }
    Ok(VerifiedHint {
        audiences,
        subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};
    use serde_json::json;

    const ISSUER: &str = "https://id.example/o";

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn jwks(kid: &str, key: &SigningKey) -> Value {
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}]})
    }

    fn sign(header: &Value, claims: &Value, key: &SigningKey) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let signature = key.sign(message.as_bytes()).to_bytes();
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn claims() -> Value {
        json!({"iss": ISSUER, "aud": "client-1", "sub": "42", "exp": 1, "iat": 0})
    }

    fn header() -> Value {
        json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"})
    }

    #[test]
    fn a_genuine_hint_verifies_even_long_expired() {
        let k = key(1);
        let token = sign(&header(), &claims(), &k);
        assert_eq!(
            verify(&token, &jwks("k1", &k), ISSUER),
            Ok(VerifiedHint {
                audiences: vec!["client-1".into()],
                subject: Some("42".into()),
            })
        );
        let mut listed = claims();
        listed["aud"] = json!(["client-1", "client-2"]);
        let token = sign(&header(), &listed, &k);
        assert_eq!(
            verify(&token, &jwks("k1", &k), ISSUER).map(|h| h.audiences),
            Ok(vec!["client-1".to_owned(), "client-2".to_owned()])
        );
    }

    #[test]
    fn forgeries_are_refused() {
        let k = key(1);
        let keys = jwks("k1", &k);
        // Another key under our kid.
        let other = sign(&header(), &claims(), &key(2));
        assert_eq!(
            verify(&other, &keys, ISSUER),
            Err(InvalidHint::BadSignature)
        );
        // Claims changed after signing.
        let genuine = sign(&header(), &claims(), &k);
        let signature = genuine.rsplit('.').next().unwrap_or_default();
        let mut changed = claims();
        changed["aud"] = json!("victim");
        let tampered = format!("{}.{}.{signature}", b64(&header()), b64(&changed));
        assert_eq!(
            verify(&tampered, &keys, ISSUER),
            Err(InvalidHint::BadSignature)
        );
        // alg none, an HMAC algorithm, an unknown kid, a key carried in the header.
        let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims()));
        assert_eq!(verify(&none, &keys, ISSUER), Err(InvalidHint::Malformed));
        for h in [
            json!({"alg": "none", "kid": "k1"}),
            json!({"alg": "HS256", "kid": "k1"}),
            json!({"alg": "EdDSA", "kid": "k9"}),
            json!({"alg": "RS256", "kid": "k1"}),
            json!({"alg": "EdDSA"}),
            json!({"alg": "EdDSA", "kid": "k1", "jwk": {"kty": "OKP"}}),
        ] {
            let token = sign(&h, &claims(), &k);
            assert_eq!(
                verify(&token, &keys, ISSUER),
                Err(InvalidHint::UnknownKey),
                "{h}"
            );
        }
        // Genuinely signed, but for another issuer, or without an audience.
        let mut foreign = claims();
        foreign["iss"] = json!("https://elsewhere.example/o");
        let token = sign(&header(), &foreign, &k);
        assert_eq!(verify(&token, &keys, ISSUER), Err(InvalidHint::WrongIssuer));
        let mut no_aud = claims();
        no_aud["aud"] = json!(7);
        let token = sign(&header(), &no_aud, &k);
        assert_eq!(verify(&token, &keys, ISSUER), Err(InvalidHint::NoAudience));
        assert_eq!(
            verify(&"a".repeat(5000), &keys, ISSUER),
            Err(InvalidHint::Malformed)
        );
    }
}
