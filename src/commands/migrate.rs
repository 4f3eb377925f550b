//! `worker migrate`: create the database if missing, apply the migrations, both
//! over the direct (session) connection: `DATABASE_LISTEN_URL` when
//! `DATABASE_URL` goes through a transaction pooler (the migrator's advisory lock
//! is a session's).

use anyhow::Context;
use chat_worker::config::Config;
use chat_worker::{services, store};

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.database.session_url();
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let created =
        services::wait_for("postgresql", url, deadline, || store::create_database_if_missing(url)).await?;
    let pool = store::pool(url, 1)?;
    store::migrate(&pool).await.context("applying migrations")?;
    pool.close().await;
    let database = url.rsplit('/').next().and_then(|d| d.split('?').next()).unwrap_or("");
    let what = if created { "created and migrated" } else { "migrated" };
    println!("database {database} {what}: up to date");
    Ok(())
}
