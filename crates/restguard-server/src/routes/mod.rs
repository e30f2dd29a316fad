//! HTTP endpoints.

pub(crate) mod health;
pub(crate) mod jwt;
pub(crate) mod me;
pub(crate) mod no_store;
pub(crate) mod oauth2;
pub(crate) mod pages;
pub(crate) mod session;
pub(crate) mod tokens;
pub(crate) mod verify;

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// RFC 3339 in UTC, as DRF renders datetimes.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}
