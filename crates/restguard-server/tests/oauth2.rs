//! The OAuth2 / OpenID Connect provider against the real binary (CONTRACT §6, issue 5's
//! "Bad input" list): every failure is an exact RFC 6749 error and writes nothing.

mod common;
mod oauth2_support;
mod session_support;

use common::{token, Body, Server};
use oauth2_support::*;
use reqwest::Method;
use serde_json::json;
use session_support::{login, server_with};

const PASSWORD: &str = "correct horse battery";

fn cc_app(server: &Server) -> Client {
    create_app(
        server,
        &[
            "--name",
            "Service",
            "--client-type",
            "confidential",
            "--grant",
            "client-credentials",
            "--scopes",
            "read write introspection",
        ],
    )
}

#[tokio::test]
async fn client_credentials_and_client_authentication_failures() {
    let server = Server::start();
    let svc = cc_app(&server);
    let other = cc_app(&server);
    let public = create_app(
        &server,
        &[
            "--name",
            "Native",
            "--client-type",
            "public",
            "--grant",
            "authorization-code",
            "--redirect-uri",
            REDIRECT,
        ],
    );
    let secret = svc.secret.clone().expect("secret");
    assert!(secret.starts_with("rgcs_"));

    // client_secret_basic and client_secret_post both work.
    let ok = token_request(
        &server,
        Some(&svc.basic()),
        &[("grant_type", "client_credentials"), ("scope", "read")],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.headers["cache-control"], "no-store");
    assert_eq!(ok.headers["pragma"], "no-cache");
    assert_eq!(ok.json["token_type"], "Bearer");
    assert_eq!(ok.json["scope"], "read");
    assert_eq!(ok.json["expires_in"], 3600);
    assert!(ok.json.get("refresh_token").is_none());
    let access = ok.json["access_token"].as_str().expect("access").to_owned();
    assert!(access.starts_with("rgat_"));
    let post = token_request(
        &server,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &svc.id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(post.status, 200, "{post:?}");
    assert_eq!(post.json["scope"], "read", "default scopes");
    // The secret is stored as a digest only.
    assert!(!server
        .sql("SELECT hex(secret_digest) FROM oauth_applications;")
        .contains(&secret));
    assert!(
        server.sql(&format!(
            "SELECT count(*) FROM oauth_tokens WHERE hex(digest) LIKE '%{}%';",
            &access[5..15]
        )) == "0"
    );

    let before = oauth_state(&server);
    // Unknown client, wrong secret, another client's secret: one answer, 401 + challenge.
    for auth in [
        basic("nobody", &secret),
        basic(&svc.id, "rgcs_wrong"),
        basic(&svc.id, other.secret.as_deref().expect("secret")),
    ] {
        let r = token_request(
            &server,
            Some(&auth),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_oauth_error(&r, 401, "invalid_client");
        assert_eq!(
            r.json,
            json!({"error": "invalid_client", "error_description": "Client authentication failed."})
        );
        assert!(r.challenge().is_some());
    }
    // No client at all.
    let r = token_request(&server, None, &[("grant_type", "client_credentials")]).await;
    assert_oauth_error(&r, 401, "invalid_client");
    // A public client sending a secret it does not have.
    let r = token_request(
        &server,
        Some(&basic(&public.id, "made-up")),
        &[("grant_type", "authorization_code"), ("code", "rgac_x")],
    )
    .await;
    assert_oauth_error(&r, 401, "invalid_client");
    // A public client may not use client credentials.
    let r = token_request(
        &server,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &public.id),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "unauthorized_client");
    // Scope wider than allowed.
    let r = token_request(
        &server,
        Some(&svc.basic()),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read admin"),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_scope");
    // Password grant is off by default; unknown grants too.
    for grant in ["password", "implicit", "urn:x"] {
        let r = token_request(
            &server,
            Some(&svc.basic()),
            &[("grant_type", grant), ("username", "a"), ("password", "b")],
        )
        .await;
        assert_oauth_error(&r, 400, "unsupported_grant_type");
    }
    // Missing grant_type, duplicate parameters.
    let r = token_request(&server, Some(&svc.basic()), &[("scope", "read")]).await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = token_request(
        &server,
        Some(&svc.basic()),
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = token_request(
        &server,
        Some(&svc.basic()),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("scope", "write"),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    // Both authentication methods at once.
    let r = token_request(
        &server,
        Some(&svc.basic()),
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    // A JSON body: the grant type cannot be read.
    let r = session_support::send(
        &server,
        Method::POST,
        "/o/token/",
        &[],
        &[("Authorization", &svc.basic())],
        Body::Json(json!({"grant_type": "client_credentials"})),
    )
    .await;
    assert_oauth_error(&r, 400, "unsupported_grant_type");
    // Malformed form bodies.
    for raw in [
        &b"grant_type=client_credentials&scope=\xff\xfe"[..],
        b"grant_type=client_credentials&x=%00",
    ] {
        let r = session_support::send(
            &server,
            Method::POST,
            "/o/token/",
            &[],
            &[("Authorization", &svc.basic())],
            Body::Raw("application/x-www-form-urlencoded", raw.to_vec()),
        )
        .await;
        assert_oauth_error(&r, 400, "invalid_request");
    }
    let r = session_support::send(
        &server,
        Method::POST,
        "/o/token/",
        &[],
        &[("Authorization", &svc.basic())],
        Body::Raw("text/plain", b"grant_type=client_credentials".to_vec()),
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert_eq!(
        oauth_state(&server),
        before,
        "nothing written by failed requests"
    );

    // A client-credentials token carries no user: refused on user routes with DRF's 403.
    let me = server
        .get("/api/me/", Some(&format!("Bearer {access}")))
        .await;
    me.assert(
        403,
        None,
        &json!({"detail": "You do not have permission to perform this action.", "code": "permission_denied"}),
    );
    // An unknown rgat_ token is rejected by OAuth2; a JWT-shaped one is not OAuth2's.
    let bad = server.get("/api/me/", Some("Bearer rgat_nope")).await;
    bad.assert(
        401,
        Some("Token"),
        &json!({"detail": "The access token is invalid.", "code": "authentication_failed"}),
    );

    // Introspection: client authentication required.
    let pairs = vec![("token".to_owned(), access.clone())];
    let r = post_form(&server, "/o/introspect/", None, &pairs).await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = post_form(
        &server,
        "/o/introspect/",
        Some(&basic(&svc.id, "wrong")),
        &pairs,
    )
    .await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = post_form(&server, "/o/introspect/", Some(&other.basic()), &pairs).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["active"], true);
    assert_eq!(r.json["client_id"], json!(svc.id));
    assert_eq!(r.json["scope"], "read");
    assert!(r.json["exp"].is_i64());
    // With a bearer token holding the introspection scope.
    let intro = token_request(
        &server,
        Some(&other.basic()),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "introspection"),
        ],
    )
    .await;
    let intro = intro.json["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = post_form(
        &server,
        "/o/introspect/",
        Some(&format!("Bearer {intro}")),
        &pairs,
    )
    .await;
    assert_eq!(r.json["active"], true, "{r:?}");
    let r = post_form(
        &server,
        "/o/introspect/",
        Some(&format!("Bearer {access}")),
        &pairs,
    )
    .await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = post_form(
        &server,
        "/o/introspect/",
        Some(&other.basic()),
        &[("token".to_owned(), "rgat_unknown".to_owned())],
    )
    .await;
    assert_eq!(r.json, json!({"active": false}));

    // Revoking another client's token: 200, token untouched.
    let r = post_form(&server, "/o/revoke_token/", Some(&other.basic()), &pairs).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = post_form(&server, "/o/introspect/", Some(&other.basic()), &pairs).await;
    assert_eq!(
        r.json["active"], true,
        "another client's revocation must not touch it"
    );
    // Revocation without client authentication.
    let r = post_form(&server, "/o/revoke_token/", None, &pairs).await;
    assert_oauth_error(&r, 401, "invalid_client");
    // Unknown tokens: 200.
    let r = post_form(
        &server,
        "/o/revoke_token/",
        Some(&svc.basic()),
        &[("token".to_owned(), "whatever".to_owned())],
    )
    .await;
    assert_eq!(r.status, 200);
    // Its own: revoked.
    let r = post_form(&server, "/o/revoke_token/", Some(&svc.basic()), &pairs).await;
    assert_eq!(r.status, 200);
    let r = post_form(&server, "/o/introspect/", Some(&other.basic()), &pairs).await;
    assert_eq!(r.json, json!({"active": false}));
}

#[tokio::test]
async fn authorization_code_flow_refresh_rotation_and_code_reuse() {
    let server = server_with(&[]);
    server.create_user_with(
        "alice",
        PASSWORD,
        &["--email", "alice@example.com", "--first-name", "Alice"],
    );
    let web = web_app(&server, &[]);
    let other = web_app(&server, &[]);
    let scope = "openid profile email read";
    let pairs = authorize_query(&web.id, scope);

    // Anonymous: to the sign-in form, coming back here.
    let r = authorize(&server, None, &pairs).await;
    assert_eq!(r.status, 302, "{r:?}");
    let loc = location(&r);
    assert!(
        loc.starts_with("/api-auth/login/?next=%2Fo%2Fauthorize%2F%3F"),
        "{loc}"
    );

    let browser = login(&server, "alice", PASSWORD).await;
    // The consent page names the client and the scopes; denying → access_denied + state.
    let page = authorize(&server, Some(&browser), &pairs).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.text.contains("Web App") && page.text.contains("profile"));
    let denied = submit_consent(&server, &browser, &page, false).await;
    let back = redirect_params(&denied);
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&back, "state").as_deref(), Some("xyz"));
    assert!(location(&denied).starts_with(REDIRECT));
    // Consent without the CSRF token: 403 page, no code.
    let r = session_support::send(
        &server,
        Method::POST,
        "/o/authorize/",
        &browser.cookies(),
        &[],
        Body::Raw(
            "application/x-www-form-urlencoded",
            format!("{}&allow=1", encode(&pairs)).into_bytes(),
        ),
    )
    .await;
    assert_eq!(r.status, 403);

    let code = obtain_code(&server, &browser, &pairs).await;
    assert!(code.starts_with("rgac_"));
    let exchange = |code: String, client: Client, verifier: &'static str| {
        let server = &server;
        async move {
            token_request(
                server,
                Some(&client.basic()),
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", verifier),
                ],
            )
            .await
        }
    };
    let before = oauth_state(&server);
    // Wrong verifier, missing verifier, another client, other redirect_uri: nothing written.
    let r = exchange(
        code.clone(),
        web.clone(),
        "x-wrong-verifier-x-wrong-verifier-x-wrong-verifier",
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = token_request(
        &server,
        Some(&web.basic()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = exchange(code.clone(), other.clone(), VERIFIER).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = token_request(
        &server,
        Some(&web.basic()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");
    assert_eq!(
        oauth_state(&server),
        before,
        "failed exchanges write nothing"
    );

    let tokens = exchange(code.clone(), web.clone(), VERIFIER).await;
    assert_eq!(tokens.status, 200, "{tokens:?}");
    assert_eq!(tokens.headers["cache-control"], "no-store");
    assert_eq!(tokens.json["scope"], scope);
    let access = tokens.json["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh = tokens.json["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert!(refresh.starts_with("rgrt_"));
    assert!(tokens.json["id_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));

    // The access token authenticates API calls with its scopes.
    let me = server
        .get("/api/me/", Some(&format!("Bearer {access}")))
        .await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(
        me.json["auth"],
        json!({"scheme": "oauth2", "scopes": ["openid", "profile", "email", "read"]})
    );
    let info = server
        .get("/o/userinfo/", Some(&format!("Bearer {access}")))
        .await;
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(info.json["preferred_username"], "alice");
    assert_eq!(info.json["email"], "alice@example.com");
    assert_eq!(info.json["given_name"], "Alice");
    assert_eq!(info.json["sub"], me.json["id"].to_string());
    let info = server.get("/o/userinfo/", Some("Bearer rgat_nope")).await;
    assert_oauth_error(&info, 401, "invalid_token");

    // Refresh: rotation; a wider scope is refused; reusing a rotated token revokes the family.
    let r = token_request(
        &server,
        Some(&web.basic()),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "read write"),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_scope");
    let r = token_request(
        &server,
        Some(&other.basic()),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let rotated = token_request(
        &server,
        Some(&web.basic()),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "read"),
        ],
    )
    .await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    assert_eq!(rotated.json["scope"], "read");
    assert!(
        rotated.json.get("id_token").is_none(),
        "no id_token without openid: {rotated:?}"
    );
    let access2 = rotated.json["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh2 = rotated.json["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(refresh2, refresh);
    let me = server
        .get("/api/me/", Some(&format!("Bearer {access2}")))
        .await;
    assert_eq!(me.json["auth"]["scopes"], json!(["read"]));
    let replay = token_request(
        &server,
        Some(&web.basic()),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_oauth_error(&replay, 400, "invalid_grant");
    let r = token_request(
        &server,
        Some(&web.basic()),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");
    tokio::time::sleep(common::CACHE_WAIT).await;
    let me = server
        .get("/api/me/", Some(&format!("Bearer {access2}")))
        .await;
    assert_eq!(me.status, 401, "the family is revoked: {me:?}");

    // A second code; its reuse fails and revokes what the first use issued.
    let code = obtain_code(&server, &browser, &pairs).await;
    let first = exchange(code.clone(), web.clone(), VERIFIER).await;
    assert_eq!(first.status, 200);
    let access3 = first.json["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    assert_eq!(
        server
            .get("/api/me/", Some(&format!("Bearer {access3}")))
            .await
            .status,
        200
    );
    let second = exchange(code.clone(), web.clone(), VERIFIER).await;
    assert_oauth_error(&second, 400, "invalid_grant");
    tokio::time::sleep(common::CACHE_WAIT).await;
    let me = server
        .get("/api/me/", Some(&format!("Bearer {access3}")))
        .await;
    me.assert(
        401,
        Some("Token"),
        &json!({"detail": "The access token is invalid.", "code": "authentication_failed"}),
    );
    // On a route whose first authenticator is OAuth2 the challenge names the error.
    let _ = token("unused");

    // An expired code.
    let code = obtain_code(&server, &browser, &pairs).await;
    server.sql("UPDATE oauth_codes SET expires_at = 0 WHERE used_at IS NULL;");
    let r = exchange(code, web.clone(), VERIFIER).await;
    assert_oauth_error(&r, 400, "invalid_grant");
}

#[tokio::test]
async fn authorize_errors_pages_and_redirects() {
    let server = server_with(&[]);
    server.create_user("alice", PASSWORD);
    let web = web_app(&server, &[]);
    let cc = cc_app(&server);
    let browser = login(&server, "alice", PASSWORD).await;
    let base = authorize_query(&web.id, "read");
    let with = |name: &str, value: Option<&str>| {
        let mut pairs: Vec<(String, String)> =
            base.iter().filter(|(k, _)| k != name).cloned().collect();
        if let Some(v) = value {
            pairs.push((name.to_owned(), v.to_owned()));
        }
        pairs
    };
    let before = oauth_state(&server);
    // Client and redirect URI errors: a 400 page, never a redirect.
    for pairs in [
        with("client_id", Some("unknown")),
        with("client_id", None),
        with("redirect_uri", Some("https://evil.example/cb")),
        with("redirect_uri", Some("https://app.example/cb?extra=1")),
        with("redirect_uri", Some("https://app.example/cb#frag")),
        with("redirect_uri", Some("https://app.example:8443/cb")),
        with("redirect_uri", Some("http://app.example/cb")),
        {
            let mut p = base.clone();
            p.push(("redirect_uri".into(), "https://evil.example/cb".into()));
            p
        },
    ] {
        let r = authorize(&server, Some(&browser), &pairs).await;
        assert_eq!(r.status, 400, "{pairs:?}: {r:?}");
        assert!(r.headers.get("location").is_none());
        assert!(r.headers["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html"));
        // prompt=none does not turn them into redirects either.
        let mut none = pairs.clone();
        none.push(("prompt".into(), "none".into()));
        let r = authorize(&server, None, &none).await;
        assert_eq!(r.status, 400);
    }
    // A loopback redirect URI on any port (RFC 8252).
    let r = authorize(
        &server,
        Some(&browser),
        &with("redirect_uri", Some("http://127.0.0.1:53124/cb")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Everything else redirects with error and state.
    let cases: Vec<(Vec<(String, String)>, &str)> = vec![
        (with("code_challenge", None), "invalid_request"),
        (with("code_challenge_method", None), "invalid_request"),
        (
            with("code_challenge_method", Some("plain")),
            "invalid_request",
        ),
        (
            with("response_type", Some("token")),
            "unsupported_response_type",
        ),
        (with("response_type", None), "invalid_request"),
        (with("scope", Some("read admin")), "invalid_scope"),
        (
            {
                let mut p = base.clone();
                p.push(("state".into(), "again".into()));
                p
            },
            "invalid_request",
        ),
        (with("prompt", Some("bogus")), "invalid_request"),
        (with("prompt", Some("none")), "consent_required"),
    ];
    for (pairs, error) in cases {
        let r = authorize(&server, Some(&browser), &pairs).await;
        assert_eq!(r.status, 302, "{pairs:?}: {r:?}");
        let back = redirect_params(&r);
        assert!(location(&r).starts_with(REDIRECT), "{r:?}");
        assert_eq!(param(&back, "error").as_deref(), Some(error), "{pairs:?}");
        assert_eq!(param(&back, "state").as_deref(), Some("xyz"));
        assert!(param(&back, "code").is_none());
    }
    // prompt=none without a session: login_required.
    let r = authorize(&server, None, &with("prompt", Some("none"))).await;
    assert_eq!(
        param(&redirect_params(&r), "error").as_deref(),
        Some("login_required")
    );
    // prompt=login with a session: back to the sign-in form (without prompt=login).
    let r = authorize(&server, Some(&browser), &with("prompt", Some("login"))).await;
    assert_eq!(r.status, 302);
    assert!(location(&r).starts_with("/api-auth/login/?next="), "{r:?}");
    assert!(!location(&r).contains("prompt"));
    // max_age: a recent sign-in passes, an older one goes back to the sign-in form.
    let mut fresh = base.clone();
    fresh.push(("max_age".into(), "3600".into()));
    assert_eq!(authorize(&server, Some(&browser), &fresh).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut stale = base.clone();
    stale.push(("max_age".into(), "1".into()));
    let r = authorize(&server, Some(&browser), &stale).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert!(location(&r).starts_with("/api-auth/login/?next="), "{r:?}");
    assert!(!location(&r).contains("max_age"));
    let r = authorize(&server, Some(&browser), &with("max_age", Some("soon"))).await;
    assert_eq!(
        param(&redirect_params(&r), "error").as_deref(),
        Some("invalid_request")
    );
    // A client without the authorization-code grant.
    let mut pairs = with("client_id", Some(&cc.id));
    pairs.retain(|(k, _)| k != "redirect_uri");
    let r = authorize(&server, Some(&browser), &pairs).await;
    assert_eq!(r.status, 400, "cc client has no redirect URI: {r:?}");
    assert_eq!(oauth_state(&server), before);
    assert_eq!(server.sql("SELECT count(*) FROM oauth_codes;"), "0");

    // skip-authorization clients get a code without a consent page; prompt=none works then.
    let trusted = web_app(&server, &["--skip-authorization"]);
    let r = authorize(
        &server,
        Some(&browser),
        &authorize_query(&trusted.id, "read"),
    )
    .await;
    assert_eq!(r.status, 302, "{r:?}");
    assert!(param(&redirect_params(&r), "code").is_some());
    let mut none = authorize_query(&trusted.id, "read");
    none.push(("prompt".into(), "none".into()));
    let r = authorize(&server, Some(&browser), &none).await;
    assert!(param(&redirect_params(&r), "code").is_some());
}

#[tokio::test]
async fn discovery_jwks_and_metadata() {
    let server = Server::start();
    let conf = server
        .get("/o/.well-known/openid-configuration", None)
        .await;
    assert_eq!(conf.status, 200, "{conf:?}");
    let issuer = format!("{}/o", server.base);
    assert_eq!(conf.json["issuer"], json!(issuer));
    assert_eq!(
        conf.json["token_endpoint"],
        json!(format!("{}/o/token/", server.base))
    );
    assert_eq!(
        conf.json["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert!(!conf.json["grant_types_supported"]
        .to_string()
        .contains("password"));
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/o",
    ] {
        let r = server.get(path, None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["issuer"], json!(issuer));
    }
    let jwks = server.get("/o/.well-known/jwks.json", None).await;
    let algs: Vec<&str> = jwks.json["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["alg"].as_str())
        .collect();
    assert!(
        algs.contains(&"RS256") && algs.contains(&"EdDSA"),
        "{jwks:?}"
    );
    assert!(jwks.json["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .all(|k| k.get("d").is_none()));
}

#[tokio::test]
async fn password_grant_when_enabled_is_throttled() {
    let server = server_with(&[
        ("RESTGUARD_OAUTH2__PASSWORD_GRANT", "true"),
        ("RESTGUARD_THROTTLE__LOGIN_USER", "2/h"),
    ]);
    server.create_user("alice", PASSWORD);
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
    let ok = token_request(
        &server,
        Some(&app.basic()),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.json["refresh_token"].is_string());
    for _ in 0..2 {
        let r = token_request(
            &server,
            Some(&app.basic()),
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "wrong"),
            ],
        )
        .await;
        assert_oauth_error(&r, 400, "invalid_grant");
    }
    let r = token_request(
        &server,
        Some(&app.basic()),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.headers.get("retry-after").is_some());
    // A client without the grant.
    let cc = cc_app(&server);
    let r = token_request(
        &server,
        Some(&cc.basic()),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "unauthorized_client");
}

#[tokio::test]
async fn rp_initiated_logout_confirms_then_redirects_to_registered_uris_only() {
    let server = server_with(&[]);
    server.create_user("alice", PASSWORD);
    let web = web_app(&server, &["--post-logout-redirect-uri", REDIRECT]);
    let browser = login(&server, "alice", PASSWORD).await;
    let query = encode(&[
        ("client_id".to_owned(), web.id.clone()),
        ("post_logout_redirect_uri".to_owned(), REDIRECT.to_owned()),
        ("state".to_owned(), "bye".to_owned()),
    ]);
    // GET never signs out: a confirmation form.
    let page = session_support::send(
        &server,
        Method::GET,
        &format!("/o/logout/?{query}"),
        &browser.cookies(),
        &[],
        Body::None,
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(browser.me(&server).await.status, 200);
    let csp = page.headers["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("form-action 'self' http://127.0.0.1"), "{csp}");
    let form = hidden_inputs(&page.text);
    let r = session_support::send(
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
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(location(&r), format!("{REDIRECT}?state=bye"));
    assert_eq!(browser.me(&server).await.status, 401, "the session ended");

    // An unregistered post-logout URI is never followed: a 400 page, not even a confirmation.
    let browser = login(&server, "alice", PASSWORD).await;
    let query = encode(&[
        ("client_id".to_owned(), web.id.clone()),
        (
            "post_logout_redirect_uri".to_owned(),
            "https://evil.example/".to_owned(),
        ),
    ]);
    let page = session_support::send(
        &server,
        Method::GET,
        &format!("/o/logout/?{query}"),
        &browser.cookies(),
        &[],
        Body::None,
    )
    .await;
    assert_eq!(page.status, 400, "{page:?}");
    assert!(page.text.contains(
        "<p id=\"error-message\">The post_logout_redirect_uri is not registered for this client.</p>"
    ));
    assert!(page.headers.get("location").is_none());
    assert_eq!(browser.me(&server).await.status, 200);
    // Without a post-logout URI: signed out, then the sign-in page.
    let form = vec![("client_id".to_owned(), web.id.clone())];
    let r = browser
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
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(location(&r), "/api-auth/login/");
    assert_eq!(browser.me(&server).await.status, 401);
    // Without the CSRF token: 403, still signed in.
    let browser = login(&server, "alice", PASSWORD).await;
    let r = session_support::send(
        &server,
        Method::POST,
        "/o/logout/",
        &browser.cookies(),
        &[],
        Body::Raw("application/x-www-form-urlencoded", Vec::new()),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(browser.me(&server).await.status, 200);
}

#[tokio::test]
async fn staff_page_registers_rotates_and_deletes_applications() {
    let server = server_with(&[]);
    server.create_user_with("boss", PASSWORD, &["--staff"]);
    server.create_user("alice", PASSWORD);
    let alice = login(&server, "alice", PASSWORD).await;
    let r = alice
        .send(&server, Method::GET, "/admin/applications/", Body::None)
        .await;
    assert_eq!(r.status, 403);
    let boss = login(&server, "boss", PASSWORD).await;
    let page = boss
        .send(&server, Method::GET, "/admin/applications/", Body::None)
        .await;
    assert_eq!(page.status, 200, "{page:?}");
    let token = session_support::form_token(&page.text);
    let form = |pairs: Vec<(&str, &str)>| {
        let mut all = vec![("csrfmiddlewaretoken".to_owned(), token.clone())];
        all.extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        Body::Raw(
            "application/x-www-form-urlencoded",
            encode(&all).into_bytes(),
        )
    };
    // A bad redirect URI is refused; nothing registered.
    let r = boss
        .send(
            &server,
            Method::POST,
            "/admin/applications/",
            form(vec![
                ("name", "X"),
                ("client_type", "confidential"),
                ("grant_authorization_code", "on"),
                ("redirect_uris", "https://a.example/cb#frag"),
            ]),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(server.sql("SELECT count(*) FROM oauth_applications;"), "0");
    let r = boss
        .send(
            &server,
            Method::POST,
            "/admin/applications/",
            form(vec![
                ("name", "Nightly job"),
                ("client_type", "confidential"),
                ("grant_client_credentials", "on"),
                ("scopes", "read"),
            ]),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let grab = |html: &str, id: &str| {
        let marker = format!("id=\"{id}\">");
        let start = html.find(&marker).expect(id) + marker.len();
        html[start..]
            .split('<')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let client = Client {
        id: grab(&r.text, "new-client-id"),
        secret: Some(grab(&r.text, "new-client-secret")),
    };
    let ok = token_request(
        &server,
        Some(&client.basic()),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let app_id = server.sql("SELECT id FROM oauth_applications;");
    let r = boss
        .send(
            &server,
            Method::POST,
            &format!("/admin/applications/{app_id}/rotate-secret/"),
            form(vec![]),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let rotated = Client {
        id: client.id.clone(),
        secret: Some(grab(&r.text, "new-client-secret")),
    };
    let old = token_request(
        &server,
        Some(&client.basic()),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(&old, 401, "invalid_client");
    let new = token_request(
        &server,
        Some(&rotated.basic()),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(new.status, 200);
    let r = boss
        .send(
            &server,
            Method::POST,
            &format!("/admin/applications/{app_id}/delete/"),
            form(vec![]),
        )
        .await;
    assert_eq!(r.status, 303, "{r:?}");
    let gone = token_request(
        &server,
        Some(&rotated.basic()),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(&gone, 401, "invalid_client");
    // The CLI agrees.
    let out = server.cli(&["app", "show", &client.id], None);
    out.assert_one_line_error();
}

#[tokio::test]
async fn cli_app_commands() {
    let server = Server::start();
    let public = create_app(
        &server,
        &[
            "--name",
            "SPA",
            "--client-type",
            "public",
            "--grant",
            "authorization-code",
            "--redirect-uri",
            REDIRECT,
            "--algorithm",
            "EdDSA",
        ],
    );
    assert!(public.secret.is_none());
    let conf = create_app(
        &server,
        &[
            "--name",
            "Job",
            "--client-type",
            "confidential",
            "--grant",
            "client-credentials",
        ],
    );
    let list = server.cli(&["app", "list"], None);
    list.assert_ok();
    assert_eq!(list.stdout.lines().count(), 2);
    assert!(list
        .stdout
        .contains(&format!("{}\tSPA\tpublic\tauthorization_code", public.id)));
    let show = server.cli(&["app", "show", &public.id], None);
    show.assert_ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).expect("json");
    assert_eq!(v["algorithm"], "EdDSA");
    assert_eq!(v["redirect_uris"], json!([REDIRECT]));
    assert_eq!(v["post_logout_redirect_uris"], json!([]));
    assert!(!show.stdout.contains("secret"));
    // Post-logout URIs: registered, replaced, removed; scopes replaced.
    let update = |args: &[&str]| {
        let mut all = vec!["app", "update", public.id.as_str()];
        all.extend_from_slice(args);
        server.cli(&all, None)
    };
    let out = update(&[
        "--post-logout-redirect-uri",
        "https://spa.example/bye",
        "--post-logout-redirect-uri",
        "com.example.app:/bye",
        "--scopes",
        "openid read",
    ]);
    out.assert_ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(
        v["post_logout_redirect_uris"],
        json!(["https://spa.example/bye", "com.example.app:/bye"])
    );
    assert_eq!(v["allowed_scopes"], json!(["openid", "read"]));
    assert_eq!(v["redirect_uris"], json!([REDIRECT]), "untouched");
    let out = update(&["--no-post-logout-redirect-uris"]);
    out.assert_ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(v["post_logout_redirect_uris"], json!([]));
    assert_eq!(v["allowed_scopes"], json!(["openid", "read"]), "untouched");
    assert_eq!(
        update(&[]).assert_one_line_error(),
        "error: nothing to change: give --post-logout-redirect-uri, --no-post-logout-redirect-uris or --scopes"
    );
    assert_eq!(
        update(&["--post-logout-redirect-uri", "javascript:alert(1)"]).assert_one_line_error(),
        "error: --post-logout-redirect-uri \"javascript:alert(1)\": scheme javascript is not allowed"
    );
    assert_eq!(
        server
            .cli(&["app", "update", "nope", "--scopes", "read"], None)
            .assert_one_line_error(),
        "error: no application with client_id \"nope\""
    );
    let created = server.cli(
        &[
            "app",
            "create",
            "--name",
            "Web",
            "--client-type",
            "public",
            "--grant",
            "authorization-code",
            "--redirect-uri",
            REDIRECT,
            "--post-logout-redirect-uri",
            "https://web.example/bye",
        ],
        None,
    );
    created.assert_ok();
    let id: serde_json::Value = serde_json::from_str(created.stdout.trim()).expect("json");
    let show = server.cli(
        &["app", "show", id["client_id"].as_str().expect("client_id")],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).expect("json");
    assert_eq!(
        v["post_logout_redirect_uris"],
        json!(["https://web.example/bye"])
    );
    let rotated = server.cli(&["app", "rotate-secret", &conf.id], None);
    rotated.assert_ok();
    let v: serde_json::Value = serde_json::from_str(rotated.stdout.trim()).expect("json");
    assert_ne!(v["client_secret"].as_str(), conf.secret.as_deref());
    server
        .cli(&["app", "rotate-secret", &public.id], None)
        .assert_one_line_error();
    server.cli(&["app", "delete", &conf.id], None).assert_ok();
    server
        .cli(&["app", "delete", &conf.id], None)
        .assert_one_line_error();
    server
        .cli(
            &[
                "app",
                "create",
                "--name",
                "X",
                "--client-type",
                "confidential",
                "--grant",
                "authorization-code",
            ],
            None,
        )
        .assert_one_line_error();
    server
        .cli(
            &[
                "app",
                "create",
                "--name",
                "X",
                "--client-type",
                "public",
                "--grant",
                "client-credentials",
            ],
            None,
        )
        .assert_one_line_error();
    server
        .cli(
            &[
                "app",
                "create",
                "--name",
                "X",
                "--client-type",
                "public",
                "--grant",
                "authorization-code",
                "--redirect-uri",
                "https://a/#f",
            ],
            None,
        )
        .assert_one_line_error();
    let bad = server.cli(
        &[
            "app",
            "create",
            "--name",
            "X",
            "--client-type",
            "sideways",
            "--grant",
            "password",
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    server
        .cli(&["app", "frobnicate"], None)
        .assert_usage_error();
    server.cli(&["flush-expired"], None).assert_ok();
}

#[tokio::test]
async fn scopes_reach_permissions_and_the_oauth2_challenge() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("restguard.toml"),
        r#"
[oauth2]
password_grant = true
scopes = ["openid", "read", "write", "reports"]

[[route]]
path = "/reports/"
authenticators = ["oauth2", "token"]
permissions = ["has_scope:reports"]

[[route]]
path = "/rw/"
authenticators = ["oauth2"]
permissions = ["has_read_write_scope"]
"#,
    )
    .expect("config");
    let config = dir.path().join("restguard.toml");
    let server = Server::start_with_env(&[("RESTGUARD_CONFIG", config.to_str().expect("utf-8"))]);
    server.create_user("alice", PASSWORD);
    let app = create_app(
        &server,
        &[
            "--name",
            "Legacy",
            "--client-type",
            "confidential",
            "--grant",
            "password",
            "--scopes",
            "read write reports",
        ],
    );
    let obtain = |scope: &'static str| {
        let server = &server;
        let app = app.clone();
        async move {
            let r = token_request(
                server,
                Some(&app.basic()),
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", PASSWORD),
                    ("scope", scope),
                ],
            )
            .await;
            assert_eq!(r.status, 200, "{r:?}");
            format!("Bearer {}", r.json["access_token"].as_str().expect("token"))
        }
    };
    let verify = |uri: &'static str, method: &'static str, auth: Option<String>| {
        let mut request = server
            .client
            .get(server.url("/auth/verify"))
            .header("X-Forwarded-Uri", uri)
            .header("X-Forwarded-Method", method);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        async move { common::Reply::read(request.send().await.expect("request")).await }
    };
    let read = obtain("read").await;
    let reports = obtain("read reports").await;
    let r = verify("/reports/q1", "GET", Some(read.clone())).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json["code"], "permission_denied");
    let r = verify("/reports/q1", "GET", Some(reports.clone())).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.headers["x-auth-scheme"], "oauth2");
    assert_eq!(r.headers["x-auth-scopes"], "read reports");
    // OAuth2 first: the challenge names the error after a rejected token.
    let r = verify("/reports/q1", "GET", None).await;
    r.assert(401, Some("Bearer realm=\"api\""), &json!({"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}));
    let r = verify("/reports/q1", "GET", Some("Bearer rgat_nope".into())).await;
    r.assert(
        401,
        Some("Bearer realm=\"api\", error=\"invalid_token\""),
        &json!({"detail": "The access token is invalid.", "code": "authentication_failed"}),
    );
    // Read/write by method.
    assert_eq!(verify("/rw/x", "GET", Some(read.clone())).await.status, 200);
    assert_eq!(
        verify("/rw/x", "POST", Some(read.clone())).await.status,
        403
    );
    let write = obtain("read write").await;
    assert_eq!(verify("/rw/x", "DELETE", Some(write)).await.status, 200);
}

#[tokio::test]
async fn public_client_exchanges_with_pkce_alone() {
    let server = server_with(&[]);
    server.create_user("alice", PASSWORD);
    let spa = create_app(
        &server,
        &[
            "--name",
            "SPA",
            "--client-type",
            "public",
            "--grant",
            "authorization-code",
            "--redirect-uri",
            REDIRECT,
        ],
    );
    let browser = login(&server, "alice", PASSWORD).await;
    let code = obtain_code(&server, &browser, &authorize_query(&spa.id, "read")).await;
    // No verifier: refused even though the client authenticated (by client_id alone).
    let r = token_request(
        &server,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &spa.id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = token_request(
        &server,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &spa.id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let refresh = r.json["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let r = token_request(
        &server,
        None,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &spa.id),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // A public client cannot introspect.
    let r = post_form(
        &server,
        "/o/introspect/",
        None,
        &[
            ("client_id".to_owned(), spa.id.clone()),
            ("token".to_owned(), refresh),
        ],
    )
    .await;
    assert_oauth_error(&r, 401, "invalid_client");
}
