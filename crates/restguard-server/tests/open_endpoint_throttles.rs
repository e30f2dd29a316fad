//! `throttle.anon` covers the open endpoints that take credentials or tokens — the token,
//! JWT and OAuth2 endpoints — as DRF's default throttle classes cover Simple JWT's views
//! (CONTRACT §9, issue 10): an anonymous client past the rate gets 429 with `Retry-After`
//! before the endpoint does any work.

mod common;

use common::{Reply, Server};
use reqwest::Method;
use serde_json::{json, Value};

/// The 429 body for the `Retry-After` the reply carries (asserted between 1 and 60 s).
fn assert_throttled(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 429, "{what}: {reply:?}");
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
    let unit = if retry == 1 { "second" } else { "seconds" };
    reply.assert(
        429,
        None,
        &json!({
            "detail": format!("Request was throttled. Expected available in {retry} {unit}."),
            "code": "throttled",
        }),
    );
}

/// One request from `client_ip` (the proxy's `X-Forwarded-For`, `throttle.num_proxies = 1`).
async fn send(server: &Server, method: Method, path: &str, client_ip: &str, body: &Body) -> Reply {
    let mut request = server
        .client
        .request(method, server.url(path))
        .header("X-Forwarded-For", client_ip);
    request = match body {
        Body::Json(value) => request.json(value),
        Body::Form(pairs) => request.form(pairs),
        Body::None => request,
    };
    Reply::read(request.send().await.expect("request")).await
}

enum Body {
    None,
    Json(Value),
    Form(Vec<(&'static str, &'static str)>),
}

#[tokio::test]
async fn anon_rate_covers_the_token_jwt_and_oauth2_endpoints() {
    let server = Server::start_with_env(&[
        ("RESTGUARD_THROTTLE__ANON", "1/m"),
        ("RESTGUARD_THROTTLE__NUM_PROXIES", "1"),
    ]);
    let required = |fields: &[&str]| -> Value {
        fields
            .iter()
            .map(|f| ((*f).to_owned(), json!(["This field is required."])))
            .collect::<serde_json::Map<String, Value>>()
            .into()
    };
    let invalid_client =
        json!({"error": "invalid_client", "error_description": "Client authentication failed."});
    // Each endpoint with the answer of its first (allowed) request.
    let cases: Vec<(Method, &str, Body, u16, Option<Value>)> = vec![
        (
            Method::POST,
            "/api-token-auth/",
            Body::Json(json!({})),
            400,
            Some(required(&["username", "password"])),
        ),
        (
            Method::POST,
            "/api/token/",
            Body::Json(json!({})),
            400,
            Some(required(&["username", "password"])),
        ),
        (
            Method::POST,
            "/api/token/refresh/",
            Body::Json(json!({})),
            400,
            Some(required(&["refresh"])),
        ),
        (
            Method::POST,
            "/api/token/verify/",
            Body::Json(json!({})),
            400,
            Some(required(&["token"])),
        ),
        (
            Method::POST,
            "/api/token/blacklist/",
            Body::Json(json!({})),
            400,
            Some(required(&["refresh"])),
        ),
        (
            Method::POST,
            "/api/token/sliding/",
            Body::Json(json!({})),
            400,
            Some(required(&["username", "password"])),
        ),
        (
            Method::POST,
            "/api/token/sliding/refresh/",
            Body::Json(json!({})),
            400,
            Some(required(&["token"])),
        ),
        (Method::GET, "/api/token/jwks/", Body::None, 200, None),
        (
            Method::POST,
            "/o/token/",
            Body::Form(vec![("grant_type", "client_credentials")]),
            401,
            Some(invalid_client.clone()),
        ),
        (
            Method::POST,
            "/o/revoke_token/",
            Body::Form(vec![("token", "x")]),
            401,
            Some(invalid_client.clone()),
        ),
        (
            Method::POST,
            "/o/introspect/",
            Body::Form(vec![("token", "x")]),
            401,
            Some(invalid_client),
        ),
    ];
    for (index, (method, path, body, status, expected)) in cases.iter().enumerate() {
        // A client address of its own per endpoint: the anon buckets are per address.
        let ip = format!("198.51.100.{}", index + 1);
        let first = send(&server, method.clone(), path, &ip, body).await;
        assert_eq!(first.status.as_u16(), *status, "{path}: {first:?}");
        if let Some(expected) = expected {
            assert_eq!(&first.json, expected, "{path}: {first:?}");
        }
        let second = send(&server, method.clone(), path, &ip, body).await;
        assert_throttled(&second, path);
        // Another address has its own allowance.
        let other = send(
            &server,
            method.clone(),
            path,
            &format!("203.0.113.{}", index + 1),
            body,
        )
        .await;
        assert_eq!(
            other.status.as_u16(),
            *status,
            "{path} from another address: {other:?}"
        );
    }
}
