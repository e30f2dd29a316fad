//! The path a forward-auth check is about, normalised before it meets the route table
//! (CONTRACT §7).
//!
//! The upstream behind the proxy (Django, Go's `net/http`, most servers) serves the decoded,
//! dot-resolved path, while the proxy hands restguard the raw request target. Matching the
//! raw text would let `/app/%61dmin/`, `/app/public/../admin/` or `//app/admin/` escape a
//! `[[route]]` for `/app/admin/`. So the route table sees the path as RFC 3986 §6.2.2 would
//! compare it — percent-escapes decoded (every escape, a superset of the unreserved
//! characters §6.2.2.2 names, because that is what the upstream reads), dot segments removed
//! (§5.2.4), repeated `/` collapsed — and the query ignored.
//!
//! What two upstreams could read differently is refused rather than guessed at: an encoded
//! `/` (one path segment or two?), `\` (a separator on some servers), NUL and the other
//! control characters, a dot segment that climbs above the root, a fragment, a malformed
//! escape, and bytes that are not UTF-8 once decoded.
//!
//! Decoding is applied exactly once, to the request's path and to each configured route's
//! path alike, so both sides are compared in the same form (`%2561` is the text `%61` on
//! both, as the upstream sees it).

/// Why an original path is refused (400 `invalid_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// Not an origin-form path (`/…`): relative, absolute-form, `*`, empty.
    #[error("it is not an absolute path")]
    NotAbsolute,
    /// `%2F`: a `/` that is not a separator.
    #[error("it contains an encoded slash (%2F)")]
    EncodedSlash,
    /// `\` or `%5C`.
    #[error("it contains a backslash")]
    Backslash,
    /// NUL or another control character (raw or encoded).
    #[error("it contains a NUL or another control character")]
    Control,
    /// `%` not followed by two hex digits.
    #[error("it contains a malformed percent-escape")]
    MalformedEscape,
    /// The decoded bytes are not UTF-8.
    #[error("it is not valid UTF-8 once decoded")]
    InvalidUtf8,
    /// `..` with no segment left to remove.
    #[error("a dot segment climbs above the root")]
    AboveRoot,
    /// A raw `#`: request targets carry no fragment.
    #[error("it contains a fragment (#)")]
    Fragment,
}

/// The normalised path of a request target (`/path?query`), or why it is refused.
///
/// The result always starts with `/`, contains no empty, `.` or `..` segment, and ends with
/// `/` exactly when the target's path did (or its last segment was `.` or `..`, per RFC 3986
/// §5.2.4: `/a/b/..` is `/a/`). It is decoded text for comparison, not a URI.
pub(crate) fn normalize(target: &str) -> Result<String, PathError> {
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded =
        String::from_utf8(decode(path.as_bytes())?).map_err(|_| PathError::InvalidUtf8)?;
    resolve(&decoded)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes every percent-escape once, refusing the bytes no upstream may read differently.
fn decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        let decoded = match byte {
            b'%' => {
                let (high, low) = match rest {
                    [high, low, ..] => (hex_value(*high), hex_value(*low)),
                    _ => (None, None),
                };
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(PathError::MalformedEscape);
                };
                rest = &rest[2..];
                let value = high << 4 | low;
                if value == b'/' {
                    return Err(PathError::EncodedSlash);
                }
                value
            }
            b'#' => return Err(PathError::Fragment),
            other => other,
        };
        match decoded {
            b'\\' => return Err(PathError::Backslash),
            0x00..=0x1f | 0x7f => return Err(PathError::Control),
            _ => out.push(decoded),
        }
    }
    Ok(out)
}

/// Collapses repeated `/` and removes dot segments (RFC 3986 §5.2.4) of a decoded path.
fn resolve(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    // Whether the result ends with `/`: an empty last segment, or a last `.` / `..`.
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = true;
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            name => {
                segments.push(name);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decodes_and_resolves() {
        for (target, expected) in [
            ("/", "/"),
            ("//", "/"),
            ("/app/admin/", "/app/admin/"),
            ("/app/admin", "/app/admin"),
            ("/app/%61dmin/", "/app/admin/"),
            ("/app/%61%64%6D%69%6e/", "/app/admin/"),
            ("//app//admin//", "/app/admin/"),
            ("/app/./admin/", "/app/admin/"),
            ("/app/public/../admin/", "/app/admin/"),
            ("/app/public/%2e%2E/admin/", "/app/admin/"),
            ("/app/public/.%2e/admin/", "/app/admin/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/a//../b", "/b"),
            ("/a/..b/.c", "/a/..b/.c"),
            ("/app/admin/?next=/../x", "/app/admin/"),
            ("/app/admin?", "/app/admin"),
            ("/caf%C3%A9/", "/café/"),
            ("/café/", "/café/"),
            ("/a%20b/", "/a b/"),
            ("/a%3Fb%23c/", "/a?b#c/"),
            ("/a%2541/", "/a%41/"),
            ("/a;b=c/", "/a;b=c/"),
        ] {
            assert_eq!(normalize(target).as_deref(), Ok(expected), "{target}");
        }
    }

    #[test]
    fn refuses_what_upstreams_read_differently() {
        for (target, error) in [
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("app/", PathError::NotAbsolute),
            ("http://h/app/", PathError::NotAbsolute),
            ("?/app/", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a\\b", PathError::Backslash),
            ("/a%5cb", PathError::Backslash),
            ("/a%00", PathError::Control),
            ("/a\0", PathError::Control),
            ("/a%0d%0a", PathError::Control),
            ("/a\t", PathError::Control),
            ("/a%7F", PathError::Control),
            ("/a%", PathError::MalformedEscape),
            ("/a%4", PathError::MalformedEscape),
            ("/a%g1", PathError::MalformedEscape),
            ("/a%%41", PathError::MalformedEscape),
            ("/a%FF", PathError::InvalidUtf8),
            ("/a%C3", PathError::InvalidUtf8),
            ("/a%ED%A0%80", PathError::InvalidUtf8),
            ("/..", PathError::AboveRoot),
            ("/../a", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/%2e%2e/a", PathError::AboveRoot),
            ("/a#b", PathError::Fragment),
        ] {
            assert_eq!(normalize(target), Err(error), "{target:?}");
        }
    }

    /// A path segment as an attacker might write it: letters, unreserved and sub-delims
    /// characters, non-ASCII, and the dot segments.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9._~!$&'()*+,;=:@ é€-]{1,8}",
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just(String::new()),
        ]
    }

    /// Percent-encodes every byte of `text` (except `/`) that `pick` selects.
    fn encode_some(text: &str, pick: &[bool]) -> String {
        let mut out = String::new();
        for (index, byte) in text.bytes().enumerate() {
            let chosen = pick
                .get(index % pick.len().max(1))
                .copied()
                .unwrap_or(false);
            if byte != b'/' && (chosen || !byte.is_ascii()) {
                out.push_str(&format!("%{byte:02X}"));
            } else {
                out.push(char::from(byte));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn any_input_is_normalised_or_refused_without_panicking(input in "\\PC{0,40}") {
            if let Ok(path) = normalize(&input) {
                prop_assert!(path.starts_with('/'));
            }
        }

        #[test]
        fn normalised_paths_have_no_empty_or_dot_segments(
            segments in proptest::collection::vec(segment(), 0..8),
            trailing in any::<bool>(),
        ) {
            let mut target = format!("/{}", segments.join("/"));
            if trailing {
                target.push('/');
            }
            if let Ok(path) = normalize(&target) {
                prop_assert!(path.starts_with('/'));
                prop_assert!(!path.contains("//"), "{path}");
                let parts: Vec<&str> = path.split('/').collect();
                for (index, segment) in parts.iter().enumerate() {
                    // The empty text before the leading `/` and after a trailing one.
                    let edge = index == 0 || index == parts.len() - 1;
                    if edge && segment.is_empty() {
                        continue;
                    }
                    prop_assert!(!segment.is_empty() && *segment != "." && *segment != "..", "{path}");
                }
                // Resolving again changes nothing.
                prop_assert_eq!(resolve(&path), Ok(path.clone()));
            }
        }

        #[test]
        fn every_percent_encoding_of_a_path_normalises_alike(
            segments in proptest::collection::vec(segment(), 1..8),
            pick in proptest::collection::vec(any::<bool>(), 1..16),
        ) {
            let plain = format!("/{}", segments.join("/"));
            let encoded = encode_some(&plain, &pick);
            prop_assert_eq!(normalize(&encoded), normalize(&plain), "{}", encoded);
        }

        #[test]
        fn dot_detours_and_doubled_slashes_change_nothing(
            segments in proptest::collection::vec("[a-z]{1,4}", 1..6),
            detour in "[a-z]{1,4}",
            at in 0usize..6,
        ) {
            let plain = format!("/{}/", segments.join("/"));
            let at = at.min(segments.len());
            let mut spelled = segments.clone();
            spelled.insert(at, format!("{detour}/..//."));
            let spelled = format!("//{}/", spelled.join("/"));
            prop_assert_eq!(normalize(&spelled), Ok(plain.clone()));
            prop_assert_eq!(normalize(&format!("{spelled}?x=/../y")), Ok(plain));
        }
    }
}
