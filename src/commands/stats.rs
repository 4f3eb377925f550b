//! `worker stats`: the agent's figures, aggregated in SQL, cached in Redis for a
//! minute (dashboards and operators repeating it cost one query a minute).

use anyhow::{Context, bail};
use chat_worker::config::Config;
use chat_worker::store::stats::{self, Stats};
use chrono::{DateTime, Duration, Utc};

use crate::cli::StatsArgs;

const CACHE_SECONDS: u64 = 60;

pub async fn stats(config: &Config, args: &StatsArgs) -> anyhow::Result<()> {
    let since = parse_since(&args.since, Utc::now())?;
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

/// `2026-11-21T10:00:00Z`, or `30m` / `24h` / `7d` back from `now`.
fn parse_since(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("--since `{text}`: use an RFC 3339 time or a span like 30m, 24h, 7d"))?;
    let span = match unit {
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => bail!("--since `{text}`: the unit must be m, h or d"),
    };
    Ok(now - span)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_spans() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(parse_since("24h", now).ok(), Some(now - Duration::hours(24)));
        assert_eq!(parse_since("7d", now).ok(), Some(now - Duration::days(7)));
        assert_eq!(
            parse_since("2026-11-01T00:00:00Z", now).ok().map(|t| t.to_rfc3339()),
            Some("2026-11-01T00:00:00+00:00".into())
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("5y", now).is_err());
    }
}
