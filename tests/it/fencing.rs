//! Stale lock holders: fencing, the sweeper, and a worker paused past its lease.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_worker::dedup::Dedup;
use chat_worker::model::Fingerprint;
use chat_worker::respond::Answer;
use chat_worker::store::{self, Exchange, StoreError};
use testkit::http_stub::{self, Answer as StubAnswer};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{PATIENCE, TestEnv, eventually, fingerprint_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_carrying_an_older_fencing_token_is_refused() {
    let env = TestEnv::new().await;
    let message =
        chat_worker::decode::decode(env.message("m-fence", "c", "hi").to_string().as_bytes()).expect("valid");
    let fp = message.fingerprint();
    let answer = Answer::plain("hello", false, 0.9);
    let exchange = |fence: i64| Exchange {
        inbound: message.clone(),
        fingerprint: fp.clone(),
        conversation_id: None,
        stored_at: chrono::Utc::now(),
        answer: answer.clone(),
        replied_at: chrono::Utc::now(),
        responder: "test".into(),
        latency_ms: 1,
        fence,
    };
    assert!(store::register_fence(&env.db, &fp, 200).await.expect("register"));
    assert!(
        !store::register_fence(&env.db, &fp, 150).await.expect("register"),
        "an older takeover stands down"
    );
    let stale = store::record_exchange(&env.db, &exchange(100)).await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))), "{stale:?}");
    assert_eq!(env.rows(fp.as_str()).await, (0, 0), "nothing committed, not even the conversation");
    let conversations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversations").fetch_one(&env.pool).await.expect("count");
    assert_eq!(conversations, 0);
    assert!(store::record_exchange(&env.db, &exchange(300)).await.is_ok());
    assert_eq!(env.rows(fp.as_str()).await, (1, 1));
    env.finish().await;
}

/// A worker killed while holding a lock leaves it behind; a running worker's
/// sweeper releases it without an operator, before any redelivery arrives, and
/// the message is then processed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_lock_of_a_killed_worker_is_swept_and_the_message_processed_once() {
    let env = TestEnv::new().await;
    let message = env.message("m-stuck", "c", "hello");
    let fp = Fingerprint::parse(&fingerprint_of(&message)).expect("fp");
    env.publish_json(&message).await;
    let mut doomed =
        env.worker_command("doomed").env("WORKER_TEST_CRASH_AT", "after_lock").spawn().expect("spawn");
    let _ = tokio::time::timeout(PATIENCE, doomed.wait()).await.expect("crashes");

    let redis = env.redis.clone();
    let dedup = Dedup::new(redis, &env.config.redis, "test-observer");
    let state = dedup.state(&fp).await.expect("state").expect("left behind");
    assert_eq!((state.status.as_str(), state.locked), ("processing", true));

    // A worker busy with another queue: only its sweeper can release the lock.
    let mut sweeping = env.spawn_worker_on("sweeper", "other");
    env.ready(&mut sweeping).await;
    eventually("the sweeper releases the lock", || async {
        dedup.state(&fp).await.ok().flatten().is_some_and(|s| s.status == "released" && !s.locked)
    })
    .await;
    assert!(dedup.inflight(i64::MAX, 10).await.expect("inflight").is_empty());
    sweeping.stop().await.expect("stop");

    let worker = env.spawn_worker("survivor");
    eventually("processed once", || async { worker.tally.processed.load(Ordering::Relaxed) == 1 }).await;
    worker.stop().await.expect("stop");
    assert_eq!(env.rows(fp.as_str()).await, (1, 1));
    assert_eq!(env.replies().await.len(), 1);
    env.finish().await;
}

/// A worker paused (SIGSTOP) in the middle of answering loses its lease; a copy
/// of the message is taken over and answered by another worker; when the paused
/// worker wakes it may neither commit nor publish: one reply, published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_can_never_commit_or_publish() {
    let env = TestEnv::new().await;
    let stub = http_stub::serve(StubAnswer::Slow(
        Duration::from_secs(3),
        r#"{"text":"from the paused worker","confidence":0.9,"handoff":false}"#.into(),
    ))
    .await
    .expect("stub");
    let message = env.message("m-paused", "c", "hello");
    let fp = fingerprint_of(&message);

    // The paused worker consumes its own queue (suffix "p") and asks the slow agent.
    let suffixed = |name: &str| format!("{name}.p");
    env.track_suffix("p");
    let mut paused = env
        .worker_binary()
        .args(["run", "--worker-id", "paused"])
        .env("WORKER__AMQP__INBOUND_EXCHANGE", suffixed(&env.config.amqp.inbound_exchange))
        .env("WORKER__AMQP__INBOUND_QUEUE", suffixed(&env.config.amqp.inbound_queue))
        .env("WORKER__AMQP__RETRY_QUEUE_PREFIX", suffixed(&env.config.amqp.retry_queue_prefix))
        .env("WORKER__RESPONDER__KIND", "http")
        .env("WORKER__RESPONDER__URL", &stub.url)
        .env("WORKER__RESPONDER__TIMEOUT_MS", "8000")
        .env("WORKER__WORKER__MESSAGE_DEADLINE_SECS", "9")
        .env("WORKER__REDIS__LOCK_TTL_SECS", "10")
        .env("WORKER_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut log = BufReader::new(paused.stderr.take().expect("stderr")).lines();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = log.next_line().await {
            eprintln!("paused worker: {line}");
            let _ = lines_tx.send(line);
        }
    });
    // "worker started" is logged once its topology is declared.
    let started = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.recv().await {
            if line.contains("worker started") {
                return true;
            }
        }
        false
    });
    assert!(started.await.unwrap_or(false), "the paused worker starts");
    let exchange = suffixed(&env.config.amqp.inbound_exchange);
    env.publish_to(&exchange, message.to_string().as_bytes()).await;
    eventually("the paused worker is asking the agent", || async { !stub.bodies().is_empty() }).await;
    let pid = paused.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());

    // Its liveness key lapses (2 s); then a copy of the message reaches another worker.
    let alive = format!("{}alive:*", env.config.redis.key_prefix);
    eventually("the paused worker looks gone", || async {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(&alive).query_async(&mut env.redis.clone()).await.unwrap_or_default();
        keys.is_empty()
    })
    .await;
    env.publish_json(&message).await;
    let survivor = env.spawn_worker("survivor");
    eventually("the copy is taken over and answered", || async {
        survivor.tally.processed.load(Ordering::Relaxed) == 1
    })
    .await;

    let fences: i64 = sqlx::query_scalar("SELECT count(*) FROM fences WHERE fingerprint = $1")
        .bind(&fp)
        .fetch_one(&env.pool)
        .await
        .expect("fences");
    assert_eq!(fences, 1, "the takeover registered its fencing token");
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());
    let stood_down = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.recv().await {
            if line.contains("lease lost")
                || line.contains("taken this message over")
                || line.contains("has taken over")
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(stood_down, "the paused worker stands down when it wakes");

    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    let _ = tokio::time::timeout(PATIENCE, paused.wait()).await;
    survivor.stop().await.expect("stop");
    assert_eq!(env.rows(&fp).await, (1, 1));
    let replies = env.replies().await;
    assert_eq!(replies.len(), 1, "published once: {replies:?}");
    assert_ne!(replies[0].1["text"], "from the paused worker");
    env.finish().await;
}
