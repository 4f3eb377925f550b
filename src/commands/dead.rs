//! `worker dead list|replay` (CONTRACT §6).

use anyhow::Context;
use chat_worker::broker::dead;
use chat_worker::config::Config;
use serde_json::json;

use crate::cli::DeadCommand;

pub async fn dead(config: &Config, command: &DeadCommand) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let broker = chat_worker::services::rabbitmq(config, deadline).await?;
    let result = match command {
        DeadCommand::List { limit, json } => list(config, &broker, *limit, *json).await,
        DeadCommand::Replay { limit } => {
            let replayed = dead::replay(&broker.connection, &config.amqp, limit.unwrap_or(usize::MAX))
                .await
                .context("replaying dead letters")?;
            println!("replayed {replayed} message(s) to {}", config.amqp.inbound_queue);
            Ok(())
        }
    };
    broker.close().await;
    result
}

async fn list(
    config: &Config,
    broker: &chat_worker::broker::Broker,
    limit: usize,
    as_json: bool,
) -> anyhow::Result<()> {
    let letters =
        dead::list(&broker.connection, &config.amqp, limit).await.context("listing dead letters")?;
    if as_json {
        println!("{}", json!({ "dead": letters }));
        return Ok(());
    }
    if letters.is_empty() {
        println!("{} is empty", config.amqp.dead_queue);
    }
    for l in &letters {
        let attempts = l.attempts.map(|a| format!(" after {a} attempts")).unwrap_or_default();
        println!(
            "{}  {}{attempts}: {}",
            l.message_id.as_deref().unwrap_or("(no message_id)"),
            l.error_kind.as_deref().unwrap_or("(no x-error-kind)"),
            l.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
