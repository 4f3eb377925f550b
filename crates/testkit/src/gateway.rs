//! What a gateway does on RabbitMQ, in plain lapin: publishes inbound messages
//! to the inbound exchange and collects the worker's replies from the outbound
//! one. The worker's own topology is declared by the worker (or by its
//! `Broker`), not here.

use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, PublisherConfirm};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Declares `queue` and binds it to `outbound_exchange` for every routing key,
/// so it collects every reply. A durable queue survives the connection (and a
/// broker that closes it); one that is not is exclusive to this connection.
pub async fn replies_queue(
    channel: &Channel,
    queue: &str,
    outbound_exchange: &str,
    durable: bool,
) -> lapin::Result<()> {
    let options = QueueDeclareOptions { durable, exclusive: !durable, ..Default::default() };
    channel.queue_declare(queue.into(), options, FieldTable::default()).await?;
    channel
        .queue_bind(
            queue.into(),
            outbound_exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Publishes each body to `exchange` (persistent, on a channel with publisher
/// confirms), keeping at most 1,024 confirms outstanding; returns once every
/// one is in. Fewer than 1,024 bodies are all published before any confirm is
/// awaited, so they reach the queue together.
pub async fn publish_all(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    bodies: impl IntoIterator<Item = String>,
) -> lapin::Result<()> {
    let mut confirms = Vec::with_capacity(1024);
    for body in bodies {
        let confirm = channel
            .basic_publish(
                exchange.into(),
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

/// One inbound message as a gateway publishes it.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub routing_key: String,
    pub body: Vec<u8>,
}

/// Publishes to an exchange as a gateway does (persistent, JSON, `message_id`
/// set, mandatory so a missing binding is an error), with publisher confirms
/// checked by a task of their own so publishing never waits on a confirm (a
/// paced load must keep its rate).
pub struct Publisher {
    channel: Channel,
    exchange: String,
    /// Publish every message with this routing key rather than its own.
    routing_key: Option<String>,
    confirms: mpsc::Sender<PublisherConfirm>,
    checker: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Publisher {
    /// `channel` must have publisher confirms on (`confirm_select`).
    pub fn new(channel: Channel, exchange: &str) -> Self {
        // At most this many confirms outstanding: publishing waits beyond it.
        let (confirms, mut pending) = mpsc::channel::<PublisherConfirm>(4_096);
        let checker = tokio::spawn(async move {
            while let Some(confirm) = pending.recv().await {
                let confirmation = confirm.await?;
                anyhow::ensure!(confirmation.is_ack(), "rabbitmq refused (nacked) a published message");
                anyhow::ensure!(
                    confirmation.take_message().is_none(),
                    "rabbitmq could not route a published message: is the inbound queue bound?"
                );
            }
            Ok(())
        });
        Self { channel, exchange: exchange.to_owned(), routing_key: None, confirms, checker: Some(checker) }
    }

    /// Publishes straight to `queue` (through the default exchange).
    pub fn to_queue(channel: Channel, queue: &str) -> Self {
        Self { routing_key: Some(queue.to_owned()), ..Self::new(channel, "") }
    }

    pub async fn publish(&mut self, message: &Message) -> anyhow::Result<()> {
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_deref().unwrap_or(&message.routing_key).into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &message.body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(message.id.as_str().into()),
            )
            .await?;
        if self.confirms.send(confirm).await.is_err() {
            // The checker stopped at a failed confirm: report its error.
            return Err(self.checked().await.err().unwrap_or_else(|| anyhow::anyhow!("confirms stopped")));
        }
        Ok(())
    }

    /// Waits until every message published so far is confirmed.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.confirms, closed));
        self.checked().await
    }

    async fn checked(&mut self) -> anyhow::Result<()> {
        match self.checker.take() {
            Some(checker) => checker.await?,
            None => Ok(()),
        }
    }
}
