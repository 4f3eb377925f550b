//! Prometheus metrics (CONTRACT §7), with the `prometheus-client` crate: typed
//! metric families in one registry per process, encoded as text at `/metrics`.
//!
//! Call sites stay one line (`metrics.outcome(&o)`, `metrics.stage("respond", t)`).

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    pub tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: &'static str,
}

/// The pipeline's stages, as spans and `stage_duration_seconds` name them.
pub const STAGES: [&str; 9] =
    ["decode", "tenant", "lock", "catalog", "history", "respond", "persist", "publish", "ack"];

pub struct Metrics {
    registry: Registry,
    pub messages: Family<OutcomeLabel, Counter>,
    pub stage_seconds: Family<StageLabel, Histogram>,
    pub in_flight: Gauge,
    pub retries: Counter,
    pub dead_letters: Family<KindLabel, Counter>,
    pub lock_contention: Counter,
    pub lock_takeovers: Counter,
    pub locks_swept: Counter,
    pub cache_lookups: Family<TierLabel, Counter>,
    pub reconnects: Family<ServiceLabel, Counter>,
    pub db_pool_connections: Gauge,
    pub db_pool_idle: Gauge,
    pub queue_depth: Gauge,
    pub queue_consumers: Gauge,
    pub redis_round_trips: Counter<u64, AtomicU64>,
    pub commit_batch_size: Histogram,
    pub commit_batches_split: Counter,
    /// 1 while this process calls its responder not at all: it asked to slow down.
    pub responder_paused: Gauge,
    /// 1 while the responder's circuit is open (or its probe out): down for every message.
    pub responder_down: Gauge,
    pub responder_circuit_opened: Counter,
    /// Messages not sent to the responder: their tenant's token budget was spent.
    pub budget_spent: Counter,
    /// Messages that waited for, or were parked until, their tenant's rate allowed them.
    pub rate_limited: Counter,
    /// Answers the fallback responder gave because the responder could not.
    pub responder_fallbacks: Counter,
    /// Deliveries read ahead, waiting for a slot (their tenant's turn, or room under its cap).
    pub read_ahead: Gauge,
    /// Deliveries deferred after waiting in the read-ahead for half of `turns.stale_secs`.
    pub read_ahead_deferred: Counter,
    /// Deliveries held in process now, waiting for their conversation's turn.
    pub turns_waiting: Gauge,
    pub turn_wait_seconds: Histogram,
    pub turns_parked: Counter,
    pub turns_skipped: Counter,
    /// Messages answered by their burst's reply (CONTRACT §3 `coalesced`).
    pub messages_coalesced: Counter,
    /// Generations dropped or discarded because the burst grew.
    pub generations_restarted: Counter,
    /// Tokens (prompt + completion) of finished generations discarded so.
    pub generation_tokens_discarded: Counter<u64, AtomicU64>,
}

fn stage_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chat_worker");
        let m = Self {
            messages: Family::default(),
            stage_seconds: Family::new_with_constructor(stage_histogram),
            in_flight: Gauge::default(),
            retries: Counter::default(),
            dead_letters: Family::default(),
            lock_contention: Counter::default(),
            lock_takeovers: Counter::default(),
            locks_swept: Counter::default(),
            cache_lookups: Family::default(),
            reconnects: Family::default(),
            db_pool_connections: Gauge::default(),
            db_pool_idle: Gauge::default(),
            queue_depth: Gauge::default(),
            queue_consumers: Gauge::default(),
            redis_round_trips: Counter::default(),
            // 1 .. 512 messages
            commit_batch_size: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1.0, 2.0, 10,
            )),
            commit_batches_split: Counter::default(),
            responder_paused: Gauge::default(),
            responder_down: Gauge::default(),
            responder_circuit_opened: Counter::default(),
            budget_spent: Counter::default(),
            rate_limited: Counter::default(),
            responder_fallbacks: Counter::default(),
            read_ahead: Gauge::default(),
            read_ahead_deferred: Counter::default(),
            turns_waiting: Gauge::default(),
            turn_wait_seconds: stage_histogram(),
            turns_parked: Counter::default(),
            turns_skipped: Counter::default(),
            messages_coalesced: Counter::default(),
            generations_restarted: Counter::default(),
            generation_tokens_discarded: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "messages",
            "Deliveries by outcome (processed, duplicate, rejected, failed, deferred)",
            m.messages.clone(),
        );
        registry.register(
            "stage_duration_seconds",
            "Time spent in each pipeline stage",
            m.stage_seconds.clone(),
        );
        registry.register("messages_in_flight", "Deliveries being processed now", m.in_flight.clone());
        registry.register("retries", "Deliveries parked in a retry queue", m.retries.clone());
        registry.register(
            "dead_letters",
            "Deliveries moved to the dead-letter queue, by x-error-kind",
            m.dead_letters.clone(),
        );
        registry.register(
            "lock_contention",
            "Claims that found the message locked by a live worker",
            m.lock_contention.clone(),
        );
        registry.register(
            "lock_takeovers",
            "Locks taken over from workers that were gone",
            m.lock_takeovers.clone(),
        );
        registry.register(
            "locks_swept",
            "Locks of dead workers released by the sweeper",
            m.locks_swept.clone(),
        );
        registry.register(
            "cache_lookups",
            "Catalog cache lookups by the tier that answered (local, redis, database)",
            m.cache_lookups.clone(),
        );
        registry.register("reconnects", "Reconnections, by service", m.reconnects.clone());
        registry.register(
            "db_pool_connections",
            "PostgreSQL connections open in the pool",
            m.db_pool_connections.clone(),
        );
        registry.register(
            "db_commit_batch_size",
            "Messages recorded by each PostgreSQL commit (group commit)",
            m.commit_batch_size.clone(),
        );
        registry.register(
            "db_commit_batches_split",
            "Group commits PostgreSQL refused as a whole, recorded again one message at a time",
            m.commit_batches_split.clone(),
        );
        registry.register("db_pool_idle", "PostgreSQL connections idle in the pool", m.db_pool_idle.clone());
        registry.register(
            "responder_paused",
            "1 while calls to the responder are paused, fleet-wide: it asked to slow down (429, or 503 with Retry-After)",
            m.responder_paused.clone(),
        );
        registry.register(
            "responder_down",
            "1 while the responder's circuit breaker is open: it failed responder.breaker_failures times in a row, \
             no new deliveries are taken and held ones are parked until a probe answers",
            m.responder_down.clone(),
        );
        registry.register(
            "responder_circuit_opened",
            "Times the responder's circuit breaker opened",
            m.responder_circuit_opened.clone(),
        );
        registry.register(
            "budget_spent",
            "Messages not sent to the responder because their tenant's token budget for the period was spent \
             (answered with the holding reply and a handoff, or parked: the tenant's over_budget)",
            m.budget_spent.clone(),
        );
        registry.register(
            "rate_limited",
            "Messages that waited for their place at their tenant's rate_limit_per_sec, or were parked until one frees",
            m.rate_limited.clone(),
        );
        registry.register(
            "responder_fallbacks",
            "Answers the builtin responder gave because the responder could not (responder.fallback = builtin)",
            m.responder_fallbacks.clone(),
        );
        registry.register(
            "read_ahead",
            "Deliveries read ahead, waiting for a slot: their tenant's turn, or room under its cap",
            m.read_ahead.clone(),
        );
        registry.register(
            "read_ahead_deferred",
            "Deliveries deferred (acked, back a second later, place in line kept) after waiting too long in the read-ahead",
            m.read_ahead_deferred.clone(),
        );
        registry.register(
            "turns_waiting",
            "Deliveries held now, waiting for an earlier message of their conversation to be answered",
            m.turns_waiting.clone(),
        );
        registry.register(
            "turn_wait_seconds",
            "How long a delivery waited in the process for its conversation's turn",
            m.turn_wait_seconds.clone(),
        );
        registry.register(
            "turns_parked",
            "Deliveries parked (no attempt spent, place in line kept) after waiting turns.max_wait_secs, or with the waiting room full",
            m.turns_parked.clone(),
        );
        registry.register(
            "messages_coalesced",
            "Messages answered by the one reply of their burst (burst coalescing)",
            m.messages_coalesced.clone(),
        );
        registry.register(
            "generations_restarted",
            "Reply generations dropped or discarded because a newer message joined the burst",
            m.generations_restarted.clone(),
        );
        registry.register(
            "generation_tokens_discarded",
            "Tokens (prompt + completion) of finished generations discarded because the burst grew",
            m.generation_tokens_discarded.clone(),
        );
        registry.register(
            "turns_skipped",
            "Messages ahead in a conversation's line skipped after turns.stale_secs, nowhere to be found",
            m.turns_skipped.clone(),
        );
        registry.register(
            "inbound_queue_depth",
            "Messages ready in the inbound queue (polled from the broker)",
            m.queue_depth.clone(),
        );
        registry.register(
            "inbound_queue_consumers",
            "Consumers of the inbound queue (polled from the broker)",
            m.queue_consumers.clone(),
        );
        registry.register(
            "redis_round_trips",
            "Redis round trips made for messages",
            m.redis_round_trips.clone(),
        );
        // Series that exist from the start at zero, so rate() and alerts see them
        // before the first event (and dashboards find every name).
        for outcome in ["processed", "duplicate", "rejected", "failed", "deferred"] {
            let _ = m.messages.get_or_create(&OutcomeLabel { outcome });
        }
        for stage in STAGES {
            let _ = m.stage_seconds.get_or_create(&StageLabel { stage });
        }
        for kind in ["malformed", "invalid", "unknown_tenant", "failed"] {
            let _ = m.dead_letters.get_or_create(&KindLabel { kind: kind.to_owned() });
        }
        for tier in ["local", "redis", "database"] {
            let _ = m.cache_lookups.get_or_create(&TierLabel { tier });
        }
        let _ = m.reconnects.get_or_create(&ServiceLabel { service: "rabbitmq" });
        Self { registry, ..m }
    }

    /// Counts one settled delivery under its `chat.outcome` label.
    pub fn outcome(&self, outcome: &'static str) {
        self.messages.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Records the time since `started` for `stage`.
    pub fn stage(&self, stage: &'static str, started: Instant) {
        self.stage_seconds.get_or_create(&StageLabel { stage }).observe(started.elapsed().as_secs_f64());
    }

    pub fn dead_letter(&self, kind: &str) {
        self.dead_letters.get_or_create(&KindLabel { kind: kind.to_owned() }).inc();
    }

    pub fn cache(&self, tier: &'static str, n: u64) {
        self.cache_lookups.get_or_create(&TierLabel { tier }).inc_by(n);
    }

    pub fn reconnect(&self, service: &'static str) {
        self.reconnects.get_or_create(&ServiceLabel { service }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_under_the_chat_worker_prefix() {
        let text = Metrics::new().render();
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        assert!(types.len() >= 15, "{text}");
        assert!(types.iter().all(|l| l.starts_with("# TYPE chat_worker_")), "{types:?}");
        assert!(text.contains("# TYPE chat_worker_messages counter"), "{text}");
    }
}
