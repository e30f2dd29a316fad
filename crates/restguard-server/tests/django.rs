//! CONTRACT §10: Django `pbkdf2_sha256` hashes are accepted and re-hashed to argon2id on the
//! next successful login. The Django hash is computed by Python's `hashlib` (an independent
//! implementation) and written straight into the SQLite `users` table.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{process::Command, time::Duration};

use common::*;
use reqwest::Method;
use serde_json::json;

const CHALLENGE: Option<&str> = Some("Token");

/// `pbkdf2_sha256$<iterations>$<salt>$<base64>` as Django's `PBKDF2PasswordHasher` makes it.
fn django_hash(password: &str, salt: &str, iterations: u32) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import base64, hashlib, sys\n\
             pw, salt, it = sys.argv[1].encode(), sys.argv[2].encode(), int(sys.argv[3])\n\
             dk = hashlib.pbkdf2_hmac('sha256', pw, salt, it, 32)\n\
             print('pbkdf2_sha256$%d$%s$%s' % (it, salt.decode(), base64.b64encode(dk).decode()))\n",
        )
        .arg(password)
        .arg(salt)
        .arg(iterations.to_string())
        .output()
        .expect("python3 is needed to compute a Django hash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn insert_django_user(server: &Server, username: &str, hash: &str, active: bool) {
    let now_us = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    server.sql(&format!(
        "INSERT INTO users (username, email, password, is_active, is_staff, is_superuser, \
         date_joined, credentials_changed_at) \
         VALUES ('{username}', '{username}@example.com', '{hash}', {}, 0, 0, {now_us}, {now_us});",
        i32::from(active)
    ));
}

fn stored_hash(server: &Server, username: &str) -> String {
    server.sql(&format!(
        "SELECT password FROM users WHERE username = '{username}';"
    ))
}

#[tokio::test]
async fn django_hash_is_verified_and_upgraded() {
    let server = Server::start();
    let hash = django_hash("django pässword", "s4ltS4ltS4lt", 1_000);
    assert!(
        hash.starts_with("pbkdf2_sha256$1000$s4ltS4ltS4lt$"),
        "{hash}"
    );
    insert_django_user(&server, "legacy", &hash, true);
    let id = user_id(&server, "legacy");
    let me = json!({
        "id": id,
        "username": "legacy",
        "email": "legacy@example.com",
        "is_staff": false,
        "is_superuser": false,
        "auth": {"scheme": "basic"},
    });

    // A wrong password neither logs in nor touches the hash.
    server
        .get("/api/me/", Some(&basic("legacy", "django password")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
    assert_eq!(stored_hash(&server, "legacy"), hash);

    server
        .get("/api/me/", Some(&basic("legacy", "django pässword")))
        .await
        .assert(200, None, &me);
    // Re-hashed to argon2id (possibly just after the response).
    let mut upgraded = String::new();
    for _ in 0..50 {
        upgraded = stored_hash(&server, "legacy");
        if upgraded.starts_with("$argon2id$") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        upgraded.starts_with("$argon2id$"),
        "not upgraded: {upgraded}"
    );
    assert!(upgraded.contains("m=19456,t=2,p=1"), "{upgraded}");

    // The argon2id hash works, for Basic and for the token endpoint; the old one is gone.
    server
        .get("/api/me/", Some(&basic("legacy", "django pässword")))
        .await
        .assert(200, None, &me);
    let key = server.obtain_token("legacy", "django pässword").await;
    let mut me_token = me.clone();
    me_token["auth"]["scheme"] = json!("token");
    server
        .get("/api/me/", Some(&token(&key)))
        .await
        .assert(200, None, &me_token);
    server
        .get("/api/me/", Some(&basic("legacy", "django password")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
}

#[tokio::test]
async fn django_hash_via_token_endpoint_and_inactive_and_unusable() {
    let server = Server::start();
    // A realistic iteration count (Django 5's default is 870 000; 260 000 keeps it quick).
    let hash = django_hash("token login", "AbCdEfGhIjKl", 260_000);
    insert_django_user(&server, "legacy", &hash, true);
    insert_django_user(
        &server,
        "sleeper",
        &django_hash("sleeper pw", "salt", 1_000),
        false,
    );
    // Django's unusable password marker.
    insert_django_user(&server, "nopass", "!unusableXYZ", true);

    let reply = server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Form(vec![
                ("username", "legacy".into()),
                ("password", "token login".into()),
            ]),
        )
        .await;
    reply.assert_status(200, None);
    assert!(reply.json["token"].is_string());
    let mut upgraded = String::new();
    for _ in 0..50 {
        upgraded = stored_hash(&server, "legacy");
        if upgraded.starts_with("$argon2id$") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        upgraded.starts_with("$argon2id$"),
        "not upgraded: {upgraded}"
    );

    // Inactive: refused.
    server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Json(json!({"username": "sleeper", "password": "sleeper pw"})),
        )
        .await
        .assert(400, None, &bad_login());
    server
        .get("/api/me/", Some(&basic("sleeper", "sleeper pw")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
    // (Its hash may be upgraded all the same: Django's `check_password` re-hashes a correct
    // password before `user_can_authenticate` refuses the inactive user.)
    // Unusable password: nothing matches it.
    for pw in ["!unusableXYZ", "unusableXYZ", ""] {
        server
            .get("/api/me/", Some(&basic("nopass", pw)))
            .await
            .assert(401, CHALLENGE, &failed("Invalid username/password."));
    }
}
