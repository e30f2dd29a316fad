//! Connection URLs without their passwords, for messages and logs (CONTRACT §10: `database.url`
//! and `redis.url` are printed as `postgres://user:***@host/db`).
//!
//! The userinfo is taken to end at the **last** `@` of the URL, so a password holding an
//! unescaped `@`, `/`, `?` or `#` is still masked whole; in the rare URL whose query holds an
//! `@` as well, a little more than the password is masked, which is harmless. A `password=`
//! query parameter (libpq's form) is masked too.

use std::borrow::Cow;

/// What a password is replaced with.
pub const MASK: &str = "***";

/// `url` with its password (the userinfo after the first `:`, and any `password=` query
/// parameter) replaced by `***`; other URLs unchanged.
///
/// ```
/// use restguard_store::redact::redact_url;
/// assert_eq!(redact_url("postgres://me:s3cret@db:5432/app"), "postgres://me:***@db:5432/app");
/// assert_eq!(redact_url("redis://:s3cret@cache/0"), "redis://:***@cache/0");
/// assert_eq!(redact_url("postgres://db/app?password=s3cret&x=1"), "postgres://db/app?password=***&x=1");
/// assert_eq!(redact_url("sqlite://restguard.db"), "sqlite://restguard.db");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(url);
    if let Some((start, end)) = password_span(url) {
        out = Cow::Owned(format!("{}{MASK}{}", &url[..start], &url[end..]));
    }
    mask_password_params(out)
}

/// The password written in `url`'s userinfo (as written: percent-encoded if it was), or
/// `None` when there is none.
///
/// ```
/// use restguard_store::redact::url_password;
/// assert_eq!(url_password("postgres://me:s%40cret@db/app"), Some("s%40cret"));
/// assert_eq!(url_password("postgres://me@db/app"), None);
/// ```
pub fn url_password(url: &str) -> Option<&str> {
    password_span(url)
        .map(|(start, end)| &url[start..end])
        .filter(|p| !p.is_empty())
}

/// Byte range of the userinfo's password: after the first `:` following `://`, up to the
/// last `@`.
fn password_span(url: &str) -> Option<(usize, usize)> {
    let authority = url.find("://")? + 3;
    let at = authority + url[authority..].rfind('@')?;
    let colon = authority + url[authority..at].find(':')?;
    Some((colon + 1, at))
}

fn mask_password_params(url: Cow<'_, str>) -> Cow<'_, str> {
    let Some(query) = url.find('?') else {
        return url;
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..=query]);
    let mut changed = false;
    for (i, pair) in url[query + 1..].split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, value)) if name.eq_ignore_ascii_case("password") && !value.is_empty() => {
                // A fragment after the value is kept.
                let tail = value.find('#').map_or("", |f| &value[f..]);
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
                out.push_str(tail);
                changed = true;
            }
            _ => out.push_str(pair),
        }
    }
    if changed {
        Cow::Owned(out)
    } else {
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_whole() {
        for (url, redacted) in [
            ("postgres://me:secret@db/x", "postgres://me:***@db/x"),
            ("postgresql://me:p@ss@db/x", "postgresql://me:***@db/x"),
            ("postgres://me:p/a?s#s@db:1/x", "postgres://me:***@db:1/x"),
            (
                "redis://:secret@127.0.0.1:6379/",
                "redis://:***@127.0.0.1:6379/",
            ),
            (
                "rediss://default:secret@cache/0",
                "rediss://default:***@cache/0",
            ),
            ("postgres://db/x", "postgres://db/x"),
            ("postgres://me@db/x", "postgres://me@db/x"),
            (
                "postgres://me:secret@db/x?options=-c%20search_path%3Ds",
                "postgres://me:***@db/x?options=-c%20search_path%3Ds",
            ),
            (
                "postgres://db/x?user=me&Password=secret#f",
                "postgres://db/x?user=me&Password=***#f",
            ),
            ("memory:", "memory:"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
            assert!(!redact_url(url).contains("secret"), "{url}");
        }
        assert_eq!(url_password("postgres://me:p@ss@db/x"), Some("p@ss"));
        assert_eq!(url_password("postgres://me:@db/x"), None);
        assert_eq!(url_password("memory:"), None);
    }
}
