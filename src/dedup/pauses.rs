//! A responder's request to slow down, shared by the fleet (CONTRACT §3): the
//! process that hears it announces what is left of the pause (ms, so no two
//! clocks need agree) on `<prefix>pauses:<endpoint>`, and keeps a key
//! `<prefix>pause:<endpoint>` that lives as long (for the processes that start
//! meanwhile); every process takes it up in its [`Pause`]. Pauses heard while
//! one is announced merge into the latest; one already over is not said. Nothing here is on a message's path: a message costs no Redis
//! round trip for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::keys::Keys;
use crate::redis_conn::RedisConn;
use crate::respond::Pause;

/// The name a responder endpoint's pause goes by: its kind and URL, hashed
/// (so no secret in a URL reaches a key name).
pub fn endpoint(kind: &str, url: &str) -> String {
    let digest = Sha256::digest(format!("{kind}|{url}").as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Shares `pause` with the fleet until `stop`: takes up a pause in force at
/// start, announces the ones this process hears of, and takes up the others'.
pub async fn share(
    redis: RedisConn,
    urls: String,
    keys: Keys,
    endpoint: String,
    pause: Arc<Pause>,
    stop: CancellationToken,
) {
    let key = keys.pause(&endpoint);
    let channel = keys.pause_channel(&endpoint);
    let Some(mut heard) = pause.announced() else { return };
    // A pause in force at start: what is left of it (its key lives as long).
    let left: Option<i64> = redis::cmd("PTTL").arg(&key).query_async(&mut redis.clone()).await.ok();
    if let Some(left) = left.filter(|ms| *ms > 0) {
        pause.until(Instant::now() + ms(left), Instant::now());
    }
    let taken_up = pause.clone();
    let listening = super::wakes::each_message(
        urls,
        channel.clone(),
        move |text| {
            // Announced as what is left of it, so no two clocks need agree.
            if let Ok(left) = text.parse::<i64>() {
                taken_up.until(Instant::now() + ms(left), Instant::now());
            }
        },
        stop.clone(),
    );
    let announcing = async {
        while heard.changed().await.is_ok() {
            let Some(until) = *heard.borrow_and_update() else { continue };
            // What is left of it now (nothing: it is over, nothing to say).
            let left = until.saturating_duration_since(Instant::now()).as_millis() as u64;
            if left == 0 {
                continue;
            }
            let announced: redis::RedisResult<()> = async {
                let mut conn = redis.clone();
                redis::cmd("SET")
                    .arg(&key)
                    .arg(left)
                    .arg("PX")
                    .arg(left)
                    .query_async::<()>(&mut conn)
                    .await?;
                redis::cmd("PUBLISH").arg(&channel).arg(left).query_async::<()>(&mut conn).await
            }
            .await;
            match announced {
                Ok(()) => {
                    tracing::info!(pause_ms = left, "the responder asked to slow down; the fleet is told")
                }
                Err(e) => tracing::warn!(error = %e, "could not announce the responder's pause to the fleet"),
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = listening => {}
        _ = announcing => {}
    }
}

/// `ms` milliseconds, no more than the longest pause (a negative or a huge
/// number from the channel is none, or a minute).
fn ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(crate::respond::throttle::MAX_PAUSE)
}
