//! Scale-out on PostgreSQL: the server on a PostgreSQL URL (`restguard migrate` and the CLI
//! included), two `restguard serve` processes sharing one database (revocations, ended
//! sessions, deactivations and refresh-token reuse seen across instances within the caches'
//! 1 s), and an outage (a TCP proxy between the server and PostgreSQL, cut and restored):
//! 503 + `Retry-After` with the contract body, `/readyz` 503, recovery without restart, and
//! tokens issued before the outage still valid.
//!
//! Needs `RESTGUARD_TEST_POSTGRES_URL`; each test uses its own scratch schema. Without it the
//! tests print why they skip (and fail under `RESTGUARD_REQUIRE_SERVICES=1`).

mod common;
mod proxy_support;
mod session_support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{cli_in, token, Body, CliOutput, Reply, Server};
use proxy_support::Proxy;
use reqwest::Method;
use restguard_store::testing::{
    service_url, url_with_search_path, RedisPrefix, ScratchSchema, POSTGRES_URL_VAR, REDIS_URL_VAR,
};
use serde_json::json;
use session_support::{login, PLAIN_HTTP};

/// A scratch schema and the URL of it, or `None` to skip.
async fn scratch(test: &str) -> Option<ScratchSchema> {
    let base = service_url(POSTGRES_URL_VAR, test)?;
    Some(ScratchSchema::create(&base).await)
}

/// The key-encryption key every instance and CLI run of a test shares (as instances on one
/// PostgreSQL database must; each runs in its own directory, so a key file would not be
/// shared).
const SHARED_KEK: (&str, &str) = (
    "RESTGUARD_SERVER__SECRET_KEY",
    "c2NhbGUtb3V0IHRlc3RzIHNoYXJlIHRoaXMga2V5ISE=",
);

/// `restguard ARGS` against the database at `url` (from `dir`).
fn cli(dir: &std::path::Path, url: &str, args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
    cli_in(
        dir,
        args,
        stdin,
        &[("RESTGUARD_DATABASE__URL", url), SHARED_KEK],
    )
}

/// A server on the PostgreSQL database at `url`.
fn pg_server(url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("RESTGUARD_DATABASE__URL", url), PLAIN_HTTP, SHARED_KEK];
    env.extend_from_slice(extra);
    Server::start_with_env(&env)
}

fn create_user(server: &Server, url: &str, name: &str, password: &str) {
    let line = format!("{password}\n");
    cli(
        server.dir(),
        url,
        &["user", "create", name, "--password-stdin"],
        Some(line.as_bytes()),
    )
    .assert_ok();
}

/// Polls `probe` every 50 ms until it is true; returns how long that took, or panics after
/// `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if probe().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a change on one instance may take to reach another: the in-process caches'
/// 1 s lifetime plus scheduling margin.
const PROPAGATION: Duration = Duration::from_millis(1_600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_end_to_end() {
    let Some(schema) = scratch("postgres_backend_end_to_end").await else {
        return;
    };
    let url = schema.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    // `restguard migrate` on PostgreSQL, twice (idempotent).
    cli(dir.path(), &url, &["migrate"], None).assert_ok();
    cli(dir.path(), &url, &["migrate"], None).assert_ok();

    let server = pg_server(
        &url,
        &[
            ("RESTGUARD_DATABASE__MAX_CONNECTIONS", "4"),
            ("RESTGUARD_DATABASE__ACQUIRE_TIMEOUT", "2s"),
            ("RESTGUARD_DATABASE__STATEMENT_TIMEOUT", "3s"),
        ],
    );
    create_user(&server, &url, "alice", "pw-alice-123");
    let key = server.obtain_token("alice", "pw-alice-123").await;
    let me = server.get("/api/me/", Some(&token(&key))).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json["username"], "alice");
    assert_eq!(me.json["auth"]["scheme"], "token");
    let ready = server.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{ready:?}");
    let metrics = server.get("/metrics", None).await;
    assert!(
        metrics
            .text
            .contains("restguard_db_pool_connections{state=\"max\"} 4"),
        "{}",
        metrics.text
    );
    // A CLI token works on the server.
    let cli_key = cli(dir.path(), &url, &["token", "create", "alice"], None);
    cli_key.assert_ok();
    let me = server
        .get("/api/me/", Some(&token(cli_key.stdout.trim_end())))
        .await;
    assert_eq!(me.status, 200, "{me:?}");
    // Bad pool settings are startup errors naming the key.
    let out = cli_in(
        dir.path(),
        &["migrate"],
        None,
        &[
            ("RESTGUARD_DATABASE__URL", url.as_str()),
            ("RESTGUARD_DATABASE__ACQUIRE_TIMEOUT", "soon"),
        ],
    );
    let line = out.assert_one_line_error();
    assert!(line.to_lowercase().contains("acquire_timeout"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_state() {
    let Some(schema) = scratch("two_instances_share_state").await else {
        return;
    };
    let url = schema.url().to_owned();
    let a = pg_server(&url, &[]);
    let b = pg_server(&url, &[]);
    create_user(&a, &url, "alice", "pw-alice-123");
    create_user(&a, &url, "bob", "pw-bob-12345");

    // A token issued on A works on B; revoked on A, B refuses it within the cache lifetime.
    let key = a.obtain_token("alice", "pw-alice-123").await;
    assert_eq!(b.get("/api/me/", Some(&token(&key))).await.status, 200);
    let other = a.obtain_token("alice", "pw-alice-123").await;
    revoke_first_token(&a, &key, &other).await;
    let took = within(PROPAGATION, "token revocation reaches B", || async {
        b.get("/api/me/", Some(&token(&key))).await.status == 401
    })
    .await;
    eprintln!("token revocation reached B after {took:?}");

    // A session started on A works on B; ended on A, B refuses it.
    let browser = login(&a, "bob", "pw-bob-12345").await;
    assert_eq!(browser.me(&b).await.status, 200);
    let out = browser
        .send(&a, Method::POST, "/api/session/logout/", Body::None)
        .await;
    assert_eq!(out.status, 204, "{out:?}");
    within(PROPAGATION, "session end reaches B", || async {
        browser.me(&b).await.status != 200
    })
    .await;

    // Refresh-token reuse is detected across instances: rotate on A, replay on B.
    let pair = obtain_pair(&a, "bob", "pw-bob-12345").await;
    let r0 = pair.json["refresh"].as_str().expect("refresh").to_owned();
    let rotated = a
        .request(
            Method::POST,
            "/api/token/refresh/",
            None,
            Body::Json(json!({"refresh": r0})),
        )
        .await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let r1 = rotated.json["refresh"]
        .as_str()
        .expect("rotated")
        .to_owned();
    let access = rotated.json["access"].as_str().expect("access").to_owned();
    assert_eq!(
        b.get("/api/me/", Some(&format!("Bearer {access}")))
            .await
            .status,
        200
    );
    let replay = b
        .request(
            Method::POST,
            "/api/token/refresh/",
            None,
            Body::Json(json!({"refresh": r0})),
        )
        .await;
    assert_eq!(replay.status, 401, "{replay:?}");
    // … and the whole family is dead, on either instance.
    let after = a
        .request(
            Method::POST,
            "/api/token/refresh/",
            None,
            Body::Json(json!({"refresh": r1})),
        )
        .await;
    assert_eq!(after.status, 401, "{after:?}");

    // A user deactivated (through the shared database) is refused by both within 1 s.
    let key = b.obtain_token("alice", "pw-alice-123").await;
    assert_eq!(a.get("/api/me/", Some(&token(&key))).await.status, 200);
    assert_eq!(b.get("/api/me/", Some(&token(&key))).await.status, 200);
    let browser = login(&b, "alice", "pw-alice-123").await;
    assert_eq!(browser.me(&a).await.status, 200);
    cli(a.dir(), &url, &["user", "deactivate", "alice"], None).assert_ok();
    within(PROPAGATION, "deactivation reaches A and B", || async {
        a.get("/api/me/", Some(&token(&key))).await.status == 401
            && b.get("/api/me/", Some(&token(&key))).await.status == 401
            && browser.me(&a).await.status != 200
            && browser.me(&b).await.status != 200
    })
    .await;
}

/// Revokes, through `server`, the first token listed for `key`'s user, authenticated with
/// `auth`: 204.
async fn revoke_first_token(server: &Server, key: &str, auth: &str) {
    let id = server.token_list(&token(key)).await[0]["id"]
        .as_i64()
        .expect("token id");
    let revoked = server
        .request(
            Method::DELETE,
            &format!("/api/tokens/{id}/"),
            Some(&token(auth)),
            Body::None,
        )
        .await;
    assert_eq!(revoked.status, 204, "{revoked:?}");
}

/// Caches that would hide a revocation for a minute without the invalidation bus.
const LONG_CACHES: [(&str, &str); 3] = [
    ("RESTGUARD_TOKEN__CACHE_TTL", "60s"),
    ("RESTGUARD_SESSION__CACHE_TTL", "60s"),
    ("RESTGUARD_JWT__USER_CACHE_TTL", "60s"),
];

/// Well under the caches' 60 s: only the invalidation bus can make a change visible this soon.
const AT_ONCE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_revocations_reach_other_instances_at_once() {
    let Some(schema) = scratch("redis_invalidations").await else {
        return;
    };
    let Some(redis) = service_url(REDIS_URL_VAR, "redis_invalidations") else {
        return;
    };
    let guard = RedisPrefix::new(&redis);
    let url = schema.url().to_owned();
    let mut env = vec![
        ("RESTGUARD_REDIS__URL", redis.as_str()),
        ("RESTGUARD_REDIS__KEY_PREFIX", guard.prefix()),
    ];
    env.extend_from_slice(&LONG_CACHES);
    let a = pg_server(&url, &env);
    let b = pg_server(&url, &env);
    create_user(&a, &url, "alice", "pw-alice-123");
    create_user(&a, &url, "bob", "pw-bob-12345");

    // A token revoked on A: B had it cached for a minute, and refuses it at once.
    let key = a.obtain_token("alice", "pw-alice-123").await;
    assert_eq!(b.get("/api/me/", Some(&token(&key))).await.status, 200);
    let other = a.obtain_token("alice", "pw-alice-123").await;
    revoke_first_token(&a, &key, &other).await;
    let took = within(AT_ONCE, "token revocation reaches B", || async {
        b.get("/api/me/", Some(&token(&key))).await.status == 401
    })
    .await;
    eprintln!("token revocation reached B after {took:?} (cache lifetime 60 s)");
    b.get("/api/me/", Some(&token(&key))).await.assert(
        401,
        Some("Token"),
        &json!({"detail": "Invalid token.", "code": "authentication_failed"}),
    );

    // A session ended on A.
    let browser = login(&a, "bob", "pw-bob-12345").await;
    assert_eq!(browser.me(&b).await.status, 200);
    let out = browser
        .send(&a, Method::POST, "/api/session/logout/", Body::None)
        .await;
    assert_eq!(out.status, 204, "{out:?}");
    within(AT_ONCE, "session end reaches B", || async {
        browser.me(&b).await.status != 200
    })
    .await;

    // A user deactivated with the CLI (which announces it too): token, JWT and session
    // refused by both instances, whose caches held all three.
    let key = b.obtain_token("alice", "pw-alice-123").await;
    let pair = obtain_pair(&b, "alice", "pw-alice-123").await;
    let access = format!("Bearer {}", pair.json["access"].as_str().expect("access"));
    let browser = login(&b, "alice", "pw-alice-123").await;
    for server in [&a, &b] {
        assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 200);
        assert_eq!(server.get("/api/me/", Some(&access)).await.status, 200);
        assert_eq!(browser.me(server).await.status, 200);
    }
    let mut cli_env = vec![("RESTGUARD_DATABASE__URL", url.as_str()), SHARED_KEK];
    cli_env.extend_from_slice(&env);
    cli_in(a.dir(), &["user", "deactivate", "alice"], None, &cli_env).assert_ok();
    within(AT_ONCE, "deactivation reaches A and B", || async {
        let mut refused = true;
        for server in [&a, &b] {
            refused &= server.get("/api/me/", Some(&token(&key))).await.status == 401
                && server.get("/api/me/", Some(&access)).await.status == 401
                && browser.me(server).await.status != 200;
        }
        refused
    })
    .await;
    b.get("/api/me/", Some(&access)).await.assert(
        401,
        Some("Token"),
        &json!({"detail": "User is inactive", "code": "user_inactive"}),
    );
}

/// `POST /o/revoke_token/` on `server` as `client` (`Basic` credentials): 200.
async fn revoke_oauth_token(server: &Server, client: &str, token: &str) {
    let reply = server
        .request(
            Method::POST,
            "/o/revoke_token/",
            Some(client),
            Body::Raw(
                "application/x-www-form-urlencoded",
                format!("token={token}").into_bytes(),
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_oauth2_revocations_reach_other_instances_at_once() {
    let Some(schema) = scratch("redis_oauth2_invalidations").await else {
        return;
    };
    let Some(redis) = service_url(REDIS_URL_VAR, "redis_oauth2_invalidations") else {
        return;
    };
    let guard = RedisPrefix::new(&redis);
    let url = schema.url().to_owned();
    let env = vec![
        ("RESTGUARD_REDIS__URL", redis.as_str()),
        ("RESTGUARD_REDIS__KEY_PREFIX", guard.prefix()),
        ("RESTGUARD_OAUTH2__PASSWORD_GRANT", "true"),
        // Cached for a minute: only the invalidation bus can make a change visible sooner.
        ("RESTGUARD_OAUTH2__CACHE_TTL", "60s"),
    ];
    let a = pg_server(&url, &env);
    let b = pg_server(&url, &env);
    create_user(&a, &url, "alice", "pw-alice-123");
    let app = cli(
        a.dir(),
        &url,
        &[
            "app",
            "create",
            "--name",
            "Legacy",
            "--client-type",
            "confidential",
            "--grant",
            "password",
        ],
        None,
    );
    app.assert_ok();
    let app: serde_json::Value = serde_json::from_str(app.stdout.trim()).expect("JSON");
    let client = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!(
                "{}:{}",
                app["client_id"].as_str().expect("id"),
                app["client_secret"].as_str().expect("secret")
            )
        )
    );
    let password_grant = || async {
        let grant = a
            .request(
                Method::POST,
                "/o/token/",
                Some(&client),
                Body::Raw(
                    "application/x-www-form-urlencoded",
                    b"grant_type=password&username=alice&password=pw-alice-123".to_vec(),
                ),
            )
            .await;
        assert_eq!(grant.status, 200, "{grant:?}");
        grant.json["access_token"]
            .as_str()
            .expect("access")
            .to_owned()
    };
    let invalid =
        json!({"detail": "The access token is invalid.", "code": "authentication_failed"});

    // B checks (and caches) the token, A revokes it: B refuses it at once.
    let access = password_grant().await;
    let bearer = format!("Bearer {access}");
    assert_eq!(b.get("/api/me/", Some(&bearer)).await.status, 200);
    revoke_oauth_token(&a, &client, &access).await;
    let took = within(AT_ONCE, "OAuth2 revocation reaches B", || async {
        b.get("/api/me/", Some(&bearer)).await.status == 401
    })
    .await;
    eprintln!("OAuth2 revocation reached B after {took:?} (cache lifetime 60 s)");
    b.get("/api/me/", Some(&bearer))
        .await
        .assert(401, Some("Token"), &invalid);

    // The user revokes the application on A's account page.
    let access = password_grant().await;
    let bearer = format!("Bearer {access}");
    assert_eq!(b.get("/api/me/", Some(&bearer)).await.status, 200);
    let browser = login(&a, "alice", "pw-alice-123").await;
    // The revoke form's action, as the account page shows it.
    let page = browser.send(&a, Method::GET, "/account/", Body::None).await;
    let marker = "action=\"/account/applications/";
    let start = page.text.find(marker).expect("the application is listed") + marker.len();
    let app_id: String = page.text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let out = browser
        .send(
            &a,
            Method::POST,
            &format!("/account/applications/{app_id}/revoke/"),
            Body::Form(vec![]),
        )
        .await;
    assert_eq!(out.status, 303, "{out:?}");
    within(AT_ONCE, "grant revocation reaches B", || async {
        b.get("/api/me/", Some(&bearer)).await.status == 401
    })
    .await;

    // A deactivation with the CLI (announced on the bus) ends the cached token everywhere.
    let access = password_grant().await;
    let bearer = format!("Bearer {access}");
    for server in [&a, &b] {
        assert_eq!(server.get("/api/me/", Some(&bearer)).await.status, 200);
    }
    let mut cli_env = vec![("RESTGUARD_DATABASE__URL", url.as_str()), SHARED_KEK];
    cli_env.extend_from_slice(&env);
    cli_in(a.dir(), &["user", "deactivate", "alice"], None, &cli_env).assert_ok();
    within(AT_ONCE, "deactivation reaches A and B", || async {
        a.get("/api/me/", Some(&bearer)).await.status == 401
            && b.get("/api/me/", Some(&bearer)).await.status == 401
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_revocations_fall_back_to_the_cache_lifetime() {
    let Some(schema) = scratch("redis_down_invalidations").await else {
        return;
    };
    let url = schema.url().to_owned();
    // Nothing listens there: publishing fails; nothing may answer 500.
    let env = [("RESTGUARD_REDIS__URL", "redis://127.0.0.1:1/")];
    let a = pg_server(&url, &env);
    let b = pg_server(&url, &env);
    create_user(&a, &url, "alice", "pw-alice-123");
    let key = a.obtain_token("alice", "pw-alice-123").await;
    assert_eq!(b.get("/api/me/", Some(&token(&key))).await.status, 200);
    revoke_first_token(&a, &key, &key).await;
    within(
        PROPAGATION,
        "token revocation reaches B by expiry",
        || async { b.get("/api/me/", Some(&token(&key))).await.status == 401 },
    )
    .await;
    let mut cli_env = vec![("RESTGUARD_DATABASE__URL", url.as_str()), SHARED_KEK];
    cli_env.extend_from_slice(&env);
    cli_in(a.dir(), &["user", "deactivate", "alice"], None, &cli_env).assert_ok();
    assert_eq!(a.get("/healthz", None).await.status, 200);
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    use base64::Engine as _;
    let header = jwt.split('.').next().expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    let header: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON header");
    header["kid"].as_str().expect("kid").to_owned()
}

/// `POST /api/token/` on `server`: 200 and its body (`refresh`, `access`).
async fn obtain_pair(server: &Server, username: &str, password: &str) -> Reply {
    let pair = server
        .request(
            Method::POST,
            "/api/token/",
            None,
            Body::Json(json!({"username": username, "password": password})),
        )
        .await;
    assert_eq!(pair.status, 200, "{pair:?}");
    pair
}

/// `POST /api/token/refresh/` on `server`: the new (access, refresh).
async fn refresh(server: &Server, refresh: &str) -> (String, String) {
    let reply = server
        .request(
            Method::POST,
            "/api/token/refresh/",
            None,
            Body::Json(json!({ "refresh": refresh })),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    (
        reply.json["access"].as_str().expect("access").to_owned(),
        reply.json["refresh"].as_str().expect("refresh").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_reaches_every_instance_within_a_second() {
    let Some(schema) = scratch("key_rotation_reaches_every_instance").await else {
        return;
    };
    let url = schema.url().to_owned();
    let a = pg_server(&url, &[]);
    let b = pg_server(&url, &[]);
    create_user(&a, &url, "alice", "pw-alice-123");
    let pair = obtain_pair(&a, "alice", "pw-alice-123").await;
    let old_access = pair.json["access"].as_str().expect("access").to_owned();
    let mut a_refresh = pair.json["refresh"].as_str().expect("refresh").to_owned();
    let old_kid = kid_of(&old_access);
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(
        b.get("/api/me/", Some(&bearer(&old_access))).await.status,
        200
    );
    // Two refresh families, each carried on by one instance (A's token refreshed on B first).
    let (_, mut b_refresh) = refresh(&b, &a_refresh).await;
    let second = obtain_pair(&b, "alice", "pw-alice-123").await;
    a_refresh = second.json["refresh"].as_str().expect("refresh").to_owned();

    // `restguard keys rotate` against the shared database, while both serve.
    let rotated = cli(a.dir(), &url, &["keys", "rotate"], None);
    rotated.assert_ok();
    let new_kid = rotated.stdout.trim_end().to_owned();
    assert_ne!(new_kid, old_kid);
    assert!(rotated.stderr.contains("within 1 s"), "{rotated:?}");

    // Both instances sign with the new key within about a second, without a request naming
    // it (the background poll).
    let started = Instant::now();
    loop {
        let (a_access, next) = refresh(&a, &a_refresh).await;
        a_refresh = next;
        let (b_access, next) = refresh(&b, &b_refresh).await;
        b_refresh = next;
        if kid_of(&a_access) == new_kid && kid_of(&b_access) == new_kid {
            break;
        }
        assert!(
            started.elapsed() < PROPAGATION,
            "A and B do not sign with the rotated key after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("key rotation reached A and B after {:?}", started.elapsed());
    // A token signed by A with the new key verifies on B, and the reverse.
    let (_, next) = refresh(&b, &a_refresh).await;
    a_refresh = next;
    let (_, _) = refresh(&a, &a_refresh).await;
    let pair = obtain_pair(&a, "alice", "pw-alice-123").await;
    let new_access = pair.json["access"].as_str().expect("access").to_owned();
    assert_eq!(kid_of(&new_access), new_kid);
    let me = b.get("/api/me/", Some(&bearer(&new_access))).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json["auth"]["scheme"], "jwt");
    // The retired key keeps verifying on both (its tokens are still alive).
    for server in [&a, &b] {
        assert_eq!(
            server
                .get("/api/me/", Some(&bearer(&old_access)))
                .await
                .status,
            200
        );
    }
    let listed = cli(a.dir(), &url, &["keys", "list"], None);
    listed.assert_ok();
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with(&old_kid) && l.contains("verifying until")),
        "{listed:?}"
    );

    // A leaked key: `keys purge-retired`. Its tokens are refused by both within about a
    // second, although both had verified (and cached) this one; the new key's still work.
    let purged = cli(a.dir(), &url, &["keys", "purge-retired"], None);
    purged.assert_ok();
    assert!(
        purged.stderr.contains("deleted 1 retired signing keys"),
        "{purged:?}"
    );
    within(PROPAGATION, "the purge reaches A and B", || async {
        a.get("/api/me/", Some(&bearer(&old_access))).await.status == 401
            && b.get("/api/me/", Some(&bearer(&old_access))).await.status == 401
    })
    .await;
    let refused = b.get("/api/me/", Some(&bearer(&old_access))).await;
    refused.assert(
        401,
        Some("Token"),
        &json!({
            "detail": "Given token not valid for any token type",
            "code": "token_not_valid",
            "messages": [{
                "token_class": "AccessToken",
                "token_type": "access",
                "message": "Token is invalid",
            }],
        }),
    );
    for server in [&a, &b] {
        assert_eq!(
            server
                .get("/api/me/", Some(&bearer(&new_access)))
                .await
                .status,
            200
        );
    }
}

/// `host:port` of a `postgres://[user@]host[:port]/…` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// `url` pointed at `addr` instead of its own host and port.
fn via(url: &str, addr: SocketAddr) -> String {
    url.replacen(&host_port(url), &addr.to_string(), 1)
        .replacen("@localhost/", &format!("@{addr}/"), 1)
}

fn assert_unavailable(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 503, "{what}: {reply:?}");
    assert!(
        reply.headers.get("retry-after").is_some(),
        "{what}: no Retry-After: {reply:?}"
    );
    assert_eq!(
        reply.json,
        json!({"detail": "Service temporarily unavailable.", "code": "service_unavailable"}),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_then_recovers() {
    let Some(schema) = scratch("postgres_outage_is_503_then_recovers").await else {
        return;
    };
    let direct = schema.url().to_owned();
    let base = service_url(POSTGRES_URL_VAR, "outage").expect("checked above");
    let proxy = Proxy::start(host_port(&base)).await;
    let proxied = url_with_search_path(&via(&base, proxy.addr), schema.name());
    let server = pg_server(
        &proxied,
        &[
            ("RESTGUARD_DATABASE__ACQUIRE_TIMEOUT", "1s"),
            ("RESTGUARD_DATABASE__STATEMENT_TIMEOUT", "2s"),
        ],
    );
    create_user(&server, &direct, "alice", "pw-alice-123");
    let key = server.obtain_token("alice", "pw-alice-123").await;
    let auth = token(&key);
    assert_eq!(server.get("/api/me/", Some(&auth)).await.status, 200);
    assert_eq!(server.get("/readyz", None).await.status, 200);

    proxy.cut();
    // Past the token cache, every request that needs the database is a 503 — quickly.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let started = Instant::now();
    let me = server.get("/api/me/", Some(&auth)).await;
    assert_unavailable(&me, "GET /api/me/ during the outage");
    assert_unavailable(
        &server.get("/readyz", None).await,
        "/readyz during the outage",
    );
    let obtain = server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Json(json!({"username": "alice", "password": "pw-alice-123"})),
        )
        .await;
    assert_unavailable(&obtain, "token obtain during the outage");
    let concurrent = futures_join(&server, &auth, 8).await;
    for reply in &concurrent {
        assert_unavailable(reply, "concurrent requests during the outage");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "outage answers took {:?}",
        started.elapsed()
    );
    // The process never answered 500 and is still up.
    assert_eq!(server.get("/healthz", None).await.status, 200);

    proxy.restore();
    within(
        Duration::from_secs(10),
        "recovery after the outage",
        || async { server.get("/readyz", None).await.status == 200 },
    )
    .await;
    // The token issued before the outage is still valid; new logins work again.
    assert_eq!(server.get("/api/me/", Some(&auth)).await.status, 200);
    let again = server.obtain_token("alice", "pw-alice-123").await;
    assert_eq!(
        server.get("/api/me/", Some(&token(&again))).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_postgres_is_503_within_the_timeouts() {
    let Some(schema) = scratch("black_holed_postgres").await else {
        return;
    };
    let direct = schema.url().to_owned();
    let base = service_url(POSTGRES_URL_VAR, "black hole").expect("checked above");
    let proxy = Proxy::start(host_port(&base)).await;
    let proxied = url_with_search_path(&via(&base, proxy.addr), schema.name());
    let server = pg_server(
        &proxied,
        &[
            ("RESTGUARD_DATABASE__ACQUIRE_TIMEOUT", "1s"),
            ("RESTGUARD_DATABASE__STATEMENT_TIMEOUT", "2s"),
            ("RESTGUARD_SERVER__REQUEST_TIMEOUT", "3s"),
        ],
    );
    create_user(&server, &direct, "alice", "pw-alice-123");
    let key = server.obtain_token("alice", "pw-alice-123").await;
    let auth = token(&key);
    assert_eq!(server.get("/api/me/", Some(&auth)).await.status, 200);

    proxy.hang();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // Nothing answers and nothing closes: still a 503 within the configured timeouts.
    let started = Instant::now();
    let replies = futures_join(&server, &auth, 4).await;
    for reply in &replies {
        assert_unavailable(reply, "GET /api/me/ into a black hole");
    }
    assert_unavailable(
        &server.get("/readyz", None).await,
        "/readyz into a black hole",
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "black-hole answers took {:?}",
        started.elapsed()
    );

    proxy.restore();
    within(
        Duration::from_secs(10),
        "recovery after the black hole",
        || async { server.get("/readyz", None).await.status == 200 },
    )
    .await;
    assert_eq!(server.get("/api/me/", Some(&auth)).await.status, 200);
}

/// `n` concurrent `GET /api/me/` with `auth`.
async fn futures_join(server: &Server, auth: &str, n: usize) -> Vec<Reply> {
    let mut handles = Vec::new();
    for _ in 0..n {
        let client = server.client.clone();
        let url = server.url("/api/me/");
        let auth = auth.to_owned();
        handles.push(tokio::spawn(async move {
            let response = client
                .get(url)
                .header("Authorization", auth)
                .send()
                .await
                .expect("request");
            Reply::read(response).await
        }));
    }
    let mut replies = Vec::new();
    for h in handles {
        replies.push(h.await.expect("join"));
    }
    replies
}
