//! Python `authlib` as a third independent client (`tests/authlib/flow.py`): discovery,
//! authorization code + PKCE + nonce with the forms submitted over HTTP, id_token verified
//! against the JWKS, userinfo, refresh rotation and replay, client credentials, introspection,
//! revocation. Skipped (with a printed reason) when `python3` with `authlib` and `requests` is
//! not installed, unless `RESTGUARD_REQUIRE_SERVICES=1` (CI, which installs them from
//! `.ci/requirements.txt`) or `RESTGUARD_REQUIRE_AUTHLIB=1`.

mod common;
mod oauth2_support;
mod session_support;

use std::process::Command;

use oauth2_support::{create_app, REDIRECT};
use session_support::server_with;

fn have_authlib() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import authlib, requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = ["RESTGUARD_REQUIRE_SERVICES", "RESTGUARD_REQUIRE_AUTHLIB"]
            .iter()
            .any(|v| std::env::var(v).as_deref() == Ok("1"));
        assert!(
            !required,
            "python3 with authlib and requests is required (RESTGUARD_REQUIRE_SERVICES=1)"
        );
        eprintln!(
            "SKIPPED: python3 authlib / requests are not installed (pip install authlib requests)"
        );
    }
    ok
}

#[test]
fn authlib_code_pkce_oidc_refresh_client_credentials() {
    if !have_authlib() {
        return;
    }
    let server = server_with(&[]);
    server.create_user_with(
        "alice",
        "correct horse battery",
        &["--email", "alice@example.com"],
    );
    let web = create_app(
        &server,
        &[
            "--name",
            "Authlib RP",
            "--client-type",
            "confidential",
            "--grant",
            "authorization-code",
            "--redirect-uri",
            REDIRECT,
        ],
    );
    let svc = create_app(
        &server,
        &[
            "--name",
            "Authlib job",
            "--client-type",
            "confidential",
            "--grant",
            "client-credentials",
        ],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/authlib/flow.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            server.base.as_str(),
            &web.id,
            web.secret.as_deref().unwrap_or_default(),
            REDIRECT,
            "alice",
            "correct horse battery",
            &svc.id,
            svc.secret.as_deref().unwrap_or_default(),
        ])
        .output()
        .expect("run python3");
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .trim_end()
                .ends_with("ok"),
        "authlib flow failed:\nstdout: {}\nstderr: {}\nserver: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
}
