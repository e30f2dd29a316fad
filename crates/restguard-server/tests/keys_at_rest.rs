//! Keys at rest (CONTRACT §10): a copy of the SQLite database alone mints nothing.
//!
//! The attack of issue 11, done as an attacker would: read every value of every table of the
//! database file and try each one as an HS256 key (with no `kid` and with each stored `kid` in
//! the header), as a PEM or DER private key (signed by PyJWT), and as the HMAC key of the
//! token digests; then present every forged token to the real server. None may be accepted.
//!
//! The same attack on a copy whose keys were opened with the key file shows the test is not
//! vacuous: there it mints tokens and finds the digest key.
//!
//! Needs `python3` with PyJWT and cryptography (skipped with a printed reason when missing,
//! unless `RESTGUARD_REQUIRE_SERVICES=1`).

mod common;

use std::{path::Path, process::Command};

use common::{token, Server};
use reqwest::Method;
use restguard::sealing::{KeyEncryptionKey, SealContext};
use restguard_core::store::WrappedKey;
use serde_json::{json, Value};

const PASSWORD: &str = "pw-alice-at-rest-123";

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
    assert!(
        std::env::var("RESTGUARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "python3 with PyJWT and cryptography is required (RESTGUARD_REQUIRE_SERVICES=1)"
    );
    eprintln!(
        "SKIPPED: python3 with PyJWT and cryptography not found (pip install pyjwt cryptography)"
    );
    None
}

/// Reads every cell of every table of the database (argv[1]) and forges, for user argv[2],
/// access tokens from each value used as a key; also reports which values, used as the HMAC
/// key, reproduce the stored digest of the API token argv[3].
const FORGE: &str = r#"
import base64, hashlib, hmac, json, sqlite3, sys, time, uuid
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

db, user_id, api_key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
con = sqlite3.connect(db)
values = []
for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
    cursor = con.execute(f'SELECT * FROM "{table}"')
    columns = [d[0] for d in cursor.description]
    for row in cursor:
        for column, value in zip(columns, row):
            if value is None:
                continue
            raw = value if isinstance(value, bytes) else str(value).encode()
            values.append((f"{table}.{column}", raw))
kids = sorted({kid for (kid,) in con.execute("SELECT kid FROM jwt_signing_keys")})
digests = {bytes(d) for (d,) in con.execute("SELECT digest FROM api_tokens")}
now = int(time.time())

def claims():
    return {"token_type": "access", "exp": now + 300, "iat": now,
            "jti": uuid.uuid4().hex, "user_id": user_id}

def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

def hs256(key, kid):
    headers = {"kid": kid} if kid is not None else None
    try:
        return jwt.encode(claims(), key, algorithm="HS256", headers=headers)
    except Exception:
        # PyJWT refuses HMAC keys that look like PEM; an attacker would not care.
        header = {"alg": "HS256", "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims()).encode())
        return signing_input + "." + b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())

def private_key(raw):
    for load in (serialization.load_pem_private_key, serialization.load_der_private_key):
        try:
            return load(raw, password=None)
        except Exception:
            pass
    # cryptography refuses PKCS#8 v2 Ed25519 documents (with the public key attached), as
    # ed25519-dalek writes them; an attacker takes the 32-byte seed after OCTET STRING(OCTET
    # STRING(32)) behind the Ed25519 OID.
    der = raw
    if raw.startswith(b"-----BEGIN"):
        try:
            der = base64.b64decode(b"".join(l for l in raw.splitlines() if not l.startswith(b"-----")))
        except Exception:
            return None
    at = der.find(bytes.fromhex("06032b6570"))
    if at >= 0:
        seed_at = der.find(bytes.fromhex("04220420"), at)
        if seed_at >= 0 and len(der) >= seed_at + 36:
            return ed25519.Ed25519PrivateKey.from_private_bytes(der[seed_at + 4:seed_at + 36])
    return None

forged, digest_keys, private_keys = [], [], []
for where, raw in values:
    for kid in [None] + kids:
        forged.append({"source": where, "as": "HS256", "kid": kid, "token": hs256(raw, kid)})
    key = private_key(raw)
    if key is not None:
        if isinstance(key, rsa.RSAPrivateKey):
            alg = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            alg = "ES256"
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            alg = "EdDSA"
        else:
            continue
        private_keys.append(where)
        for kid in [None] + kids:
            headers = {"kid": kid} if kid is not None else None
            forged.append({"source": where, "as": alg, "kid": kid,
                           "token": jwt.encode(claims(), key, algorithm=alg, headers=headers)})
    if hmac.new(raw, api_key, hashlib.sha256).digest() in digests:
        digest_keys.append(where)
print(json.dumps({"forged": forged, "digest_keys": digest_keys, "private_keys": private_keys,
                  "values": len(values), "kids": kids}))
"#;

/// What the attacker got out of a database file.
struct Loot {
    /// Forged access tokens, each with where its key came from.
    forged: Vec<Value>,
    /// Values that reproduce the API token's stored digest as HMAC keys.
    digest_keys: Vec<String>,
    /// Values that load as private keys.
    private_keys: Vec<String>,
    /// How many values were read (the scan is not empty).
    values: u64,
    /// The stored `kid`s.
    kids: Vec<String>,
}

fn plunder(python: &str, db: &Path, user_id: &str, api_key: &str) -> Loot {
    let out = Command::new(python)
        .arg("-c")
        .arg(FORGE)
        .arg(db)
        .arg(user_id)
        .arg(api_key)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "forging script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loot: Value = serde_json::from_slice(&out.stdout).expect("script output");
    let strings = |key: &str| -> Vec<String> {
        loot[key]
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect()
    };
    Loot {
        forged: loot["forged"].as_array().expect("forged").clone(),
        digest_keys: strings("digest_keys"),
        private_keys: strings("private_keys"),
        values: loot["values"].as_u64().expect("count"),
        kids: strings("kids"),
    }
}

/// The forged tokens `server` accepts on `GET /api/me/` (every other answer must be the
/// contract's 401 for an invalid JWT).
async fn accepted_tokens(server: &Server, forged: &[Value]) -> Vec<String> {
    let refused = json!({
        "detail": "Given token not valid for any token type",
        "code": "token_not_valid",
        "messages": [{"token_class": "AccessToken", "token_type": "access", "message": "Token is invalid"}],
    });
    let mut accepted = Vec::new();
    for attempt in forged {
        let jwt = attempt["token"].as_str().expect("token");
        let reply = server.get("/api/me/", Some(&format!("Bearer {jwt}"))).await;
        if reply.status == 200 {
            accepted.push(format!(
                "{} as {} (kid {})",
                attempt["source"], attempt["as"], attempt["kid"]
            ));
        } else {
            reply.assert(401, Some("Token"), &refused);
        }
    }
    accepted
}

/// A server of `algorithm` with a user, an API token, a JWT pair and an OAuth2 client, so
/// that every table the keys could hide in has rows. Returns the server and the API key.
async fn deployment(algorithm: &str) -> (Server, String) {
    let server = Server::start_with_env(&[("RESTGUARD_JWT__ALGORITHM", algorithm)]);
    server.create_user("alice", PASSWORD);
    let key = server.obtain_token("alice", PASSWORD).await;
    let pair = server
        .request(
            Method::POST,
            "/api/token/",
            None,
            common::Body::Json(json!({"username": "alice", "password": PASSWORD})),
        )
        .await;
    assert_eq!(pair.status, 200, "{pair:?}");
    // The deployment's own tokens work: a refusal below is not a broken server.
    let access = pair.json["access"].as_str().expect("access");
    let me = server
        .get("/api/me/", Some(&format!("Bearer {access}")))
        .await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 200);
    server
        .cli(
            &[
                "app",
                "create",
                "--name",
                "client",
                "--client-type",
                "confidential",
                "--grant",
                "client-credentials",
            ],
            None,
        )
        .assert_ok();
    (server, key)
}

async fn nothing_in_the_database_mints_tokens(algorithm: &str) {
    let Some(python) = python() else { return };
    let (server, api_key) = deployment(algorithm).await;
    let loot = plunder(python, &server.db_path(), "1", &api_key);
    // The scan saw the tables (users, tokens, the keys' rows) and the keys' ids.
    assert!(loot.values > 50, "only {} values read", loot.values);
    assert!(loot.kids.len() >= 2, "kids: {:?}", loot.kids);
    let accepted = accepted_tokens(&server, &loot.forged).await;
    assert!(
        accepted.is_empty(),
        "{algorithm}: tokens forged from the database were accepted: {accepted:?}"
    );
    assert!(
        loot.private_keys.is_empty(),
        "{algorithm}: private keys readable in the database: {:?}",
        loot.private_keys
    );
    assert!(
        loot.digest_keys.is_empty(),
        "{algorithm}: the token digest key is readable in the database: {:?}",
        loot.digest_keys
    );

    // Not vacuous: the same attack on a copy whose keys were opened with the key file (the
    // database as the previous version stored it) mints tokens the server accepts and finds
    // the digest key.
    let opened = server.dir().join("opened.db");
    server.sql(&format!("VACUUM INTO '{}';", opened.display()));
    open_sealed_values(&opened, &server.dir().join("restguard.key"));
    let loot = plunder(python, &opened, "1", &api_key);
    let minted = accepted_tokens(&server, &loot.forged).await;
    assert!(
        !minted.is_empty() && loot.private_keys.len() >= 2 && !loot.digest_keys.is_empty(),
        "{algorithm}: the attack finds nothing even in clear: accepted {minted:?}, \
         private keys {:?}, digest keys {:?}",
        loot.private_keys,
        loot.digest_keys
    );
}

/// Replaces, in the database file `db`, every sealed key by its plaintext, opened with the
/// key in `key_file`.
fn open_sealed_values(db: &Path, key_file: &Path) {
    let text = std::fs::read_to_string(key_file).expect("key file");
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a key line");
    let kek = KeyEncryptionKey::parse(line).expect("a key");
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let unhex = |text: &str| -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let mut updates = String::new();
    for row in common::sqlite(db, "SELECT name, hex(value) FROM server_secrets;").lines() {
        let (name, value) = row.split_once('|').expect("row");
        let clear = kek
            .open(
                &SealContext::of(WrappedKey::ServerSecret { name }),
                &unhex(value),
            )
            .expect("opens");
        updates.push_str(&format!(
            "UPDATE server_secrets SET value = X'{}' WHERE name = '{name}';",
            hex(&clear)
        ));
    }
    for row in common::sqlite(
        db,
        "SELECT kid, algorithm, hex(private_key) FROM jwt_signing_keys;",
    )
    .lines()
    {
        let mut fields = row.split('|');
        let (Some(kid), Some(algorithm), Some(value)) =
            (fields.next(), fields.next(), fields.next())
        else {
            panic!("row {row}");
        };
        let clear = kek
            .open(
                &SealContext::of(WrappedKey::SigningKey { kid, algorithm }),
                &unhex(value),
            )
            .expect("opens");
        updates.push_str(&format!(
            "UPDATE jwt_signing_keys SET private_key = X'{}' WHERE kid = '{kid}';",
            hex(&clear)
        ));
    }
    common::sqlite(db, &updates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_deployment_database_mints_nothing() {
    nothing_in_the_database_mints_tokens("HS256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_deployment_database_mints_nothing() {
    nothing_in_the_database_mints_tokens("RS256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_deployment_database_mints_nothing() {
    nothing_in_the_database_mints_tokens("EdDSA").await;
}
