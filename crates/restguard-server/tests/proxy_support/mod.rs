//! A loopback TCP proxy for fault tests: put it between the server and PostgreSQL or Redis,
//! cut it (every connection closed, new ones dropped at once) or black-hole it (nothing passes,
//! nothing closes), restore it.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// What the proxy does with traffic.
const UP: u8 = 0;
/// Every connection closed, new ones dropped at once (connection refused / reset).
const CUT: u8 = 1;
/// A black hole: connections stay open but nothing passes, new ones are accepted and
/// ignored.
const HANG: u8 = 2;

/// A loopback TCP proxy that can be cut or black-holed, and restored.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<Notify>,
    restored: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(AtomicU8::new(UP));
        let stop = Arc::new(Notify::new());
        let restored = Arc::new(Notify::new());
        let (mode2, stop2, restored2) = (mode.clone(), stop.clone(), restored.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                match mode2.load(Ordering::SeqCst) {
                    CUT => {
                        drop(inbound);
                        continue;
                    }
                    HANG => {
                        let restored = restored2.clone();
                        tokio::spawn(async move {
                            restored.notified().await;
                            drop(inbound);
                        });
                        continue;
                    }
                    _ => {}
                }
                let target = target.clone();
                let (mode, stop, restored) = (mode2.clone(), stop2.clone(), restored2.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = stop.notified() => {
                            if mode.load(Ordering::SeqCst) == HANG {
                                // Hold both ends open, silent, until restored.
                                restored.notified().await;
                            }
                        }
                    }
                });
            }
        });
        Proxy {
            addr,
            mode,
            stop,
            restored,
            task,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.set(CUT);
    }

    /// Keeps connections open but lets nothing through (a black-holed network).
    pub fn hang(&self) {
        self.set(HANG);
    }

    pub fn restore(&self) {
        self.mode.store(UP, Ordering::SeqCst);
        self.restored.notify_waiters();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
