//! A conversation is answered one message at a time, in order, across the fleet
//! (CONTRACT §3, Conversations): what the agent is shown and what the delivery
//! service receives, with several workers, a retry, a worker killed mid-turn,
//! and one paused mid-turn (SIGSTOP) past its lease.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chat_worker::config::ResponderKind;
use chat_worker::keys::Keys;
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};

use crate::harness::{PATIENCE, TestEnv, WorkerProcess, eventually, fingerprint_of, log_message, shard_of};

/// An agent that answers "re: <text>" after `delay`, recording what it is sent.
pub(crate) async fn echo_agent(delay: Duration) -> http_stub::Stub {
    let route = move |body: &Value| {
        let text = body["inbound"]["text"].as_str().unwrap_or_default();
        let answer = json!({"text": format!("re: {text}"), "confidence": 0.9, "handoff": false}).to_string();
        Answer::Slow(delay, answer)
    };
    http_stub::serve(Answer::Route(Arc::new(route))).await.expect("agent stub")
}

/// Replies read off `chat.outbound` until `n` have come, in arrival order.
pub(crate) async fn replies(env: &TestEnv, n: usize) -> Vec<Value> {
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
pub(crate) fn seen_by_agent(agent: &http_stub::Stub, customer: &str) -> Vec<(String, Vec<String>)> {
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
        let expected: Vec<String> = (0..MESSAGES).map(|i| text(c, i)).collect();
        assert_answered_in_order(&agent, &replies, &format!("+2547{c:08}"), &expected);
    }
    env.finish().await;
}

/// `customer`'s messages (texts `expected`, in publish order) reached the
/// agent in order, each turn shown every earlier one, and their replies
/// reached chat.outbound in order, once each.
pub(crate) fn assert_answered_in_order(
    agent: &http_stub::Stub,
    replies: &[Value],
    customer: &str,
    expected: &[String],
) {
    let seen = seen_by_agent(agent, customer);
    let asked: Vec<&String> = seen.iter().map(|(t, _)| t).collect();
    assert_eq!(asked, expected.iter().collect::<Vec<_>>(), "the agent saw {customer}'s turns in order");
    for (i, (_, history)) in seen.iter().enumerate() {
        assert_eq!(history, &expected[..i], "turn {i} of {customer} was shown every earlier message");
    }
    let answered: Vec<String> = replies
        .iter()
        .filter(|r| r["customer"]["external_id"] == customer)
        .map(|r| r["text"].as_str().unwrap_or_default().trim_start_matches("re: ").to_owned())
        .collect();
    assert_eq!(answered, expected, "{customer}'s replies reached chat.outbound in order, once each");
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

/// The paused worker's agent: "paused: <text>", the first answer after 3 s —
/// slower than the pause takes to begin, quicker than the paused worker's agent
/// timeout, so the pause and nothing else keeps it from answering — the next
/// ones after 300 ms.
async fn agent_for_the_paused_worker() -> http_stub::Stub {
    let asked = Arc::new(AtomicU32::new(0));
    let route = move |body: &Value| {
        let text = body["inbound"]["text"].as_str().unwrap_or_default();
        let answer =
            json!({"text": format!("paused: {text}"), "confidence": 0.9, "handoff": false}).to_string();
        let first = asked.fetch_add(1, Ordering::SeqCst) == 0;
        Answer::Slow(Duration::from_millis(if first { 3_000 } else { 300 }), answer)
    };
    http_stub::serve(Answer::Route(Arc::new(route))).await.expect("agent stub")
}

/// The lock TTL of [`short_lease_worker`]: its lease lapses this long after
/// its last renewal (renewals come every third of it).
const SHORT_LEASE: Duration = Duration::from_secs(6);

/// The `worker` binary answering through `agent`, with a lease short enough to
/// lapse within a test — lock 6 s, deadline 5 s, agent timeout 4 s, so the
/// start-up check passes — and the AMQP heartbeat `heartbeat_secs`.
fn short_lease_worker(
    env: &TestEnv,
    name: &str,
    agent: &http_stub::Stub,
    heartbeat_secs: u16,
) -> WorkerProcess {
    let mut command = env.worker_command(name);
    command
        .env("WORKER__RESPONDER__KIND", "http")
        .env("WORKER__RESPONDER__URL", &agent.url)
        .env("WORKER__RESPONDER__TIMEOUT_MS", "4000")
        .env("WORKER__WORKER__MESSAGE_DEADLINE_SECS", "5")
        .env("WORKER__REDIS__LOCK_TTL_SECS", SHORT_LEASE.as_secs().to_string())
        .env("WORKER__AMQP__HEARTBEAT_SECS", heartbeat_secs.to_string())
        .env("WORKER_LOG", "info");
    WorkerProcess::spawn(name, command)
}

/// Publishes `customer`'s conversation, "part 0" to "part 3", 20 ms apart.
async fn publish_conversation(env: &TestEnv, customer: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    for i in 0..4 {
        let message = env.message(&format!("{customer}-{i}"), customer, &format!("part {i}"));
        env.publish_json(&message).await;
        messages.push(message);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    messages
}

/// Whether a worker's JSON log line is the outcome `failed` of the message `fingerprint`.
fn failed_line(line: &Value, fingerprint: &str) -> bool {
    log_message(line) == "failed" && line["fields"]["fingerprint"] == fingerprint
}

/// Each request `agents` received for `customer` must show the turn every
/// earlier message of the conversation, and none later: its history's
/// inbound texts are exactly "part 0" .. "part i-1".
fn assert_every_turn_saw_all_earlier_messages(agents: &[&http_stub::Stub], customer: &str) {
    for agent in agents {
        for (asked, history) in seen_by_agent(agent, customer) {
            let i: usize = asked.trim_start_matches("part ").parse().expect("asked about a part");
            let earlier: Vec<String> = (0..i).map(|j| format!("part {j}")).collect();
            assert_eq!(
                history, earlier,
                "the turn of {asked} was shown every earlier message, and only those"
            );
        }
    }
}

/// What is stored in `messages` for a conversation's messages: one `in` and one
/// `out` row each, and no reply text starting with `prefix`.
async fn assert_stored_once_each_and_none_from(env: &TestEnv, messages: &[Value], prefix: &str) {
    for message in messages {
        assert_eq!(env.rows(&fingerprint_of(message)).await, (1, 1), "one in and one out row: {message}");
    }
    let from: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'out' AND text LIKE $1")
            .bind(format!("{prefix}%"))
            .fetch_one(&env.pool)
            .await
            .expect("count replies");
    assert_eq!(from, 0, "no reply row starting with {prefix:?} was committed");
}

/// A worker paused (SIGSTOP) while its agent answers a conversation's first
/// message, and kept paused past its lease: the broker drops its connection for
/// missed heartbeats and gives its deliveries — the turn and the three waiting
/// behind it — to another worker, which answers the whole conversation, in
/// order, each message once. Woken (SIGCONT), the paused one stands down: it
/// publishes nothing and commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_mid_turn_past_its_lease_neither_loses_nor_reorders_the_conversation() {
    let mut env = TestEnv::new().await;
    let agent = echo_agent(Duration::from_millis(300)).await;
    let paused_agent = agent_for_the_paused_worker().await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    let mut paused = short_lease_worker(&env, "paused", &paused_agent, 2);
    let customer = "+254700000078";
    let messages = publish_conversation(&env, customer).await;
    eventually("the paused worker asks its agent about part 0", || async {
        !paused_agent.bodies().is_empty()
    })
    .await;
    paused.signal("STOP");
    let stopped = Instant::now();

    let survivor = env.spawn_worker("survivor");
    eventually("the paused worker's deliveries reach the survivor", || async { !agent.bodies().is_empty() })
        .await;
    eprintln!("measured: the survivor asked its agent {:?} after SIGSTOP", stopped.elapsed());
    let mut replies = replies(&env, 4).await;
    eprintln!("measured: the survivor answered all 4 {:?} after SIGSTOP", stopped.elapsed());
    // However fast that went, the pause outlasts the paused worker's lease.
    tokio::time::sleep_until((stopped + SHORT_LEASE).into()).await;
    paused.signal("CONT");
    // Its session ends (the broker closed its connection) once its work in
    // flight has settled, and only then does it reconnect.
    paused.logged("that it reconnected", |line| log_message(line) == "reconnected to rabbitmq").await;
    let fp0 = fingerprint_of(&messages[0]);
    let stood_down = paused.logged("that part 0 failed", |line| failed_line(line, &fp0)).await;
    eprintln!("the paused worker stood down: {}", stood_down["fields"]);
    paused.stop().await;
    survivor.stop().await.expect("stop");
    replies.extend(env.replies().await.into_iter().map(|(_, body)| body));

    let texts: Vec<&str> = replies.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(
        texts,
        ["re: part 0", "re: part 1", "re: part 2", "re: part 3"],
        "in order, once each, by the survivor"
    );
    let asked: Vec<String> = seen_by_agent(&agent, customer).into_iter().map(|(text, _)| text).collect();
    assert_eq!(
        asked,
        ["part 0", "part 1", "part 2", "part 3"],
        "the survivor asked about each once, in order"
    );
    assert_every_turn_saw_all_earlier_messages(&[&agent], customer);
    assert_eq!(paused_agent.bodies().len(), 1, "the paused worker asked about nothing after it woke");
    assert_stored_once_each_and_none_from(&env, &messages, "paused: ").await;
    let fences: i64 = sqlx::query_scalar("SELECT count(*) FROM fences WHERE fingerprint = $1")
        .bind(&fp0)
        .fetch_one(&env.pool)
        .await
        .expect("fences");
    assert_eq!(fences, 1, "the survivor took part 0 over with a fencing token");
    env.finish().await;
}

/// A worker paused mid-turn past its lease, but woken before the broker drops
/// its connection (a heartbeat longer than the pause): it still holds the
/// conversation's deliveries. Its lease renewal fails and it stands down; the
/// message is retried, keeping its place, and the conversation is answered
/// whole, in order, each message once, by whichever worker takes each turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_woken_after_its_lease_lapsed_but_before_its_connection_dropped_stands_down() {
    let mut env = TestEnv::new().await;
    let agent = echo_agent(Duration::from_millis(300)).await;
    let paused_agent = agent_for_the_paused_worker().await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    let mut paused = short_lease_worker(&env, "paused", &paused_agent, 60);
    let customer = "+254700000079";
    let messages = publish_conversation(&env, customer).await;
    eventually("the paused worker asks its agent about part 0", || async {
        !paused_agent.bodies().is_empty()
    })
    .await;
    paused.signal("STOP");
    let stopped = Instant::now();

    // The lease lapses: its lock expires (no one else is running to take it).
    let (shard, fp) = shard_of(&messages[0]);
    let lock = Keys::new(&env.config.redis.key_prefix).lock(shard, &fp);
    eventually("the paused worker's lock on part 0 expires", || async {
        let held: bool =
            redis::cmd("EXISTS").arg(&lock).query_async(&mut env.redis.clone()).await.unwrap_or(true);
        !held
    })
    .await;
    tokio::time::sleep_until((stopped + SHORT_LEASE).into()).await;
    let mut survivor = env.spawn_worker("survivor");
    env.ready(&mut survivor).await;
    paused.signal("CONT");
    let fp0 = fp.to_string();
    let stood_down = paused.logged("that part 0 failed", |line| failed_line(line, &fp0)).await;
    eprintln!("the paused worker stood down: {}", stood_down["fields"]);
    assert_eq!(stood_down["fields"]["attempt"], 1, "on the attempt it was paused in");
    let mut replies = replies(&env, 4).await;
    let log = paused.stop().await;
    survivor.stop().await.expect("stop");
    replies.extend(env.replies().await.into_iter().map(|(_, body)| body));

    let lost = log.iter().find(|line| log_message(line).contains("connection lost"));
    assert!(lost.is_none(), "the paused worker was woken before its connection dropped: {lost:?}");
    let answered: Vec<&str> = replies
        .iter()
        .filter_map(|r| r["text"].as_str())
        .map(|t| t.trim_start_matches("re: ").trim_start_matches("paused: "))
        .collect();
    assert_eq!(answered, ["part 0", "part 1", "part 2", "part 3"], "in order, once each: {replies:?}");
    assert_every_turn_saw_all_earlier_messages(&[&agent, &paused_agent], customer);
    for message in &messages {
        assert_eq!(env.rows(&fingerprint_of(message)).await, (1, 1), "one in and one out row: {message}");
    }
    env.finish().await;
}

/// `x-worker-intake` (the place a retry of ours keeps in line) on a gateway's
/// message is the gateway's data: a message claiming to be older than the one
/// waiting before it does not jump the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_claiming_an_earlier_place_in_line_is_not_believed() {
    let mut env = TestEnv::new().await;
    let agent = echo_agent(Duration::from_millis(300)).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    let mut worker = env.spawn_worker("w-forged-place");
    env.ready(&mut worker).await;

    let customer = "+254700000033";
    for (i, text) in ["zero", "one"].iter().enumerate() {
        env.publish_json(&env.message(&format!("m-forged-{i}"), customer, text)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut forged = lapin::types::FieldTable::default();
    // Ten seconds ago: before the two above, and recent enough for a retry of ours.
    let ten_seconds_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64 - 10_000_000)
        .expect("clock");
    forged.insert("x-worker-intake".into(), lapin::types::AMQPValue::LongLongInt(ten_seconds_ago));
    let last = env.message("m-forged-2", customer, "two");
    env.publish_with_headers(last.to_string().as_bytes(), forged).await;

    let replies = replies(&env, 3).await;
    worker.stop().await.expect("stop");
    let texts: Vec<&str> = replies.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(texts, ["re: zero", "re: one", "re: two"]);
    env.finish().await;
}
