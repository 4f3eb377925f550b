//! What operators see of the worker: metrics (and, with the observability
//! issue's next steps, traces).

pub mod metrics;
