//! The inbound queue's depth and consumer count, read from the broker on a
//! timer (what autoscaling and `/metrics` read), on a channel of its own.

use std::sync::Arc;
use std::time::Duration;

use lapin::{Channel, Connection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::telemetry::metrics::Metrics;

impl Broker {
    /// Polls `queue` every `every` into `metrics` until `stop`, or until the
    /// connection is gone. `None` when no channel could be opened for it.
    pub async fn watch_depth(
        &self,
        queue: &str,
        every: Duration,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let channel = self.connection.create_channel().await.ok()?;
        let connection = self.connection.clone();
        Some(tokio::spawn(poll(connection, channel, queue.to_owned(), every, metrics, stop)))
    }
}

/// A channel the broker closes is replaced (the depth is what autoscaling
/// reads); the loop ends with `stop`, or when the connection is gone.
async fn poll(
    connection: Arc<Connection>,
    mut channel: Channel,
    queue: String,
    every: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        match channel.queue_declare(queue.as_str().into(), options, Default::default()).await {
            Ok(q) => {
                metrics.queue_depth.set(i64::from(q.message_count()));
                metrics.queue_consumers.set(i64::from(q.consumer_count()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "queue poll failed");
                if !connection.status().connected() {
                    break;
                }
                match connection.create_channel().await {
                    Ok(fresh) => channel = fresh,
                    Err(_) => break,
                }
            }
        }
    }
    // Closed here rather than when dropped: lapin closes a dropped channel in
    // the background, and when that close runs while the connection is closing
    // it fails, marks the connection broken and `Broker::close` never returns
    // (the worker once hung so after SIGTERM). This fails at once, harmlessly,
    // when the channel or connection is already gone.
    let _ = channel.close(200, "session over".into()).await;
}
