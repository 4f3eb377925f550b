//! A responder that asks to slow down is waited for, fleet-wide in time and
//! without spending attempts (CONTRACT §3; issue 16, provider back-pressure).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_worker::config::ResponderKind;
use chat_worker::dedup::pauses;
use chat_worker::keys::Keys;
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};

use crate::harness::{TestEnv, eventually};

/// The agent answers 429 with `Retry-After: <retry_after>` for its first
/// `for_how_long` after the first call, then "re: <text>"; it counts the calls
/// of the pause.
async fn rate_limited_agent(for_how_long: Duration, retry_after: u64) -> (http_stub::Stub, Arc<AtomicU32>) {
    let first_call: Arc<Mutex<Option<Instant>>> = Arc::default();
    let refused = Arc::new(AtomicU32::new(0));
    let counted = refused.clone();
    let route = move |body: &Value| {
        let started = *first_call.lock().expect("lock").get_or_insert_with(Instant::now);
        if started.elapsed() < for_how_long {
            counted.fetch_add(1, Ordering::SeqCst);
            return Answer::Headed(
                429,
                vec![("Retry-After", retry_after.to_string())],
                r#"{"error":"rate limited"}"#.into(),
            );
        }
        let text = body["inbound"]["text"].as_str().unwrap_or_default();
        Answer::Json(
            200,
            json!({"text": format!("re: {text}"), "confidence": 0.9, "handoff": false}).to_string(),
        )
    };
    (http_stub::serve(Answer::Route(Arc::new(route))).await.expect("stub"), refused)
}

/// A rate limit of 4 s answered with `Retry-After: 1`: nothing is dead-lettered
/// (with 1 attempt, one refusal would have been), no attempt is spent,
/// the agent is called once per pause (after the first calls, all out at once,
/// that met the limit), and every message is answered once after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_waited_out_without_spending_attempts_and_with_one_call_per_pause() {
    let mut env = TestEnv::new().await;
    let (agent, refused) = rate_limited_agent(Duration::from_secs(4), 1).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    // One attempt: a single one spent is a dead letter.
    env.config.worker.max_attempts = 1;
    let mut worker = env.spawn_worker("w-429");
    env.ready(&mut worker).await;

    const MESSAGES: usize = 10;
    for i in 0..MESSAGES {
        env.publish_json(&env.message(&format!("m-429-{i}"), &format!("+2547000001{i:02}"), "hello")).await;
    }
    eventually("every message answered", || async {
        worker.tally.processed.load(Ordering::Relaxed) == MESSAGES as u64
    })
    .await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("stop");

    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "no attempt spent");
    assert!(env.dead_letters().await.is_empty(), "nothing dead-lettered");
    assert_eq!(env.replies().await.len(), MESSAGES);
    // The first wave (every message at once) plus about one probe per second of the limit.
    let refusals = refused.load(Ordering::SeqCst) as usize;
    println!("calls that met the limit: {refusals} (for {MESSAGES} messages)");
    assert!(refusals <= MESSAGES + 6, "{refusals} calls met the limit: more than one per pause");
    // Every message met the pause at least once, and the worker took no new
    // deliveries while it lasted: it parked the ones it held.
    let parked = tally.deferred.load(Ordering::Relaxed) as usize;
    assert!(parked >= MESSAGES, "{parked} parkings of {MESSAGES} messages over 4 s of 1 s pauses");
    env.finish().await;
}

/// The pause is the fleet's: a second worker, which never met the limit,
/// does not call the agent while the first one's pause lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_one_worker_hears_of_holds_for_the_whole_fleet() {
    let mut env = TestEnv::new().await;
    let (agent, refused) = rate_limited_agent(Duration::from_secs(2), 2).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    let mut workers = vec![env.spawn_worker("w-pause-a"), env.spawn_worker("w-pause-b")];
    for worker in &mut workers {
        env.ready(worker).await;
    }

    env.publish_json(&env.message("m-pause-0", "+254700000200", "hello")).await;
    eventually("the agent met", || async { refused.load(Ordering::SeqCst) == 1 }).await;
    let key = Keys::new(&env.config.redis.key_prefix).pause(&pauses::endpoint("Http", &agent.url));
    eventually("the pause announced", || async {
        redis::cmd("EXISTS").arg(&key).query_async::<bool>(&mut env.redis.clone()).await.unwrap_or(false)
    })
    .await;
    // Each worker says it is paused (`/metrics`), the one that met the limit and the other.
    chat_worker::tls::install_crypto();
    for worker in &workers {
        let addr = *worker.tally.admin_addr.get().expect("admin address");
        eventually("chat_worker_responder_paused 1", || async {
            let metrics = match reqwest::get(format!("http://{addr}/metrics")).await {
                Ok(answer) => answer.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            metrics.lines().any(|l| l == "chat_worker_responder_paused 1")
        })
        .await;
    }
    // Published during the pause, to both workers.
    const LATER: usize = 9;
    for i in 1..=LATER {
        env.publish_json(&env.message(&format!("m-pause-{i}"), &format!("+2547000002{i:02}"), "hello")).await;
    }
    let answered = || workers.iter().map(|w| w.tally.processed.load(Ordering::Relaxed)).sum::<u64>();
    eventually("every message answered", || async { answered() == LATER as u64 + 1 }).await;
    let by_worker: Vec<u64> = workers.iter().map(|w| w.tally.processed.load(Ordering::Relaxed)).collect();
    for worker in workers {
        worker.stop().await.expect("stop");
    }
    assert!(by_worker.iter().all(|answered| *answered > 0), "each worker had messages: {by_worker:?}");
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "no worker called during the pause (answered: {by_worker:?})"
    );
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}

/// The agent answers 502 while `down` is set (counting those calls), else "re: <text>".
async fn failing_agent() -> (http_stub::Stub, Arc<AtomicBool>, Arc<AtomicU32>) {
    let down = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU32::new(0));
    let (is_down, counted) = (down.clone(), failed.clone());
    let route = move |body: &Value| {
        if is_down.load(Ordering::SeqCst) {
            counted.fetch_add(1, Ordering::SeqCst);
            return Answer::Json(502, r#"{"error":"bad gateway"}"#.into());
        }
        let text = body["inbound"]["text"].as_str().unwrap_or_default();
        Answer::Json(
            200,
            json!({"text": format!("re: {text}"), "confidence": 0.9, "handoff": false}).to_string(),
        )
    };
    (http_stub::serve(Answer::Route(Arc::new(route))).await.expect("stub"), down, failed)
}

async fn get(url: String) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(answer) => (answer.status().as_u16(), answer.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// A responder down for everyone: the circuit opens after
/// `breaker_failures` failures in a row, the worker stops consuming (new
/// messages wait in the queue, `/readyz` says why), nothing is dead-lettered
/// (with 2 attempts, a message that met two failures would be), and every
/// message is answered once when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_down_for_everyone_stops_consumption_and_everything_is_answered_once_it_is_back() {
    let mut env = TestEnv::new().await;
    let (agent, down, failed_calls) = failing_agent().await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    env.config.responder.breaker_failures = 3;
    env.config.responder.breaker_cooldown_secs = 1;
    env.config.worker.max_attempts = 2;
    let mut worker = env.spawn_worker("w-down");
    env.ready(&mut worker).await;
    let admin = *worker.tally.admin_addr.get().expect("admin address");
    chat_worker::tls::install_crypto();

    down.store(true, Ordering::SeqCst);
    const FIRST: usize = 10;
    for i in 0..FIRST {
        env.publish_json(&env.message(&format!("m-down-{i}"), &format!("+2547000003{i:02}"), "hello")).await;
    }
    eventually("/readyz says the responder is down", || async {
        let (status, text) = get(format!("http://{admin}/readyz")).await;
        status == 503 && text.contains("responder=down") && text.contains("502")
    })
    .await;
    // Published while it is down: they wait in the queue, not in the worker.
    const LATER: usize = 20;
    for i in 0..LATER {
        env.publish_json(&env.message(&format!("m-down-later-{i}"), &format!("+2547000004{i:02}"), "hi"))
            .await;
    }
    let inbound = env.config.amqp.inbound_queue.clone();
    eventually("the queue's depth grows", || async { env.queue_depth(&inbound).await as usize >= LATER })
        .await;
    let (_, metrics) = get(format!("http://{admin}/metrics")).await;
    assert!(metrics.lines().any(|l| l == "chat_worker_responder_down 1"), "{metrics}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let calls_while_down = failed_calls.load(Ordering::SeqCst);
    down.store(false, Ordering::SeqCst);

    let total = (FIRST + LATER) as u64;
    eventually("every message answered", || async {
        worker.tally.processed.load(Ordering::Relaxed) == total
    })
    .await;
    eventually("/readyz ready again", || async {
        let (status, text) = get(format!("http://{admin}/readyz")).await;
        status == 200 && text.contains("responder=ok")
    })
    .await;
    let (_, metrics) = get(format!("http://{admin}/metrics")).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("stop");

    println!(
        "calls while down: {calls_while_down}; failed attempts: {}",
        tally.failed.load(Ordering::Relaxed)
    );
    assert!(env.dead_letters().await.is_empty(), "nothing dead-lettered");
    assert!(
        tally.failed.load(Ordering::Relaxed) < 3,
        "only the failures before the circuit opened spent attempts"
    );
    // The first wave (the 10 messages, all out at once) and about one probe per cooldown.
    assert!(calls_while_down as usize <= FIRST + 6, "{calls_while_down} calls while it was down");
    assert!(
        metrics.lines().any(|l| l.starts_with("chat_worker_responder_circuit_opened_total ")),
        "{metrics}"
    );
    let replies = env.replies().await;
    let mut answered: Vec<String> =
        replies.iter().map(|(_, r)| r["in_reply_to"].as_str().unwrap_or_default().to_owned()).collect();
    answered.sort();
    answered.dedup();
    assert_eq!((replies.len(), answered.len()), (FIRST + LATER, FIRST + LATER), "one reply each");
    env.finish().await;
}

/// `responder.fallback = "builtin"`: what the responder cannot answer (here
/// a 502 every time, which opens its circuit too), the builtin answers at
/// once, no attempt spent, and the worker stays ready and consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fallback_the_builtin_answers_what_the_responder_cannot() {
    let mut env = TestEnv::new().await;
    let (agent, down, failed_calls) = failing_agent().await;
    down.store(true, Ordering::SeqCst);
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    env.config.responder.breaker_failures = 2;
    env.config.responder.fallback = chat_worker::config::FallbackKind::Builtin;
    env.config.worker.max_attempts = 1;
    let mut worker = env.spawn_worker("w-fallback");
    env.ready(&mut worker).await;
    let admin = *worker.tally.admin_addr.get().expect("admin address");
    chat_worker::tls::install_crypto();
    const MESSAGES: usize = 6;
    for i in 0..MESSAGES {
        env.publish_json(&env.message(&format!("m-fallback-{i}"), &format!("+2547000008{i:02}"), "hello"))
            .await;
    }
    eventually("every message answered", || async {
        worker.tally.processed.load(Ordering::Relaxed) == MESSAGES as u64
    })
    .await;
    let (status, text) = get(format!("http://{admin}/readyz")).await;
    let (_, metrics) = get(format!("http://{admin}/metrics")).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("stop");

    assert_eq!(status, 200, "ready: the fallback answers ({text})");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
    assert!(env.dead_letters().await.is_empty());
    assert!(failed_calls.load(Ordering::SeqCst) >= 2, "the responder was tried");
    let by: Vec<String> = sqlx::query_scalar("SELECT responder FROM agent_interactions")
        .fetch_all(&env.pool)
        .await
        .expect("interactions");
    assert_eq!(by.len(), MESSAGES);
    assert!(by.iter().all(|r| r == "builtin (fallback)"), "{by:?}");
    assert!(
        metrics.lines().any(|l| l == format!("chat_worker_responder_fallbacks_total {MESSAGES}")),
        "{metrics}"
    );
    env.finish().await;
}
