use std::sync::atomic::Ordering;

use crate::harness::{TestEnv, eventually, fingerprint_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_on_30_copies_commit_and_publish_exactly_one_reply() {
    let mut env = TestEnv::new().await;
    // A small prefetch spreads the copies over both workers instead of one taking all.
    env.config.amqp.prefetch = 3;
    let message = env.message("wamid.race", "+254700000009", "Do you have running shoes under 5000?");
    // Both consume before the copies arrive, so the broker spreads them over both.
    let mut a = env.spawn_worker("racer-a");
    let mut b = env.spawn_worker("racer-b");
    env.ready(&mut a).await;
    env.ready(&mut b).await;
    env.publish_copies(&message, 30).await;
    eventually("all 30 copies settled", || async { a.tally.total() + b.tally.total() >= 30 }).await;
    let (ta, tb) = (a.tally.clone(), b.tally.clone());
    assert!(ta.total() > 0 && tb.total() > 0, "both workers took copies: {} / {}", ta.total(), tb.total());
    a.stop().await.expect("a stops cleanly");
    b.stop().await.expect("b stops cleanly");

    let processed = ta.processed.load(Ordering::Relaxed) + tb.processed.load(Ordering::Relaxed);
    let duplicates = ta.duplicate.load(Ordering::Relaxed) + tb.duplicate.load(Ordering::Relaxed);
    let failed = ta.failed.load(Ordering::Relaxed) + tb.failed.load(Ordering::Relaxed);
    assert_eq!(processed, 1, "one copy processed");
    assert_eq!(duplicates, 29, "every other copy a duplicate");
    assert_eq!(failed, 0);

    assert_eq!(env.rows(&fingerprint_of(&message)).await, (1, 1));
    assert_eq!(env.total_rows().await, 2);
    let replies = env.replies().await;
    assert_eq!(replies.len(), 1, "exactly one published reply");
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}
