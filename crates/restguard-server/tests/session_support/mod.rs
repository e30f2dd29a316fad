//! Helpers for the session and page tests: cookies handled by hand, so every test says
//! exactly what the "browser" sends.

#![allow(dead_code, unreachable_pub, missing_docs)]

use reqwest::{header::HeaderMap, Method};
use serde_json::Value;

use crate::common::{Body, Reply, Server};

/// Plain-HTTP development settings: cookies without `Secure`.
pub const PLAIN_HTTP: (&str, &str) = ("RESTGUARD_SESSION__COOKIE_SECURE", "false");

/// A server for plain-HTTP tests, with extra environment.
pub fn server_with(env: &[(&str, &str)]) -> Server {
    let mut all = vec![PLAIN_HTTP];
    all.extend_from_slice(env);
    Server::start_with_env(&all)
}

/// Every `Set-Cookie` value for `name` (whole header values).
pub fn set_cookies<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .collect()
}

/// The value a `Set-Cookie` for `name` sets (the last one), if any.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    set_cookies(headers, name).last().map(|v| {
        v[name.len() + 1..]
            .split(';')
            .next()
            .unwrap_or("")
            .to_owned()
    })
}

/// A request with explicit cookies and headers.
pub async fn send(
    server: &Server,
    method: Method,
    path: &str,
    cookies: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: Body,
) -> Reply {
    let mut builder = server.client.request(method, server.url(path));
    if !cookies.is_empty() {
        let cookie = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        builder = builder.header(reqwest::header::COOKIE, cookie);
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
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

/// `GET /api/csrf/`: the cookie's secret and a masked token.
pub async fn csrf(server: &Server) -> (String, String) {
    let reply = send(server, Method::GET, "/api/csrf/", &[], &[], Body::None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let secret = cookie_value(&reply.headers, "csrftoken").expect("csrftoken cookie");
    let token = reply.json["csrfToken"]
        .as_str()
        .expect("csrfToken")
        .to_owned();
    (secret, token)
}

/// A logged-in browser: its session cookie and its (rotated) CSRF secret.
#[derive(Debug, Clone)]
pub struct Browser {
    pub sessionid: String,
    pub csrftoken: String,
}

impl Browser {
    pub fn cookies(&self) -> [(&str, &str); 2] {
        [
            ("sessionid", self.sessionid.as_str()),
            ("csrftoken", self.csrftoken.as_str()),
        ]
    }

    /// A request carrying the cookies and, for unsafe methods, `X-CSRFToken`.
    pub async fn send(&self, server: &Server, method: Method, path: &str, body: Body) -> Reply {
        let csrf = [("X-CSRFToken", self.csrftoken.as_str())];
        let headers: &[(&str, &str)] = if method == Method::GET { &[] } else { &csrf };
        send(server, method, path, &self.cookies(), headers, body).await
    }

    pub async fn me(&self, server: &Server) -> Reply {
        self.send(server, Method::GET, "/api/me/", Body::None).await
    }
}

/// `POST /api/session/login/` with a fresh CSRF cookie and token; asserts 200.
pub async fn login(server: &Server, username: &str, password: &str) -> Browser {
    let (secret, token) = csrf(server).await;
    let reply = send(
        server,
        Method::POST,
        "/api/session/login/",
        &[("csrftoken", &secret)],
        &[("X-CSRFToken", &token)],
        Body::Json(serde_json::json!({"username": username, "password": password})),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    Browser {
        sessionid: cookie_value(&reply.headers, "sessionid").expect("session cookie"),
        csrftoken: cookie_value(&reply.headers, "csrftoken").expect("rotated CSRF cookie"),
    }
}

/// The hidden `csrfmiddlewaretoken` value of a page.
pub fn form_token(html: &str) -> String {
    let marker = "name=\"csrfmiddlewaretoken\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    html[start..start + 64].to_owned()
}

/// The number of rows in the server's `sessions` table.
pub fn session_rows(server: &Server) -> i64 {
    server
        .sql("SELECT count(*) FROM sessions;")
        .parse()
        .expect("a count")
}

/// `{"detail": "CSRF Failed: <reason>", "code": "csrf_failed"}`.
pub fn csrf_failed(reason: &str) -> Value {
    serde_json::json!({"detail": format!("CSRF Failed: {reason}"), "code": "csrf_failed"})
}
