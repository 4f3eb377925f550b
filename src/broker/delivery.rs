//! One delivery from `worker.inbound`: what the pipeline reads of it, and how it is
//! settled once the outcome is known.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;

use super::Disposition;
use super::headers::{self, Carried};
use super::{BrokerError, Publisher};
use crate::model::{Envelope, TraceContext};

/// The first and the longest pause between two tries of a move the broker
/// refused: the delivery stays with us meanwhile (handing it back would count a
/// delivery against the queue's delivery limit, and a healthy message must never
/// end as a delivery-limit dead letter because the broker refused to move it).
const MOVE_RETRY_FIRST: Duration = Duration::from_millis(100);
const MOVE_RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Incoming {
    delivery: Delivery,
    /// The routing key the message was published with to `chat.inbound`: this
    /// delivery's own when it came from there, else the one a retry or a replay
    /// carried in `x-routing-key`, else unknown (a publish straight to the queue).
    published_with: Option<String>,
    /// Whether it came from `chat.inbound`, i.e. from a gateway: then our own
    /// headers (`x-attempts`, `x-worker-seen`) on it are the gateway's, and ignored.
    from_gateway: bool,
    /// When it was read off the broker (see [`crate::model::envelope::intake_now`]).
    intake_us: i64,
}

impl Incoming {
    /// `inbound_exchange`: where gateways publish (CONTRACT §2).
    pub(super) fn new(delivery: Delivery, inbound_exchange: &str) -> Self {
        let from_gateway = delivery.exchange.as_str() == inbound_exchange;
        let published_with = if from_gateway {
            Some(delivery.routing_key.as_str().to_owned())
        } else {
            headers::routing_key(delivery.properties.headers().as_ref()).map(str::to_owned)
        };
        // A retry of ours keeps the intake time it was first read at (its place in line).
        let now = crate::model::envelope::intake_now();
        let kept =
            if from_gateway { None } else { headers::intake(delivery.properties.headers().as_ref(), now) };
        Self { delivery, published_with, from_gateway, intake_us: kept.unwrap_or(now) }
    }

    pub fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    /// What the pipeline reads of this delivery.
    pub fn envelope(&self) -> Envelope<'_> {
        let headers = self.headers();
        Envelope {
            body: &self.delivery.data,
            message_id: self.delivery.properties.message_id().as_ref().map(|m| m.as_str()),
            routing_key: self.routing_key(),
            attempt: self.attempt(),
            seen_before: self.seen_before(),
            trace: TraceContext {
                traceparent: headers::traceparent(headers),
                tracestate: headers::tracestate(headers),
            },
            intake_us: self.intake_us,
        }
    }

    /// The routing key to check the body against, when it is known.
    fn routing_key(&self) -> Option<&str> {
        self.published_with.as_deref()
    }

    /// This delivery's attempt number, from 1: our retries count in `x-attempts`.
    fn attempt(&self) -> u32 {
        let ours = if self.from_gateway { None } else { headers::attempts(self.headers()) };
        ours.unwrap_or(0).saturating_add(1)
    }

    /// Whether this message may have been seen before by a worker that is still
    /// working on it: a broker redelivery (its consumer's channel went away) or one
    /// of our retries. A live lock holder is then not trusted to finish.
    fn seen_before(&self) -> bool {
        self.delivery.redelivered || (!self.from_gateway && headers::seen(self.headers()))
    }

    /// The broker's number for this delivery on its channel (for the span).
    pub fn delivery_tag(&self) -> u64 {
        self.delivery.delivery_tag
    }

    fn headers(&self) -> Option<&lapin::types::FieldTable> {
        self.delivery.properties.headers().as_ref()
    }

    /// Carries out the disposition: moves the message where it says (confirmed),
    /// then acks. A move the broker refuses is tried again, with growing pauses,
    /// for as long as the connection lives; once it is gone the broker has the
    /// delivery back, and nothing is left to do here.
    pub async fn settle(self, publisher: &Publisher, disposition: &Disposition) -> Result<(), BrokerError> {
        if *disposition == Disposition::Ack {
            return self.ack().await;
        }
        let mut carried = Carried::from_delivery(&self.delivery.properties, self.routing_key());
        if matches!(disposition, Disposition::Retry { .. } | Disposition::Defer { .. }) {
            carried.intake_us = Some(self.intake_us);
        }
        let mut pause = MOVE_RETRY_FIRST;
        loop {
            // A delivery whose channel is gone is the broker's again (it will
            // redeliver it): moving it now would only make a second copy.
            if self.delivery.acker.poisoned() {
                return Err(BrokerError::Returned);
            }
            let moved = self.move_once(publisher, &carried, disposition).await;
            match moved {
                Ok(()) => break,
                Err(e) if !publisher.connection_up() => return Err(e),
                Err(BrokerError::Unroutable(target)) => {
                    let queue = match disposition {
                        Disposition::Retry { attempt, .. } => Some(*attempt),
                        Disposition::Defer { delay } => Some(super::publish::park_queue(*delay)),
                        Disposition::DeadLetter { .. } | Disposition::Ack => None,
                    };
                    tracing::warn!(%target, "no queue took the moved message; declaring it again");
                    if let Err(e) = publisher.declare_again(queue).await {
                        tracing::warn!(error = %e, "could not declare the queue again");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MOVE_RETRY_MAX);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "rabbitmq refused to move the message; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MOVE_RETRY_MAX);
                }
            }
        }
        self.ack().await
    }

    /// Acks; lapin answers `false` when the delivery's channel closed meanwhile
    /// (the broker has it back): after a move that is a second copy, said out loud.
    async fn ack(&self) -> Result<(), BrokerError> {
        if self.delivery.ack(BasicAckOptions::default()).await? { Ok(()) } else { Err(BrokerError::Returned) }
    }

    async fn move_once(
        &self,
        publisher: &Publisher,
        carried: &Carried,
        disposition: &Disposition,
    ) -> Result<(), BrokerError> {
        let body = &self.delivery.data;
        match disposition {
            Disposition::Ack => Ok(()),
            Disposition::Retry { attempt, delay, error } => {
                publisher.retry_later(body, carried, *attempt, *delay, error).await
            }
            Disposition::Defer { delay } => {
                publisher.defer(body, carried, self.attempt().saturating_sub(1), *delay).await
            }
            Disposition::DeadLetter { kind, error, attempts } => {
                publisher.dead_letter(body, carried, kind, error, *attempts).await
            }
        }
    }
}
