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
use lapin::uri::AMQPUri;
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
    /// `amqp.url` is not an AMQP URI lapin can connect to (the message never quotes it).
    #[error("amqp.url is not a usable AMQP URI: {0}")]
    Uri(String),
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

/// `amqp.url` as lapin connects to it, asking for `amqp.heartbeat_secs` unless
/// the URL names a `heartbeat` itself. The heartbeat decides how soon the broker
/// gives the deliveries of a process that stopped answering (hung, paused,
/// partitioned) to another: lapin otherwise takes the broker's 60 s.
fn connection_uri(config: &AmqpConfig) -> Result<AMQPUri, BrokerError> {
    let mut uri: AMQPUri = config.url.parse().map_err(|e: String| {
        // amq-protocol-uri quotes the whole URL in some of its errors.
        BrokerError::Uri(crate::redact::redact_in(&e, &config.url))
    })?;
    uri.query.heartbeat.get_or_insert(config.heartbeat_secs);
    Ok(uri)
}

/// The deliveries of one consumer, each read into an [`Incoming`]. The
/// consumer can be stopped at the broker and started again ([`Self::suspend`],
/// [`Self::prefetch`]): the deliveries it already pushed are still handed out
/// first, so none waits for a channel to close.
pub struct Deliveries {
    consumer: Consumer,
    inbound_exchange: String,
    channel: Channel,
    queue: String,
    tag: String,
    /// The current consumer's tag.
    current: String,
    /// Consumers started so far: each takes a tag of its own (`<tag>#<n>`
    /// after the first), since a quorum queue can crash the channel of a
    /// consumer started again under the tag of one just cancelled with
    /// deliveries in flight (rabbitmq-server#5927, seen with 3.10).
    started: u32,
    /// The prefetch the current consumer was started with, and the one wanted.
    prefetch: u16,
    wanted: u16,
    /// A cancel was sent: the consumer's stream ends once the deliveries it
    /// holds are handed out, and a new consumer (of `wanted`) follows it.
    cancelled: bool,
    /// The cancelled consumer's stream has ended: all it held is handed out.
    ended: bool,
    /// No new consumer follows a cancelled one until [`Self::prefetch`] is called.
    suspended: bool,
}

/// What [`Deliveries::next`] found (a delivery, nearly always: not boxed).
#[allow(clippy::large_enum_variant)]
pub enum Next {
    Delivery(Incoming),
    /// The consumer this process cancelled handed out all it held: call
    /// [`Deliveries::restart`] before reading on.
    Restart,
    /// The broker cancelled the consumer (its queue was deleted, say).
    Cancelled,
}

impl Deliveries {
    /// The next delivery; an error when the connection is lost. Cancel-safe
    /// (it only reads the consumer's stream), so it can be raced against
    /// other work; while suspended it waits until [`Self::prefetch`] and
    /// [`Self::restart`] are called.
    pub async fn next(&mut self) -> Result<Next, BrokerError> {
        use futures_util::StreamExt;
        if self.cancelled && self.ended {
            if self.suspended {
                std::future::pending::<()>().await;
            }
            return Ok(Next::Restart);
        }
        match self.consumer.next().await {
            Some(Ok(delivery)) => Ok(Next::Delivery(Incoming::new(delivery, &self.inbound_exchange))),
            Some(Err(e)) => Err(e.into()),
            None if self.cancelled => {
                self.ended = true;
                Ok(Next::Restart)
            }
            None => Ok(Next::Cancelled),
        }
    }

    /// Starts the consumer that follows a cancelled one, once that one has
    /// handed out all it held, unless suspended. Not cancel-safe: call it
    /// outside any race (a consumer started at the broker whose start was
    /// dropped half-way would take deliveries no one reads).
    pub async fn restart(&mut self) -> Result<(), BrokerError> {
        if self.cancelled && self.ended && !self.suspended {
            self.started += 1;
            let tag = format!("{}#{}", self.tag, self.started);
            self.consumer = start(&self.channel, &self.queue, &tag, self.wanted).await?;
            (self.current, self.prefetch, self.cancelled, self.ended) = (tag, self.wanted, false, false);
        }
        Ok(())
    }

    /// Stops the broker from pushing more deliveries (they wait in the
    /// queue, visible in its depth); the ones already pushed are still
    /// handed out by [`Self::next`].
    pub async fn suspend(&mut self) -> Result<(), BrokerError> {
        self.suspended = true;
        self.cancel().await
    }

    /// Consumes again, `prefetch` deliveries at most pushed ahead (a probe
    /// wants one; the worker its configured number): a consumer started with
    /// another prefetch is replaced once what it pushed is handed out.
    pub async fn prefetch(&mut self, prefetch: u16) -> Result<(), BrokerError> {
        self.wanted = prefetch;
        self.suspended = false;
        if self.prefetch != prefetch { self.cancel().await } else { Ok(()) }
    }

    /// The prefetch asked for last (of the consumer running, or the one to follow it).
    pub fn wanted(&self) -> u16 {
        self.wanted
    }

    async fn cancel(&mut self) -> Result<(), BrokerError> {
        if !self.cancelled {
            // Marked first: a cancel cut short (shutdown) is not sent again
            // as if none had been.
            self.cancelled = true;
            self.channel.basic_cancel(self.current.as_str().into(), Default::default()).await?;
        }
        Ok(())
    }
}

/// Starts a consumer of `queue` with manual acks and `prefetch` deliveries
/// pushed ahead at most (basic.qos applies to the consumers started after it).
async fn start(channel: &Channel, queue: &str, tag: &str, prefetch: u16) -> Result<Consumer, BrokerError> {
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    Ok(channel
        .basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?)
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
        let connection = Connection::connect_uri(
            connection_uri(config)?,
            ConnectionProperties::default().with_connection_name("chat-worker".into()),
        )
        .await
        .map_err(connect_error)?;
        let connection = Arc::new(connection);
        let consume_channel = connection.create_channel().await?;
        let publish_channel = Arc::new(PublishChannel::open(connection.clone(), publishing).await?);
        Ok(Self { connection, consume_channel, publish_channel, config: config.clone() })
    }

    /// The heartbeat timeout agreed with the broker, in seconds (the lower of
    /// ours and the broker's).
    pub fn heartbeat_secs(&self) -> u16 {
        self.connection.configuration().heartbeat()
    }

    /// Declares the topology (idempotent). `retry_attempts` retry queues are declared.
    pub async fn declare(&self, retry_attempts: u32) -> Result<(), BrokerError> {
        topology::declare(&self.connection, &self.config, retry_attempts).await
    }

    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.publish_channel.clone(), &self.config)
    }

    /// Starts consuming the inbound queue with manual acks and `prefetch`
    /// deliveries pushed ahead at most.
    pub async fn consume(&self, consumer_tag: &str, prefetch: u16) -> Result<Deliveries, BrokerError> {
        let queue = self.config.inbound_queue.clone();
        let consumer = start(&self.consume_channel, &queue, consumer_tag, prefetch).await?;
        Ok(Deliveries {
            consumer,
            inbound_exchange: self.config.inbound_exchange.clone(),
            channel: self.consume_channel.clone(),
            queue,
            tag: consumer_tag.to_owned(),
            current: consumer_tag.to_owned(),
            started: 1,
            prefetch,
            wanted: prefetch,
            cancelled: false,
            ended: false,
            suspended: false,
        })
    }

    /// Closes the connection; deliveries not acked by now go back to the queue.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "worker stopping".into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat_asked(url: &str, heartbeat_secs: u16) -> Option<u16> {
        let config = AmqpConfig { url: url.into(), heartbeat_secs, ..AmqpConfig::default() };
        connection_uri(&config).expect("a valid URI").query.heartbeat
    }

    #[test]
    fn the_configured_heartbeat_is_asked_for_unless_the_url_names_one() {
        assert_eq!(
            heartbeat_asked(&AmqpConfig::default().url, AmqpConfig::default().heartbeat_secs),
            Some(10)
        );
        assert_eq!(heartbeat_asked("amqp://u:p@rabbit:5672/%2f", 3), Some(3));
        assert_eq!(heartbeat_asked("amqp://u:p@rabbit:5672/%2f?heartbeat=30", 3), Some(30));
        let config = AmqpConfig {
            url: "amqps://u:p@rabbit/vh?frame_max=131072&connection_timeout=5000".into(),
            heartbeat_secs: 7,
            ..AmqpConfig::default()
        };
        let uri = connection_uri(&config).expect("a valid URI");
        assert_eq!((uri.query.heartbeat, uri.query.frame_max), (Some(7), Some(131_072)), "the rest is kept");
        assert_eq!((uri.authority.host.as_str(), uri.vhost.as_str()), ("rabbit", "vh"));
    }

    #[test]
    fn a_uri_lapin_refuses_is_reported_without_its_password() {
        let config = AmqpConfig { url: "amqp:worker:hunter2@rabbit".into(), ..AmqpConfig::default() };
        let err = connection_uri(&config).expect_err("not a base URL").to_string();
        assert!(err.starts_with("amqp.url is not a usable AMQP URI"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
