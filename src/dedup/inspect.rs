//! What operators see of a message's lock and state, and what they may do
//! (`worker state`, `worker locks release`).

use std::collections::HashMap;

use super::{Dedup, DedupError, now_ms, scripts};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    Released,
    /// A live process holds it (and force was not asked for).
    HeldByLiveWorker,
    NothingHeld,
}

impl Dedup {
    /// The processing state of one message, if Redis still has it.
    pub async fn state(&self, fp: &Fingerprint) -> Result<Option<ProcessingState>, DedupError> {
        let mut redis = self.redis.clone();
        let (fields, holder): (HashMap<String, String>, Option<String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.key("state", fp))
            .cmd("GET")
            .arg(self.key("lock", fp))
            .query_async(&mut redis)
            .await?;
        let Some(status) = fields.get("status") else { return Ok(None) };
        let holder_alive = match holder.as_deref().and_then(|h| h.split('|').nth(1)) {
            Some(instance) => {
                redis::cmd("EXISTS")
                    .arg(format!("{}{instance}", self.alive_prefix()))
                    .query_async(&mut redis)
                    .await?
            }
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
        }))
    }

    /// Releases a message's lock and marks a processing state failed, if its
    /// holder is gone — or whoever holds it, with `force` (operators only).
    pub async fn release(&self, fp: &Fingerprint, force: bool) -> Result<Released, DedupError> {
        let released: i32 = scripts::RELEASE
            .key(self.key("state", fp))
            .key(self.key("lock", fp))
            .key(self.inflight_key())
            .arg(fp.as_str())
            .arg(self.alive_prefix())
            .arg(now_ms())
            .arg(if force { "force" } else { "" })
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match released {
            1 => Released::Released,
            0 => Released::HeldByLiveWorker,
            _ => Released::NothingHeld,
        })
    }
}
