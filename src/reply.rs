//! The reply as the delivery service receives it (CONTRACT §4). Built from the
//! committed row, so a reply published again after a crash is byte-for-byte the
//! reply published (or meant to be published) the first time.

use chrono::SecondsFormat;
use serde::Serialize;
use serde_json::Value;

use crate::model::Fingerprint;
use crate::model::Inbound;
use crate::store::StoredReply;

#[derive(Serialize)]
struct Body<'a> {
    reply_id: String,
    in_reply_to: &'a str,
    fingerprint: &'a str,
    tenant_id: String,
    conversation_id: String,
    channel: &'a str,
    customer: Customer<'a>,
    text: &'a str,
    handoff: bool,
    confidence: f32,
    references: &'a Value,
    /// The fingerprints this reply answers, oldest first: its own alone, or
    /// a coalesced burst's, its own last (CONTRACT §4).
    answers: &'a [String],
    created_at: String,
}

#[derive(Serialize)]
struct Customer<'a> {
    external_id: &'a str,
}

pub fn reply_body(inbound: &Inbound, fp: &Fingerprint, reply: &StoredReply) -> Vec<u8> {
    let body = Body {
        reply_id: fp.reply_id(),
        in_reply_to: &inbound.message_id,
        fingerprint: fp.as_str(),
        tenant_id: inbound.tenant_id.to_string(),
        conversation_id: reply.conversation_id.to_string(),
        channel: &inbound.channel,
        customer: Customer { external_id: &inbound.customer_external_id },
        text: &reply.text,
        handoff: reply.handoff,
        confidence: reply.confidence,
        references: &reply.references,
        answers: &reply.answers,
        created_at: reply.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    // Serializing plain strings, numbers and an already-valid JSON value cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}
