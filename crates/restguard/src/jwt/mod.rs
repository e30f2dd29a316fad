//! JSON Web Tokens with Simple JWT's wire format: access / refresh / sliding tokens, issued
//! by [`JwtService`] and checked on requests by [`JwtAuth`].
//!
//! Beyond Simple JWT:
//! * **refresh families** — with rotation (default), a refresh token works once; presenting
//!   a used one revokes every token of its family (RFC 9700), and of concurrent refreshes of
//!   one token exactly one succeeds (a conditional write in the store);
//! * **account changes** — a deactivated or deleted user, or one whose password changed after
//!   the token was issued, is refused (`user_inactive`, `user_not_found`,
//!   `password_changed`), with users held in a short-lived in-process cache so the hot path
//!   makes no database round trip;
//! * **keys** — generated on first start and kept in the store (every instance on one
//!   database shares them), rotated without logging anyone out (`kid`), published as a JWKS
//!   for asymmetric algorithms;
//! * **Bearer disambiguation** — [`JwtAuth`] abstains on bearer values that are not
//!   JWT-shaped, so an OAuth2 authenticator later in the chain still sees its opaque tokens;
//! * only digests of refresh `jti`s are stored.
//!
//! # Using it in an axum app
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{extract::State, routing::{get, post}, Json, Router};
//! use restguard::jwt::{JwtAuth, JwtService, JwtSettings};
//! use restguard_axum::{AuthLayer, AuthenticatedUser};
//! use restguard_core::{
//!     permission::{AllowAny, IsAuthenticated}, store::Stores, Policy, PolicyTable, RouteRule,
//! };
//! use restguard_store::memory::MemoryStore;
//!
//! async fn me(AuthenticatedUser { user, .. }: AuthenticatedUser) -> String {
//!     format!("hello {}", user.username)
//! }
//!
//! async fn refresh(
//!     State(jwt): State<JwtService>,
//!     Json(body): Json<serde_json::Value>,
//! ) -> Result<Json<serde_json::Value>, String> {
//!     let token = body["refresh"].as_str().unwrap_or_default();
//!     let pair = jwt.refresh(token).await.map_err(|e| e.to_string())?;
//!     Ok(Json(serde_json::json!({"access": pair.access, "refresh": pair.refresh})))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let stores = Stores::from_backend(Arc::new(MemoryStore::new()));
//! let jwt = JwtService::from_stores(&stores, JwtSettings::default()).await?;
//! let table = PolicyTable::new(
//!     Policy::builder()
//!         .authenticator(JwtAuth::new(jwt.clone()))
//!         .permission(IsAuthenticated)
//!         .build(),
//! )
//! .with_route(
//!     RouteRule::exact("/token/refresh/"),
//!     Policy::builder().permission(AllowAny).build(),
//! );
//! let app: Router = Router::new()
//!     .route("/me/", get(me))
//!     .route("/token/refresh/", post(refresh))
//!     .with_state(jwt)
//!     .layer(AuthLayer::new(table));
//! # let _ = app; Ok(()) }
//! ```

mod auth;
mod codec;
mod keys;
mod service;
mod signer;

use std::{borrow::Cow, fmt};

use restguard_core::{store::StoreError, Rejection};
use serde_json::{json, Map};

pub use auth::JwtAuth;
pub use codec::{is_jwt_shaped, MAX_TOKEN_BYTES};
pub use keys::{
    configured_key, generate_key, generate_key_blocking, rotate_signing_key, JwtAlgorithm, KeyError,
};
pub use service::{JwtService, JwtSettings, Refreshed, TokenPair};
pub use signer::ClaimsSigner;

/// The three kinds of token (the `token_type` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenType {
    /// Short-lived, presented on requests.
    Access,
    /// Long-lived, exchanged for access tokens.
    Refresh,
    /// Simple JWT's sliding token: presented on requests and refreshed itself.
    Sliding,
}

impl TokenType {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
            Self::Sliding => "sliding",
        }
    }

    /// Simple JWT's class name (`messages[].token_class`).
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Access => "AccessToken",
            Self::Refresh => "RefreshToken",
            Self::Sliding => "SlidingToken",
        }
    }

    fn from_claim(s: &str) -> Option<Self> {
        match s {
            "access" => Some(Self::Access),
            "refresh" => Some(Self::Refresh),
            "sliding" => Some(Self::Sliding),
            _ => None,
        }
    }
}

/// Why a token itself is not valid: Simple JWT's `TokenError` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenProblem {
    /// Bad shape, encoding, header, algorithm, key, signature, issuer, audience, claim types.
    Invalid,
    /// `exp` has passed.
    Expired,
    /// An access token where a refresh token was expected, or the reverse.
    WrongType,
    /// Blacklisted, rotated away, or in a revoked family.
    Blacklisted,
    /// No `jti`.
    NoId,
    /// No `token_type`.
    NoType,
    /// No `exp`.
    NoExp,
}

impl TokenProblem {
    /// Simple JWT's message.
    pub fn message(self) -> &'static str {
        match self {
            Self::Invalid => "Token is invalid",
            Self::Expired => "Token is expired",
            Self::WrongType => "Token has wrong type",
            Self::Blacklisted => "Token is blacklisted",
            Self::NoId => "Token has no id",
            Self::NoType => "Token has no type",
            Self::NoExp => "Token has no 'exp' claim",
        }
    }
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Everything a JWT operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token is not valid.
    #[error("{0}")]
    Token(TokenProblem),
    /// The token names no usable user.
    #[error("Token contained no recognizable user identification")]
    NoUserId,
    /// The token's user does not exist (any more).
    #[error("User not found")]
    UserNotFound,
    /// The token's user is inactive.
    #[error("User is inactive")]
    UserInactive,
    /// The user's password (or active flag) changed after the token was issued.
    #[error("The user's password has been changed.")]
    PasswordChanged,
    /// A store failed (503/500, not the client's fault).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TokenProblem> for JwtError {
    fn from(p: TokenProblem) -> Self {
        Self::Token(p)
    }
}

impl JwtError {
    /// The machine code of the contract's body (`None` for store failures).
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Self::Token(_) | Self::NoUserId => "token_not_valid",
            Self::UserNotFound => "user_not_found",
            Self::UserInactive => "user_inactive",
            Self::PasswordChanged => "password_changed",
            Self::Store(_) => return None,
        })
    }

    /// The rejection an endpoint (`/api/token/refresh/`, `verify/`, `blacklist/`) answers
    /// with: `{"detail": <message>, "code": …}`. `None` for store failures.
    pub fn endpoint_rejection(&self) -> Option<Rejection> {
        let code = self.code()?;
        let detail: Cow<'static, str> = match self {
            Self::Token(p) => Cow::Borrowed(p.message()),
            other => Cow::Owned(other.to_string()),
        };
        Some(Rejection::new(detail).with_code(code))
    }

    /// The rejection of the authenticator on a protected route: for token problems Simple
    /// JWT's `{"detail":"Given token not valid for any token type","code":"token_not_valid",
    /// "messages":[…]}`, naming `token_type`'s class. `None` for store failures.
    pub fn auth_rejection(&self, token_type: TokenType) -> Option<Rejection> {
        match self {
            Self::Token(problem) => {
                let mut extra = Map::new();
                extra.insert(
                    "messages".into(),
                    json!([{
                        "token_class": token_type.class_name(),
                        "token_type": token_type.as_str(),
                        "message": problem.message(),
                    }]),
                );
                Some(
                    Rejection::new("Given token not valid for any token type")
                        .with_code("token_not_valid")
                        .with_extra(extra),
                )
            }
            other => other.endpoint_rejection(),
        }
    }
}

#[cfg(test)]
mod tests;
