//! `worker run`: wire the services together, consume, and stop cleanly.
//!
//! A semaphore permit is taken before a delivery is pulled, and moved into the
//! task that handles it, so at most `concurrency` messages are worked on at once
//! (and the broker pushes at most `prefetch`). Every task is tracked; shutdown
//! stops consuming, waits up to `shutdown_timeout` for the tasks, and closes the
//! connection, which hands any delivery not yet acked back to the queue.
//!
//! Every step of shutdown is bounded (see [`shutdown_bound`]): a broker, database
//! or Redis that stops answering at the wrong moment costs at most a few seconds,
//! never a worker that lingers after SIGTERM.

mod background;
mod fair;
mod intake;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::admin::{self, Health};
use crate::broker::Broker;
use crate::catalog::{CatalogCache, invalidation};
use crate::config::Config;
use crate::dedup::{Dedup, sweeper};
use crate::outcome::Outcome;
use crate::pipeline::{Parts, Pipeline};
use crate::respond;
use crate::services::{self, Unreachable};
use crate::telemetry::metrics::Metrics;

use background::{Background, heartbeat, warm, watch_health};
use session::Session;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    #[error("declaring the rabbitmq topology: {0}")]
    Topology(crate::broker::BrokerError),
    #[error("listening for catalog changes in postgresql: {0}")]
    Listener(String),
    #[error("admin endpoint at {addr}: {error}")]
    Admin { addr: String, error: std::io::Error },
    #[error("{0}")]
    Responder(crate::respond::RespondError),
}

/// The longest each closing step may take: cancelling the consumer, closing the
/// queue poller's channel, closing the connection, stopping the background
/// tasks, withdrawing the liveness key. Each normally takes milliseconds; a step
/// that overruns is logged and skipped, since nothing is lost by then (every
/// delivery is settled or goes back to the queue when the connection drops).
pub const CLOSING_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest `run` takes to return once shutdown is asked for: the in-flight
/// grace plus every closing step. `worker run` exits anyway past it.
pub fn shutdown_bound(config: &Config) -> Duration {
    Duration::from_secs(config.worker.shutdown_timeout_secs) + 5 * CLOSING_STEP_TIMEOUT
}

/// What the worker has done (deliveries by outcome, logged when it stops) and is
/// doing (`consuming`: connected and taking deliveries, the basis of readiness).
#[derive(Debug, Default)]
pub struct Tally {
    pub consuming: Arc<AtomicBool>,
    /// Whether the last publish could be made (a broker that keeps refusing is not ready).
    pub publishing: Arc<AtomicBool>,
    /// Where `/metrics`, `/healthz` and `/readyz` answer (known once started).
    pub admin_addr: std::sync::OnceLock<std::net::SocketAddr>,
    pub processed: AtomicU64,
    pub duplicate: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    pub deferred: AtomicU64,
    pub coalesced: AtomicU64,
}

impl Tally {
    /// Deliveries settled so far, whatever their outcome.
    pub fn total(&self) -> u64 {
        [&self.processed, &self.duplicate, &self.rejected, &self.failed, &self.deferred, &self.coalesced]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub(super) fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Processed { .. } => &self.processed,
            Outcome::Duplicate { .. } => &self.duplicate,
            Outcome::Rejected(_) => &self.rejected,
            Outcome::Failed { .. } => &self.failed,
            Outcome::Deferred { .. } | Outcome::Waiting { .. } | Outcome::SlowedDown { .. } => &self.deferred,
            Outcome::Coalesced { .. } => &self.coalesced,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs until `shutdown` is cancelled. Returns an error only when the services
/// cannot be reached at start; after that, broker outages are ridden out.
/// `tally` counts outcomes as they happen (tests and the binary read it).
pub async fn run(config: Config, shutdown: CancellationToken, tally: Arc<Tally>) -> Result<(), RunError> {
    let worker_id = config.worker_id();
    warn_if_stops_cut_answers(&config);
    let deadline = Instant::now() + config.startup_timeout();
    let metrics = Arc::new(Metrics::new());
    let remote = config.responder.kind != crate::config::ResponderKind::Builtin;
    // With a fallback, the worker never stops consuming for the responder's
    // sake: what it cannot answer, the fallback does.
    let gated = remote && config.responder.fallback == crate::config::FallbackKind::None;
    let pause = Arc::new(respond::Pause::new(respond::Breaker::from_config(&config.responder)));
    let health = Arc::new(Health {
        consuming: tally.consuming.clone(),
        publishing: tally.publishing.clone(),
        responder: gated.then(|| pause.clone()),
        ..Health::default()
    });
    let db =
        services::postgres(&config, deadline, Some(Duration::from_secs(config.worker.message_deadline_secs)))
            .await?;
    let redis = services::redis(&config, deadline).await?;
    let cache_redis = services::redis_cache(&config, deadline, &redis).await?;
    let mut broker = services::rabbitmq_reporting(&config, deadline, tally.publishing.clone()).await?;
    if config.amqp.declare_topology {
        broker.declare(config.worker.max_attempts).await.map_err(RunError::Topology)?;
    }

    let responder =
        respond::from_config(&config.responder, config.tracing.record_message_content, pause.clone())
            .map_err(RunError::Responder)?;
    let admin = tokio::net::TcpListener::bind(&config.admin.addr)
        .await
        .map_err(|error| RunError::Admin { addr: config.admin.addr.clone(), error })?;
    if let Ok(addr) = admin.local_addr() {
        let _ = tally.admin_addr.set(addr);
        tracing::info!(%addr, "admin endpoint: /metrics /healthz /readyz");
    }
    let dedup = Dedup::new(redis.clone(), &config.redis, &worker_id);
    let cache = CatalogCache::new(db.clone(), cache_redis, &config.redis.key_prefix, &config.cache);
    let background = Background::default();
    background.spawn(
        "admin endpoint",
        admin::serve(admin, (&config.admin).into(), metrics.clone(), health.clone(), background.stop_token()),
    );
    background.spawn(
        "health checks",
        watch_health(
            db.clone(),
            dedup.clone(),
            cache.clone(),
            metrics.clone(),
            health.clone(),
            background.stop_token(),
        ),
    );
    background.spawn("liveness heartbeat", heartbeat(dedup.clone(), background.stop_token()));
    let (synced_tx, synced) = tokio::sync::oneshot::channel();
    background.spawn(
        "cache invalidation listener",
        invalidation::listen(db.clone(), cache.clone(), background.stop_token(), synced_tx),
    );
    // Serve nothing from the cache before the versions are known.
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, synced).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(RunError::Listener(e.to_string())),
        _ => return Err(RunError::Listener("no answer before the startup timeout".into())),
    }
    background.spawn(
        "lock sweeper",
        sweeper::run(
            dedup.clone(),
            Duration::from_secs(config.redis.liveness_ttl_secs),
            metrics.clone(),
            background.stop_token(),
        ),
    );
    if config.cache.warm_at_start {
        background.spawn("cache warming", warm(db.clone(), cache.clone()));
    }
    if let Err(e) = dedup.heartbeat().await {
        tracing::warn!(error = %e, "first liveness heartbeat failed; will keep trying");
    }

    let mut pipeline = Pipeline::assemble(
        &config,
        Parts {
            db: db.clone(),
            dedup: dedup.clone(),
            cache: cache.clone(),
            responder,
            publisher: broker.publisher(),
            metrics: metrics.clone(),
        },
    );
    background.spawn(
        "turn wakes",
        crate::dedup::wakes::listen(
            config.redis.url.clone(),
            dedup.keys().wake_channel(dedup.instance()),
            pipeline.wakes.clone(),
            background.stop_token(),
        ),
    );
    if remote {
        let kind = format!("{:?}", config.responder.kind);
        background.spawn(
            "responder pause gauge",
            background::watch_pause(pause.clone(), metrics.clone(), background.stop_token()),
        );
        background.spawn(
            "responder pauses",
            crate::dedup::pauses::share(
                redis.clone(),
                config.redis.url.clone(),
                dedup.keys().clone(),
                crate::dedup::pauses::endpoint(&kind, &config.responder.url),
                pause.clone(),
                background.stop_token(),
            ),
        );
    }
    tracing::info!(
        %worker_id,
        concurrency = config.worker.concurrency,
        prefetch = config.amqp.prefetch,
        heartbeat_secs = broker.heartbeat_secs(),
        "worker started"
    );
    loop {
        // Each session publishes on its own connection's channel.
        pipeline.publisher = broker.publisher();
        // Deliveries waiting for their turn stop waiting when the session ends.
        let session_over = shutdown.child_token();
        pipeline.stopping = session_over.clone();
        let pipeline = Arc::new(pipeline.clone());
        let session = Session {
            config: &config,
            worker_id: &worker_id,
            pipeline,
            tally: tally.clone(),
            session_over,
            gate: gated.then(|| pause.clone()),
        };
        session.consume(&broker, &shutdown).await;
        if tokio::time::timeout(CLOSING_STEP_TIMEOUT, broker.close()).await.is_err() {
            tracing::warn!("rabbitmq did not confirm closing the connection; dropping it");
        }
        if shutdown.is_cancelled() {
            break;
        }
        match reconnect(&config, &shutdown, &tally).await {
            Some(reconnected) => {
                metrics.reconnect("rabbitmq");
                broker = reconnected;
            }
            None => break,
        }
    }

    background.stop_all().await;
    match tokio::time::timeout(CLOSING_STEP_TIMEOUT, dedup.sign_off()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not withdraw the liveness key; it expires by itself"),
        Err(_) => tracing::warn!("redis did not answer in time; the liveness key expires by itself"),
    }
    Ok(())
}

/// A warning, not a rejection: a short grace is a cost (answers cut at a stop are
/// redone elsewhere, an LLM call paid twice), never a wrong answer, and tests and
/// quick local stops rely on it.
fn warn_if_stops_cut_answers(config: &Config) {
    let w = &config.worker;
    if w.shutdown_timeout_secs < w.message_deadline_secs {
        tracing::warn!(
            shutdown_timeout_secs = w.shutdown_timeout_secs,
            message_deadline_secs = w.message_deadline_secs,
            "worker.shutdown_timeout_secs is below worker.message_deadline_secs: a stop (scale-in, rollout) \
             may cut answers in flight, which are then redone by another worker"
        );
    }
}

/// Reconnects to RabbitMQ with backoff; `None` when shutdown is asked for first.
async fn reconnect(config: &Config, shutdown: &CancellationToken, tally: &Tally) -> Option<Broker> {
    loop {
        let deadline = Instant::now() + Duration::from_secs(30);
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            connected = services::rabbitmq_reporting(config, deadline, tally.publishing.clone()) => match connected {
                Ok(broker) => {
                    tracing::info!("reconnected to rabbitmq");
                    return Some(broker);
                }
                Err(e) => tracing::error!(error = %e, "still reconnecting"),
            },
        }
    }
}
