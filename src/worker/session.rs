//! One consume session on one broker connection: take a permit, take a
//! delivery, hand it to its own task, and on shutdown or a lost connection stop
//! taking more and let the ones in flight finish (or hand them back).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use std::collections::HashMap;

use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{CLOSING_STEP_TIMEOUT, Tally};
use crate::broker::{Broker, Incoming};
use crate::config::{Config, ProducerContext};
use crate::outcome::event::Settled;
use crate::outcome::{Failure, Outcome, RetryPolicy};
use crate::pipeline::{Pipeline, Slot, Waiting};
use crate::telemetry::spans;

pub(super) struct Session<'a> {
    pub(super) config: &'a Config,
    pub(super) worker_id: &'a str,
    /// Shared by every message's task (cloning the pipeline itself would copy its
    /// settings' strings for each message).
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) tally: Arc<Tally>,
    /// The pipeline's `stopping`: cancelled once this session takes no more
    /// deliveries, so that the ones waiting for their turn are parked at once
    /// (or, with the connection gone, given up: the broker has them back).
    pub(super) session_over: CancellationToken,
    /// A remote responder's gate: while it is closed (asked to slow down, or
    /// down), no new delivery is taken; they wait in the queue.
    pub(super) gate: Option<Arc<crate::respond::Pause>>,
}

impl Session<'_> {
    /// Consumes until shutdown or until the broker connection is lost.
    pub(super) async fn consume(&self, broker: &Broker, shutdown: &CancellationToken) {
        // A circuit still open from the last session: start as its probe would.
        let down = self.gate.as_ref().is_some_and(|gate| gate.is_down());
        let prefetch = if down { 1 } else { self.config.amqp.prefetch };
        let mut deliveries = match broker.consume(self.worker_id, prefetch).await {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::error!(error = %e, "could not start consuming");
                return;
            }
        };
        self.tally.consuming.store(true, Ordering::Relaxed);
        let session_over = CancellationToken::new();
        let poller = broker
            .watch_depth(
                &self.config.amqp.inbound_queue,
                Duration::from_secs(self.config.admin.queue_poll_secs),
                self.pipeline.metrics.clone(),
                session_over.clone(),
            )
            .await;
        let permits = Arc::new(Semaphore::new(self.config.worker.concurrency));
        let tasks = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let policy = self.config.retry_policy();
        let mut order = LocalOrder::default();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            };
            let through = match &self.gate {
                Some(gate) => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    through = through_gate(gate, &mut deliveries, self.config.amqp.prefetch) => through,
                },
                None => Ok(None),
            };
            let delivery = match through {
                Ok(Some(held)) => Ok(Some(held)),
                Ok(None) => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = deliveries.next() => next,
                },
                Err(e) => Err(e),
            };
            let incoming = match delivery {
                Ok(Some(incoming)) => incoming,
                Err(e) => {
                    tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                    break;
                }
                Ok(None) => {
                    tracing::warn!("rabbitmq cancelled the consumer; reconnecting");
                    break;
                }
            };
            let pipeline = self.pipeline.clone();
            let tally = self.tally.clone();
            let hard_stop = hard_stop.clone();
            let span = spans::consumer(
                &self.config.amqp.inbound_queue,
                &incoming.envelope(),
                incoming.delivery_tag(),
                self.config.tracing.producer_context == ProducerContext::Link,
            );
            let slot = order.place(Slot::held(permits.clone(), permit), incoming.body());
            tasks.spawn(
                async move {
                    tokio::select! {
                        _ = hard_stop.cancelled() => {}
                        _ = handle(&pipeline, incoming, slot, &policy, &tally) => {}
                    }
                }
                .instrument(span),
            );
        }

        if shutdown.is_cancelled() {
            match tokio::time::timeout(CLOSING_STEP_TIMEOUT, deliveries.suspend()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not cancel the consumer"),
                Err(_) => tracing::warn!("rabbitmq did not confirm cancelling the consumer; going on"),
            }
        }
        self.tally.consuming.store(false, Ordering::Relaxed);
        session_over.cancel();
        self.session_over.cancel();
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

/// Waits until the responder's gate lets another delivery be taken. While
/// its circuit is open the consumer is stopped at the broker, so that new
/// messages wait in `worker.inbound` (its depth shows them, and a worker that
/// can reach the responder takes them), and the deliveries it had already
/// pushed are handed out at once (`Some`): the pipeline parks them, so they
/// go back to the queue too. A probe's delivery is taken with a prefetch of
/// one, and the configured prefetch comes back with the circuit closed.
async fn through_gate(
    gate: &crate::respond::Pause,
    deliveries: &mut crate::broker::Deliveries,
    prefetch: u16,
) -> Result<Option<crate::broker::Incoming>, crate::broker::BrokerError> {
    loop {
        if gate.is_down() {
            deliveries.suspend().await?;
            if let Some(held) = deliveries.held()? {
                return Ok(Some(held));
            }
        }
        // Looked at again now and then: the cancel's confirmation, and what
        // the consumer held with it, may come after the circuit opened.
        tokio::select! {
            () = gate.room() => break,
            () = tokio::time::sleep(crate::respond::throttle::PROBE_WAIT) => {}
        }
    }
    deliveries.prefetch(if gate.is_down() { 1 } else { prefetch }).await?;
    Ok(None)
}

/// The last delivery read of each conversation, so that the next one of it
/// takes its place in line after it (see [`Slot::ordered`]).
#[derive(Default)]
struct LocalOrder {
    last: HashMap<u64, (oneshot::Receiver<()>, Arc<Waiting>)>,
}

impl LocalOrder {
    /// Past this many conversations, the ones whose last delivery is in line
    /// already are forgotten.
    const PRUNE_AT: usize = 4096;

    fn place(&mut self, slot: Slot, body: &[u8]) -> Slot {
        let Some(conversation) = crate::decode::conversation_key(body) else { return slot };
        if self.last.len() >= Self::PRUNE_AT {
            self.last.retain(|_, (rx, _)| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        let (tx, rx) = oneshot::channel();
        let own = Arc::new(Waiting::default());
        let after = self.last.insert(conversation, (rx, own.clone()));
        slot.ordered(after, tx, own)
    }
}

/// One delivery, start to settle. A panic while processing fails that message
/// (retry, then dead letter), never the process. `slot` is held until the
/// delivery is settled, except while it waits for its conversation's turn.
async fn handle(
    pipeline: &Pipeline,
    incoming: Incoming,
    mut slot: Slot,
    policy: &RetryPolicy,
    tally: &Tally,
) {
    let metrics = &pipeline.metrics;
    metrics.in_flight.inc();
    let envelope = incoming.envelope();
    let outcome = AssertUnwindSafe(pipeline.process_in(&envelope, &mut slot))
        .catch_unwind()
        .await
        .unwrap_or(Outcome::Failed { fingerprint: None, error: Failure::Panicked });
    let disposition = outcome.disposition(envelope.attempt, policy, fastrand::f64());
    tally.count(&outcome);
    let settled = Settled {
        outcome: &outcome,
        disposition: &disposition,
        attempt: envelope.attempt,
        message_id: envelope.message_id,
    };
    settled.emit(metrics);
    let settling = Instant::now();
    let label = outcome.label();
    let result = incoming.settle(&pipeline.publisher, &disposition).instrument(spans::stage("ack")).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, outcome = label, "could not settle the delivery; the broker will redeliver it");
    }
    metrics.stage("ack", settling);
    metrics.in_flight.dec();
}
