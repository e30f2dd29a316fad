//! Group commit for the writes that come at the rate tokens are issued.
//!
//! A token refresh or an OAuth2 token grant is a write, and on SQLite every statement costs a
//! hop to the connection's worker thread and every commit a WAL append of each page it
//! touched. Such writes are therefore queued and written together: the batching task first
//! lets the requests that are already runnable reach the queue, then writes the whole batch
//! as one query ([`Script`]) — one `INSERT … SELECT` for the replacements of consumed refresh
//! tokens, one `UPDATE … RETURNING` for the consumptions, one `INSERT … SELECT` for family
//! extensions, one multi-row `INSERT` for OAuth2 tokens, inside `BEGIN IMMEDIATE … COMMIT`
//! when there is more than one. Each caller still gets exactly its own answer, and every
//! decision stays a conditional write (never check-then-act): of several consumptions of one
//! token in a batch, only the first takes part. A batch that fails is rolled back and written
//! again job by job, so a fault fails only the job at fault.

use std::collections::{HashMap, HashSet};

use restguard_core::{
    oauth_store::NewOAuthToken,
    store::{NewRefreshToken, RefreshToken, SecretDigest, StoreError},
};
use sqlx::{
    pool::PoolConnection,
    query::Query,
    sqlite::{SqliteArguments, SqliteRow},
    Sqlite, SqlitePool,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{
    map_err,
    oauth::{join, token_args, token_insert_sql},
    refresh_at, REFRESH_COLUMNS,
};
use crate::timestamp::to_micros;

/// Most jobs written in one transaction (at most 16 bound parameters each: an OAuth2 access
/// and refresh token, 8 each; SQLite allows 32 766 in one statement).
const MAX_BATCH: usize = 128;

/// What a consumption produced: the consumed record and the stored replacement.
pub(super) type Consumed = (RefreshToken, Option<RefreshToken>);

enum Job {
    Consume {
        jti: SecretDigest,
        replacement: Option<NewRefreshToken>,
        at: OffsetDateTime,
        reply: oneshot::Sender<Result<Option<Consumed>, StoreError>>,
    },
    Extend {
        parent: SecretDigest,
        replacement: NewRefreshToken,
        reply: oneshot::Sender<Result<Option<RefreshToken>, StoreError>>,
    },
    InsertOAuthTokens {
        tokens: Vec<NewOAuthToken>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A handle to the batching task; cheap to clone. The task ends when the last handle is
/// dropped.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
}

fn closed() -> StoreError {
    StoreError::unavailable(std::io::Error::other("SQLite group-commit writer stopped"))
}

/// A copy of a batch's error for each of its callers (`StoreError` is not `Clone`).
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(what) => StoreError::Conflict(what),
        other if other.is_unavailable() => StoreError::unavailable(other.to_string()),
        other => StoreError::backend(match std::error::Error::source(other) {
            Some(source) => source.to_string(),
            None => other.to_string(),
        }),
    }
}

impl GroupCommit {
    /// Starts the batching task on the current tokio runtime; `None` outside a runtime.
    pub(super) fn start(writer: SqlitePool) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        runtime.spawn(run(writer, receiver));
        Some(Self { jobs })
    }

    /// Queues the job `make` builds around its reply channel, and waits for the answer.
    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(make(reply)).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Consumes `jti` if live, storing `replacement` in its family. `None`: not consumed
    /// (unknown, used, revoked, or another caller in the same batch won).
    pub(super) async fn consume(
        &self,
        jti: SecretDigest,
        replacement: Option<NewRefreshToken>,
        at: OffsetDateTime,
    ) -> Result<Option<Consumed>, StoreError> {
        self.submit(|reply| Job::Consume {
            jti,
            replacement,
            at,
            reply,
        })
        .await
    }

    /// Stores `replacement` in the family of `parent` if `parent` is live and the same user's.
    pub(super) async fn extend(
        &self,
        parent: SecretDigest,
        replacement: NewRefreshToken,
    ) -> Result<Option<RefreshToken>, StoreError> {
        self.submit(|reply| Job::Extend {
            parent,
            replacement,
            reply,
        })
        .await
    }

    /// Stores new OAuth2 tokens (all of one call or none).
    pub(super) async fn insert_oauth_tokens(
        &self,
        tokens: Vec<NewOAuthToken>,
    ) -> Result<(), StoreError> {
        self.submit(|reply| Job::InsertOAuthTokens { tokens, reply })
            .await
    }
}

async fn run(writer: SqlitePool, mut receiver: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        drain(&mut receiver, &mut batch);
        while batch.len() < MAX_BATCH {
            // Let the requests that are already runnable reach their write first: one
            // transaction for all of them instead of a wake-up of the writer thread each.
            // With nothing else runnable this returns at once.
            let before = batch.len();
            tokio::task::yield_now().await;
            drain(&mut receiver, &mut batch);
            if batch.len() == before {
                break;
            }
        }
        match write_batch(&writer, &batch).await {
            Ok(outcome) => outcome.deliver(batch),
            // The batch rolled back as a whole. An unavailable database fails every job at
            // once (written one by one, each would wait out the busy timeout again);
            // otherwise each job is written alone, so only the one at fault (a digest
            // collision, say) fails.
            Err(e) if batch.len() == 1 || e.is_unavailable() => fail(batch, &e),
            Err(_) => {
                for job in batch {
                    let alone = [job];
                    match write_batch(&writer, &alone).await {
                        Ok(outcome) => outcome.deliver(Vec::from(alone)),
                        Err(e) => fail(Vec::from(alone), &e),
                    }
                }
            }
        }
    }
}

/// Moves the queued jobs into `batch`, up to [`MAX_BATCH`].
fn drain(receiver: &mut mpsc::UnboundedReceiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

fn fail(batch: Vec<Job>, e: &StoreError) {
    for job in batch {
        match job {
            Job::Consume { reply, .. } => {
                let _ = reply.send(Err(copy_error(e)));
            }
            Job::Extend { reply, .. } => {
                let _ = reply.send(Err(copy_error(e)));
            }
            Job::InsertOAuthTokens { reply, .. } => {
                let _ = reply.send(Err(copy_error(e)));
            }
        }
    }
}

/// Per job (by index in the batch), what was written.
#[derive(Default)]
struct Outcome {
    consumed: HashMap<usize, Consumed>,
    extended: HashMap<usize, RefreshToken>,
}

impl Outcome {
    fn deliver(mut self, batch: Vec<Job>) {
        for (index, job) in batch.into_iter().enumerate() {
            match job {
                Job::Consume { reply, .. } => {
                    let _ = reply.send(Ok(self.consumed.remove(&index)));
                }
                Job::Extend { reply, .. } => {
                    let _ = reply.send(Ok(self.extended.remove(&index)));
                }
                Job::InsertOAuthTokens { reply, .. } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }
}

pub(super) fn placeholders(rows: usize, per_row: usize) -> String {
    let row = format!("({})", vec!["?"; per_row].join(", "));
    vec![row; rows].join(", ")
}

/// A value bound to a statement of a [`Script`].
pub(super) enum Arg<'a> {
    Blob(&'a [u8]),
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
}

/// `query` with `args` bound in order.
pub(super) fn bind<'q>(
    mut query: Query<'q, Sqlite, SqliteArguments<'q>>,
    args: impl IntoIterator<Item = Arg<'q>>,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Blob(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::OptInt(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    query
}

/// Statements run as one query (sqlx binds the arguments of a multi-statement query to its
/// statements in order), so a batch costs one hop to the connection's worker thread, not one
/// per statement plus two for BEGIN and COMMIT.
#[derive(Default)]
pub(super) struct Script<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
    statements: usize,
}

impl<'a> Script<'a> {
    pub(super) fn push(&mut self, sql: &str, args: impl IntoIterator<Item = Arg<'a>>) {
        if self.statements > 0 {
            self.sql.push_str(";\n");
        }
        self.sql.push_str(sql);
        self.args.extend(args);
        self.statements += 1;
    }

    /// Runs the statements atomically — one statement alone, several inside
    /// `BEGIN IMMEDIATE … COMMIT` (rolled back on failure) — and returns what their
    /// `RETURNING` clauses gave, in order.
    pub(super) async fn run(
        self,
        conn: &mut PoolConnection<Sqlite>,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let sql = match self.statements {
            0 => return Ok(Vec::new()),
            1 => self.sql,
            _ => format!("BEGIN IMMEDIATE;\n{};\nCOMMIT", self.sql),
        };
        let result = bind(sqlx::query(&sql), self.args)
            .fetch_all(&mut **conn)
            .await;
        if result.is_err()
            && self.statements > 1
            && sqlx::query("ROLLBACK").execute(&mut **conn).await.is_err()
        {
            // Either no transaction was open (BEGIN itself failed) or the connection is in an
            // unknown state: never hand it back to the pool mid-transaction.
            conn.close_on_drop();
        }
        result
    }
}
// The parent rows are found by primary key. `CROSS JOIN` fixes the join order (the VALUES
// list outside): otherwise SQLite 3.46 prefers scanning the partial index of live families,
// which the `used_at IS NULL AND revoked_at IS NULL` terms make usable, to the key lookups.

/// Stores the replacements (`jti`, parent, user, created, expires) of consumed tokens whose
/// parent is live, in the parent's family.
fn replacement_insert_sql(rows: usize) -> String {
    format!(
        "INSERT INTO jwt_refresh_tokens (jti, family, user_id, created, expires_at) \
         SELECT v.column1, p.family, v.column3, v.column4, v.column5 \
         FROM (VALUES {}) AS v CROSS JOIN jwt_refresh_tokens AS p ON p.jti = v.column2 \
         WHERE p.used_at IS NULL AND p.revoked_at IS NULL \
         RETURNING {REFRESH_COLUMNS}",
        placeholders(rows, 5)
    )
}

/// Marks the live ones of `rows` tokens used (`jti`, time pairs, then the `jti` list).
fn consume_update_sql(rows: usize) -> String {
    format!(
        "UPDATE jwt_refresh_tokens SET used_at = CASE jti{} END \
         WHERE jti IN ({}) AND used_at IS NULL AND revoked_at IS NULL \
         RETURNING {REFRESH_COLUMNS}",
        " WHEN ? THEN ?".repeat(rows),
        vec!["?"; rows].join(", ")
    )
}

/// Stores extensions (`jti`, parent, created, expires, user) of live parents of that user.
fn extend_insert_sql(rows: usize) -> String {
    format!(
        "INSERT INTO jwt_refresh_tokens (jti, family, user_id, created, expires_at) \
         SELECT v.column1, p.family, p.user_id, v.column3, v.column4 \
         FROM (VALUES {}) AS v \
         CROSS JOIN jwt_refresh_tokens AS p ON p.jti = v.column2 AND p.user_id = v.column5 \
         WHERE p.used_at IS NULL AND p.revoked_at IS NULL \
         RETURNING {REFRESH_COLUMNS}",
        placeholders(rows, 5)
    )
}

/// Writes `batch` atomically in one query (see [`Script`]): the replacements of the refresh
/// tokens being consumed, from live parents only; the consumptions; the family extensions
/// (after the consumptions, so a token consumed in this batch cannot also be extended); the
/// OAuth2 tokens. Inside one transaction a parent is live for the `INSERT` exactly when it is
/// for the `UPDATE`, and of several jobs consuming one token only the first takes part.
async fn write_batch(writer: &SqlitePool, batch: &[Job]) -> Result<Outcome, StoreError> {
    // Of several jobs consuming one token, only the first (in arrival order) takes part.
    let mut claimed: HashSet<SecretDigest> = HashSet::new();
    let claims: Vec<(usize, &SecretDigest, Option<&NewRefreshToken>, i64)> = batch
        .iter()
        .enumerate()
        .filter_map(|(index, job)| match job {
            Job::Consume {
                jti,
                replacement,
                at,
                ..
            } if claimed.insert(*jti) => Some((index, jti, replacement.as_ref(), to_micros(*at))),
            _ => None,
        })
        .collect();
    let extends: Vec<(usize, &SecretDigest, &NewRefreshToken)> = batch
        .iter()
        .enumerate()
        .filter_map(|(index, job)| match job {
            Job::Extend {
                parent,
                replacement,
                ..
            } => Some((index, parent, replacement)),
            _ => None,
        })
        .collect();
    let mut script = Script::default();
    let replacements: Vec<(&SecretDigest, &NewRefreshToken)> = claims
        .iter()
        .filter_map(|(_, jti, new, _)| new.map(|new| (*jti, new)))
        .collect();
    if !replacements.is_empty() {
        let mut args = Vec::with_capacity(replacements.len() * 5);
        for (parent, new) in &replacements {
            args.extend([
                Arg::Blob(&new.jti.0),
                Arg::Blob(&parent.0),
                Arg::Int(new.user_id.0),
                Arg::Int(to_micros(new.created)),
                Arg::Int(to_micros(new.expires_at)),
            ]);
        }
        script.push(&replacement_insert_sql(replacements.len()), args);
    }
    if !claims.is_empty() {
        let mut args = Vec::with_capacity(claims.len() * 3);
        for (_, jti, _, at) in &claims {
            args.extend([Arg::Blob(&jti.0), Arg::Int(*at)]);
        }
        args.extend(claims.iter().map(|(_, jti, ..)| Arg::Blob(&jti.0)));
        script.push(&consume_update_sql(claims.len()), args);
    }
    if !extends.is_empty() {
        let mut args = Vec::with_capacity(extends.len() * 5);
        for (_, parent, new) in &extends {
            args.extend([
                Arg::Blob(&new.jti.0),
                Arg::Blob(&parent.0),
                Arg::Int(to_micros(new.created)),
                Arg::Int(to_micros(new.expires_at)),
                Arg::Int(new.user_id.0),
            ]);
        }
        script.push(&extend_insert_sql(extends.len()), args);
    }
    let oauth_tokens: Vec<&NewOAuthToken> = batch
        .iter()
        .flat_map(|job| match job {
            Job::InsertOAuthTokens { tokens, .. } => tokens.as_slice(),
            _ => &[],
        })
        .collect();
    let oauth_scopes: Vec<String> = oauth_tokens.iter().map(|t| join(&t.scopes)).collect();
    if !oauth_tokens.is_empty() {
        script.push(
            &token_insert_sql(oauth_tokens.len()),
            oauth_tokens
                .iter()
                .zip(&oauth_scopes)
                .flat_map(|(t, scopes)| token_args(t, scopes)),
        );
    }

    let mut conn = writer
        .acquire()
        .await
        .map_err(|e| map_err(e, "refresh token"))?;
    let rows = script
        .run(&mut conn)
        .await
        .map_err(|e| map_err(e, "refresh token"))?;

    // Sort the returned rows out by jti: replacements and extensions are new jtis, the
    // consumed rows are the claimed ones.
    let mut returned: HashMap<SecretDigest, RefreshToken> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let record = refresh_at(row)?;
        returned.insert(record.jti, record);
    }
    let mut outcome = Outcome::default();
    for (index, jti, new, _) in claims {
        if let Some(consumed) = returned.remove(jti) {
            let stored = new.and_then(|new| returned.remove(&new.jti));
            outcome.consumed.insert(index, (consumed, stored));
        }
    }
    for (index, _, new) in extends {
        if let Some(record) = returned.remove(&new.jti) {
            outcome.extended.insert(index, record);
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use restguard_core::{
        oauth_store::{ClientType, NewApplication, OAuthStore, OAuthTokenKind},
        store::{FamilyId, JwtStore, NewUser, UserStore},
    };

    use super::*;
    use crate::sqlite::SqliteStore;

    fn refresh(n: u8, user: restguard_core::UserId, at: OffsetDateTime) -> NewRefreshToken {
        NewRefreshToken {
            jti: SecretDigest([n; 32]),
            family: FamilyId(format!("f{n}")),
            user_id: user,
            created: at,
            expires_at: at + time::Duration::days(1),
        }
    }

    /// Every statement of a batch finds its rows by primary key, never by scanning an index
    /// (a scan would make each refresh cost the size of the table).
    #[tokio::test]
    async fn batch_statements_look_rows_up_by_key() {
        use sqlx::Row;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        for sql in [
            replacement_insert_sql(3),
            consume_update_sql(3),
            extend_insert_sql(3),
        ] {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&store.writer)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>(3))
                .collect();
            assert!(
                plan.iter()
                    .any(|step| step.contains("USING PRIMARY KEY (jti=?)"))
                    && !plan
                        .iter()
                        .any(|step| step.starts_with("SCAN") && !step.contains("VALUES")),
                "{sql}\n{plan:#?}"
            );
        }
    }

    /// A batch whose last statement fails rolls back as a whole — the refresh consumed in
    /// the same script is live again — and leaves the writer usable outside a transaction.
    #[tokio::test]
    async fn a_failing_batch_rolls_back_and_leaves_the_writer_clean() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let at = OffsetDateTime::now_utc();
        let alice = store.create_user(NewUser::new("alice")).await.unwrap();
        let app = store
            .create_application(NewApplication {
                client_id: "c".into(),
                name: "c".into(),
                client_type: ClientType::Confidential,
                secret_digest: None,
                grant_types: vec!["client_credentials".into()],
                redirect_uris: Vec::new(),
                post_logout_redirect_uris: Vec::new(),
                allowed_scopes: Vec::new(),
                skip_authorization: false,
                algorithm: "RS256".into(),
                owner: None,
                created: at,
            })
            .await
            .unwrap();
        let token = NewOAuthToken {
            kind: OAuthTokenKind::Access,
            digest: SecretDigest([9; 32]),
            application: app.id,
            user_id: None,
            scopes: vec!["read".into()],
            family: FamilyId("g".into()),
            created: at,
            expires_at: at + time::Duration::hours(1),
        };
        store
            .create_oauth_tokens(vec![token.clone()])
            .await
            .unwrap();
        store
            .create_refresh(refresh(1, alice.id, at))
            .await
            .unwrap();

        let consume = |reply| Job::Consume {
            jti: SecretDigest([1; 32]),
            replacement: Some(refresh(2, alice.id, at)),
            at,
            reply,
        };
        let (reply, _consumed) = oneshot::channel();
        let (colliding, _collided) = oneshot::channel();
        let batch = [
            consume(reply),
            Job::InsertOAuthTokens {
                tokens: vec![token],
                reply: colliding,
            },
        ];
        let error = write_batch(&store.writer, &batch)
            .await
            .err()
            .expect("collision");
        assert!(matches!(error, StoreError::Conflict(_)), "got {error:?}");
        let parent = store.refresh_by_jti(&SecretDigest([1; 32])).await.unwrap();
        assert_eq!(parent.expect("stored").used_at, None, "rolled back");
        assert!(store
            .refresh_by_jti(&SecretDigest([2; 32]))
            .await
            .unwrap()
            .is_none());

        // The next batch commits on its own (it would stay invisible inside a leftover
        // transaction).
        let (reply, _consumed) = oneshot::channel();
        let outcome = write_batch(&store.writer, &[consume(reply)]).await.unwrap();
        assert!(outcome.consumed.contains_key(&0));
        let parent = store.refresh_by_jti(&SecretDigest([1; 32])).await.unwrap();
        assert!(parent.expect("stored").used_at.is_some());
        assert!(store
            .refresh_by_jti(&SecretDigest([2; 32]))
            .await
            .unwrap()
            .is_some());
    }
}
