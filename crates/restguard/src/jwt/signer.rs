//! [`ClaimsSigner`]: signs arbitrary claims (an OpenID Connect id_token) with the shared,
//! persisted, rotating signing keys of one algorithm.

use std::{sync::Arc, time::Duration};

use restguard_core::store::SigningKeyStore;
use serde_json::Value;

use super::{
    codec,
    keys::{KeyRing, KeySource},
    JwtAlgorithm, KeyError,
};

/// Signs claims with the newest stored key of one algorithm (generated and persisted on first
/// use, rotated by `restguard keys rotate` and picked up within a second, like the JWT
/// scheme's keys) and publishes the
/// public keys as a JWKS. Cheap to clone.
///
/// ```no_run
/// # async fn f(store: std::sync::Arc<dyn restguard_core::store::SigningKeyStore>) -> Result<(), restguard::jwt::KeyError> {
/// use restguard::jwt::{ClaimsSigner, JwtAlgorithm};
/// let signer = ClaimsSigner::from_store(store, JwtAlgorithm::RS256, std::time::Duration::from_secs(86400)).await?;
/// let id_token = signer.sign(&serde_json::json!({"sub": "1"}))?;
/// assert_eq!(id_token.split('.').count(), 3);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClaimsSigner {
    ring: Arc<KeyRing>,
    algorithm: JwtAlgorithm,
}

impl std::fmt::Debug for ClaimsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimsSigner")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl ClaimsSigner {
    /// A signer over the stored keys of `algorithm` (an asymmetric one: its public keys are
    /// published). Retired keys stay in the JWKS for `verify_window`.
    pub async fn from_store(
        store: Arc<dyn SigningKeyStore>,
        algorithm: JwtAlgorithm,
        verify_window: Duration,
    ) -> Result<Self, KeyError> {
        if algorithm.is_symmetric() {
            return Err(KeyError::Invalid {
                algorithm,
                reason: "claims for third parties need an asymmetric algorithm".into(),
            });
        }
        let ring = KeyRing::start(KeySource::Stored {
            store,
            algorithm,
            verify_window,
        })
        .await?;
        Ok(Self { ring, algorithm })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Signs `claims` (header `{"alg","kid","typ":"JWT"}`).
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        let keys = self.ring.current();
        codec::sign(claims, &keys.signing).map_err(|e| KeyError::Invalid {
            algorithm: self.algorithm,
            reason: e.to_string(),
        })
    }

    /// The public keys (`{"keys": [...]}`), newest first.
    pub fn jwks(&self) -> Value {
        self.ring.current().jwks.clone()
    }
}
