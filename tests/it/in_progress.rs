//! A copy that arrives while another live worker holds the message's lock.

use std::sync::atomic::Ordering;

use lapin::types::{AMQPValue, FieldTable};

use crate::harness::{TestEnv, eventually, fingerprint_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_copy_of_a_message_in_progress_elsewhere_is_acked_as_a_duplicate() {
    let env = TestEnv::new().await;
    let message = env.message("m-busy", "c1", "hello");
    env.hold_lock_elsewhere(&message).await;
    let worker = env.spawn_worker("w1");
    env.publish_json(&message).await;
    eventually("settled", || async { worker.tally.total() == 1 }).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("clean stop");
    assert_eq!(tally.duplicate.load(Ordering::Relaxed), 1);
    assert_eq!(env.total_rows().await, 0, "the holder writes, not us");
    assert_eq!(env.queue_depth(&env.config.amqp.inbound_queue).await, 0, "acked");
    env.finish().await;
}

/// A copy some worker handled before (a broker redelivery, or back from a retry
/// queue) may be the one the lock holder lost with its channel. It is parked
/// and looked at again, without spending attempts, until the holder finishes or
/// gives up — then it is processed, never dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seen_copy_of_a_message_in_progress_elsewhere_waits_and_is_processed_once_the_lock_is_free() {
    let env = TestEnv::new().await;
    let message = env.message("m-lost", "c1", "hello");
    let fp = fingerprint_of(&message);
    env.hold_lock_elsewhere(&message).await;
    let worker = env.spawn_worker("w1");
    // As a retry queue hands a message back: straight into the inbound queue,
    // marked by a worker (the same header from a gateway is ignored).
    let mut seen = FieldTable::default();
    seen.insert("x-worker-seen".into(), AMQPValue::Boolean(true));
    env.channel
        .basic_publish(
            "".into(),
            env.config.amqp.inbound_queue.as_str().into(),
            lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() },
            message.to_string().as_bytes(),
            lapin::BasicProperties::default().with_delivery_mode(2).with_headers(seen),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    eventually("deferred at least twice", || async { worker.tally.deferred.load(Ordering::Relaxed) >= 2 })
        .await;
    assert_eq!(worker.tally.duplicate.load(Ordering::Relaxed), 0, "never acked as a duplicate");

    env.release_lock_elsewhere(&message).await;
    eventually("processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 1 }).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("clean stop");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "waiting spent no attempts");
    assert_eq!(env.rows(&fp).await, (1, 1));
    assert_eq!(env.replies().await.len(), 1);
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}

/// The same header set by a gateway is the gateway's data: a fresh copy from
/// `chat.inbound` is a duplicate of the message in progress, whatever it claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_claiming_its_copy_was_seen_is_not_believed() {
    let env = TestEnv::new().await;
    let message = env.message("m-claims-seen", "c1", "hello");
    env.hold_lock_elsewhere(&message).await;
    let worker = env.spawn_worker("w1");
    let mut forged = FieldTable::default();
    forged.insert("x-worker-seen".into(), AMQPValue::Boolean(true));
    forged.insert("x-attempts".into(), AMQPValue::LongLongInt(4));
    env.publish_with_headers(message.to_string().as_bytes(), forged).await;
    eventually("settled", || async { worker.tally.total() == 1 }).await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("clean stop");
    assert_eq!(tally.duplicate.load(Ordering::Relaxed), 1, "a duplicate, not deferred");
    env.finish().await;
}
