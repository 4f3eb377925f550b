//! `[amqp]`: the RabbitMQ connection, the names of the topology, and the
//! broker's own limits the worker must stay within.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::validate::{MAX_SECS, check_url, require, within};
use super::{ConfigError, debug_redacted};

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    pub url: String,
    /// Unacknowledged deliveries the broker pushes to one process.
    pub prefetch: u16,
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
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefetch: 1_024,
            inbound_exchange: "chat.inbound".into(),
            inbound_queue: "worker.inbound".into(),
            outbound_exchange: "chat.outbound".into(),
            dead_queue: "worker.dead".into(),
            retry_queue_prefix: "worker.retry.quorum".into(),
            declare_topology: true,
            delivery_limit: 20,
            consumer_timeout_secs: 1_800,
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
        ])?;
        require(self.prefetch > 0, "amqp.prefetch", "must be at least 1")?;
        check_url("amqp.url", &self.url, &["amqp", "amqps"])
    }
}
