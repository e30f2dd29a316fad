//! Opening the configured backend.

use std::sync::Arc;

use restguard::sealing::{seal_stores, KeyEncryptionKey};
use restguard_core::store::Stores;
use restguard_store::{
    memory::MemoryStore,
    postgres::{PostgresOptions, PostgresStore},
    redis::{RedisOptions, RedisSessionStore},
    sqlite::SqliteStore,
};

use crate::{
    config::{Config, DatabaseConfig, RedisConfig},
    redact::redact_url,
};

/// The backend named by `database.url`, the Redis session store when `redis.sessions` is on,
/// and, once [unlocked](Backend::unlock), the key-encryption key its keys are sealed under.
pub(crate) struct Backend {
    kind: Kind,
    sessions: Option<Arc<RedisSessionStore>>,
    kek: Option<Arc<KeyEncryptionKey>>,
}

enum Kind {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
    Memory(Arc<MemoryStore>),
}

impl Backend {
    fn of(kind: Kind) -> Backend {
        Backend {
            kind,
            sessions: None,
            kek: None,
        }
    }

    /// With `redis.sessions = true` (and `redis.url`), browser sessions live in Redis.
    pub(crate) fn with_redis(mut self, redis: &RedisConfig) -> anyhow::Result<Backend> {
        if !redis.sessions {
            return Ok(self);
        }
        let Some(url) = &redis.url else {
            anyhow::bail!("redis.sessions: needs redis.url");
        };
        let options = RedisOptions::default()
            .key_prefix(redis.key_prefix.0.clone())
            .timeout(redis.timeout.0);
        let store = RedisSessionStore::new(&url.0, &options, self.plain_stores().users)
            .map_err(|e| anyhow::anyhow!("redis.url: {}", crate::error_chain(&e)))?;
        let store = Arc::new(store);
        crate::scaleout::set_session_store(store.clone());
        self.sessions = Some(store);
        Ok(self)
    }

    /// Opens (and for SQLite creates) the database; does not migrate.
    pub(crate) async fn open(database: &DatabaseConfig) -> anyhow::Result<Backend> {
        let url = database.url.as_str();
        if url.starts_with("sqlite:") {
            let store = SqliteStore::connect(url).await.map_err(|e| {
                anyhow::anyhow!(
                    "database.url {:?}: {}",
                    redact_url(url),
                    crate::error_chain(&e)
                )
            })?;
            Ok(Backend::of(Kind::Sqlite(Arc::new(store))))
        } else if url == "memory:" {
            Ok(Backend::of(Kind::Memory(Arc::new(MemoryStore::new()))))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PostgresOptions::default()
                .max_connections(database.max_connections)
                .acquire_timeout(database.acquire_timeout.0)
                .statement_timeout(database.statement_timeout.0);
            let store = PostgresStore::connect_with(url, &options)
                .await
                .map_err(|e| anyhow::anyhow!("database.url: {}", crate::error_chain(&e)))?;
            let store = Arc::new(store);
            let probe = store.clone();
            crate::metrics::set_pool_probe(move || probe.pool_usage());
            Ok(Backend::of(Kind::Postgres(store)))
        } else {
            anyhow::bail!(
                "database.url: unsupported URL (use sqlite://PATH, postgres://… or memory:)"
            )
        }
    }

    /// Applies pending migrations.
    pub(crate) async fn migrate(&self) -> anyhow::Result<()> {
        match &self.kind {
            Kind::Sqlite(s) => s
                .migrate()
                .await
                .map_err(|e| anyhow::anyhow!("migration failed: {}", crate::error_chain(&e))),
            // The first use of a PostgreSQL URL: name the key when the server cannot be used.
            Kind::Postgres(p) => p.migrate().await.map_err(|e| {
                anyhow::anyhow!(
                    "database.url: migrating the PostgreSQL database failed: {}",
                    crate::error_chain(&e)
                )
            }),
            Kind::Memory(_) => Ok(()),
        }
    }

    /// Resolves the key-encryption key and checks it against the database (sealing keys
    /// stored in clear in place); see [`crate::secret_key`]. Until then [`Backend::stores`]
    /// gives the keys as stored.
    pub(crate) async fn unlock(&mut self, config: &Config) -> anyhow::Result<()> {
        let kek = crate::secret_key::unlock(config, self.plain_stores().secrets.as_ref()).await?;
        self.kek = Some(kek);
        Ok(())
    }

    /// The key-encryption key (after [`Backend::unlock`]).
    pub(crate) fn kek(&self) -> Option<&Arc<KeyEncryptionKey>> {
        self.kek.as_ref()
    }

    /// The stores as the database holds them (signing keys and the digest key sealed).
    pub(crate) fn plain_stores(&self) -> Stores {
        let mut stores = match &self.kind {
            Kind::Sqlite(s) => Stores::from_backend(s.clone()),
            Kind::Postgres(p) => Stores::from_backend(p.clone()),
            Kind::Memory(m) => Stores::from_backend(m.clone()),
        };
        if let Some(sessions) = &self.sessions {
            stores.sessions = sessions.clone();
        }
        stores
    }

    /// The stores, each behind its trait; after [`Backend::unlock`], the server secrets and
    /// signing keys are sealed on write and opened on read.
    pub(crate) fn stores(&self) -> Stores {
        match &self.kek {
            Some(kek) => seal_stores(self.plain_stores(), kek.clone()),
            None => self.plain_stores(),
        }
    }
}
