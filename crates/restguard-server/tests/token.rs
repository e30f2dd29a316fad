//! CONTRACT §3 (Token): the header table on `/api/me/` and the token endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

const CHALLENGE: Option<&str> = Some("Token");

fn invalid_token() -> Value {
    failed("Invalid token.")
}

#[tokio::test]
async fn token_header_table() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let key = server.token_create("alice");
    let alice = user_id(&server, "alice");

    let cases: [(&[u8], &str); 8] = [
        (b"Token", "Invalid token header. No credentials provided."),
        (b"token", "Invalid token header. No credentials provided."),
        (
            b"Token a b",
            "Invalid token header. Token string should not contain spaces.",
        ),
        (
            b"Token a\tb",
            "Invalid token header. Token string should not contain spaces.",
        ),
        (
            b"Token caf\xc3\xa9",
            "Invalid token header. Token string should not contain invalid characters.",
        ),
        (
            b"Token \xff\xfe",
            "Invalid token header. Token string should not contain invalid characters.",
        ),
        (b"Token unknownkey", "Invalid token."),
        (
            b"Token rg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "Invalid token.",
        ),
    ];
    for (header, detail) in cases {
        let reply = server.get_with_auth_bytes("/api/me/", header).await;
        reply.assert(401, CHALLENGE, &failed(detail));
    }
    // A real key followed by more words is still "spaces".
    server
        .get("/api/me/", Some(&format!("Token {key} {key}")))
        .await
        .assert(
            401,
            CHALLENGE,
            &failed("Invalid token header. Token string should not contain spaces."),
        );
    // Longer than any key (100 characters) and a real key with a character changed.
    let long = format!("Token {}", "a".repeat(101));
    server
        .get("/api/me/", Some(&long))
        .await
        .assert(401, CHALLENGE, &invalid_token());
    let mut tampered = key.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    server
        .get("/api/me/", Some(&token(&tampered)))
        .await
        .assert(401, CHALLENGE, &invalid_token());

    // The keyword is case-insensitive.
    for keyword in ["Token", "token", "TOKEN", "tOkEn"] {
        server
            .get("/api/me/", Some(&format!("{keyword} {key}")))
            .await
            .assert(200, None, &me_body(alice, "alice", "token"));
    }
    // Another scheme's keyword: Token abstains, Basic abstains, anonymous → 401 Token.
    for header in [
        "Bearer x",
        "Bearer",
        &format!("Bearer {key}"),
        "Digest a=b",
        "Tokens x",
    ] {
        server
            .get("/api/me/", Some(header))
            .await
            .assert(401, CHALLENGE, &not_authenticated());
    }
}

#[tokio::test]
async fn revoked_expired_inactive_and_deleted() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    server.create_user("ivan", "ivan password");
    server.create_user("dora", "dora password");
    let alice = user_id(&server, "alice");
    let key = server.token_create("alice");
    let auth = token(&key);

    // Expiring tokens, from the API and from the CLI.
    let reply = server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Json(json!({"name": "short", "expires_in": 1})),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let short = reply.json["token"].as_str().unwrap().to_owned();
    let short_cli = server.token_create_with("alice", &["--expires-in", "1"]);
    for k in [&short, &short_cli] {
        server.get("/api/me/", Some(&token(k))).await.assert(
            200,
            None,
            &me_body(alice, "alice", "token"),
        );
    }

    // A revoked key.
    let revoked = server.obtain_token("alice", "alice password").await;
    let list = server.token_list(&auth).await;
    let revoked_id = list
        .iter()
        .find(|t| revoked.starts_with(t["prefix"].as_str().unwrap()))
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    server.get("/api/me/", Some(&token(&revoked))).await.assert(
        200,
        None,
        &me_body(alice, "alice", "token"),
    );
    server
        .request(
            Method::DELETE,
            &format!("/api/tokens/{revoked_id}/"),
            Some(&auth),
            Body::None,
        )
        .await
        .assert_no_content();
    server
        .get("/api/me/", Some(&token(&revoked)))
        .await
        .assert(401, CHALLENGE, &invalid_token());

    // An inactive user whose token was not revoked (flipped directly in the database, as
    // an admin tool or an imported Django database might leave it).
    let ivan_key = server.token_create("ivan");
    server.sql("UPDATE users SET is_active = 0 WHERE username = 'ivan';");
    server
        .get("/api/me/", Some(&token(&ivan_key)))
        .await
        .assert(401, CHALLENGE, &failed("User inactive or deleted."));

    // A deleted user: their tokens go with them.
    let dora_key = server.token_create("dora");
    server.cli(&["user", "delete", "dora"], None).assert_ok();
    server
        .get("/api/me/", Some(&token(&dora_key)))
        .await
        .assert(401, CHALLENGE, &invalid_token());

    // The short-lived keys have expired by now (1 s lifetime, 1 s check cache).
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    for k in [&short, &short_cli] {
        server
            .get("/api/me/", Some(&token(k)))
            .await
            .assert(401, CHALLENGE, &invalid_token());
    }
    // The long-lived key still works.
    server
        .get("/api/me/", Some(&auth))
        .await
        .assert(200, None, &me_body(alice, "alice", "token"));
}

#[tokio::test]
async fn deactivate_via_cli_revokes_tokens() {
    let server = Server::start();
    server.create_user("ivan", "ivan password");
    let key = server.token_create("ivan");
    let id = user_id(&server, "ivan");
    // Used once, so the server has it cached.
    server.get("/api/me/", Some(&token(&key))).await.assert(
        200,
        None,
        &me_body(id, "ivan", "token"),
    );
    server
        .cli(&["user", "deactivate", "ivan"], None)
        .assert_ok();
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "0");
    tokio::time::sleep(CACHE_WAIT).await;
    server
        .get("/api/me/", Some(&token(&key)))
        .await
        .assert(401, CHALLENGE, &invalid_token());
    server
        .get("/api/me/", Some(&basic("ivan", "ivan password")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
    // Reactivated, the password works again but the old token stays dead.
    server.cli(&["user", "activate", "ivan"], None).assert_ok();
    server
        .get("/api/me/", Some(&basic("ivan", "ivan password")))
        .await
        .assert(200, None, &me_body(id, "ivan", "basic"));
    server
        .get("/api/me/", Some(&token(&key)))
        .await
        .assert(401, CHALLENGE, &invalid_token());
}

#[tokio::test]
async fn obtain_token_form_and_json() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    server.create_user_with("ivan", "ivan password", &["--inactive"]);
    let alice = user_id(&server, "alice");

    // Form.
    let reply = server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Form(vec![
                ("username", "alice".into()),
                ("password", "alice password".into()),
            ]),
        )
        .await;
    reply.assert_status(200, None);
    reply.assert_json_content_type();
    let obj = reply.json.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{reply:?}");
    let form_key = obj["token"].as_str().unwrap().to_owned();

    // JSON, with cookies and a foreign Origin: no session, so no CSRF check.
    let reply = server
        .client
        .post(server.url("/api-token-auth/"))
        .header("cookie", "sessionid=bogus; csrftoken=bogus")
        .header("origin", "https://evil.example")
        .json(&json!({"username": "alice", "password": "alice password"}))
        .send()
        .await
        .unwrap();
    let reply = Reply::read(reply).await;
    reply.assert_status(200, None);
    let obj = reply.json.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{reply:?}");
    let json_key = obj["token"].as_str().unwrap().to_owned();

    // A new token each call, each one working.
    assert_ne!(form_key, json_key);
    for key in [&form_key, &json_key] {
        assert!(key.len() <= 100 && key.bytes().all(|b| b.is_ascii_graphic()));
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe key: {key}"
        );
        server.get("/api/me/", Some(&token(key))).await.assert(
            200,
            None,
            &me_body(alice, "alice", "token"),
        );
    }
    assert_eq!(server.token_list(&token(&form_key)).await.len(), 2);

    // Failures: bad password, unknown user, inactive user — one answer, nothing written.
    for (username, password) in [
        ("alice", "wrong"),
        ("nobody", "alice password"),
        ("ivan", "ivan password"),
    ] {
        let reply = server
            .request(
                Method::POST,
                "/api-token-auth/",
                None,
                Body::Json(json!({"username": username, "password": password})),
            )
            .await;
        reply.assert(400, None, &bad_login());
        let reply = server
            .request(
                Method::POST,
                "/api-token-auth/",
                None,
                Body::Form(vec![
                    ("username", username.into()),
                    ("password", password.into()),
                ]),
            )
            .await;
        reply.assert(400, None, &bad_login());
    }
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "2");
}

#[tokio::test]
async fn obtain_token_field_errors() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let required = json!(["This field is required."]);
    let blank = json!(["This field may not be blank."]);
    let cases: Vec<(Body, Value)> = vec![
        (
            Body::Json(json!({"username": "alice"})),
            json!({"password": required}),
        ),
        (
            Body::Json(json!({"username": "alice", "password": ""})),
            json!({"password": blank}),
        ),
        (
            Body::Json(json!({"password": "alice password"})),
            json!({"username": required}),
        ),
        (
            Body::Json(json!({"username": "  ", "password": "alice password"})),
            json!({"username": blank}),
        ),
        (
            Body::Json(json!({})),
            json!({"username": required, "password": required}),
        ),
        (
            Body::Json(json!({"username": null, "password": null})),
            json!({"username": ["This field may not be null."], "password": ["This field may not be null."]}),
        ),
        (
            Body::Form(vec![("username", "alice".into())]),
            json!({"password": required}),
        ),
        (
            Body::Form(vec![
                ("username", "alice".into()),
                ("password", String::new()),
            ]),
            json!({"password": blank}),
        ),
        (
            Body::Json(json!({"username": "a".repeat(151), "password": "x"})),
            json!({"username": ["Ensure this field has no more than 150 characters."]}),
        ),
        // NUL characters (DRF's ProhibitNullCharactersValidator), in either field.
        (
            Body::Json(json!({"username": "al\u{0}ice", "password": "alice password"})),
            json!({"username": ["Null characters are not allowed."]}),
        ),
        (
            Body::Form(vec![
                ("username", "alice".into()),
                ("password", "a\u{0}".into()),
            ]),
            json!({"password": ["Null characters are not allowed."]}),
        ),
        // No body at all.
        (
            Body::None,
            json!({"username": required, "password": required}),
        ),
    ];
    for (body, expected) in cases {
        let reply = server
            .request(Method::POST, "/api-token-auth/", None, body)
            .await;
        reply.assert(400, None, &expected);
    }
    // GET is not allowed on the obtain endpoint.
    server.get("/api-token-auth/", None).await.assert(
        405,
        None,
        &json!({"detail": "Method \"GET\" not allowed.", "code": "method_not_allowed"}),
    );
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "0");
}

fn parse_time(v: &Value) -> OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("a time string: {v}"));
    assert!(s.ends_with('Z'), "UTC time: {s}");
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("RFC 3339 {s:?}: {e}"))
}

#[tokio::test]
async fn list_and_create_tokens() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    server.create_user("bob", "bob password");
    let key = server.token_create_with("alice", &["--name", "cli"]);
    let bob_key = server.token_create("bob");
    let auth = token(&key);

    let before = OffsetDateTime::now_utc();
    let reply = server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Json(json!({"name": "laptop", "expires_in": 3600})),
        )
        .await;
    reply.assert_status(201, None);
    reply.assert_json_content_type();
    let created = reply.json.as_object().unwrap().clone();
    let mut keys: Vec<&str> = created.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expiry", "id", "name", "token"], "{reply:?}");
    assert_eq!(created["name"], "laptop");
    let expiry = parse_time(&created["expiry"]);
    let lifetime = expiry - before;
    assert!(
        lifetime >= time::Duration::seconds(3_595) && lifetime <= time::Duration::seconds(3_610),
        "expiry {expiry} vs now {before}"
    );
    let laptop_key = created["token"].as_str().unwrap().to_owned();
    let laptop_id = created["id"].as_i64().unwrap();

    // Form body, no name, no expiry.
    let reply = server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Form(vec![]),
        )
        .await;
    reply.assert_status(201, None);
    assert_eq!(reply.json["name"], "");
    assert_eq!(reply.json["expiry"], Value::Null);
    let plain_key = reply.json["token"].as_str().unwrap().to_owned();
    // expires_in as a numeric string (DRF's IntegerField accepts it), name trimmed.
    let reply = server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Json(json!({"name": "  ci  ", "expires_in": "60"})),
        )
        .await;
    reply.assert_status(201, None);
    assert_eq!(reply.json["name"], "ci");
    assert!(reply.json["expiry"].is_string());

    // The new keys work.
    let alice = user_id(&server, "alice");
    for k in [&laptop_key, &plain_key] {
        server.get("/api/me/", Some(&token(k))).await.assert(
            200,
            None,
            &me_body(alice, "alice", "token"),
        );
    }

    // The list: alice's four tokens, oldest first, never a key.
    let reply = server.get("/api/tokens/", Some(&auth)).await;
    reply.assert_status(200, None);
    reply.assert_json_content_type();
    assert!(!reply.text.contains(&key) && !reply.text.contains(&laptop_key));
    let list = reply.json.as_array().unwrap();
    assert_eq!(list.len(), 4, "{reply:?}");
    for item in list {
        let obj = item.as_object().unwrap();
        let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["created", "expiry", "id", "last_used", "name", "prefix"],
            "{item}"
        );
        assert!(obj["id"].is_i64());
        assert!(obj["name"].is_string());
        let prefix = obj["prefix"].as_str().unwrap();
        assert_eq!(prefix.chars().count(), 8, "{item}");
        parse_time(&obj["created"]);
        for t in ["last_used", "expiry"] {
            if !obj[t].is_null() {
                parse_time(&obj[t]);
            }
        }
    }
    let names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cli", "laptop", "", "ci"]);
    let laptop = list.iter().find(|t| t["id"] == laptop_id).unwrap();
    assert_eq!(laptop["prefix"].as_str().unwrap(), &laptop_key[..8]);
    assert_eq!(parse_time(&laptop["expiry"]), expiry);
    assert_eq!(list[0]["prefix"].as_str().unwrap(), &key[..8]);
    assert_eq!(list[0]["expiry"], Value::Null);
    // Bob sees only his own.
    let bob_list = server.token_list(&token(&bob_key)).await;
    assert_eq!(bob_list.len(), 1);
    assert_eq!(bob_list[0]["prefix"].as_str().unwrap(), &bob_key[..8]);

    // last_used is recorded (in the background) once a key is used.
    let mut seen = false;
    for _ in 0..50 {
        let list = server.token_list(&auth).await;
        if list[0]["last_used"].is_string() {
            parse_time(&list[0]["last_used"]);
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "last_used never set");
}

#[tokio::test]
async fn create_token_validation_writes_nothing() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let key = server.token_create("alice");
    let auth = token(&key);
    let before = server.token_list(&auth).await;

    let integer = json!(["A valid integer is required."]);
    let cases: Vec<(Body, Value)> = vec![
        (
            Body::Json(json!({"expires_in": "soon"})),
            json!({"expires_in": integer}),
        ),
        (
            Body::Json(json!({"expires_in": 1.5})),
            json!({"expires_in": integer}),
        ),
        (
            Body::Json(json!({"expires_in": true})),
            json!({"expires_in": integer}),
        ),
        (
            Body::Json(json!({"expires_in": [60]})),
            json!({"expires_in": integer}),
        ),
        (
            Body::Json(json!({"expires_in": 0})),
            json!({"expires_in": ["Ensure this value is greater than or equal to 1."]}),
        ),
        (
            Body::Json(json!({"expires_in": -5})),
            json!({"expires_in": ["Ensure this value is greater than or equal to 1."]}),
        ),
        (
            Body::Json(json!({"expires_in": 315_360_001_i64})),
            json!({"expires_in": ["Ensure this value is less than or equal to 315360000."]}),
        ),
        (
            Body::Json(json!({"name": "n".repeat(65)})),
            json!({"name": ["Ensure this field has no more than 64 characters."]}),
        ),
        (
            Body::Json(json!({"name": {"a": 1}})),
            json!({"name": ["Not a valid string."]}),
        ),
        (
            Body::Json(json!({"name": "n".repeat(65), "expires_in": "x"})),
            json!({
                "name": ["Ensure this field has no more than 64 characters."],
                "expires_in": integer,
            }),
        ),
        (
            Body::Form(vec![("expires_in", "0".into())]),
            json!({"expires_in": ["Ensure this value is greater than or equal to 1."]}),
        ),
        // DRF's CharField refuses NUL characters (ProhibitNullCharactersValidator) and
        // reports every failed validator.
        (
            Body::Json(json!({"name": "a\u{0}b"})),
            json!({"name": ["Null characters are not allowed."]}),
        ),
        (
            Body::Json(json!({"name": format!("{}\u{0}", "n".repeat(64))})),
            json!({"name": [
                "Ensure this field has no more than 64 characters.",
                "Null characters are not allowed.",
            ]}),
        ),
    ];
    for (body, expected) in cases {
        let reply = server
            .request(Method::POST, "/api/tokens/", Some(&auth), body)
            .await;
        reply.assert(400, None, &expected);
    }
    // DRF's IntegerField takes "60.0" (it strips a ".0*" suffix) and " 60 ".
    for value in [json!("60.0"), json!(" 60 "), json!(60.0)] {
        let reply = server
            .request(
                Method::POST,
                "/api/tokens/",
                Some(&auth),
                Body::Json(json!({"expires_in": value})),
            )
            .await;
        reply.assert_status(201, None);
        let expiry = parse_time(&reply.json["expiry"]);
        let left = expiry - OffsetDateTime::now_utc();
        assert!(
            left > time::Duration::seconds(50) && left <= time::Duration::seconds(60),
            "{value}: {expiry}"
        );
        let id = reply.json["id"].as_i64().unwrap();
        server
            .request(
                Method::DELETE,
                &format!("/api/tokens/{id}/"),
                Some(&auth),
                Body::None,
            )
            .await
            .assert_no_content();
    }
    // 64 characters is fine (and counted in characters, not bytes).
    let reply = server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Json(json!({"name": "é".repeat(64)})),
        )
        .await;
    reply.assert_status(201, None);
    let after = server.token_list(&auth).await;
    assert_eq!(after.len(), before.len() + 1);
    // Anonymous: 401, nothing written.
    server
        .request(
            Method::POST,
            "/api/tokens/",
            None,
            Body::Json(json!({"name": "x"})),
        )
        .await
        .assert(401, CHALLENGE, &not_authenticated());
    server
        .get("/api/tokens/", None)
        .await
        .assert(401, CHALLENGE, &not_authenticated());
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "2");
}

#[tokio::test]
async fn delete_tokens() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    server.create_user("bob", "bob password");
    let alice = user_id(&server, "alice");
    let bob = user_id(&server, "bob");
    let key = server.token_create("alice");
    let doomed = server.token_create("alice");
    let bob_key = server.token_create("bob");
    let auth = token(&key);
    let id_of = |list: &[Value], k: &str| -> i64 {
        list.iter()
            .find(|t| t["prefix"].as_str().unwrap() == &k[..8])
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let list = server.token_list(&auth).await;
    let doomed_id = id_of(&list, &doomed);
    let bob_id = id_of(&server.token_list(&token(&bob_key)).await, &bob_key);

    // Cached by a first use, then revoked: dead at once.
    server.get("/api/me/", Some(&token(&doomed))).await.assert(
        200,
        None,
        &me_body(alice, "alice", "token"),
    );
    server
        .request(
            Method::DELETE,
            &format!("/api/tokens/{doomed_id}/"),
            Some(&auth),
            Body::None,
        )
        .await
        .assert_no_content();
    server
        .get("/api/me/", Some(&token(&doomed)))
        .await
        .assert(401, CHALLENGE, &invalid_token());
    // Twice: gone.
    let not_found = json!({"detail": "Not found.", "code": "not_found"});
    server
        .request(
            Method::DELETE,
            &format!("/api/tokens/{doomed_id}/"),
            Some(&auth),
            Body::None,
        )
        .await
        .assert(404, None, &not_found);

    // Bob's token id, seen by alice: 404, and bob's token still works.
    server.get("/api/me/", Some(&token(&bob_key))).await.assert(
        200,
        None,
        &me_body(bob, "bob", "token"),
    );
    server
        .request(
            Method::DELETE,
            &format!("/api/tokens/{bob_id}/"),
            Some(&auth),
            Body::None,
        )
        .await
        .assert(404, None, &not_found);
    server.get("/api/me/", Some(&token(&bob_key))).await.assert(
        200,
        None,
        &me_body(bob, "bob", "token"),
    );

    // Ids that are not ids.
    for id in ["abc", "0", "-1", "1.0", "99999999999999999999999", "%20"] {
        server
            .request(
                Method::DELETE,
                &format!("/api/tokens/{id}/"),
                Some(&auth),
                Body::None,
            )
            .await
            .assert(404, None, &not_found);
    }
    // Anonymous delete: 401 and nothing deleted.
    server
        .request(
            Method::DELETE,
            &format!("/api/tokens/{bob_id}/"),
            None,
            Body::None,
        )
        .await
        .assert(401, CHALLENGE, &not_authenticated());
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "2");
    server
        .get("/api/me/", Some(&auth))
        .await
        .assert(200, None, &me_body(alice, "alice", "token"));
}

#[tokio::test]
async fn rotate_tokens() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    server.create_user("bob", "bob password");
    let alice = user_id(&server, "alice");
    let key = server.token_create("alice");
    let auth = token(&key);
    let reply = server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Json(json!({"name": "deploy", "expires_in": 86_400})),
        )
        .await;
    assert_eq!(reply.status, 201);
    let old_key = reply.json["token"].as_str().unwrap().to_owned();
    let old_id = reply.json["id"].as_i64().unwrap();
    let old_expiry = reply.json["expiry"].clone();
    // Cached by a first use.
    server.get("/api/me/", Some(&token(&old_key))).await.assert(
        200,
        None,
        &me_body(alice, "alice", "token"),
    );

    let reply = server
        .request(
            Method::POST,
            &format!("/api/tokens/{old_id}/rotate/"),
            Some(&auth),
            Body::None,
        )
        .await;
    reply.assert_status(201, None);
    reply.assert_json_content_type();
    let obj = reply.json.as_object().unwrap();
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["expiry", "id", "name", "token"]);
    assert_eq!(obj["name"], "deploy");
    assert_eq!(obj["expiry"], old_expiry, "rotation keeps the expiry");
    let new_key = obj["token"].as_str().unwrap().to_owned();
    let new_id = obj["id"].as_i64().unwrap();
    assert_ne!(new_key, old_key);

    server
        .get("/api/me/", Some(&token(&old_key)))
        .await
        .assert(401, CHALLENGE, &invalid_token());
    server.get("/api/me/", Some(&token(&new_key))).await.assert(
        200,
        None,
        &me_body(alice, "alice", "token"),
    );
    // The old id is gone; rotating it again is 404.
    let not_found = json!({"detail": "Not found.", "code": "not_found"});
    server
        .request(
            Method::POST,
            &format!("/api/tokens/{old_id}/rotate/"),
            Some(&auth),
            Body::None,
        )
        .await
        .assert(404, None, &not_found);
    // Another user's token: 404, and it keeps working.
    let bob_key = server.token_create("bob");
    let bob = user_id(&server, "bob");
    server
        .request(
            Method::POST,
            &format!("/api/tokens/{new_id}/rotate/"),
            Some(&token(&bob_key)),
            Body::None,
        )
        .await
        .assert(404, None, &not_found);
    server.get("/api/me/", Some(&token(&new_key))).await.assert(
        200,
        None,
        &me_body(alice, "alice", "token"),
    );
    server
        .request(
            Method::POST,
            "/api/tokens/abc/rotate/",
            Some(&auth),
            Body::None,
        )
        .await
        .assert(404, None, &not_found);
    // Rotating the presenting token itself works: the caller switches keys.
    let list = server.token_list(&auth).await;
    let self_id = list
        .iter()
        .find(|t| t["prefix"].as_str().unwrap() == &key[..8])
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let reply = server
        .request(
            Method::POST,
            &format!("/api/tokens/{self_id}/rotate/"),
            Some(&auth),
            Body::None,
        )
        .await;
    reply.assert_status(201, None);
    let replacement = reply.json["token"].as_str().unwrap().to_owned();
    server
        .get("/api/me/", Some(&auth))
        .await
        .assert(401, CHALLENGE, &invalid_token());
    server
        .get("/api/me/", Some(&token(&replacement)))
        .await
        .assert(200, None, &me_body(alice, "alice", "token"));
    server.get("/api/me/", Some(&token(&bob_key))).await.assert(
        200,
        None,
        &me_body(bob, "bob", "token"),
    );
}

#[tokio::test]
async fn logout_and_logoutall() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    server.create_user("bob", "bob password");
    let alice = user_id(&server, "alice");
    let bob = user_id(&server, "bob");
    let a = server.token_create("alice");
    let b = server.token_create("alice");
    let c = server.token_create("alice");
    let bob_key = server.token_create("bob");
    for k in [&a, &b, &c] {
        server.get("/api/me/", Some(&token(k))).await.assert(
            200,
            None,
            &me_body(alice, "alice", "token"),
        );
    }

    // logout ends the presenting API token; Basic presents none (knox's answer: no
    // credentials). logoutall takes any first-party credential (below).
    server
        .request(
            Method::POST,
            "/api/auth/logout/",
            Some(&basic("alice", "alice password")),
            Body::None,
        )
        .await
        .assert(401, CHALLENGE, &not_authenticated());
    for path in ["/api/auth/logout/", "/api/auth/logoutall/"] {
        server
            .request(Method::POST, path, None, Body::None)
            .await
            .assert(401, CHALLENGE, &not_authenticated());
        server
            .request(Method::POST, path, Some("Token nope"), Body::None)
            .await
            .assert(401, CHALLENGE, &invalid_token());
    }
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "4");

    // logout: only the presenting token.
    server
        .request(
            Method::POST,
            "/api/auth/logout/",
            Some(&token(&a)),
            Body::None,
        )
        .await
        .assert_no_content();
    server
        .get("/api/me/", Some(&token(&a)))
        .await
        .assert(401, CHALLENGE, &invalid_token());
    for k in [&b, &c] {
        server.get("/api/me/", Some(&token(k))).await.assert(
            200,
            None,
            &me_body(alice, "alice", "token"),
        );
    }

    // logoutall: every token of the user, none of bob's.
    server
        .request(
            Method::POST,
            "/api/auth/logoutall/",
            Some(&token(&b)),
            Body::None,
        )
        .await
        .assert_no_content();
    for k in [&a, &b, &c] {
        server
            .get("/api/me/", Some(&token(k)))
            .await
            .assert(401, CHALLENGE, &invalid_token());
    }
    server.get("/api/me/", Some(&token(&bob_key))).await.assert(
        200,
        None,
        &me_body(bob, "bob", "token"),
    );
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "1");
    // The password still works after logoutall.
    server
        .get("/api/me/", Some(&basic("alice", "alice password")))
        .await
        .assert(200, None, &me_body(alice, "alice", "basic"));
    // logoutall with Basic (a first-party credential): bob's tokens go too.
    server
        .request(
            Method::POST,
            "/api/auth/logoutall/",
            Some(&basic("bob", "bob password")),
            Body::None,
        )
        .await
        .assert_no_content();
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "0");
}

#[tokio::test]
async fn keys_are_not_stored_in_clear() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let cli_key = server.token_create("alice");
    let api_key = server.obtain_token("alice", "alice password").await;
    // Everything on disk: the database and its WAL.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(server.dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("restguard.db")
        {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!bytes.is_empty());
    for key in [&cli_key, &api_key] {
        let secret_part = &key.as_bytes()[8..];
        assert!(
            !bytes.windows(secret_part.len()).any(|w| w == secret_part),
            "a key is stored in clear"
        );
    }
    assert!(!bytes
        .windows("alice password".len())
        .any(|w| w == b"alice password"));
    let hash = server.sql("SELECT password FROM users WHERE username = 'alice';");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(hash.contains("m=19456,t=2,p=1"), "{hash}");
}

#[tokio::test]
async fn oversized_credentials_are_plain_failures() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let long = "p".repeat(5_000);
    // More than the 4096 bytes ever hashed: an ordinary failure, never a 500.
    server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Json(json!({"username": "alice", "password": long})),
        )
        .await
        .assert(400, None, &bad_login());
    server
        .get("/api/me/", Some(&basic("alice", &long)))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
    server
        .get(
            "/api/me/",
            Some(&basic(&"u".repeat(5_000), "alice password")),
        )
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
    // A key far longer than any key.
    server
        .get("/api/me/", Some(&token(&"k".repeat(10_000))))
        .await
        .assert(401, CHALLENGE, &invalid_token());
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "0");
}

#[tokio::test]
async fn concurrent_rotations_issue_one_key() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let alice = user_id(&server, "alice");
    let key = server.token_create("alice");
    let target = server.token_create("alice");
    let auth = token(&key);
    let id = server
        .token_list(&auth)
        .await
        .iter()
        .find(|t| t["prefix"].as_str().unwrap() == &target[..8])
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/tokens/{id}/rotate/");
    let replies = futures_join(
        (0..8)
            .map(|_| server.request(Method::POST, &path, Some(&auth), Body::None))
            .collect(),
    )
    .await;
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "{replies:#?}");
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert(
            404,
            None,
            &json!({"detail": "Not found.", "code": "not_found"}),
        );
    }
    let new_key = winners[0].json["token"].as_str().unwrap();
    server.get("/api/me/", Some(&token(new_key))).await.assert(
        200,
        None,
        &me_body(alice, "alice", "token"),
    );
    server
        .get("/api/me/", Some(&token(&target)))
        .await
        .assert(401, CHALLENGE, &invalid_token());
    assert_eq!(server.token_list(&auth).await.len(), 2);
}

/// Runs the futures concurrently (on one task) and returns their outputs in order.
async fn futures_join<F: std::future::Future<Output = Reply>>(futures: Vec<F>) -> Vec<Reply> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<Reply>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => out[i] = Some(r),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|r| r.unwrap()).collect()
}

#[tokio::test]
async fn deleting_the_presenting_token() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let key = server.token_create("alice");
    let auth = token(&key);
    let id = server.token_list(&auth).await[0]["id"].as_i64().unwrap();
    server
        .request(
            Method::DELETE,
            &format!("/api/tokens/{id}/"),
            Some(&auth),
            Body::None,
        )
        .await
        .assert_no_content();
    server
        .get("/api/tokens/", Some(&auth))
        .await
        .assert(401, CHALLENGE, &invalid_token());
}

#[tokio::test]
async fn failed_logins_are_throttled_per_username() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    for _ in 0..10 {
        server
            .request(
                Method::POST,
                "/api-token-auth/",
                None,
                Body::Json(json!({"username": "alice", "password": "wrong"})),
            )
            .await
            .assert(400, None, &bad_login());
    }
    // The 11th attempt is refused before the password is checked, even a right one.
    let reply = server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Json(json!({"username": "alice", "password": "alice password"})),
        )
        .await;
    reply.assert_status(429, None);
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let unit = if retry == 1 { "second" } else { "seconds" };
    assert_eq!(
        reply.json,
        json!({
            "detail": format!("Request was throttled. Expected available in {retry} {unit}."),
            "code": "throttled",
        })
    );
}
