//! The OAuth2 / OpenID Connect provider's storage: applications (clients), authorization
//! codes and opaque access / refresh tokens (Django OAuth Toolkit's `oauth2_provider_*`
//! tables).
//!
//! Every secret is stored as a [`SecretDigest`] only (CONTRACT §10): client secrets, codes,
//! access and refresh tokens. Lookups go by digest.
//!
//! # Notes for backend implementers
//! * Timestamps are kept at microsecond precision, like every other store.
//! * Lists of strings (grant types, redirect URIs, scopes) are stored in any form that gives
//!   them back in the same order; the SQL backends use one space-separated `TEXT` column
//!   (none of the values may contain a space).
//! * Deleting a user deletes their codes and tokens; deleting an application deletes its
//!   codes and tokens (SQL: `ON DELETE CASCADE`).
//! * [`OAuthStore::consume_code`] and [`OAuthStore::rotate_refresh`] must be single
//!   conditional writes (`UPDATE … SET used_at = ? WHERE digest = ? AND used_at IS NULL`),
//!   never read-then-write, so that of concurrent callers exactly one wins.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{
    identity::{User, UserId},
    store::{FamilyId, SecretDigest, StoreError},
};

/// An application's primary key (not its public `client_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApplicationId(pub i64);

impl fmt::Display for ApplicationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// RFC 6749 §2.1 client types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientType {
    /// Can keep a secret (a server-side application).
    Confidential,
    /// Cannot keep a secret (a native or browser application); must use PKCE.
    Public,
}

impl ClientType {
    /// `confidential` or `public`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confidential => "confidential",
            Self::Public => "public",
        }
    }

    /// Parses [`ClientType::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "confidential" => Some(Self::Confidential),
            "public" => Some(Self::Public),
            _ => None,
        }
    }
}

/// A registered OAuth2 client (DOT's `Application`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// Primary key.
    pub id: ApplicationId,
    /// The public client identifier, unique.
    pub client_id: String,
    /// Human name shown on the consent page.
    pub name: String,
    /// Confidential or public.
    pub client_type: ClientType,
    /// Digest of the client secret (`None` for public clients).
    pub secret_digest: Option<SecretDigest>,
    /// Grant types it may use (`authorization_code`, `client_credentials`, `password`;
    /// `refresh_token` is implied by the others).
    pub grant_types: Vec<String>,
    /// Registered redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser back to (OIDC RP-Initiated Logout
    /// 1.0 `post_logout_redirect_uris`), matched exactly; a list of its own, never the
    /// redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes it may request; empty means every scope the server offers by default (the
    /// provider never counts administrator-granted scopes such as `introspection` in it).
    pub allowed_scopes: Vec<String>,
    /// Skips the consent page.
    pub skip_authorization: bool,
    /// JWA name of the id_token signature (`RS256`, `EdDSA`).
    pub algorithm: String,
    /// The user who registered it, if any.
    pub owner: Option<UserId>,
    /// When it was registered.
    pub created: OffsetDateTime,
}

/// An application to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApplication {
    /// The public client identifier.
    pub client_id: String,
    /// Human name.
    pub name: String,
    /// Confidential or public.
    pub client_type: ClientType,
    /// Digest of the client secret.
    pub secret_digest: Option<SecretDigest>,
    /// Allowed grant types.
    pub grant_types: Vec<String>,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Registered post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Allowed scopes (empty: the server's ordinary scopes).
    pub allowed_scopes: Vec<String>,
    /// Skips the consent page.
    pub skip_authorization: bool,
    /// id_token algorithm.
    pub algorithm: String,
    /// Registering user.
    pub owner: Option<UserId>,
    /// Registration time.
    pub created: OffsetDateTime,
}

/// Changes to a registered application's settings; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplicationUpdate {
    /// New post-logout redirect URIs.
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// New allowed scopes (empty: the server's ordinary scopes).
    pub allowed_scopes: Option<Vec<String>>,
}

/// An authorization code (never the code: its digest) and the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    /// Digest of the code.
    pub digest: SecretDigest,
    /// The client it was issued to.
    pub application: ApplicationId,
    /// The user who approved it.
    pub user_id: UserId,
    /// The authorize request's `redirect_uri` (the token request must repeat it).
    pub redirect_uri: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// PKCE `code_challenge`.
    pub code_challenge: Option<String>,
    /// PKCE `code_challenge_method` (`S256` or `plain`).
    pub code_challenge_method: Option<String>,
    /// OIDC `nonce`, echoed into the id_token.
    pub nonce: Option<String>,
    /// When the user authenticated (the id_token's `auth_time`).
    pub auth_time: OffsetDateTime,
    /// Issue time.
    pub created: OffsetDateTime,
    /// Expiry (60 s after issue by default).
    pub expires_at: OffsetDateTime,
    /// When it was exchanged (a used code is dead; a second use is a replay).
    pub used_at: Option<OffsetDateTime>,
    /// The token family its exchange created (set by [`OAuthStore::consume_code`]).
    pub family: Option<FamilyId>,
}

/// The answer of [`OAuthStore::consume_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeUse {
    /// This call marked the code used (exactly one caller ever gets this).
    Consumed(AuthorizationCode),
    /// The code was used before: a replay. The caller should revoke `family`.
    AlreadyUsed(AuthorizationCode),
    /// No such code.
    Unknown,
}

/// Access or refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthTokenKind {
    /// An access token (sent to resource servers).
    Access,
    /// A refresh token (sent to the token endpoint only).
    Refresh,
}

impl OAuthTokenKind {
    /// `access` or `refresh` (also RFC 7009's `token_type_hint` values minus `_token`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
        }
    }

    /// Parses [`OAuthTokenKind::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access" => Some(Self::Access),
            "refresh" => Some(Self::Refresh),
            _ => None,
        }
    }
}

/// A stored access or refresh token (never the token: its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthToken {
    /// Primary key.
    pub id: i64,
    /// Access or refresh.
    pub kind: OAuthTokenKind,
    /// Digest of the token.
    pub digest: SecretDigest,
    /// The client it was issued to.
    pub application: ApplicationId,
    /// The resource owner; `None` for `client_credentials` tokens.
    pub user_id: Option<UserId>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The grant it descends from: every token of one authorization (code exchange, client
    /// credentials, password) and of its refreshes shares it.
    pub family: FamilyId,
    /// Issue time.
    pub created: OffsetDateTime,
    /// Expiry.
    pub expires_at: OffsetDateTime,
    /// Refresh tokens: when it was exchanged (rotation); a used refresh token is dead.
    pub used_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

impl OAuthToken {
    /// Neither used, revoked nor expired at `now`.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.used_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

/// A token to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOAuthToken {
    /// Access or refresh.
    pub kind: OAuthTokenKind,
    /// Digest of the token.
    pub digest: SecretDigest,
    /// The client.
    pub application: ApplicationId,
    /// The resource owner (`None`: client credentials).
    pub user_id: Option<UserId>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The grant's family.
    pub family: FamilyId,
    /// Issue time.
    pub created: OffsetDateTime,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

/// The answer of [`OAuthStore::rotate_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthRefreshUse {
    /// This call marked the refresh token used and stored the replacements (exactly one
    /// caller ever gets this).
    Consumed(OAuthToken),
    /// The token was used before: a replay. The caller should revoke its family.
    AlreadyUsed(OAuthToken),
    /// Revoked, or not a refresh token.
    Revoked(OAuthToken),
    /// No such token.
    Unknown,
}

/// An application the user has authorized, as the account page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedApplication {
    /// The application.
    pub application: Application,
    /// Union of the scopes of the live tokens.
    pub scopes: Vec<String>,
    /// Most recent token issue.
    pub last_issued: OffsetDateTime,
}

/// OAuth2 provider state: applications, codes, tokens.
#[async_trait]
pub trait OAuthStore: Send + Sync + 'static {
    /// Registers an application; a taken `client_id` is
    /// [`StoreError::Conflict`]`("application")`.
    async fn create_application(&self, app: NewApplication) -> Result<Application, StoreError>;
    /// The application with this `client_id`.
    async fn application_by_client_id(
        &self,
        client_id: &str,
    ) -> Result<Option<Application>, StoreError>;
    /// The application with this primary key.
    async fn application_by_id(&self, id: ApplicationId)
        -> Result<Option<Application>, StoreError>;
    /// Every application, by id.
    async fn applications(&self) -> Result<Vec<Application>, StoreError>;
    /// Replaces the secret digest; the application's tokens stay valid. Returns whether the
    /// application exists.
    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_digest: Option<SecretDigest>,
    ) -> Result<bool, StoreError>;
    /// Applies `update` to the application; returns it as it is now, or `None` when there is
    /// no such application. Issued codes and tokens are not touched.
    async fn update_application(
        &self,
        client_id: &str,
        update: ApplicationUpdate,
    ) -> Result<Option<Application>, StoreError>;
    /// Deletes the application and its codes and tokens. Returns whether it existed.
    async fn delete_application(&self, client_id: &str) -> Result<bool, StoreError>;

    /// Stores a code (`used_at` and `family` are `None`); a digest collision is
    /// [`StoreError::Conflict`]`("authorization code")`.
    async fn create_code(&self, code: AuthorizationCode) -> Result<(), StoreError>;
    /// The code with this digest (used or not, expired or not), without changing it: the token
    /// endpoint validates a code (client, redirect URI, PKCE, expiry) before consuming it, so
    /// that a failed exchange writes nothing.
    async fn code_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCode>, StoreError>;
    /// Atomically marks the code used at `at` and records `family` — only if it was unused —
    /// and, when that succeeded, stores `tokens` (the exchange's tokens, in `family`) in the
    /// same transaction: all or nothing. So a replay that sees [`CodeUse::AlreadyUsed`] and
    /// revokes the family always finds the first exchange's tokens. Expired codes are consumed
    /// too (the caller checks `expires_at` first). Of concurrent calls for one code exactly one
    /// gets [`CodeUse::Consumed`]; the others store nothing.
    async fn consume_code(
        &self,
        digest: &SecretDigest,
        family: &FamilyId,
        tokens: Vec<NewOAuthToken>,
        at: OffsetDateTime,
    ) -> Result<CodeUse, StoreError>;

    /// Stores tokens, all or nothing; a digest collision is
    /// [`StoreError::Conflict`]`("oauth token")` and writes nothing.
    async fn create_oauth_tokens(&self, tokens: Vec<NewOAuthToken>) -> Result<(), StoreError>;
    /// The token with this digest and its owner (one query). Used, revoked and expired tokens
    /// are returned too; the caller decides. A token whose user has been deleted is gone.
    async fn oauth_token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(OAuthToken, Option<User>)>, StoreError>;
    /// Atomically marks the refresh token `digest` used — only if it is a refresh token,
    /// neither used nor revoked — and then stores `replacements`, all or nothing.
    async fn rotate_refresh(
        &self,
        digest: &SecretDigest,
        replacements: Vec<NewOAuthToken>,
        at: OffsetDateTime,
    ) -> Result<OAuthRefreshUse, StoreError>;
    /// Revokes one token (if not yet revoked); returns whether it changed.
    async fn revoke_oauth_token(&self, id: i64, at: OffsetDateTime) -> Result<bool, StoreError>;
    /// Revokes every token of the family not yet revoked; returns how many.
    async fn revoke_oauth_family(
        &self,
        family: &FamilyId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError>;
    /// Applications for which the user holds live (unrevoked, unexpired at `now`, unused)
    /// tokens, by application id.
    async fn authorized_applications(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<AuthorizedApplication>, StoreError>;
    /// Ends everything the user granted the application, in one transaction: deletes their
    /// codes for it (so a pending code can no longer be exchanged), then revokes every token
    /// they hold for it — in that order, so that a code exchange racing this call either
    /// finds its code gone or stored its tokens before they are revoked. Returns how many
    /// codes and tokens it ended.
    async fn revoke_authorization(
        &self,
        user_id: UserId,
        application: ApplicationId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError>;
    /// Deletes codes and tokens with `expires_at <= now`; returns how many.
    async fn delete_expired_oauth(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}
