//! Each test gets its own world on the real services: a fresh PostgreSQL database,
//! its own exchange and queue names on RabbitMQ, and its own Redis key prefix, so
//! tests run in parallel without seeing each other.
//!
//! Base URLs come from AMQP_URL / REDIS_URL / DATABASE_URL when set, else the
//! local defaults of CONTRACT §1; WORKER__REDIS__MODE=cluster makes REDIS_URL
//! a Redis Cluster's seed nodes. With DATABASE_LISTEN_URL set too (and
//! WORKER__DATABASE__PREPARED_STATEMENTS=false for PgBouncer < 1.21), the whole
//! suite runs through a transaction pooler: the worker's statements take
//! DATABASE_URL, the test's own (and the database's making and removal) the
//! direct DATABASE_LISTEN_URL.
//!
//! Here: the world's making and removal, and helpers on deliveries. What a test
//! does in it: `gateway` (publishing, replies, queues), `workers` (in process
//! or as the binary), `state` (rows, triggers, locks, proxies). The pieces
//! that need no worker types (proxies, HTTP stub, seeds) are crates/testkit.

mod gateway;
mod state;
mod workers;

use std::future::Future;
use std::time::{Duration, Instant};

use chat_worker::broker::Broker;
use chat_worker::config::{Config, RedisMode};
use chat_worker::keys::Shard;
use chat_worker::model::Fingerprint;
use chat_worker::redis_conn::RedisConn;
use chat_worker::store::{self, Db, DbSettings};
use lapin::options::QueueDeleteOptions;
use lapin::types::AMQPValue;
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub use workers::{WorkerProcess, log_message, spawn_worker_with};

/// How long a test waits for something the system does eventually (a reply, a
/// dead letter). A bound on a hang, not a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct TestEnv {
    pub config: Config,
    /// Direct connections to the test's database, for the test's own statements.
    pub pool: PgPool,
    /// The database as the worker reaches it (through the pooler, when there is one).
    pub db: Db,
    pub channel: Channel,
    _connection: Connection,
    pub redis: RedisConn,
    pub tenant_id: Uuid,
    pub replies_queue: String,
    id: String,
    /// Suffixes of workers started with their own queues, to clean up.
    suffixes: std::sync::Mutex<Vec<String>>,
}

fn base(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// `base` (a server's URL with any database) naming the test's own database.
pub fn test_database_url(base: &str, id: &str) -> String {
    let (server, _) = base.rsplit_once('/').expect("a database URL has a database part");
    // No TLS on loopback, as the default URL says.
    format!("{server}/cw_test_{id}?sslmode=disable")
}

/// A handle on the database configured in `config`, as the worker makes it
/// (no statement timeout: the tests' own calls).
pub fn worker_db(config: &Config, max_connections: u32) -> Db {
    let c = &config.database;
    let settings = DbSettings {
        max_connections,
        statement_timeout: None,
        session_url: c.through_pooler().then_some(c.listen_url.as_str()),
        prepared_statements: c.named_statements(),
    };
    Db::connect_lazy(&c.url, settings).expect("database url")
}

impl TestEnv {
    pub async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut config = Config::default();
        let db_base = base("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/worker");
        config.database.url = test_database_url(&db_base, &id);
        let listen_base = std::env::var("DATABASE_LISTEN_URL").unwrap_or_default();
        if !listen_base.is_empty() {
            config.database.listen_url = test_database_url(&listen_base, &id);
        }
        if let Ok(prepared) = std::env::var("WORKER__DATABASE__PREPARED_STATEMENTS") {
            config.database.prepared_statements =
                Some(prepared.parse().expect("WORKER__DATABASE__PREPARED_STATEMENTS is true or false"));
        }
        config.database.max_connections = 8;
        config.database.commits_in_flight = 3;
        config.database.reads_in_flight = 2;
        config.amqp.url = base("AMQP_URL", &config.amqp.url);
        config.redis.url = base("REDIS_URL", &config.redis.url);
        // `make test-fleet` reruns the end-to-end tests on a Redis Cluster.
        if std::env::var("WORKER__REDIS__MODE").is_ok_and(|m| m == "cluster") {
            config.redis.mode = RedisMode::Cluster;
        }
        config.amqp.inbound_exchange = format!("t.{id}.chat.inbound");
        config.amqp.outbound_exchange = format!("t.{id}.chat.outbound");
        config.amqp.inbound_queue = format!("t.{id}.worker.inbound");
        config.amqp.dead_queue = format!("t.{id}.worker.dead");
        config.amqp.retry_queue_prefix = format!("t.{id}.worker.retry");
        config.redis.key_prefix = format!("t:{id}:");
        config.redis.liveness_ttl_secs = 2;
        config.worker.retry_base_delay_ms = 200;
        config.worker.retry_max_delay_ms = 2_000;
        config.worker.shutdown_timeout_secs = 20;
        config.admin.addr = "127.0.0.1:0".into();

        let direct = config.database.session_url();
        store::create_database_if_missing(direct).await.expect("create test database");
        let pool = store::pool(direct, 4).expect("pool");
        store::migrate(&pool).await.expect("migrate");
        let db = worker_db(&config, 4);

        let broker = Broker::connect(&config.amqp).await.expect("rabbitmq");
        broker.declare(config.worker.max_attempts).await.expect("declare topology");
        broker.close().await;

        let connection =
            Connection::connect(&config.amqp.url, ConnectionProperties::default()).await.expect("rabbitmq");
        let channel = connection.create_channel().await.expect("channel");
        let replies_queue = format!("t.{id}.replies");
        testkit::gateway::replies_queue(&channel, &replies_queue, &config.amqp.outbound_exchange, true)
            .await
            .expect("declare and bind the replies queue");

        let redis = RedisConn::connect(&config.redis).await.expect("redis");

        let tenant_id = Uuid::new_v4();
        testkit::seed::tenant(&pool, tenant_id, "Test Shop").await.expect("seed tenant");

        Self {
            config,
            pool,
            db,
            channel,
            _connection: connection,
            redis,
            tenant_id,
            replies_queue,
            id,
            suffixes: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A channel of its own on the test's connection (the broker closes a
    /// channel on which it refuses something).
    pub async fn fresh_channel(&self) -> Channel {
        self._connection.create_channel().await.expect("channel")
    }

    /// Names suffixed `suffix` (exchange, inbound and retry queues) that a worker
    /// run outside `spawn_worker_on` uses, to remove with the rest at `finish`.
    pub fn track_suffix(&self, suffix: &str) {
        self.suffixes.lock().unwrap_or_else(|p| p.into_inner()).push(suffix.to_owned());
    }

    /// The test's id, which every name it uses on the shared services starts with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Removes what the test created on the shared services.
    pub async fn finish(self) {
        let c = &self.config.amqp;
        let suffixes: Vec<String> =
            std::mem::take(&mut *self.suffixes.lock().unwrap_or_else(|p| p.into_inner()));
        let mut inbound =
            vec![(c.inbound_exchange.clone(), c.inbound_queue.clone(), c.retry_queue_prefix.clone())];
        for s in suffixes {
            let suffixed = |name: &str| format!("{name}.{s}");
            inbound.push((
                suffixed(&c.inbound_exchange),
                suffixed(&c.inbound_queue),
                suffixed(&c.retry_queue_prefix),
            ));
        }
        let mut queues = vec![c.dead_queue.clone(), self.replies_queue.clone()];
        let mut exchanges = vec![c.outbound_exchange.clone()];
        for (exchange, queue, retry_prefix) in inbound {
            exchanges.push(exchange);
            queues.push(queue);
            // `new` declared the default's retry queues; a test may have changed
            // max_attempts since (and a worker declared its own): remove them all.
            let declared = self.config.worker.max_attempts.max(Config::default().worker.max_attempts).max(2);
            queues.extend((0..declared).map(|n| format!("{retry_prefix}.{n}")));
        }
        // A channel of its own: the test may have left the shared one closed
        // (the broker closes a channel on which it refused something).
        let mut cleanup = self.fresh_channel().await;
        for queue in queues {
            if cleanup.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.is_err() {
                cleanup = self.fresh_channel().await;
            }
        }
        for exchange in exchanges {
            if cleanup.exchange_delete(exchange.as_str().into(), Default::default()).await.is_err() {
                cleanup = self.fresh_channel().await;
            }
        }
        self.flush_redis().await;
        self.pool.close().await;
        // Not closed: `close` would wait for the connections that the test's grouped
        // readers and writers still hold; the DROP below ends them.
        drop(self.db);
        let admin = self.config.database.session_url().replace(&format!("cw_test_{}", self.id), "postgres");
        if let Ok(pool) = store::pool(&admin, 1) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS cw_test_{} WITH (FORCE)", self.id))
                .execute(&pool)
                .await;
        }
    }
}

/// Waits until `check` holds, polling; panics with `what` after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn header<'a>(delivery: &'a lapin::message::Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery.properties.headers().as_ref().and_then(|h| h.inner().get(name))
}

pub fn header_str(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    match header(delivery, name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The shard and fingerprint of a test message: where its Redis keys are.
pub fn shard_of(message: &Value) -> (Shard, Fingerprint) {
    let inbound = chat_worker::decode::decode(message.to_string().as_bytes()).expect("valid message");
    (Shard::of(&inbound), inbound.fingerprint())
}

pub fn fingerprint_of(message: &Value) -> String {
    chat_worker::decode::decode(message.to_string().as_bytes())
        .expect("valid message")
        .fingerprint()
        .to_string()
}

/// Runs `rabbitmqctl` (installed with rabbitmq-server) and returns its output.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl (installed with rabbitmq-server)");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
