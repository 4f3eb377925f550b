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

/// The `worker` binary, started by a test that pauses, wakes and stops it with
/// signals and reads what it logs (`--log-format json`: one object a line).
/// Its lines are echoed to the test's stderr, prefixed with its name. Killed if
/// dropped (a failed assertion), paused or not.
pub struct WorkerProcess {
    name: String,
    pid: String,
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    /// Every line read so far.
    log: Vec<serde_json::Value>,
}

impl WorkerProcess {
    /// Starts `command` (a [`TestEnv::worker_command`], with what the test adds)
    /// logging JSON.
    pub fn spawn(name: &str, mut command: tokio::process::Command) -> Self {
        command.args(["--log-format", "json"]).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn the worker binary");
        let pid = child.id().expect("a running child has a pid").to_string();
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let prefix = name.to_owned();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("{prefix}: {line}");
                // A panic's message or a one-line error is not JSON: kept as a string.
                let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self { name: name.to_owned(), pid, child, lines, log: Vec::new() }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid.clone()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {} ({})", self.pid, self.name);
    }

    /// Waits until the process logs a line for which `matches` holds (a line
    /// logged before counts too) and returns it; panics after [`PATIENCE`].
    pub async fn logged(
        &mut self,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(line) = self.log.iter().find(|l| matches(l)) {
            return line.clone();
        }
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.lines.recv().await {
                self.log.push(line.clone());
                if matches(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{} exited without logging {what}", self.name),
            Err(_) => panic!("{} did not log {what} within {PATIENCE:?}", self.name),
        }
    }

    /// Stops the process as a supervisor would (SIGTERM), waits for it to exit,
    /// and returns everything it logged.
    pub async fn stop(mut self) -> Vec<serde_json::Value> {
        self.signal("TERM");
        let exited = tokio::time::timeout(PATIENCE, self.child.wait()).await;
        assert!(matches!(exited, Ok(Ok(_))), "{} did not exit after SIGTERM: {exited:?}", self.name);
        while let Some(line) = self.lines.recv().await {
            self.log.push(line);
        }
        self.log
    }
}

/// A JSON log line's message.
pub fn log_message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}
