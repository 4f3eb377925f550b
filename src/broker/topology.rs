//! CONTRACT §2's topology, plus the worker's own dead and retry queues.
//!
//! - `chat.inbound` (topic) -> `worker.inbound` (quorum, bound with `#`);
//! - `chat.outbound` (topic), where replies go;
//! - `worker.dead` (quorum): rejected and finally failed messages, unchanged;
//! - `<retry_queue_prefix>.<n>` (quorum): a message that failed its n-th attempt
//!   waits here for its per-message expiration, then dead-letters back to
//!   `worker.inbound`. One queue per attempt keeps delays of one size together, so
//!   no short delay waits behind a long one (a per-message expiration takes
//!   effect at the queue's head only). Queue 1 also holds deferred messages
//!   (a base delay), and `<retry_queue_prefix>.0` the long parks: messages
//!   waiting out a responder's request to slow down (seconds to a minute).
//!
//! `worker.inbound` also carries a delivery limit that dead-letters to `worker.dead`:
//! the broker's own backstop for a message that keeps killing the workers that take it.
//!
//! Both broker-made hops (retry -> inbound, inbound -> dead) are at-least-once
//! dead-lettering (`x-dead-letter-strategy`, which needs `x-overflow:
//! reject-publish`): the source queue keeps a message until the target confirmed
//! it, so a move while the target is unavailable is delayed, never dropped.
//!
//! A broker that already holds an older worker's queues refuses a redeclaration
//! with other arguments. The retry queues moved to new names (their default
//! prefix changed; the old classic ones drain into `worker.inbound` by
//! themselves). `worker.inbound` keeps its name, as the contract fixes it: when
//! the broker holds it without the new arguments, the worker uses it as it is
//! and says which policy gives it the same guarantee (docs/upgrading.md).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use super::BrokerError;
use crate::config::AmqpConfig;

/// The policy that gives an older `worker.inbound` the arguments the worker now
/// declares it with (for `rabbitmqctl set_policy`).
pub const INBOUND_POLICY: &str = r#"{"dead-letter-strategy":"at-least-once","overflow":"reject-publish"}"#;

pub fn retry_queue(config: &AmqpConfig, attempt: u32) -> String {
    format!("{}.{attempt}", config.retry_queue_prefix)
}

/// Declares everything; a fresh channel per step that the broker may refuse
/// (a refusal closes its channel).
pub async fn declare(
    connection: &Connection,
    config: &AmqpConfig,
    retry_attempts: u32,
) -> Result<(), BrokerError> {
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    for exchange in [&config.inbound_exchange, &config.outbound_exchange] {
        channel
            .exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
    }
    let channel = declare_inbound(connection, channel, config).await?;
    channel
        .queue_bind(
            config.inbound_queue.as_str().into(),
            config.inbound_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    declare_queue(&channel, &config.dead_queue, quorum()).await?;

    // Attempts 1..max-1 can be retried; queue 1 also holds deferred messages,
    // queue 0 the long parks (see [`super::publish::park_queue`]).
    for attempt in 0..=retry_attempts.saturating_sub(1).max(1) {
        let name = retry_queue(config, attempt);
        let args = at_least_once_to(&config.inbound_queue);
        declare_queue(&channel, &name, args).await.map_err(|e| {
            BrokerError::Topology(format!(
                "retry queue {name}: {e}; it probably exists from an older worker (a classic queue): \
                 set amqp.retry_queue_prefix to a new name, and delete the old queues once empty \
                 (docs/upgrading.md)"
            ))
        })?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Declares the inbound queue with today's arguments, or, when the broker holds
/// it with an older worker's, checks it exists and says how to upgrade it.
async fn declare_inbound(
    connection: &Connection,
    channel: Channel,
    config: &AmqpConfig,
) -> Result<Channel, BrokerError> {
    let delivery_limit = AMQPValue::LongInt(config.delivery_limit.min(i32::MAX as u32) as i32);
    let mut args = at_least_once_to(&config.dead_queue);
    args.insert("x-delivery-limit".into(), delivery_limit.clone());
    let refused = match declare_queue(&channel, &config.inbound_queue, args).await {
        Ok(()) => return Ok(channel),
        Err(BrokerError::Amqp(e)) if precondition_failed(&e) => e,
        Err(e) => return Err(e),
    };
    // Only an older worker's queue, argument for argument, is taken as it is:
    // another (no delivery limit, no dead-letter target, a classic queue) is an
    // operator's to fix, not ours to run on.
    let mut older = quorum();
    older.insert("x-delivery-limit".into(), delivery_limit);
    older.insert("x-dead-letter-exchange".into(), long_string(""));
    older.insert("x-dead-letter-routing-key".into(), long_string(&config.dead_queue));
    let channel = connection.create_channel().await?;
    if let Err(e) = declare_queue(&channel, &config.inbound_queue, older).await {
        return Err(BrokerError::Topology(format!(
            "the inbound queue {} exists with arguments neither this worker nor an older one declares \
             ({refused}; as an older worker's: {e}): delete it once empty, or declare it as docs/upgrading.md shows",
            config.inbound_queue
        )));
    }
    tracing::warn!(
        queue = %config.inbound_queue,
        broker_said = %refused,
        "the inbound queue exists with an older worker's arguments, so its delivery-limit dead letters \
         are at-most-once; give it the same guarantee with: rabbitmqctl set_policy --apply-to queues \
         chat-worker-inbound '^{}$' '{INBOUND_POLICY}' (docs/upgrading.md)",
        regex_escape(&config.inbound_queue)
    );
    Ok(channel)
}

/// Declares the dead queue again (an operator deleted it under a running worker).
pub async fn declare_dead_queue(connection: &Connection, config: &AmqpConfig) -> Result<(), BrokerError> {
    declare_alone(connection, &config.dead_queue, quorum()).await
}

/// Declares the retry queue of `attempt` again.
pub async fn declare_retry_queue(
    connection: &Connection,
    config: &AmqpConfig,
    attempt: u32,
) -> Result<(), BrokerError> {
    declare_alone(connection, &retry_queue(config, attempt), at_least_once_to(&config.inbound_queue)).await
}

/// Declares one queue on a channel of its own, closed afterwards (a refusal
/// closes only that channel).
async fn declare_alone(connection: &Connection, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    let channel = connection.create_channel().await?;
    let declared = declare_queue(&channel, name, args).await;
    let _ = channel.close(200, "declared".into()).await;
    declared
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(name.into(), durable, args).await?;
    Ok(())
}

/// A quorum queue whose dead letters go, at least once, to `target` (a queue name
/// on the default exchange).
fn at_least_once_to(target: &str) -> FieldTable {
    let mut args = quorum();
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert("x-dead-letter-routing-key".into(), long_string(target));
    args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
    args.insert("x-overflow".into(), long_string("reject-publish"));
    args
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

/// Whether the broker refused a declaration because the queue exists with other
/// arguments (406 PRECONDITION_FAILED).
fn precondition_failed(e: &lapin::Error) -> bool {
    e.is_amqp_soft_error() && e.to_string().contains("PRECONDITION_FAILED")
}

fn regex_escape(name: &str) -> String {
    name.chars().fold(String::new(), |mut out, c| {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            out.push('\\');
        }
        out.push(c);
        out
    })
}
