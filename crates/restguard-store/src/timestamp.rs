//! Microsecond timestamps, the precision every store keeps.

use time::OffsetDateTime;

/// Unix microseconds of `t` (floored).
pub(crate) fn to_micros(t: OffsetDateTime) -> i64 {
    let micros = t.unix_timestamp_nanos().div_euclid(1_000);
    // `OffsetDateTime` spans ±9999 years, far inside the `i64` microsecond range.
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// The UTC instant `micros` microseconds after the Unix epoch, if representable.
pub(crate) fn from_micros(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()
}

/// `t` truncated to the microsecond, in UTC: what a store gives back for `t`.
pub(crate) fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    from_micros(to_micros(t)).unwrap_or(t)
}
