//! Confirmed, mandatory publishes: a publish counts only once the broker has
//! confirmed it *and* routed it to a queue, so nothing is acked on the strength of
//! a message that went nowhere.
//!
//! Every publish goes through one [`PublishChannel`] (`channel.rs`), which is
//! reopened when the broker closes it.

use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::BrokerError;
pub use super::channel::PublishChannel;
use super::headers::{self, Carried, long};
use super::topology::retry_queue;
use crate::config::AmqpConfig;
use crate::model::TraceContext;
use crate::telemetry::propagation;

const PERSISTENT: u8 = 2;

pub use super::headers::SEEN as SEEN_HEADER;

#[derive(Clone)]
pub struct Publisher {
    channel: Arc<PublishChannel>,
    outbound_exchange: String,
    dead_queue: String,
    config: AmqpConfig,
}

/// A reply ready to go to `chat.outbound` (CONTRACT §4).
pub struct OutboundReply<'a> {
    pub routing_key: &'a str,
    pub reply_id: &'a str,
    pub in_reply_to: &'a str,
    pub body: &'a [u8],
    /// The span the reply's `traceparent` names when traces are exported: the
    /// delivery's consumer span.
    pub span: opentelemetry::Context,
    /// The gateway's trace context, which the reply carries on unchanged when
    /// traces are not exported (CONTRACT §4).
    pub gateway_trace: TraceContext<'a>,
}

impl Publisher {
    pub fn new(channel: Arc<PublishChannel>, config: &AmqpConfig) -> Self {
        Self {
            channel,
            outbound_exchange: config.outbound_exchange.clone(),
            dead_queue: config.dead_queue.clone(),
            config: config.clone(),
        }
    }

    /// Whether the connection this publisher publishes on is up.
    pub fn connection_up(&self) -> bool {
        self.channel.connection_up()
    }

    /// Declares the dead queue (`None`) or the retry queue of an attempt again,
    /// when the worker declares its topology: a move found no queue, because an
    /// operator deleted it under the running worker.
    pub async fn declare_again(&self, retry_attempt: Option<u32>) -> Result<(), BrokerError> {
        if !self.config.declare_topology {
            return Ok(());
        }
        let connection = &self.channel.connection;
        match retry_attempt {
            None => super::topology::declare_dead_queue(connection, &self.config).await,
            Some(attempt) => super::topology::declare_retry_queue(connection, &self.config, attempt).await,
        }
    }

    pub async fn publish_reply(&self, reply: &OutboundReply<'_>) -> Result<(), BrokerError> {
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(short(reply.reply_id))
            .with_correlation_id(short(reply.in_reply_to))
            .with_headers(trace_headers(&reply.span, reply.gateway_trace))
            .with_timestamp(now_secs());
        self.channel.publish(&self.outbound_exchange, reply.routing_key, reply.body, properties).await
    }

    /// Moves a message, body unchanged, to the dead queue with the `x-error-kind`,
    /// `x-error` (and for failures `x-attempts`) headers.
    pub async fn dead_letter(
        &self,
        body: &[u8],
        carried: &Carried,
        kind: &str,
        error: &str,
        attempts: Option<u32>,
    ) -> Result<(), BrokerError> {
        let mut ours = vec![(headers::ERROR_KIND, long(kind)), (headers::ERROR, headers::error_text(error))];
        if let Some(n) = attempts {
            ours.push((headers::ATTEMPTS, AMQPValue::LongLongInt(i64::from(n))));
        }
        self.channel.publish("", &self.dead_queue, body, carried.properties(ours)).await
    }

    /// Parks a message that failed attempt `attempt` in that attempt's retry queue,
    /// from which it returns to the inbound queue after `delay`.
    pub async fn retry_later(
        &self,
        body: &[u8],
        carried: &Carried,
        attempt: u32,
        delay: Duration,
        error: &str,
    ) -> Result<(), BrokerError> {
        let ours = [
            (headers::ATTEMPTS, AMQPValue::LongLongInt(i64::from(attempt))),
            (headers::LAST_ERROR, headers::error_text(error)),
        ];
        self.park(body, carried, ours, attempt, delay).await
    }

    /// Parks a message for `delay` without counting an attempt: it keeps the
    /// attempts it had spent.
    pub async fn defer(
        &self,
        body: &[u8],
        carried: &Carried,
        spent: u32,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        let ours = (spent > 0).then(|| (headers::ATTEMPTS, AMQPValue::LongLongInt(i64::from(spent))));
        self.park(body, carried, ours, park_queue(delay), delay).await
    }

    /// (See [`park_queue`] for where a deferral waits.)
    async fn park(
        &self,
        body: &[u8],
        carried: &Carried,
        ours: impl IntoIterator<Item = (&'static str, AMQPValue)>,
        queue_attempt: u32,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        let place = carried.intake_us.map(|at| (headers::INTAKE, AMQPValue::LongLongInt(at)));
        let ours = ours.into_iter().chain([(headers::SEEN, AMQPValue::Boolean(true))]).chain(place);
        let properties = carried.properties(ours).with_expiration(short(&delay.as_millis().to_string()));
        self.channel.publish("", &retry_queue(&self.config, queue_attempt), body, properties).await
    }
}

/// A deferral longer than this is a long park (a responder's pause): it waits
/// in retry queue 0, not behind or ahead of the base-delay deferrals of queue 1.
const LONG_PARK: Duration = Duration::from_secs(5);

/// The retry queue a deferral of `delay` waits in.
pub fn park_queue(delay: Duration) -> u32 {
    if delay > LONG_PARK { 0 } else { 1 }
}

/// Short strings are capped at 255 bytes; every caller passes a validated or
/// generated value, and anything longer is cut at a character boundary rather
/// than allowed to panic.
/// The reply's `traceparent`/`tracestate`: `span`'s when traces are
/// exported, else the gateway's unchanged.
fn trace_headers(span: &opentelemetry::Context, gateway: TraceContext<'_>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in propagation::reply_trace(span, gateway) {
        table.insert(name.into(), long(&value));
    }
    table
}

/// A short string, cut to the 255 bytes AMQP allows.
pub(super) fn short(s: &str) -> ShortString {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&s[..end])
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_park_waits_apart_from_the_base_delay_deferrals() {
        assert_eq!(park_queue(Duration::from_secs(1)), 1);
        assert_eq!(park_queue(Duration::from_secs(5)), 1);
        assert_eq!(park_queue(Duration::from_millis(5_001)), 0);
        assert_eq!(park_queue(Duration::from_secs(75)), 0);
    }
}
