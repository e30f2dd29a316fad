//! Session authentication and Django's CSRF rules against the real binary (CONTRACT §4).

mod common;
mod session_support;

use std::time::Duration;

use common::{bad_login, me_body, not_authenticated, token, Body, Server, CACHE_WAIT};
use reqwest::Method;
use serde_json::json;
use session_support::{
    cookie_value, csrf, csrf_failed, login, send, server_with, session_rows, set_cookies, Browser,
};

const PW: &str = "correct horse 1";

/// Cookies or headers of one request.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

fn alice(server: &Server) {
    server.create_user("alice", PW);
}

#[tokio::test]
async fn csrf_endpoint_gives_a_masked_token_for_the_cookie() {
    let server = server_with(&[]);
    let reply = send(&server, Method::GET, "/api/csrf/", &[], &[], Body::None).await;
    assert_eq!(reply.status, 200);
    reply.assert_json_content_type();
    let token = reply.json["csrfToken"].as_str().expect("token");
    assert_eq!(token.len(), 64);
    let cookie = set_cookies(&reply.headers, "csrftoken")[0];
    assert!(cookie.contains("Max-Age=31449600"), "{cookie}");
    assert!(cookie.contains("Path=/") && cookie.contains("SameSite=Lax"));
    assert!(!cookie.contains("HttpOnly"), "JS must read it: {cookie}");
    assert!(
        !cookie.contains("Secure"),
        "configured for plain HTTP: {cookie}"
    );
    let secret = cookie_value(&reply.headers, "csrftoken").expect("secret");
    let parsed = restguard::csrf::CsrfSecret::from_secret(&secret).expect("32 chars");
    assert!(parsed.matches(token));
    // The same cookie comes back: the secret is kept, the mask is fresh.
    let again = send(
        &server,
        Method::GET,
        "/api/csrf/",
        &[("csrftoken", &secret)],
        &[],
        Body::None,
    )
    .await;
    let token2 = again.json["csrfToken"].as_str().expect("token");
    assert_ne!(token, token2);
    assert!(parsed.matches(token2));
}

#[tokio::test]
async fn cookies_are_secure_by_default() {
    let server = Server::start();
    alice(&server);
    let (secret, token) = csrf(&server).await;
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &secret)],
        &[("X-CSRFToken", &token)],
        Body::Json(json!({"username": "alice", "password": PW})),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let session = set_cookies(&reply.headers, "sessionid")[0];
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Secure",
        "Max-Age=2592000",
    ] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    assert!(set_cookies(&reply.headers, "csrftoken")[0].contains("Secure"));
}

#[tokio::test]
async fn login_me_logout_and_the_old_cookie_is_dead() {
    let server = server_with(&[]);
    alice(&server);
    let id = common::user_id(&server, "alice");
    let (secret, token) = csrf(&server).await;
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &secret)],
        &[("X-CSRFToken", &token)],
        Body::Json(json!({"username": "alice", "password": PW})),
    )
    .await;
    reply.assert(200, None, &json!({"id": id, "username": "alice"}));
    let sessionid = cookie_value(&reply.headers, "sessionid").expect("session");
    assert_eq!(sessionid.len(), 43, "256 random bits");
    let rotated = cookie_value(&reply.headers, "csrftoken").expect("csrf rotated on login");
    assert_ne!(rotated, secret);
    let browser = Browser {
        sessionid: sessionid.clone(),
        csrftoken: rotated,
    };
    browser
        .me(&server)
        .await
        .assert(200, None, &me_body(id, "alice", "session"));
    // The store holds a digest, never the id.
    let stored = server.sql("SELECT hex(digest) FROM sessions;");
    assert_eq!(stored.len(), 64);
    assert!(!stored.contains(&sessionid));
    assert!(server.sql("SELECT last_login FROM users;").len() > 1);

    let out = browser
        .send(&server, Method::POST, "/api/session/logout/", Body::None)
        .await;
    out.assert_no_content();
    let cleared = set_cookies(&out.headers, "sessionid")[0];
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(session_rows(&server), 0);
    // Reusing the id after logout: anonymous (the default chain's first scheme is Token).
    browser
        .me(&server)
        .await
        .assert(401, Some("Token"), &not_authenticated());
}

#[tokio::test]
async fn every_csrf_failure_reason_on_login_and_nothing_is_written() {
    let server = server_with(&[(
        "RESTGUARD_CSRF__TRUSTED_ORIGINS",
        "[\"https://app.example.com\"]",
    )]);
    alice(&server);
    let (secret, token) = csrf(&server).await;
    let creds = || Body::Json(json!({"username": "alice", "password": PW}));
    let other = restguard::csrf::CsrfSecret::generate().mask();
    let cases: Vec<(Pairs, Pairs, &str)> = vec![
        (
            vec![],
            vec![("X-CSRFToken", &token)],
            "CSRF cookie not set.",
        ),
        (vec![("csrftoken", &secret)], vec![], "CSRF token missing."),
        (
            vec![("csrftoken", &secret)],
            vec![("X-CSRFToken", &other)],
            "CSRF token from the 'X-Csrftoken' HTTP header incorrect.",
        ),
        (
            vec![("csrftoken", &secret)],
            vec![("X-CSRFToken", "abc")],
            "CSRF token from the 'X-Csrftoken' HTTP header has incorrect length.",
        ),
        (
            vec![("csrftoken", "short")],
            vec![("X-CSRFToken", &token)],
            "CSRF cookie has incorrect length.",
        ),
        (
            vec![("csrftoken", &secret)],
            vec![("X-CSRFToken", &token), ("Origin", "https://evil.example")],
            "Origin checking failed - https://evil.example does not match any trusted origins.",
        ),
    ];
    for (cookies, headers, reason) in cases {
        let reply = send(
            &server,
            Method::POST,
            "/api/session/login/",
            &cookies,
            &headers,
            creds(),
        )
        .await;
        reply.assert(403, None, &csrf_failed(reason));
        assert!(set_cookies(&reply.headers, "sessionid").is_empty());
    }
    // The form field, when the body is a form.
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &secret)],
        &[],
        Body::Form(vec![
            ("username", "alice".into()),
            ("password", PW.into()),
            ("csrfmiddlewaretoken", other.clone()),
        ]),
    )
    .await;
    reply.assert(403, None, &csrf_failed("CSRF token from POST incorrect."));
    assert_eq!(session_rows(&server), 0);
    assert_eq!(server.sql("SELECT last_login IS NULL FROM users;"), "1");

    // A trusted origin, the server's own origin, and the form field all pass.
    for headers in [
        vec![
            ("X-CSRFToken", token.as_str()),
            ("Origin", "https://app.example.com"),
        ],
        vec![("X-CSRFToken", token.as_str())],
    ] {
        let reply = send(
            &server,
            Method::POST,
            "/api/session/login/",
            &[("csrftoken", &secret)],
            &headers,
            creds(),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let own_origin = server.base.clone();
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &secret)],
        &[("Origin", &own_origin)],
        Body::Form(vec![
            ("username", "alice".into()),
            ("password", PW.into()),
            ("csrfmiddlewaretoken", token.clone()),
        ]),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn https_deployments_check_the_referer() {
    let server = server_with(&[("RESTGUARD_SERVER__PUBLIC_URL", "https://id.example.com")]);
    alice(&server);
    let (secret, token) = csrf(&server).await;
    let attempt = |headers: Vec<(&'static str, String)>| {
        let secret = secret.clone();
        let token = token.clone();
        let server = &server;
        async move {
            let mut all: Vec<(&str, &str)> = vec![("X-CSRFToken", token.as_str())];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            send(
                server,
                Method::POST,
                "/api/session/login/",
                &[("csrftoken", &secret)],
                &all,
                Body::Json(json!({"username": "alice", "password": PW})),
            )
            .await
        }
    };
    attempt(vec![]).await.assert(
        403,
        None,
        &csrf_failed("Referer checking failed - no Referer."),
    );
    attempt(vec![("Referer", "http://id.example.com/x".into())])
        .await
        .assert(
            403,
            None,
            &csrf_failed("Referer checking failed - Referer is insecure while host is secure."),
        );
    let reply = attempt(vec![("Origin", "https://id.example.com".into())]).await;
    assert_eq!(reply.status, 200, "the public origin is trusted: {reply:?}");
}

#[tokio::test]
async fn session_authenticated_unsafe_requests_need_csrf() {
    let server = server_with(&[]);
    alice(&server);
    let browser = login(&server, "alice", PW).await;
    let cookies = browser.cookies();
    // No token: 403, nothing created.
    let reply = send(
        &server,
        Method::POST,
        "/api/tokens/",
        &cookies,
        &[],
        Body::Json(json!({"name": "x"})),
    )
    .await;
    reply.assert(403, None, &csrf_failed("CSRF token missing."));
    // A forged cross-origin POST (even one that somehow carries a valid token).
    let forged = send(
        &server,
        Method::POST,
        "/api/tokens/",
        &cookies,
        &[
            ("Origin", "https://evil.example"),
            ("X-CSRFToken", &browser.csrftoken),
        ],
        Body::Json(json!({"name": "x"})),
    )
    .await;
    forged.assert(
        403,
        None,
        &csrf_failed(
            "Origin checking failed - https://evil.example does not match any trusted origins.",
        ),
    );
    let list = browser
        .send(&server, Method::GET, "/api/tokens/", Body::None)
        .await;
    assert_eq!(list.json, json!([]), "nothing was created");
    // With the header: created.
    let created = browser
        .send(
            &server,
            Method::POST,
            "/api/tokens/",
            Body::Json(json!({"name": "x"})),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let key = created.json["token"].as_str().expect("key").to_owned();
    // DELETE needs it too.
    let id = created.json["id"].as_i64().expect("id");
    let path = format!("/api/tokens/{id}/");
    send(&server, Method::DELETE, &path, &cookies, &[], Body::None)
        .await
        .assert(403, None, &csrf_failed("CSRF token missing."));
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 200);
    // Token-authenticated requests never need CSRF, even with a session cookie present.
    let with_token = send(
        &server,
        Method::POST,
        "/api/tokens/",
        &cookies,
        &[("Authorization", &token(&key))],
        Body::Json(json!({})),
    )
    .await;
    assert_eq!(with_token.status, 201, "{with_token:?}");
    // Nor does /api-token-auth/.
    let obtain = send(
        &server,
        Method::POST,
        "/api-token-auth/",
        &cookies,
        &[],
        Body::Json(json!({"username": "alice", "password": PW})),
    )
    .await;
    assert_eq!(obtain.status, 200, "{obtain:?}");
}

#[tokio::test]
async fn session_first_route_answers_403_without_challenge() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("restguard.toml");
    std::fs::write(
        &config,
        "[[route]]\npath = \"/api/me/\"\nauthenticators = [\"session\", \"token\"]\n",
    )
    .expect("config");
    let config = config.to_string_lossy().into_owned();
    let server = server_with(&[("RESTGUARD_CONFIG", &config)]);
    alice(&server);
    server
        .get("/api/me/", None)
        .await
        .assert(403, None, &not_authenticated());
    let browser = login(&server, "alice", PW).await;
    assert_eq!(browser.me(&server).await.status, 200);
}

#[tokio::test]
async fn bad_credentials_and_bad_fields_create_no_session() {
    let server = server_with(&[]);
    alice(&server);
    let (secret, token) = csrf(&server).await;
    let post = |body: serde_json::Value| {
        let (secret, token) = (secret.clone(), token.clone());
        let server = &server;
        async move {
            send(
                server,
                Method::POST,
                "/api/session/login/",
                &[("csrftoken", &secret)],
                &[("X-CSRFToken", &token)],
                Body::Json(body),
            )
            .await
        }
    };
    post(json!({"username": "alice", "password": "wrong"}))
        .await
        .assert(400, None, &bad_login());
    post(json!({"username": "nobody", "password": PW}))
        .await
        .assert(400, None, &bad_login());
    post(json!({"username": "a".repeat(151), "password": PW}))
        .await
        .assert(
            400,
            None,
            &json!({"username": ["Ensure this field has no more than 150 characters."]}),
        );
    post(json!({"username": "alice"})).await.assert(
        400,
        None,
        &json!({"password": ["This field is required."]}),
    );
    let raw = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &secret)],
        &[("X-CSRFToken", &token)],
        Body::Raw("application/json", b"{\"username\":".to_vec()),
    )
    .await;
    assert_eq!(raw.status, 400);
    assert_eq!(raw.json["code"], "parse_error");
    assert_eq!(session_rows(&server), 0);
}

#[tokio::test]
async fn login_throttle_applies_to_session_login() {
    let server = server_with(&[("RESTGUARD_THROTTLE__LOGIN_USER", "2/h")]);
    alice(&server);
    for _ in 0..2 {
        let _ = send_login(&server, "alice", "wrong").await;
    }
    let reply = send_login(&server, "alice", PW).await;
    assert_eq!(reply.status, 429, "{reply:?}");
    assert!(reply.headers.get("retry-after").is_some());
    assert_eq!(session_rows(&server), 0);
}

async fn send_login(server: &Server, username: &str, password: &str) -> common::Reply {
    let (secret, token) = csrf(server).await;
    send(
        server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &secret)],
        &[("X-CSRFToken", &token)],
        Body::Json(json!({"username": username, "password": password})),
    )
    .await
}

#[tokio::test]
async fn fixation_a_cookie_from_before_login_does_not_survive() {
    let server = server_with(&[]);
    alice(&server);
    server.create_user("mallory", PW);
    // Mallory plants her own valid session in Alice's browser, then Alice logs in.
    let planted = login(&server, "mallory", PW).await;
    let (secret, token) = csrf(&server).await;
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("sessionid", &planted.sessionid), ("csrftoken", &secret)],
        &[("X-CSRFToken", &token)],
        Body::Json(json!({"username": "alice", "password": PW})),
    )
    .await;
    assert_eq!(reply.status, 200);
    let new_id = cookie_value(&reply.headers, "sessionid").expect("new id");
    assert_ne!(new_id, planted.sessionid);
    assert_eq!(
        planted.me(&server).await.status,
        401,
        "the planted session is gone"
    );
    // An unknown planted id is never adopted either.
    let made_up = "A".repeat(43);
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("sessionid", &made_up), ("csrftoken", &secret)],
        &[("X-CSRFToken", &token)],
        Body::Json(json!({"username": "alice", "password": PW})),
    )
    .await;
    let id2 = cookie_value(&reply.headers, "sessionid").expect("new id");
    assert_ne!(id2, made_up);
    assert_ne!(id2, new_id, "a new id on every login");
}

#[tokio::test]
async fn a_stale_csrf_token_is_refused_after_login_rotated_the_secret() {
    let server = server_with(&[]);
    alice(&server);
    let (old_secret, old_token) = csrf(&server).await;
    let browser = login(&server, "alice", PW).await;
    // The browser now holds the rotated cookie; a page still using the old token fails.
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &browser.csrftoken)],
        &[("X-CSRFToken", &old_token)],
        Body::Json(json!({"username": "alice", "password": PW})),
    )
    .await;
    reply.assert(
        403,
        None,
        &csrf_failed("CSRF token from the 'X-Csrftoken' HTTP header incorrect."),
    );
    assert_ne!(old_secret, browser.csrftoken);
    assert_eq!(session_rows(&server), 1);
}

#[tokio::test]
async fn idle_sessions_end_and_activity_keeps_them_alive() {
    let server = server_with(&[("RESTGUARD_SESSION__IDLE_TIMEOUT", "2")]);
    alice(&server);
    let browser = login(&server, "alice", PW).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(browser.me(&server).await.status, 200, "active: still valid");
    }
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    browser
        .me(&server)
        .await
        .assert(401, Some("Token"), &not_authenticated());
}

#[tokio::test]
async fn sessions_end_at_max_age_however_active() {
    let server = server_with(&[("RESTGUARD_SESSION__MAX_AGE", "2")]);
    alice(&server);
    let browser = login(&server, "alice", PW).await;
    assert_eq!(browser.me(&server).await.status, 200);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = browser.me(&server).await;
    }
    assert_eq!(browser.me(&server).await.status, 401);
}

#[tokio::test]
async fn tampered_cookies_are_anonymous_never_errors() {
    let server = server_with(&[]);
    alice(&server);
    let browser = login(&server, "alice", PW).await;
    let mut flipped = browser.sessionid.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let long = "x".repeat(5000);
    for value in [
        flipped.as_str(),
        &browser.sessionid[1..],
        long.as_str(),
        "\"quoted\"",
        "",
        "abc%00def",
    ] {
        let reply = send(
            &server,
            Method::GET,
            "/api/me/",
            &[("sessionid", value)],
            &[],
            Body::None,
        )
        .await;
        reply.assert(401, Some("Token"), &not_authenticated());
    }
    // Non-ASCII bytes in the Cookie header.
    let value = reqwest::header::HeaderValue::from_bytes(b"sessionid=\xff\xfe; csrftoken=\xe9")
        .expect("bytes");
    let reply = server
        .client
        .get(server.url("/api/me/"))
        .header(reqwest::header::COOKIE, value)
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), 401);
    // The real cookie still works, and a tampered CSRF cookie is a CSRF failure, not a 500.
    assert_eq!(browser.me(&server).await.status, 200);
    let reply = send(
        &server,
        Method::POST,
        "/api/tokens/",
        &[("sessionid", &browser.sessionid), ("csrftoken", "!!")],
        &[("X-CSRFToken", &browser.csrftoken)],
        Body::Json(json!({})),
    )
    .await;
    reply.assert(403, None, &csrf_failed("CSRF cookie has incorrect length."));
}

#[tokio::test]
async fn cli_password_change_deactivation_and_deletion_end_sessions() {
    let server = server_with(&[]);
    alice(&server);
    server.create_user("bob", PW);
    server.create_user("carol", PW);
    let a = login(&server, "alice", PW).await;
    let b = login(&server, "bob", PW).await;
    let c = login(&server, "carol", PW).await;
    server
        .cli(
            &["user", "set-password", "alice", "--password-stdin"],
            Some(b"new password 2\n"),
        )
        .assert_ok();
    server.cli(&["user", "deactivate", "bob"], None).assert_ok();
    server.cli(&["user", "delete", "carol"], None).assert_ok();
    tokio::time::sleep(CACHE_WAIT).await;
    for browser in [&a, &b, &c] {
        assert_eq!(browser.me(&server).await.status, 401, "{browser:?}");
    }
    assert_eq!(
        server.sql("SELECT count(*) FROM sessions WHERE user_id NOT IN (SELECT id FROM users);"),
        "0"
    );
    // A new login after the change works at once.
    let again = login(&server, "alice", "new password 2").await;
    assert_eq!(again.me(&server).await.status, 200);
}

#[tokio::test]
async fn flush_expired_deletes_ended_sessions() {
    let server = server_with(&[("RESTGUARD_SESSION__MAX_AGE", "1")]);
    alice(&server);
    login(&server, "alice", PW).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let out = server.cli(&["flush-expired"], None);
    out.assert_ok();
    assert!(out.stderr.contains("1 expired sessions"), "{out:?}");
    assert_eq!(session_rows(&server), 0);
}

#[tokio::test]
async fn a_django_minted_csrf_token_is_accepted() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../../restguard/tests/fixtures/csrf_django.json"
    ))
    .expect("fixture");
    let pair = &fixture["pairs"][0];
    let (secret, token) = (
        pair["secret"].as_str().expect("secret"),
        pair["token"].as_str().expect("token"),
    );
    let server = server_with(&[]);
    alice(&server);
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", secret)],
        &[("X-CSRFToken", token)],
        Body::Json(json!({"username": "alice", "password": PW})),
    )
    .await;
    assert_eq!(reply.status, 200, "Django's masked token passes: {reply:?}");
    // And a token minted here validates against Django's secret format (32 chars of
    // [a-zA-Z0-9], the cookie Django ≥ 4.1 sets).
    let (ours, _) = csrf(&server).await;
    assert_eq!(ours.len(), 32);
    assert!(ours.bytes().all(|b| b.is_ascii_alphanumeric()));
}
