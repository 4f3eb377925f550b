//! `worker locks list|release` and `worker state` (CONTRACT §6).

use anyhow::Context;
use chat_worker::config::Config;
use chat_worker::dedup::{Dedup, ProcessingState, Released};
use chat_worker::model::Fingerprint;
use chat_worker::store;
use serde_json::json;

use crate::cli::LocksCommand;

async fn dedup(config: &Config) -> anyhow::Result<Dedup> {
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let redis = chat_worker::services::redis(config, deadline).await?;
    Ok(Dedup::new(redis, &config.redis, "operator"))
}

pub async fn locks(config: &Config, command: &LocksCommand) -> anyhow::Result<()> {
    let dedup = dedup(config).await?;
    match command {
        LocksCommand::List { limit, json } => {
            let mut states = Vec::new();
            for (shard, fp) in dedup.inflight(i64::MAX, *limit).await.context("listing locks")? {
                if let Some(state) = dedup.state_in(shard, &fp).await? {
                    states.push(state);
                }
            }
            if *json {
                println!("{}", json!({ "locks": states }));
            } else if states.is_empty() {
                println!("no message is being processed");
            } else {
                for s in &states {
                    println!("{}  {}", s.fingerprint, describe(s));
                }
            }
        }
        LocksCommand::Release { fingerprint: fp } => {
            match dedup.release(fp, true).await.context("releasing the lock")? {
                Released::Released => {
                    println!(
                        "released {fp}; a redelivery will process it, and its former holder can no longer commit"
                    )
                }
                Released::HeldByLiveWorker | Released::NothingHeld => println!("{fp} was not locked"),
            }
        }
    }
    Ok(())
}

pub async fn state(config: &Config, fp: &Fingerprint, as_json: bool) -> anyhow::Result<()> {
    let dedup = dedup(config).await?;
    let state = dedup.state(fp).await.context("reading the processing state")?;
    let deadline = std::time::Instant::now() + config.startup_timeout();
    let db = chat_worker::services::postgres(config, deadline, None).await?;
    let reply = store::stored_reply(&db, fp).await.context("reading the stored reply")?;
    // A coalesced message has no reply of its own: the reply of its burst answers it.
    let burst = store::bursts::answered_by(&db, fp).await.context("reading the burst's reply")?;
    if as_json {
        let committed = reply
            .as_ref()
            .map(|r| json!({ "conversation_id": r.conversation_id, "replied_at": r.created_at }));
        let coalesced = burst
            .as_ref()
            .map(|answered| json!({ "answered_by": answered.as_ref().map(|f| format!("reply:{f}")) }));
        println!(
            "{}",
            json!({ "fingerprint": fp.as_str(), "state": state, "reply": committed, "coalesced": coalesced })
        );
        return Ok(());
    }
    match &state {
        Some(s) => println!("{fp}  {}", describe(s)),
        None => {
            println!("{fp}  no processing state in Redis (never seen, or older than redis.state_ttl_secs)")
        }
    }
    match (reply, burst) {
        (Some(r), _) => {
            println!("reply committed at {} in conversation {}", r.created_at.to_rfc3339(), r.conversation_id)
        }
        (None, Some(Some(answered_by))) => {
            println!("coalesced: answered by reply:{answered_by}, the reply to the last message of its burst")
        }
        (None, Some(None)) => println!("coalesced: its burst's reply is not committed yet"),
        (None, None) => println!("no reply committed"),
    }
    Ok(())
}

fn describe(s: &ProcessingState) -> String {
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into())
    };
    let lock = match (s.locked, s.holder_alive) {
        (true, true) => "locked by a live worker",
        (true, false) => "locked by a worker that is gone",
        (false, _) => "not locked",
    };
    let waiting = match &s.waiting_behind {
        Some(ahead) => format!("; waiting for its conversation's turn, behind {ahead}"),
        None => String::new(),
    };
    format!(
        "status={} worker={} started={} finished={} attempts={} ({lock}{waiting})",
        s.status,
        s.worker_id,
        time(s.started_at_ms),
        time(s.completed_at_ms),
        s.attempts
    )
}
