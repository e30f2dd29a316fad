//! Forward-auth (`/auth/verify`, CONTRACT §7) behind a real nginx: `auth_request` to
//! restguard, a tiny upstream on loopback that echoes the `X-Auth-*` headers it receives, and
//! restguard's own answers (401, 403, 429 with their bodies and headers) passed through to the
//! client. Also the endpoint alone: Traefik style (`X-Forwarded-*` headers) and Envoy
//! `ext_authz` style (the original method and path under `/auth/verify`).
//!
//! The trust rules (CONTRACT §7) are attacked here: a client's own `X-Forwarded-*` /
//! `X-Original-*` headers through nginx with the configuration of `docs/scale-out.md` pasted
//! verbatim (read from the file, so the docs and this test cannot drift), upstream paths
//! named like restguard's own endpoints, percent-encoded, dot-segment and double-slash
//! variants of a protected path, and missing, repeated or second-spelling headers.
//!
//! The nginx tests need Debian's `nginx` (`.ci/run` installs it); without it they print why
//! they skip, and fail under `RESTGUARD_REQUIRE_SERVICES=1`.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{http::HeaderMap, Json, Router};
use common::{token, Server};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[throttle]
num_proxies = 1
scopes = { burst = "2/m" }

[[route]]
path = "/app/public/"
permissions = ["allow_any"]

[[route]]
path = "/app/admin/"
permissions = ["is_admin_user"]

[[route]]
path = "/app/limited/"
throttles = ["burst"]

[[route]]
path = "/app/readonly/"
methods = ["GET", "HEAD"]
permissions = ["allow_any"]
"#;

/// A restguard server with [`CONFIG`] and a user `alice` with a token.
fn restguard() -> (Server, String, tempfile::TempDir) {
    restguard_with(&[])
}

/// [`restguard`] with extra environment.
fn restguard_with(env: &[(&str, &str)]) -> (Server, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("restguard.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let mut all = vec![("RESTGUARD_CONFIG", config.to_str().expect("utf-8 path"))];
    all.extend_from_slice(env);
    let server = Server::start_with_env(&all);
    let out = common::cli_in(
        server.dir(),
        &["user", "create", "alice", "--password-stdin"],
        Some(b"pw-alice-123\n"),
        &[("RESTGUARD_CONFIG", config.to_str().expect("utf-8 path"))],
    );
    out.assert_ok();
    let out = common::cli_in(
        server.dir(),
        &["token", "create", "alice"],
        None,
        &[("RESTGUARD_CONFIG", config.to_str().expect("utf-8 path"))],
    );
    out.assert_ok();
    let key = out.stdout.trim_end().to_owned();
    (server, key, dir)
}

#[tokio::test]
async fn verify_endpoint_answers_for_the_original_request() {
    let (server, key, _dir) = restguard();
    let verify = |uri: &'static str, method: &'static str, auth: Option<String>| {
        let mut request = server
            .client
            .get(server.url("/auth/verify"))
            .header("X-Forwarded-Uri", uri)
            .header("X-Forwarded-Method", method);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        async move { common::Reply::read(request.send().await.expect("request")).await }
    };
    let ok = verify("/app/private/x?y=1", "GET", Some(token(&key))).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.headers["x-auth-user"], "alice");
    assert_eq!(ok.headers["x-auth-user-id"], "1");
    assert_eq!(ok.headers["x-auth-scheme"], "token");
    let anonymous = verify("/app/private/", "GET", None).await;
    anonymous.assert(
        401,
        Some("Token"),
        &json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}),
    );
    let public = verify("/app/public/page", "POST", None).await;
    assert_eq!(public.status, 200, "{public:?}");
    assert!(public.headers.get("x-auth-user").is_none());
    let admin = verify("/app/admin/", "GET", Some(token(&key))).await;
    assert_eq!(admin.status, 403, "{admin:?}");
    assert_eq!(admin.json["code"], "permission_denied");
    let bad = verify("/app/private/", "GET", Some(token("nope"))).await;
    bad.assert(
        401,
        Some("Token"),
        &json!({"detail": "Invalid token.", "code": "authentication_failed"}),
    );
    server.get("/auth/verify", Some(&token(&key))).await.assert(
        400,
        None,
        &invalid_header("Missing X-Forwarded-Uri header."),
    );
}

/// An upstream that answers every request with the `X-Auth-*` headers it received.
/// Envoy's HTTP `ext_authz` with `path_prefix: /auth/verify`: the check repeats the original
/// method, path and query under the prefix, with no `X-Forwarded-*` headers, and forwards the
/// credentials (`allowed_headers`).
#[tokio::test]
async fn verify_endpoint_answers_envoy_ext_authz_checks() {
    let (server, key, _dir) = restguard();
    let check = |method: &'static str, path: &'static str, auth: Option<String>| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = server.client.request(method, server.url(path));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        async move { common::Reply::read(request.send().await.expect("request")).await }
    };
    let ok = check(
        "DELETE",
        "/auth/verify/app/private/x?y=1",
        Some(token(&key)),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.headers["x-auth-user"], "alice");
    assert_eq!(ok.headers["x-auth-scheme"], "token");
    let anonymous = check("POST", "/auth/verify/app/private/", None).await;
    anonymous.assert(
        401,
        Some("Token"),
        &json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}),
    );
    let public = check("PUT", "/auth/verify/app/public/page", None).await;
    assert_eq!(public.status, 200, "{public:?}");
    assert!(public.headers.get("x-auth-user").is_none());
    let admin = check("GET", "/auth/verify/app/admin/", Some(token(&key))).await;
    assert_eq!(admin.status, 403, "{admin:?}");
    assert_eq!(admin.json["code"], "permission_denied");
    // Envoy's form describes itself: a header that would describe another request (a client
    // may have written it, if the proxy passes client headers on) is refused.
    for name in [
        "X-Forwarded-Uri",
        "X-Original-URI",
        "X-Forwarded-Method",
        "X-Original-Method",
    ] {
        let value = if name.ends_with("Method") {
            "GET"
        } else {
            "/app/public/"
        };
        let described = server
            .client
            .post(server.url("/auth/verify/app/private/"))
            .header(name, value)
            .header("Authorization", token(&key))
            .send()
            .await
            .expect("request");
        common::Reply::read(described).await.assert(
            400,
            None,
            &invalid_header(&format!("Unexpected {name} header.")),
        );
    }
    // The site root: `/auth/verify/` describes `/` (the default policy).
    check("GET", "/auth/verify/", None).await.assert(
        401,
        Some("Token"),
        &json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}),
    );
    let root = check("GET", "/auth/verify/", Some(token(&key))).await;
    assert_eq!(root.status, 200, "{root:?}");
    assert_eq!(root.headers["x-auth-user"], "alice");
    // A prefix-only path is not a described request.
    let bare = check("GET", "/auth/verifyx", Some(token(&key))).await;
    assert_eq!(bare.status, 404, "{bare:?}");
}

async fn upstream() -> SocketAddr {
    async fn echo(headers: HeaderMap) -> Json<Value> {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Json(json!({
            "upstream": true,
            "user": get("x-auth-user"),
            "user_id": get("x-auth-user-id"),
            "scheme": get("x-auth-scheme"),
            "scopes": get("x-auth-scopes"),
            "client_id": get("x-auth-client-id"),
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("upstream listener");
    let addr = listener.local_addr().expect("upstream address");
    // Every method: what reaches the upstream is what the proxy let through.
    let app = Router::new().fallback(echo);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// nginx in the foreground with its own prefix directory; killed on drop.
struct Nginx {
    child: Child,
    base: String,
    /// `127.0.0.1:PORT`, for [`raw_request`].
    addr: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx configuration block of `docs/scale-out.md`, exactly as an operator pastes it.
fn documented_nginx_block() -> String {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scale-out.md");
    let text = std::fs::read_to_string(&docs).expect("docs/scale-out.md");
    let start = text
        .find("```nginx\n")
        .expect("an nginx block in docs/scale-out.md")
        + 9;
    let len = text[start..].find("\n```").expect("the nginx block's end");
    text[start..start + len].to_owned()
}

/// Replaces the one occurrence of `from` (the docs' placeholder address) with `to`.
fn replace_once(block: &str, from: &str, to: &str) -> String {
    assert_eq!(
        block.matches(from).count(),
        1,
        "the documented nginx block must contain {from:?} once:\n{block}"
    );
    block.replacen(from, to, 1)
}

/// A runnable nginx configuration: the documented block with this test's addresses, inside
/// the minimal main context a foreground nginx with its own prefix directory needs.
fn nginx_config(dir: &Path, port: u16, restguard: &str, app: SocketAddr) -> String {
    let d = dir.display();
    let block = documented_nginx_block();
    let site = replace_once(
        &block,
        "server 127.0.0.1:8000;",
        &format!("server {restguard};"),
    );
    let site = replace_once(&site, "server 127.0.0.1:8080;", &format!("server {app};"));
    let site = replace_once(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{site}
}}
"#
    )
}

async fn start_nginx(dir: &Path, restguard: &str, app: SocketAddr) -> Option<Nginx> {
    let Some(binary) = nginx_binary() else {
        assert!(
            !restguard_store::testing::services_required(),
            "nginx is not installed but RESTGUARD_REQUIRE_SERVICES=1 (apt-get install nginx)"
        );
        eprintln!(
            "skipping the nginx forward-auth test: nginx is not installed (apt-get install nginx)"
        );
        return None;
    };
    let port = free_port();
    let config = dir.join("nginx.conf");
    std::fs::write(&config, nginx_config(dir, port, restguard, app)).expect("nginx config");
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nginx");
    let nginx = Nginx {
        child,
        base: format!("http://127.0.0.1:{port}"),
        addr: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(nginx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_passes_restguard_answers_through() {
    let (server, key, _dir) = restguard();
    let app = upstream().await;
    let nginx_dir = tempfile::tempdir().expect("nginx dir");
    let Some(nginx) = start_nginx(nginx_dir.path(), &server.addr, app).await else {
        return;
    };
    let client = reqwest::Client::new();
    let get = |path: &str, auth: Option<String>| {
        let mut request = client.get(format!("{}{path}", nginx.base));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        // A client cannot smuggle its own identity to the upstream.
        request = request
            .header("X-Auth-User", "mallory")
            .header("X-Auth-Scopes", "admin")
            .header("X-Auth-Client-Id", "mallory-app");
        async move { common::Reply::read(request.send().await.expect("request")).await }
    };

    // Allowed: the upstream answers and sees who it is.
    let ok = get("/app/private/x?y=1", Some(token(&key))).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        ok.json,
        json!({"upstream": true, "user": "alice", "user_id": "1", "scheme": "token", "scopes": null, "client_id": null})
    );
    // Open route, anonymous: upstream, no identity (and not the client's forged one).
    let public = get("/app/public/", None).await;
    assert_eq!(public.status, 200, "{public:?}");
    assert_eq!(
        public.json,
        json!({"upstream": true, "user": null, "user_id": null, "scheme": null, "scopes": null, "client_id": null})
    );
    // 401 with restguard's challenge and body.
    get("/app/private/", None).await.assert(
        401,
        Some("Token"),
        &json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}),
    );
    get("/app/private/", Some(token("nope"))).await.assert(
        401,
        Some("Token"),
        &json!({"detail": "Invalid token.", "code": "authentication_failed"}),
    );
    // 403.
    get("/app/admin/", Some(token(&key))).await.assert(
        403,
        None,
        &json!({"detail": "You do not have permission to perform this action.", "code": "permission_denied"}),
    );
    // 429 after the scope's 2 requests a minute, with Retry-After.
    for _ in 0..2 {
        assert_eq!(get("/app/limited/", Some(token(&key))).await.status, 200);
    }
    let limited = get("/app/limited/", Some(token(&key))).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(limited.json["code"], "throttled");
    drop(nginx);
}

/// `{"detail": detail, "code": "invalid_header"}`.
fn invalid_header(detail: &str) -> Value {
    json!({"detail": detail, "code": "invalid_header"})
}

/// The 400 for an original path that cannot be normalised.
fn refused_path(reason: &str) -> Value {
    invalid_header(&format!("Invalid original path: {reason}."))
}

fn permission_denied() -> Value {
    json!({"detail": "You do not have permission to perform this action.", "code": "permission_denied"})
}

/// A response read from a raw exchange.
#[derive(Debug)]
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    json: Value,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn assert(&self, status: u16, challenge: Option<&str>, body: &Value) {
        assert_eq!(self.status, status, "status of {self:#?}");
        assert_eq!(
            self.header("www-authenticate"),
            challenge,
            "WWW-Authenticate of {self:#?}"
        );
        assert_eq!(&self.json, body, "body of {self:#?}");
    }
}

/// One HTTP/1.0 exchange with the request target sent byte for byte as given (an HTTP client
/// library would resolve `..` and `.` first, which is exactly what an attacker does not do).
async fn raw_request(addr: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> RawReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!("{method} {target} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.expect("read response");
        bytes
    };
    let bytes = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("a response within 30 s");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {text:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    RawReply {
        status,
        headers,
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// A forward-auth check in the header form, with any headers.
async fn verify_with(server: &Server, headers: &[(&str, &str)]) -> common::Reply {
    let mut request = server.client.get(server.url("/auth/verify"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    common::Reply::read(request.send().await.expect("request")).await
}

/// The attack of issue 10 through nginx, configured exactly as `docs/scale-out.md` says: nginx
/// passes the client's own headers on to the `auth_request` subrequest, so a client that
/// writes `X-Forwarded-Uri: /healthz` or `X-Forwarded-Method: GET` must not be believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_documented_config_ignores_the_clients_own_forwarded_headers() {
    let (server, key, _dir) = restguard();
    let app = upstream().await;
    let nginx_dir = tempfile::tempdir().expect("nginx dir");
    let Some(nginx) = start_nginx(nginx_dir.path(), &server.addr, app).await else {
        return;
    };
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut request = client.request(method, format!("{}{path}", nginx.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { common::Reply::read(request.send().await.expect("request")).await }
    };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let anonymous_401 = |reply: common::Reply| {
        reply.assert(401, Some("Token"), &common::not_authenticated());
    };
    // The path a client claims is not the path it asked for.
    anonymous_401(
        send(
            get.clone(),
            "/app/private/",
            &[("X-Forwarded-Uri", "/healthz")],
        )
        .await,
    );
    anonymous_401(
        send(
            get.clone(),
            "/app/private/",
            &[
                ("X-Forwarded-Uri", "/app/public/"),
                ("X-Forwarded-Method", "GET"),
            ],
        )
        .await,
    );
    // Nor the method: POST is not open on /app/readonly/, whatever the client says.
    anonymous_401(
        send(
            post.clone(),
            "/app/readonly/",
            &[("X-Forwarded-Method", "GET")],
        )
        .await,
    );
    // The other spelling, which nginx does not replace, is refused outright.
    send(
        get.clone(),
        "/app/private/",
        &[("X-Original-URI", "/app/public/")],
    )
    .await
    .assert(
        400,
        None,
        &invalid_header("Unexpected X-Original-URI header."),
    );
    send(
        get.clone(),
        "/app/readonly/",
        &[("X-Original-Method", "GET")],
    )
    .await
    .assert(
        400,
        None,
        &invalid_header("Unexpected X-Original-Method header."),
    );
    // What the configuration must still let through — with no identity the client wrote.
    let readonly = send(
        get.clone(),
        "/app/readonly/",
        &[
            ("X-Auth-User", "mallory"),
            ("X-Auth-User-Id", "1"),
            ("X-Auth-Scheme", "token"),
            ("X-Auth-Scopes", "admin"),
            ("X-Auth-Client-Id", "mallory-app"),
        ],
    )
    .await;
    assert_eq!(readonly.status, 200, "{readonly:?}");
    assert_eq!(
        readonly.json,
        json!({"upstream": true, "user": null, "user_id": null, "scheme": null, "scopes": null, "client_id": null})
    );
    let authorized = token(&key);
    let written = send(
        post,
        "/app/readonly/",
        &[("Authorization", authorized.as_str())],
    )
    .await;
    assert_eq!(written.status, 200, "{written:?}");
    assert_eq!(
        written.json,
        json!({"upstream": true, "user": "alice", "user_id": "1", "scheme": "token", "scopes": null, "client_id": null})
    );
    drop(nginx);
}

/// A protected path spelled differently by the client still gets its route's policy through
/// nginx: nginx hands restguard the raw `$request_uri`, the upstream serves the decoded,
/// dot-resolved path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_protects_every_spelling_of_a_protected_path() {
    let (server, key, _dir) = restguard();
    let app = upstream().await;
    let nginx_dir = tempfile::tempdir().expect("nginx dir");
    let Some(nginx) = start_nginx(nginx_dir.path(), &server.addr, app).await else {
        return;
    };
    let authorized = token(&key);
    let auth = [("Authorization", authorized.as_str())];
    // The plain spelling: alice is not staff.
    raw_request(&nginx.addr, "GET", "/app/admin/", &auth)
        .await
        .assert(403, None, &permission_denied());
    for spelling in [
        "/app/%61dmin/",
        "/app/%61%64%6D%69%6E/",
        "//app/admin/",
        "/app//admin/",
        "/app/./admin/",
        "/app/public/../admin/",
        "/app/public/%2e%2e/admin/",
        "/app/public/%2E%2E/admin/x?back=/app/public/",
    ] {
        let reply = raw_request(&nginx.addr, "GET", spelling, &auth).await;
        assert_eq!(reply.status, 403, "{spelling}: {reply:#?}");
        reply.assert(403, None, &permission_denied());
    }
    raw_request(&nginx.addr, "GET", "/app%2Fadmin/", &auth)
        .await
        .assert(
            400,
            None,
            &refused_path("it contains an encoded slash (%2F)"),
        );
    // The public route is still public, however it is spelled.
    let public = raw_request(&nginx.addr, "GET", "/app/admin/../%70ublic/", &[]).await;
    assert_eq!(public.status, 200, "{public:#?}");
    assert_eq!(
        public.json,
        json!({"upstream": true, "user": null, "user_id": null, "scheme": null, "scopes": null, "client_id": null})
    );
    drop(nginx);
}

/// Every path restguard serves itself, as a path of the protected application: none of
/// restguard's own exemptions (open token endpoints, pages that check sessions themselves,
/// health and metrics) applies to it. The `[auth]` default decides.
const OWN_ENDPOINTS: [&str; 44] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/auth/verify",
    "/auth/verify/",
    "/auth/verify/app/x",
    "/api/ping/",
    "/api/me/",
    "/api-token-auth/",
    "/api/tokens/",
    "/api/tokens/1/",
    "/api/tokens/1/rotate/",
    "/api/auth/logout/",
    "/api/auth/logoutall/",
    "/api/token/",
    "/api/token/refresh/",
    "/api/token/verify/",
    "/api/token/blacklist/",
    "/api/token/sliding/",
    "/api/token/sliding/refresh/",
    "/api/token/jwks/",
    "/api/csrf/",
    "/api/session/login/",
    "/api/session/logout/",
    "/api-auth/login/",
    "/api-auth/logout/",
    "/static/restguard.css",
    "/static/account.js",
    "/account/",
    "/account/tokens/",
    "/admin/",
    "/admin/users/",
    "/admin/users/1/",
    "/admin/applications/",
    "/o/authorize/",
    "/o/token/",
    "/o/revoke_token/",
    "/o/introspect/",
    "/o/userinfo/",
    "/o/.well-known/openid-configuration",
    "/o/.well-known/jwks.json",
    "/o/logout/",
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/o",
];

#[tokio::test]
async fn upstream_paths_never_inherit_restguard_exemptions() {
    let (server, key, _dir) = restguard();
    for path in OWN_ENDPOINTS {
        for method in ["GET", "POST"] {
            let reply = verify_with(
                &server,
                &[("X-Forwarded-Uri", path), ("X-Forwarded-Method", method)],
            )
            .await;
            assert_eq!(reply.status, 401, "{method} {path}: {reply:?}");
            reply.assert(401, Some("Token"), &common::not_authenticated());
            // Envoy's form asks about the same path.
            let envoy =
                raw_request(&server.addr, method, &format!("/auth/verify{path}"), &[]).await;
            assert_eq!(envoy.status, 401, "Envoy {method} {path}: {envoy:?}");
            envoy.assert(401, Some("Token"), &common::not_authenticated());
        }
    }
    // The default policy, not an exemption: with credentials they pass as any path would.
    let authorized = token(&key);
    let ok = verify_with(
        &server,
        &[
            ("X-Forwarded-Uri", "/admin/users/"),
            ("X-Forwarded-Method", "POST"),
            ("Authorization", authorized.as_str()),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.headers["x-auth-user"], "alice");
}

/// Routes match the RFC 3986 normalised path: decoded, dot segments resolved, repeated `/`
/// collapsed, the query ignored.
#[tokio::test]
async fn routes_match_the_normalised_path() {
    let (server, key, _dir) = restguard();
    let authorized = token(&key);
    for spelling in [
        "/app/%61dmin/",
        "/app/%61%64%6d%69%6e/",
        "/app/public/../admin/",
        "/app/public/%2e%2e/admin/",
        "/app/public/.%2E/admin/",
        "//app/admin/",
        "/app///admin//",
        "/app/./admin/",
        "/app/%2e/admin/",
        "/./app/admin/",
        "/app/x/y/../../admin/?next=/app/public/",
    ] {
        let reply = verify_with(
            &server,
            &[
                ("X-Forwarded-Uri", spelling),
                ("X-Forwarded-Method", "GET"),
                ("Authorization", authorized.as_str()),
            ],
        )
        .await;
        assert_eq!(reply.status, 403, "{spelling}: {reply:?}");
        reply.assert(403, None, &permission_denied());
        let envoy = raw_request(
            &server.addr,
            "GET",
            &format!("/auth/verify{spelling}"),
            &[("Authorization", authorized.as_str())],
        )
        .await;
        assert_eq!(envoy.status, 403, "Envoy {spelling}: {envoy:?}");
        envoy.assert(403, None, &permission_denied());
    }
    // Open routes stay open under any spelling, and the query never moves the path.
    for spelling in [
        "/app/%70ublic/",
        "/app/admin/../public/",
        "/app/public/?x=/../admin/",
        "/app/public/x?/../../admin/",
    ] {
        let reply = verify_with(
            &server,
            &[("X-Forwarded-Uri", spelling), ("X-Forwarded-Method", "GET")],
        )
        .await;
        assert_eq!(reply.status, 200, "{spelling}: {reply:?}");
        assert!(reply.headers.get("x-auth-user").is_none(), "{reply:?}");
    }
}

/// Paths the upstream may read differently from restguard are refused, not guessed at.
#[tokio::test]
async fn paths_that_cannot_be_normalised_are_refused() {
    let (server, key, _dir) = restguard();
    let authorized = token(&key);
    let slash = "it contains an encoded slash (%2F)";
    let backslash = "it contains a backslash";
    let control = "it contains a NUL or another control character";
    let above = "a dot segment climbs above the root";
    let utf8 = "it is not valid UTF-8 once decoded";
    let escape = "it contains a malformed percent-escape";
    let relative = "it is not an absolute path";
    let fragment = "it contains a fragment (#)";
    let cases = [
        ("/app%2Fadmin/", slash),
        ("/app/%2fadmin/", slash),
        ("/app/public/..%2F..%2Fadmin/", slash),
        ("/app\\admin/", backslash),
        ("/app/%5Cadmin/", backslash),
        ("/app/%5cadmin/", backslash),
        ("/app/admin/%00", control),
        ("/app/%0Aadmin/", control),
        ("/app/%7F/", control),
        ("/..", above),
        ("/../app/admin/", above),
        ("/app/../../app/admin/", above),
        ("/%2e%2e/app/admin/", above),
        ("/app/%FF/", utf8),
        ("/app/%C3/", utf8),
        ("/app/%ED%A0%80/", utf8),
        ("/app/%zz/", escape),
        ("/app/admin/%4", escape),
        ("app/admin/", relative),
        ("http://upstream.example/app/admin/", relative),
        ("*", relative),
        ("/app/admin/#top", fragment),
    ];
    for (path, reason) in cases {
        let reply = verify_with(
            &server,
            &[
                ("X-Forwarded-Uri", path),
                ("X-Forwarded-Method", "GET"),
                ("Authorization", authorized.as_str()),
            ],
        )
        .await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        reply.assert(400, None, &refused_path(reason));
    }
    // Envoy's form: the request line carries the path.
    for (path, reason) in [
        ("/app%2Fadmin/", slash),
        ("/app/%5Cadmin/", backslash),
        ("/app/%00/", control),
        ("/..", above),
        ("/app/../../x", above),
        ("/app/%FF/", utf8),
    ] {
        let reply = raw_request(
            &server.addr,
            "GET",
            &format!("/auth/verify{path}"),
            &[("Authorization", authorized.as_str())],
        )
        .await;
        assert_eq!(reply.status, 400, "Envoy {path}: {reply:?}");
        reply.assert(400, None, &refused_path(reason));
    }
}

/// One header pair describes the original request; anything else is refused.
#[tokio::test]
async fn the_original_request_comes_from_one_header_pair() {
    let (server, key, _dir) = restguard();
    let authorized = token(&key);
    let auth = ("Authorization", authorized.as_str());
    let uri = ("X-Forwarded-Uri", "/app/private/");
    let method = ("X-Forwarded-Method", "GET");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![uri, auth], "Missing X-Forwarded-Method header."),
        (vec![method, auth], "Missing X-Forwarded-Uri header."),
        (vec![auth], "Missing X-Forwarded-Uri header."),
        (
            vec![uri, ("X-Forwarded-Uri", "/app/private/"), method, auth],
            "Multiple X-Forwarded-Uri headers.",
        ),
        (
            vec![uri, method, ("X-Forwarded-Method", "GET"), auth],
            "Multiple X-Forwarded-Method headers.",
        ),
        (
            vec![uri, method, ("X-Original-URI", "/app/private/"), auth],
            "Unexpected X-Original-URI header.",
        ),
        (
            vec![uri, method, ("X-Original-Method", "GET"), auth],
            "Unexpected X-Original-Method header.",
        ),
        (
            vec![
                ("X-Original-URI", "/app/private/"),
                ("X-Original-Method", "GET"),
                auth,
            ],
            "Unexpected X-Original-URI header.",
        ),
        (
            vec![uri, ("X-Forwarded-Method", "G(T"), auth],
            "Invalid X-Forwarded-Method header.",
        ),
        (
            vec![uri, ("X-Forwarded-Method", ""), auth],
            "Invalid X-Forwarded-Method header.",
        ),
        (
            vec![("X-Forwarded-Uri", ""), method, auth],
            "Invalid X-Forwarded-Uri header.",
        ),
    ];
    for (headers, detail) in cases {
        let reply = verify_with(&server, &headers).await;
        assert_eq!(reply.status, 400, "{headers:?}: {reply:?}");
        reply.assert(400, None, &invalid_header(detail));
    }
    // The pair alone is a described request.
    let ok = verify_with(&server, &[uri, method, auth]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.headers["x-auth-user"], "alice");
}

/// `forward_auth.uri_header` / `forward_auth.method_header` choose the pair (nginx setups
/// that keep `X-Original-URI`); the default spelling is then the one refused.
#[tokio::test]
async fn a_configured_header_pair_replaces_the_default() {
    let (server, key, _dir) = restguard_with(&[
        ("RESTGUARD_FORWARD_AUTH__URI_HEADER", "X-Original-URI"),
        ("RESTGUARD_FORWARD_AUTH__METHOD_HEADER", "X-Original-Method"),
    ]);
    let authorized = token(&key);
    let auth = ("Authorization", authorized.as_str());
    let ok = verify_with(
        &server,
        &[
            ("X-Original-URI", "/app/private/"),
            ("X-Original-Method", "GET"),
            auth,
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.headers["x-auth-user"], "alice");
    verify_with(
        &server,
        &[
            ("X-Original-URI", "/app/admin/"),
            ("X-Original-Method", "GET"),
            auth,
        ],
    )
    .await
    .assert(403, None, &permission_denied());
    for (headers, detail) in [
        (
            vec![
                ("X-Forwarded-Uri", "/app/private/"),
                ("X-Forwarded-Method", "GET"),
                auth,
            ],
            "Unexpected X-Forwarded-Uri header.",
        ),
        (
            vec![
                ("X-Original-URI", "/app/private/"),
                ("X-Original-Method", "GET"),
                ("X-Forwarded-Method", "GET"),
            ],
            "Unexpected X-Forwarded-Method header.",
        ),
        (
            vec![("X-Original-Method", "GET")],
            "Missing X-Original-URI header.",
        ),
        (
            vec![("X-Original-URI", "/app/public/")],
            "Missing X-Original-Method header.",
        ),
    ] {
        let reply = verify_with(&server, &headers).await;
        assert_eq!(reply.status, 400, "{headers:?}: {reply:?}");
        reply.assert(400, None, &invalid_header(detail));
    }
}
