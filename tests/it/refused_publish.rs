//! A publish the broker refuses closes its channel (AMQP 0-9-1). The worker
//! reopens it at once, keeps settling the messages after it, says it is not
//! ready while it cannot publish, and answers the refused message once the
//! broker takes publishes again — never leaving it to the delivery limit.

use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::FieldTable;

use crate::harness::{TestEnv, eventually, header_str};

async fn status(url: &str) -> u16 {
    chat_worker::tls::install_crypto();
    let client = reqwest::Client::new();
    match client.get(url).timeout(Duration::from_secs(5)).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_reopens_the_channel_and_the_worker_keeps_settling() {
    let mut env = TestEnv::new().await;
    // Attempts enough to outlast the outage below (about 13 s of retries).
    env.config.worker.max_attempts = 10;
    let mut worker = env.spawn_worker("w-refused");
    env.ready(&mut worker).await;
    let readyz = format!("http://{}/readyz", worker.tally.admin_addr.get().expect("admin address"));
    eventually("ready", || async { status(&readyz).await == 200 }).await;

    // Publishing a reply to an exchange that is gone closes the channel (404).
    let outbound = env.config.amqp.outbound_exchange.clone();
    env.channel.exchange_delete(outbound.as_str().into(), Default::default()).await.expect("delete outbound");
    let message = env.message("m-refused", "c-refused", "hello");
    env.publish_json(&message).await;
    eventually("not ready while replies cannot be published", || async { status(&readyz).await == 503 })
        .await;
    eventually("the refused reply's message is parked for a retry", || async {
        worker.tally.failed.load(Ordering::Relaxed) >= 1
    })
    .await;

    // Settling goes on on the reopened channel: a bad message is dead-lettered.
    env.publish(b"{not json").await;
    let started = std::time::Instant::now();
    let mut dead = Vec::new();
    while dead.is_empty() {
        assert!(started.elapsed() < crate::harness::PATIENCE, "no dead letter after the refused publish");
        dead.extend(env.dead_letters().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kinds: Vec<_> = dead.iter().map(|d| header_str(d, "x-error-kind")).collect();
    assert_eq!(kinds, [Some("malformed".to_owned())]);

    // Once the broker takes replies again, the message is answered, once.
    env.channel
        .exchange_declare(
            outbound.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("outbound again");
    env.channel
        .queue_bind(
            env.replies_queue.as_str().into(),
            outbound.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind replies");
    let reply = env.reply_to("m-refused").await;
    assert_eq!(reply["fingerprint"], crate::harness::fingerprint_of(&message));
    eventually("ready again", || async { status(&readyz).await == 200 }).await;
    let dead = env.dead_letters().await;
    assert!(dead.is_empty(), "the refused message never reached the dead queue: {}", dead.len());
    assert_eq!(env.rows(reply["fingerprint"].as_str().expect("fingerprint")).await, (1, 1));
    let again = env.converse("c-after", "hello").await;
    assert!(again["text"].is_string());

    worker.stop().await.expect("clean stop");
    env.finish().await;
}

/// A move the broker refuses (the dead queue is gone, so the dead letter is
/// unroutable) is tried again in place: the delivery is never handed back (the
/// delivery limit would dead-letter it, or loop it), the worker answers other
/// messages meanwhile, says it is not ready, and the move lands once, when it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_move_is_retried_in_place_and_lands_once() {
    let mut env = TestEnv::new().await;
    // A worker without configure permission: it cannot declare the queue again.
    env.config.amqp.declare_topology = false;
    let mut worker = env.spawn_worker("w-refused-move");
    env.ready(&mut worker).await;
    let readyz = format!("http://{}/readyz", worker.tally.admin_addr.get().expect("admin address"));
    let dead_queue = env.config.amqp.dead_queue.clone();
    env.channel
        .queue_delete(dead_queue.as_str().into(), Default::default())
        .await
        .expect("delete dead queue");

    env.publish(b"{not json").await;
    eventually("not ready while the dead letter cannot be moved", || async { status(&readyz).await == 503 })
        .await;
    let reply = env.converse("c-meanwhile", "hello").await;
    assert!(reply["text"].is_string(), "other messages are answered meanwhile");
    assert_eq!(worker.tally.rejected.load(Ordering::Relaxed), 1, "judged once");

    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), lapin::types::AMQPValue::LongString("quorum".into()));
    env.channel
        .queue_declare(
            dead_queue.as_str().into(),
            lapin::options::QueueDeclareOptions { durable: true, ..Default::default() },
            args,
        )
        .await
        .expect("dead queue again");
    eventually("the dead letter lands", || async { env.queue_depth(&dead_queue).await > 0 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1, "moved once");
    assert_eq!(header_str(&dead[0], "x-error-kind").as_deref(), Some("malformed"));
    assert_eq!(worker.tally.total(), 2, "no delivery was handed back and judged again");
    eventually("ready again", || async { status(&readyz).await == 200 }).await;
    worker.stop().await.expect("clean stop");
    env.finish().await;
}

/// A worker that declares its topology declares a queue an operator deleted
/// under it again when a move finds none, and the move lands, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_dead_queue_is_declared_again_and_the_move_lands_once() {
    let env = TestEnv::new().await;
    let mut worker = env.spawn_worker("w-redeclare");
    env.ready(&mut worker).await;
    let dead_queue = env.config.amqp.dead_queue.clone();
    env.channel
        .queue_delete(dead_queue.as_str().into(), Default::default())
        .await
        .expect("delete dead queue");
    env.publish(b"{not json").await;
    // A channel per look: asking for a queue that is not there closes the channel.
    eventually("the dead letter lands", || async {
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let channel = env.fresh_channel().await;
        let depth = channel.queue_declare(dead_queue.as_str().into(), passive, FieldTable::default()).await;
        depth.is_ok_and(|q| q.message_count() > 0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1, "moved once");
    assert_eq!(header_str(&dead[0], "x-error-kind").as_deref(), Some("malformed"));
    assert_eq!(worker.tally.total(), 1, "judged once");
    worker.stop().await.expect("clean stop");
    env.finish().await;
}
