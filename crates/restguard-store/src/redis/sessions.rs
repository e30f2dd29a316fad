//! [`SessionStore`] in Redis: browser sessions shared by every instance, without a database
//! write per login or logout.
//!
//! Layout under the prefix `P`: `P session:<id>` a hash (`uid`, `digest` (hex), `created`,
//! `last_seen`, `expires_at` in unix microseconds, `ua`, `ip`); `P session:digest:<hex>` → id;
//! `P session:user:<uid>` the user's ids; `P session:by_expiry` / `P session:by_last_seen`
//! sorted sets for `delete_expired_sessions`; `P session:next_id` the id counter. Every
//! change is one Lua script (atomic). Keys expire one day after the session's absolute end, so
//! nothing outlives it for long even without `restguard flush-expired`.
//!
//! Users stay in the database: lookups join the owner through a [`UserStore`] (a session of a
//! deleted user is not found, like the SQL backends' cascade). The scripts build key names
//! from the prefix, so this targets a single Redis (or a primary with replicas), not Redis
//! Cluster.

use std::{fmt, fmt::Write as _, sync::Arc};

use ::redis::Script;
use async_trait::async_trait;
use restguard_core::{
    identity::{User, UserId},
    store::{
        NewSession, SecretDigest, SessionId, SessionRecord, SessionStore, StoreError, UserStore,
    },
};
use time::OffsetDateTime;

use super::{Connection, RedisOptions};
use crate::timestamp::{from_micros, to_micros, truncate};

/// Deletes session `id` (every key and index entry) and returns `{id, field, value, …}`.
const DELETE_FN: &str = r"
local p = ARGV[1]
local function del(id)
  local key = p .. 'session:' .. id
  local h = redis.call('HGETALL', key)
  if #h == 0 then
    return nil
  end
  local fields = {}
  for i = 1, #h, 2 do fields[h[i]] = h[i + 1] end
  redis.call('DEL', key, p .. 'session:digest:' .. fields['digest'])
  redis.call('SREM', p .. 'session:user:' .. fields['uid'], id)
  redis.call('ZREM', p .. 'session:by_expiry', id)
  redis.call('ZREM', p .. 'session:by_last_seen', id)
  local out = {tostring(id)}
  for i = 1, #h do out[#out + 1] = h[i] end
  return out
end
";

/// ARGV: prefix, uid, digest hex, created, expires_at, user agent, ip, has ip, expire-at (ms).
const CREATE: &str = r"
local p = ARGV[1]
local digest_key = p .. 'session:digest:' .. ARGV[3]
if redis.call('EXISTS', digest_key) == 1 then
  return -1
end
local id = redis.call('INCR', p .. 'session:next_id')
local key = p .. 'session:' .. id
redis.call('HSET', key, 'uid', ARGV[2], 'digest', ARGV[3], 'created', ARGV[4],
  'last_seen', ARGV[4], 'expires_at', ARGV[5], 'ua', ARGV[6])
if ARGV[8] == '1' then
  redis.call('HSET', key, 'ip', ARGV[7])
end
redis.call('SET', digest_key, id)
redis.call('SADD', p .. 'session:user:' .. ARGV[2], id)
redis.call('ZADD', p .. 'session:by_expiry', ARGV[5], id)
redis.call('ZADD', p .. 'session:by_last_seen', ARGV[4], id)
redis.call('PEXPIREAT', key, ARGV[9])
redis.call('PEXPIREAT', digest_key, ARGV[9])
return id
";

/// ARGV: prefix, digest hex. Returns `{id, field, value, …}` or nil.
const LOOKUP: &str = r"
local p = ARGV[1]
local id = redis.call('GET', p .. 'session:digest:' .. ARGV[2])
if not id then
  return nil
end
local h = redis.call('HGETALL', p .. 'session:' .. id)
if #h == 0 then
  return nil
end
local out = {id}
for i = 1, #h do out[#out + 1] = h[i] end
return out
";

/// ARGV: prefix, uid. Returns a list of `{id, field, value, …}`; drops stale ids.
const LIST: &str = r"
local p = ARGV[1]
local set = p .. 'session:user:' .. ARGV[2]
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', set)) do
  local h = redis.call('HGETALL', p .. 'session:' .. id)
  if #h == 0 then
    redis.call('SREM', set, id)
  else
    local row = {id}
    for i = 1, #h do row[#row + 1] = h[i] end
    out[#out + 1] = row
  end
end
return out
";

/// ARGV: prefix, id, at.
const TOUCH: &str = r"
local p = ARGV[1]
local key = p .. 'session:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then
  redis.call('HSET', key, 'last_seen', ARGV[3])
  redis.call('ZADD', p .. 'session:by_last_seen', ARGV[3], ARGV[2])
end
return 1
";

/// ARGV: prefix, uid, id. Returns the deleted session or nil.
const DELETE_ONE: &str = r"
local owner = redis.call('HGET', ARGV[1] .. 'session:' .. ARGV[3], 'uid')
if owner ~= ARGV[2] then
  return nil
end
return del(ARGV[3])
";

/// ARGV: prefix, uid, id to keep (or empty). Returns the deleted sessions.
const DELETE_USER: &str = r"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'session:user:' .. ARGV[2])) do
  if id ~= ARGV[3] then
    local row = del(id)
    if row then
      out[#out + 1] = row
    else
      redis.call('SREM', ARGV[1] .. 'session:user:' .. ARGV[2], id)
    end
  end
end
return out
";

/// ARGV: prefix, now, idle-before (or empty). Returns how many sessions were deleted.
const DELETE_EXPIRED: &str = r"
local p = ARGV[1]
local ids = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'session:by_expiry', '-inf', ARGV[2])) do
  ids[id] = true
end
if ARGV[3] ~= '' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'session:by_last_seen', '-inf', ARGV[3])) do
    ids[id] = true
  end
end
local n = 0
for id, _ in pairs(ids) do
  if del(id) then
    n = n + 1
  else
    redis.call('ZREM', p .. 'session:by_expiry', id)
    redis.call('ZREM', p .. 'session:by_last_seen', id)
  end
end
return n
";

/// Browser sessions in Redis; owners are looked up in `users` (the database).
pub struct RedisSessionStore {
    connection: Connection,
    users: Arc<dyn UserStore>,
    prefix: String,
    create: Script,
    lookup: Script,
    list: Script,
    touch: Script,
    delete_one: Script,
    delete_user: Script,
    delete_expired: Script,
}

impl fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn hex(digest: &SecretDigest) -> String {
    digest.0.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Result<SecretDigest, StoreError> {
    let bad = || StoreError::backend(format!("session digest {s:?}"));
    if s.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(SecretDigest(out))
}

/// A [`SessionRecord`] from `{id, field, value, …}`.
fn record(row: &[String]) -> Result<SessionRecord, StoreError> {
    let bad = |what: &str| StoreError::backend(format!("session hash: {what}"));
    let (id, fields) = row.split_first().ok_or_else(|| bad("empty"))?;
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv.first().is_some_and(|k| k == name))
            .and_then(|kv| kv.get(1))
    };
    let int = |name: &str| -> Result<i64, StoreError> {
        field(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(name))
    };
    let time = |name: &str| -> Result<OffsetDateTime, StoreError> {
        from_micros(int(name)?).ok_or_else(|| bad(name))
    };
    Ok(SessionRecord {
        id: SessionId(id.parse().map_err(|_| bad("id"))?),
        user_id: UserId(int("uid")?),
        digest: unhex(field("digest").ok_or_else(|| bad("digest"))?)?,
        created: time("created")?,
        last_seen: time("last_seen")?,
        expires_at: time("expires_at")?,
        user_agent: field("ua").cloned().unwrap_or_default(),
        ip: field("ip").cloned(),
    })
}

fn records(rows: &[Vec<String>]) -> Result<Vec<SessionRecord>, StoreError> {
    let mut sessions = rows
        .iter()
        .map(|r| record(r))
        .collect::<Result<Vec<_>, _>>()?;
    sessions.sort_by_key(|s| (s.created, s.id));
    Ok(sessions)
}

impl RedisSessionStore {
    /// Sessions in the Redis at `url` (keys under `options.key_prefix`), owners from `users`.
    /// Connects on first use. A malformed URL is an error.
    pub fn new(
        url: &str,
        options: &RedisOptions,
        users: Arc<dyn UserStore>,
    ) -> Result<Self, StoreError> {
        let with_delete = |body: &str| Script::new(&format!("{DELETE_FN}{body}"));
        Ok(Self {
            connection: Connection::new(url, options.timeout)?,
            users,
            prefix: options.key_prefix.clone(),
            create: Script::new(CREATE),
            lookup: Script::new(LOOKUP),
            list: Script::new(LIST),
            touch: Script::new(TOUCH),
            delete_one: with_delete(DELETE_ONE),
            delete_user: with_delete(DELETE_USER),
            delete_expired: with_delete(DELETE_EXPIRED),
        })
    }

    /// Fails when Redis cannot answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.connection.ping().await
    }

    async fn run<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        args: Vec<String>,
    ) -> Result<T, StoreError> {
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(self.prefix.clone());
        all.extend(args);
        self.connection.script(script, &[], &all).await
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create_session(&self, session: NewSession) -> Result<SessionRecord, StoreError> {
        if self.users.user_by_id(session.user_id).await?.is_none() {
            return Err(StoreError::backend(format!(
                "session owner {} does not exist",
                session.user_id
            )));
        }
        let created = truncate(session.created);
        let expires_at = truncate(session.expires_at);
        // Keys live until a day after the later of the session's end and now.
        let keep_until = expires_at.max(OffsetDateTime::now_utc()) + time::Duration::days(1);
        let keep_until_ms = keep_until.unix_timestamp_nanos() / 1_000_000;
        let id: i64 = self
            .run(
                &self.create,
                vec![
                    session.user_id.0.to_string(),
                    hex(&session.digest),
                    to_micros(created).to_string(),
                    to_micros(expires_at).to_string(),
                    session.user_agent.clone(),
                    session.ip.clone().unwrap_or_default(),
                    if session.ip.is_some() { "1" } else { "0" }.to_owned(),
                    keep_until_ms.to_string(),
                ],
            )
            .await?;
        if id < 0 {
            return Err(StoreError::Conflict("session"));
        }
        Ok(SessionRecord {
            id: SessionId(id),
            user_id: session.user_id,
            digest: session.digest,
            created,
            last_seen: created,
            expires_at,
            user_agent: session.user_agent,
            ip: session.ip,
        })
    }

    async fn session_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<(SessionRecord, User)>, StoreError> {
        let row: Option<Vec<String>> = self.run(&self.lookup, vec![hex(digest)]).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let session = record(&row)?;
        Ok(self
            .users
            .user_by_id(session.user_id)
            .await?
            .map(|user| (session, user)))
    }

    async fn sessions_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        if self.users.user_by_id(user_id).await?.is_none() {
            // The owner is gone: so are their sessions (the SQL backends cascade).
            self.delete_user_sessions(user_id, None).await?;
            return Ok(Vec::new());
        }
        let rows: Vec<Vec<String>> = self.run(&self.list, vec![user_id.0.to_string()]).await?;
        records(&rows)
    }

    async fn touch_session(&self, id: SessionId, at: OffsetDateTime) -> Result<(), StoreError> {
        let _: i64 = self
            .run(
                &self.touch,
                vec![id.0.to_string(), to_micros(at).to_string()],
            )
            .await?;
        Ok(())
    }

    async fn delete_session(
        &self,
        user_id: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row: Option<Vec<String>> = self
            .run(
                &self.delete_one,
                vec![user_id.0.to_string(), id.0.to_string()],
            )
            .await?;
        row.map(|r| record(&r)).transpose()
    }

    async fn delete_user_sessions(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let rows: Vec<Vec<String>> = self
            .run(
                &self.delete_user,
                vec![
                    user_id.0.to_string(),
                    keep.map(|k| k.0.to_string()).unwrap_or_default(),
                ],
            )
            .await?;
        records(&rows)
    }

    async fn delete_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_before: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        let n: i64 = self
            .run(
                &self.delete_expired,
                vec![
                    to_micros(now).to_string(),
                    idle_before
                        .map(|t| to_micros(t).to_string())
                        .unwrap_or_default(),
                ],
            )
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let d = SecretDigest([0xab; 32]);
        assert_eq!(unhex(&hex(&d)).unwrap(), d);
        assert!(unhex("zz").is_err());
        assert!(unhex(&"g".repeat(64)).is_err());
    }
}
