//! Password hashing (argon2id) and verification of Django hashes, off the async threads.
//!
//! Hashing runs on a dedicated pool of low-priority threads (`nice` +10 on Linux) behind a
//! semaphore: a login flood queues here instead of taking the CPU from token-authenticated
//! requests, and the queue depth is observable.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex, OnceLock,
    },
    thread,
};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Algorithm, Argon2, Params, Version,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use rand::rngs::OsRng;
use restguard_core::{
    secret::SecretString,
    store::{StoreError, UserStore, UNUSABLE_PASSWORD},
    User,
};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tokio::sync::{oneshot, Semaphore};

use crate::throttle::LoginThrottle;

/// Longest password accepted, in bytes (CONTRACT §10); longer ones are refused before hashing.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// Hashing failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Longer than [`MAX_PASSWORD_BYTES`].
    #[error("password longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The empty password cannot be set.
    #[error("password may not be empty")]
    Empty,
    /// The hashing pool has shut down.
    #[error("password hashing pool is not running")]
    PoolClosed,
    /// argon2 refused the input.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The result of checking a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The password matches. `upgrade` holds a fresh argon2id hash when the stored one is
    /// weaker (Django PBKDF2, older argon2 parameters) and should be replaced.
    Valid {
        /// Replacement hash, if the stored one should be upgraded.
        upgrade: Option<String>,
    },
    /// The password does not match (or the stored hash is unusable or unknown).
    Invalid,
}

/// Hashing parameters and pool size.
#[derive(Debug, Clone)]
pub struct HasherConfig {
    /// argon2 memory cost in KiB (default 19456, OWASP).
    pub memory_kib: u32,
    /// argon2 iterations (default 2).
    pub iterations: u32,
    /// argon2 lanes (default 1).
    pub parallelism: u32,
    /// Worker threads (default: available cores).
    pub workers: usize,
    /// Hash jobs queued or running at once; further callers wait (default 64).
    pub max_in_flight: usize,
    /// Run workers at lower scheduling priority (default true).
    pub low_priority: bool,
}

impl Default for HasherConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
            max_in_flight: 64,
            low_priority: true,
        }
    }
}

type Job = Box<dyn FnOnce(&Argon2<'static>) + Send>;

struct Pool {
    sender: Mutex<mpsc::Sender<Job>>,
    permits: Semaphore,
    in_flight: AtomicUsize,
    argon2: Argon2<'static>,
    params: Params,
}

/// A handle to the hashing pool; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new(HasherConfig::default())
    }
}

impl PasswordHasher {
    /// Starts the worker threads.
    ///
    /// # Panics
    /// If the argon2 parameters are out of range (a configuration error at start-up).
    pub fn new(config: HasherConfig) -> Self {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .expect("argon2 parameters out of range");
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..config.workers.max(1) {
            let receiver = receiver.clone();
            let argon2 = argon2.clone();
            let low_priority = config.low_priority;
            let spawned = thread::Builder::new()
                .name(format!("restguard-hash-{index}"))
                .spawn(move || {
                    if low_priority {
                        lower_priority();
                    }
                    loop {
                        let job = match receiver.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&argon2),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self {
            pool: Arc::new(Pool {
                sender: Mutex::new(sender),
                permits: Semaphore::new(config.max_in_flight.max(1)),
                in_flight: AtomicUsize::new(0),
                argon2,
                params,
            }),
        }
    }

    /// Jobs queued or running now (a gauge for metrics).
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight.load(Ordering::Relaxed)
    }

    async fn run<T, F>(&self, f: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce(&Argon2<'static>) -> T + Send + 'static,
    {
        let _permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::PoolClosed)?;
        self.pool.in_flight.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |argon2| {
            let _ = tx.send(f(argon2));
        });
        let sent = self
            .pool
            .sender
            .lock()
            .map_err(|_| PasswordError::PoolClosed)
            .and_then(|s| s.send(job).map_err(|_| PasswordError::PoolClosed));
        let result = match sent {
            Ok(()) => rx.await.map_err(|_| PasswordError::PoolClosed),
            Err(e) => Err(e),
        };
        self.pool.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Hashes a new password with argon2id.
    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let password = password.expose();
        if password.is_empty() {
            return Err(PasswordError::Empty);
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let password = password.to_owned();
        self.run(move |argon2| hash_with(argon2, &password)).await?
    }

    /// Checks `password` against `stored` (`None`: the user does not exist — a dummy hash is
    /// verified so the answer takes the same time).
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<Verification, PasswordError> {
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Ok(Verification::Invalid);
        }
        let password = password.expose().to_owned();
        let stored = stored.map(str::to_owned);
        let params = self.pool.params.clone();
        self.run(move |argon2| verify_with(argon2, &params, &password, stored.as_deref()))
            .await
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> &Params {
        &self.pool.params
    }

    /// Hashes synchronously on the calling thread (for CLI tools and tests).
    pub fn hash_blocking(&self, password: &SecretString) -> Result<String, PasswordError> {
        if password.expose().is_empty() {
            return Err(PasswordError::Empty);
        }
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        hash_with(&self.pool.argon2, password.expose())
    }
}

fn hash_with(argon2: &Argon2<'static>, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// A hash of a random password, verified when the user is unknown or the stored hash is
/// unusable, so that every failure costs one argon2 verification.
fn dummy_hash(argon2: &Argon2<'static>) -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = crate::digest::random_secret("");
        hash_with(argon2, &random).unwrap_or_default()
    })
}

fn verify_with(
    argon2: &Argon2<'static>,
    ours: &Params,
    password: &str,
    stored: Option<&str>,
) -> Verification {
    let Some(stored) = stored else {
        let _ = verify_phc(argon2, password, dummy_hash(argon2));
        return Verification::Invalid;
    };
    let valid = if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        verify_django_pbkdf2(rest, password)
    } else if let Some(phc) = stored.strip_prefix("argon2$") {
        // Django's Argon2PasswordHasher stores "argon2" + the PHC string.
        verify_phc(argon2, password, &format!("${phc}"))
    } else if stored.starts_with("$argon2") {
        verify_phc(argon2, password, stored)
    } else {
        // Unusable ("!…") or an unsupported algorithm: same cost, never valid.
        let _ = verify_phc(argon2, password, dummy_hash(argon2));
        false
    };
    if !valid {
        return Verification::Invalid;
    }
    let upgrade = if needs_upgrade(stored, ours) {
        hash_with(argon2, password).ok()
    } else {
        None
    };
    Verification::Valid { upgrade }
}

fn verify_phc(argon2: &Argon2<'static>, password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => argon2.verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` (after the algorithm name).
fn verify_django_pbkdf2(rest: &str, password: &str) -> bool {
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(expected)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(iterations) = iterations.parse::<u32>() else {
        return false;
    };
    // Bound the work an imported row can cause (Django 5.2 uses 1 000 000).
    if iterations == 0 || iterations > 10_000_000 {
        return false;
    }
    let Ok(expected) = STANDARD.decode(expected) else {
        return false;
    };
    let mut out = vec![0u8; expected.len().clamp(1, 64)];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut out);
    out.ct_eq(&expected).into()
}

fn needs_upgrade(stored: &str, ours: &Params) -> bool {
    if !stored.starts_with("$argon2id$") {
        return true;
    }
    match PasswordHash::new(stored)
        .ok()
        .and_then(|h| Params::try_from(&h).ok())
    {
        Some(p) => {
            p.m_cost() < ours.m_cost() || p.t_cost() < ours.t_cost() || p.p_cost() < ours.p_cost()
        }
        None => true,
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, setpriority(PRIO_PROCESS, 0) applies to the calling thread only.
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!(error = %e, "could not lower the hashing thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Username + password checks against the user store (Django's `authenticate()` with the
/// model backend): unknown users, wrong passwords and inactive users all answer `None`,
/// in the same time.
#[derive(Clone)]
pub struct PasswordAuth {
    users: Arc<dyn UserStore>,
    hasher: PasswordHasher,
    throttle: Arc<LoginThrottle>,
}

/// The answer to a throttled password login.
#[derive(Debug, Clone)]
pub enum Login {
    /// The credentials are valid and the user is active.
    Valid(User),
    /// Unknown user, wrong password or inactive user (indistinguishable on purpose).
    Invalid,
    /// Too many failed attempts from this IP or for this username: try again after this long.
    /// The password was not checked.
    Throttled(std::time::Duration),
}

impl std::fmt::Debug for PasswordAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordAuth").finish_non_exhaustive()
    }
}

impl PasswordAuth {
    /// Checks passwords of `users` with `hasher`, with the contract's default login throttle
    /// (20 failures a minute per IP, 10 an hour per username).
    pub fn new(users: Arc<dyn UserStore>, hasher: PasswordHasher) -> Self {
        Self {
            users,
            hasher,
            throttle: Arc::new(LoginThrottle::default()),
        }
    }

    /// Replaces the login throttle.
    pub fn with_login_throttle(mut self, throttle: LoginThrottle) -> Self {
        self.throttle = Arc::new(throttle);
        self
    }

    /// A password login from `client_ip`, subject to the login throttle: every endpoint that
    /// accepts a password goes through here.
    pub async fn login(
        &self,
        client_ip: Option<std::net::IpAddr>,
        username: &str,
        password: &SecretString,
    ) -> Result<Login, StoreError> {
        if let Some(wait) = self.throttle.check(client_ip, username).await? {
            return Ok(Login::Throttled(wait));
        }
        Ok(match self.authenticate(username, password).await? {
            Some(user) => Login::Valid(user),
            None => {
                self.throttle.record_failure(client_ip, username).await;
                Login::Invalid
            }
        })
    }

    /// The hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The user store.
    pub fn users(&self) -> &Arc<dyn UserStore> {
        &self.users
    }

    /// The active user with this username and password, or `None`. A valid password stored
    /// with a weaker hash is re-hashed with argon2id. Not throttled: endpoints use
    /// [`PasswordAuth::login`].
    #[tracing::instrument(skip_all)]
    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Option<User>, StoreError> {
        let found = self.users.credentials(username).await?;
        let stored = found.as_ref().map(|(_, hash)| hash.as_str());
        let verification = match self.hasher.verify(password, stored).await {
            Ok(v) => v,
            Err(e) => return Err(StoreError::unavailable(e)),
        };
        let (Verification::Valid { upgrade }, Some((user, old_hash))) = (verification, found)
        else {
            return Ok(None);
        };
        if let Some(new_hash) = upgrade {
            if let Err(e) = self
                .users
                .upgrade_password_hash(user.id, &old_hash, &new_hash)
                .await
            {
                // The login is still valid; the upgrade will be retried next time.
                tracing::warn!(error = %e, "could not upgrade a password hash");
            }
        }
        Ok(user.is_active.then_some(user))
    }

    /// Hashes and stores a new password; ends the user's tokens (CONTRACT §10).
    pub async fn set_password(
        &self,
        user: &User,
        password: &SecretString,
    ) -> Result<bool, SetPasswordError> {
        let hash = self.hasher.hash(password).await?;
        Ok(self
            .users
            .set_password(user.id, &hash, OffsetDateTime::now_utc())
            .await?)
    }
}

/// Why a password could not be set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetPasswordError {
    /// The password was refused.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// True for a stored hash that can never match (Django's `!` prefix).
pub fn is_unusable(stored: &str) -> bool {
    stored.starts_with(UNUSABLE_PASSWORD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> PasswordHasher {
        PasswordHasher::new(HasherConfig {
            memory_kib: 256,
            iterations: 1,
            workers: 2,
            ..HasherConfig::default()
        })
    }

    #[tokio::test]
    async fn argon2_round_trip() {
        let h = fast();
        let pw = SecretString::new("correct horse");
        let hash = h.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(
            h.verify(&pw, Some(&hash)).await.unwrap(),
            Verification::Valid { upgrade: None }
        );
        assert_eq!(
            h.verify(&SecretString::new("wrong"), Some(&hash))
                .await
                .unwrap(),
            Verification::Invalid
        );
        assert_eq!(h.verify(&pw, None).await.unwrap(), Verification::Invalid);
        assert_eq!(
            h.verify(&pw, Some("!")).await.unwrap(),
            Verification::Invalid
        );
    }

    #[tokio::test]
    async fn django_pbkdf2_verifies_and_upgrades() {
        // Django's format for make_password("pw-alice-123", salt="saltsaltsalt") with PBKDF2-SHA256
        // with 1000 iterations (value computed with Python's hashlib.pbkdf2_hmac).
        let stored = "pbkdf2_sha256$1000$saltsaltsalt$G+rnjOkE7udFOcR8MOKivpx1DKhuW+veZXlu0ktMAcs=";
        let h = fast();
        let ok = h
            .verify(&SecretString::new("pw-alice-123"), Some(stored))
            .await
            .unwrap();
        match ok {
            Verification::Valid { upgrade: Some(new) } => assert!(new.starts_with("$argon2id$")),
            other => panic!("expected an upgrade, got {other:?}"),
        }
        assert_eq!(
            h.verify(&SecretString::new("nope"), Some(stored))
                .await
                .unwrap(),
            Verification::Invalid
        );
    }

    #[tokio::test]
    async fn refuses_empty_and_long() {
        let h = fast();
        assert!(matches!(
            h.hash(&SecretString::new("")).await,
            Err(PasswordError::Empty)
        ));
        let long = SecretString::new("x".repeat(MAX_PASSWORD_BYTES + 1));
        assert!(matches!(h.hash(&long).await, Err(PasswordError::TooLong)));
        assert_eq!(h.verify(&long, None).await.unwrap(), Verification::Invalid);
    }
}
