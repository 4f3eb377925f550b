//! One consume session on one broker connection: take a permit, take a
//! delivery, hand it to its own task, and on shutdown or a lost connection stop
//! taking more and let the ones in flight finish (or hand them back).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{CLOSING_STEP_TIMEOUT, Tally};
use crate::broker::{Broker, Incoming};
use crate::config::{Config, ProducerContext};
use crate::outcome::{Disposition, Outcome, RetryPolicy};
use crate::pipeline::Pipeline;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::spans;

pub(super) struct Session<'a> {
    pub(super) config: &'a Config,
    pub(super) worker_id: &'a str,
    /// Shared by every message's task (cloning the pipeline itself would copy its
    /// settings' strings for each message).
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) tally: Arc<Tally>,
}

impl Session<'_> {
    /// Consumes until shutdown or until the broker connection is lost.
    pub(super) async fn consume(&self, broker: &Broker, shutdown: &CancellationToken) {
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
