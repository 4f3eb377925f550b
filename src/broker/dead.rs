//! The dead-letter queue for operators: list what is in it, send messages back.
//!
//! Listing takes messages without acking them and then closes the channel, which
//! returns them all to the queue: nothing is consumed by looking.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use serde::Serialize;

use super::BrokerError;
use crate::config::AmqpConfig;

/// Headers the worker adds on the way to the dead queue, dropped on replay.
const OUR_HEADERS: &[&str] =
    &["x-error-kind", "x-error", "x-attempts", "x-last-error", "x-worker-seen", "x-delivery-count"];

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<i64>,
    pub bytes: usize,
}

fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_int(headers: &FieldTable, name: &str) -> Option<i64> {
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Up to `limit` dead letters, oldest first, left in the queue.
pub async fn list(
    connection: &Connection,
    config: &AmqpConfig,
    limit: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let channel = connection.create_channel().await?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(message) =
            channel.basic_get(config.dead_queue.as_str().into(), BasicGetOptions::default()).await?
        else {
            break;
        };
        let d = message.delivery;
        let headers = d.properties.headers().clone().unwrap_or_default();
        // When the broker dead-lettered it (delivery limit), it says why in x-death.
        let broker_reason =
            headers.inner().get("x-death").map(|_| "broker: delivery limit reached".to_owned());
        out.push(DeadLetter {
            message_id: d.properties.message_id().as_ref().map(|m| m.as_str().to_owned()),
            error_kind: header_text(&headers, "x-error-kind")
                .or_else(|| broker_reason.as_ref().map(|_| "delivery_limit".into())),
            error: header_text(&headers, "x-error").or(broker_reason),
            attempts: header_int(&headers, "x-attempts"),
            bytes: d.data.len(),
        });
    }
    // Unacked messages go back to the queue when their channel closes.
    channel.close(200, "listed".into()).await?;
    Ok(out)
}

/// Sends up to `limit` dead letters back to the inbound queue, unchanged but for
/// the worker's own headers (so each starts again at attempt 1). Each is acked in
/// the dead queue only after the broker confirmed its republication.
pub async fn replay(
    connection: &Connection,
    config: &AmqpConfig,
    limit: usize,
) -> Result<usize, BrokerError> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    // Only what is there now: a replayed message that fails again comes back to
    // this queue, and must not be replayed again in the same run.
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let present = channel
        .queue_declare(config.dead_queue.as_str().into(), passive, FieldTable::default())
        .await?
        .message_count();
    let limit = limit.min(present as usize);
    let mut replayed = 0;
    while replayed < limit {
        let Some(message) =
            channel.basic_get(config.dead_queue.as_str().into(), BasicGetOptions::default()).await?
        else {
            break;
        };
        let d = message.delivery;
        let headers = d.properties.headers().clone().unwrap_or_default();
        let kept: std::collections::BTreeMap<_, _> = headers
            .inner()
            .iter()
            .filter(|(k, _)| !OUR_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let properties: BasicProperties = d.properties.clone().with_headers(FieldTable::from(kept));
        let confirm = channel
            .basic_publish(
                "".into(),
                config.inbound_queue.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &d.data,
                properties,
            )
            .await?
            .await?;
        if !confirm.is_ack() || confirm.take_message().is_some() {
            return Err(BrokerError::Unroutable(format!("the inbound queue {}", config.inbound_queue)));
        }
        d.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    channel.close(200, "replayed".into()).await?;
    Ok(replayed)
}
