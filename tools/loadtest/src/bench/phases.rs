//! The two phases the workers are measured in, after their start: waiting for
//! every reply of a phase, and publishing fresh messages at a steady rate.

use std::time::{Duration, Instant};

use chat_worker::config::Config;

use testkit::gateway::Publisher;

use super::ledger::{Ledger, Phase};
use super::report;
use super::seed::Customer;
use super::workload::{Shape, Workload};
use crate::fleet::Fleet;

/// With no reply for this long, a phase is given up and its missing messages reported.
const STALL: Duration = Duration::from_secs(60);

/// Waits until every unique message of `phase` has a reply; `false` when
/// replies stopped coming for [`STALL`] (the rest are then reported missing).
pub async fn wait_for_replies(ledger: &Ledger, phase: Phase, fleet: &mut Fleet) -> anyhow::Result<bool> {
    let mut last_progress = (0, Instant::now());
    loop {
        let (replied, unique) = ledger.progress(phase);
        if replied >= unique {
            return Ok(true);
        }
        fleet.check_running()?;
        if replied != last_progress.0 {
            last_progress = (replied, Instant::now());
        } else if last_progress.1.elapsed() > STALL {
            eprintln!("bench: no reply for {}s; {replied} of {unique} replied", STALL.as_secs());
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The paced phase's load.
pub struct Pace {
    pub shape: Shape,
    /// Messages/s, copies included.
    pub rate: f64,
    pub seconds: f64,
}

/// Publishes fresh messages at `pace.rate` for `pace.seconds` while the workers
/// run, each when the workload has it due (bursts: their gap apart), then waits
/// for their replies.
pub async fn paced(
    ledger: &Ledger,
    channel: &lapin::Channel,
    config: &Config,
    customers: &[Customer],
    pace: Pace,
    fleet: &mut Fleet,
) -> anyhow::Result<report::Paced> {
    let Pace { shape, rate, seconds } = pace;
    println!("paced: {rate:.0} messages/s for {seconds:.1}s");
    let plan = Workload::new(customers, "p", 2, shape, rate, Some(Duration::from_secs_f64(seconds))).all();
    let mut publisher = Publisher::new(channel.clone(), &config.amqp.inbound_exchange);
    let started = tokio::time::Instant::now();
    let mut checked = started;
    for planned in &plan {
        tokio::time::sleep_until(started + planned.at).await;
        ledger.published(planned, Phase::Paced, Instant::now());
        publisher.publish(&planned.message).await?;
        if checked.elapsed() > Duration::from_millis(5) {
            fleet.check_running()?;
            checked = tokio::time::Instant::now();
        }
    }
    publisher.finish().await?;
    wait_for_replies(ledger, Phase::Paced, fleet).await?;
    Ok(report::Paced {
        rate,
        seconds,
        published: plan.len(),
        unique: ledger.progress(Phase::Paced).1,
        latency: ledger.latencies(Phase::Paced),
        bursts: ledger.burst_latencies(Phase::Paced),
    })
}
