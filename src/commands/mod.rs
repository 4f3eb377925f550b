//! One module per command of the binary (CONTRACT §6).

mod cache;
mod config;
mod dead;
mod history;
mod locks;
mod migrate;
mod prune;
mod run;
mod stats;

pub use cache::cache;
pub use config::config;
pub use dead::dead;
pub use history::history;
pub use locks::{locks, state};
pub use migrate::migrate;
pub use prune::prune;
pub use run::run;
pub use stats::stats;

use chat_worker::config::Config;
use chat_worker::store::Db;

/// The database, waited for up to `startup_timeout_secs` (through the pooler,
/// when there is one: the commands' statements go like the worker's).
async fn database(config: &Config) -> anyhow::Result<Db> {
    let deadline = std::time::Instant::now() + config.startup_timeout();
    Ok(chat_worker::services::postgres(config, deadline, None).await?)
}
