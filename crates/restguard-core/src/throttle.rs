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
}
