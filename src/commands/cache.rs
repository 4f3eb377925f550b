//! `worker cache warm` / `worker cache invalidate`.

use anyhow::Context;
use chat_worker::catalog::CatalogCache;
use chat_worker::config::Config;
use chat_worker::store;

use crate::cli::CacheCommand;

pub async fn cache(config: &Config, command: &CacheCommand) -> anyhow::Result<()> {
    let db = super::database(config).await?;
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let redis = chat_worker::services::redis(config, deadline).await?;
    let redis = chat_worker::services::redis_cache(config, deadline, &redis).await?;
    match command {
        CacheCommand::Warm { tenant } => {
            let tenants = match tenant {
                Some(t) => vec![*t],
                None => store::catalog::active_tenants(&db).await.context("listing tenants")?,
            };
            let cache = CatalogCache::new(db, redis, &config.redis.key_prefix, &config.cache);
            for t in &tenants {
                cache.warm(*t).await.with_context(|| format!("warming tenant {t}"))?;
                let catalog = cache.catalog(*t).await?;
                let knowledge = cache.knowledge(*t).await?;
                println!(
                    "tenant {t}: {} products, {} services, {} knowledge entries cached",
                    catalog.products.len(),
                    catalog.services.len(),
                    knowledge.entries.len()
                );
            }
            println!("warmed {} tenant(s)", tenants.len());
        }
        CacheCommand::Invalidate { tenant } => {
            let version =
                store::catalog::bump_version(&db, *tenant).await.context("bumping the tenant's version")?;
            let cache = CatalogCache::new(db, redis, &config.redis.key_prefix, &config.cache);
            cache.forget_shared(*tenant).await;
            println!(
                "tenant {tenant}: cache invalidated (version {version}); running workers drop their copies now"
            );
        }
    }
    Ok(())
}
