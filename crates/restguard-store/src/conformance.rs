//! The conformance suite every backend must pass, written only against the store traits.
//!
//! Each check is a public `async fn` taking a fresh store in an [`Arc`]; the
//! [`conformance_suite!`](crate::conformance_suite) macro turns all of them into
//! `#[tokio::test]`s for one backend:
//!
//! ```text
//! // tests/memory.rs
//! restguard_store::conformance_suite!(async { restguard_store::memory::MemoryStore::new() });
//! ```
//!
//! When each store needs something kept alive for the duration of the test (a temporary
//! directory, a scratch schema), use the `guarded:` form, whose expression yields
//! `(store, guard)`; the guard is dropped after the test:
//!
//! ```text
//! restguard_store::conformance_suite!(guarded: async {
//!     let dir = tempfile::TempDir::new().unwrap();
//!     let store = open_store_in(&dir).await;
//!     (store, dir)
//! });
//! ```
//!
//! The invoking crate needs `tokio` (with the `macros` and `rt-multi-thread` features) as a
//! dependency. Each check returns `Result<(), StoreError>`: a store error fails the test with
//! its `Debug` output, a wrong result fails an assertion.

use std::sync::Arc;

use time::{macros::datetime, Duration, OffsetDateTime};

pub use restguard_core::store::StoreError;
use restguard_core::store::{
    ApplicationId, ApplicationUpdate, AuthorizationCode, ClientType, CodeUse, NewApplication,
    NewOAuthToken, OAuthRefreshUse, OAuthStore, OAuthTokenKind,
};
use restguard_core::store::{NewSession, SessionId, SessionStore};
use restguard_core::{
    identity::UserId,
    store::{
        FamilyId, JwtStore, NewApiToken, NewRefreshToken, NewUser, RefreshUse, SecretDigest,
        SecretStore, SigningKey, SigningKeyStore, StoreHealth, TokenId, TokenStore, UserStore,
        WrappedKey, UNUSABLE_PASSWORD,
    },
};

/// A backend implementing every store trait: what the suite tests.
pub trait Backend:
    UserStore
    + TokenStore
    + SecretStore
    + JwtStore
    + SigningKeyStore
    + SessionStore
    + OAuthStore
    + StoreHealth
{
}

impl<
        T: UserStore
            + TokenStore
            + SecretStore
            + JwtStore
            + SigningKeyStore
            + SessionStore
            + OAuthStore
            + StoreHealth,
    > Backend for T
{
}

/// Expands to one `#[tokio::test]` per conformance check, each on a fresh store.
///
/// * `conformance_suite!(EXPR)`: `EXPR` is a future (typically an `async` block) yielding
///   the store; it is evaluated once per test.
/// * `conformance_suite!(guarded: EXPR)`: `EXPR` yields `(store, guard)`, and `guard` is kept
///   alive until the test ends.
///
/// See the [module docs](crate::conformance).
#[macro_export]
macro_rules! conformance_suite {
    (guarded: $make:expr) => {
        $crate::__conformance_tests! {
            $make;
            user_create_and_get,
            user_duplicate_username_conflicts,
            user_credentials_return_hash,
            set_password_changes_hash_and_revokes_tokens,
            set_password_unknown_user,
            upgrade_password_hash_is_compare_and_set,
            set_active_false_revokes_tokens,
            set_roles_updates_flags,
            delete_user_removes_tokens,
            record_login_sets_last_login,
            list_users_search_limit_offset,
            token_create_and_lookup,
            token_unknown_digest,
            token_duplicate_digest_conflicts,
            tokens_for_user_oldest_first,
            revoke_token_of_other_user,
            revoke_all_tokens_of_user,
            rotate_token_replaces,
            rotate_token_conflict_writes_nothing,
            touch_token_sets_last_used,
            delete_expired_tokens_only_expired,
            secret_or_insert_keeps_first,
            secret_or_insert_concurrent,
            rewrap_keys_all_or_nothing,
            ping_ok,
            timestamps_round_trip_microseconds,
            refresh_create_and_lookup,
            refresh_duplicate_jti_conflicts,
            consume_refresh_once_then_already_used,
            consume_refresh_concurrent_exactly_one,
            extend_family_only_from_live_parent,
            revoke_family_revokes_every_member,
            revoke_family_catches_concurrent_rotations,
            blacklist_jti_once,
            delete_expired_jwt_only_expired,
            delete_user_removes_refresh_tokens,
            signing_keys_first_and_rotate,
            signing_key_duplicate_kid_conflicts,
            delete_retired_signing_keys_only_old,
            session_create_and_lookup,
            session_duplicate_digest_conflicts,
            sessions_for_user_and_delete_one,
            delete_user_sessions_keeps_one,
            touch_session_sets_last_seen,
            delete_expired_sessions_absolute_and_idle,
            delete_user_removes_sessions,
            session_timestamps_compare_with_credentials_change,
            oauth_application_create_lookup_delete,
            oauth_application_update,
            oauth_code_consumed_once,
            oauth_code_consume_concurrent_exactly_one,
            oauth_tokens_lookup_and_revoke,
            oauth_concurrent_grants_fail_alone,
            oauth_rotate_refresh_once,
            oauth_rotate_refresh_concurrent_exactly_one,
            oauth_revoke_family_catches_concurrent_rotations,
            oauth_authorized_applications_and_revoke,
            oauth_delete_expired_and_cascades,
        }
    };
    ($make:expr) => {
        $crate::conformance_suite!(guarded: async { ($make.await, ()) });
    };
}

/// Implementation detail of [`conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> ::std::result::Result<(), $crate::conformance::StoreError> {
                let ::std::option::Option::Some((store, _guard)) =
                    $crate::conformance::MaybeStore::into_store($make.await)
                else {
                    // The backend is not available here (the maker printed why).
                    return ::std::result::Result::Ok(());
                };
                $crate::conformance::$name(::std::sync::Arc::new(store)).await
            }
        )*
    };
}

/// What a `guarded:` maker yields: `(store, guard)`, or `Option<(store, guard)>` where `None`
/// skips the test (a backend service that is not configured on this machine).
pub trait MaybeStore {
    /// The store.
    type Store;
    /// What is kept alive until the test ends.
    type Guard;
    /// The pair, or `None` to skip.
    fn into_store(self) -> Option<(Self::Store, Self::Guard)>;
}

impl<S, G> MaybeStore for (S, G) {
    type Store = S;
    type Guard = G;
    fn into_store(self) -> Option<(S, G)> {
        Some(self)
    }
}

impl<S, G> MaybeStore for Option<(S, G)> {
    type Store = S;
    type Guard = G;
    fn into_store(self) -> Option<(S, G)> {
        self
    }
}

/// A fixed instant with sub-microsecond digits (which stores truncate away).
const T0: OffsetDateTime = datetime!(2024-05-06 07:08:09.123_456 UTC);

fn at(seconds: i64) -> OffsetDateTime {
    T0 + Duration::seconds(seconds)
}

fn digest(n: u8) -> SecretDigest {
    SecretDigest([n; 32])
}

fn new_token(user_id: UserId, n: u8, created: OffsetDateTime) -> NewApiToken {
    NewApiToken {
        user_id,
        name: format!("token {n}"),
        prefix: format!("pre{n:05}"),
        digest: digest(n),
        created,
        expiry: None,
    }
}

fn new_user(username: &str) -> NewUser {
    NewUser {
        date_joined: T0,
        ..NewUser::new(username)
    }
}

/// `create_user` returns the stored user; `user_by_id` and `user_by_username` find it.
pub async fn user_create_and_get<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let mut input = new_user("alice");
    input.email = "alice@example.com".into();
    input.first_name = "Alice".into();
    input.last_name = "Liddell".into();
    input.is_staff = true;
    input.password_hash = Some("pbkdf2_sha256$1$salt$hash".into());
    let created = store.create_user(input).await?;
    assert_eq!(created.username, "alice");
    assert_eq!(created.email, "alice@example.com");
    assert_eq!(created.first_name, "Alice");
    assert_eq!(created.last_name, "Liddell");
    assert!(created.is_active);
    assert!(created.is_staff);
    assert!(!created.is_superuser);
    assert_eq!(created.date_joined, T0);
    assert_eq!(created.last_login, None);

    let by_id = store.user_by_id(created.id).await?;
    assert_eq!(by_id.as_ref(), Some(&created));
    let by_name = store.user_by_username("alice").await?;
    assert_eq!(by_name.as_ref(), Some(&created));

    assert_eq!(
        store.user_by_username("Alice").await?,
        None,
        "case-sensitive"
    );
    assert_eq!(store.user_by_username("bob").await?, None);
    assert_eq!(store.user_by_id(UserId(created.id.0 + 1000)).await?, None);

    let bob = store.create_user(new_user("bob")).await?;
    assert_ne!(bob.id, created.id);
    assert!(bob.id > created.id, "ids increase");
    Ok(())
}

/// A taken username is `Conflict`; usernames are case-sensitive.
pub async fn user_duplicate_username_conflicts<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    store.create_user(new_user("alice")).await?;
    let err = store
        .create_user(new_user("alice"))
        .await
        .expect_err("duplicate username must fail");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    // Like Django, `Alice` is another user.
    store.create_user(new_user("Alice")).await?;
    assert_eq!(store.list_users(None, 100, 0).await?.len(), 2);
    Ok(())
}

/// `credentials` returns the user and the stored hash (`!` when created without one).
pub async fn user_credentials_return_hash<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let mut input = new_user("alice");
    input.password_hash = Some("argon2$hash".into());
    let alice = store.create_user(input).await?;
    let (user, hash) = store.credentials("alice").await?.expect("alice exists");
    assert_eq!(user, alice);
    assert_eq!(hash, "argon2$hash");

    store.create_user(new_user("nopass")).await?;
    let (_, hash) = store.credentials("nopass").await?.expect("nopass exists");
    assert_eq!(hash, UNUSABLE_PASSWORD);

    assert!(store.credentials("nobody").await?.is_none());
    Ok(())
}

/// `set_password` replaces the hash, sets `credentials_changed_at`, and revokes the user's
/// tokens (and no one else's).
pub async fn set_password_changes_hash_and_revokes_tokens<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    store.create_token(new_token(alice.id, 1, at(1))).await?;
    store.create_token(new_token(alice.id, 2, at(2))).await?;
    let bobs = store.create_token(new_token(bob.id, 3, at(3))).await?;

    assert!(store.set_password(alice.id, "new-hash", at(60)).await?);
    let (user, hash) = store.credentials("alice").await?.expect("alice exists");
    assert_eq!(hash, "new-hash");
    assert_eq!(user.credentials_changed_at, at(60));
    assert!(store.tokens_for_user(alice.id).await?.is_empty());
    assert!(store.token_by_digest(&digest(1)).await?.is_none());
    assert_eq!(store.tokens_for_user(bob.id).await?, vec![bobs]);
    let bob_after = store.user_by_id(bob.id).await?.expect("bob exists");
    assert_eq!(bob_after.credentials_changed_at, bob.credentials_changed_at);
    Ok(())
}

/// `set_password` on an unknown user returns false.
pub async fn set_password_unknown_user<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    assert!(
        !store
            .set_password(UserId(alice.id.0 + 1000), "h", at(1))
            .await?
    );
    let (_, hash) = store.credentials("alice").await?.expect("alice exists");
    assert_eq!(hash, UNUSABLE_PASSWORD);
    Ok(())
}

/// `upgrade_password_hash` only replaces a hash that is still `old`, and keeps tokens and
/// `credentials_changed_at`.
pub async fn upgrade_password_hash_is_compare_and_set<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let mut input = new_user("alice");
    input.password_hash = Some("old".into());
    let alice = store.create_user(input).await?;
    store.create_token(new_token(alice.id, 1, at(1))).await?;

    assert!(
        !store
            .upgrade_password_hash(alice.id, "stale", "new")
            .await?
    );
    assert_eq!(store.credentials("alice").await?.expect("exists").1, "old");

    assert!(store.upgrade_password_hash(alice.id, "old", "new").await?);
    let (user, hash) = store.credentials("alice").await?.expect("exists");
    assert_eq!(hash, "new");
    assert_eq!(user.credentials_changed_at, alice.credentials_changed_at);
    assert_eq!(store.tokens_for_user(alice.id).await?.len(), 1);

    // A second upgrade from the same old value loses.
    assert!(
        !store
            .upgrade_password_hash(alice.id, "old", "newer")
            .await?
    );
    assert_eq!(store.credentials("alice").await?.expect("exists").1, "new");
    assert!(
        !store
            .upgrade_password_hash(UserId(alice.id.0 + 1000), "old", "new")
            .await?
    );
    Ok(())
}

/// Deactivation sets `credentials_changed_at` and revokes the user's tokens; reactivation
/// leaves `credentials_changed_at` alone.
pub async fn set_active_false_revokes_tokens<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    store.create_token(new_token(alice.id, 1, at(1))).await?;
    store.create_token(new_token(bob.id, 2, at(2))).await?;

    assert!(store.set_active(alice.id, false, at(30)).await?);
    let user = store.user_by_id(alice.id).await?.expect("exists");
    assert!(!user.is_active);
    assert_eq!(user.credentials_changed_at, at(30));
    assert!(store.tokens_for_user(alice.id).await?.is_empty());
    assert_eq!(store.tokens_for_user(bob.id).await?.len(), 1);

    assert!(store.set_active(alice.id, true, at(40)).await?);
    let user = store.user_by_id(alice.id).await?.expect("exists");
    assert!(user.is_active);
    assert_eq!(user.credentials_changed_at, at(30));

    assert!(
        !store
            .set_active(UserId(alice.id.0 + 1000), false, at(50))
            .await?
    );
    Ok(())
}

/// `set_roles` sets both flags and reports unknown users.
pub async fn set_roles_updates_flags<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    assert!(store.set_roles(alice.id, true, true).await?);
    let user = store.user_by_id(alice.id).await?.expect("exists");
    assert!(user.is_staff && user.is_superuser);
    assert!(store.set_roles(alice.id, true, false).await?);
    let user = store.user_by_id(alice.id).await?.expect("exists");
    assert!(user.is_staff && !user.is_superuser);
    assert!(
        !store
            .set_roles(UserId(alice.id.0 + 1000), true, true)
            .await?
    );
    Ok(())
}

/// `delete_user` removes the user and their tokens; a second delete returns false.
pub async fn delete_user_removes_tokens<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    store.create_token(new_token(alice.id, 1, at(1))).await?;
    store.create_token(new_token(bob.id, 2, at(2))).await?;

    assert!(store.delete_user(alice.id).await?);
    assert!(store.user_by_id(alice.id).await?.is_none());
    assert!(store.user_by_username("alice").await?.is_none());
    assert!(store.token_by_digest(&digest(1)).await?.is_none());
    assert!(store.tokens_for_user(alice.id).await?.is_empty());
    assert!(store.token_by_digest(&digest(2)).await?.is_some());
    assert!(!store.delete_user(alice.id).await?);

    // The username is free again.
    let again = store.create_user(new_user("alice")).await?;
    assert_ne!(again.id, alice.id);
    Ok(())
}

/// `record_login` sets `last_login`; an unknown id is not an error.
pub async fn record_login_sets_last_login<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    store.record_login(alice.id, at(5)).await?;
    let user = store.user_by_id(alice.id).await?.expect("exists");
    assert_eq!(user.last_login, Some(at(5)));
    assert_eq!(user.credentials_changed_at, alice.credentials_changed_at);
    store.record_login(UserId(alice.id.0 + 1000), at(6)).await?;
    Ok(())
}

/// `list_users` orders by id, filters case-insensitively on username or e-mail, and pages.
pub async fn list_users_search_limit_offset<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let mut ids = Vec::new();
    for (name, email) in [
        ("alice", "alice@example.com"),
        ("bob", "bob@Example.org"),
        ("carol", "carol@other.net"),
        ("ALIBABA", ""),
        ("dave", "dave@example.com"),
    ] {
        let mut input = new_user(name);
        input.email = email.into();
        ids.push(store.create_user(input).await?.id);
    }
    let names = |users: Vec<restguard_core::identity::User>| {
        users.into_iter().map(|u| u.username).collect::<Vec<_>>()
    };

    let all = store.list_users(None, 100, 0).await?;
    assert_eq!(all.iter().map(|u| u.id).collect::<Vec<_>>(), ids);

    assert_eq!(names(store.list_users(None, 2, 0).await?), ["alice", "bob"]);
    assert_eq!(
        names(store.list_users(None, 2, 2).await?),
        ["carol", "ALIBABA"]
    );
    assert_eq!(names(store.list_users(None, 2, 4).await?), ["dave"]);
    assert!(store.list_users(None, 2, 10).await?.is_empty());
    assert!(store.list_users(None, 0, 0).await?.is_empty());

    assert_eq!(
        names(store.list_users(Some("ali"), 100, 0).await?),
        ["alice", "ALIBABA"]
    );
    assert_eq!(
        names(store.list_users(Some("EXAMPLE"), 100, 0).await?),
        ["alice", "bob", "dave"]
    );
    assert_eq!(
        names(store.list_users(Some("example"), 1, 1).await?),
        ["bob"]
    );
    assert!(store.list_users(Some("zzz"), 100, 0).await?.is_empty());
    // Wildcard characters are literal.
    assert!(store.list_users(Some("%"), 100, 0).await?.is_empty());
    assert!(store.list_users(Some("_"), 100, 0).await?.is_empty());
    Ok(())
}

/// `create_token` stores every field; `token_by_digest` returns the token and its owner.
pub async fn token_create_and_lookup<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let mut input = new_token(alice.id, 7, at(1));
    input.expiry = Some(at(3600));
    let token = store.create_token(input).await?;
    assert_eq!(token.user_id, alice.id);
    assert_eq!(token.name, "token 7");
    assert_eq!(token.prefix, "pre00007");
    assert_eq!(token.digest, digest(7));
    assert_eq!(token.created, at(1));
    assert_eq!(token.last_used, None);
    assert_eq!(token.expiry, Some(at(3600)));

    let (found, owner) = store
        .token_by_digest(&digest(7))
        .await?
        .expect("token exists");
    assert_eq!(found, token);
    assert_eq!(owner, alice);

    // Expired tokens are returned too.
    let mut expired = new_token(alice.id, 8, at(1));
    expired.expiry = Some(at(2));
    store.create_token(expired).await?;
    let (found, _) = store
        .token_by_digest(&digest(8))
        .await?
        .expect("expired token is still returned");
    assert!(found.is_expired(at(10)));
    Ok(())
}

/// An unknown digest is `None`.
pub async fn token_unknown_digest<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    assert!(store.token_by_digest(&digest(1)).await?.is_none());
    let alice = store.create_user(new_user("alice")).await?;
    store.create_token(new_token(alice.id, 1, at(1))).await?;
    assert!(store.token_by_digest(&digest(2)).await?.is_none());
    Ok(())
}

/// A digest collision is `Conflict`, even across users, and stores nothing.
pub async fn token_duplicate_digest_conflicts<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let first = store.create_token(new_token(alice.id, 1, at(1))).await?;
    let err = store
        .create_token(new_token(bob.id, 1, at(2)))
        .await
        .expect_err("duplicate digest must fail");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert!(store.tokens_for_user(bob.id).await?.is_empty());
    let (found, owner) = store.token_by_digest(&digest(1)).await?.expect("exists");
    assert_eq!((found, owner.id), (first, alice.id));
    Ok(())
}

/// `tokens_for_user` lists only the user's tokens, oldest first.
pub async fn tokens_for_user_oldest_first<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let t2 = store.create_token(new_token(alice.id, 2, at(20))).await?;
    let t1 = store.create_token(new_token(alice.id, 1, at(10))).await?;
    store.create_token(new_token(bob.id, 9, at(5))).await?;
    let t3 = store.create_token(new_token(alice.id, 3, at(30))).await?;
    assert_eq!(store.tokens_for_user(alice.id).await?, vec![t1, t2, t3]);
    assert_eq!(store.tokens_for_user(bob.id).await?.len(), 1);
    assert!(store
        .tokens_for_user(UserId(bob.id.0 + 1000))
        .await?
        .is_empty());
    Ok(())
}

/// Revoking another user's token returns `None` and leaves it in place.
pub async fn revoke_token_of_other_user<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let token = store.create_token(new_token(alice.id, 1, at(1))).await?;

    assert_eq!(store.revoke_token(bob.id, token.id).await?, None);
    assert!(store.token_by_digest(&digest(1)).await?.is_some());
    assert_eq!(
        store
            .revoke_token(alice.id, TokenId(token.id.0 + 1000))
            .await?,
        None
    );

    assert_eq!(
        store.revoke_token(alice.id, token.id).await?,
        Some(token.clone())
    );
    assert!(store.token_by_digest(&digest(1)).await?.is_none());
    assert_eq!(store.revoke_token(alice.id, token.id).await?, None);
    Ok(())
}

/// `revoke_all_tokens` deletes and returns every token of the user, and only theirs.
pub async fn revoke_all_tokens_of_user<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let t1 = store.create_token(new_token(alice.id, 1, at(1))).await?;
    let t2 = store.create_token(new_token(alice.id, 2, at(2))).await?;
    let b = store.create_token(new_token(bob.id, 3, at(3))).await?;

    let mut revoked = store.revoke_all_tokens(alice.id).await?;
    revoked.sort_by_key(|t| t.id);
    assert_eq!(revoked, vec![t1, t2]);
    assert!(store.tokens_for_user(alice.id).await?.is_empty());
    assert_eq!(store.tokens_for_user(bob.id).await?, vec![b]);
    assert!(store.revoke_all_tokens(alice.id).await?.is_empty());
    Ok(())
}

/// `rotate_token` swaps the old token for the new one; another user's id writes nothing.
pub async fn rotate_token_replaces<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let old = store.create_token(new_token(alice.id, 1, at(1))).await?;

    // Not bob's token: nothing happens, and the replacement is not stored.
    assert!(store
        .rotate_token(bob.id, old.id, new_token(bob.id, 2, at(2)))
        .await?
        .is_none());
    assert!(store.token_by_digest(&digest(1)).await?.is_some());
    assert!(store.token_by_digest(&digest(2)).await?.is_none());
    assert!(store.tokens_for_user(bob.id).await?.is_empty());
    // Unknown id: same.
    assert!(store
        .rotate_token(
            alice.id,
            TokenId(old.id.0 + 1000),
            new_token(alice.id, 2, at(2))
        )
        .await?
        .is_none());
    assert!(store.token_by_digest(&digest(2)).await?.is_none());

    let (gone, new) = store
        .rotate_token(alice.id, old.id, new_token(alice.id, 2, at(2)))
        .await?
        .expect("alice's token rotates");
    assert_eq!(gone, old);
    assert_ne!(new.id, old.id);
    assert_eq!(new.user_id, alice.id);
    assert_eq!(new.digest, digest(2));
    assert_eq!(new.created, at(2));
    assert!(store.token_by_digest(&digest(1)).await?.is_none());
    let (found, owner) = store
        .token_by_digest(&digest(2))
        .await?
        .expect("new exists");
    assert_eq!((found, owner.id), (new.clone(), alice.id));
    assert_eq!(store.tokens_for_user(alice.id).await?, vec![new]);
    Ok(())
}

/// A rotation whose replacement collides is `Conflict` and keeps the old token.
pub async fn rotate_token_conflict_writes_nothing<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let old = store.create_token(new_token(alice.id, 1, at(1))).await?;
    let other = store.create_token(new_token(alice.id, 2, at(2))).await?;
    let err = store
        .rotate_token(alice.id, old.id, new_token(alice.id, 2, at(3)))
        .await
        .expect_err("colliding replacement must fail");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert_eq!(store.tokens_for_user(alice.id).await?, vec![old, other]);
    Ok(())
}

/// `touch_token` sets `last_used`; an unknown id is not an error.
pub async fn touch_token_sets_last_used<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let token = store.create_token(new_token(alice.id, 1, at(1))).await?;
    store.touch_token(token.id, at(90)).await?;
    let (found, _) = store.token_by_digest(&digest(1)).await?.expect("exists");
    assert_eq!(found.last_used, Some(at(90)));
    store.touch_token(token.id, at(200)).await?;
    let tokens = store.tokens_for_user(alice.id).await?;
    assert_eq!(tokens[0].last_used, Some(at(200)));
    store
        .touch_token(TokenId(token.id.0 + 1000), at(300))
        .await?;
    Ok(())
}

/// `delete_expired_tokens` deletes tokens with `expiry <= now` and nothing else.
pub async fn delete_expired_tokens_only_expired<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let mut expired = new_token(alice.id, 1, at(0));
    expired.expiry = Some(at(10));
    store.create_token(expired).await?;
    let mut at_now = new_token(bob.id, 2, at(0));
    at_now.expiry = Some(at(100));
    store.create_token(at_now).await?;
    let mut future = new_token(alice.id, 3, at(0));
    future.expiry = Some(at(101));
    store.create_token(future).await?;
    store.create_token(new_token(alice.id, 4, at(0))).await?;

    assert_eq!(store.delete_expired_tokens(at(100)).await?, 2);
    assert!(store.token_by_digest(&digest(1)).await?.is_none());
    assert!(store.token_by_digest(&digest(2)).await?.is_none());
    assert!(store.token_by_digest(&digest(3)).await?.is_some());
    assert!(store.token_by_digest(&digest(4)).await?.is_some());
    assert_eq!(store.delete_expired_tokens(at(100)).await?, 0);
    Ok(())
}

/// The first stored secret wins; later candidates are ignored; names are independent.
pub async fn secret_or_insert_keeps_first<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    assert_eq!(store.secret_or_insert("a", b"first").await?, b"first");
    assert_eq!(store.secret_or_insert("a", b"second").await?, b"first");
    assert_eq!(store.secret_or_insert("a", b"").await?, b"first");
    assert_eq!(
        store.secret_or_insert("b", &[0, 255, 1]).await?,
        [0, 255, 1]
    );
    assert_eq!(store.secret_or_insert("a", b"third").await?, b"first");
    Ok(())
}

/// Concurrent callers with different candidates all get the same value.
pub async fn secret_or_insert_concurrent<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let tasks: Vec<_> = (0u8..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.secret_or_insert("key", &[i; 32]).await })
        })
        .collect();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.expect("task panicked")?);
    }
    let first = values[0].clone();
    assert!(values.iter().all(|v| *v == first), "values: {values:?}");
    assert_eq!(first.len(), 32);
    assert!(first.iter().all(|b| *b == first[0]) && first[0] < 16);
    assert_eq!(store.secret_or_insert("key", b"late").await?, first);
    Ok(())
}

/// `rewrap_keys` shows every server secret and signing key's private key, writes the
/// replacements, and writes nothing when the rewrap fails for any of them.
pub async fn rewrap_keys_all_or_nothing<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    store.secret_or_insert("a", b"secret a").await?;
    store.secret_or_insert("b", b"secret b").await?;
    store
        .add_first_signing_key(signing_key("k1", "EdDSA", at(1)))
        .await?;
    store
        .rotate_signing_key(signing_key("k2", "EdDSA", at(2)), at(2))
        .await?;
    let seen = std::sync::Mutex::new(Vec::new());
    let replaced = store
        .rewrap_keys(&|slot, value| {
            let name = match slot {
                WrappedKey::ServerSecret { name } => format!("secret {name}"),
                WrappedKey::SigningKey { kid, algorithm } => format!("key {kid} {algorithm}"),
                _ => "other".to_owned(),
            };
            seen.lock()
                .map_err(|_| "poisoned")?
                .push((name.clone(), value.to_vec()));
            // Replace all but secret b.
            Ok((name != "secret b").then(|| [b"wrapped ".as_slice(), value].concat()))
        })
        .await?;
    assert_eq!(replaced, 3);
    let mut seen = seen.into_inner().unwrap_or_default();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("key k1 EdDSA".to_owned(), b"private k1".to_vec()),
            ("key k2 EdDSA".to_owned(), b"private k2".to_vec()),
            ("secret a".to_owned(), b"secret a".to_vec()),
            ("secret b".to_owned(), b"secret b".to_vec()),
        ]
    );
    assert_eq!(
        store.secret_or_insert("a", b"x").await?,
        b"wrapped secret a"
    );
    assert_eq!(store.secret_or_insert("b", b"x").await?, b"secret b");
    let keys = store.signing_keys().await?;
    assert_eq!(keys[0].private_key, b"wrapped private k1");
    assert_eq!(keys[1].private_key, b"wrapped private k2");
    assert_eq!(keys[1].retired_at, None);
    assert!(keys[0].retired_at.is_some());

    // A failure on one value: nothing written, the rewrap's error returned.
    let err = store
        .rewrap_keys(&|slot, value| match slot {
            WrappedKey::SigningKey { kid: "k2", .. } => Err("cannot unwrap k2".into()),
            _ => Ok(Some([b"again ".as_slice(), value].concat())),
        })
        .await
        .expect_err("the rewrap failed");
    assert!(matches!(err, StoreError::Backend(_)), "got {err:?}");
    assert!(
        std::error::Error::source(&err).is_some_and(|e| e.to_string() == "cannot unwrap k2"),
        "{err:?}"
    );
    assert_eq!(
        store.secret_or_insert("a", b"x").await?,
        b"wrapped secret a"
    );
    let keys = store.signing_keys().await?;
    assert_eq!(keys[0].private_key, b"wrapped private k1");

    // Nothing to replace: nothing written.
    assert_eq!(store.rewrap_keys(&|_, _| Ok(None)).await?, 0);
    Ok(())
}

/// `ping` succeeds on a working backend.
pub async fn ping_ok<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    store.ping().await
}

/// Timestamps come back truncated to the microsecond, as the same instant, whatever the
/// input's offset.
pub async fn timestamps_round_trip_microseconds<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let precise = datetime!(2024-02-29 23:59:59.123_456_789 +02:00);
    let truncated = datetime!(2024-02-29 21:59:59.123_456 UTC);
    let before_epoch = datetime!(1969-07-20 20:17:40.000_001_5 UTC);
    let before_epoch_truncated = datetime!(1969-07-20 20:17:40.000_001 UTC);

    let mut input = new_user("alice");
    input.date_joined = precise;
    input.last_login = Some(before_epoch);
    let alice = store.create_user(input).await?;
    assert_eq!(alice.date_joined, truncated);
    assert_eq!(alice.last_login, Some(before_epoch_truncated));
    let read = store.user_by_id(alice.id).await?.expect("exists");
    assert_eq!(read.date_joined, truncated);
    assert_eq!(read.date_joined.unix_timestamp_nanos() % 1_000, 0);
    assert_eq!(read.last_login, Some(before_epoch_truncated));
    assert_eq!(read, alice);

    store.record_login(alice.id, precise).await?;
    let read = store.user_by_id(alice.id).await?.expect("exists");
    assert_eq!(read.last_login, Some(truncated));
    store.set_password(alice.id, "h", precise).await?;
    let read = store.user_by_id(alice.id).await?.expect("exists");
    assert_eq!(read.credentials_changed_at, truncated);

    let mut token = new_token(alice.id, 1, precise);
    token.expiry = Some(precise + Duration::nanoseconds(200));
    let token = store.create_token(token).await?;
    assert_eq!(token.created, truncated);
    assert_eq!(token.expiry, Some(truncated));
    store.touch_token(token.id, precise).await?;
    let (read, _) = store.token_by_digest(&digest(1)).await?.expect("exists");
    assert_eq!(read.created, truncated);
    assert_eq!(read.expiry, Some(truncated));
    assert_eq!(read.last_used, Some(truncated));
    Ok(())
}

fn new_refresh(
    user_id: UserId,
    n: u8,
    family: &str,
    expires_at: OffsetDateTime,
) -> NewRefreshToken {
    NewRefreshToken {
        jti: digest(n),
        family: FamilyId(family.to_owned()),
        user_id,
        created: at(0),
        expires_at,
    }
}

/// `create_refresh` stores every field; `refresh_by_jti` finds it.
pub async fn refresh_create_and_lookup<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let created = store
        .create_refresh(new_refresh(alice.id, 1, "fam-a", at(86_400)))
        .await?;
    assert_eq!(created.jti, digest(1));
    assert_eq!(created.family, FamilyId("fam-a".into()));
    assert_eq!(created.user_id, alice.id);
    assert_eq!(created.created, at(0));
    assert_eq!(created.expires_at, at(86_400));
    assert_eq!(created.used_at, None);
    assert_eq!(created.revoked_at, None);
    assert_eq!(store.refresh_by_jti(&digest(1)).await?, Some(created));
    assert_eq!(store.refresh_by_jti(&digest(2)).await?, None);
    Ok(())
}

/// A duplicate `jti` digest is `Conflict`.
pub async fn refresh_duplicate_jti_conflicts<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    store
        .create_refresh(new_refresh(alice.id, 1, "fam-a", at(100)))
        .await?;
    let err = store
        .create_refresh(new_refresh(alice.id, 1, "fam-b", at(100)))
        .await
        .expect_err("duplicate jti must fail");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    let kept = store.refresh_by_jti(&digest(1)).await?.expect("exists");
    assert_eq!(kept.family, FamilyId("fam-a".into()));
    Ok(())
}

/// The first `consume_refresh` wins and stores the replacement in the same family; later
/// calls report `AlreadyUsed`; unknown digests are `Unknown`.
pub async fn consume_refresh_once_then_already_used<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    store
        .create_refresh(new_refresh(alice.id, 1, "fam-a", at(100)))
        .await?;
    // The replacement's own family is ignored: it joins the consumed token's.
    let replacement = new_refresh(alice.id, 2, "ignored", at(200));
    let RefreshUse::Consumed(old, Some(new)) = store
        .consume_refresh(&digest(1), Some(replacement), at(10))
        .await?
    else {
        panic!("first use must consume");
    };
    assert_eq!(old.jti, digest(1));
    assert_eq!(old.used_at, Some(at(10)));
    assert_eq!(new.jti, digest(2));
    assert_eq!(new.family, FamilyId("fam-a".into()));
    assert_eq!(new.expires_at, at(200));
    assert_eq!(store.refresh_by_jti(&digest(2)).await?, Some(new));

    let again = store
        .consume_refresh(
            &digest(1),
            Some(new_refresh(alice.id, 3, "x", at(300))),
            at(11),
        )
        .await?;
    let RefreshUse::AlreadyUsed(used) = again else {
        panic!("second use must be AlreadyUsed, got {again:?}");
    };
    assert_eq!(used.used_at, Some(at(10)));
    assert_eq!(
        store.refresh_by_jti(&digest(3)).await?,
        None,
        "nothing written"
    );

    assert_eq!(
        store.consume_refresh(&digest(9), None, at(12)).await?,
        RefreshUse::Unknown
    );
    // Consuming without a replacement.
    assert!(matches!(
        store.consume_refresh(&digest(2), None, at(13)).await?,
        RefreshUse::Consumed(_, None)
    ));
    Ok(())
}

/// `extend_family` adds to the parent's family only while the parent is live and the owner's.
pub async fn extend_family_only_from_live_parent<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    store
        .create_refresh(new_refresh(alice.id, 1, "fam-a", at(100)))
        .await?;
    let child = store
        .extend_family(&digest(1), new_refresh(alice.id, 2, "ignored", at(200)))
        .await?
        .expect("live parent");
    assert_eq!(child.family, FamilyId("fam-a".into()));
    assert_eq!(child.expires_at, at(200));
    assert_eq!(store.refresh_by_jti(&digest(2)).await?, Some(child));
    // The parent stays usable (no blacklisting).
    assert!(store
        .extend_family(&digest(1), new_refresh(alice.id, 3, "x", at(200)))
        .await?
        .is_some());
    // Another user's token, an unknown parent, a used or revoked parent: nothing written.
    assert_eq!(
        store
            .extend_family(&digest(1), new_refresh(bob.id, 4, "x", at(200)))
            .await?,
        None
    );
    assert_eq!(
        store
            .extend_family(&digest(9), new_refresh(alice.id, 5, "x", at(200)))
            .await?,
        None
    );
    store.consume_refresh(&digest(2), None, at(10)).await?;
    assert_eq!(
        store
            .extend_family(&digest(2), new_refresh(alice.id, 6, "x", at(200)))
            .await?,
        None
    );
    store
        .revoke_family(&FamilyId("fam-a".into()), at(11))
        .await?;
    assert_eq!(
        store
            .extend_family(&digest(1), new_refresh(alice.id, 7, "x", at(200)))
            .await?,
        None
    );
    for n in [4, 5, 6, 7] {
        assert_eq!(store.refresh_by_jti(&digest(n)).await?, None);
    }
    Ok(())
}

/// 100 concurrent `consume_refresh` calls of one token: exactly one `Consumed`.
pub async fn consume_refresh_concurrent_exactly_one<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    store
        .create_refresh(new_refresh(alice.id, 1, "fam-a", at(100)))
        .await?;
    let tasks: Vec<_> = (0u8..100)
        .map(|i| {
            let store = store.clone();
            let user_id = alice.id;
            tokio::spawn(async move {
                let replacement = NewRefreshToken {
                    jti: SecretDigest([i.wrapping_add(100); 32]),
                    ..new_refresh(user_id, 0, "fam-a", at(200))
                };
                store
                    .consume_refresh(&digest(1), Some(replacement), at(10))
                    .await
            })
        })
        .collect();
    let mut consumed = 0;
    let mut already_used = 0;
    for task in tasks {
        match task.await.expect("task panicked")? {
            RefreshUse::Consumed(_, Some(_)) => consumed += 1,
            RefreshUse::AlreadyUsed(_) => already_used += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((consumed, already_used), (1, 99));
    Ok(())
}

/// `revoke_family` revokes every member of the family (used or not) and nothing else;
/// revoked tokens cannot be consumed.
pub async fn revoke_family_revokes_every_member<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    store
        .create_refresh(new_refresh(alice.id, 1, "fam-a", at(100)))
        .await?;
    store
        .consume_refresh(
            &digest(1),
            Some(new_refresh(alice.id, 2, "", at(100))),
            at(5),
        )
        .await?;
    store
        .create_refresh(new_refresh(alice.id, 3, "fam-b", at(100)))
        .await?;

    // The live member (2) is revoked; the consumed one (1) stays consumed.
    assert_eq!(
        store
            .revoke_family(&FamilyId("fam-a".into()), at(20))
            .await?,
        1
    );
    assert_eq!(
        store
            .revoke_family(&FamilyId("fam-a".into()), at(30))
            .await?,
        0
    );
    let child = store.refresh_by_jti(&digest(2)).await?.expect("exists");
    assert_eq!(child.revoked_at, Some(at(20)));
    assert!(matches!(
        store.consume_refresh(&digest(2), None, at(40)).await?,
        RefreshUse::Revoked(_)
    ));
    assert!(matches!(
        store.consume_refresh(&digest(1), None, at(40)).await?,
        RefreshUse::AlreadyUsed(_)
    ));
    let used = store.refresh_by_jti(&digest(1)).await?.expect("exists");
    assert_eq!((used.used_at, used.revoked_at), (Some(at(5)), None));
    let other = store.refresh_by_jti(&digest(3)).await?.expect("exists");
    assert_eq!(other.revoked_at, None);
    assert!(matches!(
        store.consume_refresh(&digest(3), None, at(40)).await?,
        RefreshUse::Consumed(_, None)
    ));
    Ok(())
}

/// A distinct digest for member `generation` of race family `family`.
fn race_digest(family: u8, generation: u32) -> SecretDigest {
    let mut bytes = [0xAB; 32];
    bytes[0] = family;
    bytes[1..5].copy_from_slice(&generation.to_be_bytes());
    SecretDigest(bytes)
}

/// Families whose live token is rotated in a loop while the family is revoked: once
/// `revoke_family` has returned, no member of the family can be consumed — including a child
/// a rotation was inserting at that very moment (RFC 9700 reuse detection must not be
/// outrun).
pub async fn revoke_family_catches_concurrent_rotations<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let mut races = Vec::new();
    for family in 0..16u8 {
        let store = store.clone();
        races.push(tokio::spawn(async move {
            let name = FamilyId(format!("race-{family}"));
            store
                .create_refresh(NewRefreshToken {
                    jti: race_digest(family, 0),
                    family: name.clone(),
                    user_id: alice.id,
                    created: at(0),
                    expires_at: at(1_000_000),
                })
                .await?;
            let rotator = {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut generation = 0u32;
                    loop {
                        let next = NewRefreshToken {
                            jti: race_digest(family, generation + 1),
                            family: FamilyId(String::new()),
                            user_id: alice.id,
                            created: at(1),
                            expires_at: at(1_000_000),
                        };
                        match store
                            .consume_refresh(&race_digest(family, generation), Some(next), at(2))
                            .await?
                        {
                            RefreshUse::Consumed(..) => generation += 1,
                            _ => return Ok::<u32, StoreError>(generation),
                        }
                        if generation > 2_000 {
                            return Ok(generation);
                        }
                    }
                })
            };
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(family % 4) + 1)).await;
            store.revoke_family(&name, at(3)).await?;
            let last = rotator
                .await
                .map_err(|e| StoreError::backend(e.to_string()))??;
            // The chain's newest member: whatever the rotator did, it is dead now.
            let outcome = store
                .consume_refresh(&race_digest(family, last), None, at(4))
                .await?;
            Ok::<bool, StoreError>(!matches!(outcome, RefreshUse::Consumed(..)))
        }));
    }
    let mut dead = 0;
    for race in races {
        if race
            .await
            .map_err(|e| StoreError::backend(e.to_string()))??
        {
            dead += 1;
        }
    }
    assert_eq!(
        dead,
        16,
        "families that outran their revocation: {}",
        16 - dead
    );
    Ok(())
}

/// `blacklist_jti` adds once; `is_blacklisted` sees it.
pub async fn blacklist_jti_once<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    assert!(!store.is_blacklisted(&digest(1)).await?);
    assert!(store.blacklist_jti(&digest(1), at(100)).await?);
    assert!(!store.blacklist_jti(&digest(1), at(200)).await?);
    assert!(store.is_blacklisted(&digest(1)).await?);
    assert!(!store.is_blacklisted(&digest(2)).await?);
    Ok(())
}

/// `delete_expired_jwt` deletes refresh records and blacklist rows with `expires_at <= now`.
pub async fn delete_expired_jwt_only_expired<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    store
        .create_refresh(new_refresh(alice.id, 1, "f", at(10)))
        .await?;
    store
        .create_refresh(new_refresh(alice.id, 2, "f", at(100)))
        .await?;
    store
        .create_refresh(new_refresh(alice.id, 3, "f", at(101)))
        .await?;
    store.blacklist_jti(&digest(4), at(100)).await?;
    store.blacklist_jti(&digest(5), at(101)).await?;

    assert_eq!(store.delete_expired_jwt(at(100)).await?, 3);
    assert!(store.refresh_by_jti(&digest(1)).await?.is_none());
    assert!(store.refresh_by_jti(&digest(2)).await?.is_none());
    assert!(store.refresh_by_jti(&digest(3)).await?.is_some());
    assert!(!store.is_blacklisted(&digest(4)).await?);
    assert!(store.is_blacklisted(&digest(5)).await?);
    assert_eq!(store.delete_expired_jwt(at(100)).await?, 0);
    Ok(())
}

/// Deleting a user deletes their refresh records.
pub async fn delete_user_removes_refresh_tokens<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    store
        .create_refresh(new_refresh(alice.id, 1, "f", at(100)))
        .await?;
    store
        .create_refresh(new_refresh(bob.id, 2, "g", at(100)))
        .await?;
    assert!(store.delete_user(alice.id).await?);
    assert!(store.refresh_by_jti(&digest(1)).await?.is_none());
    assert!(store.refresh_by_jti(&digest(2)).await?.is_some());
    Ok(())
}

fn signing_key(kid: &str, algorithm: &str, created: OffsetDateTime) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        algorithm: algorithm.to_owned(),
        private_key: format!("private {kid}").into_bytes(),
        public_jwk: Some(format!("{{\"kid\":\"{kid}\"}}")),
        created,
        retired_at: None,
    }
}

/// The first key of an algorithm is stored once; rotation retires the active key of that
/// algorithm only; keys list oldest first.
pub async fn signing_keys_first_and_rotate<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    assert!(store.signing_keys().await?.is_empty());
    assert!(
        store
            .add_first_signing_key(signing_key("k1", "EdDSA", at(1)))
            .await?
    );
    assert!(
        !store
            .add_first_signing_key(signing_key("k2", "EdDSA", at(2)))
            .await?
    );
    assert!(
        store
            .add_first_signing_key(signing_key("h1", "HS256", at(3)))
            .await?
    );
    let keys = store.signing_keys().await?;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], signing_key("k1", "EdDSA", at(1)));
    assert_eq!(keys[1].kid, "h1");

    store
        .rotate_signing_key(signing_key("k3", "EdDSA", at(10)), at(10))
        .await?;
    let keys = store.signing_keys().await?;
    let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k1", "h1", "k3"]);
    assert_eq!(keys[0].retired_at, Some(at(10)));
    assert_eq!(keys[1].retired_at, None, "other algorithms untouched");
    assert_eq!(keys[2].retired_at, None);
    // Still one active EdDSA key: no second "first" key.
    assert!(
        !store
            .add_first_signing_key(signing_key("k4", "EdDSA", at(11)))
            .await?
    );
    Ok(())
}

/// A duplicate `kid` on rotation is `Conflict` and retires nothing.
pub async fn signing_key_duplicate_kid_conflicts<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    store
        .add_first_signing_key(signing_key("k1", "RS256", at(1)))
        .await?;
    let err = store
        .rotate_signing_key(signing_key("k1", "RS256", at(2)), at(2))
        .await
        .expect_err("duplicate kid must fail");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    let keys = store.signing_keys().await?;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].retired_at, None);
    Ok(())
}

/// `delete_retired_signing_keys` deletes only keys retired at or before the cut-off.
pub async fn delete_retired_signing_keys_only_old<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    store
        .add_first_signing_key(signing_key("k1", "ES256", at(1)))
        .await?;
    store
        .rotate_signing_key(signing_key("k2", "ES256", at(10)), at(10))
        .await?;
    store
        .rotate_signing_key(signing_key("k3", "ES256", at(20)), at(20))
        .await?;
    assert_eq!(store.delete_retired_signing_keys(at(9)).await?, 0);
    assert_eq!(store.delete_retired_signing_keys(at(10)).await?, 1);
    let kids: Vec<String> = store
        .signing_keys()
        .await?
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["k2", "k3"]);
    Ok(())
}

fn new_session(user_id: UserId, n: u8, created: OffsetDateTime) -> NewSession {
    NewSession {
        user_id,
        digest: digest(n),
        created,
        expires_at: created + Duration::days(30),
        user_agent: format!("agent {n}"),
        ip: Some("192.0.2.1".into()),
    }
}

/// `create_session` returns the stored session (`last_seen` = `created`, microseconds);
/// `session_by_digest` finds it with its owner in one call, expired or not.
pub async fn session_create_and_lookup<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let mut input = new_session(alice.id, 1, at(1) + Duration::nanoseconds(789));
    input.ip = None;
    let session = store.create_session(input).await?;
    assert_eq!(session.user_id, alice.id);
    assert_eq!(session.digest, digest(1));
    assert_eq!(session.created, at(1), "truncated to the microsecond");
    assert_eq!(session.last_seen, at(1));
    assert_eq!(session.expires_at, at(1) + Duration::days(30));
    assert_eq!(session.user_agent, "agent 1");
    assert_eq!(session.ip, None);
    let (found, owner) = store
        .session_by_digest(&digest(1))
        .await?
        .expect("session exists");
    assert_eq!(found, session);
    assert_eq!(owner, alice);
    assert!(store.session_by_digest(&digest(2)).await?.is_none());

    let mut expired = new_session(alice.id, 3, at(1));
    expired.expires_at = at(2);
    store.create_session(expired).await?;
    assert!(store.session_by_digest(&digest(3)).await?.is_some());
    Ok(())
}

/// A duplicate digest is `Conflict`; an unknown owner is an error; nothing is stored.
pub async fn session_duplicate_digest_conflicts<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    store
        .create_session(new_session(alice.id, 1, at(1)))
        .await?;
    let err = store
        .create_session(new_session(alice.id, 1, at(2)))
        .await
        .expect_err("duplicate digest must fail");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert!(store
        .create_session(new_session(UserId(9_999), 2, at(2)))
        .await
        .is_err());
    assert!(store.session_by_digest(&digest(2)).await?.is_none());
    assert_eq!(store.sessions_for_user(alice.id).await?.len(), 1);
    Ok(())
}

/// Sessions list oldest first, per user; `delete_session` deletes only the owner's.
pub async fn sessions_for_user_and_delete_one<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let later = store
        .create_session(new_session(alice.id, 1, at(20)))
        .await?;
    let earlier = store
        .create_session(new_session(alice.id, 2, at(10)))
        .await?;
    let bobs = store.create_session(new_session(bob.id, 3, at(5))).await?;
    let ids: Vec<SessionId> = store
        .sessions_for_user(alice.id)
        .await?
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, [earlier.id, later.id]);
    assert_eq!(store.delete_session(alice.id, bobs.id).await?, None);
    assert!(store.session_by_digest(&digest(3)).await?.is_some());
    assert_eq!(
        store.delete_session(alice.id, later.id).await?,
        Some(later.clone())
    );
    assert_eq!(store.delete_session(alice.id, later.id).await?, None);
    assert!(store.session_by_digest(&digest(1)).await?.is_none());
    assert_eq!(store.sessions_for_user(alice.id).await?, [earlier]);
    Ok(())
}

/// `delete_user_sessions` deletes all of the user's sessions but the kept one, and no one
/// else's.
pub async fn delete_user_sessions_keeps_one<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let a1 = store
        .create_session(new_session(alice.id, 1, at(1)))
        .await?;
    let a2 = store
        .create_session(new_session(alice.id, 2, at(2)))
        .await?;
    let a3 = store
        .create_session(new_session(alice.id, 3, at(3)))
        .await?;
    store.create_session(new_session(bob.id, 4, at(4))).await?;
    let deleted = store.delete_user_sessions(alice.id, Some(a2.id)).await?;
    assert_eq!(deleted, [a1, a3]);
    assert_eq!(
        store.sessions_for_user(alice.id).await?,
        std::slice::from_ref(&a2)
    );
    let deleted = store.delete_user_sessions(alice.id, None).await?;
    assert_eq!(deleted, [a2]);
    assert!(store.sessions_for_user(alice.id).await?.is_empty());
    assert_eq!(store.sessions_for_user(bob.id).await?.len(), 1);
    Ok(())
}

/// `touch_session` sets `last_seen` (truncated), nothing else.
pub async fn touch_session_sets_last_seen<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let session = store
        .create_session(new_session(alice.id, 1, at(1)))
        .await?;
    store
        .touch_session(session.id, at(60) + Duration::nanoseconds(999))
        .await?;
    let (found, _) = store
        .session_by_digest(&digest(1))
        .await?
        .expect("session exists");
    assert_eq!(found.last_seen, at(60));
    assert_eq!(found.created, at(1));
    // Touching a deleted session is not an error.
    store.delete_session(alice.id, session.id).await?;
    store.touch_session(session.id, at(61)).await?;
    Ok(())
}

/// `delete_expired_sessions` deletes sessions past their absolute end, and idle ones when
/// asked, and no others.
pub async fn delete_expired_sessions_absolute_and_idle<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let mut ended = new_session(alice.id, 1, at(1));
    ended.expires_at = at(100);
    store.create_session(ended).await?;
    let idle = store
        .create_session(new_session(alice.id, 2, at(1)))
        .await?;
    let active = store
        .create_session(new_session(alice.id, 3, at(1)))
        .await?;
    store.touch_session(active.id, at(500)).await?;
    assert_eq!(store.delete_expired_sessions(at(99), None).await?, 0);
    assert_eq!(store.delete_expired_sessions(at(100), None).await?, 1);
    assert_eq!(
        store.delete_expired_sessions(at(1000), Some(at(0))).await?,
        0
    );
    assert_eq!(
        store.delete_expired_sessions(at(1000), Some(at(1))).await?,
        1
    );
    assert!(store.session_by_digest(&digest(2)).await?.is_none());
    let left: Vec<SessionId> = store
        .sessions_for_user(alice.id)
        .await?
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [active.id]);
    assert_ne!(idle.id, active.id);
    Ok(())
}

/// Deleting a user deletes their sessions (and only theirs).
pub async fn delete_user_removes_sessions<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    store
        .create_session(new_session(alice.id, 1, at(1)))
        .await?;
    store.create_session(new_session(bob.id, 2, at(1))).await?;
    assert!(store.delete_user(alice.id).await?);
    assert!(store.session_by_digest(&digest(1)).await?.is_none());
    assert!(store.sessions_for_user(alice.id).await?.is_empty());
    assert!(store.session_by_digest(&digest(2)).await?.is_some());
    Ok(())
}

/// A session created at the instant of a password change compares equal to the user's
/// `credentials_changed_at` (both at microsecond precision), so "created at or after the
/// change" keeps it, while one created a microsecond before does not.
pub async fn session_timestamps_compare_with_credentials_change<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let change = at(50) + Duration::nanoseconds(500);
    assert!(store.set_password(alice.id, "x", change).await?);
    store
        .create_session(new_session(alice.id, 1, change))
        .await?;
    store
        .create_session(new_session(alice.id, 2, change - Duration::microseconds(1)))
        .await?;
    let (same, user) = store
        .session_by_digest(&digest(1))
        .await?
        .expect("session exists");
    assert!(same.created >= user.credentials_changed_at);
    let (before, user) = store
        .session_by_digest(&digest(2))
        .await?
        .expect("session exists");
    assert!(before.created < user.credentials_changed_at);
    Ok(())
}

// ---- OAuth2 provider (OAuthStore) ----

fn new_app(client_id: &str) -> NewApplication {
    NewApplication {
        client_id: client_id.into(),
        name: format!("app {client_id}"),
        client_type: ClientType::Confidential,
        secret_digest: Some(digest(200)),
        grant_types: vec!["authorization_code".into(), "client_credentials".into()],
        redirect_uris: vec![
            "https://app.example/cb".into(),
            "http://127.0.0.1/cb".into(),
        ],
        post_logout_redirect_uris: vec!["https://app.example/signed-out".into()],
        allowed_scopes: vec!["read".into(), "openid".into()],
        skip_authorization: false,
        algorithm: "RS256".into(),
        owner: None,
        created: T0,
    }
}

fn new_code(app: ApplicationId, user: UserId, n: u8) -> AuthorizationCode {
    AuthorizationCode {
        digest: digest(n),
        application: app,
        user_id: user,
        redirect_uri: "https://app.example/cb".into(),
        scopes: vec!["read".into(), "openid".into()],
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        code_challenge_method: Some("S256".into()),
        nonce: Some("n-0S6_WzA2Mj".into()),
        auth_time: at(0),
        created: at(0),
        expires_at: at(60),
        used_at: None,
        family: None,
    }
}

fn new_oauth_token(
    kind: OAuthTokenKind,
    n: u8,
    app: ApplicationId,
    user: Option<UserId>,
    family: &str,
) -> NewOAuthToken {
    NewOAuthToken {
        kind,
        digest: digest(n),
        application: app,
        user_id: user,
        scopes: vec!["read".into(), "write".into()],
        family: FamilyId(family.into()),
        created: at(n.into()),
        expires_at: at(3600),
    }
}

/// Applications: create, look up by `client_id` and id, list, set the secret, delete; a taken
/// `client_id` is `Conflict`.
pub async fn oauth_application_create_lookup_delete<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let app = store.create_application(new_app("client-a")).await?;
    assert_eq!(app.client_id, "client-a");
    assert_eq!(app.client_type, ClientType::Confidential);
    assert_eq!(app.secret_digest, Some(digest(200)));
    assert_eq!(
        app.redirect_uris,
        vec!["https://app.example/cb", "http://127.0.0.1/cb"]
    );
    assert_eq!(app.grant_types.len(), 2);
    assert_eq!(
        app.post_logout_redirect_uris,
        vec!["https://app.example/signed-out"]
    );
    assert_eq!(app.allowed_scopes, vec!["read", "openid"]);
    assert_eq!(app.created, T0);
    assert_eq!(
        store.application_by_client_id("client-a").await?,
        Some(app.clone())
    );
    assert_eq!(store.application_by_id(app.id).await?, Some(app.clone()));
    assert_eq!(store.application_by_client_id("CLIENT-A").await?, None);
    let err = store
        .create_application(new_app("client-a"))
        .await
        .expect_err("duplicate client_id");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    let mut public = new_app("client-b");
    public.client_type = ClientType::Public;
    public.secret_digest = None;
    public.allowed_scopes = Vec::new();
    let b = store.create_application(public).await?;
    assert_eq!(b.secret_digest, None);
    assert!(b.allowed_scopes.is_empty());
    assert_eq!(store.applications().await?, vec![app.clone(), b.clone()]);

    assert!(
        store
            .set_client_secret("client-a", Some(digest(201)))
            .await?
    );
    assert!(!store.set_client_secret("nope", Some(digest(201))).await?);
    let a = store
        .application_by_client_id("client-a")
        .await?
        .expect("a");
    assert_eq!(a.secret_digest, Some(digest(201)));

    assert!(store.delete_application("client-a").await?);
    assert!(!store.delete_application("client-a").await?);
    assert_eq!(store.applications().await?, vec![b]);
    Ok(())
}

/// `update_application` changes only the fields it names, keeps the rest (secret included)
/// and the application's tokens; an unknown `client_id` is `None`.
pub async fn oauth_application_update<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let app = store.create_application(new_app("c")).await?;
    let other = store.create_application(new_app("d")).await?;
    store
        .create_oauth_tokens(vec![new_oauth_token(
            OAuthTokenKind::Access,
            1,
            app.id,
            Some(alice.id),
            "f1",
        )])
        .await?;
    let uris = vec![
        "https://app.example/bye".to_owned(),
        "https://app.example/bye?again=1".to_owned(),
    ];
    let updated = store
        .update_application(
            "c",
            ApplicationUpdate {
                post_logout_redirect_uris: Some(uris.clone()),
                allowed_scopes: None,
            },
        )
        .await?
        .expect("exists");
    assert_eq!(updated.post_logout_redirect_uris, uris);
    assert_eq!(updated.allowed_scopes, app.allowed_scopes);
    assert_eq!(updated.secret_digest, app.secret_digest);
    assert_eq!(updated.redirect_uris, app.redirect_uris);
    assert_eq!(store.application_by_client_id("c").await?, Some(updated));
    let updated = store
        .update_application(
            "c",
            ApplicationUpdate {
                post_logout_redirect_uris: Some(Vec::new()),
                allowed_scopes: Some(vec!["read".into(), "introspection".into()]),
            },
        )
        .await?
        .expect("exists");
    assert!(updated.post_logout_redirect_uris.is_empty());
    assert_eq!(updated.allowed_scopes, vec!["read", "introspection"]);
    assert_eq!(
        store.application_by_client_id("d").await?,
        Some(other),
        "another application is untouched"
    );
    assert_eq!(
        store
            .update_application("nope", ApplicationUpdate::default())
            .await?,
        None
    );
    let (token, _) = store.oauth_token_by_digest(&digest(1)).await?.expect("t1");
    assert!(token.is_live(at(10)));
    Ok(())
}

/// A code is consumed once; the second use is `AlreadyUsed` with the family recorded.
pub async fn oauth_code_consumed_once<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let app = store.create_application(new_app("c")).await?;
    let code = new_code(app.id, alice.id, 1);
    store.create_code(code.clone()).await?;
    let err = store
        .create_code(code.clone())
        .await
        .expect_err("duplicate code digest");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    let read = store
        .code_by_digest(&digest(1))
        .await?
        .expect("stored code");
    assert_eq!(read.used_at, None);
    assert_eq!(read.redirect_uri, code.redirect_uri);
    assert_eq!(read.auth_time, at(0));
    assert!(store.code_by_digest(&digest(98)).await?.is_none());
    let family = FamilyId("fam-1".into());
    let issued = vec![
        new_oauth_token(OAuthTokenKind::Access, 50, app.id, Some(alice.id), "fam-1"),
        new_oauth_token(OAuthTokenKind::Refresh, 51, app.id, Some(alice.id), "fam-1"),
    ];
    let CodeUse::Consumed(used) = store
        .consume_code(&digest(1), &family, issued, at(5))
        .await?
    else {
        panic!("first use must consume");
    };
    assert_eq!(used.used_at, Some(at(5)));
    assert_eq!(used.family.as_ref(), Some(&family));
    assert_eq!(used.scopes, code.scopes);
    assert_eq!(used.code_challenge, code.code_challenge);
    assert_eq!(used.nonce, code.nonce);
    assert_eq!(used.expires_at, at(60));
    assert!(
        store.oauth_token_by_digest(&digest(50)).await?.is_some(),
        "stored with the use"
    );
    assert!(store.oauth_token_by_digest(&digest(51)).await?.is_some());
    let replay_tokens = vec![new_oauth_token(
        OAuthTokenKind::Access,
        52,
        app.id,
        Some(alice.id),
        "fam-2",
    )];
    let again = store
        .consume_code(&digest(1), &FamilyId("fam-2".into()), replay_tokens, at(6))
        .await?;
    match again {
        CodeUse::AlreadyUsed(c) => assert_eq!(c.family, Some(family)),
        other => panic!("second use: {other:?}"),
    }
    assert!(
        store.oauth_token_by_digest(&digest(52)).await?.is_none(),
        "a replay stores nothing"
    );
    assert_eq!(
        store
            .consume_code(&digest(99), &FamilyId("x".into()), Vec::new(), at(6))
            .await?,
        CodeUse::Unknown
    );
    Ok(())
}

/// Of concurrent exchanges of one code, exactly one consumes it.
pub async fn oauth_code_consume_concurrent_exactly_one<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let app = store.create_application(new_app("c")).await?;
    store.create_code(new_code(app.id, alice.id, 1)).await?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .consume_code(&digest(1), &FamilyId(format!("f{i}")), Vec::new(), at(1))
                .await
        }));
    }
    let mut consumed = 0;
    for t in tasks {
        if let CodeUse::Consumed(_) = t.await.expect("task")? {
            consumed += 1;
        }
    }
    assert_eq!(consumed, 1);
    Ok(())
}

/// Tokens: stored all or nothing, found by digest with their user (none for client
/// credentials), revoked one by one or by family.
pub async fn oauth_tokens_lookup_and_revoke<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let app = store.create_application(new_app("c")).await?;
    store
        .create_oauth_tokens(vec![
            new_oauth_token(OAuthTokenKind::Access, 1, app.id, Some(alice.id), "f1"),
            new_oauth_token(OAuthTokenKind::Refresh, 2, app.id, Some(alice.id), "f1"),
            new_oauth_token(OAuthTokenKind::Access, 3, app.id, None, "f2"),
        ])
        .await?;
    let (access, user) = store.oauth_token_by_digest(&digest(1)).await?.expect("t1");
    assert_eq!(access.kind, OAuthTokenKind::Access);
    assert_eq!(access.application, app.id);
    assert_eq!(access.user_id, Some(alice.id));
    assert_eq!(access.scopes, vec!["read", "write"]);
    assert_eq!(access.family, FamilyId("f1".into()));
    assert_eq!(access.created, at(1));
    assert_eq!(access.expires_at, at(3600));
    assert!(access.is_live(at(10)));
    assert_eq!(user.map(|u| u.id), Some(alice.id));
    let (cc, user) = store.oauth_token_by_digest(&digest(3)).await?.expect("t3");
    assert_eq!(cc.user_id, None);
    assert!(user.is_none());
    assert!(store.oauth_token_by_digest(&digest(9)).await?.is_none());

    // A digest collision writes nothing.
    let err = store
        .create_oauth_tokens(vec![
            new_oauth_token(OAuthTokenKind::Access, 4, app.id, None, "f3"),
            new_oauth_token(OAuthTokenKind::Access, 1, app.id, None, "f3"),
        ])
        .await
        .expect_err("collision");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert!(store.oauth_token_by_digest(&digest(4)).await?.is_none());

    assert!(store.revoke_oauth_token(cc.id, at(20)).await?);
    assert!(!store.revoke_oauth_token(cc.id, at(21)).await?);
    let (cc, _) = store.oauth_token_by_digest(&digest(3)).await?.expect("t3");
    assert_eq!(cc.revoked_at, Some(at(20)));
    assert!(!cc.is_live(at(22)));

    assert_eq!(
        store
            .revoke_oauth_family(&FamilyId("f1".into()), at(30))
            .await?,
        2
    );
    let (r, _) = store.oauth_token_by_digest(&digest(2)).await?.expect("t2");
    assert_eq!(r.revoked_at, Some(at(30)));
    Ok(())
}

/// Many grants stored at once (a backend may write them in one transaction): each is stored,
/// and a grant whose digest collides fails alone, writing nothing of its own.
pub async fn oauth_concurrent_grants_fail_alone<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let app = store.create_application(new_app("c")).await?;
    store
        .create_oauth_tokens(vec![new_oauth_token(
            OAuthTokenKind::Access,
            1,
            app.id,
            None,
            "f1",
        )])
        .await?;
    let mut tasks = Vec::new();
    for n in 1..=64u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Grant `n` stores an access token `n + 100` and, for n = 1, the colliding `1`.
            let mut tokens = vec![new_oauth_token(
                OAuthTokenKind::Access,
                n + 100,
                app.id,
                None,
                &format!("g{n}"),
            )];
            if n == 1 {
                tokens.push(new_oauth_token(
                    OAuthTokenKind::Access,
                    1,
                    app.id,
                    None,
                    "g1",
                ));
            }
            store.create_oauth_tokens(tokens).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let n = u8::try_from(i + 1).expect("small");
        let result = task.await.expect("task");
        if n == 1 {
            assert!(
                matches!(result, Err(StoreError::Conflict(_))),
                "got {result:?}"
            );
            assert!(store.oauth_token_by_digest(&digest(101)).await?.is_none());
        } else {
            result?;
            let (token, _) = store
                .oauth_token_by_digest(&digest(n + 100))
                .await?
                .expect("stored");
            assert_eq!(token.family, FamilyId(format!("g{n}")));
        }
    }
    Ok(())
}

/// OAuth2 refresh-token families rotated in a loop while revoked: once
/// `revoke_oauth_family` has returned, no member rotates any more.
pub async fn oauth_revoke_family_catches_concurrent_rotations<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let app = store.create_application(new_app("racer")).await?;
    let token = move |family: u8, generation: u32, name: &FamilyId| NewOAuthToken {
        kind: OAuthTokenKind::Refresh,
        digest: race_digest(family, generation),
        application: app.id,
        user_id: Some(alice.id),
        scopes: vec!["read".into()],
        family: name.clone(),
        created: at(1),
        expires_at: at(1_000_000),
    };
    let mut races = Vec::new();
    for family in 0..16u8 {
        let store = store.clone();
        races.push(tokio::spawn(async move {
            let name = FamilyId(format!("oauth-race-{family}"));
            store
                .create_oauth_tokens(vec![token(family, 0, &name)])
                .await?;
            let rotator = {
                let store = store.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let mut generation = 0u32;
                    loop {
                        let next = vec![token(family, generation + 1, &name)];
                        match store
                            .rotate_refresh(&race_digest(family, generation), next, at(2))
                            .await?
                        {
                            OAuthRefreshUse::Consumed(_) => generation += 1,
                            _ => return Ok::<u32, StoreError>(generation),
                        }
                        if generation > 2_000 {
                            return Ok(generation);
                        }
                    }
                })
            };
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(family % 4) + 1)).await;
            store.revoke_oauth_family(&name, at(3)).await?;
            let last = rotator
                .await
                .map_err(|e| StoreError::backend(e.to_string()))??;
            let outcome = store
                .rotate_refresh(&race_digest(family, last), Vec::new(), at(4))
                .await?;
            Ok::<bool, StoreError>(!matches!(outcome, OAuthRefreshUse::Consumed(_)))
        }));
    }
    let mut dead = 0;
    for race in races {
        if race
            .await
            .map_err(|e| StoreError::backend(e.to_string()))??
        {
            dead += 1;
        }
    }
    assert_eq!(
        dead,
        16,
        "families that outran their revocation: {}",
        16 - dead
    );
    Ok(())
}

/// A refresh token rotates once; a second use is `AlreadyUsed`; access tokens and revoked
/// tokens never rotate.
pub async fn oauth_rotate_refresh_once<S: Backend>(store: Arc<S>) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let app = store.create_application(new_app("c")).await?;
    store
        .create_oauth_tokens(vec![
            new_oauth_token(OAuthTokenKind::Access, 1, app.id, Some(alice.id), "f1"),
            new_oauth_token(OAuthTokenKind::Refresh, 2, app.id, Some(alice.id), "f1"),
        ])
        .await?;
    let replacements = vec![
        new_oauth_token(OAuthTokenKind::Access, 3, app.id, Some(alice.id), "f1"),
        new_oauth_token(OAuthTokenKind::Refresh, 4, app.id, Some(alice.id), "f1"),
    ];
    match store
        .rotate_refresh(&digest(2), replacements.clone(), at(10))
        .await?
    {
        OAuthRefreshUse::Consumed(t) => assert_eq!(t.used_at, Some(at(10))),
        other => panic!("first rotation: {other:?}"),
    }
    assert!(store.oauth_token_by_digest(&digest(4)).await?.is_some());
    match store.rotate_refresh(&digest(2), Vec::new(), at(11)).await? {
        OAuthRefreshUse::AlreadyUsed(t) => assert_eq!(t.family, FamilyId("f1".into())),
        other => panic!("replay: {other:?}"),
    }
    assert!(matches!(
        store.rotate_refresh(&digest(1), Vec::new(), at(11)).await?,
        OAuthRefreshUse::Revoked(_)
    ));
    assert_eq!(
        store
            .rotate_refresh(&digest(77), Vec::new(), at(11))
            .await?,
        OAuthRefreshUse::Unknown
    );
    // A replacement colliding with an existing digest writes nothing, not even the use.
    let err = store
        .rotate_refresh(
            &digest(4),
            vec![new_oauth_token(
                OAuthTokenKind::Access,
                3,
                app.id,
                Some(alice.id),
                "f1",
            )],
            at(12),
        )
        .await
        .expect_err("collision");
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    let (r4, _) = store.oauth_token_by_digest(&digest(4)).await?.expect("t4");
    assert_eq!(r4.used_at, None);
    store
        .revoke_oauth_family(&FamilyId("f1".into()), at(13))
        .await?;
    assert!(matches!(
        store.rotate_refresh(&digest(4), Vec::new(), at(14)).await?,
        OAuthRefreshUse::Revoked(_)
    ));
    Ok(())
}

/// Of concurrent rotations of one refresh token, exactly one succeeds.
pub async fn oauth_rotate_refresh_concurrent_exactly_one<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let app = store.create_application(new_app("c")).await?;
    store
        .create_oauth_tokens(vec![new_oauth_token(
            OAuthTokenKind::Refresh,
            1,
            app.id,
            Some(alice.id),
            "f1",
        )])
        .await?;
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = store.clone();
        let replacement = new_oauth_token(
            OAuthTokenKind::Refresh,
            100 + i,
            app.id,
            Some(alice.id),
            "f1",
        );
        tasks.push(tokio::spawn(async move {
            store
                .rotate_refresh(&digest(1), vec![replacement], at(5))
                .await
        }));
    }
    let mut consumed = 0;
    for t in tasks {
        if let OAuthRefreshUse::Consumed(_) = t.await.expect("task")? {
            consumed += 1;
        }
    }
    assert_eq!(consumed, 1);
    Ok(())
}

/// The account page's list: applications with live user tokens; revoking one application's
/// authorization revokes only its tokens of that user and deletes only that user's codes for it.
pub async fn oauth_authorized_applications_and_revoke<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let a = store.create_application(new_app("a")).await?;
    let b = store.create_application(new_app("b")).await?;
    store
        .create_oauth_tokens(vec![
            new_oauth_token(OAuthTokenKind::Access, 1, a.id, Some(alice.id), "f1"),
            new_oauth_token(OAuthTokenKind::Access, 2, b.id, Some(alice.id), "f2"),
            new_oauth_token(OAuthTokenKind::Access, 3, a.id, Some(bob.id), "f3"),
            new_oauth_token(OAuthTokenKind::Access, 4, a.id, None, "f4"),
        ])
        .await?;
    let listed = store.authorized_applications(alice.id, at(10)).await?;
    let ids: Vec<_> = listed.iter().map(|x| x.application.id).collect();
    assert_eq!(ids, vec![a.id, b.id]);
    assert_eq!(listed[0].scopes, vec!["read", "write"]);
    assert_eq!(listed[0].last_issued, at(1));
    assert!(store
        .authorized_applications(alice.id, at(4000))
        .await?
        .is_empty());
    // Pending codes: alice's for `a` end with the authorization; the others stay.
    store.create_code(new_code(a.id, alice.id, 11)).await?;
    store.create_code(new_code(a.id, bob.id, 12)).await?;
    store.create_code(new_code(b.id, alice.id, 13)).await?;
    assert_eq!(store.revoke_authorization(alice.id, a.id, at(20)).await?, 2);
    let listed = store.authorized_applications(alice.id, at(21)).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].application.id, b.id);
    let (bobs, _) = store.oauth_token_by_digest(&digest(3)).await?.expect("t3");
    assert!(bobs.revoked_at.is_none());
    assert_eq!(store.code_by_digest(&digest(11)).await?, None);
    assert!(matches!(
        store
            .consume_code(&digest(11), &FamilyId("f9".into()), Vec::new(), at(21))
            .await?,
        CodeUse::Unknown
    ));
    assert!(store.code_by_digest(&digest(12)).await?.is_some());
    assert!(store.code_by_digest(&digest(13)).await?.is_some());
    // Nothing left: 0.
    assert_eq!(store.revoke_authorization(alice.id, a.id, at(22)).await?, 0);
    Ok(())
}

/// `delete_expired_oauth` removes only expired codes and tokens; deleting a user or an
/// application removes their codes and tokens.
pub async fn oauth_delete_expired_and_cascades<S: Backend>(
    store: Arc<S>,
) -> Result<(), StoreError> {
    let alice = store.create_user(new_user("alice")).await?;
    let bob = store.create_user(new_user("bob")).await?;
    let app = store.create_application(new_app("c")).await?;
    let other = store.create_application(new_app("d")).await?;
    store.create_code(new_code(app.id, alice.id, 1)).await?;
    let mut late = new_oauth_token(OAuthTokenKind::Access, 3, app.id, None, "f2");
    late.expires_at = at(100_000);
    store
        .create_oauth_tokens(vec![
            new_oauth_token(OAuthTokenKind::Access, 2, app.id, None, "f1"),
            late,
            new_oauth_token(OAuthTokenKind::Access, 4, app.id, Some(bob.id), "f3"),
            new_oauth_token(OAuthTokenKind::Access, 5, other.id, None, "f4"),
        ])
        .await?;
    // The code (60 s) and tokens 2, 4, 5 (3600 s) expire before 4000 s.
    assert_eq!(store.delete_expired_oauth(at(59)).await?, 0);
    assert_eq!(store.delete_expired_oauth(at(4000)).await?, 4);
    assert!(store.oauth_token_by_digest(&digest(3)).await?.is_some());
    assert_eq!(
        store
            .consume_code(&digest(1), &FamilyId("f".into()), Vec::new(), at(1))
            .await?,
        CodeUse::Unknown
    );

    store
        .create_oauth_tokens(vec![new_oauth_token(
            OAuthTokenKind::Access,
            6,
            app.id,
            Some(alice.id),
            "f5",
        )])
        .await?;
    store.create_code(new_code(app.id, alice.id, 7)).await?;
    assert!(store.delete_user(alice.id).await?);
    assert!(store.oauth_token_by_digest(&digest(6)).await?.is_none());
    assert_eq!(
        store
            .consume_code(&digest(7), &FamilyId("f".into()), Vec::new(), at(1))
            .await?,
        CodeUse::Unknown
    );
    assert!(store.delete_application("c").await?);
    assert!(store.oauth_token_by_digest(&digest(3)).await?.is_none());
    Ok(())
}

/// The [`InvalidationBus`](restguard_core::invalidation::InvalidationBus) check, for every
/// bus implementation: what `publisher` publishes reaches a handler subscribed on
/// `subscriber` (another handle on the same bus: a clone in process, another connection for
/// Redis), every kind of event, in order. Subscriptions may take a moment to be in place, so
/// a probe is published until it arrives (at most 5 s).
pub async fn invalidation_bus_delivers(
    publisher: Arc<dyn restguard_core::invalidation::InvalidationBus>,
    subscriber: Arc<dyn restguard_core::invalidation::InvalidationBus>,
) -> Result<(), StoreError> {
    use restguard_core::invalidation::Invalidation;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    subscriber.subscribe(Arc::new(move |event| {
        sink.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }));
    let probe = Invalidation::User(UserId(-1));
    let received = |event: Invalidation| {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&event)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !received(probe) {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber never received the probe"
        );
        publisher.publish(probe).await?;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let events = [
        Invalidation::User(UserId(7)),
        Invalidation::Digest(SecretDigest([0xab; 32])),
        Invalidation::All,
    ];
    for event in events {
        publisher.publish(event).await?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got: Vec<Invalidation> = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .filter(|e| *e != probe)
            .collect();
        if got.len() >= events.len() {
            assert_eq!(got[..events.len()], events);
            return Ok(());
        }
        assert!(std::time::Instant::now() < deadline, "only {got:?} arrived");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
