//! Refresh-token reuse detection under concurrency on PostgreSQL (CONTRACT §10, RFC 9700
//! §4.14.2), across two `restguard serve` instances sharing one database.
//!
//! The attack: a thief and the victim both hold a refresh token. The victim rotates first, so
//! the thief's copy is a *used* member of the family; while the thief keeps rotating the
//! family's live token as fast as it can on one instance, the stale copy is presented on the
//! other. Presenting it revokes the family — and under READ COMMITTED a revocation that does
//! not serialize with concurrent rotations misses the child a rotation is inserting at that
//! moment, and the thief's chain lives on. Afterwards no member of any family may refresh.
//!
//! Many families race at once (each replay lands at a different point of its chain's
//! rotations), for JWT refresh tokens and OAuth2 refresh tokens alike.
//!
//! Needs `RESTGUARD_TEST_POSTGRES_URL` (skipped with a printed reason, a failure under
//! `RESTGUARD_REQUIRE_SERVICES=1`).

mod common;
mod session_support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{basic, cli_in, Body, Reply, Server};
use reqwest::Method;
use restguard_store::testing::{service_url, ScratchSchema, POSTGRES_URL_VAR};
use serde_json::json;
use session_support::PLAIN_HTTP;

const PW: &str = "pw-alice-race-1234";
/// Families racing at once.
const FAMILIES: usize = 40;
/// How long a chain may keep rotating after its family was revoked before it counts as
/// having escaped (one request in flight at the revocation may still finish).
const GRACE: Duration = Duration::from_millis(400);

/// Which refresh tokens race.
#[derive(Clone)]
enum Kind {
    Jwt,
    OAuth2 { client_id: String, secret: String },
}

impl Kind {
    /// A new family: its first refresh token.
    async fn obtain(&self, server: &Server) -> String {
        let reply = match self {
            Kind::Jwt => {
                server
                    .request(
                        Method::POST,
                        "/api/token/",
                        None,
                        Body::Json(json!({"username": "alice", "password": PW})),
                    )
                    .await
            }
            Kind::OAuth2 { client_id, secret } => {
                server
                    .request(
                        Method::POST,
                        "/o/token/",
                        Some(&basic(client_id, secret)),
                        Body::Form(vec![
                            ("grant_type", "password".into()),
                            ("username", "alice".into()),
                            ("password", PW.into()),
                        ]),
                    )
                    .await
            }
        };
        assert_eq!(reply.status, 200, "{reply:?}");
        self.refresh_of(&reply)
    }

    fn refresh_of(&self, reply: &Reply) -> String {
        let field = match self {
            Kind::Jwt => "refresh",
            Kind::OAuth2 { .. } => "refresh_token",
        };
        reply.json[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {reply:?}"))
            .to_owned()
    }

    /// Rotates `token` on `server`: the next refresh token, or the refusal (checked to be
    /// the contract's answer for a dead refresh token).
    async fn rotate(&self, server: &Server, token: &str) -> Result<String, ()> {
        let reply = match self {
            Kind::Jwt => {
                server
                    .request(
                        Method::POST,
                        "/api/token/refresh/",
                        None,
                        Body::Json(json!({"refresh": token})),
                    )
                    .await
            }
            Kind::OAuth2 { client_id, secret } => {
                server
                    .request(
                        Method::POST,
                        "/o/token/",
                        Some(&basic(client_id, secret)),
                        Body::Form(vec![
                            ("grant_type", "refresh_token".into()),
                            ("refresh_token", token.into()),
                        ]),
                    )
                    .await
            }
        };
        if reply.status == 200 {
            return Ok(self.refresh_of(&reply));
        }
        match self {
            Kind::Jwt => reply.assert(
                401,
                Some("Bearer realm=\"api\""),
                &json!({"detail": "Token is blacklisted", "code": "token_not_valid"}),
            ),
            Kind::OAuth2 { .. } => {
                assert_eq!(reply.status, 400, "{reply:?}");
                assert_eq!(
                    reply.json,
                    json!({"error": "invalid_grant", "error_description": "The refresh token is invalid or expired."}),
                    "{reply:?}"
                );
            }
        }
        Err(())
    }
}

/// One family's race: whether a member still refreshes after the reuse was detected, and how
/// many rotations the thief made.
async fn family_race(kind: &Kind, a: &Server, b: &Server, replay_after: Duration) -> (bool, usize) {
    let stolen = kind.obtain(a).await;
    // The victim rotates first: the thief's copy is now a used member of the family.
    let live = kind.rotate(a, &stolen).await.expect("first rotation");
    let stop = Arc::new(AtomicBool::new(false));
    let rotator = {
        let stop = stop.clone();
        async move {
            let mut current = live;
            let mut rotations = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let server = if rotations.is_multiple_of(2) { a } else { b };
                match kind.rotate(server, &current).await {
                    Ok(next) => current = next,
                    Err(()) => break,
                }
                rotations += 1;
            }
            (current, rotations)
        }
    };
    let replay = async {
        tokio::time::sleep(replay_after).await;
        // Reuse: refused, and the family is revoked before this answer is sent.
        assert!(
            kind.rotate(b, &stolen).await.is_err(),
            "a used refresh token was accepted"
        );
        tokio::time::sleep(GRACE).await;
        stop.store(true, Ordering::Relaxed);
    };
    let ((last, rotations), ()) = tokio::join!(rotator, replay);
    // No member refreshes any more, on either instance.
    let escaped = kind.rotate(a, &last).await.is_ok() || kind.rotate(b, &last).await.is_ok();
    (escaped, rotations)
}

async fn race(kind: Kind, a: &Server, b: &Server, backend: &str) {
    let outcomes = futures_util::future::join_all((0..FAMILIES).map(|i| {
        family_race(
            &kind,
            a,
            b,
            Duration::from_millis(30 + (i as u64 * 11) % 90),
        )
    }))
    .await;
    let escaped = outcomes.iter().filter(|(e, _)| *e).count();
    let rotations: usize = outcomes.iter().map(|(_, n)| n).sum();
    let what = match kind {
        Kind::Jwt => "JWT",
        Kind::OAuth2 { .. } => "OAuth2",
    };
    eprintln!("{backend} {what}: {rotations} rotations raced {FAMILIES} replays; {escaped} families escaped");
    // The thieves were rotating when their replays landed: the race was run.
    assert!(
        rotations >= FAMILIES,
        "{backend} {what}: only {rotations} rotations"
    );
    assert_eq!(
        escaped, 0,
        "{backend} {what}: {escaped} of {FAMILIES} refresh-token families kept rotating after their reuse revoked them"
    );
}

/// Two instances started with `env`, alice, and a confidential client of the password grant.
async fn contest(env: &[(&str, &str)], backend: &str) {
    let a = Server::start_with_env(env);
    let b = Server::start_with_env(env);
    let line = format!("{PW}\n");
    cli_in(
        a.dir(),
        &["user", "create", "alice", "--password-stdin"],
        Some(line.as_bytes()),
        env,
    )
    .assert_ok();
    let out = cli_in(
        a.dir(),
        &[
            "app",
            "create",
            "--name",
            "racer",
            "--client-type",
            "confidential",
            "--grant",
            "password",
        ],
        None,
        env,
    );
    out.assert_ok();
    let app: serde_json::Value = serde_json::from_str(&out.stdout).expect("app JSON");
    let oauth2 = Kind::OAuth2 {
        client_id: app["client_id"].as_str().expect("id").to_owned(),
        secret: app["client_secret"].as_str().expect("secret").to_owned(),
    };
    race(Kind::Jwt, &a, &b, backend).await;
    race(oauth2, &a, &b, backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_revokes_families_that_rotate_concurrently_on_two_postgres_instances() {
    let Some(base) = service_url(
        POSTGRES_URL_VAR,
        "reuse_revokes_families_that_rotate_concurrently_on_two_postgres_instances",
    ) else {
        return;
    };
    let schema = ScratchSchema::create(&base).await;
    let url = schema.url().to_owned();
    contest(
        &[
            ("RESTGUARD_DATABASE__URL", url.as_str()),
            ("RESTGUARD_OAUTH2__PASSWORD_GRANT", "true"),
            ("RESTGUARD_DATABASE__MAX_CONNECTIONS", "20"),
            // Instances on one PostgreSQL database share the key-encryption key.
            (
                "RESTGUARD_SERVER__SECRET_KEY",
                "cmVmcmVzaCByYWNlIGluc3RhbmNlcyBzaGFyZSB0aGk=",
            ),
            PLAIN_HTTP,
        ],
        "PostgreSQL",
    )
    .await;
}

/// The same race on one SQLite file shared by two processes (each with its group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_revokes_families_that_rotate_concurrently_on_two_sqlite_instances() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    contest(
        &[
            ("RESTGUARD_DATABASE__URL", url.as_str()),
            ("RESTGUARD_OAUTH2__PASSWORD_GRANT", "true"),
            PLAIN_HTTP,
        ],
        "SQLite",
    )
    .await;
}
