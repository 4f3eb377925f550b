//! What operators see of the worker: Prometheus metrics, OTLP traces with W3C
//! context carried in AMQP headers.

pub mod metrics;
pub mod propagation;
pub mod spans;
pub mod traces;
