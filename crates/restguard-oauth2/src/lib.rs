//! # restguard-oauth2
//!
//! An OAuth2 authorization server and OpenID Connect provider with Django OAuth Toolkit's
//! endpoints and RFC 9700's defaults, independent of any web framework (the `restguard`
//! server mounts it under `/o/`), and the [`OAuth2Bearer`] authenticator for API routes.
//!
//! | piece | what |
//! |---|---|
//! | [`Provider`] | grants (`authorization_code` + PKCE, `client_credentials`, `refresh_token` with rotation, `password` if enabled), revocation (RFC 7009), introspection (RFC 7662), userinfo, discovery / RFC 8414 metadata, JWKS |
//! | [`OAuth2Bearer`] | `Authorization: Bearer rgat_…` in the authentication chain, with scopes |
//! | [`OAuthError`] | RFC 6749 errors and their one mapping to responses |
//! | [`id_token_hint`] | verifying an RP-initiated logout's `id_token_hint` against the published keys |
//!
//! ## Security
//! * Client secrets, codes, access and refresh tokens are stored as keyed digests only and
//!   compared in constant time; tokens carry a recognizable prefix (`rgat_`, `rgrt_`, `rgac_`,
//!   `rgcs_`) for secret scanners.
//! * PKCE `S256` is required for every authorization-code request (`plain` only if enabled);
//!   redirect URIs match exactly (loopback IPs on any port, RFC 8252).
//! * Codes are single-use (a conditional write) and live 60 s; a replayed code revokes what
//!   it issued. Refresh tokens rotate on every use; a replayed one revokes its family.
//! * A failed token request writes nothing; revocation touches only the caller's tokens.
//! * An `id_token_hint` counts only once verified ([`id_token_hint`]); the `introspection`
//!   scope is never granted by default; revoking a user's grant ends its codes with its
//!   tokens; with [`Provider::with_invalidations`] every revocation reaches every instance's
//!   cache at once.
//! * Scope strings are parsed in one linear pass, capped at [`form::MAX_SCOPES`] scopes of
//!   [`form::MAX_SCOPE_LEN`] bytes.
//!
//! ```
//! use restguard_oauth2::client::pkce_matches;
//! assert!(!pkce_matches("S256", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "wrong"));
//! ```

#![forbid(unsafe_code)]

mod bearer;
pub mod client;
pub mod error;
pub mod form;
pub mod id_token_hint;
pub mod provider;

pub use bearer::OAuth2Bearer;
pub use error::{ErrorCode, OAuthError};
pub use provider::{AuthorizeError, AuthorizeRequest, OAuthSettings, Provider};
