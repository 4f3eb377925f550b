//! The loop the group commit and the grouped context read share: take every job
//! that is ready when one of a few slots frees up, and run them as one statement.
//!
//! No waiting window: under light load a batch is one job and nothing is delayed;
//! under load, jobs queue while every slot is busy, which is what makes the next
//! batch large. Each slot keeps its connection from one batch to the next: handing
//! it back to the pool would cost a round trip each time (sqlx pings every
//! connection it gets back). A slot whose batch failed starts over with a fresh one.

use std::future::Future;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::mpsc;

use super::{Conn, Db};

pub(super) type Connection = Option<Conn>;

/// Starts the loop; jobs sent on the returned channel are handed to `run` in
/// batches of at most `max_batch`, at most `slots` batches at once. `run` returns
/// the connection to keep, or `None` after a failure. The loop ends when every
/// sender is dropped.
pub(super) fn start<J, F, Fut>(
    db: Db,
    slots: usize,
    max_batch: usize,
    batch_sizes: Option<Histogram>,
    run: F,
) -> mpsc::UnboundedSender<J>
where
    J: Send + 'static,
    F: Fn(Db, Connection, Vec<J>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Connection> + Send + 'static,
{
    let (jobs, mut queue) = mpsc::unbounded_channel::<J>();
    tokio::spawn(async move {
        let slots = slots.max(1);
        let (free, mut slot) = mpsc::channel::<Connection>(slots);
        for _ in 0..slots {
            let _ = free.try_send(None);
        }
        while let Some(first) = queue.recv().await {
            let Some(connection) = slot.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < max_batch.max(1) {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if let Some(sizes) = &batch_sizes {
                sizes.observe(batch.len() as f64);
            }
            let done = run(db.clone(), connection, batch);
            let free = free.clone();
            tokio::spawn(async move {
                let kept = done.await;
                let _ = free.send(kept).await;
            });
        }
    });
    jobs
}

/// The slot's connection, or a fresh one from the pool.
pub(super) async fn connection(db: &Db, kept: Connection) -> Result<Conn, sqlx::Error> {
    match kept {
        Some(connection) => Ok(connection),
        None => db.acquire().await,
    }
}
