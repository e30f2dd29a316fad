//! Algorithms, signing keys (generation, PEM import, JWK export) and the key ring that
//! signs with the newest key and verifies with every key whose tokens may still be alive.
//!
//! Stored keys are read and written through a [`SigningKeyStore`]; the server's is wrapped
//! by [`seal_stores`](crate::sealing::seal_stores), so private keys are sealed at rest under
//! the key-encryption key and this module only ever sees them opened.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::rngs::OsRng;
use restguard_core::store::{SigningKey, SigningKeyStore, StoreError};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::digest::random_bytes;

/// The signature algorithms a deployment may choose (one per deployment, CONTRACT §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC-SHA-256 (Simple JWT's default).
    HS256,
    /// HMAC-SHA-384.
    HS384,
    /// HMAC-SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit keys).
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl JwtAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [JwtAlgorithm; 6] = [
        Self::HS256,
        Self::HS384,
        Self::HS512,
        Self::RS256,
        Self::ES256,
        Self::EdDSA,
    ];

    /// The JWA name (the header's `alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    /// True for the HMAC algorithms (their keys are secrets and never published).
    pub fn is_symmetric(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    pub(crate) fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
            Self::HS384 => jsonwebtoken::Algorithm::HS384,
            Self::HS512 => jsonwebtoken::Algorithm::HS512,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    /// Shortest HMAC secret accepted, in bytes (the hash's output size, RFC 7518 §3.2).
    pub fn min_secret_len(self) -> usize {
        match self {
            Self::HS384 => 48,
            Self::HS512 => 64,
            _ => 32,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = String;

    /// Parses a JWA name, exactly (`HS256`, `HS384`, `HS512`, `RS256`, `ES256`, `EdDSA`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("unsupported algorithm {s:?} (HS256, HS384, HS512, RS256, ES256, EdDSA)")
            })
    }
}

/// Why a key could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The configured or stored key material is unusable.
    #[error("invalid {algorithm} key: {reason}")]
    Invalid {
        /// The algorithm the key was meant for.
        algorithm: JwtAlgorithm,
        /// What is wrong.
        reason: String,
    },
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(algorithm: JwtAlgorithm, reason: impl fmt::Display) -> KeyError {
    KeyError::Invalid {
        algorithm,
        reason: reason.to_string(),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The RFC 7638 thumbprint of a public JWK (its required members, sorted, no whitespace).
fn thumbprint(jwk: &Map<String, Value>) -> String {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["crv", "kty", "x"],
    };
    let mut canonical = Map::new();
    for m in members {
        if let Some(v) = jwk.get(*m) {
            canonical.insert((*m).to_owned(), v.clone());
        }
    }
    b64(&Sha256::digest(
        Value::Object(canonical).to_string().as_bytes(),
    ))
}

/// A private key in PKCS#8 PEM and its public JWK members (without `kid`, `use`, `alg`).
struct KeyPair {
    pem: String,
    public: Map<String, Value>,
}

fn rsa_pair(key: &rsa::RsaPrivateKey) -> Result<KeyPair, KeyError> {
    use rsa::{pkcs8::EncodePrivateKey, traits::PublicKeyParts};
    let pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| invalid(JwtAlgorithm::RS256, e))?;
    let mut public = Map::new();
    public.insert("kty".into(), json!("RSA"));
    public.insert("n".into(), json!(b64(&key.n().to_bytes_be())));
    public.insert("e".into(), json!(b64(&key.e().to_bytes_be())));
    Ok(KeyPair {
        pem: pem.to_string(),
        public,
    })
}

fn p256_pair(key: &p256::SecretKey) -> Result<KeyPair, KeyError> {
    use p256::{elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey};
    let pem = key
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .map_err(|e| invalid(JwtAlgorithm::ES256, e))?;
    let point = key.public_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(invalid(JwtAlgorithm::ES256, "public key at infinity"));
    };
    let mut public = Map::new();
    public.insert("kty".into(), json!("EC"));
    public.insert("crv".into(), json!("P-256"));
    public.insert("x".into(), json!(b64(x)));
    public.insert("y".into(), json!(b64(y)));
    Ok(KeyPair {
        pem: pem.to_string(),
        public,
    })
}

fn ed25519_pair(key: &ed25519_dalek::SigningKey) -> Result<KeyPair, KeyError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| invalid(JwtAlgorithm::EdDSA, e))?;
    let mut public = Map::new();
    public.insert("kty".into(), json!("OKP"));
    public.insert("crv".into(), json!("Ed25519"));
    public.insert("x".into(), json!(b64(key.verifying_key().as_bytes())));
    Ok(KeyPair {
        pem: pem.to_string(),
        public,
    })
}

fn record(algorithm: JwtAlgorithm, pair: KeyPair, created: OffsetDateTime) -> SigningKey {
    let kid = thumbprint(&pair.public);
    let mut jwk = pair.public;
    jwk.insert("kid".into(), json!(kid));
    jwk.insert("use".into(), json!("sig"));
    jwk.insert("alg".into(), json!(algorithm.as_str()));
    SigningKey {
        kid,
        algorithm: algorithm.as_str().to_owned(),
        private_key: pair.pem.into_bytes(),
        public_jwk: Some(Value::Object(jwk).to_string()),
        created,
        retired_at: None,
    }
}

/// Generates a new key for `algorithm`: a 64-byte random secret (random `kid`) for HMAC, a
/// fresh key pair for the others (`kid` = its RFC 7638 thumbprint).
///
/// RSA keys are 2048 bits; generating one takes a moment, so this runs on a blocking thread
/// when called through [`generate_key`].
pub fn generate_key_blocking(
    algorithm: JwtAlgorithm,
    created: OffsetDateTime,
) -> Result<SigningKey, KeyError> {
    match algorithm {
        JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => Ok(SigningKey {
            kid: b64(&random_bytes::<16>()),
            algorithm: algorithm.as_str().to_owned(),
            private_key: random_bytes::<64>().to_vec(),
            public_jwk: None,
            created,
            retired_at: None,
        }),
        JwtAlgorithm::RS256 => {
            let key =
                rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| invalid(algorithm, e))?;
            Ok(record(algorithm, rsa_pair(&key)?, created))
        }
        JwtAlgorithm::ES256 => {
            let key = p256::SecretKey::random(&mut OsRng);
            Ok(record(algorithm, p256_pair(&key)?, created))
        }
        JwtAlgorithm::EdDSA => {
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            Ok(record(algorithm, ed25519_pair(&key)?, created))
        }
    }
}

/// [`generate_key_blocking`] on a blocking thread.
pub async fn generate_key(
    algorithm: JwtAlgorithm,
    created: OffsetDateTime,
) -> Result<SigningKey, KeyError> {
    match tokio::task::spawn_blocking(move || generate_key_blocking(algorithm, created)).await {
        Ok(result) => result,
        Err(e) => Err(invalid(algorithm, format!("key generation failed: {e}"))),
    }
}

/// A key given in configuration: the HMAC secret itself, or a private key in PEM (PKCS#8;
/// also PKCS#1 for RSA and SEC1 for P-256). Its `kid` is derived from it, so every instance
/// configured with the same key agrees.
pub fn configured_key(algorithm: JwtAlgorithm, material: &str) -> Result<SigningKey, KeyError> {
    let created = OffsetDateTime::UNIX_EPOCH;
    match algorithm {
        JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => {
            if material.len() < algorithm.min_secret_len() {
                return Err(invalid(
                    algorithm,
                    format!(
                        "the secret must be at least {} bytes",
                        algorithm.min_secret_len()
                    ),
                ));
            }
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(material.as_bytes())
                .map_err(|e| invalid(algorithm, e))?;
            mac.update(b"restguard jwt kid");
            let kid = b64(&mac.finalize().into_bytes()[..12]);
            Ok(SigningKey {
                kid,
                algorithm: algorithm.as_str().to_owned(),
                private_key: material.as_bytes().to_vec(),
                public_jwk: None,
                created,
                retired_at: None,
            })
        }
        JwtAlgorithm::RS256 => {
            use rsa::{pkcs1::DecodeRsaPrivateKey, pkcs8::DecodePrivateKey};
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(material)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(material))
                .map_err(|_| invalid(algorithm, "not an RSA private key in PEM"))?;
            Ok(record(algorithm, rsa_pair(&key)?, created))
        }
        JwtAlgorithm::ES256 => {
            use p256::pkcs8::DecodePrivateKey;
            let key = p256::SecretKey::from_pkcs8_pem(material)
                .or_else(|_| p256::SecretKey::from_sec1_pem(material))
                .map_err(|_| invalid(algorithm, "not a P-256 private key in PEM"))?;
            Ok(record(algorithm, p256_pair(&key)?, created))
        }
        JwtAlgorithm::EdDSA => {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(material)
                .map_err(|_| invalid(algorithm, "not an Ed25519 private key in PEM"))?;
            Ok(record(algorithm, ed25519_pair(&key)?, created))
        }
    }
}

/// A key ready for use.
pub(crate) struct LoadedKey {
    pub(crate) kid: String,
    pub(crate) algorithm: JwtAlgorithm,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    /// The base64url header (`{"alg","kid","typ"}`), the same for every token of this key.
    pub(crate) encoded_header: String,
    pub(crate) public_jwk: Option<Value>,
}

impl LoadedKey {
    pub(crate) fn from_record(key: &SigningKey) -> Result<Self, KeyError> {
        let algorithm: JwtAlgorithm =
            key.algorithm
                .parse()
                .map_err(|e: String| KeyError::Invalid {
                    algorithm: JwtAlgorithm::HS256,
                    reason: e,
                })?;
        let bad = |what: &str| invalid(algorithm, format!("stored key {}: {what}", key.kid));
        let (encoding, decoding, public_jwk) = if algorithm.is_symmetric() {
            (
                EncodingKey::from_secret(&key.private_key),
                DecodingKey::from_secret(&key.private_key),
                None,
            )
        } else {
            let jwk: Value = key
                .public_jwk
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok())
                .ok_or_else(|| bad("public key missing or not JSON"))?;
            let member = |name: &str| {
                jwk.get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("public key member missing"))
            };
            let pem = &key.private_key;
            let (encoding, decoding) = match algorithm {
                JwtAlgorithm::RS256 => (
                    EncodingKey::from_rsa_pem(pem),
                    DecodingKey::from_rsa_components(member("n")?, member("e")?),
                ),
                JwtAlgorithm::ES256 => (
                    EncodingKey::from_ec_pem(pem),
                    DecodingKey::from_ec_components(member("x")?, member("y")?),
                ),
                _ => (
                    EncodingKey::from_ed_pem(pem),
                    DecodingKey::from_ed_components(member("x")?),
                ),
            };
            (
                encoding.map_err(|e| bad(&e.to_string()))?,
                decoding.map_err(|e| bad(&e.to_string()))?,
                Some(jwk),
            )
        };
        let header = json!({"alg": algorithm.as_str(), "kid": key.kid, "typ": "JWT"});
        Ok(Self {
            kid: key.kid.clone(),
            algorithm,
            encoding,
            decoding,
            encoded_header: b64(header.to_string().as_bytes()),
            public_jwk,
        })
    }
}

/// The keys in use at one moment: one signs, several verify.
pub(crate) struct KeySet {
    pub(crate) signing: Arc<LoadedKey>,
    pub(crate) verifying: HashMap<String, Arc<LoadedKey>>,
    pub(crate) jwks: Value,
}

impl KeySet {
    fn new(signing: Arc<LoadedKey>, others: Vec<Arc<LoadedKey>>) -> Self {
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        for key in others.into_iter().chain(std::iter::once(signing.clone())) {
            if let Some(jwk) = &key.public_jwk {
                jwks.push(jwk.clone());
            }
            verifying.insert(key.kid.clone(), key);
        }
        // Newest first, so a client trying keys in order meets the signing key first.
        jwks.reverse();
        Self {
            signing,
            verifying,
            jwks: json!({ "keys": jwks }),
        }
    }
}

/// Where keys come from.
pub(crate) enum KeySource {
    /// One key from configuration (never rotated by the store).
    Configured(Arc<KeySet>),
    /// Generated keys persisted in the store.
    Stored {
        store: Arc<dyn SigningKeyStore>,
        algorithm: JwtAlgorithm,
        /// How long a retired key keeps verifying.
        verify_window: Duration,
    },
}

/// How often every process re-reads the stored keys (one small query), so a key rotated or
/// removed by another process (`restguard keys rotate`, `keys purge-retired`) is in use
/// everywhere within this long. The request path never waits for the store.
pub(crate) const KEY_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Extra time a retired key keeps verifying beyond the longest token lifetime: covers
/// instances that signed with it a moment after the rotation, and clocks that disagree.
pub(crate) const ROTATION_MARGIN: Duration = Duration::from_secs(60);
/// Least time between two reloads caused by unknown `kid`s (so junk tokens cannot hammer the
/// database).
const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Which keys a [`KeySet`] was built from: `(kid, signs)` in store order. Two polls that
/// give the same fingerprint keep the loaded keys (no PEM parsing once a second).
type Fingerprint = Vec<(String, bool)>;

/// The current [`KeySet`], kept in step with the store by a background task.
pub(crate) struct KeyRing {
    source: KeySource,
    current: RwLock<(Arc<KeySet>, Fingerprint)>,
    /// Bumped whenever a key stops verifying, so caches of verified tokens know to check
    /// them again.
    generation: AtomicU64,
    unknown_kid_reload_at: AtomicI64,
    /// Whether the last poll failed (to log an outage once, not once a second).
    poll_failing: AtomicBool,
}

fn now_s() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl KeyRing {
    /// Loads the keys (creating the first stored one when there is none) and, for stored
    /// keys, starts the task that re-reads them every [`KEY_POLL_INTERVAL`] for as long as
    /// the ring is alive.
    pub(crate) async fn start(source: KeySource) -> Result<Arc<Self>, KeyError> {
        let (set, fingerprint) = match &source {
            KeySource::Configured(set) => (set.clone(), Vec::new()),
            KeySource::Stored {
                store,
                algorithm,
                verify_window,
            } => {
                let (set, fingerprint) =
                    load_stored(store.as_ref(), *algorithm, *verify_window, true, None).await?;
                (
                    Arc::new(set.ok_or_else(no_active_key(*algorithm))?),
                    fingerprint,
                )
            }
        };
        let ring = Arc::new(Self {
            source,
            current: RwLock::new((set, fingerprint)),
            generation: AtomicU64::new(0),
            unknown_kid_reload_at: AtomicI64::new(0),
            poll_failing: AtomicBool::new(false),
        });
        if matches!(ring.source, KeySource::Stored { .. }) {
            let weak = Arc::downgrade(&ring);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(KEY_POLL_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    // Ends with the ring (the service was dropped).
                    let Some(ring) = weak.upgrade() else { break };
                    ring.poll().await;
                }
            });
        }
        Ok(ring)
    }

    /// The keys now (cheap: one `Arc` clone).
    pub(crate) fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(current) => current.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Changes whenever a key stops verifying (one atomic load).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn fingerprint(&self) -> Fingerprint {
        match self.current.read() {
            Ok(current) => current.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    fn replace(&self, set: KeySet, fingerprint: Fingerprint) {
        let removed = {
            let mut current = match self.current.write() {
                Ok(current) => current,
                Err(poisoned) => poisoned.into_inner(),
            };
            let removed = current
                .0
                .verifying
                .keys()
                .any(|kid| !set.verifying.contains_key(kid));
            *current = (Arc::new(set), fingerprint);
            removed
        };
        if removed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Re-reads the stored keys (never generates one); keeps the loaded keys when nothing
    /// changed.
    pub(crate) async fn reload(&self) -> Result<(), KeyError> {
        if let KeySource::Stored {
            store,
            algorithm,
            verify_window,
        } = &self.source
        {
            let known = self.fingerprint();
            let (set, fingerprint) = load_stored(
                store.as_ref(),
                *algorithm,
                *verify_window,
                false,
                Some(&known),
            )
            .await?;
            if let Some(set) = set {
                tracing::info!(
                    algorithm = %algorithm,
                    signing_kid = %set.signing.kid,
                    verifying = set.verifying.len(),
                    "JWT signing keys changed in the store; now in use"
                );
                self.replace(set, fingerprint);
            }
        }
        Ok(())
    }

    /// One background poll: reload, logging an outage once and its end once.
    async fn poll(&self) {
        match self.reload().await {
            Ok(()) => {
                if self.poll_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("JWT signing keys readable again");
                }
            }
            Err(e) => {
                if !self.poll_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "could not re-read JWT signing keys; using the loaded ones");
                }
            }
        }
    }

    /// Reloads at once after an unknown `kid` (a key rotated by another process less than a
    /// poll ago), at most every few seconds. Returns whether it reloaded.
    pub(crate) async fn reload_for_unknown_kid(&self) -> bool {
        if matches!(self.source, KeySource::Configured(_)) {
            return false;
        }
        let now = now_s();
        let last = self.unknown_kid_reload_at.load(Ordering::Relaxed);
        if now - last < UNKNOWN_KID_RELOAD_INTERVAL.as_secs() as i64
            || self
                .unknown_kid_reload_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        match self.reload().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not reload JWT signing keys");
                false
            }
        }
    }
}

fn no_active_key(algorithm: JwtAlgorithm) -> impl FnOnce() -> KeyError {
    move || {
        invalid(
            algorithm,
            "no active signing key in the store (run `restguard keys rotate`)",
        )
    }
}

/// A key set of exactly one configured key.
pub(crate) fn configured_set(key: &SigningKey) -> Result<KeySet, KeyError> {
    Ok(KeySet::new(
        Arc::new(LoadedKey::from_record(key)?),
        Vec::new(),
    ))
}

/// The key set the store describes, or `None` when it has the fingerprint `known` (nothing
/// changed). Keys of `algorithm` that are active, or retired less than `verify_window` ago.
async fn load_stored(
    store: &dyn SigningKeyStore,
    algorithm: JwtAlgorithm,
    verify_window: Duration,
    create_if_missing: bool,
    known: Option<&Fingerprint>,
) -> Result<(Option<KeySet>, Fingerprint), KeyError> {
    let mut keys = store.signing_keys().await?;
    let active = |keys: &[SigningKey]| {
        keys.iter()
            .any(|k| k.algorithm == algorithm.as_str() && k.retired_at.is_none())
    };
    if !active(&keys) && create_if_missing {
        let key = generate_key(algorithm, OffsetDateTime::now_utc()).await?;
        // Another instance may win the race; either way there is one active key now.
        store.add_first_signing_key(key).await?;
        keys = store.signing_keys().await?;
    }
    let now = OffsetDateTime::now_utc();
    let in_use: Vec<&SigningKey> = keys
        .iter()
        .filter(|k| k.algorithm == algorithm.as_str())
        .filter(|k| {
            k.retired_at
                .is_none_or(|retired| retired + verify_window > now)
        })
        .collect();
    let fingerprint: Fingerprint = in_use
        .iter()
        .map(|k| (k.kid.clone(), k.retired_at.is_none()))
        .collect();
    if known == Some(&fingerprint) {
        return Ok((None, fingerprint));
    }
    let mut signing = None;
    let mut others = Vec::new();
    for key in in_use {
        let loaded = Arc::new(LoadedKey::from_record(key)?);
        if key.retired_at.is_none() {
            // Oldest first: the last active key is the newest.
            if let Some(previous) = signing.replace(loaded) {
                others.push(previous);
            }
        } else {
            others.push(loaded);
        }
    }
    let signing = signing.ok_or_else(no_active_key(algorithm))?;
    Ok((Some(KeySet::new(signing, others)), fingerprint))
}

/// Adds a new signing key for `algorithm` and retires the current one, which keeps verifying
/// tokens until they have expired. Returns the new key.
pub async fn rotate_signing_key(
    store: &dyn SigningKeyStore,
    algorithm: JwtAlgorithm,
) -> Result<SigningKey, KeyError> {
    let now = OffsetDateTime::now_utc();
    let key = generate_key(algorithm, now).await?;
    store.rotate_signing_key(key.clone(), now).await?;
    Ok(key)
}
