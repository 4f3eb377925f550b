//! `[cache]`: how long a tenant's catalog, settings and knowledge are kept, and
//! how much memory the in-process tier may hold.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::validate::{MAX_SECS, require, within};

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

impl CacheConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[
            ("cache.catalog_ttl_secs", self.catalog_ttl_secs, MAX_SECS),
            ("cache.settings_ttl_secs", self.settings_ttl_secs, MAX_SECS),
            ("cache.knowledge_ttl_secs", self.knowledge_ttl_secs, MAX_SECS),
        ])?;
        require(
            self.local_max_bytes >= 1024 * 1024,
            "cache.local_max_bytes",
            "must be at least 1048576 (1 MiB)",
        )?;
        require(
            self.catalog_ttl_secs > 0 && self.settings_ttl_secs > 0 && self.knowledge_ttl_secs > 0,
            "cache.catalog_ttl_secs",
            "cache TTLs must be at least 1 second",
        )
    }
}
