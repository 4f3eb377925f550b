use std::sync::atomic::Ordering;

use crate::harness::{TestEnv, eventually, fingerprint_of};

/// Redis is a fast path; PostgreSQL's uniqueness is the guarantee. With the
/// processing state gone, a late copy is caught at commit, and the reply that was
/// committed is published again under the same `reply:<fp>` id (the delivery
/// service drops it by that id), never a second, different reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_between_two_deliveries_still_leaves_one_reply_row() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker("w1");
    let message = env.message("wamid.flush", "+254700000002", "Is the shop open on Sunday?");
    env.publish_json(&message).await;
    eventually("first delivery processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 1 })
        .await;

    env.flush_redis().await;
    env.publish_json(&message).await;
    eventually("second delivery settled", || async { worker.tally.total() == 2 }).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("clean stop");

    let fp = fingerprint_of(&message);
    assert_eq!(env.rows(&fp).await, (1, 1), "still one inbound and one reply row");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
    let replies = env.replies().await;
    assert!(!replies.is_empty());
    let first = &replies[0].1;
    for (delivery, body) in &replies {
        assert_eq!(
            delivery.properties.message_id().as_ref().map(|s| s.as_str().to_owned()),
            Some(format!("reply:{fp}"))
        );
        assert_eq!(body, first, "a re-published reply is the committed reply, byte for byte");
    }
    env.finish().await;
}
