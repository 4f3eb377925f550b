//! Where the workers connect besides the broker: with `RESPONDER_DELAY_MS`, a
//! stand-in agent service (testkit's stub), with the timeouts that must fit
//! around it. (PostgreSQL through the counting proxy: `testkit::urls::proxied`.)

use std::time::Duration;

use anyhow::{Context as _, bail};
use chat_worker::config::Config;
use testkit::http_stub::{self, Stub};

/// Every answer, in the `http` responder's format (`{text, confidence, handoff,
/// references}`): the bench shows how the worker behaves when answering is slow
/// (an LLM) rather than CPU-bound.
const ANSWER: &str = r#"{"text":"Thanks for your message! Here is what we have for you.","confidence":0.9,"handoff":false,"references":[]}"#;

/// The stub agent, answering after `delay_ms`; it lives as long as the bench.
pub async fn agent(delay_ms: u64) -> anyhow::Result<Stub> {
    http_stub::agent(Duration::from_millis(delay_ms), ANSWER).await.context("starting the stub agent")
}

/// The environment that points the workers at the stub (`stub_url`), with the
/// timeouts stretched when the delay needs it: config validation wants
/// responder timeout < message deadline < lock TTL <= state TTL.
pub fn http_responder_env(
    config: &Config,
    stub_url: &str,
    delay_ms: u64,
) -> anyhow::Result<Vec<(String, String)>> {
    if delay_ms > 60_000 {
        bail!("RESPONDER_DELAY_MS={delay_ms}: at most 60000 (a minute per answer)");
    }
    let mut env = vec![
        ("WORKER__RESPONDER__KIND".to_owned(), "http".to_owned()),
        ("WORKER__RESPONDER__URL".to_owned(), format!("{stub_url}/answer")),
    ];
    let timeout_ms = config.responder.timeout_ms.max(delay_ms + 5_000);
    if timeout_ms > config.responder.timeout_ms {
        let deadline = config.worker.message_deadline_secs.max(timeout_ms.div_ceil(1000) + 15);
        let lock = config.redis.lock_ttl_secs.max(deadline + 15);
        env.push(("WORKER__RESPONDER__TIMEOUT_MS".into(), timeout_ms.to_string()));
        env.push(("WORKER__WORKER__MESSAGE_DEADLINE_SECS".into(), deadline.to_string()));
        env.push(("WORKER__REDIS__LOCK_TTL_SECS".into(), lock.to_string()));
        env.push(("WORKER__REDIS__STATE_TTL_SECS".into(), config.redis.state_ttl_secs.max(lock).to_string()));
    }
    Ok(env)
}
