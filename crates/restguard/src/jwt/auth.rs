//! [`JwtAuth`]: Simple JWT's `JWTAuthentication`.

use async_trait::async_trait;
use http::HeaderValue;
use restguard_core::{
    authenticator::{Authenticator, Credentials, Outcome, RequestContext},
    identity::Scheme,
    store::StoreError,
    AuthError,
};

use super::{codec, service::JwtService, JwtError, TokenProblem, TokenType};

/// `Authorization: Bearer <access token>` (header types configurable, matched
/// case-sensitively as Simple JWT does).
///
/// Abstains when the header is absent, uses another keyword, or carries a value that is not
/// one JWT-shaped word (so OAuth2 opaque bearer tokens reach a later authenticator,
/// CONTRACT §1). Challenge: `Bearer realm="api"`.
#[derive(Debug, Clone)]
pub struct JwtAuth {
    service: JwtService,
    header_types: Vec<String>,
    challenge: HeaderValue,
}

impl JwtAuth {
    /// Reads `Authorization: Bearer <token>`.
    pub fn new(service: JwtService) -> Self {
        Self::with_header_types(service, ["Bearer"])
    }

    /// Reads any of `header_types` (Simple JWT's `AUTH_HEADER_TYPES`); the first one names the
    /// challenge.
    pub fn with_header_types<I: IntoIterator<Item = S>, S: Into<String>>(
        service: JwtService,
        header_types: I,
    ) -> Self {
        let header_types: Vec<String> = header_types.into_iter().map(Into::into).collect();
        let challenge = header_types
            .first()
            .and_then(|t| HeaderValue::from_str(&format!("{t} realm=\"api\"")).ok())
            .unwrap_or_else(|| HeaderValue::from_static("Bearer realm=\"api\""));
        Self {
            service,
            header_types,
            challenge,
        }
    }

    /// The service behind this authenticator.
    pub fn service(&self) -> &JwtService {
        &self.service
    }
}

fn failed(token_type: TokenType, error: JwtError) -> Result<Outcome, StoreError> {
    match error {
        JwtError::Store(e) => Err(e),
        other => Ok(Outcome::Failed(AuthError::from(
            other
                .auth_rejection(token_type)
                .unwrap_or_else(|| restguard_core::Rejection::new("Token is invalid")),
        ))),
    }
}

#[async_trait]
impl Authenticator for JwtAuth {
    fn scheme(&self) -> Scheme {
        Scheme::Jwt
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    async fn authenticate(&self, request: &RequestContext<'_>) -> Result<Outcome, StoreError> {
        let Some(Credentials::One(token)) = request.credentials(&self.header_types, false) else {
            return Ok(Outcome::Abstain);
        };
        // Not UTF-8 is not JWT-shaped either.
        let Ok(text) = std::str::from_utf8(token) else {
            return Ok(Outcome::Abstain);
        };
        // A token verified before is one of ours: the cache answers before any scan of its
        // few hundred bytes. Anything else must look like a JWT, or it is another scheme's
        // bearer token (an OAuth2 `rgat_…`).
        let cached = self.service.verified_before(text);
        if cached.is_none() {
            if !codec::is_jwt_shaped(token) {
                return Ok(Outcome::Abstain);
            }
            if token.len() > codec::MAX_TOKEN_BYTES {
                return failed(TokenType::Access, TokenProblem::Invalid.into());
            }
        }
        match self.service.authenticate_with(text, cached).await {
            Ok(identity) => Ok(Outcome::Authenticated(identity)),
            Err((token_type, error)) => failed(token_type, error),
        }
    }
}
