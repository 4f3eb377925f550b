//! Stage 1, decode: raw delivery bytes -> a validated [`Inbound`] message, or the
//! reason it is rejected (CONTRACT §2 field rules, §3 error kinds).
//!
//! Pure: no I/O. Whether the tenant exists and is active is checked by the
//! pipeline against the store, since that needs the database.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use crate::model::Inbound;
use crate::outcome::{Rejection, RejectionKind};

pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// `customer.name`, when given, is at most this many characters (CONTRACT §2).
pub const MAX_CUSTOMER_NAME: usize = 256;
pub const CHANNELS: [&str; 7] = ["whatsapp", "sms", "web", "telegram", "instagram", "messenger", "email"];

/// Decodes and validates one delivery body.
pub fn decode(body: &[u8]) -> Result<Inbound, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(malformed(format!("body is {} bytes, over the limit of {MAX_BODY_BYTES}", body.len())));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| malformed(format!("body is not UTF-8 (invalid byte at offset {})", e.valid_up_to())))?;
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(format!("body is not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(malformed(format!("body is JSON {} where an object is required", kind_of(&value))));
    };
    // PostgreSQL stores no NUL in text or jsonb: a message carrying one anywhere
    // could only fail every write it shares, so it is refused here, by name.
    if let Some(path) = object.iter().find_map(|(key, value)| nul_at(key, value)) {
        return Err(invalid(format!("{path} contains NUL (U+0000), which no field may")));
    }
    validate(object)
}

/// The routing key a message was published with must be its body's
/// `<channel>.<tenant_id>` (CONTRACT §2): a gateway allowed to publish for one
/// tenant or channel cannot write into another's. `None`: not known (a message
/// put straight into the queue), nothing to check.
pub fn check_route(inbound: &Inbound, routing_key: Option<&str>) -> Result<(), Rejection> {
    // The tenant as a UUID, whatever its spelling (case, hyphens): the rule is
    // about naming another tenant, not about how the gateway writes this one.
    let matches = |key: &str| {
        key.split_once('.').is_some_and(|(channel, tenant)| {
            channel == inbound.channel && Uuid::try_parse(tenant).is_ok_and(|t| t == inbound.tenant_id)
        })
    };
    match routing_key {
        Some(key) if !matches(key) => Err(invalid(format!(
            "routing key `{}` does not match the body's channel and tenant_id (`{}`)",
            truncate(key),
            inbound.routing_key()
        ))),
        _ => Ok(()),
    }
}

/// The path below `value` of a string or a key that holds a NUL, if any
/// (`""` for `value` itself, `.key`, `[0]`, …). Allocates only on the way back
/// from a find, so the happy path costs one walk.
fn nul_below(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| nul_below(v).map(|rest| format!("[{i}]{rest}")))
        }
        Value::Object(fields) => fields.iter().find_map(|(key, v)| nul_at(key, v).map(|p| format!(".{p}"))),
        _ => None,
    }
}

/// As [`nul_below`] for the member `key` of an object, the key included.
fn nul_at(key: &str, value: &Value) -> Option<String> {
    if key.contains('\0') {
        return Some(truncate(key));
    }
    nul_below(value).map(|rest| format!("{}{rest}", truncate(key)))
}

fn validate(mut o: Map<String, Value>) -> Result<Inbound, Rejection> {
    let mut errors = Vec::new();
    let message_id = required_string(&o, "message_id", &mut errors).filter(|id| {
        let ok = (1..=255).contains(&id.len());
        if !ok {
            errors.push(format!("message_id must be 1..255 bytes, got {}", id.len()));
        }
        ok
    });
    let tenant_id = required_string(&o, "tenant_id", &mut errors)
        .and_then(|raw| uuid_field("tenant_id", raw, &mut errors));
    let channel = required_string(&o, "channel", &mut errors).filter(|c| {
        let ok = CHANNELS.contains(&c.as_str());
        if !ok {
            errors.push(format!("channel `{}` is not one of {}", truncate(c), CHANNELS.join(", ")));
        }
        ok
    });
    let (customer_external_id, customer_name) = customer(o.get("customer"), &mut errors);
    let conversation_id = match o.get("conversation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => uuid_field("conversation_id", raw.clone(), &mut errors),
        Some(other) => {
            errors.push(format!("conversation_id must be a UUID string or null, got {}", kind_of(other)));
            None
        }
    };
    let text = required_string(&o, "text", &mut errors).filter(|t| {
        let chars = t.chars().count();
        let fits = (1..=4096).contains(&chars);
        if !fits {
            errors.push(format!("text must be 1..4096 characters, got {chars}"));
        }
        let no_nul = !t.contains('\0');
        if !no_nul {
            errors.push("text must not contain NUL (U+0000)".to_owned());
        }
        fits && no_nul
    });
    let received_at = required_string(&o, "received_at", &mut errors).and_then(|raw| {
        match DateTime::parse_from_rfc3339(&raw) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                errors.push(format!("received_at `{}` is not an RFC 3339 timestamp ({e})", truncate(&raw)));
                None
            }
        }
    });
    let attachments = optional_of(&mut o, "attachments", Value::Array(Vec::new()), &mut errors);
    let metadata = optional_of(&mut o, "metadata", Value::Object(Map::new()), &mut errors);

    match (message_id, tenant_id, channel, customer_external_id, text, received_at) {
        (
            Some(message_id),
            Some(tenant_id),
            Some(channel),
            Some(customer_external_id),
            Some(text),
            Some(received_at),
        ) if errors.is_empty() => Ok(Inbound {
            message_id,
            tenant_id,
            channel,
            customer_external_id,
            customer_name,
            conversation_id,
            text,
            received_at,
            attachments,
            metadata,
        }),
        _ => Err(Rejection { kind: RejectionKind::Invalid, error: errors.join("; ") }),
    }
}

fn required_string(o: &Map<String, Value>, field: &str, errors: &mut Vec<String>) -> Option<String> {
    match o.get(field) {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => {
            errors.push(format!("{field} is required"));
            None
        }
        Some(other) => {
            errors.push(format!("{field} must be a string, got {}", kind_of(other)));
            None
        }
    }
}

fn uuid_field(field: &str, raw: String, errors: &mut Vec<String>) -> Option<Uuid> {
    match Uuid::try_parse(&raw) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(format!("{field} `{}` is not a UUID", truncate(&raw)));
            None
        }
    }
}

fn customer(value: Option<&Value>, errors: &mut Vec<String>) -> (Option<String>, Option<String>) {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        errors.push("customer is required".to_owned());
        return (None, None);
    };
    let Value::Object(c) = value else {
        errors.push(format!("customer must be an object, got {}", kind_of(value)));
        return (None, None);
    };
    let external_id = match c.get("external_id") {
        Some(Value::String(id)) if (1..=128).contains(&id.chars().count()) => Some(id.clone()),
        Some(Value::String(id)) => {
            errors
                .push(format!("customer.external_id must be 1..128 characters, got {}", id.chars().count()));
            None
        }
        None | Some(Value::Null) => {
            errors.push("customer.external_id is required".to_owned());
            None
        }
        Some(other) => {
            errors.push(format!("customer.external_id must be a string, got {}", kind_of(other)));
            None
        }
    };
    let name = match c.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if n.chars().count() <= MAX_CUSTOMER_NAME => Some(n.clone()),
        Some(Value::String(n)) => {
            errors.push(format!(
                "customer.name must be at most {MAX_CUSTOMER_NAME} characters, got {}",
                n.chars().count()
            ));
            None
        }
        Some(other) => {
            errors.push(format!("customer.name must be a string or null, got {}", kind_of(other)));
            None
        }
    };
    (external_id, name)
}

/// `attachments` (an array) and `metadata` (an object) are stored as given.
fn optional_of(o: &mut Map<String, Value>, field: &str, empty: Value, errors: &mut Vec<String>) -> Value {
    match o.remove(field) {
        None | Some(Value::Null) => empty,
        Some(v) if std::mem::discriminant(&v) == std::mem::discriminant(&empty) => v,
        Some(other) => {
            errors.push(format!("{field} must be {}, got {}", kind_of(&empty), kind_of(&other)));
            empty
        }
    }
}

fn malformed(error: String) -> Rejection {
    Rejection { kind: RejectionKind::Malformed, error }
}

fn invalid(error: String) -> Rejection {
    Rejection { kind: RejectionKind::Invalid, error }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Quotes at most 64 characters of untrusted input in an error, on one line.
fn truncate(s: &str) -> String {
    let short: String = s.chars().take(64).collect();
    let short = short.escape_debug().to_string();
    if s.chars().count() > 64 { format!("{short}…") } else { short }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
