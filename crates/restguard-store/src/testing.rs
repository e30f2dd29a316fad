//! Helpers for tests that need an outside service (PostgreSQL, Redis): reading the service's
//! URL from the environment with the project's skip/fail rule, and scratch PostgreSQL schemas
//! so that tests can run in parallel on one database.
//!
//! * `RESTGUARD_TEST_POSTGRES_URL` / `RESTGUARD_TEST_REDIS_URL` name the services; without
//!   them a test prints why it skips;
//! * with `RESTGUARD_REQUIRE_SERVICES=1` (set by `.ci/run`) a missing service fails instead.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, PgConnection};

/// The variable naming the test PostgreSQL server.
pub const POSTGRES_URL_VAR: &str = "RESTGUARD_TEST_POSTGRES_URL";
/// The variable naming the test Redis server.
pub const REDIS_URL_VAR: &str = "RESTGUARD_TEST_REDIS_URL";
/// Set to `1` to turn skips into failures.
pub const REQUIRE_VAR: &str = "RESTGUARD_REQUIRE_SERVICES";

/// Whether missing services fail the run.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// The URL in `var`, or `None` after printing why the calling test skips.
///
/// # Panics
/// When the variable is unset and [`services_required`].
pub fn service_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !services_required(),
                "{test}: {var} is not set but {REQUIRE_VAR}=1"
            );
            eprintln!("skipping {test}: {var} is not set");
            None
        }
    }
}

/// A name no other test (in this or another process) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with `search_path` set to `schema` (through the `options` URL parameter).
pub fn url_with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

/// A PostgreSQL schema created for one test and dropped (with everything in it) when this
/// guard is dropped.
#[derive(Debug)]
pub struct ScratchSchema {
    base_url: String,
    name: String,
    url: String,
}

impl ScratchSchema {
    /// Creates `rg_test_<unique>` on the server at `base_url`.
    ///
    /// # Panics
    /// When the server cannot be reached (a test helper: the failure is the test's).
    pub async fn create(base_url: &str) -> ScratchSchema {
        let name = unique_name("rg_test_");
        let mut conn = PgConnection::connect(base_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create schema {name}: {e}"));
        let _ = conn.close().await;
        ScratchSchema {
            url: url_with_search_path(base_url, &name),
            base_url: base_url.to_owned(),
            name,
        }
    }

    /// The URL whose connections use this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        let base_url = self.base_url.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own small runtime.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let attempt = async {
                    let mut conn = PgConnection::connect(&base_url).await.ok()?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut conn)
                        .await
                        .ok()?;
                    conn.close().await.ok()
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), attempt).await;
            });
        });
        let _ = dropper.join();
    }
}

/// A Redis key prefix for one test; every key under it is deleted when this guard is dropped.
#[derive(Debug)]
pub struct RedisPrefix {
    url: String,
    prefix: String,
}

impl RedisPrefix {
    /// A new `rg_test:<unique>:` prefix on the Redis at `url`.
    pub fn new(url: &str) -> RedisPrefix {
        RedisPrefix {
            url: url.to_owned(),
            prefix: unique_name("rg_test:") + ":",
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = ::redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(std::time::Duration::from_secs(2))
        else {
            return;
        };
        let _: Result<i64, _> = ::redis::Script::new(
            "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do \
             n = n + redis.call('DEL', k) end return n",
        )
        .arg(&self.prefix)
        .invoke(&mut conn);
    }
}
