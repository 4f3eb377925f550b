//! What the shared services did between the workers' start and their stop:
//! PostgreSQL's, Redis's, RabbitMQ's and the bench's own CPU (see procstats),
//! and the number of commands Redis processed (`INFO stats`).
//!
//! These are machine-wide figures: anything else using the services meanwhile
//! (a test suite, another bench) is counted too.

use anyhow::Context as _;
use sqlx::PgPool;

use crate::procstats::{self, Postgres, Process, Usage};

pub struct Window {
    postgres: Postgres,
    redis: Option<Process>,
    rabbitmq: Option<Process>,
    bench: Process,
    redis_commands: u64,
}

/// The services' usage over a closed window.
pub struct Services {
    pub postgres: Usage,
    /// CPU seconds of the run's own database's backends.
    pub postgres_run: f64,
    pub redis: Option<Usage>,
    pub rabbitmq: Option<Usage>,
    pub bench: Usage,
    pub redis_commands: u64,
}

impl Window {
    pub async fn open(
        pool: &PgPool,
        database: &str,
        redis: &mut redis::aio::MultiplexedConnection,
    ) -> anyhow::Result<Self> {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(pool).await?;
        let backend = u32::try_from(backend).context("pg_backend_pid() is negative")?;
        let server = info(redis, "server").await?;
        let redis_pid = field(&server, "process_id").and_then(|p| p.parse().ok());
        Ok(Self {
            postgres: Postgres::from_now(backend, database)?,
            redis: redis_pid.map(Process::from_now),
            rabbitmq: procstats::rabbitmq_pid().map(Process::from_now),
            bench: Process::from_now(std::process::id()),
            redis_commands: commands(redis).await?,
        })
    }

    pub async fn close(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
        ticks: f64,
    ) -> anyhow::Result<Services> {
        let (postgres, postgres_run) = self.postgres.usage(ticks);
        Ok(Services {
            postgres,
            postgres_run,
            redis: self.redis.as_ref().map(|p| p.usage(ticks)),
            rabbitmq: self.rabbitmq.as_ref().map(|p| p.usage(ticks)),
            bench: self.bench.usage(ticks),
            redis_commands: commands(redis).await?.saturating_sub(self.redis_commands),
        })
    }
}

async fn commands(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let stats = info(redis, "stats").await?;
    field(&stats, "total_commands_processed")
        .and_then(|v| v.parse().ok())
        .context("redis INFO stats has no total_commands_processed")
}

async fn info(redis: &mut redis::aio::MultiplexedConnection, section: &str) -> anyhow::Result<String> {
    let text: String = redis::cmd("INFO").arg(section).query_async(redis).await.context("redis INFO")?;
    Ok(text)
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}
