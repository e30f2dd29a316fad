//! Group commit for the writes that come at the rate tokens are issued.
//!
//! A token refresh or an OAuth2 token grant is a write, and on SQLite every write statement
//! costs a hop to the connection's worker thread and a WAL commit (every page the transaction
//! touched, written again). Such writes that arrive while the writer is busy are therefore
//! queued and written together: one transaction, one `UPDATE … RETURNING` for all refresh
//! consumptions, one multi-row `INSERT` for their replacements, one `INSERT … SELECT` for
//! family extensions, one multi-row `INSERT` for OAuth2 tokens. Each caller still gets exactly
//! its own answer, and the decision stays a conditional write (never check-then-act): of
//! several consumptions of one token in a batch, only the first is reported as the winner.

use std::collections::HashMap;

use restguard_core::{
    oauth_store::NewOAuthToken,
    store::{NewRefreshToken, RefreshToken, SecretDigest, StoreError},
};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{map_err, refresh_at, REFRESH_COLUMNS};
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
            // The batch rolled back as a whole; written one by one, only the job at fault (a
            // digest collision, say) fails, and an outage fails each with its own error.
            Err(e) if batch.len() == 1 => fail(batch, &e),
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

fn placeholders(rows: usize, per_row: usize) -> String {
    let row = format!("({})", vec!["?"; per_row].join(", "));
    vec![row; rows].join(", ")
}

/// Writes `batch` atomically: in one transaction, or without one when a single statement
/// does it all (a statement is atomic on its own, and each transaction boundary is another
/// hop to the connection's worker thread).
async fn write_batch(writer: &SqlitePool, batch: &[Job]) -> Result<Outcome, StoreError> {
    let mut conn = writer
        .acquire()
        .await
        .map_err(|e| map_err(e, "refresh token"))?;
    let has = |kind: fn(&Job) -> bool| usize::from(batch.iter().any(kind));
    let statements = has(|j| matches!(j, Job::Consume { .. }))
        + has(|j| {
            matches!(
                j,
                Job::Consume {
                    replacement: Some(_),
                    ..
                }
            )
        })
        + has(|j| matches!(j, Job::Extend { .. }))
        + has(|j| matches!(j, Job::InsertOAuthTokens { .. }));
    if statements <= 1 {
        return write_statements(&mut conn, batch).await;
    }
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| map_err(e, "refresh token"))?;
    let outcome = write_statements(&mut tx, batch).await?;
    tx.commit().await.map_err(|e| map_err(e, "refresh token"))?;
    Ok(outcome)
}

async fn write_statements(tx: &mut SqliteConnection, batch: &[Job]) -> Result<Outcome, StoreError> {
    let mut outcome = Outcome::default();

    // Consumptions: the first job naming a jti is the only one that can win it.
    let mut first_claim: HashMap<SecretDigest, usize> = HashMap::new();
    for (index, job) in batch.iter().enumerate() {
        if let Job::Consume { jti, .. } = job {
            first_claim.entry(*jti).or_insert(index);
        }
    }
    if !first_claim.is_empty() {
        let mut claims: Vec<(SecretDigest, usize)> =
            first_claim.iter().map(|(d, i)| (*d, *i)).collect();
        claims.sort_by_key(|(_, index)| *index);
        let cases = " WHEN ? THEN ?".repeat(claims.len());
        let list = vec!["?"; claims.len()].join(", ");
        let sql = format!(
            "UPDATE jwt_refresh_tokens SET used_at = CASE jti{cases} END \
             WHERE jti IN ({list}) AND used_at IS NULL AND revoked_at IS NULL \
             RETURNING {REFRESH_COLUMNS}"
        );
        let mut query = sqlx::query(&sql);
        for (jti, index) in &claims {
            let at = match &batch[*index] {
                Job::Consume { at, .. } => *at,
                Job::Extend { .. } | Job::InsertOAuthTokens { .. } => OffsetDateTime::now_utc(),
            };
            query = query.bind(jti.0.to_vec()).bind(to_micros(at));
        }
        for (jti, _) in &claims {
            query = query.bind(jti.0.to_vec());
        }
        let rows = query
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| map_err(e, "refresh token"))?;
        let mut winners: Vec<(usize, RefreshToken)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let consumed = refresh_at(row)?;
            if let Some(index) = first_claim.get(&consumed.jti) {
                winners.push((*index, consumed));
            }
        }
        // Replacements join the consumed token's family, in one statement.
        let replacements: Vec<(usize, &NewRefreshToken, &RefreshToken)> = winners
            .iter()
            .filter_map(|(index, consumed)| match &batch[*index] {
                Job::Consume {
                    replacement: Some(new),
                    ..
                } => Some((*index, new, consumed)),
                _ => None,
            })
            .collect();
        let mut stored: HashMap<SecretDigest, RefreshToken> = HashMap::new();
        if !replacements.is_empty() {
            let sql = format!(
                "INSERT INTO jwt_refresh_tokens (jti, family, user_id, created, expires_at) \
                 VALUES {} RETURNING {REFRESH_COLUMNS}",
                placeholders(replacements.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for (_, new, consumed) in &replacements {
                query = query
                    .bind(new.jti.0.to_vec())
                    .bind(consumed.family.0.clone())
                    .bind(new.user_id.0)
                    .bind(to_micros(new.created))
                    .bind(to_micros(new.expires_at));
            }
            for row in query
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| map_err(e, "refresh token"))?
            {
                let record = refresh_at(&row)?;
                stored.insert(record.jti, record);
            }
        }
        for (index, consumed) in winners {
            let new = match &batch[index] {
                Job::Consume {
                    replacement: Some(new),
                    ..
                } => stored.remove(&new.jti),
                _ => None,
            };
            outcome.consumed.insert(index, (consumed, new));
        }
    }

    // Extensions (rotation without blacklisting), after this batch's consumptions.
    let extends: Vec<(usize, &SecretDigest, &NewRefreshToken)> = batch
        .iter()
        .enumerate()
        .filter_map(|(index, job)| match job {
            Job::Extend {
                parent,
                replacement,
                ..
            } => Some((index, parent, replacement)),
            Job::Consume { .. } | Job::InsertOAuthTokens { .. } => None,
        })
        .collect();
    if !extends.is_empty() {
        let sql = format!(
            "INSERT INTO jwt_refresh_tokens (jti, family, user_id, created, expires_at) \
             SELECT v.column1, p.family, p.user_id, v.column3, v.column4 \
             FROM (VALUES {}) AS v \
             JOIN jwt_refresh_tokens AS p ON p.jti = v.column2 AND p.user_id = v.column5 \
             WHERE p.used_at IS NULL AND p.revoked_at IS NULL \
             RETURNING {REFRESH_COLUMNS}",
            placeholders(extends.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for (_, parent, new) in &extends {
            query = query
                .bind(new.jti.0.to_vec())
                .bind(parent.0.to_vec())
                .bind(to_micros(new.created))
                .bind(to_micros(new.expires_at))
                .bind(new.user_id.0);
        }
        let mut stored: HashMap<SecretDigest, RefreshToken> = HashMap::new();
        for row in query
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| map_err(e, "refresh token"))?
        {
            let record = refresh_at(&row)?;
            stored.insert(record.jti, record);
        }
        for (index, _, new) in extends {
            if let Some(record) = stored.remove(&new.jti) {
                outcome.extended.insert(index, record);
            }
        }
    }

    let oauth_tokens = batch.iter().flat_map(|job| match job {
        Job::InsertOAuthTokens { tokens, .. } => tokens.as_slice(),
        _ => &[],
    });
    super::oauth::insert_tokens(&mut *tx, oauth_tokens).await?;
    Ok(outcome)
}
