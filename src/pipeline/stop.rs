//! Why the work on a locked message stopped, and the outcome that makes.

use crate::broker::BrokerError;
use crate::dedup::{Cut, DedupError};
use crate::model::{Fingerprint, Inbound};
use crate::outcome::{DuplicateOf, Failure, Outcome, Rejection, RejectionKind};
use crate::respond::RespondError;
use crate::store::StoreError;

pub(super) enum Stop {
    /// Something about the message itself: it can never be processed.
    Reject(Rejection),
    /// A transient fault: the message is retried.
    Fail(Failure),
    /// The responder asked to slow down: parked for this long, no attempt spent.
    SlowDown(std::time::Duration),
    /// It turned out to be handled already (a copy of a message coalesced
    /// into its burst, found by the database).
    Duplicate,
}

impl Stop {
    pub(super) fn into_outcome(self, fingerprint: Fingerprint) -> Outcome {
        match self {
            Stop::Reject(rejection) => Outcome::Rejected(rejection),
            Stop::Fail(error) => Outcome::Failed { fingerprint: Some(fingerprint), error },
            Stop::Duplicate => Outcome::Duplicate { fingerprint, of: DuplicateOf::Completed },
            Stop::SlowDown(pause) => Outcome::SlowedDown { fingerprint, pause },
        }
    }
}

impl From<Failure> for Stop {
    fn from(e: Failure) -> Self {
        Stop::Fail(e)
    }
}

macro_rules! transient {
    ($($error:ty),*) => {$(
        impl From<$error> for Stop {
            fn from(e: $error) -> Self {
                Stop::Fail(e.into())
            }
        }
    )*};
}
transient!(BrokerError, DedupError, Cut);

/// A responder's request to slow down parks the message (CONTRACT §3); any
/// other responder error is transient.
impl From<RespondError> for Stop {
    fn from(e: RespondError) -> Self {
        match e {
            RespondError::SlowDown { retry_after, .. } => {
                Stop::SlowDown(crate::respond::throttle::pause_for(retry_after))
            }
            RespondError::Down { retry_after, .. } => {
                Stop::SlowDown(retry_after.max(crate::respond::throttle::PROBE_WAIT))
            }
            e => Stop::Fail(e.into()),
        }
    }
}

/// A store error is transient unless the message itself caused it (a value
/// PostgreSQL cannot take): that one would fail every attempt the same way, so
/// it is `invalid` at once (CONTRACT §3), never `failed` after retries.
impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::Coalesced(_)) {
            return Stop::Duplicate;
        }
        if e.caused_by_input() {
            Stop::Reject(Rejection {
                kind: RejectionKind::Invalid,
                error: format!("a field of this message cannot be stored: {e}"),
            })
        } else {
            Stop::Fail(e.into())
        }
    }
}

pub(super) fn unknown_tenant(inbound: &Inbound, exists: bool) -> Rejection {
    let why = if exists { "is not active" } else { "does not exist" };
    Rejection { kind: RejectionKind::UnknownTenant, error: format!("tenant {} {why}", inbound.tenant_id) }
}

pub(super) fn foreign_conversation(inbound: &Inbound) -> Rejection {
    Rejection {
        kind: RejectionKind::Invalid,
        error: format!(
            "conversation_id {} is not a conversation of this tenant, channel and customer",
            inbound.conversation_id.unwrap_or_default(),
        ),
    }
}
