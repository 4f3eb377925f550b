//! What became of one delivery (CONTRACT §3), and the one place that turns it
//! into what the broker is told: ack, retry later, or dead-letter.
//!
//! The pipeline returns an [`Outcome`]; [`Outcome::disposition`] decides
//! (`disposition`); the broker carries the decision out; [`event`] tells the
//! world (log line, metrics, span) from one place. Nothing else acks.

mod disposition;
pub mod event;
mod failure;

pub use crate::broker::Disposition;
pub use disposition::RetryPolicy;
pub use failure::{Failure, render_chain};

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

#[derive(Debug)]
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
    /// Burst coalescing: its inbound row is stored, and the reply to a later
    /// message of its burst answers it (its `answers` list it).
    Coalesced {
        fingerprint: Fingerprint,
    },
    /// A live worker holds the lock, but this delivery may be the copy that worker
    /// lost (a redelivery or one of our retries): look again later, without
    /// spending an attempt, rather than ack a copy no one may finish.
    Deferred {
        fingerprint: Fingerprint,
        worker_id: String,
    },
    /// An earlier message of its conversation is still being answered (or is
    /// parked, or ahead in line) and this delivery could wait no longer in the
    /// process: it is parked without spending an attempt, and keeps its place
    /// in line.
    Waiting {
        fingerprint: Fingerprint,
        behind: Fingerprint,
    },
    /// The responder asked to slow down (CONTRACT §3): the message is parked
    /// for as long as it asked, without spending an attempt, and keeps its
    /// place in line.
    SlowedDown {
        fingerprint: Fingerprint,
        pause: std::time::Duration,
    },
    /// A transient fault: the message is retried later.
    Failed {
        fingerprint: Option<Fingerprint>,
        error: Failure,
    },
}

impl Outcome {
    /// The `chat.outcome` label of logs, traces and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Processed { .. } => "processed",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Rejected(_) => "rejected",
            Outcome::Coalesced { .. } => "coalesced",
            Outcome::Deferred { .. } | Outcome::Waiting { .. } | Outcome::SlowedDown { .. } => "deferred",
            Outcome::Failed { .. } => "failed",
        }
    }
}
