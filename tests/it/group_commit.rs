//! The group commit (issue 6): messages answered together share one statement,
//! and each still gets its own result — committed, already committed, fenced —
//! and one refused row fails only its own message.

use chat_worker::decode::Inbound;
use chat_worker::respond::Answer;
use chat_worker::store::{Exchange, Lane, Recorded, StoreError, Writer, WriterMetrics, WriterSettings};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::harness::TestEnv;

fn inbound(env: &TestEnv, message_id: &str, customer: &str, text: &str) -> Inbound {
    chat_worker::decode::decode(env.message(message_id, customer, text).to_string().as_bytes())
        .expect("valid")
}

fn exchange(message: Inbound, reply: &str, fence: i64) -> Exchange {
    Exchange {
        fingerprint: message.fingerprint(),
        inbound: message,
        conversation_id: None,
        stored_at: chrono::Utc::now(),
        answer: Answer::plain(reply, false, 0.9),
        replied_at: chrono::Utc::now(),
        responder: "test".into(),
        latency_ms: 1,
        fence,
    }
}

fn writer(env: &TestEnv, batch_sizes: &Histogram) -> Writer {
    let metrics = WriterMetrics { batch_sizes: batch_sizes.clone(), split_batches: Counter::default() };
    Writer::start(env.db.clone(), WriterSettings { max_batch: 64, in_flight: 1, light_lane: true }, metrics)
}

/// (batches, exchanges) the histogram observed.
fn observed(batch_sizes: &Histogram) -> (u64, f64) {
    (batch_sizes.count(), batch_sizes.sum())
}

// current_thread: every `record` below enqueues its exchange before the writer
// task first runs, so they all arrive in one batch.
#[tokio::test]
async fn exchanges_ready_together_share_one_statement_and_each_gets_its_own_result() {
    let env = TestEnv::new().await;
    let batch_sizes = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0].into_iter());
    let writer = writer(&env, &batch_sizes);

    // One message committed before; one whose lock was taken over (a later fence is registered).
    let earlier = exchange(inbound(&env, "m-earlier", "c-0", "hello again"), "stored reply", 1);
    assert!(matches!(writer.record(earlier.clone(), Lane::Backlog).await, Ok(Recorded::New { .. })));
    let stale = exchange(inbound(&env, "m-stale", "c-1", "am I late?"), "too late", 100);
    assert!(chat_worker::store::register_fence(&env.db, &stale.fingerprint, 200).await.expect("fence"));

    // 20 fresh messages from 10 customers (two each: both need the conversation
    // the first one opens), the stale one, the earlier one again, and the same
    // fingerprint twice.
    let mut batch: Vec<Exchange> = (0..20)
        .map(|i| {
            exchange(inbound(&env, &format!("m-{i}"), &format!("c-{}", i % 10), "hi"), &format!("r-{i}"), 1)
        })
        .collect();
    let twin = exchange(inbound(&env, "m-twin", "c-2", "twice"), "twin reply", 1);
    batch.extend([stale.clone(), earlier.clone(), twin.clone(), twin.clone()]);
    let results =
        futures_util::future::join_all(batch.iter().map(|ex| writer.record(ex.clone(), Lane::Backlog))).await;

    for (i, result) in results[..20].iter().enumerate() {
        assert!(matches!(result, Ok(Recorded::New { .. })), "message {i}: {result:?}");
    }
    assert!(matches!(&results[20], Err(StoreError::Fenced(_))), "{:?}", results[20]);
    match &results[21] {
        Ok(Recorded::Existing(reply)) => assert_eq!(reply.text, "stored reply"),
        other => panic!("the earlier message should be found committed: {other:?}"),
    }
    let twins: Vec<_> = results[22..].iter().map(|r| matches!(r, Ok(Recorded::Existing(_)))).collect();
    assert!(matches!(results[22], Ok(Recorded::New { .. })), "{:?}", results[22]);
    assert_eq!(twins, [false, true], "the second copy finds the first one's reply");

    for ex in &batch[..20] {
        assert_eq!(env.rows(ex.fingerprint.as_str()).await, (1, 1));
    }
    assert_eq!(env.rows(stale.fingerprint.as_str()).await, (0, 0), "the fenced message wrote nothing");
    assert_eq!(env.rows(twin.fingerprint.as_str()).await, (1, 1));
    let (conversations, interactions): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM agent_interactions)",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count");
    assert_eq!(conversations, 10, "one conversation per customer, however many messages opened it");
    assert_eq!(interactions, 22, "one interaction per committed message");

    // The first batch carried `earlier` alone; the 23 distinct fingerprints of the
    // second went in one statement, the twin's second copy on its own after it.
    assert_eq!(observed(&batch_sizes), (2, 25.0));
    env.finish().await;
}

#[tokio::test]
async fn a_row_postgresql_refuses_fails_only_its_own_message() {
    let env = TestEnv::new().await;
    env.on_message_row_insert("NEW.text = 'poison'", "RAISE EXCEPTION 'refused by a test trigger'").await;
    let split_batches = Counter::default();
    let metrics = WriterMetrics {
        batch_sizes: Histogram::new([1.0, 8.0].into_iter()),
        split_batches: split_batches.clone(),
    };
    let writer = Writer::start(
        env.db.clone(),
        WriterSettings { max_batch: 64, in_flight: 1, light_lane: true },
        metrics,
    );

    let batch: Vec<Exchange> = ["fine", "poison", "also fine"]
        .iter()
        .enumerate()
        .map(|(i, text)| exchange(inbound(&env, &format!("m-{i}"), "c", text), "ok", 1))
        .collect();
    let results =
        futures_util::future::join_all(batch.iter().map(|ex| writer.record(ex.clone(), Lane::Backlog))).await;

    assert!(matches!(results[0], Ok(Recorded::New { .. })), "{:?}", results[0]);
    assert!(
        matches!(&results[1], Err(StoreError::Db(e)) if e.to_string().contains("refused by a test trigger")),
        "{:?}",
        results[1]
    );
    assert!(matches!(results[2], Ok(Recorded::New { .. })), "{:?}", results[2]);
    assert_eq!(env.rows(batch[0].fingerprint.as_str()).await, (1, 1));
    assert_eq!(env.rows(batch[1].fingerprint.as_str()).await, (0, 0));
    assert_eq!(env.rows(batch[2].fingerprint.as_str()).await, (1, 1));
    assert_eq!(split_batches.get(), 1, "the refused batch is counted (chat_worker_db_commit_batches_split)");
    env.finish().await;
}

/// A message whose tenant has nothing waiting commits beside the backlog's
/// batches, not behind them: here the backlog's commit is held (a trigger
/// waits on a lock the test holds) and the light one commits meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_light_lane_commits_while_the_backlogs_batch_is_held() {
    let env = TestEnv::new().await;
    env.on_message_row_insert("NEW.text = 'held'", "PERFORM pg_advisory_xact_lock(4242)").await;
    let mut holder = env.pool.acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock(4242)").execute(&mut *holder).await.expect("lock");
    let writer = writer(&env, &Histogram::new([1.0, 8.0].into_iter()));

    let held = exchange(inbound(&env, "m-held", "flooding", "held"), "ok", 1);
    let light = exchange(inbound(&env, "m-light", "quiet", "light"), "ok", 1);
    let backlog = tokio::spawn({
        let (writer, held) = (writer.clone(), held.clone());
        async move { writer.record(held, Lane::Backlog).await }
    });
    // The backlog's commit is waiting on the lock (its row is being inserted).
    crate::harness::eventually("the backlog's commit waits on the test's lock", || {
        let pool = env.pool.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&pool)
            .await
            .expect("pg_locks");
            waiting > 0
        }
    })
    .await;
    let recorded = tokio::time::timeout(crate::harness::PATIENCE, writer.record(light.clone(), Lane::Light))
        .await
        .expect("the light lane is not held behind the backlog's commit");
    assert!(matches!(recorded, Ok(Recorded::New { .. })), "{recorded:?}");
    assert_eq!(env.rows(light.fingerprint.as_str()).await, (1, 1));
    assert!(!backlog.is_finished(), "the backlog's commit is still held");

    sqlx::query("SELECT pg_advisory_unlock(4242)").execute(&mut *holder).await.expect("unlock");
    let recorded = backlog.await.expect("task");
    assert!(matches!(recorded, Ok(Recorded::New { .. })), "{recorded:?}");
    assert_eq!(env.rows(held.fingerprint.as_str()).await, (1, 1));
    drop(holder);
    env.finish().await;
}
