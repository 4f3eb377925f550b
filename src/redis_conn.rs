//! Redis, one primary or a Redis Cluster (CONTRACT §1, `redis.mode`): one
//! connection type, so the dedup, cache and reference code neither knows nor
//! cares which. Both sides multiplex every command of the process over few
//! connections and reconnect by themselves.
//!
//! What works on both is what the worker sends: every script's keys share one
//! hash tag (see [`crate::keys`]), every other command names one key, and a
//! pipeline stays within one slot.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{RedisConfig, RedisMode, seeds};

/// A connection to Redis; cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum RedisConn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How long one command may wait for its answer, and one connection attempt.
const TIMEOUT: Duration = Duration::from_secs(2);

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
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
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
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
