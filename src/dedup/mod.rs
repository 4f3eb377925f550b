//! Stages "dedup" and "lock": a message's processing state and lock in Redis.
//!
//! Uses these keys (named in [`crate::keys`], all in the conversation's shard
//! but liveness):
//! - `lock:<fp>` — value `<token>|<instance>|<worker id>`; renewed while its
//!   work is alive, released only by compare-and-delete;
//! - `state:<fp>` — hash {status (processing, completed, failed, released),
//!   worker_id, instance, started_at, completed_at, attempts, fence}, kept
//!   `state_ttl` after the last change;
//! - `inflight` — per shard, fingerprints being processed, by start time;
//! - `line:<conversation>`, `turns:<conversation>` — the conversation's
//!   messages in the order they were taken, and which is being answered
//!   ([`line`]): a claim takes the lock only on the conversation's turn;
//! - `alive:<instance>` — refreshed by every running process ([`Dedup::heartbeat`]);
//!   a lock whose holder's key is gone belongs to a dead process and is taken over
//!   at once, and the [`sweeper`] releases such locks fleet-wide.
//!
//! Each verb is one script, so one round trip; a claim that finds the lock held
//! asks whether its holder lives (one more), and takes a dead holder's lock over
//! (one more). Redis is the fast path, not the guarantee: the fencing token and
//! the uniqueness constraint in PostgreSQL are.

mod guard;
mod inspect;
pub mod line;
pub mod pauses;
pub mod rate;
mod scripts;
pub mod sweeper;
mod tokens;
pub mod wakes;

pub use guard::Cut;
pub use inspect::{ProcessingState, Released};
pub use line::{InLine, TurnEntry};
pub use wakes::Wakes;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keys::{ConversationKeys, Keys, Shard};
use crate::model::Fingerprint;
use crate::redis_conn::RedisConn;

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
    /// Another message of the conversation is being answered, or is ahead in
    /// line: this one waits for it.
    Wait {
        ahead: Fingerprint,
        /// The entry of the one ahead, as the line holds it.
        entry: Option<TurnEntry>,
    },
    /// This delivery's place in line was gone (Redis lost its data) and was
    /// taken again; the others of the conversation are given time to do the
    /// same before anyone claims.
    Lost,
}

/// Proof of holding a message's lock; give it back with `complete` or `abandon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard: Shard,
    /// The conversation's line, which the lease holds the turn of.
    pub line: ConversationKeys,
    /// The message's place in line (its intake time, µs).
    pub intake_us: i64,
    pub fingerprint: Fingerprint,
    value: String,
    /// This acquisition's fencing token; it grows with every acquisition.
    pub fence: i64,
    /// The message was being processed by a worker that is gone (or whose lease
    /// lapsed), and was taken over from it.
    pub took_over_from: Option<String>,
    /// What the claim's `also_get` found.
    pub fetched: Option<Vec<u8>>,
    /// The burst this turn continues began then (ms since the epoch): earlier
    /// messages of it were coalesced, waiting for this turn's reply.
    pub burst_since_ms: Option<i64>,
    /// How many messages of the conversation waited in line behind this one
    /// when it took the turn.
    pub behind: u32,
}

/// What becomes of a message's place in its conversation's line when its attempt ends.
#[derive(Debug, Clone, Copy)]
enum LineEnd {
    /// Answered or dead-lettered: it leaves, and the next is told.
    Leave,
    /// It comes back (a retry): it keeps its place.
    Park,
    /// Coalesced into a burst that began then (ms): it leaves, the burst goes on.
    Coalesce(i64),
}

#[derive(Clone)]
pub struct Dedup {
    redis: RedisConn,
    keys: Keys,
    worker_id: String,
    instance: String,
    lock_ttl: Duration,
    state_ttl: Duration,
    liveness_ttl: Duration,
    /// How long a conversation's line is kept after its last change.
    line_ttl: Duration,
    round_trips: Arc<AtomicU64>,
}

impl Dedup {
    pub fn new(redis: RedisConn, cfg: &crate::config::RedisConfig, worker_id: &str) -> Self {
        Self {
            redis,
            keys: Keys::new(&cfg.key_prefix),
            worker_id: worker_id.to_owned(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            lock_ttl: Duration::from_secs(cfg.lock_ttl_secs),
            state_ttl: Duration::from_secs(cfg.state_ttl_secs),
            liveness_ttl: Duration::from_secs(cfg.liveness_ttl_secs),
            // A message waits in line at most the life of its attempts; an hour
            // covers the default `max_message_age_secs` and is cheap to keep.
            line_ttl: Duration::from_secs(cfg.state_ttl_secs.max(3_600)),
            round_trips: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Checks the state of message `fp` of the conversation `line`, takes its
    /// place in the conversation's line, and, on the conversation's turn, its
    /// lock; when the lock is taken, the value at `also_get` (a key of the
    /// same conversation) rides along in the same trip.
    pub async fn claim(
        &self,
        line: &ConversationKeys,
        fp: &Fingerprint,
        place: &InLine,
        also_get: Option<&str>,
    ) -> Result<Claim, DedupError> {
        let shard = line.shard;
        let value = format!("{}|{}|{}", uuid::Uuid::new_v4().simple(), self.instance, self.worker_id);
        let mut dead_holder = String::new();
        loop {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let mut invocation = scripts::CLAIM.key(self.keys.state(shard, fp));
            invocation
                .key(self.keys.lock(shard, fp))
                .key(self.keys.inflight(shard))
                .key(&line.line)
                .key(&line.turns)
                .key(self.keys.state(shard, place.ahead.as_ref().unwrap_or(fp)));
            if let Some(key) = also_get {
                invocation.key(key);
            }
            let (verdict, who, _attempts, fetched, fence, holder, burst, behind): (
                String,
                String,
                u32,
                Option<Vec<u8>>,
                i64,
                String,
                i64,
                u32,
            ) = invocation
                .arg(&value)
                .arg(&self.worker_id)
                .arg(millis(self.lock_ttl))
                .arg(millis(self.state_ttl))
                .arg(now_ms())
                .arg(fp.as_str())
                .arg(&self.instance)
                .arg(&dead_holder)
                .arg(place.intake_us)
                .arg(millis(self.line_ttl))
                .arg(if place.stood_before { "1" } else { "0" })
                .arg(place.skip.as_deref().unwrap_or(""))
                .arg(self.keys.wake_channel(""))
                .arg(place.ahead.as_ref().map_or("", |a| a.as_str()))
                .arg(place.before.as_ref().map_or("", |b| b.as_str()))
                .arg(if place.joined_at_read { "1" } else { "0" })
                .invoke_async(&mut self.redis.clone())
                .await?;
            return Ok(match verdict.as_str() {
                "completed" => Claim::Completed { worker_id: who },
                "wait" => match Fingerprint::parse(&who) {
                    Some(ahead) => Claim::Wait { ahead, entry: TurnEntry::parse(&holder) },
                    None => Claim::Lost,
                },
                "lost" => Claim::Lost,
                // Held by another: by a live process, or by a dead one, whose lock
                // the next round takes over (once: a holder that changed meanwhile
                // is someone new, to be asked about in turn by the next delivery).
                "held" if dead_holder.is_empty() && !self.holder_alive(&holder).await? => {
                    dead_holder = holder;
                    continue;
                }
                "held" => Claim::Held { worker_id: who },
                taken => Claim::Acquired(Lease {
                    shard,
                    line: line.clone(),
                    intake_us: place.intake_us,
                    fingerprint: fp.clone(),
                    value,
                    fence,
                    took_over_from: (taken == "taken_over").then_some(who),
                    fetched,
                    burst_since_ms: (burst > 0).then_some(burst),
                    behind,
                }),
            });
        }
    }

    /// Takes message `fp`'s place in line at `intake_us` as its delivery is
    /// read, ahead of its claim (see `scripts::JOIN`); whether it joined.
    pub async fn join(
        &self,
        line: &ConversationKeys,
        fp: &Fingerprint,
        intake_us: i64,
    ) -> Result<bool, DedupError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let entry = format!("waiting|{}|{}|{}", self.instance, self.worker_id, now_ms());
        let joined: i32 = self
            .line_script(&scripts::JOIN, line, fp)
            .arg(fp.as_str())
            .arg(intake_us)
            .arg(entry)
            .arg(millis(self.line_ttl))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(joined == 1)
    }

    /// Takes message `fp` out of the line it joined (see [`Self::join`]) when
    /// its delivery will not come back without ever having been claimed.
    pub async fn unjoin(&self, line: &ConversationKeys, fp: &Fingerprint) -> Result<(), DedupError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let _left: i32 = self
            .line_script(&scripts::UNJOIN, line, fp)
            .arg(fp.as_str())
            .arg(&self.instance)
            .arg(self.keys.wake_channel(""))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// A script invocation on CLAIM's first five keys.
    fn line_script<'s>(
        &self,
        script: &'s redis::Script,
        line: &ConversationKeys,
        fp: &Fingerprint,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.key(self.keys.state(line.shard, fp));
        invocation
            .key(self.keys.lock(line.shard, fp))
            .key(self.keys.inflight(line.shard))
            .key(&line.line)
            .key(&line.turns);
        invocation
    }

    /// Whether process `instance` is alive.
    pub async fn instance_alive(&self, instance: &str) -> Result<bool, DedupError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let alive: bool =
            redis::cmd("EXISTS").arg(self.keys.alive(instance)).query_async(&mut self.redis.clone()).await?;
        Ok(alive)
    }

    /// Whether the process that wrote lock value `holder` is alive.
    pub(super) async fn holder_alive(&self, holder: &str) -> Result<bool, DedupError> {
        let Some(instance) = holder.split('|').nth(1) else { return Ok(false) };
        self.instance_alive(instance).await
    }

    /// Extends the lease by `lock_ttl`; `false` when it is no longer ours.
    /// When Redis lost the lock and the message's state both (no one can have
    /// claimed it since), the lease and its place in line are taken back.
    pub async fn renew(&self, lease: &Lease) -> Result<bool, DedupError> {
        let (shard, fp) = (lease.shard, &lease.fingerprint);
        let renewed: i32 = scripts::RENEW
            .key(self.keys.state(shard, fp))
            .key(self.keys.lock(shard, fp))
            .key(self.keys.inflight(shard))
            .key(&lease.line.line)
            .key(&lease.line.turns)
            .arg(&lease.value)
            .arg(millis(self.lock_ttl))
            .arg(fp.as_str())
            .arg(lease.intake_us)
            .arg(now_ms())
            .arg(&self.worker_id)
            .arg(&self.instance)
            .arg(millis(self.state_ttl))
            .arg(millis(self.line_ttl))
            .invoke_async(&mut self.redis.clone())
            .await?;
        if renewed == 2 {
            tracing::warn!(fingerprint = %fp, "redis had lost this message's lock and state; took them back");
        }
        Ok(renewed > 0)
    }

    /// How often a lease is renewed while its work runs.
    pub fn renew_interval(&self) -> Duration {
        self.lock_ttl / 3
    }

    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
    }

    /// Records the message as completed, releases the lock and passes the
    /// conversation's turn on; `also_set` (a key of the same conversation,
    /// value, TTL) is written in the same round trip.
    pub async fn complete(
        &self,
        lease: &Lease,
        also_set: Option<(&str, &[u8], Duration)>,
    ) -> Result<(), DedupError> {
        self.finish(lease, "completed", LineEnd::Leave, also_set).await
    }

    /// Records the message as coalesced (answered by the reply of its burst,
    /// which began at `burst_since_ms`), releases the lock and passes the turn
    /// to the next message, which continues the burst.
    pub async fn coalesce(&self, lease: &Lease, burst_since_ms: i64) -> Result<(), DedupError> {
        self.finish(lease, "coalesced", LineEnd::Coalesce(burst_since_ms), None).await
    }

    /// Records the attempt as failed and releases the lock, if it is still
    /// ours. The message keeps its place in line, since its retry comes back
    /// to it, unless it will not come back (`last`: it is dead-lettered).
    pub async fn abandon(&self, lease: &Lease, last: bool) -> Result<(), DedupError> {
        self.finish(lease, "failed", if last { LineEnd::Leave } else { LineEnd::Park }, None).await
    }

    async fn finish(
        &self,
        lease: &Lease,
        status: &str,
        line_end: LineEnd,
        also_set: Option<(&str, &[u8], Duration)>,
    ) -> Result<(), DedupError> {
        let (end, burst_since) = match line_end {
            LineEnd::Leave => ("leave", 0),
            LineEnd::Park => ("park", 0),
            LineEnd::Coalesce(since) => ("coalesce", since),
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut invocation = scripts::FINISH.key(self.keys.state(lease.shard, &lease.fingerprint));
        invocation
            .key(self.keys.lock(lease.shard, &lease.fingerprint))
            .key(self.keys.inflight(lease.shard))
            .key(&lease.line.line)
            .key(&lease.line.turns)
            .arg(&lease.value)
            .arg(status)
            .arg(now_ms())
            .arg(millis(self.state_ttl))
            .arg(lease.fingerprint.as_str())
            .arg(end)
            .arg(millis(self.line_ttl))
            .arg(self.keys.wake_channel(""))
            .arg(&self.instance)
            .arg(&self.worker_id)
            .arg(burst_since);
        if let Some((key, value, ttl)) = also_set {
            invocation.key(key).arg(value).arg(millis(ttl));
        }
        let _mine: i32 = invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// Whether message `fp` (of a conversation in `shard`) holds no lock and
    /// its state says it is processing, done, or nothing: its holder's work
    /// ended, whatever the line says.
    pub async fn ended_unrecorded(&self, shard: Shard, fp: &Fingerprint) -> Result<bool, DedupError> {
        let (locked, status): (bool, Option<String>) = redis::pipe()
            .exists(self.keys.lock(shard, fp))
            .hget(self.keys.state(shard, fp), "status")
            .query_async(&mut self.redis.clone())
            .await?;
        // `failed`: parked for its retry; `released`: its holder looked gone and
        // its delivery comes back; `waiting`: it never held the turn.
        Ok(!locked && !matches!(status.as_deref(), Some("failed" | "released" | "waiting")))
    }

    /// Whether message `fp`'s lock is held (by anyone).
    pub async fn is_locked(&self, shard: Shard, fp: &Fingerprint) -> Result<bool, DedupError> {
        Ok(redis::cmd("EXISTS").arg(self.keys.lock(shard, fp)).query_async(&mut self.redis.clone()).await?)
    }

    /// This process's instance id (its wake channel's name).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Redis round trips made for messages (claims with their liveness asks, and
    /// finishes; not heartbeats).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Announces this process as alive for `liveness_ttl`; call at least twice per TTL.
    pub async fn heartbeat(&self) -> Result<(), DedupError> {
        let key = self.keys.alive(&self.instance);
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
        let key = self.keys.alive(&self.instance);
        redis::cmd("DEL").arg(key).query_async::<()>(&mut self.redis.clone()).await?;
        Ok(())
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.liveness_ttl / 3
    }

    /// Messages in processing that started before `before_ms`, oldest first, at
    /// most `limit`: each shard's oldest, merged.
    pub async fn inflight(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(Shard, Fingerprint)>, DedupError> {
        let per_shard = Shard::all().map(|shard| {
            let mut redis = self.redis.clone();
            let key = self.keys.inflight(shard);
            async move {
                let raw: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                    .arg(key)
                    .arg("-inf")
                    .arg(before_ms)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut redis)
                    .await?;
                Ok::<_, DedupError>(raw.into_iter().map(move |(fp, at)| (at, shard, fp)))
            }
        });
        // A shard whose node does not answer is skipped (and looked at next
        // sweep), so one node down does not stop the sweep of the others.
        let mut all: Vec<(f64, Shard, String)> = Vec::new();
        let mut failed = None;
        for found in futures_util::future::join_all(per_shard).await {
            match found {
                Ok(found) => all.extend(found),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            if all.is_empty() {
                return Err(e);
            }
            tracing::warn!(error = %e, "some shards' in-flight sets could not be read; the others are listed");
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(all
            .into_iter()
            .filter_map(|(_, shard, fp)| Fingerprint::parse(&fp).map(|fp| (shard, fp)))
            .take(limit)
            .collect())
    }

    /// Takes the fleet-wide sweeper turn for `ttl` if no process has it.
    pub async fn take_sweeper_turn(&self, ttl: Duration) -> Result<bool, DedupError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.sweeper())
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
