//! Workers on a test's world: in this process (`worker::run` with the test's
//! configuration), or the `worker` binary with it in the environment.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_worker::config::Config;
use chat_worker::worker::{self, Tally};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{PATIENCE, TestEnv};

pub struct RunningWorker {
    pub tally: Arc<Tally>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), worker::RunError>>,
}

impl RunningWorker {
    /// Graceful stop, as SIGTERM does; returns the worker's result.
    pub async fn stop(self) -> Result<(), worker::RunError> {
        self.stop.cancel();
        self.task.await.expect("worker task panicked")
    }
}

/// Runs a worker in this process with `config` (a test's, changed).
pub fn spawn_worker_with(config: Config) -> RunningWorker {
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker::run(config, stop.clone(), tally.clone()));
    RunningWorker { tally, stop, task }
}

impl TestEnv {
    /// Runs a worker in this process on this test's world.
    pub fn spawn_worker(&self, worker_id: &str) -> RunningWorker {
        let mut config = self.config.clone();
        config.worker.id = worker_id.to_owned();
        spawn_worker_with(config)
    }

    /// A worker with its own inbound exchange and queue (suffixed), sharing this
    /// test's database, Redis prefix and outbound exchange: a second worker a
    /// test can talk to directly.
    pub fn spawn_worker_on(&self, worker_id: &str, suffix: &str) -> RunningWorker {
        self.suffixes.lock().unwrap_or_else(|p| p.into_inner()).push(suffix.to_owned());
        let mut config = self.config.clone();
        config.worker.id = worker_id.to_owned();
        config.amqp.inbound_exchange = format!("{}.{suffix}", self.config.amqp.inbound_exchange);
        config.amqp.inbound_queue = format!("{}.{suffix}", self.config.amqp.inbound_queue);
        // Retry queues dead-letter back to their inbound queue, so they are the worker's own too.
        config.amqp.retry_queue_prefix = format!("{}.{suffix}", self.config.amqp.retry_queue_prefix);
        let tally = Arc::new(Tally::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker::run(config, stop.clone(), tally.clone()));
        RunningWorker { tally, stop, task }
    }

    /// Waits until a worker consumes (its own topology is declared by then).
    pub async fn ready(&self, worker: &mut RunningWorker) {
        let started = Instant::now();
        while !worker.tally.consuming.load(std::sync::atomic::Ordering::Relaxed) {
            if worker.task.is_finished() {
                let result = (&mut worker.task).await;
                panic!("the worker stopped before consuming: {result:?}");
            }
            assert!(started.elapsed() < PATIENCE, "the worker never started consuming");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `worker` binary with this test's configuration in its environment.
    pub fn worker_command(&self, worker_id: &str) -> tokio::process::Command {
        let mut cmd = self.worker_binary();
        cmd.args(["run", "--worker-id", worker_id]);
        cmd
    }

    /// The `worker` binary, configured for this test's world, with no command yet.
    pub fn worker_binary(&self) -> tokio::process::Command {
        let c = &self.config;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
        cmd.env("WORKER__DATABASE__URL", &c.database.url)
            .env("WORKER__DATABASE__LISTEN_URL", &c.database.listen_url)
            .env("WORKER__DATABASE__PREPARED_STATEMENTS", c.database.named_statements().to_string())
            .env("WORKER__AMQP__URL", &c.amqp.url)
            .env("WORKER__REDIS__URL", &c.redis.url)
            .env("WORKER__AMQP__INBOUND_EXCHANGE", &c.amqp.inbound_exchange)
            .env("WORKER__AMQP__OUTBOUND_EXCHANGE", &c.amqp.outbound_exchange)
            .env("WORKER__AMQP__INBOUND_QUEUE", &c.amqp.inbound_queue)
            .env("WORKER__AMQP__DEAD_QUEUE", &c.amqp.dead_queue)
            .env("WORKER__AMQP__RETRY_QUEUE_PREFIX", &c.amqp.retry_queue_prefix)
            .env("WORKER__REDIS__KEY_PREFIX", &c.redis.key_prefix)
            .env("WORKER__REDIS__LIVENESS_TTL_SECS", c.redis.liveness_ttl_secs.to_string())
            .env("WORKER__WORKER__RETRY_BASE_DELAY_MS", c.worker.retry_base_delay_ms.to_string())
            .env("WORKER__WORKER__RETRY_MAX_DELAY_MS", c.worker.retry_max_delay_ms.to_string())
            .env("WORKER__WORKER__SHUTDOWN_TIMEOUT_SECS", c.worker.shutdown_timeout_secs.to_string())
            .env("WORKER__ADMIN__ADDR", &c.admin.addr)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}
