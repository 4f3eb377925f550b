//! Each test gets its own world on the real services: a fresh PostgreSQL database,
//! its own exchange and queue names on RabbitMQ, and its own Redis key prefix, so
//! tests run in parallel without seeing each other.
//!
//! Base URLs come from AMQP_URL / REDIS_URL / DATABASE_URL when set, else the
//! local defaults of CONTRACT §1.

use std::future::Future;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_worker::broker::Broker;
use chat_worker::config::Config;
use chat_worker::store;
use chat_worker::worker::{self, Tally};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a test waits for something the system does eventually (a reply, a
/// dead letter). A bound on a hang, not a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct TestEnv {
    pub config: Config,
    pub pool: PgPool,
    pub channel: Channel,
    _connection: Connection,
    pub redis: redis::aio::ConnectionManager,
    pub tenant_id: Uuid,
    pub replies_queue: String,
    id: String,
    /// Suffixes of workers started with their own queues, to clean up.
    suffixes: std::sync::Mutex<Vec<String>>,
}

pub struct RunningWorker {
    pub tally: Arc<Tally>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), worker::RunError>>,
}

impl RunningWorker {
    /// Graceful stop, as SIGTERM does; returns the worker's result.
    pub async fn stop(self) -> Result<(), worker::RunError> {
        self.stop.cancel();
        self.task.await.expect("worker task panicked")
    }
}

fn base(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

impl TestEnv {
    pub async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut config = Config::default();
        let db_base = base("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/worker");
        let (server, _) = db_base.rsplit_once('/').expect("DATABASE_URL has a database part");
        // No TLS on loopback, as the default URL says.
        config.database.url = format!("{server}/cw_test_{id}?sslmode=disable");
        config.database.max_connections = 8;
        config.database.commits_in_flight = 3;
        config.database.reads_in_flight = 3;
        config.amqp.url = base("AMQP_URL", &config.amqp.url);
        config.redis.url = base("REDIS_URL", &config.redis.url);
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

        store::create_database_if_missing(&config.database.url).await.expect("create test database");
        let pool = store::pool(&config.database.url, 4).expect("pool");
        store::migrate(&pool).await.expect("migrate");

        let broker = Broker::connect(&config.amqp).await.expect("rabbitmq");
        broker.declare(config.worker.max_attempts).await.expect("declare topology");
        broker.close().await;

        let connection =
            Connection::connect(&config.amqp.url, ConnectionProperties::default()).await.expect("rabbitmq");
        let channel = connection.create_channel().await.expect("channel");
        let replies_queue = format!("t.{id}.replies");
        channel
            .queue_declare(
                replies_queue.as_str().into(),
                QueueDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("declare replies queue");
        channel
            .queue_bind(
                replies_queue.as_str().into(),
                config.amqp.outbound_exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind replies queue");

        let client = redis::Client::open(config.redis.url.as_str()).expect("redis url");
        let redis = redis::aio::ConnectionManager::new(client).await.expect("redis");

        let tenant_id = Uuid::new_v4();
        sqlx::query("INSERT INTO tenants (id, name, is_active) VALUES ($1, 'Test Shop', true)")
            .bind(tenant_id)
            .execute(&pool)
            .await
            .expect("seed tenant");

        Self {
            config,
            pool,
            channel,
            _connection: connection,
            redis,
            tenant_id,
            replies_queue,
            id,
            suffixes: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A valid inbound message of this test's tenant.
    pub fn message(&self, message_id: &str, customer: &str, text: &str) -> Value {
        json!({
            "message_id": message_id,
            "tenant_id": self.tenant_id,
            "channel": "whatsapp",
            "customer": { "external_id": customer, "name": "Amina" },
            "conversation_id": null,
            "text": text,
            "received_at": "2026-11-21T10:15:30Z",
            "attachments": [],
            "metadata": {}
        })
    }

    /// Publishes raw bytes to this test's inbound exchange, as a gateway does.
    pub async fn publish(&self, body: &[u8]) {
        self.publish_with_headers(body, FieldTable::default()).await;
    }

    /// The routing key a gateway publishes `body` with (CONTRACT §2): its
    /// `<channel>.<tenant_id>`, or this test's tenant on WhatsApp for a body
    /// that has none.
    pub fn routing_key_of(&self, body: &[u8]) -> String {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match (value["channel"].as_str(), value["tenant_id"].as_str()) {
            (Some(channel), Some(tenant)) => format!("{channel}.{tenant}"),
            _ => format!("whatsapp.{}", self.tenant_id),
        }
    }

    pub async fn publish_with_headers(&self, body: &[u8], headers: FieldTable) {
        let routing_key = self.routing_key_of(body);
        self.channel
            .basic_publish(
                self.config.amqp.inbound_exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(headers),
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirm");
    }

    /// Publishes raw bytes to another exchange (e.g. a suffixed worker's).
    pub async fn publish_to(&self, exchange: &str, body: &[u8]) {
        self.channel
            .basic_publish(
                exchange.into(),
                self.routing_key_of(body).into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Publishes `n` copies back to back, then waits for all their confirms, so
    /// they reach the queue together.
    pub async fn publish_copies(&self, value: &Value, n: usize) {
        let body = value.to_string();
        let routing_key = self.routing_key_of(body.as_bytes());
        let mut confirms = Vec::with_capacity(n);
        for _ in 0..n {
            let confirm = self
                .channel
                .basic_publish(
                    self.config.amqp.inbound_exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            confirm.await.expect("confirm");
        }
    }

    pub async fn publish_json(&self, value: &Value) {
        self.publish(value.to_string().as_bytes()).await;
    }

    /// Runs a worker in this process on this test's world.
    pub fn spawn_worker(&self, worker_id: &str) -> RunningWorker {
        let mut config = self.config.clone();
        config.worker.id = worker_id.to_owned();
        spawn_worker_with(config)
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
}

/// Runs a worker in this process with `config` (a test's, changed).
pub fn spawn_worker_with(config: Config) -> RunningWorker {
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker::run(config, stop.clone(), tally.clone()));
    RunningWorker { tally, stop, task }
}

impl TestEnv {
    /// A worker with its own inbound exchange and queue (suffixed), sharing this
    /// test's database, Redis prefix and outbound exchange: a second worker a
    /// test can talk to directly.
    pub fn spawn_worker_on(&self, worker_id: &str, suffix: &str) -> RunningWorker {
        self.suffixes.lock().unwrap_or_else(|p| p.into_inner()).push(suffix.to_owned());
        let mut config = self.config.clone();
        config.worker.id = worker_id.to_owned();
        config.amqp.inbound_exchange = format!("{}.{suffix}", self.config.amqp.inbound_exchange);
        config.amqp.inbound_queue = format!("{}.{suffix}", self.config.amqp.inbound_queue);
        // Retry queues dead-letter back to their inbound queue, so they are the worker's own too.
        config.amqp.retry_queue_prefix = format!("{}.{suffix}", self.config.amqp.retry_queue_prefix);
        let tally = Arc::new(Tally::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker::run(config, stop.clone(), tally.clone()));
        RunningWorker { tally, stop, task }
    }

    /// Waits until a worker consumes (its own topology is declared by then).
    pub async fn ready(&self, worker: &mut RunningWorker) {
        let started = Instant::now();
        while !worker.tally.consuming.load(std::sync::atomic::Ordering::Relaxed) {
            if worker.task.is_finished() {
                let result = (&mut worker.task).await;
                panic!("the worker stopped before consuming: {result:?}");
            }
            assert!(started.elapsed() < PATIENCE, "the worker never started consuming");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like `converse`, through the worker started with `spawn_worker_on(_, suffix)`.
    pub async fn converse_via(&self, suffix: &str, customer: &str, text: &str) -> Value {
        let message_id = format!("m-{}", Uuid::new_v4().simple());
        let body = self.message(&message_id, customer, text).to_string();
        let exchange = format!("{}.{suffix}", self.config.amqp.inbound_exchange);
        self.channel
            .basic_publish(
                exchange.as_str().into(),
                format!("whatsapp.{}", self.tenant_id).into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        self.reply_to(&message_id).await
    }

    /// The `worker` binary with this test's configuration in its environment.
    pub fn worker_command(&self, worker_id: &str) -> tokio::process::Command {
        let mut cmd = self.worker_binary();
        cmd.args(["run", "--worker-id", worker_id]);
        cmd
    }

    /// The `worker` binary, configured for this test's world, with no command yet.
    pub fn worker_binary(&self) -> tokio::process::Command {
        let c = &self.config;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
        cmd.env("WORKER__DATABASE__URL", &c.database.url)
            .env("WORKER__AMQP__URL", &c.amqp.url)
            .env("WORKER__REDIS__URL", &c.redis.url)
            .env("WORKER__AMQP__INBOUND_EXCHANGE", &c.amqp.inbound_exchange)
            .env("WORKER__AMQP__OUTBOUND_EXCHANGE", &c.amqp.outbound_exchange)
            .env("WORKER__AMQP__INBOUND_QUEUE", &c.amqp.inbound_queue)
            .env("WORKER__AMQP__DEAD_QUEUE", &c.amqp.dead_queue)
            .env("WORKER__AMQP__RETRY_QUEUE_PREFIX", &c.amqp.retry_queue_prefix)
            .env("WORKER__REDIS__KEY_PREFIX", &c.redis.key_prefix)
            .env("WORKER__REDIS__LIVENESS_TTL_SECS", c.redis.liveness_ttl_secs.to_string())
            .env("WORKER__WORKER__RETRY_BASE_DELAY_MS", c.worker.retry_base_delay_ms.to_string())
            .env("WORKER__WORKER__RETRY_MAX_DELAY_MS", c.worker.retry_max_delay_ms.to_string())
            .env("WORKER__WORKER__SHUTDOWN_TIMEOUT_SECS", c.worker.shutdown_timeout_secs.to_string())
            .env("WORKER__ADMIN__ADDR", &c.admin.addr)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Takes every message now in `queue` (acking it), oldest first.
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while let Some(message) =
            self.channel.basic_get(queue.into(), BasicGetOptions::default()).await.expect("basic_get")
        {
            message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
            out.push(message.delivery);
        }
        out
    }

    /// Publishes `text` from `customer` and waits for its reply (replies to other
    /// messages published meanwhile are taken and dropped).
    pub async fn converse(&self, customer: &str, text: &str) -> Value {
        let message_id = format!("m-{}", Uuid::new_v4().simple());
        self.publish_json(&self.message(&message_id, customer, text)).await;
        self.reply_to(&message_id).await
    }

    pub async fn reply_to(&self, message_id: &str) -> Value {
        let started = Instant::now();
        loop {
            for (_, body) in self.replies().await {
                if body["in_reply_to"] == message_id {
                    return body;
                }
            }
            assert!(started.elapsed() < PATIENCE, "no reply to {message_id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A small shop: four products, one service, two FAQ entries. Returns product ids by name.
    pub async fn seed_catalog(&self, tenant: Uuid) -> std::collections::HashMap<String, Uuid> {
        let mut ids = std::collections::HashMap::new();
        for (name, category, price, description) in [
            ("Trail Runner X", "running shoes", 4500, "Light trail running shoe"),
            ("City Sprint", "running shoes", 3900, "Everyday road running shoe"),
            ("Marathon Pro", "running shoes", 8900, "Carbon-plated racing shoe"),
            ("Yoga Mat", "fitness", 1500, "6 mm non-slip mat"),
        ] {
            let id: Uuid = sqlx::query_scalar(
                "INSERT INTO products (tenant_id, name, category, price, currency, description)
                 VALUES ($1, $2, $3, $4, 'KES', $5) RETURNING id",
            )
            .bind(tenant)
            .bind(name)
            .bind(category)
            .bind(price)
            .bind(description)
            .fetch_one(&self.pool)
            .await
            .expect("seed product");
            ids.insert(name.to_owned(), id);
        }
        sqlx::query(
            "INSERT INTO services (tenant_id, name, price, currency, duration_minutes, description)
             VALUES ($1, 'Gait analysis', 1000, 'KES', 30, 'Find the right shoe for your stride')",
        )
        .bind(tenant)
        .execute(&self.pool)
        .await
        .expect("seed service");
        sqlx::query(
            "INSERT INTO knowledge_entries (tenant_id, entry_type, title, content) VALUES
               ($1, 'faq', 'Opening hours', 'We are open Monday to Saturday, 9am to 7pm.'),
               ($1, 'policy', 'Returns', 'Unworn items can be returned within 30 days.')",
        )
        .bind(tenant)
        .execute(&self.pool)
        .await
        .expect("seed knowledge");
        ids
    }

    /// Every reply published so far, as JSON.
    pub async fn replies(&self) -> Vec<(lapin::message::Delivery, Value)> {
        self.drain(&self.replies_queue)
            .await
            .into_iter()
            .map(|d| {
                let body = serde_json::from_slice(&d.data).expect("reply is JSON");
                (d, body)
            })
            .collect()
    }

    pub async fn dead_letters(&self) -> Vec<lapin::message::Delivery> {
        self.drain(&self.config.amqp.dead_queue).await
    }

    pub async fn queue_depth(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }

    /// (inbound rows, reply rows) for a fingerprint.
    pub async fn rows(&self, fingerprint: &str) -> (i64, i64) {
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE direction = 'in'), count(*) FILTER (WHERE direction = 'out')
               FROM messages WHERE fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_one(&self.pool)
        .await
        .expect("count rows")
    }

    pub async fn total_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&self.pool).await.expect("count")
    }

    /// Makes a live worker (another process, as far as the workers under test can
    /// tell) hold the lock of `fingerprint`.
    pub async fn hold_lock_elsewhere(&self, fingerprint: &str) {
        let p = &self.config.redis.key_prefix;
        let mut redis = self.redis.clone();
        redis::cmd("SET")
            .arg(format!("{p}alive:elsewhere"))
            .arg("w-elsewhere")
            .arg("PX")
            .arg(120_000)
            .query_async::<()>(&mut redis)
            .await
            .expect("set");
        redis::cmd("SET")
            .arg(format!("{p}lock:{fingerprint}"))
            .arg("token|elsewhere|w-elsewhere")
            .arg("PX")
            .arg(120_000)
            .query_async::<()>(&mut redis)
            .await
            .expect("set");
    }

    /// The other worker gives the lock up (e.g. its attempt failed).
    pub async fn release_lock_elsewhere(&self, fingerprint: &str) {
        let key = format!("{}lock:{fingerprint}", self.config.redis.key_prefix);
        redis::cmd("DEL").arg(key).query_async::<()>(&mut self.redis.clone()).await.expect("del");
    }

    /// Runs `plpgsql` (a function body) before every insert into `messages`, as a
    /// misbehaving database would: `RAISE EXCEPTION ...` to fail, `PERFORM pg_sleep(..)`
    /// to be slow. `remove_insert_trigger` undoes it.
    pub async fn on_message_insert(&self, plpgsql: &str) {
        sqlx::raw_sql(&format!(
            "CREATE FUNCTION on_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {plpgsql}; RETURN NULL; END $$;
             CREATE TRIGGER on_insert BEFORE INSERT ON messages FOR EACH STATEMENT EXECUTE FUNCTION on_insert();"
        ))
        .execute(&self.pool)
        .await
        .expect("insert trigger");
    }

    /// Like `on_message_insert`, but per row and only for rows matching `condition`
    /// (over `NEW`): one message refused among others.
    pub async fn on_message_row_insert(&self, condition: &str, plpgsql: &str) {
        sqlx::raw_sql(&format!(
            "CREATE FUNCTION on_row_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {plpgsql}; RETURN NEW; END $$;
             CREATE TRIGGER on_row_insert BEFORE INSERT ON messages FOR EACH ROW WHEN ({condition})
             EXECUTE FUNCTION on_row_insert();"
        ))
        .execute(&self.pool)
        .await
        .expect("row insert trigger");
    }

    pub async fn remove_insert_trigger(&self) {
        sqlx::raw_sql("DROP TRIGGER on_insert ON messages").execute(&self.pool).await.expect("drop trigger");
    }

    /// Routes this test's workers through counting proxies (see `wire`).
    pub fn route_through(&mut self, pg: Option<&crate::wire::Proxy>, redis: Option<&crate::wire::Proxy>) {
        if let Some(pg) = pg {
            let database = self.database_name();
            self.config.database.url = format!("postgres://postgres@{}/{database}?sslmode=disable", pg.addr);
        }
        if let Some(redis) = redis {
            self.config.redis.url = format!("redis://{}/0", redis.addr);
        }
    }

    /// This test's database, as PostgreSQL names it (the URL's path, without its options).
    pub fn database_name(&self) -> String {
        let path = self.config.database.url.rsplit('/').next().unwrap_or_default();
        path.split('?').next().unwrap_or_default().to_owned()
    }

    /// host:port of the real PostgreSQL and Redis, for proxies to forward to.
    pub fn upstreams(&self) -> (String, String) {
        let host_port = |url: &str, default: &str| {
            url::Url::parse(url)
                .ok()
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
                .unwrap_or_else(|| default.to_owned())
        };
        (
            host_port(&self.config.database.url, "127.0.0.1:5432"),
            host_port(&self.config.redis.url, "127.0.0.1:6379"),
        )
    }

    /// Deletes every Redis key of this test, as a Redis that lost its data would.
    pub async fn flush_redis(&self) {
        let pattern = format!("{}*", self.config.redis.key_prefix);
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(&pattern).query_async(&mut self.redis.clone()).await.expect("keys");
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut self.redis.clone()).await.expect("del");
        }
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
            queues.extend((1..declared).map(|n| format!("{retry_prefix}.{n}")));
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
        let admin = self.config.database.url.replace(&format!("cw_test_{}", self.id), "postgres");
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
