//! What the broker is told to do with one delivery, once its outcome is known
//! (decided by `crate::outcome`, carried out by [`super::Incoming::settle`]).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    Ack,
    /// Publish unchanged to the retry queue of `attempt`, to come back after `delay`; then ack.
    Retry {
        attempt: u32,
        delay: Duration,
        /// The `x-last-error` line.
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
