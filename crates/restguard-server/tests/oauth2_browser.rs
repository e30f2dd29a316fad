//! The OAuth2 authorize flow in a real browser (headless Chromium over WebDriver, the setup
//! of `tests/browser.rs`): sign in, consent, land on a loopback redirect URI (any port,
//! RFC 8252) with a code, which the test then exchanges. Screenshots go to
//! `target/test-output/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test is skipped, unless
//! `RESTGUARD_REQUIRE_SERVICES=1`, which makes that a failure.

mod browser_support;
mod common;
mod oauth2_support;
mod session_support;

use browser_support::*;
use common::Server;
use fantoccini::{Client, Locator};
use oauth2_support::{authorize_query, encode, token_request, web_app, VERIFIER};
use serde_json::{json, Value};
use session_support::server_with;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PW: &str = "correct horse 1";

/// A loopback "client" answering every request with a small page; returns the request
/// targets it saw.
async fn loopback_client() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(target) = head.split_whitespace().nth(1) {
                let _ = tx.send(target.to_owned());
            }
            let body = "<!doctype html><title>client</title><p id=done>received</p>";
            let _ = stream
                .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                .await;
        }
    });
    (port, rx)
}

async fn flow(server: &Server, client: &Client) -> Result<(), Failure> {
    let app = web_app(server, &[]);
    let (port, mut seen) = loopback_client().await;
    let redirect = format!("http://127.0.0.1:{port}/cb");
    let mut pairs = authorize_query(&app.id, "openid profile read");
    for (k, v) in pairs.iter_mut() {
        if k == "redirect_uri" {
            *v = redirect.clone();
        }
    }
    client
        .goto(&server.url(&format!("/o/authorize/?{}", encode(&pairs))))
        .await?;
    let url = client.current_url().await?;
    assert_eq!(url.path(), "/api-auth/login/");
    fill(client, "#id_username", "alice").await?;
    fill(client, "#id_password", PW).await?;
    click(client, "#sign-in").await?;
    wait_until(
        client,
        "the consent page",
        "return document.getElementById('allow');",
    )
    .await?;
    let scopes = client.find(Locator::Id("scopes")).await?.text().await?;
    assert!(scopes.contains("profile"), "{scopes}");
    screenshot(client, "oauth2-consent.png").await?;
    click(client, "#allow").await?;
    wait_until(
        client,
        "the client's redirect URI",
        "return document.getElementById('done');",
    )
    .await?;
    let landed = client.current_url().await?;
    assert_eq!(landed.port(), Some(port));
    assert_eq!(landed.path(), "/cb");
    let code = landed
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or("no code in the redirect")?;
    let state = landed
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned());
    assert_eq!(state.as_deref(), Some("xyz"));
    let target = seen.recv().await.ok_or("the client saw no request")?;
    assert!(target.starts_with("/cb?code="), "{target}");
    screenshot(client, "oauth2-redirect.png").await?;
    let tokens = token_request(
        server,
        Some(&app.basic()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(tokens.status, 200, "{tokens:?}");
    let access = tokens.json["access_token"].as_str().ok_or("access token")?;
    let me = server
        .get("/api/me/", Some(&format!("Bearer {access}")))
        .await;
    assert_eq!(me.json["auth"]["scheme"], json!("oauth2"));
    let _: Value = me.json;
    // The account page lists the application; revoking access ends its tokens.
    client.goto(&server.url("/account/")).await?;
    let apps = client
        .find(Locator::Id("authorized-apps"))
        .await?
        .text()
        .await?;
    assert!(apps.contains("Web App"), "{apps}");
    click(client, "#authorized-apps button").await?;
    wait_until(
        client,
        "the notice",
        "return document.querySelector('.notice');",
    )
    .await?;
    screenshot(client, "oauth2-revoked.png").await?;
    tokio::time::sleep(common::CACHE_WAIT).await;
    let me = server
        .get("/api/me/", Some(&format!("Bearer {access}")))
        .await;
    assert_eq!(me.status, 401, "{me:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_sign_in_consent_and_loopback_redirect() {
    if !have_browser() {
        return;
    }
    let server = server_with(&[]);
    server.create_user("alice", PW);
    let driver = start_driver();
    let profile = tempfile::Builder::new()
        .prefix("restguard-chromium-")
        .tempdir()
        .expect("profile dir");
    let client = start_browser(&driver, profile.path()).await;
    let result = flow(&server, &client).await;
    if result.is_err() {
        let _ = screenshot(&client, "oauth2-failure.png").await;
    }
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = result {
        panic!(
            "browser flow failed: {e}\nserver stderr:\n{}",
            server.stderr()
        );
    }
}
