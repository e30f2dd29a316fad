//! The README walkthrough, driven with the real `curl` binary: create a user with the CLI,
//! obtain a token with a form POST, call `/api/me/` with the token and with `-u`, and see
//! the anonymous 401.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Runs curl with `args`; returns its stdout.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `curl -i` output split into status line, headers (lower-cased names) and body.
fn split_response(raw: &str) -> (String, Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (status, headers, body.to_owned())
}

#[tokio::test]
async fn readme_walkthrough_with_curl() {
    if !have_tool("curl") {
        return;
    }
    let server = Server::start();
    // 1. A user, from the CLI (password on stdin).
    server.create_user_with("alice", "s3cret pass", &["--email", "alice@example.com"]);
    let id = user_id(&server, "alice");
    let me = |scheme: &str| {
        json!({
            "id": id,
            "username": "alice",
            "email": "alice@example.com",
            "is_staff": false,
            "is_superuser": false,
            "auth": {"scheme": scheme},
        })
    };

    // 2. A token, with a form POST.
    let out = curl(&[
        "-X",
        "POST",
        "-d",
        "username=alice",
        "-d",
        "password=s3cret pass",
        &server.url("/api-token-auth/"),
    ]);
    let body: Value = serde_json::from_str(&out).expect("JSON");
    let key = body["token"].as_str().expect("a token").to_owned();
    assert_eq!(body, json!({"token": key}));

    // 3. /api/me/ with the token.
    let out = curl(&[
        "-H",
        &format!("Authorization: Token {key}"),
        &server.url("/api/me/"),
    ]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), me("token"));

    // 4. /api/me/ with Basic (-u).
    let out = curl(&["-u", "alice:s3cret pass", &server.url("/api/me/")]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), me("basic"));

    // 5. Anonymous: 401 with the Token challenge.
    let out = curl(&["-i", &server.url("/api/me/")]);
    let (status, headers, body) = split_response(&out);
    assert!(status.starts_with("HTTP/1.1 401"), "{out}");
    let header = |name: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("www-authenticate"), ["Token"], "{out}");
    assert!(
        header("content-type")[0].starts_with("application/json"),
        "{out}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        not_authenticated()
    );

    // 6. A wrong password with -u: 401, still the Token challenge (first authenticator).
    let out = curl(&["-i", "-u", "alice:wrong", &server.url("/api/me/")]);
    let (status, headers, body) = split_response(&out);
    assert!(status.starts_with("HTTP/1.1 401"), "{out}");
    assert!(headers
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v == "Token"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        failed("Invalid username/password.")
    );

    // 7. Log out with the token: 204, then the token is dead.
    let out = curl(&[
        "-i",
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Token {key}"),
        &server.url("/api/auth/logout/"),
    ]);
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    let out = curl(&[
        "-H",
        &format!("Authorization: Token {key}"),
        &server.url("/api/me/"),
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        failed("Invalid token.")
    );
}
