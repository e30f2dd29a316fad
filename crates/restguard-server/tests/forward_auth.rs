//! Forward-auth (`/auth/verify`, CONTRACT §7) behind a real nginx: `auth_request` to
//! restguard, a tiny upstream on loopback that echoes the `X-Auth-*` headers it receives, and
//! restguard's own answers (401, 403, 429 with their bodies and headers) passed through to the
//! client. Also the endpoint alone: Traefik style (`X-Forwarded-*` headers) and Envoy
//! `ext_authz` style (the original method and path under `/auth/verify`).
//!
//! The nginx test needs Debian's `nginx` (`.ci/run` installs it); without it the test prints
//! why it skips, and fails under `RESTGUARD_REQUIRE_SERVICES=1`.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{http::HeaderMap, routing::get, Json, Router};
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
"#;

/// A restguard server with [`CONFIG`] and a user `alice` with a token.
fn restguard() -> (Server, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("restguard.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let server =
        Server::start_with_env(&[("RESTGUARD_CONFIG", config.to_str().expect("utf-8 path"))]);
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
    let missing = server.get("/auth/verify", Some(&token(&key))).await;
    assert_eq!(missing.status, 400, "{missing:?}");
    assert_eq!(missing.json["code"], "invalid_header");
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
    // The original method comes from the check itself, so an explicit header still wins.
    let described = server
        .client
        .get(server.url("/auth/verify/ignored"))
        .header("X-Forwarded-Uri", "/app/admin/")
        .header("Authorization", token(&key))
        .send()
        .await
        .expect("request");
    assert_eq!(described.status(), 403);
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
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("upstream listener");
    let addr = listener.local_addr().expect("upstream address");
    let app = Router::new().fallback(get(echo));
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
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_config(dir: &Path, port: u16, restguard: &str, app: SocketAddr) -> String {
    let d = dir.display();
    let verify_headers = r#"
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"#;
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
    upstream restguard {{ server {restguard}; }}
    upstream app {{ server {app}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_restguard_verify;
            auth_request_set $auth_user $upstream_http_x_auth_user;
            auth_request_set $auth_user_id $upstream_http_x_auth_user_id;
            auth_request_set $auth_scheme $upstream_http_x_auth_scheme;
            proxy_set_header X-Auth-User $auth_user;
            proxy_set_header X-Auth-User-Id $auth_user_id;
            proxy_set_header X-Auth-Scheme $auth_scheme;
            # auth_request passes only 401/403 (with nginx's own body) and turns anything
            # else (429, 503) into 500: ask restguard again for its whole answer.
            error_page 401 403 500 = @restguard_denied;
            proxy_pass http://app;
        }}
        location = /_restguard_verify {{
            internal;
            proxy_pass http://restguard/auth/verify;{verify_headers}
        }}
        location @restguard_denied {{
            rewrite ^ /auth/verify break;
            proxy_pass http://restguard;{verify_headers}
        }}
    }}
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
        request = request.header("X-Auth-User", "mallory");
        async move { common::Reply::read(request.send().await.expect("request")).await }
    };

    // Allowed: the upstream answers and sees who it is.
    let ok = get("/app/private/x?y=1", Some(token(&key))).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        ok.json,
        json!({"upstream": true, "user": "alice", "user_id": "1", "scheme": "token"})
    );
    // Open route, anonymous: upstream, no identity (and not the client's forged one).
    let public = get("/app/public/", None).await;
    assert_eq!(public.status, 200, "{public:?}");
    assert_eq!(
        public.json,
        json!({"upstream": true, "user": null, "user_id": null, "scheme": null})
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
