//! Traces over OTLP (CONTRACT §7), set up from the standard environment:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (off when unset), `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`grpc` or `http/protobuf`, the default), `OTEL_SERVICE_NAME` (default
//! `chat-worker`), `OTEL_RESOURCE_ATTRIBUTES`, and the SDK's `OTEL_TRACES_SAMPLER`
//! / `OTEL_BSP_*` variables. Spans are batched and exported by a task of their
//! own, so exporting never blocks a message; `shutdown` flushes the last ones.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

#[derive(Debug, thiserror::Error)]
#[error("OTLP trace exporter: {0}")]
pub struct TracesError(String);

/// Keeps the tracer provider; call `shutdown` before exiting so spans flush.
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces at exit failed: {e}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The tracer provider, or `None` when no OTLP endpoint is configured.
pub fn provider() -> Result<Option<SdkTracerProvider>, TracesError> {
    if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        return Ok(None);
    }
    crate::tls::install_crypto();
    let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    let exporter = match protocol.as_str() {
        "grpc" => SpanExporter::builder().with_tonic().build(),
        "http/protobuf" => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
        other => {
            return Err(TracesError(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not grpc or http/protobuf"
            )));
        }
    }
    .map_err(|e| TracesError(e.to_string()))?;
    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("chat-worker");
    }
    // Exported from the tokio runtime (the HTTP and gRPC clients need one), batched.
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let provider =
        SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource.build()).build();
    Ok(Some(provider))
}

/// The `tracing` layer exporting spans, if a provider is set up.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("chat-worker"))
}

impl From<Option<SdkTracerProvider>> for Traces {
    fn from(provider: Option<SdkTracerProvider>) -> Self {
        if let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
        }
        Self { provider }
    }
}
