//! Client-credentials tokens (CONTRACT §6): an OAuth2 client acting for itself has no user.
//! It passes the permissions that need none (`allow_any`, `has_scope:…`,
//! `has_read_write_scope`) on routes whose chain has `oauth2` — DOT's `TokenHasScope`
//! machine-to-machine use — and fails those that need a user with DRF's 403. Forward-auth
//! answers 200 with `X-Auth-Client-Id` and `X-Auth-Scopes` and no `X-Auth-User`.

mod common;
mod oauth2_support;
mod session_support;

use common::{Reply, Server};
use oauth2_support::{create_app, token_request, Client};
use serde_json::json;

const CONFIG: &str = r#"
[[route]]
path = "/machines/"
authenticators = ["oauth2"]
permissions = ["has_scope:read"]

[[route]]
path = "/machines-rw/"
authenticators = ["oauth2"]
permissions = ["has_read_write_scope"]

[[route]]
path = "/open/"
authenticators = ["oauth2"]
permissions = ["allow_any"]

[[route]]
path = "/staff/"
authenticators = ["oauth2"]
permissions = ["is_admin_user"]
"#;

fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("restguard.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let server = Server::start_with_env(&[("RESTGUARD_CONFIG", config.to_str().expect("utf-8"))]);
    (server, dir)
}

fn service(server: &Server) -> Client {
    create_app(
        server,
        &[
            "--name",
            "Reports service",
            "--client-type",
            "confidential",
            "--grant",
            "client-credentials",
            "--scopes",
            "read write",
        ],
    )
}

async fn client_token(server: &Server, client: &Client, scope: &str) -> String {
    let reply = token_request(
        server,
        Some(&client.basic()),
        &[("grant_type", "client_credentials"), ("scope", scope)],
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn verify(server: &Server, path: &str, method: &str, bearer: &str) -> Reply {
    let request = server
        .client
        .get(server.url("/auth/verify"))
        .header("X-Forwarded-Uri", path)
        .header("X-Forwarded-Method", method)
        .header("Authorization", format!("Bearer {bearer}"));
    Reply::read(request.send().await.expect("request")).await
}

fn permission_denied() -> serde_json::Value {
    json!({"detail": "You do not have permission to perform this action.", "code": "permission_denied"})
}

#[tokio::test]
async fn a_client_token_passes_scope_permissions_on_oauth2_routes() {
    let (server, _dir) = server();
    let svc = service(&server);
    let read = client_token(&server, &svc, "read").await;

    let ok = verify(&server, "/machines/jobs/", "GET", &read).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.headers["x-auth-client-id"], svc.id.as_str());
    assert_eq!(ok.headers["x-auth-scopes"], "read");
    assert_eq!(ok.headers["x-auth-scheme"], "oauth2");
    assert!(ok.headers.get("x-auth-user").is_none(), "{ok:?}");
    assert!(ok.headers.get("x-auth-user-id").is_none(), "{ok:?}");

    let open = verify(&server, "/open/", "POST", &read).await;
    assert_eq!(open.status, 200, "{open:?}");
    assert_eq!(open.headers["x-auth-client-id"], svc.id.as_str());

    // has_read_write_scope: GET needs `read`, POST needs `write`.
    let rw_get = verify(&server, "/machines-rw/", "GET", &read).await;
    assert_eq!(rw_get.status, 200, "{rw_get:?}");
    let rw_post = verify(&server, "/machines-rw/", "POST", &read).await;
    rw_post.assert(403, None, &permission_denied());
    let write = client_token(&server, &svc, "read write").await;
    let rw_post = verify(&server, "/machines-rw/", "POST", &write).await;
    assert_eq!(rw_post.status, 200, "{rw_post:?}");
}

#[tokio::test]
async fn a_client_token_fails_permissions_that_need_a_user() {
    let (server, _dir) = server();
    let svc = service(&server);
    let read = client_token(&server, &svc, "read").await;

    // The server's own user route (default policy: is_authenticated).
    let me = server
        .get("/api/me/", Some(&format!("Bearer {read}")))
        .await;
    me.assert(403, None, &permission_denied());

    // An upstream route under the default policy, and a staff route, through forward-auth.
    let private = verify(&server, "/private/", "GET", &read).await;
    private.assert(403, None, &permission_denied());
    let staff = verify(&server, "/staff/", "GET", &read).await;
    staff.assert(403, None, &permission_denied());

    // A scope it was not granted.
    let scoped = verify(
        &server,
        "/machines/",
        "GET",
        &client_token(&server, &svc, "write").await,
    )
    .await;
    scoped.assert(403, None, &permission_denied());
}
