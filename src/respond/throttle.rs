//! A remote responder is called through its endpoint's [`Pause`] (CONTRACT
//! §3): a request to slow down pauses every call of this process to it, and
//! the fleet's (the pause is announced); failures in a row open its circuit
//! breaker. Either way the calls met meanwhile are answered
//! [`RespondError::SlowDown`] or [`RespondError::Down`] with the time left,
//! and the pipeline parks their messages for that long without spending an
//! attempt, while the consume loop takes no new deliveries
//! ([`Pause::room`]). The transitions are [`super::gate`]'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, watch};

use super::gate::{Admission, Heard, Intake, State};
pub use super::gate::{Breaker, DEFAULT_PAUSE, MAX_COOLDOWN, MAX_PAUSE, PROBE_WAIT, pause_for};
use super::{Answer, Context, RespondError, Responder};

/// Tokio's clock (the same as the system's, but for tests that pause it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The gate of one responder endpoint, shared by every call of the process to
/// it, and by the fleet for pauses: a pause this process hears of is announced
/// (to [`Pause::announced`]'s receiver, which `dedup::pauses` publishes), and
/// one the fleet announces is taken up with [`Pause::until`]. The breaker is
/// the process's own: an endpoint unreachable from one host may answer others.
pub struct Pause {
    state: Mutex<State>,
    breaker: Breaker,
    /// Woken at every change of the gate (the consume loop waits on it).
    changed: Notify,
    /// Where the pauses this process hears of go, as the instant they end.
    announce: OnceLock<watch::Sender<Option<Instant>>>,
    /// Times the circuit opened (for the metric).
    opened: AtomicU64,
}

impl std::fmt::Debug for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pause").field("state", &*self.state()).field("breaker", &self.breaker).finish()
    }
}

impl Default for Pause {
    /// No breaker: only pauses close the gate.
    fn default() -> Self {
        Self::new(Breaker { failures: 0, cooldown: DEFAULT_PAUSE })
    }
}

/// What `/readyz` says of the responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Ok,
    /// Asked to slow down; still ready (nothing is wrong with us or it).
    Paused,
    /// The circuit is open: since how long, and the failure that opened it.
    Down {
        for_secs: u64,
        why: String,
    },
}

impl Pause {
    pub fn new(breaker: Breaker) -> Self {
        Self {
            state: Mutex::new(State::default()),
            breaker,
            changed: Notify::new(),
            announce: OnceLock::new(),
            opened: AtomicU64::new(0),
        }
    }

    /// The latest end of a pause this process heard of (once: a second call
    /// gets `None`). Pauses heard while one is being announced merge: only
    /// the latest end is kept.
    pub fn announced(&self) -> Option<watch::Receiver<Option<Instant>>> {
        let (tx, rx) = watch::channel(None);
        self.announce.set(tx).ok().map(|()| rx)
    }

    /// A pause the fleet announced: nothing is called before `until`. A pause
    /// that ends no later than the one in force, or already, changes nothing.
    pub fn until(&self, until: Instant, now: Instant) {
        self.change(|state| state.until(until, now));
    }

    /// Whether calls are paused now, asked to slow down (for the metric).
    pub fn is_paused(&self) -> bool {
        self.state().is_paused(now())
    }

    /// Whether the circuit is open (or its probe out): the endpoint is down.
    pub fn is_down(&self) -> bool {
        self.state().is_down()
    }

    /// Times the circuit opened since start.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub fn standing(&self) -> Standing {
        let now = now();
        let state = self.state();
        match &state.down_since {
            Some((since, why)) if state.is_down() => {
                Standing::Down { for_secs: now.saturating_duration_since(*since).as_secs(), why: why.clone() }
            }
            _ if state.is_paused(now) => Standing::Paused,
            _ => Standing::Ok,
        }
    }

    /// Returns once the consume loop may take another delivery: at once
    /// while the gate is open; while it is closed, once its time is up, one
    /// delivery at a time until one probes, and again once the probe answered.
    pub async fn room(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let until = match self.state().intake(now()) {
                Intake::Take => return,
                Intake::WaitUntil(until) => until,
            };
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {}
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the state and wakes the consume loop if the gate moved.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (value, moved) = {
            let mut state = self.state();
            let before = state.gate;
            let value = f(&mut state);
            (value, state.gate != before)
        };
        if moved {
            self.changed.notify_waiters();
        }
        value
    }

    /// What a call's result says, acted on: a pause announced, the circuit's
    /// changes logged, and a failure while it is open made a park.
    fn heard(&self, result: Result<Answer, RespondError>, probe: bool) -> Result<Answer, RespondError> {
        let heard = self.change(|state| state.heard(&result, probe, self.breaker, now()));
        match heard {
            Heard::Nothing => result,
            Heard::Paused(until) => {
                if let Some(tx) = self.announce.get() {
                    tx.send_if_modified(|latest| {
                        let later = latest.is_none_or(|at| at < until);
                        if later {
                            *latest = Some(until);
                        }
                        later
                    });
                }
                result
            }
            Heard::Down { left, first } => {
                let why = result.err().map(|e| e.to_string()).unwrap_or_default();
                if first {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        failures = self.breaker.failures,
                        probe_in_secs = left.as_secs(),
                        last_error = %why,
                        "responder down: its circuit is open, no new deliveries are taken until a probe answers"
                    );
                } else if probe {
                    tracing::warn!(probe_in_secs = left.as_secs(), error = %why, "responder still down");
                }
                Err(RespondError::Down { retry_after: left, detail: why })
            }
            Heard::Closed(after) => {
                tracing::info!(down_secs = after.as_secs(), "responder answers again: its circuit is closed");
                result
            }
        }
    }
}

/// A probe whose call was dropped before its answer (the message's deadline,
/// a restarted generation) hands the probe on: the next call goes.
struct Unanswered<'a>(&'a Pause);

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.0.change(|state| state.unanswered(now()));
    }
}

/// Wraps a remote responder with its endpoint's gate.
pub struct Throttled<R> {
    inner: R,
    pause: Arc<Pause>,
}

impl<R> Throttled<R> {
    pub fn new(inner: R, pause: Arc<Pause>) -> Self {
        Self { inner, pause }
    }
}

impl<R: Responder> Responder for Throttled<R> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>> {
        Box::pin(async move {
            let pause = &*self.pause;
            match pause.change(|state| state.admit(now())) {
                Admission::Call { probe } => {
                    let unanswered = probe.then(|| Unanswered(pause));
                    let result = self.inner.respond(ctx).await;
                    std::mem::forget(unanswered);
                    pause.heard(result, probe)
                }
                Admission::Refused { left, down: false } => Err(RespondError::SlowDown {
                    retry_after: Some(left),
                    detail: "not called: the responder asked to slow down".into(),
                }),
                Admission::Refused { left, down: true } => Err(RespondError::Down {
                    retry_after: left,
                    detail: "not called: the responder is down (its circuit is open)".into(),
                }),
            }
        })
    }
}

/// A wait in [`Pause::room`] ends when the gate opens, not at a poll.
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_consume_loop_resumes_when_the_probe_answers() {
        let pause = Arc::new(Pause::new(Breaker { failures: 1, cooldown: Duration::from_secs(5) }));
        let failed = pause.heard(Err(RespondError::Transient("refused".into())), false);
        assert!(matches!(failed, Err(RespondError::Down { .. })), "{failed:?}");
        assert!(matches!(pause.standing(), Standing::Down { .. }));
        let waiting = tokio::spawn({
            let pause = pause.clone();
            async move { pause.room().await }
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!waiting.is_finished(), "nothing taken while the circuit is open");
        tokio::time::sleep(Duration::from_secs(2)).await;
        waiting.await.expect("the probe's delivery is let through");
        let probe = pause.change(|state| state.admit(now()));
        assert_eq!(probe, Admission::Call { probe: true });
        let held = tokio::spawn({
            let pause = pause.clone();
            async move { pause.room().await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!held.is_finished(), "none while the probe is out");
        let answer = Answer {
            text: "hi".into(),
            handoff: false,
            confidence: 1.0,
            references: Vec::new(),
            usage: Default::default(),
        };
        assert!(pause.heard(Ok(answer), true).is_ok());
        held.await.expect("taken again");
        assert_eq!(pause.standing(), Standing::Ok);
        assert_eq!(pause.opened(), 1);
    }
}
