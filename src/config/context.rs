//! `[context]`: what of a conversation the responder is given, and how long its
//! latest numbered list stays at hand.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::validate::{MAX_SECS, require, within};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ContextConfig {
    /// Latest messages of the conversation given to the responder.
    pub history_limit: u32,
    /// How long a conversation's latest numbered list stays in Redis (PostgreSQL has it after).
    pub reference_ttl_secs: u64,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self { history_limit: 20, reference_ttl_secs: 300 }
    }
}

impl ContextConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[("context.reference_ttl_secs", self.reference_ttl_secs, MAX_SECS)])?;
        require(self.history_limit <= 1000, "context.history_limit", "must be at most 1000")
    }
}
