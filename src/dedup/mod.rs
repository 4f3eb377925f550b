//! Stages "dedup" and "lock": a message's processing state and lock in Redis.
//!
//! Owns the Redis keys (all under the configured prefix):
//! - `lock:<fp>` — `SET NX PX`, value `<token>|<instance>|<worker id>`; renewed
//!   while its work is alive, released only by compare-and-delete;
//! - `state:<fp>` — hash {status (processing, completed, failed, released),
//!   worker_id, instance, started_at, completed_at, attempts, fence}, kept
//!   `state_ttl` after the last change;
//! - `inflight` — sorted set of fingerprints being processed, by start time;
//! - `alive:<instance>` — refreshed by every running process ([`Dedup::heartbeat`]);
//!   a lock whose holder's key is gone belongs to a dead process and is taken over
//!   at once, and the [`sweeper`] releases such locks fleet-wide.
//!
//! Each verb is one script, so one round trip. Redis is the fast path, not the
//! guarantee: the fencing token and the uniqueness constraint in PostgreSQL are.

mod guard;
mod inspect;
mod scripts;
pub mod sweeper;

pub use guard::Cut;
pub use inspect::{ProcessingState, Released};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;

use crate::model::Fingerprint;

#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct DedupError(#[from] redis::RedisError);

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Acquired(Lease),
    /// Its state says completed (by `worker_id`).
    Completed {
        worker_id: String,
    },
    /// A live worker holds the lock.
    Held {
        worker_id: String,
    },
}

/// Proof of holding a message's lock; give it back with `complete` or `abandon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fingerprint: Fingerprint,
    value: String,
    /// This acquisition's fencing token; it grows with every acquisition.
    pub fence: i64,
    /// The message was being processed by a worker that is gone (or whose lease
    /// lapsed), and was taken over from it.
    pub took_over_from: Option<String>,
    /// What the claim's `also_get` found.
    pub fetched: Option<Vec<u8>>,
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

    pub(super) fn key(&self, kind: &str, fp: &Fingerprint) -> String {
        format!("{}{kind}:{fp}", self.prefix)
    }

    pub(super) fn inflight_key(&self) -> String {
        format!("{}inflight", self.prefix)
    }

    pub(super) fn alive_prefix(&self) -> String {
        format!("{}alive:", self.prefix)
    }

    /// Checks the state and takes the lock in one round trip; when the lock is
    /// taken, the value at `also_get` (if any) rides along in the same trip.
    pub async fn claim(&self, fp: &Fingerprint, also_get: Option<&str>) -> Result<Claim, DedupError> {
        let value = format!("{}|{}|{}", uuid::Uuid::new_v4().simple(), self.instance, self.worker_id);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let (verdict, who, _attempts, fetched, fence): (String, String, u32, Option<Vec<u8>>, i64) =
            scripts::CLAIM
                .key(self.key("state", fp))
                .key(self.key("lock", fp))
                .key(self.inflight_key())
                .arg(&value)
                .arg(&self.worker_id)
                .arg(millis(self.lock_ttl))
                .arg(millis(self.state_ttl))
                .arg(now_ms())
                .arg(self.alive_prefix())
                .arg(also_get.unwrap_or(""))
                .arg(fp.as_str())
                .arg(&self.instance)
                .invoke_async(&mut self.redis.clone())
                .await?;
        Ok(match verdict.as_str() {
            "completed" => Claim::Completed { worker_id: who },
            "held" => Claim::Held { worker_id: who },
            taken => Claim::Acquired(Lease {
                fingerprint: fp.clone(),
                value,
                fence,
                took_over_from: (taken == "taken_over").then_some(who),
                fetched,
            }),
        })
    }

    /// Extends the lease by `lock_ttl`; `false` when it is no longer ours.
    pub async fn renew(&self, lease: &Lease) -> Result<bool, DedupError> {
        let renewed: i32 = scripts::RENEW
            .key(self.key("lock", &lease.fingerprint))
            .arg(&lease.value)
            .arg(millis(self.lock_ttl))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(renewed == 1)
    }

    /// How often a lease is renewed while its work runs.
    pub fn renew_interval(&self) -> Duration {
        self.lock_ttl / 3
    }

    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
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
        let mut invocation = scripts::FINISH.key(self.key("state", &lease.fingerprint));
        invocation
            .key(self.key("lock", &lease.fingerprint))
            .key(self.inflight_key())
            .arg(&lease.value)
            .arg(status)
            .arg(now_ms())
            .arg(millis(self.state_ttl))
            .arg(lease.fingerprint.as_str());
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
        let key = format!("{}{}", self.alive_prefix(), self.instance);
        redis::cmd("SET")
            .arg(key)
            .arg(&self.worker_id)
            .arg("PX")
            .arg(millis(self.liveness_ttl))
            .query_async::<()>(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Whether Redis answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), DedupError> {
        redis::cmd("PING").query_async::<String>(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// Withdraws this process's liveness key at a clean stop.
    pub async fn sign_off(&self) -> Result<(), DedupError> {
        let key = format!("{}{}", self.alive_prefix(), self.instance);
        redis::cmd("DEL").arg(key).query_async::<()>(&mut self.redis.clone()).await?;
        Ok(())
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.liveness_ttl / 3
    }

    /// Fingerprints in processing, oldest first, started before `before_ms`.
    pub async fn inflight(&self, before_ms: i64, limit: usize) -> Result<Vec<Fingerprint>, DedupError> {
        let raw: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.inflight_key())
            .arg("-inf")
            .arg(before_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(raw.iter().filter_map(|f| Fingerprint::parse(f)).collect())
    }

    /// Takes the fleet-wide sweeper turn for `ttl` if no process has it.
    pub async fn take_sweeper_turn(&self, ttl: Duration) -> Result<bool, DedupError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(format!("{}sweeper", self.prefix))
            .arg(&self.instance)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(taken.is_some())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
