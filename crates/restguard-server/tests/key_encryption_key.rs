//! The key-encryption key (CONTRACT §10, "Keys at rest") through the real binary: created on
//! first start (mode 0600), required afterwards; a wrong or missing key stops every command
//! with one line and leaves the database file byte for byte as it was; a database written
//! by the version that stored keys in clear is sealed in place and its tokens keep working;
//! `restguard keys rotate-kek` moves every key to a new KEK, after which the old one opens
//! nothing; instances on one PostgreSQL database must share the KEK (the PostgreSQL case
//! needs `RESTGUARD_TEST_POSTGRES_URL`, and skips with a printed reason without it).

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{cli_in, spawn_serve, sqlite, CliOutput, Reply};
use reqwest::Method;
use restguard::sealing::KeyEncryptionKey;
use serde_json::{json, Value};

const PW: &str = "pw-alice-kek-1234";

/// A `restguard serve` in a directory that outlives it.
struct Running {
    child: std::process::Child,
    base: String,
    stderr: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl Running {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Running {
        let spawned = spawn_serve(dir, "127.0.0.1:0", env)
            .unwrap_or_else(|(status, log)| panic!("serve did not start ({status}): {log}"));
        Running {
            child: spawned.child,
            base: format!("http://{}", spawned.addr),
            stderr: spawned.stderr,
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: Method, path: &str, auth: Option<&str>, body: Value) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if !body.is_null() {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("request")).await
    }

    /// `GET /api/me/` with `auth`: the status.
    async fn me(&self, auth: &str) -> u16 {
        self.send(Method::GET, "/api/me/", Some(auth), Value::Null)
            .await
            .status
            .as_u16()
    }

    /// Stops the server (SIGTERM, then its exit).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if common::wait_timeout(&mut self.child, Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let log = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// `restguard serve` that must not start: exit 1 with exactly one line on stderr, returned.
fn serve_fails(dir: &Path, env: &[(&str, &str)]) -> String {
    match spawn_serve(dir, "127.0.0.1:0", env) {
        Ok(mut spawned) => {
            let _ = spawned.child.kill();
            let _ = spawned.child.wait();
            panic!("serve started although it must not");
        }
        Err((status, log)) => {
            assert!(status.contains("exit status: 1"), "{status}: {log}");
            let line = log.strip_suffix('\n').unwrap_or(&log);
            assert!(
                line.starts_with("error: ") && !line.contains('\n'),
                "one line on stderr: {log:?}"
            );
            line.to_owned()
        }
    }
}

fn key_file(dir: &Path) -> PathBuf {
    dir.join("restguard.key")
}

/// Writes a key file as an operator would restore one (mode 0600).
fn write_key_file(path: &Path, kek: &KeyEncryptionKey) {
    let _ = fs::remove_file(path);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(path).expect("key file");
    writeln!(file, "{}", kek.encoded().expose()).expect("write key");
}

fn read_key_file(path: &Path) -> KeyEncryptionKey {
    let text = fs::read_to_string(path).expect("key file");
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a key line");
    KeyEncryptionKey::parse(line).expect("a key")
}

/// The database file's bytes and the length of its write-ahead log (0 when absent).
fn snapshot(dir: &Path) -> (Vec<u8>, u64) {
    let db = fs::read(dir.join("restguard.db")).expect("database file");
    let wal = fs::metadata(dir.join("restguard.db-wal")).map_or(0, |m| m.len());
    (db, wal)
}

/// The KEK id every stored key is sealed under (and that there are some).
fn sealed_under(db: &Path) -> Vec<String> {
    let rows = sqlite(
        db,
        "SELECT CAST(value AS TEXT) FROM server_secrets \
         UNION ALL SELECT CAST(private_key AS TEXT) FROM jwt_signing_keys;",
    );
    let ids: Vec<String> = rows
        .lines()
        .map(|v| {
            let rest = v
                .strip_prefix("restguard-sealed:v1:")
                .unwrap_or_else(|| panic!("stored in clear: {v:.40}…"));
            rest.split(':').next().expect("id").to_owned()
        })
        .collect();
    assert!(ids.len() >= 3, "{rows}");
    ids
}

fn cli(dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> CliOutput {
    cli_in(dir, args, stdin.map(str::as_bytes), env)
}

fn create_alice(dir: &Path, env: &[(&str, &str)]) {
    cli(
        dir,
        &["user", "create", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
        env,
    )
    .assert_ok();
}

/// An API token and a JWT pair for alice.
async fn credentials(server: &Running) -> (String, String, String) {
    let login = json!({"username": "alice", "password": PW});
    let reply = server
        .send(Method::POST, "/api-token-auth/", None, login.clone())
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let key = format!("Token {}", reply.json["token"].as_str().expect("token"));
    let reply = server.send(Method::POST, "/api/token/", None, login).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let access = format!("Bearer {}", reply.json["access"].as_str().expect("access"));
    let refresh = reply.json["refresh"].as_str().expect("refresh").to_owned();
    (key, access, refresh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_key_stops_every_command_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let server = Running::start(dir, &[]);
    // Created on first start, readable by its owner only.
    let right = read_key_file(&key_file(dir));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(key_file(dir)).expect("key file").permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
    create_alice(dir, &[]);
    let (key, access, _) = credentials(&server).await;
    server.stop();
    // The log is folded into the file; what is left must not change by a byte.
    sqlite(
        &dir.join("restguard.db"),
        "PRAGMA wal_checkpoint(TRUNCATE);",
    );
    let before = snapshot(dir);
    assert_eq!(before.1, 0, "the write-ahead log is empty");
    let commands: [(&[&str], Option<&str>); 5] = [
        (&["migrate"], None),
        (&["token", "create", "alice"], None),
        (&["keys", "list"], None),
        (
            &["user", "create", "bob", "--password-stdin"],
            Some("pw-bob-12345\n"),
        ),
        (&["keys", "rotate-kek"], None),
    ];

    // A key file holding another key.
    let wrong = KeyEncryptionKey::generate();
    write_key_file(&key_file(dir), &wrong);
    let line = serve_fails(dir, &[]);
    assert!(
        line.contains("server.secret_key_file")
            && line.contains(&wrong.id().to_string())
            && line.contains(&right.id().to_string()),
        "{line}"
    );
    for (args, stdin) in commands {
        cli(dir, args, stdin, &[]).assert_one_line_error();
    }
    assert!(snapshot(dir) == before, "the database changed");
    // The right file, overridden by a wrong key in the environment.
    write_key_file(&key_file(dir), &right);
    let env = [(
        "RESTGUARD_SERVER__SECRET_KEY",
        wrong.encoded().expose().to_owned(),
    )];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let line = serve_fails(dir, &env);
    assert!(line.contains("RESTGUARD_SERVER__SECRET_KEY"), "{line}");
    assert!(!line.contains(wrong.encoded().expose()), "{line}");
    assert!(snapshot(dir) == before, "the database changed");

    // No key file at all: no new key is made over the sealed ones.
    fs::remove_file(key_file(dir)).expect("remove");
    let line = serve_fails(dir, &[]);
    assert!(
        line.contains("does not exist") && line.contains(&right.id().to_string()),
        "{line}"
    );
    for (args, stdin) in commands {
        cli(dir, args, stdin, &[]).assert_one_line_error();
    }
    assert!(!key_file(dir).exists(), "a new key file was written");
    assert!(snapshot(dir) == before, "the database changed");

    // A key file that holds no key; both settings at once.
    fs::write(key_file(dir), "correct horse battery staple\n").expect("write");
    let line = serve_fails(dir, &[]);
    assert!(
        line.contains("base64 of 32 bytes") && !line.contains("horse"),
        "{line}"
    );
    write_key_file(&key_file(dir), &right);
    let line = serve_fails(
        dir,
        &[
            ("RESTGUARD_SERVER__SECRET_KEY", right.encoded().expose()),
            ("RESTGUARD_SERVER__SECRET_KEY_FILE", "restguard.key"),
        ],
    );
    assert!(line.contains("set only one"), "{line}");
    assert!(snapshot(dir) == before, "the database changed");

    // The right key: everything as before.
    let server = Running::start(dir, &[]);
    assert_eq!(server.me(&key).await, 200);
    assert_eq!(server.me(&access).await, 200);
    server.stop();
    // Given through the environment instead, it works the same.
    fs::remove_file(key_file(dir)).expect("remove");
    let server = Running::start(
        dir,
        &[("RESTGUARD_SERVER__SECRET_KEY", right.encoded().expose())],
    );
    assert_eq!(server.me(&access).await, 200);
    server.stop();
    assert!(
        !key_file(dir).exists(),
        "no key file with the key in the environment"
    );
}

/// `-- name value` lines at the top of the fixture.
fn fixture_token(fixture: &str, name: &str) -> String {
    fixture
        .lines()
        .find_map(|l| l.strip_prefix(&format!("-- {name} ")))
        .unwrap_or_else(|| panic!("no {name} in the fixture"))
        .to_owned()
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stored_in_clear_by_the_previous_version_are_sealed_in_place() {
    if !common::have_tool("sqlite3") {
        return;
    }
    let fixture = include_str!("fixtures/plaintext_keys.sql");
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let db = dir.join("restguard.db");
    let mut restore = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sqlite3");
    {
        use std::io::Write;
        let mut stdin = restore.stdin.take().expect("stdin");
        stdin.write_all(fixture.as_bytes()).expect("restore");
    }
    assert!(restore.wait().expect("sqlite3").success());
    // What the old version stored in clear.
    let clear: Vec<Vec<u8>> = sqlite(
        &db,
        "SELECT hex(value) FROM server_secrets UNION ALL SELECT hex(private_key) FROM jwt_signing_keys;",
    )
    .lines()
    .map(unhex)
    .collect();
    assert_eq!(clear.len(), 4, "digest key, HS256, RS256 and EdDSA keys");
    assert!(clear
        .iter()
        .any(|k| k.starts_with(b"-----BEGIN PRIVATE KEY-----")));
    assert!(!key_file(dir).exists());

    let server = Running::start(dir, &[]);
    let kek = read_key_file(&key_file(dir));
    // Tokens the old version issued still work.
    let api = format!("Token {}", fixture_token(fixture, "api_token"));
    assert_eq!(server.me(&api).await, 200);
    let access = format!("Bearer {}", fixture_token(fixture, "hs256_access"));
    assert_eq!(server.me(&access).await, 200);
    let refreshed = server
        .send(
            Method::POST,
            "/api/token/refresh/",
            None,
            json!({"refresh": fixture_token(fixture, "hs256_refresh")}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let log = server.stderr.lock().map(|s| s.clone()).unwrap_or_default();
    server.stop();
    assert!(
        !log.contains("ERROR") && !log.contains("error"),
        "start-up log: {log}"
    );
    // Every key is sealed under the new key file's key…
    assert!(sealed_under(&db)
        .iter()
        .all(|id| *id == kek.id().to_string()));
    // …and the clear values are gone from the file and its log, free space included.
    let mut files = fs::read(&db).expect("db");
    files.extend(fs::read(dir.join("restguard.db-wal")).unwrap_or_default());
    for value in &clear {
        let probe = &value[value.len().saturating_sub(48)..];
        assert!(
            !contains(&files, probe),
            "a key stored in clear is still in the file"
        );
    }
    // The EdDSA deployment's token too.
    let server = Running::start(dir, &[("RESTGUARD_JWT__ALGORITHM", "EdDSA")]);
    let access = format!("Bearer {}", fixture_token(fixture, "eddsa_access"));
    assert_eq!(server.me(&access).await, 200);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_kek_moves_every_key_and_the_old_key_opens_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let db = dir.join("restguard.db");
    let server = Running::start(dir, &[]);
    let old = read_key_file(&key_file(dir));
    create_alice(dir, &[]);
    let (key, access, refresh) = credentials(&server).await;
    assert!(sealed_under(&db)
        .iter()
        .all(|id| *id == old.id().to_string()));

    // While the server runs.
    let out = cli(dir, &["keys", "rotate-kek"], None, &[]);
    out.assert_ok();
    let new = read_key_file(&key_file(dir));
    assert_eq!(out.stdout, format!("{}\n", new.id()));
    assert_ne!(new.id(), old.id());
    assert!(out.stderr.contains("re-encrypted"), "{}", out.stderr);
    assert!(!out.stderr.contains(new.encoded().expose()));
    assert!(!dir.join("restguard.key.new").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(key_file(dir)).expect("key file").permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
    assert!(sealed_under(&db)
        .iter()
        .all(|id| *id == new.id().to_string()));
    // The running server keeps its keys.
    assert_eq!(server.me(&key).await, 200);
    server.stop();

    // Restarted: tokens issued before verify; refresh works.
    let server = Running::start(dir, &[]);
    assert_eq!(server.me(&key).await, 200);
    assert_eq!(server.me(&access).await, 200);
    let reply = server
        .send(
            Method::POST,
            "/api/token/refresh/",
            None,
            json!({"refresh": refresh}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    server.stop();

    // The old key opens nothing any more.
    write_key_file(&key_file(dir), &old);
    let line = serve_fails(dir, &[]);
    assert!(line.contains(&new.id().to_string()), "{line}");
    cli(dir, &["token", "create", "alice"], None, &[]).assert_one_line_error();
    // A rotation interrupted between the database and the file: the error says where the key is.
    write_key_file(&dir.join("restguard.key.new"), &new);
    let line = serve_fails(dir, &[]);
    assert!(
        line.contains("interrupted") && line.contains("restguard.key.new"),
        "{line}"
    );
    fs::rename(dir.join("restguard.key.new"), key_file(dir)).expect("move");
    let server = Running::start(dir, &[]);
    assert_eq!(server.me(&key).await, 200);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_kek_with_the_key_in_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let old = KeyEncryptionKey::generate();
    let new = KeyEncryptionKey::generate();
    let (old_text, new_text) = (old.encoded(), new.encoded());
    let old_env = [("RESTGUARD_SERVER__SECRET_KEY", old_text.expose())];
    let new_env = [("RESTGUARD_SERVER__SECRET_KEY", new_text.expose())];
    let server = Running::start(dir, &old_env);
    create_alice(dir, &old_env);
    let (key, access, _) = credentials(&server).await;
    server.stop();
    // No file to write the new key to: it must be given.
    let line = cli(dir, &["keys", "rotate-kek"], None, &old_env)
        .assert_one_line_error()
        .to_owned();
    assert!(line.contains("--new-key-stdin"), "{line}");
    let out = cli(
        dir,
        &["keys", "rotate-kek", "--new-key-stdin"],
        Some(&format!("{}\n", new.encoded().expose())),
        &old_env,
    );
    out.assert_ok();
    assert_eq!(out.stdout, format!("{}\n", new.id()));
    assert!(
        out.stderr.contains("RESTGUARD_SERVER__SECRET_KEY"),
        "{}",
        out.stderr
    );
    assert!(!key_file(dir).exists());
    serve_fails(dir, &old_env);
    let server = Running::start(dir, &new_env);
    assert_eq!(server.me(&key).await, 200);
    assert_eq!(server.me(&access).await, 200);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_needs_no_key_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Running::start(dir.path(), &[("RESTGUARD_DATABASE__URL", "memory:")]);
    assert_eq!(
        server
            .send(Method::GET, "/healthz", None, Value::Null)
            .await
            .status,
        200
    );
    server.stop();
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_must_share_the_key() {
    let Some(base) = restguard_store::testing::service_url(
        restguard_store::testing::POSTGRES_URL_VAR,
        "postgres_instances_must_share_the_key",
    ) else {
        return;
    };
    let schema = restguard_store::testing::ScratchSchema::create(&base).await;
    let shared = KeyEncryptionKey::generate();
    let shared_text = shared.encoded();
    let env = [
        ("RESTGUARD_DATABASE__URL", schema.url()),
        ("RESTGUARD_SERVER__SECRET_KEY", shared_text.expose()),
    ];
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = Running::start(a_dir.path(), &env);
    create_alice(a_dir.path(), &env);
    let (key, access, _) = credentials(&a).await;
    // Another machine with its own key file (none yet): refused, and no key file written.
    let line = serve_fails(b_dir.path(), &[("RESTGUARD_DATABASE__URL", schema.url())]);
    assert!(line.contains(&shared.id().to_string()), "{line}");
    assert!(!key_file(b_dir.path()).exists());
    // Another key in the environment: refused.
    let other = KeyEncryptionKey::generate().encoded();
    serve_fails(
        b_dir.path(),
        &[
            ("RESTGUARD_DATABASE__URL", schema.url()),
            ("RESTGUARD_SERVER__SECRET_KEY", other.expose()),
        ],
    );
    // The shared key: the second instance serves the first one's tokens.
    let b = Running::start(b_dir.path(), &env);
    assert_eq!(b.me(&key).await, 200);
    assert_eq!(b.me(&access).await, 200);
    a.stop();
    b.stop();
}
