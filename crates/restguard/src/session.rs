//! Server-side sessions: DRF's `SessionAuthentication` on Django's session model.
//!
//! * A session id is 256 random bits (43 base64url characters), the value of the `sessionid`
//!   cookie (`HttpOnly`, `SameSite=Lax`, `Secure` unless configured for plain-HTTP
//!   development). The store keeps only its keyed digest.
//! * Every login makes a new id ([`SessionService::start`]); nothing from before the login
//!   survives it (session fixation).
//! * A session is valid while its user is active, it is younger than `max_age`, it has been
//!   used within `idle_timeout`, and it was created at or after the user's
//!   `credentials_changed_at` — so a password change or deactivation ends it even when made
//!   by another process (the CLI). Both instants are compared at the stores' microsecond
//!   precision; a session the server starts for the user right after changing the password
//!   is created at the change's instant or later, so it survives while older ones do not.
//! * [`Session`], the authenticator, abstains on a missing, unknown or expired session (the
//!   request is anonymous, as in DRF) and enforces Django's CSRF check ([`crate::csrf`]) on
//!   unsafe methods of session-authenticated requests: 403
//!   `{"detail":"CSRF Failed: <reason>","code":"csrf_failed"}`. It has no challenge, so a
//!   route whose first authenticator is `Session` answers 403 rather than 401.
//!
//! Checks are served from a short-lived in-process cache (default 1 s) like
//! [`crate::token::TokenService`]'s; `last_seen` is written at most once a minute.
//!
//! ```no_run
//! use restguard::{csrf::CsrfPolicy, session::{Session, SessionService, SessionSettings}};
//! use restguard_core::{permission::IsAuthenticated, store::Stores, Policy};
//!
//! # async fn example(stores: Stores) -> Result<(), restguard_core::StoreError> {
//! let sessions = SessionService::from_stores(&stores, SessionSettings::default()).await?;
//! let policy = Policy::builder()
//!     .authenticator(Session::new(sessions, CsrfPolicy::default()))
//!     .permission(IsAuthenticated)
//!     .build();
//! # let _ = policy; Ok(()) }
//! ```

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use http::{request::Parts, HeaderMap, HeaderValue};
use restguard_core::{
    authenticator::{Authenticator, Outcome, RequestContext},
    identity::{AuthInfo, Identity, Scheme, User, UserId},
    invalidation::{Invalidation, InvalidationBus},
    secret::SecretString,
    store::{NewSession, SecretDigest, SessionId, SessionRecord, SessionStore, StoreError, Stores},
    Rejection,
};
use time::OffsetDateTime;

use crate::{
    csrf::{is_safe_method, request_cookie, CsrfPolicy, CSRF_FAILURE_CODE},
    digest::{random_secret, SecretDigester},
};

/// Django's `SESSION_COOKIE_NAME`.
pub const DEFAULT_COOKIE_NAME: &str = "sessionid";
/// Length of a session id: 256 bits in base64url without padding.
pub const SESSION_ID_LEN: usize = 43;
/// `last_seen` is written at most this often per session (less when the idle timeout is
/// short: a quarter of it).
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// Longest `User-Agent` kept with a session, in characters.
pub const USER_AGENT_MAX: usize = 256;

/// Session lifetimes and the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// The cookie's name (Django's `SESSION_COOKIE_NAME`), default `sessionid`.
    pub cookie_name: String,
    /// Mark the cookie `Secure` (default true; switch off only for plain-HTTP development).
    pub cookie_secure: bool,
    /// A session unused for this long ends (default 2 weeks).
    pub idle_timeout: Duration,
    /// A session ends this long after login whatever its use (default 30 days).
    pub max_age: Duration,
    /// How long a check is cached in process (default 1 s; zero disables the cache).
    pub cache_ttl: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
            cookie_secure: true,
            idle_timeout: Duration::from_secs(14 * 86_400),
            max_age: Duration::from_secs(30 * 86_400),
            cache_ttl: Duration::from_secs(1),
        }
    }
}

/// A session just started: the stored record and the id for the cookie (never shown again).
#[derive(Debug, Clone)]
pub struct StartedSession {
    /// The stored record.
    pub record: SessionRecord,
    /// The session id, the cookie's value.
    pub key: SecretString,
}

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    /// The stored record (as of the last store read).
    pub record: SessionRecord,
    /// Its active user.
    pub user: Arc<User>,
}

impl ActiveSession {
    /// The request identity: scheme `session`, credential id the session's (non-secret) id.
    pub fn identity(&self) -> Identity {
        Identity::new(
            self.user.clone(),
            AuthInfo::new(Scheme::Session).with_credential_id(self.record.id.to_string()),
        )
    }
}

struct CachedSession {
    record: SessionRecord,
    user: Arc<User>,
    /// Unix milliseconds of the last recorded use.
    last_touch_ms: AtomicI64,
}

struct Inner {
    store: Arc<dyn SessionStore>,
    digester: SecretDigester,
    settings: SessionSettings,
    cache: Option<moka::sync::Cache<SecretDigest, Arc<CachedSession>>>,
    /// Where ended sessions are announced to other instances, when attached.
    bus: crate::invalidation::BusLink,
}

impl Inner {
    fn drop_cached(&self, event: Invalidation) {
        if let Some(cache) = &self.cache {
            crate::invalidation::drop_from(cache, event, |cached| cached.user.id);
        }
    }
}

/// Starts, checks, lists and ends sessions. Cheap to clone.
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `value` has the shape of a session id (43 base64url characters). Anything else is
/// refused without a lookup.
pub fn is_well_formed(value: &str) -> bool {
    value.len() == SESSION_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl SessionService {
    /// A service over `store`, digesting ids with `digester`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        digester: SecretDigester,
        settings: SessionSettings,
    ) -> Self {
        let cache = (!settings.cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(settings.cache_ttl)
                .support_invalidation_closures()
                .build()
        });
        Self {
            inner: Arc::new(Inner {
                store,
                digester,
                settings,
                cache,
                bus: crate::invalidation::BusLink::default(),
            }),
        }
    }

    /// Announces ended sessions on `bus` and drops what other instances announce there, so
    /// a session ended anywhere is refused here at once, not after the cache lifetime.
    pub fn with_invalidations(self, bus: Arc<dyn InvalidationBus>) -> Self {
        self.inner.bus.attach(bus, &self.inner, Inner::drop_cached);
        self
    }

    /// A service over the session store of `stores`, with the shared digest key.
    pub async fn from_stores(
        stores: &Stores,
        settings: SessionSettings,
    ) -> Result<Self, StoreError> {
        let digester = SecretDigester::from_store(stores.secrets.as_ref()).await?;
        Ok(Self::new(stores.sessions.clone(), digester, settings))
    }

    /// The settings.
    pub fn settings(&self) -> &SessionSettings {
        &self.inner.settings
    }

    fn touch_interval_ms(&self) -> i64 {
        duration_ms(TOUCH_INTERVAL.min(self.inner.settings.idle_timeout / 4))
    }

    /// Starts a session for `user` with a new random id. It is created at the later of now
    /// and the user's `credentials_changed_at`, so a session started right after a password
    /// change (with the updated user) is never older than the change.
    #[tracing::instrument(skip_all, fields(user.id = user.id.0))]
    pub async fn start(
        &self,
        user: &User,
        user_agent: &str,
        ip: Option<IpAddr>,
    ) -> Result<StartedSession, StoreError> {
        let created = OffsetDateTime::now_utc().max(user.credentials_changed_at);
        let expires_at = created + self.inner.settings.max_age;
        let key = random_secret("");
        let record = self
            .inner
            .store
            .create_session(NewSession {
                user_id: user.id,
                digest: self.inner.digester.digest(&key),
                created,
                expires_at,
                user_agent: user_agent.chars().take(USER_AGENT_MAX).collect(),
                ip: ip.map(|ip| ip.to_string()),
            })
            .await?;
        Ok(StartedSession {
            record,
            key: SecretString::new(key),
        })
    }

    /// The session cookie's value in `headers`, if any (not yet checked).
    pub fn cookie(&self, headers: &HeaderMap) -> Option<String> {
        request_cookie(headers, &self.inner.settings.cookie_name)
    }

    /// The live session named by the request's cookie, if any.
    pub async fn from_headers(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<ActiveSession>, StoreError> {
        match self.cookie(headers) {
            Some(value) => self.check(&value).await,
            None => Ok(None),
        }
    }

    /// Checks a session id: `None` when malformed, unknown, expired, idle too long, older
    /// than the user's last credential change, or the user is inactive.
    pub async fn check(&self, key: &str) -> Result<Option<ActiveSession>, StoreError> {
        if !is_well_formed(key) {
            return Ok(None);
        }
        let digest = self.inner.digester.digest(key);
        let cached = match self.inner.cache.as_ref().and_then(|c| c.get(&digest)) {
            Some(hit) => hit,
            None => {
                let Some((record, user)) = self.inner.store.session_by_digest(&digest).await?
                else {
                    return Ok(None);
                };
                let entry = Arc::new(CachedSession {
                    last_touch_ms: AtomicI64::new(unix_ms(record.last_seen)),
                    record,
                    user: Arc::new(user),
                });
                if let Some(cache) = &self.inner.cache {
                    cache.insert(digest, entry.clone());
                }
                entry
            }
        };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &cached.record.digest.0[..],
            &digest.0[..],
        )) {
            return Ok(None);
        }
        let now = OffsetDateTime::now_utc();
        if !self.is_live(&cached, now) {
            return Ok(None);
        }
        self.touch(&cached, now);
        Ok(Some(ActiveSession {
            record: cached.record.clone(),
            user: cached.user.clone(),
        }))
    }

    fn is_live(&self, cached: &CachedSession, now: OffsetDateTime) -> bool {
        let settings = &self.inner.settings;
        let record = &cached.record;
        let now_ms = unix_ms(now);
        let last_seen_ms = cached.last_touch_ms.load(Ordering::Relaxed);
        cached.user.is_active
            && record.expires_at > now
            && record.created + settings.max_age > now
            && now_ms.saturating_sub(last_seen_ms) < duration_ms(settings.idle_timeout)
            && record.created >= cached.user.credentials_changed_at
    }

    fn touch(&self, cached: &CachedSession, now: OffsetDateTime) {
        let now_ms = unix_ms(now);
        let last = cached.last_touch_ms.load(Ordering::Relaxed);
        if now_ms - last < self.touch_interval_ms() {
            return;
        }
        if cached
            .last_touch_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let store = self.inner.store.clone();
        let id = cached.record.id;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = store.touch_session(id, now).await {
                    tracing::debug!(error = %e, "could not record session use");
                }
            });
        }
    }

    /// The user's sessions, oldest first (including ones that have expired but are not yet
    /// flushed; see [`SessionService::is_current`]).
    pub async fn list(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.store.sessions_for_user(user_id).await
    }

    /// Whether a listed session of `user` is still usable at `now` (not expired, not idle,
    /// not older than the user's last credential change).
    pub fn is_current(&self, record: &SessionRecord, user: &User, now: OffsetDateTime) -> bool {
        let settings = &self.inner.settings;
        user.is_active
            && record.expires_at > now
            && record.created + settings.max_age > now
            && now - record.last_seen < settings.idle_timeout
            && record.created >= user.credentials_changed_at
    }

    /// Ends one of the user's sessions at once. `false`: not theirs or already gone.
    pub async fn end(&self, user_id: UserId, id: SessionId) -> Result<bool, StoreError> {
        let ended = self.inner.store.delete_session(user_id, id).await?;
        if let Some(record) = &ended {
            self.forget(&record.digest);
            self.inner
                .bus
                .publish(Invalidation::Digest(record.digest))
                .await;
        }
        Ok(ended.is_some())
    }

    /// Ends the session with this id (the cookie value), whoever it belongs to (logout).
    /// `false` when there was none.
    pub async fn end_key(&self, key: &str) -> Result<bool, StoreError> {
        if !is_well_formed(key) {
            return Ok(false);
        }
        let digest = self.inner.digester.digest(key);
        self.forget(&digest);
        let Some((record, _)) = self.inner.store.session_by_digest(&digest).await? else {
            return Ok(false);
        };
        self.end(record.user_id, record.id).await
    }

    /// Ends all of the user's sessions except `keep`; returns how many ended.
    pub async fn end_all(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<usize, StoreError> {
        let ended = self.inner.store.delete_user_sessions(user_id, keep).await?;
        for record in &ended {
            self.forget(&record.digest);
        }
        if !ended.is_empty() {
            self.inner.bus.publish(Invalidation::User(user_id)).await;
        }
        Ok(ended.len())
    }

    /// Drops every cached check for the user (after a password change, deactivation or role
    /// change made through another service), so the next request reads the store.
    pub fn forget_user(&self, user_id: UserId) {
        self.inner.drop_cached(Invalidation::User(user_id));
    }

    fn forget(&self, digest: &SecretDigest) {
        self.inner.drop_cached(Invalidation::Digest(*digest));
    }

    /// `Set-Cookie` for a started session: `HttpOnly`, `Max-Age` = `max_age`, `Path=/`,
    /// `SameSite=Lax`, and `Secure` unless configured off.
    pub fn set_cookie_header(&self, started: &StartedSession) -> HeaderValue {
        let settings = &self.inner.settings;
        let value = format!(
            "{}={}; HttpOnly; Max-Age={}; Path=/; SameSite=Lax{}",
            settings.cookie_name,
            started.key.expose(),
            settings.max_age.as_secs(),
            if settings.cookie_secure {
                "; Secure"
            } else {
                ""
            }
        );
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
    }

    /// `Set-Cookie` that deletes the session cookie (Django's `delete_cookie`).
    pub fn clear_cookie_header(&self) -> HeaderValue {
        let settings = &self.inner.settings;
        let value = format!(
            "{}=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Max-Age=0; Path=/; SameSite=Lax{}",
            settings.cookie_name,
            if settings.cookie_secure {
                "; Secure"
            } else {
                ""
            }
        );
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
    }
}

/// The request's host as Django's `get_host()` gives it (the `Host` header, else the URI's
/// authority), or empty when unreadable.
pub fn request_host(parts: &Parts) -> String {
    parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default()
}

/// Whether the request came over TLS as far as the URI says (`https://` absolute form);
/// deployments behind a TLS-terminating proxy set [`CsrfPolicy::secure_request`] instead.
pub fn request_is_https(parts: &Parts) -> bool {
    parts.uri.scheme_str() == Some("https")
}

/// The 403 rejection of a CSRF failure:
/// `{"detail":"CSRF Failed: <reason>","code":"csrf_failed"}`.
pub fn csrf_rejection(failure: &crate::csrf::CsrfFailure) -> Rejection {
    Rejection::new(failure.detail())
        .with_code(CSRF_FAILURE_CODE)
        .forbidden()
}

/// DRF's `SessionAuthentication`: the session cookie, with CSRF enforced on unsafe methods.
#[derive(Debug, Clone)]
pub struct Session {
    service: SessionService,
    csrf: CsrfPolicy,
}

impl Session {
    /// Reads the session cookie of `service`'s settings and checks CSRF with `csrf`.
    pub fn new(service: SessionService, csrf: CsrfPolicy) -> Self {
        Self { service, csrf }
    }

    /// The session service behind this authenticator.
    pub fn service(&self) -> &SessionService {
        &self.service
    }
}

#[async_trait]
impl Authenticator for Session {
    fn scheme(&self) -> Scheme {
        Scheme::Session
    }

    fn challenge(&self) -> Option<HeaderValue> {
        None
    }

    async fn authenticate(&self, request: &RequestContext<'_>) -> Result<Outcome, StoreError> {
        let parts = request.parts;
        let Some(active) = self.service.from_headers(&parts.headers).await? else {
            return Ok(Outcome::Abstain);
        };
        if !is_safe_method(&parts.method) {
            // The body is not available here: the token comes from the `X-CSRFToken` header.
            if let Err(failure) =
                self.csrf
                    .check(parts, None, request_is_https(parts), &request_host(parts))
            {
                return Ok(Outcome::Failed(csrf_rejection(&failure).into()));
            }
        }
        Ok(Outcome::Authenticated(active.identity()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids() {
        let id = random_secret("");
        assert!(is_well_formed(&id));
        assert!(!is_well_formed(&id[1..]));
        assert!(!is_well_formed(&format!("{}!", &id[1..])));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&"a".repeat(4096)));
    }
}
