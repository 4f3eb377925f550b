//! CONTRACT §2's topology, plus the worker's own dead and retry queues.
//!
//! - `chat.inbound` (topic) -> `worker.inbound` (quorum, bound with `#`);
//! - `chat.outbound` (topic), where replies go;
//! - `worker.dead` (quorum): rejected and finally failed messages, unchanged;
//! - `worker.retry.<n>`: a message that failed its n-th attempt waits here for its
//!   per-message expiration, then dead-letters back to `worker.inbound`. One queue
//!   per attempt keeps delays of one size together, so no short delay waits behind
//!   a long one.
//!
//! `worker.inbound` also carries a delivery limit that dead-letters to `worker.dead`:
//! the broker's own backstop for a message that keeps killing the workers that take it.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::BrokerError;
use crate::config::AmqpConfig;

pub fn retry_queue(config: &AmqpConfig, attempt: u32) -> String {
    format!("{}.{attempt}", config.retry_queue_prefix)
}

pub async fn declare(channel: &Channel, config: &AmqpConfig, retry_attempts: u32) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    for exchange in [&config.inbound_exchange, &config.outbound_exchange] {
        channel
            .exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
    }
    let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };

    let mut inbound_args = quorum();
    inbound_args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(config.delivery_limit.min(i32::MAX as u32) as i32),
    );
    inbound_args.insert("x-dead-letter-exchange".into(), long_string(""));
    inbound_args.insert("x-dead-letter-routing-key".into(), long_string(&config.dead_queue));
    channel.queue_declare(config.inbound_queue.as_str().into(), durable_queue, inbound_args).await?;
    channel
        .queue_bind(
            config.inbound_queue.as_str().into(),
            config.inbound_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    channel.queue_declare(config.dead_queue.as_str().into(), durable_queue, quorum()).await?;

    // Attempts 1..max-1 can be retried; queue 1 also holds deferred messages.
    for attempt in 1..=retry_attempts.saturating_sub(1).max(1) {
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), long_string(""));
        args.insert("x-dead-letter-routing-key".into(), long_string(&config.inbound_queue));
        channel.queue_declare(retry_queue(config, attempt).into(), durable_queue, args).await?;
    }
    Ok(())
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}
