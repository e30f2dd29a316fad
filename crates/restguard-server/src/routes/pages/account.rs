//! `/account/`: who you are, your API tokens, your sessions, your password.

use std::time::Duration;

use axum::{
    extract::{Path, Query, Request, State},
    http::{HeaderMap, StatusCode},
};
use restguard::{password::Login, session::ActiveSession};
use restguard_axum::RequestIp;
use restguard_core::{
    secret::SecretString,
    store::{SessionId, TokenId},
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    password_problems, redirect, sessions_json, set_password, tokens_json, CheckedForm, PageError,
    PageResult, Visitor,
};
use crate::app::AppState;

/// Longest token name.
const NAME_MAX: usize = 64;
/// Longest token lifetime (10 years).
const EXPIRES_IN_MAX: u64 = 10 * 365 * 86_400;

#[derive(Debug, Deserialize)]
pub(crate) struct NoticeQuery {
    notice: Option<String>,
}

/// Notices a redirect may ask the page to show (a fixed table: nothing from the URL is shown).
fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "token-revoked" => "Token revoked: it no longer works.",
        "session-ended" => "Session ended.",
        "sessions-ended" => "All your other sessions have ended.",
        "app-revoked" => {
            "Access revoked: the application's tokens and pending codes no longer work."
        }
        _ => return None,
    })
}

/// What the account page shows beyond the basics.
#[derive(Default)]
struct Extra {
    status: Option<StatusCode>,
    notice: Option<String>,
    error: Option<String>,
    new_key: Option<String>,
    field_errors: Map<String, Value>,
}

async fn account_page(state: &AppState, visitor: Visitor, extra: Extra) -> PageResult {
    let Some(session) = visitor.session.clone() else {
        return Err(PageError::LoginRequired("/account/".into()));
    };
    let user = &session.user;
    let tokens = state.tokens.list(user.id).await?;
    let sessions = state.sessions.list(user.id).await?;
    let mut context = Map::new();
    context.insert("section".into(), json!("account"));
    context.insert("tokens".into(), tokens_json(&tokens));
    context.insert(
        "sessions".into(),
        sessions_json(state, &sessions, user, Some(session.record.id)),
    );
    context.insert(
        "authorized_apps".into(),
        super::authorized_apps_json(state, user.id).await?,
    );
    context.insert("notice".into(), json!(extra.notice));
    context.insert("error".into(), json!(extra.error));
    context.insert("new_key".into(), json!(extra.new_key));
    context.insert("field_errors".into(), Value::Object(extra.field_errors));
    Ok(visitor.render(
        state,
        extra.status.unwrap_or(StatusCode::OK),
        "account.html",
        "Your account",
        context,
    ))
}

/// `GET /account/`.
pub(crate) async fn show(
    State(state): State<AppState>,
    Query(query): Query<NoticeQuery>,
    headers: HeaderMap,
) -> PageResult {
    let visitor = Visitor::load(&state, &headers).await?;
    visitor.require("/account/")?;
    let notice = query
        .notice
        .as_deref()
        .and_then(notice_text)
        .map(str::to_owned);
    account_page(
        &state,
        visitor,
        Extra {
            notice,
            ..Extra::default()
        },
    )
    .await
}

/// A checked form from a signed-in visitor.
async fn signed_in(
    state: &AppState,
    request: Request,
) -> Result<(CheckedForm, ActiveSession), PageError> {
    let form = CheckedForm::read(state, request).await?;
    let session = form.visitor.require("/account/")?.clone();
    Ok((form, session))
}

fn parse_id(raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(PageError::NotFound)
}

/// `POST /account/tokens/` (`name`, `expires_in` seconds): the key is shown once.
pub(crate) async fn create_token(State(state): State<AppState>, request: Request) -> PageResult {
    let (form, session) = signed_in(&state, request).await?;
    let name = form.field("name").trim().to_owned();
    let expires = form.field("expires_in");
    let mut error = None;
    if name.chars().count() > NAME_MAX || name.contains('\0') {
        error = Some(format!("A token name has at most {NAME_MAX} characters."));
    }
    let expires_in = match expires.trim() {
        "" => None,
        s => match s.parse::<u64>() {
            Ok(n) if (1..=EXPIRES_IN_MAX).contains(&n) => Some(Duration::from_secs(n)),
            _ => {
                error = Some("Choose a lifetime from the list.".into());
                None
            }
        },
    };
    if let Some(error) = error {
        return account_page(
            &state,
            form.visitor,
            Extra {
                status: Some(StatusCode::BAD_REQUEST),
                error: Some(error),
                ..Extra::default()
            },
        )
        .await;
    }
    let issued = state
        .tokens
        .issue(session.user.id, &name, expires_in)
        .await?;
    account_page(
        &state,
        form.visitor,
        Extra {
            notice: Some("Token created. Copy it now: it will not be shown again.".into()),
            new_key: Some(issued.key.expose().to_owned()),
            ..Extra::default()
        },
    )
    .await
}

/// `POST /account/tokens/<id>/rotate/`: a new key, the old one revoked at once.
pub(crate) async fn rotate_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let (form, session) = signed_in(&state, request).await?;
    let id = TokenId(parse_id(&id)?);
    let issued = state
        .tokens
        .rotate(session.user.id, id)
        .await?
        .ok_or(PageError::NotFound)?;
    account_page(
        &state,
        form.visitor,
        Extra {
            notice: Some(
                "Token rotated: the old key no longer works. Copy the new one now.".into(),
            ),
            new_key: Some(issued.key.expose().to_owned()),
            ..Extra::default()
        },
    )
    .await
}

/// `POST /account/tokens/<id>/revoke/`.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let (_, session) = signed_in(&state, request).await?;
    let id = TokenId(parse_id(&id)?);
    if !state.tokens.revoke(session.user.id, id).await? {
        return Err(PageError::NotFound);
    }
    Ok(redirect(
        StatusCode::SEE_OTHER,
        "/account/?notice=token-revoked",
        Vec::new(),
    ))
}

/// `POST /account/sessions/<id>/end/` (ending the current one signs you out).
pub(crate) async fn end_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let (_, session) = signed_in(&state, request).await?;
    let id = SessionId(parse_id(&id)?);
    if !state.sessions.end(session.user.id, id).await? {
        return Err(PageError::NotFound);
    }
    if id == session.record.id {
        return Ok(redirect(
            StatusCode::SEE_OTHER,
            "/api-auth/login/",
            vec![state.sessions.clear_cookie_header()],
        ));
    }
    Ok(redirect(
        StatusCode::SEE_OTHER,
        "/account/?notice=session-ended",
        Vec::new(),
    ))
}

/// `POST /account/sessions/others/end/`.
pub(crate) async fn end_other_sessions(
    State(state): State<AppState>,
    request: Request,
) -> PageResult {
    let (_, session) = signed_in(&state, request).await?;
    state
        .sessions
        .end_all(session.user.id, Some(session.record.id))
        .await?;
    Ok(redirect(
        StatusCode::SEE_OTHER,
        "/account/?notice=sessions-ended",
        Vec::new(),
    ))
}

/// `POST /account/password/` (`current_password`, `new_password1`, `new_password2`): the
/// current password is checked through the login throttle; on success every other session
/// and every API token ends, and this browser gets a new session.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    RequestIp(ip): RequestIp,
    request: Request,
) -> PageResult {
    let (mut form, session) = signed_in(&state, request).await?;
    let current = form.field("current_password");
    let new1 = form.field("new_password1");
    let new2 = form.field("new_password2");
    let mut field_errors = password_problems(&session.user.username, &new1, &new2);
    let fail = |visitor, field_errors: Map<String, Value>, status| {
        account_page(
            &state,
            visitor,
            Extra {
                status: Some(status),
                error: Some(
                    "Your password was not changed. Please correct the errors below.".into(),
                ),
                field_errors,
                ..Extra::default()
            },
        )
    };
    if current.is_empty() {
        field_errors.insert(
            "current_password".into(),
            json!(["This field is required."]),
        );
        return fail(form.visitor, field_errors, StatusCode::BAD_REQUEST).await;
    }
    match state
        .passwords
        .login(ip, &session.user.username, &SecretString::new(current))
        .await?
    {
        Login::Valid(_) => {}
        Login::Invalid => {
            field_errors.insert(
                "current_password".into(),
                json!(["Your old password was entered incorrectly. Please enter it again."]),
            );
            return fail(form.visitor, field_errors, StatusCode::BAD_REQUEST).await;
        }
        Login::Throttled(wait) => return Err(PageError::Throttled(wait)),
    }
    if !field_errors.is_empty() {
        return fail(form.visitor, field_errors, StatusCode::BAD_REQUEST).await;
    }
    let user = set_password(&state, &session.user, &new1).await?;
    // Django's `update_session_auth_hash`: this browser stays signed in, with a new session
    // created no earlier than the change.
    let user_agent = form
        .parts
        .headers
        .get(http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let started = state.sessions.start(&user, &user_agent, ip).await?;
    let cookie = state.sessions.set_cookie_header(&started);
    let active = state.sessions.check(started.key.expose()).await?;
    form.visitor.replace(active, vec![cookie], None);
    account_page(
        &state,
        form.visitor,
        Extra {
            notice: Some(
                "Password changed. Your other sessions have been signed out and all your API tokens revoked."
                    .into(),
            ),
            ..Extra::default()
        },
    )
    .await
}

/// `POST /account/applications/<id>/revoke/`: ends every token and pending code the user
/// gave the application.
pub(crate) async fn revoke_application(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let (_, session) = signed_in(&state, request).await?;
    let id = restguard_core::store::ApplicationId(parse_id(&id)?);
    if !super::revoke_application_grant(&state, session.user.id, id).await? {
        return Err(PageError::NotFound);
    }
    Ok(redirect(
        StatusCode::SEE_OTHER,
        "/account/?notice=app-revoked",
        Vec::new(),
    ))
}
