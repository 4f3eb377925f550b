//! The run's one table (markdown, so it pastes into an issue as it is) and its
//! machine-readable `RESULT key=value ...` line, which scripts/scaling.sh reads.

use std::fmt::Write as _;
use std::time::Duration;

use super::baseline;
use super::ledger::Tally;
use super::window::Services;
use crate::order;
use crate::procstats::Usage;

pub struct Figures {
    pub setup: String,
    pub n: usize,
    /// Burst shape: messages per burst and the gap between them.
    pub burst: Option<(usize, Duration)>,
    /// turns.coalesce_ms (0: off).
    pub coalesce_ms: u64,
    pub workers: usize,
    pub concurrency: usize,
    pub prefetch: u16,
    pub responder_delay_ms: u64,
    pub drain: Drain,
    pub paced: Option<Paced>,
    pub baseline: Option<baseline::Outcome>,
    /// Deliveries the workers took (both phases, copies included): the "per message" divisor.
    pub delivered: usize,
    pub pg_queries: u64,
    pub pg_syncs: u64,
    pub pg_connections: u64,
    pub redis_round_trips: f64,
    pub cache: [f64; 3],
    pub outcomes: Vec<(&'static str, f64)>,
    /// The workers' turn metrics: waits (count, seconds in all), parked, skipped.
    pub turns: Turns,
    pub workers_usage: Vec<(String, Usage)>,
    pub services: Services,
    /// The same, read when the drain's last reply arrived: cores used while
    /// draining tell which process saturates (the whole window dilutes them).
    pub at_drain_end: (Vec<(String, Usage)>, Services),
    pub window: Duration,
    pub tally: Tally,
    pub order: order::Tally,
    pub stored: (i64, i64),
    pub handoff_replies: i64,
    pub problems: Vec<String>,
}

pub struct Turns {
    pub waits: f64,
    pub wait_secs: f64,
    pub parked: f64,
    pub skipped: f64,
}

impl Turns {
    fn mean_wait_ms(&self) -> f64 {
        1e3 * self.wait_secs / self.waits.max(1.0)
    }
}

pub struct Drain {
    pub unique: usize,
    /// Worker start -> first reply: startup (connecting, cache warming) is in the drain time.
    pub first_reply: Duration,
    pub elapsed: Duration,
    pub latency: Vec<Duration>,
    /// Bursts: last message published -> last reply to one of its messages.
    pub bursts: Vec<Duration>,
    pub complete: bool,
}

pub struct Paced {
    pub rate: f64,
    pub seconds: f64,
    pub published: usize,
    pub unique: usize,
    pub latency: Vec<Duration>,
    pub bursts: Vec<Duration>,
}

impl Figures {
    /// Messages the workers processed (replied to), from their metrics.
    fn processed(&self) -> f64 {
        self.outcomes.iter().find(|(k, _)| *k == "processed").map_or(0.0, |(_, v)| *v)
    }

    pub fn drain_rate(&self) -> f64 {
        self.n as f64 / self.drain.elapsed.as_secs_f64().max(1e-9)
    }

    /// Every guarantee the run checks held.
    pub fn holds(&self) -> bool {
        self.tally.holds()
            && self.order.holds()
            && self.stored == self.expected_rows()
            && self.problems.is_empty()
    }

    /// One `in` row per unique message, one `out` row per reply (a coalesced
    /// message has none of its own: its burst's reply answers it).
    fn expected_rows(&self) -> (i64, i64) {
        (self.tally.unique as i64, self.tally.replies as i64)
    }

    pub fn print(&self) {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let per_message = |x: f64| x / self.delivered.max(1) as f64;
        let secs = self.drain.elapsed.as_secs_f64();

        row("drain: messages/s (N / worker start → last reply)", format!("{:.0}", self.drain_rate()));
        row("drain: unique replies/s", format!("{:.0}", self.drain.unique as f64 / secs.max(1e-9)));
        let stalled = if self.drain.complete { "" } else { " (stalled: replies stopped coming)" };
        row(
            "drain: time, worker start → first / last reply",
            format!("{:.2} s / {secs:.2} s{stalled}", self.drain.first_reply.as_secs_f64()),
        );
        row("drain: publish → reply p50 / p95 / p99 (queueing)", percentiles(&self.drain.latency, "replies"));
        if self.burst.is_some() {
            row(
                "drain: burst's last message → its last reply p50 / p95 / p99 (queueing)",
                percentiles(&self.drain.bursts, "bursts"),
            );
        }
        match &self.paced {
            Some(p) => {
                row(
                    "paced: published (PACED_RATE, else half the drain rate)",
                    format!(
                        "{:.0} msg/s for {:.1} s = {} ({} unique)",
                        p.rate, p.seconds, p.published, p.unique
                    ),
                );
                row("**paced: publish → reply p50 / p95 / p99**", percentiles(&p.latency, "replies"));
                if self.burst.is_some() {
                    row(
                        "**paced: burst's last message → its last reply p50 / p95 / p99**",
                        percentiles(&p.bursts, "bursts"),
                    );
                }
            }
            None => row("paced: publish → reply", "skipped".into()),
        }
        match &self.baseline {
            Some(b) => {
                row("baseline: broker-only messages/s", format!("{:.0}", b.rate));
                row("drain rate / baseline rate", format!("{:.3}", self.drain_rate() / b.rate.max(1e-9)));
            }
            None => row("baseline: broker-only messages/s", "skipped".into()),
        }
        let pg = (self.pg_queries + self.pg_syncs) as f64;
        row(
            "PostgreSQL round trips / message (/ processed message)",
            format!(
                "{:.2} ({:.2}; Query {} + Sync {} over {} connections)",
                per_message(pg),
                pg / self.processed().max(1.0),
                self.pg_queries,
                self.pg_syncs,
                self.pg_connections
            ),
        );
        match &self.services.pg_io {
            Some(io) => {
                let hit_ratio = 100.0 * io.blocks_hit as f64 / (io.blocks_hit + io.blocks_read).max(1) as f64;
                row(
                    "PostgreSQL pages read from outside shared_buffers / message (this run's database)",
                    format!(
                        "{:.2} ({hit_ratio:.2}% of {} page accesses hit)",
                        per_message(io.blocks_read as f64),
                        io.blocks_hit + io.blocks_read
                    ),
                );
                row(
                    "PostgreSQL WAL / message (machine-wide): bytes, full-page images",
                    format!(
                        "{:.0} B, {:.2} FPI",
                        per_message(io.wal_bytes as f64),
                        per_message(io.wal_fpi as f64)
                    ),
                );
            }
            None => {
                row("PostgreSQL pages read, WAL", "not available (pg_stat_wal needs PostgreSQL 14)".into())
            }
        }
        row(
            "Redis round trips / message (worker metric)",
            format!("{:.2}", per_message(self.redis_round_trips)),
        );
        row(
            "Redis commands / message (INFO stats, machine-wide; Lua calls count)",
            format!("{:.2}", per_message(self.services.redis_commands as f64)),
        );
        let lookups: f64 = self.cache.iter().sum();
        let share = |x: f64| 100.0 * x / lookups.max(1.0);
        row(
            "catalog cache: local / redis / database",
            format!(
                "{:.2}% / {:.2}% / {:.2}% of {lookups:.0} lookups",
                share(self.cache[0]),
                share(self.cache[1]),
                share(self.cache[2])
            ),
        );
        let outcomes: Vec<String> = self.outcomes.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
        row("worker outcomes", outcomes.join(", "));
        let turns = &self.turns;
        row(
            "turns: messages that waited for an earlier one (mean wait), parked, skipped",
            format!(
                "{:.0} ({:.1} ms), {:.0}, {:.0}",
                turns.waits,
                turns.mean_wait_ms(),
                turns.parked,
                turns.skipped
            ),
        );
        let window = self.window.as_secs_f64();
        let drain_secs = self.drain.elapsed.as_secs_f64().max(1e-9);
        let cpu = |run: &Usage, drained: f64| {
            let rss = run
                .peak_rss
                .map(|b| format!(", peak RSS {:.0} MiB", b as f64 / 1048576.0))
                .unwrap_or_default();
            format!(
                "{:.1} s CPU; cores {:.2} in the drain, {:.2} over the window{rss}",
                run.cpu_secs,
                drained / drain_secs,
                run.cpu_secs / window.max(1e-9)
            )
        };
        let (drain_workers, drain_services) = &self.at_drain_end;
        for ((name, usage), (_, drained)) in self.workers_usage.iter().zip(drain_workers) {
            row(&format!("CPU: {name}"), cpu(usage, drained.cpu_secs));
        }
        let services = &self.services;
        row(
            "CPU: postgres (all its processes, machine-wide)",
            cpu(&services.postgres, drain_services.postgres.cpu_secs),
        );
        row(
            "CPU: postgres backends of this run's database",
            cpu(&Usage { cpu_secs: services.postgres_run, peak_rss: None }, drain_services.postgres_run),
        );
        let optional = |run: &Option<Usage>, drained: &Option<Usage>| match (run, drained) {
            (Some(run), Some(drained)) => cpu(run, drained.cpu_secs),
            _ => "process not found".into(),
        };
        row("CPU: redis-server", optional(&services.redis, &drain_services.redis));
        row("CPU: rabbitmq (beam.smp)", optional(&services.rabbitmq, &drain_services.rabbitmq));
        row("CPU: bench (publisher, replies, proxy)", cpu(&services.bench, drain_services.bench.cpu_secs));
        row("CPU window (worker start → stop)", format!("{window:.1} s"));
        let worker_cpu: f64 = self.workers_usage.iter().map(|(_, u)| u.cpu_secs).sum();
        let micros = |secs: Option<f64>| {
            secs.map(|s| format!("{:.0}", per_message(s) * 1e6)).unwrap_or_else(|| "-".into())
        };
        row(
            "CPU µs / message: workers, postgres (this run's backends), redis-server, rabbitmq",
            format!(
                "{} / {} / {} / {}",
                micros(Some(worker_cpu)),
                micros(Some(services.postgres_run)),
                micros(services.redis.map(|u| u.cpu_secs)),
                micros(services.rabbitmq.map(|u| u.cpu_secs))
            ),
        );
        if let Some(b) = &self.baseline {
            let consumers: f64 = b.consumers.iter().map(|(_, u)| u.cpu_secs).sum();
            let rabbit = b.rabbitmq.map(|u| format!(", rabbitmq {:.1} s", u.cpu_secs)).unwrap_or_default();
            row("baseline CPU: consumers", format!("{consumers:.1} s{rabbit}"));
        }
        row("handoff replies (workload sanity)", self.handoff_replies.to_string());
        let t = &self.tally;
        let verdict = if self.holds() { "OK" } else { "**VIOLATED**" };
        row(
            "guarantee: exactly one reply per unique message",
            format!(
                "{verdict}: {} unique, {} replied twice ({} extra replies), {} missing, {} stray",
                t.unique, t.replied_twice, t.extra_replies, t.missing, t.stray
            ),
        );
        row("guarantee: each conversation's replies in publish order", self.order.line());
        let (ins, outs) = self.expected_rows();
        row(
            "guarantee: one in row per message, one out row per reply",
            format!("in {} / out {} (expected {ins} / {outs})", self.stored.0, self.stored.1),
        );
        for p in &self.problems {
            row("worker stop", p.clone());
        }

        println!();
        println!("{}", self.setup);
        println!();
        let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        println!("| {:<width$} | value |", "measure");
        println!("|{}|-------|", "-".repeat(width + 2));
        for (k, v) in &rows {
            println!("| {k:<width$} | {v} |");
        }
        println!();
        println!("{}", self.result_line());
    }

    fn result_line(&self) -> String {
        let ms =
            |d: Option<&Duration>| d.map(|d| format!("{:.1}", d.as_secs_f64() * 1e3)).unwrap_or("-".into());
        let cpu = |u: Option<&Usage>| u.map(|u| format!("{:.1}", u.cpu_secs)).unwrap_or("-".into());
        let worker_cpu: f64 = self.workers_usage.iter().map(|(_, u)| u.cpu_secs).sum();
        let worker_rss = self.workers_usage.iter().filter_map(|(_, u)| u.peak_rss).max().unwrap_or(0);
        let per_message = |x: f64| x / self.delivered.max(1) as f64;
        let paced = self.paced.as_ref();
        let paced_at = |q: f64| ms(paced.and_then(|p| at(&p.latency, q)));
        let mut line = String::from("RESULT");
        let mut kv = |k: &str, v: String| {
            let _ = write!(line, " {k}={v}");
        };
        kv("n", self.n.to_string());
        kv("burst", self.burst.map_or("-".into(), |(size, _)| size.to_string()));
        kv("burst_gap_ms", self.burst.map_or("-".into(), |(_, gap)| gap.as_millis().to_string()));
        kv("coalesce_ms", self.coalesce_ms.to_string());
        kv("conversations", self.order.conversations.to_string());
        kv("unique", self.tally.unique.to_string());
        kv("workers", self.workers.to_string());
        kv("concurrency", self.concurrency.to_string());
        kv("prefetch", self.prefetch.to_string());
        kv("responder_delay_ms", self.responder_delay_ms.to_string());
        kv("first_reply_s", format!("{:.2}", self.drain.first_reply.as_secs_f64()));
        kv("drain_s", format!("{:.2}", self.drain.elapsed.as_secs_f64()));
        kv("msgs_per_s", format!("{:.0}", self.drain_rate()));
        kv(
            "unique_replies_per_s",
            format!("{:.0}", self.drain.unique as f64 / self.drain.elapsed.as_secs_f64().max(1e-9)),
        );
        kv("drain_p50_ms", ms(at(&self.drain.latency, 0.5)));
        kv("drain_p99_ms", ms(at(&self.drain.latency, 0.99)));
        kv("paced_rate", paced.map(|p| format!("{:.0}", p.rate)).unwrap_or("-".into()));
        kv("paced_p50_ms", paced_at(0.5));
        kv("paced_p95_ms", paced_at(0.95));
        kv("paced_p99_ms", paced_at(0.99));
        let burst_at = |q: f64| ms(paced.and_then(|p| at(&p.bursts, q)));
        kv("paced_burst_p50_ms", burst_at(0.5));
        kv("paced_burst_p95_ms", burst_at(0.95));
        kv("paced_burst_p99_ms", burst_at(0.99));
        kv(
            "baseline_msgs_per_s",
            self.baseline.as_ref().map(|b| format!("{:.0}", b.rate)).unwrap_or("-".into()),
        );
        kv(
            "ratio",
            self.baseline
                .as_ref()
                .map(|b| format!("{:.3}", self.drain_rate() / b.rate.max(1e-9)))
                .unwrap_or("-".into()),
        );
        let pg = (self.pg_queries + self.pg_syncs) as f64;
        kv("pg_rt_per_msg", format!("{:.2}", per_message(pg)));
        kv("pg_rt_per_processed", format!("{:.2}", pg / self.processed().max(1.0)));
        let io = self.services.pg_io;
        let io_kv = |f: fn(&super::window::PgIo) -> i64, digits: usize| {
            io.as_ref().map(|io| format!("{:.digits$}", per_message(f(io) as f64))).unwrap_or("-".into())
        };
        kv("pg_blks_read_per_msg", io_kv(|io| io.blocks_read, 2));
        kv("pg_wal_bytes_per_msg", io_kv(|io| io.wal_bytes, 0));
        kv("pg_wal_fpi_per_msg", io_kv(|io| io.wal_fpi, 2));
        kv("redis_rt_per_msg", format!("{:.2}", per_message(self.redis_round_trips)));
        kv("redis_cmds_per_msg", format!("{:.2}", per_message(self.services.redis_commands as f64)));
        let lookups: f64 = self.cache.iter().sum::<f64>().max(1.0);
        kv("cache_local_pct", format!("{:.2}", 100.0 * self.cache[0] / lookups));
        kv("cache_redis_pct", format!("{:.2}", 100.0 * self.cache[1] / lookups));
        kv("cache_db_pct", format!("{:.2}", 100.0 * self.cache[2] / lookups));
        kv("window_s", format!("{:.1}", self.window.as_secs_f64()));
        kv("cpu_worker_s", format!("{worker_cpu:.1}"));
        kv("cpu_worker_us_per_msg", format!("{:.0}", per_message(worker_cpu) * 1e6));
        kv("cpu_postgres_s", cpu(Some(&self.services.postgres)));
        kv("cpu_postgres_run_s", format!("{:.1}", self.services.postgres_run));
        kv("cpu_redis_s", cpu(self.services.redis.as_ref()));
        kv("cpu_rabbitmq_s", cpu(self.services.rabbitmq.as_ref()));
        kv("cpu_bench_s", cpu(Some(&self.services.bench)));
        let (drain_workers, drain_services) = &self.at_drain_end;
        let drain_secs = self.drain.elapsed.as_secs_f64().max(1e-9);
        let cores = |secs: Option<f64>| secs.map(|s| format!("{:.2}", s / drain_secs)).unwrap_or("-".into());
        kv("drain_cores_worker", cores(Some(drain_workers.iter().map(|(_, u)| u.cpu_secs).sum())));
        kv("drain_cores_postgres", cores(Some(drain_services.postgres.cpu_secs)));
        kv("drain_cores_postgres_run", cores(Some(drain_services.postgres_run)));
        kv("drain_cores_redis", cores(drain_services.redis.map(|u| u.cpu_secs)));
        kv("drain_cores_rabbitmq", cores(drain_services.rabbitmq.map(|u| u.cpu_secs)));
        kv("drain_cores_bench", cores(Some(drain_services.bench.cpu_secs)));
        kv("rss_worker_mib", format!("{:.0}", worker_rss as f64 / 1048576.0));
        kv("replied_twice", self.tally.replied_twice.to_string());
        kv("missing", self.tally.missing.to_string());
        kv("out_of_order", self.order.out_of_order.to_string());
        kv("turn_waits", format!("{:.0}", self.turns.waits));
        kv("turn_wait_mean_ms", format!("{:.1}", self.turns.mean_wait_ms()));
        kv("turns_parked", format!("{:.0}", self.turns.parked));
        kv("ok", self.holds().to_string());
        line
    }
}

/// The `q` quantile (nearest rank) of sorted samples.
fn at(sorted: &[Duration], q: f64) -> Option<&Duration> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * q).round() as usize)
}

fn percentiles(sorted: &[Duration], of: &str) -> String {
    let ms = |q| at(sorted, q).map(|d| format!("{:.1}", d.as_secs_f64() * 1e3)).unwrap_or("-".into());
    if sorted.is_empty() {
        return format!("no {of}");
    }
    format!("{} / {} / {} ms ({} {of})", ms(0.5), ms(0.95), ms(0.99), sorted.len())
}
