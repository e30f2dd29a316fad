//! Scope permissions beyond [`HasScope`](super::HasScope): DOT's `TokenHasReadWriteScope` and
//! `TokenMatchesOASRequirements` (alternatives per method).

use std::collections::BTreeMap;

use http::Method;

use super::{Permission, PermissionRequest};

/// Safe methods need the `read` scope, others `write` (DOT's `TokenHasReadWriteScope`), plus
/// any extra scopes given. Credentials that are not scope-limited never pass.
///
/// ```
/// use restguard_core::permission::HasReadWriteScope;
/// let p = HasReadWriteScope::new().with_required(["reports"]);
/// # let _ = p;
/// ```
#[derive(Debug, Clone, Default)]
pub struct HasReadWriteScope {
    required: Vec<String>,
}

impl HasReadWriteScope {
    /// `read` for GET / HEAD / OPTIONS, `write` otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also requires every one of `scopes`.
    pub fn with_required<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.required.extend(scopes.into_iter().map(Into::into));
        self
    }
}

impl Permission for HasReadWriteScope {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        let needed = if request.is_safe_method() {
            "read"
        } else {
            "write"
        };
        request.identity.is_some_and(|i| {
            i.auth.has_scope(needed) && self.required.iter().all(|s| i.auth.has_scope(s))
        })
    }
}

/// Per method, alternatives of scope sets: the request passes when the credential holds every
/// scope of at least one alternative for its method (DOT's `TokenMatchesOASRequirements`). A
/// method with no entry is denied.
///
/// ```
/// use http::Method;
/// use restguard_core::permission::HasScopeForMethod;
/// let p = HasScopeForMethod::new()
///     .allow(Method::GET, ["read"])
///     .allow(Method::GET, ["admin"])              // or admin
///     .allow(Method::POST, ["write", "reports"]);  // both
/// # let _ = p;
/// ```
#[derive(Debug, Clone, Default)]
pub struct HasScopeForMethod {
    alternatives: BTreeMap<String, Vec<Vec<String>>>,
}

impl HasScopeForMethod {
    /// Denies everything until alternatives are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an alternative for `method`: all of `scopes`.
    pub fn allow<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        method: Method,
        scopes: I,
    ) -> Self {
        self.alternatives
            .entry(method.as_str().to_owned())
            .or_default()
            .push(scopes.into_iter().map(Into::into).collect());
        self
    }
}

impl Permission for HasScopeForMethod {
    fn has_permission(&self, request: &PermissionRequest<'_>) -> bool {
        let (Some(identity), Some(alternatives)) = (
            request.identity,
            self.alternatives.get(request.method.as_str()),
        ) else {
            return false;
        };
        alternatives
            .iter()
            .any(|set| set.iter().all(|s| identity.auth.has_scope(s)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::{AuthInfo, Identity, Scheme, User, UserId};

    fn identity(scopes: Option<&[&str]>) -> Identity {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let user = User {
            id: UserId(1),
            username: "u".into(),
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            is_active: true,
            is_staff: false,
            is_superuser: false,
            date_joined: now,
            last_login: None,
            credentials_changed_at: now,
        };
        let mut auth = AuthInfo::new(Scheme::OAuth2);
        auth.scopes = scopes.map(|s| s.iter().map(|x| (*x).to_owned()).collect());
        Identity::new(Arc::new(user), auth)
    }

    fn check(p: &dyn Permission, method: Method, identity: Option<&Identity>) -> bool {
        p.has_permission(&PermissionRequest {
            method: &method,
            identity,
        })
    }

    #[test]
    fn read_write() {
        let p = HasReadWriteScope::new();
        let read = identity(Some(&["read"]));
        let both = identity(Some(&["read", "write"]));
        let unscoped = identity(None);
        assert!(check(&p, Method::GET, Some(&read)));
        assert!(!check(&p, Method::POST, Some(&read)));
        assert!(check(&p, Method::DELETE, Some(&both)));
        assert!(!check(&p, Method::GET, Some(&unscoped)));
        assert!(!check(&p, Method::GET, None));
        let extra = HasReadWriteScope::new().with_required(["reports"]);
        assert!(!check(&extra, Method::GET, Some(&read)));
    }

    #[test]
    fn per_method_alternatives() {
        let p = HasScopeForMethod::new()
            .allow(Method::GET, ["read"])
            .allow(Method::GET, ["admin"])
            .allow(Method::POST, ["write", "reports"]);
        assert!(check(&p, Method::GET, Some(&identity(Some(&["admin"])))));
        assert!(!check(&p, Method::POST, Some(&identity(Some(&["write"])))));
        assert!(check(
            &p,
            Method::POST,
            Some(&identity(Some(&["write", "reports"])))
        ));
        assert!(!check(
            &p,
            Method::PUT,
            Some(&identity(Some(&["read", "write", "admin"])))
        ));
    }
}
