use axum::{
    body::Body,
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::request::Parts;
use restguard_core::{AuthError, Denial, Identity};

use crate::layer::RouteChallenge;

/// The authenticated identity of the request (DRF's `request.user` + `request.auth`).
///
/// Refuses anonymous requests with the route's `NotAuthenticated` response; use
/// `Option<Authenticated>` where anonymous users are allowed.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Identity>() {
            Some(identity) => Ok(Self(identity.clone())),
            None => {
                let challenge = parts
                    .extensions
                    .get::<RouteChallenge>()
                    .and_then(|c| c.0.clone());
                Err(Rejected(Denial::new(
                    AuthError::NotAuthenticated,
                    challenge,
                )))
            }
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
