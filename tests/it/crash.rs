//! A worker process killed mid-way (a real process, aborted at a chosen point by
//! `WORKER_TEST_CRASH_AT`): its delivery returns to the queue, its lock is taken
//! over once its liveness key lapses, and the message still gets exactly one reply.

use std::sync::atomic::Ordering;

use crate::harness::{PATIENCE, TestEnv, eventually, fingerprint_of};

async fn crash_at(env: &TestEnv, point: &str) {
    let mut child =
        env.worker_command("doomed").env("WORKER_TEST_CRASH_AT", point).spawn().expect("spawn worker");
    let status =
        tokio::time::timeout(PATIENCE, child.wait()).await.expect("worker crashes in time").expect("wait");
    assert!(!status.success(), "the worker died at {point}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_lock_before_the_commit_the_message_is_processed_once_by_another_worker() {
    let env = TestEnv::new().await;
    let message = env.message("wamid.crash1", "c1", "hello");
    env.publish_json(&message).await;
    crash_at(&env, "after_lock").await;
    let fp = fingerprint_of(&message);
    assert_eq!(env.rows(&fp).await, (0, 0), "died before writing");

    let survivor = env.spawn_worker("survivor");
    eventually("processed by the survivor", || async {
        survivor.tally.processed.load(Ordering::Relaxed) == 1
    })
    .await;
    survivor.stop().await.expect("clean stop");

    assert_eq!(env.rows(&fp).await, (1, 1));
    let replies = env.replies().await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].1["fingerprint"], fp);
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_commit_before_the_ack_the_committed_reply_is_still_published() {
    let env = TestEnv::new().await;
    let message = env.message("wamid.crash2", "c1", "hello");
    env.publish_json(&message).await;
    crash_at(&env, "after_commit").await;
    let fp = fingerprint_of(&message);
    assert_eq!(env.rows(&fp).await, (1, 1), "died after committing");
    assert!(env.replies().await.is_empty(), "but before publishing");

    let survivor = env.spawn_worker("survivor");
    eventually("settled by the survivor", || async { survivor.tally.processed.load(Ordering::Relaxed) == 1 })
        .await;
    survivor.stop().await.expect("clean stop");

    assert_eq!(env.rows(&fp).await, (1, 1), "not committed twice");
    let replies = env.replies().await;
    assert_eq!(replies.len(), 1, "the reply is published, once");
    assert_eq!(replies[0].1["fingerprint"], fp);
    env.finish().await;
}
