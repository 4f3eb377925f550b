//! The confirmed publishing channel of one connection. The broker may close it
//! (a refused publish closes its channel in AMQP 0-9-1): it is then reopened at
//! once and the publish tried once more on the new one, so one refused publish
//! never leaves the worker unable to settle the messages after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};

use super::BrokerError;
use super::publish::short;

/// The longest a publish waits for the broker's confirm. Confirms take
/// milliseconds; one that never comes (a queue without a leader, a connection
/// blocked by a memory alarm) must fail the publish — and readiness — rather
/// than hold the delivery, and its permit, for ever.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The confirmed publishing channel of one connection, reopened when the broker
/// closes it. `usable` (readiness) is false while the last publish to some
/// destination failed: a worker that can park retries but cannot publish a
/// single reply is not doing its job.
pub struct PublishChannel {
    pub(super) connection: Arc<Connection>,
    current: std::sync::Mutex<Channel>,
    /// One reopening at a time: the publishes that failed together share it.
    reopening: tokio::sync::Mutex<()>,
    usable: Arc<AtomicBool>,
    /// Destinations (exchange, or queue on the default exchange) whose last publish failed.
    failing: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl PublishChannel {
    pub async fn open(connection: Arc<Connection>, usable: Arc<AtomicBool>) -> Result<Self, BrokerError> {
        let channel = confirmed_channel(&connection).await?;
        usable.store(true, Ordering::Relaxed);
        Ok(Self {
            connection,
            current: std::sync::Mutex::new(channel),
            reopening: Default::default(),
            usable,
            failing: Default::default(),
        })
    }

    fn current(&self) -> Channel {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the connection itself is still up (a closed one is the session's
    /// to reconnect; nothing published on it can be retried here).
    pub fn connection_up(&self) -> bool {
        self.connection.status().connected()
    }

    /// A fresh channel in place of `failed`, unless another publish already replaced it.
    async fn reopen(&self, failed: &Channel) -> Result<Channel, BrokerError> {
        let _one = self.reopening.lock().await;
        let current = self.current();
        if current.id() != failed.id() && current.status().connected() {
            return Ok(current);
        }
        let fresh = confirmed_channel(&self.connection).await?;
        tracing::warn!(
            closed = failed.id(),
            opened = fresh.id(),
            "rabbitmq closed the publishing channel; reopened it"
        );
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    pub(super) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let channel = self.current();
        let first = confirmed(publish_on(&channel, exchange, routing_key, body, properties.clone())).await;
        let result = match first {
            Err(_) if !channel.status().connected() && self.connection_up() => {
                match self.reopen(&channel).await {
                    Ok(fresh) => confirmed(publish_on(&fresh, exchange, routing_key, body, properties)).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        self.note(if exchange.is_empty() { routing_key } else { exchange }, result.is_ok());
        result
    }

    /// Records how the last publish to `destination` went. The happy path costs
    /// one atomic load: the set is touched only while something is failing.
    fn note(&self, destination: &str, ok: bool) {
        if ok && self.usable.load(Ordering::Relaxed) {
            return;
        }
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            failing.remove(destination);
        } else {
            failing.insert(destination.to_owned());
        }
        self.usable.store(failing.is_empty(), Ordering::Relaxed);
    }
}

/// `publish` within [`CONFIRM_TIMEOUT`].
async fn confirmed(
    publish: impl std::future::Future<Output = Result<(), BrokerError>>,
) -> Result<(), BrokerError> {
    tokio::time::timeout(CONFIRM_TIMEOUT, publish)
        .await
        .unwrap_or(Err(BrokerError::Unconfirmed(CONFIRM_TIMEOUT.as_secs())))
}

async fn confirmed_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

async fn publish_on(
    channel: &Channel,
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
    let confirm = channel
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
