//! What a test does as a gateway would: publishing to the inbound exchange,
//! waiting for replies, reading queues.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{PATIENCE, TestEnv};

impl TestEnv {
    /// A valid inbound message of this test's tenant.
    pub fn message(&self, message_id: &str, customer: &str, text: &str) -> Value {
        json!({
            "message_id": message_id,
            "tenant_id": self.tenant_id,
            "channel": "whatsapp",
            "customer": { "external_id": customer, "name": "Amina" },
            "conversation_id": null,
            "text": text,
            "received_at": "2026-11-21T10:15:30Z",
            "attachments": [],
            "metadata": {}
        })
    }

    /// Publishes raw bytes to this test's inbound exchange, as a gateway does.
    pub async fn publish(&self, body: &[u8]) {
        self.publish_with_headers(body, FieldTable::default()).await;
    }

    /// The routing key a gateway publishes `body` with (CONTRACT §2): its
    /// `<channel>.<tenant_id>`, or this test's tenant on WhatsApp for a body
    /// that has none.
    pub fn routing_key_of(&self, body: &[u8]) -> String {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match (value["channel"].as_str(), value["tenant_id"].as_str()) {
            (Some(channel), Some(tenant)) => format!("{channel}.{tenant}"),
            _ => format!("whatsapp.{}", self.tenant_id),
        }
    }

    pub async fn publish_with_headers(&self, body: &[u8], headers: FieldTable) {
        let routing_key = self.routing_key_of(body);
        self.channel
            .basic_publish(
                self.config.amqp.inbound_exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(headers),
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirm");
    }

    /// Publishes raw bytes to another exchange (e.g. a suffixed worker's).
    pub async fn publish_to(&self, exchange: &str, body: &[u8]) {
        self.channel
            .basic_publish(
                exchange.into(),
                self.routing_key_of(body).into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Publishes `n` copies back to back, then waits for all their confirms, so
    /// they reach the queue together.
    pub async fn publish_copies(&self, value: &Value, n: usize) {
        assert!(n <= 1024, "more than 1,024 copies would not all be published before the first confirm");
        let body = value.to_string();
        let routing_key = self.routing_key_of(body.as_bytes());
        let exchange = &self.config.amqp.inbound_exchange;
        testkit::gateway::publish_all(&self.channel, exchange, &routing_key, std::iter::repeat_n(body, n))
            .await
            .expect("publish and confirm");
    }

    pub async fn publish_json(&self, value: &Value) {
        self.publish(value.to_string().as_bytes()).await;
    }

    /// Publishes `text` from `customer` and waits for its reply (replies to other
    /// messages published meanwhile are taken and dropped).
    pub async fn converse(&self, customer: &str, text: &str) -> Value {
        let message_id = format!("m-{}", Uuid::new_v4().simple());
        self.publish_json(&self.message(&message_id, customer, text)).await;
        self.reply_to(&message_id).await
    }

    /// Like `converse`, through the worker started with `spawn_worker_on(_, suffix)`.
    pub async fn converse_via(&self, suffix: &str, customer: &str, text: &str) -> Value {
        let message_id = format!("m-{}", Uuid::new_v4().simple());
        let body = self.message(&message_id, customer, text).to_string();
        let exchange = format!("{}.{suffix}", self.config.amqp.inbound_exchange);
        self.channel
            .basic_publish(
                exchange.as_str().into(),
                format!("whatsapp.{}", self.tenant_id).into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        self.reply_to(&message_id).await
    }

    pub async fn reply_to(&self, message_id: &str) -> Value {
        let started = Instant::now();
        loop {
            for (_, body) in self.replies().await {
                if body["in_reply_to"] == message_id {
                    return body;
                }
            }
            assert!(started.elapsed() < PATIENCE, "no reply to {message_id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every reply published so far, as JSON.
    pub async fn replies(&self) -> Vec<(lapin::message::Delivery, Value)> {
        self.drain(&self.replies_queue)
            .await
            .into_iter()
            .map(|d| {
                let body = serde_json::from_slice(&d.data).expect("reply is JSON");
                (d, body)
            })
            .collect()
    }

    pub async fn dead_letters(&self) -> Vec<lapin::message::Delivery> {
        self.drain(&self.config.amqp.dead_queue).await
    }

    /// Takes every message now in `queue` (acking it), oldest first.
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while let Some(message) =
            self.channel.basic_get(queue.into(), BasicGetOptions::default()).await.expect("basic_get")
        {
            message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
            out.push(message.delivery);
        }
        out
    }

    pub async fn queue_depth(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }
}
