//! [`OAuth2Bearer`]: the resource side — `Authorization: Bearer rgat_…` on API routes.

use async_trait::async_trait;
use http::HeaderValue;
use restguard_core::{
    authenticator::{Authenticator, Credentials, Outcome, RequestContext},
    identity::{AuthInfo, Identity, Scheme},
    store::StoreError,
    AuthError, Rejection,
};

use crate::provider::{AccessProblem, Provider, ACCESS_TOKEN_PREFIX};

/// The challenge of a route whose first authenticator is OAuth2.
const CHALLENGE: &str = "Bearer realm=\"api\"";
/// The challenge after a rejected token (RFC 6750 §3).
const INVALID_CHALLENGE: &str = "Bearer realm=\"api\", error=\"invalid_token\"";

/// OAuth2 bearer tokens issued by this server's [`Provider`].
///
/// Abstains on bearer values without the access-token prefix (a JWT, another scheme's key),
/// so it shares `Authorization: Bearer` with the JWT scheme (CONTRACT §1). Sets
/// [`AuthInfo::scopes`] for scope permissions. A client-credentials token (no user)
/// authenticates as [`Identity::client`]: it passes permissions that need no user (scope
/// permissions, `AllowAny`) and is refused with 403 by those that do.
#[derive(Debug, Clone)]
pub struct OAuth2Bearer {
    provider: Provider,
}

impl OAuth2Bearer {
    /// An authenticator checking tokens with `provider`.
    pub fn new(provider: Provider) -> Self {
        Self { provider }
    }
}

fn rejected(detail: &'static str) -> Outcome {
    Outcome::Failed(AuthError::from(
        Rejection::new(detail).with_challenge(HeaderValue::from_static(INVALID_CHALLENGE)),
    ))
}

#[async_trait]
impl Authenticator for OAuth2Bearer {
    fn scheme(&self) -> Scheme {
        Scheme::OAuth2
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(CHALLENGE))
    }

    async fn authenticate(&self, request: &RequestContext<'_>) -> Result<Outcome, StoreError> {
        let (first, single) = match request.credentials(&["Bearer"], false) {
            None | Some(Credentials::Missing) => return Ok(Outcome::Abstain),
            Some(Credentials::One(token)) => (token, true),
            Some(Credentials::Several(first)) => (first, false),
        };
        if !first.starts_with(ACCESS_TOKEN_PREFIX.as_bytes()) {
            return Ok(Outcome::Abstain);
        }
        if !single {
            return Ok(rejected("The access token is invalid."));
        }
        let Ok(token) = std::str::from_utf8(first) else {
            return Ok(rejected("The access token is invalid."));
        };
        let grant = match self.provider.check_access_token(token).await? {
            Ok(grant) => grant,
            Err(AccessProblem::Expired) => return Ok(rejected("The access token has expired.")),
            Err(AccessProblem::Invalid) => return Ok(rejected("The access token is invalid.")),
        };
        let auth = AuthInfo::new(Scheme::OAuth2)
            .with_credential_id(grant.token.id.to_string())
            .with_scopes(grant.token.scopes.clone());
        // A client-credentials token speaks for its client: permissions that need a user
        // refuse it with DRF's 403, scope permissions may let it through.
        let identity = match (&grant.user, &grant.client_id) {
            (Some(user), _) => Identity::new(user.clone(), auth),
            (None, Some(client_id)) => Identity::client(client_id.clone(), auth),
            (None, None) => return Ok(rejected("The access token is invalid.")),
        };
        Ok(Outcome::Authenticated(identity))
    }
}
