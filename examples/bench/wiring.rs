//! Where the workers connect: PostgreSQL through the counting proxy, and with
//! `RESPONDER_DELAY_MS` the stub agent service, with the timeouts that must fit
//! around it.

use anyhow::{Context as _, bail};
use chat_worker::config::Config;

/// The database's name, as PostgreSQL's process titles show it.
pub fn database_name(database_url: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(database_url).context("database.url is not a URL")?;
    Ok(url.path().trim_start_matches('/').to_owned())
}

/// host:port of the database URL.
pub fn upstream(database_url: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(database_url).context("database.url is not a URL")?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .context("database.url has no host (a socket path cannot be proxied)")?;
    Ok(format!("{host}:{}", url.port().unwrap_or(5432)))
}

/// The database URL with the proxy's address and `sslmode=disable`, so the
/// proxy sees plaintext it can parse.
pub fn proxied_url(database_url: &str, proxy: std::net::SocketAddr) -> anyhow::Result<String> {
    let mut url = url::Url::parse(database_url).context("database.url is not a URL")?;
    url.set_host(Some(&proxy.ip().to_string())).context("setting the proxy's host")?;
    url.set_port(Some(proxy.port())).map_err(|()| anyhow::anyhow!("database.url cannot take a port"))?;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "sslmode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair("sslmode", "disable");
    Ok(url.to_string())
}

/// The environment that points the workers at the stub, with the timeouts
/// stretched when the delay needs it: config validation wants responder timeout
/// < message deadline < lock TTL <= state TTL.
pub fn http_responder_env(
    config: &Config,
    stub: std::net::SocketAddr,
    delay_ms: u64,
) -> anyhow::Result<Vec<(String, String)>> {
    if delay_ms > 60_000 {
        bail!("RESPONDER_DELAY_MS={delay_ms}: at most 60000 (a minute per answer)");
    }
    let mut env = vec![
        ("WORKER__RESPONDER__KIND".to_owned(), "http".to_owned()),
        ("WORKER__RESPONDER__URL".to_owned(), format!("http://{stub}/answer")),
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
