//! The scripts on the real Redis (REDIS_URL, else the local default; with
//! WORKER__REDIS__MODE=cluster, a cluster's seeds): what a second run of the
//! same request finds. A cluster client sends a request again when its
//! connection dropped before the answer; the first run may have happened.

use super::*;
use crate::config::{RedisConfig, RedisMode};
use crate::keys::{Keys, Shard};
use crate::model::Fingerprint;
use crate::redis_conn::RedisConn;

async fn redis() -> RedisConn {
    let mut config = RedisConfig::default();
    if let Ok(url) = std::env::var("REDIS_URL") {
        config.url = url;
    }
    if std::env::var("WORKER__REDIS__MODE").is_ok_and(|m| m == "cluster") {
        config.mode = RedisMode::Cluster;
    }
    RedisConn::connect(&config).await.expect("redis")
}

type Claimed = (String, String, u32, Option<Vec<u8>>, i64, String);

async fn claim(redis: &mut RedisConn, keys: &Keys, fp: &Fingerprint, value: &str, dead: &str) -> Claimed {
    let shard = Shard::of_conversation(&uuid::Uuid::nil(), "sms", "+1");
    CLAIM
        .key(keys.state(shard, fp))
        .key(keys.lock(shard, fp))
        .key(keys.inflight(shard))
        .arg(value)
        .arg("w-test")
        .arg(60_000)
        .arg(600_000)
        .arg(1)
        .arg(fp.as_str())
        .arg("inst")
        .arg(dead)
        .invoke_async(redis)
        .await
        .expect("claim")
}

#[tokio::test]
async fn a_claim_sent_twice_is_answered_its_own_acquisition_again() {
    let mut redis = redis().await;
    let keys = Keys::new(&format!("t:scripts:{}:", uuid::Uuid::new_v4().simple()));
    let fp = Fingerprint::of("t", "sms", "+1", "m", "hello");

    let first = claim(&mut redis, &keys, &fp, "tok1|inst|w-test", "").await;
    let again = claim(&mut redis, &keys, &fp, "tok1|inst|w-test", "").await;
    assert_eq!(first.0, "acquired");
    assert_eq!((again.0.as_str(), again.2, again.4), ("acquired", first.2, first.4), "{again:?}");
    // Someone else's claim still finds it held, by us.
    let other = claim(&mut redis, &keys, &fp, "tok2|inst2|w-other", "").await;
    assert_eq!((other.0.as_str(), other.5.as_str()), ("held", "tok1|inst|w-test"));

    // The takeover of a dead holder, sent twice, is the same takeover twice.
    let taken = claim(&mut redis, &keys, &fp, "tok3|inst3|w-third", "tok1|inst|w-test").await;
    let taken_again = claim(&mut redis, &keys, &fp, "tok3|inst3|w-third", "tok1|inst|w-test").await;
    assert_eq!((taken.0.as_str(), taken.1.as_str()), ("taken_over", "w-test"));
    assert_eq!(
        (taken_again.0.as_str(), taken_again.1.as_str(), taken_again.4),
        ("taken_over", "w-test", taken.4)
    );
    assert!(taken.4 > first.4, "a takeover's fence is higher");

    let shard = Shard::of_conversation(&uuid::Uuid::nil(), "sms", "+1");
    let _: () = redis::cmd("DEL")
        .arg(keys.state(shard, &fp))
        .arg(keys.lock(shard, &fp))
        .arg(keys.inflight(shard))
        .query_async(&mut redis)
        .await
        .expect("clean up");
}
