//! The admin pages' privilege model (issue 10, item 4): staff manage ordinary users only;
//! only superusers change staff and superusers (password, active flag, roles, tokens,
//! sessions, OAuth2 grants) or create them; nobody deactivates or demotes themselves. Every
//! refusal is checked on the server, leaves the target exactly as it was, and their
//! credentials keep working.

mod common;
mod oauth2_support;
mod session_support;

use common::{token, Body, Reply, Server};
use oauth2_support::{create_app, token_request, Client};
use reqwest::Method;
use session_support::{login, server_with, Browser};

const PW: &str = "correct horse 1";
const OUTRANKED: &str = "Only a superuser may change a staff or superuser account.";
const NEW_PW: &str = "taken over 99";

fn assert_page(reply: &Reply, status: u16, message: &str) {
    assert_eq!(reply.status.as_u16(), status, "{reply:#?}");
    let ct = reply.headers["content-type"].to_str().expect("ascii");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(
        reply.text.contains(message),
        "page lacks {message:?}: {}",
        reply.text
    );
    assert!(reply.headers.get("location").is_none(), "{reply:#?}");
}

fn assert_outranked(reply: &Reply) {
    assert_page(
        reply,
        403,
        &format!("<p id=\"error-message\">{OUTRANKED}</p>"),
    );
}

/// Everything an admin action could change about a user, as one string.
fn account_state(server: &Server, id: i64) -> String {
    server.sql(&format!(
        "SELECT u.password || '|' || u.is_active || '|' || u.is_staff || '|' || u.is_superuser \
         || '|' || u.credentials_changed_at \
         || '|' || (SELECT count(*) FROM api_tokens WHERE user_id = u.id) \
         || '|' || (SELECT count(*) FROM sessions WHERE user_id = u.id) \
         || '|' || (SELECT count(*) FROM oauth_tokens WHERE user_id = u.id AND revoked_at IS NULL) \
         FROM users u WHERE u.id = {id};"
    ))
}

/// A user with one of each credential an admin can end.
struct Target {
    name: &'static str,
    id: i64,
    key: String,
    browser: Browser,
    oauth_access: String,
    token_id: String,
    session_id: String,
}

async fn target(server: &Server, app: &Client, name: &'static str, flags: &[&str]) -> Target {
    server.create_user_with(name, PW, flags);
    let id = common::user_id(server, name);
    let key = server.token_create(name);
    let browser = login(server, name, PW).await;
    let grant = token_request(
        server,
        Some(&app.basic()),
        &[
            ("grant_type", "password"),
            ("username", name),
            ("password", PW),
        ],
    )
    .await;
    assert_eq!(grant.status, 200, "{grant:?}");
    Target {
        name,
        id,
        key,
        browser,
        oauth_access: grant.json["access_token"]
            .as_str()
            .expect("access token")
            .to_owned(),
        token_id: server.sql(&format!("SELECT id FROM api_tokens WHERE user_id = {id};")),
        session_id: server.sql(&format!(
            "SELECT max(id) FROM sessions WHERE user_id = {id};"
        )),
    }
}

/// Every admin action on a user: (path, form fields).
fn actions(t: &Target, app_id: &str) -> Vec<(String, Vec<(&'static str, String)>)> {
    let id = t.id;
    // Credentials first: a password reset or a deactivation would end them anyway.
    vec![
        (
            format!("/admin/users/{id}/tokens/{}/revoke/", t.token_id),
            vec![],
        ),
        (
            format!("/admin/users/{id}/sessions/{}/end/", t.session_id),
            vec![],
        ),
        (
            format!("/admin/users/{id}/applications/{app_id}/revoke/"),
            vec![],
        ),
        (format!("/admin/users/{id}/roles/"), vec![]),
        (
            format!("/admin/users/{id}/password/"),
            vec![("password1", NEW_PW.into()), ("password2", NEW_PW.into())],
        ),
        (
            format!("/admin/users/{id}/active/"),
            vec![("active", "false".into())],
        ),
    ]
}

/// The target's password, API token, session and OAuth2 token all still work.
async fn assert_untouched(server: &Server, t: &Target) {
    assert_eq!(
        server.get("/api/me/", Some(&token(&t.key))).await.json["username"],
        t.name,
        "API token of {}",
        t.name
    );
    assert_eq!(
        t.browser.me(server).await.status,
        200,
        "session of {}",
        t.name
    );
    let me = server
        .get("/api/me/", Some(&format!("Bearer {}", t.oauth_access)))
        .await;
    assert_eq!(me.status, 200, "OAuth2 token of {}: {me:?}", t.name);
    assert_eq!(login(server, t.name, PW).await.me(server).await.status, 200);
}

async fn setup() -> (Server, Client, String) {
    let server = server_with(&[("RESTGUARD_OAUTH2__PASSWORD_GRANT", "true")]);
    let app = create_app(
        &server,
        &[
            "--name",
            "Legacy",
            "--client-type",
            "confidential",
            "--grant",
            "password",
        ],
    );
    let app_id = server.sql("SELECT id FROM oauth_applications;");
    (server, app, app_id)
}

fn form(pairs: &[(&'static str, String)]) -> Body {
    Body::Form(pairs.to_vec())
}

#[tokio::test]
async fn staff_cannot_change_superusers_or_other_staff() {
    let (server, app, app_id) = setup().await;
    server.create_user_with("staff1", PW, &["--staff"]);
    let staff1 = login(&server, "staff1", PW).await;
    let root = target(&server, &app, "root", &["--staff", "--superuser"]).await;
    let staff2 = target(&server, &app, "staff2", &["--staff"]).await;
    // A superuser who is not staff is still a superuser: out of staff's reach.
    let lone = target(&server, &app, "lone", &["--superuser"]).await;

    for t in [&root, &staff2, &lone] {
        let before = account_state(&server, t.id);
        for (path, fields) in actions(t, &app_id) {
            let reply = staff1
                .send(&server, Method::POST, &path, form(&fields))
                .await;
            assert_outranked(&reply);
            assert_eq!(account_state(&server, t.id), before, "after POST {path}");
        }
        // The detail page shows the account without its action forms.
        let page = staff1
            .send(
                &server,
                Method::GET,
                &format!("/admin/users/{}/", t.id),
                Body::None,
            )
            .await;
        assert_page(&page, 200, OUTRANKED);
        assert!(
            !page
                .text
                .contains(&format!("action=\"/admin/users/{}/", t.id)),
            "no action forms: {}",
            page.text
        );
        assert_untouched(&server, t).await;
    }

    // Reactivating a deactivated staff account is a change too.
    server.create_user_with("dormant", PW, &["--staff", "--inactive"]);
    let dormant = common::user_id(&server, "dormant");
    let before = account_state(&server, dormant);
    let reply = staff1
        .send(
            &server,
            Method::POST,
            &format!("/admin/users/{dormant}/active/"),
            form(&[("active", "true".into())]),
        )
        .await;
    assert_outranked(&reply);
    assert_eq!(account_state(&server, dormant), before);

    // Staff cannot create staff or superusers, nor promote an ordinary user.
    for flag in ["is_staff", "is_superuser"] {
        let reply = staff1
            .send(
                &server,
                Method::POST,
                "/admin/users/",
                form(&[
                    ("username", "mole".into()),
                    ("password", NEW_PW.into()),
                    (flag, "on".into()),
                ]),
            )
            .await;
        assert_page(
            &reply,
            403,
            "<p id=\"error-message\">Only a superuser may create or promote staff and superusers.</p>",
        );
    }
    assert_eq!(
        server.sql("SELECT count(*) FROM users WHERE username = 'mole';"),
        "0"
    );
    server.create_user("bob", PW);
    let bob = common::user_id(&server, "bob");
    let before = account_state(&server, bob);
    for role in ["is_staff", "is_superuser"] {
        let reply = staff1
            .send(
                &server,
                Method::POST,
                &format!("/admin/users/{bob}/roles/"),
                form(&[(role, "on".into())]),
            )
            .await;
        assert_page(
            &reply,
            403,
            "<p id=\"error-message\">Only a superuser may create or promote staff and superusers.</p>",
        );
    }
    assert_eq!(account_state(&server, bob), before);
}

#[tokio::test]
async fn superusers_change_staff_and_staff_manage_ordinary_users() {
    let (server, app, app_id) = setup().await;
    server.create_user_with("root", PW, &["--staff", "--superuser"]);
    let root = login(&server, "root", PW).await;
    let root_id = common::user_id(&server, "root");
    server.create_user_with("staff1", PW, &["--staff"]);
    let staff1 = login(&server, "staff1", PW).await;
    let staff1_id = common::user_id(&server, "staff1");

    // (actor, target): every action goes through.
    for (actor, who) in [(&root, "staff2"), (&staff1, "bob")] {
        let t = target(
            &server,
            &app,
            who,
            if who == "bob" { &[] } else { &["--staff"] },
        )
        .await;
        for (path, fields) in actions(&t, &app_id) {
            if path.ends_with("/roles/") {
                continue; // below
            }
            let reply = actor
                .send(&server, Method::POST, &path, form(&fields))
                .await;
            assert_eq!(reply.status, 303, "POST {path}: {reply:#?}");
        }
        // Password reset, deactivation: the credentials are gone.
        let me = server.get("/api/me/", Some(&token(&t.key))).await;
        assert_eq!(me.status, 401, "{me:?}");
        assert_eq!(t.browser.me(&server).await.status, 401);
        let me = server
            .get("/api/me/", Some(&format!("Bearer {}", t.oauth_access)))
            .await;
        assert_eq!(me.status, 401, "{me:?}");
        assert_eq!(
            server.sql(&format!("SELECT is_active FROM users WHERE id = {};", t.id)),
            "0"
        );
        let reply = actor
            .send(
                &server,
                Method::POST,
                &format!("/admin/users/{}/active/", t.id),
                form(&[("active", "true".into())]),
            )
            .await;
        assert_eq!(reply.status, 303, "{reply:#?}");
        assert_eq!(
            login(&server, who, NEW_PW).await.me(&server).await.status,
            200
        );
    }

    // Staff create ordinary users; superusers create staff and change roles.
    let reply = staff1
        .send(
            &server,
            Method::POST,
            "/admin/users/",
            form(&[("username", "carol".into()), ("password", NEW_PW.into())]),
        )
        .await;
    assert_eq!(reply.status, 303, "{reply:#?}");
    let reply = root
        .send(
            &server,
            Method::POST,
            "/admin/users/",
            form(&[
                ("username", "dave".into()),
                ("password", NEW_PW.into()),
                ("is_staff", "on".into()),
            ]),
        )
        .await;
    assert_eq!(reply.status, 303, "{reply:#?}");
    assert_eq!(
        server.sql("SELECT is_staff || is_superuser FROM users WHERE username = 'dave';"),
        "10"
    );
    let carol = common::user_id(&server, "carol");
    let reply = root
        .send(
            &server,
            Method::POST,
            &format!("/admin/users/{carol}/roles/"),
            form(&[("is_staff", "on".into()), ("is_superuser", "on".into())]),
        )
        .await;
    assert_eq!(reply.status, 303, "{reply:#?}");
    assert_eq!(
        server.sql(&format!(
            "SELECT is_staff || is_superuser FROM users WHERE id = {carol};"
        )),
        "11"
    );
    let reply = root
        .send(
            &server,
            Method::POST,
            &format!("/admin/users/{staff1_id}/roles/"),
            form(&[]),
        )
        .await;
    assert_eq!(reply.status, 303, "{reply:#?}");
    // The demoted staff user is out of the admin pages at once.
    let reply = staff1
        .send(&server, Method::GET, "/admin/", Body::None)
        .await;
    assert_page(&reply, 403, "You do not have permission to view this page.");

    // Nobody deactivates or demotes themselves, superusers included.
    let before = account_state(&server, root_id);
    let reply = root
        .send(
            &server,
            Method::POST,
            &format!("/admin/users/{root_id}/active/"),
            form(&[("active", "false".into())]),
        )
        .await;
    assert_page(&reply, 400, "You cannot deactivate your own account.");
    let reply = root
        .send(
            &server,
            Method::POST,
            &format!("/admin/users/{root_id}/roles/"),
            form(&[]),
        )
        .await;
    assert_page(&reply, 400, "You cannot change your own role.");
    assert_eq!(account_state(&server, root_id), before);

    // A superuser who is not staff does not get into the admin pages (Django's rule).
    server.create_user_with("lone", PW, &["--superuser"]);
    let lone = login(&server, "lone", PW).await;
    let reply = lone.send(&server, Method::GET, "/admin/", Body::None).await;
    assert_page(&reply, 403, "You do not have permission to view this page.");
}

#[tokio::test]
async fn every_admin_action_needs_the_csrf_token() {
    let (server, app, app_id) = setup().await;
    server.create_user_with("root", PW, &["--staff", "--superuser"]);
    let root = login(&server, "root", PW).await;
    let bob = target(&server, &app, "bob", &[]).await;
    let before = account_state(&server, bob.id);
    let mut all = actions(&bob, &app_id);
    all.push(("/admin/users/".into(), vec![("username", "eve".into())]));
    for (path, fields) in all {
        let reply = session_support::send(
            &server,
            Method::POST,
            &path,
            &root.cookies(),
            &[],
            form(&fields),
        )
        .await;
        assert_page(&reply, 403, "CSRF verification failed. Request aborted.");
    }
    assert_eq!(account_state(&server, bob.id), before);
    assert_untouched(&server, &bob).await;
}
