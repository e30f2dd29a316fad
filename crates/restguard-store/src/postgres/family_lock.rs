//! Refresh-token rotations and family revocations, serialized per family.
//!
//! A rotation marks its token used and inserts the replacement, in one transaction. Under
//! READ COMMITTED a revocation (`UPDATE … WHERE family = $1`) sees only rows committed when
//! its statement began: a replacement being inserted by a rotation at that moment is
//! invisible to it (no row lock can cover a row that does not exist yet), so it stays
//! usable — and a thief who keeps rotating fast enough survives the reuse detection
//! (RFC 9700 §4.14.2).
//!
//! So each family has a lock (a transaction-scoped advisory lock on the family id):
//! rotations hold it *shared* from before they touch the family until they commit, and a
//! revocation takes it *exclusive* before its `UPDATE`. Either the rotation commits first —
//! the revocation's statement starts after that and sees the replacement — or the revocation
//! commits first, and the rotation's conditional `UPDATE` then finds its token revoked.
//! Rotations of one family do not wait for each other. SERIALIZABLE would also catch the
//! anomaly, but only if every rotation ran serializable (predicate locks on the hot path,
//! and retries); this costs a rotation one statement.
//!
//! The lock key is `(class, hashtext(family))`; a hash collision between two families only
//! makes them wait for each other. (Advisory locks are per database: families of other
//! schemas in the same database can collide too, with the same harmless effect.)

use sqlx::PgConnection;

use restguard_core::store::{FamilyId, SecretDigest, StoreError};

use super::map_err;

/// The first key of the advisory locks of JWT refresh-token families ("rjwf").
const JWT_FAMILY: i32 = 0x726a_7766;
/// The first key of the advisory locks of OAuth2 refresh-token families ("roaf").
const OAUTH_FAMILY: i32 = 0x726f_6166;

/// Which family table a lock is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Families {
    /// `jwt_refresh_tokens`.
    Jwt,
    /// `oauth_tokens`.
    OAuth,
}

impl Families {
    fn class(self) -> i32 {
        match self {
            Families::Jwt => JWT_FAMILY,
            Families::OAuth => OAUTH_FAMILY,
        }
    }
}

/// Takes, for the rest of `conn`'s transaction, the shared lock of the family of the refresh
/// token with this digest (nothing when there is no such token). Call it before the
/// rotation's first write.
pub(super) async fn share(
    conn: &mut PgConnection,
    families: Families,
    digest: &SecretDigest,
) -> Result<(), StoreError> {
    // A row's family never changes, so reading it from any snapshot names the right lock.
    let sql = match families {
        Families::Jwt => {
            "SELECT pg_advisory_xact_lock_shared($1, hashtext(family)) \
             FROM jwt_refresh_tokens WHERE jti = $2"
        }
        Families::OAuth => {
            "SELECT pg_advisory_xact_lock_shared($1, hashtext(family)) \
             FROM oauth_tokens WHERE digest = $2 AND kind = 'refresh'"
        }
    };
    sqlx::query(sql)
        .bind(families.class())
        .bind(&digest.0[..])
        .execute(&mut *conn)
        .await
        .map_err(|e| map_err(e, "refresh token"))?;
    Ok(())
}

/// Takes, for the rest of `conn`'s transaction, the exclusive lock of `family`: waits for
/// the rotations in flight to commit, and holds new ones off until this transaction ends.
pub(super) async fn exclusive(
    conn: &mut PgConnection,
    families: Families,
    family: &FamilyId,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(families.class())
        .bind(&family.0)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_err(e, "refresh token"))?;
    Ok(())
}
