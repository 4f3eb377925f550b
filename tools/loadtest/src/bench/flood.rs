//! `make bench FLOOD=N` (`loadtest bench run --flood N`): two tenants sharing
//! the fleet (issue 16, tenant fairness). Tenant B sends a message every
//! 100 ms; tenant A floods N messages at once. Three rounds on one fleet
//! (`--workers`, 2 by default here, answering through the http stub after
//! `--responder-delay-ms`, 200 ms by default here):
//!
//! 1. B alone for 5 s: B's publish -> reply latency unloaded;
//! 2. A alone: N messages at once, A's drain rate (first publish to last reply);
//! 3. A's flood again with B sending throughout: B's latency and A's rate.
//!
//! The marks: B's p99 in round 3 within 3× round 1's, and A's rate
//! in round 3 at least 90% of round 2's. Every message of every round gets
//! exactly one reply, or the run fails (exit 3). Each message has a customer
//! of its own, so no conversation's turns hold the flood back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chat_worker::config::Config;
use chat_worker::model::Fingerprint;
use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use testkit::gateway::{Message, Publisher};
use uuid::Uuid;

use super::seed;
use crate::fleet::Fleet;
use crate::order::Answered;

const B_EVERY: Duration = Duration::from_millis(100);
const B_ALONE: Duration = Duration::from_secs(5);
/// No reply for this long ends a round as failed.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    A,
    B,
}

struct Sent {
    who: Who,
    round: u8,
    published: Instant,
    replied: Option<Instant>,
    replies: u32,
}

#[derive(Default)]
struct Book {
    sent: HashMap<String, Sent>,
    stray: u64,
}

type Shared = Arc<Mutex<Book>>;

fn book(shared: &Shared) -> std::sync::MutexGuard<'_, Book> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What one round measured.
struct Round {
    a_rate: Option<f64>,
    b_latency: Vec<Duration>,
}

pub struct Setup<'a> {
    pub config: &'a Config,
    pub worker: &'a std::path::Path,
    pub workers: usize,
    pub env: Vec<(String, String)>,
    pub log_dir: &'a std::path::Path,
    pub flood: usize,
}

/// Runs the three rounds; returns whether every message got exactly one reply.
pub async fn run(setup: Setup<'_>, pool: &sqlx::PgPool) -> anyhow::Result<bool> {
    let customers = seed::seed(pool).await.context("seeding (did `worker migrate` run?)")?;
    let a = customers.first().context("no seeded tenant")?.tenant_id;
    let b = customers.iter().map(|c| c.tenant_id).find(|t| *t != a).context("one seeded tenant only")?;
    let config = setup.config;
    let replies_queue = format!("{}.bench-replies", config.amqp.outbound_exchange);
    let (connection, channel) = crate::gateway::gateway(config, &replies_queue, false).await?;
    let shared: Shared = Arc::default();
    collect(&connection.create_channel().await?, &replies_queue, shared.clone()).await?;

    let worker_args = |name: &str| vec!["run".to_owned(), "--worker-id".to_owned(), name.to_owned()];
    let mut fleet = Fleet::start(
        setup.worker,
        "flood-worker",
        setup.workers,
        worker_args,
        &setup.env,
        Some(setup.log_dir),
    )?;
    let exchange = config.amqp.inbound_exchange.clone();
    let mut publisher = Publisher::new(channel.clone(), &exchange);

    // Warm: both tenants' catalogs cached, connections open.
    for i in 0..20 {
        let (who, tenant) = if i % 2 == 0 { (Who::A, a) } else { (Who::B, b) };
        send(&shared, &mut publisher, who, 0, tenant, &format!("warm-{i}")).await?;
    }
    wait_round(&shared, 0, &mut fleet).await?;

    println!(
        "flood round 1: tenant B alone, a message every {} ms for {} s",
        B_EVERY.as_millis(),
        B_ALONE.as_secs()
    );
    let b1_channel = connection.create_channel().await?;
    b1_channel.confirm_select(Default::default()).await?;
    let mut b_publisher = Publisher::new(b1_channel, &exchange);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < B_ALONE {
        send(&shared, &mut b_publisher, Who::B, 1, b, &format!("b1-{i}")).await?;
        i += 1;
        tokio::time::sleep(B_EVERY).await;
    }
    b_publisher.finish().await?;
    let alone = wait_round(&shared, 1, &mut fleet).await?;

    println!("flood round 2: tenant A alone, {} messages at once", setup.flood);
    flood_a(config, &shared, 2, a, setup.flood).await?;
    let solo = wait_round(&shared, 2, &mut fleet).await?;

    println!(
        "flood round 3: tenant A's {} messages at once, tenant B every {} ms",
        setup.flood,
        B_EVERY.as_millis()
    );
    // B's gateway is not A's: a connection of its own (on a shared one,
    // B's publishes and its replies would queue behind A's 20,000 in the bench's socket).
    let b_connection = Connection::connect(&config.amqp.url, ConnectionProperties::default()).await?;
    let b_channel = b_connection.create_channel().await?;
    b_channel.confirm_select(Default::default()).await?;
    let b_shared = shared.clone();
    let b_exchange = exchange.clone();
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b_flooding = flooding.clone();
    let b_sender = tokio::spawn(async move {
        let mut publisher = Publisher::new(b_channel, &b_exchange);
        let mut i = 0;
        while b_flooding.load(std::sync::atomic::Ordering::Relaxed) {
            send(&b_shared, &mut publisher, Who::B, 3, b, &format!("b3-{i}")).await?;
            i += 1;
            tokio::time::sleep(B_EVERY).await;
        }
        publisher.finish().await
    });
    let publishing = flood_a(config, &shared, 3, a, setup.flood).await?;
    println!("round 3: A's {} messages published in {:.1} s", setup.flood, publishing.as_secs_f64());
    // B keeps sending until A's flood is answered.
    wait_for(&shared, 3, Some(Who::A), &mut fleet).await?;
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    b_sender.await.context("B's publisher")??;
    let _ = b_connection.close(200, "flood done".into()).await;
    let shared_round = wait_round(&shared, 3, &mut fleet).await?;
    publisher.finish().await?;
    let problems = fleet.stop(Duration::from_secs(config.worker.shutdown_timeout_secs + 15)).await;

    let (twice, missing, stray) = {
        let book = book(&shared);
        let twice = book.sent.values().filter(|s| s.replies > 1).count();
        let missing = book.sent.values().filter(|s| s.replies == 0).count();
        (twice, missing, book.stray)
    };
    let alone_p = percentiles(&alone.b_latency);
    let shared_p = percentiles(&shared_round.b_latency);
    let solo_rate = solo.a_rate.unwrap_or(0.0);
    let shared_rate = shared_round.a_rate.unwrap_or(0.0);
    let b_ratio = shared_p.2 / alone_p.2.max(1e-9);
    let a_ratio = shared_rate / solo_rate.max(1e-9);
    println!();
    println!(
        "| tenant-fairness flood: {} worker(s), N={} | p50 ms | p95 ms | p99 ms | A msgs/s |",
        setup.workers, setup.flood
    );
    println!("|---|---|---|---|---|");
    println!(
        "| B alone ({} msgs) | {:.1} | {:.1} | {:.1} | |",
        alone.b_latency.len(),
        alone_p.0,
        alone_p.1,
        alone_p.2
    );
    println!("| A alone | | | | {solo_rate:.0} |");
    println!(
        "| A flooding, B beside it ({} msgs of B) | {:.1} | {:.1} | {:.1} | {shared_rate:.0} |",
        shared_round.b_latency.len(),
        shared_p.0,
        shared_p.1,
        shared_p.2
    );
    println!(
        "B's p99 with the flood: {b_ratio:.2}× alone (target ≤ 3); A's rate beside B: {:.0}% of alone (target ≥ 90%)",
        a_ratio * 100.0
    );
    println!(
        "RESULT flood={} workers={} b_alone_p50_ms={:.1} b_alone_p99_ms={:.1} b_flood_p50_ms={:.1} b_flood_p99_ms={:.1} b_p99_ratio={b_ratio:.2} a_solo_msgs_per_s={solo_rate:.0} a_shared_msgs_per_s={shared_rate:.0} a_rate_ratio={a_ratio:.3} replied_twice={twice} missing={missing} stray={stray} ok={}",
        setup.flood,
        setup.workers,
        alone_p.0,
        alone_p.2,
        shared_p.0,
        shared_p.2,
        twice == 0 && missing == 0 && problems.is_empty()
    );
    for problem in &problems {
        eprintln!("bench: {problem}");
    }
    crate::gateway::remove_topology(config, &channel).await;
    let _ = connection.close(200, "flood done".into()).await;
    Ok(twice == 0 && missing == 0 && problems.is_empty())
}

/// Publishes tenant A's `n` messages of `round` at once, as its own gateway
/// would: from a connection of its own, on a thread of its own, so that
/// building and publishing them does not hold up the stub, the proxy, B's
/// publishes or the replies, which share this process's runtime. Returns how
/// long publishing took.
async fn flood_a(config: &Config, shared: &Shared, round: u8, a: Uuid, n: usize) -> anyhow::Result<Duration> {
    let (url, exchange, shared) =
        (config.amqp.url.clone(), config.amqp.inbound_exchange.clone(), shared.clone());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("flood-a".into()).spawn(move || {
        let flooded = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| {
                runtime.block_on(async {
                    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
                    let channel = connection.create_channel().await?;
                    channel.confirm_select(Default::default()).await?;
                    let mut publisher = Publisher::new(channel, &exchange);
                    let started = Instant::now();
                    for i in 0..n {
                        send(&shared, &mut publisher, Who::A, round, a, &format!("a{round}-{i}")).await?;
                    }
                    let took = started.elapsed();
                    publisher.finish().await?;
                    let _ = connection.close(200, "flood done".into()).await;
                    Ok(took)
                })
            });
        let _ = done_tx.send(flooded);
    })?;
    done_rx.await.context("tenant A's publisher thread")?
}

/// Publishes one message of `who` from a customer of its own.
async fn send(
    shared: &Shared,
    publisher: &mut Publisher,
    who: Who,
    round: u8,
    tenant: Uuid,
    id: &str,
) -> anyhow::Result<()> {
    let (channel, customer, text) = ("web", format!("flood-{id}"), "do you have running shoes?");
    let tenant_text = tenant.to_string();
    let fingerprint = Fingerprint::of(&tenant_text, channel, &customer, id, text);
    let body = json!({
        "message_id": id, "tenant_id": tenant, "channel": channel,
        "customer": { "external_id": customer, "name": "Flood" }, "conversation_id": null,
        "text": text, "received_at": chrono::Utc::now().to_rfc3339(), "attachments": [], "metadata": {}
    });
    let message = Message {
        id: id.to_owned(),
        routing_key: format!("{channel}.{tenant}"),
        body: body.to_string().into_bytes(),
    };
    book(shared).sent.insert(
        fingerprint.as_str().to_owned(),
        Sent { who, round, published: Instant::now(), replied: None, replies: 0 },
    );
    publisher.publish(&message).await
}

/// Marks replies as they arrive.
async fn collect(channel: &lapin::Channel, queue: &str, shared: Shared) -> anyhow::Result<()> {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "flood-replies".into(),
            lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let now = Instant::now();
            let mut book = book(&shared);
            let Some(reply) = Answered::parse(&delivery.data) else {
                book.stray += 1;
                continue;
            };
            for fp in &reply.fingerprints {
                match book.sent.get_mut(fp) {
                    Some(sent) => {
                        sent.replies += 1;
                        sent.replied.get_or_insert(now);
                    }
                    None => book.stray += 1,
                }
            }
        }
    });
    Ok(())
}

/// Waits until every message of `round` (of `who`, or anyone's) is replied to.
async fn wait_for(shared: &Shared, round: u8, who: Option<Who>, fleet: &mut Fleet) -> anyhow::Result<()> {
    let mut progress = (usize::MAX, Instant::now());
    loop {
        let left = {
            let book = book(shared);
            book.sent
                .values()
                .filter(|s| s.round == round && who.is_none_or(|w| s.who == w) && s.replied.is_none())
                .count()
        };
        if left == 0 {
            return Ok(());
        }
        fleet.check_running()?;
        if left != progress.0 {
            progress = (left, Instant::now());
        } else if progress.1.elapsed() > STALL {
            anyhow::bail!("round {round}: no reply for {} s, {left} messages unanswered", STALL.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_round(shared: &Shared, round: u8, fleet: &mut Fleet) -> anyhow::Result<Round> {
    wait_for(shared, round, None, fleet).await?;
    let book = book(shared);
    let of = |who: Who| book.sent.values().filter(move |s| s.round == round && s.who == who);
    let mut b_latency: Vec<Duration> =
        of(Who::B).filter_map(|s| s.replied.map(|r| r.saturating_duration_since(s.published))).collect();
    b_latency.sort();
    let first = of(Who::A).map(|s| s.published).min();
    let last = of(Who::A).filter_map(|s| s.replied).max();
    // The slowest of B's, with when they were published in the round (from
    // A's first publish): where in the flood B's tail comes from.
    if let Some(first) = first {
        let mut slowest: Vec<(Duration, f64)> = of(Who::B)
            .filter_map(|s| {
                let latency = s.replied?.saturating_duration_since(s.published);
                let at = s.published.checked_duration_since(first).map_or(0.0, |d| d.as_secs_f64());
                Some((latency, at))
            })
            .collect();
        slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
        let shown: Vec<String> =
            slowest.iter().take(8).map(|(l, at)| format!("{} ms at {at:.1} s", l.as_millis())).collect();
        if !shown.is_empty() {
            println!("round {round}: B's slowest: {}", shown.join(", "));
        }
    }
    let count = of(Who::A).count();
    let a_rate = match (first, last) {
        (Some(first), Some(last)) => {
            Some(count as f64 / last.saturating_duration_since(first).as_secs_f64().max(1e-3))
        }
        _ => None,
    };
    Ok(Round { a_rate, b_latency })
}

/// p50, p95, p99 in ms.
fn percentiles(sorted: &[Duration]) -> (f64, f64, f64) {
    let at = |q: f64| {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.95), at(0.99))
}
