//! One delivery from `worker.inbound`: what the pipeline reads of it, and how it is
//! settled once the outcome is known.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;

use super::publish::SEEN_HEADER;
use super::{BrokerError, Publisher};
use crate::outcome::Disposition;

/// A pause before handing a delivery back when it could not be moved where its
/// outcome says, so a broker that refuses the move is not hammered in a loop.
const HAND_BACK_PAUSE: Duration = Duration::from_secs(1);

pub struct Incoming {
    delivery: Delivery,
}

impl Incoming {
    pub fn new(delivery: Delivery) -> Self {
        Self { delivery }
    }

    pub fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    /// This delivery's attempt number, from 1: our retries count in `x-attempts`.
    pub fn attempt(&self) -> u32 {
        let previous = self
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-attempts"))
            .and_then(as_u32)
            .unwrap_or(0);
        previous.saturating_add(1)
    }

    /// Whether this message may have been seen before by a worker that is still
    /// working on it: a broker redelivery (its consumer's channel went away) or one
    /// of our retries. A live lock holder is then not trusted to finish.
    pub fn seen_before(&self) -> bool {
        self.delivery.redelivered
            || self.delivery.properties.headers().as_ref().is_some_and(|h| h.contains_key(SEEN_HEADER))
    }

    pub fn delivery_tag(&self) -> u64 {
        self.delivery.delivery_tag
    }

    pub fn headers(&self) -> Option<&lapin::types::FieldTable> {
        self.delivery.properties.headers().as_ref()
    }

    /// The producer's `message_id` property, for logs when the body is unreadable.
    pub fn message_id(&self) -> Option<&str> {
        self.delivery.properties.message_id().as_ref().map(|m| m.as_str())
    }

    /// Carries out the disposition: moves the message where it says (confirmed),
    /// then acks. If the move fails the delivery is handed back to the queue.
    pub async fn settle(self, publisher: &Publisher, disposition: &Disposition) -> Result<(), BrokerError> {
        let moved = match disposition {
            Disposition::Ack => Ok(()),
            Disposition::Retry { attempt, delay, error } => {
                publisher
                    .retry_later(&self.delivery.data, &self.delivery.properties, *attempt, *delay, error)
                    .await
            }
            Disposition::Defer { delay } => {
                publisher.defer(&self.delivery.data, &self.delivery.properties, *delay).await
            }
            Disposition::DeadLetter { kind, error, attempts } => {
                publisher
                    .dead_letter(&self.delivery.data, &self.delivery.properties, kind, error, *attempts)
                    .await
            }
        };
        match moved {
            Ok(()) => {
                self.delivery.ack(BasicAckOptions::default()).await?;
                Ok(())
            }
            Err(e) => {
                tokio::time::sleep(HAND_BACK_PAUSE).await;
                self.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
                Err(e)
            }
        }
    }

    /// Hands the delivery back to the queue untouched (e.g. at shutdown).
    pub async fn hand_back(self) -> Result<(), BrokerError> {
        self.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
        Ok(())
    }
}

fn as_u32(v: &AMQPValue) -> Option<u32> {
    let n: i64 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    u32::try_from(n).ok()
}
