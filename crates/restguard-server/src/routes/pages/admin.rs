//! `/admin/` (staff only): find and create users, deactivate / reactivate, reset passwords,
//! change roles, see and revoke a user's tokens, sessions and OAuth2 grants. Who may do which
//! of these to whom is [`super::admin_rights`]'s answer, asked by every handler.

use axum::{
    extract::{Path, Query, Request, State},
    http::{HeaderMap, StatusCode},
};
use restguard::session::ActiveSession;
use restguard_core::{
    secret::SecretString,
    store::{ApplicationId, NewUser, SessionId, StoreError, TokenId},
    User, UserId,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::{
    admin_rights::{Admin, AdminAction, Rank, Refusal},
    forget_user, password_problems, redirect, revoke_application_grant, sessions_json,
    set_password, tokens_json, user_json, CheckedForm, PageError, PageResult, Visitor,
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
        "roles-set" => "Role changed.",
        "app-revoked" => {
            "Access revoked: the application's tokens and pending codes no longer work."
        }
        _ => return None,
    })
}

/// The administrator's session, or a redirect (anonymous) / 403 page (not active staff).
pub(crate) fn administrator(visitor: &Visitor, next: &str) -> Result<ActiveSession, PageError> {
    let session = visitor.require(next)?;
    Admin::admit(&session.user).map_err(refused)?;
    Ok(session.clone())
}

/// The page for a refusal that is not about the visitor's own account.
fn refused(refusal: Refusal) -> PageError {
    match refusal {
        Refusal::NotAdmin => PageError::Forbidden,
        other => PageError::Refused(other.message()),
    }
}

/// Whether `me` may do `action` to `user`.
fn permit(me: &ActiveSession, action: AdminAction, user: &User) -> Result<(), Refusal> {
    Admin::admit(&me.user)?.may(action, user)
}

/// Answers a refused action on `user`: about one's own account, the user page with the
/// message (400); otherwise the 403 page.
async fn refusal_page(
    state: &AppState,
    visitor: Visitor,
    user: &User,
    refusal: Refusal,
) -> PageResult {
    if !refusal.is_own_account() {
        return Err(refused(refusal));
    }
    user_page(
        state,
        visitor,
        StatusCode::BAD_REQUEST,
        user,
        None,
        Some(refusal.message()),
        Map::new(),
    )
    .await
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
    administrator(&visitor, "/admin/")?;
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

/// `POST /admin/users/` (`username`, `email`, `password`, `is_staff`, `is_superuser`).
pub(crate) async fn create(State(state): State<AppState>, request: Request) -> PageResult {
    let form = CheckedForm::read(&state, request).await?;
    let me = administrator(&form.visitor, "/admin/")?;
    let username = form.field("username").trim().to_owned();
    let email = form.field("email").trim().to_owned();
    let password = form.field("password");
    let is_staff = form.field("is_staff") == "on";
    let is_superuser = form.field("is_superuser") == "on";
    Admin::admit(&me.user)
        .and_then(|admin| admin.may_create(Rank::from_flags(is_staff, is_superuser)))
        .map_err(refused)?;
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
    let echo = json!({"username": username.chars().take(USERNAME_MAX).collect::<String>(), "email": email, "is_staff": is_staff, "is_superuser": is_superuser});
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
            is_superuser,
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
    let apps = super::authorized_apps_json(state, user.id).await?;
    let current = visitor
        .session
        .as_ref()
        .filter(|s| s.user.id == user.id)
        .map(|s| s.record.id);
    // The forms are shown only to who may use them; the handlers check again.
    let manage = visitor
        .session
        .as_ref()
        .and_then(|s| Admin::admit(&s.user).ok())
        .map(|admin| {
            (
                admin.may_manage(user),
                admin.may_create(Rank::Staff).is_ok(),
            )
        });
    let (can_manage, can_set_roles) = manage.unwrap_or((false, false));
    let mut context = Map::new();
    context.insert("section".into(), json!("admin"));
    context.insert("admin".into(), json!(true));
    context.insert("subject".into(), user_json(user));
    context.insert("tokens".into(), tokens_json(&tokens));
    context.insert(
        "sessions".into(),
        sessions_json(state, &sessions, user, current),
    );
    context.insert("authorized_apps".into(), apps);
    context.insert("can_manage".into(), json!(can_manage));
    context.insert(
        "can_set_roles".into(),
        json!(can_manage && can_set_roles && current.is_none()),
    );
    context.insert("locked".into(), json!(Refusal::Outranked.message()));
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
    administrator(
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

/// A checked admin form about the user in the path: the administrator, the user, and the
/// form. The visitor's rights on the user are checked by the caller, per action.
async fn admin_form(
    state: &AppState,
    id: &str,
    request: Request,
) -> Result<(CheckedForm, ActiveSession, User), PageError> {
    let form = CheckedForm::read(state, request).await?;
    let me = administrator(&form.visitor, "/admin/")?;
    let user = subject(state, id).await?;
    Ok((form, me, user))
}

/// `POST /admin/users/<id>/active/` (`active=true|false`).
pub(crate) async fn set_active(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let (form, me, user) = admin_form(&state, &id, request).await?;
    let active = match form.field("active").as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(PageError::BadRequest("Unknown action.".into())),
    };
    let action = if active {
        AdminAction::Reactivate
    } else {
        AdminAction::Deactivate
    };
    if let Err(refusal) = permit(&me, action, &user) {
        return refusal_page(&state, form.visitor, &user, refusal).await;
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

/// `POST /admin/users/<id>/roles/` (`is_staff`, `is_superuser` checkboxes: absent = off).
pub(crate) async fn set_roles(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let (form, me, user) = admin_form(&state, &id, request).await?;
    let is_staff = form.field("is_staff") == "on";
    let is_superuser = form.field("is_superuser") == "on";
    let rank = Rank::from_flags(is_staff, is_superuser);
    if let Err(refusal) = permit(&me, AdminAction::SetRank(rank), &user) {
        return refusal_page(&state, form.visitor, &user, refusal).await;
    }
    if !state
        .stores
        .users
        .set_roles(user.id, is_staff, is_superuser)
        .await?
    {
        return Err(PageError::NotFound);
    }
    // Cached checks carry the user's flags: a demoted administrator loses the pages at once.
    forget_user(&state, user.id).await;
    Ok(back(&user, "roles-set"))
}

/// `POST /admin/users/<id>/password/` (`password1`, `password2`).
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> PageResult {
    let (form, me, user) = admin_form(&state, &id, request).await?;
    if let Err(refusal) = permit(&me, AdminAction::SetPassword, &user) {
        return refusal_page(&state, form.visitor, &user, refusal).await;
    }
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
    let (form, me, user) = admin_form(&state, &id, request).await?;
    if let Err(refusal) = permit(&me, AdminAction::RevokeToken, &user) {
        return refusal_page(&state, form.visitor, &user, refusal).await;
    }
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
    let (form, me, user) = admin_form(&state, &id, request).await?;
    if let Err(refusal) = permit(&me, AdminAction::EndSession, &user) {
        return refusal_page(&state, form.visitor, &user, refusal).await;
    }
    if !state
        .sessions
        .end(user.id, SessionId(parse_id(&session)?))
        .await?
    {
        return Err(PageError::NotFound);
    }
    Ok(back(&user, "session-ended"))
}

/// `POST /admin/users/<id>/applications/<app>/revoke/`: ends the tokens and pending codes
/// the user gave the application, as the user's own account page does.
pub(crate) async fn revoke_application(
    State(state): State<AppState>,
    Path((id, app)): Path<(String, String)>,
    request: Request,
) -> PageResult {
    let (form, me, user) = admin_form(&state, &id, request).await?;
    if let Err(refusal) = permit(&me, AdminAction::RevokeApplication, &user) {
        return refusal_page(&state, form.visitor, &user, refusal).await;
    }
    if !revoke_application_grant(&state, user.id, ApplicationId(parse_id(&app)?)).await? {
        return Err(PageError::NotFound);
    }
    Ok(back(&user, "app-revoked"))
}
