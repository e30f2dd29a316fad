//! The policy tables built from configuration: the schemes, permissions and throttles a
//! configuration can name, and the table of policies the server applies.

use std::sync::Arc;

use restguard::throttle::{RateThrottle, ThrottleKind};
use restguard_core::{
    permission::{AllowAny, HasScope, IsAdminUser, IsAuthenticated, IsAuthenticatedOrReadOnly},
    rate::Rate,
    Authenticator, Permission, Policy, PolicyTable, RouteRule, Throttle,
};

use crate::{config::Config, routes::verify};

/// The authenticators a configuration can name.
pub(crate) struct Schemes {
    pub(crate) token: Arc<dyn Authenticator>,
    pub(crate) jwt: Arc<dyn Authenticator>,
    pub(crate) basic: Arc<dyn Authenticator>,
    pub(crate) session: Arc<dyn Authenticator>,
    pub(crate) oauth2: Arc<dyn Authenticator>,
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
