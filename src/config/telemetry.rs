//! `[tracing]`: how consumer spans join the producer's trace, and whether they
//! may carry customers' words. (Named `telemetry`, not `tracing`, so it does not
//! shadow the `tracing` crate in this module's paths.)

use serde::{Deserialize, Serialize};

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
