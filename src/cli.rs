//! The command line (CONTRACT §6). Every command has `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "Answers inbound chat messages from RabbitMQ exactly once.",
    long_about = "chat-worker consumes customer messages from the `worker.inbound` queue, \
                  deduplicates and locks them in Redis, stores each message and its reply \
                  in PostgreSQL, and publishes the reply to `chat.outbound`.\n\n\
                  Configuration: built-in defaults < --config file < environment \
                  (AMQP_URL, REDIS_URL, DATABASE_URL, WORKER__<SECTION>__<KEY>) < flags."
)]
pub struct Cli {
    /// TOML configuration file (see worker.toml for every key and its default).
    #[arg(long, global = true, env = "WORKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM or SIGINT (then finish in-flight messages and exit 0).
    Run(RunArgs),
    /// Create the database if it does not exist and apply migrations (safe to repeat, and from several hosts at once).
    Migrate,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Messages handled at the same time (overrides worker.concurrency).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// This process's name in locks and processing states (default: <hostname>-<pid>).
    #[arg(long, value_name = "ID")]
    pub worker_id: Option<String>,
}
