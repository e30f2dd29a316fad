//! Who is making the request: the user and how they authenticated.

use std::{fmt, sync::Arc};

use serde::Serialize;
use time::OffsetDateTime;

/// A user's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user account, as Django's `auth_user` row minus the password hash.
///
/// The password hash is deliberately not part of this type, so that a `User` can travel
/// through request extensions and caches without carrying a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Primary key.
    pub id: UserId,
    /// Unique login name.
    pub username: String,
    /// E-mail address (may be empty).
    pub email: String,
    /// Given name (may be empty).
    pub first_name: String,
    /// Family name (may be empty).
    pub last_name: String,
    /// Inactive users cannot authenticate.
    pub is_active: bool,
    /// Staff users pass `IsAdminUser`.
    pub is_staff: bool,
    /// Superusers have every permission.
    pub is_superuser: bool,
    /// When the account was created.
    pub date_joined: OffsetDateTime,
    /// Last successful password login.
    pub last_login: Option<OffsetDateTime>,
    /// Last change of the password or of the active flag; credentials issued before it
    /// (sessions, JWTs) are no longer valid.
    pub credentials_changed_at: OffsetDateTime,
}

/// The authentication scheme that identified a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Scheme {
    /// HTTP Basic (RFC 7617).
    Basic,
    /// `Authorization: Token <key>`.
    Token,
    /// Session cookie.
    Session,
    /// Simple JWT access token.
    Jwt,
    /// OAuth2 bearer access token.
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl Scheme {
    /// The scheme's name on the wire (`/api/me/`'s `auth.scheme`, `X-Auth-Scheme`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Basic => "basic",
            Scheme::Token => "token",
            Scheme::Session => "session",
            Scheme::Jwt => "jwt",
            Scheme::OAuth2 => "oauth2",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DRF's `request.auth`: how the request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    /// The scheme that succeeded.
    pub scheme: Scheme,
    /// The credential's id (API token id, session id digest prefix, JWT `jti`, OAuth token id).
    pub credential_id: Option<String>,
    /// Scopes granted to the credential (OAuth2); `None` means "not scope-limited".
    pub scopes: Option<Vec<String>>,
}

impl AuthInfo {
    /// Auth info for `scheme` with no credential id and no scopes.
    pub fn new(scheme: Scheme) -> Self {
        Self {
            scheme,
            credential_id: None,
            scopes: None,
        }
    }

    /// Sets the credential id.
    pub fn with_credential_id(mut self, id: impl Into<String>) -> Self {
        self.credential_id = Some(id.into());
        self
    }

    /// Sets the granted scopes.
    pub fn with_scopes(mut self, scopes: Vec<String>) -> Self {
        self.scopes = Some(scopes);
        self
    }

    /// True when the credential is not scope-limited or carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.scopes {
            None => false,
            Some(scopes) => scopes.iter().any(|s| s == scope),
        }
    }
}

/// Who a credential speaks for.
///
/// Almost always a user. An OAuth2 access token from the client-credentials grant speaks for
/// the client application itself (machine-to-machine): there is no user behind it, so it
/// passes only permissions that need none (`AllowAny`, scope permissions) — DOT's
/// `TokenHasScope` use — and never reaches a handler that needs a user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal {
    /// A user account.
    User(Arc<User>),
    /// An OAuth2 client acting on its own behalf.
    Client(ClientPrincipal),
}

/// An OAuth2 client acting on its own behalf (client-credentials grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPrincipal {
    /// The client's `client_id`.
    pub client_id: String,
}

/// An authenticated request's identity: DRF's `(request.user, request.auth)`.
///
/// ```
/// use std::sync::Arc;
/// use restguard_core::identity::{AuthInfo, Identity, Scheme};
///
/// let client = Identity::client("svc-reports", AuthInfo::new(Scheme::OAuth2));
/// assert!(client.user().is_none());
/// assert_eq!(client.client_id(), Some("svc-reports"));
/// ```
#[derive(Debug, Clone)]
pub struct Identity {
    /// Who the credential speaks for.
    pub principal: Principal,
    /// How they authenticated.
    pub auth: AuthInfo,
}

impl Identity {
    /// A user's identity.
    pub fn new(user: Arc<User>, auth: AuthInfo) -> Self {
        Self {
            principal: Principal::User(user),
            auth,
        }
    }

    /// An OAuth2 client's own identity (no user).
    pub fn client(client_id: impl Into<String>, auth: AuthInfo) -> Self {
        Self {
            principal: Principal::Client(ClientPrincipal {
                client_id: client_id.into(),
            }),
            auth,
        }
    }

    /// The user, unless the credential speaks for a client.
    pub fn user(&self) -> Option<&Arc<User>> {
        match &self.principal {
            Principal::User(user) => Some(user),
            Principal::Client(_) => None,
        }
    }

    /// The client id when the credential speaks for an OAuth2 client itself.
    pub fn client_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::User(_) => None,
            Principal::Client(client) => Some(&client.client_id),
        }
    }
}
