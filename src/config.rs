//! Typed configuration, layered as CONTRACT §1 says:
//! command-line flag > environment > `--config` file > built-in default.
//!
//! Layering is done by `figment` (one provider per layer, merged in order), so a
//! wrong value anywhere is reported with the key and the layer it came from.
//! Every key here is documented, at its default, in the repository's `worker.toml`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact::{redact_json, redact_text, redact_url};

mod layers;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub worker: WorkerConfig,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub context: ContextConfig,
    pub responder: ResponderConfig,
    pub admin: AdminConfig,
    pub tracing: TracingConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Names this process in locks and processing states; empty = `<hostname>-<pid>`.
    pub id: String,
    /// Messages handled at the same time by one process.
    pub concurrency: usize,
    /// How long `run` waits for RabbitMQ, Redis and PostgreSQL at start.
    pub startup_timeout_secs: u64,
    /// How long a stopping worker lets in-flight messages finish before handing them back.
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

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Prepended to every key the worker writes, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Processing lock lifetime: a lock whose worker died frees itself after this.
    pub lock_ttl_secs: u64,
    /// How long a message's processing state (and so duplicate detection in Redis) is kept.
    pub state_ttl_secs: u64,
    /// A worker that has not refreshed its liveness key for this long is considered gone.
    pub liveness_ttl_secs: u64,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    /// Most messages one commit records (group commit).
    pub commit_batch_max: usize,
    /// Group commits running at once; messages ready meanwhile join the next one.
    /// One is best on the machines measured: batches grow with the load, and each
    /// statement has a fixed cost (see docs/performance.md).
    pub commits_in_flight: usize,
    /// Grouped context reads running at once, likewise.
    pub reads_in_flight: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Products and services.
    pub catalog_ttl_secs: u64,
    /// A tenant's row: active flag and agent settings.
    pub settings_ttl_secs: u64,
    pub knowledge_ttl_secs: u64,
    /// Memory bound of the in-process tier (approximate bytes).
    pub local_max_bytes: u64,
    /// Load every active tenant into both tiers when `run` starts (in the background).
    pub warm_at_start: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ContextConfig {
    /// Latest messages of the conversation given to the responder.
    pub history_limit: u32,
    /// How long a conversation's latest numbered list stays in Redis (PostgreSQL has it after).
    pub reference_ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResponderKind {
    Builtin,
    Openai,
    Http,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResponderConfig {
    pub kind: ResponderKind,
    /// `openai`: the API base (…/v1); `http`: the agent service's URL.
    pub url: String,
    /// `openai`: the model name.
    pub model: String,
    /// `openai`: environment variable holding the API key (sent as a bearer token).
    pub api_key_env: String,
    /// `http`: environment variable holding the bearer token sent to the agent
    /// service. Empty (the default): no credential is sent; the agent is another
    /// team's service and gets no key it was not meant to have.
    pub http_token_env: String,
    pub timeout_ms: u64,
    /// `openai`, `http`: an answer's body larger than this is unusable; reading
    /// stops there, so a runaway answer never sits in memory whole.
    pub max_response_bytes: u64,
    /// Confidence below which the builtin responder hands off (a tenant's
    /// `settings.handoff_threshold` overrides it).
    pub handoff_threshold: f32,
    /// `openai`: prices per 1,000 tokens, for the recorded cost (0 = unknown).
    pub prompt_cost_per_1k: f64,
    pub completion_cost_per_1k: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`; port 0 picks a free port (logged at start).
    pub addr: String,
    /// How often the inbound queue's depth and consumers are read from the broker.
    pub queue_poll_secs: u64,
    /// Connections served at once; more wait (unaccepted) until one ends.
    pub max_connections: usize,
    /// A connection that has not sent its request's headers by then is closed.
    pub header_read_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProducerContext {
    /// The producer's span is the parent of the consumer span (one trace).
    Parent,
    /// The consumer span starts a trace of its own, linked to the producer's.
    Link,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    pub producer_context: ProducerContext,
    /// Record customers' message texts on GenAI spans (personal data: off by default).
    pub record_message_content: bool,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { producer_context: ProducerContext::Parent, record_message_content: false }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:9464".into(),
            queue_poll_secs: 15,
            max_connections: 64,
            header_read_timeout_secs: 5,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            catalog_ttl_secs: 60,
            settings_ttl_secs: 300,
            knowledge_ttl_secs: 600,
            local_max_bytes: 32 * 1024 * 1024,
            warm_at_start: true,
        }
    }
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self { history_limit: 20, reference_ttl_secs: 300 }
    }
}

impl Default for ResponderConfig {
    fn default() -> Self {
        Self {
            kind: ResponderKind::Builtin,
            url: String::new(),
            model: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            http_token_env: String::new(),
            timeout_ms: 30_000,
            max_response_bytes: 1_048_576,
            handoff_threshold: 0.4,
            prompt_cost_per_1k: 0.0,
            completion_cost_per_1k: 0.0,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            concurrency: 1_024,
            startup_timeout_secs: 10,
            shutdown_timeout_secs: 30,
            max_attempts: 5,
            retry_base_delay_ms: 1_000,
            retry_max_delay_ms: 60_000,
            message_deadline_secs: 45,
            max_message_age_secs: 3_600,
        }
    }
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

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: "chat-worker:".into(),
            lock_ttl_secs: 60,
            state_ttl_secs: 600,
            liveness_ttl_secs: 15,
        }
    }
}

/// Pool connections the grouped reads and writes must leave to everything else:
/// the cache listener's LISTEN, catalog loads, fence registrations, replays.
const SPARE_CONNECTIONS: usize = 2;

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/worker?sslmode=disable".into(),
            max_connections: 16,
            commit_batch_max: 256,
            commits_in_flight: 1,
            reads_in_flight: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: cannot be read ({1})")]
    Unreadable(String, std::io::Error),
    #[error("config: {0}")]
    Layer(String),
    /// `origin` names what set the value (a variable, a flag, the file); none for a default.
    #[error("config key `{key}`{}: {problem}", .origin.as_deref().map(|o| format!(" (from {o})")).unwrap_or_default())]
    Invalid { key: &'static str, problem: String, origin: Option<String> },
}

/// Most messages one process may work on at once (`worker.concurrency`, `--concurrency`).
pub const MAX_CONCURRENCY: usize = 100_000;
/// Bound of every `*_secs` key (a year): deadlines and TTLs stay far from overflow.
const MAX_SECS: u64 = 365 * 24 * 3600;
/// Bound of every `*_ms` key (a day).
const MAX_MS: u64 = 24 * 3600 * 1000;
/// Longest worker id: it is part of lock values and the AMQP consumer tag (≤ 255 bytes).
pub const MAX_WORKER_ID_LEN: usize = 128;

/// A worker id names this process in locks, states and consumer tags: 1 to 128
/// letters, digits and `- _ . : @` (no spaces, no `|`, which separates lock fields).
pub fn check_worker_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:@".contains(c);
    if id.is_empty() || id.len() > MAX_WORKER_ID_LEN || !id.chars().all(allowed) {
        return Err(format!("must be 1 to {MAX_WORKER_ID_LEN} characters: letters, digits and - _ . : @"));
    }
    Ok(())
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Config {
    /// Loads defaults, then the file, then the process environment, then the flags.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Unreadable(path.display().to_string(), e))?,
            ),
            None => None,
        };
        let file = file.zip(text.as_deref());
        let (figment, layers) = layers::figment(file, flags);
        // figment quotes the offending value, which may be a misplaced secret.
        let config: Config =
            figment.extract().map_err(|e| ConfigError::Layer(redact_text(&one_line(&e.to_string()))))?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, problem, .. } => {
                ConfigError::Invalid { key, problem, origin: layers.origin(&figment, key) }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// The configuration as JSON with every secret redacted (`worker config`).
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        redact_json(&mut value);
        value
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key, problem: &str| ConfigError::Invalid { key, problem: problem.into(), origin: None };
        self.check_bounds()?;
        if !self.worker.id.is_empty() {
            check_worker_id(&self.worker.id).map_err(|problem| invalid("worker.id", &problem))?;
        }
        if self.worker.concurrency == 0 {
            return Err(invalid("worker.concurrency", "must be at least 1"));
        }
        if self.amqp.prefetch == 0 {
            return Err(invalid("amqp.prefetch", "must be at least 1"));
        }
        if self.worker.max_attempts == 0 {
            return Err(invalid("worker.max_attempts", "must be at least 1"));
        }
        if self.worker.retry_base_delay_ms == 0
            || self.worker.retry_max_delay_ms < self.worker.retry_base_delay_ms
        {
            return Err(invalid(
                "worker.retry_base_delay_ms",
                "must be at least 1 and not above worker.retry_max_delay_ms",
            ));
        }
        if self.redis.lock_ttl_secs == 0 || self.redis.state_ttl_secs < self.redis.lock_ttl_secs {
            return Err(invalid(
                "redis.lock_ttl_secs",
                "must be at least 1 and not above redis.state_ttl_secs",
            ));
        }
        if self.redis.liveness_ttl_secs < 2 {
            return Err(invalid("redis.liveness_ttl_secs", "must be at least 2"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.commit_batch_max == 0 {
            return Err(invalid("database.commit_batch_max", "must be at least 1"));
        }
        let needed = self
            .database
            .commits_in_flight
            .saturating_add(self.database.reads_in_flight)
            .saturating_add(SPARE_CONNECTIONS);
        if self.database.commits_in_flight == 0
            || self.database.reads_in_flight == 0
            || needed > self.database.max_connections as usize
        {
            return Err(invalid(
                "database.commits_in_flight",
                "and database.reads_in_flight must be at least 1 each, and together leave at least 2 of \
                 database.max_connections free (the LISTEN connection, catalog loads, fencing)",
            ));
        }
        if self.cache.local_max_bytes < 1024 * 1024 {
            return Err(invalid("cache.local_max_bytes", "must be at least 1048576 (1 MiB)"));
        }
        if self.cache.catalog_ttl_secs == 0
            || self.cache.settings_ttl_secs == 0
            || self.cache.knowledge_ttl_secs == 0
        {
            return Err(invalid("cache.catalog_ttl_secs", "cache TTLs must be at least 1 second"));
        }
        if self.context.history_limit > 1000 {
            return Err(invalid("context.history_limit", "must be at most 1000"));
        }
        if self.responder.timeout_ms == 0 {
            return Err(invalid("responder.timeout_ms", "must be at least 1"));
        }
        if self.responder.max_response_bytes < 1024 {
            return Err(invalid("responder.max_response_bytes", "must be at least 1024"));
        }
        if !(0.0..=1.0).contains(&self.responder.handoff_threshold) {
            return Err(invalid("responder.handoff_threshold", "must be between 0 and 1"));
        }
        for (key, cost) in [
            ("responder.prompt_cost_per_1k", self.responder.prompt_cost_per_1k),
            ("responder.completion_cost_per_1k", self.responder.completion_cost_per_1k),
        ] {
            if !(cost.is_finite() && cost >= 0.0) {
                return Err(invalid(key, "must be a price of 0 or more"));
            }
        }
        match self.responder.kind {
            ResponderKind::Builtin => {}
            ResponderKind::Openai | ResponderKind::Http => {
                check_url("responder.url", &self.responder.url, &["http", "https"])?;
                if self.responder.kind == ResponderKind::Openai && self.responder.model.is_empty() {
                    return Err(invalid("responder.model", "is required when responder.kind = \"openai\""));
                }
            }
        }
        if !listen_address(&self.admin.addr) {
            return Err(invalid(
                "admin.addr",
                &format!(
                    "`{}` is not an address and port such as 127.0.0.1:9464, 0.0.0.0:9464 or localhost:9464 \
                     (port 0 picks a free one)",
                    quoted(&self.admin.addr)
                ),
            ));
        }
        if self.admin.queue_poll_secs == 0 {
            return Err(invalid("admin.queue_poll_secs", "must be at least 1"));
        }
        if self.admin.max_connections == 0 {
            return Err(invalid("admin.max_connections", "must be at least 1"));
        }
        if self.admin.header_read_timeout_secs == 0 {
            return Err(invalid("admin.header_read_timeout_secs", "must be at least 1"));
        }
        self.check_timeouts()?;
        check_url("amqp.url", &self.amqp.url, &["amqp", "amqps"])?;
        check_url("redis.url", &self.redis.url, &["redis", "rediss", "redis+unix", "unix"])?;
        check_url("database.url", &self.database.url, &["postgres", "postgresql"])?;
        Ok(())
    }

    /// Upper bounds, so that no value an operator can type makes arithmetic on it
    /// overflow (a deadline `now + startup_timeout`, a TTL in milliseconds, a
    /// semaphore of `concurrency` permits). Lower bounds are checked key by key.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        let (w, a, r, d, c) = (&self.worker, &self.amqp, &self.redis, &self.database, &self.cache);
        let bounds: [(&'static str, u64, u64); 25] = [
            ("worker.concurrency", w.concurrency as u64, MAX_CONCURRENCY as u64),
            ("worker.startup_timeout_secs", w.startup_timeout_secs, MAX_SECS),
            ("worker.shutdown_timeout_secs", w.shutdown_timeout_secs, MAX_SECS),
            ("worker.max_attempts", u64::from(w.max_attempts), 100),
            ("worker.retry_base_delay_ms", w.retry_base_delay_ms, MAX_MS),
            ("worker.retry_max_delay_ms", w.retry_max_delay_ms, MAX_MS),
            ("worker.message_deadline_secs", w.message_deadline_secs, MAX_SECS),
            ("worker.max_message_age_secs", w.max_message_age_secs, MAX_SECS),
            ("amqp.consumer_timeout_secs", a.consumer_timeout_secs, MAX_SECS),
            ("redis.lock_ttl_secs", r.lock_ttl_secs, MAX_SECS),
            ("redis.state_ttl_secs", r.state_ttl_secs, MAX_SECS),
            ("redis.liveness_ttl_secs", r.liveness_ttl_secs, MAX_SECS),
            ("database.max_connections", u64::from(d.max_connections), 10_000),
            ("database.commit_batch_max", d.commit_batch_max as u64, 100_000),
            ("database.commits_in_flight", d.commits_in_flight as u64, 10_000),
            ("database.reads_in_flight", d.reads_in_flight as u64, 10_000),
            ("cache.catalog_ttl_secs", c.catalog_ttl_secs, MAX_SECS),
            ("cache.settings_ttl_secs", c.settings_ttl_secs, MAX_SECS),
            ("cache.knowledge_ttl_secs", c.knowledge_ttl_secs, MAX_SECS),
            ("context.reference_ttl_secs", self.context.reference_ttl_secs, MAX_SECS),
            ("responder.timeout_ms", self.responder.timeout_ms, MAX_MS),
            ("admin.queue_poll_secs", self.admin.queue_poll_secs, MAX_SECS),
            ("admin.max_connections", self.admin.max_connections as u64, 10_000),
            ("admin.header_read_timeout_secs", self.admin.header_read_timeout_secs, 300),
            ("amqp.delivery_limit", u64::from(a.delivery_limit), 1_000_000),
        ];
        match bounds.into_iter().find(|&(_, value, max)| value > max) {
            Some((key, value, max)) => Err(ConfigError::Invalid {
                key,
                problem: format!("is {value}; it must be at most {max}"),
                origin: None,
            }),
            None => Ok(()),
        }
    }

    /// Timeouts that must fit inside one another, checked at start (issue 4):
    /// responder timeout < message deadline < lock TTL < broker consumer timeout,
    /// and the whole retry schedule within the maximum message age.
    fn check_timeouts(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        let secs = |ms: u64| ms as f64 / 1000.0;
        let fits = |key: &'static str, ok: bool, problem: String| {
            if ok { Ok(()) } else { Err(ConfigError::Invalid { key, problem, origin: None }) }
        };
        fits(
            "worker.message_deadline_secs",
            w.message_deadline_secs >= 1 && self.responder.timeout_ms < w.message_deadline_secs * 1000,
            format!(
                "is {}s; it must exceed responder.timeout_ms ({}s) so a slow responder fails before the deadline",
                w.message_deadline_secs,
                secs(self.responder.timeout_ms)
            ),
        )?;
        fits(
            "redis.lock_ttl_secs",
            w.message_deadline_secs < self.redis.lock_ttl_secs,
            format!(
                "is {}s; it must exceed worker.message_deadline_secs ({}s), or a lock could lapse under live work",
                self.redis.lock_ttl_secs, w.message_deadline_secs
            ),
        )?;
        fits(
            "amqp.consumer_timeout_secs",
            self.redis.lock_ttl_secs < self.amqp.consumer_timeout_secs,
            format!(
                "is {}s; it must exceed redis.lock_ttl_secs ({}s), or the broker could take a delivery back while its lock is held",
                self.amqp.consumer_timeout_secs, self.redis.lock_ttl_secs
            ),
        )?;
        let retries = self.retry_schedule_secs();
        fits(
            "worker.max_message_age_secs",
            retries <= w.max_message_age_secs as f64,
            format!(
                "is {}s, but {} attempts of up to {}s each with their retry delays can take {retries:.0}s",
                w.max_message_age_secs, w.max_attempts, w.message_deadline_secs
            ),
        )
    }

    /// How failed attempts are retried (`worker.max_attempts` and the delays).
    pub fn retry_policy(&self) -> crate::outcome::RetryPolicy {
        crate::outcome::RetryPolicy {
            max_attempts: self.worker.max_attempts,
            base_delay: Duration::from_millis(self.worker.retry_base_delay_ms),
            max_delay: Duration::from_millis(self.worker.retry_max_delay_ms),
        }
    }

    /// The longest a message can take over all its attempts: each attempt's
    /// deadline plus every retry delay at its largest jitter.
    pub fn retry_schedule_secs(&self) -> f64 {
        let policy = self.retry_policy();
        let delays: f64 =
            (1..self.worker.max_attempts).map(|n| policy.delay_after(n, 1.0).as_secs_f64()).sum();
        delays + f64::from(self.worker.max_attempts) * self.worker.message_deadline_secs as f64
    }

    /// The configured worker id, or `<hostname>-<pid>`.
    pub fn worker_id(&self) -> String {
        if !self.worker.id.is_empty() {
            return self.worker.id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".to_owned());
        format!("{host}-{}", std::process::id())
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.worker.startup_timeout_secs)
    }
}

fn check_url(key: &'static str, raw: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| ConfigError::Invalid {
        key,
        problem: format!("`{}` is not a URL ({e})", redact_url(raw)),
        origin: None,
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::Invalid {
            key,
            problem: format!("scheme `{}` is not one of {}", url.scheme(), schemes.join(", ")),
            origin: None,
        });
    }
    Ok(())
}

/// At most 64 characters of an operator's value, on one line, for an error.
/// An address the admin endpoint can listen on: an IP address and port, or a
/// host name (resolved when binding, as `localhost`) and port.
fn listen_address(addr: &str) -> bool {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    addr.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok()
            && !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    })
}

fn quoted(value: &str) -> String {
    let short: String = value.chars().take(64).collect();
    let short = redact_text(&short).escape_debug().to_string();
    if value.chars().count() > 64 { format!("{short}…") } else { short }
}

/// Debug of the sections holding URLs or keys: every field as `redact_json`
/// leaves it, so `{:?}` of a config never prints a secret, and a field added
/// later is printed, and redacted, without touching this.
fn debug_redacted<T: Serialize>(name: &str, section: &T, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Ok(mut value) = serde_json::to_value(section) else {
        return f.debug_struct(name).finish_non_exhaustive();
    };
    redact_json(&mut value);
    let mut out = f.debug_struct(name);
    if let serde_json::Value::Object(fields) = &value {
        for (field, v) in fields {
            out.field(field, &format_args!("{v}"));
        }
    }
    out.finish()
}

macro_rules! redacted_debug {
    ($($section:ident),*) => {$(
        impl fmt::Debug for $section {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                debug_redacted(stringify!($section), self, f)
            }
        }
    )*};
}
redacted_debug!(AmqpConfig, RedisConfig, DatabaseConfig, ResponderConfig);

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
