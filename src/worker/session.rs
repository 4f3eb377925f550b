//! One consume session on one broker connection: read deliveries into the
//! read-ahead ([`super::fair`]), give each free slot to the next tenant in
//! turn, run each delivery in its own task, and on shutdown or a lost
//! connection stop taking more and let the ones in flight finish (or hand
//! them back).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::intake::Intake;
use super::{CLOSING_STEP_TIMEOUT, Tally};
use crate::broker::{Broker, Disposition, Incoming, Next};
use crate::config::Config;
use crate::keys::ConversationKeys;
use crate::model::Fingerprint;
use crate::outcome::event::Settled;
use crate::outcome::{Failure, Outcome, RetryPolicy};
use crate::pipeline::{Pipeline, Slot};
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
        let tasks = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let mut intake = Intake::new(self, tasks.clone(), hard_stop.clone());
        let mut gate = GateState { suspended: false, probe_pending: false, down_before: down };
        let metrics = self.pipeline.metrics.clone();
        loop {
            if let Err(e) = deliveries.restart().await {
                tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                break;
            }
            let (down, paused) = self.gate.as_ref().map_or((false, false), |g| (g.is_down(), g.is_paused()));
            // While the circuit is open, whatever was read goes out at once,
            // caps or not: the pipeline parks it, back to the queue. While the
            // responder asks to slow down, nothing goes out (it would only be parked).
            if down || !paused {
                intake.dispatch(down);
            }
            metrics.read_ahead.set(i64::try_from(intake.fair.waiting()).unwrap_or(i64::MAX));
            let full = intake.full();
            let prefetch = intake.prefetch();
            if let Err(e) = gate.keep(&mut deliveries, down, full, prefetch).await {
                tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                break;
            }
            // Held deliveries are still read while the circuit is open (they
            // are parked); nothing new while the responder asks to slow down.
            let reading = down || !paused;
            let waiting = intake.fair.waiting() > 0;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = intake.permits.clone().acquire_owned(), if intake.permit.is_none() && waiting => {
                    match permit {
                        Ok(permit) => intake.permit = Some(permit),
                        Err(_) => break,
                    }
                }
                Some((tenant, cap)) = intake.caps_rx.recv() => intake.cap_read(tenant, cap),
                () = intake.freed.notified(), if waiting => {}
                next = deliveries.next(), if reading => match next {
                    Ok(Next::Delivery(incoming)) => {
                        gate.probe_pending = false;
                        intake.read(incoming);
                    }
                    Ok(Next::Restart) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                        break;
                    }
                    Ok(Next::Cancelled) => {
                        tracing::warn!("rabbitmq cancelled the consumer; reconnecting");
                        break;
                    }
                },
                () = room(self.gate.as_deref()), if gate.suspended && !full || paused => {
                    if gate.suspended && !full {
                        let resumed = deliveries.prefetch(if down { 1 } else { prefetch }).await;
                        if let Err(e) = resumed {
                            tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                            break;
                        }
                        gate.suspended = false;
                        gate.probe_pending = down;
                    }
                }
                // Looked at again now and then: the cancel's confirmation, and
                // what the consumer held with it, may come after the circuit
                // opened; and what waited too long in the read-ahead is deferred.
                () = tokio::time::sleep(crate::respond::throttle::PROBE_WAIT), if down || paused || waiting => {
                    intake.defer_old();
                }
            }
        }

        if shutdown.is_cancelled() {
            match tokio::time::timeout(CLOSING_STEP_TIMEOUT, deliveries.suspend()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not cancel the consumer"),
                Err(_) => tracing::warn!("rabbitmq did not confirm cancelling the consumer; going on"),
            }
        }
        // What waits in the read-ahead is not answered here: the broker has
        // it back once the channel closes (each one keeps its place in line).
        let unanswered = intake.fair.drain().len();
        if unanswered > 0 {
            tracing::info!(deliveries = unanswered, "handing the read-ahead back to the broker");
        }
        drop(intake);
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

/// Waits until the responder's gate lets another delivery be taken (never, without a gate).
async fn room(gate: Option<&crate::respond::Pause>) {
    match gate {
        Some(gate) => gate.room().await,
        None => std::future::pending().await,
    }
}

/// The consumer, as the responder's gate wants it. While the circuit is
/// open the consumer is stopped at the broker, so that new messages wait in
/// `worker.inbound` (its depth shows them, and a worker that can reach the
/// responder takes them), and the deliveries it had already pushed are read
/// and parked, back to the queue too. A probe's delivery is taken with a
/// prefetch of one, and the configured prefetch comes back with the circuit closed.
struct GateState {
    /// Stopped at the broker because the circuit is open.
    suspended: bool,
    /// Consuming again (prefetch 1) for a probe: stopped again once one delivery is read.
    probe_pending: bool,
    down_before: bool,
}

impl GateState {
    /// Stops or starts the consumer as the circuit (`down`) and the
    /// read-ahead (`full`: over its bytes) want it.
    async fn keep(
        &mut self,
        deliveries: &mut crate::broker::Deliveries,
        down: bool,
        full: bool,
        prefetch: u16,
    ) -> Result<(), crate::broker::BrokerError> {
        if (down && !self.probe_pending || full) && !self.suspended {
            deliveries.suspend().await?;
            self.suspended = true;
        }
        if self.suspended && !down && !full {
            deliveries.prefetch(prefetch).await?;
            self.suspended = false;
        } else if !down && !self.suspended && (self.down_before || deliveries.wanted() != prefetch) {
            // Back from a probe, or the bodies' size moved the prefetch (a
            // consumer of the new prefetch follows once the current one has
            // handed out what it holds).
            deliveries.prefetch(prefetch).await?;
        }
        self.down_before = down;
        Ok(())
    }
}

/// One delivery, start to settle. A panic while processing fails that message
/// (retry, then dead letter), never the process. `slot` is held until the
/// delivery is settled, except while it waits for its conversation's turn.
pub(super) async fn handle(
    pipeline: &Pipeline,
    incoming: Incoming,
    mut slot: Slot,
    joined: Option<(ConversationKeys, Fingerprint)>,
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
    // A place in line taken as it was read, by a message that never reached
    // its claim and will not come back (dead-lettered first), is given up.
    if let Some((line, fp)) = &joined
        && !slot.stood_in_line()
        && !matches!(disposition, Disposition::Retry { .. } | Disposition::Defer { .. })
        && let Err(e) = pipeline.dedup.unjoin(line, fp).await
    {
        tracing::warn!(error = %e, "could not give up the place in line of a message that ends unclaimed");
    }
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
