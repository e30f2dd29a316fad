//! Application state and the router.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    http::{header, HeaderName},
    routing::{any, delete, get, post, MethodRouter},
    Router,
};
use restguard::{
    basic::Basic,
    jwt::{JwtAuth, JwtService},
    password::{HasherConfig, PasswordAuth, PasswordHasher},
    throttle::LoginThrottle,
    token::{TokenAuth, TokenService},
};
use restguard::{
    csrf::CsrfPolicy,
    session::{Session, SessionService},
};
use restguard_axum::AuthLayer;
use restguard_core::{store::Stores, Authenticator, PolicyTable};
use tower_http::{sensitive_headers::SetSensitiveRequestHeadersLayer, trace::TraceLayer};

use crate::{
    config::Config,
    error::ApiError,
    policy_tables::{policy_tables, Guard, Guarded, Schemes},
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
    let endpoints = endpoints();
    let tables = policy_tables(config, &schemes, &endpoints.guards).map_err(anyhow::Error::msg)?;
    let forward_auth = verify::ForwardAuth::new(tables.forward_auth, &config.forward_auth)
        .map_err(anyhow::Error::msg)?;
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
    Ok(router(
        state,
        endpoints.router,
        tables.server,
        forward_auth,
        client_ip,
    )
    .layer(axum::middleware::from_fn_with_state(
        config.server.request_timeout.0,
        crate::scaleout::deadline,
    )))
}

/// restguard's own routes, each declared with its [`Guard`] (the policy it fixes for itself,
/// as a DRF view fixes its classes): the router and the server table's fixed policies come
/// from the same lines. A route declared without one gets the table's policy — a `[[route]]`
/// or the `[auth]` default — or the guard of a prefix that covers it.
pub(crate) struct Endpoints {
    router: Router<AppState>,
    /// The fixed policies, for the server's own table (never for forward-auth's).
    pub(crate) guards: Vec<Guarded>,
    /// Every route's path, for the tests that check the tables against the routes.
    #[cfg(test)]
    pub(crate) paths: Vec<String>,
}

impl Endpoints {
    fn new() -> Self {
        Self {
            router: Router::new(),
            guards: Vec::new(),
            #[cfg(test)]
            paths: Vec::new(),
        }
    }

    /// A route with the table's policy (or the guard of a prefix that covers it).
    fn route(mut self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        #[cfg(test)]
        self.paths.push(path.to_owned());
        self.router = self.router.route(path, method_router);
        self
    }

    /// A route with a fixed policy of its own.
    fn guarded(mut self, path: &str, guard: Guard, method_router: MethodRouter<AppState>) -> Self {
        self.guards.push(Guarded {
            path: path.to_owned(),
            prefix: false,
            guard,
        });
        self.route(path, method_router)
    }

    /// A fixed policy for every path below `prefix` (pages, routes with parameters).
    fn guard_prefix(mut self, prefix: &str, guard: Guard) -> Self {
        self.guards.push(Guarded {
            path: prefix.to_owned(),
            prefix: true,
            guard,
        });
        self
    }

    fn merge(mut self, other: Endpoints) -> Self {
        self.router = self.router.merge(other.router);
        self.guards.extend(other.guards);
        #[cfg(test)]
        self.paths.extend(other.paths);
        self
    }
}

/// Every endpoint of the server, with its guard.
pub(crate) fn endpoints() -> Endpoints {
    Endpoints::new()
        .guarded("/healthz", Guard::Open, get(health::healthz))
        .guarded("/readyz", Guard::Open, get(health::readyz))
        .guarded(
            "/metrics",
            Guard::Open,
            get(crate::metrics::metrics_endpoint),
        )
        // Forward-auth: the header form, and Envoy's form below it (`/auth/verify/` is `/`).
        .guarded(verify::VERIFY_PATH, Guard::Open, any(verify::verify))
        .guard_prefix("/auth/verify/", Guard::Open)
        .route("/auth/verify/", any(verify::verify))
        .route("/auth/verify/{*original}", any(verify::verify))
        .guarded("/api/ping/", Guard::DefaultChainAllowAny, get(health::ping))
        .route("/api/me/", get(me::me))
        // DRF's `obtain_auth_token` and Simple JWT's views: open, with the default throttles.
        .guarded(
            "/api-token-auth/",
            Guard::OpenThrottled,
            post(tokens::obtain),
        )
        .guarded("/api/token/", Guard::OpenThrottled, post(jwt::obtain))
        .guarded(
            "/api/token/refresh/",
            Guard::OpenThrottled,
            post(jwt::refresh),
        )
        .guarded(
            "/api/token/verify/",
            Guard::OpenThrottled,
            post(jwt::verify),
        )
        .guarded(
            "/api/token/blacklist/",
            Guard::OpenThrottled,
            post(jwt::blacklist),
        )
        .guarded(
            "/api/token/sliding/",
            Guard::OpenThrottled,
            post(jwt::sliding_obtain),
        )
        .guarded(
            "/api/token/sliding/refresh/",
            Guard::OpenThrottled,
            post(jwt::sliding_refresh),
        )
        .guarded("/api/token/jwks/", Guard::OpenThrottled, get(jwt::jwks))
        // Credential management: first-party credentials only (CONTRACT §3).
        .guard_prefix("/api/tokens/", Guard::FirstParty)
        .route("/api/tokens/", get(tokens::list).post(tokens::create))
        .route("/api/tokens/{id}/", delete(tokens::revoke))
        .route("/api/tokens/{id}/rotate/", post(tokens::rotate))
        .guarded("/api/auth/logout/", Guard::FirstParty, post(tokens::logout))
        .guarded(
            "/api/auth/logoutall/",
            Guard::FirstParty,
            post(tokens::logout_all),
        )
        .merge(session_routes())
        .merge(oauth2_routes())
}

/// The HTTP routes.
pub(crate) fn router(
    state: AppState,
    routes: Router<AppState>,
    table: PolicyTable,
    forward_auth: verify::ForwardAuth,
    client_ip: crate::client_ip::ClientIpRule,
) -> Router {
    let table = Arc::new(table);
    let client_ip = Arc::new(client_ip);
    let sensitive: [HeaderName; 3] = [
        header::AUTHORIZATION,
        header::COOKIE,
        header::PROXY_AUTHORIZATION,
    ];
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|method: http::Method| async move {
            ApiError::MethodNotAllowed(method)
        })
        .with_state(state)
        // Inside authentication: who got through, by scheme.
        .layer(axum::middleware::from_fn(crate::metrics::record_identity))
        // Forward-auth evaluates its own table (the `[[route]]` entries and the default) for
        // the original URI.
        .layer(axum::Extension(Arc::new(forward_auth)))
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
///
/// Open in the server's table: session login and CSRF apply before anyone is authenticated,
/// and the pages identify their visitor by the session cookie and check CSRF themselves
/// (forms carry the token in the body). They take no other credential.
fn session_routes() -> Endpoints {
    use crate::routes::pages::{account, admin, admin_apps, auth};
    Endpoints::new()
        .guarded("/api/csrf/", Guard::Open, get(session::csrf_token))
        .guarded("/api/session/login/", Guard::Open, post(session::login))
        .guarded("/api/session/logout/", Guard::Open, post(session::logout))
        .guarded(
            "/api-auth/login/",
            Guard::Open,
            get(auth::login_form).post(auth::login_submit),
        )
        .guarded(
            "/api-auth/logout/",
            Guard::Open,
            get(auth::logout_form).post(auth::logout_submit),
        )
        .guarded("/static/restguard.css", Guard::Open, get(pages::stylesheet))
        .guarded("/static/account.js", Guard::Open, get(pages::account_js))
        .guard_prefix("/account/", Guard::Open)
        .guard_prefix("/admin/", Guard::Open)
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
///
/// Open in the server's table: the provider authenticates its clients itself (Basic carries
/// client credentials there, not a user's). The token, revocation and introspection
/// endpoints take the default throttles, as DRF views would.
fn oauth2_routes() -> Endpoints {
    Endpoints::new()
        .guard_prefix("/o/", Guard::Open)
        .guard_prefix("/.well-known/oauth-authorization-server", Guard::Open)
        .route(
            "/o/authorize/",
            get(oauth2::authorize_form).post(oauth2::authorize_submit),
        )
        .guarded("/o/token/", Guard::OpenThrottled, post(oauth2::token))
        .guarded(
            "/o/revoke_token/",
            Guard::OpenThrottled,
            post(oauth2::revoke),
        )
        .guarded(
            "/o/introspect/",
            Guard::OpenThrottled,
            post(oauth2::introspect),
        )
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
