//! A delivery's AMQP properties and headers are the gateway's data, never
//! instructions (CONTRACT §2). This module reads them as untrusted values — a
//! header of the wrong type or out of range is absent, never a reason to fail the
//! message — and builds the properties of every message the worker moves (retry,
//! defer, dead letter, replay) from an allow-list, never from a copy: a gateway's
//! `CC`, `BCC`, `user_id`, `expiration` or `reply_to` must not steer our publishes.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Attempts already spent on a message (ours: set on every retry).
pub const ATTEMPTS: &str = "x-attempts";
/// Set on every message a worker parks in a retry queue: when it comes back, it
/// is a copy some worker has handled before (see `Incoming::seen_before`).
pub const SEEN: &str = "x-worker-seen";
/// When the message was first read off `worker.inbound` (µs since the epoch),
/// set on every message a worker parks in a retry queue: should Redis lose the
/// conversation's line meanwhile, it takes its place again by this time, not as
/// the newest message of its conversation. Never read from a gateway's message.
pub const INTAKE: &str = "x-worker-intake";
/// How far back an `x-worker-intake` is believed: older is not a retry of ours.
const MAX_INTAKE_AGE_US: i64 = 7 * 24 * 3600 * 1_000_000;
/// The routing key the message was first published with to `chat.inbound`,
/// kept because a retry or a replay reaches the inbound queue by its name.
pub const ROUTING_KEY: &str = "x-routing-key";
pub const ERROR_KIND: &str = "x-error-kind";
pub const ERROR: &str = "x-error";
pub const LAST_ERROR: &str = "x-last-error";
/// W3C trace context, named once for the whole worker.
pub use crate::telemetry::propagation::{TRACEPARENT, TRACESTATE};

/// No retry policy spends more attempts than this: a larger `x-attempts` was not
/// written by a worker, and is ignored.
const MAX_ATTEMPTS: i64 = 10_000;
/// W3C Trace Context: version 00 is exactly 55 characters; later versions may
/// append fields, which we do not read, so anything much longer is not a trace.
const MAX_TRACEPARENT: usize = 256;
/// W3C Trace Context asks propagators to carry at least 512 characters; we carry
/// at most that, so a 60 KB header is dropped rather than forwarded.
const MAX_TRACESTATE: usize = 512;
/// An AMQP routing key is a short string.
const MAX_ROUTING_KEY: usize = 255;

/// A string header's value, if it is one (long or short string, UTF-8) of at
/// most `max` bytes.
pub fn text<'a>(headers: Option<&'a FieldTable>, name: &str, max: usize) -> Option<&'a str> {
    let value = match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?,
        AMQPValue::ShortString(s) => s.as_str(),
        _ => return None,
    };
    (value.len() <= max).then_some(value)
}

/// An integer header's value, whatever integer type the publisher chose.
fn integer(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    Some(match headers?.inner().get(name)? {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}

/// Attempts already spent (`x-attempts`), when the header is an integer in range.
pub fn attempts(headers: Option<&FieldTable>) -> Option<u32> {
    integer(headers, ATTEMPTS).filter(|n| (0..=MAX_ATTEMPTS).contains(n)).and_then(|n| u32::try_from(n).ok())
}

/// Whether a worker parked this message before (`x-worker-seen` = true).
pub fn seen(headers: Option<&FieldTable>) -> bool {
    matches!(headers.and_then(|h| h.inner().get(SEEN)), Some(AMQPValue::Boolean(true)))
}

/// The routing key a retried or replayed message was first published with.
pub fn routing_key(headers: Option<&FieldTable>) -> Option<&str> {
    text(headers, ROUTING_KEY, MAX_ROUTING_KEY).filter(|k| !k.is_empty())
}

/// The producer's `traceparent`, when it has the W3C shape
/// (`vv-<32 hex>-<16 hex>-ff`, lowercase, ids not all zero, version not `ff`).
pub fn traceparent(headers: Option<&FieldTable>) -> Option<&str> {
    text(headers, TRACEPARENT, MAX_TRACEPARENT).filter(|t| valid_traceparent(t))
}

/// The producer's `tracestate`, only beside a valid `traceparent`, and bounded.
pub fn tracestate(headers: Option<&FieldTable>) -> Option<&str> {
    traceparent(headers)?;
    text(headers, TRACESTATE, MAX_TRACESTATE).filter(|s| s.chars().all(|c| (' '..='~').contains(&c)))
}

fn valid_traceparent(t: &str) -> bool {
    let fields: Vec<&str> = t.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match fields.as_slice() {
        [version, trace, span, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && nonzero(trace)
                && hex(span, 16)
                && nonzero(span)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// The producer's trace headers, validated, as headers of a message we publish.
pub fn trace_headers(from: Option<&FieldTable>, into: &mut FieldTable) {
    if let Some(parent) = traceparent(from) {
        into.insert(TRACEPARENT.into(), long(parent));
        if let Some(state) = tracestate(from) {
            into.insert(TRACESTATE.into(), long(state));
        }
    }
}

/// What a moved message keeps of the delivery it was: its identity, its trace,
/// and where it was first published. Everything else the gateway set is dropped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Carried {
    content_type: Option<ShortString>,
    message_id: Option<ShortString>,
    headers: FieldTable,
    /// Its first intake time, kept on a retry or a deferral (see [`INTAKE`]).
    pub intake_us: Option<i64>,
}

impl Carried {
    /// `routing_key`: the key the message was first published with, if known.
    pub fn from_delivery(properties: &BasicProperties, routing_key: Option<&str>) -> Self {
        let source = properties.headers().as_ref();
        let mut headers = FieldTable::default();
        trace_headers(source, &mut headers);
        if let Some(key) = routing_key.filter(|k| !k.is_empty() && k.len() <= MAX_ROUTING_KEY) {
            headers.insert(ROUTING_KEY.into(), long(key));
        }
        Self {
            content_type: properties.content_type().clone(),
            message_id: properties.message_id().clone(),
            headers,
            intake_us: None,
        }
    }

    /// The properties to publish it with: persistent, the kept fields, and
    /// `extra` headers of ours on top.
    pub fn properties(&self, extra: impl IntoIterator<Item = (&'static str, AMQPValue)>) -> BasicProperties {
        let mut headers = self.headers.clone();
        for (name, value) in extra {
            headers.insert(name.into(), value);
        }
        let mut properties = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
        if let Some(content_type) = &self.content_type {
            properties = properties.with_content_type(content_type.clone());
        }
        if let Some(message_id) = &self.message_id {
            properties = properties.with_message_id(message_id.clone());
        }
        properties
    }
}

/// The first intake time a retry of ours carries (`x-worker-intake`), if it
/// is an integer no later than `now_us` and at most a week before it.
pub fn intake(headers: Option<&FieldTable>, now_us: i64) -> Option<i64> {
    integer(headers, INTAKE).filter(|at| *at <= now_us && now_us.saturating_sub(*at) <= MAX_INTAKE_AGE_US)
}

/// A header value from untrusted text: long strings have no length limit.
pub fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

/// The longest `x-error` / `x-last-error` we write: one line an operator reads,
/// not a copy of what the message carried.
pub const MAX_ERROR: usize = 1024;

/// `error` as a header value, cut at [`MAX_ERROR`] bytes on a character boundary.
pub fn error_text(error: &str) -> AMQPValue {
    if error.len() <= MAX_ERROR {
        return long(error);
    }
    let mut end = MAX_ERROR - '…'.len_utf8();
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    long(&format!("{}…", &error[..end]))
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
