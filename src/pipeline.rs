//! What happens to one delivery, top to bottom, as CONTRACT §3 tells it.
//!
//! `process` never acks and never panics on input: it returns the [`Outcome`],
//! and the caller settles the delivery from it. Tests drive it one delivery at a time.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use chrono::Utc;
use sqlx::PgPool;

use crate::broker::publish::OutboundReply;
use crate::broker::{Incoming, Publisher};
use crate::catalog::CatalogCache;
use crate::decode::{Inbound, check_route, decode};
use crate::dedup::{Claim, Dedup, Lease};
use crate::model::Fingerprint;
use crate::model::catalog::TenantProfile;
use crate::model::{Direction, NumberedList};
use crate::outcome::{DuplicateOf, Outcome, Rejection, RejectionKind};
use crate::references;
use crate::reply::reply_body;
use crate::respond::{Context, Responder};
use crate::store::{self, Exchange, Recorded, StoredReply};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::{propagation, spans};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Clone)]
pub struct Pipeline {
    pub pool: PgPool,
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
}

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub key_prefix: String,
    pub reference_ttl: Duration,
    /// Work on one message past this is abandoned.
    pub deadline: Duration,
    /// Test aid: `WORKER_TEST_CRASH_AT=after_lock|after_commit` kills the process there.
    pub crash_at: Option<String>,
}

/// Why the work on a locked message stopped.
enum Stop {
    Reject(Rejection),
    Fail(String),
}

macro_rules! transient {
    ($($error:ty),*) => {$(
        impl From<$error> for Stop {
            fn from(e: $error) -> Self {
                Stop::Fail(e.to_string())
            }
        }
    )*};
}
transient!(crate::respond::RespondError, crate::broker::BrokerError);

/// A store error is transient unless the message itself caused it (a value
/// PostgreSQL cannot take): that one would fail every attempt the same way, so
/// it is `invalid` at once (CONTRACT §3), never `failed` after retries.
impl From<store::StoreError> for Stop {
    fn from(e: store::StoreError) -> Self {
        if e.caused_by_input() {
            Stop::Reject(Rejection {
                kind: RejectionKind::Invalid,
                error: format!("a field of this message cannot be stored: {e}"),
            })
        } else {
            Stop::Fail(e.to_string())
        }
    }
}

/// What a successful attempt leaves behind.
struct Replied {
    /// The reply had been committed before and was published again.
    replayed: bool,
    /// The list this reply showed, to remember for "the second one".
    list: Option<NumberedList>,
}

impl Pipeline {
    pub async fn process(&self, incoming: &Incoming) -> Outcome {
        // decode: malformed or invalid messages are rejected.
        let started = Instant::now();
        let decoded = spans::stage("decode").in_scope(|| {
            let inbound = decode(incoming.body())?;
            check_route(&inbound, incoming.routing_key())?;
            Ok(inbound)
        });
        self.metrics.stage("decode", started);
        let inbound = match decoded {
            Ok(inbound) => inbound,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        let fingerprint = inbound.fingerprint();
        let span = tracing::Span::current();
        span.record("chat.tenant_id", inbound.tenant_id.to_string());
        span.record("chat.fingerprint", fingerprint.as_str());

        // tenant: unknown or inactive tenants are rejected (from the cached profile).
        let profile = match self.timed("tenant", self.cache.profile(inbound.tenant_id)).await {
            Ok(profile) => profile,
            Err(e) => return failed(&fingerprint, e),
        };
        let Some(tenant) = profile.tenant.as_ref().filter(|t| t.is_active) else {
            return Outcome::Rejected(unknown_tenant(&inbound, profile.tenant.is_some()));
        };

        // dedup + lock: completed, or in progress on a live worker, is a duplicate.
        // The customer's latest list rides along in the same round trip.
        let list_key = references::redis_key(&self.settings.key_prefix, &inbound);
        let claim = self.timed("lock", self.dedup.claim(&fingerprint, Some(&list_key))).await;
        let decision = match &claim {
            Ok(Claim::Acquired(lease)) if lease.took_over_from.is_some() => "taken_over",
            Ok(Claim::Acquired(_)) => "acquired",
            Ok(Claim::Completed { .. }) => "completed",
            Ok(Claim::Held { .. }) => "held",
            Err(_) => "error",
        };
        span.record("chat.lock", decision);
        if decision == "held" {
            self.metrics.lock_contention.inc();
        }
        let lease = match claim {
            Ok(Claim::Acquired(lease)) => lease,
            Ok(Claim::Completed { .. }) => {
                return Outcome::Duplicate { fingerprint, of: DuplicateOf::Completed };
            }
            Ok(Claim::Held { worker_id }) if !incoming.seen_before() => {
                return Outcome::Duplicate { fingerprint, of: DuplicateOf::InProgress { worker_id } };
            }
            // A redelivery may be the very copy the holder lost with its channel:
            // acking it could leave no one to publish the reply. Look again later.
            Ok(Claim::Held { worker_id }) => return Outcome::Deferred { fingerprint, worker_id },
            Err(e) => return failed(&fingerprint, e),
        };
        self.crash_point("after_lock");

        // catalog, history, respond: under the lock, within the deadline, while the
        // lease renews. Then persist and publish, still under the renewed lock. The
        // write is not cut by the deadline: once handed to the group commit it may
        // commit with others, so its result is waited for (PostgreSQL's
        // statement_timeout, set to the same deadline, bounds it).
        let work = async {
            self.fence_takeover(&lease).await?;
            self.answer_under_lock(&inbound, &fingerprint, tenant, &lease).await
        };
        let replied = match self.guarded(work, &lease, Some(self.settings.deadline)).await {
            Ok(answered) => {
                let delivering = self.deliver(&inbound, &fingerprint, answered, incoming.headers());
                self.guarded(delivering, &lease, None).await
            }
            Err(stop) => Err(stop),
        };
        match replied {
            Ok(replied) => {
                let remember = replied.list.as_ref().and_then(|l| serde_json::to_vec(l).ok());
                let also_set =
                    remember.as_deref().map(|bytes| (list_key.as_str(), bytes, self.settings.reference_ttl));
                if let Err(e) = self.dedup.complete(&lease, also_set).await {
                    // The reply is committed and published; a stale state only costs a replay.
                    tracing::warn!(%fingerprint, error = %e, "could not record completion");
                }
                Outcome::Processed { fingerprint, replayed: replied.replayed }
            }
            Err(stop) => {
                if let Err(e) = self.dedup.abandon(&lease).await {
                    tracing::warn!(%fingerprint, error = %e, "could not release lock; it expires by itself");
                }
                match stop {
                    Stop::Reject(rejection) => Outcome::Rejected(rejection),
                    Stop::Fail(error) => failed(&fingerprint, error),
                }
            }
        }
    }

    /// After taking a message over from a worker that is gone (or whose lease
    /// lapsed), registers this lease's fencing token in PostgreSQL before any work:
    /// from then on the previous holder, should it wake up, cannot commit.
    async fn fence_takeover(&self, lease: &Lease) -> Result<(), Stop> {
        let Some(gone) = &lease.took_over_from else { return Ok(()) };
        self.metrics.lock_takeovers.inc();
        tracing::info!(fingerprint = %lease.fingerprint, worker = %gone, "taking over from a worker that is gone");
        if store::register_fence(&self.pool, &lease.fingerprint, lease.fence).await? {
            Ok(())
        } else {
            Err(Stop::Fail("a later holder has taken this message over; this attempt stands down".into()))
        }
    }

    /// Runs `work` until it ends, panics, passes the deadline (if any), or loses
    /// its lease; renews the lease every third of its TTL meanwhile. Work that is
    /// cut short is dropped, so it can commit nothing afterwards.
    async fn guarded<T>(
        &self,
        work: impl Future<Output = Result<T, Stop>>,
        lease: &Lease,
        deadline: Option<Duration>,
    ) -> Result<T, Stop> {
        let work = AssertUnwindSafe(work).catch_unwind();
        let limited = deadline.is_some();
        let deadline = tokio::time::sleep(deadline.unwrap_or(Duration::MAX / 4));
        tokio::pin!(work, deadline);
        let every = self.dedup.renew_interval();
        let mut renewal = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut renewed_at = Instant::now();
        loop {
            tokio::select! {
                done = &mut work => {
                    return done.unwrap_or_else(|panic| Err(Stop::Fail(format!("processing panicked: {}", panic_text(&panic)))));
                }
                _ = &mut deadline, if limited => {
                    return Err(Stop::Fail(format!("deadline of {}s passed; abandoned", self.settings.deadline.as_secs())));
                }
                _ = renewal.tick() => match self.dedup.renew(lease).await {
                    Ok(true) => renewed_at = Instant::now(),
                    Ok(false) => return Err(Stop::Fail("lease lost to another worker; abandoned".into())),
                    Err(e) if renewed_at.elapsed() + every >= self.dedup.lock_ttl() => {
                        return Err(Stop::Fail(format!("lease could not be renewed before it lapses ({e}); abandoned")));
                    }
                    Err(e) => tracing::warn!(fingerprint = %lease.fingerprint, error = %e, "lease renewal failed; retrying"),
                },
            }
        }
    }

    async fn answer_under_lock(
        &self,
        inbound: &Inbound,
        fingerprint: &Fingerprint,
        tenant: &TenantProfile,
        lease: &Lease,
    ) -> Result<Exchange, Stop> {
        let started = Instant::now();
        let stored_at = Utc::now();
        let list_in_redis: Option<NumberedList> =
            lease.fetched.as_deref().and_then(|b| serde_json::from_slice(b).ok());

        // catalog (cached) and history (one query), side by side.
        let (catalog, knowledge, context) = tokio::try_join!(
            self.timed("catalog", self.cache.catalog(inbound.tenant_id)),
            self.cache.knowledge(inbound.tenant_id),
            self.timed("history", self.reader.load(inbound, list_in_redis.is_none())),
        )?;
        let context = context.ok_or_else(|| Stop::Reject(foreign_conversation(inbound)))?;
        let conversation_id = context.conversation.as_ref().map(|c| c.id);
        let latest_list = conversation_id.and_then(|id| {
            let from_history = context.history.iter().filter(|m| m.direction == Direction::Out).map(|m| {
                NumberedList { conversation_id: Some(id), at: m.created_at, items: m.references.clone() }
            });
            references::latest(
                id,
                list_in_redis.into_iter().chain(context.stored_list.clone()).chain(from_history),
            )
        });

        // respond
        let ctx = Context {
            inbound,
            conversation_status: context.conversation.as_ref().map(|c| c.status).unwrap_or_default(),
            tenant,
            catalog: &catalog,
            knowledge: &knowledge,
            history: &context.history,
            latest_list: latest_list.as_ref(),
        };
        let answer = self.timed("respond", self.responder.respond(&ctx)).await?;
        let replied_at = Utc::now();

        let exchange = Exchange {
            inbound: inbound.clone(),
            fingerprint: fingerprint.clone(),
            conversation_id,
            stored_at,
            answer,
            replied_at,
            responder: self.responder.name().to_owned(),
            latency_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
            fence: lease.fence,
        };
        Ok(exchange)
    }

    /// persist (with whatever other messages are ready: one commit for all), then publish.
    async fn deliver(
        &self,
        inbound: &Inbound,
        fingerprint: &Fingerprint,
        exchange: Exchange,
        gateway_headers: Option<&lapin::types::FieldTable>,
    ) -> Result<Replied, Stop> {
        let answer = exchange.answer.clone();
        let replied_at = exchange.replied_at;
        let (reply, replayed) = match self.timed("persist", self.writer.record(exchange)).await? {
            Recorded::New { conversation_id } => (
                StoredReply {
                    conversation_id,
                    text: answer.text,
                    handoff: answer.handoff,
                    confidence: answer.confidence,
                    references: serde_json::to_value(&answer.references).unwrap_or_default(),
                    created_at: replied_at,
                },
                false,
            ),
            Recorded::Existing(reply) => (reply, true),
        };
        if replayed {
            tracing::info!(%fingerprint, "already committed; publishing the stored reply again");
        }
        self.crash_point("after_commit");

        // publish
        let body = reply_body(inbound, fingerprint, &reply);
        let headers = propagation::reply_headers(&tracing::Span::current().context(), gateway_headers);
        let outbound = OutboundReply {
            routing_key: &inbound.routing_key(),
            reply_id: &fingerprint.reply_id(),
            in_reply_to: &inbound.message_id,
            body: &body,
            headers,
        };
        let publish = tokio::time::timeout(self.settings.deadline, self.publisher.publish_reply(&outbound));
        self.timed("publish", publish).await.map_err(|_| {
            Stop::Fail(format!(
                "publish not confirmed within {}s; abandoned",
                self.settings.deadline.as_secs()
            ))
        })??;
        let list = (!replayed && answer.references.len() >= 2).then(|| NumberedList {
            conversation_id: Some(reply.conversation_id),
            at: replied_at,
            items: answer.references.clone(),
        });
        Ok(Replied { replayed, list })
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

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn failed(fingerprint: &Fingerprint, error: impl ToString) -> Outcome {
    Outcome::Failed { fingerprint: Some(fingerprint.clone()), error: error.to_string() }
}

fn unknown_tenant(inbound: &Inbound, exists: bool) -> Rejection {
    let why = if exists { "is not active" } else { "does not exist" };
    Rejection { kind: RejectionKind::UnknownTenant, error: format!("tenant {} {why}", inbound.tenant_id) }
}

fn foreign_conversation(inbound: &Inbound) -> Rejection {
    Rejection {
        kind: RejectionKind::Invalid,
        error: format!(
            "conversation_id {} is not a conversation of this tenant, channel and customer",
            inbound.conversation_id.unwrap_or_default(),
        ),
    }
}
