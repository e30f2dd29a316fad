//! No secret in any output (CONTRACT §10, "No credential is cached or logged"): a database or
//! Redis URL with a password is printed as `scheme://user:***@host/…` by `serve` (its INFO
//! log), `migrate`, the CLI, and every connection failure — a closed port, the real
//! PostgreSQL refusing the login, the real Redis refusing the password. The password never
//! appears on stdout or stderr.
//!
//! Needs `RESTGUARD_TEST_POSTGRES_URL` and `RESTGUARD_TEST_REDIS_URL` for the cases against
//! the real servers (skipped with a printed reason, failures under
//! `RESTGUARD_REQUIRE_SERVICES=1`); the closed-port cases always run.

mod common;

use std::time::{Duration, Instant};

use common::{cli_in, spawn_serve, CliOutput};
use restguard_store::testing::{
    service_url, url_with_search_path, ScratchSchema, POSTGRES_URL_VAR, REDIS_URL_VAR,
};

/// The password every URL of this file carries; distinctive, so a leak cannot hide.
const PASSWORD: &str = "Pw-s3cr3t-91f4e";

/// `url` with its userinfo replaced by `user:PASSWORD`.
fn with_password(url: &str, user: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("service URL");
    parsed.set_username(user).expect("user");
    parsed.set_password(Some(PASSWORD)).expect("password");
    parsed.to_string()
}

/// Asserts that the password appears nowhere in `text`.
fn assert_no_password(text: &str, what: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what}: the password leaked into the output:\n{text}"
    );
}

fn assert_clean(out: &CliOutput, what: &str) {
    assert_no_password(&out.stdout, what);
    assert_no_password(&out.stderr, what);
}

/// `restguard serve` with `env` that must fail: exit 1 with one line, no password.
fn serve_fails(dir: &std::path::Path, env: &[(&str, &str)], what: &str) -> String {
    let out = cli_in(dir, &["serve", "--bind", "127.0.0.1:0"], None, env);
    assert_clean(&out, what);
    out.assert_one_line_error().to_owned()
}

#[test]
fn unreachable_database_and_bad_urls_never_print_the_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = format!("postgres://restguard:{PASSWORD}@127.0.0.1:1/restguard");
    let bad_port = format!("postgres://restguard:{PASSWORD}@127.0.0.1:notaport/restguard");
    let env_timeout = ("RESTGUARD_DATABASE__ACQUIRE_TIMEOUT", "2s");
    for url in [closed.as_str(), bad_port.as_str()] {
        for args in [
            &["migrate"][..],
            &["token", "create", "alice"],
            &["keys", "list"],
        ] {
            let out = cli_in(
                dir.path(),
                args,
                None,
                &[("RESTGUARD_DATABASE__URL", url), env_timeout],
            );
            assert_clean(&out, &format!("{args:?} on {url}"));
            let line = out.assert_one_line_error();
            assert!(line.contains("database.url"), "{line}");
        }
        serve_fails(
            dir.path(),
            &[("RESTGUARD_DATABASE__URL", url), env_timeout],
            url,
        );
    }
    // A Redis URL that cannot be used, with a password in it.
    for url in [
        format!("redis://:{PASSWORD}@127.0.0.1:notaport/"),
        format!("http://:{PASSWORD}@127.0.0.1:6379/"),
    ] {
        let line = serve_fails(
            dir.path(),
            &[
                ("RESTGUARD_DATABASE__URL", "memory:"),
                ("RESTGUARD_REDIS__URL", &url),
            ],
            &url,
        );
        assert!(line.contains("redis.url"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_urls_are_printed_without_the_password() {
    let Some(base) = service_url(
        POSTGRES_URL_VAR,
        "postgres_urls_are_printed_without_the_password",
    ) else {
        return;
    };
    let schema = ScratchSchema::create(&base).await;
    let user = url::Url::parse(&base)
        .expect("service URL")
        .username()
        .to_owned();
    let url = url_with_search_path(&with_password(&base, &user), schema.name());
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("RESTGUARD_DATABASE__URL", url.as_str()),
        ("RESTGUARD_LOG", "info"),
    ];

    // `migrate` names the database, redacted.
    let out = cli_in(dir.path(), &["migrate"], None, &env);
    assert_clean(&out, "migrate");
    out.assert_ok();
    assert!(
        out.stderr.contains(&format!("postgres://{user}:***@")),
        "migrate names the database with the password masked: {}",
        out.stderr
    );

    // `serve` logs the database at INFO, redacted.
    let spawned = spawn_serve(dir.path(), "127.0.0.1:0", &env)
        .unwrap_or_else(|(status, log)| panic!("serve did not start ({status}): {log}"));
    let mut child = spawned.child;
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = spawned.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        if log.contains("serving") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_no_password(&log, "serve");
    assert!(
        log.contains(&format!("postgres://{user}:***@")),
        "serve logs the database with the password masked: {log}"
    );

    // The real server refusing the connection: an unknown role, an unknown database.
    let unknown_role = url_with_search_path(&with_password(&base, "intruder"), schema.name());
    let mut unknown_db = url::Url::parse(&with_password(&base, &user)).expect("url");
    unknown_db.set_path("/restguard_no_such_database");
    for url in [unknown_role, unknown_db.to_string()] {
        let env = [("RESTGUARD_DATABASE__URL", url.as_str())];
        for args in [&["migrate"][..], &["user", "deactivate", "alice"]] {
            let out = cli_in(dir.path(), args, None, &env);
            assert_clean(&out, &format!("{args:?} on {url}"));
            out.assert_one_line_error();
        }
        serve_fails(dir.path(), &env, &url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_urls_are_never_printed_with_the_password() {
    let Some(base) = service_url(
        REDIS_URL_VAR,
        "redis_urls_are_never_printed_with_the_password",
    ) else {
        return;
    };
    // The real Redis refuses the password (it has none configured, or another one); a closed
    // port refuses the connection.
    let wrong_password = with_password(&base, "");
    let closed = format!("redis://:{PASSWORD}@127.0.0.1:1/");
    for url in [wrong_password, closed] {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = [
            ("RESTGUARD_REDIS__URL", url.as_str()),
            ("RESTGUARD_REDIS__TIMEOUT", "300ms"),
            ("RESTGUARD_LOG", "info"),
        ];
        let spawned = spawn_serve(dir.path(), "127.0.0.1:0", &env)
            .unwrap_or_else(|(status, log)| panic!("serve did not start ({status}): {log}"));
        let mut child = spawned.child;
        let base = format!("http://{}", spawned.addr);
        let client = reqwest::Client::new();
        // Redis is used by the login throttle, /readyz and the invalidation bus.
        for _ in 0..2 {
            let _ = client
                .post(format!("{base}/api-token-auth/"))
                .json(&serde_json::json!({"username": "alice", "password": "wrong"}))
                .send()
                .await;
            let _ = client.get(format!("{base}/readyz")).send().await;
        }
        let out = cli_in(dir.path(), &["user", "deactivate", "nobody"], None, &env);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = child.kill();
        let _ = child.wait();
        let log = spawned.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        assert!(
            log.contains("redis") || log.contains("Redis"),
            "the outage was logged: {log}"
        );
        assert_no_password(&log, &format!("serve with {url}"));
        assert_clean(&out, &format!("CLI with {url}"));
    }
}
