//! A responder that asks to slow down (429, or 503 with `Retry-After`) is
//! obeyed as a whole, not call by call (CONTRACT §3): one such answer pauses
//! every call of this process to it for as long as it asked; when the pause
//! is over one call goes first (the probe), and the others are refused until
//! it answers, so a provider still over its quota sees one call per pause,
//! not one per message. A call refused during a pause is answered
//! [`RespondError::SlowDown`] with the pause left, and the pipeline parks its
//! message for that long without spending an attempt.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{Answer, Context, RespondError, Responder};

/// A 429 without `Retry-After` pauses this long.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(5);
/// A call that meets a probe out is parked this long (the probe's answer
/// decides the rest); also the shortest pause a `Retry-After` can ask for, so
/// that `Retry-After: 0` is not a hot loop.
pub const PROBE_WAIT: Duration = Duration::from_secs(1);
/// No responder makes us wait longer than this at a time (a `Retry-After` of
/// an hour is read as a minute, and asked again then).
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// The pause a slow-down answer asks for, within bounds.
pub fn pause_for(retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or(DEFAULT_PAUSE).clamp(PROBE_WAIT, MAX_PAUSE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Calls go through.
    Open,
    /// Nothing is called until then.
    Paused { until: Instant },
    /// The pause is over and one call is out to see whether it still holds.
    Probing,
}

/// The pause of one responder endpoint, shared by every call of the process
/// to it, and by the fleet: a pause this process hears of is announced (to
/// [`Pause::announced`]'s receiver, which `dedup::pauses` publishes), and one
/// the fleet announces is taken up with [`Pause::until`].
pub struct Pause {
    gate: Mutex<Gate>,
    /// Where the pauses this process hears of go, as the instant they end.
    announce: std::sync::OnceLock<tokio::sync::watch::Sender<Option<Instant>>>,
}

impl Default for Pause {
    fn default() -> Self {
        Self { gate: Mutex::new(Gate::Open), announce: std::sync::OnceLock::new() }
    }
}

/// Wraps a remote responder with the pause its slow-down answers ask for.
pub struct Throttled<R> {
    inner: R,
    pause: std::sync::Arc<Pause>,
}

impl<R> Throttled<R> {
    pub fn new(inner: R, pause: std::sync::Arc<Pause>) -> Self {
        Self { inner, pause }
    }
}

impl Pause {
    /// The latest end of a pause this process heard of (once: a second call
    /// gets `None`). Pauses heard while one is being announced merge: only
    /// the latest end is kept.
    pub fn announced(&self) -> Option<tokio::sync::watch::Receiver<Option<Instant>>> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        self.announce.set(tx).ok().map(|()| rx)
    }

    /// A pause the fleet announced: nothing is called before `until`. A pause
    /// that ends no later than the one in force, or already, changes nothing;
    /// nor does one that ends while a probe is out (its answer decides).
    pub fn until(&self, until: Instant, now: Instant) {
        let mut gate = self.gate();
        *gate = match *gate {
            _ if until <= now => return,
            Gate::Paused { until: already } if already >= until => return,
            Gate::Open | Gate::Probing | Gate::Paused { .. } => Gate::Paused { until },
        };
    }

    /// Whether calls are paused now (for readiness and metrics).
    pub fn is_paused(&self) -> bool {
        matches!(*self.gate(), Gate::Paused { until } if Instant::now() < until)
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this call may go now (`Ok(probe)`), or the pause left.
    fn admit(&self, now: Instant) -> Admission {
        let mut gate = self.gate();
        match *gate {
            Gate::Open => Admission::Call { probe: false },
            Gate::Paused { until } if now < until => Admission::Refused(until - now),
            Gate::Paused { .. } => {
                *gate = Gate::Probing;
                Admission::Call { probe: true }
            }
            // Not waited for here: the wait would count against the message's
            // deadline (and a cut deadline spends an attempt).
            Gate::Probing => Admission::Refused(PROBE_WAIT),
        }
    }

    /// What a call's result says of the gate.
    fn heard(&self, result: &Result<Answer, RespondError>, probe: bool, now: Instant) {
        let mut gate = self.gate();
        match result {
            Err(RespondError::SlowDown { retry_after, .. }) => {
                let until = now + pause_for(*retry_after);
                // A later pause wins over an earlier one that other calls asked for.
                *gate = match *gate {
                    Gate::Paused { until: already } if already > until => Gate::Paused { until: already },
                    _ => Gate::Paused { until },
                };
                if let Some(tx) = self.announce.get() {
                    tx.send_if_modified(|latest| {
                        let later = latest.is_none_or(|at| at < until);
                        if later {
                            *latest = Some(until);
                        }
                        later
                    });
                }
            }
            // The probe answered: open, unless a pause came meanwhile.
            _ if probe && *gate == Gate::Probing => *gate = Gate::Open,
            _ => {}
        }
    }
}

/// A probe whose call was dropped before its answer (the message's deadline,
/// a restarted generation) hands the probe on: the next call goes.
struct Unanswered<'a>(&'a Pause);

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let mut gate = self.0.gate();
        if *gate == Gate::Probing {
            *gate = Gate::Paused { until: Instant::now() };
        }
    }
}

enum Admission {
    Call { probe: bool },
    Refused(Duration),
}

impl<R: Responder> Responder for Throttled<R> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>> {
        Box::pin(async move {
            let pause = &*self.pause;
            match pause.admit(Instant::now()) {
                Admission::Call { probe } => {
                    let unanswered = probe.then(|| Unanswered(pause));
                    let result = self.inner.respond(ctx).await;
                    std::mem::forget(unanswered);
                    pause.heard(&result, probe, Instant::now());
                    result
                }
                Admission::Refused(left) => Err(RespondError::SlowDown {
                    retry_after: Some(left),
                    detail: "not called: the responder asked to slow down".into(),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_down(after: u64) -> Result<Answer, RespondError> {
        Err(RespondError::SlowDown { retry_after: Some(Duration::from_secs(after)), detail: String::new() })
    }

    #[test]
    fn a_slow_down_pauses_every_call_then_one_probe_goes_first() {
        let t = Pause::default();
        let now = Instant::now();
        assert!(matches!(t.admit(now), Admission::Call { probe: false }));
        t.heard(&slow_down(2), false, now);
        match t.admit(now + Duration::from_millis(500)) {
            Admission::Refused(left) => assert_eq!(left, Duration::from_millis(1500)),
            _ => panic!("paused"),
        }
        let later = now + Duration::from_secs(2);
        assert!(
            matches!(t.admit(later), Admission::Call { probe: true }),
            "the first after the pause probes"
        );
        assert!(
            matches!(t.admit(later), Admission::Refused(wait) if wait == PROBE_WAIT),
            "the others are parked while it is out"
        );
        t.heard(&slow_down(3), true, later);
        assert!(matches!(t.admit(later + Duration::from_secs(1)), Admission::Refused(_)), "paused again");
        let after = later + Duration::from_secs(3);
        assert!(matches!(t.admit(after), Admission::Call { probe: true }));
        t.heard(&Err(RespondError::Transient("timeout".into())), true, after);
        assert!(matches!(t.admit(after), Admission::Call { probe: false }), "any other answer opens it");
    }

    #[test]
    fn a_pause_heard_while_the_probe_is_out_holds_and_a_past_one_changes_nothing() {
        let t = Pause::default();
        let now = Instant::now();
        t.until(now, now);
        t.until(now - Duration::from_secs(1), now);
        assert!(matches!(t.admit(now), Admission::Call { probe: false }), "a pause already over is none");
        t.heard(&slow_down(1), false, now);
        let later = now + Duration::from_secs(1);
        assert!(matches!(t.admit(later), Admission::Call { probe: true }));
        t.until(later + Duration::from_secs(30), later);
        let answered = Answer {
            text: "hi".into(),
            handoff: false,
            confidence: 1.0,
            references: Vec::new(),
            usage: Default::default(),
        };
        t.heard(&Ok(answered), true, later);
        assert!(
            matches!(t.admit(later), Admission::Refused(_)),
            "the fleet's pause outlives the probe's answer"
        );
    }

    #[test]
    fn a_probe_dropped_before_its_answer_lets_the_next_call_probe() {
        let t = Pause::default();
        let now = Instant::now();
        t.heard(&slow_down(1), false, now);
        assert!(matches!(t.admit(now + Duration::from_secs(1)), Admission::Call { probe: true }));
        drop(Unanswered(&t));
        assert!(matches!(t.admit(Instant::now()), Admission::Call { probe: true }));
    }

    #[test]
    fn the_longer_of_two_pauses_holds_and_none_exceeds_the_cap() {
        let t = Pause::default();
        let now = Instant::now();
        t.heard(&slow_down(10), false, now);
        t.heard(&slow_down(1), false, now);
        assert!(matches!(t.admit(now + Duration::from_secs(5)), Admission::Refused(_)));
        assert_eq!(pause_for(Some(Duration::from_secs(3600))), MAX_PAUSE);
        assert_eq!(pause_for(None), DEFAULT_PAUSE);
        assert_eq!(pause_for(Some(Duration::ZERO)), PROBE_WAIT, "Retry-After: 0 is no hot loop");
    }
}
