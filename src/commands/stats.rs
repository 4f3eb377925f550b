//! `worker stats`: the agent's figures, aggregated in SQL, cached in Redis for a
//! minute (dashboards and operators repeating it cost one query a minute).

use anyhow::Context;
use chat_worker::config::Config;
use chat_worker::store::stats::{self, Stats};
use chrono::Utc;

use crate::cli::StatsArgs;

const CACHE_SECONDS: u64 = 60;

pub async fn stats(config: &Config, args: &StatsArgs) -> anyhow::Result<()> {
    let since = args.since.resolve(Utc::now()).context("--since reaches before the earliest time")?;
    let pool = super::database(config).await?;
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let mut redis = chat_worker::services::redis(config, deadline).await.ok();
    // Cached per tenant and per minute of `since`, so "24h" asked twice in a minute hits.
    let key = format!(
        "{}stats:{}:{}",
        config.redis.key_prefix,
        args.tenant.map(|t| t.to_string()).unwrap_or_else(|| "all".into()),
        since.timestamp() / 60
    );
    let cached: Option<Stats> = match (&mut redis, args.fresh) {
        (Some(r), false) => redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(r)
            .await
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok()),
        _ => None,
    };
    let figures = match cached {
        Some(s) => s,
        None => {
            let s = stats::stats(&pool, args.tenant, since).await.context("computing statistics")?;
            if let (Some(r), Ok(json)) = (&mut redis, serde_json::to_string(&s)) {
                let _: Result<(), _> =
                    redis::cmd("SET").arg(&key).arg(json).arg("EX").arg(CACHE_SECONDS).query_async(r).await;
            }
            s
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
