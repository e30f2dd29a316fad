//! The conformance suite against the in-memory store.

restguard_store::conformance_suite!(async { restguard_store::memory::MemoryStore::new() });
