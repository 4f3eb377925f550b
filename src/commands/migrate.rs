//! `worker migrate`: create the database if missing, apply the migrations.

use anyhow::Context;
use chat_worker::config::Config;
use chat_worker::{services, store};

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = &config.database.url;
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let created =
        services::wait_for("postgresql", url, deadline, || store::create_database_if_missing(url)).await?;
    let pool = services::postgres(config, deadline, None).await?;
    store::migrate(&pool).await.context("applying migrations")?;
    let database = url.rsplit('/').next().and_then(|d| d.split('?').next()).unwrap_or("");
    let what = if created { "created and migrated" } else { "migrated" };
    println!("database {database} {what}: up to date");
    Ok(())
}
