//! Two tiers in front of PostgreSQL, one per kind of value, each with its own TTL.
//!
//! A lookup takes the in-process entry if its version is not older than the
//! newest version this worker has heard of for the tenant; else Redis's entry on
//! the same condition; else PostgreSQL, whose result is written back to Redis.
//! moka's `try_get_with` makes concurrent misses of one key share one load, so
//! 500 messages of a cold tenant cost one query.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::Weight;
use crate::config::CacheConfig;
use crate::keys::Keys;
use crate::model::catalog::{Catalog, Knowledge, Profile};
use crate::redis_conn::RedisConn;
use crate::store::{self, Db, StoreError};

/// Hits and misses per tier, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub local_hits: AtomicU64,
    pub redis_hits: AtomicU64,
    pub loads: AtomicU64,
    pub redis_errors: AtomicU64,
    /// Redis commands sent by the cache (each one round trip).
    pub redis_round_trips: AtomicU64,
}

#[derive(Clone)]
pub struct CatalogCache {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    redis: RedisConn,
    keys: Keys,
    profiles: Tier<Profile>,
    catalogs: Tier<Catalog>,
    knowledge: Tier<Knowledge>,
    /// The newest version heard of per tenant (from notifications or loads).
    versions: Mutex<HashMap<Uuid, i64>>,
    stats: Arc<CacheStats>,
}

struct Tier<T> {
    name: &'static str,
    local: Cache<Uuid, Arc<T>>,
    ttl: Duration,
}

trait Versioned {
    fn version(&self) -> i64;
}
impl Versioned for Profile {
    fn version(&self) -> i64 {
        self.version
    }
}
impl Versioned for Catalog {
    fn version(&self) -> i64 {
        self.version
    }
}
impl Versioned for Knowledge {
    fn version(&self) -> i64 {
        self.version
    }
}

impl<T: Weight + Send + Sync + 'static> Tier<T> {
    fn new(name: &'static str, ttl: Duration, max_bytes: u64) -> Self {
        let local = Cache::builder()
            .time_to_live(ttl)
            .max_capacity(max_bytes)
            .weigher(|_: &Uuid, v: &Arc<T>| u32::try_from(v.weight()).unwrap_or(u32::MAX))
            .build();
        Self { name, local, ttl }
    }
}

impl CatalogCache {
    pub fn new(db: Db, redis: RedisConn, key_prefix: &str, config: &CacheConfig) -> Self {
        let bytes = config.local_max_bytes;
        let secs = Duration::from_secs;
        Self {
            inner: Arc::new(Inner {
                db,
                redis,
                keys: Keys::new(key_prefix),
                // The memory bound is shared out by how large each kind tends to be.
                profiles: Tier::new("profile", secs(config.settings_ttl_secs), bytes / 16),
                catalogs: Tier::new("catalog", secs(config.catalog_ttl_secs), bytes / 16 * 11),
                knowledge: Tier::new("knowledge", secs(config.knowledge_ttl_secs), bytes / 16 * 4),
                versions: Mutex::new(HashMap::new()),
                stats: Arc::new(CacheStats::default()),
            }),
        }
    }

    pub fn stats(&self) -> Arc<CacheStats> {
        self.inner.stats.clone()
    }

    pub async fn profile(&self, tenant: Uuid) -> Result<Arc<Profile>, StoreError> {
        let db = &self.inner.db;
        self.get(&self.inner.profiles, tenant, || store::load_profile(db, tenant)).await
    }

    pub async fn catalog(&self, tenant: Uuid) -> Result<Arc<Catalog>, StoreError> {
        let db = &self.inner.db;
        self.get(&self.inner.catalogs, tenant, || store::load_catalog(db, tenant)).await
    }

    pub async fn knowledge(&self, tenant: Uuid) -> Result<Arc<Knowledge>, StoreError> {
        let db = &self.inner.db;
        self.get(&self.inner.knowledge, tenant, || store::load_knowledge(db, tenant)).await
    }

    /// Loads all three for a tenant into both tiers.
    pub async fn warm(&self, tenant: Uuid) -> Result<(), StoreError> {
        let (p, c, k) = tokio::join!(self.profile(tenant), self.catalog(tenant), self.knowledge(tenant));
        p.and(c).and(k).map(|_| ())
    }

    /// A tenant changed at `version`: entries older than it are dropped here and
    /// never taken from Redis again.
    pub async fn observe_change(&self, tenant: Uuid, version: i64) {
        let newer = {
            let mut versions = self.inner.versions.lock().unwrap_or_else(|p| p.into_inner());
            let known = versions.entry(tenant).or_insert(0);
            let newer = version > *known;
            *known = (*known).max(version);
            newer
        };
        if newer {
            self.inner.profiles.local.invalidate(&tenant).await;
            self.inner.catalogs.local.invalidate(&tenant).await;
            self.inner.knowledge.local.invalidate(&tenant).await;
        }
    }

    /// After missing notifications (a lost listener connection): forget every
    /// local entry and learn every tenant's version again.
    pub async fn resync(&self, versions: Vec<(Uuid, i64)>) {
        {
            let mut known = self.inner.versions.lock().unwrap_or_else(|p| p.into_inner());
            for (tenant, version) in versions {
                let v = known.entry(tenant).or_insert(0);
                *v = (*v).max(version);
            }
        }
        self.inner.profiles.local.invalidate_all();
        self.inner.catalogs.local.invalidate_all();
        self.inner.knowledge.local.invalidate_all();
    }

    /// Deletes the tenant's entries from the shared (Redis) tier: one `DEL` per
    /// key, sent together (in a cluster each key may live on another node).
    pub async fn forget_shared(&self, tenant: Uuid) {
        let deletes = ["profile", "catalog", "knowledge"].map(|kind| {
            let mut redis = self.inner.redis.clone();
            let key = self.inner.keys.cache(kind, &tenant);
            async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut redis).await }
        });
        for deleted in futures_util::future::join_all(deletes).await {
            if let Err(e) = deleted {
                tracing::warn!(error = %e, "could not delete a shared cache entry; it is ignored as outdated");
            }
        }
    }

    fn latest(&self, tenant: Uuid) -> i64 {
        self.inner.versions.lock().unwrap_or_else(|p| p.into_inner()).get(&tenant).copied().unwrap_or(0)
    }

    async fn get<T, F, Fut>(&self, tier: &Tier<T>, tenant: Uuid, load: F) -> Result<Arc<T>, StoreError>
    where
        T: Versioned + Weight + Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let entry = self.get_once(tier, tenant, &load).await?;
        if entry.version() >= self.latest(tenant) {
            return Ok(entry);
        }
        // Loaded before a change this worker has since heard of: load again.
        tier.local.invalidate(&tenant).await;
        self.get_once(tier, tenant, &load).await
    }

    async fn get_once<T, F, Fut>(&self, tier: &Tier<T>, tenant: Uuid, load: &F) -> Result<Arc<T>, StoreError>
    where
        T: Versioned + Weight + Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let missed = AtomicBool::new(false);
        let entry = tier
            .local
            .try_get_with(tenant, async {
                missed.store(true, Ordering::Relaxed);
                self.load_shared(tier, tenant, load).await.map(Arc::new)
            })
            .await
            .map_err(StoreError::Load)?;
        if !missed.load(Ordering::Relaxed) {
            self.inner.stats.local_hits.fetch_add(1, Ordering::Relaxed);
            tracing::Span::current().record("cache.tier", "local");
        }
        Ok(entry)
    }

    async fn load_shared<T, F, Fut>(&self, tier: &Tier<T>, tenant: Uuid, load: &F) -> Result<T, StoreError>
    where
        T: Versioned + Serialize + DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let key = self.inner.keys.cache(tier.name, &tenant);
        let min = self.latest(tenant);
        if let Some(value) = self.redis_get::<T>(&key).await.filter(|v| v.version() >= min) {
            self.inner.stats.redis_hits.fetch_add(1, Ordering::Relaxed);
            tracing::Span::current().record("cache.tier", "redis");
            return Ok(value);
        }
        let value = load().await?;
        self.inner.stats.loads.fetch_add(1, Ordering::Relaxed);
        tracing::Span::current().record("cache.tier", "database");
        self.redis_set(&key, &value, tier.ttl).await;
        Ok(value)
    }

    /// A Redis failure is a miss, never an error: the database answers instead.
    async fn redis_get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.inner.stats.redis_round_trips.fetch_add(1, Ordering::Relaxed);
        let raw: Result<Option<Vec<u8>>, _> =
            redis::cmd("GET").arg(key).query_async(&mut self.inner.redis.clone()).await;
        match raw {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                self.inner.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "redis cache read failed; using the database");
                None
            }
        }
    }

    async fn redis_set<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) {
        let Ok(bytes) = serde_json::to_vec(value) else { return };
        self.inner.stats.redis_round_trips.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let set: Result<(), _> = redis::cmd("SET")
            .arg(key)
            .arg(bytes)
            .arg("PX")
            .arg(ms)
            .query_async(&mut self.inner.redis.clone())
            .await;
        if let Err(e) = set {
            self.inner.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "redis cache write failed");
        }
    }
}
