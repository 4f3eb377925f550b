//! The per-message budget on the warm path (issues 3 and 6): 0 catalog queries, 1
//! history query (the grouped read's), 1 write statement (the group commit's, which
//! is its own transaction: no BEGIN, no COMMIT), and 2 Redis round trips (claim, finish) —
//! counted on the wire by proxies between the worker and PostgreSQL / Redis.

use std::sync::atomic::Ordering;

use testkit::proxy;

use crate::harness::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_message_costs_one_history_query_one_write_statement_and_two_redis_round_trips() {
    let mut env = TestEnv::new().await;
    if env.config.database.through_pooler() {
        // The direct path's budget; through a pooler each statement has a
        // transaction of its own, counted by tests/it/pooler.rs.
        println!(
            "note: the suite runs through a pooler (DATABASE_LISTEN_URL); this budget is the direct path's"
        );
        env.finish().await;
        return;
    }
    env.seed_catalog(env.tenant_id).await;
    let (pg_upstream, redis_upstream) = env.upstreams();
    let pg = proxy::postgres(&pg_upstream).await.expect("proxy");
    let redis = proxy::redis(&redis_upstream).await.expect("proxy");
    env.route_through(Some(&pg), Some(&redis));
    let worker = env.spawn_worker("counted");

    // Warm up: the customer's conversation exists, the tenant is cached, and every
    // pooled connection has prepared its statements (a one-time round trip each).
    for _ in 0..WARM_UP {
        env.converse("budget-customer", "Do you have running shoes under 5000?").await;
    }
    let (pg_before, redis_before, trips_before) = (pg.log.len(), redis.log.len(), pg.log.round_trips());

    const N: usize = 10;
    const WARM_UP: usize = 12;
    for i in 0..N {
        let text = if i % 2 == 0 { "What are your opening hours?" } else { "the second one" };
        env.converse("budget-customer", text).await;
    }
    eventually("all processed", || async {
        worker.tally.processed.load(Ordering::Relaxed) == (N + WARM_UP) as u64
    })
    .await;

    let statements: Vec<String> = pg.log.snapshot()[pg_before..].to_vec();
    let pg_round_trips = pg.log.round_trips() - trips_before;
    let commands: Vec<String> = redis.log.snapshot()[redis_before..]
        .iter()
        // The liveness heartbeat is per process, not per message.
        .filter(|c| !(c.starts_with("SET ") && c.contains(":alive:")))
        .cloned()
        .collect();
    worker.stop().await.expect("clean stop");

    let count = |pred: &dyn Fn(&str) -> bool| statements.iter().filter(|s| pred(s)).count();
    let catalog = count(&|s| {
        s.contains("FROM products") || s.contains("FROM knowledge_entries") || s.contains("tenants t")
    });
    let history = count(&|s| s.starts_with("SELECT k.ord"));
    let begins = count(&|s| s.trim().eq_ignore_ascii_case("BEGIN"));
    let writes = count(&|s| s.starts_with("WITH input AS"));
    let commits = count(&|s| s.trim().eq_ignore_ascii_case("COMMIT"));
    assert_eq!(catalog, 0, "no catalog queries on the warm path: {statements:#?}");
    assert_eq!((history, begins, writes, commits), (N, 0, N, 0), "{statements:#?}");
    assert_eq!(statements.len(), 2 * N, "nothing else reaches PostgreSQL: {statements:#?}");
    // Each statement is one Sync. The grouped read and write keep their connections
    // (sqlx pings every connection handed back to its pool), so nothing else.
    assert!(pg_round_trips <= 2 * N + 2, "{pg_round_trips} PostgreSQL round trips for {N} messages");

    let scripts = commands.iter().filter(|c| c.starts_with("EVALSHA")).count();
    assert_eq!(scripts, 2 * N, "claim + finish per message: {commands:#?}");
    assert_eq!(commands.len(), 2 * N, "nothing else reaches Redis: {commands:#?}");
    println!(
        "per message: {} PostgreSQL statements in {} round trips, {} Redis commands",
        statements.len() / N,
        pg_round_trips / N,
        commands.len() / N
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_at_start_loads_each_active_tenant_so_its_first_message_costs_no_catalog_query() {
    let mut env = TestEnv::new().await;
    env.seed_catalog(env.tenant_id).await;
    let pg = proxy::postgres(&env.upstreams().0).await.expect("proxy");
    env.route_through(Some(&pg), None);
    let is_catalog = |s: &String| {
        s.contains("FROM products") || s.contains("FROM knowledge_entries") || s.contains("tenants t")
    };
    let worker = env.spawn_worker("warm");
    eventually("the tenant is warmed", || async {
        pg.log.snapshot().iter().filter(|s| is_catalog(s)).count() == 3
    })
    .await;

    env.converse("first-customer", "Do you have running shoes under 5000?").await;
    let loads = pg.log.snapshot().iter().filter(|s| is_catalog(s)).count();
    assert_eq!(loads, 3, "profile, catalog and knowledge, once each, before any message");
    worker.stop().await.expect("clean stop");
    env.finish().await;
}
