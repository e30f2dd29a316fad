//! Client authentication (`client_secret_basic`, `client_secret_post`, public clients),
//! redirect URI matching and PKCE.

use base64::{
    alphabet,
    engine::{
        general_purpose::URL_SAFE_NO_PAD, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig,
    },
    Engine,
};
use http::HeaderValue;
use restguard::digest::SecretDigester;
use restguard_core::store::{Application, OAuthStore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{error::OAuthError, form::Params};

const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest `client_id` or secret looked at.
const MAX_CLIENT_FIELD: usize = 256;

/// The credentials a request presents for its client.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The client id.
    pub client_id: String,
    /// The secret, if one was sent.
    pub secret: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Reads the client's credentials from `Authorization: Basic` or the form. `Ok(None)`: the
/// request names no client. Using both methods at once is `invalid_request`; a malformed
/// Basic header is `invalid_client`.
pub fn client_credentials(
    authorization: Option<&HeaderValue>,
    params: &Params,
) -> Result<Option<ClientCredentials>, OAuthError> {
    let basic = match authorization {
        None => None,
        Some(value) => {
            let value = value.as_bytes();
            let mut words = value.splitn(2, |b| *b == b' ');
            let scheme = words.next().unwrap_or_default();
            if scheme.eq_ignore_ascii_case(b"basic") {
                let encoded = words.next().unwrap_or_default();
                let encoded = std::str::from_utf8(encoded)
                    .map_err(|_| OAuthError::invalid_client())?
                    .trim();
                if encoded.len() > 4 * MAX_CLIENT_FIELD {
                    return Err(OAuthError::invalid_client());
                }
                let decoded = STANDARD_LENIENT
                    .decode(encoded)
                    .map_err(|_| OAuthError::invalid_client())?;
                let decoded =
                    String::from_utf8(decoded).map_err(|_| OAuthError::invalid_client())?;
                let (id, secret) = decoded
                    .split_once(':')
                    .ok_or_else(OAuthError::invalid_client)?;
                // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
                let decode = |s: &str| -> String {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                Some(ClientCredentials {
                    client_id: decode(id),
                    secret: Some(decode(secret)),
                })
            } else {
                // Another scheme (a bearer token at introspection): not client credentials.
                None
            }
        }
    };
    match basic {
        Some(creds) => {
            if params.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request(
                    "Use only one client authentication method.",
                ));
            }
            if let Some(id) = params.get("client_id") {
                if id != creds.client_id {
                    return Err(OAuthError::invalid_client());
                }
            }
            Ok(Some(creds))
        }
        None => Ok(params.get("client_id").map(|id| ClientCredentials {
            client_id: id.to_owned(),
            secret: params.get("client_secret").map(str::to_owned),
        })),
    }
}

/// Authenticates a client: confidential clients need their secret; public clients send none
/// (a secret from a public client, which has none, fails). Unknown clients and wrong secrets
/// get the same `invalid_client`.
pub async fn authenticate_client(
    store: &dyn OAuthStore,
    digester: &SecretDigester,
    creds: &ClientCredentials,
) -> Result<Application, OAuthError> {
    if creds.client_id.len() > MAX_CLIENT_FIELD {
        return Err(OAuthError::invalid_client());
    }
    let app = store.application_by_client_id(&creds.client_id).await?;
    check_client(app.as_ref(), digester, creds)?;
    app.ok_or_else(OAuthError::invalid_client)
}

/// [`authenticate_client`]'s check on an already looked-up application (`None`: unknown).
pub fn check_client(
    app: Option<&Application>,
    digester: &SecretDigester,
    creds: &ClientCredentials,
) -> Result<(), OAuthError> {
    if creds.client_id.len() > MAX_CLIENT_FIELD
        || creds
            .secret
            .as_ref()
            .is_some_and(|s| s.len() > MAX_CLIENT_FIELD)
    {
        return Err(OAuthError::invalid_client());
    }
    // Digest even for unknown clients so both failures cost the same.
    let presented = creds.secret.as_deref().map(|s| digester.digest(s));
    let Some(app) = app else {
        return Err(OAuthError::invalid_client());
    };
    match (&app.secret_digest, presented) {
        (Some(stored), Some(presented)) if bool::from(stored.0.ct_eq(&presented.0)) => Ok(()),
        (None, None) if app.client_type == restguard_core::store::ClientType::Public => Ok(()),
        _ => Err(OAuthError::invalid_client()),
    }
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(_) => false,
    }
}

/// Whether `requested` matches a registered redirect URI: exactly, or (RFC 8252 §7.3) an
/// `http` loopback IP literal differing only in the port. A fragment never matches.
///
/// ```
/// use restguard_oauth2::client::redirect_uri_matches;
/// let registered = vec!["http://127.0.0.1/cb".to_owned(), "https://app.example/cb".to_owned()];
/// assert!(redirect_uri_matches(&registered, "http://127.0.0.1:53124/cb"));
/// assert!(redirect_uri_matches(&registered, "https://app.example/cb"));
/// assert!(!redirect_uri_matches(&registered, "https://app.example:8443/cb"));
/// assert!(!redirect_uri_matches(&registered, "https://app.example/cb?x=1"));
/// ```
pub fn redirect_uri_matches(registered: &[String], requested: &str) -> bool {
    if requested.contains('#') {
        return false;
    }
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    let Ok(req) = url::Url::parse(requested) else {
        return false;
    };
    if req.scheme() != "http" || !req.host().as_ref().is_some_and(is_loopback_host) {
        return false;
    }
    registered.iter().any(|r| {
        let Ok(reg) = url::Url::parse(r) else {
            return false;
        };
        reg.scheme() == "http"
            && reg.host() == req.host()
            && reg.path() == req.path()
            && reg.query() == req.query()
            && reg.username() == req.username()
            && reg.password() == req.password()
            && reg.fragment().is_none()
    })
}

/// Whether a PKCE verifier is well-formed (RFC 7636 §4.1: 43–128 unreserved characters).
pub fn verifier_well_formed(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether a challenge is well-formed (same alphabet and length as a verifier).
pub fn challenge_well_formed(challenge: &str) -> bool {
    verifier_well_formed(challenge)
}

/// Checks `verifier` against the stored challenge, in constant time.
///
/// ```
/// use restguard_oauth2::client::pkce_matches;
/// // RFC 7636 Appendix B.
/// assert!(pkce_matches("S256", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
///     "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
/// ```
pub fn pkce_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    if !verifier_well_formed(verifier) {
        return false;
    }
    let computed = match method {
        "S256" => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        "plain" => verifier.to_owned(),
        _ => return false,
    };
    computed.len() == challenge.len() && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// Checks a redirect URI at registration: absolute, no fragment, no whitespace, not a
/// `javascript:` / `data:` / `file:` URL. Returns the reason when it is refused.
///
/// ```
/// use restguard_oauth2::client::check_redirect_uri;
/// assert!(check_redirect_uri("https://app.example/cb").is_ok());
/// assert!(check_redirect_uri("com.example.app:/oauth").is_ok());
/// assert!(check_redirect_uri("https://app.example/cb#x").is_err());
/// assert!(check_redirect_uri("/relative").is_err());
/// ```
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let parsed = url::Url::parse(uri).map_err(|e| e.to_string())?;
    if uri.contains('#') {
        return Err("a redirect URI may not have a fragment".into());
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a redirect URI may not contain spaces".into());
    }
    if matches!(parsed.scheme(), "javascript" | "data" | "file" | "vbscript") {
        return Err(format!("scheme {} is not allowed", parsed.scheme()));
    }
    Ok(())
}
