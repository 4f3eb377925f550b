//! `worker`: the binary's edge. Parses the command line, sets up logging, loads
//! the configuration, runs one command, and turns any error into one line on
//! stderr and a non-zero exit (CONTRACT §6).

mod cli;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use chat_worker::config::{Config, Overrides};
use chat_worker::store;
use chat_worker::worker::Tally;
use cli::{Cli, Command, LogFormat, RunArgs};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print in full; a bad flag is one line and exit 2.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: invalid command line");
            eprintln!("{first} (see `worker --help`)");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return report(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    let overrides = match &cli.command {
        Command::Run(args) => Overrides { concurrency: args.concurrency, id: args.worker_id.clone() },
        Command::Migrate => Overrides::default(),
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    match cli.command {
        Command::Run(args) => run(config, args).await,
        Command::Migrate => migrate(&config).await,
    }
}

async fn run(config: Config, _args: RunArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let tally = Arc::new(Tally::default());
    chat_worker::worker::run(config, shutdown, tally.clone()).await?;
    tracing::info!(
        processed = tally.processed.load(Ordering::Relaxed),
        duplicate = tally.duplicate.load(Ordering::Relaxed),
        rejected = tally.rejected.load(Ordering::Relaxed),
        failed = tally.failed.load(Ordering::Relaxed),
        deferred = tally.deferred.load(Ordering::Relaxed),
        "worker stopped"
    );
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = &config.database.url;
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let created = chat_worker::services::wait_for("postgresql", url, deadline, || {
        store::create_database_if_missing(url)
    })
    .await?;
    let pool = chat_worker::services::postgres(config, deadline).await?;
    store::migrate(&pool).await.context("applying migrations")?;
    let database = url.rsplit('/').next().and_then(|d| d.split('?').next()).unwrap_or("");
    let what = if created { "created and migrated" } else { "migrated" };
    println!("database {database} {what}: up to date");
    Ok(())
}

/// SIGTERM or SIGINT: stop taking new messages and finish the ones in flight.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the worker with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stopping: no new messages, finishing those in flight");
    shutdown.cancel();
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("WORKER_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=off"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// One line, the whole cause chain, no backtrace.
fn report(error: &anyhow::Error) -> ExitCode {
    let line = format!("{error:#}").split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {line}");
    ExitCode::FAILURE
}
