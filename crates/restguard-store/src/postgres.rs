//! PostgreSQL through `sqlx`: the system of record when several restguard instances share
//! one database.
//!
//! Same behaviour as [`SqliteStore`](crate::sqlite::SqliteStore) (and the same conformance
//! suite): timestamps are BIGINT unix microseconds (UTC), booleans BOOLEAN, digests BYTEA.
//! The schema lives in the embedded migrations under `migrations/postgres/`; run
//! [`PostgresStore::migrate`] once at start-up (concurrent callers are serialized by sqlx's
//! advisory lock).
//!
//! Connection failures, pool timeouts, statement timeouts and server shutdowns are
//! [`StoreError::Unavailable`] (503 + `Retry-After`); the pool reconnects by itself when the
//! server is back.
//!
//! To run in a schema other than `public`, name it in the URL:
//! `postgres://host/db?options=-c%20search_path%3Dmyschema`.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use restguard_core::{
    identity::{User, UserId},
    store::{
        ApiToken, FamilyId, JwtStore, NewApiToken, NewRefreshToken, NewSession, NewUser,
        RefreshToken, RefreshUse, Rewrap, SecretDigest, SecretStore, SessionId, SessionRecord,
        SessionStore, SigningKey, SigningKeyStore, StoreError, StoreHealth, TokenId, TokenStore,
        UserStore, WrappedKey, UNUSABLE_PASSWORD,
    },
};
use sqlx::{
    error::ErrorKind,
    migrate::MigrateError,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
    ConnectOptions, PgConnection, PgPool, Row,
};
use time::OffsetDateTime;

use crate::timestamp::{from_micros, to_micros, truncate};

mod family_lock;
mod oauth;

use family_lock::Families;

/// Pool size, timeouts and statement timeout of a [`PostgresStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Most connections the pool opens (per instance).
    pub max_connections: u32,
    /// How long an operation waits for a pooled connection (including connecting) before it
    /// fails as unavailable.
    pub acquire_timeout: Duration,
    /// Server-side limit on one statement (`statement_timeout`); zero disables it.
    pub statement_timeout: Duration,
}

impl Default for PostgresOptions {
    /// 10 connections, 5 s to acquire one, 5 s per statement.
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

impl PostgresOptions {
    /// Sets [`max_connections`](Self::max_connections).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`acquire_timeout`](Self::acquire_timeout).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets [`statement_timeout`](Self::statement_timeout).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }
}

/// Columns of `users` that make a [`User`], in [`user_at`]'s order.
const USER_COLUMNS: &str = "users.id, users.username, users.email, users.first_name, \
     users.last_name, users.is_active, users.is_staff, users.is_superuser, users.date_joined, \
     users.last_login, users.credentials_changed_at";
/// Number of columns in [`USER_COLUMNS`].
const USER_COLUMN_COUNT: usize = 11;
/// Columns of `api_tokens` that make an [`ApiToken`], in [`token_at`]'s order.
const TOKEN_COLUMNS: &str = "api_tokens.id, api_tokens.user_id, api_tokens.name, \
     api_tokens.prefix, api_tokens.digest, api_tokens.created, api_tokens.last_used, \
     api_tokens.expiry";
/// Number of columns in [`TOKEN_COLUMNS`].
const TOKEN_COLUMN_COUNT: usize = 8;
/// Same as [`TOKEN_COLUMNS`], unqualified (for `RETURNING`).
const TOKEN_RETURNING: &str = "id, user_id, name, prefix, digest, created, last_used, expiry";
/// Columns of `jwt_refresh_tokens` that make a [`RefreshToken`], in [`refresh_at`]'s order.
const REFRESH_COLUMNS: &str = "jti, family, user_id, created, expires_at, used_at, revoked_at";
/// Columns of `jwt_signing_keys` that make a [`SigningKey`], in [`signing_key_at`]'s order.
const SIGNING_KEY_COLUMNS: &str = "kid, algorithm, private_key, public_jwk, created, retired_at";
/// Columns of `sessions` that make a [`SessionRecord`], in [`session_at`]'s order.
const SESSION_COLUMNS: &str = "sessions.id, sessions.user_id, sessions.digest, \
     sessions.created, sessions.last_seen, sessions.expires_at, sessions.user_agent, sessions.ip";
/// Same as [`SESSION_COLUMNS`], unqualified (for `RETURNING`).
const SESSION_RETURNING: &str =
    "id, user_id, digest, created, last_seen, expires_at, user_agent, ip";
/// Number of columns in [`SESSION_COLUMNS`].
const SESSION_COLUMN_COUNT: usize = 8;
/// The advisory-lock key serializing signing-key writes across instances.
const SIGNING_KEY_LOCK: i64 = 0x7267_5f6b_6579; // "rg_key"

/// A PostgreSQL-backed store implementing every store trait.
///
/// Cheap to clone (the pool is reference-counted).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://` or `postgresql://`) with the default
    /// [`PostgresOptions`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PostgresOptions::default()).await
    }

    /// Connects to `url` with `options`. The pool opens connections lazily, so a server that
    /// is down at start is reported by the first operation (or [`StoreHealth::ping`]) as
    /// unavailable, and connections are re-established when it is back.
    pub async fn connect_with(url: &str, options: &PostgresOptions) -> Result<Self, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::backend(format!(
                "not a PostgreSQL URL (expected postgres://…): {}",
                crate::redact::redact_url(url)
            )));
        }
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| map_err(e, "database"))?
            // Statement logs would interleave with the CLI's one-line errors.
            .log_statements(log::LevelFilter::Off)
            .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(1));
        if !options.statement_timeout.is_zero() {
            connect = connect.options([(
                "statement_timeout",
                format!("{}ms", options.statement_timeout.as_millis()),
            )]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // A connection broken by an outage is noticed before use and replaced.
            .test_before_acquire(true)
            .connect_lazy_with(connect);
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Applies the embedded migrations that have not run yet. Idempotent, and safe when
    /// several instances start at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| match e {
                MigrateError::Execute(e) => map_err(e, "migration"),
                other => StoreError::backend(other),
            })
    }

    /// The connection pool, for extensions that add their own tables.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connections open, idle, and the most the pool opens (for metrics).
    pub fn pool_usage(&self) -> (u32, usize, u32) {
        (
            self.pool.size(),
            self.pool.num_idle(),
            self.pool.options().get_max_connections(),
        )
    }
}

/// Whether a PostgreSQL SQLSTATE means "try again later" (503) rather than a bug (500).
fn transient_sqlstate(code: &str) -> bool {
    // 08xxx connection exceptions; 53xxx insufficient resources (too many connections, out of
    // memory, disk full); 57P01..57P05 admin/crash shutdown, cannot connect now, idle session
    // timeout; 57014 query canceled (statement_timeout); 40001/40P01 serialization failure and
    // deadlock (a retry succeeds).
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "57014" | "40001" | "40P01")
}

impl PostgresStore {
    /// Runs `update` (a change of the user's credentials: password, deactivation) and, in the
    /// same transaction, revokes every API token of the user (CONTRACT §10). `false`, with
    /// nothing written, when the user does not exist.
    async fn update_and_revoke_tokens(
        &self,
        update: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        id: UserId,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| map_err(e, "user"))?;
        let updated = update
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "user"))?
            .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM api_tokens WHERE user_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "token"))?;
        tx.commit().await.map_err(|e| map_err(e, "user"))?;
        Ok(true)
    }
}

/// The one mapping from `sqlx` errors to [`StoreError`]; `entity` names what a uniqueness
/// violation conflicts on (`"user"`, `"token"`).
fn map_err(e: sqlx::Error, entity: &'static str) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.kind() == ErrorKind::UniqueViolation {
            return StoreError::Conflict(entity);
        }
        if db.code().is_some_and(|c| transient_sqlstate(&c)) {
            return StoreError::unavailable(e);
        }
        return StoreError::backend(e);
    }
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => StoreError::unavailable(e),
        other => StoreError::backend(other),
    }
}

/// Column `i` of `row`, or a backend error (never a panic) when it does not decode.
fn get<'r, T>(row: &'r PgRow, i: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(i).map_err(|e| map_err(e, "row"))
}

fn get_time(row: &PgRow, i: usize) -> Result<OffsetDateTime, StoreError> {
    let micros: i64 = get(row, i)?;
    from_micros(micros)
        .ok_or_else(|| StoreError::backend(format!("timestamp out of range: {micros}")))
}

fn get_opt_time(row: &PgRow, i: usize) -> Result<Option<OffsetDateTime>, StoreError> {
    match get::<Option<i64>>(row, i)? {
        None => Ok(None),
        Some(micros) => from_micros(micros)
            .map(Some)
            .ok_or_else(|| StoreError::backend(format!("timestamp out of range: {micros}"))),
    }
}

fn digest_at(row: &PgRow, i: usize) -> Result<SecretDigest, StoreError> {
    let digest: Vec<u8> = get(row, i)?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|d: Vec<u8>| StoreError::backend(format!("digest of {} bytes", d.len())))?;
    Ok(SecretDigest(digest))
}

/// The [`User`] in [`USER_COLUMNS`] starting at column `i`.
fn user_at(row: &PgRow, i: usize) -> Result<User, StoreError> {
    Ok(User {
        id: UserId(get(row, i)?),
        username: get(row, i + 1)?,
        email: get(row, i + 2)?,
        first_name: get(row, i + 3)?,
        last_name: get(row, i + 4)?,
        is_active: get(row, i + 5)?,
        is_staff: get(row, i + 6)?,
        is_superuser: get(row, i + 7)?,
        date_joined: get_time(row, i + 8)?,
        last_login: get_opt_time(row, i + 9)?,
        credentials_changed_at: get_time(row, i + 10)?,
    })
}

/// The [`ApiToken`] in [`TOKEN_COLUMNS`] starting at column `i`.
fn token_at(row: &PgRow, i: usize) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: TokenId(get(row, i)?),
        user_id: UserId(get(row, i + 1)?),
        name: get(row, i + 2)?,
        prefix: get(row, i + 3)?,
        digest: digest_at(row, i + 4)?,
        created: get_time(row, i + 5)?,
        last_used: get_opt_time(row, i + 6)?,
        expiry: get_opt_time(row, i + 7)?,
    })
}

/// The [`RefreshToken`] in [`REFRESH_COLUMNS`] starting at column 0.
fn refresh_at(row: &PgRow) -> Result<RefreshToken, StoreError> {
    Ok(RefreshToken {
        jti: digest_at(row, 0)?,
        family: FamilyId(get(row, 1)?),
        user_id: UserId(get(row, 2)?),
        created: get_time(row, 3)?,
        expires_at: get_time(row, 4)?,
        used_at: get_opt_time(row, 5)?,
        revoked_at: get_opt_time(row, 6)?,
    })
}

/// The [`SigningKey`] in [`SIGNING_KEY_COLUMNS`] starting at column 0.
fn signing_key_at(row: &PgRow) -> Result<SigningKey, StoreError> {
    Ok(SigningKey {
        kid: get(row, 0)?,
        algorithm: get(row, 1)?,
        private_key: get(row, 2)?,
        public_jwk: get(row, 3)?,
        created: get_time(row, 4)?,
        retired_at: get_opt_time(row, 5)?,
    })
}

/// The [`SessionRecord`] in [`SESSION_COLUMNS`] starting at column 0.
fn session_at(row: &PgRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: SessionId(get(row, 0)?),
        user_id: UserId(get(row, 1)?),
        digest: digest_at(row, 2)?,
        created: get_time(row, 3)?,
        last_seen: get_time(row, 4)?,
        expires_at: get_time(row, 5)?,
        user_agent: get(row, 6)?,
        ip: get(row, 7)?,
    })
}

fn session_rows(rows: &[PgRow]) -> Result<Vec<SessionRecord>, StoreError> {
    let mut sessions = rows.iter().map(session_at).collect::<Result<Vec<_>, _>>()?;
    sessions.sort_by_key(|s| (s.created, s.id));
    Ok(sessions)
}

/// Inserts a refresh record on `conn` (with `family` replacing the record's own).
async fn insert_refresh(
    conn: &mut PgConnection,
    token: &NewRefreshToken,
    family: &FamilyId,
) -> Result<RefreshToken, StoreError> {
    let sql = format!(
        "INSERT INTO jwt_refresh_tokens (jti, family, user_id, created, expires_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {REFRESH_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&token.jti.0[..])
        .bind(&family.0)
        .bind(token.user_id.0)
        .bind(to_micros(token.created))
        .bind(to_micros(token.expires_at))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| map_err(e, "refresh token"))?;
    refresh_at(&row)
}

/// Inserts `token` on `conn` and returns the stored row.
async fn insert_token(
    conn: &mut PgConnection,
    token: &NewApiToken,
) -> Result<ApiToken, StoreError> {
    let sql = format!(
        "INSERT INTO api_tokens (user_id, name, prefix, digest, created, expiry) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_RETURNING}"
    );
    let row = sqlx::query(&sql)
        .bind(token.user_id.0)
        .bind(&token.name)
        .bind(&token.prefix)
        .bind(&token.digest.0[..])
        .bind(to_micros(token.created))
        .bind(token.expiry.map(to_micros))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| map_err(e, "token"))?;
    token_at(&row, 0)
}

fn token_rows(rows: &[PgRow]) -> Result<Vec<ApiToken>, StoreError> {
    let mut tokens = rows
        .iter()
        .map(|row| token_at(row, 0))
        .collect::<Result<Vec<_>, _>>()?;
    tokens.sort_by_key(|t| (t.created, t.id));
    Ok(tokens)
}

/// `LIKE`-free substring search: `strpos` treats `%` and `_` literally.
const USER_SEARCH: &str = "($1::TEXT IS NULL OR strpos(lower(username), lower($1)) > 0 \
     OR strpos(lower(email), lower($1)) > 0)";

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let date_joined = truncate(user.date_joined);
        let last_login = user.last_login.map(truncate);
        let hash = user.password_hash.as_deref().unwrap_or(UNUSABLE_PASSWORD);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, email, first_name, last_name, password, is_active, \
             is_staff, is_superuser, date_joined, last_login, credentials_changed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(hash)
        .bind(user.is_active)
        .bind(user.is_staff)
        .bind(user.is_superuser)
        .bind(to_micros(date_joined))
        .bind(last_login.map(to_micros))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err(e, "user"))?;
        Ok(User {
            id: UserId(id),
            username: user.username,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            is_active: user.is_active,
            is_staff: user.is_staff,
            is_superuser: user.is_superuser,
            date_joined,
            last_login,
            credentials_changed_at: date_joined,
        })
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?
            .map(|row| user_at(&row, 0))
            .transpose()
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?
            .map(|row| user_at(&row, 0))
            .transpose()
    }

    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS}, users.password FROM users WHERE username = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?
        else {
            return Ok(None);
        };
        Ok(Some((user_at(&row, 0)?, get(&row, USER_COLUMN_COUNT)?)))
    }

    async fn set_password(
        &self,
        id: UserId,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.update_and_revoke_tokens(
            sqlx::query(
                "UPDATE users SET password = $1, credentials_changed_at = $2 WHERE id = $3",
            )
            .bind(hash)
            .bind(to_micros(at))
            .bind(id.0),
            id,
        )
        .await
    }

    async fn upgrade_password_hash(
        &self,
        id: UserId,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE users SET password = $1 WHERE id = $2 AND password = $3")
            .bind(new)
            .bind(id.0)
            .bind(old)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?
            .rows_affected();
        Ok(updated > 0)
    }

    async fn set_active(
        &self,
        id: UserId,
        active: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if active {
            let updated = sqlx::query("UPDATE users SET is_active = TRUE WHERE id = $1")
                .bind(id.0)
                .execute(&self.pool)
                .await
                .map_err(|e| map_err(e, "user"))?
                .rows_affected();
            return Ok(updated > 0);
        }
        self.update_and_revoke_tokens(
            sqlx::query(
                "UPDATE users SET is_active = FALSE, credentials_changed_at = $1 WHERE id = $2",
            )
            .bind(to_micros(at))
            .bind(id.0),
            id,
        )
        .await
    }

    async fn set_roles(
        &self,
        id: UserId,
        is_staff: bool,
        is_superuser: bool,
    ) -> Result<bool, StoreError> {
        let updated =
            sqlx::query("UPDATE users SET is_staff = $1, is_superuser = $2 WHERE id = $3")
                .bind(is_staff)
                .bind(is_superuser)
                .bind(id.0)
                .execute(&self.pool)
                .await
                .map_err(|e| map_err(e, "user"))?
                .rows_affected();
        Ok(updated > 0)
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        // Foreign keys cascade to tokens, refresh records and sessions.
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_login = $1 WHERE id = $2")
            .bind(to_micros(at))
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?;
        Ok(())
    }

    async fn list_users(
        &self,
        search: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<User>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {USER_SEARCH} \
             ORDER BY id LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(&sql)
            .bind(search)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?;
        rows.iter().map(|row| user_at(row, 0)).collect()
    }
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn create_token(&self, token: NewApiToken) -> Result<ApiToken, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| map_err(e, "token"))?;
        insert_token(&mut conn, &token).await
    }

    async fn token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(ApiToken, User)>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS} FROM api_tokens \
             JOIN users ON users.id = api_tokens.user_id WHERE api_tokens.digest = $1"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(&digest.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "token"))?
        else {
            return Ok(None);
        };
        Ok(Some((
            token_at(&row, 0)?,
            user_at(&row, TOKEN_COLUMN_COUNT)?,
        )))
    }

    async fn tokens_for_user(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY created, id"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "token"))?;
        rows.iter().map(|row| token_at(row, 0)).collect()
    }

    async fn revoke_token(
        &self,
        user_id: UserId,
        id: TokenId,
    ) -> Result<Option<ApiToken>, StoreError> {
        let sql = format!(
            "DELETE FROM api_tokens WHERE id = $1 AND user_id = $2 RETURNING {TOKEN_RETURNING}"
        );
        sqlx::query(&sql)
            .bind(id.0)
            .bind(user_id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "token"))?
            .map(|row| token_at(&row, 0))
            .transpose()
    }

    async fn revoke_all_tokens(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!("DELETE FROM api_tokens WHERE user_id = $1 RETURNING {TOKEN_RETURNING}");
        let rows = sqlx::query(&sql)
            .bind(user_id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "token"))?;
        token_rows(&rows)
    }

    async fn rotate_token(
        &self,
        user_id: UserId,
        id: TokenId,
        replacement: NewApiToken,
    ) -> Result<Option<(ApiToken, ApiToken)>, StoreError> {
        let replacement = NewApiToken {
            user_id,
            ..replacement
        };
        let mut tx = self.pool.begin().await.map_err(|e| map_err(e, "token"))?;
        let sql = format!(
            "DELETE FROM api_tokens WHERE id = $1 AND user_id = $2 RETURNING {TOKEN_RETURNING}"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(id.0)
            .bind(user_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_err(e, "token"))?
        else {
            return Ok(None);
        };
        let old = token_at(&row, 0)?;
        // On a conflict the transaction is dropped, which rolls the delete back.
        let new = insert_token(&mut tx, &replacement).await?;
        tx.commit().await.map_err(|e| map_err(e, "token"))?;
        Ok(Some((old, new)))
    }

    async fn touch_token(&self, id: TokenId, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used = $1 WHERE id = $2")
            .bind(to_micros(at))
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, "token"))?;
        Ok(())
    }

    async fn delete_expired_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM api_tokens WHERE expiry IS NOT NULL AND expiry <= $1")
                .bind(to_micros(now))
                .execute(&self.pool)
                .await
                .map_err(|e| map_err(e, "token"))?
                .rows_affected();
        Ok(deleted)
    }
}

#[async_trait]
impl SecretStore for PostgresStore {
    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        // A concurrent insert of the same name blocks until the other commits, then does
        // nothing; the read that follows sees the winner.
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.pool)
        .await
        .map_err(|e| map_err(e, "secret"))?;
        sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_err(e, "secret"))
    }

    async fn rewrap_keys(&self, rewrap: &Rewrap<'_>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| map_err(e, "secret"))?;
        // No signing key is added or rotated meanwhile (they take this lock), and the rows
        // read are locked until commit.
        lock_signing_keys(&mut tx).await?;
        let secrets: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT name, value FROM server_secrets ORDER BY name FOR UPDATE")
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| map_err(e, "secret"))?;
        let keys: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT kid, algorithm, private_key FROM jwt_signing_keys ORDER BY kid FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| map_err(e, "signing key"))?;
        let mut replaced = 0;
        for (name, value) in &secrets {
            if let Some(new) =
                rewrap(WrappedKey::ServerSecret { name }, value).map_err(StoreError::Backend)?
            {
                sqlx::query("UPDATE server_secrets SET value = $1 WHERE name = $2")
                    .bind(new)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| map_err(e, "secret"))?;
                replaced += 1;
            }
        }
        for (kid, algorithm, private_key) in &keys {
            if let Some(new) = rewrap(WrappedKey::SigningKey { kid, algorithm }, private_key)
                .map_err(StoreError::Backend)?
            {
                sqlx::query("UPDATE jwt_signing_keys SET private_key = $1 WHERE kid = $2")
                    .bind(new)
                    .bind(kid)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| map_err(e, "signing key"))?;
                replaced += 1;
            }
        }
        tx.commit().await.map_err(|e| map_err(e, "secret"))?;
        Ok(replaced)
    }
}

#[async_trait]
impl JwtStore for PostgresStore {
    async fn create_refresh(&self, token: NewRefreshToken) -> Result<RefreshToken, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        insert_refresh(&mut conn, &token, &token.family).await
    }

    async fn extend_family(
        &self,
        parent: &SecretDigest,
        replacement: NewRefreshToken,
    ) -> Result<Option<RefreshToken>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        family_lock::share(&mut tx, Families::Jwt, parent).await?;
        // One statement; `FOR SHARE` makes it wait for a concurrent consume of the parent and
        // re-check the condition against the committed row.
        let sql = format!(
            "INSERT INTO jwt_refresh_tokens (jti, family, user_id, created, expires_at) \
             SELECT $1, family, user_id, $2, $3 FROM jwt_refresh_tokens \
             WHERE jti = $4 AND user_id = $5 AND used_at IS NULL AND revoked_at IS NULL \
             FOR SHARE RETURNING {REFRESH_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&replacement.jti.0[..])
            .bind(to_micros(replacement.created))
            .bind(to_micros(replacement.expires_at))
            .bind(&parent.0[..])
            .bind(replacement.user_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        tx.commit().await.map_err(|e| map_err(e, "refresh token"))?;
        row.map(|row| refresh_at(&row)).transpose()
    }

    async fn refresh_by_jti(&self, jti: &SecretDigest) -> Result<Option<RefreshToken>, StoreError> {
        let sql = format!("SELECT {REFRESH_COLUMNS} FROM jwt_refresh_tokens WHERE jti = $1");
        sqlx::query(&sql)
            .bind(&jti.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "refresh token"))?
            .map(|row| refresh_at(&row))
            .transpose()
    }

    async fn consume_refresh(
        &self,
        jti: &SecretDigest,
        replacement: Option<NewRefreshToken>,
        at: OffsetDateTime,
    ) -> Result<RefreshUse, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        // Held until commit, so that a revocation of the family sees the replacement.
        family_lock::share(&mut tx, Families::Jwt, jti).await?;
        // The conditional write is the decision: a concurrent caller blocks on the row lock,
        // then re-checks the condition against the committed row and gets nothing back.
        let sql = format!(
            "UPDATE jwt_refresh_tokens SET used_at = $1 \
             WHERE jti = $2 AND used_at IS NULL AND revoked_at IS NULL RETURNING {REFRESH_COLUMNS}"
        );
        let consumed = sqlx::query(&sql)
            .bind(to_micros(at))
            .bind(&jti.0[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        if let Some(row) = consumed {
            let consumed = refresh_at(&row)?;
            let new = match &replacement {
                Some(new) => Some(insert_refresh(&mut tx, new, &consumed.family).await?),
                None => None,
            };
            tx.commit().await.map_err(|e| map_err(e, "refresh token"))?;
            return Ok(RefreshUse::Consumed(consumed, new));
        }
        drop(tx);
        Ok(match self.refresh_by_jti(jti).await? {
            None => RefreshUse::Unknown,
            Some(t) if t.revoked_at.is_some() => RefreshUse::Revoked(t),
            Some(t) => RefreshUse::AlreadyUsed(t),
        })
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        // After the rotations in flight have committed, before any other starts: the
        // statement below sees every member (see `family_lock`).
        family_lock::exclusive(&mut tx, Families::Jwt, family).await?;
        let revoked = sqlx::query(
            "UPDATE jwt_refresh_tokens SET revoked_at = $1 \
             WHERE family = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(&family.0)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(e, "refresh token"))?
        .rows_affected();
        tx.commit().await.map_err(|e| map_err(e, "refresh token"))?;
        Ok(revoked)
    }

    async fn blacklist_jti(
        &self,
        jti: &SecretDigest,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let added = sqlx::query(
            "INSERT INTO jwt_blacklist (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(&jti.0[..])
        .bind(to_micros(expires_at))
        .execute(&self.pool)
        .await
        .map_err(|e| map_err(e, "blacklist"))?
        .rows_affected();
        Ok(added == 1)
    }

    async fn is_blacklisted(&self, jti: &SecretDigest) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM jwt_blacklist WHERE jti = $1")
            .bind(&jti.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "blacklist"))?;
        Ok(found.is_some())
    }

    async fn delete_expired_jwt(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| map_err(e, "jwt"))?;
        let refresh = sqlx::query("DELETE FROM jwt_refresh_tokens WHERE expires_at <= $1")
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "refresh token"))?
            .rows_affected();
        let blacklist = sqlx::query("DELETE FROM jwt_blacklist WHERE expires_at <= $1")
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "blacklist"))?
            .rows_affected();
        tx.commit().await.map_err(|e| map_err(e, "jwt"))?;
        Ok(refresh + blacklist)
    }
}

/// Takes the signing-key advisory lock for the rest of `conn`'s transaction, so that the
/// check-then-write of [`SigningKeyStore`] is atomic across instances.
async fn lock_signing_keys(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SIGNING_KEY_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_err(e, "signing key"))?;
    Ok(())
}

#[async_trait]
impl SigningKeyStore for PostgresStore {
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let sql =
            format!("SELECT {SIGNING_KEY_COLUMNS} FROM jwt_signing_keys ORDER BY created, kid");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "signing key"))?;
        rows.iter().map(signing_key_at).collect()
    }

    async fn add_first_signing_key(&self, key: SigningKey) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| map_err(e, "signing key"))?;
        lock_signing_keys(&mut tx).await?;
        let added = sqlx::query(
            "INSERT INTO jwt_signing_keys (kid, algorithm, private_key, public_jwk, created, retired_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS \
             (SELECT 1 FROM jwt_signing_keys WHERE algorithm = $2 AND retired_at IS NULL)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_jwk)
        .bind(to_micros(key.created))
        .bind(key.retired_at.map(to_micros))
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(e, "signing key"))?
        .rows_affected();
        tx.commit().await.map_err(|e| map_err(e, "signing key"))?;
        Ok(added == 1)
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| map_err(e, "signing key"))?;
        lock_signing_keys(&mut tx).await?;
        sqlx::query(
            "UPDATE jwt_signing_keys SET retired_at = $1 WHERE algorithm = $2 AND retired_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(&key.algorithm)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(e, "signing key"))?;
        sqlx::query(
            "INSERT INTO jwt_signing_keys (kid, algorithm, private_key, public_jwk, created, retired_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_jwk)
        .bind(to_micros(key.created))
        .bind(key.retired_at.map(to_micros))
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(e, "signing key"))?;
        tx.commit().await.map_err(|e| map_err(e, "signing key"))
    }

    async fn delete_retired_signing_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM jwt_signing_keys WHERE retired_at IS NOT NULL AND retired_at <= $1",
        )
        .bind(to_micros(before))
        .execute(&self.pool)
        .await
        .map_err(|e| map_err(e, "signing key"))?
        .rows_affected();
        Ok(deleted)
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create_session(&self, session: NewSession) -> Result<SessionRecord, StoreError> {
        let sql = format!(
            "INSERT INTO sessions (user_id, digest, created, last_seen, expires_at, user_agent, ip) \
             VALUES ($1, $2, $3, $3, $4, $5, $6) RETURNING {SESSION_RETURNING}"
        );
        let row = sqlx::query(&sql)
            .bind(session.user_id.0)
            .bind(&session.digest.0[..])
            .bind(to_micros(session.created))
            .bind(to_micros(session.expires_at))
            .bind(&session.user_agent)
            .bind(&session.ip)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_err(e, "session"))?;
        session_at(&row)
    }

    async fn session_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(SessionRecord, User)>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, {USER_COLUMNS} FROM sessions \
             JOIN users ON users.id = sessions.user_id WHERE sessions.digest = $1"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(&digest.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "session"))?
        else {
            return Ok(None);
        };
        Ok(Some((
            session_at(&row)?,
            user_at(&row, SESSION_COLUMN_COUNT)?,
        )))
    }

    async fn sessions_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1");
        let rows = sqlx::query(&sql)
            .bind(user_id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "session"))?;
        session_rows(&rows)
    }

    async fn touch_session(&self, id: SessionId, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen = $1 WHERE id = $2")
            .bind(to_micros(at))
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, "session"))?;
        Ok(())
    }

    async fn delete_session(
        &self,
        user_id: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!(
            "DELETE FROM sessions WHERE id = $1 AND user_id = $2 RETURNING {SESSION_RETURNING}"
        );
        sqlx::query(&sql)
            .bind(id.0)
            .bind(user_id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "session"))?
            .map(|row| session_at(&row))
            .transpose()
    }

    async fn delete_user_sessions(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!(
            "DELETE FROM sessions WHERE user_id = $1 AND ($2::BIGINT IS NULL OR id <> $2) \
             RETURNING {SESSION_RETURNING}"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id.0)
            .bind(keep.map(|k| k.0))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "session"))?;
        session_rows(&rows)
    }

    async fn delete_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_before: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= $1 \
             OR ($2::BIGINT IS NOT NULL AND last_seen <= $2)",
        )
        .bind(to_micros(now))
        .bind(idle_before.map(to_micros))
        .execute(&self.pool)
        .await
        .map_err(|e| map_err(e, "session"))?
        .rows_affected();
        Ok(deleted)
    }
}

#[async_trait]
impl StoreHealth for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, "database"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_unavailable() {
        assert!(map_err(sqlx::Error::PoolTimedOut, "user").is_unavailable());
        assert!(map_err(sqlx::Error::PoolClosed, "user").is_unavailable());
        assert!(map_err(
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            "user"
        )
        .is_unavailable());
        assert!(matches!(
            map_err(sqlx::Error::RowNotFound, "user"),
            StoreError::Backend(_)
        ));
        for code in ["08006", "57P01", "57014", "53300", "40001"] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }

    #[tokio::test]
    async fn non_postgres_url_is_an_error() {
        assert!(PostgresStore::connect("sqlite://x.db").await.is_err());
    }
}
