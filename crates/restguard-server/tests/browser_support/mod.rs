//! Headless Chromium over WebDriver (chromedriver + `fantoccini`), shared by the browser
//! tests: finding the tools, starting the driver and a fresh-profile browser, and small
//! page helpers.
#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Whether the browser and its driver are installed (a skip, or a failure when required).
pub fn have_browser() -> bool {
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
pub fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("create the test output folder");
    dir
}

/// A running chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_driver() -> Driver {
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

pub async fn start_browser(driver: &Driver, profile: &std::path::Path) -> Client {
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
pub async fn wait_until(client: &Client, what: &str, script: &str) -> Result<Value, Failure> {
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

pub async fn fill(client: &Client, css: &str, text: &str) -> Result<(), Failure> {
    let field = client.find(Locator::Css(css)).await?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}

pub async fn click(client: &Client, css: &str) -> Result<(), Failure> {
    client.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

pub async fn screenshot(client: &Client, name: &str) -> Result<PathBuf, Failure> {
    let path = output_dir().join(name);
    std::fs::write(&path, client.screenshot().await?)?;
    eprintln!("screenshot: {}", path.display());
    Ok(path)
}
