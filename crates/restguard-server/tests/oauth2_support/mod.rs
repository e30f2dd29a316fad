//! Helpers for the OAuth2 provider tests: applications from the CLI, PKCE, the authorize
//! flow driven over HTTP with cookies handled by hand.

#![allow(dead_code, unreachable_pub, missing_docs)]

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::{Body, Reply, Server};
use crate::session_support::{self, Browser};

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret: Option<String>,
}

impl Client {
    /// `Authorization: Basic` for this client.
    pub fn basic(&self) -> String {
        basic(&self.id, self.secret.as_deref().unwrap_or(""))
    }
}

pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// `restguard app create ARGS`.
pub fn create_app(server: &Server, args: &[&str]) -> Client {
    let mut all = vec!["app", "create"];
    all.extend_from_slice(args);
    let out = server.cli(&all, None);
    out.assert_ok();
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("app create prints JSON");
    Client {
        id: v["client_id"].as_str().expect("client_id").to_owned(),
        secret: v["client_secret"].as_str().map(str::to_owned),
    }
}

pub const REDIRECT: &str = "http://127.0.0.1/cb";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A confidential authorization-code client redirecting to [`REDIRECT`] and `https://app.example/cb`.
pub fn web_app(server: &Server, extra: &[&str]) -> Client {
    let mut args = vec![
        "--name",
        "Web App",
        "--client-type",
        "confidential",
        "--grant",
        "authorization-code",
        "--redirect-uri",
        REDIRECT,
        "--redirect-uri",
        "https://app.example/cb",
    ];
    args.extend_from_slice(extra);
    create_app(server, &args)
}

/// The standard authorize query for `client` (S256, state `xyz`).
pub fn authorize_query(client_id: &str, scope: &str) -> Vec<(String, String)> {
    vec![
        ("response_type".into(), "code".into()),
        ("client_id".into(), client_id.into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("scope".into(), scope.into()),
        ("state".into(), "xyz".into()),
        ("code_challenge".into(), challenge(VERIFIER)),
        ("code_challenge_method".into(), "S256".into()),
        ("nonce".into(), "n-0S6_WzA2Mj".into()),
    ]
}

pub fn encode(pairs: &[(String, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `GET /o/authorize/?…` as `browser` (or anonymous).
pub async fn authorize(
    server: &Server,
    browser: Option<&Browser>,
    pairs: &[(String, String)],
) -> Reply {
    let path = format!("/o/authorize/?{}", encode(pairs));
    let cookies = browser.map(|b| b.cookies().to_vec()).unwrap_or_default();
    session_support::send(server, Method::GET, &path, &cookies, &[], Body::None).await
}

fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The hidden inputs of a page's form (name, value).
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input type=\"hidden\" name=\"") {
        rest = &rest[i + 27..];
        let Some(end) = rest.find('"') else { break };
        let name = unescape(&rest[..end]);
        rest = &rest[end..];
        let marker = "value=\"";
        let Some(v) = rest.find(marker) else { break };
        rest = &rest[v + marker.len()..];
        let Some(end) = rest.find('"') else { break };
        out.push((name, unescape(&rest[..end])));
        rest = &rest[end..];
    }
    out
}

/// Submits the consent page's form, approving (`allow`) or not.
pub async fn submit_consent(
    server: &Server,
    browser: &Browser,
    page: &Reply,
    allow: bool,
) -> Reply {
    let mut form: Vec<(String, String)> = hidden_inputs(&page.text);
    if allow {
        form.push(("allow".into(), "Authorize".into()));
    }
    let body = encode(&form).into_bytes();
    session_support::send(
        server,
        Method::POST,
        "/o/authorize/",
        &browser.cookies(),
        &[("Origin", server.base.as_str())],
        Body::Raw("application/x-www-form-urlencoded", body),
    )
    .await
}

pub fn location(reply: &Reply) -> String {
    reply
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The query parameters of a redirect's `Location`.
pub fn redirect_params(reply: &Reply) -> Vec<(String, String)> {
    let loc = location(reply);
    let url = url::Url::parse(&loc).unwrap_or_else(|_| panic!("absolute Location, got {loc:?}"));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Runs authorize → consent → code for a signed-in browser; returns the code.
pub async fn obtain_code(server: &Server, browser: &Browser, pairs: &[(String, String)]) -> String {
    let page = authorize(server, Some(browser), pairs).await;
    assert_eq!(page.status, 200, "consent page: {page:?}");
    let back = submit_consent(server, browser, &page, true).await;
    assert_eq!(back.status, 302, "{back:?}");
    let params = redirect_params(&back);
    assert_eq!(param(&params, "state").as_deref(), Some("xyz"));
    param(&params, "code").expect("a code")
}

/// `POST /o/token/` with a form body and optional Basic client authentication.
pub async fn token_request(server: &Server, auth: Option<&str>, form: &[(&str, &str)]) -> Reply {
    let pairs: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    post_form(server, "/o/token/", auth, &pairs).await
}

pub async fn post_form(
    server: &Server,
    path: &str,
    auth: Option<&str>,
    pairs: &[(String, String)],
) -> Reply {
    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
    session_support::send(
        server,
        Method::POST,
        path,
        &[],
        &headers,
        Body::Raw(
            "application/x-www-form-urlencoded",
            encode(pairs).into_bytes(),
        ),
    )
    .await
}

/// Asserts an RFC 6749 error: status and exact `error` (description free).
pub fn assert_oauth_error(reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.json["error"], json!(error), "{reply:?}");
    let keys: Vec<&String> = reply.json.as_object().expect("object").keys().collect();
    assert!(
        keys.iter()
            .all(|k| *k == "error" || *k == "error_description"),
        "only RFC 6749 members: {reply:?}"
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["pragma"], "no-cache");
}

/// Rows of the OAuth tables (codes used, tokens) — "nothing written" checks.
pub fn oauth_state(server: &Server) -> String {
    server.sql(
        "SELECT (SELECT count(*) FROM oauth_tokens) || ',' || \
         (SELECT count(*) FROM oauth_tokens WHERE revoked_at IS NOT NULL OR used_at IS NOT NULL) || ',' || \
         (SELECT count(*) FROM oauth_codes WHERE used_at IS NOT NULL);",
    )
}
