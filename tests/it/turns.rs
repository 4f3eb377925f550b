//! A conversation is answered one message at a time, in order, across the fleet
//! (CONTRACT §3, Conversations): what the agent is shown and what the delivery
//! service receives, with several workers, a retry, and a worker killed mid-turn.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chat_worker::config::ResponderKind;
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};

use crate::harness::{PATIENCE, TestEnv};

/// An agent that answers "re: <text>" after `delay`, recording what it is sent.
async fn echo_agent(delay: Duration) -> http_stub::Stub {
    let route = move |body: &Value| {
        let text = body["inbound"]["text"].as_str().unwrap_or_default();
        let answer = json!({"text": format!("re: {text}"), "confidence": 0.9, "handoff": false}).to_string();
        Answer::Slow(delay, answer)
    };
    http_stub::serve(Answer::Route(Arc::new(route))).await.expect("agent stub")
}

/// Replies read off `chat.outbound` until `n` have come, in arrival order.
async fn replies(env: &TestEnv, n: usize) -> Vec<Value> {
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        got.extend(env.replies().await.into_iter().map(|(_, body)| body));
        assert!(started.elapsed() < PATIENCE * 2, "{} of {n} replies came", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

/// Texts of the agent's requests for `customer`, in the order it received them,
/// each with the inbound texts of the history it was shown.
fn seen_by_agent(agent: &http_stub::Stub, customer: &str) -> Vec<(String, Vec<String>)> {
    agent
        .bodies()
        .into_iter()
        .filter(|b| b["inbound"]["customer_external_id"] == customer)
        .map(|b| {
            let history = b["history"]
                .as_array()
                .map(|h| {
                    h.iter()
                        .filter(|m| m["direction"] == "in")
                        .filter_map(|m| m["text"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (b["inbound"]["text"].as_str().unwrap_or_default().to_owned(), history)
        })
        .collect()
}

fn text(customer: usize, i: usize) -> String {
    format!("c{customer} message {i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_answer_every_conversation_in_order_each_turn_seeing_all_earlier_messages() {
    let mut env = TestEnv::new().await;
    let agent = echo_agent(Duration::from_millis(15)).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    let mut workers: Vec<_> = (0..3).map(|i| env.spawn_worker(&format!("w{i}"))).collect();
    for worker in &mut workers {
        env.ready(worker).await;
    }

    const CUSTOMERS: usize = 12;
    const MESSAGES: usize = 5;
    for i in 0..MESSAGES {
        for c in 0..CUSTOMERS {
            let message = env.message(&format!("c{c}-m{i}"), &format!("+2547{c:08}"), &text(c, i));
            env.publish_json(&message).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replies = replies(&env, CUSTOMERS * MESSAGES).await;
    for worker in workers {
        worker.stop().await.expect("stop");
    }

    for c in 0..CUSTOMERS {
        let customer = format!("+2547{c:08}");
        let expected: Vec<String> = (0..MESSAGES).map(|i| text(c, i)).collect();
        let seen = seen_by_agent(&agent, &customer);
        let asked: Vec<&String> = seen.iter().map(|(t, _)| t).collect();
        assert_eq!(asked, expected.iter().collect::<Vec<_>>(), "the agent saw {customer}'s turns in order");
        for (i, (_, history)) in seen.iter().enumerate() {
            assert_eq!(history, &expected[..i], "turn {i} of {customer} was shown every earlier message");
        }
        let answered: Vec<String> = replies
            .iter()
            .filter(|r| r["customer"]["external_id"] == customer.as_str())
            .map(|r| r["text"].as_str().unwrap_or_default().trim_start_matches("re: ").to_owned())
            .collect();
        assert_eq!(answered, expected, "{customer}'s replies reached chat.outbound in order, once each");
    }
    env.finish().await;
}

/// The first message fails once at the agent and is retried; the second, sent
/// right after, waits for it rather than overtaking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_first_message_is_not_overtaken_by_the_next() {
    let mut env = TestEnv::new().await;
    let failures = Arc::new(AtomicU32::new(0));
    let failed = failures.clone();
    let route = move |body: &Value| {
        let text = body["inbound"]["text"].as_str().unwrap_or_default().to_owned();
        if text == "first" && failed.fetch_add(1, Ordering::SeqCst) == 0 {
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
    let mut workers: Vec<_> = (0..2).map(|i| env.spawn_worker(&format!("w{i}"))).collect();
    for worker in &mut workers {
        env.ready(worker).await;
    }

    env.publish_json(&env.message("m-first", "+254700000009", "first")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    env.publish_json(&env.message("m-second", "+254700000009", "second")).await;
    let replies = replies(&env, 2).await;
    for worker in workers {
        worker.stop().await.expect("stop");
    }
    assert_eq!(failures.load(Ordering::SeqCst), 2, "the first message failed once, then was answered");
    let texts: Vec<&str> = replies.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(texts, ["re: first", "re: second"]);
    let seen = seen_by_agent(&agent, "+254700000009");
    let last = seen.last().expect("the agent was asked");
    assert_eq!(last, &("second".to_owned(), vec!["first".to_owned()]), "the second turn saw the first");
    env.finish().await;
}

/// A worker killed (SIGKILL) while its agent answers a conversation's first
/// message: the conversation is answered by the others, whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_turn_neither_loses_nor_reorders_the_conversation() {
    let mut env = TestEnv::new().await;
    let agent = echo_agent(Duration::from_millis(700)).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    let mut doomed = env
        .worker_command("doomed")
        .env("WORKER__RESPONDER__KIND", "http")
        .env("WORKER__RESPONDER__URL", &agent.url)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let customer = "+254700000077";
    for i in 0..4 {
        env.publish_json(&env.message(&format!("k-{i}"), customer, &format!("part {i}"))).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    while agent.bodies().is_empty() {
        assert!(started.elapsed() < PATIENCE, "the doomed worker never asked the agent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.start_kill().expect("kill -9");
    let _ = doomed.wait().await;
    let survivor = env.spawn_worker("survivor");

    let replies = replies(&env, 4).await;
    survivor.stop().await.expect("stop");
    let texts: Vec<&str> = replies.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(texts, ["re: part 0", "re: part 1", "re: part 2", "re: part 3"]);
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for (t, _) in seen_by_agent(&agent, customer) {
        *per_text.entry(t).or_default() += 1;
    }
    assert_eq!(
        per_text.get("part 1"),
        Some(&1),
        "nothing after the killed turn was asked twice: {per_text:?}"
    );
    for i in 0..4 {
        assert_eq!(
            env.rows(&crate::harness::fingerprint_of(&env.message(
                &format!("k-{i}"),
                customer,
                &format!("part {i}")
            )))
            .await,
            (1, 1)
        );
    }
    env.finish().await;
}
