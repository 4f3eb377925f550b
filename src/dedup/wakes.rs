//! "Your turn": how a message waiting in its conversation's line learns that
//! the one ahead of it ended, across the fleet, without polling.
//!
//! The script that ends a turn publishes the next entry's fingerprint on the
//! channel of the process holding it (`<prefix>wake:<instance>`, see
//! [`crate::keys`]). Each process subscribes to its own channel on a connection
//! of its own ([`listen`]) and hands each fingerprint to the waiters registered
//! for it ([`Wakes`]). In a Redis Cluster a plain PUBLISH reaches every node,
//! so the subscription may be on any one of them.
//!
//! Pub/sub delivers at most once: a wake published while the subscription is
//! reconnecting is lost. A waiter therefore also looks again after a while of
//! its own (`pipeline::turn`); the wake is what makes the common case fast.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::seeds;

type Registry = HashMap<String, Vec<(u64, oneshot::Sender<()>)>>;

/// The waiters of this process, by the fingerprint they wait to be woken for.
#[derive(Clone, Default)]
pub struct Wakes {
    waiting: Arc<Mutex<Registry>>,
    next_id: Arc<AtomicU64>,
}

/// One waiter's registration; dropping it withdraws it.
pub struct Listener {
    wakes: Wakes,
    fingerprint: String,
    id: u64,
    woken: oneshot::Receiver<()>,
}

impl Listener {
    /// Resolves when this fingerprint is woken (or never, if the registry is gone).
    pub async fn woken(&mut self) {
        if (&mut self.woken).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Listener {
    /// Whether the wake has come already, without waiting.
    pub fn fired(&mut self) -> bool {
        self.woken.try_recv().is_ok()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut waiting = self.wakes.lock();
        if let Some(list) = waiting.get_mut(&self.fingerprint) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                waiting.remove(&self.fingerprint);
            }
        }
    }
}

impl Wakes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves a map of senders, still sound.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a waiter for `fingerprint`: register before asking whether to
    /// wait, so that a wake sent in between is not missed.
    pub fn listen(&self, fingerprint: &str) -> Listener {
        let (tx, woken) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(fingerprint.to_owned()).or_default().push((id, tx));
        Listener { wakes: self.clone(), fingerprint: fingerprint.to_owned(), id, woken }
    }

    /// Wakes every waiter of `fingerprint`; returns how many there were.
    pub fn wake(&self, fingerprint: &str) -> usize {
        let woken = self.lock().remove(fingerprint).unwrap_or_default();
        let n = woken.len();
        for (_, tx) in woken {
            let _ = tx.send(());
        }
        n
    }

    /// How many waiters are registered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Subscribes to `channel` on the first of `urls` (a URL, or seed nodes) that
/// answers, and wakes the waiters named by what arrives, until `stop`;
/// reconnects (every second at most) when the connection drops.
pub async fn listen(urls: String, channel: String, wakes: Wakes, stop: CancellationToken) {
    each_message(
        urls,
        channel,
        move |fingerprint| {
            wakes.wake(&fingerprint);
        },
        stop,
    )
    .await
}

/// Subscribes to `channel` as [`listen`] does, handing each message's text to `heard`.
pub(super) async fn each_message(
    urls: String,
    channel: String,
    heard: impl Fn(String),
    stop: CancellationToken,
) {
    let nodes: Vec<String> = seeds(&urls).map(str::to_owned).collect();
    let mut node = 0;
    loop {
        let url = nodes.get(node % nodes.len().max(1)).cloned().unwrap_or_default();
        node += 1;
        let subscribed = tokio::select! {
            _ = stop.cancelled() => return,
            s = subscribe(&url, &channel) => s,
        };
        match subscribed {
            Ok(pubsub) => {
                tracing::debug!(%channel, "listening for turns");
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        _ = stop.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    if let Ok(text) = message.get_payload::<String>() {
                        heard(text);
                    }
                }
                tracing::warn!(%channel, "a subscription was lost; subscribing again");
            }
            Err(e) => tracing::warn!(%channel, error = %e, "could not subscribe; trying again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn subscribe(url: &str, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(url)?;
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    };
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out subscribing"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_every_waiter_of_its_fingerprint_and_no_other() {
        let wakes = Wakes::default();
        let mut a = wakes.listen("fp1");
        let mut b = wakes.listen("fp1");
        let c = wakes.listen("fp2");
        assert_eq!(wakes.wake("fp1"), 2);
        a.woken().await;
        b.woken().await;
        assert_eq!(wakes.len(), 1);
        drop(c);
        assert!(wakes.is_empty(), "a dropped listener withdraws itself");
        assert_eq!(wakes.wake("fp3"), 0);
    }
}
