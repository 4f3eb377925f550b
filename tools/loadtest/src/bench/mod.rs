//! `loadtest bench` (`make bench`): the worker's throughput, latency and cost on a realistic
//! workload, next to what the broker alone allows.
//!
//! One run, in order:
//! 1. seed (`seed`): 10 tenants' catalogs, 2,000 conversations with history;
//! 2. publish the backlog (`workload`): N messages from those customers, 10% of
//!    them exact copies of earlier ones, each publish time in the `ledger`; single
//!    questions from customers at random, or (`--burst K`) bursts of K messages
//!    from every customer in turn;
//! 3. drain: start the `worker run` processes (`crate::fleet`), their
//!    PostgreSQL connections through a counting proxy (`testkit::proxy`), until
//!    every unique message has its reply (matched by the fingerprints it answers);
//! 4. paced: publish fresh messages at half the drain rate for a few seconds and
//!    take the publish -> reply latency from those (the drain's is queueing);
//! 5. read /metrics, /proc (`crate::procstats`, `window`) and Redis INFO, SIGTERM the
//!    workers, and check that each unique message got exactly one reply and that
//!    each conversation's replies came in publish order (`crate::order`);
//! 6. the broker-only `baseline` on the same backlog;
//! 7. print one table and a `RESULT` line (`report`).
//!
//! Besides: `vocab` holds the words the catalog and the questions share,
//! `wiring` points the workers at the proxy (and at testkit's agent stub when
//! answering is to be slow), `phases` waits for replies and paces publishing.
//!
//! Exits 0 with figures however slow; 3 when a guarantee broke (a message
//! replied to twice or never, a conversation's replies out of publish order,
//! stored rows that do not match, a worker that did not stop cleanly); 1 when the
//! bench itself could not run.
//!
//! Configuration (names, database, Redis prefix, concurrency, prefetch) comes
//! from the environment, as `scripts/loadtest.sh bench` sets it up;
//! `loadtest bench run --help` lists the options.

mod baseline;
mod flood;
mod ledger;
mod phases;
mod report;
mod seed;
mod vocab;
mod window;
mod wiring;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chat_worker::config::{Config, Overrides};
use clap::{Args, Subcommand};
use testkit::gateway::Publisher;

use self::ledger::{Ledger, Phase};
use self::workload::{Shape, Workload};
use crate::fleet::{self, Fleet};
use crate::gateway;
use crate::procstats;

#[derive(Subcommand)]
pub enum Mode {
    /// Run the benchmark.
    Run(RunArgs),
    /// One broker-only baseline consumer (started by `run`).
    Baseline(baseline::ConsumerArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// The `worker` binary to run.
    #[arg(long)]
    worker: PathBuf,
    /// Messages published for the drain, copies included.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// `worker run` processes.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// > 0: answer with the http responder, a local stub that waits this long.
    #[arg(long, default_value_t = 0)]
    responder_delay_ms: u64,
    /// Length of the paced (latency) phase; 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    paced_seconds: f64,
    /// Messages/s of the paced phase; 0: half the drain's rate.
    #[arg(long, default_value_t = 0.0)]
    paced_rate: f64,
    /// Above 1: every customer sends bursts of this many messages (distinct
    /// texts) instead of single questions.
    #[arg(long, default_value_t = 0)]
    burst: usize,
    /// Between two messages of a burst, ms.
    #[arg(long, default_value_t = 20)]
    burst_gap_ms: u64,
    #[arg(long)]
    skip_baseline: bool,
    /// Above 0: instead of the usual run, the two-tenant flood (`flood`):
    /// tenant A publishes this many messages at once while tenant B sends one
    /// every 100 ms (the http stub answering after RESPONDER_DELAY_MS, 200 by default).
    #[arg(long, default_value_t = 0)]
    flood: usize,
    /// Where the workers' logs go.
    #[arg(long, default_value = "target/bench")]
    log_dir: PathBuf,
}

/// The backlog is laid out as a gateway publishing this many messages/s would
/// send it (bursts: with 5 messages 20 ms apart, about 16 customers' bursts
/// overlapping), then published as fast as the broker takes it.
const BACKLOG_RATE: f64 = 1_000.0;

/// The workers move their cache and Redis counters into /metrics every 2 s.
const METRICS_REFRESH: Duration = Duration::from_millis(2_500);
const GUARANTEE_BROKEN: i32 = 3;

/// Runs `mode`; returns the process's exit code.
pub async fn main(mode: Mode) -> i32 {
    let outcome = match mode {
        Mode::Run(args) => run(args).await,
        Mode::Baseline(args) => match Config::load(None, &Overrides::default()) {
            Ok(config) => baseline::consume(&config.amqp.url, args).await.map(|()| true),
            Err(e) => Err(e.into()),
        },
    };
    match outcome {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("bench: a guarantee was violated (see the table above)");
            GUARANTEE_BROKEN
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            1
        }
    }
}

/// Returns whether every guarantee held.
async fn run(args: RunArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.n >= 10 && args.workers >= 1, "N must be at least 10 and WORKERS at least 1");
    let config = Config::load(None, &Overrides::default())?;
    let ticks = procstats::ticks_per_second();
    let pool = chat_worker::store::pool(&config.database.url, 4)?;
    let mut redis = redis::Client::open(config.redis.url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis")?;

    if args.flood > 0 {
        let delay = if args.responder_delay_ms > 0 { args.responder_delay_ms } else { 200 };
        let stub = wiring::agent(delay).await?;
        let env = wiring::http_responder_env(&config, &stub.url, delay)?;
        let setup = flood::Setup {
            config: &config,
            worker: &args.worker,
            workers: args.workers,
            env,
            log_dir: &args.log_dir,
            flood: args.flood,
        };
        return flood::run(setup, &pool).await;
    }
    let seeding = Instant::now();
    let customers = seed::seed(&pool).await.context("seeding the workload (did `worker migrate` run?)")?;
    println!(
        "seeded {} tenants' catalogs and {} conversations in {:.1}s",
        seed::TENANTS,
        customers.len(),
        secs(seeding)
    );

    let proxy = testkit::proxy::postgres_counting(&testkit::urls::upstream(&config.database.url, 5432)?)
        .await
        .context("starting the PostgreSQL proxy")?;
    let mut env =
        vec![("WORKER__DATABASE__URL".to_owned(), testkit::urls::proxied(&config.database.url, proxy.addr)?)];
    let responder_name = if args.responder_delay_ms > 0 {
        let stub = wiring::agent(args.responder_delay_ms).await?;
        env.extend(wiring::http_responder_env(&config, &stub.url, args.responder_delay_ms)?);
        format!("http responder (local stub answering after {} ms)", args.responder_delay_ms)
    } else {
        "builtin responder".to_owned()
    };

    let replies_queue = format!("{}.bench-replies", config.amqp.outbound_exchange);
    let (connection, channel) = gateway::gateway(&config, &replies_queue, false).await?;
    let ledger = Arc::new(Ledger::default());
    ledger.clone().collect(&connection.create_channel().await?, &replies_queue).await?;

    let shape = match args.burst {
        0 | 1 => Shape::Single,
        size => Shape::Bursts { size, gap: Duration::from_millis(args.burst_gap_ms) },
    };
    let backlog = Workload::new(&customers, "d", 1, shape, BACKLOG_RATE, None).take(args.n);
    let publishing = Instant::now();
    let mut publisher = Publisher::new(channel.clone(), &config.amqp.inbound_exchange);
    for planned in &backlog {
        ledger.published(planned, Phase::Drain, Instant::now());
        publisher.publish(&planned.message).await?;
    }
    publisher.finish().await?;
    let (_, unique) = ledger.progress(Phase::Drain);
    println!("published {} messages ({unique} unique) in {:.1}s", args.n, secs(publishing));

    // The window: from the workers' start to just before their SIGTERM.
    let window =
        window::Window::open(&pool, &testkit::urls::database_name(&config.database.url)?, &mut redis).await?;
    let started = Instant::now();
    let worker_args = |name: &str| vec!["run".to_owned(), "--worker-id".to_owned(), name.to_owned()];
    let mut fleet =
        Fleet::start(&args.worker, "bench-worker", args.workers, worker_args, &env, Some(&args.log_dir))?;
    let complete = phases::wait_for_replies(&ledger, Phase::Drain, &mut fleet).await?;
    let (first, last) = ledger.reply_span(Phase::Drain).unwrap_or_else(|| (Instant::now(), Instant::now()));
    let drain = report::Drain {
        unique,
        first_reply: first.duration_since(started),
        elapsed: last.duration_since(started),
        latency: ledger.latencies(Phase::Drain),
        bursts: ledger.burst_latencies(Phase::Drain),
        complete,
    };
    println!("drained in {:.1}s", drain.elapsed.as_secs_f64());
    let at_drain_end = (fleet.usage(ticks), window.close(&pool, &mut redis, ticks).await?);

    let paced = if drain.complete && args.paced_seconds > 0.0 {
        let half_the_drain = args.n as f64 / drain.elapsed.as_secs_f64().max(1e-3) / 2.0;
        let rate = if args.paced_rate > 0.0 { args.paced_rate } else { half_the_drain };
        Some(
            phases::paced(
                &ledger,
                &channel,
                &config,
                &customers,
                phases::Pace { shape, rate, seconds: args.paced_seconds },
                &mut fleet,
            )
            .await?,
        )
    } else {
        None
    };

    tokio::time::sleep(METRICS_REFRESH).await;
    let metrics = fleet.metrics().await?;
    let workers_usage = fleet.usage(ticks);
    let services = window.close(&pool, &mut redis, ticks).await?;
    let window_length = started.elapsed();
    let problems = fleet.stop(Duration::from_secs(config.worker.shutdown_timeout_secs + 15)).await;
    ledger.flush(&channel, &replies_queue).await?;
    let stored = seed::stored_rows(&pool).await?;
    let handoff_replies = seed::handoff_replies(&pool).await?;

    let baseline = if args.skip_baseline {
        None
    } else {
        println!("baseline: the same {} messages, broker only", args.n);
        let bench = std::env::current_exe().context("finding the bench's own binary")?;
        let plan = baseline::Plan {
            amqp_url: &config.amqp.url,
            queue: &format!("{}.baseline", config.amqp.inbound_queue),
            exchange: &format!("{}.baseline", config.amqp.outbound_exchange),
            bench: &bench,
            processes: args.workers,
            prefetch: config.amqp.prefetch,
            concurrency: config.worker.concurrency,
            log_dir: &args.log_dir,
            ticks,
        };
        let messages: Vec<_> = backlog.iter().map(|planned| planned.message.clone()).collect();
        Some(baseline::run(&plan, &messages).await?)
    };

    let m = |name: &str| fleet::series(&metrics, name);
    let pg = proxy.log.counts();
    let outcome = |o: &str| m(&format!("chat_worker_messages_total{{outcome=\"{o}\"}}"));
    let tier = |t: &str| m(&format!("chat_worker_cache_lookups_total{{tier=\"{t}\"}}"));
    let figures = report::Figures {
        setup: format!(
            "chat-worker bench: N={} ({unique} unique, 10% copies; {}), {} worker(s) × concurrency {} / prefetch {}, {responder_name}, {}, {} seeded conversations of {} tenants",
            args.n,
            shape.describe(),
            args.workers,
            config.worker.concurrency,
            config.amqp.prefetch,
            match config.turns.coalesce_ms {
                0 => "no burst coalescing".to_owned(),
                ms =>
                    format!("bursts coalesced within {ms} ms (at most {} ms)", config.turns.coalesce_max_ms),
            },
            customers.len(),
            seed::TENANTS
        ),
        n: args.n,
        burst: match shape {
            Shape::Single => None,
            Shape::Bursts { size, gap } => Some((size, gap)),
        },
        coalesce_ms: config.turns.coalesce_ms,
        workers: args.workers,
        concurrency: config.worker.concurrency,
        prefetch: config.amqp.prefetch,
        responder_delay_ms: args.responder_delay_ms,
        delivered: args.n + paced.as_ref().map_or(0, |p| p.published),
        drain,
        paced,
        baseline,
        pg_queries: pg.queries.load(Relaxed),
        pg_syncs: pg.syncs.load(Relaxed),
        pg_connections: pg.connections.load(Relaxed),
        redis_round_trips: m("chat_worker_redis_round_trips_total"),
        cache: [tier("local"), tier("redis"), tier("database")],
        outcomes: vec![
            ("processed", outcome("processed")),
            ("duplicate", outcome("duplicate")),
            ("coalesced", outcome("coalesced")),
            ("deferred", outcome("deferred")),
            ("failed", outcome("failed")),
            ("rejected", outcome("rejected")),
            ("retries", m("chat_worker_retries_total")),
        ],
        turns: report::Turns {
            waits: m("chat_worker_turn_wait_seconds_count"),
            wait_secs: m("chat_worker_turn_wait_seconds_sum"),
            parked: m("chat_worker_turns_parked_total"),
            skipped: m("chat_worker_turns_skipped_total"),
        },
        workers_usage,
        services,
        at_drain_end,
        window: window_length,
        tally: ledger.tally(),
        order: ledger.order(),
        stored,
        handoff_replies,
        problems,
    };
    figures.print();
    if !figures.holds() {
        let logs: Vec<String> = (0..args.workers)
            .map(|i| args.log_dir.join(format!("bench-worker-{i}.log")).display().to_string())
            .collect();
        eprintln!("bench: the workers' logs: {}", logs.join(" "));
    }

    gateway::remove_topology(&config, &channel).await;
    let _ = connection.close(200, "bench done".into()).await;
    Ok(figures.holds())
}

pub fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
