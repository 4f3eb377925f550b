//! What the consume loop reads into and hands slots out from: the
//! read-ahead ([`super::fair`]), each delivery's place in its conversation's
//! line taken as it is read, the tenants' caps, and the bound on what the
//! read-ahead may hold (bytes, and time).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use super::fair::{Fair, TenantSlot};
use super::session::{Session, handle};
use crate::broker::{Disposition, Incoming};
use crate::config::ProducerContext;
use crate::keys::ConversationKeys;
use crate::model::{Fingerprint, Inbound};
use crate::outcome::RetryPolicy;
use crate::pipeline::{Order, Pipeline, Slot, Waiting};
use crate::store::Lane;
use crate::telemetry::spans;

/// A delivery read off the broker, in the read-ahead.
pub(super) struct Read {
    incoming: Incoming,
    /// The message as decoded when read (none for one that cannot be: the
    /// pipeline says why).
    inbound: Option<Inbound>,
    order: Option<Order>,
    /// Its conversation's line, and whether it took its place there as it was read.
    joined: Option<Joined>,
    read_at: Instant,
    /// Its consumer span, from the moment it was read (its wait in the read-ahead included).
    span: tracing::Span,
}

/// A place in line taken as the delivery was read (set once `Dedup::join` answered).
#[derive(Clone)]
pub(super) struct Joined {
    pub line: ConversationKeys,
    pub fingerprint: Fingerprint,
    pub done: Arc<AtomicBool>,
}

/// How long a tenant's cap read from its settings is used before it is read again.
const CAPS_FOR: Duration = Duration::from_secs(30);
/// How often the prefetch may move with the bodies' size.
const PREFETCH_EVERY: Duration = Duration::from_secs(5);
/// How long a deferred delivery of the read-ahead stays away before it is read again.
const PARK_FOR: Duration = Duration::from_secs(1);

pub(super) struct Intake<'s> {
    session: &'s Session<'s>,
    tasks: TaskTracker,
    hard_stop: CancellationToken,
    pub(super) permits: Arc<Semaphore>,
    /// A concurrency slot taken, not yet given to a delivery.
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// Boxed: a look down a line moves the deliveries it passes.
    pub(super) fair: Fair<Box<Read>>,
    pub(super) freed: Arc<tokio::sync::Notify>,
    order: LocalOrder,
    /// Tenants' caps as last read from their settings, and since when; the
    /// tenants whose settings are being read, and where their caps come back.
    caps: HashMap<Uuid, (usize, bool)>,
    caps_since: Instant,
    asked: HashSet<Uuid>,
    caps_tx: mpsc::UnboundedSender<(Uuid, (usize, bool))>,
    pub(super) caps_rx: mpsc::UnboundedReceiver<(Uuid, (usize, bool))>,
    policy: RetryPolicy,
    /// Bytes of the bodies read and not yet given a slot, and the most it may be.
    bytes: usize,
    max_bytes: usize,
    /// Stopped reading at `max_bytes`: read again below half of it.
    filled: bool,
    /// The bodies' mean size (moving), and the prefetch that keeps
    /// `max_bytes` of them at most on the wire and in the read-ahead.
    mean_body: f64,
    prefetch: u16,
    prefetch_since: Instant,
    /// The longest a delivery waits in the read-ahead before it is deferred
    /// (acked, back in a second, its place in line kept): well within the
    /// broker's `consumer_timeout`, and within `turns.stale`, so that its
    /// place is never taken for an abandoned one's.
    max_age: Duration,
}

impl<'s> Intake<'s> {
    pub(super) fn new(session: &'s Session<'s>, tasks: TaskTracker, hard_stop: CancellationToken) -> Self {
        let fair = Fair::default();
        let freed = fair.freed();
        let (caps_tx, caps_rx) = mpsc::unbounded_channel();
        let config = session.config;
        let max_age =
            Duration::from_secs((config.turns.stale_secs / 2).min(config.amqp.consumer_timeout_secs / 2));
        Self {
            session,
            tasks,
            hard_stop,
            permits: Arc::new(Semaphore::new(config.worker.concurrency)),
            permit: None,
            fair,
            freed,
            order: LocalOrder::default(),
            caps: HashMap::new(),
            caps_since: Instant::now(),
            asked: HashSet::new(),
            caps_tx,
            caps_rx,
            policy: config.retry_policy(),
            bytes: 0,
            max_bytes: config.amqp.read_ahead_bytes(),
            filled: false,
            mean_body: 1024.0,
            prefetch: config.amqp.prefetch,
            prefetch_since: Instant::now(),
            max_age,
        }
    }

    /// Whether the read-ahead holds all it may (until half of it is given slots).
    pub(super) fn full(&mut self) -> bool {
        if self.filled {
            self.filled = self.bytes > self.max_bytes / 2;
        } else if self.bytes > self.max_bytes {
            self.filled = true;
            tracing::info!(
                bytes = self.bytes,
                "the read-ahead is full; consuming again once half of it is out"
            );
        }
        self.filled
    }

    /// The prefetch to consume with: the configured one, lowered while the
    /// bodies are large, so that a prefetch's worth of them stays within
    /// `amqp.read_ahead_mib` (at least 64). Moved only when it would change by
    /// half or double, at most every 5 s (each move restarts the consumer).
    pub(super) fn prefetch(&mut self) -> u16 {
        let configured = self.session.config.amqp.prefetch;
        let (now, current) = (fitting_prefetch(self.max_bytes, self.mean_body, configured), self.prefetch);
        let moved = now <= current / 2
            || now >= current.saturating_mul(2)
            || (now == configured) != (current == configured);
        if moved && self.prefetch_since.elapsed() >= PREFETCH_EVERY && now != current {
            tracing::info!(
                from = current,
                to = now,
                mean_body_bytes = self.mean_body as u64,
                "consuming with another prefetch, for the bodies' size"
            );
            (self.prefetch, self.prefetch_since) = (now, Instant::now());
        }
        self.prefetch
    }

    /// Records `tenant`'s cap, and whether its conversations go one
    /// delivery at a time (it does not coalesce bursts), as its settings were read.
    pub(super) fn cap_read(&mut self, tenant: Uuid, (cap, one_at_a_time): (usize, bool)) {
        self.asked.remove(&tenant);
        self.caps.insert(tenant, (cap, one_at_a_time));
        self.fair.set_cap(tenant, cap, one_at_a_time);
    }

    /// Takes a delivery in, at the back of its tenant's line. One that cannot
    /// be given a slot at once (its tenant has others waiting, or is at its
    /// cap, or no slot is free) takes its place in its conversation's line
    /// now, so that no later message of the conversation, read by any
    /// process, is answered first.
    pub(super) fn read(&mut self, incoming: Incoming) {
        let pipeline = &self.session.pipeline;
        let envelope = incoming.envelope();
        let intake_us = envelope.intake_us;
        let config = self.session.config;
        let span = spans::consumer(
            &config.amqp.inbound_queue,
            &envelope,
            incoming.delivery_tag(),
            config.tracing.producer_context == ProducerContext::Link,
        );
        let started = Instant::now();
        let inbound = span.in_scope(|| {
            spans::stage("decode").in_scope(|| {
                crate::decode::decode(envelope.body)
                    .ok()
                    .filter(|inbound| crate::decode::check_route(inbound, envelope.routing_key).is_ok())
            })
        });
        pipeline.metrics.stage("decode", started);
        // An unreadable message waits in a line of its own and is rejected on
        // its turn, claiming nothing: it takes no place in its conversation's order.
        let (tenant, conversation, order, line) = match &inbound {
            Some(inbound) => {
                let conversation = conversation_of(inbound);
                (
                    inbound.tenant_id,
                    Some(conversation),
                    Some(self.order.place(conversation)),
                    Some((pipeline.dedup.keys().conversation(inbound), inbound.fingerprint())),
                )
            }
            None => (Uuid::nil(), None, None, None),
        };
        self.bytes += incoming.body().len();
        self.mean_body += (incoming.body().len() as f64 - self.mean_body) / 64.0;
        self.know_cap(tenant);
        if self.permit.is_none() {
            self.permit = self.permits.clone().try_acquire_owned().ok();
        }
        let read_at = Instant::now();
        if self.fair.has_room(tenant, conversation)
            && let Some(permit) = self.permit.take()
        {
            let share = self.fair.slot_now(tenant, conversation);
            self.bytes = self.bytes.saturating_sub(incoming.body().len());
            let read = Read { incoming, inbound, order, joined: None, read_at, span };
            self.start(read, share, permit, Lane::Light);
            return;
        }
        let joined = line.map(|(line, fingerprint)| {
            let joined = Joined { line, fingerprint, done: Arc::default() };
            let (pipeline, place) = (pipeline.clone(), joined.clone());
            let mut join = Box::pin(async move {
                match pipeline.dedup.join(&place.line, &place.fingerprint, intake_us).await {
                    Ok(joined) => place.done.store(joined, Ordering::Release),
                    // The claim meets Redis's trouble, and says what it does about it.
                    Err(e) => {
                        tracing::debug!(error = %e, "could not take a place in line as the delivery was read")
                    }
                }
            });
            // Polled once here, so that the request is on its way now (a
            // later message of the conversation, read by another process,
            // must find this one in line), not when a spawned task first
            // runs; and before this delivery's claim can be, on the same
            // connection, so Redis runs it first. Between deliveries of a
            // conversation, order is their intake time, whatever the order
            // their joins land in.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if join.as_mut().poll(&mut cx).is_pending() {
                tokio::spawn(join);
            }
            joined
        });
        self.fair.push(
            tenant,
            conversation,
            Box::new(Read { incoming, inbound, order, joined, read_at, span }),
        );
    }

    /// Makes sure `tenant`'s cap is known (or being read): nothing of it is
    /// given a slot before.
    fn know_cap(&mut self, tenant: Uuid) {
        if self.caps_since.elapsed() >= CAPS_FOR {
            self.caps.clear();
            self.caps_since = Instant::now();
        }
        if let Some(&(cap, one_at_a_time)) = self.caps.get(&tenant) {
            // Known here, and maybe forgotten by the read-ahead since (an idle
            // tenant, pruned): its deliveries must not wait for the next read of it.
            self.fair.set_cap(tenant, cap, one_at_a_time);
            return;
        }
        if !self.asked.insert(tenant) {
            return;
        }
        let worker = &self.session.config.worker;
        let (default, concurrency) = (worker.tenant_cap(), worker.concurrency);
        if tenant.is_nil() {
            self.cap_read(tenant, (default, true));
            return;
        }
        let (pipeline, caps) = (self.session.pipeline.clone(), self.caps_tx.clone());
        tokio::spawn(async move {
            let cap = tenant_cap(&pipeline, tenant, default, concurrency).await;
            let _ = caps.send((tenant, cap));
        });
    }

    /// Gives every free slot to the next delivery in turn.
    pub(super) fn dispatch(&mut self, ignore_caps: bool) {
        loop {
            if self.permit.is_none() {
                self.permit = self.permits.clone().try_acquire_owned().ok();
            }
            let Some(permit) = self.permit.take() else { return };
            let Some((read, share)) = self.fair.pop(ignore_caps) else {
                self.permit = Some(permit);
                return;
            };
            self.bytes = self.bytes.saturating_sub(read.incoming.body().len());
            self.start(*read, share, permit, Lane::Backlog);
        }
    }

    /// Runs a delivery in a task of its own, holding its slots; its reply
    /// commits in `lane` (`Light` when its tenant had nothing waiting: not
    /// behind another tenant's flood in the writer either).
    fn start(&self, read: Read, share: TenantSlot, permit: OwnedSemaphorePermit, lane: Lane) {
        let joined = read.joined.filter(|j| j.done.load(Ordering::Acquire));
        let mut slot = Slot::held(self.permits.clone(), permit)
            .sharing(Box::new(share))
            .joined(joined.is_some())
            .decoded(read.inbound)
            .lane(lane);
        if let Some(order) = read.order {
            slot = slot.ordered(order);
        }
        let session = self.session;
        let (pipeline, tally, policy) = (session.pipeline.clone(), session.tally.clone(), self.policy);
        let hard_stop = self.hard_stop.clone();
        let span = read.span;
        let incoming = read.incoming;
        let place = joined.map(|j| (j.line, j.fingerprint));
        self.tasks.spawn(
            async move {
                tokio::select! {
                    _ = hard_stop.cancelled() => {}
                    _ = handle(&pipeline, incoming, slot, place, &policy, &tally) => {}
                }
            }
            .instrument(span),
        );
    }

    /// Defers the deliveries that have waited in the read-ahead for
    /// `max_age` (their tenant's flood drains slower than that): acked, back
    /// in the queue a second later, keeping their place in line, so that no
    /// delivery is held past the broker's `consumer_timeout`.
    pub(super) fn defer_old(&mut self) {
        let max_age = self.max_age;
        let old = self.fair.take_old(|read| read.read_at.elapsed() >= max_age);
        if old.is_empty() {
            return;
        }
        tracing::info!(
            deliveries = old.len(),
            waited_secs = max_age.as_secs(),
            "deferring what waited too long in the read-ahead"
        );
        for read in old {
            self.bytes = self.bytes.saturating_sub(read.incoming.body().len());
            let publisher = self.session.pipeline.publisher.clone();
            let metrics = self.session.pipeline.metrics.clone();
            self.tasks.spawn(async move {
                metrics.read_ahead_deferred.inc();
                let deferred = read.incoming.settle(&publisher, &Disposition::Defer { delay: PARK_FOR }).await;
                if let Err(e) = deferred {
                    tracing::warn!(error = %e, "could not defer a delivery of the read-ahead; the broker will redeliver it");
                }
            });
        }
    }
}

/// How many bodies of `mean_body` bytes fit in `max_bytes`: at least 64 (or
/// `configured`, if lower), at most `configured`.
fn fitting_prefetch(max_bytes: usize, mean_body: f64, configured: u16) -> u16 {
    let fits = max_bytes as f64 / mean_body.max(1.0);
    fits.clamp(64.0_f64.min(f64::from(configured)), f64::from(configured)) as u16
}

/// The slots `tenant` may hold, as its settings say (the default when they
/// do not, or cannot be read now: the pipeline says why, with the message).
async fn tenant_cap(pipeline: &Pipeline, tenant: Uuid, default: usize, concurrency: usize) -> (usize, bool) {
    let coalesces = |settings: &serde_json::Value| pipeline.settings.coalesce.for_tenant(settings).is_some();
    let Ok(profile) = pipeline.cache.profile(tenant).await else {
        return (default, !coalesces(&serde_json::Value::Null));
    };
    let Some(settings) = profile.tenant.as_ref().map(|t| &t.settings) else {
        return (default, !coalesces(&serde_json::Value::Null));
    };
    let cap = crate::model::share::tenant_cap(settings, default, concurrency).unwrap_or_else(|problem| {
        tracing::warn!(tenant = %tenant, problem, "ignoring the tenant's max_concurrency setting");
        default
    });
    (cap, !coalesces(settings))
}

/// A conversation (tenant, channel, customer), as a key of this process's maps.
fn conversation_of(inbound: &Inbound) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (inbound.tenant_id, inbound.channel.as_str(), inbound.customer_external_id.as_str()).hash(&mut hasher);
    hasher.finish()
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

    fn place(&mut self, conversation: u64) -> Order {
        if self.last.len() >= self.prune_at {
            self.last.retain(|_, (rx, _)| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
            // Conversations still in line all: prune again only once as many more came.
            self.prune_at = (self.last.len() * 2).max(Self::PRUNE_AT);
        }
        let (in_line, rx) = oneshot::channel();
        let own = Arc::new(Waiting::default());
        let after = self.last.insert(conversation, (rx, own.clone()));
        Order { after, in_line, own }
    }
}

#[cfg(test)]
mod tests {
    use super::fitting_prefetch;

    #[test]
    fn the_prefetch_shrinks_with_large_bodies_and_stays_within_bounds() {
        let mib = 1 << 20;
        assert_eq!(
            fitting_prefetch(64 * mib, 1024.0, 16_384),
            16_384,
            "small bodies: the configured prefetch"
        );
        assert_eq!(fitting_prefetch(64 * mib, 256.0 * 1024.0, 16_384), 256, "64 MiB of 256 KiB bodies");
        assert_eq!(fitting_prefetch(mib, 256.0 * 1024.0, 16_384), 64, "never below 64");
        assert_eq!(fitting_prefetch(mib, 256.0 * 1024.0, 10), 10, "nor above the configured one");
        assert_eq!(fitting_prefetch(64 * mib, 0.0, 500), 500);
    }
}
