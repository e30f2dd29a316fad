//! # restguard-core
//!
//! The framework-agnostic heart of restguard: Django REST Framework's authentication
//! model in Rust types, with no I/O.
//!
//! * [`Authenticator`]s run in order and each answers [`Outcome::Abstain`],
//!   [`Outcome::Authenticated`] or [`Outcome::Failed`];
//! * then every [`Permission`] of the [`Policy`] must allow;
//! * then every [`Throttle`] must allow;
//! * a [`Denial`] carries the one mapping from [`AuthError`] to the wire (status,
//!   `WWW-Authenticate`, `Retry-After`, DRF's JSON body).
//!
//! A [`PolicyTable`] holds the global default policy and per-route overrides, the way DRF
//! combines `DEFAULT_AUTHENTICATION_CLASSES` with a view's own `authentication_classes`.
//!
//! Store traits ([`store`]) describe persistence per concern; implementations live in
//! `restguard-store`.
//!
//! ```
//! use restguard_core::{permission::IsAuthenticated, Policy};
//!
//! // A policy with no authenticators and `IsAuthenticated` denies everyone.
//! let policy = Policy::builder().permission(IsAuthenticated).build();
//! assert!(policy.authenticators().is_empty());
//! ```
//!
//! ## Security
//! Secret-bearing types ([`secret::SecretString`]) print `[redacted]` in `Debug`. Nothing in
//! this crate logs.

pub mod authenticator;
pub mod error;
pub mod identity;
pub mod invalidation;
pub mod oauth_store;
pub mod permission;
pub mod policy;
pub mod rate;
pub mod secret;
pub mod store;
pub mod throttle;

pub use authenticator::{Authenticator, Outcome, RequestContext};
pub use error::{AuthError, Denial, Rejection};
pub use identity::{AuthInfo, ClientPrincipal, Identity, Principal, Scheme, User, UserId};
pub use permission::Permission;
pub use policy::{Policy, PolicyBuilder, PolicyTable, RouteRule};
pub use store::StoreError;
pub use throttle::{Throttle, ThrottleDecision};
