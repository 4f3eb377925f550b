//! Child processes of a load tool: the `worker run` processes under test (and
//! the bench's baseline consumers), started with the tool's environment plus an
//! admin port of their own, watched for an early exit, scraped for `/metrics`,
//! measured from /proc, killed and restarted (chaos), and stopped with SIGTERM
//! as an orchestrator would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::procstats::{self, Usage};

pub struct Worker {
    pub name: String,
    args: Vec<String>,
    child: Child,
    pid: u32,
    admin: SocketAddr,
    /// Where its output goes (the tool's own output when `None`).
    pub log: Option<PathBuf>,
}

pub struct Fleet {
    pub workers: Vec<Worker>,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

impl Fleet {
    /// Starts `count` processes named `<prefix>-<i>`, with the arguments `args`
    /// gives for that name; with `log_dir`, each logs to `<log_dir>/<name>.log`,
    /// else to the tool's own stdout and stderr.
    pub fn start(
        binary: &Path,
        prefix: &str,
        count: usize,
        args: impl Fn(&str) -> Vec<String>,
        env: &[(String, String)],
        log_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        if let Some(dir) = log_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut fleet =
            Self { workers: Vec::with_capacity(count), binary: binary.to_owned(), env: env.to_vec() };
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            let log = log_dir.map(|dir| dir.join(format!("{name}.log")));
            let worker = fleet.spawn(name.clone(), args(&name), log)?;
            fleet.workers.push(worker);
        }
        Ok(fleet)
    }

    fn spawn(&self, name: String, args: Vec<String>, log: Option<PathBuf>) -> anyhow::Result<Worker> {
        let admin = free_port()?;
        let (stdout, stderr) = match &log {
            Some(log) => {
                let file =
                    std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::inherit(), Stdio::inherit()),
        };
        let child = Command::new(&self.binary)
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("WORKER__ADMIN__ADDR", admin.to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let pid = child.id().with_context(|| format!("{name} exited as it started"))?;
        Ok(Worker { name, args, child, pid, admin, log })
    }

    /// SIGKILLs worker `i` (no chance to finish anything) and starts it again,
    /// with the same name and arguments (its log starts over).
    pub async fn kill_and_restart(&mut self, i: usize) -> anyhow::Result<()> {
        let worker = self.workers.get_mut(i).with_context(|| format!("no worker {i}"))?;
        worker.child.kill().await.context("SIGKILL")?; // tokio's kill is SIGKILL
        let _ = worker.child.wait().await;
        let (name, args, log) = (worker.name.clone(), worker.args.clone(), worker.log.clone());
        self.workers[i] = self.spawn(name, args, log)?;
        Ok(())
    }

    /// An error naming the worker (and its log) that has exited on its own.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for w in &mut self.workers {
            if let Some(status) = w.child.try_wait()? {
                bail!("{} exited early ({status}){}", w.name, w.log_note("its log"));
            }
        }
        Ok(())
    }

    /// Each worker's `/metrics` text, also kept next to its log (`<name>.metrics`)
    /// for what the table leaves out, such as the stage duration histograms.
    pub async fn metrics(&self) -> anyhow::Result<Vec<String>> {
        let mut texts = Vec::new();
        for w in &self.workers {
            let text =
                http_get(w.admin, "/metrics").await.with_context(|| format!("{}: /metrics", w.name))?;
            if let Some(log) = &w.log {
                let kept = log.with_extension("metrics");
                std::fs::write(&kept, &text).with_context(|| format!("writing {}", kept.display()))?;
            }
            texts.push(text);
        }
        Ok(texts)
    }

    pub fn usage(&self, ticks: f64) -> Vec<(String, Usage)> {
        self.workers
            .iter()
            .map(|w| (w.name.clone(), procstats::Process::whole_life(w.pid).usage(ticks)))
            .collect()
    }

    /// SIGTERM to every worker at once, then waits for each up to `grace`
    /// (killing it past that). Returns a line per worker that did not exit 0.
    pub async fn stop(mut self, grace: Duration) -> Vec<String> {
        for w in &self.workers {
            let _ = std::process::Command::new("kill").args(["-TERM", &w.pid.to_string()]).status();
        }
        let mut problems = Vec::new();
        for w in &mut self.workers {
            match tokio::time::timeout(grace, w.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => problems.push(format!("{} exited {status}{}", w.name, w.log_note("log"))),
                Ok(Err(e)) => problems.push(format!("{}: {e}", w.name)),
                Err(_) => {
                    let _ = w.child.kill().await;
                    problems.push(format!("{} did not stop within {grace:?} of SIGTERM; killed", w.name));
                }
            }
        }
        problems
    }
}

impl Worker {
    /// "; <label>: <its log file>", or nothing when it logs to the tool's output.
    fn log_note(&self, label: &str) -> String {
        self.log.as_ref().map(|log| format!("; {label}: {}", log.display())).unwrap_or_default()
    }
}

/// A port free at the moment of asking (the worker binds it a moment later).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// A plain HTTP/1.0 GET: enough for the admin endpoint, no client library needed.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw =
        tokio::time::timeout(Duration::from_secs(10), exchange).await.context("no answer in 10 s")??;
    let (head, body) = raw.split_once("\r\n\r\n").context("not an HTTP answer")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("answered `{status}`");
    }
    Ok(body.to_owned())
}

/// The sum over all texts of one Prometheus series, e.g.
/// `chat_worker_cache_lookups_total{tier="local"}`.
pub fn series(texts: &[String], name: &str) -> f64 {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        // An empty float sum is -0.0, which would print as "-0".
        + 0.0
}
