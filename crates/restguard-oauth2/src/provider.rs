//! [`Provider`]: the authorization server's endpoints, independent of any web framework.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use restguard::{
    digest::{ordered_id, ordered_secret, random_secret, SecretDigester},
    invalidation::BusLink,
    jwt::{ClaimsSigner, JwtAlgorithm, KeyError},
    password::{Login, PasswordAuth},
};
use restguard_core::{
    invalidation::{Invalidation, InvalidationBus},
    secret::SecretString,
    store::{
        Application, ApplicationId, AuthorizationCode, ClientType, CodeUse, FamilyId,
        NewOAuthToken, OAuthRefreshUse, OAuthStore, OAuthToken, OAuthTokenKind, SecretDigest,
        Stores, UserStore,
    },
    StoreError, User, UserId,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256, Sha512};
use time::OffsetDateTime;

use crate::{
    client::{
        challenge_well_formed, check_client, client_credentials, pkce_matches,
        redirect_uri_matches, ClientCredentials,
    },
    error::{json_no_store, ErrorCode, OAuthError},
    form::{parse_scope, Params},
    id_token_hint::{self, InvalidHint, VerifiedHint},
};

/// Prefix of every access token (for secret scanners).
pub const ACCESS_TOKEN_PREFIX: &str = "rgat_";
/// Prefix of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "rgrt_";
/// Prefix of every authorization code.
pub const CODE_PREFIX: &str = "rgac_";
/// Prefix of every client secret.
pub const CLIENT_SECRET_PREFIX: &str = "rgcs_";
/// Longest token or code looked up.
pub const MAX_TOKEN_LEN: usize = 128;

/// The scope that lets a bearer token call `/o/introspect/`.
pub const INTROSPECTION_SCOPE: &str = "introspection";
/// Scopes a client gets only when an administrator lists them in its allowed scopes: never
/// through an empty ("every scope") list, never as a default.
pub const ADMIN_GRANTED_SCOPES: [&str; 1] = [INTROSPECTION_SCOPE];

/// Whether `scope` is granted only explicitly ([`ADMIN_GRANTED_SCOPES`]).
fn admin_granted(scope: &str) -> bool {
    ADMIN_GRANTED_SCOPES.contains(&scope)
}

/// The grant types.
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// `client_credentials`.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// `password` (off unless configured).
pub const GRANT_PASSWORD: &str = "password";
/// `refresh_token`.
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";

/// The provider's settings (CONTRACT §9 `[oauth2]`).
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The server's public base URL (`http://127.0.0.1:8000`); the issuer is `<it>/o`.
    pub public_url: String,
    /// Access token lifetime (default 1 h).
    pub access_token_lifetime: Duration,
    /// Refresh token lifetime (default 30 d).
    pub refresh_token_lifetime: Duration,
    /// Authorization code lifetime (default 60 s).
    pub code_lifetime: Duration,
    /// Offer the password grant (default off, RFC 9700).
    pub password_grant: bool,
    /// Accept `code_challenge_method=plain` (default off).
    pub allow_plain_pkce: bool,
    /// Every scope the server knows.
    pub scopes: Vec<String>,
    /// Scopes granted when a request names none (filtered by the client's allowed scopes;
    /// [`ADMIN_GRANTED_SCOPES`] are never among them).
    pub default_scopes: Vec<String>,
    /// How long access-token checks and client lookups are cached in process (default 1 s;
    /// zero: not cached). Revocations through this provider, and — with an invalidation bus
    /// — through any instance, drop the cache at once.
    pub cache_ttl: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8000".into(),
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(30 * 86400),
            code_lifetime: Duration::from_secs(60),
            password_grant: false,
            allow_plain_pkce: false,
            scopes: [
                "openid",
                "profile",
                "email",
                "read",
                "write",
                "introspection",
            ]
            .map(String::from)
            .to_vec(),
            default_scopes: vec!["read".into()],
            cache_ttl: Duration::from_secs(1),
        }
    }
}

impl OAuthSettings {
    /// `<public_url>/o`.
    pub fn issuer(&self) -> String {
        format!("{}/o", self.public_url.trim_end_matches('/'))
    }
}

/// A checked access token: the record, its user (`None` for client credentials) and client.
#[derive(Debug, Clone)]
pub struct AccessGrant {
    /// The stored token.
    pub token: OAuthToken,
    /// The resource owner.
    pub user: Option<Arc<User>>,
    /// The client's `client_id` when the token has no user (client credentials): the
    /// principal of the request.
    pub client_id: Option<String>,
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessProblem {
    /// Unknown, revoked, not an access token, or its user changed credentials / is inactive.
    Invalid,
    /// Past its expiry.
    Expired,
}

/// A validated authorization request, ready for consent and a code.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// The client.
    pub application: Application,
    /// The redirect URI the response goes to.
    pub redirect_uri: String,
    /// Requested (and allowed) scopes.
    pub scopes: Vec<String>,
    /// `state`, echoed back.
    pub state: Option<String>,
    /// PKCE challenge.
    pub code_challenge: String,
    /// PKCE method.
    pub code_challenge_method: String,
    /// OIDC nonce.
    pub nonce: Option<String>,
    /// OIDC prompt values.
    pub prompt: Vec<String>,
    /// OIDC `max_age`: a sign-in older than this many seconds must be repeated.
    pub max_age: Option<u64>,
    /// The request's parameters (for the consent form's hidden inputs).
    pub params: Vec<(String, String)>,
}

/// An authorize error: shown on a page (client or redirect URI errors, never redirected) or
/// sent back to the client's redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// A 400 page with this message.
    Page(String),
    /// A redirect to this URL (carrying `error`, `error_description`, `state`, `iss`).
    Redirect(String),
}

/// The OAuth2 / OIDC provider.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    oauth: Arc<dyn OAuthStore>,
    users: Arc<dyn UserStore>,
    digester: SecretDigester,
    passwords: Option<PasswordAuth>,
    settings: OAuthSettings,
    signers: Vec<ClaimsSigner>,
    cache: moka::sync::Cache<SecretDigest, Arc<AccessGrant>>,
    /// Applications by `client_id` (the token endpoint's hot path).
    clients: moka::sync::Cache<String, Arc<Application>>,
    /// Where revocations are announced to other instances, when attached.
    bus: BusLink,
}

impl Inner {
    /// Drops what `event` made stale: a user's grants, one token's check, or everything.
    fn drop_cached(&self, event: Invalidation) {
        match event {
            Invalidation::User(user_id) => {
                // Only fails when closures are not enabled; the builder enables them.
                let _ = self.cache.invalidate_entries_if(move |_, grant| {
                    grant.user.as_ref().is_some_and(|u| u.id == user_id)
                });
            }
            Invalidation::Digest(digest) => self.cache.invalidate(&digest),
            _ => {
                self.cache.invalidate_all();
                self.clients.invalidate_all();
            }
        }
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn seconds(d: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// A cache of `capacity` entries living `ttl` (with `ttl` zero nothing is inserted).
fn cache<K, V>(capacity: u64, ttl: Duration) -> moka::sync::Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .time_to_live(ttl.max(Duration::from_millis(1)))
        .support_invalidation_closures()
        .build()
}

impl Provider {
    /// A provider over `stores`, with id_token keys (RS256 and EdDSA) from the shared signing
    /// key store, generated on first start. `passwords` enables the password grant's check
    /// (used only when [`OAuthSettings::password_grant`] is on).
    pub async fn new(
        stores: &Stores,
        digester: SecretDigester,
        passwords: Option<PasswordAuth>,
        settings: OAuthSettings,
    ) -> Result<Self, KeyError> {
        let window = settings
            .access_token_lifetime
            .max(Duration::from_secs(86400));
        let mut signers = Vec::new();
        for alg in [JwtAlgorithm::RS256, JwtAlgorithm::EdDSA] {
            signers.push(ClaimsSigner::from_store(stores.signing_keys.clone(), alg, window).await?);
        }
        let ttl = settings.cache_ttl;
        Ok(Self {
            inner: Arc::new(Inner {
                oauth: stores.oauth.clone(),
                users: stores.users.clone(),
                digester,
                passwords,
                settings,
                signers,
                cache: cache(100_000, ttl),
                clients: cache(10_000, ttl),
                bus: BusLink::default(),
            }),
        })
    }

    /// Announces revocations on `bus` and drops what other instances announce there (user
    /// changes included), so an access token revoked anywhere is refused here at once, not
    /// after the cache lifetime.
    pub fn with_invalidations(self, bus: Arc<dyn InvalidationBus>) -> Self {
        self.inner.bus.attach(bus, &self.inner, Inner::drop_cached);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &OAuthSettings {
        &self.inner.settings
    }

    /// The OAuth store.
    pub fn store(&self) -> &Arc<dyn OAuthStore> {
        &self.inner.oauth
    }

    /// The digester (client secrets, codes, tokens).
    pub fn digester(&self) -> &SecretDigester {
        &self.inner.digester
    }

    /// The issuer (`<public_url>/o`).
    pub fn issuer(&self) -> String {
        self.inner.settings.issuer()
    }

    fn signer(&self, algorithm: &str) -> Option<&ClaimsSigner> {
        self.inner
            .signers
            .iter()
            .find(|s| s.algorithm().as_str() == algorithm)
    }

    /// Forgets every cached access-token check and application here and, through the
    /// invalidation bus, on every instance: after an application's secret, settings or
    /// existence changed.
    pub async fn forget_cached(&self) {
        self.forget(Invalidation::All).await;
    }

    /// Forgets the cached checks of `user_id`'s tokens in this process (the caller announces
    /// the user's change on the bus, as every account change does).
    pub fn forget_user(&self, user_id: UserId) {
        self.inner.drop_cached(Invalidation::User(user_id));
    }

    /// Drops `event` here at once and announces it to the other instances.
    async fn forget(&self, event: Invalidation) {
        self.inner.drop_cached(event);
        self.inner.bus.publish(event).await;
    }

    /// What a revoked family makes stale: its user's grants, or (no user) everything.
    fn family_event(user: Option<UserId>) -> Invalidation {
        user.map_or(Invalidation::All, Invalidation::User)
    }

    /// Ends what `user_id` granted `application` (the account page's and the admin's
    /// "revoke"): its pending codes and its tokens at once, on every instance. Returns how
    /// many codes and tokens ended.
    pub async fn revoke_authorization(
        &self,
        user_id: UserId,
        application: ApplicationId,
    ) -> Result<u64, StoreError> {
        let ended = self
            .inner
            .oauth
            .revoke_authorization(user_id, application, now())
            .await?;
        self.forget(Invalidation::User(user_id)).await;
        Ok(ended)
    }

    /// Whether checks are cached at all (`cache_ttl` zero: never).
    fn caching(&self) -> bool {
        !self.inner.settings.cache_ttl.is_zero()
    }

    /// Authenticates the client of a request (application lookups cached for `cache_ttl`).
    async fn authenticate(&self, creds: &ClientCredentials) -> Result<Application, OAuthError> {
        let app = match self.inner.clients.get(&creds.client_id) {
            Some(app) => Some(app),
            None if creds.client_id.len() <= MAX_TOKEN_LEN => {
                let found = self
                    .inner
                    .oauth
                    .application_by_client_id(&creds.client_id)
                    .await?
                    .map(Arc::new);
                if let Some(app) = found.as_ref().filter(|_| self.caching()) {
                    self.inner
                        .clients
                        .insert(creds.client_id.clone(), app.clone());
                }
                found
            }
            None => None,
        };
        check_client(app.as_deref(), &self.inner.digester, creds)?;
        app.map(|a| (*a).clone())
            .ok_or_else(OAuthError::invalid_client)
    }

    // ---------------------------------------------------------------- resource side

    /// Checks an access token for a resource request.
    pub async fn check_access_token(
        &self,
        token: &str,
    ) -> Result<Result<Arc<AccessGrant>, AccessProblem>, StoreError> {
        if !token.starts_with(ACCESS_TOKEN_PREFIX) || token.len() > MAX_TOKEN_LEN {
            return Ok(Err(AccessProblem::Invalid));
        }
        let digest = self.inner.digester.digest(token);
        let grant = match self.inner.cache.get(&digest) {
            Some(hit) => hit,
            None => {
                let Some((record, user)) = self.inner.oauth.oauth_token_by_digest(&digest).await?
                else {
                    return Ok(Err(AccessProblem::Invalid));
                };
                // A user-less token speaks for its client: resolve the client id once, with
                // the cached grant.
                let client_id = match user {
                    Some(_) => None,
                    None => match self
                        .inner
                        .oauth
                        .application_by_id(record.application)
                        .await?
                    {
                        Some(app) => Some(app.client_id),
                        None => return Ok(Err(AccessProblem::Invalid)),
                    },
                };
                let grant = Arc::new(AccessGrant {
                    token: record,
                    user: user.map(Arc::new),
                    client_id,
                });
                if self.caching() {
                    self.inner.cache.insert(digest, grant.clone());
                }
                grant
            }
        };
        let t = &grant.token;
        if t.kind != OAuthTokenKind::Access
            || t.revoked_at.is_some()
            || !bool::from(subtle::ConstantTimeEq::ct_eq(
                &t.digest.0[..],
                &digest.0[..],
            ))
        {
            return Ok(Err(AccessProblem::Invalid));
        }
        if let Some(user) = &grant.user {
            if !user.is_active || user.credentials_changed_at > t.created {
                return Ok(Err(AccessProblem::Invalid));
            }
        }
        if t.expires_at <= now() {
            return Ok(Err(AccessProblem::Expired));
        }
        Ok(Ok(grant))
    }

    // ---------------------------------------------------------------- scopes

    /// The scopes `app` may have: its allowed list, or when that is empty every scope the
    /// server knows except those only an administrator grants.
    fn allowed_scopes(&self, app: &Application) -> Vec<String> {
        if app.allowed_scopes.is_empty() {
            self.inner
                .settings
                .scopes
                .iter()
                .filter(|s| !admin_granted(s))
                .cloned()
                .collect()
        } else {
            app.allowed_scopes
                .iter()
                .filter(|s| self.inner.settings.scopes.contains(s))
                .cloned()
                .collect()
        }
    }

    /// The scopes granted for a `scope` parameter: all must be allowed; none named → the
    /// defaults the client may have.
    fn resolve_scopes(
        &self,
        app: &Application,
        scope: Option<&str>,
    ) -> Result<Vec<String>, OAuthError> {
        let allowed = self.allowed_scopes(app);
        match scope {
            Some(s) => {
                let requested = parse_scope(s)?;
                if requested.is_empty() {
                    return Err(
                        OAuthError::new(ErrorCode::InvalidScope).describe("No scope requested.")
                    );
                }
                if let Some(bad) = requested.iter().find(|r| !allowed.contains(r)) {
                    return Err(OAuthError::new(ErrorCode::InvalidScope)
                        .describe(format!("Scope {bad:?} is not allowed for this client.")));
                }
                Ok(requested)
            }
            None => Ok(self
                .inner
                .settings
                .default_scopes
                .iter()
                .filter(|s| allowed.contains(s) && !admin_granted(s))
                .cloned()
                .collect()),
        }
    }

    // ---------------------------------------------------------------- authorize

    fn redirect_with(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
    ) -> String {
        let Ok(mut url) = url::Url::parse(redirect_uri) else {
            return redirect_uri.to_owned();
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(state) = state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.issuer());
        }
        url.to_string()
    }

    /// The redirect carrying an error back to the client.
    pub fn error_redirect(&self, request: &AuthorizeRequest, error: &OAuthError) -> String {
        self.redirect_error(&request.redirect_uri, request.state.as_deref(), error)
    }

    fn redirect_error(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: &OAuthError,
    ) -> String {
        let mut params = vec![("error", error.code.as_str())];
        if let Some(d) = &error.description {
            params.push(("error_description", d));
        }
        self.redirect_with(redirect_uri, &params, state)
    }

    /// Validates an authorization request (query or consent form parameters), in DOT's order:
    /// client and redirect URI problems are pages; every later problem redirects.
    pub async fn validate_authorize(
        &self,
        pairs: Vec<(String, String)>,
    ) -> Result<AuthorizeRequest, AuthorizeError> {
        let page = |m: &str| AuthorizeError::Page(m.to_owned());
        let count = |name: &str| pairs.iter().filter(|(k, _)| k == name).count();
        if count("client_id") > 1 {
            return Err(page("The client_id parameter is repeated."));
        }
        if count("redirect_uri") > 1 {
            return Err(page("The redirect_uri parameter is repeated."));
        }
        let first = |name: &str| {
            pairs
                .iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let Some(client_id) = first("client_id") else {
            return Err(page("The client_id parameter is missing."));
        };
        let app = match self.inner.oauth.application_by_client_id(&client_id).await {
            Ok(Some(app)) => app,
            Ok(None) => return Err(page("Invalid client_id: no such application.")),
            Err(e) => {
                tracing::error!(error = %e, "authorize: store failure");
                return Err(page("The service is temporarily unavailable."));
            }
        };
        let redirect_uri = match first("redirect_uri") {
            Some(uri) => {
                if !redirect_uri_matches(&app.redirect_uris, &uri) {
                    return Err(page(
                        "Mismatching redirect URI: it is not registered for this client.",
                    ));
                }
                uri
            }
            None => match app.redirect_uris.as_slice() {
                [only] => only.clone(),
                _ => return Err(page("The redirect_uri parameter is missing.")),
            },
        };
        let state = first("state");
        let redirect_err = |e: OAuthError| {
            AuthorizeError::Redirect(self.redirect_error(&redirect_uri, state.as_deref(), &e))
        };
        let params = match Params::from_pairs(pairs.clone()) {
            Ok(p) => p,
            Err(e) => return Err(redirect_err(e)),
        };
        match params.get("response_type") {
            None => {
                return Err(redirect_err(OAuthError::invalid_request(
                    "Missing response_type.",
                )))
            }
            Some("code") => {}
            Some(_) => {
                return Err(redirect_err(
                    OAuthError::new(ErrorCode::UnsupportedResponseType)
                        .describe("Only response_type=code is offered."),
                ))
            }
        }
        if !app
            .grant_types
            .iter()
            .any(|g| g == GRANT_AUTHORIZATION_CODE)
        {
            return Err(redirect_err(
                OAuthError::new(ErrorCode::UnauthorizedClient)
                    .describe("This client may not use the authorization code grant."),
            ));
        }
        let scopes = self
            .resolve_scopes(&app, params.get("scope"))
            .map_err(&redirect_err)?;
        let Some(challenge) = params.get("code_challenge") else {
            return Err(redirect_err(OAuthError::invalid_request(
                "PKCE is required: code_challenge is missing.",
            )));
        };
        let method = match params.get("code_challenge_method") {
            Some("S256") => "S256",
            Some("plain") | None if self.inner.settings.allow_plain_pkce => "plain",
            _ => {
                return Err(redirect_err(OAuthError::invalid_request(
                    "code_challenge_method must be S256.",
                )))
            }
        };
        if !challenge_well_formed(challenge) {
            return Err(redirect_err(OAuthError::invalid_request(
                "Malformed code_challenge.",
            )));
        }
        let prompt = match params.get("prompt").map(parse_scope).transpose() {
            Ok(prompt) => prompt.unwrap_or_default(),
            Err(_) => {
                return Err(redirect_err(OAuthError::invalid_request(
                    "Invalid prompt value.",
                )))
            }
        };
        if prompt
            .iter()
            .any(|p| !matches!(p.as_str(), "none" | "login" | "consent" | "select_account"))
            || (prompt.iter().any(|p| p == "none") && prompt.len() > 1)
        {
            return Err(redirect_err(OAuthError::invalid_request(
                "Invalid prompt value.",
            )));
        }
        let nonce = params.get("nonce").map(str::to_owned);
        if nonce.as_ref().is_some_and(|n| n.len() > 512)
            || state.as_ref().is_some_and(|s| s.len() > 2048)
        {
            return Err(redirect_err(OAuthError::invalid_request(
                "state or nonce is too long.",
            )));
        }
        let max_age = match params.get("max_age") {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(redirect_err(OAuthError::invalid_request(
                        "max_age must be a number of seconds.",
                    )))
                }
            },
        };
        Ok(AuthorizeRequest {
            application: app,
            redirect_uri,
            scopes,
            state,
            code_challenge: challenge.to_owned(),
            code_challenge_method: method.to_owned(),
            nonce,
            prompt,
            max_age,
            params: pairs,
        })
    }

    /// Issues a code for an approved request; returns the redirect URL.
    pub async fn issue_code(
        &self,
        request: &AuthorizeRequest,
        user: &User,
        auth_time: OffsetDateTime,
    ) -> Result<String, OAuthError> {
        let code = ordered_secret(CODE_PREFIX);
        let created = now();
        self.inner
            .oauth
            .create_code(AuthorizationCode {
                digest: self.inner.digester.digest(&code),
                application: request.application.id,
                user_id: user.id,
                redirect_uri: request.redirect_uri.clone(),
                scopes: request.scopes.clone(),
                code_challenge: Some(request.code_challenge.clone()),
                code_challenge_method: Some(request.code_challenge_method.clone()),
                nonce: request.nonce.clone(),
                auth_time,
                created,
                expires_at: created + seconds(self.inner.settings.code_lifetime),
                used_at: None,
                family: None,
            })
            .await?;
        Ok(self.redirect_with(
            &request.redirect_uri,
            &[("code", &code)],
            request.state.as_deref(),
        ))
    }

    /// Whether a sign-in at `auth_time` is too old for the request's `max_age` at `now`.
    pub fn needs_fresh_login(
        request: &AuthorizeRequest,
        auth_time: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        request.max_age.is_some_and(|max| {
            now - auth_time > time::Duration::seconds(i64::try_from(max).unwrap_or(i64::MAX / 2))
        })
    }

    /// The redirect for `prompt=none` without a session, or a denial.
    pub fn authorize_error(
        &self,
        request: &AuthorizeRequest,
        code: ErrorCode,
        description: &'static str,
    ) -> String {
        self.error_redirect(request, &OAuthError::new(code).describe(description))
    }

    // ---------------------------------------------------------------- token endpoint

    /// `POST /o/token/`: the whole endpoint (content type, form, client authentication,
    /// grants). Returns the response, with `Cache-Control: no-store`.
    pub async fn token_endpoint(
        &self,
        content_type: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
        body: &[u8],
        client_ip: Option<IpAddr>,
    ) -> Response<Bytes> {
        match self
            .token(content_type, authorization, body, client_ip)
            .await
        {
            Ok(body) => json_no_store(StatusCode::OK, &body),
            Err(e) => e.into_response(),
        }
    }

    async fn token(
        &self,
        content_type: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
        body: &[u8],
        client_ip: Option<IpAddr>,
    ) -> Result<Value, OAuthError> {
        let params = read_form(content_type, body, true)?;
        let grant = params
            .get("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("Missing grant_type."))?;
        let known = matches!(
            grant,
            GRANT_AUTHORIZATION_CODE | GRANT_CLIENT_CREDENTIALS | GRANT_REFRESH_TOKEN
        ) || (grant == GRANT_PASSWORD && self.inner.settings.password_grant);
        if !known {
            return Err(OAuthError::new(ErrorCode::UnsupportedGrantType)
                .describe("This grant type is not offered."));
        }
        let creds =
            client_credentials(authorization, &params)?.ok_or_else(OAuthError::invalid_client)?;
        let app = self.authenticate(&creds).await?;
        let may = |g: &str| app.grant_types.iter().any(|x| x == g);
        let allowed = match grant {
            GRANT_REFRESH_TOKEN => may(GRANT_AUTHORIZATION_CODE) || may(GRANT_PASSWORD),
            GRANT_CLIENT_CREDENTIALS => may(grant) && app.client_type == ClientType::Confidential,
            other => may(other),
        };
        if !allowed {
            return Err(OAuthError::new(ErrorCode::UnauthorizedClient)
                .describe("This client may not use this grant type."));
        }
        match grant {
            GRANT_AUTHORIZATION_CODE => self.grant_code(&app, &params).await,
            GRANT_CLIENT_CREDENTIALS => {
                let scopes = self.resolve_scopes(&app, params.get("scope"))?;
                self.issue(&app, None, scopes, FamilyId(ordered_id()), false, None)
                    .await
            }
            GRANT_REFRESH_TOKEN => self.grant_refresh(&app, &params).await,
            _ => self.grant_password(&app, &params, client_ip).await,
        }
    }

    async fn grant_code(&self, app: &Application, params: &Params) -> Result<Value, OAuthError> {
        let code = params
            .get("code")
            .ok_or_else(|| OAuthError::invalid_request("Missing code."))?;
        let bad = || OAuthError::invalid_grant("The authorization code is invalid or expired.");
        if !code.starts_with(CODE_PREFIX) || code.len() > MAX_TOKEN_LEN {
            return Err(bad());
        }
        let digest = self.inner.digester.digest(code);
        let stored = self
            .inner
            .oauth
            .code_by_digest(&digest)
            .await?
            .ok_or_else(bad)?;
        if stored.application != app.id {
            return Err(bad());
        }
        if stored.used_at.is_some() {
            self.revoke_code_family(&stored).await?;
            return Err(bad());
        }
        if stored.expires_at <= now() {
            return Err(bad());
        }
        match params.get("redirect_uri") {
            Some(uri) if uri != stored.redirect_uri => {
                return Err(OAuthError::invalid_grant(
                    "redirect_uri does not match the authorization request.",
                ))
            }
            Some(_) => {}
            None if app.redirect_uris.len() == 1 => {}
            None => return Err(OAuthError::invalid_request("Missing redirect_uri.")),
        }
        if let (Some(challenge), Some(method)) =
            (&stored.code_challenge, &stored.code_challenge_method)
        {
            let verifier = params
                .get("code_verifier")
                .ok_or_else(|| OAuthError::invalid_request("Missing code_verifier."))?;
            if !pkce_matches(method, challenge, verifier) {
                return Err(OAuthError::invalid_grant(
                    "The code_verifier does not match.",
                ));
            }
        }
        let user = self
            .inner
            .users
            .user_by_id(stored.user_id)
            .await?
            .filter(|u| u.is_active && u.credentials_changed_at <= stored.created)
            .ok_or_else(bad)?;
        // The tokens are stored with the code's use, in one transaction: a replay racing this
        // exchange revokes them for sure.
        let family = FamilyId(ordered_id());
        let scopes = stored.scopes.clone();
        let (access, access_record) =
            self.new_token(OAuthTokenKind::Access, app, Some(&user), &scopes, &family);
        let (refresh, refresh_record) =
            self.new_token(OAuthTokenKind::Refresh, app, Some(&user), &scopes, &family);
        match self
            .inner
            .oauth
            .consume_code(&digest, &family, vec![access_record, refresh_record], now())
            .await?
        {
            CodeUse::Consumed(_) => {}
            CodeUse::AlreadyUsed(c) => {
                self.revoke_code_family(&c).await?;
                return Err(bad());
            }
            CodeUse::Unknown => return Err(bad()),
        }
        let id_token = if scopes.iter().any(|s| s == "openid") {
            let input = IdTokenInput {
                nonce: stored.nonce.clone(),
                auth_time: stored.auth_time,
            };
            Some(self.id_token(app, &user, &access, &input)?)
        } else {
            None
        };
        Ok(self.token_body(&access, Some(&refresh), &scopes, id_token))
    }

    async fn revoke_code_family(&self, code: &AuthorizationCode) -> Result<(), OAuthError> {
        if let Some(family) = &code.family {
            let n = self.inner.oauth.revoke_oauth_family(family, now()).await?;
            self.forget(Invalidation::User(code.user_id)).await;
            tracing::warn!(
                revoked = n,
                "authorization code replayed; its tokens are revoked"
            );
        }
        Ok(())
    }

    async fn grant_refresh(&self, app: &Application, params: &Params) -> Result<Value, OAuthError> {
        let token = params
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("Missing refresh_token."))?;
        let bad = || OAuthError::invalid_grant("The refresh token is invalid or expired.");
        if !token.starts_with(REFRESH_TOKEN_PREFIX) || token.len() > MAX_TOKEN_LEN {
            return Err(bad());
        }
        let digest = self.inner.digester.digest(token);
        let (stored, user) = self
            .inner
            .oauth
            .oauth_token_by_digest(&digest)
            .await?
            .ok_or_else(bad)?;
        if stored.kind != OAuthTokenKind::Refresh || stored.application != app.id {
            return Err(bad());
        }
        if stored.revoked_at.is_some() {
            return Err(bad());
        }
        if stored.used_at.is_some() {
            self.inner
                .oauth
                .revoke_oauth_family(&stored.family, now())
                .await?;
            self.forget(Self::family_event(stored.user_id)).await;
            return Err(bad());
        }
        if stored.expires_at <= now() {
            return Err(bad());
        }
        let scopes = match params.get("scope") {
            None => stored.scopes.clone(),
            Some(s) => {
                let requested = parse_scope(s)?;
                if requested.is_empty() || requested.iter().any(|r| !stored.scopes.contains(r)) {
                    return Err(OAuthError::new(ErrorCode::InvalidScope)
                        .describe("The requested scope exceeds the original grant."));
                }
                requested
            }
        };
        if let Some(user) = &user {
            if !user.is_active || user.credentials_changed_at > stored.created {
                return Err(bad());
            }
        }
        let (access, access_record) = self.new_token(
            OAuthTokenKind::Access,
            app,
            user.as_ref(),
            &scopes,
            &stored.family,
        );
        // The new refresh token keeps the original grant's scopes.
        let (refresh, refresh_record) = self.new_token(
            OAuthTokenKind::Refresh,
            app,
            user.as_ref(),
            &stored.scopes,
            &stored.family,
        );
        // OpenID Connect Core §12.2, as DOT answers: a refresh of an `openid` grant carries a
        // new id_token for the same subject and audience, without a nonce, its auth_time the
        // user's last sign-in. Signed before the write, so nothing fails after the old token
        // is consumed.
        let id_token = match &user {
            Some(user) if scopes.iter().any(|s| s == "openid") => {
                let input = IdTokenInput {
                    nonce: None,
                    auth_time: user.last_login.unwrap_or(stored.created),
                };
                Some(self.id_token(app, user, &access, &input)?)
            }
            _ => None,
        };
        match self
            .inner
            .oauth
            .rotate_refresh(&digest, vec![access_record, refresh_record], now())
            .await?
        {
            OAuthRefreshUse::Consumed(_) => {}
            OAuthRefreshUse::AlreadyUsed(t) => {
                self.inner
                    .oauth
                    .revoke_oauth_family(&t.family, now())
                    .await?;
                self.forget(Self::family_event(t.user_id)).await;
                return Err(bad());
            }
            OAuthRefreshUse::Revoked(_) | OAuthRefreshUse::Unknown => return Err(bad()),
        }
        Ok(self.token_body(&access, Some(&refresh), &scopes, id_token))
    }

    async fn grant_password(
        &self,
        app: &Application,
        params: &Params,
        client_ip: Option<IpAddr>,
    ) -> Result<Value, OAuthError> {
        let (Some(username), Some(password)) = (params.get("username"), params.get("password"))
        else {
            return Err(OAuthError::invalid_request("Missing username or password."));
        };
        let Some(passwords) = &self.inner.passwords else {
            return Err(OAuthError::new(ErrorCode::UnsupportedGrantType));
        };
        let user = match passwords
            .login(client_ip, username, &SecretString::new(password.to_owned()))
            .await?
        {
            Login::Valid(user) => user,
            Login::Invalid => return Err(OAuthError::invalid_grant("Invalid credentials given.")),
            Login::Throttled(wait) => return Err(OAuthError::throttled(wait)),
        };
        let scopes = self.resolve_scopes(app, params.get("scope"))?;
        self.issue(app, Some(&user), scopes, FamilyId(ordered_id()), true, None)
            .await
    }

    fn new_token(
        &self,
        kind: OAuthTokenKind,
        app: &Application,
        user: Option<&User>,
        scopes: &[String],
        family: &FamilyId,
    ) -> (String, NewOAuthToken) {
        let (prefix, lifetime) = match kind {
            OAuthTokenKind::Access => (
                ACCESS_TOKEN_PREFIX,
                self.inner.settings.access_token_lifetime,
            ),
            OAuthTokenKind::Refresh => (
                REFRESH_TOKEN_PREFIX,
                self.inner.settings.refresh_token_lifetime,
            ),
        };
        let secret = ordered_secret(prefix);
        let created = now();
        let record = NewOAuthToken {
            kind,
            digest: self.inner.digester.digest(&secret),
            application: app.id,
            user_id: user.map(|u| u.id),
            scopes: scopes.to_vec(),
            family: family.clone(),
            created,
            expires_at: created + seconds(lifetime),
        };
        (secret, record)
    }

    async fn issue(
        &self,
        app: &Application,
        user: Option<&User>,
        scopes: Vec<String>,
        family: FamilyId,
        with_refresh: bool,
        oidc: Option<IdTokenInput>,
    ) -> Result<Value, OAuthError> {
        let (access, access_record) =
            self.new_token(OAuthTokenKind::Access, app, user, &scopes, &family);
        let mut records = vec![access_record];
        let refresh = if with_refresh {
            let (refresh, record) =
                self.new_token(OAuthTokenKind::Refresh, app, user, &scopes, &family);
            records.push(record);
            Some(refresh)
        } else {
            None
        };
        self.inner.oauth.create_oauth_tokens(records).await?;
        let id_token = match (oidc, user) {
            (Some(input), Some(user)) => Some(self.id_token(app, user, &access, &input)?),
            _ => None,
        };
        Ok(self.token_body(&access, refresh.as_deref(), &scopes, id_token))
    }

    fn token_body(
        &self,
        access: &str,
        refresh: Option<&str>,
        scopes: &[String],
        id_token: Option<String>,
    ) -> Value {
        let mut body = Map::new();
        body.insert("access_token".into(), json!(access));
        body.insert("token_type".into(), json!("Bearer"));
        body.insert(
            "expires_in".into(),
            json!(self.inner.settings.access_token_lifetime.as_secs()),
        );
        body.insert("scope".into(), json!(scopes.join(" ")));
        if let Some(r) = refresh {
            body.insert("refresh_token".into(), json!(r));
        }
        if let Some(t) = id_token {
            body.insert("id_token".into(), json!(t));
        }
        Value::Object(body)
    }

    fn id_token(
        &self,
        app: &Application,
        user: &User,
        access_token: &str,
        input: &IdTokenInput,
    ) -> Result<String, OAuthError> {
        let signer = self
            .signer(&app.algorithm)
            .or_else(|| self.inner.signers.first())
            .ok_or_else(|| OAuthError::new(ErrorCode::ServerError))?;
        let iat = now().unix_timestamp();
        // at_hash: the left half of the hash the signature algorithm uses (SHA-512 for Ed25519).
        let hash: Vec<u8> = match signer.algorithm() {
            JwtAlgorithm::EdDSA => Sha512::digest(access_token.as_bytes()).to_vec(),
            _ => Sha256::digest(access_token.as_bytes()).to_vec(),
        };
        let mut claims = json!({
            "iss": self.issuer(),
            "sub": user.id.to_string(),
            "aud": app.client_id,
            "exp": iat + i64::try_from(self.inner.settings.access_token_lifetime.as_secs()).unwrap_or(3600),
            "iat": iat,
            "auth_time": input.auth_time.unix_timestamp(),
            "at_hash": URL_SAFE_NO_PAD.encode(&hash[..hash.len() / 2]),
        });
        if let (Some(nonce), Value::Object(map)) = (&input.nonce, &mut claims) {
            map.insert("nonce".into(), json!(nonce));
        }
        signer.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "cannot sign an id_token");
            OAuthError::new(ErrorCode::ServerError)
        })
    }

    // ---------------------------------------------------------------- revocation / introspection

    /// `POST /o/revoke_token/` (RFC 7009): the calling client's tokens only; 200 for unknown
    /// tokens and for other clients' tokens (untouched).
    pub async fn revoke_endpoint(
        &self,
        content_type: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
        body: &[u8],
    ) -> Response<Bytes> {
        let result: Result<(), OAuthError> = async {
            let params = read_form(content_type, body, false)?;
            let creds = client_credentials(authorization, &params)?
                .ok_or_else(OAuthError::invalid_client)?;
            let app = self.authenticate(&creds).await?;
            let token = params
                .get("token")
                .ok_or_else(|| OAuthError::invalid_request("Missing token."))?;
            if token.len() > MAX_TOKEN_LEN {
                return Ok(());
            }
            let digest = self.inner.digester.digest(token);
            let Some((stored, _)) = self.inner.oauth.oauth_token_by_digest(&digest).await? else {
                return Ok(());
            };
            if stored.application != app.id {
                return Ok(());
            }
            match stored.kind {
                // RFC 7009 §2.1: revoking a refresh token ends the grant's access tokens too.
                OAuthTokenKind::Refresh => {
                    self.inner
                        .oauth
                        .revoke_oauth_family(&stored.family, now())
                        .await?;
                    self.forget(Self::family_event(stored.user_id)).await;
                }
                OAuthTokenKind::Access => {
                    self.inner
                        .oauth
                        .revoke_oauth_token(stored.id, now())
                        .await?;
                    self.forget(Invalidation::Digest(stored.digest)).await;
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => json_no_store(StatusCode::OK, &json!({})),
            Err(e) => e.into_response(),
        }
    }

    /// `POST /o/introspect/` (RFC 7662): the caller authenticates as a client, or presents an
    /// access token holding the `introspection` scope.
    pub async fn introspect_endpoint(
        &self,
        content_type: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
        body: &[u8],
    ) -> Response<Bytes> {
        let result: Result<Value, OAuthError> = async {
            let params = read_form(content_type, body, false)?;
            let bearer = authorization
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match bearer {
                Some(token) => match self.check_access_token(token).await? {
                    Ok(grant) if self.may_introspect(&grant).await? => {}
                    _ => return Err(OAuthError::invalid_client()),
                },
                None => {
                    let creds = client_credentials(authorization, &params)?.ok_or_else(OAuthError::invalid_client)?;
                    let app = self.authenticate(&creds).await?;
                    if app.client_type != ClientType::Confidential {
                        return Err(OAuthError::invalid_client());
                    }
                }
            }
            let token = params
                .get("token")
                .ok_or_else(|| OAuthError::invalid_request("Missing token."))?;
            if token.len() > MAX_TOKEN_LEN {
                return Ok(json!({"active": false}));
            }
            let digest = self.inner.digester.digest(token);
            let Some((stored, user)) = self.inner.oauth.oauth_token_by_digest(&digest).await? else {
                return Ok(json!({"active": false}));
            };
            let user_ok = user
                .as_ref()
                .is_none_or(|u| u.is_active && u.credentials_changed_at <= stored.created);
            if !stored.is_live(now()) || !user_ok {
                return Ok(json!({"active": false}));
            }
            let Some(app) = self.inner.oauth.application_by_id(stored.application).await? else {
                return Ok(json!({"active": false}));
            };
            let mut body = json!({
                "active": true,
                "scope": stored.scopes.join(" "),
                "exp": stored.expires_at.unix_timestamp(),
                "iat": stored.created.unix_timestamp(),
                "client_id": app.client_id,
                "token_type": match stored.kind { OAuthTokenKind::Access => "Bearer", OAuthTokenKind::Refresh => "refresh_token" },
                "iss": self.issuer(),
            });
            if let (Some(user), Value::Object(map)) = (&user, &mut body) {
                map.insert("username".into(), json!(user.username));
                map.insert("sub".into(), json!(user.id.to_string()));
            }
            Ok(body)
        }
        .await;
        match result {
            Ok(body) => json_no_store(StatusCode::OK, &body),
            Err(e) => e.into_response(),
        }
    }

    /// Whether a bearer token may introspect: it holds the `introspection` scope and its
    /// client is still granted that scope explicitly (an administrator who takes the scope
    /// away ends this at once, not when the token expires).
    async fn may_introspect(&self, grant: &AccessGrant) -> Result<bool, StoreError> {
        if !grant.token.scopes.iter().any(|s| s == INTROSPECTION_SCOPE) {
            return Ok(false);
        }
        Ok(self
            .inner
            .oauth
            .application_by_id(grant.token.application)
            .await?
            .is_some_and(|app| app.allowed_scopes.iter().any(|s| s == INTROSPECTION_SCOPE)))
    }

    // ---------------------------------------------------------------- OIDC

    /// `GET|POST /o/userinfo/`: claims for the bearer token's scopes (`openid` required).
    pub async fn userinfo_endpoint(&self, authorization: Option<&HeaderValue>) -> Response<Bytes> {
        let result: Result<Value, OAuthError> = async {
            let token = authorization
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    OAuthError::new(ErrorCode::InvalidToken).describe("No access token.")
                })?;
            let grant = match self.check_access_token(token).await? {
                Ok(g) => g,
                Err(AccessProblem::Expired) => {
                    return Err(OAuthError::new(ErrorCode::InvalidToken)
                        .describe("The access token has expired."))
                }
                Err(AccessProblem::Invalid) => {
                    return Err(OAuthError::new(ErrorCode::InvalidToken)
                        .describe("The access token is invalid."))
                }
            };
            let scopes = &grant.token.scopes;
            let (Some(user), true) = (&grant.user, scopes.iter().any(|s| s == "openid")) else {
                return Err(OAuthError::new(ErrorCode::InsufficientScope)
                    .describe("The openid scope is required."));
            };
            Ok(user_claims(user, scopes))
        }
        .await;
        match result {
            Ok(body) => json_no_store(StatusCode::OK, &body),
            Err(e) => e.into_response(),
        }
    }

    /// OpenID Connect discovery / RFC 8414 metadata.
    pub fn metadata(&self) -> Value {
        let base = self
            .inner
            .settings
            .public_url
            .trim_end_matches('/')
            .to_owned();
        let mut grants = vec![
            GRANT_AUTHORIZATION_CODE,
            GRANT_CLIENT_CREDENTIALS,
            GRANT_REFRESH_TOKEN,
        ];
        if self.inner.settings.password_grant {
            grants.push(GRANT_PASSWORD);
        }
        let mut pkce = vec!["S256"];
        if self.inner.settings.allow_plain_pkce {
            pkce.push("plain");
        }
        json!({
            "issuer": self.issuer(),
            "authorization_endpoint": format!("{base}/o/authorize/"),
            "token_endpoint": format!("{base}/o/token/"),
            "userinfo_endpoint": format!("{base}/o/userinfo/"),
            "jwks_uri": format!("{base}/o/.well-known/jwks.json"),
            "revocation_endpoint": format!("{base}/o/revoke_token/"),
            "introspection_endpoint": format!("{base}/o/introspect/"),
            "end_session_endpoint": format!("{base}/o/logout/"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": grants,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": self.inner.signers.iter().map(|s| s.algorithm().as_str()).collect::<Vec<_>>(),
            "scopes_supported": self.inner.settings.scopes,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "bearer"],
            "code_challenge_methods_supported": pkce,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "preferred_username", "name", "given_name", "family_name", "email"],
            "prompt_values_supported": ["none", "login", "consent"],
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// The id_token public keys (RS256 and EdDSA).
    pub fn jwks(&self) -> Value {
        let mut keys = Vec::new();
        for signer in &self.inner.signers {
            if let Some(list) = signer.jwks().get("keys").and_then(Value::as_array) {
                keys.extend(list.iter().cloned());
            }
        }
        json!({ "keys": keys })
    }

    /// Verifies an `id_token_hint` (RP-initiated logout): signed with one of this provider's
    /// published id_token keys (retired ones included while they are published) and issued
    /// by this provider; an expired hint is accepted. See [`id_token_hint::verify`].
    pub fn verify_id_token_hint(&self, hint: &str) -> Result<VerifiedHint, InvalidHint> {
        id_token_hint::verify(hint, &self.jwks(), &self.issuer())
    }

    /// Creates a client secret: the secret (shown once) and its digest (stored).
    pub fn new_client_secret(&self) -> (String, SecretDigest) {
        let secret = random_secret(CLIENT_SECRET_PREFIX);
        let digest = self.inner.digester.digest(&secret);
        (secret, digest)
    }
}

struct IdTokenInput {
    nonce: Option<String>,
    auth_time: OffsetDateTime,
}

/// The userinfo claims for `scopes`.
pub fn user_claims(user: &User, scopes: &[String]) -> Value {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    let mut claims = BTreeMap::new();
    claims.insert("sub", json!(user.id.to_string()));
    if has("profile") {
        claims.insert("preferred_username", json!(user.username));
        let name = format!("{} {}", user.first_name, user.last_name)
            .trim()
            .to_owned();
        if !name.is_empty() {
            claims.insert("name", json!(name));
        }
        if !user.first_name.is_empty() {
            claims.insert("given_name", json!(user.first_name));
        }
        if !user.last_name.is_empty() {
            claims.insert("family_name", json!(user.last_name));
        }
    }
    if has("email") && !user.email.is_empty() {
        claims.insert("email", json!(user.email));
    }
    json!(claims)
}

/// Reads a form body: only `application/x-www-form-urlencoded` (a JSON body at the token
/// endpoint is `unsupported_grant_type`: the grant type cannot be read from it).
fn read_form(
    content_type: Option<&HeaderValue>,
    body: &[u8],
    token_endpoint: bool,
) -> Result<Params, OAuthError> {
    let mime = content_type
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if mime != "application/x-www-form-urlencoded" {
        if token_endpoint && (mime == "application/json" || mime.ends_with("+json")) {
            return Err(OAuthError::new(ErrorCode::UnsupportedGrantType).describe(
                "The token endpoint reads application/x-www-form-urlencoded bodies only.",
            ));
        }
        if !(mime.is_empty() && body.is_empty()) {
            return Err(OAuthError::invalid_request(
                "The body must be application/x-www-form-urlencoded.",
            ));
        }
    }
    Params::parse(body)
}
