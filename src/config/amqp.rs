//! `[amqp]`: the RabbitMQ connection, the names of the topology, and the
//! broker's own limits the worker must stay within.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::validate::{MAX_SECS, check_url, invalid, quoted, require, within};
use super::{ConfigError, debug_redacted};

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    pub url: String,
    /// Unacknowledged deliveries the broker pushes to one process: those in
    /// flight and the read-ahead behind them, where a tenant's flood waits
    /// while the other tenants' messages, read past it, are answered.
    pub prefetch: u16,
    /// Bytes of message bodies the read-ahead holds: the prefetch shrinks
    /// while the bodies are large (to this over their mean size, at least
    /// 64), and past it the consumer is stopped at the broker until half of
    /// it has gone out (what was on the wire still comes in).
    pub read_ahead_mib: u32,
    pub inbound_exchange: String,
    pub inbound_queue: String,
    pub outbound_exchange: String,
    pub dead_queue: String,
    /// Retry queue of attempt N is `<retry_queue_prefix>.<N>`.
    pub retry_queue_prefix: String,
    /// Declare exchanges, queues and bindings at start (off where the worker lacks configure permission).
    pub declare_topology: bool,
    /// Broker-side backstop: deliveries of one message (e.g. crashes) before the broker dead-letters it.
    pub delivery_limit: u32,
    /// The broker's `consumer_timeout` (RabbitMQ's default is 30 min): a lock must expire well before it.
    pub consumer_timeout_secs: u64,
    /// AMQP heartbeat timeout asked for when connecting (seconds; the broker's own
    /// value, RabbitMQ's 60 by default, caps it). It is how long a process that
    /// stopped answering — hung, paused (SIGSTOP), cut off — keeps its
    /// unacknowledged deliveries before the broker closes its connection and gives
    /// them to another worker: until then its conversations' turns, and every
    /// message waiting behind them, are stuck. A `heartbeat` in `url` wins.
    pub heartbeat_secs: u16,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefetch: 16_384,
            read_ahead_mib: 64,
            inbound_exchange: "chat.inbound".into(),
            inbound_queue: "worker.inbound".into(),
            outbound_exchange: "chat.outbound".into(),
            dead_queue: "worker.dead".into(),
            retry_queue_prefix: "worker.retry.quorum".into(),
            declare_topology: true,
            delivery_limit: 20,
            consumer_timeout_secs: 1_800,
            // RabbitMQ looks for traffic once per timeout and closes a connection
            // after two looks without any, so a silent process is dropped 2 to 3
            // timeouts after its last frame: at 10 s, 20 to 30 s (measured: 29.6 s
            // for a paused idle worker), against 2 to 3 minutes at the broker's
            // 60, which lapin took before. Not lower: any frame counts as a
            // heartbeat, and lapin sends one every 5 s when nothing else went,
            // so a live worker is dropped only if its runtime stalls for over
            // 15 s; below 5 s RabbitMQ warns of false positives on a loaded host
            // (5 to 20 s is its advice).
            heartbeat_secs: 10,
        }
    }
}

/// Not derived: the URL carries the broker's password.
impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_redacted("AmqpConfig", self, f)
    }
}

impl AmqpConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[
            ("amqp.consumer_timeout_secs", self.consumer_timeout_secs, MAX_SECS),
            ("amqp.delivery_limit", u64::from(self.delivery_limit), 1_000_000),
            ("amqp.heartbeat_secs", u64::from(self.heartbeat_secs), MAX_HEARTBEAT_SECS),
            ("amqp.read_ahead_mib", u64::from(self.read_ahead_mib), 65_536),
        ])?;
        require(self.read_ahead_mib > 0, "amqp.read_ahead_mib", "must be at least 1")?;
        require(self.prefetch > 0, "amqp.prefetch", "must be at least 1")?;
        // 0 would not turn heartbeats off: lapin then takes the broker's value.
        require(self.heartbeat_secs > 0, "amqp.heartbeat_secs", "must be at least 1")?;
        check_url("amqp.url", &self.url, &["amqp", "amqps"])?;
        // lapin would refuse it at every connection attempt until the startup timeout.
        match url_heartbeat(&self.url) {
            Some(Err(value)) => Err(invalid(
                "amqp.url",
                format!("its heartbeat `{}` is not a number of seconds (0 to 65535)", quoted(&value)),
            )),
            _ => Ok(()),
        }
    }
}

impl AmqpConfig {
    pub fn read_ahead_bytes(&self) -> usize {
        usize::try_from(self.read_ahead_mib).unwrap_or(usize::MAX).saturating_mul(1 << 20)
    }

    /// The heartbeat timeout asked of the broker: the URL's `heartbeat` when it
    /// names one, else `heartbeat_secs`; `None` for a URL's 0, which leaves it
    /// to the broker (lapin then takes the broker's value).
    pub(super) fn requested_heartbeat(&self) -> Option<u16> {
        match url_heartbeat(&self.url) {
            Some(Ok(0)) => None,
            Some(Ok(secs)) => Some(secs),
            _ => Some(self.heartbeat_secs),
        }
    }
}

/// Longest `amqp.heartbeat_secs`: 10 minutes. Longer would leave a hung
/// process's deliveries stuck for longer than anyone would wait for a reply
/// (and the broker's own value, 60 s by default, caps it anyway).
const MAX_HEARTBEAT_SECS: u64 = 600;

/// The `heartbeat` query parameter of an AMQP URL, if it has one: its value in
/// seconds, or the text that is not one.
fn url_heartbeat(raw: &str) -> Option<Result<u16, String>> {
    let url = url::Url::parse(raw).ok()?;
    let (_, value) = url.query_pairs().find(|(key, _)| key == "heartbeat")?;
    Some(value.parse().map_err(|_| value.into_owned()))
}
