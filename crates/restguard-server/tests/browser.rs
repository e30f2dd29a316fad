//! End to end in a real browser: headless Chromium driven over WebDriver (chromedriver +
//! `fantoccini`) against the real binary. Sign in, create a token on `/account/` (through the
//! page's JavaScript and the session-authenticated JSON API), use it from an HTTP client,
//! rotate it, change the password, sign out. Screenshots go to `target/test-output/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test is skipped, unless
//! `RESTGUARD_REQUIRE_SERVICES=1`, which makes that a failure.

mod browser_support;
mod common;
mod session_support;

use browser_support::*;
use common::{me_body, token, Server};
use fantoccini::{Client, Locator};
use session_support::{login, server_with, Browser};

const PW: &str = "correct horse 1";
const NEW_PW: &str = "a brand new pw 7";

async fn status_with_token(server: &Server, key: &str) -> u16 {
    server
        .get("/api/me/", Some(&token(key)))
        .await
        .status
        .as_u16()
}

async fn flow(server: &Server, client: &Client) -> Result<(), Failure> {
    let alice_id = common::user_id(server, "alice");
    // 1. /account/ sends an anonymous browser to the sign-in form, which comes back.
    client.goto(&server.url("/account/")).await?;
    let url = client.current_url().await?;
    assert_eq!(url.path(), "/api-auth/login/");
    assert_eq!(url.query(), Some("next=%2Faccount%2F"));
    screenshot(client, "login.png").await?;
    fill(client, "#id_username", "alice").await?;
    fill(client, "#id_password", PW).await?;
    click(client, "#sign-in").await?;
    wait_until(
        client,
        "the account page",
        "return location.pathname === '/account/' && document.getElementById('username');",
    )
    .await?;
    assert_eq!(
        client.find(Locator::Id("username")).await?.text().await?,
        "alice"
    );
    wait_until(
        client,
        "the page script",
        "return document.body.getAttribute('data-js') === 'on';",
    )
    .await?;

    // 2. Create a token: the page's script POSTs /api/tokens/ with X-CSRFToken.
    fill(client, "#id_token_name", "browser test").await?;
    click(client, "#create-token").await?;
    let key = wait_until(
        client,
        "the new key",
        "return document.getElementById('new-key').textContent;",
    )
    .await?;
    let key = key.as_str().ok_or("key is text")?.to_owned();
    assert!(key.starts_with("rg_"), "{key}");
    wait_until(
        client,
        "the token row",
        "return document.querySelectorAll('#tokens tr[data-token-id]').length === 1;",
    )
    .await?;

    // 3. The key works from an independent HTTP client.
    let me = server.get("/api/me/", Some(&token(&key))).await;
    me.assert(200, None, &me_body(alice_id, "alice", "token"));

    // 4. Rotate: a new key on the page, the old one refused at once.
    click(client, "#tokens form[data-kind=rotate] button").await?;
    let script = format!(
        "var k = document.getElementById('new-key').textContent; return k && k !== '{key}' ? k : null;"
    );
    let rotated = wait_until(client, "the rotated key", &script).await?;
    let rotated = rotated.as_str().ok_or("key is text")?.to_owned();
    assert_eq!(status_with_token(server, &key).await, 401, "old key dead");
    assert_eq!(status_with_token(server, &rotated).await, 200);
    // Reload so the screenshot shows the page as served (the key box is gone by then).
    client.goto(&server.url("/account/")).await?;
    let page = client.source().await?;
    assert!(!page.contains(&rotated), "a key is never shown twice");
    let shot = screenshot(client, "account.png").await?;
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "a real screenshot"
    );

    // 5. Change the password: another session and the tokens are refused; this browser stays.
    let other = login(server, "alice", PW).await;
    assert_eq!(other.me(server).await.status, 200);
    fill(client, "#id_current_password", PW).await?;
    fill(client, "#id_new_password1", NEW_PW).await?;
    fill(client, "#id_new_password2", NEW_PW).await?;
    click(client, "#change-password").await?;
    wait_until(client, "the confirmation", "var m = document.querySelector('.notice'); return m && m.textContent.indexOf('Password changed') >= 0;").await?;
    assert_eq!(other.me(server).await.status, 401, "other session ended");
    assert_eq!(
        status_with_token(server, &rotated).await,
        401,
        "tokens revoked"
    );
    screenshot(client, "account-password-changed.png").await?;
    client.goto(&server.url("/account/")).await?;
    assert_eq!(
        client.find(Locator::Id("username")).await?.text().await?,
        "alice",
        "this browser is still signed in"
    );

    // 6. Sign out: the cookie the browser had no longer works anywhere.
    let sessionid = client
        .get_named_cookie("sessionid")
        .await?
        .value()
        .to_owned();
    let csrftoken = client
        .get_named_cookie("csrftoken")
        .await?
        .value()
        .to_owned();
    let before = Browser {
        sessionid: sessionid.clone(),
        csrftoken,
    };
    assert_eq!(before.me(server).await.status, 200);
    click(client, "#sign-out").await?;
    wait_until(
        client,
        "the signed-out page",
        "var h = document.querySelector('h1'); return h && h.textContent === 'Signed out';",
    )
    .await?;
    assert_eq!(
        before.me(server).await.status,
        401,
        "cookie no longer works"
    );
    client.goto(&server.url("/account/")).await?;
    assert_eq!(client.current_url().await?.path(), "/api-auth/login/");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_create_use_rotate_change_password_sign_out() {
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
        let _ = screenshot(&client, "failure.png").await;
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
