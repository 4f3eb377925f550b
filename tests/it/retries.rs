use std::sync::atomic::Ordering;

use crate::harness::{TestEnv, eventually, fingerprint_of, header, header_str};

/// Makes the first `failures` inserts into `messages` fail, as a database
/// hiccup would. A sequence, because it advances even when the insert rolls back.
async fn inject_insert_faults(env: &TestEnv, failures: i64) {
    sqlx::raw_sql("CREATE SEQUENCE fault_seq").execute(&env.pool).await.expect("sequence");
    env.on_message_insert(&format!(
        "IF nextval('fault_seq') <= {failures} THEN RAISE EXCEPTION 'injected fault'; END IF"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_fault_is_retried_later_and_the_message_then_processed_once() {
    let env = TestEnv::new().await;
    inject_insert_faults(&env, 2).await;
    let worker = env.spawn_worker("w1");
    let message = env.message("m-flaky", "c1", "hello");
    env.publish_json(&message).await;
    eventually("processed on the third attempt", || async {
        worker.tally.processed.load(Ordering::Relaxed) == 1
    })
    .await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("clean stop");

    assert_eq!(tally.failed.load(Ordering::Relaxed), 2, "two failed attempts before");
    assert_eq!(env.rows(&fingerprint_of(&message)).await, (1, 1));
    assert_eq!(env.replies().await.len(), 1);
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_that_outlasts_max_attempts_dead_letters_the_message_unchanged_as_failed() {
    let mut env = TestEnv::new().await;
    env.config.worker.max_attempts = 3;
    inject_insert_faults(&env, i64::MAX).await;
    let worker = env.spawn_worker("w1");
    let message = env.message("m-doomed", "c1", "hello");
    let body = message.to_string().into_bytes();
    env.publish(&body).await;
    eventually("three attempts made", || async { worker.tally.failed.load(Ordering::Relaxed) == 3 }).await;
    eventually("dead-lettered", || async { env.queue_depth(&env.config.amqp.dead_queue).await == 1 }).await;
    worker.stop().await.expect("clean stop");

    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].data, body, "body unchanged");
    assert_eq!(header_str(&dead[0], "x-error-kind").as_deref(), Some("failed"));
    assert!(header_str(&dead[0], "x-error").unwrap_or_default().contains("injected fault"));
    assert!(matches!(header(&dead[0], "x-attempts"), Some(lapin::types::AMQPValue::LongLongInt(3))));
    assert_eq!(env.total_rows().await, 0);
    assert!(env.replies().await.is_empty());
    env.finish().await;
}

/// Work past the message deadline is abandoned and cannot commit later: here the
/// write itself is slowed (3 s) beyond the deadline (2 s) every time, so the
/// message is retried and finally dead-lettered — with nothing committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_past_the_deadline_is_abandoned_and_never_commits() {
    let mut env = TestEnv::new().await;
    env.config.worker.message_deadline_secs = 2;
    env.config.worker.max_attempts = 2;
    env.config.responder.timeout_ms = 1_000;
    env.config.redis.lock_ttl_secs = 5;
    env.on_message_insert("PERFORM pg_sleep(3)").await;
    let worker = env.spawn_worker("w1");
    let message = env.message("m-late", "c1", "hello");
    env.publish_json(&message).await;
    eventually("dead-lettered", || async { env.queue_depth(&env.config.amqp.dead_queue).await == 1 }).await;
    worker.stop().await.expect("clean stop");

    let dead = env.dead_letters().await;
    // The write is not cut by the deadline (it may share its commit with others);
    // PostgreSQL's statement_timeout, set to the deadline, cancels it instead.
    assert!(
        header_str(&dead[0], "x-error").unwrap_or_default().contains("statement timeout"),
        "{:?}",
        header_str(&dead[0], "x-error")
    );
    // The slowed writes were cancelled, not committed late.
    assert_eq!(env.rows(&fingerprint_of(&message)).await, (0, 0));
    assert!(env.replies().await.is_empty());
    env.finish().await;
}
