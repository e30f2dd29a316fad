//! CONTRACT §2 (Basic) on `/api/me/`, whose default policy is `token, basic` +
//! `is_authenticated`: the first authenticator is Token, so every 401 challenges `Token` (§1).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use serde_json::json;

const CHALLENGE: Option<&str> = Some("Token");

#[tokio::test]
async fn anonymous_me_is_401_token() {
    let server = Server::start();
    server
        .get("/api/me/", None)
        .await
        .assert(401, CHALLENGE, &not_authenticated());
}

#[tokio::test]
async fn malformed_basic_headers() {
    let server = Server::start();
    // Make sure a real user exists, so no row can pass for lack of users.
    server.create_user("alice", "correct horse");
    let cases: [(&str, &str); 9] = [
        ("Basic", "Invalid basic header. No credentials provided."),
        ("basic", "Invalid basic header. No credentials provided."),
        (
            "Basic a b",
            "Invalid basic header. Credentials string should not contain spaces.",
        ),
        (
            "Basic YWxpY2U6Y29ycmVjdCBob3JzZQ== extra",
            "Invalid basic header. Credentials string should not contain spaces.",
        ),
        (
            "Basic !!!notbase64!!!",
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
        (
            "Basic YWxpY2U6Y29yc$mVjdA==",
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
        // "nocolon"
        (
            "Basic bm9jb2xvbg==",
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
        // "alice" (a real username, no colon)
        (
            "Basic YWxpY2U=",
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
        // empty credentials decode to "" (no colon)
        (
            "BASIC =",
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
    ];
    for (header, detail) in cases {
        let reply = server.get("/api/me/", Some(header)).await;
        reply.assert(401, CHALLENGE, &failed(detail));
    }
}

#[tokio::test]
async fn basic_credentials() {
    let server = Server::start();
    server.create_user("alice", "correct horse");
    server.create_user_with("ivan", "s3cret pass", &["--inactive"]);
    let alice = user_id(&server, "alice");
    let invalid = failed("Invalid username/password.");

    // Success, with the scheme word in any case.
    for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
        let header = basic("alice", "correct horse").replacen("Basic", scheme, 1);
        let reply = server.get("/api/me/", Some(&header)).await;
        reply.assert(200, None, &me_body(alice, "alice", "basic"));
    }

    // Unknown user, wrong password, inactive user (with its right password): one answer.
    for header in [
        basic("mallory", "correct horse"),
        basic("alice", "wrong horse"),
        basic("alice", "correct horse "),
        basic("alice", ""),
        basic("ALICE", "correct horse"),
        basic("ivan", "s3cret pass"),
        basic("", ""),
    ] {
        let reply = server.get("/api/me/", Some(&header)).await;
        reply.assert(401, CHALLENGE, &invalid);
    }
}

#[tokio::test]
async fn basic_splits_at_first_colon_and_decodes_utf8() {
    let server = Server::start();
    server.create_user("bob", "pa:ss:word");
    server.create_user("zoë", "naïve pässwörd");
    server.create_user("café", "latin");
    let bob = user_id(&server, "bob");
    let zoe = user_id(&server, "zoë");
    let cafe = user_id(&server, "café");

    server
        .get("/api/me/", Some(&basic("bob", "pa:ss:word")))
        .await
        .assert(200, None, &me_body(bob, "bob", "basic"));
    // The whole rest after the first colon is the password.
    server
        .get("/api/me/", Some(&basic("bob", "pa:ss")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
    // UTF-8 username and password.
    server
        .get("/api/me/", Some(&basic("zoë", "naïve pässwörd")))
        .await
        .assert(200, None, &me_body(zoe, "zoë", "basic"));
    // Latin-1 fallback: "café:latin" encoded as ISO-8859-1 is not UTF-8.
    server
        .get("/api/me/", Some(&basic_raw(b"caf\xe9:latin")))
        .await
        .assert(200, None, &me_body(cafe, "café", "basic"));
}

#[tokio::test]
async fn me_body_carries_user_flags() {
    let server = Server::start();
    server.create_user_with(
        "root",
        "admin password",
        &["--email", "root@example.com", "--staff", "--superuser"],
    );
    let id = user_id(&server, "root");
    server
        .get("/api/me/", Some(&basic("root", "admin password")))
        .await
        .assert(
            200,
            None,
            &json!({
                "id": id,
                "username": "root",
                "email": "root@example.com",
                "is_staff": true,
                "is_superuser": true,
                "auth": {"scheme": "basic"},
            }),
        );
}
