//! `Pipeline::process` driven one envelope at a time, on the real RabbitMQ,
//! Redis and PostgreSQL, without a consume loop: each row of CONTRACT §3 is
//! the outcome of one call. The lease guard's deadline, lease loss and lapse
//! run on a paused tokio clock that the test moves (see [`on_paused_clock`]),
//! so a 45 s deadline takes a fraction of a second and no test sleeps for it.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chat_worker::broker::Broker;
use chat_worker::catalog::CatalogCache;
use chat_worker::config::{Config, RedisMode};
use chat_worker::dedup::Dedup;
use chat_worker::keys::{Keys, Shard};
use chat_worker::model::{Answer, Envelope};
use chat_worker::outcome::Outcome;
use chat_worker::pipeline::{Parts, Pipeline};
use chat_worker::redis_conn::RedisConn;
use chat_worker::respond::{Context, RespondError, Responder};
use chat_worker::store::Db;
use chat_worker::telemetry::metrics::Metrics;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;

use crate::harness::{TestEnv, shard_of};

mod lease;
mod outcomes;

/// What the test's responder does when asked.
#[derive(Clone, Copy)]
pub(super) enum Acts {
    Answers,
    Fails,
    /// Never answers.
    Hangs,
    /// Another worker takes the lock over meanwhile; then it never answers.
    LosesTheLockAndHangs,
    /// The lock's key becomes unreadable to renewals (an error each time); then
    /// it never answers.
    BreaksTheLockAndHangs,
}

struct Scripted {
    acts: Acts,
    redis: RedisConn,
    prefix: String,
    calls: AtomicU32,
}

impl Responder for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let lock = Keys::new(&self.prefix).lock(Shard::of(ctx.inbound), &ctx.inbound.fingerprint());
            let mut redis = self.redis.clone();
            match self.acts {
                Acts::Answers => return Ok(Answer::plain("Here it is.", false, 0.9)),
                Acts::Fails => return Err(RespondError::Transient("agent unreachable".into())),
                Acts::Hangs => {}
                Acts::LosesTheLockAndHangs => {
                    let taken: () = redis::cmd("SET")
                        .arg(&lock)
                        .arg("token|elsewhere|w-elsewhere")
                        .query_async(&mut redis)
                        .await
                        .expect("set");
                    taken
                }
                Acts::BreaksTheLockAndHangs => {
                    let broken: () = redis::pipe()
                        .cmd("DEL")
                        .arg(&lock)
                        .cmd("HSET")
                        .arg(&lock)
                        .arg("not")
                        .arg("a lock")
                        .query_async(&mut redis)
                        .await
                        .expect("break");
                    broken
                }
            }
            pending().await
        })
    }
}

/// A test's own world, and a pipeline over it answering as `acts` says.
pub(super) struct World {
    pub(super) env: TestEnv,
    pub(super) pipeline: Pipeline,
    redis: RedisConn,
    _broker: Broker,
}

impl World {
    pub(super) async fn new(acts: Acts, configure: impl FnOnce(&mut Config)) -> Self {
        let mut env = TestEnv::new().await;
        configure(&mut env.config);
        let config = &env.config;
        // No timeout of the clients' own: on a paused clock, a timer that only
        // guards an I/O wait would fire before the wait ends. The pipeline's
        // own deadline and renewals are then the only clocks that matter.
        let pool = PgPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(Duration::from_secs(86_400))
            .idle_timeout(None)
            .max_lifetime(None)
            // Direct, whatever the suite runs through: a test of the pipeline's clocks.
            .connect(config.database.session_url())
            .await
            .expect("pool");
        let redis = match config.redis.mode {
            RedisMode::Standalone => {
                let client = redis::Client::open(config.redis.url.as_str()).expect("redis url");
                let manager = ConnectionManagerConfig::new().set_response_timeout(None);
                RedisConn::Standalone(
                    ConnectionManager::new_with_config(client, manager).await.expect("redis"),
                )
            }
            RedisMode::Cluster => RedisConn::connect(&config.redis).await.expect("redis cluster"),
        };
        let broker = Broker::connect(&config.amqp).await.expect("rabbitmq");
        let parts = Parts {
            db: Db::direct(pool.clone()),
            dedup: Dedup::new(redis.clone(), &config.redis, "w-pipeline"),
            cache: CatalogCache::new(
                Db::direct(pool),
                redis.clone(),
                &config.redis.key_prefix,
                &config.cache,
            ),
            responder: Arc::new(Scripted {
                acts,
                redis: redis.clone(),
                prefix: config.redis.key_prefix.clone(),
                calls: AtomicU32::new(0),
            }),
            publisher: broker.publisher(),
            metrics: Arc::new(Metrics::new()),
        };
        let pipeline = Pipeline::assemble(config, parts);
        Self { env, pipeline, redis, _broker: broker }
    }

    /// The same world, answering as `acts` says from now on.
    pub(super) fn acting(&mut self, acts: Acts) {
        self.pipeline.responder = Arc::new(Scripted {
            acts,
            redis: self.redis.clone(),
            prefix: self.env.config.redis.key_prefix.clone(),
            calls: AtomicU32::new(0),
        });
    }

    /// A first delivery of `message`, straight from a gateway.
    pub(super) async fn process(&self, message: &Value) -> Outcome {
        self.process_as(message, false).await
    }

    pub(super) async fn process_as(&self, message: &Value, seen_before: bool) -> Outcome {
        let body = message.to_string();
        let key = self.env.routing_key_of(body.as_bytes());
        let envelope = Envelope { seen_before, ..Envelope::first(body.as_bytes(), Some(&key)) };
        self.pipeline.process(&envelope).await
    }

    pub(super) async fn redis_get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query_async(&mut self.redis.clone()).await.unwrap_or(None)
    }

    /// The `state` or `lock` key of `message`.
    pub(super) fn key(&self, kind: &str, message: &Value) -> String {
        let keys = Keys::new(&self.env.config.redis.key_prefix);
        let (shard, fp) = shard_of(message);
        match kind {
            "state" => keys.state(shard, &fp),
            "lock" => keys.lock(shard, &fp),
            other => panic!("no {other} key of a message"),
        }
    }

    pub(super) async fn state_status(&self, message: &Value) -> Option<String> {
        redis::cmd("HGET")
            .arg(self.key("state", message))
            .arg("status")
            .query_async(&mut self.redis.clone())
            .await
            .expect("hget")
    }
}

/// Runs `work` on a paused tokio clock that only the test moves: `STEP` at a
/// time, after giving the services a few real milliseconds to answer.
///
/// A paused clock alone would jump to the next timer whenever the runtime
/// waits, also while it waits for Redis or PostgreSQL: a deadline would then
/// fire during a renewal's round trip. A blocking task running meanwhile keeps
/// tokio from moving the clock by itself, so virtual time passes only here.
pub(super) async fn on_paused_clock<T>(work: impl std::future::Future<Output = T>) -> (T, Duration) {
    const STEP: Duration = Duration::from_millis(50);
    const REAL_PAUSE: Duration = Duration::from_millis(5);
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = tokio::task::spawn_blocking(move || {
        let _ = released.recv();
    });
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            biased;
            out = &mut work => break out,
            _ = tokio::task::spawn_blocking(|| std::thread::sleep(REAL_PAUSE)) => {
                tokio::time::advance(STEP).await;
            }
        }
    };
    let took = started.elapsed();
    drop(release);
    let _ = holder.await;
    tokio::time::resume();
    (out, took)
}

/// One message answered in real time first: connections open, the tenant's
/// profile cached. What follows runs on a paused clock.
pub(super) async fn warmed_up(world: &World) {
    let warm = world.env.message("m-warm", "+254700000099", "hello");
    assert!(matches!(world.process(&warm).await, Outcome::Processed { .. }));
}
