//! Reaching RabbitMQ, Redis and PostgreSQL at start: retried with backoff (the
//! `backon` crate) until `startup_timeout`, then one clear error naming the service
//! and its last failure, with passwords redacted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

use crate::broker::Broker;
use crate::config::Config;
use crate::redact::redact_url;
use crate::redis_conn::RedisConn;
use crate::store::{self, Db, DbSettings};

#[derive(Debug, thiserror::Error)]
#[error("{service} at {url} is not reachable after {:.1}s: {last_error}", waited.as_secs_f64())]
pub struct Unreachable {
    pub service: &'static str,
    pub url: String,
    pub waited: Duration,
    pub last_error: String,
}

/// Retries `attempt` until it succeeds or `deadline` passes.
pub async fn wait_for<T, E, F, Fut>(
    service: &'static str,
    url: &str,
    deadline: Instant,
    attempt: F,
) -> Result<T, Unreachable>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let mut last_error = String::from("timed out");
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times();
    let retried = attempt.retry(backoff).notify(|e: &E, _| last_error = e.to_string());
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, retried).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(unreachable(service, url, started, e.to_string())),
        Err(_) => Err(unreachable(service, url, started, last_error)),
    }
}

fn unreachable(service: &'static str, url: &str, started: Instant, last_error: String) -> Unreachable {
    Unreachable {
        service,
        url: redact_url(url),
        waited: started.elapsed(),
        last_error: redact_url_in(&last_error, url),
    }
}

/// Client libraries sometimes quote the URL they were given; never echo its password.
fn redact_url_in(text: &str, url: &str) -> String {
    crate::redact::redact_in(text, url)
}

/// `statement_timeout`: PostgreSQL cancels any statement running longer (the
/// worker's; administrative commands, migrations among them, go unbounded).
/// Through a transaction pooler (`database.listen_url` set) the handle also
/// holds a direct pool for LISTEN, connected on first use.
pub async fn postgres(
    config: &Config,
    deadline: Instant,
    statement_timeout: Option<Duration>,
) -> Result<Db, Unreachable> {
    let c = &config.database;
    let settings = DbSettings {
        max_connections: c.max_connections,
        statement_timeout,
        session_url: c.through_pooler().then_some(c.listen_url.as_str()),
        prepared_statements: c.named_statements(),
    };
    let db = Db::connect_lazy(&c.url, settings).map_err(|e| Unreachable {
        service: "postgresql",
        url: redact_url(&c.url),
        waited: Duration::ZERO,
        last_error: e.to_string(),
    })?;
    wait_for("postgresql", &c.url, deadline, || async {
        store::ping(&db).await?;
        db.check_timeouts().await
    })
    .await?;
    Ok(db)
}

pub async fn redis(config: &Config, deadline: Instant) -> Result<RedisConn, Unreachable> {
    let url = &config.redis.url;
    wait_for("redis", url, deadline, || RedisConn::connect(&config.redis)).await
}

/// The Redis of the shared catalog cache: `redis`'s own connection unless
/// `redis.cache_url` names another.
pub async fn redis_cache(
    config: &Config,
    deadline: Instant,
    redis: &RedisConn,
) -> Result<RedisConn, Unreachable> {
    if config.redis.cache_url.is_empty() {
        return Ok(redis.clone());
    }
    let url = config.redis.cache_url();
    wait_for("redis (cache)", url, deadline, || RedisConn::open(url, config.redis.mode)).await
}

pub async fn rabbitmq(config: &Config, deadline: Instant) -> Result<Broker, Unreachable> {
    rabbitmq_reporting(config, deadline, Arc::default()).await
}

/// As [`rabbitmq`], the broker then saying in `publishing` whether it can publish.
pub async fn rabbitmq_reporting(
    config: &Config,
    deadline: Instant,
    publishing: Arc<AtomicBool>,
) -> Result<Broker, Unreachable> {
    wait_for("rabbitmq", &config.amqp.url, deadline, || {
        Broker::connect_reporting(&config.amqp, publishing.clone())
    })
    .await
}
