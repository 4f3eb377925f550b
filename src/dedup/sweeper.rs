//! Stuck-lock recovery without an operator. One process at a time across the
//! fleet (a Redis `SET NX` turn) looks at messages in processing for longer than
//! the liveness TTL and releases those whose process is gone: lock deleted, state
//! marked failed. The message itself was never acked, so RabbitMQ redelivers it
//! once the dead process's connection closed; the next claim takes it up.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Dedup, Released, now_ms};
use crate::telemetry::metrics::Metrics;

/// Fingerprints looked at per sweep.
const BATCH: usize = 500;

/// Sweeps every `every` until `stop`. Returns nothing: errors are logged and the
/// next turn tries again.
pub async fn run(dedup: Dedup, every: Duration, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep_once(&dedup, every).await {
            Ok(0) => {}
            Ok(released) => {
                metrics.locks_swept.inc_by(released as u64);
                tracing::info!(released, "released the locks of workers that are gone");
            }
            Err(e) => tracing::warn!(error = %e, "lock sweep failed; trying again next turn"),
        }
    }
}

/// One sweep, if it is this process's turn. Returns how many locks it released.
pub async fn sweep_once(dedup: &Dedup, turn: Duration) -> Result<usize, super::DedupError> {
    if !dedup.take_sweeper_turn(turn).await? {
        return Ok(0);
    }
    let older_than = now_ms() - i64::try_from(dedup.liveness_ttl.as_millis()).unwrap_or(i64::MAX);
    let mut released = 0;
    for (shard, fp) in dedup.inflight(older_than, BATCH).await? {
        if dedup.release_in(shard, &fp, false).await? == Released::Released {
            tracing::info!(fingerprint = %fp, "released the lock of a worker that is gone");
            released += 1;
        }
    }
    Ok(released)
}
