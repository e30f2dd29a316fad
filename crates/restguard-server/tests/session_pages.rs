//! The HTML pages without JavaScript: sign-in / sign-out, `/account/`, `/admin/`.

mod common;
mod session_support;

use common::{token, Body, Reply, Server, CACHE_WAIT};
use reqwest::Method;
use session_support::{cookie_value, form_token, login, send, server_with, session_rows, Browser};

const PW: &str = "correct horse 1";

fn assert_html(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "{reply:#?}");
    let ct = reply.headers["content-type"].to_str().expect("ascii");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(reply.headers.get("content-security-policy").is_some());
}

/// Signs in through the HTML form; returns the browser and the redirect target.
async fn form_login(
    server: &Server,
    username: &str,
    password: &str,
    next: &str,
) -> (Browser, String) {
    let page = send(
        server,
        Method::GET,
        "/api-auth/login/",
        &[],
        &[],
        Body::None,
    )
    .await;
    assert_html(&page, 200);
    let csrf = cookie_value(&page.headers, "csrftoken").expect("CSRF cookie with the form");
    let field = form_token(&page.text);
    let reply = send(
        server,
        Method::POST,
        "/api-auth/login/",
        &[("csrftoken", &csrf)],
        &[],
        Body::Form(vec![
            ("csrfmiddlewaretoken", field),
            ("username", username.into()),
            ("password", password.into()),
            ("next", next.into()),
        ]),
    )
    .await;
    assert_eq!(reply.status, 302, "{reply:#?}");
    let location = reply.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    (
        Browser {
            sessionid: cookie_value(&reply.headers, "sessionid").expect("session"),
            csrftoken: cookie_value(&reply.headers, "csrftoken").expect("rotated csrf"),
        },
        location,
    )
}

/// GETs a page as the browser and returns it with its form token.
async fn page(server: &Server, browser: &Browser, path: &str) -> (Reply, String) {
    let reply = send(
        server,
        Method::GET,
        path,
        &browser.cookies(),
        &[],
        Body::None,
    )
    .await;
    assert_html(&reply, 200);
    let field = form_token(&reply.text);
    (reply, field)
}

async fn post_form(
    server: &Server,
    browser: &Browser,
    path: &str,
    field: &str,
    mut pairs: Vec<(&'static str, String)>,
) -> Reply {
    pairs.push(("csrfmiddlewaretoken", field.to_owned()));
    send(
        server,
        Method::POST,
        path,
        &browser.cookies(),
        &[],
        Body::Form(pairs),
    )
    .await
}

fn new_key(html: &str) -> String {
    let marker = "<code id=\"new-key\">";
    let start = html.find(marker).expect("a new key") + marker.len();
    html[start..].split('<').next().expect("key").to_owned()
}

#[tokio::test]
async fn html_login_honours_only_same_site_next() {
    let server = server_with(&[]);
    server.create_user("alice", PW);
    let (browser, location) = form_login(&server, "alice", PW, "/account/?x=1").await;
    assert_eq!(location, "/account/?x=1");
    assert_eq!(browser.me(&server).await.status, 200);
    for evil in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "evil",
    ] {
        let (_, location) = form_login(&server, "alice", PW, evil).await;
        assert_eq!(location, "/account/", "next={evil:?}");
    }
    // The form echoes `next` from the query only when it is safe.
    let reply = send(
        &server,
        Method::GET,
        "/api-auth/login/?next=//evil.example",
        &[],
        &[],
        Body::None,
    )
    .await;
    // (minijinja escapes `/` as `&#x2f;`.)
    assert!(reply
        .text
        .contains("name=\"next\" value=\"&#x2f;account&#x2f;\""));
}

#[tokio::test]
async fn html_login_errors_are_readable_and_change_nothing() {
    let server = server_with(&[]);
    server.create_user("alice", PW);
    let page = send(
        &server,
        Method::GET,
        "/api-auth/login/",
        &[],
        &[],
        Body::None,
    )
    .await;
    let csrf = cookie_value(&page.headers, "csrftoken").expect("cookie");
    let field = form_token(&page.text);
    let post = |pairs: Vec<(&'static str, String)>, cookie: Option<String>| {
        let server = &server;
        async move {
            let cookies: Vec<(&str, String)> =
                cookie.into_iter().map(|c| ("csrftoken", c)).collect();
            let cookies: Vec<(&str, &str)> =
                cookies.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(
                server,
                Method::POST,
                "/api-auth/login/",
                &cookies,
                &[],
                Body::Form(pairs),
            )
            .await
        }
    };
    // Wrong password: the form again, with Django's message, the username kept, escaped.
    let reply = post(
        vec![
            ("csrfmiddlewaretoken", field.clone()),
            ("username", "<b>alice</b>".into()),
            ("password", "nope".into()),
        ],
        Some(csrf.clone()),
    )
    .await;
    assert_html(&reply, 200);
    assert!(reply
        .text
        .contains("Please enter a correct username and password."));
    assert!(reply.text.contains("&lt;b&gt;alice&lt;&#x2f;b&gt;"));
    assert!(!reply.text.contains("<b>alice</b>"));
    // Over-long username.
    let reply = post(
        vec![
            ("csrfmiddlewaretoken", field.clone()),
            ("username", "u".repeat(151)),
            ("password", "x".into()),
        ],
        Some(csrf.clone()),
    )
    .await;
    assert_html(&reply, 400);
    assert!(reply
        .text
        .contains("Ensure this value has at most 150 characters (it has 151)."));
    // No CSRF cookie / a wrong token: Django's 403 page with the reason.
    let reply = post(
        vec![
            ("csrfmiddlewaretoken", field.clone()),
            ("username", "alice".into()),
            ("password", PW.into()),
        ],
        None,
    )
    .await;
    assert_html(&reply, 403);
    assert!(reply
        .text
        .contains("CSRF verification failed. Request aborted."));
    assert!(reply.text.contains("CSRF cookie not set."));
    let stale = restguard::csrf::CsrfSecret::generate().mask();
    let reply = post(
        vec![
            ("csrfmiddlewaretoken", stale),
            ("username", "alice".into()),
            ("password", PW.into()),
        ],
        Some(csrf),
    )
    .await;
    assert_html(&reply, 403);
    assert!(reply.text.contains("CSRF token from POST incorrect."));
    assert!(reply
        .headers
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap_or("").starts_with("sessionid=")));
    assert_eq!(session_rows(&server), 0);
}

#[tokio::test]
async fn pages_need_a_session_and_admin_needs_staff() {
    let server = server_with(&[]);
    server.create_user("alice", PW);
    for (path, next) in [("/account/", "%2Faccount%2F"), ("/admin/", "%2Fadmin%2F")] {
        let reply = send(&server, Method::GET, path, &[], &[], Body::None).await;
        assert_eq!(reply.status, 302, "{reply:?}");
        assert_eq!(
            reply.headers["location"],
            format!("/api-auth/login/?next={next}").as_str()
        );
    }
    let (alice, _) = form_login(&server, "alice", PW, "/account/").await;
    let (reply, _) = page(&server, &alice, "/account/").await;
    assert!(reply.text.contains("id=\"username\">alice<"));
    assert!(
        !reply.text.contains("href=\"/admin/\""),
        "no admin link for non-staff"
    );
    let reply = send(
        &server,
        Method::GET,
        "/admin/",
        &alice.cookies(),
        &[],
        Body::None,
    )
    .await;
    assert_html(&reply, 403);
    assert!(reply
        .text
        .contains("You do not have permission to view this page."));
    let reply = send(
        &server,
        Method::GET,
        "/admin/users/1/",
        &alice.cookies(),
        &[],
        Body::None,
    )
    .await;
    assert_html(&reply, 403);
    // Anonymous form POSTs: the CSRF check first, then the redirect; nothing changes.
    let reply = send(
        &server,
        Method::POST,
        "/account/tokens/",
        &[],
        &[],
        Body::Form(vec![]),
    )
    .await;
    assert_html(&reply, 403);
}

#[tokio::test]
async fn account_tokens_without_javascript() {
    let server = server_with(&[]);
    server.create_user("alice", PW);
    let (browser, _) = form_login(&server, "alice", PW, "/account/").await;
    let (_, field) = page(&server, &browser, "/account/").await;
    // Create: the key is shown once.
    let reply = post_form(
        &server,
        &browser,
        "/account/tokens/",
        &field,
        vec![("name", "<laptop>".into()), ("expires_in", "86400".into())],
    )
    .await;
    assert_html(&reply, 200);
    let key = new_key(&reply.text);
    assert!(key.starts_with("rg_"), "{key}");
    assert!(reply.text.contains("&lt;laptop&gt;"));
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 200);
    let (again, field) = page(&server, &browser, "/account/").await;
    assert!(!again.text.contains(&key), "never shown again");
    let id = server.sql("SELECT id FROM api_tokens;");
    // Without the CSRF field: refused, nothing rotated.
    let reply = send(
        &server,
        Method::POST,
        &format!("/account/tokens/{id}/rotate/"),
        &browser.cookies(),
        &[],
        Body::Form(vec![]),
    )
    .await;
    assert_html(&reply, 403);
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 200);
    // Rotate: new key, the old one is dead at once.
    let reply = post_form(
        &server,
        &browser,
        &format!("/account/tokens/{id}/rotate/"),
        &field,
        vec![],
    )
    .await;
    assert_html(&reply, 200);
    let rotated = new_key(&reply.text);
    assert_ne!(rotated, key);
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 401);
    assert_eq!(
        server.get("/api/me/", Some(&token(&rotated))).await.status,
        200
    );
    // Revoke.
    let id = server.sql("SELECT id FROM api_tokens;");
    let reply = post_form(
        &server,
        &browser,
        &format!("/account/tokens/{id}/revoke/"),
        &field,
        vec![],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.headers["location"], "/account/?notice=token-revoked");
    assert_eq!(
        server.get("/api/me/", Some(&token(&rotated))).await.status,
        401
    );
    // Someone else's / unknown ids: 404 page.
    let reply = post_form(
        &server,
        &browser,
        "/account/tokens/999/revoke/",
        &field,
        vec![],
    )
    .await;
    assert_html(&reply, 404);
    let (reply, _) = page(&server, &browser, "/account/?notice=<script>").await;
    assert!(!reply.text.contains("<script>"));
}

#[tokio::test]
async fn account_sessions_and_password_change() {
    let server = server_with(&[]);
    server.create_user("alice", PW);
    let (here, _) = form_login(&server, "alice", PW, "/account/").await;
    let other = login(&server, "alice", PW).await;
    let third = login(&server, "alice", PW).await;
    let key = server.token_create("alice");
    let (reply, field) = page(&server, &here, "/account/").await;
    assert_eq!(reply.text.matches("data-session-id=").count(), 3);
    assert!(reply.text.contains("this session"));
    // End one other session.
    let third_id = server.sql("SELECT max(id) FROM sessions;");
    let reply = post_form(
        &server,
        &here,
        &format!("/account/sessions/{third_id}/end/"),
        &field,
        vec![],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(third.me(&server).await.status, 401);
    assert_eq!(other.me(&server).await.status, 200);

    // Wrong current password: nothing changes.
    let reply = post_form(
        &server,
        &here,
        "/account/password/",
        &field,
        vec![
            ("current_password", "wrong".into()),
            ("new_password1", "brand new pw 9".into()),
            ("new_password2", "brand new pw 9".into()),
        ],
    )
    .await;
    assert_html(&reply, 400);
    assert!(reply
        .text
        .contains("Your old password was entered incorrectly."));
    // Mismatch.
    let reply = post_form(
        &server,
        &here,
        "/account/password/",
        &field,
        vec![
            ("current_password", PW.into()),
            ("new_password1", "brand new pw 9".into()),
            ("new_password2", "brand new pw 8".into()),
        ],
    )
    .await;
    assert_html(&reply, 400);
    assert!(reply.text.contains("didn’t match"));
    assert_eq!(other.me(&server).await.status, 200);
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 200);

    // The change: other sessions and every token end; this browser gets a new session.
    let reply = post_form(
        &server,
        &here,
        "/account/password/",
        &field,
        vec![
            ("current_password", PW.into()),
            ("new_password1", "brand new pw 9".into()),
            ("new_password2", "brand new pw 9".into()),
        ],
    )
    .await;
    assert_html(&reply, 200);
    assert!(reply.text.contains("Password changed."));
    assert!(reply.text.contains("API tokens revoked"));
    let renewed = Browser {
        sessionid: cookie_value(&reply.headers, "sessionid").expect("a new session"),
        csrftoken: here.csrftoken.clone(),
    };
    assert_eq!(
        renewed.me(&server).await.status,
        200,
        "the same instant survives"
    );
    assert_eq!(here.me(&server).await.status, 401);
    assert_eq!(other.me(&server).await.status, 401);
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 401);
    assert_eq!(session_rows(&server), 1);

    // End all others, then sign out (GET only confirms; POST signs out).
    let _ = login(&server, "alice", "brand new pw 9").await;
    let (_, field) = page(&server, &renewed, "/account/").await;
    let reply = post_form(
        &server,
        &renewed,
        "/account/sessions/others/end/",
        &field,
        vec![],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(session_rows(&server), 1);
    let (confirm, field) = page(&server, &renewed, "/api-auth/logout/").await;
    assert!(confirm.text.contains("Sign out?"));
    assert_eq!(renewed.me(&server).await.status, 200);
    let reply = send(
        &server,
        Method::POST,
        "/api-auth/logout/",
        &renewed.cookies(),
        &[],
        Body::Form(vec![]),
    )
    .await;
    assert_html(&reply, 403);
    assert_eq!(renewed.me(&server).await.status, 200);
    let reply = post_form(&server, &renewed, "/api-auth/logout/", &field, vec![]).await;
    assert_html(&reply, 200);
    assert!(reply.text.contains("Signed out"));
    assert_eq!(renewed.me(&server).await.status, 401);
    assert_eq!(session_rows(&server), 0);
}

#[tokio::test]
async fn admin_manages_users_tokens_and_sessions() {
    let server = server_with(&[]);
    server.create_user_with("root", PW, &["--staff"]);
    server.create_user("bob", PW);
    let (admin, _) = form_login(&server, "root", PW, "/admin/").await;
    let (list, field) = page(&server, &admin, "/admin/").await;
    assert!(list.text.contains(">bob<") && list.text.contains(">root<"));
    let (found, _) = page(&server, &admin, "/admin/?q=BO").await;
    assert!(found.text.contains(">bob<") && !found.text.contains(">root<"));

    // Create a user; bad input is reported and writes nothing.
    let reply = post_form(
        &server,
        &admin,
        "/admin/users/",
        &field,
        vec![("username", "carol".into()), ("password", "short".into())],
    )
    .await;
    assert_html(&reply, 400);
    assert!(reply.text.contains("This password is too short."));
    let reply = post_form(
        &server,
        &admin,
        "/admin/users/",
        &field,
        vec![
            ("username", "bob".into()),
            ("password", "long enough 1".into()),
        ],
    )
    .await;
    assert_html(&reply, 400);
    assert!(reply
        .text
        .contains("A user with that username already exists."));
    let reply = post_form(
        &server,
        &admin,
        "/admin/users/",
        &field,
        vec![
            ("username", "carol".into()),
            ("password", "long enough 1".into()),
        ],
    )
    .await;
    assert_eq!(reply.status, 303, "{reply:?}");
    assert_eq!(
        login(&server, "carol", "long enough 1")
            .await
            .me(&server)
            .await
            .status,
        200
    );

    // Bob's token and session, seen and revoked by the admin.
    let bob_id = common::user_id(&server, "bob");
    let bob = login(&server, "bob", PW).await;
    let key = server.token_create("bob");
    let (detail, field) = page(&server, &admin, &format!("/admin/users/{bob_id}/")).await;
    assert!(detail.text.contains("data-token-id="));
    assert!(detail.text.contains("data-session-id="));
    let token_id = server.sql("SELECT id FROM api_tokens;");
    let reply = post_form(
        &server,
        &admin,
        &format!("/admin/users/{bob_id}/tokens/{token_id}/revoke/"),
        &field,
        vec![],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(server.get("/api/me/", Some(&token(&key))).await.status, 401);
    let session_id = server.sql(&format!(
        "SELECT id FROM sessions WHERE user_id = {bob_id};"
    ));
    let reply = post_form(
        &server,
        &admin,
        &format!("/admin/users/{bob_id}/sessions/{session_id}/end/"),
        &field,
        vec![],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(bob.me(&server).await.status, 401);

    // Deactivate (ends sessions), reactivate, reset the password.
    let bob = login(&server, "bob", PW).await;
    let reply = post_form(
        &server,
        &admin,
        &format!("/admin/users/{bob_id}/active/"),
        &field,
        vec![("active", "false".into())],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(bob.me(&server).await.status, 401);
    let reply = post_form(
        &server,
        &admin,
        &format!("/admin/users/{bob_id}/active/"),
        &field,
        vec![("active", "true".into())],
    )
    .await;
    assert_eq!(reply.status, 303);
    let bob = login(&server, "bob", PW).await;
    let reply = post_form(
        &server,
        &admin,
        &format!("/admin/users/{bob_id}/password/"),
        &field,
        vec![
            ("password1", "reset pw 123".into()),
            ("password2", "reset pw 123".into()),
        ],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(bob.me(&server).await.status, 401);
    assert_eq!(
        login(&server, "bob", "reset pw 123")
            .await
            .me(&server)
            .await
            .status,
        200
    );
    // Staff cannot deactivate themselves; CSRF still applies to admins.
    let root_id = common::user_id(&server, "root");
    let reply = post_form(
        &server,
        &admin,
        &format!("/admin/users/{root_id}/active/"),
        &field,
        vec![("active", "false".into())],
    )
    .await;
    assert_html(&reply, 400);
    let reply = send(
        &server,
        Method::POST,
        &format!("/admin/users/{bob_id}/active/"),
        &admin.cookies(),
        &[],
        Body::Form(vec![("active", "false".into())]),
    )
    .await;
    assert_html(&reply, 403);
    tokio::time::sleep(CACHE_WAIT).await;
    assert_eq!(
        server.sql(&format!("SELECT is_active FROM users WHERE id = {bob_id};")),
        "1"
    );
}

#[tokio::test]
async fn static_assets_are_served() {
    let server = server_with(&[]);
    for (path, ct) in [
        ("/static/restguard.css", "text/css"),
        ("/static/account.js", "text/javascript"),
    ] {
        let reply = send(&server, Method::GET, path, &[], &[], Body::None).await;
        assert_eq!(reply.status, 200);
        assert!(reply.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with(ct));
    }
}
