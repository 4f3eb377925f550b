//! One delivery as the pipeline sees it: what the broker knows of the message
//! besides its body, in the worker's own terms. `broker/` builds it; nothing
//! above the broker sees an AMQP type.

/// A delivery from `worker.inbound`, borrowed from the broker's own.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub body: &'a [u8],
    /// The producer's `message_id` property, for logs when the body is unreadable.
    pub message_id: Option<&'a str>,
    /// The routing key the message was published with to `chat.inbound`, when
    /// known (a message put straight into the queue has none to check).
    pub routing_key: Option<&'a str>,
    /// This delivery's attempt number, from 1 (CONTRACT §3's retries).
    pub attempt: u32,
    /// A worker may have seen this message before and still be working on it: a
    /// broker redelivery, or one of our retries. A live lock holder is then not
    /// trusted to finish it.
    pub seen_before: bool,
    /// The producer's W3C trace context, when it carried a well-formed one.
    pub trace: TraceContext<'a>,
    /// When this process took the delivery off the broker, µs since the epoch,
    /// strictly growing within the process ([`intake_now`]): the message's
    /// place in its conversation's line, if it has none yet.
    pub intake_us: i64,
}

/// The current time in µs since the epoch, strictly greater than any earlier
/// answer in this process: two deliveries read one after the other keep their
/// order even within one microsecond or across a clock step back.
pub fn intake_now() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// W3C trace context (`traceparent`, `tracestate`), already checked for shape
/// and size by whoever read it off the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceContext<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

impl<'a> Envelope<'a> {
    /// A first delivery straight from a gateway, as tests and tools build one.
    pub fn first(body: &'a [u8], routing_key: Option<&'a str>) -> Self {
        Self {
            body,
            message_id: None,
            routing_key,
            attempt: 1,
            seen_before: false,
            trace: TraceContext::default(),
            intake_us: intake_now(),
        }
    }
}
