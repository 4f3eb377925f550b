//! One consume session on one broker connection: read deliveries into the
//! read-ahead ([`super::fair`]), give each free slot to the next tenant in
//! turn, run each delivery in its own task, and on shutdown or a lost
//! connection stop taking more and let the ones in flight finish (or hand
//! them back).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use super::fair::Fair;
use super::{CLOSING_STEP_TIMEOUT, Tally};
use crate::broker::Disposition;
use crate::broker::{Broker, Incoming, Next};
use crate::config::{Config, ProducerContext};
use crate::keys::ConversationKeys;
use crate::model::Fingerprint;
use crate::outcome::event::Settled;
use crate::outcome::{Failure, Outcome, RetryPolicy};
use crate::pipeline::{Order, Pipeline, Slot, Waiting};
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
        let mut intake = Intake::new(self);
        let mut gate = GateState { suspended: false, probe_pending: false, down_before: down };
        loop {
            let (down, paused) = self.gate.as_ref().map_or((false, false), |g| (g.is_down(), g.is_paused()));
            if let Err(e) = deliveries.restart().await {
                tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                break;
            }
            let full = intake.full();
            if let Err(e) = gate.keep(&mut deliveries, down, full, self.config.amqp.prefetch).await {
                tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                break;
            }
            // While the circuit is open, whatever was read goes out at once,
            // caps or not: the pipeline parks it, back to the queue.
            intake.dispatch(down, &tasks, &hard_stop);
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
                read = intake.joins.next(), if !intake.joins.is_empty() => {
                    if let Some(read) = read {
                        intake.fair.push(read.tenant, read.cap, read);
                    }
                }
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
                    if gate.suspended {
                        let resumed = deliveries.prefetch(if down { 1 } else { self.config.amqp.prefetch }).await;
                        if let Err(e) = resumed {
                            tracing::error!(error = %e, "rabbitmq connection lost; reconnecting");
                            break;
                        }
                        gate.suspended = false;
                        gate.probe_pending = down;
                    }
                }
                // Looked at again now and then: the cancel's confirmation, and
                // what the consumer held with it, may come after the circuit opened.
                () = tokio::time::sleep(crate::respond::throttle::PROBE_WAIT), if down || paused => {}
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
        let unanswered = intake.fair.drain().len() + intake.joins.len();
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
        } else if self.down_before && !down && !self.suspended {
            deliveries.prefetch(prefetch).await?;
        }
        self.down_before = down;
        Ok(())
    }
}

/// A delivery read off the broker, in the read-ahead.
struct Read {
    incoming: Incoming,
    tenant: Uuid,
    /// The most slots its tenant may hold.
    cap: usize,
    order: Option<Order>,
    /// Its place in its conversation's line, taken as it was read.
    joined: Option<(ConversationKeys, Fingerprint)>,
}

type Joining = std::pin::Pin<Box<dyn std::future::Future<Output = Read> + Send>>;

/// What the consume loop reads into, and hands slots out from.
struct Intake<'s> {
    session: &'s Session<'s>,
    permits: Arc<Semaphore>,
    /// A concurrency slot taken, not yet given to a delivery.
    permit: Option<OwnedSemaphorePermit>,
    fair: Fair<Read>,
    freed: Arc<tokio::sync::Notify>,
    /// Deliveries taking their place in line, in the order read.
    joins: FuturesOrdered<Joining>,
    order: LocalOrder,
    /// Tenants' caps as last read from their settings, and since when.
    caps: HashMap<Uuid, usize>,
    caps_since: Instant,
    policy: RetryPolicy,
    /// Bytes of the bodies read and not yet given a slot, and the most it may be.
    bytes: usize,
    max_bytes: usize,
    /// Stopped reading at `max_bytes`: read again below half of it.
    filled: bool,
}

/// How long a tenant's cap read from its settings is used before it is read again.
const CAPS_FOR: Duration = Duration::from_secs(30);

impl<'s> Intake<'s> {
    fn new(session: &'s Session<'s>) -> Self {
        let fair = Fair::default();
        let freed = fair.freed();
        Self {
            session,
            permits: Arc::new(Semaphore::new(session.config.worker.concurrency)),
            permit: None,
            fair,
            freed,
            joins: FuturesOrdered::new(),
            order: LocalOrder::default(),
            caps: HashMap::new(),
            caps_since: Instant::now(),
            policy: session.config.retry_policy(),
            bytes: 0,
            max_bytes: session.config.amqp.read_ahead_bytes(),
            filled: false,
        }
    }

    /// Whether the read-ahead holds all it may (until half of it is answered).
    fn full(&mut self) -> bool {
        if self.filled {
            self.filled = self.bytes > self.max_bytes / 2;
        } else if self.bytes > self.max_bytes {
            self.filled = true;
            tracing::info!(
                bytes = self.bytes,
                "the read-ahead is full; consuming again once half of it is answered"
            );
        }
        self.filled
    }

    /// Takes a delivery in: straight to a slot when its tenant has room and
    /// nothing waits before it; otherwise into the read-ahead, once it has
    /// taken its place in its conversation's line.
    fn read(&mut self, incoming: Incoming) {
        let pipeline = &self.session.pipeline;
        let envelope = incoming.envelope();
        let intake_us = envelope.intake_us;
        let peeked = crate::decode::decode(envelope.body)
            .ok()
            .filter(|inbound| crate::decode::check_route(inbound, envelope.routing_key).is_ok());
        let tenant = peeked.as_ref().map_or(Uuid::nil(), |inbound| inbound.tenant_id);
        let line =
            peeked.map(|inbound| (pipeline.dedup.keys().conversation(&inbound), inbound.fingerprint()));
        let order = self.order.place(incoming.body());
        self.bytes += incoming.body().len();
        if self.caps_since.elapsed() >= CAPS_FOR {
            self.caps.clear();
            self.caps_since = Instant::now();
        }
        let known = self.caps.get(&tenant).copied();
        let free = self.permit.is_some() || self.permits.available_permits() > 0;
        if let Some(cap) = known
            && free
            && self.joins.is_empty()
            && self.fair.has_room(tenant, cap)
        {
            self.fair.push(tenant, cap, Read { incoming, tenant, cap, order, joined: None });
            return;
        }
        let pipeline = pipeline.clone();
        let worker = &self.session.config.worker;
        let (default_cap, concurrency) = (worker.tenant_cap(), worker.concurrency);
        self.joins.push_back(Box::pin(async move {
            let cap = match known {
                Some(cap) => cap,
                None => tenant_cap(&pipeline, tenant, default_cap, concurrency).await,
            };
            let joined = match line {
                Some((line, fp)) => match pipeline.dedup.join(&line, &fp, intake_us).await {
                    Ok(true) => Some((line, fp)),
                    Ok(false) => None,
                    // The claim meets Redis's trouble, and says what it does about it.
                    Err(e) => {
                        tracing::debug!(error = %e, "could not take a place in line as the delivery was read");
                        None
                    }
                },
                None => None,
            };
            Read { incoming, tenant, cap, order, joined }
        }));
    }

    /// Gives every free slot to the next delivery in turn.
    fn dispatch(&mut self, ignore_caps: bool, tasks: &TaskTracker, hard_stop: &CancellationToken) {
        loop {
            if self.permit.is_none() {
                self.permit = self.permits.clone().try_acquire_owned().ok();
            }
            let Some(permit) = self.permit.take() else { return };
            let Some((read, share)) = self.fair.pop(ignore_caps) else {
                self.permit = Some(permit);
                return;
            };
            self.caps.insert(read.tenant, read.cap);
            self.bytes = self.bytes.saturating_sub(read.incoming.body().len());
            let mut slot = Slot::held(self.permits.clone(), permit).sharing(Box::new(share));
            if let Some(order) = read.order {
                slot = slot.ordered(order);
            }
            let session = self.session;
            let (pipeline, tally, policy) = (session.pipeline.clone(), session.tally.clone(), self.policy);
            let hard_stop = hard_stop.clone();
            let span = spans::consumer(
                &session.config.amqp.inbound_queue,
                &read.incoming.envelope(),
                read.incoming.delivery_tag(),
                session.config.tracing.producer_context == ProducerContext::Link,
            );
            let (incoming, joined) = (read.incoming, read.joined);
            tasks.spawn(
                async move {
                    tokio::select! {
                        _ = hard_stop.cancelled() => {}
                        _ = handle(&pipeline, incoming, slot, joined, &policy, &tally) => {}
                    }
                }
                .instrument(span),
            );
        }
    }
}

/// The slots `tenant` may hold, as its settings say (the default when they
/// do not, or cannot be read now: the pipeline says why, with the message).
async fn tenant_cap(pipeline: &Pipeline, tenant: Uuid, default: usize, concurrency: usize) -> usize {
    if tenant.is_nil() {
        return default;
    }
    let Ok(profile) = pipeline.cache.profile(tenant).await else { return default };
    let Some(settings) = profile.tenant.as_ref().map(|t| &t.settings) else { return default };
    crate::model::share::tenant_cap(settings, default, concurrency).unwrap_or_else(|problem| {
        tracing::warn!(tenant = %tenant, problem, "ignoring the tenant's max_concurrency setting");
        default
    })
}

/// The last delivery read of each conversation, so that the next one of it
/// takes its place in line after it (see [`Slot::ordered`]).
struct LocalOrder {
    last: HashMap<u64, (oneshot::Receiver<()>, Arc<Waiting>)>,
    prune_at: usize,
}

impl Default for LocalOrder {
    fn default() -> Self {
        Self { last: HashMap::new(), prune_at: Self::PRUNE_AT }
    }
}

impl LocalOrder {
    /// Past this many conversations, the ones whose last delivery is in line
    /// already are forgotten.
    const PRUNE_AT: usize = 4096;

    fn place(&mut self, body: &[u8]) -> Option<Order> {
        let conversation = crate::decode::conversation_key(body)?;
        if self.last.len() >= self.prune_at {
            self.last.retain(|_, (rx, _)| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
            // Conversations still in line all: prune again only once as many more came.
            self.prune_at = (self.last.len() * 2).max(Self::PRUNE_AT);
        }
        let (in_line, rx) = oneshot::channel();
        let own = Arc::new(Waiting::default());
        let after = self.last.insert(conversation, (rx, own.clone()));
        Some(Order { after, in_line, own })
    }
}

/// One delivery, start to settle. A panic while processing fails that message
/// (retry, then dead letter), never the process. `slot` is held until the
/// delivery is settled, except while it waits for its conversation's turn.
async fn handle(
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
