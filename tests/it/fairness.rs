//! Tenants share each process fairly (issue 16, tenant fairness): a tenant's
//! flood waits in the read-ahead while the other tenants' messages, read past
//! it, take the slots it leaves; no tenant holds more slots than its cap; and
//! a conversation's messages are still answered in order across workers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_worker::config::ResponderKind;
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};
use uuid::Uuid;

use crate::harness::TestEnv;
use crate::turns::{assert_answered_in_order, echo_agent, replies};

/// An agent that answers "re: <text>" after `delay`, noting which tenant
/// each call was for and when it came.
async fn timed_agent(delay: Duration) -> (http_stub::Stub, Arc<Mutex<Vec<(String, Instant)>>>) {
    let calls: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let noted = calls.clone();
    let route = move |body: &Value| {
        let tenant = body["inbound"]["tenant_id"].as_str().unwrap_or_default().to_owned();
        noted.lock().expect("lock").push((tenant, Instant::now()));
        let text = body["inbound"]["text"].as_str().unwrap_or_default();
        Answer::Slow(
            delay,
            json!({"text": format!("re: {text}"), "confidence": 0.9, "handoff": false}).to_string(),
        )
    };
    (http_stub::serve(Answer::Route(Arc::new(route))).await.expect("stub"), calls)
}

/// Tenant A publishes 120 messages at once, then tenant B one: B's is
/// answered among the first, not after A's flood, though A may take every
/// slot (no cap): the slots go round the tenants with work waiting. One FIFO
/// line of deliveries would call the agent for B's last (call 121 of 121).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_flood_does_not_hold_another_tenants_message_behind_it() {
    let mut env = TestEnv::new().await;
    let (agent, calls) = timed_agent(Duration::from_millis(100)).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    env.config.worker.concurrency = 16;
    env.config.worker.tenant_concurrency = 0;
    let other = Uuid::new_v4();
    testkit::seed::tenant(&env.pool, other, "Other Shop").await.expect("seed tenant");

    const FLOOD: usize = 120;
    // Published before the worker starts: the flood is all in the queue, ahead of B's.
    for i in 0..FLOOD {
        env.publish_json(&env.message(&format!("a-{i}"), &format!("+2547100{i:05}"), "hello")).await;
    }
    let mut b = env.message("b-0", "+254799999999", "hello from b");
    b["tenant_id"] = json!(other);
    env.publish_json(&b).await;
    let mut worker = env.spawn_worker("w-fair");
    env.ready(&mut worker).await;
    let answered = replies(&env, FLOOD + 1).await;
    worker.stop().await.expect("stop");

    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), FLOOD + 1, "one call per message");
    let b_call = calls.iter().position(|(tenant, _)| *tenant == other.to_string()).expect("B's call");
    println!("B's message was call {} of {}", b_call + 1, calls.len());
    // The first 16 calls go out before B's message is read (and its
    // tenant's cap looked up); B's is among the next waves, not the last.
    assert!(
        b_call < 40,
        "B's message was call {} of {}: it waited behind A's flood",
        b_call + 1,
        calls.len()
    );
    assert_eq!(answered.len(), FLOOD + 1, "every message answered once");
    env.finish().await;
}

/// A tenant whose settings say `max_concurrency: 2` never has more than 2
/// of its messages at the agent at once, though the process could take 16:
/// every call lasts 300 ms at the agent, so calls that began less than 290 ms
/// apart were out together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_holds_more_slots_than_its_cap() {
    let mut env = TestEnv::new().await;
    let (agent, calls) = timed_agent(Duration::from_millis(300)).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    env.config.worker.concurrency = 16;
    env.set_tenant_settings(json!({"max_concurrency": 2})).await;
    const MESSAGES: usize = 12;
    for i in 0..MESSAGES {
        env.publish_json(&env.message(&format!("cap-{i}"), &format!("+2547200{i:05}"), "hello")).await;
    }
    let mut worker = env.spawn_worker("w-cap");
    env.ready(&mut worker).await;
    replies(&env, MESSAGES).await;
    worker.stop().await.expect("stop");

    let started: Vec<Instant> = calls.lock().expect("lock").iter().map(|(_, at)| *at).collect();
    assert_eq!(started.len(), MESSAGES);
    let most_at_once = started
        .iter()
        .map(|t| {
            started.iter().filter(|s| *s <= t && t.duration_since(**s) < Duration::from_millis(290)).count()
        })
        .max()
        .unwrap_or(0);
    println!("most calls out at once: {most_at_once}");
    assert!(most_at_once <= 2, "{most_at_once} calls of the tenant were out at once, over its cap of 2");
    assert!(most_at_once == 2, "the cap is used: {most_at_once}");
    env.finish().await;
}

/// Two workers, one giving the tenant 1 slot and the other 6, read 15
/// conversations of 5 messages (an odd number, so that
/// the broker, going round its two consumers, gives each conversation's
/// messages to both), a round of each every 50 ms. Most wait in the
/// read-ahead, for a second and more, and the second worker
/// gets through its share far sooner than the first. Each conversation is
/// still answered in order, each turn shown every earlier message: a
/// message takes its place in line as it is read, not when a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversations_keep_their_order_while_their_tenant_waits_for_slots() {
    let mut env = TestEnv::new().await;
    let agent = echo_agent(Duration::from_millis(20)).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    env.config.worker.concurrency = 8;
    let mut workers = Vec::new();
    for (i, cap) in [1, 6].into_iter().enumerate() {
        env.config.worker.tenant_concurrency = cap;
        workers.push(env.spawn_worker(&format!("w{i}")));
    }
    for worker in &mut workers {
        env.ready(worker).await;
    }

    const CUSTOMERS: usize = 15;
    const MESSAGES: usize = 5;
    let text = |c: usize, i: usize| format!("c{c} message {i}");
    for i in 0..MESSAGES {
        for c in 0..CUSTOMERS {
            let message = env.message(&format!("c{c}-m{i}"), &format!("+2547{c:08}"), &text(c, i));
            env.publish_json(&message).await;
        }
        // A conversation's next message comes a moment after: two workers
        // reading one conversation's messages within the same few
        // milliseconds take them in the order they read them (README, Turns).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replies = replies(&env, CUSTOMERS * MESSAGES).await;
    for worker in workers {
        worker.stop().await.expect("stop");
    }

    for c in 0..CUSTOMERS {
        let expected: Vec<String> = (0..MESSAGES).map(|i| text(c, i)).collect();
        assert_answered_in_order(&agent, &replies, &format!("+2547{c:08}"), &expected);
    }
    env.finish().await;
}
