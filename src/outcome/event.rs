//! A delivery's settling, told once: its log line, its metrics (outcome,
//! retries, dead letters) and its span's `chat.outcome` come from here alone, so
//! that the three never disagree (vector's `internal_events` is the model).

use super::{Disposition, Outcome};
use crate::telemetry::metrics::Metrics;

/// What is known when a delivery's outcome has been decided.
pub struct Settled<'a> {
    pub outcome: &'a Outcome,
    pub disposition: &'a Disposition,
    /// This delivery's attempt number, from 1.
    pub attempt: u32,
    /// The producer's `message_id` property, for a body that could not be read.
    pub message_id: Option<&'a str>,
}

impl Settled<'_> {
    /// Records the event in the current (the delivery's) span, the metrics and the log.
    pub fn emit(&self, metrics: &Metrics) {
        let label = self.outcome.label();
        tracing::Span::current().record("chat.outcome", label);
        metrics.outcome(label);
        match self.disposition {
            Disposition::Retry { .. } => {
                metrics.retries.inc();
            }
            Disposition::DeadLetter { kind, .. } => metrics.dead_letter(kind),
            Disposition::Ack | Disposition::Defer { .. } => {}
        }
        self.log();
    }

    fn log(&self) {
        let message_id = self.message_id.unwrap_or("-");
        match self.outcome {
            Outcome::Processed { fingerprint, replayed } => {
                tracing::debug!(%fingerprint, replayed, "processed");
            }
            Outcome::Duplicate { fingerprint, of } => tracing::debug!(%fingerprint, ?of, "duplicate"),
            Outcome::Deferred { fingerprint, worker_id } => {
                tracing::info!(%fingerprint, holder = %worker_id, "redelivered while another worker holds it; looking again later");
            }
            Outcome::Coalesced { fingerprint } => tracing::debug!(%fingerprint, "coalesced into its burst"),
            Outcome::Waiting { fingerprint, behind } => {
                tracing::debug!(%fingerprint, %behind, "waiting for its conversation's turn; parked, keeping its place");
            }
            Outcome::SlowedDown { fingerprint, pause } => {
                let pause_ms = pause.as_millis() as u64;
                tracing::info!(%fingerprint, pause_ms, "the responder asks to slow down; parked without spending an attempt");
            }
            Outcome::Rejected(r) => {
                tracing::warn!(message_id, kind = r.kind.as_str(), error = %r.error, "rejected");
            }
            Outcome::Failed { fingerprint, error } => {
                let fingerprint = fingerprint.as_ref().map(|f| f.as_str()).unwrap_or("-");
                let attempt = self.attempt;
                tracing::warn!(message_id, fingerprint, attempt, cause = error.kind(), error = %error.render(), "failed");
            }
        }
    }
}
