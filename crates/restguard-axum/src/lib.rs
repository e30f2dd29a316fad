//! # restguard-axum
//!
//! restguard's chain as an axum layer.
//!
//! * [`AuthLayer`] evaluates, for every request, the [`PolicyTable`]'s policy for the
//!   request's path and method — the global default unless a per-route rule overrides it —
//!   in DRF's order: authenticators, permissions, throttles. A refused request never reaches
//!   the handler; it gets the contract's status, `WWW-Authenticate` / `Retry-After` and JSON
//!   body.
//! * [`Authenticated`] extracts the identity (DRF's `request.user` / `request.auth`);
//!   `Option<Authenticated>` for routes that allow anonymous users. [`AuthenticatedUser`]
//!   also refuses an OAuth2 client acting for itself (client-credentials token) with 403, for
//!   handlers that work on a user's own data.
//!
//! ```
//! use axum::{routing::get, Router};
//! use restguard_axum::{AuthLayer, AuthenticatedUser};
//! use restguard_core::{permission::{AllowAny, IsAuthenticated}, Policy, PolicyTable, RouteRule};
//!
//! async fn me(AuthenticatedUser { user, .. }: AuthenticatedUser) -> String {
//!     user.username.clone()
//! }
//!
//! let default = Policy::builder().permission(IsAuthenticated).build(); // + authenticators
//! let public = Policy::builder().permission(AllowAny).build();
//! let table = PolicyTable::new(default).with_route(RouteRule::prefix("/public/"), public);
//! let app: Router = Router::new()
//!     .route("/me", get(me))
//!     .route("/public/hello", get(|| async { "hi" }))
//!     .layer(AuthLayer::new(table));
//! ```
//!
//! Serve with `into_make_service_with_connect_info::<SocketAddr>()` so throttles and login
//! limits see the client address, or insert a [`ClientIp`] extension from a trusted-proxy
//! layer of your own.

mod extract;
mod layer;

pub use extract::{Authenticated, AuthenticatedUser, Rejected, RequestIp};
pub use layer::{client_ip, AuthLayer, AuthService, ClientIp, RouteChallenge};
pub use restguard_core::{Policy, PolicyTable, RouteRule};
