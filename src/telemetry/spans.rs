//! The spans of one delivery (CONTRACT §7): a CONSUMER span per delivery named
//! after the queue, with OpenTelemetry's messaging attributes, continuing (or
//! linking to) the producer's trace; and one child span per stage.

use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation;
use crate::model::Envelope;

/// The consumer span of one delivery from `queue` (its `delivery_tag` there).
/// With `link`, the producer's context becomes a link of a new trace instead of
/// the parent.
pub fn consumer(queue: &str, envelope: &Envelope<'_>, delivery_tag: u64, link: bool) -> Span {
    let span = tracing::info_span!(
        "process worker.inbound",
        otel.name = %format!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %queue,
        messaging.message.id = envelope.message_id.unwrap_or(""),
        messaging.rabbitmq.message.delivery_tag = delivery_tag,
        messaging.message.body.size = envelope.body.len(),
        chat.tenant_id = Empty,
        chat.fingerprint = Empty,
        chat.outcome = Empty,
        chat.lock = Empty,
        trace_id = Empty,
    );
    let producer = propagation::extract(envelope.trace);
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

/// Records on the delivery's span which message it carries.
pub fn record_message(tenant_id: &uuid::Uuid, fingerprint: &crate::model::Fingerprint) {
    let span = Span::current();
    span.record("chat.tenant_id", tenant_id.to_string());
    span.record("chat.fingerprint", fingerprint.as_str());
}

/// Records on the delivery's span what its claim found (`chat.lock`).
pub fn record_lock(decision: &'static str) {
    Span::current().record("chat.lock", decision);
}
