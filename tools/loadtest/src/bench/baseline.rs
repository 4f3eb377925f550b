//! The broker-only baseline: what RabbitMQ on this machine allows a consumer that
//! does nothing but what the worker cannot avoid — take a delivery, publish one
//! persistent reply (mandatory, confirmed) to an exchange with a bound queue,
//! wait for the confirm, ack — with the worker's prefetch and concurrency (a
//! task per delivery, a permit each). The worker's drain rate is reported as a
//! share of it.
//!
//! The consumers are child processes (`loadtest bench baseline ...`), one per worker
//! process of the run, so they compete for the cores as the workers did.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, Semaphore};

use testkit::gateway::{Message, Publisher};

use crate::fleet::Fleet;
use crate::procstats::{self, Usage};

/// What one baseline consumer is told on its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerArgs {
    /// The queue to consume.
    #[arg(long)]
    pub queue: String,
    /// The exchange to publish replies to.
    #[arg(long)]
    pub exchange: String,
    #[arg(long)]
    pub prefetch: u16,
    #[arg(long)]
    pub concurrency: usize,
}

/// How the baseline runs: like the worker fleet it is compared with.
pub struct Plan<'a> {
    pub amqp_url: &'a str,
    /// The queue the consumers take the messages from (a quorum queue, as the worker's inbound).
    pub queue: &'a str,
    /// The topic exchange they publish replies to (the bench binds a queue to it).
    pub exchange: &'a str,
    /// This program, started as `loadtest bench baseline`.
    pub bench: &'a Path,
    pub processes: usize,
    pub prefetch: u16,
    pub concurrency: usize,
    pub log_dir: &'a Path,
    pub ticks: f64,
}

pub struct Outcome {
    pub rate: f64,
    pub consumers: Vec<(String, Usage)>,
    pub rabbitmq: Option<Usage>,
}

/// A reply about as large as the worker's (a listing reply is ~600 bytes).
fn reply_body(message_id: &str) -> Vec<u8> {
    let text = "1. Classic Sneaker — 4,500 KES\\n".repeat(12);
    format!(r#"{{"in_reply_to":"{message_id}","text":"{text}","handoff":false,"confidence":0.9}}"#)
        .into_bytes()
}

/// Publishes `messages` to a queue of the baseline's own, runs `processes`
/// consumers until each message has its reply, and removes what it declared.
pub async fn run(plan: &Plan<'_>, messages: &[Message]) -> anyhow::Result<Outcome> {
    let Plan { queue, exchange, prefetch, concurrency, ticks, .. } = *plan;
    let replies = format!("{exchange}.replies");
    let connection = Connection::connect(plan.amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    declare(&channel, queue, exchange, &replies).await.context("declaring the baseline's queues")?;

    let mut publisher = Publisher::to_queue(channel.clone(), queue);
    for message in messages {
        publisher.publish(message).await?;
    }
    publisher.finish().await?;

    let received = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(None::<Instant>));
    let mut consumer = connection
        .create_channel()
        .await?
        .basic_consume(
            replies.as_str().into(),
            "baseline-replies".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let (counter, latest) = (received.clone(), last.clone());
    tokio::spawn(async move {
        while let Some(Ok(_)) = consumer.next().await {
            *latest.lock().await = Some(Instant::now());
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let rabbitmq = procstats::rabbitmq_pid().map(procstats::Process::from_now);
    let started = Instant::now();
    let consumer_args = |_: &str| {
        let mut a: Vec<String> = vec!["bench".into(), "baseline".into(), "--queue".into(), queue.to_owned()];
        a.extend(["--exchange".into(), exchange.to_owned(), "--prefetch".into(), prefetch.to_string()]);
        a.extend(["--concurrency".into(), concurrency.to_string()]);
        a
    };
    let mut fleet =
        Fleet::start(plan.bench, "bench-baseline", plan.processes, consumer_args, &[], Some(plan.log_dir))?;
    let mut progress_at = (0, Instant::now());
    while received.load(Ordering::Relaxed) < messages.len() {
        fleet.check_running()?;
        let now = received.load(Ordering::Relaxed);
        if now != progress_at.0 {
            progress_at = (now, Instant::now());
        } else if progress_at.1.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("baseline: no reply for 60 s; {now} of {} arrived", messages.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = last.lock().await.unwrap_or_else(Instant::now).duration_since(started);
    let consumers = fleet.usage(ticks);
    let rabbitmq = rabbitmq.map(|p| p.usage(ticks));
    // The consumers hold no state worth a graceful stop: SIGTERM ends them.
    let _ = fleet.stop(Duration::from_secs(10)).await;

    let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
    let _ = channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
    let _ = connection.close(200, "baseline done".into()).await;
    Ok(Outcome { rate: messages.len() as f64 / elapsed.as_secs_f64().max(1e-9), consumers, rabbitmq })
}

/// A quorum queue as the worker's inbound is, a topic exchange for the replies
/// as `chat.outbound` is, and the bench's own (exclusive) queue bound to it.
async fn declare(channel: &Channel, queue: &str, exchange: &str, replies: &str) -> anyhow::Result<()> {
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(queue.into(), durable, quorum).await?;
    let options = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(exchange.into(), ExchangeKind::Topic, options, FieldTable::default()).await?;
    let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
    channel.queue_declare(replies.into(), exclusive, FieldTable::default()).await?;
    channel
        .queue_bind(
            replies.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// `loadtest bench baseline`: the consumer itself. Runs until killed.
pub async fn consume(amqp_url: &str, args: ConsumerArgs) -> anyhow::Result<()> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let consuming = connection.create_channel().await?;
    let publishing = connection.create_channel().await?;
    publishing.confirm_select(Default::default()).await?;
    consuming.basic_qos(args.prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = consuming
        .basic_consume(
            args.queue.as_str().into(),
            "baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let exchange: Arc<str> = args.exchange.into();
    loop {
        let permit = permits.clone().acquire_owned().await?;
        let delivery = match deliveries.next().await {
            Some(delivery) => delivery.context("consuming")?,
            None => anyhow::bail!("the broker cancelled the consumer"),
        };
        let publishing = publishing.clone();
        let exchange = exchange.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let message_id =
                delivery.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
            let sent = async {
                let confirmation = publishing
                    .basic_publish(
                        exchange.as_ref().into(),
                        "baseline.reply".into(),
                        BasicPublishOptions { mandatory: true, ..Default::default() },
                        &reply_body(&message_id),
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into())
                            .with_correlation_id(message_id.as_str().into()),
                    )
                    .await?
                    .await?;
                anyhow::ensure!(confirmation.is_ack(), "reply nacked");
                anyhow::ensure!(confirmation.take_message().is_none(), "reply unroutable");
                anyhow::Ok(())
            };
            let settled = match sent.await {
                Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                Err(e) => {
                    eprintln!("baseline: {e:#}; handing the delivery back");
                    delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await
                }
            };
            if let Err(e) = settled {
                eprintln!("baseline: settling a delivery: {e}");
            }
        });
    }
}
