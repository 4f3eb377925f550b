use std::sync::atomic::Ordering;

use std::time::Duration;

use testkit::http_stub::{self, Answer};

use crate::harness::{PATIENCE, TestEnv, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_messages_in_flight_exits_0_and_every_message_is_accounted_for() {
    const N: usize = 1_000;
    let env = TestEnv::new().await;
    for i in 0..N {
        env.publish_json(&env.message(&format!("m-{i}"), &format!("cust-{}", i % 50), "hello")).await;
    }
    // A slow agent (300 ms an answer) and 32 at a time: when SIGTERM arrives there
    // are surely messages in flight, and surely messages not yet started.
    let agent = http_stub::serve(Answer::Slow(
        Duration::from_millis(300),
        r#"{"text":"from the slow agent","confidence":0.9,"handoff":false}"#.into(),
    ))
    .await
    .expect("stub");
    let mut child = env
        .worker_command("stopping")
        .env("WORKER__RESPONDER__KIND", "http")
        .env("WORKER__RESPONDER__URL", &agent.url)
        .env("WORKER__WORKER__CONCURRENCY", "32")
        .env("WORKER__AMQP__PREFETCH", "64")
        .spawn()
        .expect("spawn worker");
    eventually("the worker is replying", || async { env.queue_depth(&env.replies_queue).await > 0 }).await;
    let pid = child.id().expect("running").to_string();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(kill.success());
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("stops in time").expect("wait");
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    let done_by_first: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'out'")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert!((done_by_first as usize) < N, "the test needs messages left when SIGTERM arrives");

    // Whatever the first worker did not finish went back to the queue.
    let second = env.spawn_worker("second");
    let remaining = (N as u64) - done_by_first as u64;
    eventually("the rest are processed", || async {
        second.tally.processed.load(Ordering::Relaxed) >= remaining
    })
    .await;
    let tally = second.tally.clone();
    second.stop().await.expect("clean stop");
    assert_eq!(tally.duplicate.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed), 0);

    let complete: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT fingerprint FROM messages GROUP BY fingerprint
           HAVING count(*) FILTER (WHERE direction = 'in') = 1 AND count(*) FILTER (WHERE direction = 'out') = 1) f",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count");
    assert_eq!(complete as usize, N, "every message has exactly one inbound and one reply row");
    assert_eq!(env.total_rows().await as usize, 2 * N);
    let replies = env.replies().await;
    let ids: std::collections::HashSet<_> = replies.iter().map(|(_, b)| b["reply_id"].to_string()).collect();
    assert_eq!(ids.len(), N, "a reply published for every message");
    assert_eq!(replies.len(), N, "and none twice");
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}

/// The cache invalidation listener resynchronises after losing its connection: a
/// query with no deadline of its own, here waiting for a lock held elsewhere (a
/// stalled connection would do the same). Stopping must not wait for it, nor for
/// any other background task stuck on a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_task_stuck_on_the_database_does_not_hold_up_the_stop() {
    let env = TestEnv::new().await;
    let mut worker = env.spawn_worker("stuck");
    env.ready(&mut worker).await;
    let mut locker = env.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE catalog_versions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .expect("lock catalog_versions");
    // Its connection is the only one whose last statement is LISTEN.
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&env.pool)
    .await
    .expect("terminate the listener's connection");
    assert_eq!(terminated, vec![true], "one listener connection");
    eventually("the listener's resync waits for the lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event_type = 'Lock' AND query LIKE '%FROM catalog_versions%'",
        )
        .fetch_one(&env.pool)
        .await
        .expect("pg_stat_activity");
        waiting > 0
    })
    .await;

    let stopped = tokio::time::timeout(Duration::from_secs(15), worker.stop()).await;
    locker.rollback().await.expect("release the lock");
    assert!(matches!(stopped, Ok(Ok(()))), "the stop waited for the stuck listener: {stopped:?}");
    env.finish().await;
}

/// A second SIGTERM while the first waits for messages in flight exits at once;
/// those messages, never acked, go back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_and_hands_the_messages_in_flight_back() {
    const N: usize = 4;
    let env = TestEnv::new().await;
    for i in 0..N {
        env.publish_json(&env.message(&format!("m-{i}"), &format!("cust-{i}"), "hello")).await;
    }
    // Slower than the stop's grace (20 s here): the first SIGTERM alone would wait for it.
    let agent = http_stub::serve(Answer::Slow(
        Duration::from_secs(120),
        r#"{"text":"too late","confidence":0.9,"handoff":false}"#.into(),
    ))
    .await
    .expect("stub");
    let mut child = env
        .worker_command("twice")
        .env("WORKER__RESPONDER__KIND", "http")
        .env("WORKER__RESPONDER__URL", &agent.url)
        .spawn()
        .expect("spawn worker");
    eventually("every message is with the agent", || async {
        agent.requests.lock().unwrap_or_else(|p| p.into_inner()).len() >= N
    })
    .await;
    let pid = child.id().expect("running").to_string();
    let sigterm = || std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(sigterm().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the first SIGTERM waits for the messages in flight"
    );

    assert!(sigterm().success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits at once")
        .expect("wait");
    assert_eq!(status.code(), Some(1), "a stop cut short is not a clean exit");
    eventually("the messages in flight are back in the queue", || async {
        env.queue_depth(&env.config.amqp.inbound_queue).await as usize == N
    })
    .await;
    env.finish().await;
}
