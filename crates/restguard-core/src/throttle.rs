//! Throttles run after permissions (DRF's order); every throttle is consulted and the
//! longest wait wins.

use std::{fmt, net::IpAddr, time::Duration};

use async_trait::async_trait;

use crate::{identity::Identity, store::StoreError};

/// What a throttle sees.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleRequest<'a> {
    /// The client IP, when known.
    pub client_ip: Option<IpAddr>,
    /// The authenticated identity, `None` for anonymous requests.
    pub identity: Option<&'a Identity>,
}

/// A throttle's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleDecision {
    /// The request may proceed (and has been counted).
    Allow,
    /// The request must wait this long.
    Wait(Duration),
}

/// A rate limit (DRF's `BaseThrottle`).
#[async_trait]
pub trait Throttle: Send + Sync + fmt::Debug + 'static {
    /// Counts the request and decides.
    async fn allow_request(
        &self,
        request: &ThrottleRequest<'_>,
    ) -> Result<ThrottleDecision, StoreError>;

    /// A short, fixed name for metrics (DRF's `scope`: `anon`, `user`, a scope name).
    fn scope(&self) -> &str {
        "custom"
    }
}

/// Shared throttle counters (a store concern, like users or tokens): sliding windows of event
/// times per key, kept where every instance sees them (Redis), so that a limit of N holds in
/// total, not per instance. Implementations must make each call atomic.
///
/// Keys are built by the caller (`anon:ip:…`, `user:42`, `login:ip:…`); the store may prefix
/// them.
#[async_trait]
pub trait ThrottleStore: Send + Sync + fmt::Debug + 'static {
    /// DRF's `allow_request` on the window of `key`: when fewer than `rate.requests` events
    /// happened in the last `rate.period`, records this one and answers `None`; otherwise
    /// records nothing and answers how long until the oldest event leaves the window.
    async fn hit(&self, key: &str, rate: crate::rate::Rate)
        -> Result<Option<Duration>, StoreError>;
    /// Like [`hit`](Self::hit) without recording anything.
    async fn check(
        &self,
        key: &str,
        rate: crate::rate::Rate,
    ) -> Result<Option<Duration>, StoreError>;
    /// Records an event whatever the count (a failed login), keeping at most
    /// `rate.requests` events in the window.
    async fn record(&self, key: &str, rate: crate::rate::Rate) -> Result<(), StoreError>;
}
