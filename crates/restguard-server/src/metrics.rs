//! `GET /metrics` in the OpenMetrics text format (`prometheus-client`): requests by route and
//! status, latency histograms, authentication outcomes by scheme, authentication failures by
//! scheme and reason, throttle denials by scope, denials (401/403/429/503) by route, password
//! hashes in flight and database pool usage — and who may read it (`[metrics]`).
//!
//! One registry per process (like Prometheus clients' default registry). Label values are
//! route templates (`/api/tokens/{id}/`), never raw paths, codes and scopes from the server's
//! own fixed sets, so cardinality stays bounded. Per request: one read-locked map lookup per
//! series (the route label is the router's shared `Arc<str>`, so nothing is allocated) and
//! atomic increments; no process-wide mutex.

use std::{
    borrow::Cow,
    fmt::Write as _,
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::OnceLock,
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{header, HeaderMap, HeaderValue, Method};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use restguard_axum::Rejected;
use restguard_core::{
    error::{DenialKind, DenialReason},
    secret::SecretString,
    AuthError, Denial, Identity,
};
use subtle::ConstantTimeEq;

use crate::{
    app::AppState,
    client_ip::{Networks, VerifiedClientIp},
    error::ApiError,
};

/// Latency histogram bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A route template label (`unmatched` for requests no route matched). Cloning shares the
/// router's string.
#[derive(Debug, Clone)]
struct Route(Option<MatchedPath>);

impl Route {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DenialLabels {
    route: Route,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SchemeLabels {
    scheme: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    scheme: &'static str,
    reason: Cow<'static, str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScopeLabels {
    scope: Cow<'static, str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The process's series.
struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    authenticated: Family<SchemeLabels, Counter>,
    denied: Family<DenialLabels, Counter>,
    auth_failures: Family<FailureLabels, Counter>,
    throttled: Family<ScopeLabels, Counter>,
    hash_in_flight: Gauge,
    pool: Family<PoolLabels, Gauge>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // Counters get `_total` appended by the encoder.
        registry.register(
            "restguard_http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "restguard_http_request_duration_seconds",
            "Request latency by route template",
            latency.clone(),
        );
        let authenticated = Family::<SchemeLabels, Counter>::default();
        registry.register(
            "restguard_auth_requests",
            "Requests past authentication, permissions and throttles, by scheme (anonymous when none)",
            authenticated.clone(),
        );
        let denied = Family::<DenialLabels, Counter>::default();
        registry.register(
            "restguard_denials",
            "Requests refused with 401, 403, 429 (throttled) or 503 (store unavailable), by route template",
            denied.clone(),
        );
        let auth_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "restguard_auth_failures",
            "Authentication failures by the scheme that refused the credentials (none: no credentials) and the contract's code",
            auth_failures.clone(),
        );
        let throttled = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "restguard_throttle_denials",
            "Requests refused by a throttle (429), by scope: anon, user, a configured scope, or login",
            throttled.clone(),
        );
        let hash_in_flight = Gauge::default();
        registry.register(
            "restguard_password_hash_in_flight",
            "Password hash jobs queued or running",
            hash_in_flight.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "restguard_db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            authenticated,
            denied,
            auth_failures,
            throttled,
            hash_in_flight,
            pool,
        }
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

type PoolProbe = Box<dyn Fn() -> (u32, usize, u32) + Send + Sync>;

fn pool_probe() -> &'static OnceLock<PoolProbe> {
    static PROBE: OnceLock<PoolProbe> = OnceLock::new();
    &PROBE
}

/// Registers the database pool's (open, idle, maximum) connections for `/metrics`.
pub(crate) fn set_pool_probe(probe: impl Fn() -> (u32, usize, u32) + Send + Sync + 'static) {
    let _ = pool_probe().set(Box::new(probe));
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Outer middleware: every response, with its route, status and latency, and what refused it.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = Route(request.extensions().get::<MatchedPath>().cloned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let m = metrics();
    m.requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method,
            status,
        })
        .inc();
    if matches!(status, 401 | 403 | 429 | 503) {
        m.denied
            .get_or_create(&DenialLabels {
                route: route.clone(),
                status,
            })
            .inc();
    }
    if let Some(reason) = response.extensions().get::<DenialReason>() {
        match reason.kind {
            DenialKind::Authentication => {
                m.auth_failures
                    .get_or_create(&FailureLabels {
                        scheme: reason.scheme.map_or("none", |s| s.as_str()),
                        reason: reason.code.clone(),
                    })
                    .inc();
            }
            DenialKind::Throttle => {
                m.throttled
                    .get_or_create(&ScopeLabels {
                        scope: reason
                            .throttle_scope
                            .clone()
                            .unwrap_or(Cow::Borrowed("unknown")),
                    })
                    .inc();
            }
            _ => {}
        }
    }
    m.latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Inner middleware (after authentication): who got through, by scheme.
pub(crate) async fn record_identity(request: Request, next: Next) -> Response {
    let scheme = request
        .extensions()
        .get::<Identity>()
        .map_or("anonymous", |i| i.auth.scheme.as_str());
    metrics()
        .authenticated
        .get_or_create(&SchemeLabels { scheme })
        .inc();
    next.run(request).await
}

/// Who may read `/metrics` (`[metrics]`).
#[derive(Clone)]
pub(crate) struct MetricsAccess {
    /// `false`: `/metrics` answers 404.
    pub(crate) enabled: bool,
    /// Client addresses allowed (the client IP as `server.trusted_proxies` decides it, never
    /// `throttle.num_proxies`: [`VerifiedClientIp`]).
    pub(crate) allow_from: Networks,
    /// When set, `Authorization: Bearer <token>` is required too.
    pub(crate) token: Option<SecretString>,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsAccess")
            .field("enabled", &self.enabled)
            .field("allow_from", &self.allow_from)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The challenge of `/metrics` when a token is configured.
const METRICS_CHALLENGE: &str = "Bearer realm=\"metrics\"";

impl MetricsAccess {
    /// `None` when the request may read the metrics; otherwise the contract's answer.
    fn refusal(&self, client: Option<IpAddr>, headers: &HeaderMap) -> Option<Response> {
        if !self.enabled {
            return Some(ApiError::NotFound.into_response());
        }
        if !client.is_some_and(|ip| self.allow_from.contains(ip)) {
            let denied = Denial::new(AuthError::PermissionDenied { detail: None }, None);
            return Some(Rejected(denied).into_response());
        }
        let expected = self.token.as_ref()?;
        let challenge = Some(HeaderValue::from_static(METRICS_CHALLENGE));
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let presented = match (values.next(), values.next()) {
            (None, _) => {
                let denied = Denial::new(AuthError::NotAuthenticated, challenge);
                return Some(Rejected(denied).into_response());
            }
            (Some(value), None) => value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim()),
            // More than one `Authorization` header: never a match.
            (Some(_), Some(_)) => None,
        };
        let matches = presented
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())));
        (!matches).then(|| {
            Rejected(Denial::new(AuthError::failed("Invalid token."), challenge)).into_response()
        })
    }
}

fn render(state: &AppState) -> String {
    let m = metrics();
    m.hash_in_flight
        .set(i64::try_from(state.passwords.hasher().in_flight()).unwrap_or(i64::MAX));
    if let Some(probe) = pool_probe().get() {
        let (open, idle, max) = probe();
        for (state, value) in [
            ("open", i64::from(open)),
            ("idle", i64::try_from(idle).unwrap_or(i64::MAX)),
            ("max", i64::from(max)),
        ] {
            m.pool.get_or_create(&PoolLabels { state }).set(value);
        }
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    out
}

/// `GET /metrics`.
pub(crate) async fn metrics_endpoint(
    State(state): State<AppState>,
    client: Option<axum::Extension<VerifiedClientIp>>,
    headers: HeaderMap,
) -> Response {
    let client = client.map(|axum::Extension(VerifiedClientIp(ip))| ip);
    if let Some(refused) = state.metrics_access.refusal(client, &headers) {
        return refused;
    }
    let mut response = render(&state).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
