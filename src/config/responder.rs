//! `[responder]`: which responder answers, how it is reached, and what its
//! answers may cost in time, bytes and money.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::validate::{MAX_MS, check_url, require, within};
use super::{ConfigError, debug_redacted};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResponderKind {
    Builtin,
    Openai,
    Http,
}

/// Who answers when the responder cannot (LiteLLM's and OpenRouter's fallbacks).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FallbackKind {
    /// Nobody: the message is retried, parked or waits (CONTRACT §3).
    None,
    /// The builtin responder answers from the context alone.
    Builtin,
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
    /// `openai`, `http`: transient failures in a row (timeouts, refused
    /// connections, 5xx) that open the circuit breaker: the responder is
    /// then taken as down for every message, the worker takes no new
    /// deliveries, the messages it holds are parked without spending
    /// attempts, and one call probes it after the cooldown. 0: never.
    pub breaker_failures: u32,
    /// The first cooldown before a probe; it doubles with each probe that
    /// fails, up to 30 s (or this, when longer).
    pub breaker_cooldown_secs: u64,
    /// `openai`, `http`: who answers a message the responder could not
    /// (a failure, a request to slow down, an open circuit). `builtin`: the
    /// builtin responder, at once, and the worker never stops consuming for
    /// the responder's sake; `none` (the default): retried, parked or held.
    pub fallback: FallbackKind,
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
            // LiteLLM's router cools a deployment down after 3 failures for
            // 5 s; a little more patience here, since each of these failures
            // spends a message's attempt.
            breaker_failures: 5,
            breaker_cooldown_secs: 5,
            fallback: FallbackKind::None,
        }
    }
}

/// Not derived: the URL may carry credentials in its user part or query.
impl fmt::Debug for ResponderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_redacted("ResponderConfig", self, f)
    }
}

impl ResponderConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[
            ("responder.timeout_ms", self.timeout_ms, MAX_MS),
            ("responder.breaker_failures", u64::from(self.breaker_failures), 1_000_000),
            ("responder.breaker_cooldown_secs", self.breaker_cooldown_secs, 3_600),
        ])?;
        require(self.breaker_cooldown_secs > 0, "responder.breaker_cooldown_secs", "must be at least 1")?;
        require(self.timeout_ms > 0, "responder.timeout_ms", "must be at least 1")?;
        require(self.max_response_bytes >= 1024, "responder.max_response_bytes", "must be at least 1024")?;
        require(
            (0.0..=1.0).contains(&self.handoff_threshold),
            "responder.handoff_threshold",
            "must be between 0 and 1",
        )?;
        for (key, cost) in [
            ("responder.prompt_cost_per_1k", self.prompt_cost_per_1k),
            ("responder.completion_cost_per_1k", self.completion_cost_per_1k),
        ] {
            require(cost.is_finite() && cost >= 0.0, key, "must be a price of 0 or more")?;
        }
        match self.kind {
            ResponderKind::Builtin => Ok(()),
            ResponderKind::Openai | ResponderKind::Http => {
                check_url("responder.url", &self.url, &["http", "https"])?;
                require(
                    self.kind != ResponderKind::Openai || !self.model.is_empty(),
                    "responder.model",
                    "is required when responder.kind = \"openai\"",
                )
            }
        }
    }
}
