//! An in-memory reference implementation of every store trait.
//!
//! All state lives behind one [`Mutex`], so every operation is atomic; the lock is never held
//! across an `.await`. Data is lost when the store is dropped.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard, PoisonError},
};

use async_trait::async_trait;
use restguard_core::{
    identity::{User, UserId},
    store::{
        ApiToken, FamilyId, JwtStore, NewApiToken, NewRefreshToken, NewUser, RefreshToken,
        RefreshUse, Rewrap, SecretDigest, SecretStore, SigningKey, SigningKeyStore, StoreError,
        StoreHealth, TokenId, TokenStore, UserStore, WrappedKey, UNUSABLE_PASSWORD,
    },
    store::{NewSession, SessionId, SessionRecord, SessionStore},
};
use time::OffsetDateTime;

use crate::timestamp::truncate;

mod invalidation;
mod oauth;

pub use invalidation::MemoryInvalidationBus;

/// In-memory users, tokens and secrets, for tests, demos and single-process development.
///
/// Behaves like the SQL backends, including microsecond truncation of timestamps and
/// ascending ids starting at 1.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Users and their password hashes, by id.
    users: BTreeMap<i64, (User, String)>,
    /// Username → user id.
    usernames: HashMap<String, i64>,
    last_user_id: i64,
    /// Tokens by id.
    tokens: BTreeMap<i64, ApiToken>,
    /// Digest → token id.
    digests: HashMap<SecretDigest, i64>,
    last_token_id: i64,
    secrets: HashMap<String, Vec<u8>>,
    /// JWT refresh records by `jti` digest.
    refresh: HashMap<SecretDigest, RefreshToken>,
    /// Blacklisted `jti` digests and their expiry.
    blacklist: HashMap<SecretDigest, OffsetDateTime>,
    /// JWT signing keys, in insertion order.
    signing_keys: Vec<SigningKey>,
    /// Sessions by id.
    sessions: BTreeMap<i64, SessionRecord>,
    /// Session digest → session id.
    session_digests: HashMap<SecretDigest, i64>,
    last_session_id: i64,
    /// OAuth2 applications, codes and tokens.
    oauth: oauth::OAuthState,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation is completed before the guard is dropped, so a poisoned lock (a panic
        // elsewhere while holding it) still guards consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn user_mut(&mut self, id: UserId) -> Option<&mut (User, String)> {
        self.users.get_mut(&id.0)
    }

    fn remove_token(&mut self, id: i64) -> Option<ApiToken> {
        let token = self.tokens.remove(&id)?;
        self.digests.remove(&token.digest);
        Some(token)
    }

    fn remove_user_tokens(&mut self, user_id: UserId) -> Vec<ApiToken> {
        let ids: Vec<i64> = self
            .tokens
            .values()
            .filter(|t| t.user_id == user_id)
            .map(|t| t.id.0)
            .collect();
        let mut removed: Vec<ApiToken> = ids
            .into_iter()
            .filter_map(|id| self.remove_token(id))
            .collect();
        sort_tokens(&mut removed);
        removed
    }

    /// Checks that `token` can be inserted (owner exists, digest free).
    fn check_token(&self, token: &NewApiToken) -> Result<(), StoreError> {
        if !self.users.contains_key(&token.user_id.0) {
            return Err(StoreError::backend(format!(
                "token owner {} does not exist",
                token.user_id
            )));
        }
        if self.digests.contains_key(&token.digest) {
            return Err(StoreError::Conflict("token"));
        }
        Ok(())
    }

    /// Inserts a token already validated by [`Inner::check_token`].
    fn insert_token(&mut self, token: NewApiToken) -> ApiToken {
        self.last_token_id += 1;
        let stored = ApiToken {
            id: TokenId(self.last_token_id),
            user_id: token.user_id,
            name: token.name,
            prefix: token.prefix,
            digest: token.digest,
            created: truncate(token.created),
            last_used: None,
            expiry: token.expiry.map(truncate),
        };
        self.digests.insert(stored.digest, stored.id.0);
        self.tokens.insert(stored.id.0, stored.clone());
        stored
    }
}

/// Oldest first, ties by id: the order of `tokens_for_user`.
fn sort_tokens(tokens: &mut [ApiToken]) {
    tokens.sort_by_key(|t| (t.created, t.id));
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let mut inner = self.lock();
        if inner.usernames.contains_key(&user.username) {
            return Err(StoreError::Conflict("user"));
        }
        inner.last_user_id += 1;
        let date_joined = truncate(user.date_joined);
        let stored = User {
            id: UserId(inner.last_user_id),
            username: user.username,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            is_active: user.is_active,
            is_staff: user.is_staff,
            is_superuser: user.is_superuser,
            date_joined,
            last_login: user.last_login.map(truncate),
            credentials_changed_at: date_joined,
        };
        let hash = user
            .password_hash
            .unwrap_or_else(|| UNUSABLE_PASSWORD.to_owned());
        inner.usernames.insert(stored.username.clone(), stored.id.0);
        inner.users.insert(stored.id.0, (stored.clone(), hash));
        Ok(stored)
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.lock().users.get(&id.0).map(|(u, _)| u.clone()))
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .usernames
            .get(username)
            .and_then(|id| inner.users.get(id))
            .map(|(u, _)| u.clone()))
    }

    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .usernames
            .get(username)
            .and_then(|id| inner.users.get(id))
            .cloned())
    }

    async fn set_password(
        &self,
        id: UserId,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some((user, stored_hash)) = inner.user_mut(id) else {
            return Ok(false);
        };
        hash.clone_into(stored_hash);
        user.credentials_changed_at = truncate(at);
        inner.remove_user_tokens(id);
        Ok(true)
    }

    async fn upgrade_password_hash(
        &self,
        id: UserId,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.user_mut(id) {
            Some((_, stored_hash)) if stored_hash == old => {
                new.clone_into(stored_hash);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_active(
        &self,
        id: UserId,
        active: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some((user, _)) = inner.user_mut(id) else {
            return Ok(false);
        };
        user.is_active = active;
        if !active {
            user.credentials_changed_at = truncate(at);
            inner.remove_user_tokens(id);
        }
        Ok(true)
    }

    async fn set_roles(
        &self,
        id: UserId,
        is_staff: bool,
        is_superuser: bool,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some((user, _)) = inner.user_mut(id) else {
            return Ok(false);
        };
        user.is_staff = is_staff;
        user.is_superuser = is_superuser;
        Ok(true)
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some((user, _)) = inner.users.remove(&id.0) else {
            return Ok(false);
        };
        inner.usernames.remove(&user.username);
        inner.remove_user_tokens(id);
        inner.refresh.retain(|_, t| t.user_id != id);
        inner.remove_sessions(|s| s.user_id == id);
        inner.oauth.remove_user(id);
        Ok(true)
    }

    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        if let Some((user, _)) = self.lock().user_mut(id) {
            user.last_login = Some(truncate(at));
        }
        Ok(())
    }

    async fn list_users(
        &self,
        search: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<User>, StoreError> {
        let needle = search.map(str::to_lowercase);
        let matches = |u: &User| match &needle {
            None => true,
            Some(n) => {
                u.username.to_lowercase().contains(n.as_str())
                    || u.email.to_lowercase().contains(n.as_str())
            }
        };
        let inner = self.lock();
        Ok(inner
            .users
            .values()
            .map(|(u, _)| u)
            .filter(|u| matches(u))
            .skip(offset as usize)
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn create_token(&self, token: NewApiToken) -> Result<ApiToken, StoreError> {
        let mut inner = self.lock();
        inner.check_token(&token)?;
        Ok(inner.insert_token(token))
    }

    async fn token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(ApiToken, User)>, StoreError> {
        let inner = self.lock();
        let Some(token) = inner
            .digests
            .get(digest)
            .and_then(|id| inner.tokens.get(id))
        else {
            return Ok(None);
        };
        Ok(inner
            .users
            .get(&token.user_id.0)
            .map(|(user, _)| (token.clone(), user.clone())))
    }

    async fn tokens_for_user(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        let mut tokens: Vec<ApiToken> = self
            .lock()
            .tokens
            .values()
            .filter(|t| t.user_id == user_id)
            .cloned()
            .collect();
        sort_tokens(&mut tokens);
        Ok(tokens)
    }

    async fn revoke_token(
        &self,
        user_id: UserId,
        id: TokenId,
    ) -> Result<Option<ApiToken>, StoreError> {
        let mut inner = self.lock();
        match inner.tokens.get(&id.0) {
            Some(t) if t.user_id == user_id => Ok(inner.remove_token(id.0)),
            _ => Ok(None),
        }
    }

    async fn revoke_all_tokens(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        Ok(self.lock().remove_user_tokens(user_id))
    }

    async fn rotate_token(
        &self,
        user_id: UserId,
        id: TokenId,
        replacement: NewApiToken,
    ) -> Result<Option<(ApiToken, ApiToken)>, StoreError> {
        let mut inner = self.lock();
        let owned = matches!(inner.tokens.get(&id.0), Some(t) if t.user_id == user_id);
        if !owned {
            return Ok(None);
        }
        let replacement = NewApiToken {
            user_id,
            ..replacement
        };
        // Validate before removing anything, so a failure writes nothing.
        inner.check_token(&replacement)?;
        let Some(old) = inner.remove_token(id.0) else {
            return Ok(None);
        };
        let new = inner.insert_token(replacement);
        Ok(Some((old, new)))
    }

    async fn touch_token(&self, id: TokenId, at: OffsetDateTime) -> Result<(), StoreError> {
        if let Some(token) = self.lock().tokens.get_mut(&id.0) {
            token.last_used = Some(truncate(at));
        }
        Ok(())
    }

    async fn delete_expired_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let expired: Vec<i64> = inner
            .tokens
            .values()
            .filter(|t| t.is_expired(now))
            .map(|t| t.id.0)
            .collect();
        let mut count = 0;
        for id in expired {
            if inner.remove_token(id).is_some() {
                count += 1;
            }
        }
        Ok(count)
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .lock()
            .secrets
            .entry(name.to_owned())
            .or_insert_with(|| candidate.to_vec())
            .clone())
    }

    async fn rewrap_keys(&self, rewrap: &Rewrap<'_>) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        // Every replacement is computed before any is applied: all or nothing.
        let mut secrets = Vec::new();
        for (name, value) in &inner.secrets {
            if let Some(new) =
                rewrap(WrappedKey::ServerSecret { name }, value).map_err(StoreError::Backend)?
            {
                secrets.push((name.clone(), new));
            }
        }
        let mut keys = Vec::new();
        for (i, key) in inner.signing_keys.iter().enumerate() {
            let slot = WrappedKey::SigningKey {
                kid: &key.kid,
                algorithm: &key.algorithm,
            };
            if let Some(new) = rewrap(slot, &key.private_key).map_err(StoreError::Backend)? {
                keys.push((i, new));
            }
        }
        let replaced = (secrets.len() + keys.len()) as u64;
        for (name, new) in secrets {
            inner.secrets.insert(name, new);
        }
        for (i, new) in keys {
            inner.signing_keys[i].private_key = new;
        }
        Ok(replaced)
    }
}

fn new_refresh(token: NewRefreshToken) -> RefreshToken {
    RefreshToken {
        jti: token.jti,
        family: token.family,
        user_id: token.user_id,
        created: truncate(token.created),
        expires_at: truncate(token.expires_at),
        used_at: None,
        revoked_at: None,
    }
}

#[async_trait]
impl JwtStore for MemoryStore {
    async fn create_refresh(&self, token: NewRefreshToken) -> Result<RefreshToken, StoreError> {
        let mut inner = self.lock();
        if inner.refresh.contains_key(&token.jti) {
            return Err(StoreError::Conflict("refresh token"));
        }
        let stored = new_refresh(token);
        inner.refresh.insert(stored.jti, stored.clone());
        Ok(stored)
    }

    async fn refresh_by_jti(&self, jti: &SecretDigest) -> Result<Option<RefreshToken>, StoreError> {
        Ok(self.lock().refresh.get(jti).cloned())
    }

    async fn consume_refresh(
        &self,
        jti: &SecretDigest,
        replacement: Option<NewRefreshToken>,
        at: OffsetDateTime,
    ) -> Result<RefreshUse, StoreError> {
        let mut inner = self.lock();
        let Some(current) = inner.refresh.get(jti).cloned() else {
            return Ok(RefreshUse::Unknown);
        };
        if current.revoked_at.is_some() {
            return Ok(RefreshUse::Revoked(current));
        }
        if current.used_at.is_some() {
            return Ok(RefreshUse::AlreadyUsed(current));
        }
        let replacement = match replacement {
            Some(new) => {
                if inner.refresh.contains_key(&new.jti) {
                    return Err(StoreError::Conflict("refresh token"));
                }
                Some(new_refresh(NewRefreshToken {
                    family: current.family.clone(),
                    ..new
                }))
            }
            None => None,
        };
        let consumed = RefreshToken {
            used_at: Some(truncate(at)),
            ..current
        };
        inner.refresh.insert(consumed.jti, consumed.clone());
        if let Some(new) = &replacement {
            inner.refresh.insert(new.jti, new.clone());
        }
        Ok(RefreshUse::Consumed(consumed, replacement))
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        for token in self.lock().refresh.values_mut() {
            if &token.family == family && token.used_at.is_none() && token.revoked_at.is_none() {
                token.revoked_at = Some(truncate(at));
                count += 1;
            }
        }
        Ok(count)
    }

    async fn blacklist_jti(
        &self,
        jti: &SecretDigest,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.blacklist.contains_key(jti) {
            return Ok(false);
        }
        inner.blacklist.insert(*jti, truncate(expires_at));
        Ok(true)
    }

    async fn is_blacklisted(&self, jti: &SecretDigest) -> Result<bool, StoreError> {
        Ok(self.lock().blacklist.contains_key(jti))
    }

    async fn delete_expired_jwt(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before = inner.refresh.len() + inner.blacklist.len();
        inner.refresh.retain(|_, t| t.expires_at > now);
        inner.blacklist.retain(|_, expiry| *expiry > now);
        let after = inner.refresh.len() + inner.blacklist.len();
        Ok((before - after) as u64)
    }
}

fn stored_key(key: SigningKey) -> SigningKey {
    SigningKey {
        created: truncate(key.created),
        retired_at: key.retired_at.map(truncate),
        ..key
    }
}

#[async_trait]
impl SigningKeyStore for MemoryStore {
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let mut keys = self.lock().signing_keys.clone();
        keys.sort_by(|a, b| (a.created, &a.kid).cmp(&(b.created, &b.kid)));
        Ok(keys)
    }

    async fn add_first_signing_key(&self, key: SigningKey) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner
            .signing_keys
            .iter()
            .any(|k| k.algorithm == key.algorithm && k.retired_at.is_none())
        {
            return Ok(false);
        }
        if inner.signing_keys.iter().any(|k| k.kid == key.kid) {
            return Err(StoreError::Conflict("signing key"));
        }
        inner.signing_keys.push(stored_key(key));
        Ok(true)
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.signing_keys.iter().any(|k| k.kid == key.kid) {
            return Err(StoreError::Conflict("signing key"));
        }
        for k in &mut inner.signing_keys {
            if k.algorithm == key.algorithm && k.retired_at.is_none() {
                k.retired_at = Some(truncate(at));
            }
        }
        inner.signing_keys.push(stored_key(key));
        Ok(())
    }

    async fn delete_retired_signing_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let count = inner.signing_keys.len();
        inner
            .signing_keys
            .retain(|k| k.retired_at.is_none_or(|r| r > before));
        Ok((count - inner.signing_keys.len()) as u64)
    }
}

#[async_trait]
impl StoreHealth for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Inner {
    /// Removes the sessions matching `pred`; returns them oldest first.
    fn remove_sessions(&mut self, pred: impl Fn(&SessionRecord) -> bool) -> Vec<SessionRecord> {
        let ids: Vec<i64> = self
            .sessions
            .values()
            .filter(|s| pred(s))
            .map(|s| s.id.0)
            .collect();
        let mut removed = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(session) = self.sessions.remove(&id) {
                self.session_digests.remove(&session.digest);
                removed.push(session);
            }
        }
        removed.sort_by_key(|s| (s.created, s.id));
        removed
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: NewSession) -> Result<SessionRecord, StoreError> {
        let mut inner = self.lock();
        if !inner.users.contains_key(&session.user_id.0) {
            return Err(StoreError::backend(format!(
                "session owner {} does not exist",
                session.user_id
            )));
        }
        if inner.session_digests.contains_key(&session.digest) {
            return Err(StoreError::Conflict("session"));
        }
        inner.last_session_id += 1;
        let created = truncate(session.created);
        let stored = SessionRecord {
            id: SessionId(inner.last_session_id),
            user_id: session.user_id,
            digest: session.digest,
            created,
            last_seen: created,
            expires_at: truncate(session.expires_at),
            user_agent: session.user_agent,
            ip: session.ip,
        };
        inner.session_digests.insert(stored.digest, stored.id.0);
        inner.sessions.insert(stored.id.0, stored.clone());
        Ok(stored)
    }

    async fn session_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(SessionRecord, User)>, StoreError> {
        let inner = self.lock();
        let Some(session) = inner
            .session_digests
            .get(digest)
            .and_then(|id| inner.sessions.get(id))
        else {
            return Ok(None);
        };
        Ok(inner
            .users
            .get(&session.user_id.0)
            .map(|(user, _)| (session.clone(), user.clone())))
    }

    async fn sessions_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let mut sessions: Vec<SessionRecord> = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.user_id == user_id)
            .cloned()
            .collect();
        sessions.sort_by_key(|s| (s.created, s.id));
        Ok(sessions)
    }

    async fn touch_session(&self, id: SessionId, at: OffsetDateTime) -> Result<(), StoreError> {
        if let Some(session) = self.lock().sessions.get_mut(&id.0) {
            session.last_seen = truncate(at);
        }
        Ok(())
    }

    async fn delete_session(
        &self,
        user_id: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .lock()
            .remove_sessions(|s| s.id == id && s.user_id == user_id)
            .pop())
    }

    async fn delete_user_sessions(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .lock()
            .remove_sessions(|s| s.user_id == user_id && Some(s.id) != keep))
    }

    async fn delete_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_before: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        let removed = self.lock().remove_sessions(|s| {
            s.expires_at <= now || idle_before.is_some_and(|cutoff| s.last_seen <= cutoff)
        });
        Ok(removed.len() as u64)
    }
}
