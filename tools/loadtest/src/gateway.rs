//! What the load tools do as a gateway would, on the worker's topology: declare
//! it, collect the replies, and remove it afterwards. Publishing itself is
//! testkit's (`testkit::gateway`).

use anyhow::Context;
use chat_worker::broker::Broker;
use chat_worker::config::Config;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};

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
    testkit::gateway::replies_queue(&channel, replies_queue, &config.amqp.outbound_exchange, durable).await?;
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
    testkit::gateway::publish_all(channel, &config.amqp.inbound_exchange, routing_key, bodies).await?;
    Ok(())
}

/// Deletes the queues and exchanges the workers declared, over AMQP (quicker than
/// scripts/isolated.sh's rabbitmqctl, which stays as the backstop for a crashed run).
pub async fn remove_topology(config: &Config, channel: &Channel) {
    let amqp = &config.amqp;
    let retries = (0..config.worker.max_attempts.max(2)).map(|n| format!("{}.{n}", amqp.retry_queue_prefix));
    for queue in [amqp.inbound_queue.clone(), amqp.dead_queue.clone()].into_iter().chain(retries) {
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
    for exchange in [&amqp.inbound_exchange, &amqp.outbound_exchange] {
        let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
    }
}
