//! The scripts on the real Redis (REDIS_URL, else the local default; with
//! WORKER__REDIS__MODE=cluster, a cluster's seeds): what a second run of the
//! same request finds. A cluster client sends a request again when its
//! connection dropped before the answer; the first run may have happened.

use futures_util::StreamExt;

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

type Claimed = (String, String, u32, Option<Vec<u8>>, i64, String, i64, u32);

fn shard() -> Shard {
    Shard::of_conversation(&uuid::Uuid::nil(), "sms", "+1")
}

/// The line keys of the one conversation these tests use.
fn line(keys: &Keys) -> (String, String) {
    let tag = shard();
    (format!("{}{tag}:line:c", keys.prefix()), format!("{}{tag}:turns:c", keys.prefix()))
}

async fn claim_at(
    redis: &mut RedisConn,
    keys: &Keys,
    fp: &Fingerprint,
    value: &str,
    dead: &str,
    intake_us: i64,
) -> Claimed {
    let (line, turns) = line(keys);
    CLAIM
        .key(keys.state(shard(), fp))
        .key(keys.lock(shard(), fp))
        .key(keys.inflight(shard()))
        .key(line)
        .key(turns)
        .key(keys.state(shard(), fp))
        .arg(value)
        .arg("w-test")
        .arg(60_000)
        .arg(600_000)
        .arg(1)
        .arg(fp.as_str())
        .arg(value.split('|').nth(1).unwrap_or("inst"))
        .arg(dead)
        .arg(intake_us)
        .arg(3_600_000)
        .arg("0")
        .arg("")
        .arg(keys.wake_channel(""))
        .arg("")
        .invoke_async(redis)
        .await
        .expect("claim")
}

async fn claim(redis: &mut RedisConn, keys: &Keys, fp: &Fingerprint, value: &str, dead: &str) -> Claimed {
    claim_at(redis, keys, fp, value, dead, 1).await
}

async fn finish(
    redis: &mut RedisConn,
    keys: &Keys,
    fp: &Fingerprint,
    value: &str,
    status: &str,
    line_end: &str,
) {
    finish_burst(redis, keys, fp, value, status, line_end, 0).await
}

async fn finish_burst(
    redis: &mut RedisConn,
    keys: &Keys,
    fp: &Fingerprint,
    value: &str,
    status: &str,
    line_end: &str,
    burst_since: i64,
) {
    let (line, turns) = line(keys);
    let _: i32 = FINISH
        .key(keys.state(shard(), fp))
        .key(keys.lock(shard(), fp))
        .key(keys.inflight(shard()))
        .key(line)
        .key(turns)
        .arg(value)
        .arg(status)
        .arg(2)
        .arg(600_000)
        .arg(fp.as_str())
        .arg(line_end)
        .arg(3_600_000)
        .arg(keys.wake_channel(""))
        .arg("inst")
        .arg("w-test")
        .arg(burst_since)
        .invoke_async(redis)
        .await
        .expect("finish");
}

async fn clean_up(redis: &mut RedisConn, keys: &Keys, fps: &[&Fingerprint]) {
    let (line, turns) = line(keys);
    let mut del = redis::cmd("DEL");
    del.arg(keys.inflight(shard())).arg(line).arg(turns);
    for fp in fps {
        del.arg(keys.state(shard(), fp)).arg(keys.lock(shard(), fp));
    }
    let _: () = del.query_async(redis).await.expect("clean up");
}

/// A conversation's messages are claimed one at a time, in intake order,
/// whichever asks first; a failed one keeps its place; the end of a turn
/// wakes the next one's process on its channel.
#[tokio::test]
async fn a_conversation_is_answered_one_message_at_a_time_in_intake_order() {
    let mut redis = redis().await;
    let keys = Keys::new(&format!("t:scripts:{}:", uuid::Uuid::new_v4().simple()));
    let m1 = Fingerprint::of("t", "sms", "+1", "m1", "hello");
    let m2 = Fingerprint::of("t", "sms", "+1", "m2", "shoes?");
    let m3 = Fingerprint::of("t", "sms", "+1", "m3", "under 5000");

    // m2 asks first but was taken later than m1: it is first in line only until m1 shows up.
    let first = claim_at(&mut redis, &keys, &m2, "a|inst-b|w-b", "", 200).await;
    assert_eq!(first.0, "acquired", "alone in line, m2 takes the turn");
    let m1_asks = claim_at(&mut redis, &keys, &m1, "b|inst-a|w-a", "", 100).await;
    assert_eq!(
        (m1_asks.0.as_str(), m1_asks.1.as_str()),
        ("wait", m2.as_str()),
        "nothing overtakes a turn in flight"
    );
    let m3_asks = claim_at(&mut redis, &keys, &m3, "c|inst-c|w-c", "", 300).await;
    assert_eq!((m3_asks.0.as_str(), m3_asks.1.as_str()), ("wait", m2.as_str()));
    assert!(m3_asks.5.starts_with("taken|inst-b|w-test|"), "the entry ahead: {}", m3_asks.5);

    // m2 completes: m1 (earliest intake) is next, and its process is told.
    let mut pubsub = redis::Client::open(
        std::env::var("REDIS_URL")
            .unwrap_or("redis://127.0.0.1:6379/0".into())
            .split(',')
            .next()
            .unwrap_or_default(),
    )
    .expect("client")
    .get_async_pubsub()
    .await
    .expect("pubsub");
    pubsub.subscribe(keys.wake_channel("inst-a")).await.expect("subscribe");
    finish(&mut redis, &keys, &m2, "a|inst-b|w-b", "completed", "leave").await;
    let woken: String = tokio::time::timeout(std::time::Duration::from_secs(5), pubsub.on_message().next())
        .await
        .expect("woken in time")
        .expect("a message")
        .get_payload()
        .expect("payload");
    assert_eq!(woken, m1.as_str());
    let m3_again = claim_at(&mut redis, &keys, &m3, "c|inst-c|w-c", "", 300).await;
    assert_eq!((m3_again.0.as_str(), m3_again.1.as_str()), ("wait", m1.as_str()));

    // m1 fails: it keeps its place; m3 still waits; m1's retry takes the turn again.
    assert_eq!(claim_at(&mut redis, &keys, &m1, "b|inst-a|w-a", "", 100).await.0, "acquired");
    finish(&mut redis, &keys, &m1, "b|inst-a|w-a", "failed", "park").await;
    assert_eq!(claim_at(&mut redis, &keys, &m3, "c|inst-c|w-c", "", 300).await.0, "wait");
    assert_eq!(claim_at(&mut redis, &keys, &m1, "d|inst-a|w-a", "", 100).await.0, "acquired");
    // Dead-lettered at last: it leaves the line, and m3's turn comes.
    finish(&mut redis, &keys, &m1, "d|inst-a|w-a", "failed", "leave").await;
    assert_eq!(claim_at(&mut redis, &keys, &m3, "c|inst-c|w-c", "", 300).await.0, "acquired");
    // A copy of m2, answered, is a duplicate and takes no place in line.
    assert_eq!(claim_at(&mut redis, &keys, &m2, "e|inst-e|w-e", "", 400).await.0, "completed");
    let (line, _) = line(&keys);
    let in_line: Vec<String> =
        redis::cmd("ZRANGE").arg(&line).arg(0).arg(-1).query_async(&mut redis).await.expect("line");
    assert_eq!(in_line, vec![m3.to_string()]);
    clean_up(&mut redis, &keys, &[&m1, &m2, &m3]).await;
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

    clean_up(&mut redis, &keys, &[&fp]).await;
}

/// Coalescing: a newcomer behind the message being answered tells its holder's
/// process; the holder coalesced passes the turn on with the burst's start; a
/// copy of a coalesced message is a duplicate.
#[tokio::test]
async fn a_coalesced_turn_passes_on_with_its_burst_and_its_copy_is_a_duplicate() {
    let mut redis = redis().await;
    let keys = Keys::new(&format!("t:scripts:{}:", uuid::Uuid::new_v4().simple()));
    let m1 = Fingerprint::of("t", "sms", "+1", "b1", "hi");
    let m2 = Fingerprint::of("t", "sms", "+1", "b2", "shoes?");
    let url = std::env::var("REDIS_URL").unwrap_or("redis://127.0.0.1:6379/0".into());
    let node = url.split(',').next().unwrap_or_default().to_owned();
    let mut pubsub = redis::Client::open(node).expect("client").get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(keys.wake_channel("inst-a")).await.expect("subscribe");
    pubsub.subscribe(keys.wake_channel("inst-b")).await.expect("subscribe");

    let held = claim_at(&mut redis, &keys, &m1, "a|inst-a|w-a", "", 100).await;
    assert_eq!((held.0.as_str(), held.6, held.7), ("acquired", 0, 0), "a fresh burst, nobody behind");
    assert_eq!(claim_at(&mut redis, &keys, &m2, "b|inst-b|w-b", "", 200).await.0, "wait");
    let mut messages = pubsub.on_message();
    let next = |m: Option<redis::Msg>| m.and_then(|m| m.get_payload::<String>().ok()).unwrap_or_default();
    let told = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next()).await.expect("told");
    assert_eq!(next(told), format!("+{m1}"), "the holder hears of the newcomer");

    finish_burst(&mut redis, &keys, &m1, "a|inst-a|w-a", "coalesced", "coalesce", 12_345).await;
    let woken =
        tokio::time::timeout(std::time::Duration::from_secs(5), messages.next()).await.expect("woken");
    assert_eq!(next(woken), m2.as_str());
    drop(messages);
    let taken = claim_at(&mut redis, &keys, &m2, "b|inst-b|w-b", "", 200).await;
    assert_eq!((taken.0.as_str(), taken.6), ("acquired", 12_345), "the burst goes on from its start");
    assert_eq!(claim_at(&mut redis, &keys, &m1, "c|inst-c|w-c", "", 300).await.0, "completed");
    finish(&mut redis, &keys, &m2, "b|inst-b|w-b", "completed", "leave").await;
    let (_, turns) = line(&keys);
    let burst: Option<String> =
        redis::cmd("HGET").arg(&turns).arg(".burst").query_async(&mut redis).await.expect("hget");
    assert_eq!(burst, None, "the burst ends with its reply");
    clean_up(&mut redis, &keys, &[&m1, &m2]).await;
}

async fn join_at(redis: &mut RedisConn, keys: &Keys, fp: &Fingerprint, intake_us: i64) -> i32 {
    let (line, turns) = line(keys);
    JOIN.key(keys.state(shard(), fp))
        .key(keys.lock(shard(), fp))
        .key(keys.inflight(shard()))
        .key(line)
        .key(turns)
        .arg(fp.as_str())
        .arg(intake_us)
        .arg("waiting|inst-j|w-j|1")
        .arg(3_600_000)
        .invoke_async(redis)
        .await
        .expect("join")
}

/// A message read ahead takes its place as it is read; a later copy of a
/// message (read after the next one) that joins before the first copy's
/// claim does not push the message back behind the next one: the first
/// copy's claim moves it up to its own intake time. A message answered
/// takes no place again.
#[tokio::test]
async fn a_place_taken_by_a_later_copy_moves_up_to_the_first_copys() {
    let mut redis = redis().await;
    let keys = Keys::new(&format!("t:scripts:{}:", uuid::Uuid::new_v4().simple()));
    let m1 = Fingerprint::of("t", "sms", "+1", "m1", "hello");
    let m2 = Fingerprint::of("t", "sms", "+1", "m2", "shoes?");

    // m1's first copy was read at 100, m2 at 200, a copy of m1 at 300: the
    // two later ones joined as they were read, before m1's first copy claimed.
    assert_eq!(join_at(&mut redis, &keys, &m2, 200).await, 1);
    assert_eq!(join_at(&mut redis, &keys, &m1, 300).await, 1);
    assert_eq!(join_at(&mut redis, &keys, &m2, 250).await, 0, "in line already");
    let first = claim_at(&mut redis, &keys, &m1, "a|inst-a|w-a", "", 100).await;
    assert_eq!(first.0, "acquired", "m1 is first in line, by its first copy's intake: {first:?}");
    let m2_asks = claim_at(&mut redis, &keys, &m2, "b|inst-b|w-b", "", 200).await;
    assert_eq!((m2_asks.0.as_str(), m2_asks.1.as_str()), ("wait", m1.as_str()));

    finish(&mut redis, &keys, &m1, "a|inst-a|w-a", "completed", "leave").await;
    assert_eq!(join_at(&mut redis, &keys, &m1, 400).await, 0, "an answered message joins no more");
    let (line, _) = line(&keys);
    let in_line: Vec<String> =
        redis::cmd("ZRANGE").arg(&line).arg(0).arg(-1).query_async(&mut redis).await.expect("line");
    assert_eq!(in_line, vec![m2.to_string()]);
    assert_eq!(claim_at(&mut redis, &keys, &m2, "b|inst-b|w-b", "", 200).await.0, "acquired");
    clean_up(&mut redis, &keys, &[&m1, &m2]).await;
}
