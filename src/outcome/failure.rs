//! Why an attempt failed (CONTRACT §3 `failed`): a transient fault, kept with
//! its kind and its source until the delivery is settled, where the `x-error`
//! line is rendered from the whole chain.

use std::error::Error;
use std::time::Duration;

use crate::broker::BrokerError;
use crate::dedup::{Cut, DedupError};
use crate::respond::RespondError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] DedupError),
    #[error(transparent)]
    Respond(#[from] RespondError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The lease guard stopped the work: deadline, lease lost, panic.
    #[error(transparent)]
    Cut(#[from] Cut),
    /// A later holder registered a higher fencing token before this one could.
    #[error("a later holder has taken this message over; this attempt stands down")]
    FencedOut,
    #[error("publish not confirmed within {}s; abandoned", .0.as_secs())]
    PublishTimeout(Duration),
    /// A panic outside the lease guard (caught where the delivery is handled).
    #[error("processing panicked")]
    Panicked,
}

impl Failure {
    /// A short, stable name for logs: which part of the world failed.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Store(_) => "database",
            Failure::Redis(_) => "redis",
            Failure::Respond(_) => "responder",
            Failure::Broker(_) => "rabbitmq",
            Failure::Cut(cut) => cut.kind(),
            Failure::FencedOut => "fenced",
            Failure::PublishTimeout(_) => "publish_timeout",
            Failure::Panicked => "panic",
        }
    }

    /// One line: this failure and each cause below it that adds something
    /// (an error that already quotes its cause is not repeated).
    pub fn render(&self) -> String {
        render_chain(self)
    }
}

/// `error: cause: cause…`, skipping a cause whose text the line already holds.
pub fn render_chain(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner: {0}")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn the_line_gives_every_cause_once() {
        let io = std::io::Error::other("connection refused");
        assert_eq!(render_chain(&Outer(Inner(io))), "outer: inner: connection refused");
        let deadline = Failure::Cut(Cut::Deadline(Duration::from_secs(45)));
        assert_eq!(deadline.render(), "deadline of 45s passed; abandoned");
        assert_eq!(deadline.kind(), "deadline");
    }
}
