//! Independent clients against the real binary: the Rust `openidconnect` crate (discovery,
//! authorization code + PKCE, id_token verified against the JWKS with nonce and at_hash,
//! userinfo, refresh) and the `oauth2` crate (client credentials, introspection,
//! revocation). The sign-in and consent forms are submitted over HTTP with a cookie jar.

mod common;
mod oauth2_support;
mod session_support;

use std::collections::BTreeMap;

use oauth2_support::{create_app, hidden_inputs, REDIRECT};
use openidconnect::{
    core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata},
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IntrospectionUrl,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, RevocationUrl, Scope,
    TokenIntrospectionResponse, TokenResponse,
};
use session_support::server_with;

const PASSWORD: &str = "correct horse battery";

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A browser: a cookie jar and a client that does not follow redirects.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: http_client(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn absorb(&mut self, response: &reqwest::Response) {
        for v in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let pair = v.split(';').next().unwrap_or_default();
            if let Some((k, val)) = pair.split_once('=') {
                if val.is_empty() || v.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), val.to_owned());
                }
            }
        }
    }

    async fn get(&mut self, url: &str) -> (u16, String, String) {
        let r = self
            .http
            .get(url)
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.absorb(&r);
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, location, r.text().await.expect("body"))
    }

    async fn post_form(&mut self, url: &str, form: &[(String, String)]) -> (u16, String, String) {
        let r = self
            .http
            .post(url)
            .header(reqwest::header::COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .expect("POST");
        self.absorb(&r);
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, location, r.text().await.expect("body"))
    }

    /// Follows the authorize URL through sign-in and consent; returns the final redirect.
    async fn authorize(&mut self, base: &str, url: &str, username: &str) -> url::Url {
        let (status, location, _) = self.get(url).await;
        assert_eq!(status, 302, "authorize without a session");
        assert!(location.starts_with("/api-auth/login/?next="), "{location}");
        let (status, _, page) = self.get(&format!("{base}{location}")).await;
        assert_eq!(status, 200);
        let mut form = hidden_inputs(&page);
        form.push(("username".into(), username.into()));
        form.push(("password".into(), PASSWORD.into()));
        let (status, next, _) = self
            .post_form(&format!("{base}/api-auth/login/"), &form)
            .await;
        assert_eq!(status, 302, "signed in");
        assert!(next.starts_with("/o/authorize/?"), "{next}");
        let (status, _, consent) = self.get(&format!("{base}{next}")).await;
        assert_eq!(status, 200, "consent page");
        let mut form = hidden_inputs(&consent);
        form.push(("allow".into(), "Authorize".into()));
        let (status, back, _) = self.post_form(&format!("{base}/o/authorize/"), &form).await;
        assert_eq!(status, 302, "approved");
        url::Url::parse(&back).expect("absolute redirect")
    }
}

/// `POST /o/revoke_token/` as the `oauth2` crate sends it.
async fn revoke(base: &str, client_id: &str, secret: &str, token: &str) {
    let r = http_client()
        .post(format!("{base}/o/revoke_token/"))
        .basic_auth(client_id, Some(secret))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
}

fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn oidc_flow(algorithm: &str, expected: CoreJwsSigningAlgorithm) {
    let server = server_with(&[]);
    server.create_user_with(
        "alice",
        PASSWORD,
        &[
            "--email",
            "alice@example.com",
            "--first-name",
            "Alice",
            "--last-name",
            "Liddell",
        ],
    );
    let app = create_app(
        &server,
        &[
            "--name",
            "RP",
            "--client-type",
            "confidential",
            "--grant",
            "authorization-code",
            "--redirect-uri",
            REDIRECT,
            "--algorithm",
            algorithm,
        ],
    );
    let http = http_client();
    let issuer = IssuerUrl::new(format!("{}/o", server.base)).expect("issuer");
    let metadata = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .expect("discovery + JWKS");
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(app.id.clone()),
        Some(ClientSecret::new(app.secret.clone().expect("secret"))),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).expect("redirect"))
    .set_revocation_url(
        RevocationUrl::new(format!("{}/o/revoke_token/", server.base)).expect("url"),
    )
    .set_introspection_url(
        IntrospectionUrl::new(format!("{}/o/introspect/", server.base)).expect("url"),
    );

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("read".into()))
        .set_pkce_challenge(challenge)
        .url();
    let mut browser = Browser::new();
    let back = browser
        .authorize(&server.base, auth_url.as_str(), "alice")
        .await;
    assert!(back.as_str().starts_with(REDIRECT));
    assert_eq!(
        query(&back, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert_eq!(query(&back, "iss"), Some(format!("{}/o", server.base)));
    let code = query(&back, "code").expect("code");

    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .expect("token endpoint")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("id_token");
    let id_verifier = client
        .id_token_verifier()
        .set_allowed_algs(vec![expected.clone()]);
    let claims = id_token
        .claims(&id_verifier, &nonce)
        .expect("id_token verifies");
    assert_eq!(id_token.signing_alg().expect("alg"), &expected);
    assert_eq!(claims.issuer().as_str(), format!("{}/o", server.base));
    assert!(claims.auth_time().is_some());
    let expected_hash = claims.access_token_hash().expect("at_hash");
    let actual = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("alg"),
        id_token.signing_key(&id_verifier).expect("key"),
    )
    .expect("hash");
    assert_eq!(&actual, expected_hash);

    let info: openidconnect::core::CoreUserInfoClaims = client
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .expect("userinfo endpoint")
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some("alice"));
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));

    // Refresh with rotation.
    let refresh = tokens.refresh_token().expect("refresh token").clone();
    let refreshed = client
        .exchange_refresh_token(&refresh)
        .expect("token endpoint")
        .request_async(&http)
        .await
        .expect("refresh");
    assert_ne!(
        refreshed.access_token().secret(),
        tokens.access_token().secret()
    );
    // A new id_token for the same subject and audience (OIDC Core §12.2), without a nonce,
    // bound to the new access token.
    let renewed = refreshed.id_token().expect("id_token on refresh");
    let renewed_claims = renewed
        .claims(&id_verifier, |nonce: Option<&Nonce>| match nonce {
            None => Ok(()),
            Some(_) => Err("a refreshed id_token carries no nonce".to_owned()),
        })
        .expect("refreshed id_token verifies");
    assert_eq!(renewed_claims.subject(), claims.subject());
    assert_eq!(renewed_claims.audiences(), claims.audiences());
    let (first, again) = (
        claims.auth_time().expect("auth_time").timestamp(),
        renewed_claims.auth_time().expect("auth_time").timestamp(),
    );
    assert!((first - again).abs() <= 1, "auth_time {first} vs {again}");
    let renewed_hash = AccessTokenHash::from_token(
        refreshed.access_token(),
        renewed.signing_alg().expect("alg"),
        renewed.signing_key(&id_verifier).expect("key"),
    )
    .expect("hash");
    assert_eq!(Some(&renewed_hash), renewed_claims.access_token_hash());
    let replay = client
        .exchange_refresh_token(&refresh)
        .expect("token endpoint")
        .request_async(&http)
        .await;
    assert!(replay.is_err(), "a rotated refresh token is dead");

    // Introspection and revocation of the (revoked-family) tokens and a fresh code's tokens.
    let intro = client
        .introspect(refreshed.access_token())
        .request_async(&http)
        .await
        .expect("introspection");
    assert!(!intro.active(), "reuse revoked the family");

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _, _) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let (status, consent_or_back, page) = browser.get(auth_url.as_str()).await;
    assert_eq!(status, 200, "signed in: straight to consent");
    let _ = consent_or_back;
    let mut form = hidden_inputs(&page);
    form.push(("allow".into(), "Authorize".into()));
    let (_, back, _) = browser
        .post_form(&format!("{}/o/authorize/", server.base), &form)
        .await;
    let code = query(&url::Url::parse(&back).expect("url"), "code").expect("code");
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let intro = client
        .introspect(tokens.access_token())
        .request_async(&http)
        .await
        .expect("introspection");
    assert!(intro.active());
    assert_eq!(intro.username(), Some("alice"));
    // The crates refuse a revocation URL that is not https (RFC 7009 §2); revoke over plain
    // loopback HTTP by hand, as the crate would (client_secret_basic, token_type_hint).
    assert!(client
        .revoke_token(tokens.access_token().clone().into())
        .is_err());
    revoke(
        &server.base,
        &app.id,
        app.secret.as_deref().unwrap_or(""),
        tokens.access_token().secret(),
    )
    .await;
    let intro = client
        .introspect(tokens.access_token())
        .request_async(&http)
        .await
        .expect("introspection");
    assert!(!intro.active());
}

#[tokio::test]
async fn openidconnect_code_pkce_rs256() {
    oidc_flow("RS256", CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256).await;
}

#[tokio::test]
async fn openidconnect_code_pkce_eddsa() {
    oidc_flow("EdDSA", CoreJwsSigningAlgorithm::EdDsa).await;
}

#[tokio::test]
async fn oauth2_crate_client_credentials_introspection_revocation() {
    use oauth2::{basic::BasicClient, StandardRevocableToken, TokenIntrospectionResponse as _};
    let server = server_with(&[]);
    let app = create_app(
        &server,
        &[
            "--name",
            "Service",
            "--client-type",
            "confidential",
            "--grant",
            "client-credentials",
            "--scopes",
            "read write",
        ],
    );
    let http = http_client();
    let client = BasicClient::new(oauth2::ClientId::new(app.id.clone()))
        .set_client_secret(oauth2::ClientSecret::new(
            app.secret.clone().expect("secret"),
        ))
        .set_token_uri(oauth2::TokenUrl::new(format!("{}/o/token/", server.base)).expect("url"))
        .set_introspection_url(
            oauth2::IntrospectionUrl::new(format!("{}/o/introspect/", server.base)).expect("url"),
        )
        .set_revocation_url(
            oauth2::RevocationUrl::new(format!("{}/o/revoke_token/", server.base)).expect("url"),
        );
    let tokens = client
        .exchange_client_credentials()
        .add_scope(oauth2::Scope::new("write".into()))
        .request_async(&http)
        .await
        .expect("client credentials");
    use oauth2::TokenResponse as _;
    assert_eq!(tokens.scopes().map(|s| s.len()), Some(1));
    assert!(tokens.refresh_token().is_none());
    let intro = client
        .introspect(tokens.access_token())
        .request_async(&http)
        .await
        .expect("introspect");
    assert!(intro.active());
    assert_eq!(intro.client_id().map(|c| c.as_str()), Some(app.id.as_str()));
    assert!(
        client
            .revoke_token(StandardRevocableToken::AccessToken(
                tokens.access_token().clone()
            ))
            .is_err(),
        "the crate wants https for revocation"
    );
    revoke(
        &server.base,
        &app.id,
        app.secret.as_deref().unwrap_or(""),
        tokens.access_token().secret(),
    )
    .await;
    let intro = client
        .introspect(tokens.access_token())
        .request_async(&http)
        .await
        .expect("introspect");
    assert!(!intro.active());
    // A wrong secret: the crate sees RFC 6749's invalid_client.
    let bad = BasicClient::new(oauth2::ClientId::new(app.id.clone()))
        .set_client_secret(oauth2::ClientSecret::new("rgcs_wrong".into()))
        .set_token_uri(oauth2::TokenUrl::new(format!("{}/o/token/", server.base)).expect("url"));
    match bad.exchange_client_credentials().request_async(&http).await {
        Err(oauth2::RequestTokenError::ServerResponse(e)) => {
            assert_eq!(
                e.error(),
                &oauth2::basic::BasicErrorResponseType::InvalidClient
            );
        }
        other => panic!("expected invalid_client, got {other:?}"),
    }
}
