//! Application state, the policy table built from configuration, and the router.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    http::{header, HeaderName},
    routing::{delete, get, post},
    Router,
};
use restguard::{
    basic::Basic,
    jwt::{JwtAuth, JwtService},
    password::{HasherConfig, PasswordAuth, PasswordHasher},
    throttle::{LoginThrottle, RateThrottle, ThrottleKind},
    token::{TokenAuth, TokenService},
};
use restguard::{
    csrf::CsrfPolicy,
    session::{Session, SessionService},
};
use restguard_axum::AuthLayer;
use restguard_core::{
    permission::{AllowAny, HasScope, IsAdminUser, IsAuthenticated, IsAuthenticatedOrReadOnly},
    rate::Rate,
    store::Stores,
    Authenticator, Permission, Policy, PolicyTable, RouteRule, Throttle,
};
use tower_http::{sensitive_headers::SetSensitiveRequestHeadersLayer, trace::TraceLayer};

use crate::{
    config::Config,
    error::ApiError,
    routes::{health, jwt, me, oauth2, pages, session, tokens, verify},
    stores::Backend,
};

/// Shared state of the handlers. axum clones the state for every request, so it is one `Arc`
/// (a single atomic increment) rather than a struct of many.
#[derive(Clone)]
pub(crate) struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// What [`AppState`] shares.
pub(crate) struct AppStateInner {
    pub(crate) stores: Stores,
    pub(crate) passwords: PasswordAuth,
    pub(crate) tokens: TokenService,
    pub(crate) jwt: JwtService,
    /// `WWW-Authenticate` of the JWT endpoints' 401s.
    pub(crate) jwt_challenge: http::HeaderValue,
    pub(crate) body_limit: usize,
    /// Browser sessions.
    pub(crate) sessions: SessionService,
    /// Django's CSRF settings.
    pub(crate) csrf: Arc<CsrfPolicy>,
    /// Whether the CSRF cookie is marked `Secure`.
    pub(crate) csrf_cookie_secure: bool,
    /// The OAuth2 / OpenID Connect provider.
    pub(crate) oauth: restguard_oauth2::Provider,
    /// Who may read `/metrics`.
    pub(crate) metrics_access: crate::metrics::MetricsAccess,
    /// Where changes that make other instances' caches stale are announced (`redis.url`).
    pub(crate) invalidations: Option<Arc<dyn restguard_core::invalidation::InvalidationBus>>,
}

/// The authenticators a configuration can name.
pub(crate) struct Schemes {
    token: Arc<dyn Authenticator>,
    jwt: Arc<dyn Authenticator>,
    basic: Arc<dyn Authenticator>,
    session: Arc<dyn Authenticator>,
    oauth2: Arc<dyn Authenticator>,
}

impl Schemes {
    fn by_name(&self, name: &str, key: &str) -> Result<Arc<dyn Authenticator>, String> {
        match name {
            "token" => Ok(self.token.clone()),
            "jwt" => Ok(self.jwt.clone()),
            "basic" => Ok(self.basic.clone()),
            "session" => Ok(self.session.clone()),
            "oauth2" => Ok(self.oauth2.clone()),
            other => Err(format!(
                "{key}: unknown authenticator \"{other}\" (token, jwt, oauth2, basic, session)"
            )),
        }
    }
}

/// Session endpoints and page assets with their own CSRF handling: open in the table.
pub(crate) const SESSION_ENDPOINTS: [&str; 7] = [
    "/api/csrf/",
    "/api/session/login/",
    "/api/session/logout/",
    "/api-auth/login/",
    "/api-auth/logout/",
    "/static/restguard.css",
    "/static/account.js",
];

/// The server-rendered pages (each handler requires a session itself).
pub(crate) const PAGE_PREFIXES: [&str; 2] = ["/account/", "/admin/"];

/// The OAuth2 / OIDC provider's endpoints and metadata: open in the table.
pub(crate) const OAUTH2_PREFIXES: [&str; 2] = ["/o/", "/.well-known/oauth-authorization-server"];

/// The JWT endpoints: open (no authenticators, `AllowAny`), like DRF's token views.
pub(crate) const JWT_ENDPOINTS: [&str; 7] = [
    "/api/token/",
    "/api/token/refresh/",
    "/api/token/verify/",
    "/api/token/blacklist/",
    "/api/token/sliding/",
    "/api/token/sliding/refresh/",
    "/api/token/jwks/",
];

fn permission_by_name(name: &str, key: &str) -> Result<Arc<dyn Permission>, String> {
    Ok(match name {
        "allow_any" => Arc::new(AllowAny),
        "is_authenticated" => Arc::new(IsAuthenticated),
        "is_admin_user" => Arc::new(IsAdminUser),
        "is_authenticated_or_read_only" => Arc::new(IsAuthenticatedOrReadOnly),
        "has_read_write_scope" => Arc::new(restguard_core::permission::HasReadWriteScope::new()),
        other => match other.strip_prefix("has_scope:") {
            Some(scope) if !scope.is_empty() => Arc::new(HasScope::new([scope])),
            _ => return Err(format!(
                "{key}: unknown permission \"{other}\" (allow_any, is_authenticated, is_admin_user, is_authenticated_or_read_only, has_read_write_scope, has_scope:<scope>)"
            )),
        },
    })
}

/// The configured rate throttles, one shared instance per name (so every route naming `user`
/// counts in the same buckets, as DRF's cache keys do).
pub(crate) struct Throttles {
    anon: Option<Arc<dyn Throttle>>,
    user: Option<Arc<dyn Throttle>>,
    scopes: std::collections::BTreeMap<String, Arc<dyn Throttle>>,
}

impl Throttles {
    pub(crate) fn from_config(
        config: &crate::config::ThrottleConfig,
        shared: Option<crate::scaleout::SharedThrottle>,
    ) -> Self {
        // With `redis.url`, every instance counts in the same Redis windows.
        let make = |kind: ThrottleKind, rate: Rate| -> Arc<dyn Throttle> {
            match &shared {
                Some(s) => Arc::new(RateThrottle::shared(kind, rate, s.store.clone(), s.fail)),
                None => Arc::new(RateThrottle::new(kind, rate)),
            }
        };
        Self {
            anon: config.anon.map(|r| make(ThrottleKind::Anon, r.0)),
            user: config.user.map(|r| make(ThrottleKind::User, r.0)),
            scopes: config
                .scopes
                .iter()
                .map(|(name, r)| (name.clone(), make(ThrottleKind::Scoped(name.clone()), r.0)))
                .collect(),
        }
    }

    /// DRF's `DEFAULT_THROTTLE_CLASSES`: `anon` and `user` when their rates are set.
    fn defaults(&self) -> Vec<Arc<dyn Throttle>> {
        self.anon.iter().chain(self.user.iter()).cloned().collect()
    }

    fn by_name(&self, name: &str, key: &str) -> Result<Arc<dyn Throttle>, String> {
        let found = match name {
            "anon" => self.anon.clone(),
            "user" => self.user.clone(),
            scope => self.scopes.get(scope).cloned(),
        };
        found.ok_or_else(|| {
            format!("{key}: throttle \"{name}\" has no rate (set throttle.{name} or throttle.scopes.{name})")
        })
    }
}

fn build_policy(
    schemes: &Schemes,
    authenticators: &[String],
    permissions: &[String],
    throttles: &[Arc<dyn Throttle>],
    key: &str,
) -> Result<Policy, String> {
    let mut builder = Policy::builder();
    for throttle in throttles {
        builder = builder.shared_throttle(throttle.clone());
    }
    for name in authenticators {
        builder =
            builder.shared_authenticator(schemes.by_name(name, &format!("{key}.authenticators"))?);
    }
    for name in permissions {
        builder =
            builder.shared_permission(permission_by_name(name, &format!("{key}.permissions"))?);
    }
    Ok(builder.build())
}

/// The policy table: the configured default, the configured routes, and the server's own
/// endpoints (which fix their policy, as DRF views do).
pub(crate) fn policy_table(config: &Config, schemes: &Schemes) -> Result<PolicyTable, String> {
    let throttles = Throttles::from_config(
        &config.throttle,
        crate::scaleout::shared_throttle(&config.redis)?,
    );
    let default_throttles = throttles.defaults();
    let default = build_policy(
        schemes,
        &config.auth.authenticators,
        &config.auth.permissions,
        &default_throttles,
        "auth",
    )?;
    let open = Policy::builder().permission(AllowAny).build();
    let token_only = Policy::builder()
        .shared_authenticator(schemes.token.clone())
        .permission(IsAuthenticated)
        .build();
    let default_chain_allow_any = build_policy(
        schemes,
        &config.auth.authenticators,
        &["allow_any".to_owned()],
        &default_throttles,
        "auth",
    )?;
    let mut table = PolicyTable::new(default);
    for (index, route) in config.routes.iter().enumerate() {
        let key = format!("route[{index}]");
        if !route.path.starts_with('/') {
            return Err(format!("{key}.path: must start with '/'"));
        }
        let route_throttles = match &route.throttles {
            Some(names) => names
                .iter()
                .map(|n| throttles.by_name(n, &format!("{key}.throttles")))
                .collect::<Result<Vec<_>, _>>()?,
            None => default_throttles.clone(),
        };
        let authenticators = route
            .authenticators
            .as_ref()
            .unwrap_or(&config.auth.authenticators);
        let permissions = route
            .permissions
            .as_ref()
            .unwrap_or(&config.auth.permissions);
        let policy = build_policy(schemes, authenticators, permissions, &route_throttles, &key)?;
        let mut rule = RouteRule::prefix(route.path.clone());
        if let Some(methods) = &route.methods {
            let parsed = methods
                .iter()
                .map(|m| {
                    m.to_ascii_uppercase()
                        .parse::<http::Method>()
                        .map_err(|_| format!("{key}.methods: invalid method {m:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            rule = rule.methods(parsed);
        }
        table = table.with_route(rule, policy);
    }
    // The server's own endpoints: exact rules, which beat any configured prefix.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api-token-auth/",
        verify::VERIFY_PATH,
    ]
    .into_iter()
    .chain(JWT_ENDPOINTS)
    {
        table = table.with_route(RouteRule::exact(path), open.clone());
    }
    table = table.with_route(RouteRule::exact("/api/ping/"), default_chain_allow_any);
    // Session login, CSRF and the pages check the session and CSRF themselves (login CSRF
    // applies before anyone is authenticated; forms carry the token in the body).
    for path in SESSION_ENDPOINTS {
        table = table.with_route(RouteRule::exact(path), open.clone());
    }
    // The OAuth2 provider authenticates its clients itself (Basic carries client
    // credentials there, not a user's).
    for prefix in OAUTH2_PREFIXES {
        table = table.with_route(RouteRule::prefix(prefix), open.clone());
    }
    for prefix in PAGE_PREFIXES {
        table = table.with_route(RouteRule::prefix(prefix), open.clone());
    }
    // Envoy's ext_authz checks: `/auth/verify` + the original path.
    table = table.with_route(RouteRule::prefix("/auth/verify/"), open.clone());
    for path in ["/api/auth/logout/", "/api/auth/logoutall/"] {
        table = table.with_route(RouteRule::exact(path), token_only.clone());
    }
    Ok(table)
}

/// Builds state and router from configuration and an open, migrated backend.
pub(crate) async fn build(config: &Config, backend: &Backend) -> anyhow::Result<Router> {
    let stores = backend.stores();
    let hasher = PasswordHasher::new(HasherConfig {
        workers: config
            .password
            .hash_workers
            .unwrap_or_else(|| HasherConfig::default().workers),
        max_in_flight: config.password.max_in_flight,
        ..HasherConfig::default()
    });
    let login_throttle =
        match crate::scaleout::shared_throttle(&config.redis).map_err(anyhow::Error::msg)? {
            Some(shared) => LoginThrottle::shared(
                config.throttle.login_ip.0,
                config.throttle.login_user.0,
                shared.store,
                shared.fail,
            ),
            None => LoginThrottle::new(config.throttle.login_ip.0, config.throttle.login_user.0),
        };
    let passwords =
        PasswordAuth::new(stores.users.clone(), hasher).with_login_throttle(login_throttle);
    let digester = restguard::digest::SecretDigester::from_store(stores.secrets.as_ref()).await?;
    let invalidations =
        crate::scaleout::invalidation_bus(&config.redis).map_err(anyhow::Error::msg)?;
    let mut tokens = TokenService::new(
        stores.tokens.clone(),
        digester.clone(),
        config.token.cache_ttl.0,
    );
    let jwt_service = JwtService::new(
        stores.users.clone(),
        stores.jwt.clone(),
        stores.signing_keys.clone(),
        digester,
        config.jwt.settings(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("jwt: {}", crate::error_chain(&e)))?;
    let jwt_auth =
        JwtAuth::with_header_types(jwt_service.clone(), config.jwt.header_types.0.clone());
    let jwt_challenge = jwt_auth
        .challenge()
        .unwrap_or_else(|| http::HeaderValue::from_static("Bearer realm=\"api\""));
    let session_settings = config.session.settings().map_err(anyhow::Error::msg)?;
    let csrf = config
        .csrf
        .policy(config.server.public_url.as_deref())
        .map_err(anyhow::Error::msg)?;
    let csrf_cookie_secure = config
        .csrf
        .cookie_secure
        .unwrap_or(session_settings.cookie_secure);
    let mut sessions = SessionService::from_stores(&stores, session_settings).await?;
    // With Redis, revocations reach the other instances' caches at once.
    let jwt_service = match &invalidations {
        Some(bus) => {
            tokens = tokens.with_invalidations(bus.clone());
            sessions = sessions.with_invalidations(bus.clone());
            jwt_service.with_invalidations(bus.clone())
        }
        None => jwt_service,
    };
    let oauth_provider = restguard_oauth2::Provider::new(
        &stores,
        restguard::digest::SecretDigester::from_store(stores.secrets.as_ref()).await?,
        Some(passwords.clone()),
        config
            .oauth2
            .settings(
                config
                    .server
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", config.server.bind)),
            )
            .map_err(anyhow::Error::msg)?,
    )
    .await
    .map_err(|e| anyhow::anyhow!("oauth2: {}", crate::error_chain(&e)))?;
    let oauth_provider = match &invalidations {
        Some(bus) => oauth_provider.with_invalidations(bus.clone()),
        None => oauth_provider,
    };
    let schemes = Schemes {
        oauth2: Arc::new(restguard_oauth2::OAuth2Bearer::new(oauth_provider.clone())),
        token: Arc::new(TokenAuth::with_keywords(
            tokens.clone(),
            config.token.keyword.0.clone(),
        )),
        jwt: Arc::new(jwt_auth),
        basic: Arc::new(Basic::new(passwords.clone())),
        session: Arc::new(Session::new(sessions.clone(), csrf.clone())),
    };
    let table = policy_table(config, &schemes).map_err(anyhow::Error::msg)?;
    let state = AppState(Arc::new(AppStateInner {
        stores,
        passwords,
        tokens,
        jwt: jwt_service,
        jwt_challenge,
        body_limit: config.server.body_limit.0,
        sessions,
        csrf: Arc::new(csrf),
        csrf_cookie_secure,
        oauth: oauth_provider,
        metrics_access: config.metrics.access().map_err(anyhow::Error::msg)?,
        invalidations,
    }));
    let client_ip = crate::client_ip::ClientIpRule::from_config(
        &config.server.trusted_proxies,
        config.throttle.num_proxies,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(
        router(state, table, client_ip).layer(axum::middleware::from_fn_with_state(
            config.server.request_timeout.0,
            crate::scaleout::deadline,
        )),
    )
}

/// The HTTP routes.
pub(crate) fn router(
    state: AppState,
    table: PolicyTable,
    client_ip: crate::client_ip::ClientIpRule,
) -> Router {
    let table = Arc::new(table);
    let client_ip = Arc::new(client_ip);
    let sensitive: [HeaderName; 3] = [
        header::AUTHORIZATION,
        header::COOKIE,
        header::PROXY_AUTHORIZATION,
    ];
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(verify::VERIFY_PATH, axum::routing::any(verify::verify))
        .route(
            "/auth/verify/{*original}",
            axum::routing::any(verify::verify),
        )
        .route("/metrics", get(crate::metrics::metrics_endpoint))
        .route("/api/ping/", get(health::ping))
        .route("/api/me/", get(me::me))
        .route("/api-token-auth/", post(tokens::obtain))
        .route("/api/tokens/", get(tokens::list).post(tokens::create))
        .route("/api/tokens/{id}/", delete(tokens::revoke))
        .route("/api/tokens/{id}/rotate/", post(tokens::rotate))
        .route("/api/auth/logout/", post(tokens::logout))
        .route("/api/auth/logoutall/", post(tokens::logout_all))
        .route("/api/token/", post(jwt::obtain))
        .route("/api/token/refresh/", post(jwt::refresh))
        .route("/api/token/verify/", post(jwt::verify))
        .route("/api/token/blacklist/", post(jwt::blacklist))
        .route("/api/token/sliding/", post(jwt::sliding_obtain))
        .route("/api/token/sliding/refresh/", post(jwt::sliding_refresh))
        .route("/api/token/jwks/", get(jwt::jwks))
        .merge(session_routes())
        .merge(oauth2_routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|method: http::Method| async move {
            ApiError::MethodNotAllowed(method)
        })
        .with_state(state)
        // Inside authentication: who got through, by scheme.
        .layer(axum::middleware::from_fn(crate::metrics::record_identity))
        // Forward-auth evaluates the same table for the original URI.
        .layer(axum::Extension(table.clone()))
        .layer(AuthLayer::from_shared(table))
        // Outside authentication: every answer, denials included.
        .layer(axum::middleware::from_fn(crate::metrics::record))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                crate::client_ip::client_ip(client_ip.clone(), request, next)
            },
        ))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish for at most `grace`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    });
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!(?grace, "requests still in flight after the grace period; closing them");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Session login (CONTRACT §4) and the pages.
fn session_routes() -> Router<AppState> {
    use crate::routes::pages::{account, admin, admin_apps, auth};
    Router::new()
        .route("/api/csrf/", get(session::csrf_token))
        .route("/api/session/login/", post(session::login))
        .route("/api/session/logout/", post(session::logout))
        .route(
            "/api-auth/login/",
            get(auth::login_form).post(auth::login_submit),
        )
        .route(
            "/api-auth/logout/",
            get(auth::logout_form).post(auth::logout_submit),
        )
        .route("/static/restguard.css", get(pages::stylesheet))
        .route("/static/account.js", get(pages::account_js))
        .route("/account/", get(account::show))
        .route("/account/tokens/", post(account::create_token))
        .route("/account/tokens/{id}/rotate/", post(account::rotate_token))
        .route("/account/tokens/{id}/revoke/", post(account::revoke_token))
        .route(
            "/account/sessions/others/end/",
            post(account::end_other_sessions),
        )
        .route("/account/sessions/{id}/end/", post(account::end_session))
        .route("/account/password/", post(account::change_password))
        .route(
            "/account/applications/{id}/revoke/",
            post(account::revoke_application),
        )
        .route("/admin/", get(admin::list))
        .route("/admin/users/", post(admin::create))
        .route(
            "/admin/applications/",
            get(admin_apps::list).post(admin_apps::create),
        )
        .route("/admin/applications/{id}/delete/", post(admin_apps::delete))
        .route(
            "/admin/applications/{id}/settings/",
            post(admin_apps::update),
        )
        .route(
            "/admin/applications/{id}/rotate-secret/",
            post(admin_apps::rotate_secret),
        )
        .route("/admin/users/{id}/", get(admin::detail))
        .route("/admin/users/{id}/active/", post(admin::set_active))
        .route("/admin/users/{id}/password/", post(admin::reset_password))
        .route("/admin/users/{id}/roles/", post(admin::set_roles))
        .route(
            "/admin/users/{id}/applications/{app}/revoke/",
            post(admin::revoke_application),
        )
        .route(
            "/admin/users/{id}/tokens/{token}/revoke/",
            post(admin::revoke_token),
        )
        .route(
            "/admin/users/{id}/sessions/{session}/end/",
            post(admin::end_session),
        )
}

/// The OAuth2 / OpenID Connect provider (CONTRACT §6).
fn oauth2_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/o/authorize/",
            get(oauth2::authorize_form).post(oauth2::authorize_submit),
        )
        .route("/o/token/", post(oauth2::token))
        .route("/o/revoke_token/", post(oauth2::revoke))
        .route("/o/introspect/", post(oauth2::introspect))
        .route("/o/userinfo/", get(oauth2::userinfo).post(oauth2::userinfo))
        .route("/o/.well-known/openid-configuration", get(oauth2::metadata))
        .route("/o/.well-known/jwks.json", get(oauth2::jwks))
        .route(
            "/o/logout/",
            get(oauth2::logout_form).post(oauth2::logout_submit),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth2::metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server/o",
            get(oauth2::metadata),
        )
}
