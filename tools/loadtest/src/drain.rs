//! `loadtest drain` (`make drain`): how fast one `worker run` drains a backlog.
//!
//! Publishes N unique messages (from 500 customers of one tenant), then starts the
//! worker binary, waits for all N replies on a queue bound to the outbound
//! exchange, stops the worker with SIGTERM, and prints messages per second.
//! Names, database and prefix come from the environment (see
//! `scripts/loadtest.sh drain`), so the run never touches the real queues.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_worker::config::{Config, Overrides};
use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use serde_json::json;
use uuid::Uuid;

use crate::gateway;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `worker` binary to run.
    #[arg(value_name = "WORKER_BINARY")]
    worker: PathBuf,
    /// Messages to publish, then drain.
    #[arg(value_name = "N")]
    n: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args { worker: binary, n } = args;
    let config = Config::load(None, &Overrides::default())?;

    let pool = chat_worker::store::pool(&config.database.url, 2)?;
    let tenant = Uuid::new_v4();
    testkit::seed::tenant(&pool, tenant, "Drain Shop").await?;

    let replies_queue = format!("{}.drain-replies", config.amqp.outbound_exchange);
    let (_connection, channel) = gateway::gateway(&config, &replies_queue, false).await?;

    let publish_started = Instant::now();
    let bodies = (0..n).map(|i| {
        json!({
            "message_id": format!("drain-{i}"),
            "tenant_id": tenant,
            "channel": "web",
            "customer": { "external_id": format!("visitor-{}", i % 500) },
            "text": format!("Hello, question {i}"),
            "received_at": chrono::Utc::now().to_rfc3339(),
        })
        .to_string()
    });
    gateway::publish_all(&channel, &config, &format!("web.{tenant}"), bodies).await?;
    println!("published {n} messages in {:.2}s", publish_started.elapsed().as_secs_f64());

    let mut consumer = channel
        .basic_consume(
            replies_queue.as_str().into(),
            "drain".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut worker = tokio::process::Command::new(&binary)
        .arg("run")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the worker")?;
    let mut first_reply = None;
    for received in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(120), consumer.next()).await;
        match next {
            Ok(Some(Ok(_))) => {
                first_reply.get_or_insert_with(Instant::now);
            }
            _ => bail!("only {received} of {n} replies arrived"),
        }
    }
    let elapsed = started.elapsed();
    let steady = first_reply.map(|t| t.elapsed()).unwrap_or(elapsed);
    if let Some(pid) = worker.id() {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    let status = worker.wait().await?;
    println!(
        "drained {n} messages in {:.2}s from worker start: {:.0} messages/s ({:.0}/s from first to last reply); worker exited {status}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        n as f64 / steady.as_secs_f64(),
    );
    Ok(())
}
