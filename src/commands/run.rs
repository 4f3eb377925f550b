//! `worker run`: the daemon, until SIGTERM or SIGINT.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_worker::config::Config;
use chat_worker::worker::{self, Tally};
use tokio_util::sync::CancellationToken;

/// The exit status of a stop cut short (a second signal, or an overrun): not the
/// clean 0, so a supervisor can tell.
const FORCED_EXIT: i32 = 1;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone(), worker::shutdown_bound(&config)));
    let tally = Arc::new(Tally::default());
    worker::run(config, shutdown, tally.clone()).await?;
    tracing::info!(
        processed = tally.processed.load(Ordering::Relaxed),
        duplicate = tally.duplicate.load(Ordering::Relaxed),
        rejected = tally.rejected.load(Ordering::Relaxed),
        failed = tally.failed.load(Ordering::Relaxed),
        deferred = tally.deferred.load(Ordering::Relaxed),
        coalesced = tally.coalesced.load(Ordering::Relaxed),
        "worker stopped"
    );
    Ok(())
}

/// SIGTERM or SIGINT: stop taking new messages and finish the ones in flight.
/// A second one, or a stop that overruns `bound` (every step of it is bounded, so
/// only a bug can make it), exits at once: deliveries not yet acked go back to the
/// queue when the connection drops and are redone by another worker (taking over
/// their locks once this process's liveness key lapses), so nothing is lost.
async fn stop_on_signal(shutdown: CancellationToken, bound: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the worker with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "stopping: no new messages, finishing those in flight (signal again to exit now)"
    );
    shutdown.cancel();
    let second = tokio::select! {
        _ = term.recv() => Some("SIGTERM"),
        _ = int.recv() => Some("SIGINT"),
        _ = tokio::time::sleep(bound) => None,
    };
    match second {
        Some(name) => {
            tracing::warn!(
                signal = name,
                "second signal: exiting now; deliveries not yet acked go back to the queue"
            )
        }
        None => tracing::error!(
            secs = bound.as_secs(),
            "the stop did not finish in time; exiting now; deliveries not yet acked go back to the queue"
        ),
    }
    std::process::exit(FORCED_EXIT);
}
