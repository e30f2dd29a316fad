//! End-to-end harness: runs the real `restguard` binary in a fresh directory (so its
//! `restguard.db` is a real SQLite file there, zero configuration) and talks to it over HTTP.
//!
//! Each test owns its server and directory, so tests run in parallel.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use reqwest::{
    header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE},
    Method, Response, StatusCode,
};
use serde_json::{json, Value};
use tempfile::TempDir;

/// How long a server may take to print its address.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The server's token-check cache lifetime (`token.cache_ttl`) plus a margin: changes made
/// by the CLI (another process) are visible to the server after this.
pub const CACHE_WAIT: Duration = Duration::from_millis(1_300);

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_restguard"))
}

/// A `restguard` command in `dir`, with a clean `RESTGUARD_*` environment.
pub fn command_in(dir: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RESTGUARD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RESTGUARD_LOG", "warn");
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

/// Runs a command to completion, feeding `stdin` (closed right after).
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn restguard");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // The CLI may exit (a usage error, say) before reading its input: that is its answer,
        // not a harness failure.
        if let Err(e) = pipe.write_all(bytes) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    child.wait_with_output().expect("wait for restguard")
}

/// A CLI outcome, with helpers for the contract's exit rules.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn from_output(out: Output) -> Self {
        Self {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Exit 0, or fail with the output.
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.status.code(), Some(0), "expected success: {self:#?}");
        self
    }

    /// Exit 1 with exactly one line on stderr, `error: …`, and no panic or backtrace.
    /// Returns that line.
    pub fn assert_one_line_error(&self) -> &str {
        assert_eq!(self.status.code(), Some(1), "expected exit 1: {self:#?}");
        let stderr = self.stderr.strip_suffix('\n').unwrap_or(&self.stderr);
        assert!(
            !stderr.is_empty() && !stderr.contains('\n'),
            "stderr must be one line: {self:#?}"
        );
        assert!(stderr.starts_with("error: "), "stderr: {stderr:?}");
        for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "internal error"] {
            assert!(!stderr.contains(bad), "stderr mentions {bad:?}: {stderr:?}");
        }
        stderr
    }

    /// Exit 2 with a usage message on stderr.
    pub fn assert_usage_error(&self) {
        assert_eq!(self.status.code(), Some(2), "expected exit 2: {self:#?}");
        assert!(self.stderr.contains("Usage:"), "no usage: {self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
    }
}

/// Runs `restguard ARGS` in `dir`.
pub fn cli_in(dir: &Path, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> CliOutput {
    let mut cmd = command_in(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    CliOutput::from_output(run_with_stdin(cmd, stdin))
}

/// A running `restguard serve` in its own temporary directory. Killed on drop.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    dir: TempDir,
    stderr: Arc<Mutex<String>>,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts a server with no configuration in a fresh directory.
    pub fn start() -> Server {
        Self::start_with_env(&[])
    }

    /// Starts a server with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("restguard-e2e-")
            .tempdir()
            .expect("temp dir");
        let Spawned {
            child,
            addr,
            stderr,
        } = spawn_serve(dir.path(), "127.0.0.1:0", env).unwrap_or_else(|(status, log)| {
            panic!("restguard serve did not start ({status}); stderr:\n{log}")
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            addr,
            dir,
            stderr,
            client,
        }
    }

    /// The server's working directory (holds `restguard.db`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("restguard.db")
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `restguard ARGS` against this server's directory (same database).
    pub fn cli(&self, args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
        cli_in(self.dir(), args, stdin, &[])
    }

    /// `restguard user create NAME --password-stdin [EXTRA…]`.
    pub fn create_user(&self, name: &str, password: &str) {
        self.create_user_with(name, password, &[]);
    }

    pub fn create_user_with(&self, name: &str, password: &str, extra: &[&str]) {
        let mut args = vec!["user", "create", name, "--password-stdin"];
        args.extend_from_slice(extra);
        let line = format!("{password}\n");
        self.cli(&args, Some(line.as_bytes())).assert_ok();
    }

    /// `restguard token create USER`: the key alone.
    pub fn token_create(&self, user: &str) -> String {
        self.token_create_with(user, &[])
    }

    pub fn token_create_with(&self, user: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", user];
        args.extend_from_slice(extra);
        let out = self.cli(&args, None);
        out.assert_ok();
        let key = out
            .stdout
            .strip_suffix('\n')
            .expect("key ends with a newline");
        assert!(!key.contains('\n'), "stdout is the key alone: {out:#?}");
        key.to_owned()
    }

    /// Runs SQL with the `sqlite3` command-line tool on the server's database.
    pub fn sql(&self, statement: &str) -> String {
        sqlite(&self.db_path(), statement)
    }

    /// A request with raw `Authorization` bytes.
    pub async fn get_with_auth_bytes(&self, path: &str, auth: &[u8]) -> Reply {
        let value = HeaderValue::from_bytes(auth).expect("header bytes");
        let response = self
            .client
            .get(self.url(path))
            .header(AUTHORIZATION, value)
            .send()
            .await
            .expect("request");
        Reply::read(response).await
    }

    /// `GET path` with an optional `Authorization` value.
    pub async fn get(&self, path: &str, auth: Option<&str>) -> Reply {
        self.request(Method::GET, path, auth, Body::None).await
    }

    /// Any request.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Body,
    ) -> Reply {
        let mut builder = self.client.request(method, self.url(path));
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        builder = match body {
            Body::None => builder,
            Body::Json(v) => builder.json(&v),
            Body::Form(pairs) => builder.form(&pairs),
            Body::Raw(content_type, bytes) => builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes),
        };
        Reply::read(builder.send().await.expect("request")).await
    }

    /// `POST /api-token-auth/` with JSON credentials.
    pub async fn obtain_token(&self, username: &str, password: &str) -> String {
        let reply = self
            .request(
                Method::POST,
                "/api-token-auth/",
                None,
                Body::Json(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.json["token"]
            .as_str()
            .expect("token is a string")
            .to_owned()
    }

    /// The token list as seen by `auth`.
    pub async fn token_list(&self, auth: &str) -> Vec<Value> {
        let reply = self.get("/api/tokens/", Some(auth)).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.json.as_array().expect("a list").clone()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit status.
    pub fn terminate(mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -TERM failed");
        let status = wait_timeout(&mut child, limit);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for a child for at most `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// A started `restguard serve`.
pub struct Spawned {
    pub child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Everything it wrote on stderr so far.
    pub stderr: Arc<Mutex<String>>,
}

/// Spawns `restguard serve --bind BIND` in `dir`; returns the child, its address and its
/// stderr buffer, or (if it exited or stayed silent) a status description and its stderr.
pub fn spawn_serve(
    dir: &Path,
    bind: &str,
    env: &[(&str, &str)],
) -> Result<Spawned, (String, String)> {
    let mut cmd = command_in(dir);
    cmd.args(["serve", "--bind", bind])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn restguard serve");
    let stderr = Arc::new(Mutex::new(String::new()));
    {
        let mut pipe = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Ok(mut s) = sink.lock() {
                            s.push_str(&String::from_utf8_lossy(&buf[..n]));
                        }
                    }
                }
            }
        });
    }
    let stdout = child.stdout.take().expect("stdout pipe");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let addr = line
                    .strip_prefix("restguard listening on http://")
                    .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                    .to_owned();
                return Ok(Spawned {
                    child,
                    addr,
                    stderr,
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                if let Ok(Some(status)) = child.try_wait() {
                    // Give the stderr reader a moment to collect the message.
                    std::thread::sleep(Duration::from_millis(100));
                    let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                    return Err((format!("exited with {status}"), log));
                }
            }
            Err(timeout_or_closed) => {
                // Stdout closed without an address: the server is exiting; give it the time
                // to do so.
                let grace = if timeout_or_closed == mpsc::RecvTimeoutError::Disconnected {
                    Duration::from_secs(10)
                } else {
                    Duration::ZERO
                };
                let status = match wait_timeout(&mut child, grace) {
                    Some(status) => format!("exited with {status}"),
                    None => {
                        let _ = child.kill();
                        let _ = child.wait();
                        "printed no address and did not exit".to_owned()
                    }
                };
                std::thread::sleep(Duration::from_millis(100));
                let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                return Err((status, log));
            }
        }
    }
}

/// Runs SQL on a database file with the `sqlite3` command-line tool (or, where it is not
/// installed, Python's `sqlite3` module). Prints rows as `a|b`, like the tool.
pub fn sqlite(db: &Path, statement: &str) -> String {
    let out = match Command::new("sqlite3")
        .arg("-batch")
        .arg("-cmd")
        .arg(".timeout 5000")
        .arg(db)
        .arg(statement)
        .output()
    {
        Ok(out) => out,
        Err(_) => Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], timeout=5, isolation_level=None)\n\
                 for row in c.execute(sys.argv[2]):\n    \
                     print('|'.join('' if v is None else str(v) for v in row))\n",
            )
            .arg(db)
            .arg(statement)
            .output()
            .expect("neither sqlite3 nor python3 is installed"),
    };
    assert!(
        out.status.success(),
        "sqlite failed on {statement:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// A request body.
pub enum Body {
    None,
    Json(Value),
    Form(Vec<(&'static str, String)>),
    Raw(&'static str, Vec<u8>),
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON (`Value::Null` when it is empty or not JSON).
    pub json: Value,
}

impl Reply {
    pub async fn read(response: Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// The `WWW-Authenticate` header, if any.
    pub fn challenge(&self) -> Option<&str> {
        self.headers
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().expect("ascii challenge"))
    }

    /// Asserts status, challenge (or its absence) and the exact JSON body, with a JSON
    /// content type.
    pub fn assert(&self, status: u16, challenge: Option<&str>, body: &Value) {
        assert_eq!(self.status.as_u16(), status, "status of {self:#?}");
        assert_eq!(self.challenge(), challenge, "WWW-Authenticate of {self:#?}");
        assert_eq!(&self.json, body, "body of {self:#?}");
        self.assert_json_content_type();
    }

    /// Status and challenge only, for bodies checked separately.
    pub fn assert_status(&self, status: u16, challenge: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "status of {self:#?}");
        assert_eq!(self.challenge(), challenge, "WWW-Authenticate of {self:#?}");
    }

    pub fn assert_json_content_type(&self) {
        let ct = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "content type {ct:?} of {self:#?}"
        );
    }

    /// 204 with an empty body and no challenge.
    pub fn assert_no_content(&self) {
        assert_eq!(self.status.as_u16(), 204, "{self:#?}");
        assert_eq!(self.challenge(), None, "{self:#?}");
        assert!(self.text.is_empty(), "{self:#?}");
    }
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, password: &str) -> String {
    basic_raw(format!("{user}:{password}").as_bytes())
}

/// `Basic base64(bytes)`.
pub fn basic_raw(bytes: &[u8]) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `Token KEY`.
pub fn token(key: &str) -> String {
    format!("Token {key}")
}

/// `{"detail": …, "code": "authentication_failed"}`.
pub fn failed(detail: &str) -> Value {
    json!({"detail": detail, "code": "authentication_failed"})
}

/// The anonymous 401 body.
pub fn not_authenticated() -> Value {
    json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"})
}

/// `{"non_field_errors": ["Unable to log in with provided credentials."]}`.
pub fn bad_login() -> Value {
    json!({"non_field_errors": ["Unable to log in with provided credentials."]})
}

/// The `/api/me/` body for a user created by the CLI without extra flags.
pub fn me_body(id: i64, username: &str, scheme: &str) -> Value {
    json!({
        "id": id,
        "username": username,
        "email": "",
        "is_staff": false,
        "is_superuser": false,
        "auth": {"scheme": scheme},
    })
}

/// A user's id as the database has it.
pub fn user_id(server: &Server, username: &str) -> i64 {
    let escaped = username.replace('\'', "''");
    server
        .sql(&format!(
            "SELECT id FROM users WHERE username = '{escaped}';"
        ))
        .parse()
        .expect("user id")
}

/// Whether `curl` is runnable; when it is not, `RESTGUARD_REQUIRE_SERVICES=1` makes that a
/// failure rather than a skip.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("RESTGUARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{tool} is required (RESTGUARD_REQUIRE_SERVICES=1) but is not installed"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}
