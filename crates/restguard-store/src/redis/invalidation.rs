//! [`InvalidationBus`] over Redis pub/sub: every instance on one Redis (and key prefix)
//! subscribes to the channel `<prefix>invalidations`; a change published by one instance (or
//! the CLI) reaches the others within a round trip.
//!
//! Pub/sub does not keep messages: while an instance is disconnected it misses them. So after
//! every (re)subscription the handlers get [`Invalidation::All`] (drop every cached check),
//! and while Redis is unreachable the caches' own lifetime (1 s by default) bounds staleness,
//! as it does without Redis. The subscription is checked with a `PING` every few seconds, so a
//! connection that went silent is replaced too. Publishing is bounded by the timeout and never
//! fails a request: the caller logs and goes on.

use std::{
    fmt,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use ::redis::{aio::PubSubStream, Client};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use restguard_core::{
    invalidation::{Invalidation, InvalidationBus, InvalidationHandler},
    store::StoreError,
};

use super::{map_err, Connection, RedisOptions};

/// How often the subscription connection is checked with a `PING`.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(5);
/// Pause between two subscription attempts while Redis is unreachable.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

type Handlers = Mutex<Vec<InvalidationHandler>>;

/// Invalidations through Redis pub/sub (see the module documentation).
pub struct RedisInvalidationBus {
    connection: Connection,
    client: Client,
    channel: String,
    timeout: Duration,
    handlers: Arc<Handlers>,
    listening: std::sync::Once,
}

impl fmt::Debug for RedisInvalidationBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisInvalidationBus")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisInvalidationBus {
    /// A bus on the Redis at `url` (parsed now, connected on first use), on the channel
    /// `<key_prefix>invalidations`.
    pub fn new(url: &str, options: &RedisOptions) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Connection::new(url, options.timeout)?,
            client: Client::open(url).map_err(StoreError::backend)?,
            channel: format!("{}invalidations", options.key_prefix),
            timeout: options.timeout,
            handlers: Arc::new(Mutex::new(Vec::new())),
            listening: std::sync::Once::new(),
        })
    }
}

#[async_trait]
impl InvalidationBus for RedisInvalidationBus {
    async fn publish(&self, event: Invalidation) -> Result<(), StoreError> {
        self.connection
            .publish(&self.channel, &event.encode())
            .await
    }

    /// Registers `handler`; the first call starts the subscription task (it ends when the
    /// bus is dropped).
    fn subscribe(&self, handler: InvalidationHandler) {
        self.handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handler);
        self.listening.call_once(|| {
            let listener = Listener {
                client: self.client.clone(),
                channel: self.channel.clone(),
                timeout: self.timeout,
                handlers: Arc::downgrade(&self.handlers),
            };
            tokio::spawn(listener.run());
        });
    }
}

struct Listener {
    client: Client,
    channel: String,
    timeout: Duration,
    handlers: Weak<Handlers>,
}

impl Listener {
    /// Delivers `event`; `false` once the bus is gone.
    fn deliver(&self, event: Invalidation) -> bool {
        let Some(handlers) = self.handlers.upgrade() else {
            return false;
        };
        let handlers = handlers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for handler in handlers {
            handler(event);
        }
        true
    }

    async fn run(self) {
        let mut failing = false;
        while self.handlers.strong_count() > 0 {
            match self.subscribe().await {
                Ok((sink, stream)) => {
                    if failing {
                        log::info!("invalidation channel {} subscribed again", self.channel);
                    }
                    // Whatever was published while we were not subscribed is lost.
                    if !self.deliver(Invalidation::All) {
                        return;
                    }
                    // Runs until the connection fails; from then on, failing.
                    match self.listen(sink, stream).await {
                        Some(reason) => {
                            log::warn!(
                                "invalidation channel {} lost ({reason}); caches fall back to their lifetime until it is back",
                                self.channel
                            );
                            failing = true;
                        }
                        None => return,
                    }
                }
                Err(e) => {
                    if !failing {
                        log::warn!(
                            "cannot subscribe to invalidation channel {} ({e}); caches fall back to their lifetime until it is back",
                            self.channel
                        );
                        failing = true;
                    }
                }
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    async fn subscribe(&self) -> Result<(::redis::aio::PubSubSink, PubSubStream), StoreError> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await.map_err(map_err)?;
            pubsub.subscribe(&self.channel).await.map_err(map_err)?;
            Ok::<_, StoreError>(pubsub.split())
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(StoreError::unavailable)?
    }

    /// Delivers messages until the connection fails (`Some(why)`) or the bus is dropped
    /// (`None`).
    async fn listen(
        &self,
        mut sink: ::redis::aio::PubSubSink,
        mut stream: PubSubStream,
    ) -> Option<String> {
        let mut liveness = tokio::time::interval(LIVENESS_INTERVAL);
        liveness.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let message = message?;
                    let event = message
                        .get_payload::<String>()
                        .ok()
                        .and_then(|text| Invalidation::decode(&text));
                    // Unreadable messages are ignored; a newer instance may send more kinds.
                    if let Some(event) = event {
                        if !self.deliver(event) {
                            return None;
                        }
                    }
                }
                _ = liveness.tick() => {
                    if self.handlers.strong_count() == 0 {
                        return None;
                    }
                    match tokio::time::timeout(self.timeout, sink.ping::<String>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Some(e.to_string()),
                        Err(_) => return Some("no answer to PING".to_owned()),
                    }
                }
            }
        }
    }
}
