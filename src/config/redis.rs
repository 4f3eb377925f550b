//! `[redis]`: where processing states, locks and liveness live, and how long each lasts.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::validate::{MAX_SECS, check_url, require, within};
use super::{ConfigError, debug_redacted};

/// One Redis primary, or a Redis Cluster (CONTRACT §1: `WORKER__REDIS__MODE=cluster`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    #[default]
    Standalone,
    /// `url` names one or more seed nodes, comma-separated; the client learns the
    /// rest of the cluster from them.
    Cluster,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// One URL; in cluster mode, seed nodes, comma-separated.
    pub url: String,
    pub mode: RedisMode,
    /// Where the shared catalog cache lives, if not beside the locks: a Redis
    /// (or cluster, in the same mode) whose eviction policy may drop cache
    /// values, and so can never evict a lock. Empty: `url`.
    pub cache_url: String,
    /// Prepended to every key the worker writes, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Processing lock lifetime: a lock whose worker died frees itself after this.
    pub lock_ttl_secs: u64,
    /// How long a message's processing state (and so duplicate detection in Redis) is kept.
    pub state_ttl_secs: u64,
    /// A worker that has not refreshed its liveness key for this long is considered gone.
    pub liveness_ttl_secs: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            mode: RedisMode::Standalone,
            cache_url: String::new(),
            key_prefix: "chat-worker:".into(),
            lock_ttl_secs: 60,
            state_ttl_secs: 600,
            liveness_ttl_secs: 15,
        }
    }
}

/// Not derived: the URL (or seed list) carries Redis's password.
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_redacted("RedisConfig", self, f)
    }
}

impl RedisConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[
            ("redis.lock_ttl_secs", self.lock_ttl_secs, MAX_SECS),
            ("redis.state_ttl_secs", self.state_ttl_secs, MAX_SECS),
            ("redis.liveness_ttl_secs", self.liveness_ttl_secs, MAX_SECS),
        ])?;
        require(
            self.lock_ttl_secs > 0 && self.lock_ttl_secs <= self.state_ttl_secs,
            "redis.lock_ttl_secs",
            "must be at least 1 and not above redis.state_ttl_secs",
        )?;
        require(self.liveness_ttl_secs >= 2, "redis.liveness_ttl_secs", "must be at least 2")?;
        // A brace would move the key's hash tag (the part between the first `{`
        // and `}`) off the conversation shard: keys of one script would land in
        // different cluster slots.
        require(
            !self.key_prefix.contains(['{', '}']),
            "redis.key_prefix",
            "must not contain `{` or `}` (they choose a key's Redis Cluster slot)",
        )?;
        check_nodes("redis.url", &self.url, self.mode)?;
        if self.cache_url.is_empty() {
            Ok(())
        } else {
            check_nodes("redis.cache_url", &self.cache_url, self.mode)
        }
    }

    /// The Redis of the shared catalog cache: `cache_url`, or `url` when empty.
    pub fn cache_url(&self) -> &str {
        if self.cache_url.is_empty() { &self.url } else { &self.cache_url }
    }

    /// The URLs in `url`: one in standalone mode, the seed nodes in cluster mode.
    pub fn seeds(&self) -> impl Iterator<Item = &str> {
        seeds(&self.url)
    }
}

/// The URLs of a comma-separated list.
pub fn seeds(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn check_nodes(key: &'static str, urls: &str, mode: RedisMode) -> Result<(), ConfigError> {
    match mode {
        RedisMode::Standalone => {
            require(
                !urls.contains(','),
                key,
                "names several nodes (a comma): set redis.mode = \"cluster\" (WORKER__REDIS__MODE=cluster) for a Redis Cluster",
            )?;
            check_url(key, urls, &["redis", "rediss", "redis+unix", "unix"])
        }
        RedisMode::Cluster => {
            for seed in seeds(urls) {
                check_url(key, seed, &["redis", "rediss"])?;
                // A cluster has database 0 only: a seed naming another would be ignored.
                let db =
                    url::Url::parse(seed).map(|u| u.path().trim_matches('/').to_owned()).unwrap_or_default();
                require(
                    db.is_empty() || db == "0",
                    key,
                    "a Redis Cluster has database 0 only: drop the seed's `/<db>`",
                )?;
            }
            let tls =
                seeds(urls).map(|s| s.starts_with("rediss:")).collect::<std::collections::BTreeSet<_>>();
            require(
                tls.len() <= 1,
                key,
                "mixes redis:// and rediss:// seeds: a cluster's nodes are all TLS or none",
            )?;
            require(seeds(urls).next().is_some(), key, "names no seed node")
        }
    }
}
