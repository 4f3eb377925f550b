//! What the load-generating examples (drain, chaos) do as a gateway would.

use anyhow::Context;
use chat_worker::broker::Broker;
use chat_worker::config::Config;
use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// Declares the worker's topology, and a queue collecting every reply from the
/// outbound exchange. Returns a connection and a channel with publisher confirms.
pub async fn gateway(
    config: &Config,
    replies_queue: &str,
    durable: bool,
) -> anyhow::Result<(Connection, Channel)> {
    let broker = Broker::connect(&config.amqp).await.context("connecting to rabbitmq")?;
    broker.declare(config.worker.max_attempts).await?;
    broker.close().await;
    let connection = Connection::connect(&config.amqp.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let options = QueueDeclareOptions { durable, exclusive: !durable, ..Default::default() };
    channel.queue_declare(replies_queue.into(), options, FieldTable::default()).await?;
    channel
        .queue_bind(
            replies_queue.into(),
            config.amqp.outbound_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel))
}

/// Publishes each body to the inbound exchange (persistent, confirmed), keeping
/// at most 1,024 confirms outstanding.
pub async fn publish_all(
    channel: &Channel,
    config: &Config,
    routing_key: &str,
    bodies: impl IntoIterator<Item = String>,
) -> anyhow::Result<()> {
    let mut confirms = Vec::with_capacity(1024);
    for body in bodies {
        let confirm = channel
            .basic_publish(
                config.amqp.inbound_exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        confirms.push(confirm);
        if confirms.len() == 1024 {
            for c in confirms.drain(..) {
                c.await?;
            }
        }
    }
    for c in confirms {
        c.await?;
    }
    Ok(())
}
