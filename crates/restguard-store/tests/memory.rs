//! The conformance suite against the in-memory store.

restguard_store::conformance_suite!(async { restguard_store::memory::MemoryStore::new() });

#[tokio::test]
async fn memory_invalidation_bus_conformance() {
    let bus = restguard_store::memory::MemoryInvalidationBus::new();
    restguard_store::conformance::invalidation_bus_delivers(
        std::sync::Arc::new(bus.clone()),
        std::sync::Arc::new(bus),
    )
    .await
    .unwrap();
}
