//! A broker that holds an older worker's topology (classic retry queues, an
//! inbound queue declared without at-least-once dead-lettering) refuses the new
//! declarations. The upgrade path of docs/upgrading.md loses nothing: the new
//! worker starts on the old inbound queue, what the old retry queues held comes
//! back and is answered, the new retry queues are quorum queues with
//! at-least-once dead-lettering, and the documented policy applies to the old
//! inbound queue.

use std::sync::Arc;

use chat_worker::broker::topology::INBOUND_POLICY;
use chat_worker::config::AmqpConfig;
use chat_worker::worker::{self, Tally};
use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use tokio_util::sync::CancellationToken;

use crate::harness::{TestEnv, eventually, rabbitmqctl, spawn_worker_with};

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

/// The queues exactly as the worker before this change declared them.
async fn declare_old_topology(channel: &Channel, amqp: &AmqpConfig, old_retry_prefix: &str, retries: u32) {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(
            amqp.inbound_exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("old inbound exchange");
    let mut inbound = FieldTable::default();
    inbound.insert("x-queue-type".into(), long("quorum"));
    inbound.insert("x-delivery-limit".into(), AMQPValue::LongInt(20));
    inbound.insert("x-dead-letter-exchange".into(), long(""));
    inbound.insert("x-dead-letter-routing-key".into(), long(&amqp.dead_queue));
    channel.queue_declare(amqp.inbound_queue.as_str().into(), durable, inbound).await.expect("old inbound");
    channel
        .queue_bind(
            amqp.inbound_queue.as_str().into(),
            amqp.inbound_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("old binding");
    for n in 1..=retries {
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), long(""));
        args.insert("x-dead-letter-routing-key".into(), long(&amqp.inbound_queue));
        let name = format!("{old_retry_prefix}.{n}");
        channel.queue_declare(name.as_str().into(), durable, args).await.expect("old retry queue");
    }
}

#[tokio::test]
async fn a_broker_holding_the_old_topology_is_upgraded_without_losing_a_message() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.amqp.inbound_exchange = format!("{}.old", env.config.amqp.inbound_exchange);
    config.amqp.inbound_queue = format!("{}.old", env.config.amqp.inbound_queue);
    let old_prefix = format!("{}.old", env.config.amqp.retry_queue_prefix);
    let retries = config.worker.max_attempts - 1;
    declare_old_topology(&env.channel, &config.amqp, &old_prefix, retries).await;

    // A message an older worker parked after its first attempt: it returns to
    // the inbound queue by itself when it expires.
    let parked = env.message("m-parked", "c-upgrade", "hello");
    let mut headers = FieldTable::default();
    headers.insert("x-attempts".into(), AMQPValue::LongLongInt(1));
    headers.insert("x-worker-seen".into(), AMQPValue::Boolean(true));
    env.channel
        .basic_publish(
            "".into(),
            format!("{old_prefix}.1").as_str().into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            parked.to_string().as_bytes(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_expiration("300".into())
                .with_headers(headers),
        )
        .await
        .expect("park")
        .await
        .expect("confirm");

    // Still configured with the old retry prefix, the worker refuses to start
    // and says what to do.
    let mut stale = config.clone();
    stale.amqp.retry_queue_prefix = old_prefix.clone();
    let refused = worker::run(stale, CancellationToken::new(), Arc::new(Tally::default()))
        .await
        .expect_err("the old classic retry queues cannot be redeclared as quorum queues");
    let said = refused.to_string();
    assert!(said.contains("retry_queue_prefix") && said.contains("docs/upgrading.md"), "{said}");

    // With the new prefix it starts on the old inbound queue and answers the parked message.
    config.amqp.retry_queue_prefix = format!("{old_prefix}.quorum");
    let mut running = spawn_worker_with(config.clone());
    env.ready(&mut running).await;
    let reply = env.reply_to("m-parked").await;
    assert_eq!(reply["fingerprint"], crate::harness::fingerprint_of(&parked));

    // The new retry queues are quorum queues with at-least-once dead-lettering:
    // the broker accepts exactly those arguments again, and refuses a classic queue.
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args.insert("x-dead-letter-exchange".into(), long(""));
    args.insert("x-dead-letter-routing-key".into(), long(&config.amqp.inbound_queue));
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let check = env.channel.clone();
    for n in 1..=retries {
        let name = format!("{}.{n}", config.amqp.retry_queue_prefix);
        check
            .queue_declare(name.as_str().into(), durable, args.clone())
            .await
            .expect("quorum, at-least-once");
    }
    let classic = env.fresh_channel().await;
    let name = format!("{}.1", config.amqp.retry_queue_prefix);
    assert!(classic.queue_declare(name.as_str().into(), durable, FieldTable::default()).await.is_err());

    // The policy docs/upgrading.md gives is accepted and applies to the old inbound queue.
    let policy = format!("chat-worker-inbound-{}", env.id());
    let pattern = format!("^{}$", regex_escape(&config.amqp.inbound_queue));
    rabbitmqctl(&["set_policy", "--apply-to", "queues", &policy, &pattern, INBOUND_POLICY]);
    eventually("the policy applies to the old inbound queue", || async {
        rabbitmqctl(&["-q", "list_queues", "--no-table-headers", "name", "policy"]).lines().any(|l| {
            l.split_whitespace().collect::<Vec<_>>() == [config.amqp.inbound_queue.as_str(), &policy]
        })
    })
    .await;
    rabbitmqctl(&["clear_policy", &policy]);

    running.stop().await.expect("clean stop");
    let mut queues = vec![config.amqp.inbound_queue.clone()];
    for n in 0..=retries {
        queues.push(format!("{old_prefix}.{n}"));
        queues.push(format!("{}.{n}", config.amqp.retry_queue_prefix));
    }
    for q in queues {
        let _ = env.channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ =
        env.channel.exchange_delete(config.amqp.inbound_exchange.as_str().into(), Default::default()).await;
    env.finish().await;
}

fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { vec![c] } else { vec!['\\', c] })
        .collect()
}
