//! `[worker]`: this process — its name, how much it takes on, and how long each
//! message may take over its attempts.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::validate::{MAX_MS, MAX_SECS, invalid, require, within};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Names this process in locks and processing states; empty = `<hostname>-<pid>`.
    pub id: String,
    /// Messages handled at the same time by one process.
    pub concurrency: usize,
    /// Most of those one tenant may hold at once (a tenant's `max_concurrency`
    /// setting overrides it): a tenant's flood waits in the read-ahead, and
    /// the other tenants' messages take the slots it leaves. 0: no cap but
    /// `concurrency`.
    pub tenant_concurrency: usize,
    /// How long `run` waits for RabbitMQ, Redis and PostgreSQL at start.
    pub startup_timeout_secs: u64,
    /// How long a stopping worker lets in-flight messages finish before handing them back.
    /// At least `message_deadline_secs` by default, so a scale-in or a rollout lets every
    /// answer in flight (an LLM call, say) run to its deadline instead of cutting it.
    pub shutdown_timeout_secs: u64,
    /// Attempts of a transiently failing message before it is dead-lettered as `failed`.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles per attempt, with jitter.
    pub retry_base_delay_ms: u64,
    /// Upper bound of one retry delay.
    pub retry_max_delay_ms: u64,
    /// Work on one message past this is abandoned (state failed, lock released,
    /// message retried) and can no longer commit.
    pub message_deadline_secs: u64,
    /// Every retry of a message must fit in this, from its first attempt.
    pub max_message_age_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            concurrency: 1_024,
            tenant_concurrency: 128,
            startup_timeout_secs: 10,
            shutdown_timeout_secs: 50,
            max_attempts: 5,
            retry_base_delay_ms: 1_000,
            retry_max_delay_ms: 60_000,
            message_deadline_secs: 45,
            max_message_age_secs: 3_600,
        }
    }
}

/// Most messages one process may work on at once (`worker.concurrency`, `--concurrency`).
pub const MAX_CONCURRENCY: usize = 100_000;
/// Longest worker id: it is part of lock values and the AMQP consumer tag (≤ 255 bytes).
const MAX_WORKER_ID_LEN: usize = 128;

/// A worker id names this process in locks, states and consumer tags: 1 to 128
/// letters, digits and `- _ . : @` (no spaces, no `|`, which separates lock fields).
pub fn check_worker_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:@".contains(c);
    if id.is_empty() || id.len() > MAX_WORKER_ID_LEN || !id.chars().all(allowed) {
        return Err(format!("must be 1 to {MAX_WORKER_ID_LEN} characters: letters, digits and - _ . : @"));
    }
    Ok(())
}

impl WorkerConfig {
    /// The slots a tenant may hold when its settings do not say.
    pub fn tenant_cap(&self) -> usize {
        match self.tenant_concurrency {
            0 => self.concurrency,
            cap => cap.min(self.concurrency),
        }
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[
            ("worker.concurrency", self.concurrency as u64, MAX_CONCURRENCY as u64),
            ("worker.tenant_concurrency", self.tenant_concurrency as u64, MAX_CONCURRENCY as u64),
            ("worker.startup_timeout_secs", self.startup_timeout_secs, MAX_SECS),
            ("worker.shutdown_timeout_secs", self.shutdown_timeout_secs, MAX_SECS),
            ("worker.max_attempts", u64::from(self.max_attempts), 100),
            ("worker.retry_base_delay_ms", self.retry_base_delay_ms, MAX_MS),
            ("worker.retry_max_delay_ms", self.retry_max_delay_ms, MAX_MS),
            ("worker.message_deadline_secs", self.message_deadline_secs, MAX_SECS),
            ("worker.max_message_age_secs", self.max_message_age_secs, MAX_SECS),
        ])?;
        if !self.id.is_empty() {
            check_worker_id(&self.id).map_err(|problem| invalid("worker.id", problem))?;
        }
        require(self.concurrency > 0, "worker.concurrency", "must be at least 1")?;
        require(self.max_attempts > 0, "worker.max_attempts", "must be at least 1")?;
        require(
            self.retry_base_delay_ms > 0 && self.retry_base_delay_ms <= self.retry_max_delay_ms,
            "worker.retry_base_delay_ms",
            "must be at least 1 and not above worker.retry_max_delay_ms",
        )
    }
}
