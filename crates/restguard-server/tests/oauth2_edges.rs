//! The OAuth2 provider's edges (issue 10, item 5; CONTRACT §6): RP-initiated logout trusts
//! only a verified `id_token_hint` and registered post-logout URIs; the `introspection` scope
//! is never a default; revoking an application's grant ends its pending codes too; a
//! revocation reaches the access-token cache at once; scope strings are capped.

mod common;
mod oauth2_support;
mod session_support;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use common::{Body, Reply, Server};
use ed25519_dalek::Signer as _;
use oauth2_support::*;
use reqwest::Method;
use serde_json::{json, Value};
use session_support::{login, server_with, Browser};

const PASSWORD: &str = "correct horse battery";

/// A genuine id_token for `client` (authorize → consent → code exchange, scope `openid`).
async fn id_token(server: &Server, browser: &Browser, client: &Client) -> String {
    let code = obtain_code(server, browser, &authorize_query(&client.id, "openid")).await;
    let r = token_request(
        server,
        Some(&client.basic()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json["id_token"].as_str().expect("id_token").to_owned()
}

fn decode_segment(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
}

fn encode_segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// (header, claims) of a JWT.
fn parts(jwt: &str) -> (Value, Value) {
    let mut it = jwt.split('.');
    let header = decode_segment(it.next().expect("header"));
    let claims = decode_segment(it.next().expect("claims"));
    (header, claims)
}

/// The `kid` of the server's published key for `alg`.
async fn published_kid(server: &Server, alg: &str) -> String {
    let jwks = server.get("/o/.well-known/jwks.json", None).await;
    jwks.json["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["alg"] == alg)
        .and_then(|k| k["kid"].as_str())
        .unwrap_or_else(|| panic!("no {alg} key in {jwks:?}"))
        .to_owned()
}

/// `claims` signed with an Ed25519 key that is not the server's, under the server's EdDSA
/// `kid`.
fn signed_by_another_key(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"});
    let message = format!("{}.{}", encode_segment(&header), encode_segment(claims));
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let signature = key.sign(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// A logout request's query.
fn logout_path(pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    format!("/o/logout/?{}", encode(&pairs))
}

async fn anonymous_get(server: &Server, path: &str) -> Reply {
    session_support::send(server, Method::GET, path, &[], &[], Body::None).await
}

/// A 400 HTML page carrying `message`, and no redirect.
fn assert_bad_request_page(reply: &Reply, message: &str) {
    assert_eq!(reply.status, 400, "{reply:#?}");
    let ct = reply.headers["content-type"].to_str().expect("ascii");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(
        reply
            .text
            .contains(&format!("<p id=\"error-message\">{message}</p>")),
        "page lacks {message:?}: {}",
        reply.text
    );
    assert!(reply.headers.get("location").is_none(), "{reply:#?}");
}

const BAD_HINT: &str = "The id_token_hint is not valid.";
const UNREGISTERED: &str = "The post_logout_redirect_uri is not registered for this client.";
const SIGNED_OUT: &str = "https://app.example/signed-out";

/// A web client that registered [`SIGNED_OUT`] for RP-initiated logout.
fn logout_client(server: &Server) -> Client {
    web_app(server, &["--post-logout-redirect-uri", SIGNED_OUT])
}

#[tokio::test]
async fn logout_refuses_forged_id_token_hints() {
    let server = server_with(&[]);
    server.create_user("alice", PASSWORD);
    let web = logout_client(&server);
    let other = web_app(&server, &[]);
    let browser = login(&server, "alice", PASSWORD).await;
    let genuine = id_token(&server, &browser, &web).await;
    let (header, claims) = parts(&genuine);
    let mut forged_claims = claims.clone();
    forged_claims["sub"] = json!("999");

    let none = format!(
        "{}.{}.",
        encode_segment(&json!({"alg": "none", "typ": "JWT"})),
        encode_segment(&forged_claims)
    );
    let none_signed = format!(
        "{}.{}.c2ln",
        encode_segment(&json!({"alg": "none", "kid": header["kid"]})),
        encode_segment(&forged_claims)
    );
    let genuine_signature = genuine.rsplit('.').next().expect("signature");
    let tampered = format!(
        "{}.{}.{genuine_signature}",
        encode_segment(&header),
        encode_segment(&forged_claims)
    );
    let other_key = signed_by_another_key(&published_kid(&server, "EdDSA").await, &claims);
    // Genuinely signed with this server's keys, by an instance with another issuer (the same
    // database, so the same keys and clients).
    let elsewhere = Server::start_with_env(&[
        session_support::PLAIN_HTTP,
        (
            "RESTGUARD_DATABASE__URL",
            &format!("sqlite://{}", server.db_path().display()),
        ),
        ("RESTGUARD_SERVER__PUBLIC_URL", "http://elsewhere.example"),
    ]);
    let elsewhere_browser = login(&elsewhere, "alice", PASSWORD).await;
    let foreign = id_token(&elsewhere, &elsewhere_browser, &web).await;
    assert_eq!(parts(&foreign).1["iss"], "http://elsewhere.example/o");
    assert_eq!(parts(&foreign).1["aud"], json!(web.id));

    for (what, hint) in [
        ("alg none", none.as_str()),
        ("alg none with a signature", none_signed.as_str()),
        ("tampered claims", tampered.as_str()),
        ("another key", other_key.as_str()),
        ("another issuer", foreign.as_str()),
        ("not a JWT", "garbage"),
    ] {
        let path = logout_path(&[
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", SIGNED_OUT),
            ("state", "s"),
        ]);
        let reply = anonymous_get(&server, &path).await;
        assert_eq!(reply.status, 400, "{what}: {reply:#?}");
        assert_bad_request_page(&reply, BAD_HINT);
        // Signed in: no confirmation page either, and the session stays.
        let reply = session_support::send(
            &server,
            Method::GET,
            &path,
            &browser.cookies(),
            &[],
            Body::None,
        )
        .await;
        assert_bad_request_page(&reply, BAD_HINT);
        // The confirmation form's POST checks again: a forged hint ends nothing.
        let form: Vec<(String, String)> = [
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", SIGNED_OUT),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let reply = browser
            .send(
                &server,
                Method::POST,
                "/o/logout/",
                Body::Raw(
                    "application/x-www-form-urlencoded",
                    encode(&form).into_bytes(),
                ),
            )
            .await;
        assert_bad_request_page(&reply, BAD_HINT);
        assert_eq!(browser.me(&server).await.status, 200, "{what}");
    }

    // A genuine hint names its client: only that client's post-logout URIs, never its
    // redirect URIs, never another client's.
    for (uri, client_id) in [
        (REDIRECT, None),
        ("https://evil.example/", None),
        (SIGNED_OUT, Some(other.id.as_str())),
    ] {
        let mut pairs = vec![
            ("id_token_hint", genuine.as_str()),
            ("post_logout_redirect_uri", uri),
        ];
        if let Some(id) = client_id {
            pairs.push(("client_id", id));
        }
        let reply = anonymous_get(&server, &logout_path(&pairs)).await;
        assert_bad_request_page(
            &reply,
            if client_id.is_some() {
                "The client_id does not match the id_token_hint."
            } else {
                UNREGISTERED
            },
        );
    }
    // Without a hint, a client_id names the client: the same rule.
    let reply = anonymous_get(
        &server,
        &logout_path(&[
            ("client_id", &other.id),
            ("post_logout_redirect_uri", SIGNED_OUT),
        ]),
    )
    .await;
    assert_bad_request_page(&reply, UNREGISTERED);
    let reply = anonymous_get(
        &server,
        &logout_path(&[("post_logout_redirect_uri", SIGNED_OUT)]),
    )
    .await;
    assert_bad_request_page(&reply, UNREGISTERED);

    // The genuine hint and the registered URI: back to the client, with state.
    let reply = anonymous_get(
        &server,
        &logout_path(&[
            ("id_token_hint", &genuine),
            ("post_logout_redirect_uri", SIGNED_OUT),
            ("state", "s"),
        ]),
    )
    .await;
    assert_eq!(reply.status, 302, "{reply:#?}");
    assert_eq!(location(&reply), format!("{SIGNED_OUT}?state=s"));
}

#[tokio::test]
async fn logout_accepts_an_expired_genuine_hint() {
    let server = server_with(&[("RESTGUARD_OAUTH2__ACCESS_TOKEN_LIFETIME", "1")]);
    server.create_user("alice", PASSWORD);
    let web = logout_client(&server);
    let browser = login(&server, "alice", PASSWORD).await;
    let hint = id_token(&server, &browser, &web).await;
    let exp = parts(&hint).1["exp"].as_i64().expect("exp");
    // Let it expire (the id_token lives as long as the access token: 1 s here).
    while time_now() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let path = logout_path(&[
        ("id_token_hint", &hint),
        ("post_logout_redirect_uri", SIGNED_OUT),
        ("state", "bye"),
    ]);
    let page = session_support::send(
        &server,
        Method::GET,
        &path,
        &browser.cookies(),
        &[],
        Body::None,
    )
    .await;
    assert_eq!(page.status, 200, "{page:#?}");
    assert!(page
        .text
        .contains("<strong>Web App</strong> asks to sign you out."));
    let form = hidden_inputs(&page.text);
    let reply = session_support::send(
        &server,
        Method::POST,
        "/o/logout/",
        &browser.cookies(),
        &[],
        Body::Raw(
            "application/x-www-form-urlencoded",
            encode(&form).into_bytes(),
        ),
    )
    .await;
    assert_eq!(reply.status, 302, "{reply:#?}");
    assert_eq!(location(&reply), format!("{SIGNED_OUT}?state=bye"));
    assert_eq!(browser.me(&server).await.status, 401, "signed out");
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// `POST /o/introspect/` about `token`, authenticated by `auth`.
async fn introspect(server: &Server, auth: &str, token: &str) -> Reply {
    post_form(
        server,
        "/o/introspect/",
        Some(auth),
        &[("token".to_owned(), token.to_owned())],
    )
    .await
}

#[tokio::test]
async fn introspection_scope_is_never_granted_by_default() {
    let server = server_with(&[]);
    server.create_user_with("boss", PASSWORD, &["--staff"]);
    let svc = create_app(
        &server,
        &[
            "--name",
            "Service",
            "--client-type",
            "confidential",
            "--grant",
            "client-credentials",
        ],
    );
    let r = token_request(
        &server,
        Some(&svc.basic()),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "introspection"),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_scope");
    assert_eq!(
        r.json,
        json!({"error": "invalid_scope", "error_description": "Scope \"introspection\" is not allowed for this client."})
    );
    assert_eq!(server.sql("SELECT count(*) FROM oauth_tokens;"), "0");
    let r = token_request(
        &server,
        Some(&svc.basic()),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["scope"], "read", "the defaults never include it");
    let read_token = r.json["access_token"].as_str().expect("token").to_owned();

    // An administrator grants it on the applications page.
    let boss = login(&server, "boss", PASSWORD).await;
    let app_id = server.sql("SELECT id FROM oauth_applications;");
    let r = boss
        .send(
            &server,
            Method::POST,
            &format!("/admin/applications/{app_id}/settings/"),
            Body::Form(vec![("scopes", "read introspection".into())]),
        )
        .await;
    assert_eq!(r.status, 303, "{r:#?}");
    let r = token_request(
        &server,
        Some(&svc.basic()),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "introspection"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let introspector = format!("Bearer {}", r.json["access_token"].as_str().expect("token"));
    let r = introspect(&server, &introspector, &read_token).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["active"], true);
    assert_eq!(r.json["scope"], "read");

    // Taking the scope away ends that token's introspection at once.
    server
        .cli(&["app", "update", &svc.id, "--scopes", "read"], None)
        .assert_ok();
    let r = introspect(&server, &introspector, &read_token).await;
    assert_oauth_error(&r, 401, "invalid_client");
}

#[tokio::test]
async fn revoking_an_application_ends_its_pending_codes() {
    let server = server_with(&[]);
    server.create_user("alice", PASSWORD);
    let web = web_app(&server, &[]);
    let browser = login(&server, "alice", PASSWORD).await;
    // One finished authorization (so the account page lists the app), one pending code.
    id_token(&server, &browser, &web).await;
    let pending = obtain_code(&server, &browser, &authorize_query(&web.id, "read")).await;
    let app_id = server.sql("SELECT id FROM oauth_applications;");
    let r = browser
        .send(
            &server,
            Method::POST,
            &format!("/account/applications/{app_id}/revoke/"),
            Body::Form(vec![]),
        )
        .await;
    assert_eq!(r.status, 303, "{r:#?}");
    let r = token_request(
        &server,
        Some(&web.basic()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &pending),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");
    assert_eq!(
        r.json,
        json!({"error": "invalid_grant", "error_description": "The authorization code is invalid or expired."})
    );
    assert_eq!(
        server.sql("SELECT count(*) FROM oauth_tokens WHERE revoked_at IS NULL;"),
        "0"
    );
}

/// A password-grant client and an access token for alice.
async fn password_token(server: &Server) -> (Client, String) {
    let app = create_app(
        server,
        &[
            "--name",
            "Legacy",
            "--client-type",
            "confidential",
            "--grant",
            "password",
        ],
    );
    password_token_for(server, &app).await
}

/// A new access token for alice from the password-grant client `app`.
async fn password_token_for(server: &Server, app: &Client) -> (Client, String) {
    let r = token_request(
        server,
        Some(&app.basic()),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let access = r.json["access_token"].as_str().expect("access").to_owned();
    (app.clone(), access)
}

fn invalid_token() -> Value {
    json!({"detail": "The access token is invalid.", "code": "authentication_failed"})
}

/// Access-token checks cached for a minute: only an invalidation makes a change visible.
const LONG_CACHE: (&str, &str) = ("RESTGUARD_OAUTH2__CACHE_TTL", "60s");

#[tokio::test]
async fn revocations_reach_the_access_token_cache_at_once() {
    let server = server_with(&[("RESTGUARD_OAUTH2__PASSWORD_GRANT", "true"), LONG_CACHE]);
    server.create_user("alice", PASSWORD);
    server.create_user_with("root", PASSWORD, &["--staff", "--superuser"]);
    let root = login(&server, "root", PASSWORD).await;
    let alice = login(&server, "alice", PASSWORD).await;
    let alice_id = common::user_id(&server, "alice");
    let (app, access) = password_token(&server).await;
    let app_id = server.sql("SELECT id FROM oauth_applications;");

    // Each way of ending a token, right after the token was checked (and cached).
    let bearer = format!("Bearer {access}");
    assert_eq!(server.get("/api/me/", Some(&bearer)).await.status, 200);
    let r = post_form(
        &server,
        "/o/revoke_token/",
        Some(&app.basic()),
        &[("token".to_owned(), access.clone())],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    server
        .get("/api/me/", Some(&bearer))
        .await
        .assert(401, Some("Token"), &invalid_token());

    let (_, access) = password_token_for(&server, &app).await;
    let bearer = format!("Bearer {access}");
    assert_eq!(server.get("/api/me/", Some(&bearer)).await.status, 200);
    let r = alice
        .send(
            &server,
            Method::POST,
            &format!("/account/applications/{app_id}/revoke/"),
            Body::Form(vec![]),
        )
        .await;
    assert_eq!(r.status, 303, "{r:#?}");
    server
        .get("/api/me/", Some(&bearer))
        .await
        .assert(401, Some("Token"), &invalid_token());

    let (_, access) = password_token_for(&server, &app).await;
    let bearer = format!("Bearer {access}");
    assert_eq!(server.get("/api/me/", Some(&bearer)).await.status, 200);
    let r = root
        .send(
            &server,
            Method::POST,
            &format!("/admin/users/{alice_id}/active/"),
            Body::Form(vec![("active", "false".into())]),
        )
        .await;
    assert_eq!(r.status, 303, "{r:#?}");
    server
        .get("/api/me/", Some(&bearer))
        .await
        .assert(401, Some("Token"), &invalid_token());
}

#[tokio::test]
async fn scope_strings_are_capped() {
    let server = server_with(&[]);
    server.create_user("alice", PASSWORD);
    let web = web_app(&server, &[]);
    let svc = create_app(
        &server,
        &[
            "--name",
            "Service",
            "--client-type",
            "confidential",
            "--grant",
            "client-credentials",
        ],
    );
    let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let many = many.join(" ");
    let long = format!("read {}", "x".repeat(129));
    // The CLI parses --scopes the same way.
    let out = server.cli(&["app", "update", &svc.id, "--scopes", &many], None);
    assert_eq!(
        out.assert_one_line_error(),
        "error: --scopes: Too many scopes: at most 64."
    );
    for (scope, description) in [
        (many.as_str(), "Too many scopes: at most 64."),
        (
            long.as_str(),
            "A scope is too long: at most 128 characters.",
        ),
    ] {
        let r = token_request(
            &server,
            Some(&svc.basic()),
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
        .await;
        assert_oauth_error(&r, 400, "invalid_scope");
        assert_eq!(
            r.json,
            json!({"error": "invalid_scope", "error_description": description})
        );
        let browser = login(&server, "alice", PASSWORD).await;
        let r = authorize(&server, Some(&browser), &authorize_query(&web.id, scope)).await;
        assert_eq!(r.status, 302, "{r:?}");
        let params = redirect_params(&r);
        assert_eq!(param(&params, "error").as_deref(), Some("invalid_scope"));
        assert_eq!(
            param(&params, "error_description").as_deref(),
            Some(description)
        );
        assert_eq!(param(&params, "state").as_deref(), Some("xyz"));
    }
}

#[tokio::test]
async fn admin_page_registers_and_changes_post_logout_uris() {
    let server = server_with(&[]);
    server.create_user_with("boss", PASSWORD, &["--staff"]);
    let boss = login(&server, "boss", PASSWORD).await;
    let r = boss
        .send(
            &server,
            Method::POST,
            "/admin/applications/",
            Body::Form(vec![
                ("name", "Web".into()),
                ("client_type", "public".into()),
                ("grant_authorization_code", "on".into()),
                ("redirect_uris", REDIRECT.into()),
                ("post_logout_redirect_uris", format!("{SIGNED_OUT}\n")),
            ]),
        )
        .await;
    assert_eq!(r.status, 201, "{r:#?}");
    let client_id = server.sql("SELECT client_id FROM oauth_applications;");
    let app_id = server.sql("SELECT id FROM oauth_applications;");
    let page = boss
        .send(&server, Method::GET, "/admin/applications/", Body::None)
        .await;
    // (minijinja escapes `/` in HTML.)
    assert!(
        page.text
            .contains(">https:&#x2f;&#x2f;app.example&#x2f;signed-out</textarea>"),
        "{}",
        page.text
    );
    let logout = |uri: &'static str| {
        logout_path(&[("client_id", &client_id), ("post_logout_redirect_uri", uri)])
    };
    let r = anonymous_get(&server, &logout(SIGNED_OUT)).await;
    assert_eq!(r.status, 302, "{r:#?}");
    assert_eq!(location(&r), SIGNED_OUT);

    // Bad settings change nothing.
    let many = vec!["s"; 65].join(" ");
    for (fields, message) in [
        (
            vec![("scopes", many.clone())],
            "Invalid scopes: Too many scopes: at most 64.",
        ),
        (
            vec![("post_logout_redirect_uris", "javascript:alert(1)".to_owned())],
            "Invalid post-logout redirect URI javascript:alert(1): scheme javascript is not allowed",
        ),
    ] {
        let r = boss
            .send(
                &server,
                Method::POST,
                &format!("/admin/applications/{app_id}/settings/"),
                Body::Form(fields),
            )
            .await;
        assert_eq!(r.status, 400, "{r:#?}");
        assert!(r.text.contains(message), "{}", r.text);
    }
    assert_eq!(
        server.sql("SELECT post_logout_redirect_uris FROM oauth_applications;"),
        SIGNED_OUT
    );
    // Replaced: the old URI is refused at once.
    let r = boss
        .send(
            &server,
            Method::POST,
            &format!("/admin/applications/{app_id}/settings/"),
            Body::Form(vec![(
                "post_logout_redirect_uris",
                "https://app.example/other".into(),
            )]),
        )
        .await;
    assert_eq!(r.status, 303, "{r:#?}");
    assert_bad_request_page(
        &anonymous_get(&server, &logout(SIGNED_OUT)).await,
        UNREGISTERED,
    );
    let r = anonymous_get(&server, &logout("https://app.example/other")).await;
    assert_eq!(r.status, 302, "{r:#?}");
}
