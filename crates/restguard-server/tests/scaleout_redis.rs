//! Throttles shared through Redis (`redis.url`): two `restguard serve` processes enforce one
//! limit in total (anonymous rate and the login throttle), exactly, under concurrent
//! requests; and a Redis outage (a TCP proxy cut and restored) lets requests through with
//! fail-open (the default) or answers 503 with `redis.throttle_fail_closed`, recovering
//! without restart.
//!
//! Needs `RESTGUARD_TEST_REDIS_URL`; each test uses its own key prefix. Without it the tests
//! print why they skip (and fail under `RESTGUARD_REQUIRE_SERVICES=1`).

mod common;
mod proxy_support;
mod session_support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{cli_in, sqlite, Body, Reply, Server};
use proxy_support::Proxy;
use restguard_store::testing::{service_url, RedisPrefix, REDIS_URL_VAR};
use serde_json::json;
use session_support::{login, PLAIN_HTTP};

/// Environment for a server on the shared Redis with `prefix`.
fn redis_env<'a>(url: &'a str, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("RESTGUARD_REDIS__URL", url),
        ("RESTGUARD_REDIS__KEY_PREFIX", prefix),
        ("RESTGUARD_DATABASE__URL", "memory:"),
    ]
}

fn start(env: &[(&str, &str)]) -> Server {
    Server::start_with_env(env)
}

/// `n` concurrent anonymous `GET /api/ping/`, alternating between `servers`.
async fn concurrent_pings(servers: &[&Server], n: usize) -> Vec<Reply> {
    let mut handles = Vec::new();
    for i in 0..n {
        let server = servers[i % servers.len()];
        let client = server.client.clone();
        let url = server.url("/api/ping/");
        handles.push(tokio::spawn(async move {
            Reply::read(client.get(url).send().await.expect("request")).await
        }));
    }
    let mut replies = Vec::new();
    for h in handles {
        replies.push(h.await.expect("join"));
    }
    replies
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anon_limit_is_shared_exactly_by_two_instances() {
    let Some(url) = service_url(REDIS_URL_VAR, "anon_limit_is_shared") else {
        return;
    };
    let guard = RedisPrefix::new(&url);
    let prefix = guard.prefix().to_owned();
    let mut env = redis_env(&url, &prefix);
    env.push(("RESTGUARD_THROTTLE__ANON", "10/m"));
    let a = start(&env);
    let b = start(&env);
    let replies = concurrent_pings(&[&a, &b], 40).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let throttled: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok, 10, "exactly the limit in total over both instances");
    assert_eq!(throttled.len(), 30);
    for reply in throttled {
        let retry: u64 = reply.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(reply.json["code"], "throttled");
    }
    // Both instances now refuse.
    assert_eq!(a.get("/api/ping/", None).await.status, 429);
    assert_eq!(b.get("/api/ping/", None).await.status, 429);
    let ready = a.get("/readyz", None).await;
    assert_eq!(ready.json, json!({"status": "ready", "redis": "ok"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttle_is_shared_by_two_instances() {
    let Some(url) = service_url(REDIS_URL_VAR, "login_throttle_is_shared") else {
        return;
    };
    let guard = RedisPrefix::new(&url);
    let prefix = guard.prefix().to_owned();
    let mut env = redis_env(&url, &prefix);
    env.push(("RESTGUARD_THROTTLE__LOGIN_IP", "3/m"));
    env.push(("RESTGUARD_THROTTLE__LOGIN_USER", "off"));
    let a = start(&env);
    let b = start(&env);
    // Failed attempts on either instance count towards one limit.
    for (server, user) in [(&a, "alice"), (&b, "bob"), (&a, "carol")] {
        let reply = server.get("/api/me/", Some(&basic(user, "wrong"))).await;
        assert_eq!(reply.status, 401, "{reply:?}");
    }
    for server in [&a, &b] {
        let reply = server.get("/api/me/", Some(&basic("dave", "wrong"))).await;
        assert_eq!(reply.status, 429, "{reply:?}");
        assert!(reply.headers.get("retry-after").is_some());
    }
}

/// `host:port` of a `redis://host:port/…` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_or_closed_and_recovers() {
    let Some(url) = service_url(REDIS_URL_VAR, "redis_outage") else {
        return;
    };
    let proxy = Proxy::start(host_port(&url)).await;
    let proxied = format!("redis://{}/", proxy.addr);
    let guard = RedisPrefix::new(&url);
    let prefix = guard.prefix().to_owned();
    let mut env = redis_env(&proxied, &prefix);
    env.push(("RESTGUARD_THROTTLE__ANON", "1000/m"));
    env.push(("RESTGUARD_REDIS__TIMEOUT", "300ms"));
    let open = start(&env);
    env.push(("RESTGUARD_REDIS__THROTTLE_FAIL_CLOSED", "true"));
    let closed = start(&env);
    assert_eq!(open.get("/api/ping/", None).await.status, 200);
    assert_eq!(closed.get("/api/ping/", None).await.status, 200);

    proxy.cut();
    let started = Instant::now();
    // Fail-open: requests pass; /readyz stays ready and says Redis is down.
    assert_eq!(open.get("/api/ping/", None).await.status, 200);
    let ready = open.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json["redis"], "unavailable");
    // Fail-closed: 503 with the contract body, /readyz 503.
    let reply = closed.get("/api/ping/", None).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.headers.get("retry-after").is_some());
    assert_eq!(
        reply.json,
        json!({"detail": "Service temporarily unavailable.", "code": "service_unavailable"})
    );
    assert_eq!(closed.get("/readyz", None).await.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if closed.get("/api/ping/", None).await.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the Redis outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed.get("/readyz", None).await.status, 200);
    assert_eq!(open.get("/readyz", None).await.json["redis"], "ok");

    // A black hole (nothing answers, nothing closes) is bounded by redis.timeout too.
    proxy.hang();
    let started = Instant::now();
    assert_eq!(open.get("/api/ping/", None).await.status, 200);
    assert_eq!(closed.get("/api/ping/", None).await.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.get("/api/ping/", None).await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "no recovery after the black hole"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_redis_are_shared_by_two_instances() {
    let Some(url) = service_url(REDIS_URL_VAR, "sessions_in_redis") else {
        return;
    };
    let guard = RedisPrefix::new(&url);
    let prefix = guard.prefix().to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("shared.db");
    let db_url = format!("sqlite://{}", db.display());
    let env = [
        ("RESTGUARD_REDIS__URL", url.as_str()),
        ("RESTGUARD_REDIS__KEY_PREFIX", prefix.as_str()),
        ("RESTGUARD_REDIS__SESSIONS", "true"),
        ("RESTGUARD_DATABASE__URL", db_url.as_str()),
        PLAIN_HTTP,
    ];
    let a = start(&env);
    let b = start(&env);
    cli_in(
        dir.path(),
        &["user", "create", "alice", "--password-stdin"],
        Some(b"pw-alice-123\n"),
        &env,
    )
    .assert_ok();
    let browser = login(&a, "alice", "pw-alice-123").await;
    assert_eq!(browser.me(&b).await.status, 200);
    // The session is in Redis, not in the database.
    assert_eq!(sqlite(&db, "SELECT count(*) FROM sessions;"), "0");
    assert_eq!(
        a.get("/readyz", None).await.json,
        json!({"status": "ready", "redis": "ok"})
    );
    let out = browser
        .send(
            &a,
            reqwest::Method::POST,
            "/api/session/logout/",
            Body::None,
        )
        .await;
    assert_eq!(out.status, 204, "{out:?}");
    let started = Instant::now();
    while browser.me(&b).await.status == 200 {
        assert!(
            started.elapsed() < Duration::from_millis(1_600),
            "logout on A not seen by B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
