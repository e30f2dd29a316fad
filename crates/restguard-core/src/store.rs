//! Store traits, one per concern. Implementations (memory, SQLite, …) live in
//! `restguard-store` and all pass its conformance suite.

use std::{error::Error as StdError, fmt, sync::Arc};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::identity::{User, UserId};

pub use crate::oauth_store::{
    Application, ApplicationId, ApplicationUpdate, AuthorizationCode, AuthorizedApplication,
    ClientType, CodeUse, NewApplication, NewOAuthToken, OAuthRefreshUse, OAuthStore, OAuthToken,
    OAuthTokenKind,
};

/// A boxed error cause.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached (connection refused, pool timed out): 503.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    /// A uniqueness rule was violated (for example a duplicate username).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// Any other backend failure: 500, with the cause only in the log.
    #[error("storage error")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// Wraps a cause as [`StoreError::Unavailable`].
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }

    /// Wraps a cause as [`StoreError::Backend`].
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Self::Backend(e.into())
    }

    /// True when retrying later may help (503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A user to create.
#[derive(Clone)]
pub struct NewUser {
    /// Unique login name.
    pub username: String,
    /// E-mail (may be empty).
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Password hash in PHC or Django format; `None` stores an unusable password.
    pub password_hash: Option<String>,
    /// Active flag.
    pub is_active: bool,
    /// Staff flag.
    pub is_staff: bool,
    /// Superuser flag.
    pub is_superuser: bool,
    /// Creation time (imports keep Django's `date_joined`).
    pub date_joined: OffsetDateTime,
    /// Last login (imports keep Django's value).
    pub last_login: Option<OffsetDateTime>,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl NewUser {
    /// An active, non-staff user named `username` with no password, joined now.
    pub fn new(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            password_hash: None,
            is_active: true,
            is_staff: false,
            is_superuser: false,
            date_joined: OffsetDateTime::now_utc(),
            last_login: None,
        }
    }
}

/// The value Django stores for an unusable password.
pub const UNUSABLE_PASSWORD: &str = "!";

/// Users and their password hashes.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user; a taken username is [`StoreError::Conflict`]`("user")`.
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    /// A user by id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// A user by exact username.
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// A user and their stored password hash, by exact username.
    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError>;
    /// Replaces the password hash, sets `credentials_changed_at` to `at`, and in the same
    /// transaction revokes every API token of the user (CONTRACT §10). Returns whether the user
    /// exists.
    async fn set_password(
        &self,
        id: UserId,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Replaces the hash only if it is still `old` (a re-hash on login, which must not undo a
    /// concurrent password change). Does not touch `credentials_changed_at`.
    async fn upgrade_password_hash(
        &self,
        id: UserId,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError>;
    /// Sets the active flag; deactivation also sets `credentials_changed_at` to `at` and
    /// revokes the user's API tokens. Returns whether the user exists.
    async fn set_active(
        &self,
        id: UserId,
        active: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Sets the staff and superuser flags. Returns whether the user exists.
    async fn set_roles(
        &self,
        id: UserId,
        is_staff: bool,
        is_superuser: bool,
    ) -> Result<bool, StoreError>;
    /// Deletes the user and everything that belongs to them. Returns whether they existed.
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError>;
    /// Records a successful password login.
    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Users ordered by id, optionally filtered by a case-insensitive substring of the username
    /// or e-mail.
    async fn list_users(
        &self,
        search: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<User>, StoreError>;
}

/// An API token's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub i64);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The keyed digest of a secret (HMAC-SHA-256): what the database holds instead of the
/// secret, and what lookups use.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest(pub [u8; 32]);

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// A stored API token (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Primary key.
    pub id: TokenId,
    /// Owner.
    pub user_id: UserId,
    /// Name given by the owner (may be empty).
    pub name: String,
    /// The key's first 8 characters, for recognition.
    pub prefix: String,
    /// Digest of the key.
    pub digest: SecretDigest,
    /// When it was issued.
    pub created: OffsetDateTime,
    /// When it last authenticated a request (updated at most once a minute).
    pub last_used: Option<OffsetDateTime>,
    /// When it stops working.
    pub expiry: Option<OffsetDateTime>,
}

impl ApiToken {
    /// True when expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }
}

/// An API token to store.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    /// Owner.
    pub user_id: UserId,
    /// Name.
    pub name: String,
    /// The key's first 8 characters.
    pub prefix: String,
    /// Digest of the key.
    pub digest: SecretDigest,
    /// Issue time.
    pub created: OffsetDateTime,
    /// Expiry.
    pub expiry: Option<OffsetDateTime>,
}

/// API tokens (DRF authtoken / knox).
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a token; a digest collision is [`StoreError::Conflict`]`("token")`.
    async fn create_token(&self, token: NewApiToken) -> Result<ApiToken, StoreError>;
    /// The token with this digest and its owner (one query, no scan). Expired tokens are
    /// returned too; the caller decides.
    async fn token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(ApiToken, User)>, StoreError>;
    /// The user's tokens, oldest first.
    async fn tokens_for_user(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError>;
    /// Deletes one of the user's tokens; returns it if it existed and was theirs.
    async fn revoke_token(
        &self,
        user_id: UserId,
        id: TokenId,
    ) -> Result<Option<ApiToken>, StoreError>;
    /// Deletes all of the user's tokens; returns them.
    async fn revoke_all_tokens(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError>;
    /// Atomically deletes `id` (if it is the user's) and stores `replacement`. Returns the old
    /// and the new token, or `None` (nothing written) when `id` is not the user's.
    async fn rotate_token(
        &self,
        user_id: UserId,
        id: TokenId,
        replacement: NewApiToken,
    ) -> Result<Option<(ApiToken, ApiToken)>, StoreError>;
    /// Records use.
    async fn touch_token(&self, id: TokenId, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Deletes tokens expired at `now`; returns how many.
    async fn delete_expired_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// A stored value that is kept wrapped (encrypted under the key-encryption key, see
/// `restguard::sealing`): which row of which table it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WrappedKey<'a> {
    /// The value of the server secret `name` (the digest key).
    ServerSecret {
        /// The secret's name.
        name: &'a str,
    },
    /// The private key of the JWT / id_token signing key `kid`.
    SigningKey {
        /// The key's id.
        kid: &'a str,
        /// Its JWA algorithm.
        algorithm: &'a str,
    },
}

/// Re-wraps one stored value (see [`SecretStore::rewrap_keys`]): `Ok(Some(new))` replaces
/// it, `Ok(None)` keeps it, `Err` aborts the whole rewrap.
pub type Rewrap<'f> =
    dyn Fn(WrappedKey<'_>, &[u8]) -> Result<Option<Vec<u8>>, BoxError> + Send + Sync + 'f;

/// Server-wide secrets (digest keys, signing keys), shared by every instance on one database.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Returns the secret stored under `name`, storing `candidate` first if there is none.
    /// Concurrent callers (even on other instances) all get the same value.
    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Passes every wrapped value the backend holds — each server secret's value and each
    /// signing key's private key, as stored — to `rewrap`, and writes the replacements it
    /// returns, all in one transaction: when `rewrap` fails for any value, nothing is written
    /// and its error is returned as [`StoreError::Backend`]. Writers of these rows on other
    /// connections wait meanwhile. When `rewrap` replaces nothing, nothing is written.
    /// Returns how many values were replaced.
    ///
    /// This is how the key-encryption key is introduced (values stored in clear are sealed in
    /// place) and rotated (every value re-sealed under the new key) atomically.
    async fn rewrap_keys(&self, rewrap: &Rewrap<'_>) -> Result<u64, StoreError>;
}

/// A refresh-token family's id: every refresh token descended (by rotation) from one login
/// shares it, so that presenting a rotated token can revoke all of them (RFC 9700 §4.14.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FamilyId(pub String);

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JWT refresh token to record (never the token: its `jti`'s digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    /// Digest of the token's `jti`.
    pub jti: SecretDigest,
    /// The family (ignored by [`JwtStore::consume_refresh`], which uses the consumed token's).
    pub family: FamilyId,
    /// Owner.
    pub user_id: UserId,
    /// Issue time.
    pub created: OffsetDateTime,
    /// The token's `exp`.
    pub expires_at: OffsetDateTime,
}

/// A recorded JWT refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// Digest of the token's `jti`.
    pub jti: SecretDigest,
    /// The family.
    pub family: FamilyId,
    /// Owner.
    pub user_id: UserId,
    /// Issue time.
    pub created: OffsetDateTime,
    /// The token's `exp`.
    pub expires_at: OffsetDateTime,
    /// When it was exchanged for a new one (rotation); a used token is dead.
    pub used_at: Option<OffsetDateTime>,
    /// When its family was revoked (reuse detected, logout).
    pub revoked_at: Option<OffsetDateTime>,
}

/// The answer of [`JwtStore::consume_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// This call marked the token used (exactly one caller ever gets this); the replacement,
    /// if any, was stored in the same family. Holds the consumed token and the replacement.
    Consumed(RefreshToken, Option<RefreshToken>),
    /// The token had been used before: a replay. The caller should revoke the family.
    AlreadyUsed(RefreshToken),
    /// The token's family has been revoked.
    Revoked(RefreshToken),
    /// No such token.
    Unknown,
}

/// JWT state: refresh-token records (families, single use) and the `jti` blacklist.
///
/// Only digests of `jti`s are stored (CONTRACT §10).
#[async_trait]
pub trait JwtStore: Send + Sync + 'static {
    /// Records a refresh token; a digest collision is [`StoreError::Conflict`]`("refresh token")`.
    async fn create_refresh(&self, token: NewRefreshToken) -> Result<RefreshToken, StoreError>;
    /// The recorded refresh token with this `jti` digest.
    async fn refresh_by_jti(&self, jti: &SecretDigest) -> Result<Option<RefreshToken>, StoreError>;
    /// Atomically marks the token used — only if it is neither used nor revoked — and, when
    /// that succeeded, stores `replacement` in the consumed token's family, all or nothing.
    /// Of any number of concurrent calls for one token, exactly one gets
    /// [`RefreshUse::Consumed`] (a conditional write, never check-then-act).
    async fn consume_refresh(
        &self,
        jti: &SecretDigest,
        replacement: Option<NewRefreshToken>,
        at: OffsetDateTime,
    ) -> Result<RefreshUse, StoreError>;
    /// Rotation without blacklisting (Simple JWT's `BLACKLIST_AFTER_ROTATION = False`): stores
    /// `replacement` in the family of `parent`, only if `parent` belongs to
    /// `replacement.user_id` and is neither used nor revoked. `None` (nothing written)
    /// otherwise. Backends should make this one conditional statement; the default reads then
    /// writes.
    async fn extend_family(
        &self,
        parent: &SecretDigest,
        replacement: NewRefreshToken,
    ) -> Result<Option<RefreshToken>, StoreError> {
        match self.refresh_by_jti(parent).await? {
            Some(p)
                if p.used_at.is_none()
                    && p.revoked_at.is_none()
                    && p.user_id == replacement.user_id =>
            {
                let family = p.family;
                self.create_refresh(NewRefreshToken {
                    family,
                    ..replacement
                })
                .await
                .map(Some)
            }
            _ => Ok(None),
        }
    }
    /// Ends the family: revokes every member that could still be used (neither used nor
    /// revoked); returns how many. Members already used stay as they are — they can never be
    /// used again, and presenting one is reuse.
    async fn revoke_family(&self, family: &FamilyId, at: OffsetDateTime)
        -> Result<u64, StoreError>;
    /// Adds a `jti` to the blacklist; `false` when it already was.
    async fn blacklist_jti(
        &self,
        jti: &SecretDigest,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Whether the `jti` is blacklisted.
    async fn is_blacklisted(&self, jti: &SecretDigest) -> Result<bool, StoreError>;
    /// Deletes refresh records and blacklist rows with `expires_at <= now`; returns how many.
    async fn delete_expired_jwt(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// A stored JWT signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Key id (the JWT header's `kid`), unique.
    pub kid: String,
    /// JWA name: `HS256`, `RS256`, `ES256`, `EdDSA`, ….
    pub algorithm: String,
    /// Private key: the HMAC secret, or a PKCS#8 PEM document.
    pub private_key: Vec<u8>,
    /// The public key as a JWK (JSON), for asymmetric algorithms.
    pub public_jwk: Option<String>,
    /// When it was created.
    pub created: OffsetDateTime,
    /// When a newer key replaced it for signing (it still verifies for a while).
    pub retired_at: Option<OffsetDateTime>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"[redacted]")
            .field("public_jwk", &self.public_jwk)
            .field("created", &self.created)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

/// JWT signing keys, shared by every instance on one database.
#[async_trait]
pub trait SigningKeyStore: Send + Sync + 'static {
    /// Every key, oldest first (ties by `kid`).
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;
    /// Stores `key` only if no key of its algorithm is active (not retired); returns whether
    /// it was stored. Atomic: of instances starting together, one key wins.
    async fn add_first_signing_key(&self, key: SigningKey) -> Result<bool, StoreError>;
    /// Atomically retires (at `at`) every active key of `key`'s algorithm and stores `key`.
    /// A duplicate `kid` is [`StoreError::Conflict`]`("signing key")` and writes nothing.
    async fn rotate_signing_key(
        &self,
        key: SigningKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Deletes keys retired at or before `before`; returns how many.
    async fn delete_retired_signing_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// A server-side session's primary key: a non-secret handle for listing and ending sessions
/// (the secret session id lives only in the cookie; the store holds its digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub i64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A stored browser session (never the cookie value: its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Primary key.
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// Digest of the session id (the cookie value).
    pub digest: SecretDigest,
    /// When the user logged in.
    pub created: OffsetDateTime,
    /// Last request seen (written at most about once a minute).
    pub last_seen: OffsetDateTime,
    /// Absolute end of the session.
    pub expires_at: OffsetDateTime,
    /// The browser's `User-Agent` at login (truncated).
    pub user_agent: String,
    /// The client IP at login, if known.
    pub ip: Option<String>,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Owner.
    pub user_id: UserId,
    /// Digest of the session id.
    pub digest: SecretDigest,
    /// Login time (also the first `last_seen`).
    pub created: OffsetDateTime,
    /// Absolute end.
    pub expires_at: OffsetDateTime,
    /// `User-Agent` at login.
    pub user_agent: String,
    /// Client IP at login.
    pub ip: Option<String>,
}

/// Server-side sessions (Django's `django_session`, keyed by digest).
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a session; a digest collision is [`StoreError::Conflict`]`("session")`, an
    /// unknown owner a backend error.
    async fn create_session(&self, session: NewSession) -> Result<SessionRecord, StoreError>;
    /// The session with this digest and its owner (one query, no scan). Expired sessions are
    /// returned too; the caller decides.
    async fn session_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(SessionRecord, User)>, StoreError>;
    /// The user's sessions, oldest first.
    async fn sessions_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError>;
    /// Records activity.
    async fn touch_session(&self, id: SessionId, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Deletes one of the user's sessions; returns it if it existed and was theirs.
    async fn delete_session(
        &self,
        user_id: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Deletes all of the user's sessions except `keep`; returns the deleted ones.
    async fn delete_user_sessions(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Deletes sessions with `expires_at <= now`, and, when `idle_before` is given, those last
    /// seen at or before it; returns how many.
    async fn delete_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_before: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError>;
}

/// Reachability of a backend (`/readyz`) and schema management.
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
    /// Fails when the backend cannot answer.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The stores a server or app uses, each behind its trait.
#[derive(Clone)]
pub struct Stores {
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// API tokens.
    pub tokens: Arc<dyn TokenStore>,
    /// Server secrets.
    pub secrets: Arc<dyn SecretStore>,
    /// JWT refresh records and blacklist.
    pub jwt: Arc<dyn JwtStore>,
    /// JWT signing keys.
    pub signing_keys: Arc<dyn SigningKeyStore>,
    /// Browser sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// OAuth2 applications, codes and tokens.
    pub oauth: Arc<dyn OAuthStore>,
    /// Health.
    pub health: Arc<dyn StoreHealth>,
}

impl Stores {
    /// Uses one backend for every concern.
    pub fn from_backend<B>(backend: Arc<B>) -> Self
    where
        B: UserStore
            + TokenStore
            + SecretStore
            + JwtStore
            + SigningKeyStore
            + SessionStore
            + OAuthStore
            + StoreHealth,
    {
        Self {
            users: backend.clone(),
            tokens: backend.clone(),
            secrets: backend.clone(),
            jwt: backend.clone(),
            signing_keys: backend.clone(),
            sessions: backend.clone(),
            oauth: backend.clone(),
            health: backend,
        }
    }
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stores")
    }
}
