//! `loadtest`: chat-worker's load tools, one subcommand each, run through
//! `scripts/loadtest.sh` (which gives a run its own database, names and Redis
//! prefix, and builds and copies the binaries):
//!
//! - `bench`: throughput, latency, round trips and CPU next to a broker-only
//!   baseline (`make bench`, `make scaling`);
//! - `drain`: how fast one `worker run` drains a backlog (`make drain`);
//! - `chaos`: the accounting under faults (`make chaos`, `make chaos-short`);
//! - `context`: context building, cold / Redis / warm (`make bench-context`).
//!
//! What the integration tests share with these (proxies, the HTTP agent stub,
//! publishing, seeds) is in crates/testkit.

mod bench;
mod chaos;
mod context;
mod drain;
mod fleet;
mod gateway;
mod order;
mod procstats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadtest", about = "chat-worker's load tools (run through scripts/loadtest.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The worker's throughput, latency and cost on a realistic workload.
    #[command(subcommand)]
    Bench(bench::Mode),
    /// How fast one `worker run` drains N messages.
    Drain(drain::Args),
    /// Fault injection: kills workers, flushes and restarts Redis, drops AMQP connections, restarts PostgreSQL.
    Chaos(chaos::Args),
    /// How long building a message's context takes: cold, Redis, warm.
    Context(context::Args),
}

#[tokio::main]
async fn main() {
    let code = match Cli::parse().command {
        Command::Bench(mode) => bench::main(mode).await,
        Command::Drain(args) => exit_code("drain", drain::run(args).await),
        Command::Chaos(args) => exit_code("chaos: FAILED", chaos::run(args).await),
        Command::Context(args) => exit_code("bench_context", context::run(args).await),
    };
    std::process::exit(code);
}

/// 0, or 1 after printing the error under `label`.
fn exit_code(label: &str, outcome: anyhow::Result<()>) -> i32 {
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{label}: {e:#}");
            1
        }
    }
}
