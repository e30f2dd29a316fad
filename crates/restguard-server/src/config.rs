//! `restguard.toml` plus `RESTGUARD_<SECTION>__<KEY>` environment overrides (CONTRACT §9).

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use restguard::jwt::{JwtAlgorithm, JwtSettings};
use restguard_core::{rate::Rate, secret::SecretString};
use serde::{de, Deserialize, Deserializer, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) database: DatabaseConfig,
    pub(crate) auth: AuthConfig,
    pub(crate) token: TokenConfig,
    pub(crate) jwt: JwtConfig,
    pub(crate) password: PasswordConfig,
    pub(crate) throttle: ThrottleConfig,
    pub(crate) session: SessionConfig,
    pub(crate) csrf: CsrfConfig,
    pub(crate) redis: RedisConfig,
    pub(crate) oauth2: OAuth2Config,
    pub(crate) metrics: MetricsConfig,
    pub(crate) forward_auth: ForwardAuthConfig,
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
    /// Longest a request may take (a store that stopped answering mid-request); past it, 503.
    pub(crate) request_timeout: Seconds,
    /// Reverse proxies whose `X-Forwarded-For` is believed (networks); empty: none.
    pub(crate) trusted_proxies: crate::client_ip::Networks,
    /// The key-encryption key's file; unset: `restguard.key` beside the SQLite file (in the
    /// working directory for PostgreSQL). See `secret_key`.
    pub(crate) secret_key_file: Option<PathBuf>,
    /// The key-encryption key itself (base64 of 32 bytes), normally from
    /// `RESTGUARD_SERVER__SECRET_KEY`; when set, no key file is read or written.
    pub(crate) secret_key: Option<SecretText>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            public_url: None,
            body_limit: ByteSize(64 * 1024),
            shutdown_grace: Seconds(Duration::from_secs(10)),
            request_timeout: Seconds(Duration::from_secs(30)),
            trusted_proxies: crate::client_ip::Networks::default(),
            secret_key_file: None,
            secret_key: None,
        }
    }
}

/// `[forward_auth]`: the one header pair that describes the original request to
/// `GET /auth/verify` (CONTRACT §7). The proxy must set both itself (nginx:
/// `proxy_set_header`, which replaces what the client sent).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ForwardAuthConfig {
    /// The original URI (path and query).
    pub(crate) uri_header: String,
    /// The original method.
    pub(crate) method_header: String,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        Self {
            uri_header: "X-Forwarded-Uri".into(),
            method_header: "X-Forwarded-Method".into(),
        }
    }
}

/// `[metrics]`: who may read `GET /metrics`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// `false`: `/metrics` answers 404.
    pub(crate) enabled: bool,
    /// Client addresses allowed (default loopback only).
    pub(crate) allow_from: crate::client_ip::Networks,
    /// A bearer token required in addition (at least 16 characters); unset: none.
    pub(crate) token: Option<Text>,
}

/// Shortest `metrics.token` accepted.
const MIN_METRICS_TOKEN_LEN: usize = 16;

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_from: crate::client_ip::Networks::loopback(),
            token: None,
        }
    }
}

impl fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("enabled", &self.enabled)
            .field("allow_from", &self.allow_from)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl MetricsConfig {
    /// The access rule; a token too short or an empty address list is an error naming the
    /// key.
    pub(crate) fn access(&self) -> Result<crate::metrics::MetricsAccess, String> {
        if self.enabled && self.allow_from.0.is_empty() {
            return Err(
                "metrics.allow_from: empty (list the scrapers' networks, [\"0.0.0.0/0\", \"::/0\"] with metrics.token for any, or set metrics.enabled = false)"
                    .into(),
            );
        }
        if let Some(token) = &self.token {
            if token.0.trim() != token.0
                || token.0.chars().count() < MIN_METRICS_TOKEN_LEN
                || token.0.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "metrics.token: must be at least {MIN_METRICS_TOKEN_LEN} characters without spaces"
                ));
            }
        }
        Ok(crate::metrics::MetricsAccess {
            enabled: self.enabled,
            allow_from: self.allow_from.clone(),
            token: self.token.as_ref().map(|t| SecretString::new(t.0.clone())),
        })
    }
}

/// `[oauth2]` (CONTRACT §9, Django OAuth Toolkit's settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OAuth2Config {
    pub(crate) access_token_lifetime: Seconds,
    pub(crate) refresh_token_lifetime: Seconds,
    pub(crate) code_lifetime: Seconds,
    /// The password grant (off by default, RFC 9700).
    pub(crate) password_grant: bool,
    /// Accept `code_challenge_method=plain`.
    pub(crate) allow_plain_pkce: bool,
    /// Every scope the server knows.
    pub(crate) scopes: Vec<String>,
    /// Scopes granted when a request names none.
    pub(crate) default_scopes: Vec<String>,
    /// How long access-token checks are cached in process.
    pub(crate) cache_ttl: Seconds,
}

impl Default for OAuth2Config {
    fn default() -> Self {
        let d = restguard_oauth2::OAuthSettings::default();
        Self {
            access_token_lifetime: Seconds(d.access_token_lifetime),
            refresh_token_lifetime: Seconds(d.refresh_token_lifetime),
            code_lifetime: Seconds(d.code_lifetime),
            password_grant: d.password_grant,
            allow_plain_pkce: d.allow_plain_pkce,
            scopes: d.scopes,
            default_scopes: d.default_scopes,
            cache_ttl: Seconds(d.cache_ttl),
        }
    }
}

impl OAuth2Config {
    /// The provider's settings; `public_url` is the server's.
    pub(crate) fn settings(
        &self,
        public_url: String,
    ) -> Result<restguard_oauth2::OAuthSettings, String> {
        for (key, d) in [
            ("oauth2.access_token_lifetime", self.access_token_lifetime.0),
            (
                "oauth2.refresh_token_lifetime",
                self.refresh_token_lifetime.0,
            ),
            ("oauth2.code_lifetime", self.code_lifetime.0),
        ] {
            if d.is_zero() {
                return Err(format!("{key}: must be positive"));
            }
        }
        if let Some(bad) = self.scopes.iter().chain(&self.default_scopes).find(|s| {
            s.is_empty()
                || s.chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        }) {
            return Err(format!("oauth2.scopes: invalid scope {bad:?}"));
        }
        Ok(restguard_oauth2::OAuthSettings {
            public_url,
            access_token_lifetime: self.access_token_lifetime.0,
            refresh_token_lifetime: self.refresh_token_lifetime.0,
            code_lifetime: self.code_lifetime.0,
            password_grant: self.password_grant,
            allow_plain_pkce: self.allow_plain_pkce,
            scopes: self.scopes.clone(),
            default_scopes: self.default_scopes.clone(),
            cache_ttl: self.cache_ttl.0,
        })
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DatabaseConfig {
    pub(crate) url: String,
    /// PostgreSQL: most pooled connections per instance.
    pub(crate) max_connections: u32,
    /// PostgreSQL: how long a request waits for a connection before answering 503.
    pub(crate) acquire_timeout: Seconds,
    /// PostgreSQL: server-side limit per statement (`0` disables it); past it, 503.
    pub(crate) statement_timeout: Seconds,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://restguard.db".into(),
            max_connections: 10,
            acquire_timeout: Seconds(Duration::from_secs(5)),
            statement_timeout: Seconds(Duration::from_secs(5)),
        }
    }
}

/// `[redis]`: shared throttle counters for several instances.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RedisConfig {
    /// `redis://host:port/db`; unset: throttles are kept in process.
    pub(crate) url: Option<Text>,
    /// When Redis is unreachable, refuse throttled requests with 503 instead of letting them
    /// through (the default lets them through and logs).
    pub(crate) throttle_fail_closed: bool,
    /// How long a Redis command may take before it counts as an outage.
    pub(crate) timeout: Seconds,
    /// Prefix of every key restguard writes.
    pub(crate) key_prefix: Text,
    /// Keep browser sessions in Redis instead of the database.
    pub(crate) sessions: bool,
    /// Announce revocations to the other instances through Redis pub/sub, so their caches
    /// drop the stale checks at once.
    pub(crate) invalidations: bool,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "url",
                &self.url.as_ref().map(|u| crate::redact::redact_url(&u.0)),
            )
            .field("throttle_fail_closed", &self.throttle_fail_closed)
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .field("sessions", &self.sessions)
            .field("invalidations", &self.invalidations)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            throttle_fail_closed: false,
            timeout: Seconds(Duration::from_millis(500)),
            key_prefix: Text("restguard:".into()),
            sessions: false,
            invalidations: true,
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
            authenticators: vec![
                "token".into(),
                "jwt".into(),
                "oauth2".into(),
                "basic".into(),
                "session".into(),
            ],
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

/// `[jwt]` (CONTRACT §9, Simple JWT's settings).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct JwtConfig {
    /// `HS256` (default), `HS384`, `HS512`, `RS256`, `ES256` or `EdDSA`.
    pub(crate) algorithm: Algorithm,
    /// HMAC secret or private key PEM; unset: generated and stored in the database.
    pub(crate) signing_key: Option<Text>,
    pub(crate) access_token_lifetime: Seconds,
    pub(crate) refresh_token_lifetime: Seconds,
    pub(crate) sliding_token_lifetime: Seconds,
    pub(crate) sliding_token_refresh_lifetime: Seconds,
    pub(crate) rotate_refresh_tokens: bool,
    pub(crate) blacklist_after_rotation: bool,
    pub(crate) issuer: Option<Text>,
    pub(crate) audience: Option<Text>,
    pub(crate) leeway: Seconds,
    /// Authorization header types (Simple JWT's `AUTH_HEADER_TYPES`), case-sensitive.
    pub(crate) header_types: Keywords,
    /// Identify requests from the claims alone (no user lookup).
    pub(crate) stateless: bool,
    /// How long users are cached in process for token checks.
    pub(crate) user_cache_ttl: Seconds,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm(JwtAlgorithm::HS256),
            signing_key: None,
            access_token_lifetime: Seconds(Duration::from_secs(300)),
            refresh_token_lifetime: Seconds(Duration::from_secs(86_400)),
            sliding_token_lifetime: Seconds(Duration::from_secs(300)),
            sliding_token_refresh_lifetime: Seconds(Duration::from_secs(86_400)),
            rotate_refresh_tokens: true,
            blacklist_after_rotation: true,
            issuer: None,
            audience: None,
            leeway: Seconds(Duration::ZERO),
            header_types: Keywords(vec!["Bearer".into()]),
            stateless: false,
            user_cache_ttl: Seconds(Duration::from_secs(1)),
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

impl JwtConfig {
    /// The library's settings.
    pub(crate) fn settings(&self) -> JwtSettings {
        JwtSettings {
            algorithm: self.algorithm.0,
            signing_key: self
                .signing_key
                .as_ref()
                .map(|k| SecretString::new(k.0.clone())),
            access_token_lifetime: self.access_token_lifetime.0,
            refresh_token_lifetime: self.refresh_token_lifetime.0,
            sliding_token_lifetime: self.sliding_token_lifetime.0,
            sliding_token_refresh_lifetime: self.sliding_token_refresh_lifetime.0,
            rotate_refresh_tokens: self.rotate_refresh_tokens,
            blacklist_after_rotation: self.blacklist_after_rotation,
            issuer: self.issuer.as_ref().map(|t| t.0.clone()),
            audience: self.audience.as_ref().map(|t| t.0.clone()),
            leeway: self.leeway.0,
            stateless: self.stateless,
            user_cache_ttl: self.user_cache_ttl.0,
        }
    }
}

/// A JWT algorithm name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Algorithm(pub(crate) JwtAlgorithm);

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Algorithm).map_err(de::Error::custom)
    }
}

impl Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A string that an environment variable may have made look like a number or a boolean.
#[derive(Clone, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub(crate) struct Text(pub(crate) String);

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret setting: a [`Text`] that never prints.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub(crate) struct SecretText(pub(crate) Text);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ThrottleConfig {
    /// Anonymous requests per client IP, on the default policy (and routes naming `anon`).
    pub(crate) anon: Option<RateValue>,
    /// Requests per user (anonymous: per IP), on the default policy (and routes naming `user`).
    pub(crate) user: Option<RateValue>,
    /// Named rates for routes' `throttles = ["<scope>"]`.
    pub(crate) scopes: BTreeMap<String, RateValue>,
    /// Failed password logins per client IP (`"off"` disables).
    pub(crate) login_ip: LoginRate,
    /// Failed password logins per username (`"off"` disables).
    pub(crate) login_user: LoginRate,
    /// Trusted reverse proxies in front of the server: the client IP is taken from
    /// `X-Forwarded-For` that many hops from the right (DRF's `NUM_PROXIES`); 0 = socket address.
    pub(crate) num_proxies: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            anon: None,
            user: None,
            scopes: BTreeMap::new(),
            login_ip: LoginRate(Some(Rate {
                requests: 20,
                period: Duration::from_secs(60),
            })),
            login_user: LoginRate(Some(Rate {
                requests: 10,
                period: Duration::from_secs(3_600),
            })),
            num_proxies: 0,
        }
    }
}

/// `[session]` (CONTRACT §9; Django's `SESSION_*` settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SessionConfig {
    /// Django's `SESSION_COOKIE_NAME`.
    pub(crate) cookie_name: Text,
    /// Django's `SESSION_COOKIE_SECURE`; `false` only for plain-HTTP development.
    pub(crate) cookie_secure: bool,
    /// A session unused for this long ends.
    pub(crate) idle_timeout: Seconds,
    /// A session ends this long after login (Django's `SESSION_COOKIE_AGE`).
    pub(crate) max_age: Seconds,
    /// How long a session check is cached in process.
    pub(crate) cache_ttl: Seconds,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let defaults = restguard::session::SessionSettings::default();
        Self {
            cookie_name: Text(defaults.cookie_name),
            cookie_secure: defaults.cookie_secure,
            idle_timeout: Seconds(defaults.idle_timeout),
            max_age: Seconds(defaults.max_age),
            cache_ttl: Seconds(defaults.cache_ttl),
        }
    }
}

impl SessionConfig {
    /// The library's settings; a bad cookie name is an error naming the key.
    pub(crate) fn settings(&self) -> Result<restguard::session::SessionSettings, String> {
        if !is_cookie_name(&self.cookie_name.0) {
            return Err(format!(
                "session.cookie_name: {:?} is not a valid cookie name",
                self.cookie_name.0
            ));
        }
        if self.max_age.0.is_zero() || self.idle_timeout.0.is_zero() {
            return Err("session.idle_timeout and session.max_age must be positive".into());
        }
        Ok(restguard::session::SessionSettings {
            cookie_name: self.cookie_name.0.clone(),
            cookie_secure: self.cookie_secure,
            idle_timeout: self.idle_timeout.0,
            max_age: self.max_age.0,
            cache_ttl: self.cache_ttl.0,
        })
    }
}

/// `[csrf]` (CONTRACT §9; Django's `CSRF_*` settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CsrfConfig {
    /// Django's `CSRF_TRUSTED_ORIGINS` (`https://app.example.com`, `https://*.example.com`).
    /// The request's own origin, and `server.public_url`'s, are always trusted.
    pub(crate) trusted_origins: Vec<String>,
    /// Django's `CSRF_COOKIE_NAME`.
    pub(crate) cookie_name: Text,
    /// Django's `CSRF_HEADER_NAME` (as an HTTP header name).
    pub(crate) header_name: Text,
    /// Django's `CSRF_COOKIE_SECURE`; unset: the same as `session.cookie_secure`.
    pub(crate) cookie_secure: Option<bool>,
}

impl Default for CsrfConfig {
    fn default() -> Self {
        Self {
            trusted_origins: Vec::new(),
            cookie_name: Text(restguard::csrf::DEFAULT_COOKIE_NAME.into()),
            header_name: Text(restguard::csrf::DEFAULT_HEADER_NAME.into()),
            cookie_secure: None,
        }
    }
}

impl CsrfConfig {
    /// The library's policy; `public_url`'s origin is trusted too, and an `https` public URL
    /// makes every request count as secure (the `Referer` rules apply behind a TLS proxy).
    pub(crate) fn policy(
        &self,
        public_url: Option<&str>,
    ) -> Result<restguard::csrf::CsrfPolicy, String> {
        if !is_cookie_name(&self.cookie_name.0) {
            return Err(format!(
                "csrf.cookie_name: {:?} is not a valid cookie name",
                self.cookie_name.0
            ));
        }
        if http::HeaderName::from_bytes(self.header_name.0.as_bytes()).is_err() {
            return Err(format!(
                "csrf.header_name: {:?} is not a valid header name",
                self.header_name.0
            ));
        }
        for origin in &self.trusted_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "csrf.trusted_origins: {origin:?} must start with a scheme (http:// or https://)"
                ));
            }
        }
        let mut trusted = self.trusted_origins.clone();
        let mut secure = false;
        if let Some(url) = public_url {
            if let Some(origin) = origin_of(url) {
                secure = origin.starts_with("https://");
                trusted.push(origin);
            }
        }
        Ok(restguard::csrf::CsrfPolicy {
            trusted_origins: trusted,
            header_name: self.header_name.0.clone(),
            cookie_name: self.cookie_name.0.clone(),
            secure_request: secure,
        })
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    (!host.is_empty()).then(|| format!("{}://{}", scheme.to_ascii_lowercase(), host))
}

/// RFC 6265 cookie-name token characters.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A login rate, or `"off"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoginRate(pub(crate) Option<Rate>);

impl<'de> Deserialize<'de> for LoginRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.eq_ignore_ascii_case("off") {
            return Ok(LoginRate(None));
        }
        s.parse()
            .map(|r| LoginRate(Some(r)))
            .map_err(de::Error::custom)
    }
}

impl Serialize for LoginRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(rate) => s.serialize_str(&rate.to_string()),
            None => s.serialize_str("off"),
        }
    }
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
    /// The secrets given in the configuration (not the URLs' passwords), for
    /// [`Scrubber`](crate::redact::Scrubber).
    pub(crate) fn secret_texts(&self) -> Vec<String> {
        [
            self.server.secret_key.as_ref().map(|k| &k.0),
            self.jwt.signing_key.as_ref(),
            self.metrics.token.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|t| t.0.clone())
        .collect()
    }

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

    #[test]
    fn oauth2_section() {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(
                "[oauth2]\naccess_token_lifetime = \"10m\"\ncode_lifetime = 30\npassword_grant = true",
            ))
            .extract()
            .unwrap();
        let settings = config.oauth2.settings("http://h:1/".into()).unwrap();
        assert_eq!(settings.access_token_lifetime, Duration::from_secs(600));
        assert_eq!(settings.code_lifetime, Duration::from_secs(30));
        assert_eq!(
            settings.refresh_token_lifetime,
            Duration::from_secs(30 * 86_400)
        );
        assert!(settings.password_grant && !settings.allow_plain_pkce);
        assert_eq!(settings.issuer(), "http://h:1/o");
        assert!(Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[oauth2]\nimplicit = true"))
            .extract::<Config>()
            .is_err());
        let zero: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[oauth2]\ncode_lifetime = 0"))
            .extract()
            .unwrap();
        assert!(zero.oauth2.settings(String::new()).is_err());
    }

    #[test]
    fn jwt_section() {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(
                "[jwt]\nalgorithm = \"EdDSA\"\nsigning_key = 1234\naccess_token_lifetime = \"10m\"\nleeway = 5\nheader_types = [\"Bearer\", \"JWT\"]",
            ))
            .extract()
            .unwrap();
        let settings = config.jwt.settings();
        assert_eq!(settings.algorithm, JwtAlgorithm::EdDSA);
        assert_eq!(settings.signing_key.unwrap().expose(), "1234");
        assert_eq!(settings.access_token_lifetime, Duration::from_secs(600));
        assert_eq!(settings.leeway, Duration::from_secs(5));
        assert_eq!(config.jwt.header_types.0, ["Bearer", "JWT"]);
        assert!(Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[jwt]\nalgorithm = \"none\""))
            .extract::<Config>()
            .is_err());
        let defaults = Config::default();
        assert_eq!(
            defaults.auth.authenticators,
            ["token", "jwt", "oauth2", "basic", "session"]
        );
        assert_eq!(
            defaults.jwt.settings().refresh_token_lifetime,
            Duration::from_secs(86_400)
        );
    }
}
