//! `worker`: the binary's edge. Parses the command line, sets up logging, loads
//! the configuration, runs one command (see `commands/`), and turns any error
//! into one line on stderr and a non-zero exit (CONTRACT §6).

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

use chat_worker::config::{Config, Overrides};
use chat_worker::telemetry::traces::{self, Traces};
use cli::{Cli, Command, LogFormat};

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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return report(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    // The OTLP exporters need a runtime around when they are built.
    let traces = runtime.block_on(async { init_telemetry(cli.log_format) });
    let result = runtime.block_on(execute(cli));
    traces.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    let overrides = match &cli.command {
        Command::Run(args) => Overrides { concurrency: args.concurrency, id: args.worker_id.clone() },
        _ => Overrides::default(),
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    match &cli.command {
        Command::Run(_) => commands::run(config).await,
        Command::Migrate => commands::migrate(&config).await,
        Command::History(args) => commands::history(&config, args).await,
        Command::Cache(command) => commands::cache(&config, command).await,
        Command::Locks(command) => commands::locks(&config, command).await,
        Command::State { fingerprint, json } => commands::state(&config, fingerprint, *json).await,
        Command::Dead(command) => commands::dead(&config, command).await,
        Command::Prune(args) => commands::prune(&config, args).await,
        Command::Stats(args) => commands::stats(&config, args).await,
        Command::Config => commands::config(&config),
    }
}

/// Logs to stderr (text or JSON) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
/// spans over OTLP.
fn init_telemetry(format: LogFormat) -> Traces {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // lapin logs its own connection errors at ERROR; the worker reports them
    // itself, once, with context. `WORKER_LOG=info,lapin=debug` brings them back.
    let filter =
        EnvFilter::try_from_env("WORKER_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=off"));
    let provider = traces::provider().unwrap_or_else(|e| {
        eprintln!("warning: {}; traces are off", chat_worker::redact::redact_text(&e.to_string()));
        None
    });
    let otel = provider.as_ref().map(traces::layer);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => {
            registry.with(stderr.json().with_current_span(false).with_span_list(true)).try_init()
        }
        LogFormat::Text => registry.with(stderr).try_init(),
    };
    Traces::from(provider)
}

/// One line, the whole cause chain, no backtrace; and, whatever a library put in
/// its error, no password (the causes are redacted where they are made; this is
/// the last line of defence).
fn report(error: &anyhow::Error) -> ExitCode {
    let line = format!("{error:#}").split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {}", chat_worker::redact::redact_text(&line));
    ExitCode::FAILURE
}
