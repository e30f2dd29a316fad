//! `/admin/` (staff only): find and create users, deactivate / reactivate, reset passwords,
//! see and revoke a user's tokens and sessions.

use axum::{
    extract::{Path, Query, Request, State},
    http::{HeaderMap, StatusCode},
};
use restguard::session::ActiveSession;
use restguard_core::{
    secret::SecretString,
    store::{NewUser, SessionId, StoreError, TokenId},
    User, UserId,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::{
    forget_user, password_problems, redirect, sessions_json, set_password, tokens_json, user_json,
    CheckedForm, PageError, PageResult, Visitor,
};
use crate::{app::AppState, routes::session::USERNAME_MAX};

/// Users listed per page.
const PAGE_SIZE: u32 = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    q: Option<String>,
    notice: Option<String>,
}

fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "user-created" => "User created.",
        "deactivated" => "User deactivated: their sessions and API tokens have ended.",
        "reactivated" => "User reactivated.",
        "password-set" => "Password set: the user's sessions and API tokens have ended.",
        "token-revoked" => "Token revoked.",
        "session-ended" => "Session ended.",
        _ => return None,
    })
}

/// The staff visitor, or a redirect (anonymous) / 403 page (not staff).
fn staff(visitor: &Visitor, next: &str) -> Result<ActiveSession, PageError> {
    let session = visitor.require(next)?;
    if !(session.user.is_staff || session.user.is_superuser) || !session.user.is_active {
        return Err(PageError::Forbidden);
    }
    Ok(session.clone())
}

/// The users page; `extra` holds `notice`, `error`, `form` (values to echo) and
/// `field_errors`, each optional.
async fn users_page(
    state: &AppState,
    visitor: Visitor,
    status: StatusCode,
    q: &str,
    mut context: Map<String, Value>,
) -> PageResult {
    let search = q.trim();
    let search = (!search.is_empty()).then(|| search.chars().take(150).collect::<String>());
    let mut users = state
        .stores
        .users
        .list_users(search.as_deref(), PAGE_SIZE + 1, 0)
        .await?;
    let more = users.len() > PAGE_SIZE as usize;
    users.truncate(PAGE_SIZE as usize);
    context.insert("section".into(), json!("admin"));
    context.insert("q".into(), json!(q));
    context.insert(
        "users".into(),
        Value::Array(users.iter().map(user_json).collect()),
    );
    context.insert("more".into(), json!(more));
    context.entry("form").or_insert_with(|| json!({}));
    context.entry("field_errors").or_insert_with(|| json!({}));
    Ok(visitor.render(state, status, "admin_users.html", "Users", context))
}

/// `GET /admin/?q=…`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> PageResult {
    let visitor = Visitor::load(&state, &headers).await?;
    staff(&visitor, "/admin/")?;
    let notice = query.notice.as_deref().and_then(notice_text);
    users_page(
        &state,
        visitor,
        StatusCode::OK,
        query.q.as_deref().unwrap_or(""),
        notice_context(notice),
    )
    .await
}

/// `POST /admin/users/` (`username`, `email`, `password`, `is_staff`).
pub(crate) async fn create(State(state): State<AppState>, request: Request) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    staff(&form.visitor, "/admin/")?;
    let username = form.field("username").trim().to_owned();
    let email = form.field("email").trim().to_owned();
    let password = form.field("password");
    let is_staff = form.field("is_staff") == "on";
    let mut errors = Map::new();
    if username.is_empty() {
        errors.insert("username".into(), json!(["This field is required."]));
    } else if username.chars().count() > USERNAME_MAX
        || !username
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c))
    {
        errors.insert(
            "username".into(),
            json!([format!("Enter a valid username: at most {USERNAME_MAX} letters, digits and @/./+/-/_ characters.")]),
        );
    }
    if !email.is_empty()
        && (email.len() > 254 || !email.contains('@') || email.contains(char::is_whitespace))
    {
        errors.insert("email".into(), json!(["Enter a valid email address."]));
    }
    if let Some(problems) =
        password_problems(&username, &password, &password).remove("new_password1")
    {
        errors.insert("password".into(), problems);
    }
    let echo = json!({"username": username.chars().take(USERNAME_MAX).collect::<String>(), "email": email, "is_staff": is_staff});
    if !errors.is_empty() {
        return users_page(
            &state,
            form.visitor,
            StatusCode::BAD_REQUEST,
            "",
            form_errors(echo, errors),
        )
        .await;
    }
    let hash = state
        .passwords
        .hasher()
        .hash(&SecretString::new(password))
        .await
        .map_err(|e| PageError::Store(StoreError::unavailable(e)))?;
    let created = match state
        .stores
        .users
        .create_user(NewUser {
            email,
            is_staff,
            password_hash: Some(hash),
            ..NewUser::new(username)
        })
        .await
    {
        Ok(user) => user,
        Err(StoreError::Conflict(_)) => {
            let mut errors = Map::new();
            errors.insert(
                "username".into(),
                json!(["A user with that username already exists."]),
            );
            return users_page(
                &state,
                form.visitor,
                StatusCode::BAD_REQUEST,
                "",
                form_errors(echo, errors),
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    };
    Ok(redirect(
        StatusCode::SEE_OTHER,
        &format!("/admin/users/{}/?notice=user-created", created.id),
        Vec::new(),
    ))
}

fn notice_context(notice: Option<&str>) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("notice".into(), json!(notice));
    context
}

fn form_errors(echo: Value, errors: Map<String, Value>) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert(
        "error".into(),
        json!("The user was not created. Please correct the errors below."),
    );
    context.insert("form".into(), echo);
    context.insert("field_errors".into(), Value::Object(errors));
    context
}

fn parse_id(raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(PageError::NotFound)
}

async fn subject(state: &AppState, raw: &str) -> Result<User, PageError> {
    let id = UserId(parse_id(raw)?);
    state
        .stores
        .users
        .user_by_id(id)
        .await?
        .ok_or(PageError::NotFound)
}

async fn user_page(
    state: &AppState,
    visitor: Visitor,
    status: StatusCode,
    user: &User,
    notice: Option<&str>,
    error: Option<&str>,
    field_errors: Map<String, Value>,
) -> PageResult {
    let tokens = state.tokens.list(user.id).await?;
    let sessions = state.sessions.list(user.id).await?;
    let current = visitor
        .session
        .as_ref()
        .filter(|s| s.user.id == user.id)
        .map(|s| s.record.id);
    let mut context = Map::new();
    context.insert("section".into(), json!("admin"));
    context.insert("admin".into(), json!(true));
    context.insert("subject".into(), user_json(user));
    context.insert("tokens".into(), tokens_json(&tokens));
    context.insert(
        "sessions".into(),
        sessions_json(state, &sessions, user, current),
    );
    context.insert("notice".into(), json!(notice));
    context.insert("error".into(), json!(error));
    context.insert("field_errors".into(), Value::Object(field_errors));
    Ok(visitor.render(state, status, "admin_user.html", &user.username, context))
}

/// `GET /admin/users/<id>/`.
pub(crate) async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> PageResult {
    let visitor = Visitor::load(&state, &headers).await?;
    staff(
        &visitor,
        &format!(
            "/admin/users/{}/",
            id.chars().filter(char::is_ascii_digit).collect::<String>()
        ),
    )?;
    let user = subject(&state, &id).await?;
    let notice = query.notice.as_deref().and_then(notice_text);
    user_page(
        &state,
        visitor,
        StatusCode::OK,
        &user,
        notice,
        None,
        Map::new(),
    )
    .await
}

fn back(user: &User, notice: &str) -> axum::response::Response {
    redirect(
        StatusCode::SEE_OTHER,
        &format!("/admin/users/{}/?notice={notice}", user.id),
        Vec::new(),
    )
}

/// `POST /admin/users/<id>/active/` (`active=true|false`).
pub(crate) async fn set_active(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    let me = staff(&form.visitor, "/admin/")?;
    let user = subject(&state, &id).await?;
    let active = match form.field("active").as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(PageError::BadRequest("Unknown action.".into())),
    };
    if !active && user.id == me.user.id {
        return user_page(
            &state,
            form.visitor,
            StatusCode::BAD_REQUEST,
            &user,
            None,
            Some("You cannot deactivate your own account."),
            Map::new(),
        )
        .await;
    }
    if !state
        .stores
        .users
        .set_active(user.id, active, OffsetDateTime::now_utc())
        .await?
    {
        return Err(PageError::NotFound);
    }
    forget_user(&state, user.id).await;
    if !active {
        state.sessions.end_all(user.id, None).await?;
    }
    Ok(back(
        &user,
        if active { "reactivated" } else { "deactivated" },
    ))
}

/// `POST /admin/users/<id>/password/` (`password1`, `password2`).
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    let me = staff(&form.visitor, "/admin/")?;
    let user = subject(&state, &id).await?;
    let new1 = form.field("password1");
    let new2 = form.field("password2");
    let problems = password_problems(&user.username, &new1, &new2);
    if !problems.is_empty() {
        let mut errors = Map::new();
        if let Some(p) = problems.get("new_password1") {
            errors.insert("password1".into(), p.clone());
        }
        if let Some(p) = problems.get("new_password2") {
            errors.insert("password2".into(), p.clone());
        }
        return user_page(
            &state,
            form.visitor,
            StatusCode::BAD_REQUEST,
            &user,
            None,
            Some("The password was not set. Please correct the errors below."),
            errors,
        )
        .await;
    }
    set_password(&state, &user, &new1).await?;
    if user.id == me.user.id {
        // Resetting your own password here signs you out, like any password change made
        // outside the account page.
        return Ok(redirect(
            StatusCode::SEE_OTHER,
            "/api-auth/login/",
            vec![state.sessions.clear_cookie_header()],
        ));
    }
    Ok(back(&user, "password-set"))
}

/// `POST /admin/users/<id>/tokens/<token>/revoke/`.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    staff(&form.visitor, "/admin/")?;
    let user = subject(&state, &id).await?;
    if !state
        .tokens
        .revoke(user.id, TokenId(parse_id(&token)?))
        .await?
    {
        return Err(PageError::NotFound);
    }
    Ok(back(&user, "token-revoked"))
}

/// `POST /admin/users/<id>/sessions/<session>/end/`.
pub(crate) async fn end_session(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    staff(&form.visitor, "/admin/")?;
    let user = subject(&state, &id).await?;
    if !state
        .sessions
        .end(user.id, SessionId(parse_id(&session)?))
        .await?
    {
        return Err(PageError::NotFound);
    }
    Ok(back(&user, "session-ended"))
}
