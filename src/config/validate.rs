//! Whether a loaded configuration can run. Each section checks its own keys
//! (its `check`, beside its struct); here are the order they run in, the rules
//! that span sections, and the helpers every check shares.

use super::{Config, ConfigError};
use crate::redact::{redact_text, redact_url};

/// Bound of every `*_secs` key (a year): deadlines and TTLs stay far from overflow.
pub(super) const MAX_SECS: u64 = 365 * 24 * 3600;
/// Bound of every `*_ms` key (a day).
pub(super) const MAX_MS: u64 = 24 * 3600 * 1000;

impl Config {
    /// The first problem found, with the key it is about. `origin` is left for
    /// `load` to fill in: only it knows which layer set each key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.worker.check()?;
        self.amqp.check()?;
        self.redis.check()?;
        self.database.check()?;
        self.cache.check()?;
        self.context.check()?;
        self.turns.check()?;
        self.responder.check()?;
        self.admin.check()?;
        // Last: it does arithmetic on keys of several sections, safe only once
        // every section's upper bounds have held.
        self.check_timeouts()
    }

    /// Timeouts that must fit inside one another, checked at start (issue 4):
    /// responder timeout < message deadline < lock TTL < broker consumer timeout,
    /// and the whole retry schedule within the maximum message age.
    fn check_timeouts(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        let secs = |ms: u64| ms as f64 / 1000.0;
        require(
            w.message_deadline_secs >= 1 && self.responder.timeout_ms < w.message_deadline_secs * 1000,
            "worker.message_deadline_secs",
            format!(
                "is {}s; it must exceed responder.timeout_ms ({}s) so a slow responder fails before the deadline",
                w.message_deadline_secs,
                secs(self.responder.timeout_ms)
            ),
        )?;
        require(
            w.message_deadline_secs < self.redis.lock_ttl_secs,
            "redis.lock_ttl_secs",
            format!(
                "is {}s; it must exceed worker.message_deadline_secs ({}s), or a lock could lapse under live work",
                self.redis.lock_ttl_secs, w.message_deadline_secs
            ),
        )?;
        require(
            self.redis.lock_ttl_secs < self.amqp.consumer_timeout_secs,
            "amqp.consumer_timeout_secs",
            format!(
                "is {}s; it must exceed redis.lock_ttl_secs ({}s), or the broker could take a delivery back while its lock is held",
                self.amqp.consumer_timeout_secs, self.redis.lock_ttl_secs
            ),
        )?;
        // A paused or hung turn holder keeps its deliveries until the broker drops
        // its connection, 2 to 3 heartbeats after its last frame; until another
        // worker has them, the messages waiting behind it must not skip its turn.
        if let Some(heartbeat) = self.amqp.requested_heartbeat() {
            let back_within = 3 * u64::from(heartbeat);
            require(
                back_within < self.turns.stale_secs,
                "turns.stale_secs",
                format!(
                    "is {}s; it must exceed 3 heartbeats ({back_within}s at amqp's {heartbeat}s), how long a paused \
                     worker's deliveries can take to come back, or its turn could be skipped",
                    self.turns.stale_secs
                ),
            )?;
        }
        let retries = self.retry_schedule_secs();
        require(
            retries <= w.max_message_age_secs as f64,
            "worker.max_message_age_secs",
            format!(
                "is {}s, but {} attempts of up to {}s each with their retry delays can take {retries:.0}s",
                w.max_message_age_secs, w.max_attempts, w.message_deadline_secs
            ),
        )
    }
}

/// A rejected value; `origin` is filled in by `Config::load`.
pub(super) fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into(), origin: None }
}

/// `Ok` when `ok`, else the problem with `key`.
pub(super) fn require(ok: bool, key: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(invalid(key, problem)) }
}

/// Upper bounds, `(key, value, max)`, so that no value an operator can type
/// makes arithmetic on it overflow (a deadline `now + startup_timeout`, a TTL in
/// milliseconds, a semaphore of `concurrency` permits). Each section checks its
/// bounds before anything else; lower bounds are checked key by key.
pub(super) fn within(bounds: &[(&'static str, u64, u64)]) -> Result<(), ConfigError> {
    match bounds.iter().find(|&&(_, value, max)| value > max) {
        Some(&(key, value, max)) => Err(invalid(key, format!("is {value}; it must be at most {max}"))),
        None => Ok(()),
    }
}

/// A URL with one of `schemes`; the error shows it with its password removed.
pub(super) fn check_url(key: &'static str, raw: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw)
        .map_err(|e| invalid(key, format!("`{}` is not a URL ({e})", redact_url(raw))))?;
    require(
        schemes.contains(&url.scheme()),
        key,
        format!("scheme `{}` is not one of {}", url.scheme(), schemes.join(", ")),
    )
}

/// At most 64 characters of an operator's value, on one line, for an error.
pub(super) fn quoted(value: &str) -> String {
    let short: String = value.chars().take(64).collect();
    let short = redact_text(&short).escape_debug().to_string();
    if value.chars().count() > 64 { format!("{short}…") } else { short }
}
