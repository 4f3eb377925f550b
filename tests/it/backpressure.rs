//! A responder that asks to slow down is waited for, fleet-wide in time and
//! without spending attempts (CONTRACT §3; issue 16, provider back-pressure).

use std::sync::atomic::{AtomicU32, Ordering};
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
/// (with 2 attempts, two refusals each would have been), no attempt is spent,
/// the agent is called once per pause (after the first calls, all out at once,
/// that met the limit), and every message is answered once after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_waited_out_without_spending_attempts_and_with_one_call_per_pause() {
    let mut env = TestEnv::new().await;
    let (agent, refused) = rate_limited_agent(Duration::from_secs(4), 1).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
    env.config.worker.max_attempts = 2;
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
    // Every message was parked more than once (with 2 attempts, spent, that is a dead letter).
    let parked = tally.deferred.load(Ordering::Relaxed) as usize;
    assert!(parked >= 2 * MESSAGES, "{parked} parkings of {MESSAGES} messages over 4 s of 1 s pauses");
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
    let by_worker: Vec<u64> = workers.iter().map(|w| w.tally.deferred.load(Ordering::Relaxed)).collect();
    for worker in workers {
        worker.stop().await.expect("stop");
    }
    assert!(by_worker.iter().all(|parked| *parked > 0), "each worker had messages to park: {by_worker:?}");
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "no worker called during the pause (parked: {by_worker:?})"
    );
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}
