//! End-to-end tests of the JWT endpoints and authenticator against the real binary, plus
//! interop with Python's PyJWT (skipped when python3/PyJWT are missing, unless
//! `RESTGUARD_REQUIRE_SERVICES=1`).

#![allow(missing_docs, unreachable_pub)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

// ---------- a small harness of our own ----------

const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "an-hs256-secret-shared-with-pyjwt-0123456789";
/// `jwt.user_cache_ttl` (1 s) plus a margin.
const CACHE_WAIT: Duration = Duration::from_millis(1_300);

fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_restguard"));
    cmd.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RESTGUARD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RESTGUARD_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

struct Cli {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn cli(dir: &Path, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Cli {
    let mut cmd = command(dir, env);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn restguard");
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            // A CLI that exits before reading its input has answered; not a harness failure.
            if let Err(e) = pipe.write_all(input.as_bytes()) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {e}");
            }
        }
    }
    let out = child.wait_with_output().expect("wait");
    Cli {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

struct Server {
    child: Child,
    base: String,
    dir: Arc<TempDir>,
    env: Vec<(String, String)>,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        let dir = Arc::new(
            tempfile::Builder::new()
                .prefix("restguard-jwt-")
                .tempdir()
                .expect("temp dir"),
        );
        Self::start_in(dir, env)
    }

    /// Another server on the same directory (same database).
    fn start_in(dir: Arc<TempDir>, env: &[(&str, &str)]) -> Server {
        let mut child = command(dir.path(), env)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn restguard serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("restguard listening on http://") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!("restguard serve did not start; stderr:\n{log}");
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            dir,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            stderr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    /// What the server wrote on stderr so far.
    fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Cli {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        cli(self.dir.path(), &env, args, stdin)
    }

    fn create_user(&self, name: &str) {
        let out = self.cli(
            &["user", "create", name, "--password-stdin"],
            Some(&format!("{PASSWORD}\n")),
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Option<String>, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    async fn get(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        split(request.send().await.expect("request")).await
    }

    async fn me(&self, access: &str) -> (StatusCode, Option<String>, Value) {
        self.get("/api/me/", Some(&format!("Bearer {access}")))
            .await
    }

    async fn obtain(&self, username: &str) -> (String, String) {
        let (status, _, body) = self
            .post(
                "/api/token/",
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 200, "{body}; server log: {}", self.log());
        (
            body["access"].as_str().expect("access").to_owned(),
            body["refresh"].as_str().expect("refresh").to_owned(),
        )
    }
}

async fn split(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, challenge, body)
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

fn header(token: &str) -> Value {
    let h = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("b64")).expect("json")
}

fn invalid(message: &str) -> Value {
    json!({
        "detail": "Given token not valid for any token type",
        "code": "token_not_valid",
        "messages": [{"token_class": "AccessToken", "token_type": "access", "message": message}],
    })
}

const BEARER: &str = "Bearer realm=\"api\"";

// ---------- the Simple JWT client flow ----------

#[tokio::test]
async fn simple_jwt_client_flow() {
    let server = Server::start(&[]);
    server.create_user("alice");

    // obtain
    let (status, _, body) = server
        .post(
            "/api/token/",
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["refresh", "access"]);
    let access = body["access"].as_str().unwrap().to_owned();
    let refresh = body["refresh"].as_str().unwrap().to_owned();
    let c = claims(&access);
    assert_eq!(c["token_type"], "access");
    assert_eq!(c["user_id"], "1");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    assert_eq!(claims(&refresh)["token_type"], "refresh");
    assert_eq!(
        claims(&refresh)["exp"].as_i64().unwrap() - claims(&refresh)["iat"].as_i64().unwrap(),
        86_400
    );
    assert_eq!(header(&access)["alg"], "HS256");
    assert!(header(&access)["kid"].is_string());

    // call
    let (status, _, me) = server.me(&access).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["auth"], json!({"scheme": "jwt"}));

    // verify
    for token in [&access, &refresh] {
        let (status, _, body) = server
            .post("/api/token/verify/", json!({"token": token}))
            .await;
        assert_eq!((status, body), (StatusCode::OK, json!({})));
    }

    // refresh (rotation on by default)
    let (status, _, body) = server
        .post("/api/token/refresh/", json!({"refresh": refresh}))
        .await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["access", "refresh"]);
    let access2 = body["access"].as_str().unwrap().to_owned();
    let refresh2 = body["refresh"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    assert_eq!(server.me(&access2).await.0, 200);
    // The old refresh token is dead at once.
    let (status, _, body) = server
        .post("/api/token/verify/", json!({"token": refresh}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"detail": "Token is blacklisted", "code": "token_not_valid"})
    );

    // blacklist (logout)
    let (status, _, body) = server
        .post("/api/token/blacklist/", json!({"refresh": refresh2}))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, challenge, body) = server
        .post("/api/token/blacklist/", json!({"refresh": refresh2}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(BEARER));
    assert_eq!(
        body,
        json!({"detail": "Token is blacklisted", "code": "token_not_valid"})
    );
    let (status, _, body) = server
        .post("/api/token/refresh/", json!({"refresh": refresh2}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "token_not_valid");
    let (status, _, body) = server
        .post("/api/token/verify/", json!({"token": refresh2}))
        .await;
    assert_eq!(
        (status, body["detail"].clone()),
        (StatusCode::UNAUTHORIZED, json!("Token is blacklisted"))
    );
}

#[tokio::test]
async fn obtain_errors() {
    let server = Server::start(&[]);
    server.create_user("alice");
    let out = server.cli(
        &["user", "create", "idle", "--password-stdin", "--inactive"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(out.code, Some(0));
    let no_account = json!({"detail": "No active account found with the given credentials", "code": "no_active_account"});
    for body in [
        json!({"username": "alice", "password": "wrong"}),
        json!({"username": "nobody", "password": PASSWORD}),
        json!({"username": "idle", "password": PASSWORD}),
    ] {
        let (status, challenge, got) = server.post("/api/token/", body).await;
        assert_eq!(status, 401);
        assert_eq!(challenge.as_deref(), Some(BEARER));
        assert_eq!(got, no_account);
    }
    let (status, _, body) = server
        .post("/api/token/", json!({"username": "alice"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"password": ["This field is required."]}));
    let (status, _, body) = server.post("/api/token/", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"username": ["This field is required."], "password": ["This field is required."]})
    );
    let (status, _, body) = server.post("/api/token/refresh/", json!({})).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"refresh": ["This field is required."]})
        )
    );
    let (status, _, body) = server
        .post("/api/token/verify/", json!({"token": ""}))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"token": ["This field may not be blank."]})
        )
    );
    // Form bodies work as in DRF.
    let response = server
        .http
        .post(format!("{}/api/token/", server.base))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn refresh_reuse_revokes_the_family() {
    let server = Server::start(&[]);
    server.create_user("alice");
    let (_, r0) = server.obtain("alice").await;
    let (_, _, b1) = server
        .post("/api/token/refresh/", json!({"refresh": r0}))
        .await;
    let r1 = b1["refresh"].as_str().unwrap().to_owned();
    // An attacker replays r0: refused, and r1 (the legitimate client's) dies with it.
    let (status, challenge, body) = server
        .post("/api/token/refresh/", json!({"refresh": r0}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(BEARER));
    assert_eq!(
        body,
        json!({"detail": "Token is blacklisted", "code": "token_not_valid"})
    );
    let (status, _, _) = server
        .post("/api/token/refresh/", json!({"refresh": r1}))
        .await;
    assert_eq!(status, 401);
    // Other logins are unaffected.
    let (_, other) = server.obtain("alice").await;
    let (status, _, _) = server
        .post("/api/token/refresh/", json!({"refresh": other}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn hundred_concurrent_refreshes_exactly_one_succeeds() {
    let server = Arc::new(Server::start(&[]));
    server.create_user("alice");
    let (_, refresh) = server.obtain("alice").await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let server = server.clone();
            let refresh = refresh.clone();
            tokio::spawn(async move {
                server
                    .post("/api/token/refresh/", json!({"refresh": refresh}))
                    .await
                    .0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!((ok, refused), (1, 99), "{statuses:?}");
}

#[tokio::test]
async fn bad_tokens_on_a_protected_route_are_401_never_500() {
    // JWT first in the chain, so its challenge applies.
    let server = Server::start(&[("RESTGUARD_AUTH__AUTHENTICATORS", "[\"jwt\",\"token\"]")]);
    server.create_user("alice");
    let (access, refresh) = server.obtain("alice").await;
    let parts: Vec<&str> = access.split('.').collect();
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let mut tampered_claims = claims(&access);
    tampered_claims["user_id"] = json!("2");
    let cases: Vec<(String, Value)> = vec![
        (
            format!("{}.{}.", enc(json!({"alg": "none"})), parts[1]) + "AAAA",
            invalid("Token is invalid"),
        ),
        (
            format!("{}.{}.{}", parts[0], enc(tampered_claims), parts[2]),
            invalid("Token is invalid"),
        ),
        (
            format!(
                "{}.{}.{}",
                enc(json!({"alg": "HS256", "kid": "nope"})),
                parts[1],
                parts[2]
            ),
            invalid("Token is invalid"),
        ),
        (
            format!(
                "{}.{}.{}",
                enc(json!({"alg": "HS256", "jku": "https://x"})),
                parts[1],
                parts[2]
            ),
            invalid("Token is invalid"),
        ),
        (
            format!("A{}.{}.{}", parts[0], parts[1], parts[2]),
            invalid("Token is invalid"),
        ),
        (
            format!("{}.{}.{}", parts[0], "A".repeat(5000), parts[2]),
            invalid("Token is invalid"),
        ),
        (refresh.clone(), invalid("Token has wrong type")),
    ];
    for (token, expected) in cases {
        let (status, challenge, body) = server.me(&token).await;
        assert_eq!(status, 401, "{token}: {body}");
        assert_eq!(challenge.as_deref(), Some(BEARER));
        assert_eq!(body, expected, "{token}");
    }
    // Not JWT-shaped: the JWT authenticator abstains (room for OAuth2's opaque tokens).
    for value in [
        "Bearer opaque_oauth2_token",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer a.b=.c",
    ] {
        let (status, challenge, body) = server.get("/api/me/", Some(value)).await;
        assert_eq!(status, 401);
        assert_eq!(challenge.as_deref(), Some(BEARER));
        assert_eq!(body["code"], "not_authenticated", "{value}");
    }
    // `Bearer` is case-sensitive, as in Simple JWT.
    let (status, _, body) = server
        .get("/api/me/", Some(&format!("bearer {access}")))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("not_authenticated"))
    );
    // Every token endpoint: garbage is 401, never 500.
    for path in ["/api/token/refresh/", "/api/token/blacklist/"] {
        for junk in ["x", "a.b.c", "a.b", &"e".repeat(10_000)] {
            let (status, _, body) = server.post(path, json!({"refresh": junk})).await;
            assert_eq!(status, 401, "{path} {junk}");
            assert_eq!(
                body,
                json!({"detail": "Token is invalid", "code": "token_not_valid"})
            );
        }
    }
    // Access where refresh is expected.
    let (status, _, body) = server
        .post("/api/token/refresh/", json!({"refresh": access}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"detail": "Token has wrong type", "code": "token_not_valid"})
    );
    // Default chain (token first): same body, the Token challenge.
    let default = Server::start(&[]);
    let (status, challenge, body) = default.me("a.b.c").await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Token"));
    assert_eq!(body, invalid("Token is invalid"));
}

#[tokio::test]
async fn account_changes_invalidate_tokens() {
    let server = Server::start(&[]);
    for name in ["alice", "bob", "carol"] {
        server.create_user(name);
    }
    let (alice_access, alice_refresh) = server.obtain("alice").await;
    let (bob_access, bob_refresh) = server.obtain("bob").await;
    let (carol_access, _) = server.obtain("carol").await;
    for access in [&alice_access, &bob_access, &carol_access] {
        assert_eq!(server.me(access).await.0, 200);
    }
    assert_eq!(
        server
            .cli(
                &["user", "set-password", "alice", "--password-stdin"],
                Some(&format!("{PASSWORD}\n"))
            )
            .code,
        Some(0)
    );
    assert_eq!(
        server.cli(&["user", "deactivate", "bob"], None).code,
        Some(0)
    );
    assert_eq!(server.cli(&["user", "delete", "carol"], None).code, Some(0));
    // A new login right after the password change works at once.
    let (fresh, _) = server.obtain("alice").await;
    assert_eq!(server.me(&fresh).await.0, 200);
    tokio::time::sleep(CACHE_WAIT).await;
    assert_eq!(server.me(&fresh).await.0, 200);

    let expect = |code: &str, detail: &str| json!({"detail": detail, "code": code});
    let (status, _, body) = server.me(&alice_access).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        expect("password_changed", "The user's password has been changed.")
    );
    let (status, _, body) = server
        .post("/api/token/refresh/", json!({"refresh": alice_refresh}))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("password_changed"))
    );
    let (status, _, body) = server.me(&bob_access).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNAUTHORIZED,
            expect("user_inactive", "User is inactive")
        )
    );
    let (status, _, body) = server
        .post("/api/token/refresh/", json!({"refresh": bob_refresh}))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("user_inactive"))
    );
    let (status, _, body) = server.me(&carol_access).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNAUTHORIZED,
            expect("user_not_found", "User not found")
        )
    );
}

#[tokio::test]
async fn sliding_tokens() {
    let server = Server::start(&[]);
    server.create_user("alice");
    let (status, _, body) = server
        .post(
            "/api/token/sliding/",
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["token_type"], "sliding");
    assert!(claims(&token)["refresh_exp"].is_i64());
    assert_eq!(server.me(&token).await.0, 200);
    let (status, _, body) = server
        .post("/api/token/sliding/refresh/", json!({"token": token}))
        .await;
    assert_eq!(status, 200, "{body}");
    let slid = body["token"].as_str().unwrap();
    assert_eq!(claims(slid)["jti"], claims(&token)["jti"]);
    assert_eq!(server.me(slid).await.0, 200);
    let (status, _, body) = server
        .post("/api/token/verify/", json!({"token": slid}))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    // Sliding tokens are not refresh tokens.
    let (status, _, body) = server
        .post("/api/token/refresh/", json!({"refresh": slid}))
        .await;
    assert_eq!(
        (status, body["detail"].clone()),
        (StatusCode::UNAUTHORIZED, json!("Token has wrong type"))
    );
}

#[tokio::test]
async fn keys_rotate_list_and_a_second_instance() {
    let env = [("RESTGUARD_JWT__ALGORITHM", "EdDSA")];
    let first = Server::start(&env);
    first.create_user("alice");
    let (old_access, old_refresh) = first.obtain("alice").await;
    let old_kid = header(&old_access)["kid"].as_str().unwrap().to_owned();

    let list = first.cli(&["keys", "list"], None);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    // The OAuth2 provider's RS256 id_token key shares the store (its EdDSA key is this one).
    let lines: Vec<&str> = list
        .stdout
        .lines()
        .filter(|l| !l.contains("\tRS256\t"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", list.stdout);
    assert!(lines[1].starts_with(&format!("{old_kid}\tEdDSA\t")));
    assert!(lines[1].ends_with("\tsigning"));

    let rotated = first.cli(&["keys", "rotate"], None);
    assert_eq!(rotated.code, Some(0), "{}", rotated.stderr);
    let new_kid = rotated.stdout.trim().to_owned();
    assert!(!new_kid.is_empty() && new_kid != old_kid && !new_kid.contains('\n'));
    let list = first.cli(&["keys", "list"], None);
    let lines: Vec<&str> = list
        .stdout
        .lines()
        .filter(|l| !l.contains("\tRS256\t"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[1].contains("verifying until"), "{}", list.stdout);
    assert!(lines[2].starts_with(&new_kid) && lines[2].ends_with("\tsigning"));

    // A second instance on the same database signs with the new key and still accepts the
    // old one's tokens; the first instance accepts the new key's tokens (unknown kid → reload).
    let second = Server::start_in(first.dir.clone(), &env);
    let (new_access, _) = second.obtain("alice").await;
    assert_eq!(header(&new_access)["kid"], json!(new_kid));
    assert_eq!(second.me(&old_access).await.0, 200);
    assert_eq!(first.me(&new_access).await.0, 200);
    let (status, _, body) = second
        .post("/api/token/refresh/", json!({"refresh": old_refresh}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, _, jwks) = second.get("/api/token/jwks/", None).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);

    // A configured HS key cannot be rotated by the CLI: one-line error, exit 1.
    let dir = TempDir::new().unwrap();
    let out = cli(
        dir.path(),
        &[("RESTGUARD_JWT__SIGNING_KEY", SECRET)],
        &["keys", "rotate"],
        None,
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "));
    let out = cli(
        dir.path(),
        &[],
        &["keys", "rotate", "--algorithm", "none"],
        None,
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
}

#[tokio::test]
async fn flush_expired_deletes_jwt_rows() {
    // Lifetimes long enough that the blacklist call below still sees a live token on a
    // loaded machine, short enough to expire during the sleep.
    let server = Server::start(&[("RESTGUARD_JWT__REFRESH_TOKEN_LIFETIME", "3")]);
    server.create_user("alice");
    let (_, refresh) = server.obtain("alice").await;
    server.obtain("alice").await;
    let (status, _, _) = server
        .post("/api/token/blacklist/", json!({"refresh": refresh}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(4_100)).await;
    let out = server.cli(&["flush-expired"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Two refresh records and one blacklist row.
    assert!(
        out.stderr.contains("3 expired JWT records"),
        "{}",
        out.stderr
    );
    let out = server.cli(&["flush-expired"], None);
    assert!(
        out.stderr.contains("0 expired JWT records"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn bad_jwt_configuration_is_a_one_line_error() {
    for (key, value) in [
        ("RESTGUARD_JWT__ALGORITHM", "none"),
        ("RESTGUARD_JWT__SIGNING_KEY", "too-short"),
        ("RESTGUARD_JWT__ACCESS_TOKEN_LIFETIME", "soon"),
    ] {
        let dir = TempDir::new().unwrap();
        let out = cli(
            dir.path(),
            &[(key, value)],
            &["serve", "--bind", "127.0.0.1:0"],
            None,
        );
        assert_eq!(out.code, Some(1), "{key}: {}", out.stderr);
        let line = out.stderr.trim_end();
        assert!(
            !line.contains('\n') && line.starts_with("error: "),
            "{key}: {line}"
        );
        assert!(line.to_ascii_lowercase().contains("jwt"), "{line}");
    }
}

#[tokio::test]
async fn hs_deployments_publish_no_keys() {
    let server = Server::start(&[]);
    let (status, _, body) = server.get("/api/token/jwks/", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"keys": []})));
}

// ---------- interop with PyJWT ----------

/// `python3` with PyJWT and cryptography, or `None` (skip) — a failure when
/// `RESTGUARD_REQUIRE_SERVICES=1`.
fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("python3");
    }
    if std::env::var("RESTGUARD_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("python3 with PyJWT and cryptography is required (RESTGUARD_REQUIRE_SERVICES=1)");
    }
    eprintln!("skipping PyJWT interop: python3 with PyJWT and cryptography not found (pip install pyjwt cryptography)");
    None
}

fn run_python(python: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const VERIFY_WITH_JWKS: &str = r#"
import json, sys, jwt
jwks, token, alg = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
kid = jwt.get_unverified_header(token)["kid"]
key = jwt.PyJWKSet.from_dict(jwks)[kid].key
claims = jwt.decode(token, key, algorithms=[alg], options={"require": ["exp", "iat", "jti"]})
print(json.dumps(claims))
"#;

#[tokio::test]
async fn pyjwt_verifies_our_tokens_with_the_jwks() {
    let Some(python) = python() else { return };
    for alg in ["RS256", "ES256", "EdDSA"] {
        let server = Server::start(&[("RESTGUARD_JWT__ALGORITHM", alg)]);
        server.create_user("alice");
        let (access, refresh) = server.obtain("alice").await;
        let (status, _, jwks) = server.get("/api/token/jwks/", None).await;
        assert_eq!(status, 200);
        for key in jwks["keys"].as_array().unwrap() {
            assert!(
                key.get("d").is_none() && key.get("p").is_none(),
                "private material in {key}"
            );
            assert_eq!(key["alg"], alg);
            assert_eq!(key["use"], "sig");
        }
        for token in [&access, &refresh] {
            let out = run_python(python, VERIFY_WITH_JWKS, &[&jwks.to_string(), token, alg]);
            let verified: Value = serde_json::from_str(&out).expect("claims");
            assert_eq!(verified, claims(token), "{alg}");
        }
    }
}

const MINT_HS256: &str = r#"
import sys, time, uuid, jwt
secret, user_id, token_type = sys.argv[1], sys.argv[2], sys.argv[3]
now = int(time.time())
claims = {"token_type": token_type, "exp": now + 300, "iat": now, "jti": uuid.uuid4().hex, "user_id": user_id}
print(jwt.encode(claims, secret, algorithm="HS256"))
"#;

#[tokio::test]
async fn hs256_token_minted_by_pyjwt_is_accepted() {
    let Some(python) = python() else { return };
    let server = Server::start(&[("RESTGUARD_JWT__SIGNING_KEY", SECRET)]);
    server.create_user("alice");
    let token = run_python(python, MINT_HS256, &[SECRET, "1", "access"]);
    let (status, _, body) = server.me(&token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "alice");
    let (status, _, body) = server
        .post("/api/token/verify/", json!({"token": token}))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    // Minted with another secret: refused.
    let forged = run_python(
        python,
        MINT_HS256,
        &["another-secret-of-sufficient-length-000", "1", "access"],
    );
    let (status, _, body) = server.me(&forged).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, invalid("Token is invalid"))
    );
    // Our tokens verify in PyJWT with the shared secret.
    let (access, _) = server.obtain("alice").await;
    let out = run_python(
        python,
        "import sys, jwt, json; print(json.dumps(jwt.decode(sys.argv[2], sys.argv[1], algorithms=['HS256'])))",
        &[SECRET, &access],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        claims(&access)
    );
}
