//! RabbitMQ: the only module that touches connections, channels and ackers.
//!
//! - [`topology`] declares CONTRACT §2's exchanges and queues, plus the dead and retry queues;
//! - [`publish`] sends replies, dead letters and retries, each confirmed by the broker;
//! - [`delivery`] reads what the worker needs from a delivery and settles it as the
//!   outcome decided.

mod channel;
pub mod dead;
pub mod delivery;
mod depth;
mod disposition;
pub mod headers;
pub mod publish;
pub mod topology;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

use publish::PublishChannel;

use crate::config::AmqpConfig;
use crate::redact::redact_url;

pub use delivery::Incoming;
pub use disposition::Disposition;
pub use publish::Publisher;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The URL is kept (redacted) for callers; the message is the cause alone,
    /// since the caller's context already names the broker.
    #[error("{source}")]
    Connect { url: String, source: lapin::Error },
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rabbitmq did not confirm the publish to {0}")]
    Nacked(String),
    #[error("rabbitmq could not route the publish to {0}: no queue is bound for it")]
    Unroutable(String),
    #[error("{0}")]
    Topology(String),
    #[error("rabbitmq did not confirm a publish within {0}s")]
    Unconfirmed(u64),
    #[error("the delivery's channel closed, so the broker has it back and will deliver it again")]
    Returned,
}

/// The deliveries of one consumer, each read into an [`Incoming`].
pub struct Deliveries {
    consumer: Consumer,
    inbound_exchange: String,
}

impl Deliveries {
    /// The next delivery; `Ok(None)` when the broker cancelled the consumer,
    /// an error when the connection is lost.
    pub async fn next(&mut self) -> Result<Option<Incoming>, BrokerError> {
        use futures_util::StreamExt;
        match self.consumer.next().await {
            Some(Ok(delivery)) => Ok(Some(Incoming::new(delivery, &self.inbound_exchange))),
            Some(Err(e)) => Err(e.into()),
            None => Ok(None),
        }
    }
}

/// One connection with two channels: consuming and (confirmed) publishing.
pub struct Broker {
    pub connection: Arc<Connection>,
    consume_channel: Channel,
    publish_channel: Arc<PublishChannel>,
    config: AmqpConfig,
}

impl Broker {
    pub async fn connect(config: &AmqpConfig) -> Result<Self, BrokerError> {
        Self::connect_reporting(config, Arc::default()).await
    }

    /// Connects; `publishing` says from then on whether the last publish on this
    /// connection could be made (what `/readyz` reports).
    pub async fn connect_reporting(
        config: &AmqpConfig,
        publishing: Arc<AtomicBool>,
    ) -> Result<Self, BrokerError> {
        let connect_error = |source| BrokerError::Connect { url: redact_url(&config.url), source };
        let connection = Connection::connect(
            &config.url,
            ConnectionProperties::default().with_connection_name("chat-worker".into()),
        )
        .await
        .map_err(connect_error)?;
        let connection = Arc::new(connection);
        let consume_channel = connection.create_channel().await?;
        let publish_channel = Arc::new(PublishChannel::open(connection.clone(), publishing).await?);
        Ok(Self { connection, consume_channel, publish_channel, config: config.clone() })
    }

    /// Declares the topology (idempotent). `retry_attempts` retry queues are declared.
    pub async fn declare(&self, retry_attempts: u32) -> Result<(), BrokerError> {
        topology::declare(&self.connection, &self.config, retry_attempts).await
    }

    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.publish_channel.clone(), &self.config)
    }

    /// Starts consuming the inbound queue with manual acks and `prefetch` deliveries in flight.
    pub async fn consume(&self, consumer_tag: &str) -> Result<Deliveries, BrokerError> {
        self.consume_channel.basic_qos(self.config.prefetch, BasicQosOptions::default()).await?;
        let consumer = self
            .consume_channel
            .basic_consume(
                self.config.inbound_queue.as_str().into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Deliveries { consumer, inbound_exchange: self.config.inbound_exchange.clone() })
    }

    /// Stops the broker from sending more deliveries; those in flight can still be settled.
    pub async fn stop_consuming(&self, consumer_tag: &str) -> Result<(), BrokerError> {
        self.consume_channel.basic_cancel(consumer_tag.into(), Default::default()).await?;
        Ok(())
    }

    /// Closes the connection; deliveries not acked by now go back to the queue.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "worker stopping".into()).await;
    }
}
