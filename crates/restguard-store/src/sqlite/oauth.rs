//! [`OAuthStore`] for [`SqliteStore`] (tables from `0004_oauth2.sql`).

use async_trait::async_trait;
use restguard_core::{
    identity::UserId,
    store::{
        Application, ApplicationId, ApplicationUpdate, AuthorizationCode, AuthorizedApplication,
        ClientType, CodeUse, FamilyId, NewApplication, NewOAuthToken, OAuthRefreshUse, OAuthStore,
        OAuthToken, OAuthTokenKind, SecretDigest, StoreError,
    },
    User,
};
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use super::group_commit::{bind, placeholders, Arg};
use super::USER_COLUMNS;
use super::{digest_at, get, get_bool, get_opt_time, get_time, map_err, user_at, SqliteStore};
use crate::timestamp::to_micros;

const APP_COLUMNS: &str = "oauth_applications.id, oauth_applications.client_id, \
     oauth_applications.name, oauth_applications.client_type, oauth_applications.secret_digest, \
     oauth_applications.grant_types, oauth_applications.redirect_uris, \
     oauth_applications.allowed_scopes, oauth_applications.skip_authorization, \
     oauth_applications.algorithm, oauth_applications.owner_id, oauth_applications.created, \
     oauth_applications.post_logout_redirect_uris";
const APP_RETURNING: &str = "id, client_id, name, client_type, secret_digest, grant_types, \
     redirect_uris, allowed_scopes, skip_authorization, algorithm, owner_id, created, \
     post_logout_redirect_uris";
const CODE_COLUMNS: &str = "digest, application_id, user_id, redirect_uri, scopes, \
     code_challenge, code_challenge_method, nonce, auth_time, created, expires_at, used_at, family";
const OAUTH_TOKEN_COLUMNS: &str = "oauth_tokens.id, oauth_tokens.kind, oauth_tokens.digest, \
     oauth_tokens.application_id, oauth_tokens.user_id, oauth_tokens.scopes, \
     oauth_tokens.family, oauth_tokens.created, oauth_tokens.expires_at, oauth_tokens.used_at, \
     oauth_tokens.revoked_at";
const OAUTH_TOKEN_RETURNING: &str = "id, kind, digest, application_id, user_id, scopes, \
     family, created, expires_at, used_at, revoked_at";
const OAUTH_TOKEN_COLUMN_COUNT: usize = 11;

pub(super) fn join(list: &[String]) -> String {
    list.join(" ")
}

fn split(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn opt_digest_at(row: &SqliteRow, i: usize) -> Result<Option<SecretDigest>, StoreError> {
    match get::<Option<Vec<u8>>>(row, i)? {
        None => Ok(None),
        Some(_) => digest_at(row, i).map(Some),
    }
}

fn app_at(row: &SqliteRow, i: usize) -> Result<Application, StoreError> {
    let client_type: String = get(row, i + 3)?;
    Ok(Application {
        id: ApplicationId(get(row, i)?),
        client_id: get(row, i + 1)?,
        name: get(row, i + 2)?,
        client_type: ClientType::parse(&client_type)
            .ok_or_else(|| StoreError::backend(format!("client type {client_type:?}")))?,
        secret_digest: opt_digest_at(row, i + 4)?,
        grant_types: split(&get::<String>(row, i + 5)?),
        redirect_uris: split(&get::<String>(row, i + 6)?),
        allowed_scopes: split(&get::<String>(row, i + 7)?),
        skip_authorization: get_bool(row, i + 8)?,
        algorithm: get(row, i + 9)?,
        owner: get::<Option<i64>>(row, i + 10)?.map(UserId),
        created: get_time(row, i + 11)?,
        post_logout_redirect_uris: split(&get::<String>(row, i + 12)?),
    })
}

fn code_at(row: &SqliteRow) -> Result<AuthorizationCode, StoreError> {
    Ok(AuthorizationCode {
        digest: digest_at(row, 0)?,
        application: ApplicationId(get(row, 1)?),
        user_id: UserId(get(row, 2)?),
        redirect_uri: get(row, 3)?,
        scopes: split(&get::<String>(row, 4)?),
        code_challenge: get(row, 5)?,
        code_challenge_method: get(row, 6)?,
        nonce: get(row, 7)?,
        auth_time: get_time(row, 8)?,
        created: get_time(row, 9)?,
        expires_at: get_time(row, 10)?,
        used_at: get_opt_time(row, 11)?,
        family: get::<Option<String>>(row, 12)?.map(FamilyId),
    })
}

fn oauth_token_at(row: &SqliteRow, i: usize) -> Result<OAuthToken, StoreError> {
    let kind: String = get(row, i + 1)?;
    Ok(OAuthToken {
        id: get(row, i)?,
        kind: OAuthTokenKind::parse(&kind)
            .ok_or_else(|| StoreError::backend(format!("token kind {kind:?}")))?,
        digest: digest_at(row, i + 2)?,
        application: ApplicationId(get(row, i + 3)?),
        user_id: get::<Option<i64>>(row, i + 4)?.map(UserId),
        scopes: split(&get::<String>(row, i + 5)?),
        family: FamilyId(get(row, i + 6)?),
        created: get_time(row, i + 7)?,
        expires_at: get_time(row, i + 8)?,
        used_at: get_opt_time(row, i + 9)?,
        revoked_at: get_opt_time(row, i + 10)?,
    })
}

/// The multi-row `INSERT` of `rows` OAuth2 tokens; [`token_args`] gives each row's values.
pub(super) fn token_insert_sql(rows: usize) -> String {
    format!(
        "INSERT INTO oauth_tokens (kind, digest, application_id, user_id, scopes, family, \
         created, expires_at) VALUES {}",
        placeholders(rows, 8)
    )
}

/// The values of one row of [`token_insert_sql`]; `scopes` is `join(&token.scopes)`.
pub(super) fn token_args<'a>(token: &'a NewOAuthToken, scopes: &'a str) -> [Arg<'a>; 8] {
    [
        Arg::Text(token.kind.as_str()),
        Arg::Blob(&token.digest.0),
        Arg::Int(token.application.0),
        Arg::OptInt(token.user_id.map(|u| u.0)),
        Arg::Text(scopes),
        Arg::Text(&token.family.0),
        Arg::Int(to_micros(token.created)),
        Arg::Int(to_micros(token.expires_at)),
    ]
}

/// Inserts `tokens` with one multi-row statement (atomic on its own: all or nothing).
pub(super) async fn insert_tokens<'c, E>(
    executor: E,
    tokens: &[NewOAuthToken],
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    if tokens.is_empty() {
        return Ok(());
    }
    let scopes: Vec<String> = tokens.iter().map(|t| join(&t.scopes)).collect();
    let sql = token_insert_sql(tokens.len());
    bind(
        sqlx::query(&sql),
        tokens
            .iter()
            .zip(&scopes)
            .flat_map(|(t, s)| token_args(t, s)),
    )
    .execute(executor)
    .await
    .map_err(|e| map_err(e, "oauth token"))?;
    Ok(())
}

impl SqliteStore {
    async fn oauth_token_row(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<OAuthToken>, StoreError> {
        let sql = format!("SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE digest = ?");
        sqlx::query(&sql)
            .bind(&digest.0[..])
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| map_err(e, "oauth token"))?
            .map(|row| oauth_token_at(&row, 0))
            .transpose()
    }
}

#[async_trait]
impl OAuthStore for SqliteStore {
    async fn create_application(&self, app: NewApplication) -> Result<Application, StoreError> {
        let sql = format!(
            "INSERT INTO oauth_applications (client_id, name, client_type, secret_digest, \
             grant_types, redirect_uris, allowed_scopes, skip_authorization, algorithm, owner_id, \
             created, post_logout_redirect_uris) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {APP_RETURNING}"
        );
        let row = sqlx::query(&sql)
            .bind(&app.client_id)
            .bind(&app.name)
            .bind(app.client_type.as_str())
            .bind(app.secret_digest.map(|d| d.0.to_vec()))
            .bind(join(&app.grant_types))
            .bind(join(&app.redirect_uris))
            .bind(join(&app.allowed_scopes))
            .bind(i64::from(app.skip_authorization))
            .bind(&app.algorithm)
            .bind(app.owner.map(|u| u.0))
            .bind(to_micros(app.created))
            .bind(join(&app.post_logout_redirect_uris))
            .fetch_one(&self.writer)
            .await
            .map_err(|e| map_err(e, "application"))?;
        app_at(&row, 0)
    }

    async fn application_by_client_id(
        &self,
        client_id: &str,
    ) -> Result<Option<Application>, StoreError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM oauth_applications WHERE client_id = ?");
        sqlx::query(&sql)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "application"))?
            .map(|row| app_at(&row, 0))
            .transpose()
    }

    async fn application_by_id(
        &self,
        id: ApplicationId,
    ) -> Result<Option<Application>, StoreError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM oauth_applications WHERE id = ?");
        sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "application"))?
            .map(|row| app_at(&row, 0))
            .transpose()
    }

    async fn applications(&self) -> Result<Vec<Application>, StoreError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM oauth_applications ORDER BY id");
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "application"))?
            .iter()
            .map(|row| app_at(row, 0))
            .collect()
    }

    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_digest: Option<SecretDigest>,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE oauth_applications SET secret_digest = ? WHERE client_id = ?")
                .bind(secret_digest.map(|d| d.0.to_vec()))
                .bind(client_id)
                .execute(&self.writer)
                .await
                .map_err(|e| map_err(e, "application"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn update_application(
        &self,
        client_id: &str,
        update: ApplicationUpdate,
    ) -> Result<Option<Application>, StoreError> {
        let sql = format!(
            "UPDATE oauth_applications \
             SET post_logout_redirect_uris = COALESCE(?, post_logout_redirect_uris), \
             allowed_scopes = COALESCE(?, allowed_scopes) \
             WHERE client_id = ? RETURNING {APP_RETURNING}"
        );
        sqlx::query(&sql)
            .bind(update.post_logout_redirect_uris.as_deref().map(join))
            .bind(update.allowed_scopes.as_deref().map(join))
            .bind(client_id)
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| map_err(e, "application"))?
            .map(|row| app_at(&row, 0))
            .transpose()
    }

    async fn delete_application(&self, client_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM oauth_applications WHERE client_id = ?")
            .bind(client_id)
            .execute(&self.writer)
            .await
            .map_err(|e| map_err(e, "application"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_code(&self, code: AuthorizationCode) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_codes (digest, application_id, user_id, redirect_uri, scopes, \
             code_challenge, code_challenge_method, nonce, auth_time, created, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&code.digest.0[..])
        .bind(code.application.0)
        .bind(code.user_id.0)
        .bind(&code.redirect_uri)
        .bind(join(&code.scopes))
        .bind(&code.code_challenge)
        .bind(&code.code_challenge_method)
        .bind(&code.nonce)
        .bind(to_micros(code.auth_time))
        .bind(to_micros(code.created))
        .bind(to_micros(code.expires_at))
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "authorization code"))?;
        Ok(())
    }

    async fn code_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCode>, StoreError> {
        let sql = format!("SELECT {CODE_COLUMNS} FROM oauth_codes WHERE digest = ?");
        sqlx::query(&sql)
            .bind(&digest.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "authorization code"))?
            .map(|row| code_at(&row))
            .transpose()
    }

    async fn consume_code(
        &self,
        digest: &SecretDigest,
        family: &FamilyId,
        tokens: Vec<NewOAuthToken>,
        at: OffsetDateTime,
    ) -> Result<CodeUse, StoreError> {
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|e| map_err(e, "authorization code"))?;
        let sql = format!(
            "UPDATE oauth_codes SET used_at = ?, family = ? \
             WHERE digest = ? AND used_at IS NULL RETURNING {CODE_COLUMNS}"
        );
        let consumed = sqlx::query(&sql)
            .bind(to_micros(at))
            .bind(&family.0)
            .bind(&digest.0[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_err(e, "authorization code"))?;
        if let Some(row) = consumed {
            let code = code_at(&row)?;
            insert_tokens(&mut *tx, &tokens).await?;
            tx.commit()
                .await
                .map_err(|e| map_err(e, "authorization code"))?;
            return Ok(CodeUse::Consumed(code));
        }
        drop(tx);
        let sql = format!("SELECT {CODE_COLUMNS} FROM oauth_codes WHERE digest = ?");
        let row = sqlx::query(&sql)
            .bind(&digest.0[..])
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| map_err(e, "authorization code"))?;
        Ok(match row {
            Some(row) => CodeUse::AlreadyUsed(code_at(&row)?),
            None => CodeUse::Unknown,
        })
    }

    async fn create_oauth_tokens(&self, tokens: Vec<NewOAuthToken>) -> Result<(), StoreError> {
        match &self.group_commit {
            Some(batcher) => batcher.insert_oauth_tokens(tokens).await,
            None => insert_tokens(&self.writer, &tokens).await,
        }
    }

    async fn oauth_token_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(OAuthToken, Option<User>)>, StoreError> {
        let sql = format!(
            "SELECT {OAUTH_TOKEN_COLUMNS}, {USER_COLUMNS} FROM oauth_tokens \
             LEFT JOIN users ON users.id = oauth_tokens.user_id WHERE oauth_tokens.digest = ?"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(&digest.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, "oauth token"))?
        else {
            return Ok(None);
        };
        let token = oauth_token_at(&row, 0)?;
        let user = match token.user_id {
            None => None,
            Some(_) => {
                if get::<Option<i64>>(&row, OAUTH_TOKEN_COLUMN_COUNT)?.is_none() {
                    return Ok(None);
                }
                Some(user_at(&row, OAUTH_TOKEN_COLUMN_COUNT)?)
            }
        };
        Ok(Some((token, user)))
    }

    async fn rotate_refresh(
        &self,
        digest: &SecretDigest,
        replacements: Vec<NewOAuthToken>,
        at: OffsetDateTime,
    ) -> Result<OAuthRefreshUse, StoreError> {
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|e| map_err(e, "oauth token"))?;
        let sql = format!(
            "UPDATE oauth_tokens SET used_at = ? WHERE digest = ? AND kind = 'refresh' \
             AND used_at IS NULL AND revoked_at IS NULL RETURNING {OAUTH_TOKEN_RETURNING}"
        );
        let consumed = sqlx::query(&sql)
            .bind(to_micros(at))
            .bind(&digest.0[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_err(e, "oauth token"))?;
        if let Some(row) = consumed {
            let consumed = oauth_token_at(&row, 0)?;
            insert_tokens(&mut *tx, &replacements).await?;
            tx.commit().await.map_err(|e| map_err(e, "oauth token"))?;
            return Ok(OAuthRefreshUse::Consumed(consumed));
        }
        drop(tx);
        Ok(match self.oauth_token_row(digest).await? {
            None => OAuthRefreshUse::Unknown,
            Some(t) if t.kind != OAuthTokenKind::Refresh || t.revoked_at.is_some() => {
                OAuthRefreshUse::Revoked(t)
            }
            Some(t) => OAuthRefreshUse::AlreadyUsed(t),
        })
    }

    async fn revoke_oauth_token(&self, id: i64, at: OffsetDateTime) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(id)
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "oauth token"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_oauth_family(
        &self,
        family: &FamilyId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(&family.0)
        .execute(&self.writer)
        .await
        .map_err(|e| map_err(e, "oauth token"))?;
        Ok(done.rows_affected())
    }

    async fn authorized_applications(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<AuthorizedApplication>, StoreError> {
        let sql = format!(
            "SELECT {APP_COLUMNS}, oauth_tokens.scopes, oauth_tokens.created FROM oauth_tokens \
             JOIN oauth_applications ON oauth_applications.id = oauth_tokens.application_id \
             WHERE oauth_tokens.user_id = ? AND oauth_tokens.revoked_at IS NULL \
             AND oauth_tokens.used_at IS NULL AND oauth_tokens.expires_at > ? \
             ORDER BY oauth_applications.id, oauth_tokens.id"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id.0)
            .bind(to_micros(now))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, "oauth token"))?;
        let mut out: Vec<AuthorizedApplication> = Vec::new();
        for row in &rows {
            let app = app_at(row, 0)?;
            let scopes = split(&get::<String>(row, 13)?);
            let created = get_time(row, 14)?;
            let entry = match out.last_mut() {
                Some(last) if last.application.id == app.id => last,
                _ => {
                    out.push(AuthorizedApplication {
                        application: app,
                        scopes: Vec::new(),
                        last_issued: created,
                    });
                    let n = out.len() - 1;
                    &mut out[n]
                }
            };
            for s in scopes {
                if !entry.scopes.contains(&s) {
                    entry.scopes.push(s);
                }
            }
            entry.last_issued = entry.last_issued.max(created);
        }
        Ok(out)
    }

    async fn revoke_authorization(
        &self,
        user_id: UserId,
        application: ApplicationId,
        at: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|e| map_err(e, "oauth token"))?;
        // Codes first: an exchange that consumed its code before this delete stored its
        // tokens in the same transaction, so the update below finds and revokes them.
        let codes = sqlx::query("DELETE FROM oauth_codes WHERE user_id = ? AND application_id = ?")
            .bind(user_id.0)
            .bind(application.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "authorization code"))?;
        let tokens = sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = ? \
             WHERE user_id = ? AND application_id = ? AND revoked_at IS NULL",
        )
        .bind(to_micros(at))
        .bind(user_id.0)
        .bind(application.0)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(e, "oauth token"))?;
        tx.commit().await.map_err(|e| map_err(e, "oauth token"))?;
        Ok(codes.rows_affected() + tokens.rows_affected())
    }

    async fn delete_expired_oauth(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut tx = self
            .writer
            .begin()
            .await
            .map_err(|e| map_err(e, "oauth token"))?;
        let codes = sqlx::query("DELETE FROM oauth_codes WHERE expires_at <= ?")
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "authorization code"))?;
        let tokens = sqlx::query("DELETE FROM oauth_tokens WHERE expires_at <= ?")
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, "oauth token"))?;
        tx.commit().await.map_err(|e| map_err(e, "oauth token"))?;
        Ok(codes.rows_affected() + tokens.rows_affected())
    }
}
