//! The tasks beside message handling, and the loops they run: health checks,
//! the liveness heartbeat, cache warming. Each is tracked, and each ends when
//! the worker stops, wherever it waits.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::CLOSING_STEP_TIMEOUT;
use crate::admin::Health;
use crate::catalog::CatalogCache;
use crate::dedup::Dedup;
use crate::telemetry::metrics::Metrics;

/// The tasks beside message handling: admin endpoint, health checks, heartbeat,
/// cache invalidation listener, lock sweeper, cache warming. Each is given the
/// stop token to return at its own pace, and is also dropped wherever it waits
/// when the token is cancelled: some wait on PostgreSQL with no deadline (the
/// listener's resubscription and resync, warming's loads, which a lock or a
/// stalled connection holds up forever), and none may hold up shutdown.
#[derive(Default)]
pub(super) struct Background {
    tracker: TaskTracker,
    stop: CancellationToken,
    /// Names of the tasks not finished yet, to say which ones overran.
    running: Arc<Mutex<Vec<&'static str>>>,
}

impl Background {
    pub(super) fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub(super) fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).push(name);
        let finished = Finished { name, running: self.running.clone() };
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            let _finished = finished;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Stops every task and waits for them, at most [`CLOSING_STEP_TIMEOUT`]:
    /// one still running then (a poll that never yields) is left behind.
    pub(super) async fn stop_all(&self) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(CLOSING_STEP_TIMEOUT, self.tracker.wait()).await.is_err() {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).join(", ");
            tracing::warn!(%running, "background tasks did not stop in time; stopping without them");
        }
    }
}

/// An early return (a failed start) stops the tasks too.
impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Takes a background task's name off the running list when it ends, however it ends.
struct Finished {
    name: &'static str,
    running: Arc<Mutex<Vec<&'static str>>>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = running.iter().position(|n| *n == self.name) {
            running.swap_remove(at);
        }
    }
}

/// Every 2 s: whether Redis and PostgreSQL answer (for `/readyz`), and the
/// figures kept elsewhere (pool, cache tiers, Redis round trips) into the metrics.
pub(super) async fn watch_health(
    db: crate::store::Db,
    dedup: Dedup,
    cache: CatalogCache,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut seen = [0u64; 4];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        health.redis.store(dedup.ping().await.is_ok(), Ordering::Relaxed);
        let answered = tokio::time::timeout(Duration::from_secs(2), crate::store::ping(&db)).await;
        health.database.store(matches!(answered, Ok(Ok(()))), Ordering::Relaxed);
        metrics.db_pool_connections.set(i64::from(db.pool().size()));
        metrics.db_pool_idle.set(i64::try_from(db.pool().num_idle()).unwrap_or(i64::MAX));
        let stats = cache.stats();
        let now = [
            stats.local_hits.load(Ordering::Relaxed),
            stats.redis_hits.load(Ordering::Relaxed),
            stats.loads.load(Ordering::Relaxed),
            dedup.round_trips() + stats.redis_round_trips.load(Ordering::Relaxed),
        ];
        metrics.cache("local", now[0].saturating_sub(seen[0]));
        metrics.cache("redis", now[1].saturating_sub(seen[1]));
        metrics.cache("database", now[2].saturating_sub(seen[2]));
        metrics.redis_round_trips.inc_by(now[3].saturating_sub(seen[3]));
        seen = now;
    }
}

pub(super) async fn heartbeat(dedup: Dedup, stop: CancellationToken) {
    let mut tick = tokio::time::interval(dedup.heartbeat_interval());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = dedup.heartbeat().await {
                    tracing::warn!(error = %e, "liveness heartbeat failed");
                }
            }
        }
    }
}

/// Keeps `chat_worker_responder_paused`, `_down` and `_circuit_opened` true
/// to the responder's gate.
pub(super) async fn watch_pause(
    pause: std::sync::Arc<crate::respond::Pause>,
    metrics: std::sync::Arc<crate::telemetry::metrics::Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut opened = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        metrics.responder_paused.set(i64::from(pause.is_paused()));
        metrics.responder_down.set(i64::from(pause.is_down()));
        let now = pause.opened();
        metrics.responder_circuit_opened.inc_by(now.saturating_sub(opened));
        opened = now;
    }
}

/// Loads every active tenant into both cache tiers, a few at a time, while the
/// worker already consumes (a miss meanwhile just loads that tenant itself).
pub(super) async fn warm(db: crate::store::Db, cache: CatalogCache) {
    let started = Instant::now();
    let tenants = match crate::store::catalog::active_tenants(&db).await {
        Ok(tenants) => tenants,
        Err(e) => {
            tracing::warn!(error = %e, "cache warming skipped");
            return;
        }
    };
    let count = tenants.len();
    let results: Vec<_> = futures_util::stream::iter(tenants)
        .map(|tenant| {
            let cache = cache.clone();
            async move { cache.warm(tenant).await }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    tracing::info!(tenants = count, failed, ms = started.elapsed().as_millis() as u64, "cache warmed");
}
