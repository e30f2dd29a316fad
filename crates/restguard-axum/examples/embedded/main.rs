//! Embedding restguard in your own axum app: a global default policy and two per-route
//! overrides, on an in-memory store.
//!
//! ```sh
//! cargo run -p restguard-axum --example embedded
//! curl -u alice:wonderland http://127.0.0.1:3000/me            # default policy: token or basic
//! curl http://127.0.0.1:3000/public/status                      # override: allow any
//! curl -u alice:wonderland http://127.0.0.1:3000/admin/stats    # override: staff only → 403
//! ```

mod app;

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = app::demo().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
