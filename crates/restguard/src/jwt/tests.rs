//! Unit tests: one per "bad input" of issue 4, plus the flows.

use std::{sync::Arc, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use restguard_core::{
    authenticator::{Authenticator, Outcome, RequestContext},
    secret::SecretString,
    store::{NewUser, Stores, UserStore},
    AuthError, Denial, User,
};
use restguard_store::memory::MemoryStore;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::*;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

struct Fixture {
    stores: Stores,
    store: Arc<MemoryStore>,
    service: JwtService,
    alice: User,
}

async fn fixture_with(settings: JwtSettings) -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let stores = Stores::from_backend(store.clone());
    let mut joined = NewUser::new("alice");
    joined.date_joined = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let alice = stores.users.create_user(joined).await.unwrap();
    let service = JwtService::from_stores(&stores, settings).await.unwrap();
    Fixture {
        stores,
        store,
        service,
        alice,
    }
}

async fn hs256() -> Fixture {
    fixture_with(JwtSettings {
        signing_key: Some(SecretString::new(SECRET)),
        ..JwtSettings::default()
    })
    .await
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with any header and claims, HMAC-signed with `secret`.
fn hs_token(header: Value, claims: Value, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64(&header), b64(&claims));
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{sig}")
}

fn access_claims(user_id: &str) -> Value {
    json!({
        "token_type": "access",
        "exp": now() + 300,
        "iat": now() - 1,
        "jti": "0123456789abcdef0123456789abcdef",
        "user_id": user_id,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    if let Value::Object(map) = &mut claims {
        map.remove(key);
    }
    claims
}

fn header() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

async fn verify_err(f: &Fixture, token: &str) -> TokenProblem {
    match f.service.verify(token).await {
        Err(JwtError::Token(p)) => p,
        other => panic!("expected a token problem, got {other:?}"),
    }
}

/// Runs the authenticator on `Authorization: <value>`.
async fn auth(f: &Fixture, value: &str) -> Outcome {
    let (parts, _) = http::Request::builder()
        .header("authorization", value)
        .body(())
        .unwrap()
        .into_parts();
    let ctx = RequestContext::new(&parts, None).unwrap();
    JwtAuth::new(f.service.clone())
        .authenticate(&ctx)
        .await
        .unwrap()
}

/// The response body of a failed authentication.
async fn auth_body(f: &Fixture, token: &str) -> Value {
    match auth(f, &format!("Bearer {token}")).await {
        Outcome::Failed(e) => {
            let d = Denial::new(
                e,
                Some(http::HeaderValue::from_static("Bearer realm=\"api\"")),
            );
            assert_eq!(d.status(), 401);
            d.body()
        }
        other => panic!("expected failure, got {other:?}"),
    }
}

fn invalid_body(message: &str) -> Value {
    json!({
        "detail": "Given token not valid for any token type",
        "code": "token_not_valid",
        "messages": [{"token_class": "AccessToken", "token_type": "access", "message": message}],
    })
}

#[tokio::test]
async fn valid_access_token_authenticates() {
    let f = hs256().await;
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    match auth(&f, &format!("Bearer {}", pair.access)).await {
        Outcome::Authenticated(id) => {
            assert_eq!(id.user().expect("a user").id, f.alice.id);
            assert_eq!(id.auth.scheme, restguard_core::Scheme::Jwt);
        }
        other => panic!("{other:?}"),
    }
    // Claims are Simple JWT's, with a kid in the header.
    let parts: Vec<&str> = pair.access.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    assert!(header["kid"].is_string());
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let keys: Vec<&String> = claims.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["token_type", "exp", "iat", "jti", "user_id"]);
    assert_eq!(claims["token_type"], "access");
    assert_eq!(claims["user_id"], f.alice.id.to_string());
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
}

#[tokio::test]
async fn foreign_token_without_kid_signed_with_the_secret_is_accepted() {
    let f = hs256().await;
    let token = hs_token(
        header(),
        access_claims(&f.alice.id.to_string()),
        SECRET.as_bytes(),
    );
    assert!(matches!(
        auth(&f, &format!("Bearer {token}")).await,
        Outcome::Authenticated(_)
    ));
    // Integer user_id (older Simple JWT) too.
    let token = hs_token(
        header(),
        with(access_claims("x"), "user_id", json!(f.alice.id.0)),
        SECRET.as_bytes(),
    );
    assert!(matches!(
        auth(&f, &format!("Bearer {token}")).await,
        Outcome::Authenticated(_)
    ));
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let f = hs256().await;
    let claims = access_claims(&f.alice.id.to_string());
    for alg in ["none", "None", "NONE"] {
        let token = format!("{}.{}.", b64(&json!({"alg": alg})), b64(&claims));
        assert_eq!(verify_err(&f, &token).await, TokenProblem::Invalid);
        // With a (meaningless) signature segment it is JWT-shaped and fails the chain.
        let token = format!("{token}AAAA");
        assert_eq!(verify_err(&f, &token).await, TokenProblem::Invalid);
        assert_eq!(
            auth_body(&f, &token).await,
            invalid_body("Token is invalid")
        );
    }
}

#[tokio::test]
async fn other_algorithms_are_rejected() {
    let f = hs256().await;
    let claims = access_claims(&f.alice.id.to_string());
    // Correctly HMAC-signed, but the header says HS512 / RS256.
    for alg in ["HS512", "HS384", "RS256", "hs256"] {
        let token = hs_token(json!({"alg": alg}), claims.clone(), SECRET.as_bytes());
        assert_eq!(verify_err(&f, &token).await, TokenProblem::Invalid, "{alg}");
    }
}

#[tokio::test]
async fn algorithm_confusion_is_rejected() {
    for algorithm in [
        JwtAlgorithm::EdDSA,
        JwtAlgorithm::RS256,
        JwtAlgorithm::ES256,
    ] {
        let f = fixture_with(JwtSettings {
            algorithm,
            ..JwtSettings::default()
        })
        .await;
        let jwks = f.service.jwks();
        let jwk = &jwks["keys"][0];
        let kid = jwk["kid"].as_str().unwrap();
        // HMAC keyed with the public key, as an attacker who read the JWKS would try.
        let public_material = [
            jwk.to_string().into_bytes(),
            jwk["x"].as_str().unwrap_or("").as_bytes().to_vec(),
            jwk["n"].as_str().unwrap_or("").as_bytes().to_vec(),
        ];
        for secret in public_material {
            let token = hs_token(
                json!({"alg": "HS256", "kid": kid}),
                access_claims(&f.alice.id.to_string()),
                &secret,
            );
            assert_eq!(verify_err(&f, &token).await, TokenProblem::Invalid);
        }
        // A genuine token of this deployment works.
        let pair = f.service.issue_pair(&f.alice).await.unwrap();
        f.service.verify(&pair.access).await.unwrap();
    }
}

#[tokio::test]
async fn unknown_kid_is_rejected() {
    let f = hs256().await;
    let token = hs_token(
        json!({"alg": "HS256", "kid": "no-such-key"}),
        access_claims(&f.alice.id.to_string()),
        SECRET.as_bytes(),
    );
    assert_eq!(verify_err(&f, &token).await, TokenProblem::Invalid);
    let token = hs_token(
        json!({"alg": "HS256", "kid": 7}),
        access_claims(&f.alice.id.to_string()),
        SECRET.as_bytes(),
    );
    assert_eq!(verify_err(&f, &token).await, TokenProblem::Invalid);
}

#[tokio::test]
async fn key_supplying_headers_are_rejected() {
    let f = hs256().await;
    let claims = access_claims(&f.alice.id.to_string());
    for (name, value) in [
        ("jwk", json!({"kty": "oct", "k": "c2VjcmV0"})),
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
    ] {
        let mut h = header();
        h[name] = value;
        let token = hs_token(h, claims.clone(), SECRET.as_bytes());
        assert_eq!(
            verify_err(&f, &token).await,
            TokenProblem::Invalid,
            "{name}"
        );
    }
}

#[tokio::test]
async fn bad_base64_is_rejected() {
    let f = hs256().await;
    let good = hs_token(
        header(),
        access_claims(&f.alice.id.to_string()),
        SECRET.as_bytes(),
    );
    let parts: Vec<&str> = good.split('.').collect();
    // Impossible length (4n+1), padding, non-alphabet characters.
    for token in [
        format!("{}.{}A.{}", parts[0], parts[1], parts[2]),
        format!("A{}.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}==.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1].replace('e', "+"), parts[2]),
        format!("{}.{}.{}!", parts[0], parts[1], parts[2]),
    ] {
        assert_eq!(
            verify_err(&f, &token).await,
            TokenProblem::Invalid,
            "{token}"
        );
    }
    // On a request: a value outside the base64url alphabet is not JWT-shaped: abstain.
    let token = format!("{}.{}==.{}", parts[0], parts[1], parts[2]);
    assert!(matches!(
        auth(&f, &format!("Bearer {token}")).await,
        Outcome::Abstain
    ));
    // JWT-shaped but undecodable: 401.
    let token = format!("A{}.{}.{}", parts[0], parts[1], parts[2]);
    assert_eq!(
        auth_body(&f, &token).await,
        invalid_body("Token is invalid")
    );
    // Decodes, but not JSON.
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode("nope"),
        parts[1],
        parts[2]
    );
    assert_eq!(
        auth_body(&f, &token).await,
        invalid_body("Token is invalid")
    );
}

#[tokio::test]
async fn wrong_segment_counts_are_rejected() {
    let f = hs256().await;
    let good = hs_token(
        header(),
        access_claims(&f.alice.id.to_string()),
        SECRET.as_bytes(),
    );
    let parts: Vec<&str> = good.split('.').collect();
    let two = format!("{}.{}", parts[0], parts[1]);
    let four = format!("{good}.{}", parts[2]);
    for token in [&two, &four, &String::new(), &"...".to_owned()] {
        assert_eq!(verify_err(&f, token).await, TokenProblem::Invalid);
        assert!(matches!(
            auth(&f, &format!("Bearer {token}")).await,
            Outcome::Abstain
        ));
    }
}

#[tokio::test]
async fn opaque_bearer_values_and_other_schemes_abstain() {
    let f = hs256().await;
    for value in [
        "Bearer rg_opaqueOAuth2TokenValue",
        "Bearer",
        "Bearer a.b.c d.e.f",
        "bearer a.b.c",
        "Token a.b.c",
        "Basic YTpi",
    ] {
        assert!(matches!(auth(&f, value).await, Outcome::Abstain), "{value}");
    }
}

#[tokio::test]
async fn time_claims_are_enforced() {
    let f = hs256().await;
    let id = f.alice.id.to_string();
    let sign = |c: Value| hs_token(header(), c, SECRET.as_bytes());
    let expired = sign(with(access_claims(&id), "exp", json!(now() - 1)));
    assert_eq!(verify_err(&f, &expired).await, TokenProblem::Expired);
    assert_eq!(
        auth_body(&f, &expired).await,
        invalid_body("Token is expired")
    );
    let at_now = sign(with(access_claims(&id), "exp", json!(now())));
    assert_eq!(verify_err(&f, &at_now).await, TokenProblem::Expired);
    let not_yet = sign(with(access_claims(&id), "nbf", json!(now() + 60)));
    assert_eq!(verify_err(&f, &not_yet).await, TokenProblem::Invalid);
    let future_iat = sign(with(access_claims(&id), "iat", json!(now() + 60)));
    assert_eq!(verify_err(&f, &future_iat).await, TokenProblem::Invalid);
    assert_eq!(
        auth_body(&f, &future_iat).await,
        invalid_body("Token is invalid")
    );
    // Fractional NumericDates are fine.
    let fractional = sign(with(
        access_claims(&id),
        "iat",
        json!((now() - 5) as f64 + 0.5),
    ));
    f.service.verify(&fractional).await.unwrap();
}

#[tokio::test]
async fn leeway_allows_small_skew() {
    let f = fixture_with(JwtSettings {
        signing_key: Some(SecretString::new(SECRET)),
        leeway: Duration::from_secs(30),
        ..JwtSettings::default()
    })
    .await;
    let id = f.alice.id.to_string();
    let sign = |c: Value| hs_token(header(), c, SECRET.as_bytes());
    f.service
        .verify(&sign(with(access_claims(&id), "exp", json!(now() - 10))))
        .await
        .unwrap();
    f.service
        .verify(&sign(with(access_claims(&id), "iat", json!(now() + 10))))
        .await
        .unwrap();
    assert_eq!(
        verify_err(
            &f,
            &sign(with(access_claims(&id), "exp", json!(now() - 60)))
        )
        .await,
        TokenProblem::Expired
    );
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_rejected() {
    let f = fixture_with(JwtSettings {
        signing_key: Some(SecretString::new(SECRET)),
        issuer: Some("https://issuer.example".into()),
        audience: Some("api".into()),
        ..JwtSettings::default()
    })
    .await;
    let id = f.alice.id.to_string();
    let base = with(
        with(access_claims(&id), "iss", json!("https://issuer.example")),
        "aud",
        json!("api"),
    );
    let sign = |c: Value| hs_token(header(), c, SECRET.as_bytes());
    f.service.verify(&sign(base.clone())).await.unwrap();
    f.service
        .verify(&sign(with(base.clone(), "aud", json!(["other", "api"]))))
        .await
        .unwrap();
    for bad in [
        with(base.clone(), "iss", json!("https://evil.example")),
        without(base.clone(), "iss"),
        with(base.clone(), "iss", json!(["https://issuer.example"])),
        with(base.clone(), "aud", json!("other")),
        with(base.clone(), "aud", json!(["other"])),
        without(base.clone(), "aud"),
    ] {
        assert_eq!(verify_err(&f, &sign(bad)).await, TokenProblem::Invalid);
    }
    // Our own tokens carry both.
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    f.service.verify(&pair.access).await.unwrap();
    f.service.refresh(&pair.refresh).await.unwrap();

    // Without a configured audience, a token for some audience is refused.
    let plain = hs256().await;
    let token = sign(with(
        access_claims(&plain.alice.id.to_string()),
        "aud",
        json!("x"),
    ));
    assert_eq!(verify_err(&plain, &token).await, TokenProblem::Invalid);
}

#[tokio::test]
async fn missing_claims_are_rejected() {
    let f = hs256().await;
    let id = f.alice.id.to_string();
    let sign = |c: Value| hs_token(header(), c, SECRET.as_bytes());
    let no_exp = sign(without(access_claims(&id), "exp"));
    assert_eq!(verify_err(&f, &no_exp).await, TokenProblem::NoExp);
    assert_eq!(
        auth_body(&f, &no_exp).await,
        invalid_body("Token has no 'exp' claim")
    );
    let no_jti = sign(without(access_claims(&id), "jti"));
    assert_eq!(verify_err(&f, &no_jti).await, TokenProblem::NoId);
    assert_eq!(
        auth_body(&f, &no_jti).await,
        invalid_body("Token has no id")
    );
    let no_type = sign(without(access_claims(&id), "token_type"));
    assert_eq!(verify_err(&f, &no_type).await, TokenProblem::NoType);
    assert_eq!(
        auth_body(&f, &no_type).await,
        invalid_body("Token has no type")
    );
    let no_iat = sign(without(access_claims(&id), "iat"));
    assert_eq!(verify_err(&f, &no_iat).await, TokenProblem::Invalid);
    let no_user = sign(without(access_claims(&id), "user_id"));
    assert_eq!(
        auth_body(&f, &no_user).await,
        json!({"detail": "Token contained no recognizable user identification", "code": "token_not_valid"})
    );
}

#[tokio::test]
async fn wrongly_typed_claims_are_rejected() {
    let f = hs256().await;
    let id = f.alice.id.to_string();
    let sign = |c: Value| hs_token(header(), c, SECRET.as_bytes());
    for (claim, value) in [
        ("exp", json!((now() + 300).to_string())),
        ("exp", json!(null)),
        ("exp", json!([now() + 300])),
        ("iat", json!("yesterday")),
        ("nbf", json!("0")),
        ("jti", json!(12345)),
        ("token_type", json!(["access"])),
        ("user_id", json!({"id": 1})),
        ("user_id", json!(1.5)),
        ("exp", json!(1e300)),
    ] {
        let token = sign(with(access_claims(&id), claim, value.clone()));
        assert_eq!(
            verify_err(&f, &token).await,
            TokenProblem::Invalid,
            "{claim}={value}"
        );
        assert_eq!(
            auth_body(&f, &token).await,
            invalid_body("Token is invalid")
        );
    }
    // Claims that are not a JSON object at all.
    let token = format!("{}.{}.", b64(&header()), URL_SAFE_NO_PAD.encode("[1,2,3]"));
    let message = token.trim_end_matches('.');
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    assert_eq!(
        verify_err(&f, &format!("{message}.{sig}")).await,
        TokenProblem::Invalid
    );
}

#[tokio::test]
async fn refresh_and_access_tokens_are_not_interchangeable() {
    let f = hs256().await;
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    // Refresh token on a request.
    assert_eq!(
        auth_body(&f, &pair.refresh).await,
        invalid_body("Token has wrong type")
    );
    // Access token where a refresh token is expected.
    assert!(matches!(
        f.service.refresh(&pair.access).await,
        Err(JwtError::Token(TokenProblem::WrongType))
    ));
    assert!(matches!(
        f.service.blacklist(&pair.access).await,
        Err(JwtError::Token(TokenProblem::WrongType))
    ));
    // Unknown types.
    let token = hs_token(
        header(),
        with(
            access_claims(&f.alice.id.to_string()),
            "token_type",
            json!("id"),
        ),
        SECRET.as_bytes(),
    );
    assert_eq!(verify_err(&f, &token).await, TokenProblem::WrongType);
}

#[tokio::test]
async fn oversized_tokens_are_rejected_before_decoding() {
    let f = hs256().await;
    let padding = "A".repeat(MAX_TOKEN_BYTES);
    let token = format!("eyJhbGciOiJIUzI1NiJ9.{padding}.sig");
    assert_eq!(verify_err(&f, &token).await, TokenProblem::Invalid);
    assert_eq!(
        auth_body(&f, &token).await,
        invalid_body("Token is invalid")
    );
    // Not even valid base64 in there: nothing is decoded before the size check.
    let token = format!("x.{}A.y", "A".repeat(MAX_TOKEN_BYTES));
    assert_eq!(verify_err(&f, &token).await, TokenProblem::Invalid);
}

#[tokio::test]
async fn blacklisted_tokens_are_rejected() {
    let f = hs256().await;
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    f.service.verify(&pair.refresh).await.unwrap();
    f.service.blacklist(&pair.refresh).await.unwrap();
    let blacklisted =
        |r: Result<_, JwtError>| matches!(r, Err(JwtError::Token(TokenProblem::Blacklisted)));
    assert!(blacklisted(f.service.blacklist(&pair.refresh).await));
    assert!(blacklisted(f.service.verify(&pair.refresh).await));
    assert!(blacklisted(
        f.service.refresh(&pair.refresh).await.map(|_| ())
    ));
    let e = f.service.blacklist(&pair.refresh).await.unwrap_err();
    assert_eq!(
        Value::from(e.endpoint_rejection().unwrap().detail.as_ref()),
        json!("Token is blacklisted")
    );
}

#[tokio::test]
async fn rotation_kills_the_old_token_and_reuse_revokes_the_family() {
    let f = hs256().await;
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    let first = f.service.refresh(&pair.refresh).await.unwrap();
    let r1 = first.refresh.clone().expect("rotation is on");
    f.service.verify(&first.access).await.unwrap();
    let second = f.service.refresh(&r1).await.unwrap();
    let r2 = second.refresh.expect("rotation is on");
    // Replaying the first rotated token: refused, and the live descendant dies too.
    assert!(matches!(
        f.service.refresh(&pair.refresh).await,
        Err(JwtError::Token(TokenProblem::Blacklisted))
    ));
    assert!(matches!(
        f.service.refresh(&r2).await,
        Err(JwtError::Token(TokenProblem::Blacklisted))
    ));
    assert!(matches!(
        f.service.verify(&r2).await,
        Err(JwtError::Token(TokenProblem::Blacklisted))
    ));
    // Another login's family is untouched.
    let other = f.service.issue_pair(&f.alice).await.unwrap();
    f.service.refresh(&other.refresh).await.unwrap();
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_exactly_one_wins() {
    let f = hs256().await;
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let service = f.service.clone();
            let token = pair.refresh.clone();
            tokio::spawn(async move { service.refresh(&token).await.is_ok() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn rotation_off_returns_access_only() {
    let f = fixture_with(JwtSettings {
        signing_key: Some(SecretString::new(SECRET)),
        rotate_refresh_tokens: false,
        ..JwtSettings::default()
    })
    .await;
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    for _ in 0..3 {
        let r = f.service.refresh(&pair.refresh).await.unwrap();
        assert!(r.refresh.is_none());
    }
    // Without blacklisting after rotation, the old refresh token lives on.
    let f = fixture_with(JwtSettings {
        signing_key: Some(SecretString::new(SECRET)),
        blacklist_after_rotation: false,
        ..JwtSettings::default()
    })
    .await;
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    assert!(f
        .service
        .refresh(&pair.refresh)
        .await
        .unwrap()
        .refresh
        .is_some());
    assert!(f
        .service
        .refresh(&pair.refresh)
        .await
        .unwrap()
        .refresh
        .is_some());
}

#[tokio::test]
async fn account_changes_cut_tokens_off() {
    let f = fixture_with(JwtSettings {
        signing_key: Some(SecretString::new(SECRET)),
        user_cache_ttl: Duration::ZERO,
        ..JwtSettings::default()
    })
    .await;
    let users = &f.stores.users;
    let bob = users.create_user(NewUser::new("bob")).await.unwrap();
    let carol = users.create_user(NewUser::new("carol")).await.unwrap();

    // Password change.
    let pair = f.service.issue_pair(&f.alice).await.unwrap();
    users
        .set_password(f.alice.id, "new", OffsetDateTime::now_utc())
        .await
        .unwrap();
    let body =
        json!({"detail": "The user's password has been changed.", "code": "password_changed"});
    assert_eq!(auth_body(&f, &pair.access).await, body);
    assert!(matches!(
        f.service.refresh(&pair.refresh).await,
        Err(JwtError::PasswordChanged)
    ));
    // A token issued right after the change (even in the same second) is valid.
    let alice = users.user_by_id(f.alice.id).await.unwrap().unwrap();
    let fresh = f.service.issue_pair(&alice).await.unwrap();
    assert!(matches!(
        auth(&f, &format!("Bearer {}", fresh.access)).await,
        Outcome::Authenticated(_)
    ));

    // Deactivation.
    let pair = f.service.issue_pair(&bob).await.unwrap();
    users
        .set_active(bob.id, false, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        auth_body(&f, &pair.access).await,
        json!({"detail": "User is inactive", "code": "user_inactive"})
    );
    assert!(matches!(
        f.service.refresh(&pair.refresh).await,
        Err(JwtError::UserInactive)
    ));

    // Deletion.
    let pair = f.service.issue_pair(&carol).await.unwrap();
    users.delete_user(carol.id).await.unwrap();
    assert_eq!(
        auth_body(&f, &pair.access).await,
        json!({"detail": "User not found", "code": "user_not_found"})
    );
    assert!(matches!(
        f.service.refresh(&pair.refresh).await,
        Err(JwtError::UserNotFound)
    ));
}

#[tokio::test]
async fn users_are_cached_on_the_hot_path() {
    let f = hs256().await;
    let token = f.service.access_token(&f.alice).await.unwrap();
    assert!(matches!(
        auth(&f, &format!("Bearer {token}")).await,
        Outcome::Authenticated(_)
    ));
    // Deleted behind the service's back: the cache still answers within its lifetime…
    f.store.delete_user(f.alice.id).await.unwrap();
    assert!(matches!(
        auth(&f, &format!("Bearer {token}")).await,
        Outcome::Authenticated(_)
    ));
    // …and forgetting the user makes the change visible at once.
    f.service.forget_user(f.alice.id);
    assert!(matches!(
        auth(&f, &format!("Bearer {token}")).await,
        Outcome::Failed(_)
    ));
}

#[tokio::test]
async fn stateless_mode_needs_no_user() {
    let f = fixture_with(JwtSettings {
        signing_key: Some(SecretString::new(SECRET)),
        stateless: true,
        ..JwtSettings::default()
    })
    .await;
    let token = hs_token(
        header(),
        with(
            with(access_claims("4242"), "username", json!("remote")),
            "is_staff",
            json!(true),
        ),
        SECRET.as_bytes(),
    );
    match auth(&f, &format!("Bearer {token}")).await {
        Outcome::Authenticated(id) => {
            assert_eq!(id.user().expect("a user").id.0, 4242);
            assert_eq!(id.user().expect("a user").username, "remote");
            assert!(id.user().expect("a user").is_staff);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sliding_tokens_follow_simple_jwt() {
    let f = hs256().await;
    let sliding = f.service.issue_sliding(&f.alice).await.unwrap();
    assert!(matches!(
        auth(&f, &format!("Bearer {sliding}")).await,
        Outcome::Authenticated(_)
    ));
    let refreshed = f.service.refresh_sliding(&sliding).await.unwrap();
    let claims = |t: &str| -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let (old, new) = (claims(&sliding), claims(&refreshed));
    assert_eq!(old["jti"], new["jti"]);
    assert_eq!(old["refresh_exp"], new["refresh_exp"]);
    assert_eq!(new["token_type"], "sliding");
    // Not a refresh token.
    assert!(f.service.refresh(&sliding).await.is_err());
    // refresh_exp passed: cannot slide any more.
    let stale = hs_token(
        header(),
        json!({"token_type": "sliding", "exp": now() + 60, "iat": now() - 10,
               "jti": "abc", "user_id": f.alice.id.to_string(), "refresh_exp": now() - 1}),
        SECRET.as_bytes(),
    );
    assert!(matches!(
        f.service.refresh_sliding(&stale).await,
        Err(JwtError::Token(TokenProblem::Expired))
    ));
    // Blacklisted sliding tokens stop working on requests.
    f.service.blacklist_sliding(&refreshed).await.unwrap();
    let body = auth_body(&f, &refreshed).await;
    assert_eq!(body["messages"][0]["token_class"], "SlidingToken");
    assert_eq!(body["messages"][0]["message"], "Token is blacklisted");
}

#[tokio::test]
async fn hs_jwks_is_empty_and_asymmetric_jwks_lists_public_keys() {
    let f = hs256().await;
    assert_eq!(f.service.jwks(), json!({"keys": []}));
    let f = fixture_with(JwtSettings {
        algorithm: JwtAlgorithm::EdDSA,
        ..JwtSettings::default()
    })
    .await;
    let jwks = f.service.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none(), "never the private key");
    assert_eq!(keys[0]["kid"], json!(f.service.signing_kid()));
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
    let f = fixture_with(JwtSettings {
        algorithm: JwtAlgorithm::ES256,
        ..JwtSettings::default()
    })
    .await;
    let old_kid = f.service.signing_kid();
    let old = f.service.issue_pair(&f.alice).await.unwrap();
    let new_key = rotate_signing_key(f.stores.signing_keys.as_ref(), JwtAlgorithm::ES256)
        .await
        .unwrap();
    f.service.reload_keys().await.unwrap();
    assert_eq!(f.service.signing_kid(), new_key.kid);
    assert_ne!(new_key.kid, old_kid);
    assert_eq!(f.service.jwks()["keys"].as_array().unwrap().len(), 2);
    f.service.verify(&old.access).await.unwrap();
    let fresh = f.service.refresh(&old.refresh).await.unwrap();
    f.service.verify(&fresh.access).await.unwrap();
    // A second service (another instance) started later shares the keys.
    let other = JwtService::from_stores(
        &f.stores,
        JwtSettings {
            algorithm: JwtAlgorithm::ES256,
            ..JwtSettings::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(other.signing_kid(), new_key.kid);
    other.verify(&old.access).await.unwrap();
}

#[tokio::test]
async fn unknown_kid_from_another_instances_rotation_is_picked_up() {
    let f = fixture_with(JwtSettings {
        algorithm: JwtAlgorithm::EdDSA,
        ..JwtSettings::default()
    })
    .await;
    let other = JwtService::from_stores(
        &f.stores,
        JwtSettings {
            algorithm: JwtAlgorithm::EdDSA,
            ..JwtSettings::default()
        },
    )
    .await
    .unwrap();
    rotate_signing_key(f.stores.signing_keys.as_ref(), JwtAlgorithm::EdDSA)
        .await
        .unwrap();
    other.reload_keys().await.unwrap();
    let token = other.access_token(&f.alice).await.unwrap();
    // `f` has not reloaded; the unknown kid makes it look.
    f.service.verify(&token).await.unwrap();
}

/// Polls `probe` every 20 ms for at most `limit`.
async fn eventually(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if probe() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probe()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_purge_by_another_process_are_picked_up_without_reload_calls() {
    let f = fixture_with(JwtSettings {
        algorithm: JwtAlgorithm::EdDSA,
        ..JwtSettings::default()
    })
    .await;
    let old_kid = f.service.signing_kid();
    let old = f.service.access_token(&f.alice).await.unwrap();
    // Verified once: now in the verified-token cache.
    f.service.authenticate(&old).await.unwrap();
    // Another process rotates: this service signs with the new key on its own.
    let new_key = rotate_signing_key(f.stores.signing_keys.as_ref(), JwtAlgorithm::EdDSA)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || f.service.signing_kid()
            == new_key.kid)
        .await,
        "the background poll did not pick up the new key"
    );
    assert_ne!(old_kid, new_key.kid);
    // The retired key still verifies (its tokens are alive), cached or not.
    f.service.authenticate(&old).await.unwrap();
    f.service.verify(&old).await.unwrap();
    assert_eq!(f.service.jwks()["keys"].as_array().unwrap().len(), 2);
    // Purged (`restguard keys purge-retired`): refused, although it was cached as verified.
    f.stores
        .signing_keys
        .delete_retired_signing_keys(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || f.service.jwks()["keys"]
            .as_array()
            .is_some_and(|k| k.len() == 1))
        .await,
        "the background poll did not drop the purged key"
    );
    let (token_type, error) = f.service.authenticate(&old).await.unwrap_err();
    assert_eq!(token_type, TokenType::Access);
    assert!(
        matches!(error, JwtError::Token(TokenProblem::Invalid)),
        "{error:?}"
    );
    // Tokens of the new key keep working.
    let fresh = f.service.access_token(&f.alice).await.unwrap();
    f.service.authenticate(&fresh).await.unwrap();
}

#[tokio::test]
async fn configured_keys_are_validated() {
    assert!(configured_key(JwtAlgorithm::HS256, "short").is_err());
    assert!(configured_key(JwtAlgorithm::HS512, SECRET).is_err());
    assert!(configured_key(JwtAlgorithm::RS256, "not a pem").is_err());
    let generated = generate_key_blocking(JwtAlgorithm::EdDSA, OffsetDateTime::now_utc()).unwrap();
    let pem = String::from_utf8(generated.private_key.clone()).unwrap();
    let configured = configured_key(JwtAlgorithm::EdDSA, &pem).unwrap();
    assert_eq!(configured.kid, generated.kid, "kid is the key's thumbprint");
    assert_eq!(configured.public_jwk, generated.public_jwk);
}

#[tokio::test]
async fn errors_map_to_the_contract() {
    let e = JwtError::Token(TokenProblem::Invalid);
    let r = e.endpoint_rejection().unwrap();
    assert_eq!(r.detail, "Token is invalid");
    assert_eq!(r.code, "token_not_valid");
    assert!(r.extra.is_none());
    let d = Denial::new(
        AuthError::from(e.auth_rejection(TokenType::Access).unwrap()),
        None,
    );
    assert_eq!(d.body(), invalid_body("Token is invalid"));
    assert!(JwtError::Store(restguard_core::StoreError::backend("x"))
        .endpoint_rejection()
        .is_none());
}
