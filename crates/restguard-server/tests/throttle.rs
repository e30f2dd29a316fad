//! Throttles in one process: login throttle on every password endpoint (CONTRACT §10),
//! DRF rate throttles from configuration (anon, user, scoped), and the client IP behind a
//! configured number of proxies.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use base64::Engine as _;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn throttled_body(reply: &Reply) -> (u64, Value) {
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let unit = if retry == 1 { "second" } else { "seconds" };
    (
        retry,
        json!({
            "detail": format!("Request was throttled. Expected available in {retry} {unit}."),
            "code": "throttled",
        }),
    )
}

#[tokio::test]
async fn basic_logins_are_throttled_per_ip() {
    let server = Server::start_with_env(&[
        ("RESTGUARD_THROTTLE__LOGIN_IP", "3/m"),
        ("RESTGUARD_THROTTLE__LOGIN_USER", "off"),
    ]);
    server.create_user("alice", "right");
    for user in ["alice", "bob", "carol"] {
        server
            .get("/api/me/", Some(&basic(user, "wrong")))
            .await
            .assert(
                401,
                Some("Token"),
                &json!({"detail": "Invalid username/password.", "code": "authentication_failed"}),
            );
    }
    // Fourth attempt from this IP: 429 before any password is checked, even a right one.
    let reply = server.get("/api/me/", Some(&basic("alice", "right"))).await;
    reply.assert_status(429, None);
    let (retry, body) = throttled_body(&reply);
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(reply.json, body);
    // Token authentication is not a password login: unaffected.
    let key = server.token_create("alice");
    server
        .get("/api/me/", Some(&format!("Token {key}")))
        .await
        .assert_status(200, None);
}

#[tokio::test]
async fn login_throttle_trusts_forwarded_for_only_behind_configured_proxies() {
    let server = Server::start_with_env(&[
        ("RESTGUARD_THROTTLE__LOGIN_IP", "2/m"),
        ("RESTGUARD_THROTTLE__LOGIN_USER", "off"),
        ("RESTGUARD_THROTTLE__NUM_PROXIES", "1"),
    ]);
    server.create_user("alice", "right");
    let attempt = |forwarded: &'static str| {
        let client = server.client.clone();
        let url = server.url("/api-token-auth/");
        async move {
            client
                .post(url)
                .header("x-forwarded-for", forwarded)
                .json(&json!({"username": "alice", "password": "wrong"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The proxy appends the real client (rightmost); a client-supplied left part is ignored.
    assert_eq!(attempt("6.6.6.6, 10.0.0.1").await, 400);
    assert_eq!(attempt("7.7.7.7, 10.0.0.1").await, 400);
    assert_eq!(attempt("8.8.8.8, 10.0.0.1").await, 429);
    // Another client behind the same proxy has its own budget.
    assert_eq!(attempt("10.0.0.2").await, 400);
}

#[tokio::test]
async fn configured_rate_throttles_apply_in_drf_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("restguard.toml"),
        r#"
[throttle]
anon = "2/m"
scopes = { reports = "1/m" }

[[route]]
path = "/reports/"
throttles = ["reports"]
"#,
    )
    .unwrap();
    let config = dir.path().join("restguard.toml");
    let config = config.to_str().unwrap();
    let server = Server::start_with_env(&[("RESTGUARD_CONFIG", config)]);
    server.create_user("alice", "right");
    let key = server.token_create("alice");
    let token = format!("Token {key}");

    // anon applies to anonymous requests on the default policy: the 401 for a missing
    // credential comes first (permissions run before throttles), so use the AllowAny route.
    server
        .get("/api/ping/", None)
        .await
        .assert_status(200, None);
    server
        .get("/api/ping/", None)
        .await
        .assert_status(200, None);
    let reply = server.get("/api/ping/", None).await;
    reply.assert_status(429, None);
    assert_eq!(reply.json, throttled_body(&reply).1);
    // Authenticated users pass the anon throttle.
    server
        .get("/api/ping/", Some(&token))
        .await
        .assert_status(200, None);

    // The scoped throttle on /reports/ (no handler there: 404 once allowed).
    server
        .get("/reports/x", Some(&token))
        .await
        .assert_status(404, None);
    let reply = server.get("/reports/x", Some(&token)).await;
    reply.assert_status(429, None);
    assert_eq!(reply.json, throttled_body(&reply).1);
}

#[tokio::test]
async fn unknown_throttle_names_fail_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("restguard.toml"),
        "[[route]]\npath = \"/x/\"\nthrottles = [\"nope\"]\n",
    )
    .unwrap();
    let out = cli_in(dir.path(), &["serve", "--bind", "127.0.0.1:0"], None, &[]);
    let message = out.assert_one_line_error();
    assert!(message.contains("route[0].throttles"), "{message}");
    assert!(message.contains("nope"), "{message}");
}

#[tokio::test]
async fn token_obtain_counts_only_failures() {
    let server = Server::start_with_env(&[("RESTGUARD_THROTTLE__LOGIN_USER", "2/h")]);
    server.create_user("alice", "right");
    for _ in 0..4 {
        server
            .request(
                Method::POST,
                "/api-token-auth/",
                None,
                Body::Json(json!({"username": "alice", "password": "right"})),
            )
            .await
            .assert_status(200, None);
    }
}

#[tokio::test]
async fn jwt_obtain_is_login_throttled() {
    let server = Server::start_with_env(&[
        ("RESTGUARD_THROTTLE__LOGIN_USER", "2/h"),
        ("RESTGUARD_THROTTLE__LOGIN_IP", "off"),
    ]);
    server.create_user("alice", "right");
    for _ in 0..2 {
        server
            .request(
                Method::POST,
                "/api/token/",
                None,
                Body::Json(json!({"username": "alice", "password": "wrong"})),
            )
            .await
            .assert(
                401,
                Some("Bearer realm=\"api\""),
                &json!({"detail": "No active account found with the given credentials", "code": "no_active_account"}),
            );
    }
    for path in ["/api/token/", "/api/token/sliding/", "/api-token-auth/"] {
        let reply = server
            .request(
                Method::POST,
                path,
                None,
                Body::Json(json!({"username": "alice", "password": "right"})),
            )
            .await;
        reply.assert_status(429, None);
        assert_eq!(reply.json, throttled_body(&reply).1, "{path}");
    }
}

/// `GET /api/ping/` from the local address `from` (a loopback alias), with `X-Forwarded-For`.
async fn ping_from(server: &Server, from: &str, forwarded: Option<&str>) -> Reply {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut request = client.get(server.url("/api/ping/"));
    if let Some(value) = forwarded {
        request = request.header("x-forwarded-for", value);
    }
    Reply::read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    // 127.0.0.1 is a trusted proxy; 127.0.0.2 (another loopback address) is not.
    let server = Server::start_with_env(&[
        ("RESTGUARD_THROTTLE__ANON", "2/m"),
        (
            "RESTGUARD_SERVER__TRUSTED_PROXIES",
            "127.0.0.1/32, 10.0.0.0/8",
        ),
    ]);
    let ok = json!({"ok": true});

    // An untrusted peer cannot choose its address: every spoofed value counts against it.
    for forged in ["198.51.100.1", "198.51.100.2"] {
        let reply = ping_from(&server, "127.0.0.2", Some(forged)).await;
        assert_eq!(
            (reply.status.as_u16(), &reply.json),
            (200, &ok),
            "{reply:?}"
        );
    }
    let reply = ping_from(&server, "127.0.0.2", Some("198.51.100.3")).await;
    reply.assert_status(429, None);
    assert_eq!(reply.json, throttled_body(&reply).1);

    // Through the trusted proxy, the client is the right-most address that is not a trusted
    // proxy; what the client put further left changes nothing.
    for forwarded in ["6.6.6.6, 198.51.100.1", "7.7.7.7, 198.51.100.1, 10.0.0.5"] {
        let reply = ping_from(&server, "127.0.0.1", Some(forwarded)).await;
        assert_eq!(
            (reply.status.as_u16(), &reply.json),
            (200, &ok),
            "{reply:?}"
        );
    }
    let reply = ping_from(&server, "127.0.0.1", Some("8.8.8.8, 198.51.100.1")).await;
    reply.assert_status(429, None);
    // Another client behind the proxy has its own budget …
    let reply = ping_from(&server, "127.0.0.1", Some("198.51.100.2")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // … and the untrusted peer reported by the proxy is the same client as before: throttled.
    ping_from(&server, "127.0.0.1", Some("127.0.0.2"))
        .await
        .assert_status(429, None);
}

#[tokio::test]
async fn trusted_proxies_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (env, expected) in [
        (
            vec![("RESTGUARD_SERVER__TRUSTED_PROXIES", "10.0.0.0/33")],
            "10.0.0.0/33",
        ),
        (
            vec![(
                "RESTGUARD_SERVER__TRUSTED_PROXIES",
                "[\"10.0.0.0/8\", \"proxy.local\"]",
            )],
            "proxy.local",
        ),
        (
            vec![
                ("RESTGUARD_SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
                ("RESTGUARD_THROTTLE__NUM_PROXIES", "1"),
            ],
            "throttle.num_proxies",
        ),
    ] {
        let out = cli_in(dir.path(), &["serve", "--bind", "127.0.0.1:0"], None, &env);
        let message = out.assert_one_line_error();
        // Keys from the environment are named as the variable spells them.
        assert!(
            message.to_lowercase().contains("server.trusted_proxies"),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
    }
}
