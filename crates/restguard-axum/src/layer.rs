use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::{ConnectInfo, Request},
    response::{IntoResponse, Response},
};
use http::HeaderValue;
use restguard_core::{Denial, PolicyTable, RequestContext};
use tower::{Layer, Service};

use crate::extract::Rejected;

/// The client address as decided by a layer that knows the deployment (for example from
/// `X-Forwarded-For` behind a trusted proxy). Takes precedence over the socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The challenge of the route's first authenticator, kept for extractors that must refuse an
/// anonymous request themselves.
#[derive(Debug, Clone)]
pub struct RouteChallenge(pub Option<HeaderValue>);

/// Applies a [`PolicyTable`] to every request.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    table: Arc<PolicyTable>,
}

impl AuthLayer {
    /// A layer enforcing `table`.
    pub fn new(table: PolicyTable) -> Self {
        Self {
            table: Arc::new(table),
        }
    }

    /// A layer sharing an existing table.
    pub fn from_shared(table: Arc<PolicyTable>) -> Self {
        Self { table }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    table: Arc<PolicyTable>,
}

/// The client address of a request: a [`ClientIp`] extension if a layer set one, else the
/// socket's peer address (`ConnectInfo`), else `None`.
pub fn client_ip(request: &http::request::Parts) -> Option<IpAddr> {
    if let Some(ClientIp(ip)) = request.extensions.get::<ClientIp>() {
        return Some(*ip);
    }
    request
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

impl<S> Service<Request> for AuthService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone that was polled ready is the one we call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let table = self.table.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let policy = table.policy_for(&parts.method, parts.uri.path()).clone();
            let ip = client_ip(&parts);
            let outcome = match RequestContext::new(&parts, ip) {
                Ok(context) => policy.evaluate(&context).await,
                Err(error) => Err(Denial::new(error, policy.challenge())),
            };
            match outcome {
                Ok(identity) => {
                    parts.extensions.insert(RouteChallenge(policy.challenge()));
                    if let Some(identity) = identity {
                        parts.extensions.insert(identity);
                    }
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(denial) => {
                    drop(body);
                    Ok(Rejected(denial).into_response())
                }
            }
        })
    }
}
