//! A responder's request to slow down, shared by the fleet (CONTRACT §3): the
//! process that hears it announces the pause on `<prefix>pauses:<endpoint>`
//! and keeps it in `<prefix>pause:<endpoint>` for as long as it lasts (for the
//! processes that start meanwhile); every process takes it up in its
//! [`Pause`]. Nothing here is on a message's path: a message costs no Redis
//! round trip for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::now_ms;
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
    let in_force: Option<i64> =
        redis::cmd("GET").arg(&key).query_async(&mut redis.clone()).await.unwrap_or(None);
    if let Some(until_ms) = in_force {
        pause.until(instant_at(until_ms));
    }
    let Some(mut heard) = pause.announced() else { return };
    let taken_up = pause.clone();
    let listening = super::wakes::each_message(
        urls,
        channel.clone(),
        move |text| {
            if let Ok(until_ms) = text.parse::<i64>() {
                taken_up.until(instant_at(until_ms));
            }
        },
        stop.clone(),
    );
    let announcing = async {
        while let Some(pause) = heard.recv().await {
            let until_ms = now_ms().saturating_add(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX));
            let announced: redis::RedisResult<()> = async {
                let mut conn = redis.clone();
                redis::cmd("SET")
                    .arg(&key)
                    .arg(until_ms)
                    .arg("PX")
                    .arg(pause.as_millis().max(1) as u64)
                    .query_async::<()>(&mut conn)
                    .await?;
                redis::cmd("PUBLISH").arg(&channel).arg(until_ms).query_async::<()>(&mut conn).await
            }
            .await;
            if let Err(e) = announced {
                tracing::warn!(error = %e, "could not announce the responder's pause to the fleet");
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = listening => {}
        _ = announcing => {}
    }
}

/// The instant of `until_ms` (ms since the epoch) on this process's clock;
/// no further ahead than the longest pause.
fn instant_at(until_ms: i64) -> Instant {
    let ahead = u64::try_from(until_ms.saturating_sub(now_ms())).unwrap_or(0);
    Instant::now() + Duration::from_millis(ahead).min(crate::respond::throttle::MAX_PAUSE)
}
