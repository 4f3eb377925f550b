//! `worker run`: the daemon, until SIGTERM or SIGINT.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chat_worker::config::Config;
use chat_worker::worker::{self, Tally};
use tokio_util::sync::CancellationToken;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let tally = Arc::new(Tally::default());
    worker::run(config, shutdown, tally.clone()).await?;
    tracing::info!(
        processed = tally.processed.load(Ordering::Relaxed),
        duplicate = tally.duplicate.load(Ordering::Relaxed),
        rejected = tally.rejected.load(Ordering::Relaxed),
        failed = tally.failed.load(Ordering::Relaxed),
        deferred = tally.deferred.load(Ordering::Relaxed),
        "worker stopped"
    );
    Ok(())
}

/// SIGTERM or SIGINT: stop taking new messages and finish the ones in flight.
async fn stop_on_signal(shutdown: CancellationToken) {
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
    tracing::info!(signal = name, "stopping: no new messages, finishing those in flight");
    shutdown.cancel();
}
