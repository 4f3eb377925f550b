//! What the shared services did between the workers' start and their stop:
//! PostgreSQL's, Redis's, RabbitMQ's and the bench's own CPU (see procstats),
//! the number of commands Redis processed (`INFO stats`), and what PostgreSQL
//! read from outside its buffer cache and wrote to its WAL (`PgIo`).
//!
//! These are machine-wide figures: anything else using the services meanwhile
//! (a test suite, another bench) is counted too.

use anyhow::Context as _;
use sqlx::PgPool;

use crate::procstats::{self, Postgres, Process, Usage};

pub struct Window {
    postgres: Postgres,
    database: String,
    pg_io: Option<PgIo>,
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
    /// `None` where the statistics views cannot be read (PostgreSQL before 14).
    pub pg_io: Option<PgIo>,
}

/// PostgreSQL's counters of the cost CPU seconds do not show: pages this run's
/// database had to read from outside shared_buffers (from the OS cache or the
/// disk), and the WAL the whole server wrote, with its full-page images — the
/// first change to a page after a checkpoint logs the whole 8 KiB page, so
/// writes that land on many different pages (random index keys in a large
/// table) cost far more WAL than the rows' size.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgIo {
    /// pg_stat_database.blks_read / blks_hit of this run's database.
    pub blocks_read: i64,
    pub blocks_hit: i64,
    /// pg_stat_wal.wal_bytes / wal_fpi, machine-wide.
    pub wal_bytes: i64,
    pub wal_fpi: i64,
}

impl PgIo {
    async fn read(pool: &PgPool, database: &str) -> Option<Self> {
        let row: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
            "SELECT d.blks_read, d.blks_hit, w.wal_bytes::int8, w.wal_fpi
               FROM pg_stat_database d CROSS JOIN pg_stat_wal w WHERE d.datname = $1",
        )
        .bind(database)
        .fetch_one(pool)
        .await;
        row.ok().map(|(blocks_read, blocks_hit, wal_bytes, wal_fpi)| Self {
            blocks_read,
            blocks_hit,
            wal_bytes,
            wal_fpi,
        })
    }

    fn since(self, start: Self) -> Self {
        Self {
            blocks_read: self.blocks_read - start.blocks_read,
            blocks_hit: self.blocks_hit - start.blocks_hit,
            wal_bytes: self.wal_bytes - start.wal_bytes,
            wal_fpi: self.wal_fpi - start.wal_fpi,
        }
    }
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
            database: database.to_owned(),
            pg_io: PgIo::read(pool, database).await,
            redis: redis_pid.map(Process::from_now),
            rabbitmq: procstats::rabbitmq_pid().map(Process::from_now),
            bench: Process::from_now(std::process::id()),
            redis_commands: commands(redis).await?,
        })
    }

    pub async fn close(
        &self,
        pool: &PgPool,
        redis: &mut redis::aio::MultiplexedConnection,
        ticks: f64,
    ) -> anyhow::Result<Services> {
        let (postgres, postgres_run) = self.postgres.usage(ticks);
        let pg_io = match (PgIo::read(pool, &self.database).await, self.pg_io) {
            (Some(now), Some(start)) => Some(now.since(start)),
            _ => None,
        };
        Ok(Services {
            postgres,
            postgres_run,
            redis: self.redis.as_ref().map(|p| p.usage(ticks)),
            rabbitmq: self.rabbitmq.as_ref().map(|p| p.usage(ticks)),
            bench: self.bench.usage(ticks),
            redis_commands: commands(redis).await?.saturating_sub(self.redis_commands),
            pg_io,
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
