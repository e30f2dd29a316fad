//! A [`Policy`] is one route's authenticators, permissions and throttles; a
//! [`PolicyTable`] is the global default plus per-route overrides.

use std::{fmt, sync::Arc};

use http::{HeaderValue, Method};

use crate::{
    authenticator::{Authenticator, Outcome, RequestContext},
    error::{AuthError, Denial},
    identity::Identity,
    permission::{Permission, PermissionRequest},
    throttle::{Throttle, ThrottleDecision, ThrottleRequest},
};

/// Authenticators, permissions and throttles for a route (DRF's three view settings).
#[derive(Clone, Default)]
pub struct Policy {
    authenticators: Arc<[Arc<dyn Authenticator>]>,
    permissions: Arc<[Arc<dyn Permission>]>,
    throttles: Arc<[Arc<dyn Throttle>]>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field(
                "authenticators",
                &self
                    .authenticators
                    .iter()
                    .map(|a| a.scheme())
                    .collect::<Vec<_>>(),
            )
            .field("permissions", &self.permissions)
            .field("throttles", &self.throttles)
            .finish()
    }
}

/// Builds a [`Policy`].
#[derive(Default)]
pub struct PolicyBuilder {
    authenticators: Vec<Arc<dyn Authenticator>>,
    permissions: Vec<Arc<dyn Permission>>,
    throttles: Vec<Arc<dyn Throttle>>,
}

impl PolicyBuilder {
    /// Appends an authenticator (they run in the order added).
    pub fn authenticator(mut self, a: impl Authenticator) -> Self {
        self.authenticators.push(Arc::new(a));
        self
    }

    /// Appends a shared authenticator.
    pub fn shared_authenticator(mut self, a: Arc<dyn Authenticator>) -> Self {
        self.authenticators.push(a);
        self
    }

    /// Adds a permission (all must allow).
    pub fn permission(mut self, p: impl Permission) -> Self {
        self.permissions.push(Arc::new(p));
        self
    }

    /// Adds a shared permission.
    pub fn shared_permission(mut self, p: Arc<dyn Permission>) -> Self {
        self.permissions.push(p);
        self
    }

    /// Adds a throttle (all are consulted; the longest wait wins).
    pub fn throttle(mut self, t: impl Throttle) -> Self {
        self.throttles.push(Arc::new(t));
        self
    }

    /// Adds a shared throttle.
    pub fn shared_throttle(mut self, t: Arc<dyn Throttle>) -> Self {
        self.throttles.push(t);
        self
    }

    /// Finishes the policy.
    pub fn build(self) -> Policy {
        Policy {
            authenticators: self.authenticators.into(),
            permissions: self.permissions.into(),
            throttles: self.throttles.into(),
        }
    }
}

impl Policy {
    /// Starts a builder.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// The authenticators, in order.
    pub fn authenticators(&self) -> &[Arc<dyn Authenticator>] {
        &self.authenticators
    }

    /// The challenge of the first authenticator (DRF's `get_authenticate_header`).
    pub fn challenge(&self) -> Option<HeaderValue> {
        self.authenticators.first().and_then(|a| a.challenge())
    }

    fn deny(&self, error: AuthError) -> Denial {
        Denial::new(error, self.challenge())
    }

    /// Runs the authenticators in order. `Ok(None)`: anonymous.
    pub async fn authenticate(
        &self,
        request: &RequestContext<'_>,
    ) -> Result<Option<Identity>, Denial> {
        for (index, authenticator) in self.authenticators.iter().enumerate() {
            match authenticator.authenticate(request).await {
                Ok(Outcome::Abstain) => continue,
                Ok(Outcome::Authenticated(identity)) => return Ok(Some(identity)),
                Ok(Outcome::Failed(error)) => {
                    let override_challenge = match &error {
                        AuthError::AuthenticationFailed(r) if index == 0 => r.challenge.clone(),
                        _ => None,
                    };
                    let challenge = override_challenge.or_else(|| self.challenge());
                    // An authenticator throttles only password logins (Basic).
                    let login_throttled = matches!(error, AuthError::Throttled { .. });
                    let denial = Denial::new(error, challenge).with_scheme(authenticator.scheme());
                    return Err(if login_throttled {
                        denial.with_throttle_scope("login")
                    } else {
                        denial
                    });
                }
                Err(store) => return Err(self.deny(AuthError::Unavailable(store))),
            }
        }
        Ok(None)
    }

    /// Checks every permission; anonymous and denied is `NotAuthenticated` (DRF's rule).
    pub fn check_permissions(
        &self,
        method: &Method,
        identity: Option<&Identity>,
    ) -> Result<(), Denial> {
        let request = PermissionRequest { method, identity };
        for permission in self.permissions.iter() {
            if !permission.has_permission(&request) {
                let error = if identity.is_none() && !self.authenticators.is_empty() {
                    AuthError::NotAuthenticated
                } else {
                    AuthError::PermissionDenied {
                        detail: permission.message(),
                    }
                };
                return Err(self.deny(error));
            }
        }
        Ok(())
    }

    /// Consults every throttle; the longest wait wins.
    pub async fn check_throttles(
        &self,
        request: &RequestContext<'_>,
        identity: Option<&Identity>,
    ) -> Result<(), Denial> {
        let throttle_request = ThrottleRequest {
            client_ip: request.client_ip,
            identity,
        };
        let mut longest: Option<(std::time::Duration, &Arc<dyn Throttle>)> = None;
        for throttle in self.throttles.iter() {
            match throttle.allow_request(&throttle_request).await {
                Ok(ThrottleDecision::Allow) => {}
                Ok(ThrottleDecision::Wait(wait)) => {
                    if longest.is_none_or(|(l, _)| wait > l) {
                        longest = Some((wait, throttle));
                    }
                }
                Err(store) => return Err(self.deny(AuthError::Unavailable(store))),
            }
        }
        match longest {
            Some((wait, throttle)) => Err(self
                .deny(AuthError::Throttled { wait })
                .with_throttle_scope(throttle.scope().to_owned())),
            None => Ok(()),
        }
    }

    /// Authentication, then permissions, then throttles.
    pub async fn evaluate(&self, request: &RequestContext<'_>) -> Result<Option<Identity>, Denial> {
        let identity = self.authenticate(request).await?;
        self.check_permissions(&request.parts.method, identity.as_ref())?;
        self.check_throttles(request, identity.as_ref()).await?;
        Ok(identity)
    }
}

/// Which requests a per-route policy applies to.
#[derive(Debug, Clone)]
pub struct RouteRule {
    path: String,
    exact: bool,
    methods: Option<Vec<Method>>,
}

impl RouteRule {
    /// Every path starting with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            path: prefix.into(),
            exact: false,
            methods: None,
        }
    }

    /// Exactly `path`.
    pub fn exact(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            exact: true,
            methods: None,
        }
    }

    /// Only these methods.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = Some(methods.into_iter().collect());
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        let path_ok = if self.exact {
            path == self.path
        } else {
            path.starts_with(&self.path)
        };
        path_ok && self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// How specific the rule is: exact rules beat prefixes, longer prefixes beat shorter.
    fn specificity(&self) -> (bool, usize, bool) {
        (self.exact, self.path.len(), self.methods.is_some())
    }
}

/// The global default policy plus per-route overrides.
///
/// The most specific matching rule wins (an exact path over a prefix, a longer prefix over a
/// shorter one, a rule naming methods over one that does not); a request that matches no rule
/// gets the default, so a route can never end up unauthenticated by accident.
///
/// ```
/// use restguard_core::{permission::{AllowAny, IsAuthenticated}, Policy, PolicyTable, RouteRule};
/// let table = PolicyTable::new(Policy::builder().permission(IsAuthenticated).build())
///     .with_route(RouteRule::prefix("/public/"), Policy::builder().permission(AllowAny).build());
/// let public = table.policy_for(&http::Method::GET, "/public/x");
/// let private = table.policy_for(&http::Method::GET, "/private");
/// assert!(!std::ptr::eq(public, private));
/// ```
#[derive(Debug, Clone)]
pub struct PolicyTable {
    default: Policy,
    routes: Vec<(RouteRule, Policy)>,
}

impl PolicyTable {
    /// A table with only the global default.
    pub fn new(default: Policy) -> Self {
        Self {
            default,
            routes: Vec::new(),
        }
    }

    /// Adds an override.
    pub fn with_route(mut self, rule: RouteRule, policy: Policy) -> Self {
        self.routes.push((rule, policy));
        // Most specific first; the sort is stable so equal rules keep their order.
        self.routes
            .sort_by_key(|(rule, _)| std::cmp::Reverse(rule.specificity()));
        self
    }

    /// The global default.
    pub fn default_policy(&self) -> &Policy {
        &self.default
    }

    /// The policy for a request.
    pub fn policy_for(&self, method: &Method, path: &str) -> &Policy {
        self.routes
            .iter()
            .find(|(rule, _)| rule.matches(method, path))
            .map_or(&self.default, |(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use time::OffsetDateTime;

    use super::*;
    use crate::{
        error::Rejection,
        identity::{AuthInfo, Scheme, User, UserId},
        permission::{AllowAny, IsAdminUser, IsAuthenticated},
        store::StoreError,
    };

    fn user() -> Arc<User> {
        let now = OffsetDateTime::UNIX_EPOCH;
        Arc::new(User {
            id: UserId(7),
            username: "alice".into(),
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            is_active: true,
            is_staff: false,
            is_superuser: false,
            date_joined: now,
            last_login: None,
            credentials_changed_at: now,
        })
    }

    /// A scripted authenticator: answers by the `Authorization` value.
    #[derive(Debug)]
    struct Scripted {
        scheme: Scheme,
        challenge: Option<&'static str>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn new(scheme: Scheme, challenge: Option<&'static str>) -> Self {
            Self {
                scheme,
                challenge,
                calls: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait]
    impl Authenticator for Scripted {
        fn scheme(&self) -> Scheme {
            self.scheme
        }
        fn challenge(&self) -> Option<HeaderValue> {
            self.challenge.map(HeaderValue::from_static)
        }
        async fn authenticate(&self, r: &RequestContext<'_>) -> Result<Outcome, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let Some(value) = r.authorization else {
                return Ok(Outcome::Abstain);
            };
            let value = value.to_str().unwrap_or_default();
            let (who, what) = value.split_once(' ').unwrap_or((value, ""));
            if who != self.scheme.as_str() {
                return Ok(Outcome::Abstain);
            }
            Ok(match what {
                "good" => Outcome::Authenticated(Identity::new(user(), AuthInfo::new(self.scheme))),
                "down" => return Err(StoreError::unavailable(std::io::Error::other("down"))),
                _ => Outcome::Failed(
                    Rejection::new("bad")
                        .with_challenge(HeaderValue::from_static("special"))
                        .into(),
                ),
            })
        }
    }

    #[derive(Debug)]
    struct FixedWait(u64);

    #[async_trait]
    impl Throttle for FixedWait {
        async fn allow_request(
            &self,
            _: &ThrottleRequest<'_>,
        ) -> Result<ThrottleDecision, StoreError> {
            Ok(match self.0 {
                0 => ThrottleDecision::Allow,
                s => ThrottleDecision::Wait(Duration::from_secs(s)),
            })
        }
    }

    async fn run(
        policy: &Policy,
        auth: Option<&str>,
        method: Method,
    ) -> Result<Option<Identity>, Denial> {
        let mut builder = http::Request::builder().method(method);
        if let Some(a) = auth {
            builder = builder.header("authorization", a);
        }
        let (parts, _) = builder.body(()).unwrap().into_parts();
        let ctx = RequestContext::new(&parts, None).map_err(|e| Denial::new(e, None))?;
        policy.evaluate(&ctx).await
    }

    #[tokio::test]
    async fn first_success_stops_the_chain() {
        let token = Arc::new(Scripted::new(Scheme::Token, Some("Token")));
        let basic = Arc::new(Scripted::new(Scheme::Basic, Some("Basic realm=\"api\"")));
        let policy = Policy::builder()
            .shared_authenticator(token.clone())
            .shared_authenticator(basic.clone())
            .permission(IsAuthenticated)
            .build();
        let id = run(&policy, Some("token good"), Method::GET).await;
        assert!(matches!(id, Ok(Some(_))));
        assert_eq!(basic.calls.load(Ordering::SeqCst), 0);
        let id = run(&policy, Some("basic good"), Method::GET).await;
        assert_eq!(
            id.ok().flatten().map(|i| i.auth.scheme),
            Some(Scheme::Basic)
        );
    }

    #[tokio::test]
    async fn anonymous_gets_first_challenge_or_403() {
        let policy = Policy::builder()
            .authenticator(Scripted::new(Scheme::Token, Some("Token")))
            .authenticator(Scripted::new(Scheme::Session, None))
            .permission(IsAuthenticated)
            .build();
        let denial = run(&policy, None, Method::GET).await.err();
        let denial = denial.map(|d| (d.status(), d.challenge));
        assert_eq!(
            denial,
            Some((
                http::StatusCode::UNAUTHORIZED,
                Some(HeaderValue::from_static("Token"))
            ))
        );

        let session_first = Policy::builder()
            .authenticator(Scripted::new(Scheme::Session, None))
            .authenticator(Scripted::new(Scheme::Token, Some("Token")))
            .permission(IsAuthenticated)
            .build();
        let denial = run(&session_first, None, Method::GET).await.err();
        assert_eq!(
            denial.map(|d| d.status()),
            Some(http::StatusCode::FORBIDDEN)
        );
        // Failure of the second authenticator uses the first one's (absent) challenge.
        let denial = run(&session_first, Some("token bad"), Method::GET)
            .await
            .err();
        assert_eq!(
            denial.map(|d| d.status()),
            Some(http::StatusCode::FORBIDDEN)
        );
    }

    #[tokio::test]
    async fn failure_stops_even_on_allow_any() {
        let policy = Policy::builder()
            .authenticator(Scripted::new(Scheme::Token, Some("Token")))
            .permission(AllowAny)
            .build();
        let denial = run(&policy, Some("token bad"), Method::GET).await.err();
        let denial = denial.map(|d| (d.status(), d.challenge));
        // The first authenticator's own challenge override applies.
        assert_eq!(
            denial,
            Some((
                http::StatusCode::UNAUTHORIZED,
                Some(HeaderValue::from_static("special"))
            ))
        );
        assert!(matches!(run(&policy, None, Method::GET).await, Ok(None)));
    }

    #[tokio::test]
    async fn authenticated_but_denied_is_403() {
        let policy = Policy::builder()
            .authenticator(Scripted::new(Scheme::Token, Some("Token")))
            .permission(IsAdminUser)
            .build();
        let denial = run(&policy, Some("token good"), Method::GET).await.err();
        assert_eq!(
            denial.map(|d| d.body()["code"].clone()),
            Some("permission_denied".into())
        );
    }

    #[tokio::test]
    async fn store_errors_are_503() {
        let policy = Policy::builder()
            .authenticator(Scripted::new(Scheme::Token, Some("Token")))
            .permission(AllowAny)
            .build();
        let denial = run(&policy, Some("token down"), Method::GET).await.err();
        assert_eq!(
            denial.map(|d| d.status()),
            Some(http::StatusCode::SERVICE_UNAVAILABLE)
        );
    }

    #[tokio::test]
    async fn throttles_run_after_permissions_and_longest_wait_wins() {
        let policy = Policy::builder()
            .authenticator(Scripted::new(Scheme::Token, Some("Token")))
            .permission(IsAuthenticated)
            .throttle(FixedWait(3))
            .throttle(FixedWait(0))
            .throttle(FixedWait(9))
            .build();
        // Permission failure comes first.
        let denial = run(&policy, None, Method::GET).await.err();
        assert_eq!(
            denial.map(|d| d.status()),
            Some(http::StatusCode::UNAUTHORIZED)
        );
        let denial = run(&policy, Some("token good"), Method::GET).await.err();
        let wait = denial.map(|d| match d.error {
            AuthError::Throttled { wait } => wait.as_secs(),
            _ => 0,
        });
        assert_eq!(wait, Some(9));
    }

    #[tokio::test]
    async fn duplicate_authorization_is_400() {
        let (parts, _) = http::Request::builder()
            .header("authorization", "a")
            .header("authorization", "b")
            .body(())
            .unwrap()
            .into_parts();
        assert!(matches!(
            RequestContext::new(&parts, None),
            Err(AuthError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn table_picks_most_specific_rule() {
        let a = Policy::builder().permission(IsAuthenticated).build();
        let b = Policy::builder().permission(AllowAny).build();
        let c = Policy::builder().permission(IsAdminUser).build();
        let table = PolicyTable::new(a)
            .with_route(RouteRule::prefix("/api/"), b)
            .with_route(RouteRule::prefix("/api/admin/").methods([Method::POST]), c);
        let fmt = |p: &Policy| format!("{p:?}");
        assert!(fmt(table.policy_for(&Method::GET, "/x")).contains("IsAuthenticated"));
        assert!(fmt(table.policy_for(&Method::GET, "/api/admin/")).contains("AllowAny"));
        assert!(fmt(table.policy_for(&Method::POST, "/api/admin/")).contains("IsAdminUser"));
    }
}
