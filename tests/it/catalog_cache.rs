//! The catalog cache on the real services: single flight, Redis outage, and
//! invalidation of direct SQL changes across running workers.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chat_worker::catalog::CatalogCache;
use chat_worker::config::{CacheConfig, RedisMode};
use chat_worker::keys::Keys;
use chat_worker::redis_conn::RedisConn;
use std::sync::atomic::Ordering;
use testkit::proxy;

use crate::harness::{TestEnv, eventually, shard_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_misses_for_one_tenant_cost_one_catalog_query() {
    let mut env = TestEnv::new().await;
    env.seed_catalog(env.tenant_id).await;
    let pg = proxy::postgres(&env.upstreams().0).await.expect("proxy");
    let redis = RedisConn::connect(&env.config.redis).await.expect("redis");
    env.route_through(Some(&pg), None);
    let db = crate::harness::worker_db(&env.config, 16);
    let cache = CatalogCache::new(db, redis, &env.config.redis.key_prefix, &CacheConfig::default());

    let lookups = (0..500).map(|_| {
        let cache = cache.clone();
        let tenant = env.tenant_id;
        tokio::spawn(async move { cache.catalog(tenant).await.map(|c| c.products.len()) })
    });
    for lookup in futures_util::future::join_all(lookups).await {
        assert_eq!(lookup.expect("task").expect("catalog"), 4);
    }
    let catalog_queries = pg.log.snapshot().iter().filter(|s| s.contains("FROM products")).count();
    assert_eq!(catalog_queries, 1, "500 concurrent misses share one load");
    assert_eq!(cache.stats().loads.load(Ordering::Relaxed), 1);
    assert_eq!(cache.stats().local_hits.load(Ordering::Relaxed), 499);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_the_database_and_never_fails_a_lookup() {
    let env = TestEnv::new().await;
    env.seed_catalog(env.tenant_id).await;
    // A Redis of the test's own, so stopping it disturbs no other test.
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        socket.local_addr().expect("addr").port()
    };
    let mut server = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server (installed by scripts/services.sh)");
    let url = format!("redis://127.0.0.1:{port}/0");
    let started = Instant::now();
    let manager = loop {
        let client = redis::Client::open(url.as_str()).expect("url");
        if let Ok(m) = redis::aio::ConnectionManager::new(client).await {
            break RedisConn::Standalone(m);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "own redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let config = CacheConfig { catalog_ttl_secs: 1, ..CacheConfig::default() };
    let cache = CatalogCache::new(env.db.clone(), manager, "outage:", &config);
    assert_eq!(cache.catalog(env.tenant_id).await.expect("with redis").products.len(), 4);

    server.kill().await.expect("stop redis");
    // Every lookup succeeds; once the 1 s local entry expires they go to Redis,
    // find it gone, and are answered by PostgreSQL.
    let killed = Instant::now();
    while cache.stats().redis_errors.load(Ordering::Relaxed) == 0 {
        let catalog = cache.catalog(env.tenant_id).await.expect("the database answers when Redis does not");
        assert_eq!(catalog.products.len(), 4);
        assert!(killed.elapsed() < crate::harness::PATIENCE, "the cache never tried Redis again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cache.stats().loads.load(Ordering::Relaxed) >= 2, "reloaded from PostgreSQL");
    env.finish().await;
}

/// A change made with plain SQL, by any program, reaches both running workers'
/// caches (both tiers) within the 2 seconds CONTRACT §5 promises — with a catalog
/// TTL of 60 s, only invalidation can do that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_sql_changes_reach_two_running_workers_within_two_seconds() {
    let env = TestEnv::new().await;
    env.seed_catalog(env.tenant_id).await;
    let mut a = env.spawn_worker_on("worker-a", "a");
    let mut b = env.spawn_worker_on("worker-b", "b");
    env.ready(&mut a).await;
    env.ready(&mut b).await;
    for worker in ["a", "b"] {
        let reply = env.converse_via(worker, "shopper", "Do you sell a yoga mat?").await;
        assert!(reply["text"].as_str().unwrap_or("").contains("1,500 KES"), "{reply}");
    }

    let changes: [(&str, &str, bool); 3] = [
        ("UPDATE products SET price = 1700 WHERE name = 'Yoga Mat'", "1,700 KES", true),
        (
            "INSERT INTO products (tenant_id, name, category, price, currency) SELECT tenant_id, 'Yoga Block', 'fitness', 900, 'KES' FROM products WHERE name = 'Yoga Mat'",
            "Yoga Block",
            true,
        ),
        ("DELETE FROM products WHERE name = 'Yoga Mat'", "Yoga Mat —", false),
    ];
    for (sql, marker, present) in changes {
        sqlx::query(sql).execute(&env.pool).await.expect("change");
        let changed_at = Instant::now();
        for worker in ["a", "b"] {
            // Fails only when a message sent 2 s or more after the change is still
            // answered from before it; slow processing alone cannot fail it.
            loop {
                let sent_after = changed_at.elapsed();
                let reply = env.converse_via(worker, "shopper", "Do you sell yoga things?").await;
                let text = reply["text"].as_str().unwrap_or("").to_owned();
                if text.contains(marker) == present {
                    break;
                }
                assert!(
                    sent_after < Duration::from_secs(2),
                    "worker {worker} answered a message sent {sent_after:?} after `{sql}` from before it: {text}"
                );
            }
        }
    }
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
    env.finish().await;
}

/// Notifications sent while a worker's listener is disconnected are lost; the
/// worker re-reads every tenant's version when it reconnects, so a change made
/// around a lost connection is still seen within the 2 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_around_a_lost_listener_connection_is_still_seen() {
    let env = TestEnv::new().await;
    env.seed_catalog(env.tenant_id).await;
    let mut worker = env.spawn_worker_on("listener-loss", "l");
    env.ready(&mut worker).await;
    let before = env.converse_via("l", "shopper", "yoga mat?").await;
    assert!(before["text"].as_str().unwrap_or("").contains("1,500 KES"));

    let database = env.database_name();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(&database)
    .fetch_one(&env.pool)
    .await
    .expect("terminate the listener's connection");
    assert_eq!(killed, 1, "the worker's listener connection");
    sqlx::query("UPDATE products SET price = 1800 WHERE name = 'Yoga Mat'")
        .execute(&env.pool)
        .await
        .expect("change");
    let changed_at = Instant::now();
    loop {
        let sent_after = changed_at.elapsed();
        let reply = env.converse_via("l", "shopper", "yoga mat?").await;
        if reply["text"].as_str().unwrap_or("").contains("1,800 KES") {
            break;
        }
        assert!(
            sent_after < Duration::from_secs(2),
            "a message sent {sent_after:?} after the change was answered from before it: {reply}"
        );
    }
    worker.stop().await.expect("clean stop");
    env.finish().await;
}

/// `redis.cache_url`: the shared cache tier on a Redis of its own (one whose
/// eviction may drop values), the locks and states where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cache_url_cache_entries_live_there_and_locks_stay_on_the_main_redis() {
    let mut env = TestEnv::new().await;
    if env.config.redis.mode == RedisMode::Cluster {
        // The cache Redis shares the main one's mode, and this test's own server
        // is one primary: on a cluster run there is nothing separate to test.
        env.finish().await;
        return;
    }
    // Another logical database (standalone) or the same cluster under another
    // prefix would not prove the split; a Redis of the test's own does.
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        socket.local_addr().expect("addr").port()
    };
    let _server = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server (installed by scripts/services.sh)");
    let cache_url = format!("redis://127.0.0.1:{port}/0");
    let started = Instant::now();
    let mut cache_redis = loop {
        if let Ok(conn) = RedisConn::open(&cache_url, RedisMode::Standalone).await {
            break conn;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "own redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    env.config.redis.cache_url = cache_url;
    let worker = env.spawn_worker("w-cache-url");
    let message = env.message("m-cache", "+1", "hello");
    env.publish_json(&message).await;
    eventually("processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 1 }).await;
    worker.stop().await.expect("stop");

    let keys = Keys::new(&env.config.redis.key_prefix);
    let profile = keys.cache("profile", &env.tenant_id);
    let there: bool = redis::cmd("EXISTS").arg(&profile).query_async(&mut cache_redis).await.expect("exists");
    let here: bool =
        redis::cmd("EXISTS").arg(&profile).query_async(&mut env.redis.clone()).await.expect("exists");
    assert!(there && !here, "the profile is cached on the cache Redis only (there={there}, here={here})");
    let (shard, fp) = shard_of(&message);
    let state: bool = redis::cmd("EXISTS")
        .arg(keys.state(shard, &fp))
        .query_async(&mut env.redis.clone())
        .await
        .expect("exists");
    assert!(state, "the processing state stays on the main Redis");
    env.finish().await;
}
