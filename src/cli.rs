//! The command line (CONTRACT §6). Every command has `--help`; every flag's
//! value goes through a parser of `values` that bounds it.

pub mod values;

use std::path::PathBuf;

use chat_worker::model::Fingerprint;
use clap::{Args, Parser, Subcommand, ValueEnum};

use values::Since;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "Answers inbound chat messages from RabbitMQ exactly once.",
    long_about = "chat-worker consumes customer messages from the `worker.inbound` queue, \
                  deduplicates and locks them in Redis, stores each message and its reply \
                  in PostgreSQL, and publishes the reply to `chat.outbound`.\n\n\
                  Configuration: built-in defaults < --config file < environment \
                  (AMQP_URL, REDIS_URL, DATABASE_URL, DATABASE_LISTEN_URL, WORKER__<SECTION>__<KEY>) < flags."
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
    /// Show a customer's conversation, oldest first, one page at a time.
    History(HistoryArgs),
    /// Control the catalog cache (products, services, knowledge, tenant settings).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Inspect and force-release processing locks.
    #[command(subcommand)]
    Locks(LocksCommand),
    /// The processing state of one message: status, worker, times, attempts.
    State {
        /// The message's fingerprint (64 lowercase hex characters).
        #[arg(value_parser = values::fingerprint)]
        fingerprint: Fingerprint,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter queue: list it, or send messages back for another try.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Delete messages, agent interactions, fences and emptied conversations older
    /// than a retention period, in small transactions, while the workers run.
    Prune(PruneArgs),
    /// What the agent did: conversations by status, messages, handoff rate,
    /// confidence, responder latency and cost (cached for a minute).
    Stats(StatsArgs),
    /// Print the configuration in effect (defaults, --config file, environment),
    /// as one JSON object with passwords redacted.
    Config,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this tenant (UUID); all tenants by default.
    #[arg(long, value_name = "UUID", value_parser = values::tenant)]
    pub tenant: Option<uuid::Uuid>,
    /// From when: an RFC 3339 time, or a span back from now such as 30m, 24h, 7d (at most 36500d).
    #[arg(long, default_value = "24h", value_name = "WHEN", value_parser = values::since)]
    pub since: Since,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Compute now instead of using a result cached in the last minute.
    #[arg(long)]
    pub fresh: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep this much: a span such as 90d or 2160h, at least 7d (a copy of a message
    /// arriving after its rows are gone would be answered again).
    #[arg(long, value_name = "SPAN", value_parser = values::older_than)]
    pub older_than: chrono::TimeDelta,
    /// Rows deleted per transaction (1 to 100000).
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = values::prune_batch)]
    pub batch_size: u32,
    /// Count what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum LocksCommand {
    /// Messages in processing, oldest first, with their holder and whether it is alive.
    List {
        /// At most this many (1 to 100000).
        #[arg(long, default_value_t = 100, value_name = "N", value_parser = values::locks_limit)]
        limit: usize,
        /// Print one JSON object {locks: [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Release a message's lock, whoever holds it (its state becomes failed; a
    /// redelivery then processes it). Locks of dead workers are released by the
    /// workers themselves; this is for the rest.
    Release {
        /// The message's fingerprint (64 lowercase hex characters).
        #[arg(value_parser = values::fingerprint)]
        fingerprint: Fingerprint,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// Show dead letters (message_id, x-error-kind, x-error), leaving them in the queue.
    List {
        /// At most this many (1 to 1000000).
        #[arg(long, default_value_t = 1000, value_name = "N", value_parser = values::dead_limit)]
        limit: usize,
        /// Print one JSON object {dead: [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to the inbound queue (each starts again at attempt 1).
    Replay {
        /// At most this many, 1 to 1000000 (default: all).
        #[arg(long, value_name = "N", value_parser = values::dead_limit)]
        limit: Option<usize>,
    },
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Tenant id (UUID).
    #[arg(long, value_name = "UUID", value_parser = values::tenant)]
    pub tenant: uuid::Uuid,
    /// Channel: whatsapp, sms, web, telegram, instagram, messenger or email.
    #[arg(long, value_name = "CHANNEL", value_parser = values::channel)]
    pub channel: String,
    /// The customer's external id (phone number, user id; 1 to 128 characters).
    #[arg(long, value_name = "ID", value_parser = values::customer)]
    pub customer: String,
    /// Page number, from 1.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = values::page)]
    pub page: u32,
    /// Messages per page (1 to 1000).
    #[arg(long, default_value_t = 20, value_name = "M", value_parser = values::page_size)]
    pub page_size: u32,
    /// Print one JSON object: {conversation_id, page, page_size, total, pages, has_next, has_previous, messages}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Load tenants' catalogs into the shared (Redis) tier, all active tenants or one.
    Warm {
        /// Only this tenant (UUID).
        #[arg(long, value_name = "UUID", value_parser = values::tenant)]
        tenant: Option<uuid::Uuid>,
    },
    /// Make every running worker drop what it cached for a tenant, now.
    Invalidate {
        /// The tenant (UUID).
        #[arg(long, value_name = "UUID", value_parser = values::tenant)]
        tenant: uuid::Uuid,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Messages handled at the same time, 1 to 100000 (overrides worker.concurrency).
    #[arg(long, value_name = "N", value_parser = values::concurrency)]
    pub concurrency: Option<usize>,

    /// This process's name in locks and processing states: 1 to 128 letters, digits
    /// and - _ . : @ (default: <hostname>-<pid>).
    #[arg(long, value_name = "ID", value_parser = values::worker_id)]
    pub worker_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        // clap checks defaults against their parsers, names, and so on.
        Cli::command().debug_assert();
    }
}
