//! SQLite through `sqlx`.
//!
//! Timestamps are stored as INTEGER unix microseconds (UTC), so they come back truncated to
//! the microsecond. Booleans are INTEGER 0/1. The schema lives in the embedded migrations
//! under `migrations/sqlite/`; run [`SqliteStore::migrate`] once at start-up.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use restguard_core::{
    identity::{User, UserId},
    store::{
        ApiToken, FamilyId, JwtStore, NewApiToken, NewRefreshToken, NewUser, RefreshToken,
        RefreshUse, Rewrap, SecretDigest, SecretStore, SigningKey, SigningKeyStore, StoreError,
        StoreHealth, TokenId, TokenStore, UserStore, WrappedKey, UNUSABLE_PASSWORD,
    },
    store::{NewSession, SessionId, SessionRecord, SessionStore},
};
use sqlx::{
    error::ErrorKind,
    migrate::MigrateError,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
    ConnectOptions, Row, SqlitePool,
};
use time::OffsetDateTime;

use crate::timestamp::{from_micros, to_micros, truncate};

mod group_commit;
mod oauth;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an operation waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pool size for file databases.
const MAX_CONNECTIONS: u32 = 8;

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
/// Same as [`TOKEN_COLUMNS`], unqualified (for `RETURNING`, which takes no table names).
const TOKEN_RETURNING: &str = "id, user_id, name, prefix, digest, created, last_used, expiry";

/// Columns of `jwt_refresh_tokens` that make a [`RefreshToken`], in [`refresh_at`]'s order.
const REFRESH_COLUMNS: &str = "jti, family, user_id, created, expires_at, used_at, revoked_at";
/// Columns of `jwt_signing_keys` that make a [`SigningKey`], in [`signing_key_at`]'s order.
const SIGNING_KEY_COLUMNS: &str = "kid, algorithm, private_key, public_jwk, created, retired_at";

/// A SQLite-backed store implementing every store trait.
///
/// Cheap to clone (the pool is reference-counted).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers (WAL lets them run beside the writer).
    pool: SqlitePool,
    /// The one connection that writes. SQLite admits one writer at a time; queueing writes
    /// here (an async wait) instead of letting several connections race for the lock (a
    /// busy-handler sleep each time they lose) keeps write-heavy endpoints such as token
    /// refresh fast under concurrency.
    writer: SqlitePool,
    /// Group commit for refresh-token writes (absent outside a tokio runtime).
    group_commit: Option<group_commit::GroupCommit>,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url`.
    ///
    /// Accepts `sqlite://PATH` (relative to the working directory, or absolute as
    /// `sqlite:///abs/path.db`) and `sqlite::memory:`. Connections use WAL journaling,
    /// `synchronous=NORMAL`, foreign keys and a 5 s busy timeout. An in-memory database uses a
    /// single connection that is kept open for the life of the store.
    ///
    /// A URL that is not `sqlite:`, or a path that cannot be opened, is an error.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::backend(format!(
                "not a SQLite URL (expected sqlite://PATH or sqlite::memory:): {:?}",
                crate::redact::redact_url(url)
            )));
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| map_err(e, "database"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Keep hot B-tree pages of the token tables in memory (32 MiB per connection at
            // most), and give the WAL file back to the disk after a checkpoint once it has
            // grown past 64 MiB under a write burst. Checkpoint every 4000 pages (16 MiB)
            // rather than SQLite's 1000: each checkpoint stalls the single writer on fsync.
            .pragma("cache_size", "-32768")
            .pragma("journal_size_limit", "67108864")
            .pragma("wal_autocheckpoint", "4000")
            // Statement logs would interleave with the CLI's one-line errors; slowness shows
            // in the request metrics instead.
            .log_statements(log::LevelFilter::Off)
            .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(1));
        // A connection to a local file has nothing to test before each use (the test would
        // be one more hop to its worker thread per query).
        let pool_options = SqlitePoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false);
        let pool_options = if in_memory {
            // Each in-memory database lives only as long as a connection to it: keep exactly
            // one, forever.
            pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool_options.max_connections(MAX_CONNECTIONS)
        };
        let pool = pool_options
            .connect_with(options.clone())
            .await
            .map_err(|e| map_err(e, "database"))?;
        let writer = if in_memory {
            pool.clone()
        } else {
            // One long-lived writer: its page cache stays warm between write bursts.
            SqlitePoolOptions::new()
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .map_err(|e| map_err(e, "database"))?
        };
        let group_commit = group_commit::GroupCommit::start(writer.clone());
        Ok(Self {
            pool,
            writer,
            group_commit,
        })
    }

    /// Wraps an existing pool (its connections should enable foreign keys).
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            group_commit: group_commit::GroupCommit::start(pool.clone()),
            writer: pool.clone(),
            pool,
        }
    }

    /// Applies the embedded migrations that have not run yet. Idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await
            .map_err(|e| match e {
                MigrateError::Execute(e) => map_err(e, "migration"),
                other => StoreError::backend(other),
            })
    }

    /// The connection pool, for extensions that add their own tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl SqliteStore {
    /// Runs `update` (a change of the user's credentials: password, deactivation) and, in the
    /// same transaction, revokes every API token of the user (CONTRACT §10). `false`, with
    /// nothing written, when the user does not exist.
    async fn update_and_revoke_tokens<'q>(
        &self,
        update: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        id: UserId,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await.map_err(|e| map_err(e, "user"))?;
        let updated = update
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "user"))?
            .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM api_tokens WHERE user_id = ?")
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
        // SQLITE_BUSY / SQLITE_LOCKED (after the busy timeout): retrying later may help.
        let primary = db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        if matches!(primary, Some(5 | 6)) {
            return StoreError::unavailable(e);
        }
        return StoreError::backend(e);
    }
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => StoreError::unavailable(e),
        other => StoreError::backend(other),
    }
}

/// Column `i` of `row`, or a backend error (never a panic) when it does not decode.
fn get<'r, T>(row: &'r SqliteRow, i: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(i).map_err(|e| map_err(e, "row"))
}

fn get_bool(row: &SqliteRow, i: usize) -> Result<bool, StoreError> {
    Ok(get::<i64>(row, i)? != 0)
}

fn get_time(row: &SqliteRow, i: usize) -> Result<OffsetDateTime, StoreError> {
    let micros: i64 = get(row, i)?;
    from_micros(micros)
        .ok_or_else(|| StoreError::backend(format!("timestamp out of range: {micros}")))
}

fn get_opt_time(row: &SqliteRow, i: usize) -> Result<Option<OffsetDateTime>, StoreError> {
    match get::<Option<i64>>(row, i)? {
        None => Ok(None),
        Some(micros) => from_micros(micros)
            .map(Some)
            .ok_or_else(|| StoreError::backend(format!("timestamp out of range: {micros}"))),
    }
}

/// The [`User`] in [`USER_COLUMNS`] starting at column `i`.
fn user_at(row: &SqliteRow, i: usize) -> Result<User, StoreError> {
    Ok(User {
        id: UserId(get(row, i)?),
        username: get(row, i + 1)?,
        email: get(row, i + 2)?,
        first_name: get(row, i + 3)?,
        last_name: get(row, i + 4)?,
        is_active: get_bool(row, i + 5)?,
        is_staff: get_bool(row, i + 6)?,
        is_superuser: get_bool(row, i + 7)?,
        date_joined: get_time(row, i + 8)?,
        last_login: get_opt_time(row, i + 9)?,
        credentials_changed_at: get_time(row, i + 10)?,
    })
}

/// The [`ApiToken`] in [`TOKEN_COLUMNS`] starting at column `i`.
fn token_at(row: &SqliteRow, i: usize) -> Result<ApiToken, StoreError> {
    let digest: Vec<u8> = get(row, i + 4)?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|d: Vec<u8>| StoreError::backend(format!("token digest of {} bytes", d.len())))?;
    Ok(ApiToken {
        id: TokenId(get(row, i)?),
        user_id: UserId(get(row, i + 1)?),
        name: get(row, i + 2)?,
        prefix: get(row, i + 3)?,
        digest: SecretDigest(digest),
        created: get_time(row, i + 5)?,
        last_used: get_opt_time(row, i + 6)?,
        expiry: get_opt_time(row, i + 7)?,
    })
}

fn digest_at(row: &SqliteRow, i: usize) -> Result<SecretDigest, StoreError> {
    let digest: Vec<u8> = get(row, i)?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|d: Vec<u8>| StoreError::backend(format!("digest of {} bytes", d.len())))?;
    Ok(SecretDigest(digest))
}

/// The [`RefreshToken`] in [`REFRESH_COLUMNS`] starting at column 0.
fn refresh_at(row: &SqliteRow) -> Result<RefreshToken, StoreError> {
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
fn signing_key_at(row: &SqliteRow) -> Result<SigningKey, StoreError> {
    Ok(SigningKey {
        kid: get(row, 0)?,
        algorithm: get(row, 1)?,
        private_key: get(row, 2)?,
        public_jwk: get(row, 3)?,
        created: get_time(row, 4)?,
        retired_at: get_opt_time(row, 5)?,
    })
}

/// Inserts a refresh record on `conn` (with `family` replacing the record's own).
async fn insert_refresh(
    conn: &mut sqlx::SqliteConnection,
    token: &NewRefreshToken,
    family: &FamilyId,
) -> Result<RefreshToken, StoreError> {
    let sql = format!(
        "INSERT INTO jwt_refresh_tokens (jti, family, user_id, created, expires_at) \
         VALUES (?, ?, ?, ?, ?) RETURNING {REFRESH_COLUMNS}"
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

fn sort_tokens(tokens: &mut [ApiToken]) {
    tokens.sort_by_key(|t| (t.created, t.id));
}

/// Inserts `token` on `conn` and returns the stored row.
async fn insert_token(
    conn: &mut sqlx::SqliteConnection,
    token: &NewApiToken,
) -> Result<ApiToken, StoreError> {
    let sql = format!(
        "INSERT INTO api_tokens (user_id, name, prefix, digest, created, expiry) \
         VALUES (?, ?, ?, ?, ?, ?) RETURNING {TOKEN_RETURNING}"
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

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let date_joined = truncate(user.date_joined);
        let last_login = user.last_login.map(truncate);
        let hash = user.password_hash.as_deref().unwrap_or(UNUSABLE_PASSWORD);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, email, first_name, last_name, password, is_active, \
             is_staff, is_superuser, date_joined, last_login, credentials_changed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        .bind(to_micros(date_joined))
        .fetch_one(&self.writer)
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
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?");
        sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?
            .map(|row| user_at(&row, 0))
            .transpose()
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?");
        sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "user"))?
            .map(|row| user_at(&row, 0))
            .transpose()
    }

    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS}, users.password FROM users WHERE username = ?");
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
            sqlx::query("UPDATE users SET password = ?, credentials_changed_at = ? WHERE id = ?")
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
        let updated = sqlx::query("UPDATE users SET password = ? WHERE id = ? AND password = ?")
            .bind(new)
            .bind(id.0)
            .bind(old)
            .execute(&self.writer)
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
            let updated = sqlx::query("UPDATE users SET is_active = 1 WHERE id = ?")
                .bind(id.0)
                .execute(&self.writer)
                .await
                .map_err(|e| map_err(e, "user"))?
                .rows_affected();
            return Ok(updated > 0);
        }
        self.update_and_revoke_tokens(
            sqlx::query(
                "UPDATE users SET is_active = FALSE, credentials_changed_at = ? WHERE id = ?",
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
        let updated = sqlx::query("UPDATE users SET is_staff = ?, is_superuser = ? WHERE id = ?")
            .bind(is_staff)
            .bind(is_superuser)
            .bind(id.0)
            .execute(&self.writer)
            .await
            .map_err(|e| map_err(e, "user"))?
            .rows_affected();
        Ok(updated > 0)
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await.map_err(|e| map_err(e, "user"))?;
        // Explicit, so that it holds even on a connection without foreign keys.
        sqlx::query("DELETE FROM api_tokens WHERE user_id = ?")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "token"))?;
        sqlx::query("DELETE FROM jwt_refresh_tokens WHERE user_id = ?")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "session"))?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "user"))?
            .rows_affected();
        tx.commit().await.map_err(|e| map_err(e, "user"))?;
        Ok(deleted > 0)
    }

    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_login = ? WHERE id = ?")
            .bind(to_micros(at))
            .bind(id.0)
            .execute(&self.writer)
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
        // `lower` folds ASCII only, like Django's `icontains` on SQLite.
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE ?1 IS NULL OR instr(lower(username), lower(?1)) > 0 \
                OR instr(lower(email), lower(?1)) > 0 \
             ORDER BY id LIMIT ?2 OFFSET ?3"
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
impl TokenStore for SqliteStore {
    async fn create_token(&self, token: NewApiToken) -> Result<ApiToken, StoreError> {
        let mut conn = self
            .writer
            .acquire()
            .await
            .map_err(|e| map_err(e, "token"))?;
        insert_token(&mut conn, &token).await
    }

    async fn token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(ApiToken, User)>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS} FROM api_tokens \
             JOIN users ON users.id = api_tokens.user_id WHERE api_tokens.digest = ?"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(&digest.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "token"))?
        else {
            return Ok(None);
        };
        Ok(Some((token_at(&row, 0)?, user_at(&row, 8)?)))
    }

    async fn tokens_for_user(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = ? ORDER BY created, id"
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
            "DELETE FROM api_tokens WHERE id = ? AND user_id = ? RETURNING {TOKEN_RETURNING}"
        );
        sqlx::query(&sql)
            .bind(id.0)
            .bind(user_id.0)
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| map_err(e, "token"))?
            .map(|row| token_at(&row, 0))
            .transpose()
    }

    async fn revoke_all_tokens(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!("DELETE FROM api_tokens WHERE user_id = ? RETURNING {TOKEN_RETURNING}");
        let rows = sqlx::query(&sql)
            .bind(user_id.0)
            .fetch_all(&self.writer)
            .await
            .map_err(|e| map_err(e, "token"))?;
        let mut tokens = rows
            .iter()
            .map(|row| token_at(row, 0))
            .collect::<Result<Vec<_>, _>>()?;
        sort_tokens(&mut tokens);
        Ok(tokens)
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
        let mut tx = self.writer.begin().await.map_err(|e| map_err(e, "token"))?;
        let sql = format!(
            "DELETE FROM api_tokens WHERE id = ? AND user_id = ? RETURNING {TOKEN_RETURNING}"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(id.0)
            .bind(user_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_err(e, "token"))?
        else {
            // Dropping the transaction rolls it back (nothing was deleted anyway).
            return Ok(None);
        };
        let old = token_at(&row, 0)?;
        let new = insert_token(&mut tx, &replacement).await?;
        tx.commit().await.map_err(|e| map_err(e, "token"))?;
        Ok(Some((old, new)))
    }

    async fn touch_token(&self, id: TokenId, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used = ? WHERE id = ?")
            .bind(to_micros(at))
            .bind(id.0)
            .execute(&self.writer)
            .await
            .map_err(|e| map_err(e, "token"))?;
        Ok(())
    }

    async fn delete_expired_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM api_tokens WHERE expiry IS NOT NULL AND expiry <= ?")
                .bind(to_micros(now))
                .execute(&self.writer)
                .await
                .map_err(|e| map_err(e, "token"))?
                .rows_affected();
        Ok(deleted)
    }
}

#[async_trait]
impl SecretStore for SqliteStore {
    async fn secret_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        // Insert-if-absent is atomic in SQLite, across connections and processes; the value
        // never changes afterwards, so the read that follows sees the winner.
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "secret"))?;
        sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_err(e, "secret"))
    }

    async fn rewrap_keys(&self, rewrap: &Rewrap<'_>) -> Result<u64, StoreError> {
        let mut conn = self
            .writer
            .acquire()
            .await
            .map_err(|e| map_err(e, "secret"))?;
        // The values replaced are keys (in clear, or under a key-encryption key being
        // retired): zero the space they leave behind rather than leave them readable in a
        // copy of the file.
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(&mut *conn)
            .await
            .map_err(|e| map_err(e, "secret"))?;
        let replaced = rewrap_keys_on(&mut conn, rewrap).await;
        let restored = sqlx::query("PRAGMA secure_delete = OFF")
            .execute(&mut *conn)
            .await
            .map_err(|e| map_err(e, "secret"));
        let replaced = replaced?;
        restored?;
        if replaced > 0 {
            // The old pages may also sit in the write-ahead log: checkpoint it and truncate
            // it to nothing (best effort: a reader in the way leaves it for a later one).
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await
                .map_err(|e| map_err(e, "secret"))?;
        }
        Ok(replaced)
    }
}

/// [`SecretStore::rewrap_keys`] on the writer connection, in one transaction.
async fn rewrap_keys_on(
    conn: &mut sqlx::SqliteConnection,
    rewrap: &Rewrap<'_>,
) -> Result<u64, StoreError> {
    use sqlx::Connection;
    // IMMEDIATE: the write lock from the first read, so no other process writes these
    // rows between the read and the write. A transaction that writes nothing leaves the
    // file as it was.
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| map_err(e, "secret"))?;
    let secrets: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT name, value FROM server_secrets ORDER BY name")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| map_err(e, "secret"))?;
    let keys: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT kid, algorithm, private_key FROM jwt_signing_keys ORDER BY kid")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| map_err(e, "signing key"))?;
    let mut replaced = 0;
    for (name, value) in &secrets {
        if let Some(new) =
            rewrap(WrappedKey::ServerSecret { name }, value).map_err(StoreError::Backend)?
        {
            sqlx::query("UPDATE server_secrets SET value = ? WHERE name = ?")
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
            sqlx::query("UPDATE jwt_signing_keys SET private_key = ? WHERE kid = ?")
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

#[async_trait]
impl JwtStore for SqliteStore {
    async fn create_refresh(&self, token: NewRefreshToken) -> Result<RefreshToken, StoreError> {
        let mut conn = self
            .writer
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
        if let Some(batcher) = &self.group_commit {
            return batcher.extend(*parent, replacement).await;
        }
        // One statement: the check and the insert cannot be separated by another writer.
        let sql = format!(
            "INSERT INTO jwt_refresh_tokens (jti, family, user_id, created, expires_at) \
             SELECT ?, family, user_id, ?, ? FROM jwt_refresh_tokens \
             WHERE jti = ? AND user_id = ? AND used_at IS NULL AND revoked_at IS NULL \
             RETURNING {REFRESH_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(&replacement.jti.0[..])
            .bind(to_micros(replacement.created))
            .bind(to_micros(replacement.expires_at))
            .bind(&parent.0[..])
            .bind(replacement.user_id.0)
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| map_err(e, "refresh token"))?
            .map(|row| refresh_at(&row))
            .transpose()
    }

    async fn refresh_by_jti(&self, jti: &SecretDigest) -> Result<Option<RefreshToken>, StoreError> {
        let sql = format!("SELECT {REFRESH_COLUMNS} FROM jwt_refresh_tokens WHERE jti = ?");
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
        if let Some(batcher) = &self.group_commit {
            if let Some((old, new)) = batcher.consume(*jti, replacement, at).await? {
                return Ok(RefreshUse::Consumed(old, new));
            }
            return Ok(match self.refresh_by_jti(jti).await? {
                None => RefreshUse::Unknown,
                Some(t) if t.revoked_at.is_some() => RefreshUse::Revoked(t),
                Some(t) => RefreshUse::AlreadyUsed(t),
            });
        }
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        // The conditional write is the decision: of concurrent callers, exactly one sees the
        // row come back.
        let sql = format!(
            "UPDATE jwt_refresh_tokens SET used_at = ? \
             WHERE jti = ? AND used_at IS NULL AND revoked_at IS NULL RETURNING {REFRESH_COLUMNS}"
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
        let revoked = sqlx::query(
            "UPDATE jwt_refresh_tokens SET revoked_at = ? \
             WHERE family = ? AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(&family.0)
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "refresh token"))?
        .rows_affected();
        Ok(revoked)
    }

    async fn blacklist_jti(
        &self,
        jti: &SecretDigest,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let added = sqlx::query(
            "INSERT INTO jwt_blacklist (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(&jti.0[..])
        .bind(to_micros(expires_at))
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "blacklist"))?
        .rows_affected();
        Ok(added == 1)
    }

    async fn is_blacklisted(&self, jti: &SecretDigest) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jwt_blacklist WHERE jti = ?")
            .bind(&jti.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "blacklist"))?;
        Ok(found.is_some())
    }

    async fn delete_expired_jwt(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await.map_err(|e| map_err(e, "jwt"))?;
        let refresh = sqlx::query("DELETE FROM jwt_refresh_tokens WHERE expires_at <= ?")
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "refresh token"))?
            .rows_affected();
        let blacklist = sqlx::query("DELETE FROM jwt_blacklist WHERE expires_at <= ?")
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "blacklist"))?
            .rows_affected();
        tx.commit().await.map_err(|e| map_err(e, "jwt"))?;
        Ok(refresh + blacklist)
    }
}

#[async_trait]
impl SigningKeyStore for SqliteStore {
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
        // One statement, so the existence check and the insert are atomic.
        let added = sqlx::query(
            "INSERT INTO jwt_signing_keys (kid, algorithm, private_key, public_jwk, created, retired_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS \
             (SELECT 1 FROM jwt_signing_keys WHERE algorithm = ?2 AND retired_at IS NULL)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_jwk)
        .bind(to_micros(key.created))
        .bind(key.retired_at.map(to_micros))
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "signing key"))?
        .rows_affected();
        Ok(added == 1)
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|e| map_err(e, "signing key"))?;
        sqlx::query(
            "UPDATE jwt_signing_keys SET retired_at = ? WHERE algorithm = ? AND retired_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(&key.algorithm)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(e, "signing key"))?;
        sqlx::query(
            "INSERT INTO jwt_signing_keys (kid, algorithm, private_key, public_jwk, created, retired_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
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
            "DELETE FROM jwt_signing_keys WHERE retired_at IS NOT NULL AND retired_at <= ?",
        )
        .bind(to_micros(before))
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "signing key"))?
        .rows_affected();
        Ok(deleted)
    }
}

#[async_trait]
impl StoreHealth for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        for pool in [&self.pool, &self.writer] {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map_err(|e| map_err(e, "database"))?;
        }
        Ok(())
    }
}

/// Columns of `sessions` that make a [`SessionRecord`], in [`session_at`]'s order.
const SESSION_COLUMNS: &str = "sessions.id, sessions.user_id, sessions.digest, \
     sessions.created, sessions.last_seen, sessions.expires_at, sessions.user_agent, sessions.ip";
/// Same as [`SESSION_COLUMNS`], unqualified (for `RETURNING`).
const SESSION_RETURNING: &str =
    "id, user_id, digest, created, last_seen, expires_at, user_agent, ip";
/// Number of columns in [`SESSION_COLUMNS`].
const SESSION_COLUMN_COUNT: usize = 8;

/// The [`SessionRecord`] in [`SESSION_COLUMNS`] starting at column 0.
fn session_at(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
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

fn session_rows(rows: &[SqliteRow]) -> Result<Vec<SessionRecord>, StoreError> {
    let mut sessions = rows.iter().map(session_at).collect::<Result<Vec<_>, _>>()?;
    sessions.sort_by_key(|s| (s.created, s.id));
    Ok(sessions)
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: NewSession) -> Result<SessionRecord, StoreError> {
        let sql = format!(
            "INSERT INTO sessions (user_id, digest, created, last_seen, expires_at, user_agent, ip) \
             VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6) RETURNING {SESSION_RETURNING}"
        );
        let row = sqlx::query(&sql)
            .bind(session.user_id.0)
            .bind(&session.digest.0[..])
            .bind(to_micros(session.created))
            .bind(to_micros(session.expires_at))
            .bind(&session.user_agent)
            .bind(&session.ip)
            .fetch_one(&self.writer)
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
             JOIN users ON users.id = sessions.user_id WHERE sessions.digest = ?"
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
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?");
        let rows = sqlx::query(&sql)
            .bind(user_id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "session"))?;
        session_rows(&rows)
    }

    async fn touch_session(&self, id: SessionId, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen = ? WHERE id = ?")
            .bind(to_micros(at))
            .bind(id.0)
            .execute(&self.writer)
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
            "DELETE FROM sessions WHERE id = ? AND user_id = ? RETURNING {SESSION_RETURNING}"
        );
        sqlx::query(&sql)
            .bind(id.0)
            .bind(user_id.0)
            .fetch_optional(&self.writer)
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
            "DELETE FROM sessions WHERE user_id = ?1 AND (?2 IS NULL OR id <> ?2) \
             RETURNING {SESSION_RETURNING}"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id.0)
            .bind(keep.map(|k| k.0))
            .fetch_all(&self.writer)
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
            "DELETE FROM sessions WHERE expires_at <= ?1 OR (?2 IS NOT NULL AND last_seen <= ?2)",
        )
        .bind(to_micros(now))
        .bind(idle_before.map(to_micros))
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "session"))?
        .rows_affected();
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths() {
        let relative = SqliteConnectOptions::from_str("sqlite://restguard.db").unwrap();
        assert_eq!(
            relative.get_filename(),
            std::path::Path::new("restguard.db")
        );
        let absolute = SqliteConnectOptions::from_str("sqlite:///var/lib/x.db").unwrap();
        assert_eq!(
            absolute.get_filename(),
            std::path::Path::new("/var/lib/x.db")
        );
    }

    #[test]
    fn unique_violation_maps_to_conflict_and_pool_errors_to_unavailable() {
        assert!(map_err(sqlx::Error::PoolTimedOut, "user").is_unavailable());
        assert!(map_err(sqlx::Error::PoolClosed, "user").is_unavailable());
        assert!(matches!(
            map_err(sqlx::Error::RowNotFound, "user"),
            StoreError::Backend(_)
        ));
    }
}
