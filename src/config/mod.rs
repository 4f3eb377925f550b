//! Typed configuration, layered as CONTRACT §1 says:
//! command-line flag > environment > `--config` file > built-in default.
//!
//! Layering is done by `figment` (one provider per layer, merged in order, see
//! `layers.rs`), so a wrong value anywhere is reported with the key and the layer
//! it came from. Every key here is documented, at its default, in the
//! repository's `worker.toml`.
//!
//! One file per section (`[worker]` is `worker.rs`, …), each struct beside its
//! `Default` and its own checks; `validate.rs` runs them and the rules that span
//! sections. Everything a caller uses is re-exported here, as `config::AmqpConfig`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact::{redact_json, redact_text};

mod admin;
mod amqp;
mod cache;
mod context;
mod database;
mod layers;
mod redis;
mod responder;
mod telemetry;
mod turns;
mod validate;
mod worker;

// `self::`: a bare `redis::` would be ambiguous with the `redis` crate.
pub use self::admin::AdminConfig;
pub use self::amqp::AmqpConfig;
pub use self::cache::CacheConfig;
pub use self::context::ContextConfig;
pub use self::database::DatabaseConfig;
pub use self::redis::{RedisConfig, RedisMode, seeds};
pub use self::responder::{FallbackKind, ResponderConfig, ResponderKind};
pub use self::telemetry::{ProducerContext, TracingConfig};
pub use self::turns::{MAX_COALESCE_MS, MidGeneration, TurnsConfig};
pub use self::worker::{MAX_CONCURRENCY, WorkerConfig, check_worker_id};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub worker: WorkerConfig,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub context: ContextConfig,
    pub turns: TurnsConfig,
    pub responder: ResponderConfig,
    pub admin: AdminConfig,
    pub tracing: TracingConfig,
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

    /// How failed attempts are retried (`worker.max_attempts` and the delays).
    pub(crate) fn retry_policy(&self) -> crate::outcome::RetryPolicy {
        crate::outcome::RetryPolicy {
            max_attempts: self.worker.max_attempts,
            base_delay: Duration::from_millis(self.worker.retry_base_delay_ms),
            max_delay: Duration::from_millis(self.worker.retry_max_delay_ms),
        }
    }

    /// The longest a message can take over all its attempts: each attempt's
    /// deadline plus every retry delay at its largest jitter.
    pub(crate) fn retry_schedule_secs(&self) -> f64 {
        let policy = self.retry_policy();
        let delays: f64 =
            (1..self.worker.max_attempts).map(|n| policy.delay_after(n, 1.0).as_secs_f64()).sum();
        delays + f64::from(self.worker.max_attempts) * self.worker.message_deadline_secs as f64
    }

    /// The configured worker id, or `<hostname>-<pid>`.
    pub(crate) fn worker_id(&self) -> String {
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

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
