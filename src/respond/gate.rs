//! What one responder endpoint's last answers say about calling it now: the
//! pure state behind [`super::throttle`], on instants it is given, so that
//! every transition is tested without a clock.
//!
//! Two things close the gate. A **pause**: the endpoint asked to slow down
//! (429, or 503 with `Retry-After`), for as long as it asked. A **circuit
//! breaker**: `breaker_failures` transient failures in a row (timeouts,
//! refused connections, 5xx) say it is down for every message, not for one;
//! it then stays closed for a cooldown that doubles with each probe that fails
//! (`breaker_cooldown_secs` first, [`MAX_COOLDOWN`] at most). Either way, when
//! the time is up one call goes first (the probe) and the others are refused
//! until it answers. While the gate is closed the worker takes no new
//! deliveries ([`State::intake`]) and the calls it refuses park their messages
//! without spending an attempt.

use std::time::{Duration, Instant};

use super::RespondError;

/// A 429 without `Retry-After` pauses this long.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(5);
/// A call that meets a probe out is parked this long (the probe's answer
/// decides the rest); also the shortest pause a `Retry-After` can ask for, so
/// that `Retry-After: 0` is not a hot loop; and how often the consume loop
/// lets one more delivery through while no probe is out.
pub const PROBE_WAIT: Duration = Duration::from_secs(1);
/// No responder makes us wait longer than this at a time (a `Retry-After` of
/// an hour is read as a minute, and asked again then).
pub const MAX_PAUSE: Duration = Duration::from_secs(60);
/// The longest a down endpoint goes unprobed: a provider back after an
/// outage is noticed within this.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(30);

/// The pause a slow-down answer asks for, within bounds.
pub fn pause_for(retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or(DEFAULT_PAUSE).clamp(PROBE_WAIT, MAX_PAUSE)
}

/// When the circuit breaker opens, and for how long at first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    /// Transient failures in a row that open it; 0: never.
    pub failures: u32,
    pub cooldown: Duration,
}

impl Breaker {
    pub fn from_config(config: &crate::config::ResponderConfig) -> Self {
        Self {
            failures: config.breaker_failures,
            cooldown: Duration::from_secs(config.breaker_cooldown_secs),
        }
    }

    /// The cooldown after `failed_probes` probes failed in a row.
    fn cooldown_after(&self, failed_probes: u32) -> Duration {
        let doubled = self.cooldown.saturating_mul(1u32 << failed_probes.min(16));
        doubled.clamp(PROBE_WAIT, MAX_COOLDOWN.max(self.cooldown))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Calls go through.
    Open,
    /// Asked to slow down: nothing is called until then.
    Paused { until: Instant },
    /// The circuit is open: nothing is called until then.
    Down { until: Instant },
    /// The time is up and one call is out to see whether it still holds;
    /// `down`: it was the breaker's (else a pause).
    Probing { down: bool },
}

/// The gate and what it remembers of the endpoint's answers.
#[derive(Debug)]
pub(super) struct State {
    pub(super) gate: Gate,
    /// Transient failures in a row (any other answer ends the row).
    failures: u32,
    /// Probes of a down endpoint that failed in a row: the cooldown doubles with each.
    failed_probes: u32,
    /// Since when the circuit is open, and the failure that opened it.
    pub(super) down_since: Option<(Instant, String)>,
    /// When the consume loop last let a delivery through to probe.
    let_through: Option<Instant>,
}

impl Default for State {
    fn default() -> Self {
        Self { gate: Gate::Open, failures: 0, failed_probes: 0, down_since: None, let_through: None }
    }
}

/// Whether a call may go now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    Call {
        probe: bool,
    },
    /// Not called: its message parks this long; `down`: the breaker's doing.
    Refused {
        left: Duration,
        down: bool,
    },
}

/// What an answer did to the gate, for the caller to act on outside the lock.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Heard {
    /// Nothing to tell; the result stands.
    Nothing,
    /// A pause that ends then (to announce to the fleet).
    Paused(Instant),
    /// The circuit opened (`first`) or stays open: the failure parks its
    /// message this long instead of spending an attempt.
    Down { left: Duration, first: bool },
    /// A probe answered: the circuit closed after being open this long.
    Closed(Duration),
}

/// Whether the consume loop may take one more delivery now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Intake {
    Take,
    /// Not before then (or before the gate changes).
    WaitUntil(Instant),
}

impl State {
    pub(super) fn admit(&mut self, now: Instant) -> Admission {
        match self.gate {
            Gate::Open => Admission::Call { probe: false },
            Gate::Paused { until } if now < until => Admission::Refused { left: until - now, down: false },
            Gate::Down { until } if now < until => Admission::Refused { left: until - now, down: true },
            Gate::Paused { .. } => self.probe(false),
            Gate::Down { .. } => self.probe(true),
            // Not waited for here: the wait would count against the message's
            // deadline (and a cut deadline spends an attempt).
            Gate::Probing { down } => Admission::Refused { left: PROBE_WAIT, down },
        }
    }

    fn probe(&mut self, down: bool) -> Admission {
        self.gate = Gate::Probing { down };
        Admission::Call { probe: true }
    }

    /// What a call's result says of the gate.
    pub(super) fn heard(
        &mut self,
        result: &Result<super::Answer, RespondError>,
        probe: bool,
        breaker: Breaker,
        now: Instant,
    ) -> Heard {
        match result {
            Err(RespondError::SlowDown { retry_after, .. }) => {
                self.failures = 0;
                let until = now + pause_for(*retry_after);
                self.gate = match self.gate {
                    // A later end wins over an earlier one other calls asked for.
                    Gate::Paused { until: already } if already > until => Gate::Paused { until: already },
                    Gate::Down { until: already } if already > until => Gate::Down { until: already },
                    _ => Gate::Paused { until },
                };
                Heard::Paused(until)
            }
            Err(RespondError::Transient(why)) if breaker.failures > 0 => {
                self.failures = self.failures.saturating_add(1);
                self.failed(why, probe, breaker, now)
            }
            _ => {
                self.failures = 0;
                match self.gate {
                    // The probe answered: open, unless a pause came meanwhile.
                    Gate::Probing { down } if probe => {
                        self.gate = Gate::Open;
                        self.failed_probes = 0;
                        let since = self.down_since.take();
                        match since {
                            Some((since, _)) if down => Heard::Closed(now.saturating_duration_since(since)),
                            _ => Heard::Nothing,
                        }
                    }
                    _ => Heard::Nothing,
                }
            }
        }
    }

    fn failed(&mut self, why: &str, probe: bool, breaker: Breaker, now: Instant) -> Heard {
        match self.gate {
            // Still down: the next probe waits twice as long.
            Gate::Probing { down: true } if probe => {
                self.failed_probes = self.failed_probes.saturating_add(1);
                let left = breaker.cooldown_after(self.failed_probes);
                self.gate = Gate::Down { until: now + left };
                Heard::Down { left, first: false }
            }
            // A call sent before the circuit opened, failing as the others
            // did: parked like them, and it neither opens the circuit again
            // nor decides in the probe's stead.
            Gate::Down { until } => {
                Heard::Down { left: until.saturating_duration_since(now).max(PROBE_WAIT), first: false }
            }
            Gate::Probing { down: true } => Heard::Down { left: PROBE_WAIT, first: false },
            _ if self.failures >= breaker.failures => {
                let left = breaker.cooldown_after(0);
                let until = match self.gate {
                    Gate::Paused { until } => until.max(now + left),
                    _ => now + left,
                };
                self.gate = Gate::Down { until };
                self.failed_probes = 0;
                self.down_since = Some((now, why.to_owned()));
                Heard::Down { left: until - now, first: true }
            }
            // The probe after a pause met a failure of another kind: the pause
            // is over, and the failure is the message's like any.
            Gate::Probing { down: false } if probe => {
                self.gate = Gate::Open;
                Heard::Nothing
            }
            _ => Heard::Nothing,
        }
    }

    /// A pause the fleet announced: nothing is called before `until`. One
    /// that ends no later than the one in force, or already, changes nothing.
    pub(super) fn until(&mut self, until: Instant, now: Instant) {
        self.gate = match self.gate {
            _ if until <= now => return,
            Gate::Paused { until: already } | Gate::Down { until: already } if already >= until => return,
            Gate::Down { .. } => Gate::Down { until },
            Gate::Open | Gate::Probing { .. } | Gate::Paused { .. } => Gate::Paused { until },
        };
    }

    /// A probe dropped before its answer (its message's deadline, a restarted
    /// generation): the next call probes.
    pub(super) fn unanswered(&mut self, now: Instant) {
        if let Gate::Probing { down } = self.gate {
            self.gate = if down { Gate::Down { until: now } } else { Gate::Paused { until: now } };
        }
    }

    /// Whether the consume loop may take a delivery now: always while the
    /// gate is open; none while it is closed; once the time is up, one at a
    /// time, [`PROBE_WAIT`] apart, until one of them probes (a duplicate, a
    /// malformed message or one waiting for its turn calls nothing), and none
    /// while the probe is out.
    pub(super) fn intake(&mut self, now: Instant) -> Intake {
        match self.gate {
            Gate::Open => Intake::Take,
            Gate::Paused { until } | Gate::Down { until } if now < until => Intake::WaitUntil(until),
            Gate::Paused { .. } | Gate::Down { .. } => match self.let_through {
                Some(at) if now < at + PROBE_WAIT => Intake::WaitUntil(at + PROBE_WAIT),
                _ => {
                    self.let_through = Some(now);
                    Intake::Take
                }
            },
            Gate::Probing { .. } => Intake::WaitUntil(now + PROBE_WAIT),
        }
    }

    /// Down: the circuit is open, or its probe is out.
    pub(super) fn is_down(&self) -> bool {
        matches!(self.gate, Gate::Down { .. } | Gate::Probing { down: true })
    }

    pub(super) fn is_paused(&self, now: Instant) -> bool {
        matches!(self.gate, Gate::Paused { until } if now < until)
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
