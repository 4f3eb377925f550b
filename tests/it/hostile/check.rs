//! What a hostile case's dead letter must be: its reason, its body unchanged,
//! and only the allow-listed properties and headers.

use lapin::message::Delivery;

use super::cases::{Case, PARENT};
use crate::harness::header_str;

pub(super) fn dead_letter(id: &str, d: &Delivery, kind: &str, names: &str, original: &Case) {
    assert_eq!(header_str(d, "x-error-kind").as_deref(), Some(kind), "{id}");
    let error = header_str(d, "x-error").unwrap_or_default();
    assert!(error.contains(names), "{id}: x-error `{error}` should name `{names}`");
    assert!(!error.contains('\n'), "{id}: one line");
    assert_eq!(d.data, original.body, "{id}: dead-lettered unchanged");
    assert_eq!(*d.properties.user_id(), None, "{id}: no user_id of the gateway's");
    assert_eq!(*d.properties.reply_to(), None, "{id}");
    assert_eq!(*d.properties.expiration(), None, "{id}");
    let names: Vec<String> = d
        .properties
        .headers()
        .as_ref()
        .map_or(Vec::new(), |h| h.inner().keys().map(|k| k.to_string()).collect());
    // x-delivery-count is the dead queue's own (it counts its deliveries to this test).
    let kept = ["x-error-kind", "x-error", "x-routing-key", "traceparent", "tracestate", "x-delivery-count"];
    assert!(names.iter().all(|k| kept.contains(&k.as_str())), "{id}: only an allow-list: {names:?}");
    assert_eq!(header_str(d, "x-routing-key").as_deref(), Some(original.routing_key.as_str()), "{id}");
    let parent = header_str(d, "traceparent").unwrap_or_default();
    assert!(parent.is_empty() || parent == PARENT, "{id}: a traceparent only when valid: {parent:.60}");
    let state = header_str(d, "tracestate").unwrap_or_default();
    assert!(state.len() <= 512, "{id}: a bounded tracestate");
}
