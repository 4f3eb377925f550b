//! The messages the bench publishes: questions from the seeded customers about
//! products (with and without a price bound), services, FAQ topics, and a few
//! greetings; every tenth an exact copy of an earlier one (same body, so the same
//! fingerprint), as webhook providers retry. Deterministic for a given seed.
//! testkit's `gateway::Publisher` publishes them.
//!
//! Two shapes (`Shape`): single questions from customers picked at random (most
//! messages of a run from distinct conversations), or bursts, where each customer
//! in turn sends `size` messages with distinct texts `gap` apart, several
//! customers' bursts overlapping as they would on a gateway at that rate. Each
//! message carries when it is due from its phase's start (`Planned::at`): the paced
//! phase publishes on that schedule, the drain publishes its backlog in that
//! order as fast as the broker takes it.

use std::collections::BTreeMap;
use std::time::Duration;

use chat_worker::model::Fingerprint;
use serde_json::json;
use testkit::gateway::Message;

use super::seed::Customer;
use super::vocab;

/// What customers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One question at a time, each from a customer picked at random.
    Single,
    /// Every customer, in turn, sends `size` messages `gap` apart.
    Bursts { size: usize, gap: Duration },
}

impl Shape {
    pub fn describe(&self) -> String {
        match self {
            Shape::Single => "single questions from customers at random".into(),
            Shape::Bursts { size, gap } => {
                format!("bursts of {size} messages {} ms apart from every customer in turn", gap.as_millis())
            }
        }
    }
}

/// A message, with what the ledger and the order check need to know of it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub message: Message,
    pub fingerprint: String,
    /// Its conversation: tenant, channel, customer.
    pub conversation: String,
    /// The burst it belongs to (burst shape), numbered within its workload.
    pub burst: Option<u64>,
    /// When it is due, from its phase's start.
    pub at: Duration,
}

pub struct Workload {
    customers: Vec<Customer>,
    prefix: String,
    rng: fastrand::Rng,
    shape: Shape,
    /// Between two fresh messages (single) or two bursts' starts.
    interval: Duration,
    /// No message (single) or burst starts at or after this.
    end: Option<Duration>,
    sent: Vec<Planned>,
    fresh: u64,
    /// Bursts: messages made but not yet due, by (due, order made).
    pending: BTreeMap<(Duration, u64), Planned>,
    bursts: u64,
    /// Bursts: the customers in the order they take their turns.
    turns: Vec<usize>,
}

impl Workload {
    /// Messages with ids `<prefix>-<n>`; `seed` makes the sequence repeatable;
    /// `rate` (messages/s, copies included) spaces them out; with `end`, the
    /// workload stops there (a burst begun before it is sent whole).
    pub fn new(
        customers: &[Customer],
        prefix: &str,
        seed: u64,
        shape: Shape,
        rate: f64,
        end: Option<Duration>,
    ) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let per_second = match shape {
            Shape::Single => rate,
            // One message in ten is a copy: the fresh ones come in bursts.
            Shape::Bursts { size, .. } => rate * 0.9 / size.max(1) as f64,
        };
        let mut turns: Vec<usize> = (0..customers.len()).collect();
        if matches!(shape, Shape::Bursts { .. }) {
            rng.shuffle(&mut turns);
        }
        Self {
            customers: customers.to_vec(),
            prefix: prefix.to_owned(),
            rng,
            shape,
            interval: Duration::from_secs_f64(1.0 / per_second.max(1e-3)),
            end,
            sent: Vec::new(),
            fresh: 0,
            pending: BTreeMap::new(),
            bursts: 0,
            turns,
        }
    }

    /// The next `n` messages (fewer if the workload ends first).
    pub fn take(&mut self, n: usize) -> Vec<Planned> {
        (0..n).map_while(|_| self.next_planned()).collect()
    }

    /// Every message up to the workload's end (it must have one).
    pub fn all(&mut self) -> Vec<Planned> {
        std::iter::from_fn(|| if self.end.is_some() { self.next_planned() } else { None }).collect()
    }

    pub fn next_planned(&mut self) -> Option<Planned> {
        let position = self.sent.len() + 1;
        if position.is_multiple_of(10) && !self.sent.is_empty() {
            // Half the copies follow their original closely (two workers may hold
            // both at once), half come long after it was answered.
            let earlier = if self.rng.bool() {
                self.sent.len() - 1 - self.rng.usize(..self.sent.len().min(20))
            } else {
                self.rng.usize(..self.sent.len())
            };
            let mut copy = self.sent[earlier].clone();
            copy.at = match self.shape {
                // Its own place in the rate, as every message has.
                Shape::Single => self.interval.mul_f64(self.sent.len() as f64),
                // Among the bursts under way, where it came.
                Shape::Bursts { .. } => self.sent[self.sent.len() - 1].at,
            };
            // (A burst begun before the end is sent whole, copies among it.)
            if self.shape == Shape::Single && self.end.is_some_and(|end| copy.at >= end) {
                return None;
            }
            self.sent.push(copy.clone());
            return Some(copy);
        }
        let planned = match self.shape {
            Shape::Single => {
                let at = self.interval.mul_f64(self.sent.len() as f64);
                if self.end.is_some_and(|end| at >= end) {
                    return None;
                }
                let customer = self.rng.usize(..self.customers.len());
                let text = question(&mut self.rng);
                self.fresh_message(customer, text, None, at)
            }
            Shape::Bursts { size, gap } => self.next_of_bursts(size, gap)?,
        };
        self.sent.push(planned.clone());
        Some(planned)
    }

    /// The earliest message due of the bursts begun so far, beginning the next
    /// burst first when it starts before that one is due.
    fn next_of_bursts(&mut self, size: usize, gap: Duration) -> Option<Planned> {
        loop {
            let start = self.interval.mul_f64(self.bursts as f64);
            let earliest = self.pending.first_key_value().map(|((at, _), _)| *at);
            let may_start = self.end.is_none_or(|end| start < end);
            if may_start && earliest.is_none_or(|at| start <= at) {
                self.begin_burst(start, size, gap);
                continue;
            }
            return self.pending.pop_first().map(|(_, planned)| planned);
        }
    }

    fn begin_burst(&mut self, start: Duration, size: usize, gap: Duration) {
        let burst = self.bursts;
        self.bursts += 1;
        let customer = self.turns[(burst as usize) % self.turns.len()];
        let mut texts: Vec<String> = Vec::with_capacity(size);
        for j in 0..size {
            // Distinct texts: a customer does not send the same words twice in a row.
            let mut text = question(&mut self.rng);
            for _ in 0..20 {
                if !texts.contains(&text) {
                    break;
                }
                text = question(&mut self.rng);
            }
            if texts.contains(&text) {
                text = format!("{text} ({})", j + 1);
            }
            texts.push(text.clone());
            let at = start + gap * j as u32;
            let planned = self.fresh_message(customer, text, Some(burst), at);
            self.pending.insert((at, self.fresh), planned);
        }
    }

    fn fresh_message(&mut self, customer: usize, text: String, burst: Option<u64>, at: Duration) -> Planned {
        self.fresh += 1;
        let customer = &self.customers[customer];
        let id = format!("{}-{}", self.prefix, self.fresh);
        let tenant = customer.tenant_id.to_string();
        let fingerprint = Fingerprint::of(&tenant, &customer.channel, &customer.external_id, &id, &text);
        let body = json!({
            "message_id": id,
            "tenant_id": customer.tenant_id,
            "channel": customer.channel,
            "customer": { "external_id": customer.external_id, "name": customer.name },
            "conversation_id": null,
            "text": text,
            "received_at": chrono::Utc::now().to_rfc3339(),
            "attachments": [],
            "metadata": {}
        });
        Planned {
            message: Message {
                id,
                routing_key: format!("{}.{}", customer.channel, customer.tenant_id),
                body: body.to_string().into_bytes(),
            },
            fingerprint: fingerprint.as_str().to_owned(),
            conversation: format!("{tenant}/{}/{}", customer.channel, customer.external_id),
            burst,
            at,
        }
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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn customers(n: usize) -> Vec<Customer> {
        (0..n)
            .map(|i| Customer {
                tenant_id: uuid::Uuid::from_u128(i as u128 % 3 + 1),
                channel: "web".into(),
                external_id: format!("+2547{i:08}"),
                name: "Amina".into(),
            })
            .collect()
    }

    const GAP: Duration = Duration::from_millis(20);

    #[test]
    fn bursts_are_distinct_messages_gap_apart_from_one_customer_due_in_order_with_one_copy_in_ten() {
        let shape = Shape::Bursts { size: 5, gap: GAP };
        let plan = Workload::new(&customers(50), "t", 1, shape, 1_000.0, None).take(1_000);
        assert_eq!(plan.len(), 1_000);
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at), "published in the order they are due");
        let mut seen = HashSet::new();
        let mut bursts: HashMap<u64, Vec<&Planned>> = HashMap::new();
        for (i, planned) in plan.iter().enumerate() {
            let fresh = seen.insert(planned.fingerprint.clone());
            assert_eq!(fresh, (i + 1) % 10 != 0, "message {i}: every tenth is a copy");
            if fresh {
                bursts.entry(planned.burst.expect("a burst")).or_default().push(planned);
            }
        }
        // All bursts whole but the few still under way when the workload was cut.
        assert!(bursts.values().filter(|b| b.len() == 5).count() >= bursts.len() - 20);
        for burst in bursts.values() {
            assert!(burst.iter().all(|m| m.conversation == burst[0].conversation));
            let texts: HashSet<String> = burst
                .iter()
                .map(|m| {
                    let body: serde_json::Value = serde_json::from_slice(&m.message.body).expect("json");
                    body["text"].as_str().unwrap_or_default().to_owned()
                })
                .collect();
            assert_eq!(texts.len(), burst.len(), "distinct texts");
            assert!(burst.windows(2).all(|w| w[1].at - w[0].at == GAP));
        }
        // 900 fresh messages in bursts of 5 from 50 customers taking turns.
        let conversations: HashSet<&str> = plan.iter().map(|m| m.conversation.as_str()).collect();
        assert_eq!(conversations.len(), 50);
    }

    #[test]
    fn a_paced_workload_sends_whole_bursts_begun_before_its_end_at_its_rate() {
        let shape = Shape::Bursts { size: 5, gap: GAP };
        let end = Duration::from_secs(2);
        let plan = Workload::new(&customers(2_000), "p", 2, shape, 250.0, Some(end)).all();
        let fresh: HashSet<&str> = plan.iter().map(|m| m.fingerprint.as_str()).collect();
        // 250 messages/s, one in ten a copy: 45 bursts/s of 5 (the 91st starting
        // just before 2 s or at it, as the float falls), sent whole.
        assert!(fresh.len() == 450 || fresh.len() == 455, "{} fresh messages", fresh.len());
        assert_eq!(plan.len(), fresh.len() + fresh.len() / 9, "one copy in ten");
        assert!(plan.iter().all(|m| m.at < end + GAP * 4));
    }

    #[test]
    fn single_questions_come_from_customers_at_random_at_the_rate() {
        let plan =
            Workload::new(&customers(2_000), "d", 1, Shape::Single, 100.0, Some(Duration::from_secs(1)))
                .all();
        assert_eq!(plan.len(), 100);
        assert!(plan.iter().all(|m| m.burst.is_none()));
        assert_eq!(plan[99].at, Duration::from_secs_f64(0.99));
        let conversations: HashSet<&str> = plan.iter().map(|m| m.conversation.as_str()).collect();
        assert!(conversations.len() > 80, "{} conversations", conversations.len());
    }
}
