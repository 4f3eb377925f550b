//! What happens to one delivery, top to bottom, as CONTRACT §3 tells it.
//!
//! `process` never acks and never panics on input: it returns the [`Outcome`],
//! and the caller settles the delivery from it. Tests drive it one delivery at a time.

use std::sync::Arc;

use chrono::Utc;
use sqlx::PgPool;

use crate::broker::publish::OutboundReply;
use crate::broker::{Incoming, Publisher};
use crate::decode::{Inbound, decode};
use crate::dedup::{Claim, Dedup};
use crate::fingerprint::Fingerprint;
use crate::outcome::{DuplicateOf, Outcome, Rejection, RejectionKind};
use crate::reply::reply_body;
use crate::respond::{Context, Responder};
use crate::store::{self, Exchange, Recorded, StoredReply, TenantStatus};

#[derive(Clone)]
pub struct Pipeline {
    pub pool: PgPool,
    pub dedup: Dedup,
    pub responder: Arc<dyn Responder>,
    pub publisher: Publisher,
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
transient!(store::StoreError, crate::respond::RespondError, crate::broker::BrokerError);

impl Pipeline {
    pub async fn process(&self, incoming: &Incoming) -> Outcome {
        // decode: malformed or invalid messages are rejected.
        let inbound = match decode(incoming.body()) {
            Ok(inbound) => inbound,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        let fingerprint = inbound.fingerprint();

        // tenant: unknown or inactive tenants are rejected.
        match store::tenant_status(&self.pool, inbound.tenant_id).await {
            Ok(TenantStatus::Active) => {}
            Ok(status) => return Outcome::Rejected(unknown_tenant(&inbound, status)),
            Err(e) => return failed(&fingerprint, e),
        }

        // dedup + lock: completed, or in progress on a live worker, is a duplicate.
        let lease = match self.dedup.claim(&fingerprint).await {
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
        if let Some(gone) = &lease.took_over_from {
            tracing::info!(%fingerprint, worker = %gone, "took over the lock of a worker that is gone");
        }
        self.crash_point("after_lock");

        // conversation, respond, persist, publish: under the lock.
        match self.reply_under_lock(&inbound, &fingerprint).await {
            Ok(replayed) => {
                if let Err(e) = self.dedup.complete(&lease).await {
                    // The reply is committed and published; a stale state only costs a replay.
                    tracing::warn!(%fingerprint, error = %e, "could not record completion");
                }
                Outcome::Processed { fingerprint, replayed }
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

    /// Returns whether the reply had been committed before (and was re-published).
    async fn reply_under_lock(&self, inbound: &Inbound, fingerprint: &Fingerprint) -> Result<bool, Stop> {
        let stored_at = Utc::now();
        let conversation = store::current_conversation(&self.pool, inbound).await?.ok_or_else(|| {
            Stop::Reject(Rejection {
                kind: RejectionKind::Invalid,
                error: format!(
                    "conversation_id {} is not a conversation of tenant {}",
                    inbound.conversation_id.unwrap_or_default(),
                    inbound.tenant_id
                ),
            })
        })?;

        let answer = self.responder.respond(&Context { inbound, conversation: &conversation }).await?;
        let replied_at = Utc::now();

        let exchange = Exchange {
            inbound,
            fingerprint,
            conversation_id: conversation.id,
            stored_at,
            answer: &answer,
            replied_at,
            responder: self.responder.name(),
        };
        let (reply, replayed) = match store::record_exchange(&self.pool, &exchange).await? {
            Recorded::New => (
                StoredReply {
                    conversation_id: conversation.id,
                    text: answer.text,
                    handoff: answer.handoff,
                    confidence: answer.confidence,
                    references: answer.references,
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

        let body = reply_body(inbound, fingerprint, &reply);
        self.publisher
            .publish_reply(&OutboundReply {
                routing_key: &inbound.routing_key(),
                reply_id: &fingerprint.reply_id(),
                in_reply_to: &inbound.message_id,
                body: &body,
            })
            .await?;
        Ok(replayed)
    }

    fn crash_point(&self, at: &str) {
        if self.crash_at.as_deref() == Some(at) {
            eprintln!("WORKER_TEST_CRASH_AT={at}: aborting on purpose");
            std::process::abort();
        }
    }
}

fn failed(fingerprint: &Fingerprint, error: impl ToString) -> Outcome {
    Outcome::Failed { fingerprint: Some(fingerprint.clone()), error: error.to_string() }
}

fn unknown_tenant(inbound: &Inbound, status: TenantStatus) -> Rejection {
    let why = if status == TenantStatus::Inactive { "is not active" } else { "does not exist" };
    Rejection { kind: RejectionKind::UnknownTenant, error: format!("tenant {} {why}", inbound.tenant_id) }
}
