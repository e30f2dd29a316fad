//! [`JwtService`]: issues, refreshes, verifies and blacklists tokens.

use std::{sync::Arc, time::Duration};

use restguard_core::{
    identity::{AuthInfo, Identity, Scheme, User, UserId},
    invalidation::{Invalidation, InvalidationBus},
    secret::SecretString,
    store::{
        FamilyId, JwtStore, NewRefreshToken, RefreshUse, SecretDigest, SigningKeyStore, StoreError,
        Stores, UserStore,
    },
};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::{
    codec::{self, Expect, KeyLookup, Verified},
    keys::{self, JwtAlgorithm, KeyError, KeyRing, KeySet, KeySource, ROTATION_MARGIN},
    JwtError, TokenProblem, TokenType,
};
use crate::digest::{ordered_id, ordered_id_locator, SecretDigester};

/// JWT settings (Simple JWT's `SIMPLE_JWT` dict, CONTRACT §9).
#[derive(Clone)]
pub struct JwtSettings {
    /// The one algorithm of this deployment (default HS256).
    pub algorithm: JwtAlgorithm,
    /// A configured key (HMAC secret, or private key PEM); `None`: generated and stored.
    pub signing_key: Option<SecretString>,
    /// Access token lifetime (default 5 min).
    pub access_token_lifetime: Duration,
    /// Refresh token lifetime (default 1 day).
    pub refresh_token_lifetime: Duration,
    /// Sliding token lifetime (default 5 min).
    pub sliding_token_lifetime: Duration,
    /// How long a sliding token may be refreshed (default 1 day).
    pub sliding_token_refresh_lifetime: Duration,
    /// Issue a new refresh token on every refresh (default true).
    pub rotate_refresh_tokens: bool,
    /// With rotation, the presented refresh token dies at once and its reuse revokes the
    /// family (default true). When false, old refresh tokens keep working until they expire
    /// (Simple JWT's behaviour), and reuse is not detected.
    pub blacklist_after_rotation: bool,
    /// `iss` set and required when given.
    pub issuer: Option<String>,
    /// `aud` set and required when given.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`, `nbf`, `iat` (default 0).
    pub leeway: Duration,
    /// Identify requests from the claims alone, with no user lookup (default false).
    pub stateless: bool,
    /// How long users are cached in process for token checks (default 1 s; zero disables).
    pub user_cache_ttl: Duration,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            signing_key: None,
            access_token_lifetime: Duration::from_secs(300),
            refresh_token_lifetime: Duration::from_secs(86_400),
            sliding_token_lifetime: Duration::from_secs(300),
            sliding_token_refresh_lifetime: Duration::from_secs(86_400),
            rotate_refresh_tokens: true,
            blacklist_after_rotation: true,
            issuer: None,
            audience: None,
            leeway: Duration::ZERO,
            stateless: false,
            user_cache_ttl: Duration::from_secs(1),
        }
    }
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("algorithm", &self.algorithm)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "[redacted]"),
            )
            .field("access_token_lifetime", &self.access_token_lifetime)
            .field("refresh_token_lifetime", &self.refresh_token_lifetime)
            .field("rotate_refresh_tokens", &self.rotate_refresh_tokens)
            .field("blacklist_after_rotation", &self.blacklist_after_rotation)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("stateless", &self.stateless)
            .finish_non_exhaustive()
    }
}

impl JwtSettings {
    /// How long a retired key keeps verifying: the longest token lifetime, plus leeway, plus
    /// a minute for instances that signed with it just after the rotation and for clock skew.
    pub fn verify_window(&self) -> Duration {
        self.access_token_lifetime
            .max(self.refresh_token_lifetime)
            .max(self.sliding_token_refresh_lifetime)
            + self.leeway
            + ROTATION_MARGIN
    }
}

/// `POST /api/token/`'s answer.
#[derive(Clone)]
pub struct TokenPair {
    /// The refresh token.
    pub refresh: String,
    /// The access token.
    pub access: String,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenPair([redacted])")
    }
}

/// `POST /api/token/refresh/`'s answer.
#[derive(Clone)]
pub struct Refreshed {
    /// A new access token.
    pub access: String,
    /// The replacement refresh token, when rotation is on.
    pub refresh: Option<String>,
}

impl std::fmt::Debug for Refreshed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refreshed([redacted])")
    }
}

struct Inner {
    settings: JwtSettings,
    keys: Arc<KeyRing>,
    jwt: Arc<dyn JwtStore>,
    users: Arc<dyn UserStore>,
    digester: SecretDigester,
    /// Users by id (`None`: no such user), for the hot path.
    user_cache: moka::sync::Cache<UserId, Option<Arc<User>>, FastHash>,
    /// Sliding-token `jti` digests known not to be blacklisted.
    not_blacklisted: moka::sync::Cache<SecretDigest, ()>,
    /// Access and sliding tokens whose signature and claims already checked out, by the
    /// exact token text, with the key ring's generation at the time: a client presents the
    /// same access token for minutes, and asymmetric verification costs tens of
    /// microseconds. Time claims are re-checked on every hit, and the signature again once a
    /// key has stopped verifying (the generation moved); user checks are never cached here.
    verified: moka::sync::Cache<String, (Arc<Verified>, u64), FastHash>,
    /// Where blacklisted sliding tokens are announced, and user changes heard, when attached.
    bus: crate::invalidation::BusLink,
}

impl Inner {
    fn drop_cached(&self, event: Invalidation) {
        match event {
            Invalidation::User(user_id) => self.user_cache.invalidate(&user_id),
            Invalidation::Digest(digest) => self.not_blacklisted.invalidate(&digest),
            _ => {
                self.user_cache.invalidate_all();
                self.not_blacklisted.invalidate_all();
            }
        }
    }
}

/// The hasher of the per-request caches: seeded per process, and a few times faster than
/// SipHash on a 200-byte token. Only verified tokens (signed by our key) and user ids are
/// keys, so nobody can choose colliding keys.
type FastHash = foldhash::fast::RandomState;

/// How long a verified token is remembered (its `exp` is still checked on every use).
const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(300);
/// How many verified tokens are remembered.
const VERIFIED_CACHE_CAPACITY: u64 = 50_000;

/// Issues and checks JWTs. Cheap to clone.
#[derive(Clone)]
pub struct JwtService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwtService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtService")
            .field("algorithm", &self.inner.settings.algorithm)
            .finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

fn signing_failed(e: jsonwebtoken::errors::Error) -> JwtError {
    JwtError::Store(StoreError::backend(format!("JWT signing failed: {e}")))
}

impl JwtService {
    /// A service over `stores` (users, JWT records, signing keys, the shared digest key).
    /// Generates and stores the first signing key when there is none.
    pub async fn from_stores(stores: &Stores, settings: JwtSettings) -> Result<Self, KeyError> {
        let digester = SecretDigester::from_store(stores.secrets.as_ref()).await?;
        Self::new(
            stores.users.clone(),
            stores.jwt.clone(),
            stores.signing_keys.clone(),
            digester,
            settings,
        )
        .await
    }

    /// A service over explicit stores.
    pub async fn new(
        users: Arc<dyn UserStore>,
        jwt: Arc<dyn JwtStore>,
        signing_keys: Arc<dyn SigningKeyStore>,
        digester: SecretDigester,
        settings: JwtSettings,
    ) -> Result<Self, KeyError> {
        let source = match &settings.signing_key {
            Some(material) => {
                let key = keys::configured_key(settings.algorithm, material.expose())?;
                KeySource::Configured(Arc::new(keys::configured_set(&key)?))
            }
            None => KeySource::Stored {
                store: signing_keys,
                algorithm: settings.algorithm,
                verify_window: settings.verify_window(),
            },
        };
        let keys = KeyRing::start(source).await?;
        let ttl = settings.user_cache_ttl;
        let capacity = if ttl.is_zero() { 0 } else { 100_000 };
        let ttl = ttl.max(Duration::from_millis(1));
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                jwt,
                users,
                digester,
                user_cache: moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build_with_hasher(FastHash::default()),
                not_blacklisted: moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build(),
                verified: moka::sync::Cache::builder()
                    .max_capacity(VERIFIED_CACHE_CAPACITY)
                    .time_to_live(VERIFIED_CACHE_TTL)
                    .build_with_hasher(FastHash::default()),
                bus: crate::invalidation::BusLink::default(),
                settings,
            }),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &JwtSettings {
        &self.inner.settings
    }

    /// The JWKS document: every verification key for asymmetric algorithms, `{"keys": []}`
    /// for HMAC (secrets are never published).
    pub fn jwks(&self) -> Value {
        self.inner.keys.current().jwks.clone()
    }

    /// Re-reads the signing keys from the store now (every running service also does so on
    /// its own once a second, so another process's `restguard keys rotate` is in use here
    /// within about a second).
    pub async fn reload_keys(&self) -> Result<(), KeyError> {
        self.inner.keys.reload().await
    }

    /// The `kid` that signs new tokens.
    pub fn signing_kid(&self) -> String {
        self.inner.keys.current().signing.kid.clone()
    }

    /// Drops what other instances announce on `bus` (a user's password change, deactivation
    /// or deletion: the per-user "valid after" check is read again at once) and announces
    /// blacklisted sliding tokens there.
    pub fn with_invalidations(self, bus: Arc<dyn InvalidationBus>) -> Self {
        self.inner.bus.attach(bus, &self.inner, Inner::drop_cached);
        self
    }

    /// Drops the cached user (after a password change or deactivation made in this process).
    pub fn forget_user(&self, user_id: UserId) {
        self.inner.user_cache.invalidate(&user_id);
    }

    fn digest(&self, jti: &str) -> SecretDigest {
        self.inner
            .digester
            .digest_located(ordered_id_locator(jti), jti)
    }

    // ----- issuing -----

    /// Claims common to every token, in Simple JWT's order.
    fn claims(
        &self,
        token_type: TokenType,
        user_id: UserId,
        iat: i64,
        exp: i64,
        jti: &str,
    ) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("token_type".into(), json!(token_type.as_str()));
        claims.insert("exp".into(), json!(exp));
        claims.insert("iat".into(), json!(iat));
        claims.insert("jti".into(), json!(jti));
        claims.insert("user_id".into(), json!(user_id.to_string()));
        if let Some(iss) = &self.inner.settings.issuer {
            claims.insert("iss".into(), json!(iss));
        }
        if let Some(aud) = &self.inner.settings.audience {
            claims.insert("aud".into(), json!(aud));
        }
        claims
    }

    fn sign(&self, keys: &KeySet, claims: Map<String, Value>) -> Result<String, JwtError> {
        codec::sign(&Value::Object(claims), &keys.signing).map_err(signing_failed)
    }

    /// The issue time for a token of `user`: now, but strictly after the second of the last
    /// credential change, so `iat` (whole seconds) orders unambiguously against it. Right
    /// after a password change this waits for the next second (at most 1 s).
    async fn issue_time(user: &User) -> i64 {
        let changed = user.credentials_changed_at;
        loop {
            let t = now();
            if changed <= user.date_joined || t.unix_timestamp() > changed.unix_timestamp() {
                return t.unix_timestamp();
            }
            let to_next_second = 1_000_000_000 - i64::from(t.nanosecond()) + 1_000_000;
            tokio::time::sleep(Duration::from_nanos(to_next_second.unsigned_abs())).await;
        }
    }

    /// An access token for `user` (nothing stored).
    pub async fn access_token(&self, user: &User) -> Result<String, JwtError> {
        let iat = Self::issue_time(user).await;
        let keys = self.inner.keys.current();
        self.access_at(&keys, user.id, iat)
    }

    fn access_at(&self, keys: &KeySet, user_id: UserId, iat: i64) -> Result<String, JwtError> {
        let exp = iat + secs(self.inner.settings.access_token_lifetime);
        let claims = self.claims(TokenType::Access, user_id, iat, exp, &ordered_id());
        self.sign(keys, claims)
    }

    fn new_refresh(
        &self,
        keys: &KeySet,
        user_id: UserId,
        iat: i64,
        family: FamilyId,
    ) -> Result<(String, NewRefreshToken), JwtError> {
        let exp = iat + secs(self.inner.settings.refresh_token_lifetime);
        let jti = ordered_id();
        let token = self.sign(
            keys,
            self.claims(TokenType::Refresh, user_id, iat, exp, &jti),
        )?;
        let record = NewRefreshToken {
            jti: self.digest(&jti),
            family,
            user_id,
            created: now(),
            expires_at: OffsetDateTime::from_unix_timestamp(exp)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        };
        Ok((token, record))
    }

    /// A new refresh + access pair for `user` (who just proved their credentials); starts a
    /// new refresh family.
    pub async fn issue_pair(&self, user: &User) -> Result<TokenPair, JwtError> {
        let iat = Self::issue_time(user).await;
        let keys = self.inner.keys.current();
        let family = FamilyId(ordered_id());
        let (refresh, record) = self.new_refresh(&keys, user.id, iat, family)?;
        let access = self.access_at(&keys, user.id, iat)?;
        self.inner.jwt.create_refresh(record).await?;
        Ok(TokenPair { refresh, access })
    }

    /// A new sliding token for `user`.
    pub async fn issue_sliding(&self, user: &User) -> Result<String, JwtError> {
        let iat = Self::issue_time(user).await;
        let keys = self.inner.keys.current();
        let settings = &self.inner.settings;
        let exp = iat + secs(settings.sliding_token_lifetime);
        let mut claims = self.claims(TokenType::Sliding, user.id, iat, exp, &ordered_id());
        claims.insert(
            "refresh_exp".into(),
            json!(iat + secs(settings.sliding_token_refresh_lifetime)),
        );
        self.sign(&keys, claims)
    }

    // ----- checking -----

    /// Verifies signature and claims, expecting one of `types`.
    async fn decode(&self, token: &str, types: &[TokenType]) -> Result<Verified, TokenProblem> {
        let ring = &self.inner.keys;
        let settings = &self.inner.settings;
        let expect = Expect {
            types,
            now: now().unix_timestamp(),
            leeway: secs(settings.leeway),
            issuer: settings.issuer.as_deref(),
            audience: settings.audience.as_deref(),
        };
        let key = match codec::check_header(token, &ring.current())? {
            KeyLookup::Found(key) => key,
            KeyLookup::UnknownKid => {
                if !ring.reload_for_unknown_kid().await {
                    return Err(TokenProblem::Invalid);
                }
                match codec::check_header(token, &ring.current())? {
                    KeyLookup::Found(key) => key,
                    KeyLookup::UnknownKid => return Err(TokenProblem::Invalid),
                }
            }
        };
        codec::verify_with(token, &key, &expect)
    }

    /// The user named by a verified token, checked: exists, active, and no credential change
    /// since the token was issued.
    async fn user_for(&self, token: &Verified) -> Result<Arc<User>, JwtError> {
        let id = token
            .user_id
            .as_deref()
            .and_then(|s| s.parse::<i64>().ok())
            .map(UserId)
            .ok_or(JwtError::NoUserId)?;
        let cached = self.inner.user_cache.get(&id);
        let user = match cached {
            Some(found) => found,
            None => {
                let found = self.inner.users.user_by_id(id).await?.map(Arc::new);
                self.inner.user_cache.insert(id, found.clone());
                found
            }
        };
        let user = user.ok_or(JwtError::UserNotFound)?;
        if !user.is_active {
            return Err(JwtError::UserInactive);
        }
        // `iat` has whole seconds; tokens are issued strictly after the second of the last
        // change (see `issue_time`), so `iat <= floor(change)` means "issued before it".
        let changed = user.credentials_changed_at;
        if changed > user.date_joined && token.iat <= changed.unix_timestamp() {
            return Err(JwtError::PasswordChanged);
        }
        Ok(user)
    }

    /// A token verified before under the current keys (its `exp` still to be checked).
    pub(crate) fn verified_before(&self, token: &str) -> Option<Arc<Verified>> {
        let generation = self.inner.keys.generation();
        self.inner
            .verified
            .get(token)
            .filter(|(_, checked_at)| *checked_at == generation)
            .map(|(hit, _)| hit)
    }

    /// The identity for a request bearing an access (or sliding) token.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, (TokenType, JwtError)> {
        self.authenticate_with(token, self.verified_before(token))
            .await
    }

    /// [`Self::authenticate`] with the verified-token cache already asked.
    pub(crate) async fn authenticate_with(
        &self,
        token: &str,
        cached: Option<Arc<Verified>>,
    ) -> Result<Identity, (TokenType, JwtError)> {
        let generation = self.inner.keys.generation();
        let verified = match cached {
            Some(hit) => {
                let now_s = now().unix_timestamp();
                if hit.exp <= now_s.saturating_sub(secs(self.inner.settings.leeway)) {
                    self.inner.verified.invalidate(token);
                    return Err((hit.token_type, TokenProblem::Expired.into()));
                }
                hit
            }
            None => {
                let verified = Arc::new(
                    self.decode(token, &[TokenType::Access, TokenType::Sliding])
                        .await
                        .map_err(|p| (claimed_type(token), p.into()))?,
                );
                self.inner
                    .verified
                    .insert(token.to_owned(), (verified.clone(), generation));
                verified
            }
        };
        let token_type = verified.token_type;
        let fail = |e: JwtError| (token_type, e);
        if token_type == TokenType::Sliding {
            let digest = self.digest(&verified.jti);
            if !self.inner.not_blacklisted.contains_key(&digest) {
                if self
                    .inner
                    .jwt
                    .is_blacklisted(&digest)
                    .await
                    .map_err(|e| fail(e.into()))?
                {
                    return Err(fail(TokenProblem::Blacklisted.into()));
                }
                self.inner.not_blacklisted.insert(digest, ());
            }
        }
        let user = if self.inner.settings.stateless {
            Arc::new(user_from_claims(&verified).ok_or_else(|| fail(JwtError::NoUserId))?)
        } else {
            self.user_for(&verified).await.map_err(fail)?
        };
        let auth = AuthInfo::new(Scheme::Jwt).with_credential_id(verified.jti.clone());
        Ok(Identity::new(user, auth))
    }

    /// `POST /api/token/verify/`: any valid token of ours that is not blacklisted and whose
    /// user may still use it.
    pub async fn verify(&self, token: &str) -> Result<(), JwtError> {
        let verified = self
            .decode(
                token,
                &[TokenType::Access, TokenType::Refresh, TokenType::Sliding],
            )
            .await?;
        let digest = self.digest(&verified.jti);
        if self.inner.jwt.is_blacklisted(&digest).await? {
            return Err(TokenProblem::Blacklisted.into());
        }
        if verified.token_type == TokenType::Refresh {
            match self.inner.jwt.refresh_by_jti(&digest).await? {
                None => return Err(TokenProblem::Invalid.into()),
                Some(r) if r.revoked_at.is_some() => return Err(TokenProblem::Blacklisted.into()),
                Some(r) if r.used_at.is_some() && self.inner.settings.blacklist_after_rotation => {
                    return Err(TokenProblem::Blacklisted.into())
                }
                Some(_) => {}
            }
        }
        if !self.inner.settings.stateless && verified.user_id.is_some() {
            self.user_for(&verified).await?;
        }
        Ok(())
    }

    /// `POST /api/token/refresh/`: a new access token, and with rotation a new refresh token
    /// (the presented one dies; presenting it again revokes its family).
    pub async fn refresh(&self, token: &str) -> Result<Refreshed, JwtError> {
        let verified = self.decode(token, &[TokenType::Refresh]).await?;
        let user = self.user_for(&verified).await?;
        let digest = self.digest(&verified.jti);
        let settings = &self.inner.settings;
        let iat = Self::issue_time(&user).await;
        let keys = self.inner.keys.current();
        let access = self.access_at(&keys, user.id, iat)?;
        if !settings.rotate_refresh_tokens {
            match self.inner.jwt.refresh_by_jti(&digest).await? {
                None => return Err(TokenProblem::Invalid.into()),
                Some(r) if r.revoked_at.is_some() || r.used_at.is_some() => {
                    return Err(TokenProblem::Blacklisted.into())
                }
                Some(_) => {}
            }
            return Ok(Refreshed {
                access,
                refresh: None,
            });
        }
        if !settings.blacklist_after_rotation {
            // Rotation without blacklisting (Simple JWT's behaviour): the old token lives on;
            // the new one joins its family in one conditional write.
            let (refresh, new) = self.new_refresh(&keys, user.id, iat, FamilyId(String::new()))?;
            if self.inner.jwt.extend_family(&digest, new).await?.is_some() {
                return Ok(Refreshed {
                    access,
                    refresh: Some(refresh),
                });
            }
            return Err(match self.inner.jwt.refresh_by_jti(&digest).await? {
                None => TokenProblem::Invalid.into(),
                Some(_) => TokenProblem::Blacklisted.into(),
            });
        }
        // Signed before the write, so nothing can fail after the old token is consumed.
        let (refresh, new) = self.new_refresh(&keys, user.id, iat, FamilyId(String::new()))?;
        match self
            .inner
            .jwt
            .consume_refresh(&digest, Some(new), now())
            .await?
        {
            RefreshUse::Consumed(..) => Ok(Refreshed {
                access,
                refresh: Some(refresh),
            }),
            RefreshUse::AlreadyUsed(record) => {
                let revoked = self.inner.jwt.revoke_family(&record.family, now()).await?;
                tracing::warn!(
                    user_id = %record.user_id,
                    revoked,
                    "refresh token reuse detected; its family was revoked"
                );
                Err(TokenProblem::Blacklisted.into())
            }
            RefreshUse::Revoked(_) => Err(TokenProblem::Blacklisted.into()),
            RefreshUse::Unknown => Err(TokenProblem::Invalid.into()),
        }
    }

    /// `POST /api/token/blacklist/`: ends a refresh token and its family (logout).
    pub async fn blacklist(&self, token: &str) -> Result<(), JwtError> {
        let verified = self.decode(token, &[TokenType::Refresh]).await?;
        let digest = self.digest(&verified.jti);
        let record = match self.inner.jwt.refresh_by_jti(&digest).await? {
            None => return Err(TokenProblem::Invalid.into()),
            Some(r) => r,
        };
        if record.revoked_at.is_some() {
            return Err(TokenProblem::Blacklisted.into());
        }
        if record.used_at.is_some() && self.inner.settings.blacklist_after_rotation {
            // A rotated token presented again: reuse.
            self.inner.jwt.revoke_family(&record.family, now()).await?;
            return Err(TokenProblem::Blacklisted.into());
        }
        let expires = OffsetDateTime::from_unix_timestamp(verified.exp).unwrap_or_else(|_| now());
        if !self.inner.jwt.blacklist_jti(&digest, expires).await? {
            return Err(TokenProblem::Blacklisted.into());
        }
        self.inner.jwt.revoke_family(&record.family, now()).await?;
        Ok(())
    }

    /// Blacklists a sliding token (Simple JWT's `SlidingToken.blacklist()`).
    pub async fn blacklist_sliding(&self, token: &str) -> Result<(), JwtError> {
        let verified = self.decode(token, &[TokenType::Sliding]).await?;
        let digest = self.digest(&verified.jti);
        let expires = verified
            .refresh_exp
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .unwrap_or_else(now);
        self.inner.not_blacklisted.invalidate(&digest);
        if !self.inner.jwt.blacklist_jti(&digest, expires).await? {
            return Err(TokenProblem::Blacklisted.into());
        }
        self.inner.not_blacklisted.invalidate(&digest);
        self.inner.bus.publish(Invalidation::Digest(digest)).await;
        Ok(())
    }

    /// `POST /api/token/sliding/refresh/`: the same sliding token (same `jti`) with a new
    /// `exp`, while its `refresh_exp` has not passed.
    pub async fn refresh_sliding(&self, token: &str) -> Result<String, JwtError> {
        let verified = self.decode(token, &[TokenType::Sliding]).await?;
        let now_s = now().unix_timestamp();
        let refresh_exp = verified.refresh_exp.unwrap_or(0);
        if refresh_exp <= now_s.saturating_sub(secs(self.inner.settings.leeway)) {
            return Err(TokenProblem::Expired.into());
        }
        let digest = self.digest(&verified.jti);
        if self.inner.jwt.is_blacklisted(&digest).await? {
            return Err(TokenProblem::Blacklisted.into());
        }
        let user = self.user_for(&verified).await?;
        let iat = Self::issue_time(&user).await;
        let mut claims = verified.claims;
        claims.insert(
            "exp".into(),
            json!(iat + secs(self.inner.settings.sliding_token_lifetime)),
        );
        claims.insert("iat".into(), json!(iat));
        let keys = self.inner.keys.current();
        self.sign(&keys, claims)
    }
}

/// The `token_type` a token claims, read without trusting it (for the error's
/// `token_class`); anything but `sliding` counts as access.
fn claimed_type(token: &str) -> TokenType {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    if token.len() > codec::MAX_TOKEN_BYTES {
        return TokenType::Access;
    }
    let sliding = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|c| c.get("token_type").and_then(Value::as_str) == Some("sliding"));
    if sliding {
        TokenType::Sliding
    } else {
        TokenType::Access
    }
}

/// Simple JWT's `TokenUser`: a user made from the claims (stateless mode).
fn user_from_claims(token: &Verified) -> Option<User> {
    let id = token.user_id.as_deref()?.parse::<i64>().ok()?;
    let text = |name: &str| {
        token
            .claims
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let flag = |name: &str| {
        token
            .claims
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    Some(User {
        id: UserId(id),
        username: text("username"),
        email: text("email"),
        first_name: String::new(),
        last_name: String::new(),
        is_active: true,
        is_staff: flag("is_staff"),
        is_superuser: flag("is_superuser"),
        date_joined: OffsetDateTime::UNIX_EPOCH,
        last_login: None,
        credentials_changed_at: OffsetDateTime::UNIX_EPOCH,
    })
}
