//! Redis: shared throttle counters ([`RedisThrottleStore`]) so that several restguard
//! instances enforce one limit in total, browser sessions ([`RedisSessionStore`]), and cache
//! invalidations between instances ([`RedisInvalidationBus`]).
//!
//! Each window is a sorted set of event times (microseconds, from the Redis server's clock so
//! that instances with skewed clocks agree) under `<prefix><key>`; one Lua script trims,
//! counts, decides and records atomically, so concurrent requests from any number of
//! connections and instances never admit more than the limit. Keys expire one period after
//! their last event.
//!
//! The connection is opened lazily and re-established by the connection manager after an
//! outage; every command is bounded by a timeout. Failures are
//! [`StoreError::Unavailable`]; whether that lets requests through (fail-open) or refuses them
//! is the throttle's decision (`restguard::throttle`).

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use ::redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, Client, RedisError, Script};
use async_trait::async_trait;
use restguard_core::{rate::Rate, store::StoreError, throttle::ThrottleStore};
use tokio::sync::OnceCell;

mod invalidation;
mod sessions;
pub use invalidation::RedisInvalidationBus;
pub use sessions::RedisSessionStore;

/// The sliding-window script. `KEYS[1]`: the window; `ARGV`: period (µs), limit, mode
/// (`hit`, `check` or `record`), a member suffix unique to this call. Returns the wait in
/// microseconds, or -1 when allowed (and, for `hit`/`record`, recorded).
const WINDOW_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local mode = ARGV[3]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local count = redis.call('ZCARD', KEYS[1])
if mode ~= 'record' and count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = period
  if oldest[2] then
    wait = period - (now - tonumber(oldest[2]))
  end
  if wait < 1 then
    wait = 1
  end
  return wait
end
if mode == 'check' then
  return -1
end
redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[4])
if mode == 'record' then
  local excess = redis.call('ZCARD', KEYS[1]) - limit
  if excess > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
  end
end
redis.call('PEXPIRE', KEYS[1], math.floor(period / 1000) + 1000)
return -1
";

/// Connection settings of a [`RedisThrottleStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Prefix of every key written (several deployments can share one Redis).
    pub key_prefix: String,
    /// Bound on connecting and on each command; past it the call is unavailable.
    pub timeout: Duration,
}

impl Default for RedisOptions {
    /// Prefix `restguard:`, 500 ms timeout.
    fn default() -> Self {
        Self {
            key_prefix: "restguard:".into(),
            timeout: Duration::from_millis(500),
        }
    }
}

impl RedisOptions {
    /// Sets [`key_prefix`](Self::key_prefix).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A lazily opened, self-healing Redis connection with a timeout on every command.
pub(crate) struct Connection {
    client: Client,
    manager: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl Connection {
    /// Parses `url`; connects on first use.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            client: Client::open(url).map_err(StoreError::backend)?,
            manager: OnceCell::new(),
            timeout,
        })
    }

    async fn manager(&self) -> Result<ConnectionManager, StoreError> {
        let timeout = self.timeout;
        self.manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout)
                    .set_number_of_retries(1);
                tokio::time::timeout(
                    timeout,
                    ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await
                .map_err(StoreError::unavailable)?
                .map_err(map_err)
            })
            .await
            .cloned()
    }

    /// Runs `script` with `keys` and `args`, bounded by the timeout.
    pub(crate) async fn script<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut manager = self.manager().await?;
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        tokio::time::timeout(self.timeout, invocation.invoke_async(&mut manager))
            .await
            .map_err(StoreError::unavailable)?
            .map_err(map_err)
    }

    /// `PUBLISH channel payload`, bounded by the timeout.
    pub(crate) async fn publish(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let mut manager = self.manager().await?;
        tokio::time::timeout(
            self.timeout,
            ::redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut manager),
        )
        .await
        .map_err(StoreError::unavailable)?
        .map_err(map_err)?;
        Ok(())
    }

    /// `PING`, bounded by the timeout.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let mut manager = self.manager().await?;
        tokio::time::timeout(
            self.timeout,
            ::redis::cmd("PING").query_async::<String>(&mut manager),
        )
        .await
        .map_err(StoreError::unavailable)?
        .map_err(map_err)?;
        Ok(())
    }
}

/// Throttle windows in Redis, shared by every instance that uses the same Redis and prefix.
pub struct RedisThrottleStore {
    connection: Connection,
    options: RedisOptions,
    script: Script,
    /// Distinguishes this process's events that share a microsecond.
    instance: String,
    sequence: AtomicU64,
}

impl fmt::Debug for RedisThrottleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottleStore")
            .field("key_prefix", &self.options.key_prefix)
            .finish_non_exhaustive()
    }
}

/// The one mapping from Redis errors to [`StoreError`].
pub(crate) fn map_err(e: RedisError) -> StoreError {
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
    {
        StoreError::unavailable(e)
    } else {
        StoreError::backend(e)
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl RedisThrottleStore {
    /// A store for the Redis at `url` (`redis://host:port/db`). Does not connect yet: the
    /// first command does, so a Redis that is down at start-up is an outage like any other.
    /// A malformed URL is an error.
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(Self {
            connection: Connection::new(url, options.timeout)?,
            options,
            script: Script::new(WINDOW_SCRIPT),
            instance: format!("{}.{nanos}", std::process::id()),
            sequence: AtomicU64::new(0),
        })
    }

    async fn run(&self, key: &str, rate: Rate, mode: &str) -> Result<Option<Duration>, StoreError> {
        let member = format!(
            "{}.{}",
            self.instance,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let wait: i64 = self
            .connection
            .script(
                &self.script,
                &[format!("{}{key}", self.options.key_prefix)],
                &[
                    micros(rate.period).max(1).to_string(),
                    rate.requests.to_string(),
                    mode.to_owned(),
                    member,
                ],
            )
            .await?;
        Ok(u64::try_from(wait).ok().map(Duration::from_micros))
    }

    /// Fails when Redis cannot answer (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.connection.ping().await
    }
}

#[async_trait]
impl ThrottleStore for RedisThrottleStore {
    async fn hit(&self, key: &str, rate: Rate) -> Result<Option<Duration>, StoreError> {
        self.run(key, rate, "hit").await
    }

    async fn check(&self, key: &str, rate: Rate) -> Result<Option<Duration>, StoreError> {
        self.run(key, rate, "check").await
    }

    async fn record(&self, key: &str, rate: Rate) -> Result<(), StoreError> {
        self.run(key, rate, "record").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_url_is_an_error() {
        assert!(RedisThrottleStore::new("not a url", RedisOptions::default()).is_err());
    }

    #[tokio::test]
    async fn unreachable_redis_is_unavailable() {
        let store = RedisThrottleStore::new(
            "redis://127.0.0.1:1/",
            RedisOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap();
        let rate = Rate {
            requests: 1,
            period: Duration::from_secs(1),
        };
        let err = store.hit("k", rate).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(store.ping().await.unwrap_err().is_unavailable());
    }
}
