//! Confirmed, mandatory publishes: a publish counts only once the broker has
//! confirmed it *and* routed it to a queue, so nothing is acked on the strength of
//! a message that went nowhere.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};

use super::BrokerError;
use super::topology::retry_queue;
use crate::config::AmqpConfig;

const PERSISTENT: u8 = 2;

/// Set on every message a worker parks in a retry queue: when it comes back, it
/// is a copy some worker has handled before (see `Incoming::seen_before`).
pub const SEEN_HEADER: &str = "x-worker-seen";

#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
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
    /// `traceparent` / `tracestate` of the worker's span.
    pub headers: FieldTable,
}

impl Publisher {
    pub fn new(channel: Channel, config: &AmqpConfig) -> Self {
        Self {
            channel,
            outbound_exchange: config.outbound_exchange.clone(),
            dead_queue: config.dead_queue.clone(),
            config: config.clone(),
        }
    }

    pub async fn publish_reply(&self, reply: &OutboundReply<'_>) -> Result<(), BrokerError> {
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(short(reply.reply_id))
            .with_correlation_id(short(reply.in_reply_to))
            .with_headers(reply.headers.clone())
            .with_timestamp(now_secs());
        self.publish(&self.outbound_exchange, reply.routing_key, reply.body, properties).await
    }

    /// Moves a message, body and properties unchanged, to the dead queue with the
    /// `x-error-kind`, `x-error` (and for failures `x-attempts`) headers.
    pub async fn dead_letter(
        &self,
        body: &[u8],
        properties: &BasicProperties,
        kind: &str,
        error: &str,
        attempts: Option<u32>,
    ) -> Result<(), BrokerError> {
        let mut headers = own_headers(properties);
        headers.insert("x-error-kind".into(), long(kind));
        headers.insert("x-error".into(), long(error));
        if let Some(n) = attempts {
            headers.insert("x-attempts".into(), AMQPValue::LongLongInt(i64::from(n)));
        }
        let properties = properties.clone().with_headers(headers).with_delivery_mode(PERSISTENT);
        self.publish("", &self.dead_queue, body, properties).await
    }

    /// Parks a message that failed attempt `attempt` in that attempt's retry queue,
    /// from which it returns to the inbound queue after `delay`.
    pub async fn retry_later(
        &self,
        body: &[u8],
        properties: &BasicProperties,
        attempt: u32,
        delay: Duration,
        error: &str,
    ) -> Result<(), BrokerError> {
        let mut headers = own_headers(properties);
        headers.insert("x-attempts".into(), AMQPValue::LongLongInt(i64::from(attempt)));
        headers.insert("x-last-error".into(), long(error));
        self.park(body, properties, headers, attempt, delay).await
    }

    /// Parks a message for `delay` without counting an attempt.
    pub async fn defer(
        &self,
        body: &[u8],
        properties: &BasicProperties,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        let headers = own_headers(properties);
        self.park(body, properties, headers, 1, delay).await
    }

    async fn park(
        &self,
        body: &[u8],
        properties: &BasicProperties,
        mut headers: FieldTable,
        queue_attempt: u32,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        headers.insert(SEEN_HEADER.into(), AMQPValue::Boolean(true));
        let properties = properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(PERSISTENT)
            .with_expiration(short(&delay.as_millis().to_string()));
        self.publish("", &retry_queue(&self.config, queue_attempt), body, properties).await
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let target = || {
            format!(
                "{} with routing key {routing_key}",
                if exchange.is_empty() { "the default exchange" } else { exchange }
            )
        };
        let confirm = self
            .channel
            .basic_publish(
                short(exchange),
                short(routing_key),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                properties,
            )
            .await?
            .await?;
        if !confirm.is_ack() {
            return Err(BrokerError::Nacked(target()));
        }
        if confirm.take_message().is_some() {
            return Err(BrokerError::Unroutable(target()));
        }
        Ok(())
    }
}

/// The message's headers, less the one the broker sets per delivery: a copy we
/// publish is a new message, and a stale `x-delivery-count` would only mislead.
fn own_headers(properties: &BasicProperties) -> FieldTable {
    let headers = properties.headers().clone().unwrap_or_default();
    let kept: std::collections::BTreeMap<_, _> = headers
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-delivery-count")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    FieldTable::from(kept)
}

/// A header value from untrusted text: long strings have no length limit.
fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

/// Short strings are capped at 255 bytes; every caller passes a validated or
/// generated value, and anything longer is cut at a character boundary rather
/// than allowed to panic.
fn short(s: &str) -> ShortString {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&s[..end])
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
