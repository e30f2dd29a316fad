//! API tokens: DRF's `TokenAuthentication` with knox's storage model — many named tokens per
//! user, optional expiry, last-used time, keys shown once and stored as digests.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use http::HeaderValue;
use restguard_core::{
    authenticator::{Authenticator, Credentials, Outcome, RequestContext},
    identity::{AuthInfo, Identity, Scheme, User, UserId},
    invalidation::{Invalidation, InvalidationBus},
    secret::SecretString,
    store::{ApiToken, NewApiToken, SecretDigest, StoreError, Stores, TokenId, TokenStore},
    AuthError,
};
use time::OffsetDateTime;

use crate::digest::{random_secret, SecretDigester};

/// Every key starts with this, so secret scanners can recognise leaked keys.
pub const KEY_PREFIX: &str = "rg_";
/// Longest key ever checked (longer ones are refused without a lookup).
pub const MAX_KEY_LEN: usize = 100;
/// How many characters of a key are kept in clear for recognition.
pub const PREFIX_LEN: usize = 8;
/// `last_used` is written at most this often per token (knox's `MIN_REFRESH_INTERVAL`).
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// A freshly issued token: the stored record and the key, which is never shown again.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The stored record.
    pub token: ApiToken,
    /// The key to hand to the user.
    pub key: SecretString,
}

/// The result of checking a key.
#[derive(Debug, Clone)]
pub enum TokenCheck {
    /// A live token of an active user.
    Valid(Identity),
    /// Unknown, revoked or expired.
    Invalid,
    /// The owner is inactive.
    Inactive,
}

struct CachedToken {
    token: ApiToken,
    user: Arc<User>,
    last_touch: AtomicI64,
}

struct Inner {
    store: Arc<dyn TokenStore>,
    digester: SecretDigester,
    /// `None` when caching is off: every check reads the store.
    cache: Option<moka::sync::Cache<SecretDigest, Arc<CachedToken>>>,
    /// Where revocations are announced to other instances, when attached.
    bus: crate::invalidation::BusLink,
}

impl Inner {
    fn drop_cached(&self, event: Invalidation) {
        if let Some(cache) = &self.cache {
            crate::invalidation::drop_from(cache, event, |cached| cached.user.id);
        }
    }
}

/// Issues, checks, lists, rotates and revokes API tokens. Cheap to clone.
///
/// Checks are served from a short-lived in-process cache (default 1 s) so the hot path does
/// not touch the database; revocations through this service drop cache entries at once, and
/// changes made elsewhere (another process, the CLI) take effect within the cache lifetime.
#[derive(Clone)]
pub struct TokenService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").finish_non_exhaustive()
    }
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl TokenService {
    /// A service over `store`, digesting with `digester`, caching checks for `cache_ttl`
    /// (`Duration::ZERO` disables the cache).
    pub fn new(store: Arc<dyn TokenStore>, digester: SecretDigester, cache_ttl: Duration) -> Self {
        let cache = (!cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl)
                .support_invalidation_closures()
                .build()
        });
        Self {
            inner: Arc::new(Inner {
                store,
                digester,
                cache,
                bus: crate::invalidation::BusLink::default(),
            }),
        }
    }

    /// Announces revocations on `bus` and drops what other instances announce there, so a
    /// token revoked anywhere is refused here at once, not after the cache lifetime.
    pub fn with_invalidations(self, bus: Arc<dyn InvalidationBus>) -> Self {
        self.inner.bus.attach(bus, &self.inner, Inner::drop_cached);
        self
    }

    /// A service over the token store of `stores`, with the shared digest key and a 1 s cache.
    pub async fn from_stores(stores: &Stores) -> Result<Self, StoreError> {
        let digester = SecretDigester::from_store(stores.secrets.as_ref()).await?;
        Ok(Self::new(
            stores.tokens.clone(),
            digester,
            Duration::from_secs(1),
        ))
    }

    /// Checks a presented key.
    pub async fn check(&self, key: &str) -> Result<TokenCheck, StoreError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Ok(TokenCheck::Invalid);
        }
        let digest = self.inner.digester.digest(key);
        let now = OffsetDateTime::now_utc();
        let cached = match self.inner.cache.as_ref().and_then(|c| c.get(&digest)) {
            Some(hit) => hit,
            None => {
                let Some((token, user)) = self.inner.store.token_by_digest(&digest).await? else {
                    return Ok(TokenCheck::Invalid);
                };
                let last = token.last_used.map_or(0, unix);
                let entry = Arc::new(CachedToken {
                    token,
                    user: Arc::new(user),
                    last_touch: AtomicI64::new(last),
                });
                if let Some(cache) = &self.inner.cache {
                    cache.insert(digest, entry.clone());
                }
                entry
            }
        };
        // The digest matched by exact lookup; compare again in constant time so a cache or
        // index collision can never authenticate the wrong key.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &cached.token.digest.0[..],
            &digest.0[..],
        )) || cached.token.is_expired(now)
        {
            return Ok(TokenCheck::Invalid);
        }
        if !cached.user.is_active {
            return Ok(TokenCheck::Inactive);
        }
        self.touch(&cached, now);
        let auth = AuthInfo::new(Scheme::Token).with_credential_id(cached.token.id.to_string());
        Ok(TokenCheck::Valid(Identity::new(cached.user.clone(), auth)))
    }

    fn touch(&self, cached: &CachedToken, now: OffsetDateTime) {
        let now_s = unix(now);
        let last = cached.last_touch.load(Ordering::Relaxed);
        if now_s - last < TOUCH_INTERVAL.as_secs() as i64 {
            return;
        }
        if cached
            .last_touch
            .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let store = self.inner.store.clone();
        let id = cached.token.id;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = store.touch_token(id, now).await {
                    tracing::debug!(error = %e, "could not record token use");
                }
            });
        }
    }

    fn new_record(
        &self,
        user_id: UserId,
        name: &str,
        expiry: Option<OffsetDateTime>,
    ) -> (NewApiToken, SecretString) {
        let key = random_secret(KEY_PREFIX);
        let record = NewApiToken {
            user_id,
            name: name.to_owned(),
            prefix: key.chars().take(PREFIX_LEN).collect(),
            digest: self.inner.digester.digest(&key),
            created: OffsetDateTime::now_utc(),
            expiry,
        };
        (record, SecretString::new(key))
    }

    /// Issues a new token.
    pub async fn issue(
        &self,
        user_id: UserId,
        name: &str,
        expires_in: Option<Duration>,
    ) -> Result<IssuedToken, StoreError> {
        let expiry = expires_in.map(|d| OffsetDateTime::now_utc() + d);
        let (record, key) = self.new_record(user_id, name, expiry);
        let token = self.inner.store.create_token(record).await?;
        Ok(IssuedToken { token, key })
    }

    /// Stores a key that was issued elsewhere (a DRF `authtoken_token` import).
    pub async fn import_key(
        &self,
        user_id: UserId,
        key: &SecretString,
        name: &str,
        created: OffsetDateTime,
    ) -> Result<ApiToken, StoreError> {
        let record = NewApiToken {
            user_id,
            name: name.to_owned(),
            prefix: key.expose().chars().take(PREFIX_LEN).collect(),
            digest: self.inner.digester.digest(key.expose()),
            created,
            expiry: None,
        };
        self.inner.store.create_token(record).await
    }

    /// The user's tokens, oldest first.
    pub async fn list(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        self.inner.store.tokens_for_user(user_id).await
    }

    /// Revokes one of the user's tokens at once. `false`: not theirs or already gone.
    pub async fn revoke(&self, user_id: UserId, id: TokenId) -> Result<bool, StoreError> {
        let revoked = self.inner.store.revoke_token(user_id, id).await?;
        if let Some(token) = &revoked {
            self.forget(&token.digest);
            self.inner
                .bus
                .publish(Invalidation::Digest(token.digest))
                .await;
        }
        Ok(revoked.is_some())
    }

    /// Revokes all of the user's tokens; returns how many there were.
    pub async fn revoke_all(&self, user_id: UserId) -> Result<usize, StoreError> {
        let revoked = self.inner.store.revoke_all_tokens(user_id).await?;
        for token in &revoked {
            self.forget(&token.digest);
        }
        self.forget_user(user_id);
        self.inner.bus.publish(Invalidation::User(user_id)).await;
        Ok(revoked.len())
    }

    /// Replaces a token with a new key (same name, same remaining lifetime); the old key
    /// stops working at once. `None`: not the user's token.
    pub async fn rotate(
        &self,
        user_id: UserId,
        id: TokenId,
    ) -> Result<Option<IssuedToken>, StoreError> {
        let existing = self.inner.store.tokens_for_user(user_id).await?;
        let Some(old) = existing.into_iter().find(|t| t.id == id) else {
            return Ok(None);
        };
        let (record, key) = self.new_record(user_id, &old.name, old.expiry);
        let Some((old, new)) = self.inner.store.rotate_token(user_id, id, record).await? else {
            return Ok(None);
        };
        self.forget(&old.digest);
        self.inner
            .bus
            .publish(Invalidation::Digest(old.digest))
            .await;
        Ok(Some(IssuedToken { token: new, key }))
    }

    /// Drops every cached check for the user (after a password change or deactivation made
    /// through another service).
    pub fn forget_user(&self, user_id: UserId) {
        self.inner.drop_cached(Invalidation::User(user_id));
    }

    fn forget(&self, digest: &SecretDigest) {
        self.inner.drop_cached(Invalidation::Digest(*digest));
    }
}

/// DRF's `TokenAuthentication`: `Authorization: Token <key>`.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    service: TokenService,
    keywords: Vec<String>,
    challenge: HeaderValue,
}

impl TokenAuth {
    /// Reads `Authorization: Token <key>` (keyword case-insensitive).
    pub fn new(service: TokenService) -> Self {
        Self::with_keywords(service, ["Token"])
    }

    /// Reads any of `keywords` (for example `Token` and `Bearer`); the first one is the
    /// challenge.
    pub fn with_keywords<I: IntoIterator<Item = S>, S: Into<String>>(
        service: TokenService,
        keywords: I,
    ) -> Self {
        let keywords: Vec<String> = keywords.into_iter().map(Into::into).collect();
        let challenge = keywords
            .first()
            .and_then(|k| HeaderValue::from_str(k).ok())
            .unwrap_or_else(|| HeaderValue::from_static("Token"));
        Self {
            service,
            keywords,
            challenge,
        }
    }

    /// The token service behind this authenticator.
    pub fn service(&self) -> &TokenService {
        &self.service
    }
}

#[async_trait]
impl Authenticator for TokenAuth {
    fn scheme(&self) -> Scheme {
        Scheme::Token
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    async fn authenticate(&self, request: &RequestContext<'_>) -> Result<Outcome, StoreError> {
        let key = match request.credentials(&self.keywords, true) {
            None => return Ok(Outcome::Abstain),
            Some(Credentials::Missing) => {
                return Ok(failed("Invalid token header. No credentials provided."))
            }
            Some(Credentials::Several(_)) => {
                return Ok(failed(
                    "Invalid token header. Token string should not contain spaces.",
                ))
            }
            Some(Credentials::One(key)) => key,
        };
        let key = match std::str::from_utf8(key) {
            Ok(k) if k.bytes().all(|b| b.is_ascii_graphic()) => k,
            _ => {
                return Ok(failed(
                    "Invalid token header. Token string should not contain invalid characters.",
                ))
            }
        };
        Ok(match self.service.check(key).await? {
            TokenCheck::Valid(identity) => Outcome::Authenticated(identity),
            TokenCheck::Invalid => failed("Invalid token."),
            TokenCheck::Inactive => failed("User inactive or deleted."),
        })
    }
}

fn failed(detail: &'static str) -> Outcome {
    Outcome::Failed(AuthError::failed(detail))
}
