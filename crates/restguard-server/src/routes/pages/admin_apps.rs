//! `/admin/applications/` (staff only): register, list, change (post-logout redirect URIs,
//! allowed scopes), delete OAuth2 applications and replace their secrets (the page twin of
//! `restguard app …`).

use axum::{
    extract::{Path, Request, State},
    http::{HeaderMap, StatusCode},
};
use restguard::digest::random_secret;
use restguard_core::store::{ApplicationId, ApplicationUpdate, ClientType, NewApplication};
use restguard_oauth2::provider::CLIENT_SECRET_PREFIX;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::{redirect, CheckedForm, PageError, PageResult, Visitor};
use crate::app::AppState;

const PATH: &str = "/admin/applications/";

/// Applications are run by any administrator (`admin_rights`: active staff).
fn require_staff(visitor: &Visitor) -> Result<(), PageError> {
    super::admin::administrator(visitor, PATH).map(drop)
}

async fn page(
    state: &AppState,
    visitor: Visitor,
    status: StatusCode,
    mut context: Map<String, Value>,
) -> PageResult {
    let apps = state.stores.oauth.applications().await?;
    let apps: Vec<Value> = apps
        .iter()
        .map(|a| {
            json!({
                "id": a.id.0,
                "client_id": a.client_id,
                "name": a.name,
                "client_type": a.client_type.as_str(),
                "grant_types": a.grant_types,
                "redirect_uris": a.redirect_uris,
                "post_logout_redirect_uris": a.post_logout_redirect_uris,
                "allowed_scopes": a.allowed_scopes,
                "skip_authorization": a.skip_authorization,
                "algorithm": a.algorithm,
            })
        })
        .collect();
    context.insert("section".into(), json!("admin"));
    context.insert("apps".into(), Value::Array(apps));
    Ok(visitor.render(state, status, "admin_apps.html", "Applications", context))
}

/// `GET /admin/applications/`.
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let visitor = Visitor::load(&state, &headers).await?;
    require_staff(&visitor)?;
    page(&state, visitor, StatusCode::OK, Map::new()).await
}

/// `POST /admin/applications/`: registers; the secret is shown once on the answer page.
pub(crate) async fn create(State(state): State<AppState>, request: Request) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    require_staff(&form.visitor)?;
    let name = form.field("name").trim().to_owned();
    let client_type = match form.field("client_type").as_str() {
        "public" => ClientType::Public,
        _ => ClientType::Confidential,
    };
    let mut grants = Vec::new();
    for (field, grant) in [
        ("grant_authorization_code", "authorization_code"),
        ("grant_client_credentials", "client_credentials"),
        ("grant_password", "password"),
    ] {
        if !form.field(field).is_empty() {
            grants.push(grant.to_owned());
        }
    }
    let redirect_uris = uri_lines(&form.field("redirect_uris"));
    let post_logout_redirect_uris = uri_lines(&form.field("post_logout_redirect_uris"));
    let scopes = restguard_oauth2::form::parse_scope(&form.field("scopes"));
    let mut problem = None;
    if name.is_empty() || name.chars().count() > 100 {
        problem = Some("Give the application a name (at most 100 characters).".to_owned());
    } else if grants.is_empty() {
        problem = Some("Choose at least one grant type.".into());
    } else if grants.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
        problem = Some("The authorization code grant needs a redirect URI.".into());
    } else if client_type == ClientType::Public && grants.iter().any(|g| g == "client_credentials")
    {
        problem = Some("A public client cannot use client credentials.".into());
    } else if let Some(e) = uri_problem(&redirect_uris) {
        problem = Some(format!("Invalid redirect URI {e}"));
    } else if let Some(e) = uri_problem(&post_logout_redirect_uris) {
        problem = Some(format!("Invalid post-logout redirect URI {e}"));
    } else if let Err(e) = &scopes {
        problem = Some(scope_problem(e));
    }
    if let Some(problem) = problem {
        let mut context = Map::new();
        context.insert("error".into(), json!(problem));
        return page(&state, form.visitor, StatusCode::BAD_REQUEST, context).await;
    }
    let secret =
        (client_type == ClientType::Confidential).then(|| random_secret(CLIENT_SECRET_PREFIX));
    let app = state
        .stores
        .oauth
        .create_application(NewApplication {
            client_id: random_secret("").replace(['-', '_'], ""),
            name,
            client_type,
            secret_digest: secret.as_deref().map(|s| state.oauth.digester().digest(s)),
            grant_types: grants,
            redirect_uris,
            post_logout_redirect_uris,
            allowed_scopes: scopes.unwrap_or_default(),
            skip_authorization: !form.field("skip_authorization").is_empty(),
            algorithm: if form.field("algorithm") == "EdDSA" {
                "EdDSA"
            } else {
                "RS256"
            }
            .into(),
            owner: form.visitor.session.as_ref().map(|s| s.user.id),
            created: OffsetDateTime::now_utc(),
        })
        .await?;
    let mut context = Map::new();
    context.insert(
        "new_secret".into(),
        json!({"name": app.name, "client_id": app.client_id, "client_secret": secret}),
    );
    context.insert("notice".into(), json!("Application registered."));
    page(&state, form.visitor, StatusCode::CREATED, context).await
}

/// One URI per line, blank lines skipped.
fn uri_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first URI refused at registration, with the reason.
fn uri_problem(uris: &[String]) -> Option<String> {
    uris.iter().find_map(|u| {
        restguard_oauth2::client::check_redirect_uri(u)
            .err()
            .map(|e| format!("{u}: {e}"))
    })
}

fn scope_problem(e: &restguard_oauth2::OAuthError) -> String {
    format!(
        "Invalid scopes: {}",
        e.description.as_deref().unwrap_or("malformed")
    )
}

async fn by_id(
    state: &AppState,
    id: &str,
) -> Result<restguard_core::store::Application, PageError> {
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or(PageError::NotFound)?;
    state
        .stores
        .oauth
        .application_by_id(ApplicationId(id))
        .await?
        .ok_or(PageError::NotFound)
}

/// `POST /admin/applications/<id>/settings/` (`post_logout_redirect_uris`, one per line;
/// `scopes`, space-separated, empty for the server's default set): replaces both. Only an
/// administrator grants `introspection`, by listing it here (or with the CLI).
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    require_staff(&form.visitor)?;
    let app = by_id(&state, &id).await?;
    let post_logout_redirect_uris = uri_lines(&form.field("post_logout_redirect_uris"));
    let problem = match restguard_oauth2::form::parse_scope(&form.field("scopes")) {
        Err(e) => Err(scope_problem(&e)),
        Ok(scopes) => match uri_problem(&post_logout_redirect_uris) {
            Some(e) => Err(format!("Invalid post-logout redirect URI {e}")),
            None => Ok(scopes),
        },
    };
    let scopes = match problem {
        Ok(scopes) => scopes,
        Err(problem) => {
            let mut context = Map::new();
            context.insert("error".into(), json!(problem));
            return page(&state, form.visitor, StatusCode::BAD_REQUEST, context).await;
        }
    };
    state
        .stores
        .oauth
        .update_application(
            &app.client_id,
            ApplicationUpdate {
                post_logout_redirect_uris: Some(post_logout_redirect_uris),
                allowed_scopes: Some(scopes),
            },
        )
        .await?
        .ok_or(PageError::NotFound)?;
    state.oauth.forget_cached().await;
    Ok(redirect(StatusCode::SEE_OTHER, PATH, Vec::new()))
}

/// `POST /admin/applications/<id>/delete/`: and every code and token issued to it.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    require_staff(&form.visitor)?;
    let app = by_id(&state, &id).await?;
    state
        .stores
        .oauth
        .delete_application(&app.client_id)
        .await?;
    state.oauth.forget_cached().await;
    Ok(redirect(StatusCode::SEE_OTHER, PATH, Vec::new()))
}

/// `POST /admin/applications/<id>/rotate-secret/`: a new secret, shown once.
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    require_staff(&form.visitor)?;
    let app = by_id(&state, &id).await?;
    if app.client_type == ClientType::Public {
        return Err(PageError::BadRequest(
            "A public client has no secret.".into(),
        ));
    }
    let (secret, digest) = state.oauth.new_client_secret();
    state
        .stores
        .oauth
        .set_client_secret(&app.client_id, Some(digest))
        .await?;
    state.oauth.forget_cached().await;
    let mut context = Map::new();
    context.insert(
        "new_secret".into(),
        json!({"name": app.name, "client_id": app.client_id, "client_secret": secret}),
    );
    page(&state, form.visitor, StatusCode::OK, context).await
}
