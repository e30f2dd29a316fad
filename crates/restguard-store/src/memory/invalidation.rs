//! [`MemoryInvalidationBus`]: invalidations within one process (the reference
//! implementation; several services of one process, and tests).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use restguard_core::{
    invalidation::{Invalidation, InvalidationBus, InvalidationHandler},
    store::StoreError,
};

/// Delivers every published event to every handler of this bus (and its clones), at once.
#[derive(Clone, Default)]
pub struct MemoryInvalidationBus {
    handlers: Arc<Mutex<Vec<InvalidationHandler>>>,
}

impl MemoryInvalidationBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemoryInvalidationBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryInvalidationBus")
    }
}

#[async_trait]
impl InvalidationBus for MemoryInvalidationBus {
    async fn publish(&self, event: Invalidation) -> Result<(), StoreError> {
        let handlers = self
            .handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for handler in handlers {
            handler(event);
        }
        Ok(())
    }

    fn subscribe(&self, handler: InvalidationHandler) {
        self.handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handler);
    }
}
