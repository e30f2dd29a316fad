//! End to end in a real browser: headless Chromium driven over WebDriver (chromedriver +
//! `fantoccini`) against the real binary. Sign in, create a token on `/account/` (through the
//! page's JavaScript and the session-authenticated JSON API), use it from an HTTP client,
//! rotate it, change the password, sign out. Screenshots go to `target/test-output/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test is skipped, unless
//! `RESTGUARD_REQUIRE_SERVICES=1`, which makes that a failure.

mod common;
mod session_support;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{me_body, token, Server};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use session_support::{login, server_with, Browser};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PW: &str = "correct horse 1";
const NEW_PW: &str = "a brand new pw 7";

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Whether the browser and its driver are installed (a skip, or a failure when required).
fn have_browser() -> bool {
    let found = [CHROMIUM, CHROMEDRIVER].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            std::env::var("RESTGUARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "chromium and chromium-driver are required (RESTGUARD_REQUIRE_SERVICES=1) but are not installed"
        );
        eprintln!("SKIPPED: chromium / chromedriver are not installed (apt-get install chromium chromium-driver)");
    }
    found
}

/// `target/test-output/`.
fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("create the test output folder");
    dir
}

/// A running chromedriver, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn start_browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1200,1500",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Waits until `script` (a function body returning a truthy value) holds.
async fn wait_until(client: &Client, what: &str, script: &str) -> Result<Value, Failure> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = client.execute(script, vec![]).await?;
        let done = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if done {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(client: &Client, css: &str, text: &str) -> Result<(), Failure> {
    let field = client.find(Locator::Css(css)).await?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}

async fn click(client: &Client, css: &str) -> Result<(), Failure> {
    client.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

async fn screenshot(client: &Client, name: &str) -> Result<PathBuf, Failure> {
    let path = output_dir().join(name);
    std::fs::write(&path, client.screenshot().await?)?;
    eprintln!("screenshot: {}", path.display());
    Ok(path)
}

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
