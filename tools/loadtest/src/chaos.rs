//! `loadtest chaos` (`make chaos`): CONTRACT §3's accounting under faults.
//!
//! Publishes N messages (10% of them duplicate copies) to the real broker, runs 3
//! `worker run` processes, and meanwhile: kills workers with SIGKILL and restarts
//! them, FLUSHALLs Redis and restarts it, closes every RabbitMQ connection, and
//! restarts PostgreSQL. Then checks that every unique fingerprint has exactly one
//! inbound and one reply row, that every reply was published, and that
//! processed + dead-lettered = unique published; prints one summary line.
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
use std::time::{Duration, Instant};

use anyhow::bail;
use chat_worker::config::{Config, Overrides};
use chat_worker::decode::decode;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use uuid::Uuid;

use crate::fleet::Fleet;
use crate::gateway;

const WORKERS: usize = 3;

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
    let Args { worker: binary, n: total } = args;
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
    let mut fingerprints = HashSet::new();
    let mut bodies = Vec::with_capacity(total);
    for i in 0..total {
        let n = if i < unique { i } else { (i * 7919) % unique };
        let body = json!({
            "message_id": format!("chaos-{n}"), "tenant_id": tenant, "channel": "web",
            "customer": {"external_id": format!("visitor-{}", n % 300)},
            "text": if n % 3 == 0 { "running shoes?" } else { "hello" },
            "received_at": "2026-11-21T10:15:30Z"
        })
        .to_string();
        if let Ok(m) = decode(body.as_bytes()) {
            fingerprints.insert(m.fingerprint().to_string());
        }
        bodies.push(body);
    }
    gateway::publish_all(&channel, &config, &format!("web.{tenant}"), bodies).await?;
    connection.close(200, "published".into()).await?;

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
    for (fault, at) in &faults {
        let target = (*at * unique as f64) as i64;
        wait_for_replies(&database, target, Duration::from_secs(300)).await?;
        eprintln!("chaos: {fault} (at {} replies)", target);
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

    wait_for_replies(&database, unique as i64, Duration::from_secs(600)).await?;
    let pool = chat_worker::store::pool(&database, 2)?;
    // Rows can all be committed while some replies still wait for a retry (a
    // commit whose acknowledgement was lost to the PostgreSQL restart is re-published
    // on the next attempt). Stop the fleet only once the inbound queue and every
    // retry queue have stayed empty for a while.
    let mut queues = vec![config.amqp.inbound_queue.clone()];
    queues.extend(
        (1..config.worker.max_attempts.max(2)).map(|n| format!("{}.{n}", config.amqp.retry_queue_prefix)),
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
    let fingerprints_with_rows: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT fingerprint) FROM messages").fetch_one(&pool).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&pool).await?;
    let dead = queue_depth(&config, &config.amqp.dead_queue).await?;
    let (published_replies, reply_ids) = read_replies(&config, &replies_queue).await?;

    let processed = complete as usize;
    let summary = format!(
        "chaos: published {total}, unique {}, processed {processed}, duplicates skipped {}, dead {dead}, \
         replies published {published_replies} ({} distinct), faults injected {injected}, {:.1}s",
        fingerprints.len(),
        total - processed - dead as usize,
        reply_ids.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{summary}");
    let missing: Vec<&String> =
        fingerprints.iter().filter(|fp| !reply_ids.contains(&format!("reply:{fp}"))).collect();
    if fingerprints_with_rows != complete || rows != 2 * complete {
        bail!(
            "{} fingerprints lack exactly one inbound and one reply row",
            fingerprints_with_rows - complete
        );
    }
    if processed + dead as usize != fingerprints.len() {
        bail!(
            "processed + dead = {} but {} unique messages were published",
            processed + dead as usize,
            fingerprints.len()
        );
    }
    if dead == 0 && !missing.is_empty() {
        bail!(
            "{} processed messages never had their reply published (e.g. {:?})",
            missing.len(),
            missing.first()
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

/// Waits until at least `target` reply rows are committed (PostgreSQL may be
/// restarting meanwhile: errors just mean "look again").
async fn wait_for_replies(database: &str, target: i64, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let count = async {
            let pool = chat_worker::store::pool(database, 1)?;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'out'")
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

/// Drains the replies queue: how many replies were published, and their ids.
async fn read_replies(config: &Config, queue: &str) -> anyhow::Result<(usize, HashSet<String>)> {
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
    let mut count = 0;
    let mut ids = HashSet::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
        count += 1;
        if let Some(id) = delivery.properties.message_id() {
            ids.insert(id.as_str().to_owned());
        }
    }
    let _ = channel.queue_delete(queue.into(), Default::default()).await;
    let _ = connection.close(200, "".into()).await;
    Ok((count, ids))
}
