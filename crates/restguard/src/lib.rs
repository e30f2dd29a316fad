//! # restguard
//!
//! Django REST Framework's authentication schemes for Rust services, built on the chain of
//! [`restguard_core`]:
//!
//! | scheme | type | header |
//! |---|---|---|
//! | HTTP Basic (RFC 7617) | [`basic::Basic`] | `Authorization: Basic base64(user:pass)` |
//! | API tokens (DRF authtoken / knox) | [`token::TokenAuth`] | `Authorization: Token <key>` |
//! | JWT (Simple JWT) | [`jwt::JwtAuth`] | `Authorization: Bearer <access token>` |
//! | Session + Django CSRF | [`session::Session`] | `Cookie: sessionid=…` (+ `X-CSRFToken` on unsafe methods) |
//!
//! Passwords are hashed with argon2id ([`password::PasswordHasher`]) on a small pool of
//! low-priority threads, so a flood of logins cannot starve the API; Django's
//! `pbkdf2_sha256$…` and `argon2$…` hashes verify and are upgraded on the next login.
//!
//! ```no_run
//! use std::sync::Arc;
//! use restguard::{basic::Basic, password::{PasswordAuth, PasswordHasher}, token::{TokenAuth, TokenService}};
//! use restguard_core::{permission::IsAuthenticated, store::Stores, Policy};
//!
//! # async fn example(stores: Stores) -> Result<(), restguard_core::StoreError> {
//! let passwords = PasswordAuth::new(stores.users.clone(), PasswordHasher::default());
//! let tokens = TokenService::from_stores(&stores).await?;
//! let policy = Policy::builder()
//!     .authenticator(TokenAuth::new(tokens))
//!     .authenticator(Basic::new(passwords))
//!     .permission(IsAuthenticated)
//!     .build();
//! # let _ = policy; Ok(()) }
//! ```
//!
//! ## Security
//! * Token keys are shown once and stored as HMAC-SHA-256 digests; lookups go by digest.
//! * Unknown users cost one dummy password verification, like wrong passwords.
//! * No secret is logged; secret types print `[redacted]`.
//! * Keys the server reads back (signing keys, the digest key) can be kept sealed under a
//!   key-encryption key outside the database ([`sealing`]).

pub mod basic;
pub mod csrf;
pub mod digest;
pub mod invalidation;
pub mod jwt;
pub mod password;
pub mod sealing;
pub mod session;
pub mod throttle;
pub mod token;

pub use restguard_core as core;
