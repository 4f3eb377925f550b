//! `worker stats` figures, cached in Redis for a minute per tenant and per
//! minute of `since`, beside the catalog: dashboards and operators repeating
//! the command cost one aggregate query a minute. Best effort both ways: a
//! Redis that does not answer only means computing the figures again.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::keys::Keys;
use crate::redis_conn::RedisConn;
use crate::store::stats::Stats;

const CACHE_SECONDS: u64 = 60;

pub struct FiguresCache {
    redis: Option<RedisConn>,
    key: String,
}

impl FiguresCache {
    /// The cache entry for `tenant` (all tenants when `None`) since `since`;
    /// with no Redis connection, a cache that never has anything.
    pub fn new(
        redis: Option<RedisConn>,
        key_prefix: &str,
        tenant: Option<Uuid>,
        since: DateTime<Utc>,
    ) -> Self {
        let tenant = tenant.map(|t| t.to_string()).unwrap_or_else(|| "all".into());
        Self { redis, key: Keys::new(key_prefix).stats(&tenant, since.timestamp() / 60) }
    }

    pub async fn get(&self) -> Option<Stats> {
        let mut redis = self.redis.clone()?;
        let cached: Option<String> = redis::cmd("GET").arg(&self.key).query_async(&mut redis).await.ok()?;
        serde_json::from_str(&cached?).ok()
    }

    pub async fn put(&self, figures: &Stats) {
        let (Some(mut redis), Ok(json)) = (self.redis.clone(), serde_json::to_string(figures)) else {
            return;
        };
        let _: Result<(), _> = redis::cmd("SET")
            .arg(&self.key)
            .arg(json)
            .arg("EX")
            .arg(CACHE_SECONDS)
            .query_async(&mut redis)
            .await;
    }
}
