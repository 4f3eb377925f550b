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
use chat_worker::config::Config;
use chat_worker::dedup::{Cut, Dedup};
use chat_worker::model::{Answer, Envelope};
use chat_worker::outcome::{DuplicateOf, Failure, Outcome, RejectionKind};
use chat_worker::pipeline::{Parts, Pipeline};
use chat_worker::respond::{Context, RespondError, Responder};
use chat_worker::telemetry::metrics::Metrics;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

use crate::harness::{TestEnv, fingerprint_of};

/// What the test's responder does when asked.
#[derive(Clone, Copy)]
enum Acts {
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
    redis: ConnectionManager,
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
            let lock = format!("{}lock:{}", self.prefix, ctx.inbound.fingerprint());
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
struct World {
    env: TestEnv,
    pipeline: Pipeline,
    redis: ConnectionManager,
    _broker: Broker,
}

impl World {
    async fn new(acts: Acts, configure: impl FnOnce(&mut Config)) -> Self {
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
            .connect(&config.database.url)
            .await
            .expect("pool");
        let client = redis::Client::open(config.redis.url.as_str()).expect("redis url");
        let redis = ConnectionManager::new_with_config(
            client,
            ConnectionManagerConfig::new().set_response_timeout(None),
        )
        .await
        .expect("redis");
        let broker = Broker::connect(&config.amqp).await.expect("rabbitmq");
        let parts = Parts {
            pool: pool.clone(),
            dedup: Dedup::new(redis.clone(), &config.redis, "w-pipeline"),
            cache: CatalogCache::new(pool, redis.clone(), &config.redis.key_prefix, &config.cache),
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
    fn acting(&mut self, acts: Acts) {
        self.pipeline.responder = Arc::new(Scripted {
            acts,
            redis: self.redis.clone(),
            prefix: self.env.config.redis.key_prefix.clone(),
            calls: AtomicU32::new(0),
        });
    }

    /// A first delivery of `message`, straight from a gateway.
    async fn process(&self, message: &Value) -> Outcome {
        self.process_as(message, false).await
    }

    async fn process_as(&self, message: &Value, seen_before: bool) -> Outcome {
        let body = message.to_string();
        let key = self.env.routing_key_of(body.as_bytes());
        let envelope = Envelope { seen_before, ..Envelope::first(body.as_bytes(), Some(&key)) };
        self.pipeline.process(&envelope).await
    }

    async fn redis_get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query_async(&mut self.redis.clone()).await.unwrap_or(None)
    }

    fn key(&self, kind: &str, fingerprint: &str) -> String {
        format!("{}{kind}:{fingerprint}", self.env.config.redis.key_prefix)
    }

    async fn state_status(&self, fingerprint: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(self.key("state", fingerprint))
            .arg("status")
            .query_async(&mut self.redis.clone())
            .await
            .expect("hget")
    }
}

#[tokio::test]
async fn a_new_message_is_processed_once_and_its_copy_is_a_duplicate() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);

    match world.process(&message).await {
        Outcome::Processed { fingerprint, replayed: false } => assert_eq!(fingerprint.as_str(), fp),
        other => panic!("expected processed: {other:?}"),
    }
    assert_eq!(world.env.rows(&fp).await, (1, 1));
    assert_eq!(world.state_status(&fp).await.as_deref(), Some("completed"));
    assert_eq!(world.redis_get(&world.key("lock", &fp)).await, None, "the lock is released");

    assert!(matches!(world.process(&message).await, Outcome::Duplicate { of: DuplicateOf::Completed, .. }));
    let replies = world.env.replies().await;
    assert_eq!(replies.len(), 1, "one reply for the message and its copy");
    assert_eq!(replies[0].1["fingerprint"], json!(fp));
    assert_eq!(replies[0].1["text"], json!("Here it is."));
    assert_eq!(world.env.rows(&fp).await, (1, 1));
    world.env.finish().await;
}

#[tokio::test]
async fn a_committed_message_whose_state_redis_lost_is_replayed_not_answered_again() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);
    assert!(matches!(world.process(&message).await, Outcome::Processed { replayed: false, .. }));

    world.env.flush_redis().await;
    assert!(matches!(world.process(&message).await, Outcome::Processed { replayed: true, .. }));
    assert_eq!(world.env.rows(&fp).await, (1, 1), "no second answer is committed");
    let replies = world.env.replies().await;
    assert_eq!(replies.len(), 2, "the stored reply is published again");
    assert_eq!(replies[0].1, replies[1].1, "the very same reply");
    world.env.finish().await;
}

#[tokio::test]
async fn a_message_another_live_worker_holds_is_a_duplicate_or_deferred_if_seen_before() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);
    world.env.hold_lock_elsewhere(&fp).await;

    match world.process_as(&message, false).await {
        Outcome::Duplicate { of: DuplicateOf::InProgress { worker_id }, .. } => {
            assert_eq!(worker_id, "w-elsewhere")
        }
        other => panic!("expected a duplicate in progress: {other:?}"),
    }
    match world.process_as(&message, true).await {
        Outcome::Deferred { worker_id, .. } => assert_eq!(worker_id, "w-elsewhere"),
        other => panic!("expected deferred: {other:?}"),
    }
    assert_eq!(world.env.rows(&fp).await, (0, 0));

    world.env.release_lock_elsewhere(&fp).await;
    assert!(matches!(world.process_as(&message, true).await, Outcome::Processed { .. }));
    world.env.finish().await;
}

#[tokio::test]
async fn what_can_never_be_processed_is_rejected_with_its_kind_and_writes_nothing() {
    let world = World::new(Acts::Answers, |_| {}).await;
    let good = world.env.message("m-1", "+254700000001", "hello");

    let malformed = world.pipeline.process(&Envelope::first(b"{not json", None)).await;
    assert!(
        matches!(&malformed, Outcome::Rejected(r) if r.kind == RejectionKind::Malformed),
        "{malformed:?}"
    );

    let mut no_text = good.clone();
    no_text["text"] = json!("");
    let invalid = world.process(&no_text).await;
    assert!(matches!(&invalid, Outcome::Rejected(r) if r.kind == RejectionKind::Invalid), "{invalid:?}");

    let mut stranger = good.clone();
    stranger["tenant_id"] = json!(uuid::Uuid::new_v4());
    let unknown = world.process(&stranger).await;
    assert!(
        matches!(&unknown, Outcome::Rejected(r) if r.kind == RejectionKind::UnknownTenant),
        "{unknown:?}"
    );

    let body = good.to_string();
    let elsewhere = format!("sms.{}", world.env.tenant_id);
    let misrouted = world.pipeline.process(&Envelope::first(body.as_bytes(), Some(&elsewhere))).await;
    assert!(matches!(&misrouted, Outcome::Rejected(r) if r.kind == RejectionKind::Invalid), "{misrouted:?}");

    let mut foreign = good.clone();
    foreign["conversation_id"] = json!(uuid::Uuid::new_v4());
    let foreign = world.process(&foreign).await;
    assert!(matches!(&foreign, Outcome::Rejected(r) if r.kind == RejectionKind::Invalid), "{foreign:?}");

    assert_eq!(world.env.total_rows().await, 0);
    assert!(world.env.replies().await.is_empty());
    world.env.finish().await;
}

#[tokio::test]
async fn a_responder_fault_fails_the_attempt_keeps_its_cause_and_frees_the_lock() {
    let mut world = World::new(Acts::Fails, |_| {}).await;
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);

    match world.process(&message).await {
        Outcome::Failed { fingerprint, error: error @ Failure::Respond(_) } => {
            assert_eq!(fingerprint.map(|f| f.to_string()).as_deref(), Some(fp.as_str()));
            assert_eq!(error.kind(), "responder");
            assert_eq!(error.render(), "responder: agent unreachable");
        }
        other => panic!("expected a responder failure: {other:?}"),
    }
    assert_eq!(world.state_status(&fp).await.as_deref(), Some("failed"));
    assert_eq!(world.redis_get(&world.key("lock", &fp)).await, None, "the lock is released");
    assert_eq!(world.env.rows(&fp).await, (0, 0));

    world.acting(Acts::Answers);
    assert!(matches!(world.process(&message).await, Outcome::Processed { replayed: false, .. }));
    world.env.finish().await;
}

/// Runs `work` on a paused tokio clock that only the test moves: `STEP` at a
/// time, after giving the services a few real milliseconds to answer.
///
/// A paused clock alone would jump to the next timer whenever the runtime
/// waits, also while it waits for Redis or PostgreSQL: a deadline would then
/// fire during a renewal's round trip. A blocking task running meanwhile keeps
/// tokio from moving the clock by itself, so virtual time passes only here.
async fn on_paused_clock<T>(work: impl std::future::Future<Output = T>) -> (T, Duration) {
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
async fn warmed_up(world: &World) {
    let warm = world.env.message("m-warm", "+254700000099", "hello");
    assert!(matches!(world.process(&warm).await, Outcome::Processed { .. }));
}

#[tokio::test]
async fn work_past_the_deadline_is_cut_commits_nothing_and_frees_the_lock() {
    let mut world = World::new(Acts::Answers, |c| c.worker.message_deadline_secs = 1).await;
    warmed_up(&world).await;
    world.acting(Acts::Hangs);
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);

    let (outcome, took) = on_paused_clock(world.process(&message)).await;
    match outcome {
        Outcome::Failed { error: Failure::Cut(Cut::Deadline(d)), .. } => {
            assert_eq!(d, Duration::from_secs(1))
        }
        other => panic!("expected the deadline: {other:?}"),
    }
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(2), "cut at the deadline: {took:?}");
    assert_eq!(world.env.rows(&fp).await, (0, 0));
    assert_eq!(world.state_status(&fp).await.as_deref(), Some("failed"));
    assert_eq!(world.redis_get(&world.key("lock", &fp)).await, None);
    world.env.finish().await;
}

#[tokio::test]
async fn a_lease_another_worker_took_ends_the_work_and_leaves_its_lock_alone() {
    let world = World::new(Acts::Answers, |c| c.redis.lock_ttl_secs = 3).await;
    warmed_up(&world).await;
    let mut world = world;
    world.acting(Acts::LosesTheLockAndHangs);
    let message = world.env.message("m-1", "+254700000001", "hello");
    let fp = fingerprint_of(&message);

    let (outcome, took) = on_paused_clock(world.process(&message)).await;
    assert!(matches!(outcome, Outcome::Failed { error: Failure::Cut(Cut::LeaseLost), .. }), "{outcome:?}");
    // Renewed every second (a third of the 3 s TTL): the first renewal after
    // the takeover finds it, long before the 45 s deadline.
    assert!(took <= Duration::from_secs(2), "found at the next renewal: {took:?}");
    assert_eq!(
        world.redis_get(&world.key("lock", &fp)).await.as_deref(),
        Some("token|elsewhere|w-elsewhere"),
        "the new holder's lock is not released by the one that lost it"
    );
    assert_eq!(world.env.rows(&fp).await, (0, 0));
    world.env.finish().await;
}

#[tokio::test]
async fn renewals_that_keep_failing_end_the_work_before_the_lease_lapses() {
    let mut world = World::new(Acts::Answers, |c| c.redis.lock_ttl_secs = 3).await;
    warmed_up(&world).await;
    world.acting(Acts::BreaksTheLockAndHangs);
    let message = world.env.message("m-1", "+254700000001", "hello");

    let (outcome, took) = on_paused_clock(world.process(&message)).await;
    match &outcome {
        Outcome::Failed { error: error @ Failure::Cut(Cut::Lapsing(_)), .. } => {
            assert_eq!(error.kind(), "lease_lapsing");
            assert!(error.render().contains("WRONGTYPE"), "the cause is kept: {}", error.render());
        }
        other => panic!("expected the lease to lapse: {other:?}"),
    }
    // Renewals every second (a third of the 3 s TTL): the first failure is
    // ridden out, the one that leaves less than an interval ends the work.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "before the lease lapsed: {took:?}"
    );
    world.env.finish().await;
}
