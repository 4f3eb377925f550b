use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chat_worker::config::{RedisMode, ResponderKind};
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};
use testkit::proxy;

use crate::harness::{TestEnv, eventually, fingerprint_of};

/// Redis is a fast path; PostgreSQL's uniqueness is the guarantee. With the
/// processing state gone, a late copy is caught at commit, and the reply that was
/// committed is published again under the same `reply:<fp>` id (the delivery
/// service drops it by that id), never a second, different reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_between_two_deliveries_still_leaves_one_reply_row() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker("w1");
    let message = env.message("wamid.flush", "+254700000002", "Is the shop open on Sunday?");
    env.publish_json(&message).await;
    eventually("first delivery processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 1 })
        .await;

    env.flush_redis().await;
    env.publish_json(&message).await;
    eventually("second delivery settled", || async { worker.tally.total() == 2 }).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("clean stop");

    let fp = fingerprint_of(&message);
    assert_eq!(env.rows(&fp).await, (1, 1), "still one inbound and one reply row");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
    let replies = env.replies().await;
    assert!(!replies.is_empty());
    let first = &replies[0].1;
    for (delivery, body) in &replies {
        assert_eq!(
            delivery.properties.message_id().as_ref().map(|s| s.as_str().to_owned()),
            Some(format!("reply:{fp}"))
        );
        assert_eq!(body, first, "a re-published reply is the committed reply, byte for byte");
    }
    env.finish().await;
}

/// Redis unreachable when a conversation's messages arrive: they wait at the
/// claim for it, spending no attempt (no `failed`, no retry that the second
/// could overtake), and once it answers again the first is answered first and
/// the second's turn sees it. (A Redis of its own behind a proxy that can be
/// cut keeps its data, as a network partition does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_arriving_while_redis_is_unreachable_waits_for_it_and_keeps_its_order() {
    let mut env = TestEnv::new().await;
    if env.config.redis.mode == RedisMode::Cluster {
        // A proxy in front of one node cannot stand for a cluster (redirects name the nodes).
        env.finish().await;
        return;
    }
    let agent = crate::turns::echo_agent(Duration::from_millis(10)).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    env.config.responder.timeout_ms = 4_000;
    env.config.worker.message_deadline_secs = 5;
    // A lease short enough that the claim's settling pause (a third of it and a second) is brief.
    env.config.redis.lock_ttl_secs = 6;
    let (_, redis_upstream) = env.upstreams();
    let redis = proxy::tcp(&redis_upstream).await.expect("proxy");
    env.route_through(None, Some(&redis));
    let mut worker = env.spawn_worker("w-outage");
    env.ready(&mut worker).await;

    redis.cut();
    let customer = "+254700000031";
    env.publish_json(&env.message("m-outage-1", customer, "first")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    env.publish_json(&env.message("m-outage-2", customer, "second")).await;
    // Both are read and stand at the claim meanwhile (the wait backs off from 0.5 s).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(worker.tally.total(), 0, "nothing is settled while Redis is away");
    redis.restore();

    let replies = crate::turns::replies(&env, 2).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("stop");
    let texts: Vec<&str> = replies.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(texts, ["re: first", "re: second"]);
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "no attempt was spent on Redis being away");
    assert_eq!(tally.processed.load(Ordering::Relaxed), 2);
    let seen = crate::turns::seen_by_agent(&agent, customer);
    assert_eq!(
        seen.last(),
        Some(&("second".to_owned(), vec!["first".to_owned()])),
        "the second turn saw the first"
    );
    env.finish().await;
}

/// A test world whose agent fails the message "first" once (503) and answers
/// every other "re: <text>", with a retry that comes back after 1.5-1.9 s and a
/// lease of 12 s, so that a waiter that finds its line gone pauses 5 s (a third
/// of it and a second) before it claims: long after the retry is back.
async fn first_fails_once() -> (TestEnv, http_stub::Stub) {
    let mut env = TestEnv::new().await;
    let failures = Arc::new(AtomicU32::new(0));
    let route = move |body: &Value| {
        let text = body["inbound"]["text"].as_str().unwrap_or_default().to_owned();
        if text == "first" && failures.fetch_add(1, Ordering::SeqCst) == 0 {
            return Answer::Json(503, r#"{"error":"busy"}"#.into());
        }
        Answer::Json(
            200,
            json!({"text": format!("re: {text}"), "confidence": 0.9, "handoff": false}).to_string(),
        )
    };
    let agent = http_stub::serve(Answer::Route(Arc::new(route))).await.expect("stub");
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    env.config.responder.timeout_ms = 4_000;
    env.config.worker.message_deadline_secs = 5;
    env.config.worker.retry_base_delay_ms = 1_500;
    env.config.redis.lock_ttl_secs = 12;
    (env, agent)
}

/// A message in a retry queue when Redis loses its conversation's line comes
/// back with the time it was first read (`x-worker-intake`), and takes its
/// place again ahead of the later message that waited behind it — not at the
/// end of the line, as the newest message would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_message_whose_line_redis_lost_takes_its_place_again_ahead_of_the_next() {
    let (env, agent) = first_fails_once().await;
    let mut worker = env.spawn_worker("w-retry-place");
    env.ready(&mut worker).await;

    let customer = "+254700000032";
    env.publish_json(&env.message("m-place-1", customer, "first")).await;
    eventually("the first failed once", || async { worker.tally.failed.load(Ordering::Relaxed) == 1 }).await;
    env.publish_json(&env.message("m-place-2", customer, "second")).await;
    // The second waits behind the first's kept place; then Redis loses it all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.flush_redis().await;

    let replies = crate::turns::replies(&env, 2).await;
    worker.stop().await.expect("stop");
    let texts: Vec<&str> = replies.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(texts, ["re: first", "re: second"], "the retried first is not overtaken");
    let seen = crate::turns::seen_by_agent(&agent, customer);
    assert_eq!(seen.last(), Some(&("second".to_owned(), vec!["first".to_owned()])));
    env.finish().await;
}

/// Redis loses the line while a message waits in it: the next message of the
/// conversation, read by the same process, finds the line empty but does not
/// take the turn ahead of the one still waiting before it (nor ahead of the
/// retry both wait for); all three are answered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_read_after_one_waiting_in_a_lost_line_does_not_take_the_turn_ahead_of_it() {
    let (env, agent) = first_fails_once().await;
    let mut worker = env.spawn_worker("w-lost-line");
    env.ready(&mut worker).await;

    let customer = "+254700000034";
    env.publish_json(&env.message("m-lost-1", customer, "first")).await;
    eventually("the first failed once", || async { worker.tally.failed.load(Ordering::Relaxed) == 1 }).await;
    env.publish_json(&env.message("m-lost-2", customer, "second")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The second waits behind the first's kept place; Redis loses it all, and
    // the third comes before the second has looked again.
    env.flush_redis().await;
    env.publish_json(&env.message("m-lost-3", customer, "third")).await;

    let replies = crate::turns::replies(&env, 3).await;
    worker.stop().await.expect("stop");
    let texts: Vec<&str> = replies.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(texts, ["re: first", "re: second", "re: third"]);
    let seen = crate::turns::seen_by_agent(&agent, customer);
    assert_eq!(seen.last(), Some(&("third".to_owned(), vec!["first".to_owned(), "second".to_owned()])));
    env.finish().await;
}

/// A message answered whose end never reached Redis (it failed as the
/// holder finished), and whose lock the sweeper then released as a dead
/// holder's (state `released`, as for one whose delivery comes back — this
/// one's never does): its conversation's next message does not wait for it
/// for ever, once it has been a lock's lifetime (the fleet chaos stalled on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_message_whose_end_redis_never_heard_does_not_hold_its_conversation() {
    let mut env = TestEnv::new().await;
    env.config.redis.lock_ttl_secs = 3;
    env.config.redis.state_ttl_secs = 3_600;
    env.config.worker.message_deadline_secs = 2;
    env.config.responder.timeout_ms = 1_000;
    let mut worker = env.spawn_worker("w-unheard");
    env.ready(&mut worker).await;
    let first = env.message("m-unheard-1", "+254700000900", "hello");
    env.publish_json(&first).await;
    env.reply_to("m-unheard-1").await;

    // Put its line back as the failed finish and the sweeper left it.
    let inbound = chat_worker::decode::decode(first.to_string().as_bytes()).expect("valid");
    let fp = inbound.fingerprint();
    let keys = chat_worker::keys::Keys::new(&env.config.redis.key_prefix);
    let line = keys.conversation(&inbound);
    let long_ago = chrono::Utc::now().timestamp_millis() - 10_000;
    let mut redis = env.redis.clone();
    let _: () = redis::pipe()
        .zadd(&line.line, fp.as_str(), chrono::Utc::now().timestamp_micros() - 10_000_000)
        .hset(&line.turns, fp.as_str(), format!("taken|someone|w-unheard|{long_ago}"))
        .hset(&line.turns, ".current", fp.as_str())
        .hset(keys.state(line.shard, &fp), "status", "released")
        .del(keys.lock(line.shard, &fp))
        .query_async(&mut redis)
        .await
        .expect("the stuck line");

    env.publish_json(&env.message("m-unheard-2", "+254700000900", "and shoes?")).await;
    env.reply_to("m-unheard-2").await;
    let skipped = worker.tally.clone();
    worker.stop().await.expect("stop");
    assert_eq!(skipped.failed.load(Ordering::Relaxed), 0);
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}
