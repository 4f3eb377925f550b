//! The messages the bench publishes: questions from the seeded customers about
//! products (with and without a price bound), services, FAQ topics, and a few
//! greetings; every tenth an exact copy of an earlier one (same body, so the same
//! fingerprint), as webhook providers retry. Deterministic for a given seed.

use lapin::PublisherConfirm;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::seed::Customer;
use crate::vocab;

#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub routing_key: String,
    pub body: Vec<u8>,
}

pub struct Workload {
    customers: Vec<Customer>,
    prefix: String,
    rng: fastrand::Rng,
    sent: Vec<Message>,
    fresh: u64,
}

impl Workload {
    /// Messages with ids `<prefix>-<n>`; `seed` makes the sequence repeatable.
    pub fn new(customers: &[Customer], prefix: &str, seed: u64) -> Self {
        Self {
            customers: customers.to_vec(),
            prefix: prefix.to_owned(),
            rng: fastrand::Rng::with_seed(seed),
            sent: Vec::new(),
            fresh: 0,
        }
    }

    pub fn take(&mut self, n: usize) -> Vec<Message> {
        (0..n).map(|_| self.next_message()).collect()
    }

    pub fn next_message(&mut self) -> Message {
        let position = self.sent.len() + 1;
        if position.is_multiple_of(10) && !self.sent.is_empty() {
            // Half the copies follow their original closely (two workers may hold
            // both at once), half come long after it was answered.
            let earlier = if self.rng.bool() {
                self.sent.len() - 1 - self.rng.usize(..self.sent.len().min(20))
            } else {
                self.rng.usize(..self.sent.len())
            };
            let copy = self.sent[earlier].clone();
            self.sent.push(copy.clone());
            return copy;
        }
        self.fresh += 1;
        let customer = &self.customers[self.rng.usize(..self.customers.len())];
        let id = format!("{}-{}", self.prefix, self.fresh);
        let body = json!({
            "message_id": id,
            "tenant_id": customer.tenant_id,
            "channel": customer.channel,
            "customer": { "external_id": customer.external_id, "name": customer.name },
            "conversation_id": null,
            "text": question(&mut self.rng),
            "received_at": chrono::Utc::now().to_rfc3339(),
            "attachments": [],
            "metadata": {}
        });
        let message = Message {
            id,
            routing_key: format!("{}.{}", customer.channel, customer.tenant_id),
            body: body.to_string().into_bytes(),
        };
        self.sent.push(message.clone());
        message
    }
}

/// A customer's question: 35% products under / between prices, 20% products by
/// name or category, 20% services, 20% FAQ topics, 5% greetings.
fn question(rng: &mut fastrand::Rng) -> String {
    let nouns = vocab::nouns();
    let (noun, category) = nouns[rng.usize(..nouns.len())];
    let adjective = pick(rng, vocab::ADJECTIVES);
    // Bounds wide enough that the ~6 products a noun has per tenant (priced
    // 300..12,200) rarely all fall outside: a search with no hit hands the
    // conversation off, and every later message of it gets the holding reply.
    let price = 500 * rng.u32(12..25);
    let service = pick(rng, vocab::SERVICES);
    match rng.u32(0..100) {
        0..=14 => format!("Do you have {} under {price}?", plural(noun)),
        15..=24 => format!("Any {adjective} {noun} below {price} KES?"),
        25..=34 => format!("I need a {noun} between {} and {}", price / 4, price * 3 / 2),
        35..=44 => format!("Show me your {category}"),
        45..=54 => format!("Do you sell a {} {noun}?", pick(rng, vocab::MATERIALS)),
        55..=64 => format!("How much is the {service}?"),
        65..=74 => format!("Can I book {} {service} this week?", pick(rng, vocab::SERVICE_LEVELS)),
        75..=94 => pick(rng, vocab::FAQ).2.to_owned(),
        _ => pick(rng, &["Hello!", "Hi there, good morning", "Thanks, bye"]).to_string(),
    }
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

fn plural(noun: &str) -> String {
    if noun.ends_with('s') { noun.to_owned() } else { format!("{noun}s") }
}

/// Publishes to the inbound exchange as a gateway does (persistent, JSON,
/// `message_id` set, mandatory so a missing binding is an error), with
/// publisher confirms checked by a task of their own so publishing never waits
/// on a confirm (the paced phase must keep its rate).
pub struct Publisher {
    channel: Channel,
    exchange: String,
    /// Publish every message with this routing key rather than its own.
    routing_key: Option<String>,
    confirms: mpsc::Sender<PublisherConfirm>,
    checker: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Publisher {
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
