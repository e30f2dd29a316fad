//! `restguard.toml` plus `RESTGUARD_<SECTION>__<KEY>` environment overrides (CONTRACT §9).

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path, str::FromStr, time::Duration};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use restguard_core::rate::Rate;
use serde::{de, Deserialize, Deserializer, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) database: DatabaseConfig,
    pub(crate) auth: AuthConfig,
    pub(crate) token: TokenConfig,
    pub(crate) password: PasswordConfig,
    pub(crate) throttle: ThrottleConfig,
    #[serde(rename = "route")]
    pub(crate) routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    pub(crate) bind: SocketAddr,
    pub(crate) public_url: Option<String>,
    pub(crate) body_limit: ByteSize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub(crate) shutdown_grace: Seconds,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            public_url: None,
            body_limit: ByteSize(64 * 1024),
            shutdown_grace: Seconds(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DatabaseConfig {
    pub(crate) url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://restguard.db".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthConfig {
    pub(crate) authenticators: Vec<String>,
    pub(crate) permissions: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            authenticators: vec!["token".into(), "basic".into()],
            permissions: vec!["is_authenticated".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TokenConfig {
    /// One keyword or a list (`["Token", "Bearer"]`).
    pub(crate) keyword: Keywords,
    /// How long a token check is cached in process.
    pub(crate) cache_ttl: Seconds,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            keyword: Keywords(vec!["Token".into()]),
            cache_ttl: Seconds(Duration::from_secs(1)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PasswordConfig {
    /// Hashing threads (default: available cores).
    pub(crate) hash_workers: Option<usize>,
    /// Hash jobs queued or running at once.
    pub(crate) max_in_flight: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            hash_workers: None,
            max_in_flight: 64,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ThrottleConfig {
    pub(crate) anon: Option<RateValue>,
    pub(crate) user: Option<RateValue>,
    pub(crate) scopes: BTreeMap<String, RateValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) authenticators: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) permissions: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) throttles: Option<Vec<String>>,
}

/// One token keyword or several.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Keywords(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for Keywords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let words = match OneOrMany::deserialize(d)? {
            OneOrMany::One(w) => vec![w],
            OneOrMany::Many(ws) => ws,
        };
        if words.is_empty()
            || words
                .iter()
                .any(|w| w.is_empty() || w.contains(char::is_whitespace))
        {
            return Err(de::Error::custom("keywords must be non-empty words"));
        }
        Ok(Keywords(words))
    }
}

/// A duration given as seconds (`30`) or with a unit (`500ms`, `30s`, `5m`, `1h`, `1d`, `2w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seconds(pub(crate) Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?} (use 30, 30s, 5m, 1h, 1d, 2w)"))?;
        let d = match unit.trim() {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3_600),
            "d" => Duration::from_secs(n * 86_400),
            "w" => Duration::from_secs(n * 604_800),
            _ => {
                return Err(format!(
                    "invalid duration {s:?} (use 30, 30s, 5m, 1h, 1d, 2w)"
                ))
            }
        };
        Ok(Seconds(d))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30, \"30s\", \"5m\", \"1h\", \"1d\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|v| Seconds(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

/// A size in bytes: `65536`, `64KiB`, `1MiB`, `64KB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) usize);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: usize = num
            .parse()
            .map_err(|_| format!("invalid size {s:?} (use 65536, 64KiB, 1MiB)"))?;
        let factor = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" | "kB" => 1024,
            "MiB" | "M" | "MB" => 1024 * 1024,
            _ => return Err(format!("invalid size {s:?} (use 65536, 64KiB, 1MiB)")),
        };
        Ok(ByteSize(n.saturating_mul(factor)))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 65536 or \"64KiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                usize::try_from(v).map(ByteSize).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                usize::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0 as u64)
    }
}

/// A DRF rate (`100/min`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateValue(pub(crate) Rate);

impl<'de> Deserialize<'de> for RateValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(RateValue).map_err(de::Error::custom)
    }
}

impl Serialize for RateValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl Config {
    /// Defaults, then the file (if given or found), then `RESTGUARD_*__*` variables.
    pub(crate) fn load(file: Option<&Path>) -> Result<Config, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(format!(
                        "configuration file {} does not exist",
                        path.display()
                    ));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => {
                if Path::new("restguard.toml").exists() {
                    figment = figment.merge(Toml::file("restguard.toml"));
                }
            }
        }
        // Only SECTION__KEY variables are configuration; RESTGUARD_CONFIG and the test
        // harness's variables are not.
        figment = figment.merge(
            Env::prefixed("RESTGUARD_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        figment
            .extract::<Config>()
            .map_err(|e| e.to_string().replace('\n', " "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!("5m".parse::<Seconds>().map(|s| s.0.as_secs()), Ok(300));
        assert_eq!("30".parse::<Seconds>().map(|s| s.0.as_secs()), Ok(30));
        assert_eq!(
            "2w".parse::<Seconds>().map(|s| s.0.as_secs()),
            Ok(1_209_600)
        );
        assert!("5y".parse::<Seconds>().is_err());
        assert_eq!("64KiB".parse::<ByteSize>(), Ok(ByteSize(65_536)));
        assert!("lots".parse::<ByteSize>().is_err());
    }
}
