//! The two phases the workers are measured in, after their start: waiting for
//! every reply of a phase, and publishing fresh messages at a steady rate.

use std::time::{Duration, Instant};

use chat_worker::config::Config;

use testkit::gateway::Publisher;

use super::ledger::{Ledger, Phase};
use super::report;
use super::secs;
use super::seed::Customer;
use super::workload::Workload;
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

/// Publishes fresh messages at `rate` for `seconds` while the workers run, then
/// waits for their replies.
pub async fn paced(
    ledger: &Ledger,
    channel: &lapin::Channel,
    config: &Config,
    customers: &[Customer],
    rate: f64,
    seconds: f64,
    fleet: &mut Fleet,
) -> anyhow::Result<report::Paced> {
    println!("paced: {rate:.0} messages/s for {seconds:.1}s");
    let mut load = Workload::new(customers, "p", 2);
    let mut publisher = Publisher::new(channel.clone(), &config.amqp.inbound_exchange);
    let started = Instant::now();
    let mut published = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while secs(started) < seconds {
        tick.tick().await;
        let due = (rate * secs(started).min(seconds)) as usize;
        while published < due {
            let message = load.next_message();
            ledger.published(&message.id, Phase::Paced, Instant::now());
            publisher.publish(&message).await?;
            published += 1;
        }
        fleet.check_running()?;
    }
    publisher.finish().await?;
    wait_for_replies(ledger, Phase::Paced, fleet).await?;
    Ok(report::Paced {
        rate,
        seconds,
        published,
        unique: ledger.progress(Phase::Paced).1,
        latency: ledger.latencies(Phase::Paced),
    })
}
