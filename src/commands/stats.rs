//! `worker stats`: the agent's figures, aggregated in SQL, cached in Redis for a
//! minute (dashboards and operators repeating it cost one query a minute).

use anyhow::Context;
use chat_worker::catalog::FiguresCache;
use chat_worker::config::Config;
use chat_worker::store::stats::{self, Stats};
use chrono::Utc;

use crate::cli::StatsArgs;

pub async fn stats(config: &Config, args: &StatsArgs) -> anyhow::Result<()> {
    let since = args.since.resolve(Utc::now()).context("--since reaches before the earliest time")?;
    let db = super::database(config).await?;
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let redis = match chat_worker::services::redis(config, deadline).await {
        Ok(redis) => chat_worker::services::redis_cache(config, deadline, &redis).await.ok(),
        Err(_) => None,
    };
    let cache = FiguresCache::new(redis, &config.redis.key_prefix, args.tenant, since);
    let cached = if args.fresh { None } else { cache.get().await };
    let figures = match cached {
        Some(figures) => figures,
        None => {
            let figures = stats::stats(&db, args.tenant, since).await.context("computing statistics")?;
            cache.put(&figures).await;
            figures
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        print_text(&figures);
    }
    Ok(())
}

fn print_text(s: &Stats) {
    let tenant = s.tenant_id.map(|t| t.to_string()).unwrap_or_else(|| "all tenants".into());
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.0} ms")).unwrap_or_else(|| "-".into());
    println!("{tenant}, since {}", s.since.to_rfc3339());
    let c = &s.conversations;
    println!("conversations: {} open, {} in handoff, {} closed", c.open, c.handoff, c.closed);
    println!("messages: {} in, {} out", s.messages_in, s.messages_out);
    println!(
        "answers: {}; handoff rate {:.1}%; average confidence {}",
        s.answers,
        s.handoff_rate * 100.0,
        s.average_confidence.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into())
    );
    println!(
        "responder latency: p50 {}, p95 {}, p99 {}",
        ms(s.latency_ms.p50),
        ms(s.latency_ms.p95),
        ms(s.latency_ms.p99)
    );
    println!(
        "cost: {:.6} ({} prompt and {} completion tokens)",
        s.cost, s.prompt_tokens, s.completion_tokens
    );
    let by: Vec<String> = s.by_responder.iter().map(|r| format!("{} {}", r.responder, r.answers)).collect();
    if !by.is_empty() {
        println!("by responder: {}", by.join(", "));
    }
}
