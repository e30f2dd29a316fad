//! `GET /metrics` in the Prometheus text format: requests by route and status, latency
//! histograms, authentication outcomes by scheme, denials (401/403/429/503) by route, password
//! hashes in flight, store unavailability and database pool usage.
//!
//! One registry per process (like Prometheus clients' default registry); label values are
//! route templates (`/api/tokens/{id}/`), never raw paths, so cardinality stays bounded.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Mutex, OnceLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{header, HeaderValue, Method};
use restguard_core::Identity;

use crate::app::AppState;

/// Latency histogram bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, &'static str, u16), u64>,
    /// route → latency.
    latency: BTreeMap<String, Histogram>,
    /// scheme (`anonymous` when none) → authenticated requests that reached a handler.
    authenticated: BTreeMap<&'static str, u64>,
    /// (route, status) → requests refused with 401, 403, 429 or 503.
    denied: BTreeMap<(String, u16), u64>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Registry::default()))
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

fn route_label(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

/// Outer middleware: every response, with its route, status and latency.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(&request);
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let mut registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    *registry
        .requests
        .entry((route.clone(), method, status))
        .or_default() += 1;
    if matches!(status, 401 | 403 | 429 | 503) {
        *registry.denied.entry((route.clone(), status)).or_default() += 1;
    }
    let histogram = registry.latency.entry(route).or_default();
    for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
        if seconds <= *bound {
            *count += 1;
        }
    }
    histogram.sum += seconds;
    histogram.count += 1;
    response
}

/// Inner middleware (after authentication): who got through, by scheme.
pub(crate) async fn record_identity(request: Request, next: Next) -> Response {
    let scheme = request
        .extensions()
        .get::<Identity>()
        .map_or("anonymous", |i| i.auth.scheme.as_str());
    {
        let mut registry = registry().lock().unwrap_or_else(|p| p.into_inner());
        *registry.authenticated.entry(scheme).or_default() += 1;
    }
    next.run(request).await
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render(state: &AppState) -> String {
    let registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP restguard_http_requests_total HTTP requests by route template, method and status.\n# TYPE restguard_http_requests_total counter"
    );
    for ((route, method, status), n) in &registry.requests {
        let _ = writeln!(
            out,
            "restguard_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
            label(route)
        );
    }
    let _ = writeln!(
        out,
        "# HELP restguard_http_request_duration_seconds Request latency by route template.\n# TYPE restguard_http_request_duration_seconds histogram"
    );
    for (route, h) in &registry.latency {
        let route = label(route);
        for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
            let _ = writeln!(
                out,
                "restguard_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "restguard_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nrestguard_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\nrestguard_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
            h.count, h.sum, h.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP restguard_auth_requests_total Requests past authentication, permissions and throttles, by scheme.\n# TYPE restguard_auth_requests_total counter"
    );
    for (scheme, n) in &registry.authenticated {
        let _ = writeln!(
            out,
            "restguard_auth_requests_total{{scheme=\"{scheme}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP restguard_denials_total Requests refused with 401, 403, 429 (throttled) or 503 (store unavailable), by route template.\n# TYPE restguard_denials_total counter"
    );
    for ((route, status), n) in &registry.denied {
        let _ = writeln!(
            out,
            "restguard_denials_total{{route=\"{}\",status=\"{status}\"}} {n}",
            label(route)
        );
    }
    drop(registry);
    let _ = writeln!(
        out,
        "# HELP restguard_password_hash_in_flight Password hash jobs queued or running.\n# TYPE restguard_password_hash_in_flight gauge\nrestguard_password_hash_in_flight {}",
        state.passwords.hasher().in_flight()
    );
    if let Some(probe) = pool_probe().get() {
        let (open, idle, max) = probe();
        let _ = writeln!(
            out,
            "# HELP restguard_db_pool_connections Database pool connections by state.\n# TYPE restguard_db_pool_connections gauge\nrestguard_db_pool_connections{{state=\"open\"}} {open}\nrestguard_db_pool_connections{{state=\"idle\"}} {idle}\nrestguard_db_pool_connections{{state=\"max\"}} {max}"
        );
    }
    out
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = render(&state).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
