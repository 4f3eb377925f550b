//! `worker config`: the configuration in effect, after the file, the environment
//! and the flags, so an operator can see what a deployment's layers add up to.

use chat_worker::config::Config;

/// One JSON object, passwords and keys redacted (`Config::redacted`).
pub fn config(config: &Config) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&config.redacted())?);
    Ok(())
}
