//! CONTRACT §1 and §10: malformed requests get a JSON error and write nothing; health.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use reqwest::{
    header::{HeaderMap, HeaderValue, AUTHORIZATION},
    Method,
};
use serde_json::{json, Value};

const CHALLENGE: Option<&str> = Some("Token");

fn parse_error(reply: &Reply) {
    reply.assert_status(400, None);
    reply.assert_json_content_type();
    let obj = reply.json.as_object().expect("a JSON object");
    assert_eq!(obj.len(), 2, "{reply:?}");
    assert_eq!(obj["code"], "parse_error", "{reply:?}");
    let detail = obj["detail"].as_str().expect("detail string");
    assert!(detail.starts_with("JSON parse error"), "{reply:?}");
}

#[tokio::test]
async fn multiple_authorization_headers() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let key = server.token_create("alice");
    let expected = json!({"detail": "Multiple Authorization headers.", "code": "invalid_header"});
    let pairs: [(String, String); 3] = [
        (token(&key), token(&key)),
        (token(&key), basic("alice", "alice password")),
        ("Token".into(), "Basic".into()),
    ];
    for path in ["/api/me/", "/api/ping/", "/api/tokens/"] {
        for (first, second) in &pairs {
            let mut headers = HeaderMap::new();
            headers.append(AUTHORIZATION, HeaderValue::from_str(first).unwrap());
            headers.append(AUTHORIZATION, HeaderValue::from_str(second).unwrap());
            let reply = server
                .client
                .get(server.url(path))
                .headers(headers)
                .send()
                .await
                .unwrap();
            Reply::read(reply).await.assert(400, None, &expected);
        }
    }
    // Also on a write: nothing is written.
    let mut headers = HeaderMap::new();
    headers.append(AUTHORIZATION, HeaderValue::from_str(&token(&key)).unwrap());
    headers.append(AUTHORIZATION, HeaderValue::from_str(&token(&key)).unwrap());
    let reply = server
        .client
        .post(server.url("/api/tokens/"))
        .headers(headers)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    Reply::read(reply).await.assert(400, None, &expected);
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "1");
}

#[tokio::test]
async fn json_bodies() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let raw = |bytes: &[u8]| Body::Raw("application/json", bytes.to_vec());

    for bad in [
        &b"{"[..],
        b"{\"username\": \"alice\", \"password\": }",
        b"{'username': 'alice'}",
        b"nul",
        b"{\"username\": \"alice\"} trailing",
        b"\xff\xfe{}",
        // Duplicate members, at the top and nested.
        b"{\"username\": \"alice\", \"password\": \"x\", \"password\": \"alice password\"}",
        b"{\"username\": \"alice\", \"username\": \"alice\", \"password\": \"alice password\"}",
        b"{\"username\": \"alice\", \"password\": \"alice password\", \"x\": {\"a\": 1, \"a\": 2}}",
    ] {
        let reply = server
            .request(Method::POST, "/api-token-auth/", None, raw(bad))
            .await;
        parse_error(&reply);
    }
    // Deep nesting is a parse error, not a crash.
    let deep = format!(
        "{{\"username\": {}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let reply = server
        .request(Method::POST, "/api-token-auth/", None, raw(deep.as_bytes()))
        .await;
    parse_error(&reply);
    // application/*+json is JSON too.
    let reply = server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Raw("application/vnd.api+json", b"{".to_vec()),
        )
        .await;
    parse_error(&reply);

    // Not an object.
    for (body, kind) in [
        (&b"[]"[..], "list"),
        (
            b"[{\"username\": \"alice\", \"password\": \"alice password\"}]",
            "list",
        ),
        (b"\"alice\"", "str"),
        (b"42", "int"),
        (b"4.5", "float"),
        (b"true", "bool"),
        (b"null", "NoneType"),
    ] {
        let reply = server
            .request(Method::POST, "/api-token-auth/", None, raw(body))
            .await;
        reply.assert(
            400,
            None,
            &json!({"non_field_errors": [format!("Invalid data. Expected a dictionary, but got {kind}.")]}),
        );
    }

    // Wrong member types.
    let reply = server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Json(json!({"username": ["x"], "password": true})),
        )
        .await;
    reply.assert(
        400,
        None,
        &json!({"username": ["Not a valid string."], "password": ["Not a valid string."]}),
    );
    let reply = server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Json(json!({"username": {"a": "b"}, "password": "alice password"})),
        )
        .await;
    reply.assert(400, None, &json!({"username": ["Not a valid string."]}));
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "0");

    // The charset parameter and letter case of the media type do not matter.
    let reply = server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Raw(
                "Application/JSON; charset=utf-8",
                br#"{"username": "alice", "password": "alice password"}"#.to_vec(),
            ),
        )
        .await;
    reply.assert_status(200, None);
    assert!(reply.json["token"].is_string(), "{reply:?}");
}

#[tokio::test]
async fn rejected_writes_leave_the_token_list_unchanged() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let key = server.token_create("alice");
    let auth = token(&key);
    // The list without `last_used`, which the requests themselves update.
    let snapshot = |list: Vec<Value>| -> Vec<Value> {
        list.into_iter()
            .map(|mut t| {
                t.as_object_mut().unwrap().remove("last_used");
                t
            })
            .collect()
    };
    let before = snapshot(server.token_list(&auth).await);

    let big_name = format!("{{\"name\": \"{}\"}}", "n".repeat(70 * 1024));
    let attempts: Vec<(Body, u16)> = vec![
        (
            Body::Raw(
                "application/json",
                br#"{"name": "a", "name": "b"}"#.to_vec(),
            ),
            400,
        ),
        (Body::Raw("application/json", b"{\"name\": ".to_vec()), 400),
        (Body::Raw("application/json", b"[1, 2]".to_vec()), 400),
        (Body::Json(json!({"name": ["a"]})), 400),
        (Body::Raw("text/plain", b"name=x".to_vec()), 415),
        (Body::Raw("application/json", big_name.into_bytes()), 413),
    ];
    for (body, status) in attempts {
        let reply = server
            .request(Method::POST, "/api/tokens/", Some(&auth), body)
            .await;
        assert_eq!(reply.status.as_u16(), status, "{reply:?}");
        assert_eq!(reply.challenge(), None);
        reply.assert_json_content_type();
        assert_eq!(snapshot(server.token_list(&auth).await), before);
    }
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "1");
}

#[tokio::test]
async fn body_limit_and_media_types() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let key = server.token_create("alice");
    let auth = token(&key);
    let too_large = json!({"detail": "Request body is too large.", "code": "payload_too_large"});

    // Over 64 KiB: 413 on the login endpoint (before any password check) and on an
    // authenticated write.
    let mut body = br#"{"username": "alice", "password": "alice password"}"#.to_vec();
    body.resize(64 * 1024 + 1, b' ');
    server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Raw("application/json", body.clone()),
        )
        .await
        .assert(413, None, &too_large);
    let mut form = b"username=alice&password=alice+password&pad=".to_vec();
    form.resize(200 * 1024, b'x');
    server
        .request(
            Method::POST,
            "/api-token-auth/",
            None,
            Body::Raw("application/x-www-form-urlencoded", form),
        )
        .await
        .assert(413, None, &too_large);
    server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Raw("application/json", body),
        )
        .await
        .assert(413, None, &too_large);

    // Exactly 64 KiB is within the limit.
    let mut body = br#"{"name": "edge"}"#.to_vec();
    body.resize(64 * 1024, b' ');
    let reply = server
        .request(
            Method::POST,
            "/api/tokens/",
            Some(&auth),
            Body::Raw("application/json", body),
        )
        .await;
    reply.assert_status(201, None);
    assert_eq!(reply.json["name"], "edge");

    // Media types no parser handles.
    for ct in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        let media = ct.split(';').next().unwrap();
        server
            .request(
                Method::POST,
                "/api-token-auth/",
                None,
                Body::Raw(ct, b"username=alice&password=x".to_vec()),
            )
            .await
            .assert(
                415,
                None,
                &json!({
                    "detail": format!("Unsupported media type \"{media}\" in request."),
                    "code": "unsupported_media_type",
                }),
            );
    }
    assert_eq!(server.sql("SELECT count(*) FROM api_tokens;"), "2");
}

#[tokio::test]
async fn not_found_and_method_not_allowed() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let key = server.token_create("alice");
    let auth = token(&key);
    let not_found = json!({"detail": "Not found.", "code": "not_found"});
    for path in [
        "/nope",
        "/api/",
        "/api/me",
        "/api/tokens/1/rotate/x/",
        "/api/tokens/1/",
    ] {
        let reply = server.get(path, Some(&auth)).await;
        if path == "/api/tokens/1/" {
            // The path exists for DELETE only.
            reply.assert(
                405,
                None,
                &json!({"detail": "Method \"GET\" not allowed.", "code": "method_not_allowed"}),
            );
        } else {
            reply.assert(404, None, &not_found);
        }
    }
    // An anonymous request to an unknown path is refused by the default policy first.
    server
        .get("/nope", None)
        .await
        .assert(401, CHALLENGE, &not_authenticated());

    for (method, path) in [
        (Method::PATCH, "/api/me/"),
        (Method::POST, "/api/me/"),
        (Method::PUT, "/api/tokens/"),
        (Method::DELETE, "/api/tokens/"),
        (Method::GET, "/api/auth/logout/"),
        (Method::PATCH, "/api-token-auth/"),
    ] {
        let reply = server
            .request(method.clone(), path, Some(&auth), Body::None)
            .await;
        reply.assert(
            405,
            None,
            &json!({"detail": format!("Method \"{method}\" not allowed."), "code": "method_not_allowed"}),
        );
    }
    // A 405 writes nothing: the token still works.
    server
        .get("/api/me/", Some(&auth))
        .await
        .assert_status(200, None);
}

#[tokio::test]
async fn allow_any_route_still_fails_invalid_credentials() {
    let server = Server::start();
    server.create_user("alice", "alice password");
    let key = server.token_create("alice");
    let ok = json!({"ok": true});

    server.get("/api/ping/", None).await.assert(200, None, &ok);
    server
        .get("/api/ping/", Some(&token(&key)))
        .await
        .assert(200, None, &ok);
    server
        .get("/api/ping/", Some(&basic("alice", "alice password")))
        .await
        .assert(200, None, &ok);
    // Another scheme: abstain → anonymous → allowed.
    server
        .get("/api/ping/", Some("Bearer whatever"))
        .await
        .assert(200, None, &ok);

    let cases: [(&str, Value); 4] = [
        ("Token nope", failed("Invalid token.")),
        (
            "Token",
            failed("Invalid token header. No credentials provided."),
        ),
        (
            "Token a b",
            failed("Invalid token header. Token string should not contain spaces."),
        ),
        (
            "Basic !!",
            failed("Invalid basic header. Credentials not correctly base64 encoded."),
        ),
    ];
    for (header, body) in cases {
        server
            .get("/api/ping/", Some(header))
            .await
            .assert(401, CHALLENGE, &body);
    }
    server
        .get("/api/ping/", Some(&basic("alice", "wrong")))
        .await
        .assert(401, CHALLENGE, &failed("Invalid username/password."));
}

#[tokio::test]
async fn health_endpoints() {
    let server = Server::start();
    server
        .get("/healthz", None)
        .await
        .assert(200, None, &json!({"status": "ok"}));
    server
        .get("/readyz", None)
        .await
        .assert(200, None, &json!({"status": "ready"}));
    // Open endpoints ignore credentials, even invalid ones.
    for path in ["/healthz", "/readyz"] {
        let reply = server.get(path, Some("Token nope")).await;
        reply.assert_status(200, None);
    }
}
