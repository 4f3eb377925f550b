use std::sync::atomic::Ordering;

use std::time::Duration;

use crate::harness::{PATIENCE, TestEnv, eventually};
use crate::http_stub::{self, Answer};

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
    .await;
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
