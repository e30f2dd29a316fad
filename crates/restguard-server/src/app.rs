//! Application state, the policy table built from configuration, and the router.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    http::{header, HeaderName},
    routing::{delete, get, post},
    Router,
};
use restguard::{
    basic::Basic,
    password::{HasherConfig, PasswordAuth, PasswordHasher},
    token::{TokenAuth, TokenService},
};
use restguard_axum::AuthLayer;
use restguard_core::{
    permission::{AllowAny, HasScope, IsAdminUser, IsAuthenticated, IsAuthenticatedOrReadOnly},
    store::Stores,
    Authenticator, Permission, Policy, PolicyTable, RouteRule,
};
use tower_http::{sensitive_headers::SetSensitiveRequestHeadersLayer, trace::TraceLayer};

use crate::{
    config::Config,
    error::ApiError,
    routes::{health, me, tokens},
    stores::Backend,
};

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) stores: Stores,
    pub(crate) passwords: PasswordAuth,
    pub(crate) tokens: TokenService,
    pub(crate) body_limit: usize,
}

/// The authenticators a configuration can name.
pub(crate) struct Schemes {
    token: Arc<dyn Authenticator>,
    basic: Arc<dyn Authenticator>,
}

impl Schemes {
    fn by_name(&self, name: &str, key: &str) -> Result<Arc<dyn Authenticator>, String> {
        match name {
            "token" => Ok(self.token.clone()),
            "basic" => Ok(self.basic.clone()),
            "session" | "jwt" | "oauth2" => Err(format!(
                "{key}: authenticator \"{name}\" is not available in this version (token, basic)"
            )),
            other => Err(format!(
                "{key}: unknown authenticator \"{other}\" (token, basic)"
            )),
        }
    }
}

fn permission_by_name(name: &str, key: &str) -> Result<Arc<dyn Permission>, String> {
    Ok(match name {
        "allow_any" => Arc::new(AllowAny),
        "is_authenticated" => Arc::new(IsAuthenticated),
        "is_admin_user" => Arc::new(IsAdminUser),
        "is_authenticated_or_read_only" => Arc::new(IsAuthenticatedOrReadOnly),
        other => match other.strip_prefix("has_scope:") {
            Some(scope) if !scope.is_empty() => Arc::new(HasScope::new([scope])),
            _ => return Err(format!(
                "{key}: unknown permission \"{other}\" (allow_any, is_authenticated, is_admin_user, is_authenticated_or_read_only, has_scope:<scope>)"
            )),
        },
    })
}

fn build_policy(
    schemes: &Schemes,
    authenticators: &[String],
    permissions: &[String],
    key: &str,
) -> Result<Policy, String> {
    let mut builder = Policy::builder();
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
    let default = build_policy(
        schemes,
        &config.auth.authenticators,
        &config.auth.permissions,
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
        "auth",
    )?;
    let mut table = PolicyTable::new(default);
    for (index, route) in config.routes.iter().enumerate() {
        let key = format!("route[{index}]");
        if !route.path.starts_with('/') {
            return Err(format!("{key}.path: must start with '/'"));
        }
        if route.throttles.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(format!(
                "{key}.throttles: throttles are not available in this version"
            ));
        }
        let authenticators = route
            .authenticators
            .as_ref()
            .unwrap_or(&config.auth.authenticators);
        let permissions = route
            .permissions
            .as_ref()
            .unwrap_or(&config.auth.permissions);
        let policy = build_policy(schemes, authenticators, permissions, &key)?;
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
    for path in ["/healthz", "/readyz", "/api-token-auth/"] {
        table = table.with_route(RouteRule::exact(path), open.clone());
    }
    table = table.with_route(RouteRule::exact("/api/ping/"), default_chain_allow_any);
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
    let passwords = PasswordAuth::new(stores.users.clone(), hasher);
    let digester = restguard::digest::SecretDigester::from_store(stores.secrets.as_ref()).await?;
    let tokens = TokenService::new(stores.tokens.clone(), digester, config.token.cache_ttl.0);
    let schemes = Schemes {
        token: Arc::new(TokenAuth::with_keywords(
            tokens.clone(),
            config.token.keyword.0.clone(),
        )),
        basic: Arc::new(Basic::new(passwords.clone())),
    };
    let table = policy_table(config, &schemes).map_err(anyhow::Error::msg)?;
    let state = AppState {
        stores,
        passwords,
        tokens,
        body_limit: config.server.body_limit.0,
    };
    Ok(router(state, table))
}

/// The HTTP routes.
pub(crate) fn router(state: AppState, table: PolicyTable) -> Router {
    let sensitive: [HeaderName; 3] = [
        header::AUTHORIZATION,
        header::COOKIE,
        header::PROXY_AUTHORIZATION,
    ];
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/ping/", get(health::ping))
        .route("/api/me/", get(me::me))
        .route("/api-token-auth/", post(tokens::obtain))
        .route("/api/tokens/", get(tokens::list).post(tokens::create))
        .route("/api/tokens/{id}/", delete(tokens::revoke))
        .route("/api/tokens/{id}/rotate/", post(tokens::rotate))
        .route("/api/auth/logout/", post(tokens::logout))
        .route("/api/auth/logoutall/", post(tokens::logout_all))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|method: http::Method| async move {
            ApiError::MethodNotAllowed(method)
        })
        .with_state(state)
        .layer(AuthLayer::new(table))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
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
