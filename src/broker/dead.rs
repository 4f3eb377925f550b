//! The dead-letter queue for operators: list what is in it, send messages back.
//!
//! Listing takes messages without acking them and then closes the channel, which
//! returns them all to the queue: nothing is consumed by looking.

use lapin::Connection;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

use super::BrokerError;
use super::headers::{self, Carried};
use crate::config::AmqpConfig;

/// The longest `x-error` shown by `dead list`: a dead letter's headers are ours,
/// but one the broker dead-lettered carries whatever its gateway set.
const MAX_SHOWN: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<i64>,
    pub bytes: usize,
}

/// The broker's reason (`delivery_limit`, `expired`, `rejected`, `maxlen`) in
/// the newest `x-death` entry, if the broker dead-lettered the message.
fn death_reason(h: Option<&FieldTable>) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = h?.inner().get("x-death")? else { return None };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else { return None };
    let reason = headers::text(Some(newest), "reason", 64).unwrap_or("unknown");
    Some(reason.escape_debug().to_string())
}

/// The routing key a message the broker dead-lettered was published with to
/// `inbound_exchange`, from its `x-death` record.
fn death_origin<'a>(h: Option<&'a FieldTable>, inbound_exchange: &str) -> Option<&'a str> {
    let AMQPValue::FieldArray(deaths) = h?.inner().get("x-death")? else { return None };
    deaths.as_slice().iter().find_map(|death| {
        let AMQPValue::FieldTable(death) = death else { return None };
        if headers::text(Some(death), "exchange", 255)? != inbound_exchange {
            return None;
        }
        let AMQPValue::FieldArray(keys) = death.inner().get("routing-keys")? else { return None };
        match keys.as_slice().first()? {
            AMQPValue::LongString(k) => std::str::from_utf8(k.as_bytes()).ok(),
            AMQPValue::ShortString(k) => Some(k.as_str()),
            _ => None,
        }
    })
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
        let h = d.properties.headers().as_ref();
        // When the broker dead-lettered it (the delivery limit, or an
        // expiration the gateway set), it says why in x-death.
        let broker_reason = death_reason(h);
        let shown = |name| headers::text(h, name, MAX_SHOWN).map(|s| s.escape_debug().to_string());
        out.push(DeadLetter {
            message_id: d.properties.message_id().as_ref().map(|m| m.as_str().escape_debug().to_string()),
            error_kind: shown(headers::ERROR_KIND).or_else(|| broker_reason.clone()),
            error: shown(headers::ERROR)
                .or_else(|| broker_reason.map(|r| format!("the broker dead-lettered it: {r}"))),
            attempts: headers::attempts(h).map(i64::from),
            bytes: d.data.len(),
        });
    }
    // Unacked messages go back to the queue when their channel closes.
    channel.close(200, "listed".into()).await?;
    Ok(out)
}

/// Sends up to `limit` dead letters back to the inbound queue: the body unchanged,
/// with what a moved message keeps (`headers::Carried`: its identity, trace and
/// first routing key) and none of the worker's verdicts, so each starts again at
/// attempt 1. Each is acked in the dead queue only after the broker confirmed its
/// republication.
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
        let h = d.properties.headers().as_ref();
        // The broker's own record first: a message it dead-lettered (delivery
        // limit, an expiration the gateway set) carries the gateway's headers,
        // a forged `x-routing-key` among them, but x-death says where it came in.
        let first_key = death_origin(h, &config.inbound_exchange).or_else(|| headers::routing_key(h));
        let properties = Carried::from_delivery(&d.properties, first_key).properties([]);
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
