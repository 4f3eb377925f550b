//! `loadtest chaos` (`make chaos`): CONTRACT §3's accounting under faults.
//!
//! Publishes N messages (10% of them duplicate copies) to the real broker, runs 3
//! `worker run` processes, and meanwhile: kills workers with SIGKILL and restarts
//! them, FLUSHALLs Redis and restarts it, closes every RabbitMQ connection, and
//! restarts PostgreSQL. Then checks that every unique fingerprint has exactly one
//! inbound and one reply row, that every reply was published, that
//! processed + dead-lettered = unique published, and that each conversation's
//! replies came in the order its messages were first published (`crate::order`);
//! prints one summary line.
//!
//! Customers (300 of them) send one message at a time, or (`--burst K`) bursts of
//! K messages `--burst-gap-ms` apart. The messages are all published before the
//! fleet starts, so 3 workers take a backlog at once; with `--paced-rate R` they
//! are published at R messages/s while the fleet runs instead (riding out the
//! dropped connections), so the order checked is the order the workers took
//! them from the queue (CONTRACT §3, Conversations), and a conversation out of
//! order fails the run; of a backlog it is only reported, since the workers
//! order one that several processes take at once by their own intake times.
//! A late reply is reported with the fault it followed (by its place in the
//! replies queue): where it arrived, not necessarily where it was overtaken.
//!
//! Through the fleet (`make chaos-short-fleet`: `WORKER__REDIS__MODE=cluster`,
//! the workers' database behind PgBouncer), the Redis faults act on the Redis
//! Cluster of `scripts/services.sh fleet` (FLUSHALL on every primary; one primary
//! restarted, back empty, until `cluster_state:ok`), PostgreSQL restarts behind
//! PgBouncer, and this tool seeds and counts over `DATABASE_LISTEN_URL`, direct.
//!
//! It disturbs the machine's shared services: run it alone
//! (`scripts/loadtest.sh chaos`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chat_worker::config::{Config, Overrides};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, PublisherConfirm};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::fleet::Fleet;
use crate::gateway;
use crate::order::{self, Answered, Order, Verdict};

const WORKERS: usize = 3;
const CUSTOMERS: usize = 300;

/// The backlog is laid out as a gateway publishing this many messages/s would
/// send it (bursts overlapping), as the bench's is.
const BACKLOG_RATE: f64 = 1_000.0;

/// The services script, whose `cluster-flushall` and `cluster-restart` are the
/// Redis faults on a cluster (it knows how its nodes are started).
const SERVICES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services.sh");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `worker` binary to run.
    #[arg(value_name = "WORKER_BINARY")]
    worker: PathBuf,
    /// Messages to publish (10% of them copies).
    #[arg(value_name = "N")]
    n: usize,
    /// Above 1: customers send bursts of this many messages (distinct texts).
    #[arg(long, default_value_t = 0)]
    burst: usize,
    /// Between two messages of a burst, ms.
    #[arg(long, default_value_t = 20)]
    burst_gap_ms: u64,
    /// Above 0: publish at this many messages/s while the fleet runs, instead of
    /// all before it starts.
    #[arg(long, default_value_t = 0.0)]
    paced_rate: f64,
}

fn shell(command: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("bash").args(["-c", command]).status()?;
    if !status.success() {
        bail!("`{command}` failed: {status}");
    }
    Ok(())
}

/// Whether the workers use a Redis Cluster (`make chaos-short-fleet`).
fn cluster_mode() -> bool {
    std::env::var("WORKER__REDIS__MODE").is_ok_and(|mode| mode == "cluster")
}

/// Where this tool seeds and counts: PostgreSQL itself. Through the fleet the
/// workers' `database.url` is PgBouncer in transaction mode, where sqlx's named
/// prepared statements break; `DATABASE_LISTEN_URL` is direct, and
/// scripts/isolated.sh points it at the run's database (checked here).
fn direct_database_url(config: &Config) -> anyhow::Result<String> {
    let Some(url) = std::env::var("DATABASE_LISTEN_URL").ok().filter(|url| !url.is_empty()) else {
        return Ok(config.database.url.clone());
    };
    let direct = testkit::urls::database_name(&url)?;
    let workers = testkit::urls::database_name(&config.database.url)?;
    if direct != workers {
        bail!("DATABASE_LISTEN_URL names database `{direct}`, the workers' database.url `{workers}`");
    }
    Ok(url)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args { worker: binary, n: total, burst, burst_gap_ms, paced_rate } = args;
    let config = Config::load(None, &Overrides::default())?;
    let database = direct_database_url(&config)?;
    let started = Instant::now();

    let pool = chat_worker::store::pool(&database, 2)?;
    let tenant = Uuid::new_v4();
    testkit::seed::tenant(&pool, tenant, "Chaos Shop").await?;
    sqlx::query("INSERT INTO products (tenant_id, name, category, price, currency) VALUES ($1, 'Trail Runner X', 'running shoes', 4500, 'KES')")
        .bind(tenant)
        .execute(&pool)
        .await?;
    pool.close().await;

    let replies_queue = format!("{}.chaos-replies", config.amqp.outbound_exchange);
    // The replies survive everything below on a durable queue; read them afterwards.
    let (connection, channel) = gateway::gateway(&config, &replies_queue, true).await?;

    // 10% of the messages are copies of earlier ones.
    let unique = total - total / 10;
    let shape = Shape { burst: burst.max(1), gap: Duration::from_millis(burst_gap_ms) };
    let plan = shape.plan(tenant, total, if paced_rate > 0.0 { paced_rate } else { BACKLOG_RATE });
    let mut fingerprints = HashSet::new();
    let mut order = Order::default();
    for (_, body) in &plan {
        let (fingerprint, conversation) =
            order::identity(body.as_bytes()).context("a chaos message without a fingerprint")?;
        order.published(&fingerprint, &conversation);
        fingerprints.insert(fingerprint);
    }
    let routing_key = format!("web.{tenant}");
    let publishing = if paced_rate > 0.0 {
        connection.close(200, "paced".into()).await?;
        eprintln!("chaos: publishing {total} messages at {paced_rate:.0}/s while the fleet runs");
        let (url, exchange) = (config.amqp.url.clone(), config.amqp.inbound_exchange.clone());
        Some(tokio::spawn(publish_paced(url, exchange, routing_key, plan)))
    } else {
        gateway::publish_all(&channel, &config, &routing_key, plan.into_iter().map(|(_, body)| body)).await?;
        connection.close(200, "published".into()).await?;
        None
    };

    // The workers' output is the run's own (their warnings while faults last).
    let worker_args = |name: &str| vec!["run".to_owned(), "--worker-id".to_owned(), name.to_owned()];
    let mut fleet = Fleet::start(&binary, "chaos", WORKERS, worker_args, &[], None)?;

    let faults: Vec<(&str, f64)> = vec![
        ("kill -9 worker 0 and restart it", 0.10),
        ("FLUSHALL redis", 0.25),
        ("restart redis", 0.40),
        ("rabbitmqctl close_all_connections", 0.55),
        ("restart postgresql", 0.70),
        ("kill -9 workers 1 and 2 and restart them", 0.85),
    ];
    let (flush_redis, restart_redis) = if cluster_mode() {
        (format!("'{SERVICES}' cluster-flushall"), format!("'{SERVICES}' cluster-restart"))
    } else {
        (
            "redis-cli FLUSHALL >/dev/null".to_owned(),
            "redis-cli shutdown nosave >/dev/null 2>&1 || true; sleep 0.5; \
             mkdir -p /var/lib/redis /var/log/redis; redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/chat-worker.log >/dev/null"
                .to_owned(),
        )
    };
    let pg_version = std::fs::read_dir("/etc/postgresql")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .unwrap_or_default();
    let mut injected = 0;
    // Each fault, with how many replies the replies queue held when it came.
    let mut boundaries: Vec<(&str, Option<u32>)> = Vec::new();
    for (fault, at) in &faults {
        let target = (*at * unique as f64) as i64;
        wait_for_replies(&database, target, Duration::from_secs(300)).await?;
        eprintln!("chaos: {fault} (at {} replies)", target);
        boundaries.push((fault, queue_depth(&config, &replies_queue).await.ok()));
        match *fault {
            "kill -9 worker 0 and restart it" => fleet.kill_and_restart(0).await?,
            "FLUSHALL redis" => shell(&flush_redis)?,
            "restart redis" => shell(&restart_redis)?,
            "rabbitmqctl close_all_connections" => {
                shell("rabbitmqctl -q close_all_connections 'chaos test' >/dev/null")?
            }
            "restart postgresql" => {
                shell(&format!("pg_ctlcluster --skip-systemctl-redirect {pg_version} main restart"))?
            }
            _ => {
                fleet.kill_and_restart(1).await?;
                fleet.kill_and_restart(2).await?;
            }
        }
        injected += 1;
    }

    if let Some(publishing) = publishing {
        publishing.await.context("the publishing task")??;
    }
    wait_for_replies(&database, unique as i64, Duration::from_secs(600)).await?;
    let pool = chat_worker::store::pool(&database, 2)?;
    // Rows can all be committed while some replies still wait for a retry (a
    // commit whose acknowledgement was lost to the PostgreSQL restart is re-published
    // on the next attempt). Stop the fleet only once the inbound queue and every
    // retry queue have stayed empty for a while.
    let mut queues = vec![config.amqp.inbound_queue.clone()];
    queues.extend(
        (0..config.worker.max_attempts.max(2)).map(|n| format!("{}.{n}", config.amqp.retry_queue_prefix)),
    );
    let quiet = Instant::now();
    let mut empty_polls = 0;
    while empty_polls < 8 && quiet.elapsed() < Duration::from_secs(180) {
        let mut depth = 0u64;
        for queue in &queues {
            depth += u64::from(queue_depth(&config, queue).await.unwrap_or(1));
        }
        empty_polls = if depth == 0 { empty_polls + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // How they stop is not what this run checks: the rows and replies below are.
    let _ = fleet.stop(Duration::from_secs(60)).await;

    let complete: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT fingerprint FROM messages GROUP BY fingerprint
           HAVING count(*) FILTER (WHERE direction = 'in') = 1 AND count(*) FILTER (WHERE direction = 'out') = 1) f",
    )
    .fetch_one(&pool)
    .await?;
    // Burst coalescing (turns.coalesce_ms): an inbound row answered by its burst's
    // reply (burst_reply names the message whose reply it is), with no reply row.
    let coalesced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT fingerprint FROM messages GROUP BY fingerprint
           HAVING count(*) FILTER (WHERE direction = 'in' AND burst_reply <> '') = 1
              AND count(*) FILTER (WHERE direction = 'in') = 1
              AND count(*) FILTER (WHERE direction = 'out') = 0) f",
    )
    .fetch_one(&pool)
    .await?;
    let fingerprints_with_rows: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT fingerprint) FROM messages").fetch_one(&pool).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&pool).await?;
    let dead = queue_depth(&config, &config.amqp.dead_queue).await?;
    let replies = read_replies(&config, &replies_queue).await?;
    let published_replies = replies.len();
    let mut reply_ids = HashSet::new();
    let mut answered = HashSet::new();
    // Out-of-order replies by the fault they followed (index 0: before the first).
    let mut late_by_phase = vec![0usize; boundaries.len() + 1];
    for (position, body) in replies.iter().enumerate() {
        let Some(reply) = Answered::parse(body) else { continue };
        reply_ids.insert(reply.reply_id.clone());
        answered.extend(reply.fingerprints.iter().cloned());
        if order.replied(&reply) == Verdict::OutOfOrder {
            let after = boundaries.iter().filter(|(_, depth)| depth.is_some_and(|d| d as usize <= position));
            let phase = after.count();
            late_by_phase[phase] += 1;
            // A few of each phase, named, to find them in the workers' logs.
            if late_by_phase[phase] <= 3 {
                let answers: Vec<&str> =
                    reply.fingerprints.iter().map(|fp| fp.get(..12).unwrap_or(fp)).collect();
                println!("chaos: a late reply after fault {phase} answers {}", answers.join(" "));
            }
        }
    }
    let in_order = order.tally();

    let processed = complete as usize;
    let coalesced = coalesced as usize;
    let summary = format!(
        "chaos: published {total}, unique {}, processed {processed}, coalesced {coalesced}, duplicates skipped {}, \
         dead {dead}, replies published {published_replies} ({} distinct), faults injected {injected}, {:.1}s; {}, {}",
        fingerprints.len(),
        total.saturating_sub(processed + coalesced + dead as usize),
        reply_ids.len(),
        started.elapsed().as_secs_f64(),
        shape.describe(paced_rate),
        in_order.line(),
    );
    println!("{summary}");
    if !in_order.holds() {
        let phases: Vec<String> = late_by_phase
            .iter()
            .enumerate()
            .filter(|(_, late)| **late > 0)
            .map(|(i, late)| match i {
                0 => format!("{late} before the first fault"),
                i => format!("{late} after `{}`", boundaries[i - 1].0),
            })
            .collect();
        println!("chaos: late replies by phase: {}", phases.join(", "));
    }
    let missing: Vec<&String> = fingerprints.iter().filter(|fp| !answered.contains(*fp)).collect();
    let settled = complete + coalesced as i64;
    if fingerprints_with_rows != settled || rows != 2 * complete + coalesced as i64 {
        bail!(
            "{} fingerprints lack exactly one inbound and one reply row (or, coalesced, one inbound row answered by its burst's reply)",
            fingerprints_with_rows - settled
        );
    }
    if processed + coalesced + dead as usize != fingerprints.len() {
        bail!(
            "processed + coalesced + dead = {} but {} unique messages were published",
            processed + coalesced + dead as usize,
            fingerprints.len()
        );
    }
    if dead == 0 && !missing.is_empty() {
        bail!(
            "{} processed or coalesced messages never had a reply answering them published (e.g. {:?})",
            missing.len(),
            missing.first()
        );
    }
    if !in_order.holds() {
        if paced_rate > 0.0 {
            bail!("{} conversations got their replies out of publish order", in_order.out_of_order);
        }
        // A backlog that 3 processes take at once is ordered by each one's intake
        // time (README, Turns), not by the queue: publish order is not the order
        // they took it in, so it is reported here, not judged.
        println!(
            "chaos: reply order not judged: every message was published before the fleet started \
             (PACED_RATE=R publishes them while it runs, and fails the run on a conversation out of order)"
        );
    }
    Ok(())
}

async fn queue_depth(config: &Config, queue: &str) -> anyhow::Result<u32> {
    let connection = Connection::connect(&config.amqp.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let _ = connection.close(200, "".into()).await;
    Ok(q.message_count())
}

/// Waits until at least `target` messages are answered: a reply row committed,
/// or (coalesced) an inbound row its burst's reply answered (PostgreSQL may be
/// restarting meanwhile: errors just mean "look again").
async fn wait_for_replies(database: &str, target: i64, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let count = async {
            let pool = chat_worker::store::pool(database, 1)?;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM messages WHERE direction = 'out' OR (direction = 'in' AND burst_reply <> '')",
            )
                .fetch_one(&pool)
                .await?;
            pool.close().await;
            anyhow::Ok(n)
        }
        .await
        .unwrap_or(-1);
        if count >= target {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("only {count} of {target} replies after {:?}", limit);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drains the replies queue: every reply's body, in the order they were published.
async fn read_replies(config: &Config, queue: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let connection = Connection::connect(&config.amqp.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "chaos".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let mut bodies = Vec::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
        bodies.push(delivery.data);
    }
    let _ = channel.queue_delete(queue.into(), Default::default()).await;
    let _ = connection.close(200, "".into()).await;
    Ok(bodies)
}

/// What the customers send: one message at a time, or bursts.
struct Shape {
    /// Messages per burst (1: single messages).
    burst: usize,
    gap: Duration,
}

/// Distinct texts for the messages of a burst (beyond five, numbered).
const BURST_TEXTS: [&str; 5] = ["hello", "running shoes?", "under 5000 please", "do you deliver?", "thanks"];

impl Shape {
    /// `total` message bodies (the last 10% copies of earlier ones), each with
    /// when it is due at `rate` messages/s, in the order they are due.
    ///
    /// Single messages: message n is customer n % 300's ("hello", or "running
    /// shoes?" every third). Bursts: burst b (messages b·K .. b·K+K-1) is customer
    /// b % 300's, begun at rate/K bursts a second, its messages `gap` apart.
    fn plan(&self, tenant: Uuid, total: usize, rate: f64) -> Vec<(Duration, String)> {
        let unique = total - total / 10;
        let k = self.burst.max(1);
        let body = |n: usize| {
            let (customer, text) = if k == 1 {
                (
                    n % CUSTOMERS,
                    if n.is_multiple_of(3) { "running shoes?".to_owned() } else { "hello".to_owned() },
                )
            } else {
                let j = n % k;
                let text = BURST_TEXTS[j % BURST_TEXTS.len()];
                let text =
                    if j < BURST_TEXTS.len() { text.to_owned() } else { format!("{text} ({})", j + 1) };
                ((n / k) % CUSTOMERS, text)
            };
            json!({
                "message_id": format!("chaos-{n}"), "tenant_id": tenant, "channel": "web",
                "customer": {"external_id": format!("visitor-{customer}")},
                "text": text,
                "received_at": "2026-11-21T10:15:30Z"
            })
            .to_string()
        };
        let per_message = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let mut fresh: Vec<(Duration, usize)> =
            (0..unique).map(|n| (per_message * (n - n % k) as u32 + self.gap * (n % k) as u32, n)).collect();
        fresh.sort();
        let end = fresh.last().map_or(Duration::ZERO, |(at, _)| *at);
        let copies =
            (unique..total).map(|i| (end + per_message * (i - unique + 1) as u32, (i * 7919) % unique));
        fresh.into_iter().chain(copies).map(|(at, n)| (at, body(n))).collect()
    }

    fn describe(&self, paced_rate: f64) -> String {
        let when = if paced_rate > 0.0 {
            format!("published at {paced_rate:.0}/s while the fleet ran")
        } else {
            "all published before the fleet started".to_owned()
        };
        match self.burst {
            0 | 1 => format!("single messages, {when}"),
            k => format!("bursts of {k} {} ms apart, {when}", self.gap.as_millis()),
        }
    }
}

/// Publishes `plan` to the inbound exchange, each body when it is due from now,
/// persistent and confirmed, riding out lost connections (the faults close them):
/// after one, it publishes again from the first message not confirmed, so a
/// message may arrive twice (a copy, as from a webhook provider), never not at all.
async fn publish_paced(
    url: String,
    exchange: String,
    routing_key: String,
    plan: Vec<(Duration, String)>,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let confirmed = Arc::new(AtomicUsize::new(0));
    let mut sessions = 0;
    while confirmed.load(Ordering::SeqCst) < plan.len() {
        sessions += 1;
        match publish_session(&url, &exchange, &routing_key, &plan, started, &confirmed).await {
            Ok(()) => {}
            Err(e) if sessions < 100 => {
                eprintln!(
                    "chaos: publishing: {e:#}; again from message {}",
                    confirmed.load(Ordering::SeqCst)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.context("publishing: 100 connections lost")),
        }
    }
    Ok(())
}

/// One connection's worth of [`publish_paced`]: from the first unconfirmed
/// message on; `confirmed` is how many of the plan's first messages are.
async fn publish_session(
    url: &str,
    exchange: &str,
    routing_key: &str,
    plan: &[(Duration, String)],
    started: tokio::time::Instant,
    confirmed: &Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    // Confirms come in publish order: the checker moves `confirmed` past each.
    let (confirms, mut pending) = mpsc::channel::<(usize, PublisherConfirm)>(4_096);
    let counter = confirmed.clone();
    let mut checker = tokio::spawn(async move {
        while let Some((i, confirm)) = pending.recv().await {
            anyhow::ensure!(confirm.await?.is_ack(), "rabbitmq refused (nacked) message {i}");
            counter.store(i + 1, Ordering::SeqCst);
        }
        anyhow::Ok(())
    });
    let publishing = async {
        for (i, (at, body)) in plan.iter().enumerate().skip(confirmed.load(Ordering::SeqCst)) {
            tokio::time::sleep_until(started + *at).await;
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            if confirms.send((i, confirm)).await.is_err() {
                break; // the checker stopped at a failed confirm: it says why
            }
        }
        anyhow::Ok(())
    };
    let published = publishing.await;
    drop(confirms);
    // A lost connection fails its confirms; the timeout is a backstop.
    let checked = match tokio::time::timeout(Duration::from_secs(30), &mut checker).await {
        Ok(joined) => joined.context("the confirm checker")?,
        Err(_) => {
            checker.abort();
            Err(anyhow::anyhow!("no publisher confirm within 30 s"))
        }
    };
    let _ = connection.close(200, "published".into()).await;
    published.and(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer_and_text(body: &str) -> (String, String) {
        let m: serde_json::Value = serde_json::from_str(body).expect("json");
        (
            m["customer"]["external_id"].as_str().unwrap_or_default().into(),
            m["text"].as_str().unwrap_or_default().into(),
        )
    }

    #[test]
    fn single_messages_go_round_the_customers_in_order_and_copies_come_last() {
        let shape = Shape { burst: 1, gap: Duration::from_millis(20) };
        let plan = shape.plan(Uuid::nil(), 1_000, BACKLOG_RATE);
        assert_eq!(plan.len(), 1_000);
        assert_eq!(customer_and_text(&plan[301].1), ("visitor-1".into(), "hello".into()));
        assert_eq!(customer_and_text(&plan[300].1), ("visitor-0".into(), "running shoes?".into()));
        let fresh: HashSet<&str> = plan[..900].iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(fresh.len(), 900);
        assert!(plan[900..].iter().all(|(_, b)| fresh.contains(b.as_str())), "the last 10% are copies");
        assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn a_burst_is_one_customer_s_distinct_texts_gap_apart_overlapping_other_bursts() {
        let shape = Shape { burst: 5, gap: Duration::from_millis(20) };
        let plan = shape.plan(Uuid::nil(), 3_000, 200.0);
        assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0), "in the order they are due");
        let of = |customer: &str| -> Vec<(Duration, String)> {
            plan[..2_700]
                .iter()
                .filter_map(|(at, b)| {
                    let (c, text) = customer_and_text(b);
                    (c == customer).then_some((*at, text))
                })
                .collect()
        };
        // Bursts 0 and 300 are visitor-0's, 1,500 messages (7.5 s) apart at 200 messages/s.
        let visitor0 = of("visitor-0");
        assert_eq!(visitor0.len(), 10);
        let texts: Vec<&str> = visitor0[..5].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, BURST_TEXTS);
        assert_eq!(visitor0[1].0 - visitor0[0].0, Duration::from_millis(20));
        assert_eq!(visitor0[5].0, Duration::from_millis(7_500));
        // Burst 1 begins 25 ms after burst 0, so their messages interleave.
        let first_of_visitor1 = plan.iter().position(|(_, b)| customer_and_text(b).0 == "visitor-1");
        assert!(first_of_visitor1.is_some_and(|i| i < 5));
    }
}
