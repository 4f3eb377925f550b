//! `[turns]`: a conversation's messages are answered one at a time, in order
//! (CONTRACT §3, Conversations); how a process holds the ones that wait.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::validate::{MAX_SECS, require, within};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TurnsConfig {
    /// Deliveries one process holds, unacknowledged, while an earlier message
    /// of their conversation is answered. They hold no `worker.concurrency`
    /// slot; beyond this many, a delivery that must wait is parked instead
    /// (a retry queue, no attempt spent), keeping its place in line.
    pub max_waiting: usize,
    /// How long one delivery waits in the process before it is parked.
    pub max_wait_secs: u64,
    /// A message ahead in line that is nowhere to be found this long (its
    /// process gone and no copy back, or parked and never returned: a purged
    /// queue) is skipped, so that its conversation is not stuck for ever.
    pub stale_secs: u64,
    /// Burst coalescing for tenants whose `settings` do not say
    /// (`coalesce_ms`): messages of a conversation arriving within this many ms
    /// of each other are answered by one reply. 0 = off.
    pub coalesce_ms: u64,
    /// The longest a burst may grow, from its first message (tenant setting
    /// `coalesce_max_ms`).
    pub coalesce_max_ms: u64,
    /// A message arriving while its burst's reply is being generated:
    /// `restart` the generation with it (within `coalesce_max_ms`), or
    /// `queue` it for the next turn (tenant setting `coalesce_mid_generation`).
    pub mid_generation: MidGeneration,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MidGeneration {
    #[default]
    Restart,
    Queue,
}

/// The longest window a tenant's settings may ask for, in ms (a minute): a
/// burst holds its conversation's turn that long.
pub const MAX_COALESCE_MS: u64 = 60_000;

impl Default for TurnsConfig {
    fn default() -> Self {
        Self {
            max_waiting: 512,
            max_wait_secs: 30,
            stale_secs: 300,
            coalesce_ms: 0,
            coalesce_max_ms: 5_000,
            mid_generation: MidGeneration::Restart,
        }
    }
}

impl TurnsConfig {
    /// How many deliveries may wait at once in a process that the broker
    /// gives `prefetch` unacknowledged ones: never more than half, so that
    /// waiting ones cannot take the whole window and starve the messages
    /// whose turn it is (their own predecessors among them).
    pub fn waiting_limit(&self, prefetch: u16) -> usize {
        self.max_waiting.min(usize::from(prefetch) / 2)
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[
            ("turns.max_waiting", self.max_waiting as u64, super::MAX_CONCURRENCY as u64),
            ("turns.max_wait_secs", self.max_wait_secs, MAX_SECS),
            ("turns.stale_secs", self.stale_secs, MAX_SECS),
        ])?;
        require(self.max_wait_secs > 0, "turns.max_wait_secs", "must be at least 1 second")?;
        within(&[
            ("turns.coalesce_ms", self.coalesce_ms, MAX_COALESCE_MS),
            ("turns.coalesce_max_ms", self.coalesce_max_ms, MAX_COALESCE_MS),
        ])?;
        require(
            self.coalesce_ms == 0 || self.coalesce_max_ms >= self.coalesce_ms,
            "turns.coalesce_max_ms",
            "must be at least turns.coalesce_ms",
        )?;
        require(self.stale_secs >= 60, "turns.stale_secs", "must be at least 60 seconds")
    }
}
