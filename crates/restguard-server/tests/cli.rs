//! CONTRACT §8 (CLI) and §9 (configuration errors), plus graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CHALLENGE: Option<&str> = Some("Token");

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("restguard-cli-")
        .tempdir()
        .unwrap()
}

#[test]
fn usage_errors_exit_2() {
    let dir = temp();
    // Unknown subcommands and flags, missing arguments: exit 2 with the usage.
    for args in [
        &["bogus"][..],
        &["user", "frobnicate", "x"],
        &["user", "create", "x", "--bogus"],
        &["token", "create"],
        &["--no-such-flag", "migrate"],
        &[],
    ] {
        let out = cli_in(dir.path(), args, None, &[]);
        out.assert_usage_error();
    }
    // Malformed flag values: exit 2 with clap's error naming the flag.
    for (args, flag) in [
        (
            &["token", "create", "alice", "--expires-in", "soon"][..],
            "--expires-in",
        ),
        (
            &["token", "create", "alice", "--expires-in", "0"],
            "--expires-in",
        ),
        (&["serve", "--bind", "notanaddress"], "--bind"),
    ] {
        let out = cli_in(dir.path(), args, None, &[]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            out.stderr.starts_with("error: ") && out.stderr.contains(flag),
            "{out:?}"
        );
        assert!(out.stderr.contains("--help"), "{out:?}");
        assert!(!out.stderr.contains("panicked"), "{out:?}");
    }
    // Malformed arguments are refused before anything is created.
    assert!(!dir.path().join("restguard.db").exists());
    // --help and --version succeed.
    cli_in(dir.path(), &["--help"], None, &[]).assert_ok();
    let out = cli_in(dir.path(), &["--version"], None, &[]);
    out.assert_ok();
    assert!(out.stdout.starts_with("restguard "), "{out:?}");
}

#[test]
fn one_line_errors_exit_1() {
    let dir = temp();
    let d = dir.path();
    cli_in(d, &["migrate"], None, &[]).assert_ok();
    cli_in(
        d,
        &["user", "create", "alice", "--password-stdin"],
        Some(b"pw\n"),
        &[],
    )
    .assert_ok();

    let line = cli_in(d, &["token", "create", "nobody"], None, &[])
        .assert_one_line_error()
        .to_owned();
    assert!(line.contains("nobody"), "{line}");
    for args in [
        &["user", "delete", "nobody"][..],
        &["user", "deactivate", "nobody"],
        &["user", "activate", "nobody"],
    ] {
        let out = cli_in(d, args, None, &[]);
        assert!(out.assert_one_line_error().contains("nobody"), "{out:?}");
    }
    let out = cli_in(
        d,
        &["user", "set-password", "nobody", "--password-stdin"],
        Some(b"x\n"),
        &[],
    );
    out.assert_one_line_error();

    // Duplicate username.
    let out = cli_in(
        d,
        &["user", "create", "alice", "--password-stdin"],
        Some(b"other\n"),
        &[],
    );
    assert!(out.assert_one_line_error().contains("alice"), "{out:?}");
    // Empty password, as an empty line, CRLF or no input at all.
    for stdin in [&b"\n"[..], b"\r\n", b""] {
        let out = cli_in(
            d,
            &["user", "create", "empty", "--password-stdin"],
            Some(stdin),
            &[],
        );
        out.assert_one_line_error();
    }
    let out = cli_in(
        d,
        &["user", "set-password", "alice", "--password-stdin"],
        Some(b"\n"),
        &[],
    );
    out.assert_one_line_error();
    // Bad usernames.
    for name in ["", "   ", &"u".repeat(151)] {
        let out = cli_in(
            d,
            &["user", "create", name, "--password-stdin"],
            Some(b"pw\n"),
            &[],
        );
        out.assert_one_line_error();
    }
    // None of that created a user.
    assert_eq!(
        sqlite(
            &d.join("restguard.db"),
            "SELECT group_concat(username) FROM users;"
        ),
        "alice"
    );

    // Bad database URLs.
    for url in [
        "bogus://x",
        "postgres://localhost/x",
        "sqlite:///nonexistent-dir/x/y.db",
    ] {
        let out = cli_in(d, &["migrate"], None, &[("RESTGUARD_DATABASE__URL", url)]);
        let line = out.assert_one_line_error();
        assert!(line.contains("database.url"), "{line}");
        let out = cli_in(
            d,
            &["serve", "--bind", "127.0.0.1:0"],
            None,
            &[("RESTGUARD_DATABASE__URL", url)],
        );
        out.assert_one_line_error();
    }

    // Bad configuration values name their key.
    for (var, value, key) in [
        ("RESTGUARD_SERVER__BIND", "notanaddress", "server.bind"),
        ("RESTGUARD_SERVER__BODY_LIMIT", "lots", "server.body_limit"),
        ("RESTGUARD_TOKEN__CACHE_TTL", "5y", "token.cache_ttl"),
    ] {
        for args in [&["migrate"][..], &["serve"]] {
            let out = cli_in(d, args, None, &[(var, value)]);
            let line = out.assert_one_line_error().to_owned();
            assert!(
                line.to_ascii_lowercase().contains(key),
                "the error must name {key}: {line}"
            );
        }
    }
    // A configuration file that does not exist, or is not TOML.
    let out = cli_in(d, &["--config", "missing.toml", "migrate"], None, &[]);
    assert!(out.assert_one_line_error().contains("missing.toml"));
    std::fs::write(d.join("broken.toml"), "[server\nbind = ").unwrap();
    let out = cli_in(d, &["--config", "broken.toml", "migrate"], None, &[]);
    out.assert_one_line_error();
    std::fs::write(d.join("unknown.toml"), "[server]\nbnid = \"127.0.0.1:1\"\n").unwrap();
    let out = cli_in(d, &["--config", "unknown.toml", "migrate"], None, &[]);
    assert!(out.assert_one_line_error().contains("bnid"), "{out:?}");
}

#[tokio::test]
async fn address_in_use() {
    let server = Server::start();
    let started = Instant::now();
    match spawn_serve(server.dir(), &server.addr, &[]) {
        Ok(Spawned {
            mut child, addr, ..
        }) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second server started on {addr}");
        }
        Err((status, stderr)) => {
            assert!(status.contains("exit status: 1"), "{status}: {stderr}");
            let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
            assert!(!line.contains('\n'), "one line: {stderr:?}");
            assert!(line.starts_with("error: "), "{stderr:?}");
            assert!(line.contains(&server.addr), "{stderr:?}");
            assert!(!line.contains("panicked"), "{stderr:?}");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // The first server is unaffected.
    server
        .get("/healthz", None)
        .await
        .assert(200, None, &json!({"status": "ok"}));
}

#[tokio::test]
async fn password_stdin_and_token_create() {
    let server = Server::start();
    // One trailing "\n" or "\r\n" is not part of the password; other whitespace is.
    server
        .cli(
            &["user", "create", "lf", "--password-stdin"],
            Some(b"pass word\n"),
        )
        .assert_ok();
    server
        .cli(
            &["user", "create", "crlf", "--password-stdin"],
            Some(b"pass word\r\n"),
        )
        .assert_ok();
    server
        .cli(
            &["user", "create", "eof", "--password-stdin"],
            Some(b"pass word"),
        )
        .assert_ok();
    server
        .cli(
            &["user", "create", "spaces", "--password-stdin"],
            Some(b" pass word \n"),
        )
        .assert_ok();
    // Only the first line is read.
    server
        .cli(
            &["user", "create", "twolines", "--password-stdin"],
            Some(b"pass word\nsecond line\n"),
        )
        .assert_ok();
    for name in ["lf", "crlf", "eof", "twolines"] {
        let id = user_id(&server, name);
        server
            .get("/api/me/", Some(&basic(name, "pass word")))
            .await
            .assert(200, None, &me_body(id, name, "basic"));
    }
    let id = user_id(&server, "spaces");
    server
        .get("/api/me/", Some(&basic("spaces", " pass word ")))
        .await
        .assert(200, None, &me_body(id, "spaces", "basic"));
    server
        .get("/api/me/", Some(&basic("crlf", "pass word\r")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));

    // A user without --password-stdin has no usable password.
    server.cli(&["user", "create", "nopass"], None).assert_ok();
    server
        .get("/api/me/", Some(&basic("nopass", "")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));

    // token create: the key alone on stdout, usable at once; options stored.
    let out = server.cli(
        &[
            "token",
            "create",
            "lf",
            "--name",
            "ci bot",
            "--expires-in",
            "3600",
        ],
        None,
    );
    out.assert_ok();
    let key = out.stdout.strip_suffix('\n').unwrap();
    assert!(
        !key.is_empty()
            && key.len() <= 100
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "stdout must be the key alone: {:?}",
        out.stdout
    );
    assert!(!out.stderr.contains(key), "the key is printed once");
    let lf = user_id(&server, "lf");
    server
        .get("/api/me/", Some(&token(key)))
        .await
        .assert(200, None, &me_body(lf, "lf", "token"));
    let list = server.token_list(&token(key)).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "ci bot");
    assert!(list[0]["expiry"].is_string());
}

#[tokio::test]
async fn set_password_revokes_tokens() {
    let server = Server::start();
    server.create_user("alice", "old password");
    server.create_user("bob", "bob password");
    let alice = user_id(&server, "alice");
    let bob = user_id(&server, "bob");
    let key = server.token_create("alice");
    let api_key = server.obtain_token("alice", "old password").await;
    let bob_key = server.token_create("bob");
    for k in [&key, &api_key] {
        server.get("/api/me/", Some(&token(k))).await.assert(
            200,
            None,
            &me_body(alice, "alice", "token"),
        );
    }

    server
        .cli(
            &["user", "set-password", "alice", "--password-stdin"],
            Some(b"new password\r\n"),
        )
        .assert_ok();
    // The CLI is another process: the server notices within its 1 s check cache.
    tokio::time::sleep(CACHE_WAIT).await;
    for k in [&key, &api_key] {
        server.get("/api/me/", Some(&token(k))).await.assert(
            401,
            CHALLENGE,
            &failed("Invalid token."),
        );
    }
    server
        .get("/api/me/", Some(&basic("alice", "new password")))
        .await
        .assert(200, None, &me_body(alice, "alice", "basic"));
    server
        .get("/api/me/", Some(&basic("alice", "old password")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
    // Bob is untouched.
    server.get("/api/me/", Some(&token(&bob_key))).await.assert(
        200,
        None,
        &me_body(bob, "bob", "token"),
    );
    // A new token can be had with the new password.
    let fresh = server.obtain_token("alice", "new password").await;
    server.get("/api/me/", Some(&token(&fresh))).await.assert(
        200,
        None,
        &me_body(alice, "alice", "token"),
    );
}

#[tokio::test]
async fn delete_user_and_migrate() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    server.cli(&["migrate"], None).assert_ok();
    server.cli(&["user", "delete", "alice"], None).assert_ok();
    server
        .get("/api/me/", Some(&basic("alice", "alice password")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
    // The name is free again.
    server.create_user("alice", "second alice");
    let id = user_id(&server, "alice");
    server
        .get("/api/me/", Some(&basic("alice", "second alice")))
        .await
        .assert(200, None, &me_body(id, "alice", "basic"));
    // flush-expired runs.
    server.cli(&["flush-expired"], None).assert_ok();
}

#[tokio::test]
async fn sigterm_exits_zero() {
    let server = Server::start();
    // A client that keeps no idle connection.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let reply = client.get(server.url("/healthz")).send().await.unwrap();
    Reply::read(reply)
        .await
        .assert(200, None, &json!({"status": "ok"}));
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(10));
    let status = status.expect("the server did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_with_an_idle_keepalive_connection() {
    // A client holding an idle keep-alive connection must not keep the server alive.
    let server = Server::start();
    server
        .get("/healthz", None)
        .await
        .assert(200, None, &json!({"status": "ok"}));
    let client = server.client.clone();
    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(15))
        .expect("the server did not exit within 15 s of SIGTERM");
    drop(client);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_with_a_stalled_request_honours_the_grace_period() {
    use std::io::Write;
    // server.shutdown_grace bounds how long in-flight requests may delay the exit.
    let server = Server::start_with_env(&[("RESTGUARD_SERVER__SHUTDOWN_GRACE", "2")]);
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    // A request whose body never arrives in full.
    stream
        .write_all(
            b"POST /api-token-auth/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(15));
    drop(stream);
    let status = status.expect("the server did not exit within 15 s of SIGTERM (grace 2 s)");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "exit took {:?} with a 2 s grace",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{status}");
}
