//! What became of one delivery (CONTRACT §3), and the one place that turns it
//! into what the broker is told: ack, retry later, or dead-letter.
//!
//! The pipeline returns an [`Outcome`]; [`Outcome::disposition`] decides; the
//! broker module carries the decision out. Nothing else acks.

use std::time::Duration;

use crate::model::Fingerprint;

/// Why a message can never be processed: it goes to `worker.dead` unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    /// One line saying what is wrong (`x-error`).
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    Malformed,
    Invalid,
    UnknownTenant,
}

impl RejectionKind {
    /// The `x-error-kind` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::Malformed => "malformed",
            RejectionKind::Invalid => "invalid",
            RejectionKind::UnknownTenant => "unknown_tenant",
        }
    }
}

/// Why a message was recognised as already handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DuplicateOf {
    /// Its processing state says completed.
    Completed,
    /// Another live worker holds its lock right now.
    InProgress { worker_id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// One inbound and one reply row exist and the reply was published (confirmed).
    /// `replayed`: the rows were already committed (an earlier attempt died before
    /// publishing, or Redis lost its state), and their reply was published again.
    Processed {
        fingerprint: Fingerprint,
        replayed: bool,
    },
    Duplicate {
        fingerprint: Fingerprint,
        of: DuplicateOf,
    },
    Rejected(Rejection),
    /// A live worker holds the lock, but this delivery may be the copy that worker
    /// lost (a redelivery or one of our retries): look again later, without
    /// spending an attempt, rather than ack a copy no one may finish.
    Deferred {
        fingerprint: Fingerprint,
        worker_id: String,
    },
    /// A transient fault: the message is retried later.
    Failed {
        fingerprint: Option<Fingerprint>,
        error: String,
    },
}

/// What the broker does with the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    Ack,
    /// Publish unchanged to the retry queue of `attempt`, to come back after `delay`; then ack.
    Retry {
        attempt: u32,
        delay: Duration,
        error: String,
    },
    /// Like `Retry`, but the attempt is not counted.
    Defer {
        delay: Duration,
    },
    /// Publish unchanged to `worker.dead` with these headers; then ack.
    DeadLetter {
        kind: &'static str,
        error: String,
        attempts: Option<u32>,
    },
}

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
            Outcome::Processed { .. } | Outcome::Duplicate { .. } => Disposition::Ack,
            Outcome::Rejected(r) => {
                Disposition::DeadLetter { kind: r.kind.as_str(), error: r.error.clone(), attempts: None }
            }
            Outcome::Deferred { .. } => Disposition::Defer { delay: policy.delay_after(1, jitter_unit) },
            Outcome::Failed { error, .. } if attempt >= policy.max_attempts => {
                Disposition::DeadLetter { kind: "failed", error: error.clone(), attempts: Some(attempt) }
            }
            Outcome::Failed { error, .. } => Disposition::Retry {
                attempt,
                delay: policy.delay_after(attempt, jitter_unit),
                error: error.clone(),
            },
        }
    }

    /// The `chat.outcome` label of logs, traces and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Processed { .. } => "processed",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Rejected(_) => "rejected",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Failed { .. } => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed { fingerprint: None, error: "database unreachable".into() }
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
                error: "database unreachable".into(),
                attempts: Some(5)
            }
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
