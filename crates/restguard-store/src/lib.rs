//! # restguard-store
//!
//! Storage backends for restguard's store traits ([`restguard_core::store`]):
//!
//! * [`memory::MemoryStore`]: an in-memory reference implementation, for tests and demos;
//! * [`sqlite::SqliteStore`]: SQLite through `sqlx`, with embedded migrations;
//! * [`postgres::PostgresStore`]: PostgreSQL through `sqlx`, with embedded migrations, for
//!   several instances on one database;
//! * [`redis::RedisThrottleStore`]: throttle counters in Redis, shared by several instances.
//!
//! Every backend implements [`UserStore`](restguard_core::store::UserStore),
//! [`TokenStore`](restguard_core::store::TokenStore),
//! [`SecretStore`](restguard_core::store::SecretStore) and
//! [`StoreHealth`](restguard_core::store::StoreHealth), and passes the shared
//! [`conformance`] suite (invoked with [`conformance_suite!`]).
//!
//! ## Timestamps
//! Stores keep timestamps at **microsecond** precision in UTC: a value written with
//! nanoseconds comes back truncated (floored) to the microsecond, with a UTC offset.
//!
//! ```
//! use std::sync::Arc;
//! use restguard_core::store::Stores;
//! use restguard_store::memory::MemoryStore;
//!
//! let stores = Stores::from_backend(Arc::new(MemoryStore::new()));
//! # let _ = stores;
//! ```

pub mod conformance;
pub mod memory;
pub mod postgres;
pub mod redact;
pub mod redis;
pub mod sqlite;
pub mod testing;
mod timestamp;
