use super::*;
use crate::respond::Answer;

const BREAKER: Breaker = Breaker { failures: 3, cooldown: Duration::from_secs(5) };
const OFF: Breaker = Breaker { failures: 0, cooldown: Duration::from_secs(5) };

fn slow_down(after: u64) -> Result<Answer, RespondError> {
    Err(RespondError::SlowDown { retry_after: Some(Duration::from_secs(after)), detail: String::new() })
}

fn down() -> Result<Answer, RespondError> {
    Err(RespondError::Transient("connection refused".into()))
}

fn answered() -> Result<Answer, RespondError> {
    Ok(Answer {
        text: "hi".into(),
        handoff: false,
        confidence: 1.0,
        references: Vec::new(),
        usage: Default::default(),
    })
}

fn refused(admission: Admission) -> Option<(Duration, bool)> {
    match admission {
        Admission::Refused { left, down } => Some((left, down)),
        Admission::Call { .. } => None,
    }
}

#[test]
fn a_slow_down_pauses_every_call_then_one_probe_goes_first() {
    let mut t = State::default();
    let now = Instant::now();
    assert_eq!(t.admit(now), Admission::Call { probe: false });
    assert_eq!(t.heard(&slow_down(2), false, BREAKER, now), Heard::Paused(now + Duration::from_secs(2)));
    assert_eq!(
        refused(t.admit(now + Duration::from_millis(500))),
        Some((Duration::from_millis(1500), false))
    );
    let later = now + Duration::from_secs(2);
    assert_eq!(t.admit(later), Admission::Call { probe: true }, "the first after the pause probes");
    assert_eq!(refused(t.admit(later)), Some((PROBE_WAIT, false)), "the others are parked while it is out");
    t.heard(&slow_down(3), true, BREAKER, later);
    assert!(refused(t.admit(later + Duration::from_secs(1))).is_some(), "paused again");
    let after = later + Duration::from_secs(3);
    assert_eq!(t.admit(after), Admission::Call { probe: true });
    assert_eq!(t.heard(&down(), true, BREAKER, after), Heard::Nothing, "one failure is the message's");
    assert_eq!(t.admit(after), Admission::Call { probe: false }, "any other answer opens it");
}

#[test]
fn a_pause_heard_while_the_probe_is_out_holds_and_a_past_one_changes_nothing() {
    let mut t = State::default();
    let now = Instant::now();
    t.until(now, now);
    t.until(now - Duration::from_secs(1), now);
    assert_eq!(t.admit(now), Admission::Call { probe: false }, "a pause already over is none");
    t.heard(&slow_down(1), false, BREAKER, now);
    let later = now + Duration::from_secs(1);
    assert_eq!(t.admit(later), Admission::Call { probe: true });
    t.until(later + Duration::from_secs(30), later);
    t.heard(&answered(), true, BREAKER, later);
    assert!(refused(t.admit(later)).is_some(), "the fleet's pause outlives the probe's answer");
}

#[test]
fn a_probe_dropped_before_its_answer_lets_the_next_call_probe() {
    let mut t = State::default();
    let now = Instant::now();
    t.heard(&slow_down(1), false, BREAKER, now);
    assert_eq!(t.admit(now + Duration::from_secs(1)), Admission::Call { probe: true });
    t.unanswered(now + Duration::from_secs(1));
    assert_eq!(t.admit(now + Duration::from_secs(1)), Admission::Call { probe: true });
}

#[test]
fn the_longer_of_two_pauses_holds_and_none_exceeds_the_cap() {
    let mut t = State::default();
    let now = Instant::now();
    t.heard(&slow_down(10), false, BREAKER, now);
    t.heard(&slow_down(1), false, BREAKER, now);
    assert!(refused(t.admit(now + Duration::from_secs(5))).is_some());
    assert_eq!(pause_for(Some(Duration::from_secs(3600))), MAX_PAUSE);
    assert_eq!(pause_for(None), DEFAULT_PAUSE);
    assert_eq!(pause_for(Some(Duration::ZERO)), PROBE_WAIT, "Retry-After: 0 is no hot loop");
}

#[test]
fn failures_in_a_row_open_the_circuit_and_a_failed_probe_doubles_its_cooldown() {
    let mut t = State::default();
    let now = Instant::now();
    assert_eq!(t.heard(&down(), false, BREAKER, now), Heard::Nothing);
    assert_eq!(t.heard(&down(), false, BREAKER, now), Heard::Nothing);
    assert!(!t.is_down(), "two failures are two messages' failures");
    let five = Duration::from_secs(5);
    assert_eq!(t.heard(&down(), false, BREAKER, now), Heard::Down { left: five, first: true });
    assert!(t.is_down());
    assert_eq!(refused(t.admit(now + Duration::from_secs(1))), Some((Duration::from_secs(4), true)));
    assert_eq!(
        t.heard(&down(), false, BREAKER, now + Duration::from_secs(1)),
        Heard::Down { left: Duration::from_secs(4), first: false },
        "a call sent before it opened parks too"
    );
    let due = now + five;
    assert_eq!(t.admit(due), Admission::Call { probe: true });
    assert_eq!(refused(t.admit(due)), Some((PROBE_WAIT, true)));
    assert!(t.is_down(), "down while the probe is out");
    assert_eq!(t.heard(&down(), true, BREAKER, due), Heard::Down { left: 2 * five, first: false });
    let due = due + 2 * five;
    assert_eq!(t.admit(due), Admission::Call { probe: true });
    assert_eq!(t.heard(&answered(), true, BREAKER, due), Heard::Closed(Duration::from_secs(15)));
    assert!(!t.is_down());
    assert_eq!(t.admit(due), Admission::Call { probe: false });
    assert_eq!(t.heard(&down(), false, BREAKER, due), Heard::Nothing, "the row starts again");
}

#[test]
fn any_answer_ends_the_row_and_an_off_breaker_never_opens() {
    let mut t = State::default();
    let now = Instant::now();
    for _ in 0..2 {
        t.heard(&down(), false, BREAKER, now);
    }
    t.heard(&Err(RespondError::Unusable("400".into())), false, BREAKER, now);
    t.heard(&down(), false, BREAKER, now);
    t.heard(&down(), false, BREAKER, now);
    assert!(!t.is_down(), "an unusable answer is an answer: the endpoint is up");
    let mut off = State::default();
    for _ in 0..100 {
        assert_eq!(off.heard(&down(), false, OFF, now), Heard::Nothing);
    }
    assert!(!off.is_down());
}

#[test]
fn the_cooldown_stops_doubling_at_its_cap() {
    let b = Breaker { failures: 1, cooldown: Duration::from_secs(5) };
    assert_eq!(b.cooldown_after(0), Duration::from_secs(5));
    assert_eq!(b.cooldown_after(2), Duration::from_secs(20));
    assert_eq!(b.cooldown_after(3), MAX_COOLDOWN);
    assert_eq!(b.cooldown_after(u32::MAX), MAX_COOLDOWN);
    let long = Breaker { failures: 1, cooldown: Duration::from_secs(120) };
    assert_eq!(long.cooldown_after(4), Duration::from_secs(120), "a longer first cooldown is the operator's");
}

#[test]
fn the_consume_loop_takes_nothing_while_closed_then_one_at_a_time_until_a_probe_is_out() {
    let mut t = State::default();
    let now = Instant::now();
    assert_eq!(t.intake(now), Intake::Take);
    for _ in 0..3 {
        t.heard(&down(), false, BREAKER, now);
    }
    let due = now + Duration::from_secs(5);
    assert_eq!(t.intake(now), Intake::WaitUntil(due));
    assert_eq!(t.intake(due), Intake::Take, "one to probe");
    assert_eq!(t.intake(due), Intake::WaitUntil(due + PROBE_WAIT), "not another at once");
    assert_eq!(t.intake(due + PROBE_WAIT), Intake::Take, "that one called nothing: another");
    assert_eq!(t.admit(due + PROBE_WAIT), Admission::Call { probe: true });
    let out = due + Duration::from_secs(3);
    assert_eq!(t.intake(out), Intake::WaitUntil(out + PROBE_WAIT), "none while the probe is out");
    t.heard(&answered(), true, BREAKER, out);
    assert_eq!(t.intake(out), Intake::Take);
}

#[test]
fn a_late_failure_of_a_call_sent_before_the_circuit_opened_neither_reopens_it_nor_hides_the_probe() {
    let mut t = State::default();
    let now = Instant::now();
    for _ in 0..3 {
        t.heard(&down(), false, BREAKER, now);
    }
    let due = now + Duration::from_secs(5);
    assert_eq!(
        t.heard(&down(), false, BREAKER, due + Duration::from_millis(1)),
        Heard::Down { left: PROBE_WAIT, first: false },
        "past the cooldown, before any probe"
    );
    assert_eq!(t.admit(due), Admission::Call { probe: true });
    assert_eq!(t.heard(&down(), false, BREAKER, due), Heard::Down { left: PROBE_WAIT, first: false });
    assert_eq!(
        t.heard(&answered(), true, BREAKER, due),
        Heard::Closed(Duration::from_secs(5)),
        "the probe decides"
    );
}
