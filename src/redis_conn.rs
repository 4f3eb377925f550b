//! Redis, one primary or a Redis Cluster (CONTRACT §1, `redis.mode`): one
//! connection type, so the dedup, cache and reference code neither knows nor
//! cares which. Both sides multiplex every command of the process over few
//! connections and reconnect by themselves.
//!
//! What works on both is what the worker sends: every script's keys share one
//! hash tag (see [`crate::keys`]), every other command names one key, and a
//! pipeline stays within one slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{RedisConfig, RedisMode, seeds};

/// A connection to Redis; cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum RedisConn {
    Standalone(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// How long one command may wait for its answer, and one connection attempt.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A cluster connection on which every command has failed to reach Redis
/// for this long is replaced by a new one.
const REOPEN_AFTER: Duration = Duration::from_secs(10);

/// A Redis Cluster connection that is opened again when it stays stuck: after
/// a primary's restart, redis-rs's cluster client once answered every command
/// of a process "timed out" for minutes while the cluster served the others
/// (the fleet chaos run stalled on it). Each command takes the current
/// connection (a clone: a channel's sender); the first failing one past
/// [`REOPEN_AFTER`] of failures only opens a new one in the background.
pub struct Cluster {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    /// Since when no command reached Redis (none since answered), if so.
    failing_since: Mutex<Option<Instant>>,
    reopening: AtomicBool,
}

impl Cluster {
    fn connection(&self) -> ClusterConnection {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn heard<T>(self: &Arc<Self>, result: &RedisResult<T>) {
        let mut since = self.failing_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match result {
            Err(e)
                if e.is_timeout()
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                let first = *since.get_or_insert_with(Instant::now);
                if first.elapsed() >= REOPEN_AFTER && !self.reopening.swap(true, Ordering::AcqRel) {
                    tokio::spawn(self.clone().reopen(first.elapsed()));
                }
            }
            // An answer, even an error one (a script's, WRONGTYPE): Redis is reached.
            _ => *since = None,
        }
    }

    async fn reopen(self: Arc<Self>, failing_for: Duration) {
        tracing::warn!(
            failing_secs = failing_for.as_secs(),
            "no redis command has got through the cluster connection for a while; opening a new one"
        );
        match tokio::time::timeout(4 * TIMEOUT, self.client.get_async_connection()).await {
            Ok(Ok(connection)) => {
                *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = connection;
                *self.failing_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                tracing::info!("redis cluster connection opened again");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not open a new redis cluster connection; will try again")
            }
            Err(_) => tracing::warn!("opening a new redis cluster connection timed out; will try again"),
        }
        // Whether or not it worked, the next try waits another REOPEN_AFTER of failures.
        if let Some(since) =
            self.failing_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_mut()
        {
            *since = Instant::now();
        }
        self.reopening.store(false, Ordering::Release);
    }
}

impl RedisConn {
    /// Connects once (the caller retries) to `redis.url`: the primary, or the
    /// cluster its seed nodes describe.
    pub async fn connect(config: &RedisConfig) -> RedisResult<Self> {
        Self::open(&config.url, config.mode).await
    }

    /// Connects once to `url` (one URL, or a cluster's seed nodes, comma-separated).
    pub async fn open(url: &str, mode: RedisMode) -> RedisResult<Self> {
        match mode {
            RedisMode::Standalone => {
                let client = redis::Client::open(url)?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    // One try per attempt: the caller does the retrying, and knows the deadline.
                    .set_number_of_retries(1)
                    .set_response_timeout(Some(TIMEOUT));
                Ok(Self::Standalone(ConnectionManager::new_with_config(client, manager).await?))
            }
            RedisMode::Cluster => {
                let client = ClusterClientBuilder::new(seeds(url).collect::<Vec<_>>())
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    // Redirections (MOVED, ASK) are followed inside the client; a
                    // TRYAGAIN or CLUSTERDOWN is retried within the 2 s response
                    // timeout (about once). A failover takes longer: the message's
                    // attempt fails and is retried later (CONTRACT §3), nothing hangs.
                    // A request whose connection dropped may be sent again: every
                    // script is safe to run twice.
                    .retries(3)
                    .build()?;
                let current = RwLock::new(client.get_async_connection().await?);
                Ok(Self::Cluster(Arc::new(Cluster {
                    client,
                    current,
                    failing_since: Mutex::new(None),
                    reopening: AtomicBool::new(false),
                })))
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(cluster) => Box::pin(async move {
                let result = cluster.connection().req_packed_command(cmd).await;
                cluster.heard(&result);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => Box::pin(async move {
                let result = cluster.connection().req_packed_commands(pipeline, offset, count).await;
                cluster.heard(&result);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(cluster) => cluster.connection().get_db(),
        }
    }
}
