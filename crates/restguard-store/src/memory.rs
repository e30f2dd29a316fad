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
        ApiToken, NewApiToken, NewUser, SecretDigest, SecretStore, StoreError, StoreHealth,
        TokenId, TokenStore, UserStore, UNUSABLE_PASSWORD,
    },
};
use time::OffsetDateTime;

use crate::timestamp::truncate;

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
}

#[async_trait]
impl StoreHealth for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
