//! `GET /metrics` (OpenMetrics text format): requests by route template and status, latency
//! histograms, authentication outcomes by scheme, authentication failures by scheme and
//! reason, throttle denials by scope, denials, password hashes in flight; and who may read it
//! (`[metrics]`: loopback by default, configured networks, an optional bearer token).

mod common;

use common::{basic, token, Server};
use serde_json::json;

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_outcomes_and_denials() {
    let server = Server::start_with_env(&[("RESTGUARD_THROTTLE__LOGIN_IP", "1/m")]);
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
    // Failures, each with the scheme that refused and the contract's code.
    assert_eq!(
        server.get("/api/me/", Some(&token("nope"))).await.status,
        401
    );
    assert_eq!(
        server.get("/api/me/", Some("Bearer a.b.c")).await.status,
        401
    );
    let refresh = server
        .request(
            reqwest::Method::POST,
            "/api/token/refresh/",
            None,
            common::Body::Json(json!({"refresh": "a.b.c"})),
        )
        .await;
    assert_eq!(refresh.status, 401, "{refresh:?}");
    // One failed Basic login (401), then the login throttle (1/m) refuses the next (429).
    assert_eq!(
        server
            .get("/api/me/", Some(&basic("alice", "wrong")))
            .await
            .status,
        401
    );
    assert_eq!(
        server
            .get("/api/me/", Some(&basic("alice", "wrong")))
            .await
            .status,
        429
    );

    let reply = server.get("/metrics", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(reply.text.ends_with("# EOF\n"));
    let text = &reply.text;
    let get = |series: &str| metric(text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    assert_eq!(
        get(r#"restguard_http_requests_total{route="/api/me/",method="GET",status="401"}"#),
        4.0
    );
    assert_eq!(
        get(r#"restguard_http_requests_total{route="/api/me/",method="GET",status="200"}"#),
        1.0
    );
    assert_eq!(
        get(r#"restguard_denials_total{route="/api/me/",status="401"}"#),
        4.0
    );
    for (series, expected) in [
        (
            r#"restguard_auth_failures_total{scheme="none",reason="not_authenticated"}"#,
            1.0,
        ),
        (
            r#"restguard_auth_failures_total{scheme="token",reason="authentication_failed"}"#,
            1.0,
        ),
        // The bearer on /api/me/ and the refresh endpoint.
        (
            r#"restguard_auth_failures_total{scheme="jwt",reason="token_not_valid"}"#,
            2.0,
        ),
        (
            r#"restguard_auth_failures_total{scheme="basic",reason="authentication_failed"}"#,
            1.0,
        ),
        (r#"restguard_throttle_denials_total{scope="login"}"#, 1.0),
    ] {
        assert_eq!(get(series), expected, "{series}");
    }
    // /api/me/, /api/tokens/ and the 404.
    assert_eq!(get(r#"restguard_auth_requests_total{scheme="token"}"#), 3.0);
    assert!(get(r#"restguard_auth_requests_total{scheme="anonymous"}"#) >= 1.0);
    assert_eq!(
        get(r#"restguard_http_request_duration_seconds_count{route="/api/me/"}"#),
        6.0
    );
    assert_eq!(
        get(r#"restguard_http_request_duration_seconds_bucket{le="+Inf",route="/api/me/"}"#),
        6.0
    );
    assert_eq!(get("restguard_password_hash_in_flight"), 0.0);
    // Unmatched paths share one label (bounded cardinality).
    assert_eq!(
        get(r#"restguard_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        1.0
    );
    assert!(!text.contains("/nope"));
}

#[tokio::test]
async fn rate_throttle_denials_are_counted_by_scope() {
    let server = Server::start_with_env(&[("RESTGUARD_THROTTLE__ANON", "1/m")]);
    assert_eq!(server.get("/api/ping/", None).await.status, 200);
    assert_eq!(server.get("/api/ping/", None).await.status, 429);
    assert_eq!(server.get("/api/ping/", None).await.status, 429);
    let text = server.get("/metrics", None).await.text;
    assert_eq!(
        metric(&text, r#"restguard_throttle_denials_total{scope="anon"}"#),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_access_is_restricted() {
    let forbidden = json!({
        "detail": "You do not have permission to perform this action.",
        "code": "permission_denied",
    });
    // Only the listed networks (loopback by default): this client is outside them.
    let server = Server::start_with_env(&[("RESTGUARD_METRICS__ALLOW_FROM", "10.0.0.0/8")]);
    let reply = server.get("/metrics", None).await;
    reply.assert(403, None, &forbidden);

    // Allowed networks plus a bearer token.
    let secret = "metrics-token-0123456789";
    let server = Server::start_with_env(&[
        ("RESTGUARD_METRICS__TOKEN", secret),
        ("RESTGUARD_METRICS__ALLOW_FROM", "127.0.0.1/32"),
    ]);
    let challenge = Some("Bearer realm=\"metrics\"");
    server.get("/metrics", None).await.assert(
        401,
        challenge,
        &json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}),
    );
    let invalid = json!({"detail": "Invalid token.", "code": "authentication_failed"});
    for wrong in [
        "Bearer metrics-token-0123456788".to_owned(),
        format!("Token {secret}"),
        format!("Bearer {secret}x"),
        "Bearer".to_owned(),
    ] {
        server
            .get("/metrics", Some(&wrong))
            .await
            .assert(401, challenge, &invalid);
    }
    let reply = server
        .get("/metrics", Some(&format!("Bearer {secret}")))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.text.contains("restguard_http_requests_total"));
    // The refusals above are authentication failures of /metrics itself.
    assert_eq!(
        metric(
            &reply.text,
            r#"restguard_denials_total{route="/metrics",status="401"}"#
        ),
        Some(5.0)
    );

    // Disabled: 404 with the contract body.
    let server = Server::start_with_env(&[("RESTGUARD_METRICS__ENABLED", "false")]);
    server.get("/metrics", None).await.assert(
        404,
        None,
        &json!({"detail": "Not found.", "code": "not_found"}),
    );

    // Bad settings are startup errors naming the key.
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("RESTGUARD_METRICS__TOKEN", "short"),
        ("RESTGUARD_METRICS__ALLOW_FROM", "10.0.0.0/40"),
        ("RESTGUARD_METRICS__ALLOW_FROM", ""),
    ] {
        let out = common::cli_in(
            dir.path(),
            &["serve", "--bind", "127.0.0.1:0"],
            None,
            &[(key, value)],
        );
        let message = out.assert_one_line_error();
        let expected = if key.ends_with("TOKEN") {
            "metrics.token"
        } else {
            "metrics.allow_from"
        };
        assert!(message.to_lowercase().contains(expected), "{message}");
        assert!(
            !message.contains("short"),
            "the token is never printed: {message}"
        );
    }
}

/// `throttle.num_proxies` believes any peer's `X-Forwarded-For` (DRF's `NUM_PROXIES`, for
/// throttles only). The `/metrics` allowlist must not: a client writing an allowed address
/// into the header would pass. Only `server.trusted_proxies` moves the address it checks.
#[tokio::test]
async fn metrics_allowlist_ignores_num_proxies() {
    let forbidden = json!({
        "detail": "You do not have permission to perform this action.",
        "code": "permission_denied",
    });
    let allowed = "198.51.100.7";
    let server = Server::start_with_env(&[
        ("RESTGUARD_THROTTLE__NUM_PROXIES", "1"),
        ("RESTGUARD_METRICS__ALLOW_FROM", allowed),
    ]);
    let spoofed = server
        .client
        .get(server.url("/metrics"))
        .header("X-Forwarded-For", allowed)
        .send()
        .await
        .expect("request");
    common::Reply::read(spoofed)
        .await
        .assert(403, None, &forbidden);
    // The loopback default and a client that writes someone else's address: the socket
    // peer (loopback) decides, not the header.
    let server = Server::start_with_env(&[("RESTGUARD_THROTTLE__NUM_PROXIES", "1")]);
    let reply = server
        .client
        .get(server.url("/metrics"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), 200);
    // A trusted proxy (loopback here) does speak for its client.
    let server = Server::start_with_env(&[
        ("RESTGUARD_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
        ("RESTGUARD_METRICS__ALLOW_FROM", allowed),
    ]);
    let relayed = server
        .client
        .get(server.url("/metrics"))
        .header("X-Forwarded-For", allowed)
        .send()
        .await
        .expect("request");
    assert_eq!(relayed.status(), 200);
    let refused = server
        .client
        .get(server.url("/metrics"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .expect("request");
    common::Reply::read(refused)
        .await
        .assert(403, None, &forbidden);
}
