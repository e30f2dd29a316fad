//! No credential is cached (CONTRACT §10): every response that carries a credential has
//! `Cache-Control: no-store` — the API ones also `Pragma: no-cache` for HTTP/1.0 caches, as
//! DOT's token endpoint does — so no browser or proxy cache keeps a token, key, session
//! cookie or secret.

mod common;
mod session_support;

use common::{token, Body, Reply};
use reqwest::Method;
use serde_json::json;
use session_support::{cookie_value, csrf, login, send, server_with};

const PW: &str = "pw-alice-no-store-1";

/// The response carries a credential under `field` and may not be stored.
fn assert_no_store(reply: &Reply, status: u16, field: &str, what: &str) {
    assert_eq!(reply.status.as_u16(), status, "{what}: {reply:#?}");
    assert!(
        reply.json[field].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: no {field} in {reply:#?}"
    );
    assert_eq!(
        reply.headers.get("cache-control").map(|v| v.to_str().ok()),
        Some(Some("no-store")),
        "{what}: Cache-Control of {reply:#?}"
    );
    assert_eq!(
        reply.headers.get("pragma").map(|v| v.to_str().ok()),
        Some(Some("no-cache")),
        "{what}: Pragma of {reply:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_response_is_no_store() {
    let server = server_with(&[]);
    server.create_user_with("alice", PW, &["--staff"]);
    let credentials = || Body::Json(json!({"username": "alice", "password": PW}));

    // DRF's obtain_auth_token.
    let reply = server
        .request(Method::POST, "/api-token-auth/", None, credentials())
        .await;
    assert_no_store(&reply, 200, "token", "POST /api-token-auth/");
    let key = reply.json["token"].as_str().expect("token").to_owned();
    let auth = token(&key);

    // knox-style token management.
    let reply = server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Json(json!({"name": "laptop"})),
        )
        .await;
    assert_no_store(&reply, 201, "token", "POST /api/tokens/");
    let id = reply.json["id"].as_i64().expect("id");
    let reply = server
        .request(
            Method::POST,
            &format!("/api/tokens/{id}/rotate/"),
            Some(&auth),
            Body::None,
        )
        .await;
    assert_no_store(&reply, 201, "token", "POST /api/tokens/<id>/rotate/");

    // Simple JWT.
    let reply = server
        .request(Method::POST, "/api/token/", None, credentials())
        .await;
    assert_no_store(&reply, 200, "access", "POST /api/token/");
    let refresh = reply.json["refresh"].as_str().expect("refresh").to_owned();
    let reply = server
        .request(
            Method::POST,
            "/api/token/refresh/",
            None,
            Body::Json(json!({"refresh": refresh})),
        )
        .await;
    assert_no_store(&reply, 200, "access", "POST /api/token/refresh/");
    let reply = server
        .request(Method::POST, "/api/token/sliding/", None, credentials())
        .await;
    assert_no_store(&reply, 200, "token", "POST /api/token/sliding/");
    let sliding = reply.json["token"].as_str().expect("sliding").to_owned();
    let reply = server
        .request(
            Method::POST,
            "/api/token/sliding/refresh/",
            None,
            Body::Json(json!({"token": sliding})),
        )
        .await;
    assert_no_store(&reply, 200, "token", "POST /api/token/sliding/refresh/");

    // The OAuth2 token endpoint (RFC 6749 §5.1).
    let out = server.cli(
        &[
            "app",
            "create",
            "--name",
            "robot",
            "--client-type",
            "confidential",
            "--grant",
            "client-credentials",
        ],
        None,
    );
    out.assert_ok();
    let app: serde_json::Value = serde_json::from_str(&out.stdout).expect("app JSON");
    let reply = server
        .request(
            Method::POST,
            "/o/token/",
            Some(&common::basic(
                app["client_id"].as_str().expect("id"),
                app["client_secret"].as_str().expect("secret"),
            )),
            Body::Form(vec![("grant_type", "client_credentials".into())]),
        )
        .await;
    assert_no_store(&reply, 200, "access_token", "POST /o/token/");

    // A session login answers with the session cookie.
    let (secret, masked) = csrf(&server).await;
    let reply = send(
        &server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &secret)],
        &[("X-CSRFToken", &masked)],
        credentials(),
    )
    .await;
    assert_no_store(&reply, 200, "username", "POST /api/session/login/");
    assert!(
        cookie_value(&reply.headers, "sessionid").is_some(),
        "{reply:#?}"
    );

    // The pages that show a new key or client secret once.
    let browser = login(&server, "alice", PW).await;
    for (path, status, form) in [
        ("/account/tokens/", 200, vec![("name", "desk".to_owned())]),
        (
            "/admin/applications/",
            201,
            vec![
                ("name", "portal".to_owned()),
                ("client_type", "confidential".to_owned()),
                ("grant_client_credentials", "on".to_owned()),
            ],
        ),
    ] {
        let mut form = form;
        form.push(("csrfmiddlewaretoken", browser.csrftoken.clone()));
        let fields: Vec<(&'static str, String)> = form;
        let reply = browser
            .send(&server, Method::POST, path, Body::Form(fields))
            .await;
        assert_eq!(reply.status, status, "{path}: {reply:#?}");
        assert!(
            reply.text.contains("rg_") || reply.text.contains("secret"),
            "{path} shows the new credential: {}",
            reply.text
        );
        assert_eq!(
            reply.headers.get("cache-control").map(|v| v.to_str().ok()),
            Some(Some("no-store")),
            "{path}: {reply:#?}"
        );
    }
}
