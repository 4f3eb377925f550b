//! The process's one TLS crypto provider.

/// Makes ring the process's TLS crypto provider (reqwest and the OTLP exporter are
/// built without one of their own); later calls do nothing.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
