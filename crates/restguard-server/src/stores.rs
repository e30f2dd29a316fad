//! Opening the configured backend.

use std::sync::Arc;

use restguard_core::store::Stores;
use restguard_store::{memory::MemoryStore, sqlite::SqliteStore};

/// The backend named by `database.url`.
pub(crate) enum Backend {
    Sqlite(Arc<SqliteStore>),
    Memory(Arc<MemoryStore>),
}

impl Backend {
    /// Opens (and for SQLite creates) the database; does not migrate.
    pub(crate) async fn open(url: &str) -> anyhow::Result<Backend> {
        if url.starts_with("sqlite:") {
            let store = SqliteStore::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("database.url {url:?}: {}", crate::error_chain(&e)))?;
            Ok(Backend::Sqlite(Arc::new(store)))
        } else if url == "memory:" {
            Ok(Backend::Memory(Arc::new(MemoryStore::new())))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            anyhow::bail!(
                "database.url: PostgreSQL is not supported by this version yet (use sqlite://PATH)"
            )
        } else {
            anyhow::bail!("database.url: unsupported URL {url:?} (use sqlite://PATH)")
        }
    }

    /// Applies pending migrations.
    pub(crate) async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Backend::Sqlite(s) => s
                .migrate()
                .await
                .map_err(|e| anyhow::anyhow!("migration failed: {}", crate::error_chain(&e))),
            Backend::Memory(_) => Ok(()),
        }
    }

    /// The stores, each behind its trait.
    pub(crate) fn stores(&self) -> Stores {
        match self {
            Backend::Sqlite(s) => Stores::from_backend(s.clone()),
            Backend::Memory(m) => Stores::from_backend(m.clone()),
        }
    }
}
