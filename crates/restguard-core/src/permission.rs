//! Permissions: DRF's `BasePermission` and the built-in classes, composable with
//! [`PermissionExt::and`], [`PermissionExt::or`] and [`not`].

use std::{borrow::Cow, fmt, sync::Arc};

use http::Method;

use crate::identity::Identity;

/// What a permission sees: the method and the identity (if any).
#[derive(Debug, Clone, Copy)]
pub struct PermissionRequest<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The authenticated identity, `None` for anonymous requests.
    pub identity: Option<&'a Identity>,
}

impl PermissionRequest<'_> {
    /// True for GET, HEAD and OPTIONS (DRF's `SAFE_METHODS`).
    pub fn is_safe_method(&self) -> bool {
        matches!(*self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// The authenticated user, `None` when anonymous or when the credential speaks for an
    /// OAuth2 client rather than a user.
    pub fn user(&self) -> Option<&crate::identity::User> {
        self.identity.and_then(|i| i.user()).map(|u| &**u)
    }
}

/// A permission check (DRF's `has_permission`).
pub trait Permission: Send + Sync + fmt::Debug + 'static {
    /// Whether the request may proceed.
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool;

    /// The 403 message when this permission denies; `None` means DRF's default.
    fn message(&self) -> Option<Cow<'static, str>> {
        None
    }
}

impl<P: Permission + ?Sized> Permission for Arc<P> {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        (**self).has_permission(request)
    }
    fn message(&self) -> Option<Cow<'static, str>> {
        (**self).message()
    }
}

impl<P: Permission + ?Sized> Permission for Box<P> {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        (**self).has_permission(request)
    }
    fn message(&self) -> Option<Cow<'static, str>> {
        (**self).message()
    }
}

/// Everyone may proceed.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAny;

impl Permission for AllowAny {
    fn has_permission(&self, _: &PermissionRequest<'_>) -> bool {
        true
    }
}

/// Only authenticated users. An OAuth2 client acting for itself (client-credentials token)
/// is not a user and is refused, as DRF's `IsAuthenticated` refuses DOT's user-less tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct IsAuthenticated;

impl Permission for IsAuthenticated {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        request.user().is_some()
    }
}

/// Only staff users (DRF's `IsAdminUser` checks `is_staff`).
#[derive(Debug, Clone, Copy, Default)]
pub struct IsAdminUser;

impl Permission for IsAdminUser {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        request.user().is_some_and(|u| u.is_staff)
    }
}

/// Authenticated users, or anyone for safe methods.
#[derive(Debug, Clone, Copy, Default)]
pub struct IsAuthenticatedOrReadOnly;

impl Permission for IsAuthenticatedOrReadOnly {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        request.is_safe_method() || request.user().is_some()
    }
}

/// The credential carries every listed scope (DOT's `TokenHasScope`). Credentials that are
/// not scope-limited (API tokens, sessions) never pass.
#[derive(Debug, Clone)]
pub struct HasScope {
    scopes: Vec<String>,
}

impl HasScope {
    /// Requires all of `scopes`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self {
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }
}

impl Permission for HasScope {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        request
            .identity
            .is_some_and(|i| self.scopes.iter().all(|s| i.auth.has_scope(s)))
    }
}

#[path = "permission_scopes.rs"]
mod scopes;
pub use scopes::{HasReadWriteScope, HasScopeForMethod};

/// Both must allow.
#[derive(Debug, Clone)]
pub struct And<A, B>(pub A, pub B);

impl<A: Permission, B: Permission> Permission for And<A, B> {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        self.0.has_permission(request) && self.1.has_permission(request)
    }
    fn message(&self) -> Option<Cow<'static, str>> {
        self.0.message().or_else(|| self.1.message())
    }
}

/// Either may allow.
#[derive(Debug, Clone)]
pub struct Or<A, B>(pub A, pub B);

impl<A: Permission, B: Permission> Permission for Or<A, B> {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        self.0.has_permission(request) || self.1.has_permission(request)
    }
}

/// Allows what the inner permission denies.
#[derive(Debug, Clone)]
pub struct Not<A>(pub A);

impl<A: Permission> Permission for Not<A> {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        !self.0.has_permission(request)
    }
}

/// Negates a permission (DRF's `~P`).
///
/// ```
/// use restguard_core::permission::{not, IsAuthenticated, Permission, PermissionRequest};
/// let anonymous_only = not(IsAuthenticated);
/// let req = PermissionRequest { method: &http::Method::GET, identity: None };
/// assert!(anonymous_only.has_permission(&req));
/// ```
pub fn not<A: Permission>(permission: A) -> Not<A> {
    Not(permission)
}

/// Combinators on every permission (DRF's `&` and `|`).
///
/// ```
/// use restguard_core::permission::{IsAdminUser, IsAuthenticatedOrReadOnly, PermissionExt};
/// let p = IsAuthenticatedOrReadOnly.and(IsAdminUser.or(IsAuthenticatedOrReadOnly));
/// # let _ = p;
/// ```
pub trait PermissionExt: Permission + Sized {
    /// Both this and `other` must allow.
    fn and<B: Permission>(self, other: B) -> And<Self, B> {
        And(self, other)
    }
    /// This or `other` may allow.
    fn or<B: Permission>(self, other: B) -> Or<Self, B> {
        Or(self, other)
    }
}

impl<P: Permission + Sized> PermissionExt for P {}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::OffsetDateTime;

    use super::*;
    use crate::identity::{AuthInfo, Scheme, User, UserId};

    fn identity(staff: bool, scopes: Option<Vec<String>>) -> Identity {
        let now = OffsetDateTime::UNIX_EPOCH;
        let user = User {
            id: UserId(1),
            username: "alice".into(),
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            is_active: true,
            is_staff: staff,
            is_superuser: false,
            date_joined: now,
            last_login: None,
            credentials_changed_at: now,
        };
        let mut auth = AuthInfo::new(Scheme::OAuth2);
        auth.scopes = scopes;
        Identity::new(Arc::new(user), auth)
    }

    fn check(p: &dyn Permission, method: Method, identity: Option<&Identity>) -> bool {
        p.has_permission(&PermissionRequest {
            method: &method,
            identity,
        })
    }

    #[test]
    fn builtins() {
        let user = identity(false, None);
        let staff = identity(true, None);
        assert!(check(&AllowAny, Method::POST, None));
        assert!(!check(&IsAuthenticated, Method::GET, None));
        assert!(check(&IsAuthenticated, Method::GET, Some(&user)));
        assert!(!check(&IsAdminUser, Method::GET, Some(&user)));
        assert!(check(&IsAdminUser, Method::GET, Some(&staff)));
        assert!(check(&IsAuthenticatedOrReadOnly, Method::HEAD, None));
        assert!(!check(&IsAuthenticatedOrReadOnly, Method::DELETE, None));
        assert!(check(
            &IsAuthenticatedOrReadOnly,
            Method::DELETE,
            Some(&user)
        ));
    }

    #[test]
    fn a_client_principal_passes_only_permissions_that_need_no_user() {
        let mut auth = AuthInfo::new(Scheme::OAuth2);
        auth.scopes = Some(vec!["read".into()]);
        let client = Identity::client("svc", auth);
        assert!(check(&AllowAny, Method::POST, Some(&client)));
        assert!(check(&HasScope::new(["read"]), Method::GET, Some(&client)));
        assert!(!check(
            &HasScope::new(["write"]),
            Method::GET,
            Some(&client)
        ));
        assert!(!check(&IsAuthenticated, Method::GET, Some(&client)));
        assert!(!check(&IsAdminUser, Method::GET, Some(&client)));
        assert!(check(
            &IsAuthenticatedOrReadOnly,
            Method::GET,
            Some(&client)
        ));
        assert!(!check(
            &IsAuthenticatedOrReadOnly,
            Method::POST,
            Some(&client)
        ));
    }

    #[test]
    fn composition() {
        let user = identity(false, None);
        let staff_or_read = IsAdminUser.or(IsAuthenticatedOrReadOnly);
        assert!(check(&staff_or_read, Method::GET, None));
        assert!(!check(&staff_or_read, Method::POST, None));
        let user_not_staff = IsAuthenticated.and(not(IsAdminUser));
        assert!(check(&user_not_staff, Method::POST, Some(&user)));
        assert!(!check(&user_not_staff, Method::POST, None));
    }

    #[test]
    fn scopes() {
        let scoped = identity(false, Some(vec!["read".into(), "write".into()]));
        let unscoped = identity(false, None);
        assert!(check(&HasScope::new(["read"]), Method::GET, Some(&scoped)));
        assert!(!check(
            &HasScope::new(["admin"]),
            Method::GET,
            Some(&scoped)
        ));
        assert!(!check(
            &HasScope::new(["read"]),
            Method::GET,
            Some(&unscoped)
        ));
    }
}
