//! W3C trace context across the broker: continue the producer's trace from a
//! delivery's `traceparent`/`tracestate`, and say which context the reply carries.
//! The broker reads and writes the headers; this module only decides.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::model::TraceContext;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Reads only the two trace fields, which the broker checked for shape and size:
/// a gateway's 60 KB `traceparent` is no trace, and never reaches the parser.
struct Reader<'a>(TraceContext<'a>);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.0.traceparent,
            TRACESTATE => self.0.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

struct Writer(HashMap<String, String>);

impl Injector for Writer {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The producer's context, if the delivery carries a valid one.
pub fn extract(trace: TraceContext<'_>) -> Option<Context> {
    trace.traceparent?;
    let cx = TraceContextPropagator::new().extract(&Reader(trace));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The reply's trace headers (CONTRACT §4), as (name, value): the worker's span
/// `cx` when it exports traces, else the gateway's `traceparent` (and
/// `tracestate`) passed on unchanged, else none.
pub fn reply_trace(cx: &Context, gateway: TraceContext<'_>) -> Vec<(&'static str, String)> {
    if cx.span().span_context().is_valid() {
        let mut writer = Writer(HashMap::new());
        TraceContextPropagator::new().inject_context(cx, &mut writer);
        let mut out = Vec::with_capacity(2);
        for name in [TRACEPARENT, TRACESTATE] {
            if let Some(value) = writer.0.remove(name) {
                out.push((name, value));
            }
        }
        return out;
    }
    let Some(parent) = gateway.traceparent else { return Vec::new() };
    let state = gateway.tracestate.map(|s| (TRACESTATE, s.to_owned()));
    std::iter::once((TRACEPARENT, parent.to_owned())).chain(state).collect()
}
