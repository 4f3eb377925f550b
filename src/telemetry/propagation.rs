//! W3C trace context in AMQP headers: continue the producer's trace from a
//! delivery's `traceparent`/`tracestate`, and put ours on the reply.

use std::collections::HashMap;

use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

struct HeaderReader<'a>(&'a FieldTable);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
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

/// `traceparent` (and `tracestate`) for `cx`, as AMQP headers.
pub fn inject(cx: &Context, into: &mut FieldTable) {
    let mut writer = HeaderWriter(HashMap::new());
    TraceContextPropagator::new().inject_context(cx, &mut writer);
    for (k, v) in writer.0 {
        into.insert(k.as_str().into(), AMQPValue::LongString(LongString::from(v.as_bytes())));
    }
}
