//! Burst coalescing (CONTRACT §3, §4): messages of a conversation arriving
//! close together are answered by one reply whose `answers` lists them all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_worker::config::ResponderKind;
use chat_worker::model::Fingerprint;
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};

use crate::harness::{PATIENCE, TestEnv, fingerprint_of};

/// An agent answering "re: <the burst's texts>" after `delay`, recording what it is sent.
async fn agent(delay: Duration) -> http_stub::Stub {
    let route = move |body: &Value| {
        let texts: Vec<String> = match body["burst"].as_array() {
            Some(burst) => burst.iter().filter_map(|m| m["text"].as_str().map(str::to_owned)).collect(),
            None => vec![body["inbound"]["text"].as_str().unwrap_or_default().to_owned()],
        };
        let answer =
            json!({"text": format!("re: {}", texts.join(" + ")), "confidence": 0.9, "handoff": false});
        Answer::Slow(delay, answer.to_string())
    };
    http_stub::serve(Answer::Route(Arc::new(route))).await.expect("agent stub")
}

async fn coalescing(env: &mut TestEnv, settings: Value, agent: &http_stub::Stub) {
    env.set_tenant_settings(settings).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
}

/// Replies until every one of `fingerprints` is answered (by some reply's `answers`).
async fn replies_answering(env: &TestEnv, fingerprints: &[String]) -> Vec<Value> {
    let started = Instant::now();
    let mut got: Vec<Value> = Vec::new();
    loop {
        got.extend(env.replies().await.into_iter().map(|(_, body)| body));
        let answered: Vec<&str> = got
            .iter()
            .flat_map(|r| r["answers"].as_array().into_iter().flatten().filter_map(Value::as_str))
            .collect();
        if fingerprints.iter().all(|fp| answered.contains(&fp.as_str())) {
            return got;
        }
        assert!(started.elapsed() < PATIENCE, "{} replies, answering {answered:?}", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_within_the_window_is_answered_by_one_agent_call_and_one_reply_listing_it_all() {
    let mut env = TestEnv::new().await;
    let agent = agent(Duration::from_millis(10)).await;
    coalescing(&mut env, json!({"coalesce_ms": 600, "coalesce_max_ms": 5000}), &agent).await;
    let mut workers = vec![env.spawn_worker("w0"), env.spawn_worker("w1")];
    for worker in &mut workers {
        env.ready(worker).await;
    }
    let texts = ["hi", "do you have running shoes", "under 5000"];
    let messages: Vec<Value> =
        texts.iter().enumerate().map(|(i, t)| env.message(&format!("b-{i}"), "+254711000001", t)).collect();
    for message in &messages {
        env.publish_json(message).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let fps: Vec<String> = messages.iter().map(fingerprint_of).collect();
    let replies = replies_answering(&env, &fps).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replies: Vec<Value> =
        replies.into_iter().chain(env.replies().await.into_iter().map(|(_, b)| b)).collect();
    for worker in workers {
        worker.stop().await.expect("stop");
    }

    assert_eq!(replies.len(), 1, "one reply for the burst: {replies:?}");
    let reply = &replies[0];
    assert_eq!(reply["answers"], json!(fps), "answers lists the burst, oldest first, its own last");
    assert_eq!(reply["fingerprint"], fps[2]);
    assert_eq!(reply["reply_id"], format!("reply:{}", fps[2]));
    assert_eq!(reply["text"], "re: hi + do you have running shoes + under 5000");
    let bodies = agent.bodies();
    assert_eq!(bodies.len(), 1, "one agent call");
    let history: Vec<&str> = bodies[0]["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|m| m["direction"] == "in")
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(history, texts[..2], "the earlier messages are in the history");
    assert_eq!(bodies[0]["inbound"]["text"], "under 5000", "inbound is the burst's last");

    // Each message has its own inbound row; only the last has a reply row.
    assert_eq!(env.rows(&fps[0]).await, (1, 0));
    assert_eq!(env.rows(&fps[1]).await, (1, 0));
    assert_eq!(env.rows(&fps[2]).await, (1, 1));
    for fp in &fps[..2] {
        let fp = Fingerprint::parse(fp).expect("fp");
        let answered = chat_worker::store::bursts::answered_by(&env.db, &fp).await.expect("read");
        assert_eq!(answered, Some(Some(fps[2].clone())), "worker state names the reply that answered it");
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_arriving_while_its_burst_is_answered_restarts_the_generation_with_it() {
    let mut env = TestEnv::new().await;
    let agent = agent(Duration::from_millis(1500)).await;
    coalescing(&mut env, json!({"coalesce_ms": 100, "coalesce_max_ms": 20000}), &agent).await;
    let mut worker = env.spawn_worker("w0");
    env.ready(&mut worker).await;
    let first = env.message("r-0", "+254711000002", "running shoes?");
    env.publish_json(&first).await;
    let started = Instant::now();
    while agent.bodies().is_empty() {
        assert!(started.elapsed() < PATIENCE, "the agent was never asked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = env.message("r-1", "+254711000002", "in size 42");
    env.publish_json(&second).await;
    let fps = vec![fingerprint_of(&first), fingerprint_of(&second)];
    let replies = replies_answering(&env, &fps).await;
    worker.stop().await.expect("stop");

    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["answers"], json!(fps));
    assert_eq!(replies[0]["text"], "re: running shoes? + in size 42", "the restarted generation saw both");
    assert_eq!(agent.bodies().len(), 2, "the first generation was dropped and one more made");
    assert_eq!(env.rows(&fps[0]).await, (1, 0));
    assert_eq!(env.rows(&fps[1]).await, (1, 1));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_is_answered_at_least_every_coalesce_max_ms_each_message_once_in_order() {
    let mut env = TestEnv::new().await;
    let agent = agent(Duration::from_millis(10)).await;
    coalescing(&mut env, json!({"coalesce_ms": 400, "coalesce_max_ms": 1000}), &agent).await;
    let mut workers = vec![env.spawn_worker("w0"), env.spawn_worker("w1")];
    for worker in &mut workers {
        env.ready(worker).await;
    }
    let messages: Vec<Value> =
        (0..24).map(|i| env.message(&format!("s-{i}"), "+254711000003", &format!("part {i}"))).collect();
    for message in &messages {
        env.publish_json(message).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fps: Vec<String> = messages.iter().map(fingerprint_of).collect();
    let replies = replies_answering(&env, &fps).await;
    for worker in workers {
        worker.stop().await.expect("stop");
    }

    // Every message answered once, by replies in order; no burst longer than the bound allows.
    let answered: Vec<String> = replies
        .iter()
        .flat_map(|r| r["answers"].as_array().cloned().unwrap_or_default())
        .filter_map(|fp| fp.as_str().map(str::to_owned))
        .collect();
    assert_eq!(answered, fps, "each message answered once, in order");
    assert!(replies.len() >= 3, "a 2.4 s stream in bursts of at most 1 s: {} replies", replies.len());
    for reply in &replies {
        let n = reply["answers"].as_array().map_or(0, Vec::len);
        assert!(n <= 14, "a burst of {n} messages 100 ms apart outgrew coalesce_max_ms");
    }
    env.finish().await;
}

/// A fault between storing a coalesced message and finishing it in Redis (a
/// PostgreSQL or Redis restart) sends it round again, stored as coalesced and
/// with no later message of its burst to answer it. It is then the burst's
/// last: its own reply answers the burst, the earlier message included, and
/// takes its row over, instead of finding it "already coalesced" and leaving
/// the whole burst unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_message_sent_round_again_with_no_later_one_answers_its_burst() {
    let mut env = TestEnv::new().await;
    let agent = agent(Duration::from_millis(10)).await;
    coalescing(&mut env, json!({"coalesce_ms": 100, "coalesce_max_ms": 5000}), &agent).await;
    let customer = "+254711000004";
    let earlier = env.message("c-0", customer, "hi");
    let retried = env.message("c-1", customer, "do you have sandals");
    for message in [&earlier, &retried] {
        let inbound = chat_worker::decode::decode(message.to_string().as_bytes()).expect("a valid message");
        let fingerprint = Fingerprint::parse(&fingerprint_of(message)).expect("fp");
        let coalesced = chat_worker::store::bursts::Coalesced {
            inbound,
            fingerprint,
            conversation_id: None,
            stored_at: chrono::Utc::now(),
            fence: 0,
            discarded: None,
        };
        chat_worker::store::bursts::record_coalesced(&env.db, &coalesced).await.expect("stored as coalesced");
    }
    let mut worker = env.spawn_worker("w0");
    env.ready(&mut worker).await;
    env.publish_json(&retried).await;
    let fps = vec![fingerprint_of(&earlier), fingerprint_of(&retried)];
    let replies = replies_answering(&env, &fps).await;
    worker.stop().await.expect("stop");

    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["fingerprint"], fps[1]);
    assert_eq!(replies[0]["answers"], json!(fps), "the earlier message is answered by it, listed once");
    assert_eq!(replies[0]["text"], "re: hi + do you have sandals", "the agent saw the burst once each");
    assert_eq!(env.rows(&fps[0]).await, (1, 0));
    assert_eq!(env.rows(&fps[1]).await, (1, 1), "its own inbound row, taken over, and its reply");
    let answered_by = |fp: &str| {
        let fp = Fingerprint::parse(fp).expect("fp");
        let db = env.db.clone();
        async move { chat_worker::store::bursts::answered_by(&db, &fp).await.expect("read") }
    };
    assert_eq!(answered_by(&fps[0]).await, Some(Some(fps[1].clone())));
    assert_eq!(answered_by(&fps[1]).await, None, "answered by its own reply, no longer a coalesced one");
    env.finish().await;
}

/// A message whose earlier attempt committed its own reply (the fault came
/// between the commit and the ack) comes round again just as a newer message
/// of its conversation arrives: it is not coalesced into the newer burst (that
/// reply would not list it, and its own would never be published), but its
/// committed reply is published again, and the newer message is answered by
/// a reply of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_already_answered_is_not_coalesced_into_a_newer_burst_its_reply_is_published_again() {
    let mut env = TestEnv::new().await;
    let agent = agent(Duration::from_millis(10)).await;
    coalescing(&mut env, json!({"coalesce_ms": 1000, "coalesce_max_ms": 5000}), &agent).await;
    let customer = "+254711000005";
    let answered = env.message("a-0", customer, "hi");
    let newer = env.message("a-1", customer, "any sandals");
    let inbound = chat_worker::decode::decode(answered.to_string().as_bytes()).expect("a valid message");
    let exchange = chat_worker::store::Exchange {
        fingerprint: inbound.fingerprint(),
        inbound,
        conversation_id: None,
        stored_at: chrono::Utc::now(),
        answer: chat_worker::respond::Answer::plain("hello from the earlier attempt", false, 0.9),
        replied_at: chrono::Utc::now(),
        responder: "test".into(),
        latency_ms: 1,
        fence: 0,
    };
    chat_worker::store::record_exchange(&env.db, &exchange).await.expect("committed by an earlier attempt");
    let mut worker = env.spawn_worker("w0");
    env.ready(&mut worker).await;
    env.publish_json(&answered).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.publish_json(&newer).await;
    let fps = vec![fingerprint_of(&answered), fingerprint_of(&newer)];
    let replies = replies_answering(&env, &fps).await;
    worker.stop().await.expect("stop");

    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["fingerprint"], fps[0], "its own reply first");
    assert_eq!(replies[0]["text"], "hello from the earlier attempt", "the committed reply, published again");
    assert_eq!(replies[0]["answers"], json!([fps[0]]));
    assert_eq!(replies[1]["answers"], json!([fps[1]]), "the newer message answered on its own");
    assert_eq!(env.rows(&fps[0]).await, (1, 1));
    assert_eq!(env.rows(&fps[1]).await, (1, 1));
    env.finish().await;
}
