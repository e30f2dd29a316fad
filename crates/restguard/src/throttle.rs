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
        Mutex,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use restguard_core::{
    rate::Rate,
    store::StoreError,
    throttle::{Throttle, ThrottleDecision, ThrottleRequest},
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
    window: SlidingWindow,
}

impl RateThrottle {
    /// A throttle of `kind` allowing `rate`.
    pub fn new(kind: ThrottleKind, rate: Rate) -> Self {
        Self {
            kind,
            window: SlidingWindow::new(rate),
        }
    }

    fn key(&self, request: &ThrottleRequest<'_>) -> Option<String> {
        let ident = || match request.client_ip {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".to_owned(),
        };
        match (&self.kind, request.identity) {
            (ThrottleKind::Anon, Some(_)) => None,
            (ThrottleKind::Anon, None) => Some(ident()),
            (ThrottleKind::User, Some(i)) => Some(format!("user:{}", i.user.id)),
            (ThrottleKind::User, None) => Some(ident()),
            (ThrottleKind::Scoped(scope), Some(i)) => Some(format!("{scope}:user:{}", i.user.id)),
            (ThrottleKind::Scoped(scope), None) => Some(format!("{scope}:{}", ident())),
        }
    }
}

#[async_trait]
impl Throttle for RateThrottle {
    async fn allow_request(
        &self,
        request: &ThrottleRequest<'_>,
    ) -> Result<ThrottleDecision, StoreError> {
        let Some(key) = self.key(request) else {
            return Ok(ThrottleDecision::Allow);
        };
        Ok(match self.window.hit(&key) {
            Ok(()) => ThrottleDecision::Allow,
            Err(wait) => ThrottleDecision::Wait(wait),
        })
    }
}

/// Failed password attempts per client IP and per username (CONTRACT §10). There is no
/// lockout: once the window moves on, attempts are allowed again.
#[derive(Debug)]
pub struct LoginThrottle {
    per_ip: Option<SlidingWindow>,
    per_username: Option<SlidingWindow>,
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
    /// Limits per IP and per username; `None` disables that limit.
    pub fn new(per_ip: Option<Rate>, per_username: Option<Rate>) -> Self {
        Self {
            per_ip: per_ip.map(SlidingWindow::new),
            per_username: per_username.map(SlidingWindow::new),
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

    /// How long this attempt must wait before a password may be checked, if at all.
    pub fn check(&self, client_ip: Option<IpAddr>, username: &str) -> Option<Duration> {
        let by_ip = self
            .per_ip
            .as_ref()
            .and_then(|w| w.check(&Self::ip_key(client_ip)));
        let by_user = self
            .per_username
            .as_ref()
            .and_then(|w| w.check(&Self::username_key(username)));
        by_ip.max(by_user)
    }

    /// Counts a failed attempt.
    pub fn record_failure(&self, client_ip: Option<IpAddr>, username: &str) {
        if let Some(w) = &self.per_ip {
            w.record(&Self::ip_key(client_ip));
        }
        if let Some(w) = &self.per_username {
            w.record(&Self::username_key(username));
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

    #[test]
    fn login_throttle_counts_failures_only() {
        let t = LoginThrottle::new(Some(rate(3, 60)), Some(rate(2, 3600)));
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(t.check(Some(ip), "alice"), None);
        t.record_failure(Some(ip), "alice");
        assert_eq!(t.check(Some(ip), "Alice"), None);
        t.record_failure(Some(ip), "ALICE");
        // Two failures for this username (any case): the third attempt waits.
        assert!(t.check(Some(ip), "alice").is_some());
        // Another username from the same IP is still allowed (IP limit is 3).
        assert_eq!(t.check(Some(ip), "bob"), None);
        t.record_failure(Some(ip), "bob");
        assert!(t.check(Some(ip), "carol").is_some(), "IP limit reached");
        assert_eq!(t.check(Some([10, 0, 0, 2].into()), "carol"), None);
    }
}
