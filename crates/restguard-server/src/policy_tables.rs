//! The two policy tables (DESIGN: "the server builds two policy tables").
//!
//! * **The server's own** ([`Tables::server`], enforced by the `AuthLayer` before routing):
//!   the policy each of restguard's endpoints fixes for itself ([`Guard`], declared beside its
//!   route in the router, as a DRF view fixes its classes), then the `[[route]]` entries, then
//!   the `[auth]` default. A `[[route]]` never reaches inside an endpoint's guard.
//! * **Forward-auth's** ([`Tables::forward_auth`], used by `/auth/verify` for the upstream's
//!   paths): the `[[route]]` entries and the `[auth]` default **only**. It is built from the
//!   configuration alone ([`forward_auth_table`] is never given the guards), so an upstream
//!   path such as `/admin/users` or `/healthz` can never inherit one of restguard's own
//!   exemptions.
//!
//! Configured route paths are normalised ([`crate::original_path`]) the way `/auth/verify`
//! normalises the paths it is asked about, so both sides compare in one form.

use std::sync::Arc;

use restguard::throttle::{RateThrottle, ThrottleKind};
use restguard_core::{
    permission::{AllowAny, HasScope, IsAdminUser, IsAuthenticated, IsAuthenticatedOrReadOnly},
    rate::Rate,
    Authenticator, Permission, Policy, PolicyTable, RouteRule, Throttle,
};

use crate::{config::Config, original_path};

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
    pub(crate) fn defaults(&self) -> Vec<Arc<dyn Throttle>> {
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

/// How one of restguard's own endpoints is guarded: its policy, fixed beside its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// No authenticators, `AllowAny`: the handler checks what it needs itself (client
    /// authentication of the OAuth2 provider, sessions and CSRF of the pages) or needs nothing
    /// (health, metadata, forward-auth).
    Open,
    /// Open, with DRF's default throttle classes (`throttle.anon`, `throttle.user`): the
    /// endpoints that take passwords, tokens or client credentials (DRF's token views, Simple
    /// JWT's views, DOT's token, revocation and introspection endpoints).
    OpenThrottled,
    /// The `[auth]` authenticators with `AllowAny` (`/api/ping/`).
    DefaultChainAllowAny,
    /// First-party credentials only (CONTRACT §3): `token, jwt, basic, session` and
    /// `is_authenticated`, with the default throttles. An OAuth2 access token was delegated to
    /// a third party; here it is no credential at all (401 `Token`).
    FirstParty,
}

/// The authenticators that speak for the user themselves ([`Guard::FirstParty`]).
const FIRST_PARTY: [&str; 4] = ["token", "jwt", "basic", "session"];

/// A guard and where it applies: one path, or every path below a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Guarded {
    /// The path, or the prefix.
    pub(crate) path: String,
    /// Whether `path` is a prefix.
    pub(crate) prefix: bool,
    /// The policy.
    pub(crate) guard: Guard,
}

impl Guarded {
    fn rule(&self) -> RouteRule {
        if self.prefix {
            RouteRule::prefix(self.path.clone())
        } else {
            RouteRule::exact(self.path.clone())
        }
    }

    /// Whether a configured route's (normalised) prefix lies inside this guard, where the
    /// guard's fixed policy applies instead.
    fn covers(&self, route_path: &str) -> bool {
        if self.prefix {
            route_path.starts_with(&self.path)
        } else {
            route_path == self.path
        }
    }
}

/// Both tables.
#[derive(Debug)]
pub(crate) struct Tables {
    /// The server's own routes.
    pub(crate) server: PolicyTable,
    /// The upstream's paths, for `/auth/verify`.
    pub(crate) forward_auth: PolicyTable,
}

/// What the configuration decides: the `[auth]` default and the `[[route]]` entries.
struct Configured {
    default: Policy,
    /// Each route's normalised path, rule and policy, in configuration order.
    routes: Vec<(String, RouteRule, Policy)>,
}

fn configured(
    config: &Config,
    schemes: &Schemes,
    throttles: &Throttles,
) -> Result<Configured, String> {
    let default_throttles = throttles.defaults();
    let default = build_policy(
        schemes,
        &config.auth.authenticators,
        &config.auth.permissions,
        &default_throttles,
        "auth",
    )?;
    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        let key = format!("route[{index}]");
        let path = original_path::normalize(&route.path)
            .map_err(|reason| format!("{key}.path: {:?} is refused: {reason}", route.path))?;
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
        let mut rule = RouteRule::prefix(path.clone());
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
        routes.push((path, rule, policy));
    }
    Ok(Configured { default, routes })
}

/// The forward-auth table: the `[[route]]` entries and the `[auth]` default, nothing else.
fn forward_auth_table(configured: &Configured) -> PolicyTable {
    configured.routes.iter().fold(
        PolicyTable::new(configured.default.clone()),
        |table, (_, rule, policy)| table.with_route(rule.clone(), policy.clone()),
    )
}

/// The policy a guard stands for.
fn guard_policy(
    guard: Guard,
    config: &Config,
    schemes: &Schemes,
    throttles: &Throttles,
) -> Result<Policy, String> {
    let allow_any = ["allow_any".to_owned()];
    Ok(match guard {
        Guard::Open => build_policy(schemes, &[], &allow_any, &[], "auth")?,
        Guard::OpenThrottled => {
            build_policy(schemes, &[], &allow_any, &throttles.defaults(), "auth")?
        }
        Guard::DefaultChainAllowAny => build_policy(
            schemes,
            &config.auth.authenticators,
            &allow_any,
            &throttles.defaults(),
            "auth",
        )?,
        Guard::FirstParty => build_policy(
            schemes,
            &FIRST_PARTY.map(str::to_owned),
            &["is_authenticated".to_owned()],
            &throttles.defaults(),
            "auth",
        )?,
    })
}

/// The server's own table: its endpoints' guards, the `[[route]]` entries outside them, the
/// `[auth]` default.
fn server_table(
    configured: &Configured,
    guards: &[Guarded],
    config: &Config,
    schemes: &Schemes,
    throttles: &Throttles,
) -> Result<PolicyTable, String> {
    let mut table = PolicyTable::new(configured.default.clone());
    // A configured prefix inside a guarded prefix (or equal to a guarded path) would be at
    // least as specific as the guard and win; the guard's policy is the endpoint's own.
    for (path, rule, policy) in &configured.routes {
        if !guards.iter().any(|g| g.covers(path)) {
            table = table.with_route(rule.clone(), policy.clone());
        }
    }
    for guarded in guards {
        let policy = guard_policy(guarded.guard, config, schemes, throttles)?;
        table = table.with_route(guarded.rule(), policy);
    }
    Ok(table)
}

/// Both tables from the configuration and the server's guards. The rate throttles are made
/// once, so both tables count in the same buckets.
pub(crate) fn policy_tables(
    config: &Config,
    schemes: &Schemes,
    guards: &[Guarded],
) -> Result<Tables, String> {
    let throttles = Throttles::from_config(
        &config.throttle,
        crate::scaleout::shared_throttle(&config.redis)?,
    );
    let configured = configured(config, schemes, &throttles)?;
    Ok(Tables {
        server: server_table(&configured, guards, config, schemes, &throttles)?,
        forward_auth: forward_auth_table(&configured),
    })
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use http::{HeaderValue, Method};
    use restguard_core::{Outcome, RequestContext, Scheme, StoreError};

    use super::*;

    /// An authenticator that only has a name (the tables are compared, never run).
    #[derive(Debug)]
    struct Named(Scheme);

    #[async_trait]
    impl Authenticator for Named {
        fn scheme(&self) -> Scheme {
            self.0
        }
        fn challenge(&self) -> Option<HeaderValue> {
            None
        }
        async fn authenticate(&self, _: &RequestContext<'_>) -> Result<Outcome, StoreError> {
            Ok(Outcome::Abstain)
        }
    }

    fn schemes() -> Schemes {
        Schemes {
            token: Arc::new(Named(Scheme::Token)),
            jwt: Arc::new(Named(Scheme::Jwt)),
            basic: Arc::new(Named(Scheme::Basic)),
            session: Arc::new(Named(Scheme::Session)),
            oauth2: Arc::new(Named(Scheme::OAuth2)),
        }
    }

    /// A configuration whose `[[route]]` entries try to reach into restguard's own endpoints.
    fn config() -> Config {
        let mut config = Config::default();
        config.throttle.anon = Some(crate::config::RateValue("5/m".parse().expect("rate")));
        for path in [
            "/",
            "/api/",
            "/api/tokens/",
            "/api/tokens/1/",
            "/o/",
            "/admin/",
            "/healthz",
        ] {
            config.routes.push(crate::config::RouteConfig {
                path: path.into(),
                methods: None,
                authenticators: Some(vec!["oauth2".into()]),
                permissions: Some(vec!["allow_any".into()]),
                throttles: None,
            });
        }
        config
    }

    /// A route path with its parameters filled in.
    fn concrete(route: &str) -> String {
        route
            .split('/')
            .map(|segment| match segment {
                "{*original}" => "x/y",
                s if s.starts_with('{') => "1",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every route path of the server, and a path below every guarded prefix.
    fn own_paths() -> Vec<String> {
        let endpoints = crate::app::endpoints();
        let mut paths: Vec<String> = endpoints.paths.iter().map(|p| concrete(p)).collect();
        paths.extend(
            endpoints
                .guards
                .iter()
                .filter(|g| g.prefix)
                .map(|g| format!("{}below/", g.path)),
        );
        paths
    }

    #[test]
    fn forward_auth_never_sees_restguards_own_endpoints() {
        let config = Config::default();
        let endpoints = crate::app::endpoints();
        let tables = policy_tables(&config, &schemes(), &endpoints.guards).expect("tables");
        let paths = own_paths();
        assert!(paths.len() > 40, "{paths:?}");
        for path in &paths {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                assert!(
                    std::ptr::eq(
                        tables.forward_auth.policy_for(&method, path),
                        tables.forward_auth.default_policy()
                    ),
                    "{method} {path} must get the [auth] default in the forward-auth table"
                );
            }
        }
    }

    #[test]
    fn own_endpoints_keep_their_guard_whatever_the_routes_say() {
        let config = config();
        let schemes = schemes();
        let endpoints = crate::app::endpoints();
        let tables = policy_tables(&config, &schemes, &endpoints.guards).expect("tables");
        let throttles = Throttles::from_config(&config.throttle, None);
        let fmt = |p: &Policy| format!("{p:?}");
        for guarded in &endpoints.guards {
            let path = if guarded.prefix {
                format!("{}below/", guarded.path)
            } else {
                guarded.path.clone()
            };
            let expected =
                guard_policy(guarded.guard, &config, &schemes, &throttles).expect("policy");
            for method in [Method::GET, Method::POST] {
                assert_eq!(
                    fmt(tables.server.policy_for(&method, &path)),
                    fmt(&expected),
                    "{method} {path}"
                );
            }
        }
        // The credential-management chain is the first-party one, in order.
        let tokens = fmt(tables.server.policy_for(&Method::POST, "/api/tokens/"));
        assert!(
            tokens.starts_with("Policy { authenticators: [Token, Jwt, Basic, Session], permissions: [IsAuthenticated]"),
            "{tokens}"
        );
        // Routes without a guard of their own still follow the configuration…
        assert!(fmt(tables.server.policy_for(&Method::GET, "/api/me/")).contains("[OAuth2]"));
        // …and the forward-auth table is the configuration alone.
        assert!(fmt(tables.forward_auth.policy_for(&Method::GET, "/healthz")).contains("[OAuth2]"));
        assert!(fmt(tables
            .forward_auth
            .policy_for(&Method::GET, "/api/tokens/1/"))
        .contains("[OAuth2]"));
    }

    #[test]
    fn route_paths_are_normalised_or_refused() {
        let mut config = Config::default();
        config.routes.push(crate::config::RouteConfig {
            path: "/app/%61dmin//./".into(),
            methods: None,
            authenticators: None,
            permissions: Some(vec!["is_admin_user".into()]),
            throttles: None,
        });
        let tables = policy_tables(&config, &schemes(), &[]).expect("tables");
        let fmt = |p: &Policy| format!("{p:?}");
        assert!(
            fmt(tables.forward_auth.policy_for(&Method::GET, "/app/admin/x"))
                .contains("IsAdminUser")
        );
        config.routes[0].path = "reports/".into();
        let error = policy_tables(&config, &schemes(), &[]).expect_err("relative");
        assert_eq!(
            error,
            "route[0].path: \"reports/\" is refused: it is not an absolute path"
        );
        config.routes[0].path = "/a%2Fb/".into();
        let error = policy_tables(&config, &schemes(), &[]).expect_err("encoded slash");
        assert_eq!(
            error,
            "route[0].path: \"/a%2Fb/\" is refused: it contains an encoded slash (%2F)"
        );
    }
}
