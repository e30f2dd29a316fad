//! `GET /metrics` (Prometheus text format): requests by route template and status, latency
//! histograms, authentication outcomes by scheme, denials, password hashes in flight.

mod common;

use common::{token, Server};

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_outcomes_and_denials() {
    let server = Server::start();
    server.create_user("alice", "pw-alice-123");
    let key = server.token_create("alice");
    assert_eq!(server.get("/api/ping/", None).await.status, 200);
    assert_eq!(server.get("/api/me/", None).await.status, 401);
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 200);
    assert_eq!(
        server.get("/api/tokens/", Some(&token(&key))).await.status,
        200
    );
    assert_eq!(server.get("/nope", Some(&token(&key))).await.status, 404);

    let reply = server.get("/metrics", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = &reply.text;
    let get = |series: &str| metric(text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    assert_eq!(
        get(r#"restguard_http_requests_total{route="/api/me/",method="GET",status="401"}"#),
        1.0
    );
    assert_eq!(
        get(r#"restguard_http_requests_total{route="/api/me/",method="GET",status="200"}"#),
        1.0
    );
    assert_eq!(
        get(r#"restguard_denials_total{route="/api/me/",status="401"}"#),
        1.0
    );
    // /api/me/, /api/tokens/ and the 404.
    assert_eq!(get(r#"restguard_auth_requests_total{scheme="token"}"#), 3.0);
    assert!(get(r#"restguard_auth_requests_total{scheme="anonymous"}"#) >= 1.0);
    assert_eq!(
        get(r#"restguard_http_request_duration_seconds_count{route="/api/me/"}"#),
        2.0
    );
    assert_eq!(
        get(r#"restguard_http_request_duration_seconds_bucket{route="/api/me/",le="+Inf"}"#),
        2.0
    );
    assert_eq!(get("restguard_password_hash_in_flight"), 0.0);
    // Unmatched paths share one label (bounded cardinality).
    assert_eq!(
        get(r#"restguard_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        1.0
    );
    assert!(!text.contains("/nope"));
}
