//! W3C trace context in AMQP headers: continue the producer's trace from a
//! delivery's `traceparent`/`tracestate`, and put ours on the reply.

use std::collections::HashMap;

use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::broker::headers;

/// Reads only the two trace headers, and only values of the W3C shape and size:
/// a gateway's 60 KB `traceparent` is no trace, and never reaches the parser.
struct HeaderReader<'a>(&'a FieldTable);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            headers::TRACEPARENT => headers::traceparent(Some(self.0)),
            headers::TRACESTATE => headers::tracestate(Some(self.0)),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![headers::TRACEPARENT, headers::TRACESTATE]
    }
}

struct HeaderWriter(HashMap<String, String>);

impl Injector for HeaderWriter {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The producer's context, if the delivery carries one.
pub fn extract(headers: Option<&FieldTable>) -> Option<Context> {
    let headers = headers?;
    let cx = TraceContextPropagator::new().extract(&HeaderReader(headers));
    use opentelemetry::trace::TraceContextExt;
    cx.span().span_context().is_valid().then_some(cx)
}

/// The reply's trace headers (CONTRACT §4): the worker's span when it exports
/// traces, else the gateway's `traceparent` (and `tracestate`) passed on
/// unchanged, else none.
pub fn reply_headers(cx: &Context, gateway: Option<&FieldTable>) -> FieldTable {
    let mut out = FieldTable::default();
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid() {
        inject(cx, &mut out);
    } else {
        headers::trace_headers(gateway, &mut out);
    }
    out
}

/// `traceparent` (and `tracestate`) for `cx`, as AMQP headers.
pub fn inject(cx: &Context, into: &mut FieldTable) {
    let mut writer = HeaderWriter(HashMap::new());
    TraceContextPropagator::new().inject_context(cx, &mut writer);
    for (k, v) in writer.0 {
        into.insert(k.as_str().into(), AMQPValue::LongString(LongString::from(v.as_bytes())));
    }
}
