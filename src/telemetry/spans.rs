//! The spans of one delivery (CONTRACT §7): a CONSUMER span per delivery named
//! after the queue, with OpenTelemetry's messaging attributes, continuing (or
//! linking to) the producer's trace; and one child span per stage.

use lapin::types::FieldTable;
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation;

/// What a delivery tells its span.
pub struct DeliveryInfo<'a> {
    pub queue: &'a str,
    pub message_id: Option<&'a str>,
    pub delivery_tag: u64,
    pub body_size: usize,
    pub headers: Option<&'a FieldTable>,
}

/// The consumer span of one delivery. With `link`, the producer's context
/// becomes a link of a new trace instead of the parent.
pub fn consumer(d: &DeliveryInfo<'_>, link: bool) -> Span {
    let span = tracing::info_span!(
        "process worker.inbound",
        otel.name = %format!("process {}", d.queue),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %d.queue,
        messaging.message.id = d.message_id.unwrap_or(""),
        messaging.rabbitmq.message.delivery_tag = d.delivery_tag,
        messaging.message.body.size = d.body_size,
        chat.tenant_id = Empty,
        chat.fingerprint = Empty,
        chat.outcome = Empty,
        chat.lock = Empty,
        trace_id = Empty,
    );
    let producer = propagation::extract(d.headers);
    let producer_trace = producer.as_ref().map(|cx| cx.span().span_context().trace_id());
    if let Some(cx) = producer {
        if link {
            span.add_link(cx.span().span_context().clone());
        } else {
            let _ = span.set_parent(cx);
        }
    }
    // The trace id every log line of this delivery carries: ours when traces are
    // exported, else at least the producer's.
    let ours = span.context().span().span_context().trace_id();
    let trace_id = Some(ours).filter(|t| *t != opentelemetry::trace::TraceId::INVALID).or(producer_trace);
    if let Some(trace_id) = trace_id {
        span.record("trace_id", trace_id.to_string());
    }
    span
}

/// A child span for one stage of the pipeline. `cache.tier` is recorded by the
/// stages the catalog cache answers (local, redis or database).
pub fn stage(name: &'static str) -> Span {
    tracing::info_span!("stage", otel.name = name, cache.tier = Empty)
}
