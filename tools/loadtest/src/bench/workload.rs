//! The messages the bench publishes: questions from the seeded customers about
//! products (with and without a price bound), services, FAQ topics, and a few
//! greetings; every tenth an exact copy of an earlier one (same body, so the same
//! fingerprint), as webhook providers retry. Deterministic for a given seed.
//! testkit's `gateway::Publisher` publishes them.

use serde_json::json;
use testkit::gateway::Message;

use super::seed::Customer;
use super::vocab;

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
