//! The one decision: ack, retry later, defer, or dead-letter (CONTRACT §3).

use std::time::Duration;

use super::{Disposition, Outcome};

/// Retry timing: attempt `n` (1-based, the attempt that just failed) waits
/// `base * 2^(n-1)`, capped, plus up to 25% jitter so retries of a burst spread out.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub fn delay_after(&self, attempt: u32, jitter_unit: f64) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max_delay);
        capped + capped.mul_f64(0.25 * jitter_unit.clamp(0.0, 1.0))
    }
}

impl Outcome {
    /// `attempt` is this delivery's attempt number, counted from 1.
    pub fn disposition(&self, attempt: u32, policy: &RetryPolicy, jitter_unit: f64) -> Disposition {
        match self {
            Outcome::Processed { .. } | Outcome::Duplicate { .. } | Outcome::Coalesced { .. } => {
                Disposition::Ack
            }
            Outcome::Rejected(r) => {
                Disposition::DeadLetter { kind: r.kind.as_str(), error: r.error.clone(), attempts: None }
            }
            Outcome::Deferred { .. } | Outcome::Waiting { .. } => {
                Disposition::Defer { delay: policy.delay_after(1, jitter_unit) }
            }
            // Spread by up to a quarter, so that the messages a pause parked
            // do not all come back at once.
            Outcome::SlowedDown { pause, .. } => {
                Disposition::Defer { delay: *pause + pause.mul_f64(0.25 * jitter_unit.clamp(0.0, 1.0)) }
            }
            Outcome::Failed { error, .. } if attempt >= policy.max_attempts => {
                Disposition::DeadLetter { kind: "failed", error: error.render(), attempts: Some(attempt) }
            }
            Outcome::Failed { error, .. } => Disposition::Retry {
                attempt,
                delay: policy.delay_after(attempt, jitter_unit),
                error: error.render(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Fingerprint;
    use crate::outcome::{DuplicateOf, Failure, Rejection, RejectionKind};
    use crate::store::StoreError;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed { fingerprint: None, error: Failure::Store(StoreError::Stopped("writer")) }
    }

    #[test]
    fn transient_failures_retry_with_growing_capped_delays() {
        let delays: Vec<Duration> = (1..5)
            .map(|n| match failed().disposition(n, &policy(), 0.0) {
                Disposition::Retry { delay, attempt, .. } if attempt == n => delay,
                other => panic!("attempt {n}: {other:?}"),
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8].map(Duration::from_secs));
        assert_eq!(policy().delay_after(9, 0.0), Duration::from_secs(10));
        assert_eq!(policy().delay_after(1, 1.0), Duration::from_millis(1250));
    }

    #[test]
    fn the_last_attempt_dead_letters_as_failed_with_its_count() {
        assert_eq!(
            failed().disposition(5, &policy(), 0.5),
            Disposition::DeadLetter {
                kind: "failed",
                error: "the database writer has stopped".into(),
                attempts: Some(5)
            }
        );
    }

    #[test]
    fn a_message_the_responder_slowed_down_waits_its_pause_and_never_dead_letters() {
        let fp = Fingerprint::of("t", "web", "c", "m", "x");
        let slowed = Outcome::SlowedDown { fingerprint: fp, pause: Duration::from_secs(2) };
        for attempt in [1, 5, 50] {
            assert_eq!(
                slowed.disposition(attempt, &policy(), 0.0),
                Disposition::Defer { delay: Duration::from_secs(2) }
            );
        }
        assert_eq!(
            slowed.disposition(1, &policy(), 1.0),
            Disposition::Defer { delay: Duration::from_millis(2_500) },
            "spread by up to a quarter"
        );
    }

    #[test]
    fn a_deferred_message_waits_the_base_delay_whatever_its_attempt() {
        let fp = Fingerprint::of("t", "web", "c", "m", "x");
        let deferred = Outcome::Deferred { fingerprint: fp, worker_id: "w2".into() };
        assert_eq!(
            deferred.disposition(5, &policy(), 0.0),
            Disposition::Defer { delay: Duration::from_secs(1) }
        );
    }

    #[test]
    fn rejections_dead_letter_at_once_and_successes_ack() {
        let r =
            Outcome::Rejected(Rejection { kind: RejectionKind::UnknownTenant, error: "no tenant".into() });
        assert!(matches!(
            r.disposition(1, &policy(), 0.0),
            Disposition::DeadLetter { kind: "unknown_tenant", attempts: None, .. }
        ));
        let fp = Fingerprint::of("t", "web", "c", "m", "x");
        let dup = Outcome::Duplicate { fingerprint: fp.clone(), of: DuplicateOf::Completed };
        assert_eq!(dup.disposition(1, &policy(), 0.0), Disposition::Ack);
        let ok = Outcome::Processed { fingerprint: fp, replayed: false };
        assert_eq!(ok.disposition(7, &policy(), 0.0), Disposition::Ack);
    }
}
