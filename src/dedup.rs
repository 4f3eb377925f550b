//! Stages 3 and 4, dedup and lock: the message's processing state and lock in Redis.
//!
//! Owns the Redis keys (all under the configured prefix):
//! - `lock:<fp>`  — `SET NX PX`, value `<token>|<instance>|<worker id>`; released
//!   only by compare-and-delete, so a worker never frees a lock it lost;
//! - `state:<fp>` — hash {status, worker_id, started_at, completed_at, attempts},
//!   kept `state_ttl` after the last change;
//! - `alive:<instance>` — refreshed by every running process ([`Dedup::heartbeat`]).
//!   A lock whose holder's liveness key is gone belongs to a dead process and is
//!   taken over at once instead of waiting out its TTL.
//!
//! Each verb is one script, so a claim is one round trip. Redis is a fast path,
//! not the guarantee: the uniqueness constraint in PostgreSQL is (see `store`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use redis::aio::ConnectionManager;

use crate::fingerprint::Fingerprint;

#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct DedupError(#[from] redis::RedisError);

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lock is ours; `attempts` counts claims of this fingerprint while its state lives.
    Acquired(Lease),
    /// Its state says completed (by `worker_id`).
    Completed { worker_id: String },
    /// A live worker holds the lock.
    Held { worker_id: String },
}

/// Proof of holding a message's lock; give it back with `complete` or `abandon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fingerprint: Fingerprint,
    value: String,
    pub attempts: u32,
    /// The lock belonged to a worker that is gone and was taken over.
    pub took_over_from: Option<String>,
    /// What the claim's `also_get` found.
    pub fetched: Option<Vec<u8>>,
}

/// The processing state of one message, as `worker state` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessingState {
    pub status: String,
    pub worker_id: String,
    pub started_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    pub attempts: u32,
}

#[derive(Clone)]
pub struct Dedup {
    redis: ConnectionManager,
    prefix: String,
    worker_id: String,
    instance: String,
    lock_ttl: Duration,
    state_ttl: Duration,
    liveness_ttl: Duration,
    round_trips: Arc<AtomicU64>,
}

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));
static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH_LUA));

const CLAIM_LUA: &str = r#"
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' then
  return {'completed', redis.call('HGET', KEYS[1], 'worker_id') or '', 0, false}
end
local holder = redis.call('GET', KEYS[2])
local previous = ''
if holder then
  local _, inst, wid = string.match(holder, '^([^|]*)|([^|]*)|(.*)$')
  if inst and redis.call('EXISTS', ARGV[6] .. inst) == 1 then
    return {'held', wid, 0, false}
  end
  previous = wid or holder
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'worker_id', ARGV[2], 'started_at', ARGV[5])
redis.call('HDEL', KEYS[1], 'completed_at')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local fetched = false
if ARGV[7] ~= '' then fetched = redis.call('GET', ARGV[7]) end
if holder then return {'taken_over', previous, attempts, fetched} end
return {'acquired', '', attempts, fetched}
"#;

/// ARGV: lock value, final status, now ms, state ttl ms, then optionally a key,
/// value and TTL ms to set in the same round trip.
/// `completed` is recorded whoever holds the lock (the reply is out); `failed` only
/// by the holder, so a late worker never overwrites the state of the one that took over.
const FINISH_LUA: &str = r#"
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
if mine then redis.call('DEL', KEYS[2]) end
if ARGV[2] == 'completed' or mine then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'completed_at', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if ARGV[5] then redis.call('SET', ARGV[5], ARGV[6], 'PX', ARGV[7]) end
return mine and 1 or 0
"#;

impl Dedup {
    pub fn new(redis: ConnectionManager, cfg: &crate::config::RedisConfig, worker_id: &str) -> Self {
        Self {
            redis,
            prefix: cfg.key_prefix.clone(),
            worker_id: worker_id.to_owned(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            lock_ttl: Duration::from_secs(cfg.lock_ttl_secs),
            state_ttl: Duration::from_secs(cfg.state_ttl_secs),
            liveness_ttl: Duration::from_secs(cfg.liveness_ttl_secs),
            round_trips: Arc::new(AtomicU64::new(0)),
        }
    }

    fn key(&self, kind: &str, fp: &Fingerprint) -> String {
        format!("{}{kind}:{fp}", self.prefix)
    }

    /// Checks the state and takes the lock in one round trip.
    /// Checks the state and takes the lock in one round trip; when the lock is
    /// taken, the value at `also_get` (if any) rides along in the same trip.
    pub async fn claim(&self, fp: &Fingerprint, also_get: Option<&str>) -> Result<Claim, DedupError> {
        let value = format!("{}|{}|{}", uuid::Uuid::new_v4().simple(), self.instance, self.worker_id);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let (verdict, who, attempts, fetched): (String, String, u32, Option<Vec<u8>>) = CLAIM
            .key(self.key("state", fp))
            .key(self.key("lock", fp))
            .arg(&value)
            .arg(&self.worker_id)
            .arg(millis(self.lock_ttl))
            .arg(millis(self.state_ttl))
            .arg(now_ms())
            .arg(format!("{}alive:", self.prefix))
            .arg(also_get.unwrap_or(""))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match verdict.as_str() {
            "completed" => Claim::Completed { worker_id: who },
            "held" => Claim::Held { worker_id: who },
            taken => Claim::Acquired(Lease {
                fingerprint: fp.clone(),
                value,
                attempts,
                took_over_from: (taken == "taken_over").then_some(who),
                fetched,
            }),
        })
    }

    /// Records the message as completed and releases the lock; `also_set`
    /// (key, value, TTL) is written in the same round trip.
    pub async fn complete(
        &self,
        lease: &Lease,
        also_set: Option<(&str, &[u8], Duration)>,
    ) -> Result<(), DedupError> {
        self.finish(lease, "completed", also_set).await
    }

    /// Records the attempt as failed and releases the lock, if it is still ours.
    pub async fn abandon(&self, lease: &Lease) -> Result<(), DedupError> {
        self.finish(lease, "failed", None).await
    }

    async fn finish(
        &self,
        lease: &Lease,
        status: &str,
        also_set: Option<(&str, &[u8], Duration)>,
    ) -> Result<(), DedupError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut invocation = FINISH.key(self.key("state", &lease.fingerprint));
        invocation
            .key(self.key("lock", &lease.fingerprint))
            .arg(&lease.value)
            .arg(status)
            .arg(now_ms())
            .arg(millis(self.state_ttl));
        if let Some((key, value, ttl)) = also_set {
            invocation.arg(key).arg(value).arg(millis(ttl));
        }
        let _mine: i32 = invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// Redis round trips made for messages (claims and finishes; not heartbeats).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Announces this process as alive for `liveness_ttl`; call at least twice per TTL.
    pub async fn heartbeat(&self) -> Result<(), DedupError> {
        let key = format!("{}alive:{}", self.prefix, self.instance);
        redis::cmd("SET")
            .arg(key)
            .arg(&self.worker_id)
            .arg("PX")
            .arg(millis(self.liveness_ttl))
            .query_async::<()>(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Withdraws this process's liveness key at a clean stop, so its locks (none
    /// should remain) are not mistaken for live ones.
    pub async fn sign_off(&self) -> Result<(), DedupError> {
        let key = format!("{}alive:{}", self.prefix, self.instance);
        redis::cmd("DEL").arg(key).query_async::<()>(&mut self.redis.clone()).await?;
        Ok(())
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.liveness_ttl / 3
    }

    /// The processing state of one message, if Redis still has it.
    pub async fn state(&self, fp: &Fingerprint) -> Result<Option<ProcessingState>, DedupError> {
        let fields: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.key("state", fp)).query_async(&mut self.redis.clone()).await?;
        let Some(status) = fields.get("status") else {
            return Ok(None);
        };
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok());
        Ok(Some(ProcessingState {
            status: status.clone(),
            worker_id: fields.get("worker_id").cloned().unwrap_or_default(),
            started_at_ms: num("started_at"),
            completed_at_ms: num("completed_at"),
            attempts: num("attempts").unwrap_or(0).try_into().unwrap_or(0),
        }))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
