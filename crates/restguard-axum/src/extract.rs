use std::sync::Arc;

use axum::{
    body::Body,
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::request::Parts;
use restguard_core::{AuthError, AuthInfo, Denial, Identity, Principal, User};

use crate::layer::RouteChallenge;

/// The authenticated identity of the request (DRF's `request.user` + `request.auth`).
///
/// Refuses anonymous requests with the route's `NotAuthenticated` response; use
/// `Option<Authenticated>` where anonymous users are allowed.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Identity);

fn route_denial(parts: &Parts, error: AuthError) -> Rejected {
    let challenge = parts
        .extensions
        .get::<RouteChallenge>()
        .and_then(|c| c.0.clone());
    Rejected(Denial::new(error, challenge))
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Identity>() {
            Some(identity) => Ok(Self(identity.clone())),
            None => Err(route_denial(parts, AuthError::NotAuthenticated)),
        }
    }
}

/// An authenticated *user* (DRF's `request.user` when it is a real user).
///
/// Like [`Authenticated`], but an OAuth2 client acting for itself (a client-credentials
/// token, [`Principal::Client`]) is refused with DRF's 403 `You do not have permission to
/// perform this action.` — for handlers that act on a user's own data.
///
/// ```
/// use restguard_axum::AuthenticatedUser;
///
/// async fn whoami(AuthenticatedUser { user, .. }: AuthenticatedUser) -> String {
///     user.username.clone()
/// }
/// # let _ = whoami;
/// ```
#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    /// The user.
    pub user: Arc<User>,
    /// How they authenticated (DRF's `request.auth`).
    pub auth: AuthInfo,
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedUser {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Identity>() {
            Some(Identity {
                principal: Principal::User(user),
                auth,
            }) => Ok(Self {
                user: user.clone(),
                auth: auth.clone(),
            }),
            Some(_) => Err(route_denial(
                parts,
                AuthError::PermissionDenied { detail: None },
            )),
            None => Err(route_denial(parts, AuthError::NotAuthenticated)),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Identity>().cloned().map(Self))
    }
}

/// A refused request as an axum response (the contract's status, headers and JSON body).
#[derive(Debug)]
pub struct Rejected(pub Denial);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        self.0.into_response().map(Body::from)
    }
}

impl From<Denial> for Rejected {
    fn from(d: Denial) -> Self {
        Self(d)
    }
}

/// The client address ([`crate::client_ip`]), for handlers that throttle by IP themselves
/// (password logins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for RequestIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(crate::layer::client_ip(parts)))
    }
}
