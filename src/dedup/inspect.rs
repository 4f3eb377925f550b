//! What operators see of a message's lock and state, and what they may do
//! (`worker state`, `worker locks release`).

use std::collections::HashMap;

use super::{Dedup, DedupError, now_ms, scripts};
use crate::keys::Shard;
use crate::model::Fingerprint;

/// The processing state of one message, as `worker state` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcessingState {
    pub fingerprint: String,
    pub status: String,
    pub worker_id: String,
    pub started_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    pub attempts: u32,
    /// Whether a lock is held now, and whether its holder's process is alive.
    pub locked: bool,
    pub holder_alive: bool,
    /// Waiting for its conversation's turn: the message it waits behind (the
    /// one being answered, or the first in line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_behind: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    Released,
    /// A live process holds it (and force was not asked for).
    HeldByLiveWorker,
    NothingHeld,
}

impl Dedup {
    /// The shard whose keys hold message `fp`, if Redis still has its state:
    /// an operator names a message by fingerprint alone, and the fingerprint
    /// does not tell its conversation, so every shard is asked (256 commands,
    /// in parallel: fine for an operator, never on a message's path).
    pub async fn locate(&self, fp: &Fingerprint) -> Result<Option<Shard>, DedupError> {
        let asks = Shard::all().map(|shard| {
            let mut redis = self.redis.clone();
            let state = self.keys.state(shard, fp);
            let lock = self.keys.lock(shard, fp);
            async move {
                let (state, lock): (bool, bool) =
                    redis::pipe().exists(state).exists(lock).query_async(&mut redis).await?;
                Ok::<_, DedupError>((state || lock).then_some(shard))
            }
        });
        // Found in one shard is found, whatever another shard's node answered.
        let mut failed = None;
        for found in futures_util::future::join_all(asks).await {
            match found {
                Ok(Some(shard)) => return Ok(Some(shard)),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(None), Err)
    }

    /// The processing state of one message, if Redis still has it.
    pub async fn state(&self, fp: &Fingerprint) -> Result<Option<ProcessingState>, DedupError> {
        match self.locate(fp).await? {
            Some(shard) => self.state_in(shard, fp).await,
            None => Ok(None),
        }
    }

    /// The processing state of message `fp` of a conversation in `shard`.
    pub async fn state_in(
        &self,
        shard: Shard,
        fp: &Fingerprint,
    ) -> Result<Option<ProcessingState>, DedupError> {
        let (fields, holder): (HashMap<String, String>, Option<String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys.state(shard, fp))
            .cmd("GET")
            .arg(self.keys.lock(shard, fp))
            .query_async(&mut self.redis.clone())
            .await?;
        let Some(status) = fields.get("status") else { return Ok(None) };
        let holder_alive = match &holder {
            Some(holder) => self.holder_alive(holder).await?,
            None => false,
        };
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok());
        Ok(Some(ProcessingState {
            fingerprint: fp.to_string(),
            status: status.clone(),
            worker_id: fields.get("worker_id").cloned().unwrap_or_default(),
            started_at_ms: num("started_at"),
            completed_at_ms: num("completed_at"),
            attempts: num("attempts").unwrap_or(0).try_into().unwrap_or(0),
            locked: holder.is_some(),
            holder_alive,
            waiting_behind: fields.get("behind").filter(|b| !b.is_empty()).cloned(),
        }))
    }

    /// Releases a message's lock and marks a processing state released, if its
    /// holder is gone — or whoever holds it, with `force` (operators only).
    pub async fn release(&self, fp: &Fingerprint, force: bool) -> Result<Released, DedupError> {
        match self.locate(fp).await? {
            Some(shard) => self.release_in(shard, fp, force).await,
            None => Ok(Released::NothingHeld),
        }
    }

    /// [`Dedup::release`] of message `fp` of a conversation in `shard`. The
    /// holder's liveness is asked first; the release then happens only if the
    /// lock is still the one that was asked about.
    pub async fn release_in(
        &self,
        shard: Shard,
        fp: &Fingerprint,
        force: bool,
    ) -> Result<Released, DedupError> {
        let expected = if force {
            "*".to_owned()
        } else {
            let holder: Option<String> =
                redis::cmd("GET").arg(self.keys.lock(shard, fp)).query_async(&mut self.redis.clone()).await?;
            match holder {
                Some(holder) if self.holder_alive(&holder).await? => return Ok(Released::HeldByLiveWorker),
                Some(holder) => holder,
                None => String::new(),
            }
        };
        let released: i32 = scripts::RELEASE
            .key(self.keys.state(shard, fp))
            .key(self.keys.lock(shard, fp))
            .key(self.keys.inflight(shard))
            .arg(fp.as_str())
            .arg(now_ms())
            .arg(expected)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match released {
            1 => Released::Released,
            // The holder changed between the look and the release: someone new,
            // who is looked at on the next sweep.
            0 => Released::HeldByLiveWorker,
            _ => Released::NothingHeld,
        })
    }
}
