//! Scheme suite: Basic and Token authenticators against a real store (memory and SQLite),
//! driven through `RequestContext` as the chain drives them.

#![allow(clippy::unwrap_used)] // test helpers

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use restguard::{
    basic::Basic,
    password::{HasherConfig, PasswordAuth, PasswordHasher},
    token::{TokenAuth, TokenService},
};
use restguard_core::{
    secret::SecretString,
    store::{NewUser, Stores},
    AuthError, Authenticator, Outcome, RequestContext, Scheme, User,
};
use restguard_store::{memory::MemoryStore, sqlite::SqliteStore};
use time::OffsetDateTime;

struct Fixture {
    stores: Stores,
    passwords: PasswordAuth,
    tokens: TokenService,
    alice: User,
    _dir: Option<tempfile::TempDir>,
}

async fn fixture(sqlite: bool) -> Fixture {
    let (stores, dir) = if sqlite {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        (Stores::from_backend(Arc::new(store)), Some(dir))
    } else {
        (Stores::from_backend(Arc::new(MemoryStore::new())), None)
    };
    let hasher = PasswordHasher::new(HasherConfig {
        memory_kib: 1024,
        iterations: 1,
        ..HasherConfig::default()
    });
    let passwords = PasswordAuth::new(stores.users.clone(), hasher.clone());
    let hash = hasher.hash(&SecretString::new("p:w é")).await.unwrap();
    let alice = stores
        .users
        .create_user(NewUser {
            password_hash: Some(hash),
            ..NewUser::new("alice")
        })
        .await
        .unwrap();
    // No cache, so every check sees the store.
    let tokens = TokenService::new(
        stores.tokens.clone(),
        restguard::digest::SecretDigester::from_store(stores.secrets.as_ref())
            .await
            .unwrap(),
        Duration::ZERO,
    );
    Fixture {
        stores,
        passwords,
        tokens,
        alice,
        _dir: dir,
    }
}

async fn run(auth: &dyn Authenticator, header: Option<&[u8]>) -> Result<Outcome, String> {
    let mut builder = http::Request::builder();
    if let Some(h) = header {
        builder = builder.header("authorization", http::HeaderValue::from_bytes(h).unwrap());
    }
    let (parts, _) = builder.body(()).unwrap().into_parts();
    let ctx = RequestContext::new(&parts, None).map_err(|e| e.to_string())?;
    auth.authenticate(&ctx).await.map_err(|e| e.to_string())
}

fn detail(outcome: Outcome) -> String {
    match outcome {
        Outcome::Failed(AuthError::AuthenticationFailed(r)) => r.detail.into_owned(),
        Outcome::Abstain => "abstain".into(),
        Outcome::Authenticated(i) => format!(
            "ok:{}:{}",
            i.user().expect("a user").username,
            i.auth.scheme
        ),
        Outcome::Failed(other) => format!("other:{other}"),
    }
}

fn basic(user_pass: &str) -> Vec<u8> {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
    .into_bytes()
}

async fn basic_suite(sqlite: bool) {
    let f = fixture(sqlite).await;
    let b = Basic::new(f.passwords.clone());
    assert_eq!(b.challenge().unwrap(), "Basic realm=\"api\"");
    let cases: Vec<(Option<Vec<u8>>, &str)> = vec![
        (None, "abstain"),
        (Some(b"Token abc".to_vec()), "abstain"),
        (
            Some(b"Basic".to_vec()),
            "Invalid basic header. No credentials provided.",
        ),
        (
            Some(b"Basic a b".to_vec()),
            "Invalid basic header. Credentials string should not contain spaces.",
        ),
        (
            Some(b"Basic !!!!".to_vec()),
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
        (
            Some(basic("nocolon")),
            "Invalid basic header. Credentials not correctly base64 encoded.",
        ),
        (Some(basic("alice:wrong")), "Invalid username/password."),
        (Some(basic("bob:p:w é")), "Invalid username/password."),
        (Some(basic("alice:p:w é")), "ok:alice:basic"),
    ];
    for (header, expected) in cases {
        let got = detail(run(&b, header.as_deref()).await.unwrap());
        assert_eq!(
            got,
            expected,
            "header {:?}",
            header.as_deref().map(String::from_utf8_lossy)
        );
    }
    // Case-insensitive scheme word.
    let lower = basic("alice:p:w é");
    let lower = [b"basic".as_slice(), &lower[5..]].concat();
    assert_eq!(
        detail(run(&b, Some(&lower)).await.unwrap()),
        "ok:alice:basic"
    );
    // Inactive users fail like wrong passwords.
    f.stores
        .users
        .set_active(f.alice.id, false, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        detail(run(&b, Some(&basic("alice:p:w é"))).await.unwrap()),
        "Invalid username/password."
    );
}

async fn token_suite(sqlite: bool) {
    let f = fixture(sqlite).await;
    let t = TokenAuth::new(f.tokens.clone());
    assert_eq!(t.challenge().unwrap(), "Token");
    let issued = f.tokens.issue(f.alice.id, "laptop", None).await.unwrap();
    let key = issued.key.expose().to_owned();
    assert!(key.starts_with("rg_") && key.len() <= 100);
    assert_eq!(issued.token.prefix, key[..8]);
    let header = format!("Token {key}");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"Bearer x".to_vec(), "abstain"),
        (
            b"Token".to_vec(),
            "Invalid token header. No credentials provided.",
        ),
        (
            b"Token a b".to_vec(),
            "Invalid token header. Token string should not contain spaces.",
        ),
        (
            b"Token \xc3\xa9t\xc3\xa9".to_vec(),
            "Invalid token header. Token string should not contain invalid characters.",
        ),
        (b"Token unknown".to_vec(), "Invalid token."),
        (header.clone().into_bytes(), "ok:alice:token"),
        (format!("tOkEn {key}").into_bytes(), "ok:alice:token"),
    ];
    for (h, expected) in cases {
        let got = detail(run(&t, Some(&h)).await.unwrap());
        assert_eq!(got, expected, "header {:?}", String::from_utf8_lossy(&h));
    }
    // The credential id is the token id (DRF's request.auth).
    match run(&t, Some(header.as_bytes())).await.unwrap() {
        Outcome::Authenticated(i) => {
            assert_eq!(i.auth.scheme, Scheme::Token);
            assert_eq!(
                i.auth.credential_id.as_deref(),
                Some(issued.token.id.to_string().as_str())
            );
        }
        other => panic!("{other:?}"),
    }
    // Rotation kills the old key at once; the new one works.
    let rotated = f
        .tokens
        .rotate(f.alice.id, issued.token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        detail(run(&t, Some(header.as_bytes())).await.unwrap()),
        "Invalid token."
    );
    let new_header = format!("Token {}", rotated.key.expose());
    assert_eq!(
        detail(run(&t, Some(new_header.as_bytes())).await.unwrap()),
        "ok:alice:token"
    );
    assert_eq!(rotated.token.name, "laptop");
    // Expired keys are invalid.
    let short = f
        .tokens
        .issue(f.alice.id, "", Some(Duration::from_millis(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let short_header = format!("Token {}", short.key.expose());
    assert_eq!(
        detail(run(&t, Some(short_header.as_bytes())).await.unwrap()),
        "Invalid token."
    );
    // Revocation.
    assert!(f.tokens.revoke(f.alice.id, rotated.token.id).await.unwrap());
    assert_eq!(
        detail(run(&t, Some(new_header.as_bytes())).await.unwrap()),
        "Invalid token."
    );
    // Inactive owner (made inactive without revoking, as an import could leave it).
    let kept = f.tokens.issue(f.alice.id, "", None).await.unwrap();
    let stored_tokens = f.stores.tokens.tokens_for_user(f.alice.id).await.unwrap();
    assert!(stored_tokens.iter().any(|t| t.id == kept.token.id));
    f.stores
        .users
        .set_active(f.alice.id, false, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let kept_header = format!("Token {}", kept.key.expose());
    // set_active(false) revokes tokens in the store: the key is now simply invalid.
    assert_eq!(
        detail(run(&t, Some(kept_header.as_bytes())).await.unwrap()),
        "Invalid token."
    );
}

#[tokio::test]
async fn basic_on_memory() {
    basic_suite(false).await;
}

#[tokio::test]
async fn basic_on_sqlite() {
    basic_suite(true).await;
}

#[tokio::test]
async fn token_on_memory() {
    token_suite(false).await;
}

#[tokio::test]
async fn token_on_sqlite() {
    token_suite(true).await;
}

#[tokio::test]
async fn django_hash_is_upgraded_on_login() {
    let f = fixture(true).await;
    // Django's format for make_password("pw-alice-123", "saltsaltsalt") with 1000 iterations.
    let django = "pbkdf2_sha256$1000$saltsaltsalt$G+rnjOkE7udFOcR8MOKivpx1DKhuW+veZXlu0ktMAcs=";
    let bob = f
        .stores
        .users
        .create_user(NewUser {
            password_hash: Some(django.into()),
            ..NewUser::new("bob")
        })
        .await
        .unwrap();
    let user = f
        .passwords
        .authenticate("bob", &SecretString::new("pw-alice-123"))
        .await
        .unwrap();
    assert_eq!(user.map(|u| u.id), Some(bob.id));
    let (_, stored) = f.stores.users.credentials("bob").await.unwrap().unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    // Still valid after the upgrade.
    assert!(f
        .passwords
        .authenticate("bob", &SecretString::new("pw-alice-123"))
        .await
        .unwrap()
        .is_some());
}
