//! Credential management takes first-party credentials only (CONTRACT §3): an OAuth2 access
//! token was delegated to a third party — obtained here through the real consent flow, for
//! nothing more than `openid` — and must never mint, list, rotate or revoke the user's API
//! tokens, log the user out, or act on the account and admin pages. It reaches those routes
//! as "no credentials": 401 `Token` on the API, the sign-in redirect on the pages.

mod common;
mod oauth2_support;
mod session_support;

use common::{not_authenticated, token, Body, Reply, Server};
use oauth2_support::{authorize_query, obtain_code, token_request, web_app, REDIRECT, VERIFIER};
use reqwest::Method;
use serde_json::json;
use session_support::{login, server_with, Browser};

const PASSWORD: &str = "pw-alice-123";

/// Everything a credential-management request could change, in one string: users (password
/// hash, flags, credentials epoch), API tokens, applications (secrets), sessions, live OAuth2
/// tokens.
fn fingerprint(server: &Server) -> String {
    server.sql(
        "SELECT coalesce((SELECT group_concat(id || ':' || username || ':' || password || ':' || \
         is_active || is_staff || is_superuser || ':' || credentials_changed_at, ';') FROM users), '') \
         || '|' || coalesce((SELECT group_concat(id || ':' || hex(digest) || ':' || \
         coalesce(expiry, ''), ';') FROM api_tokens), '') \
         || '|' || coalesce((SELECT group_concat(id || ':' || hex(coalesce(secret_digest, '')) || \
         ':' || redirect_uris, ';') FROM oauth_applications), '') \
         || '|' || (SELECT count(*) FROM sessions) \
         || '|' || (SELECT count(*) FROM oauth_tokens WHERE revoked_at IS NULL);",
    )
}

/// A superuser `alice` with an API token and a browser session, and a third-party client's
/// `openid`-only access token for her, from the authorization-code flow with consent.
struct Delegated {
    server: Server,
    /// Alice's own API key.
    key: String,
    /// Its id.
    key_id: i64,
    /// `Bearer <access token>` of the third party.
    bearer: String,
    /// Alice's signed-in browser.
    browser: Browser,
}

async fn delegated() -> Delegated {
    let server = server_with(&[]);
    server.create_user_with("alice", PASSWORD, &["--staff", "--superuser"]);
    let key = server.token_create("alice");
    let listed = server.token_list(&token(&key)).await;
    let key_id = listed[0]["id"].as_i64().expect("token id");
    let client = web_app(&server, &[]);
    let browser = login(&server, "alice", PASSWORD).await;
    let code = obtain_code(&server, &browser, &authorize_query(&client.id, "openid")).await;
    let exchanged = token_request(
        &server,
        Some(&client.basic()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(exchanged.status, 200, "{exchanged:?}");
    assert_eq!(exchanged.json["scope"], "openid", "{exchanged:?}");
    let access = exchanged.json["access_token"]
        .as_str()
        .expect("access_token");
    Delegated {
        bearer: format!("Bearer {access}"),
        server,
        key,
        key_id,
        browser,
    }
}

/// A page form's fields.
type Form<'a> = Vec<(&'a str, &'a str)>;

async fn send(server: &Server, method: Method, path: &str, auth: &str, body: Body) -> Reply {
    session_support::send(server, method, path, &[], &[("Authorization", auth)], body).await
}

#[tokio::test]
async fn a_delegated_token_cannot_manage_api_tokens() {
    let Delegated {
        server,
        key,
        key_id,
        bearer,
        ..
    } = delegated().await;
    // The token is live: the default policy (which has oauth2) accepts it.
    let me = server.get("/api/me/", Some(&bearer)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(
        me.json["auth"],
        json!({"scheme": "oauth2", "scopes": ["openid"]})
    );

    let before = fingerprint(&server);
    let id = key_id.to_string();
    for (method, path, body) in [
        (Method::GET, "/api/tokens/".to_owned(), Body::None),
        (
            Method::POST,
            "/api/tokens/".to_owned(),
            Body::Json(json!({"name": "third party"})),
        ),
        (Method::DELETE, format!("/api/tokens/{id}/"), Body::None),
        (
            Method::POST,
            format!("/api/tokens/{id}/rotate/"),
            Body::None,
        ),
        (Method::POST, "/api/auth/logout/".to_owned(), Body::None),
        (Method::POST, "/api/auth/logoutall/".to_owned(), Body::None),
    ] {
        let reply = send(&server, method.clone(), &path, &bearer, body).await;
        assert_eq!(reply.status, 401, "{method} {path}: {reply:?}");
        reply.assert(401, Some("Token"), &not_authenticated());
    }
    assert_eq!(fingerprint(&server), before, "nothing changed");
    // Alice's own key still works and is still her only one.
    let listed = server.token_list(&token(&key)).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], json!(key_id));
}

#[tokio::test]
async fn first_party_credentials_still_manage_api_tokens() {
    let Delegated {
        server,
        key,
        browser,
        ..
    } = delegated().await;
    // Token, JWT, Basic and session all reach the chain `token, jwt, basic, session`.
    let jwt = server
        .request(
            Method::POST,
            "/api/token/",
            None,
            Body::Json(json!({"username": "alice", "password": PASSWORD})),
        )
        .await;
    assert_eq!(jwt.status, 200, "{jwt:?}");
    let access = format!("Bearer {}", jwt.json["access"].as_str().expect("access"));
    for auth in [
        token(&key),
        access.clone(),
        common::basic("alice", PASSWORD),
    ] {
        let created = send(
            &server,
            Method::POST,
            "/api/tokens/",
            &auth,
            Body::Json(json!({"name": "mine"})),
        )
        .await;
        assert_eq!(created.status, 201, "{auth}: {created:?}");
    }
    let created = browser
        .send(
            &server,
            Method::POST,
            "/api/tokens/",
            Body::Json(json!({"name": "from the browser"})),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(server.token_list(&token(&key)).await.len(), 5);

    // `/api/auth/logout/` ends the presenting API token (knox); a JWT, Basic or session
    // caller presents no API token to end, and is answered as knox answers it: no token.
    for auth in [access, common::basic("alice", PASSWORD)] {
        send(
            &server,
            Method::POST,
            "/api/auth/logout/",
            &auth,
            Body::None,
        )
        .await
        .assert(401, Some("Token"), &not_authenticated());
    }
    browser
        .send(&server, Method::POST, "/api/auth/logout/", Body::None)
        .await
        .assert(401, Some("Token"), &not_authenticated());
    assert_eq!(
        browser.me(&server).await.status,
        200,
        "the session lives on"
    );
    send(
        &server,
        Method::POST,
        "/api/auth/logout/",
        &token(&key),
        Body::None,
    )
    .await
    .assert_no_content();
    server.get("/api/me/", Some(&token(&key))).await.assert(
        401,
        Some("Token"),
        &common::failed("Invalid token."),
    );
    // `logoutall` revokes every API token of the user, whoever asks (session here).
    browser
        .send(&server, Method::POST, "/api/auth/logoutall/", Body::None)
        .await
        .assert_no_content();
    assert_eq!(
        server.sql("SELECT count(*) FROM api_tokens;"),
        "0",
        "every API token revoked"
    );
}

/// Every page that changes credentials, as the third party would call it: with its bearer
/// token, and even with a CSRF cookie and token of its own (any client can fetch a pair from
/// `/api/csrf/`). The pages know the session cookie only, so it gets the sign-in redirect
/// and changes nothing.
#[tokio::test]
async fn a_delegated_token_gets_nothing_from_the_pages() {
    let Delegated {
        server,
        key_id,
        bearer,
        ..
    } = delegated().await;
    let alice = common::user_id(&server, "alice").to_string();
    let token_id = key_id.to_string();
    let before = fingerprint(&server);
    let (csrf_secret, csrf_token) = session_support::csrf(&server).await;

    // (where the sign-in form leads back to, the action, its form fields)
    let pages: Vec<(&str, String, Form)> = vec![
        (
            "/account/",
            "/account/tokens/".into(),
            vec![("name", "third party")],
        ),
        (
            "/account/",
            format!("/account/tokens/{token_id}/rotate/"),
            vec![],
        ),
        (
            "/account/",
            format!("/account/tokens/{token_id}/revoke/"),
            vec![],
        ),
        ("/account/", "/account/sessions/others/end/".into(), vec![]),
        ("/account/", "/account/sessions/1/end/".into(), vec![]),
        (
            "/account/",
            "/account/password/".into(),
            vec![
                ("old_password", PASSWORD),
                ("new_password1", "taken-over-pw-1"),
                ("new_password2", "taken-over-pw-1"),
            ],
        ),
        (
            "/account/",
            "/account/applications/1/revoke/".into(),
            vec![],
        ),
        (
            "/admin/",
            "/admin/users/".into(),
            vec![
                ("username", "mallory"),
                ("password", "mallory-pw-123"),
                ("is_superuser", "on"),
            ],
        ),
        (
            "/admin/applications/",
            "/admin/applications/".into(),
            vec![
                ("name", "Evil"),
                ("client_type", "confidential"),
                ("grant", "authorization-code"),
                ("redirect_uris", "https://evil.example/cb"),
            ],
        ),
        (
            "/admin/applications/",
            "/admin/applications/1/delete/".into(),
            vec![],
        ),
        (
            "/admin/applications/",
            "/admin/applications/1/rotate-secret/".into(),
            vec![],
        ),
        (
            "/admin/",
            format!("/admin/users/{alice}/active/"),
            vec![("active", "false")],
        ),
        (
            "/admin/",
            format!("/admin/users/{alice}/password/"),
            vec![("password", "taken-over-pw-1")],
        ),
        (
            "/admin/",
            format!("/admin/users/{alice}/tokens/{token_id}/revoke/"),
            vec![],
        ),
        (
            "/admin/",
            format!("/admin/users/{alice}/sessions/1/end/"),
            vec![],
        ),
    ];
    for (back, path, fields) in &pages {
        let form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        // Bearer only: Django's CSRF check refuses the form first.
        let reply = session_support::send(
            &server,
            Method::POST,
            path,
            &[],
            &[
                ("Authorization", bearer.as_str()),
                ("Origin", server.base.as_str()),
            ],
            Body::Raw(
                "application/x-www-form-urlencoded",
                oauth2_support::encode(&form).into_bytes(),
            ),
        )
        .await;
        assert_eq!(reply.status, 403, "{path}: {reply:?}");
        assert!(
            reply
                .text
                .contains("CSRF verification failed. Request aborted.")
                && reply.text.contains("CSRF cookie not set."),
            "{path}: {}",
            reply.text
        );
        // Bearer with a CSRF pair of its own: no session, so the sign-in form.
        let mut with_csrf = form.clone();
        with_csrf.push(("csrfmiddlewaretoken".into(), csrf_token.clone()));
        let reply = session_support::send(
            &server,
            Method::POST,
            path,
            &[("csrftoken", csrf_secret.as_str())],
            &[
                ("Authorization", bearer.as_str()),
                ("Origin", server.base.as_str()),
            ],
            Body::Raw(
                "application/x-www-form-urlencoded",
                oauth2_support::encode(&with_csrf).into_bytes(),
            ),
        )
        .await;
        assert_eq!(reply.status, 302, "{path}: {reply:?}");
        let next = url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>();
        assert_eq!(
            oauth2_support::location(&reply),
            format!("/api-auth/login/?next={next}"),
            "{path}"
        );
        assert!(reply.text.is_empty(), "{path}: {reply:?}");
    }
    // The pages that show credentials: the sign-in redirect, nothing shown.
    for path in [
        "/account/".to_owned(),
        "/admin/".to_owned(),
        format!("/admin/users/{alice}/"),
        "/admin/applications/".to_owned(),
    ] {
        let reply = send(&server, Method::GET, &path, &bearer, Body::None).await;
        assert_eq!(reply.status, 302, "{path}: {reply:?}");
        let next = url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
        assert_eq!(
            oauth2_support::location(&reply),
            format!("/api-auth/login/?next={next}"),
            "{path}"
        );
        assert!(reply.text.is_empty(), "{path}: {reply:?}");
    }
    assert_eq!(fingerprint(&server), before, "nothing changed");
}
