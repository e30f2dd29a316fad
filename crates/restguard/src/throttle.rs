//! In-process throttles with DRF's semantics (a sliding window of request times per key), and
//! the login throttle of CONTRACT §10 (failed password attempts per client IP and per
//! username, checked before the password is verified).
//!
//! These hold for one process; a shared (Redis) implementation of the same traits is what a
//! multi-instance deployment uses.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use restguard_core::{
    rate::Rate,
    store::StoreError,
    throttle::{Throttle, ThrottleDecision, ThrottleRequest, ThrottleStore},
};

/// How often (in operations) stale keys are swept.
const SWEEP_EVERY: u64 = 4096;

/// Request times per key over the last `rate.period`, at most `rate.requests` of them.
#[derive(Debug)]
pub struct SlidingWindow {
    rate: Rate,
    history: Mutex<HashMap<String, VecDeque<Instant>>>,
    operations: AtomicU64,
}

impl SlidingWindow {
    /// A window allowing `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            history: Mutex::new(HashMap::new()),
            operations: AtomicU64::new(0),
        }
    }

    /// The rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn with_history<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, VecDeque<Instant>>, Instant) -> T,
    ) -> T {
        let now = Instant::now();
        let mut history = match self.history.lock() {
            Ok(guard) => guard,
            // A panic while holding the lock cannot leave the map inconsistent in a way that
            // matters for rate counting; keep serving.
            Err(poisoned) => poisoned.into_inner(),
        };
        if self.operations.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let period = self.rate.period;
            history.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < period)
            });
        }
        f(&mut history, now)
    }

    fn wait_for(&self, times: &mut VecDeque<Instant>, now: Instant) -> Option<Duration> {
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.rate.period)
        {
            times.pop_front();
        }
        if times.len() >= self.rate.requests as usize {
            let oldest = times.front().copied().unwrap_or(now);
            Some(self.rate.period.saturating_sub(now.duration_since(oldest)))
        } else {
            None
        }
    }

    /// DRF's `allow_request`: counts the request if allowed, else answers how long to wait.
    pub fn hit(&self, key: &str) -> Result<(), Duration> {
        self.with_history(|history, now| {
            let times = history.entry(key.to_owned()).or_default();
            match self.wait_for(times, now) {
                Some(wait) => Err(wait),
                None => {
                    times.push_back(now);
                    Ok(())
                }
            }
        })
    }

    /// How long `key` must wait, without counting anything.
    pub fn check(&self, key: &str) -> Option<Duration> {
        self.with_history(|history, now| {
            let times = history.get_mut(key)?;
            self.wait_for(times, now)
        })
    }

    /// Counts an event for `key` (a failed login).
    pub fn record(&self, key: &str) {
        self.with_history(|history, now| {
            let times = history.entry(key.to_owned()).or_default();
            let _ = self.wait_for(times, now);
            times.push_back(now);
            // Never keep more than the limit: older entries no longer change the answer.
            while times.len() > self.rate.requests as usize {
                times.pop_front();
            }
        });
    }
}

/// What a throttle on a shared [`ThrottleStore`] does when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Let the request through (and log): an outage of the counters never blocks the API.
    #[default]
    Open,
    /// Refuse it as unavailable (503 + `Retry-After`).
    Closed,
}

/// Where a throttle counts: in this process, or in a store shared by every instance.
#[derive(Debug)]
enum Counter {
    Local(SlidingWindow),
    Shared {
        store: Arc<dyn ThrottleStore>,
        rate: Rate,
        fail: FailMode,
    },
}

/// Seconds since the epoch of the last fail-open warning (at most one every 10 s).
static LAST_FAIL_OPEN_LOG: AtomicU64 = AtomicU64::new(0);

fn log_fail_open(error: &StoreError) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_FAIL_OPEN_LOG.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_FAIL_OPEN_LOG
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %error, source = ?std::error::Error::source(error),
            "throttle store unavailable; letting requests through (fail-open)");
    }
}

impl Counter {
    /// Counts a hit if allowed; `Err` only when the shared store fails and the mode is closed.
    async fn hit(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        match self {
            Counter::Local(window) => Ok(window.hit(key).err()),
            Counter::Shared { store, rate, fail } => match store.hit(key, *rate).await {
                Ok(wait) => Ok(wait),
                Err(e) if *fail == FailMode::Open => {
                    log_fail_open(&e);
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        }
    }

    async fn check(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        match self {
            Counter::Local(window) => Ok(window.check(key)),
            Counter::Shared { store, rate, fail } => match store.check(key, *rate).await {
                Ok(wait) => Ok(wait),
                Err(e) if *fail == FailMode::Open => {
                    log_fail_open(&e);
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Records an event; a store failure is only logged (the answer does not depend on it).
    async fn record(&self, key: &str) {
        match self {
            Counter::Local(window) => window.record(key),
            Counter::Shared { store, rate, .. } => {
                if let Err(e) = store.record(key, *rate).await {
                    log_fail_open(&e);
                }
            }
        }
    }
}

/// Who a rate throttle counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottleKind {
    /// Anonymous requests, by client IP (DRF's `AnonRateThrottle`); users pass.
    Anon,
    /// Users by id, anonymous requests by IP (DRF's `UserRateThrottle`).
    User,
    /// Like `User`, in a separate bucket per scope (DRF's `ScopedRateThrottle`).
    Scoped(String),
}

/// A DRF rate throttle kept in process memory.
///
/// ```
/// use restguard::throttle::{RateThrottle, ThrottleKind};
/// let t = RateThrottle::new(ThrottleKind::Anon, "100/min".parse().unwrap());
/// # let _ = t;
/// ```
#[derive(Debug)]
pub struct RateThrottle {
    kind: ThrottleKind,
    counter: Counter,
}

impl RateThrottle {
    /// A throttle of `kind` allowing `rate`, counted in this process.
    pub fn new(kind: ThrottleKind, rate: Rate) -> Self {
        Self {
            kind,
            counter: Counter::Local(SlidingWindow::new(rate)),
        }
    }

    /// A throttle of `kind` allowing `rate` in total over every instance sharing `store`
    /// (keys `rate:<anon|user|scope>:<ident>`); `fail` decides what a store outage does.
    pub fn shared(
        kind: ThrottleKind,
        rate: Rate,
        store: Arc<dyn ThrottleStore>,
        fail: FailMode,
    ) -> Self {
        Self {
            kind,
            counter: Counter::Shared { store, rate, fail },
        }
    }

    fn scope(&self) -> &str {
        match &self.kind {
            ThrottleKind::Anon => "anon",
            ThrottleKind::User => "user",
            ThrottleKind::Scoped(scope) => scope,
        }
    }

    fn key(&self, request: &ThrottleRequest<'_>) -> Option<String> {
        let ident = || match request.client_ip {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".to_owned(),
        };
        // A client-credentials token counts per client, as a user counts per user.
        let principal = |i: &restguard_core::Identity| match i.user() {
            Some(user) => format!("user:{}", user.id),
            None => format!("client:{}", i.client_id().unwrap_or_default()),
        };
        match (&self.kind, request.identity) {
            (ThrottleKind::Anon, Some(_)) => None,
            (ThrottleKind::Anon, None) => Some(ident()),
            (ThrottleKind::User, Some(i)) => Some(principal(i)),
            (ThrottleKind::User, None) => Some(ident()),
            (ThrottleKind::Scoped(scope), Some(i)) => Some(format!("{scope}:{}", principal(i))),
            (ThrottleKind::Scoped(scope), None) => Some(format!("{scope}:{}", ident())),
        }
    }
}

#[async_trait]
impl Throttle for RateThrottle {
    fn scope(&self) -> &str {
        RateThrottle::scope(self)
    }

    async fn allow_request(
        &self,
        request: &ThrottleRequest<'_>,
    ) -> Result<ThrottleDecision, StoreError> {
        let Some(key) = self.key(request) else {
            return Ok(ThrottleDecision::Allow);
        };
        let wait = match &self.counter {
            Counter::Local(window) => window.hit(&key).err(),
            Counter::Shared { .. } => {
                self.counter
                    .hit(&format!("rate:{}:{key}", self.scope()))
                    .await?
            }
        };
        Ok(match wait {
            None => ThrottleDecision::Allow,
            Some(wait) => ThrottleDecision::Wait(wait),
        })
    }
}

/// Failed password attempts per client IP and per username (CONTRACT §10). There is no
/// lockout: once the window moves on, attempts are allowed again.
#[derive(Debug)]
pub struct LoginThrottle {
    per_ip: Option<Counter>,
    per_username: Option<Counter>,
}

impl Default for LoginThrottle {
    /// The contract's defaults: 20 failures a minute per IP, 10 an hour per username.
    fn default() -> Self {
        Self::new(
            Some(Rate {
                requests: 20,
                period: Duration::from_secs(60),
            }),
            Some(Rate {
                requests: 10,
                period: Duration::from_secs(3_600),
            }),
        )
    }
}

impl LoginThrottle {
    /// Limits per IP and per username, counted in this process; `None` disables that limit.
    pub fn new(per_ip: Option<Rate>, per_username: Option<Rate>) -> Self {
        Self {
            per_ip: per_ip.map(|r| Counter::Local(SlidingWindow::new(r))),
            per_username: per_username.map(|r| Counter::Local(SlidingWindow::new(r))),
        }
    }

    /// Limits per IP and per username counted in `store`, shared by every instance (keys
    /// `login:ip:<ip>` and `login:user:<lowercased username>`); `fail` decides what a store
    /// outage does to password logins.
    pub fn shared(
        per_ip: Option<Rate>,
        per_username: Option<Rate>,
        store: Arc<dyn ThrottleStore>,
        fail: FailMode,
    ) -> Self {
        let shared = |rate: Rate| Counter::Shared {
            store: store.clone(),
            rate,
            fail,
        };
        Self {
            per_ip: per_ip.map(shared),
            per_username: per_username.map(shared),
        }
    }

    /// No limits at all.
    pub fn disabled() -> Self {
        Self::new(None, None)
    }

    fn username_key(username: &str) -> String {
        username.to_lowercase()
    }

    fn ip_key(ip: Option<IpAddr>) -> String {
        ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }

    /// How long this attempt must wait before a password may be checked, if at all. An
    /// error only when a shared store fails in [`FailMode::Closed`].
    pub async fn check(
        &self,
        client_ip: Option<IpAddr>,
        username: &str,
    ) -> Result<Option<Duration>, StoreError> {
        let by_ip = match &self.per_ip {
            Some(Counter::Local(w)) => w.check(&Self::ip_key(client_ip)),
            Some(c) => {
                c.check(&format!("login:ip:{}", Self::ip_key(client_ip)))
                    .await?
            }
            None => None,
        };
        let by_user = match &self.per_username {
            Some(Counter::Local(w)) => w.check(&Self::username_key(username)),
            Some(c) => {
                c.check(&format!("login:user:{}", Self::username_key(username)))
                    .await?
            }
            None => None,
        };
        Ok(by_ip.max(by_user))
    }

    /// Counts a failed attempt (a shared store's failure is logged, not returned).
    pub async fn record_failure(&self, client_ip: Option<IpAddr>, username: &str) {
        match &self.per_ip {
            Some(Counter::Local(w)) => w.record(&Self::ip_key(client_ip)),
            Some(c) => {
                c.record(&format!("login:ip:{}", Self::ip_key(client_ip)))
                    .await;
            }
            None => {}
        }
        match &self.per_username {
            Some(Counter::Local(w)) => w.record(&Self::username_key(username)),
            Some(c) => {
                c.record(&format!("login:user:{}", Self::username_key(username)))
                    .await;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32, secs: u64) -> Rate {
        Rate {
            requests: n,
            period: Duration::from_secs(secs),
        }
    }

    #[test]
    fn window_allows_exactly_n() {
        let w = SlidingWindow::new(rate(3, 60));
        assert!(w.hit("a").is_ok());
        assert!(w.hit("a").is_ok());
        assert!(w.hit("a").is_ok());
        let wait = w.hit("a").unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(58));
        assert!(w.hit("b").is_ok(), "keys are independent");
    }

    #[test]
    fn window_slides() {
        let w = SlidingWindow::new(Rate {
            requests: 1,
            period: Duration::from_millis(30),
        });
        assert!(w.hit("a").is_ok());
        assert!(w.hit("a").is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(w.hit("a").is_ok());
    }

    #[tokio::test]
    async fn login_throttle_counts_failures_only() {
        let t = LoginThrottle::new(Some(rate(3, 60)), Some(rate(2, 3600)));
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(t.check(Some(ip), "alice").await.unwrap(), None);
        t.record_failure(Some(ip), "alice").await;
        assert_eq!(t.check(Some(ip), "Alice").await.unwrap(), None);
        t.record_failure(Some(ip), "ALICE").await;
        // Two failures for this username (any case): the third attempt waits.
        assert!(t.check(Some(ip), "alice").await.unwrap().is_some());
        // Another username from the same IP is still allowed (IP limit is 3).
        assert_eq!(t.check(Some(ip), "bob").await.unwrap(), None);
        t.record_failure(Some(ip), "bob").await;
        assert!(
            t.check(Some(ip), "carol").await.unwrap().is_some(),
            "IP limit reached"
        );
        assert_eq!(
            t.check(Some([10, 0, 0, 2].into()), "carol").await.unwrap(),
            None
        );
    }

    /// A store that is always down.
    #[derive(Debug)]
    struct Down;

    #[async_trait]
    impl ThrottleStore for Down {
        async fn hit(&self, _: &str, _: Rate) -> Result<Option<Duration>, StoreError> {
            Err(StoreError::unavailable("down"))
        }
        async fn check(&self, _: &str, _: Rate) -> Result<Option<Duration>, StoreError> {
            Err(StoreError::unavailable("down"))
        }
        async fn record(&self, _: &str, _: Rate) -> Result<(), StoreError> {
            Err(StoreError::unavailable("down"))
        }
    }

    #[tokio::test]
    async fn shared_store_outage_fails_open_or_closed() {
        let request = ThrottleRequest {
            client_ip: Some([10, 0, 0, 1].into()),
            identity: None,
        };
        let open = RateThrottle::shared(
            ThrottleKind::Anon,
            rate(1, 60),
            Arc::new(Down),
            FailMode::Open,
        );
        assert_eq!(
            open.allow_request(&request).await.unwrap(),
            ThrottleDecision::Allow
        );
        let closed = RateThrottle::shared(
            ThrottleKind::Anon,
            rate(1, 60),
            Arc::new(Down),
            FailMode::Closed,
        );
        assert!(closed
            .allow_request(&request)
            .await
            .unwrap_err()
            .is_unavailable());
        let login =
            LoginThrottle::shared(Some(rate(1, 60)), None, Arc::new(Down), FailMode::Closed);
        assert!(login.check(None, "alice").await.is_err());
        login.record_failure(None, "alice").await;
        let login = LoginThrottle::shared(Some(rate(1, 60)), None, Arc::new(Down), FailMode::Open);
        assert_eq!(login.check(None, "alice").await.unwrap(), None);
    }
}
