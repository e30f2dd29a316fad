//! The provider and the bearer authenticator on the in-memory store, without HTTP.

use std::sync::Arc;

use http::HeaderValue;
use restguard::digest::SecretDigester;
use restguard_core::{
    authenticator::{Authenticator, Outcome, RequestContext},
    store::{ClientType, NewApplication, NewUser, Stores},
    Scheme,
};
use restguard_oauth2::{OAuth2Bearer, OAuthSettings, Provider};
use restguard_store::memory::MemoryStore;
use serde_json::Value;
use time::OffsetDateTime;

const FORM: &str = "application/x-www-form-urlencoded";

async fn setup() -> (Stores, Provider, String, String) {
    let stores = Stores::from_backend(Arc::new(MemoryStore::new()));
    let digester = SecretDigester::new([9; 32]);
    let provider = Provider::new(&stores, digester.clone(), None, OAuthSettings::default())
        .await
        .expect("provider");
    let secret = "rgcs_test-secret".to_owned();
    let app = stores
        .oauth
        .create_application(NewApplication {
            client_id: "svc".into(),
            name: "Service".into(),
            client_type: ClientType::Confidential,
            secret_digest: Some(digester.digest(&secret)),
            grant_types: vec!["client_credentials".into()],
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            allowed_scopes: vec!["read".into(), "write".into()],
            skip_authorization: false,
            algorithm: "RS256".into(),
            owner: None,
            created: OffsetDateTime::now_utc(),
        })
        .await
        .expect("app");
    (stores, provider, app.client_id, secret)
}

async fn token(provider: &Provider, body: &str) -> (u16, Value, http::HeaderMap) {
    let response = provider
        .token_endpoint(
            Some(&HeaderValue::from_static(FORM)),
            None,
            body.as_bytes(),
            None,
        )
        .await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (status, json, headers)
}

#[tokio::test]
async fn client_credentials_then_bearer_and_revocation() {
    let (_stores, provider, id, secret) = setup().await;
    let (status, body, headers) = token(
        &provider,
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=write"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["scope"], "write");
    let access = body["access_token"].as_str().expect("token").to_owned();

    let (status, body, _) = token(
        &provider,
        &format!("grant_type=client_credentials&client_id={id}&client_secret=nope"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body, _) = token(
        &provider,
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=admin"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    // The bearer authenticator: a client-credentials token speaks for its client, no user.
    let bearer = OAuth2Bearer::new(provider.clone());
    assert_eq!(bearer.scheme(), Scheme::OAuth2);
    let outcome = authenticate(&bearer, &format!("Bearer {access}")).await;
    let Outcome::Authenticated(identity) = outcome else {
        panic!("a client principal: {outcome:?}");
    };
    assert!(identity.user().is_none());
    assert_eq!(identity.client_id(), Some(id.as_str()));
    assert_eq!(
        identity.auth.scopes.as_deref(),
        Some(&["write".to_owned()][..])
    );
    // Not ours: abstain (a JWT, another scheme, another prefix).
    for header in [
        "Bearer eyJhbGciOi.eyJzdWIiOiIxIn0.c2ln",
        "Token rg_abc",
        "Bearer rg_abc",
        "Basic YTpi",
    ] {
        assert!(
            matches!(authenticate(&bearer, header).await, Outcome::Abstain),
            "{header}"
        );
    }
    assert!(matches!(
        authenticate(&bearer, "Bearer rgat_unknown").await,
        Outcome::Failed(_)
    ));

    // Revocation by the owner.
    let response = provider
        .revoke_endpoint(
            Some(&HeaderValue::from_static(FORM)),
            None,
            format!("token={access}&client_id={id}&client_secret={secret}").as_bytes(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(provider
        .check_access_token(&access)
        .await
        .expect("store")
        .is_err());
}

#[tokio::test]
async fn user_tokens_authenticate_with_scopes() {
    let (stores, provider, _, _) = setup().await;
    let alice = stores
        .users
        .create_user(NewUser::new("alice"))
        .await
        .expect("user");
    // A user-bound token, as a code exchange would store it.
    let digester = provider.digester().clone();
    let token = "rgat_user-token-for-alice-0123456789abcdefghijkl";
    let app = stores
        .oauth
        .application_by_client_id("svc")
        .await
        .expect("store")
        .expect("app");
    stores
        .oauth
        .create_oauth_tokens(vec![restguard_core::store::NewOAuthToken {
            kind: restguard_core::store::OAuthTokenKind::Access,
            digest: digester.digest(token),
            application: app.id,
            user_id: Some(alice.id),
            scopes: vec!["read".into()],
            family: restguard_core::store::FamilyId("f".into()),
            created: OffsetDateTime::now_utc(),
            expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
        }])
        .await
        .expect("tokens");
    let bearer = OAuth2Bearer::new(provider);
    match authenticate(&bearer, &format!("Bearer {token}")).await {
        Outcome::Authenticated(identity) => {
            assert_eq!(identity.user().expect("a user").username, "alice");
            assert_eq!(identity.auth.scheme, Scheme::OAuth2);
            assert!(identity.auth.has_scope("read") && !identity.auth.has_scope("write"));
        }
        other => panic!("{other:?}"),
    }
}

async fn authenticate(bearer: &OAuth2Bearer, header: &str) -> Outcome {
    let (parts, ()) = http::Request::builder()
        .header("authorization", header)
        .body(())
        .expect("request")
        .into_parts();
    let ctx = RequestContext::new(&parts, None).expect("one header");
    bearer.authenticate(&ctx).await.expect("store")
}

/// Two providers on one store (two instances) joined by one invalidation bus: a revocation
/// through one drops the other's cached check at once, even with a cache lifetime of an hour.
#[tokio::test]
async fn revocations_travel_on_the_invalidation_bus() {
    let (stores, first, id, secret) = setup().await;
    let bus: Arc<dyn restguard_core::invalidation::InvalidationBus> =
        Arc::new(restguard_store::memory::MemoryInvalidationBus::new());
    let settings = OAuthSettings {
        cache_ttl: std::time::Duration::from_secs(3600),
        ..OAuthSettings::default()
    };
    let digester = first.digester().clone();
    let a = Provider::new(&stores, digester.clone(), None, settings.clone())
        .await
        .expect("provider")
        .with_invalidations(bus.clone());
    let b = Provider::new(&stores, digester, None, settings)
        .await
        .expect("provider")
        .with_invalidations(bus);
    let (status, body, _) = token(
        &a,
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().expect("token").to_owned();
    assert!(b.check_access_token(&access).await.expect("store").is_ok());
    let response = a
        .revoke_endpoint(
            Some(&HeaderValue::from_static(FORM)),
            None,
            format!("token={access}&client_id={id}&client_secret={secret}").as_bytes(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(b.check_access_token(&access).await.expect("store").is_err());
}
