//! Django compatibility of `restguard::csrf`.
//!
//! * Against `fixtures/csrf_django.json`, written by `fixtures/gen_csrf.py` with the real
//!   Django package: Django's masked tokens unmask to their secrets and pass the check; masking
//!   with a pinned mask gives Django's token byte for byte; and every request case gets the
//!   reason Django's `CsrfViewMiddleware` (run as DRF runs it) gave. No Python needed.
//! * Live, when `python3` can import Django (or the interpreter named by `RESTGUARD_PYTHON`):
//!   tokens masked here are unmasked by Django, tokens masked by Django pass here. Skipped with
//!   a message without Django, unless `RESTGUARD_REQUIRE_SERVICES=1`, which makes it fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    process::{Command, Stdio},
};

use http::{HeaderValue, Method, Request};
use restguard::csrf::{mask, mask_with, parse_cookie, unmask, CsrfFailure, CsrfPolicy, CsrfSecret};
use serde_json::{json, Value};

const FIXTURE: &str = include_str!("fixtures/csrf_django.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is JSON")
}

fn s(v: &Value) -> &str {
    v.as_str().expect("a string")
}

/// A JSON string of Latin-1 characters as the header bytes Django would have decoded.
fn header_value(text: &str) -> HeaderValue {
    let bytes: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("Latin-1 fixture value"))
        .collect();
    HeaderValue::from_bytes(&bytes).expect("valid header value")
}

fn post(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = Request::builder().method(Method::POST).uri("/api/thing/");
    for (name, value) in headers {
        builder = builder.header(*name, header_value(value));
    }
    builder.body(()).unwrap().into_parts().0
}

#[test]
fn django_masked_tokens_unmask_and_pass_the_check() {
    let fixture = fixture();
    let pairs = fixture["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 20);
    let policy = CsrfPolicy::default();
    for pair in pairs {
        let (secret_text, token) = (s(&pair["secret"]), s(&pair["token"]));
        let secret = CsrfSecret::from_secret(secret_text).unwrap();
        assert_eq!(unmask(token).unwrap(), secret, "unmask {token}");
        assert_eq!(parse_cookie(secret_text).unwrap(), secret);
        // A legacy (Django < 4.1) cookie holding the masked token.
        assert_eq!(parse_cookie(token).unwrap(), secret);

        let cookie = format!("csrftoken={secret_text}");
        for (cookie, header) in [
            (cookie.as_str(), token),
            (cookie.as_str(), secret_text),
            (&format!("csrftoken={token}"), token),
        ] {
            let parts = post(&[("cookie", cookie), ("x-csrftoken", header)]);
            assert_eq!(policy.check(&parts, None, false, "testserver"), Ok(()));
        }
        let parts = post(&[("cookie", &cookie)]);
        assert_eq!(policy.check(&parts, Some(token), false, "t"), Ok(()));

        // Someone else's token is refused with Django's wording.
        let other = mask(&CsrfSecret::generate());
        let parts = post(&[("cookie", &cookie), ("x-csrftoken", &other)]);
        let failure = policy.check(&parts, None, false, "t").unwrap_err();
        assert_eq!(
            failure.to_string(),
            "CSRF token from the 'X-Csrftoken' HTTP header incorrect."
        );
    }
}

#[test]
fn pinned_masks_give_djangos_tokens() {
    let fixture = fixture();
    let cases = fixture["fixed_masks"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let secret = CsrfSecret::from_secret(s(&case["secret"])).unwrap();
        let token = mask_with(&secret, s(&case["mask"])).unwrap();
        assert_eq!(token, s(&case["token"]));
    }
}

#[test]
fn request_cases_get_djangos_reasons() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() > 50);
    let mut mismatches = Vec::new();
    for case in cases {
        let name = s(&case["name"]);
        let method = Method::from_bytes(s(&case["method"]).as_bytes()).unwrap();
        let mut builder = Request::builder().method(method).uri("/api/thing/");
        for header in case["headers"].as_array().unwrap() {
            builder = builder.header(s(&header[0]), header_value(s(&header[1])));
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        let policy = CsrfPolicy::new(
            case["trusted_origins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| s(o).to_owned()),
        );
        let got = policy
            .check(
                &parts,
                case["form"].as_str(),
                case["secure"].as_bool().unwrap(),
                s(&case["host"]),
            )
            .err()
            .map(|f: CsrfFailure| f.reason());
        let want = case["reason"].as_str().map(str::to_owned);
        if got != want {
            mismatches.push(format!("{name}: django {want:?}, restguard {got:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "differs from Django {}:\n{}",
        fixture["django_version"],
        mismatches.join("\n")
    );
}

const LIVE_SCRIPT: &str = r#"
import json, sys
import django
from django.conf import settings
settings.configure()
from django.middleware.csrf import _mask_cipher_secret, _unmask_cipher_token
data = json.load(sys.stdin)
json.dump({
    "version": django.get_version(),
    "unmasked": [_unmask_cipher_token(t) for t in data["tokens"]],
    "masked": [_mask_cipher_secret(s) for s in data["secrets"]],
}, sys.stdout)
"#;

#[test]
fn live_round_trip_with_django() {
    let python = std::env::var("RESTGUARD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let required = std::env::var("RESTGUARD_REQUIRE_SERVICES").as_deref() == Ok("1");
    let importable = Command::new(&python)
        .args(["-c", "import django"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !importable {
        let why = format!(
            "`{python} -c \"import django\"` failed: install it with \
             `{python} -m pip install -r .ci/requirements.txt`"
        );
        assert!(!required, "RESTGUARD_REQUIRE_SERVICES=1 but {why}");
        eprintln!("skipping the live Django round trip: {why}");
        return;
    }

    let secrets: Vec<CsrfSecret> = (0..64).map(|_| CsrfSecret::generate()).collect();
    let tokens: Vec<String> = secrets.iter().map(CsrfSecret::mask).collect();
    let input = json!({
        "tokens": tokens,
        "secrets": secrets.iter().map(CsrfSecret::as_str).collect::<Vec<_>>(),
    });
    let mut child = Command::new(&python)
        .args(["-c", LIVE_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("live round trip against Django {}", answer["version"]);

    let unmasked = answer["unmasked"].as_array().unwrap();
    let masked = answer["masked"].as_array().unwrap();
    assert_eq!(unmasked.len(), secrets.len());
    assert_eq!(masked.len(), secrets.len());
    let policy = CsrfPolicy::default();
    for ((secret, from_django), django_token) in secrets.iter().zip(unmasked).zip(masked) {
        // Ours → Django.
        assert_eq!(s(from_django), secret.as_str());
        // Django's → ours.
        let django_token = s(django_token);
        assert_eq!(unmask(django_token).unwrap(), *secret);
        let cookie = format!("csrftoken={}", secret.as_str());
        let parts = post(&[("cookie", &cookie), ("x-csrftoken", django_token)]);
        assert_eq!(policy.check(&parts, None, false, "testserver"), Ok(()));
    }
}
