//! An inbound customer message that passed every field rule (CONTRACT §2).

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::Fingerprint;

/// An inbound customer message that passed every field rule of CONTRACT §2.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Inbound {
    pub message_id: String,
    pub tenant_id: Uuid,
    pub channel: String,
    pub customer_external_id: String,
    pub customer_name: Option<String>,
    pub conversation_id: Option<Uuid>,
    pub text: String,
    pub received_at: DateTime<Utc>,
    pub attachments: Value,
    pub metadata: Value,
}

impl Inbound {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(
            &self.tenant_id.to_string(),
            &self.channel,
            &self.customer_external_id,
            &self.message_id,
            &self.text,
        )
    }

    /// `<channel>.<tenant_id>`, the routing key of this message and of its reply.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.channel, self.tenant_id)
    }
}
