//! DRF's rate strings: `N/s`, `N/m`, `N/h`, `N/d` (anything after the first letter of the
//! period is ignored, so `100/day` works as in DRF).

use std::{fmt, str::FromStr, time::Duration};

/// A number of requests per period.
///
/// ```
/// use restguard_core::rate::Rate;
/// let r: Rate = "100/day".parse().unwrap();
/// assert_eq!(r.requests, 100);
/// assert_eq!(r.period.as_secs(), 86_400);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Allowed requests per period (at least 1).
    pub requests: u32,
    /// The period.
    pub period: Duration,
}

/// A rate string that is not `N/s|m|h|d`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {0:?}: expected N/s, N/m, N/h or N/d")]
pub struct InvalidRate(pub String);

impl FromStr for Rate {
    type Err = InvalidRate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidRate(s.to_owned());
        let (num, period) = s.trim().split_once('/').ok_or_else(invalid)?;
        let requests: u32 = num.trim().parse().map_err(|_| invalid())?;
        if requests == 0 {
            return Err(invalid());
        }
        let seconds = match period.trim().chars().next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3_600,
            Some('d') => 86_400,
            _ => return Err(invalid()),
        };
        Ok(Rate {
            requests,
            period: Duration::from_secs(seconds),
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            3_600 => "h",
            _ => "d",
        };
        write!(f, "{}/{}", self.requests, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_drf_rates() {
        assert_eq!("5/s".parse::<Rate>().map(|r| r.period.as_secs()), Ok(1));
        assert_eq!("20/min".parse::<Rate>().map(|r| r.period.as_secs()), Ok(60));
        assert_eq!("10/hour".parse::<Rate>().map(|r| r.requests), Ok(10));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("x/s".parse::<Rate>().is_err());
        assert!("5/y".parse::<Rate>().is_err());
        assert!("5".parse::<Rate>().is_err());
    }
}
