//! The store conformance suite with sessions in Redis ([`RedisSessionStore`]) and everything
//! else in the in-memory store (the split a deployment uses: users in the database, sessions
//! in Redis). Needs `RESTGUARD_TEST_REDIS_URL` (each test uses its own key prefix); without it
//! the tests print why they skip (and fail under `RESTGUARD_REQUIRE_SERVICES=1`).
//!
//! `Split` forwards every other store trait to the memory store (generated from the trait
//! definitions: a new trait method needs a new forwarding line here, as in every backend).

#![allow(missing_docs)]

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use restguard_core::{
    identity::{User, UserId},
    store::{
        ApiToken, Application, ApplicationId, ApplicationUpdate, AuthorizationCode,
        AuthorizedApplication, CodeUse, FamilyId, JwtStore, NewApiToken, NewApplication,
        NewOAuthToken, NewRefreshToken, NewSession, NewUser, OAuthRefreshUse, OAuthStore,
        OAuthToken, RefreshToken, RefreshUse, SecretDigest, SecretStore, SessionId, SessionRecord,
        SessionStore, SigningKey, SigningKeyStore, StoreError, StoreHealth, TokenId, TokenStore,
        UserStore,
    },
};
use restguard_store::{
    memory::MemoryStore,
    redis::{RedisOptions, RedisSessionStore},
    testing::{service_url, RedisPrefix, REDIS_URL_VAR},
};
use time::OffsetDateTime;

/// Users, tokens, … in memory; sessions in Redis.
struct Split {
    base: Arc<MemoryStore>,
    sessions: RedisSessionStore,
}

/// A fresh split store on a new key prefix (deleted with the guard), or `None` to skip.
async fn fresh() -> Option<(Split, RedisPrefix)> {
    let url = service_url(REDIS_URL_VAR, "redis sessions")?;
    let prefix = RedisPrefix::new(&url);
    let base = Arc::new(MemoryStore::new());
    let options = RedisOptions::default()
        .key_prefix(prefix.prefix())
        .timeout(Duration::from_secs(2));
    let sessions = RedisSessionStore::new(&url, &options, base.clone()).expect("redis url");
    Some((Split { base, sessions }, prefix))
}

mod conformance {
    restguard_store::conformance_suite!(guarded: super::fresh());
}

#[async_trait]
impl SessionStore for Split {
    async fn create_session(&self, session: NewSession) -> Result<SessionRecord, StoreError> {
        self.sessions.create_session(session).await
    }
    async fn session_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(SessionRecord, User)>, StoreError> {
        self.sessions.session_by_digest(digest).await
    }
    async fn sessions_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        self.sessions.sessions_for_user(user_id).await
    }
    async fn touch_session(&self, id: SessionId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.sessions.touch_session(id, at).await
    }
    async fn delete_session(
        &self,
        user_id: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.sessions.delete_session(user_id, id).await
    }
    async fn delete_user_sessions(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.sessions.delete_user_sessions(user_id, keep).await
    }
    async fn delete_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_before: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        self.sessions
            .delete_expired_sessions(now, idle_before)
            .await
    }
}

#[async_trait]
impl UserStore for Split {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.base.create_user(user).await
    }
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.base.user_by_id(id).await
    }
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.base.user_by_username(username).await
    }
    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        self.base.credentials(username).await
    }
    async fn set_password(
        &self,
        id: UserId,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.base.set_password(id, hash, at).await
    }
    async fn upgrade_password_hash(
        &self,
        id: UserId,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        self.base.upgrade_password_hash(id, old, new).await
    }
    async fn set_active(
        &self,
        id: UserId,
        active: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.base.set_active(id, active, at).await
    }
    async fn set_roles(
        &self,
        id: UserId,
        is_staff: bool,
        is_superuser: bool,
    ) -> Result<bool, StoreError> {
        self.base.set_roles(id, is_staff, is_superuser).await
    }
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        self.base.delete_user(id).await
    }
    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.base.record_login(id, at).await
    }
    async fn list_users(
        &self,
        search: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<User>, StoreError> {
        self.base.list_users(search, limit, offset).await
    }
}

#[async_trait]
impl TokenStore for Split {
    async fn create_token(&self, token: NewApiToken) -> Result<ApiToken, StoreError> {
        self.base.create_token(token).await
    }
    async fn token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(ApiToken, User)>, StoreError> {
        self.base.token_by_digest(digest).await
    }
    async fn tokens_for_user(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        self.base.tokens_for_user(user_id).await
    }
    async fn revoke_token(
        &self,
        user_id: UserId,
        id: TokenId,
    ) -> Result<Option<ApiToken>, StoreError> {
        self.base.revoke_token(user_id, id).await
    }
    async fn revoke_all_tokens(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        self.base.revoke_all_tokens(user_id).await
    }
    async fn rotate_token(
        &self,
        user_id: UserId,
        id: TokenId,
        replacement: NewApiToken,
    ) -> Result<Option<(ApiToken, ApiToken)>, StoreError> {
        self.base.rotate_token(user_id, id, replacement).await
    }
    async fn touch_token(&self, id: TokenId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.base.touch_token(id, at).await
    }
    async fn delete_expired_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.base.delete_expired_tokens(now).await
    }
}

#[async_trait]
impl SecretStore for Split {
    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.base.secret_or_insert(name, candidate).await
    }

    async fn rewrap_keys(
        &self,
        rewrap: &restguard_core::store::Rewrap<'_>,
    ) -> Result<u64, StoreError> {
        self.base.rewrap_keys(rewrap).await
    }
}

#[async_trait]
impl JwtStore for Split {
    async fn create_refresh(&self, token: NewRefreshToken) -> Result<RefreshToken, StoreError> {
        self.base.create_refresh(token).await
    }
    async fn refresh_by_jti(&self, jti: &SecretDigest) -> Result<Option<RefreshToken>, StoreError> {
        self.base.refresh_by_jti(jti).await
    }
    async fn consume_refresh(
        &self,
        jti: &SecretDigest,
        replacement: Option<NewRefreshToken>,
        at: OffsetDateTime,
    ) -> Result<RefreshUse, StoreError> {
        self.base.consume_refresh(jti, replacement, at).await
    }
    async fn extend_family(
        &self,
        parent: &SecretDigest,
        replacement: NewRefreshToken,
    ) -> Result<Option<RefreshToken>, StoreError> {
        self.base.extend_family(parent, replacement).await
    }
    async fn revoke_family(
        &self,
        family: &FamilyId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.base.revoke_family(family, at).await
    }
    async fn blacklist_jti(
        &self,
        jti: &SecretDigest,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.base.blacklist_jti(jti, expires_at).await
    }
    async fn is_blacklisted(&self, jti: &SecretDigest) -> Result<bool, StoreError> {
        self.base.is_blacklisted(jti).await
    }
    async fn delete_expired_jwt(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.base.delete_expired_jwt(now).await
    }
}

#[async_trait]
impl SigningKeyStore for Split {
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.base.signing_keys().await
    }
    async fn add_first_signing_key(&self, key: SigningKey) -> Result<bool, StoreError> {
        self.base.add_first_signing_key(key).await
    }
    async fn rotate_signing_key(
        &self,
        key: SigningKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.base.rotate_signing_key(key, at).await
    }
    async fn delete_retired_signing_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.base.delete_retired_signing_keys(before).await
    }
}

#[async_trait]
impl OAuthStore for Split {
    async fn create_application(&self, app: NewApplication) -> Result<Application, StoreError> {
        self.base.create_application(app).await
    }
    async fn application_by_client_id(
        &self,
        client_id: &str,
    ) -> Result<Option<Application>, StoreError> {
        self.base.application_by_client_id(client_id).await
    }
    async fn application_by_id(
        &self,
        id: ApplicationId,
    ) -> Result<Option<Application>, StoreError> {
        self.base.application_by_id(id).await
    }
    async fn applications(&self) -> Result<Vec<Application>, StoreError> {
        self.base.applications().await
    }
    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_digest: Option<SecretDigest>,
    ) -> Result<bool, StoreError> {
        self.base.set_client_secret(client_id, secret_digest).await
    }
    async fn update_application(
        &self,
        client_id: &str,
        update: ApplicationUpdate,
    ) -> Result<Option<Application>, StoreError> {
        self.base.update_application(client_id, update).await
    }
    async fn delete_application(&self, client_id: &str) -> Result<bool, StoreError> {
        self.base.delete_application(client_id).await
    }
    async fn create_code(&self, code: AuthorizationCode) -> Result<(), StoreError> {
        self.base.create_code(code).await
    }
    async fn code_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCode>, StoreError> {
        self.base.code_by_digest(digest).await
    }
    async fn consume_code(
        &self,
        digest: &SecretDigest,
        family: &FamilyId,
        tokens: Vec<NewOAuthToken>,
        at: OffsetDateTime,
    ) -> Result<CodeUse, StoreError> {
        self.base.consume_code(digest, family, tokens, at).await
    }
    async fn create_oauth_tokens(&self, tokens: Vec<NewOAuthToken>) -> Result<(), StoreError> {
        self.base.create_oauth_tokens(tokens).await
    }
    async fn oauth_token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(OAuthToken, Option<User>)>, StoreError> {
        self.base.oauth_token_by_digest(digest).await
    }
    async fn rotate_refresh(
        &self,
        digest: &SecretDigest,
        replacements: Vec<NewOAuthToken>,
        at: OffsetDateTime,
    ) -> Result<OAuthRefreshUse, StoreError> {
        self.base.rotate_refresh(digest, replacements, at).await
    }
    async fn revoke_oauth_token(&self, id: i64, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.base.revoke_oauth_token(id, at).await
    }
    async fn revoke_oauth_family(
        &self,
        family: &FamilyId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.base.revoke_oauth_family(family, at).await
    }
    async fn authorized_applications(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<AuthorizedApplication>, StoreError> {
        self.base.authorized_applications(user_id, now).await
    }
    async fn revoke_authorization(
        &self,
        user_id: UserId,
        application: ApplicationId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.base
            .revoke_authorization(user_id, application, at)
            .await
    }
    async fn delete_expired_oauth(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.base.delete_expired_oauth(now).await
    }
}

#[async_trait]
impl StoreHealth for Split {
    async fn ping(&self) -> Result<(), StoreError> {
        self.base.ping().await
    }
}
