//! HTTP Basic authentication (RFC 7617), DRF's `BasicAuthentication`.

use async_trait::async_trait;
use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use http::HeaderValue;
use restguard_core::{
    authenticator::{Authenticator, Credentials, Outcome, RequestContext},
    identity::{AuthInfo, Identity, Scheme},
    secret::SecretString,
    store::StoreError,
    AuthError,
};

use crate::password::{Login, PasswordAuth, MAX_PASSWORD_BYTES};

/// Base64 as Python's `b64decode` accepts it: standard alphabet, padding optional.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The longest credentials string decoded (username + password + slack).
const MAX_ENCODED_LEN: usize = (MAX_PASSWORD_BYTES + 1024) * 4 / 3 + 4;

/// `Authorization: Basic base64(username:password)`, checked against the user store.
#[derive(Debug, Clone)]
pub struct Basic {
    passwords: PasswordAuth,
    challenge: HeaderValue,
}

impl Basic {
    /// Basic authentication with realm `api`.
    pub fn new(passwords: PasswordAuth) -> Self {
        Self {
            passwords,
            challenge: HeaderValue::from_static("Basic realm=\"api\""),
        }
    }
}

/// Username and password decoded from a Basic credentials string.
#[derive(Debug, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The user id part (before the first `:`).
    pub username: String,
    /// The password part.
    pub password: SecretString,
}

/// Decodes the credentials token of a Basic header: UTF-8, falling back to Latin-1, split at
/// the first `:`.
///
/// ```
/// use restguard::basic::decode_credentials;
/// let c = decode_credentials(b"YWxpY2U6cDpx").unwrap(); // alice:p:q
/// assert_eq!(c.username, "alice");
/// assert_eq!(c.password.expose(), "p:q");
/// assert!(decode_credentials(b"bm9jb2xvbg").is_none()); // "nocolon"
/// ```
pub fn decode_credentials(encoded: &[u8]) -> Option<BasicCredentials> {
    if encoded.len() > MAX_ENCODED_LEN {
        return None;
    }
    let bytes = LENIENT_BASE64.decode(encoded).ok()?;
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        // Latin-1: every byte is the code point of the same value.
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    };
    let (username, password) = text.split_once(':')?;
    Some(BasicCredentials {
        username: username.to_owned(),
        password: SecretString::new(password),
    })
}

#[async_trait]
impl Authenticator for Basic {
    fn scheme(&self) -> Scheme {
        Scheme::Basic
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    async fn authenticate(&self, request: &RequestContext<'_>) -> Result<Outcome, StoreError> {
        let encoded = match request.credentials(&["basic"], true) {
            None => return Ok(Outcome::Abstain),
            Some(Credentials::Missing) => {
                return Ok(failed("Invalid basic header. No credentials provided."))
            }
            Some(Credentials::Several(_)) => {
                return Ok(failed(
                    "Invalid basic header. Credentials string should not contain spaces.",
                ))
            }
            Some(Credentials::One(encoded)) => encoded,
        };
        let Some(credentials) = decode_credentials(encoded) else {
            return Ok(failed(
                "Invalid basic header. Credentials not correctly base64 encoded.",
            ));
        };
        let login = self
            .passwords
            .login(
                request.client_ip,
                &credentials.username,
                &credentials.password,
            )
            .await?;
        Ok(match login {
            Login::Valid(user) => Outcome::Authenticated(Identity::new(
                std::sync::Arc::new(user),
                AuthInfo::new(Scheme::Basic),
            )),
            Login::Invalid => failed("Invalid username/password."),
            Login::Throttled(wait) => Outcome::Failed(AuthError::Throttled { wait }),
        })
    }
}

fn failed(detail: &'static str) -> Outcome {
    Outcome::Failed(AuthError::failed(detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_latin1_and_padding_variants() {
        // "é:x" in Latin-1 is 0xE9 0x3A 0x78.
        let c = decode_credentials(b"6Tp4").unwrap();
        assert_eq!(c.username, "é");
        assert_eq!(
            decode_credentials(b"YTpi").map(|c| c.username),
            Some("a".into())
        );
        assert_eq!(
            decode_credentials(b"YTpiYw").map(|c| c.username),
            Some("a".into())
        );
        assert!(decode_credentials(b"!!!").is_none());
        assert!(decode_credentials(&vec![b'A'; MAX_ENCODED_LEN + 1]).is_none());
    }
}
