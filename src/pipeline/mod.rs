//! What happens to one delivery, top to bottom, as CONTRACT §3 tells it.
//!
//! [`Pipeline::process`] takes one [`Envelope`] and returns its [`Outcome`]; it
//! never acks and never panics on input: the caller settles the delivery from
//! the outcome. Tests drive it one envelope at a time (`tests/it/pipeline/`).
//!
//! - `turn` — the conversation's turn: wait for the earlier messages;
//! - `answer` — catalog, history and the responder, under the lock;
//! - `deliver` — persist (group commit) and publish;
//! - `stop` — why work under the lock stopped, and what that makes the outcome.

mod answer;
mod budget;
mod burst;
mod deliver;
mod rate;
mod stop;
mod turn;

pub use burst::{CoalesceDefaults, Coalescing};
pub use turn::{Order, Share, Slot, TurnSettings, Waiting};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Publisher;
use crate::catalog::CatalogCache;
use crate::config::Config;
use crate::decode::{check_route, decode};
use crate::dedup::{Claim, Dedup, Lease, Wakes};
use crate::keys::ConversationKeys;
use crate::model::catalog::TenantProfile;
use crate::model::{Envelope, Fingerprint, Inbound, NumberedList, TraceContext};
use crate::outcome::{Disposition, DuplicateOf, Failure, Outcome, Rejection, RetryPolicy};
use crate::references::{ListKey, ListMemory};
use crate::respond::Responder;
use crate::store;
use crate::store::bursts::CoalescedRow;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::spans;

use self::burst::Debounced;
use self::deliver::Replied;
use self::stop::Stop;

/// What a message holding its conversation's turn knows of its burst.
struct Turn<'a> {
    coalescing: Option<Coalescing>,
    intake_ms: i64,
    /// Woken when a newer message of the conversation joins the line.
    joined: &'a mut crate::dedup::wakes::Listener,
    lane: store::Lane,
}

/// How the work under the lease ended, when it did not fail.
enum Answered {
    Replied(Replied),
    /// A newer message joined the burst: this one is coalesced into it (with
    /// the finished generation it discarded, and how long that took).
    Joined(Option<(crate::model::Answer, i32)>),
}

#[derive(Clone)]
pub struct Pipeline {
    pub db: store::Db,
    /// Stage "history": context reads shared with the other messages in flight.
    pub reader: store::ContextReader,
    /// Stage "persist": group commits shared with the other messages in flight.
    pub writer: store::Writer,
    pub dedup: Dedup,
    pub cache: CatalogCache,
    pub responder: Arc<dyn Responder>,
    pub publisher: Publisher,
    pub settings: PipelineSettings,
    pub metrics: Arc<Metrics>,
    /// This process's deliveries waiting for their conversation's turn, by
    /// fingerprint; `dedup::wakes::listen` feeds it.
    pub wakes: Wakes,
    /// The waiting room: how many deliveries may wait at once.
    pub waiting: Arc<Semaphore>,
    /// Cancelled when the process stops: waiting deliveries are parked at once.
    pub stopping: CancellationToken,
}

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Where the customer's latest numbered list is remembered.
    pub references: ListMemory,
    /// Work on one message past this is abandoned.
    pub deadline: Duration,
    /// Test aid: `WORKER_TEST_CRASH_AT=after_lock|after_commit` kills the process there.
    pub crash_at: Option<String>,
    pub turns: TurnSettings,
    /// Burst coalescing where a tenant's settings do not say.
    pub coalesce: CoalesceDefaults,
    /// Which failures are the last (dead-lettered): such a message leaves its
    /// conversation's line; any other keeps its place for its retry.
    pub retry: RetryPolicy,
    /// How long since it was first read a message may be parked, no attempt
    /// spent, for a responder asking to slow down (half the message age limit).
    pub slow_down_for: Duration,
    /// The responder is paid (`openai`, `http`): tenants' token budgets apply.
    pub paid_responder: bool,
    /// Who answers what the responder could not (`responder.fallback`).
    pub fallback: Option<crate::respond::Builtin>,
}

/// What a pipeline is built from besides its configuration.
pub struct Parts {
    pub db: store::Db,
    pub dedup: Dedup,
    pub cache: CatalogCache,
    pub responder: Arc<dyn Responder>,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
}

impl Pipeline {
    /// The pipeline `config` describes, over `parts`; starts the grouped
    /// context reader and writer that every message in flight shares.
    /// (`WORKER_TEST_CRASH_AT` is read here: a test aid, see [`PipelineSettings`].)
    pub fn assemble(config: &Config, parts: Parts) -> Self {
        if !config.database.light_lane() {
            tracing::info!(
                "no connection to spare for the group commit's light lane (database.max_connections \
                 below commits_in_flight + reads_in_flight + 3): a quiet tenant's replies commit with \
                 another's flood"
            );
        }
        let writer = store::Writer::start(
            parts.db.clone(),
            store::WriterSettings {
                max_batch: config.database.commit_batch_max,
                in_flight: config.database.commits_in_flight,
                light_lane: config.database.light_lane(),
            },
            store::WriterMetrics {
                batch_sizes: parts.metrics.commit_batch_size.clone(),
                split_batches: parts.metrics.commit_batches_split.clone(),
            },
        );
        let reader = store::ContextReader::start(
            parts.db.clone(),
            config.database.reads_in_flight,
            config.context.history_limit,
        );
        let settings = PipelineSettings {
            references: ListMemory::new(
                &config.redis.key_prefix,
                Duration::from_secs(config.context.reference_ttl_secs),
            ),
            deadline: Duration::from_secs(config.worker.message_deadline_secs),
            crash_at: std::env::var("WORKER_TEST_CRASH_AT").ok(),
            turns: TurnSettings {
                max_wait: Duration::from_secs(config.turns.max_wait_secs),
                stale: Duration::from_secs(config.turns.stale_secs),
                settle: Duration::from_secs(config.redis.lock_ttl_secs) / 3 + Duration::from_secs(1),
            },
            coalesce: CoalesceDefaults::of(&config.turns),
            retry: config.retry_policy(),
            slow_down_for: Duration::from_secs(config.worker.max_message_age_secs / 2),
            paid_responder: config.responder.kind != crate::config::ResponderKind::Builtin,
            fallback: (config.responder.fallback == crate::config::FallbackKind::Builtin
                && config.responder.kind != crate::config::ResponderKind::Builtin)
                .then_some(crate::respond::Builtin { handoff_threshold: config.responder.handoff_threshold }),
        };
        let waiting = Arc::new(Semaphore::new(config.turns.waiting_limit(config.amqp.prefetch)));
        let Parts { db, dedup, cache, responder, publisher, metrics } = parts;
        Self {
            db,
            reader,
            writer,
            dedup,
            cache,
            responder,
            publisher,
            settings,
            metrics,
            wakes: Wakes::default(),
            waiting,
            stopping: CancellationToken::new(),
        }
    }

    /// One envelope to its outcome, holding no concurrency slot (tests).
    pub async fn process(&self, envelope: &Envelope<'_>) -> Outcome {
        self.process_in(envelope, &mut Slot::unbounded()).await
    }

    /// One envelope to its outcome; `slot` is handed back while the message
    /// waits for its conversation's turn.
    pub async fn process_in(&self, envelope: &Envelope<'_>, slot: &mut Slot) -> Outcome {
        // decode: malformed or invalid messages are rejected (a delivery read
        // into the read-ahead was decoded there already).
        let decoded = match slot.take_decoded() {
            Some(inbound) => Ok(inbound),
            None => self.decode(envelope),
        };
        let inbound = match decoded {
            Ok(inbound) => inbound,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        let fingerprint = inbound.fingerprint();
        spans::record_message(&inbound.tenant_id, &fingerprint);

        // dedup + turn + lock, before anything slower, so that the message takes
        // its place in its conversation's line as soon as it is read: completed,
        // or in progress on a live worker, is a duplicate; held while this copy
        // may be the one its holder lost, deferred; an earlier message of the
        // conversation not yet answered, waited for.
        let list_key = self.settings.references.key(&inbound);
        let line = self.dedup.keys().conversation(&inbound);
        // Listening before the claim: a newer message joining right after it is heard.
        let mut joined = self.wakes.listen(&format!("+{fingerprint}"));
        let lease = match self.claim(envelope, &line, &fingerprint, &list_key, slot).await {
            Ok(lease) => lease,
            Err(not_ours) => return not_ours,
        };
        self.crash_point("after_lock");

        // tenant: unknown or inactive tenants are rejected (from the cached profile).
        let profile = match self.timed("tenant", self.cache.profile(inbound.tenant_id)).await {
            Ok(profile) => profile,
            Err(e) => return self.give_up(&lease, failed(&fingerprint, e), envelope).await,
        };
        let Some(tenant) = profile.tenant.as_ref().filter(|t| t.is_active) else {
            let rejected = Outcome::Rejected(stop::unknown_tenant(&inbound, profile.tenant.is_some()));
            return self.give_up(&lease, rejected, envelope).await;
        };

        // rate: where the tenant has a limit, its place at the rate.
        if let Err(stop) = self.within_rate(&inbound.tenant_id, tenant, &lease).await {
            return self.give_up(&lease, stop.into_outcome(fingerprint), envelope).await;
        }

        // coalesce, where the tenant turns it on: wait for the burst to grow, or
        // pass the turn to the newer message that continues it. (A message that
        // names its conversation is answered on its own: its naming is checked
        // with the history read.)
        let coalescing =
            self.settings.coalesce.for_tenant(&tenant.settings).filter(|_| inbound.conversation_id.is_none());
        let intake_ms = envelope.intake_us / 1000;
        if let Some(c) = &coalescing {
            let waited =
                async { Ok::<_, Stop>(self.debounce(c, &lease, intake_ms, &mut joined, slot).await) };
            match self.dedup.guard(&lease, None, waited).await {
                Ok(Debounced::Answer) => {}
                Ok(Debounced::Coalesce) => {
                    return self.coalesced(envelope, &inbound, &fingerprint, &lease, None).await;
                }
                Err(stop) => {
                    return self.give_up(&lease, stop.into_outcome(fingerprint), envelope).await;
                }
            }
        }

        // catalog, history, respond, persist, publish: under the renewed lease.
        let turn = Turn { coalescing, intake_ms, joined: &mut joined, lane: slot.commit_lane() };
        match self.under_lease(&inbound, &fingerprint, tenant, &lease, envelope.trace, turn).await {
            Ok(Answered::Replied(replied)) => {
                self.complete(&lease, &list_key, replied.list.as_ref()).await;
                Outcome::Processed { fingerprint, replayed: replied.replayed }
            }
            Ok(Answered::Joined(discarded)) => {
                self.coalesced(envelope, &inbound, &fingerprint, &lease, discarded).await
            }
            Err(stop) => self.give_up(&lease, stop.into_outcome(fingerprint), envelope).await,
        }
    }

    /// This message is answered by its burst's reply: stored, and the turn
    /// passed on. Unless an earlier attempt of it committed a reply of its own
    /// (a fault came between commit and ack): that one is published again.
    async fn coalesced(
        &self,
        envelope: &Envelope<'_>,
        inbound: &Inbound,
        fingerprint: &Fingerprint,
        lease: &Lease,
        discarded: Option<(crate::model::Answer, i32)>,
    ) -> Outcome {
        let intake_ms = envelope.intake_us / 1000;
        let replayed = match self.coalesce_into_burst(inbound, fingerprint, lease, intake_ms, discarded).await
        {
            Ok(CoalescedRow::Stored) => return Outcome::Coalesced { fingerprint: fingerprint.clone() },
            Ok(CoalescedRow::Replied(recorded)) => {
                let publishing = self.publish_recorded(inbound, fingerprint, &recorded, envelope.trace);
                self.dedup.guard(lease, None, publishing).await
            }
            Err(stop) => Err(stop),
        };
        match replayed {
            Ok(()) => {
                let list_key = self.settings.references.key(inbound);
                self.complete(lease, &list_key, None).await;
                Outcome::Processed { fingerprint: fingerprint.clone(), replayed: true }
            }
            Err(stop) => self.give_up(lease, stop.into_outcome(fingerprint.clone()), envelope).await,
        }
    }

    fn decode(&self, envelope: &Envelope<'_>) -> Result<Inbound, Rejection> {
        let started = Instant::now();
        let decoded = spans::stage("decode").in_scope(|| {
            let inbound = decode(envelope.body)?;
            check_route(&inbound, envelope.routing_key)?;
            Ok(inbound)
        });
        self.metrics.stage("decode", started);
        decoded
    }

    /// Takes the message's lock on its conversation's turn, or says why it is
    /// not this delivery's to process. The customer's remembered list rides
    /// along in the same round trip.
    async fn claim(
        &self,
        envelope: &Envelope<'_>,
        line: &ConversationKeys,
        fp: &Fingerprint,
        list_key: &ListKey,
        slot: &mut Slot,
    ) -> Result<Lease, Outcome> {
        let claim = self.take_turn(envelope, line, fp, list_key, slot).await;
        spans::record_lock(claim.as_ref().map_or("not_claimed", lock_label));
        let claim = claim?;
        let fingerprint = fp.clone();
        match claim {
            Claim::Acquired(lease) => Ok(lease),
            Claim::Completed { .. } => Err(Outcome::Duplicate { fingerprint, of: DuplicateOf::Completed }),
            Claim::Held { worker_id } => {
                self.metrics.lock_contention.inc();
                // A copy seen before may be the very one the holder lost with its
                // channel: acking it could leave no one to publish. Look again later.
                Err(if envelope.seen_before {
                    Outcome::Deferred { fingerprint, worker_id }
                } else {
                    Outcome::Duplicate { fingerprint, of: DuplicateOf::InProgress { worker_id } }
                })
            }
            // `take_turn` waits until neither is the answer.
            Claim::Wait { ahead, .. } => Err(Outcome::Waiting { fingerprint, behind: ahead }),
            Claim::Lost => Err(Outcome::Waiting { fingerprint: fp.clone(), behind: fp.clone() }),
        }
    }

    /// Whether `outcome` is the message's last: it is dead-lettered (or acked),
    /// and so will not come back to its place in line.
    fn is_last(&self, outcome: &Outcome, attempt: u32) -> bool {
        !matches!(
            outcome.disposition(attempt, &self.settings.retry, 0.0),
            Disposition::Retry { .. } | Disposition::Defer { .. }
        )
    }

    /// Catalog, history and respond within the deadline; then persist and
    /// publish, not cut by the deadline: once handed to the group commit, the
    /// write may commit with others, so its result is waited for (PostgreSQL's
    /// statement_timeout, set to the same deadline, bounds it). With coalescing
    /// that restarts, a newer message of the burst joining meanwhile ends the
    /// generation (dropped, or discarded when finished): it answers instead.
    async fn under_lease(
        &self,
        inbound: &Inbound,
        fingerprint: &Fingerprint,
        tenant: &TenantProfile,
        lease: &Lease,
        trace: TraceContext<'_>,
        turn: Turn<'_>,
    ) -> Result<Answered, Stop> {
        let Turn { coalescing, intake_ms, joined, lane } = turn;
        let restart = coalescing.is_some_and(|c| c.restart && c.may_grow(lease, intake_ms));
        let answering = async {
            self.fence_takeover(lease).await?;
            let answer = self.answer(inbound, fingerprint, tenant, lease, coalescing.is_some());
            if restart {
                tokio::select! {
                    exchange = answer => exchange.map(Some),
                    _ = joined.woken() => Ok(None),
                }
            } else {
                answer.await.map(Some)
            }
        };
        let Some(exchange) = self.dedup.guard(lease, Some(self.settings.deadline), answering).await? else {
            self.metrics.generations_restarted.inc();
            return Ok(Answered::Joined(None));
        };
        if restart && joined.fired() && coalescing.is_some_and(|c| c.may_grow(lease, intake_ms)) {
            self.metrics.generations_restarted.inc();
            return Ok(Answered::Joined(Some((exchange.answer, exchange.latency_ms))));
        }
        let delivering = self.deliver(inbound, fingerprint, exchange, trace, coalescing.is_some(), lane);
        Ok(Answered::Replied(self.dedup.guard(lease, None, delivering).await?))
    }

    /// After taking a message over from a worker that is gone (or whose lease
    /// lapsed), registers this lease's fencing token in PostgreSQL before any work:
    /// from then on the previous holder, should it wake up, cannot commit.
    async fn fence_takeover(&self, lease: &Lease) -> Result<(), Stop> {
        let Some(gone) = &lease.took_over_from else { return Ok(()) };
        self.metrics.lock_takeovers.inc();
        tracing::info!(fingerprint = %lease.fingerprint, worker = %gone, "taking over from a worker that is gone");
        if store::register_fence(&self.db, &lease.fingerprint, lease.fence).await? {
            Ok(())
        } else {
            Err(Stop::Fail(Failure::FencedOut))
        }
    }

    /// Records completion, and the list the reply showed, in one round trip.
    async fn complete(&self, lease: &Lease, list_key: &ListKey, shown: Option<&NumberedList>) {
        let remember = shown.and_then(|list| self.settings.references.to_remember(list));
        let also_set = remember.as_ref().map(|(bytes, ttl)| (list_key.as_str(), bytes.as_slice(), *ttl));
        // Tried a few times: it also passes the conversation's turn on (the next
        // one would otherwise wait until it finds this one's state completed).
        for pause in
            [Duration::from_millis(100), Duration::from_millis(500), Duration::from_secs(2), Duration::ZERO]
        {
            match self.dedup.complete(lease, also_set).await {
                Ok(()) => return,
                Err(e) if pause.is_zero() => {
                    // The reply is committed and published; a stale state only costs a replay.
                    tracing::warn!(fingerprint = %lease.fingerprint, error = %e, "could not record completion");
                }
                Err(_) => tokio::time::sleep(pause).await,
            }
        }
    }

    /// Releases the lock of a message whose attempt ends in `outcome`: it
    /// keeps its place in line for its retry, or leaves the line if this is
    /// its last.
    async fn give_up(&self, lease: &Lease, outcome: Outcome, envelope: &Envelope<'_>) -> Outcome {
        let outcome = self.waited_enough(outcome, envelope);
        let last = self.is_last(&outcome, envelope.attempt);
        if let Err(e) = self.dedup.abandon(lease, last).await {
            tracing::warn!(fingerprint = %lease.fingerprint, error = %e, "could not release lock; it expires by itself");
        }
        outcome
    }

    /// A message the responder keeps slowing down is parked without spending
    /// attempts for half of `worker.max_message_age_secs` since it was first
    /// read; past that it fails as any responder fault does (its attempts
    /// and their delays then end it within the age: a responder that never
    /// stops answering 429 cannot keep a message, nor its conversation, for ever).
    fn waited_enough(&self, outcome: Outcome, envelope: &Envelope<'_>) -> Outcome {
        let Outcome::SlowedDown { fingerprint, pause } = outcome else { return outcome };
        let age_us = crate::model::envelope::intake_now().saturating_sub(envelope.intake_us);
        let age = Duration::from_micros(u64::try_from(age_us).unwrap_or(0));
        if age < self.settings.slow_down_for {
            return Outcome::SlowedDown { fingerprint, pause };
        }
        let error = crate::respond::RespondError::SlowDown {
            retry_after: Some(pause),
            detail: format!("still asked to slow down after {} s", age.as_secs()),
        };
        Outcome::Failed { fingerprint: Some(fingerprint), error: error.into() }
    }

    /// Awaits `f` in a span of its own, recording its duration as `stage`.
    async fn timed<T>(&self, stage: &'static str, f: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let value = f.instrument(spans::stage(stage)).await;
        self.metrics.stage(stage, started);
        value
    }

    fn crash_point(&self, at: &str) {
        if self.settings.crash_at.as_deref() == Some(at) {
            eprintln!("WORKER_TEST_CRASH_AT={at}: aborting on purpose");
            std::process::abort();
        }
    }
}

/// The `chat.lock` attribute: what the claim found.
fn lock_label(claim: &Claim) -> &'static str {
    match claim {
        Claim::Acquired(lease) if lease.took_over_from.is_some() => "taken_over",
        Claim::Acquired(_) => "acquired",
        Claim::Completed { .. } => "completed",
        Claim::Held { .. } => "held",
        Claim::Wait { .. } | Claim::Lost => "waiting",
    }
}

fn failed(fingerprint: &Fingerprint, error: impl Into<Failure>) -> Outcome {
    Outcome::Failed { fingerprint: Some(fingerprint.clone()), error: error.into() }
}
