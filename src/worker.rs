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

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Health};
use crate::broker::{Broker, Incoming};
use crate::catalog::{CatalogCache, invalidation};
use crate::config::Config;
use crate::config::ProducerContext;
use crate::dedup::{Dedup, sweeper};
use crate::outcome::Disposition;
use crate::outcome::{Outcome, RetryPolicy};
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::respond;
use crate::services::{self, Unreachable};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::spans;
use tracing::Instrument;

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
}

impl Tally {
    /// Deliveries settled so far, whatever their outcome.
    pub fn total(&self) -> u64 {
        [&self.processed, &self.duplicate, &self.rejected, &self.failed, &self.deferred]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Processed { .. } => &self.processed,
            Outcome::Duplicate { .. } => &self.duplicate,
            Outcome::Rejected(_) => &self.rejected,
            Outcome::Failed { .. } => &self.failed,
            Outcome::Deferred { .. } => &self.deferred,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs until `shutdown` is cancelled. Returns an error only when the services
/// cannot be reached at start; after that, broker outages are ridden out.
/// `tally` counts outcomes as they happen (tests and the binary read it).
pub async fn run(config: Config, shutdown: CancellationToken, tally: Arc<Tally>) -> Result<(), RunError> {
    let worker_id = config.worker_id();
    let deadline = Instant::now() + config.startup_timeout();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health {
        consuming: tally.consuming.clone(),
        publishing: tally.publishing.clone(),
        ..Health::default()
    });
    let pool =
        services::postgres(&config, deadline, Some(Duration::from_secs(config.worker.message_deadline_secs)))
            .await?;
    let redis = services::redis(&config, deadline).await?;
    let mut broker = services::rabbitmq_reporting(&config, deadline, tally.publishing.clone()).await?;
    if config.amqp.declare_topology {
        broker.declare(config.worker.max_attempts).await.map_err(RunError::Topology)?;
    }

    let responder = respond::from_config(&config.responder, config.tracing.record_message_content)
        .map_err(RunError::Responder)?;
    let admin = tokio::net::TcpListener::bind(&config.admin.addr)
        .await
        .map_err(|error| RunError::Admin { addr: config.admin.addr.clone(), error })?;
    if let Ok(addr) = admin.local_addr() {
        let _ = tally.admin_addr.set(addr);
        tracing::info!(%addr, "admin endpoint: /metrics /healthz /readyz");
    }
    let redis_probe = redis.clone();
    let dedup = Dedup::new(redis.clone(), &config.redis, &worker_id);
    let cache = CatalogCache::new(pool.clone(), redis, &config.redis.key_prefix, &config.cache);
    let background = Background::default();
    background.spawn(
        "admin endpoint",
        admin::serve(admin, (&config.admin).into(), metrics.clone(), health.clone(), background.stop_token()),
    );
    background.spawn(
        "health checks",
        watch_health(
            pool.clone(),
            redis_probe,
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
        invalidation::listen(pool.clone(), cache.clone(), background.stop_token(), synced_tx),
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
        background.spawn("cache warming", warm(pool.clone(), cache.clone()));
    }
    if let Err(e) = dedup.heartbeat().await {
        tracing::warn!(error = %e, "first liveness heartbeat failed; will keep trying");
    }

    let writer = crate::store::Writer::start(
        pool.clone(),
        crate::store::WriterSettings {
            max_batch: config.database.commit_batch_max,
            in_flight: config.database.commits_in_flight,
        },
        crate::store::WriterMetrics {
            batch_sizes: metrics.commit_batch_size.clone(),
            split_batches: metrics.commit_batches_split.clone(),
        },
    );
    let reader = crate::store::ContextReader::start(
        pool.clone(),
        config.database.reads_in_flight,
        config.context.history_limit,
    );
    let settings = PipelineSettings {
        key_prefix: config.redis.key_prefix.clone(),
        reference_ttl: Duration::from_secs(config.context.reference_ttl_secs),
        deadline: Duration::from_secs(config.worker.message_deadline_secs),
        crash_at: std::env::var("WORKER_TEST_CRASH_AT").ok(),
    };
    tracing::info!(%worker_id, concurrency = config.worker.concurrency, prefetch = config.amqp.prefetch, "worker started");
    loop {
        let pipeline = Pipeline {
            pool: pool.clone(),
            reader: reader.clone(),
            writer: writer.clone(),
            dedup: dedup.clone(),
            cache: cache.clone(),
            responder: responder.clone(),
            publisher: broker.publisher(),
            settings: settings.clone(),
            metrics: metrics.clone(),
        };
        let pipeline = Arc::new(pipeline);
        let session = Session { config: &config, worker_id: &worker_id, pipeline, tally: tally.clone() };
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

/// The tasks beside message handling: admin endpoint, health checks, heartbeat,
/// cache invalidation listener, lock sweeper, cache warming. Each is given the
/// stop token to return at its own pace, and is also dropped wherever it waits
/// when the token is cancelled: some wait on PostgreSQL with no deadline (the
/// listener's resubscription and resync, warming's loads, which a lock or a
/// stalled connection holds up forever), and none may hold up shutdown.
#[derive(Default)]
struct Background {
    tracker: TaskTracker,
    stop: CancellationToken,
    /// Names of the tasks not finished yet, to say which ones overran.
    running: Arc<Mutex<Vec<&'static str>>>,
}

impl Background {
    fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
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
    async fn stop_all(&self) {
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

struct Session<'a> {
    config: &'a Config,
    worker_id: &'a str,
    /// Shared by every message's task (cloning the pipeline itself would copy its
    /// settings' strings for each message).
    pipeline: Arc<Pipeline>,
    tally: Arc<Tally>,
}

impl Session<'_> {
    /// Consumes until shutdown or until the broker connection is lost.
    async fn consume(&self, broker: &Broker, shutdown: &CancellationToken) {
        let mut consumer = match broker.consume(self.worker_id).await {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::error!(error = %e, "could not start consuming");
                return;
            }
        };
        self.tally.consuming.store(true, Ordering::Relaxed);
        let session_over = CancellationToken::new();
        let poller = broker.connection.create_channel().await.ok().map(|channel| {
            tokio::spawn(poll_queue(
                broker.connection.clone(),
                channel,
                self.config.amqp.inbound_queue.clone(),
                Duration::from_secs(self.config.admin.queue_poll_secs),
                self.pipeline.metrics.clone(),
                session_over.clone(),
            ))
        });
        let permits = Arc::new(Semaphore::new(self.config.worker.concurrency));
        let tasks = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let policy = self.config.retry_policy();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            };
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = consumer.next() => next,
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("rabbitmq cancelled the consumer; reconnecting");
                    break;
                }
            };
            let pipeline = self.pipeline.clone();
            let tally = self.tally.clone();
            let hard_stop = hard_stop.clone();
            let incoming = Incoming::new(delivery, &self.config.amqp.inbound_exchange);
            let span = spans::consumer(
                &spans::DeliveryInfo {
                    queue: &self.config.amqp.inbound_queue,
                    message_id: incoming.message_id(),
                    delivery_tag: incoming.delivery_tag(),
                    body_size: incoming.body().len(),
                    headers: incoming.headers(),
                },
                self.config.tracing.producer_context == ProducerContext::Link,
            );
            tasks.spawn(
                async move {
                    let _permit = permit;
                    tokio::select! {
                        _ = hard_stop.cancelled() => {}
                        _ = handle(&pipeline, incoming, &policy, &tally) => {}
                    }
                }
                .instrument(span),
            );
        }

        if shutdown.is_cancelled() {
            match tokio::time::timeout(CLOSING_STEP_TIMEOUT, broker.stop_consuming(self.worker_id)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not cancel the consumer"),
                Err(_) => tracing::warn!("rabbitmq did not confirm cancelling the consumer; going on"),
            }
        }
        self.tally.consuming.store(false, Ordering::Relaxed);
        session_over.cancel();
        // The poller's channel must be closed before the connection is: lapin
        // closes a dropped channel in the background, and when that close runs
        // while the connection is closing it fails, marks the connection broken
        // and `Broker::close` never returns (the worker once hung so after SIGTERM).
        if let Some(poller) = poller
            && tokio::time::timeout(CLOSING_STEP_TIMEOUT, poller).await.is_err()
        {
            tracing::warn!("the queue poller did not close its channel in time; going on");
        }
        tasks.close();
        let grace = Duration::from_secs(self.config.worker.shutdown_timeout_secs);
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tasks.len(),
                "in-flight messages did not finish in time; handing them back"
            );
            hard_stop.cancel();
            tasks.wait().await;
        }
    }
}

/// One delivery, start to settle. A panic while processing fails that message
/// (retry, then dead letter), never the process.
async fn handle(pipeline: &Pipeline, incoming: Incoming, policy: &RetryPolicy, tally: &Tally) {
    let metrics = &pipeline.metrics;
    metrics.in_flight.inc();
    let attempt = incoming.attempt();
    let outcome = AssertUnwindSafe(pipeline.process(&incoming))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Outcome::Failed { fingerprint: None, error: "processing panicked".into() });
    tally.count(&outcome);
    metrics.outcome(&outcome);
    tracing::Span::current().record("chat.outcome", outcome.label());
    log_outcome(&outcome, &incoming, attempt);
    let disposition = outcome.disposition(attempt, policy, fastrand::f64());
    match &disposition {
        Disposition::Retry { .. } => {
            metrics.retries.inc();
        }
        Disposition::DeadLetter { kind, .. } => metrics.dead_letter(kind),
        Disposition::Ack | Disposition::Defer { .. } => {}
    }
    let settling = Instant::now();
    let settled = incoming.settle(&pipeline.publisher, &disposition).instrument(spans::stage("ack")).await;
    if let Err(e) = settled {
        tracing::warn!(error = %e, outcome = outcome.label(), "could not settle the delivery; the broker will redeliver it");
    }
    metrics.stage("ack", settling);
    metrics.in_flight.dec();
}

/// Every 2 s: whether Redis and PostgreSQL answer (for `/readyz`), and the
/// figures kept elsewhere (pool, cache tiers, Redis round trips) into the metrics.
async fn watch_health(
    pool: sqlx::PgPool,
    mut redis: redis::aio::ConnectionManager,
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
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut redis).await;
        health.redis.store(pong.is_ok(), Ordering::Relaxed);
        let db = tokio::time::timeout(Duration::from_secs(2), crate::store::ping(&pool)).await;
        health.database.store(matches!(db, Ok(Ok(()))), Ordering::Relaxed);
        metrics.db_pool_connections.set(i64::from(pool.size()));
        metrics.db_pool_idle.set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
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

/// Reads the inbound queue's depth and consumer count from the broker. A
/// channel the broker closes is replaced (the depth is what autoscaling reads);
/// the loop ends with the session, or when the connection is gone.
async fn poll_queue(
    connection: Arc<lapin::Connection>,
    mut channel: lapin::Channel,
    queue: String,
    every: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        match channel.queue_declare(queue.as_str().into(), options, Default::default()).await {
            Ok(q) => {
                metrics.queue_depth.set(i64::from(q.message_count()));
                metrics.queue_consumers.set(i64::from(q.consumer_count()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "queue poll failed");
                if !connection.status().connected() {
                    break;
                }
                match connection.create_channel().await {
                    Ok(fresh) => channel = fresh,
                    Err(_) => break,
                }
            }
        }
    }
    // Closed here rather than when dropped (see `Session::consume`); this fails
    // at once, harmlessly, when the channel or connection is already gone.
    let _ = channel.close(200, "session over".into()).await;
}

fn log_outcome(outcome: &Outcome, incoming: &Incoming, attempt: u32) {
    let message_id = incoming.message_id().unwrap_or("-");
    match outcome {
        Outcome::Processed { fingerprint, replayed } => {
            tracing::debug!(%fingerprint, replayed, "processed");
        }
        Outcome::Duplicate { fingerprint, of } => tracing::debug!(%fingerprint, ?of, "duplicate"),
        Outcome::Deferred { fingerprint, worker_id } => {
            tracing::info!(%fingerprint, holder = %worker_id, "redelivered while another worker holds it; looking again later");
        }
        Outcome::Rejected(r) => {
            tracing::warn!(message_id, kind = r.kind.as_str(), error = %r.error, "rejected");
        }
        Outcome::Failed { fingerprint, error } => {
            let fingerprint = fingerprint.as_ref().map(|f| f.as_str()).unwrap_or("-");
            tracing::warn!(message_id, fingerprint, attempt, %error, "failed");
        }
    }
}

async fn heartbeat(dedup: Dedup, stop: CancellationToken) {
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

/// Loads every active tenant into both cache tiers, a few at a time, while the
/// worker already consumes (a miss meanwhile just loads that tenant itself).
async fn warm(pool: sqlx::PgPool, cache: CatalogCache) {
    let started = Instant::now();
    let tenants = match crate::store::catalog::active_tenants(&pool).await {
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
