//! `loadtest context` (`make bench-context`): how long building a message's context takes —
//! tenant profile, catalog, knowledge and the conversation's history — with every
//! cache tier cold, with only Redis warm, and warm in process; plus the builtin
//! responder's answer on that context.
//!
//! Workload: 10 tenants, each 200 products, 50 services and 20 FAQ entries, and
//! a conversation of 20 messages. Configuration comes from the environment
//! (`scripts/loadtest.sh context` gives it a database and Redis prefix of its own).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chat_worker::catalog::CatalogCache;
use chat_worker::config::{Config, Overrides};
use chat_worker::decode::{Inbound, decode};
use chat_worker::model::ConversationStatus;
use chat_worker::respond::{Builtin, Context};
use chat_worker::store;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Context-building iterations.
    #[arg(value_name = "ITERATIONS", default_value_t = 300)]
    iterations: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let iterations = args.iterations;
    let config = Config::load(None, &Overrides::default())?;
    let pool = store::pool(&config.database.url, 8)?;
    let deadline = Instant::now() + config.startup_timeout();
    let redis = chat_worker::services::redis(&config, deadline).await?;
    let tenants = seed(&pool).await.context("seeding")?;
    let messages: Vec<Inbound> = tenants.iter().map(|t| inbound(*t)).collect::<anyhow::Result<_>>()?;
    let db = store::Db::direct(pool.clone());
    let new_cache = || CatalogCache::new(db.clone(), redis.clone(), &config.redis.key_prefix, &config.cache);

    let mut cold = Vec::new();
    let mut redis_tier = Vec::new();
    let mut warm = Vec::new();
    let mut answer = Vec::new();
    let warm_cache = new_cache();
    for i in 0..iterations {
        let msg = &messages[i % messages.len()];
        let tenant = msg.tenant_id;
        new_cache().forget_shared(tenant).await;
        cold.push(timed(build(&new_cache(), &db, msg)).await?.0);
        redis_tier.push(timed(build(&new_cache(), &db, msg)).await?.0);
        build(&warm_cache, &db, msg).await?;
        let (elapsed, (profile, catalog, knowledge, history)) = timed(build(&warm_cache, &db, msg)).await?;
        warm.push(elapsed);
        let tenant_profile = profile.tenant.clone().context("seeded tenant")?;
        let ctx = Context {
            inbound: msg,
            conversation_status: ConversationStatus::Open,
            tenant: &tenant_profile,
            catalog: &catalog,
            knowledge: &knowledge,
            history: &history,
            latest_list: None,
            burst: &[],
        };
        let started = Instant::now();
        let reply = Builtin::default().answer(&ctx);
        answer.push(started.elapsed());
        anyhow::ensure!(reply.references.len() >= 2, "the benchmark question lists products");
    }

    println!(
        "context building, {iterations} iterations over 10 tenants (200 products, 50 services, 20 FAQ each; 20 messages of history):"
    );
    println!("{:<44} {:>10} {:>10} {:>10}", "", "p50", "p95", "mean");
    for (name, samples) in [
        ("cold (PostgreSQL: 3 catalog loads + history)", &mut cold),
        ("Redis tier (3 GETs + history)", &mut redis_tier),
        ("warm (in process + history)", &mut warm),
        ("builtin answer on the built context", &mut answer),
    ] {
        let (p50, p95, mean) = summary(samples);
        println!("{name:<44} {:>8.0}µs {:>8.0}µs {:>8.0}µs", p50, p95, mean);
    }
    Ok(())
}

type Built = (
    std::sync::Arc<chat_worker::model::catalog::Profile>,
    std::sync::Arc<chat_worker::model::catalog::Catalog>,
    std::sync::Arc<chat_worker::model::catalog::Knowledge>,
    Vec<chat_worker::model::HistoryItem>,
);

/// What the pipeline's catalog + history stage does for one message.
async fn build(cache: &CatalogCache, db: &store::Db, msg: &Inbound) -> anyhow::Result<Built> {
    let (profile, catalog, knowledge, context) = tokio::try_join!(
        cache.profile(msg.tenant_id),
        cache.catalog(msg.tenant_id),
        cache.knowledge(msg.tenant_id),
        store::load_context(db, msg, 20, true),
    )?;
    Ok((profile, catalog, knowledge, context.map(|c| c.history).unwrap_or_default()))
}

async fn timed<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<(Duration, T)> {
    let started = Instant::now();
    let value = f.await?;
    Ok((started.elapsed(), value))
}

fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| us(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len().max(1) as f64;
    (at(0.5), at(0.95), mean)
}

fn inbound(tenant: Uuid) -> anyhow::Result<Inbound> {
    let body = json!({
        "message_id": "bench", "tenant_id": tenant, "channel": "web",
        "customer": {"external_id": "bench-customer"},
        "text": "Do you have running shoes under 5000?", "received_at": "2026-11-21T10:15:30Z"
    });
    decode(body.to_string().as_bytes()).map_err(|r| anyhow::anyhow!(r.error))
}

async fn seed(pool: &PgPool) -> anyhow::Result<Vec<Uuid>> {
    let mut tenants = Vec::new();
    for t in 0..10 {
        let tenant = Uuid::new_v4();
        testkit::seed::tenant(pool, tenant, &format!("Bench shop {t}")).await?;
        sqlx::query(
            "INSERT INTO products (tenant_id, name, category, price, currency, description)
             SELECT $1, 'Product ' || n, (ARRAY['running shoes','fitness','outdoor','kids'])[n % 4 + 1], 500 + n * 40, 'KES',
                    'A fine product number ' || n || ' for everyday use'
               FROM generate_series(1, 200) n",
        )
        .bind(tenant)
        .execute(pool)
        .await?;
        sqlx::query(
            "INSERT INTO services (tenant_id, name, price, currency, duration_minutes, description)
             SELECT $1, 'Service ' || n, 1000 + n * 100, 'KES', 30, 'Service number ' || n FROM generate_series(1, 50) n",
        )
        .bind(tenant)
        .execute(pool)
        .await?;
        sqlx::query(
            "INSERT INTO knowledge_entries (tenant_id, entry_type, title, content)
             SELECT $1, 'faq', 'Question ' || n, 'Answer number ' || n || ' with some detail.' FROM generate_series(1, 20) n",
        )
        .bind(tenant)
        .execute(pool)
        .await?;
        sqlx::query(
            "WITH c AS (INSERT INTO conversations (tenant_id, channel, customer_external_id)
                        VALUES ($1, 'web', 'bench-customer') RETURNING id)
             INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at)
             SELECT c.id, CASE WHEN n % 2 = 1 THEN 'in' ELSE 'out' END, 'p' || n, $1::text || n, 'History message ' || n,
                    now() - (30 - n) * interval '1 minute'
               FROM c, generate_series(1, 20) n",
        )
        .bind(tenant)
        .execute(pool)
        .await?;
        tenants.push(tenant);
    }
    Ok(tenants)
}
