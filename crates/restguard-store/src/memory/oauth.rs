//! [`OAuthStore`] for [`MemoryStore`].

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use restguard_core::{
    identity::UserId,
    store::{
        Application, ApplicationId, ApplicationUpdate, AuthorizationCode, AuthorizedApplication,
        CodeUse, FamilyId, NewApplication, NewOAuthToken, OAuthRefreshUse, OAuthStore, OAuthToken,
        OAuthTokenKind, SecretDigest, StoreError,
    },
    User,
};
use time::OffsetDateTime;

use super::MemoryStore;
use crate::timestamp::truncate;

/// The OAuth part of the memory store's state.
#[derive(Debug, Default)]
pub(super) struct OAuthState {
    apps: BTreeMap<i64, Application>,
    last_app_id: i64,
    codes: HashMap<SecretDigest, AuthorizationCode>,
    tokens: BTreeMap<i64, OAuthToken>,
    token_digests: HashMap<SecretDigest, i64>,
    last_token_id: i64,
}

impl OAuthState {
    /// Forgets everything of a deleted user.
    pub(super) fn remove_user(&mut self, user_id: UserId) {
        self.codes.retain(|_, c| c.user_id != user_id);
        self.remove_tokens(|t| t.user_id == Some(user_id));
        for app in self.apps.values_mut() {
            if app.owner == Some(user_id) {
                app.owner = None;
            }
        }
    }

    fn remove_tokens(&mut self, doomed: impl Fn(&OAuthToken) -> bool) {
        let ids: Vec<i64> = self
            .tokens
            .values()
            .filter(|t| doomed(t))
            .map(|t| t.id)
            .collect();
        for id in ids {
            if let Some(t) = self.tokens.remove(&id) {
                self.token_digests.remove(&t.digest);
            }
        }
    }

    fn insert_tokens(&mut self, tokens: Vec<NewOAuthToken>) -> Result<(), StoreError> {
        let mut seen = std::collections::HashSet::new();
        for t in &tokens {
            if self.token_digests.contains_key(&t.digest) || !seen.insert(t.digest) {
                return Err(StoreError::Conflict("oauth token"));
            }
            if !self.apps.contains_key(&t.application.0) {
                return Err(StoreError::backend(format!(
                    "application {} does not exist",
                    t.application
                )));
            }
        }
        for t in tokens {
            self.last_token_id += 1;
            let stored = OAuthToken {
                id: self.last_token_id,
                kind: t.kind,
                digest: t.digest,
                application: t.application,
                user_id: t.user_id,
                scopes: t.scopes,
                family: t.family,
                created: truncate(t.created),
                expires_at: truncate(t.expires_at),
                used_at: None,
                revoked_at: None,
            };
            self.token_digests.insert(stored.digest, stored.id);
            self.tokens.insert(stored.id, stored);
        }
        Ok(())
    }
}

#[async_trait]
impl OAuthStore for MemoryStore {
    async fn create_application(&self, app: NewApplication) -> Result<Application, StoreError> {
        let mut inner = self.lock();
        if inner
            .oauth
            .apps
            .values()
            .any(|a| a.client_id == app.client_id)
        {
            return Err(StoreError::Conflict("application"));
        }
        inner.oauth.last_app_id += 1;
        let stored = Application {
            id: ApplicationId(inner.oauth.last_app_id),
            client_id: app.client_id,
            name: app.name,
            client_type: app.client_type,
            secret_digest: app.secret_digest,
            grant_types: app.grant_types,
            redirect_uris: app.redirect_uris,
            post_logout_redirect_uris: app.post_logout_redirect_uris,
            allowed_scopes: app.allowed_scopes,
            skip_authorization: app.skip_authorization,
            algorithm: app.algorithm,
            owner: app.owner,
            created: truncate(app.created),
        };
        inner.oauth.apps.insert(stored.id.0, stored.clone());
        Ok(stored)
    }

    async fn application_by_client_id(
        &self,
        client_id: &str,
    ) -> Result<Option<Application>, StoreError> {
        Ok(self
            .lock()
            .oauth
            .apps
            .values()
            .find(|a| a.client_id == client_id)
            .cloned())
    }

    async fn application_by_id(
        &self,
        id: ApplicationId,
    ) -> Result<Option<Application>, StoreError> {
        Ok(self.lock().oauth.apps.get(&id.0).cloned())
    }

    async fn applications(&self) -> Result<Vec<Application>, StoreError> {
        Ok(self.lock().oauth.apps.values().cloned().collect())
    }

    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_digest: Option<SecretDigest>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner
            .oauth
            .apps
            .values_mut()
            .find(|a| a.client_id == client_id)
        {
            Some(app) => {
                app.secret_digest = secret_digest;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn update_application(
        &self,
        client_id: &str,
        update: ApplicationUpdate,
    ) -> Result<Option<Application>, StoreError> {
        let mut inner = self.lock();
        let Some(app) = inner
            .oauth
            .apps
            .values_mut()
            .find(|a| a.client_id == client_id)
        else {
            return Ok(None);
        };
        if let Some(uris) = update.post_logout_redirect_uris {
            app.post_logout_redirect_uris = uris;
        }
        if let Some(scopes) = update.allowed_scopes {
            app.allowed_scopes = scopes;
        }
        Ok(Some(app.clone()))
    }

    async fn delete_application(&self, client_id: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(id) = inner
            .oauth
            .apps
            .values()
            .find(|a| a.client_id == client_id)
            .map(|a| a.id)
        else {
            return Ok(false);
        };
        inner.oauth.apps.remove(&id.0);
        inner.oauth.codes.retain(|_, c| c.application != id);
        inner.oauth.remove_tokens(|t| t.application == id);
        Ok(true)
    }

    async fn create_code(&self, code: AuthorizationCode) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.oauth.codes.contains_key(&code.digest) {
            return Err(StoreError::Conflict("authorization code"));
        }
        if !inner.oauth.apps.contains_key(&code.application.0)
            || !inner.users.contains_key(&code.user_id.0)
        {
            return Err(StoreError::backend(
                "authorization code for an unknown application or user",
            ));
        }
        let code = AuthorizationCode {
            auth_time: truncate(code.auth_time),
            created: truncate(code.created),
            expires_at: truncate(code.expires_at),
            used_at: None,
            family: None,
            ..code
        };
        inner.oauth.codes.insert(code.digest, code);
        Ok(())
    }

    async fn code_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCode>, StoreError> {
        Ok(self.lock().oauth.codes.get(digest).cloned())
    }

    async fn consume_code(
        &self,
        digest: &SecretDigest,
        family: &FamilyId,
        tokens: Vec<NewOAuthToken>,
        at: OffsetDateTime,
    ) -> Result<CodeUse, StoreError> {
        let mut inner = self.lock();
        match inner.oauth.codes.get(digest) {
            None => return Ok(CodeUse::Unknown),
            Some(code) if code.used_at.is_some() => return Ok(CodeUse::AlreadyUsed(code.clone())),
            Some(_) => {}
        }
        inner.oauth.insert_tokens(tokens)?;
        let Some(code) = inner.oauth.codes.get_mut(digest) else {
            return Ok(CodeUse::Unknown);
        };
        code.used_at = Some(truncate(at));
        code.family = Some(family.clone());
        Ok(CodeUse::Consumed(code.clone()))
    }

    async fn create_oauth_tokens(&self, tokens: Vec<NewOAuthToken>) -> Result<(), StoreError> {
        self.lock().oauth.insert_tokens(tokens)
    }

    async fn oauth_token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(OAuthToken, Option<User>)>, StoreError> {
        let inner = self.lock();
        let Some(token) = inner
            .oauth
            .token_digests
            .get(digest)
            .and_then(|id| inner.oauth.tokens.get(id))
        else {
            return Ok(None);
        };
        let user = match token.user_id {
            None => None,
            Some(id) => match inner.users.get(&id.0) {
                Some((user, _)) => Some(user.clone()),
                None => return Ok(None),
            },
        };
        Ok(Some((token.clone(), user)))
    }

    async fn rotate_refresh(
        &self,
        digest: &SecretDigest,
        replacements: Vec<NewOAuthToken>,
        at: OffsetDateTime,
    ) -> Result<OAuthRefreshUse, StoreError> {
        let mut inner = self.lock();
        let Some(&id) = inner.oauth.token_digests.get(digest) else {
            return Ok(OAuthRefreshUse::Unknown);
        };
        let Some(token) = inner.oauth.tokens.get(&id).cloned() else {
            return Ok(OAuthRefreshUse::Unknown);
        };
        if token.kind != OAuthTokenKind::Refresh || token.revoked_at.is_some() {
            return Ok(OAuthRefreshUse::Revoked(token));
        }
        if token.used_at.is_some() {
            return Ok(OAuthRefreshUse::AlreadyUsed(token));
        }
        inner.oauth.insert_tokens(replacements)?;
        let used = inner.oauth.tokens.get_mut(&id).map(|t| {
            t.used_at = Some(truncate(at));
            t.clone()
        });
        Ok(used.map_or(OAuthRefreshUse::Unknown, OAuthRefreshUse::Consumed))
    }

    async fn revoke_oauth_token(&self, id: i64, at: OffsetDateTime) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.oauth.tokens.get_mut(&id) {
            Some(t) if t.revoked_at.is_none() => {
                t.revoked_at = Some(truncate(at));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn revoke_oauth_family(
        &self,
        family: &FamilyId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let mut n = 0;
        for t in inner.oauth.tokens.values_mut() {
            if &t.family == family && t.revoked_at.is_none() {
                t.revoked_at = Some(truncate(at));
                n += 1;
            }
        }
        Ok(n)
    }

    async fn authorized_applications(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<AuthorizedApplication>, StoreError> {
        let inner = self.lock();
        let mut found: BTreeMap<i64, AuthorizedApplication> = BTreeMap::new();
        for t in inner.oauth.tokens.values() {
            if t.user_id != Some(user_id) || !t.is_live(now) {
                continue;
            }
            let Some(app) = inner.oauth.apps.get(&t.application.0) else {
                continue;
            };
            let entry = found
                .entry(app.id.0)
                .or_insert_with(|| AuthorizedApplication {
                    application: app.clone(),
                    scopes: Vec::new(),
                    last_issued: t.created,
                });
            for s in &t.scopes {
                if !entry.scopes.contains(s) {
                    entry.scopes.push(s.clone());
                }
            }
            entry.last_issued = entry.last_issued.max(t.created);
        }
        Ok(found.into_values().collect())
    }

    async fn revoke_authorization(
        &self,
        user_id: UserId,
        application: ApplicationId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let codes = inner.oauth.codes.len();
        inner
            .oauth
            .codes
            .retain(|_, c| !(c.user_id == user_id && c.application == application));
        let mut n = (codes - inner.oauth.codes.len()) as u64;
        for t in inner.oauth.tokens.values_mut() {
            if t.user_id == Some(user_id) && t.application == application && t.revoked_at.is_none()
            {
                t.revoked_at = Some(truncate(at));
                n += 1;
            }
        }
        Ok(n)
    }

    async fn delete_expired_oauth(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before = inner.oauth.codes.len() + inner.oauth.tokens.len();
        inner.oauth.codes.retain(|_, c| c.expires_at > now);
        inner.oauth.remove_tokens(|t| t.expires_at <= now);
        let after = inner.oauth.codes.len() + inner.oauth.tokens.len();
        Ok((before - after) as u64)
    }
}
