//! A transaction pooler in front of PostgreSQL (issue 14): the statement and lock
//! timeouts hold in every transaction without startup options, and the store, a
//! worker and the commands work through PgBouncer in `pool_mode = transaction`
//! with unnamed statements.
//!
//! The PgBouncer tests need one answering at `PGBOUNCER_URL` (any database name:
//! the test's own replaces it), forwarding to the PostgreSQL of `DATABASE_URL`;
//! without it they print a note and pass.

use std::time::Duration;

use chat_worker::decode::Inbound;
use chat_worker::respond::Answer;
use chat_worker::store::{
    self, Db, DbSettings, Exchange, Lane, Recorded, StoreError, Writer, WriterMetrics, WriterSettings,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::harness::{TestEnv, eventually, test_database_url, worker_db};

const TIMEOUT: Duration = Duration::from_millis(300);

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// What every kind of statement the store sends runs under.
async fn assert_timeouts_hold(db: &Db, what: &str) {
    let show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')";
    let expected = ("300ms".to_owned(), "300ms".to_owned());
    let alone: (String, String) = sqlx::query_as(show).fetch_one(db).await.expect("a statement");
    assert_eq!(alone, expected, "{what}: a statement on its own");
    let mut conn = db.acquire().await.expect("connection");
    let kept: (String, String) =
        sqlx::query_as(show).fetch_one(&mut conn).await.expect("on a kept connection");
    assert_eq!(kept, expected, "{what}: a statement on a kept connection");
    let mut tx = db.begin().await.expect("begin");
    let inside: (String, String) = sqlx::query_as(show).fetch_one(&mut tx).await.expect("in a transaction");
    assert_eq!(inside, expected, "{what}: inside a transaction");
    tx.commit().await.expect("commit");

    let slept = sqlx::query("SELECT pg_sleep(2)").execute(db).await.expect_err("cancelled");
    assert_eq!(sqlstate(&slept).as_deref(), Some("57014"), "{what}: {slept}");
    let slept = sqlx::query("SELECT pg_sleep(2)").execute(&mut conn).await.expect_err("cancelled");
    assert_eq!(sqlstate(&slept).as_deref(), Some("57014"), "{what}: {slept}");
}

fn bounded(url: &str, session_url: Option<&str>, prepared_statements: bool) -> Db {
    let settings =
        DbSettings { max_connections: 4, statement_timeout: Some(TIMEOUT), session_url, prepared_statements };
    Db::connect_lazy(url, settings).expect("database url")
}

/// Runs without a pooler too: a direct URL treated as one gets the same
/// per-transaction timeouts, so the pooled path is tested wherever the suite runs.
#[tokio::test]
async fn the_timeouts_hold_in_every_transaction_through_a_pooler_and_as_startup_options_without() {
    let env = TestEnv::new().await;
    let direct = env.config.database.session_url().to_owned();
    assert_timeouts_hold(&bounded(&direct, None, true), "direct").await;
    for prepared in [true, false] {
        let db = bounded(&direct, Some(&direct), prepared);
        assert!(db.through_pooler());
        assert_timeouts_hold(&db, &format!("pooled mode on a direct connection, prepared {prepared}")).await;
    }
    if let Some(pgbouncer) = pgbouncer(&env).await {
        assert_timeouts_hold(&bounded(&pgbouncer, Some(&direct), false), "through PgBouncer").await;
    }
    env.finish().await;
}

/// `PGBOUNCER_URL` with the test's database, if a PgBouncer answers there.
async fn pgbouncer(env: &TestEnv) -> Option<String> {
    let Some(base) = std::env::var("PGBOUNCER_URL").ok().filter(|u| !u.is_empty()) else {
        println!("note: PGBOUNCER_URL is not set; the PgBouncer part of this test is skipped");
        return None;
    };
    let url = test_database_url(&base, env.id());
    let probe = Db::connect_lazy(
        &url,
        DbSettings {
            max_connections: 1,
            statement_timeout: None,
            session_url: Some(env.config.database.session_url()),
            prepared_statements: false,
        },
    )
    .ok()?;
    let answered = tokio::time::timeout(Duration::from_secs(5), store::ping(&probe)).await;
    probe.close().await;
    match answered {
        Ok(Ok(())) => Some(url),
        other => {
            println!(
                "note: no PgBouncer answers at PGBOUNCER_URL ({other:?}); the PgBouncer part is skipped"
            );
            None
        }
    }
}

/// The test's world, its worker configuration pointed at PgBouncer (with the
/// direct URL as the listen URL, unnamed statements), if one answers.
async fn through_pgbouncer() -> Option<TestEnv> {
    let mut env = TestEnv::new().await;
    let Some(url) = pgbouncer(&env).await else {
        env.finish().await;
        return None;
    };
    env.config.database.listen_url = env.config.database.session_url().to_owned();
    env.config.database.url = url;
    env.config.database.prepared_statements = Some(false);
    env.db.close().await;
    env.db = worker_db(&env.config, 8);
    Some(env)
}

fn exchange(env: &TestEnv, message_id: &str, customer: &str, fence: i64) -> Exchange {
    let text = format!("question {message_id}");
    let message: Inbound =
        chat_worker::decode::decode(env.message(message_id, customer, &text).to_string().as_bytes())
            .expect("valid");
    Exchange {
        fingerprint: message.fingerprint(),
        inbound: message,
        conversation_id: None,
        stored_at: chrono::Utc::now(),
        answer: Answer::plain(&format!("answer to {message_id}"), false, 0.9),
        replied_at: chrono::Utc::now(),
        responder: "test".into(),
        latency_ms: 1,
        fence,
    }
}

/// Many clients sharing few server connections is where a statement split
/// across two servers would show: 300 exchanges from 30 customers committed in
/// concurrent group commits, then read back concurrently, each customer's
/// history being its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_through_pgbouncer_in_transaction_mode() {
    let Some(env) = through_pgbouncer().await else { return };
    let metrics = WriterMetrics {
        batch_sizes: Histogram::new([1.0, 8.0, 64.0].into_iter()),
        split_batches: Counter::default(),
    };
    let writer = Writer::start(
        env.db.clone(),
        WriterSettings { max_batch: 16, in_flight: 3, light_lane: true },
        metrics,
    );
    let exchanges: Vec<Exchange> =
        (0..300).map(|i| exchange(&env, &format!("m-{i}"), &format!("c-{}", i % 30), 1)).collect();
    let results =
        futures_util::future::join_all(exchanges.iter().map(|ex| writer.record(ex.clone(), Lane::Backlog)))
            .await;
    for (i, result) in results.iter().enumerate() {
        assert!(matches!(result, Ok(Recorded::New(_))), "exchange {i}: {result:?}");
    }
    assert_eq!(env.total_rows().await, 600, "one inbound and one reply row each");
    let again = futures_util::future::join_all(
        exchanges[..20].iter().map(|ex| writer.record(ex.clone(), Lane::Backlog)),
    )
    .await;
    for (ex, result) in exchanges.iter().zip(&again) {
        match result {
            Ok(Recorded::Existing(reply)) => assert_eq!(reply.text, ex.answer.text),
            other => panic!("a copy finds the committed reply: {other:?}"),
        }
    }
    assert_eq!(env.total_rows().await, 600);

    let reader = store::ContextReader::start(env.db.clone(), 3, 20);
    let reads =
        futures_util::future::join_all(exchanges[..30].iter().map(|ex| reader.load(&ex.inbound, true))).await;
    for (ex, read) in exchanges.iter().zip(reads) {
        let context = read.expect("read").expect("the customer's conversation");
        assert_eq!(context.history.len(), 20, "{}", ex.inbound.customer_external_id);
        for item in &context.history {
            let n: usize = item.text.rsplit('-').next().and_then(|n| n.parse().ok()).expect("numbered");
            assert_eq!(format!("c-{}", n % 30), ex.inbound.customer_external_id, "{}", item.text);
        }
    }
    let alone = store::load_context(&env.db, &exchanges[0].inbound, 5, false).await.expect("read");
    assert_eq!(alone.expect("found").history.len(), 5);

    // Fencing: a later holder's token refuses the earlier one's write.
    let stale = exchange(&env, "m-stale", "c-stale", 100);
    assert!(store::register_fence(&env.db, &stale.fingerprint, 200).await.expect("fence"));
    assert!(!store::register_fence(&env.db, &stale.fingerprint, 150).await.expect("fence"));
    let refused = store::record_exchange(&env.db, &stale).await;
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    assert!(store::stored_reply(&env.db, &stale.fingerprint).await.expect("read").is_none());

    // Catalog loads and statistics go the same way.
    env.seed_catalog(env.tenant_id).await;
    assert_eq!(store::load_catalog(&env.db, env.tenant_id).await.expect("catalog").products.len(), 4);
    let since = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    let figures = store::stats::stats(&env.db, Some(env.tenant_id), since).await.expect("stats");
    assert_eq!((figures.messages_in, figures.answers), (300, 300));
    env.finish().await;
}

async fn command(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut cmd = env.worker_binary();
    cmd.args(args);
    cmd.output().await.expect("runs")
}

/// `worker migrate` takes its advisory lock on the listen URL, and the other
/// commands go through the pooler: run as an operator would, with the pooled
/// configuration in the environment.
#[tokio::test]
async fn the_commands_work_through_pgbouncer() {
    let Some(env) = through_pgbouncer().await else { return };
    let ex = exchange(&env, "m-cli", "cli-customer", 1);
    store::record_exchange(&env.db, &ex).await.expect("recorded");
    let migrated = command(&env, &["migrate"]).await;
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let tenant = env.tenant_id.to_string();
    let history = command(
        &env,
        &["history", "--tenant", &tenant, "--channel", "whatsapp", "--customer", "cli-customer", "--json"],
    )
    .await;
    assert!(history.status.success(), "{}", String::from_utf8_lossy(&history.stderr));
    let page: serde_json::Value = serde_json::from_slice(&history.stdout).expect("one JSON object");
    assert_eq!(page["total"], 2, "{page}");
    let pruned = command(&env, &["prune", "--older-than", "90d", "--dry-run"]).await;
    assert!(pruned.status.success(), "{}", String::from_utf8_lossy(&pruned.stderr));
    let stats = command(&env, &["stats", "--fresh", "--json"]).await;
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));
    env.finish().await;
}

/// A worker through the pooler answers, and hears a catalog change within the
/// 2 seconds of CONTRACT §5: its LISTEN is on the direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_through_pgbouncer_answers_and_hears_catalog_changes() {
    let Some(env) = through_pgbouncer().await else { return };
    env.seed_catalog(env.tenant_id).await;
    let mut worker = env.spawn_worker("pooled");
    env.ready(&mut worker).await;
    let reply = env.converse("shopper", "Do you sell a yoga mat?").await;
    assert!(reply["text"].as_str().unwrap_or("").contains("1,500 KES"), "{reply}");

    sqlx::query("UPDATE products SET price = 1700 WHERE name = 'Yoga Mat'")
        .execute(&env.pool)
        .await
        .expect("change");
    let changed_at = std::time::Instant::now();
    loop {
        let sent_after = changed_at.elapsed();
        let reply = env.converse("shopper", "Do you sell a yoga mat?").await;
        if reply["text"].as_str().unwrap_or("").contains("1,700 KES") {
            break;
        }
        assert!(
            sent_after < Duration::from_secs(2),
            "answered from before the change {sent_after:?} after it: {reply}"
        );
    }
    worker.stop().await.expect("clean stop");
    env.finish().await;
}

/// What pooled mode costs on the warm path, counted on the wire (direct mode's
/// budget is tests/it/budget.rs): the grouped read and the group commit each in a
/// transaction of its own, opened with the timeouts — BEGIN, the statement, COMMIT
/// — and with unnamed statements, a Parse/Describe round trip more each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_message_through_a_pooler_costs_two_transactions_of_one_statement_each() {
    use std::sync::atomic::Ordering;
    let mut env = TestEnv::new().await;
    env.seed_catalog(env.tenant_id).await;
    // Pooled mode on the direct server, behind a counting proxy.
    env.config.database.listen_url = env.config.database.session_url().to_owned();
    env.config.database.prepared_statements = Some(false);
    let pg = testkit::proxy::postgres(&env.upstreams().0).await.expect("proxy");
    env.route_through(Some(&pg), None);
    let worker = env.spawn_worker("pooled-budget");
    const WARM_UP: usize = 4;
    for _ in 0..WARM_UP {
        env.converse("budget-customer", "Do you have running shoes under 5000?").await;
    }
    let (before, trips_before) = (pg.log.len(), pg.log.round_trips());
    const N: usize = 10;
    for _ in 0..N {
        env.converse("budget-customer", "What are your opening hours?").await;
    }
    eventually("all processed", || async {
        worker.tally.processed.load(Ordering::Relaxed) == (N + WARM_UP) as u64
    })
    .await;
    let statements: Vec<String> = pg.log.snapshot()[before..].to_vec();
    let round_trips = pg.log.round_trips() - trips_before;
    worker.stop().await.expect("clean stop");

    let count = |pred: &dyn Fn(&str) -> bool| statements.iter().filter(|s| pred(s)).count();
    let begins = count(&|s| {
        s.starts_with("BEGIN; SET LOCAL statement_timeout = 45000; SET LOCAL lock_timeout = 3000")
    });
    let history = count(&|s| s.starts_with("SELECT k.ord"));
    let writes = count(&|s| s.starts_with("WITH input AS"));
    let commits = count(&|s| s.trim().eq_ignore_ascii_case("COMMIT"));
    assert_eq!((begins, history, writes, commits), (2 * N, N, N, 2 * N), "{statements:#?}");
    assert_eq!(statements.len(), 6 * N, "nothing else reaches PostgreSQL: {statements:#?}");
    // BEGIN, Parse/Describe, Bind/Execute, COMMIT: 4 round trips per transaction.
    assert!(round_trips <= 8 * N + 2, "{round_trips} PostgreSQL round trips for {N} messages");
    println!(
        "per message through a pooler: {} statements in {} round trips",
        statements.len() / N,
        round_trips / N
    );
    env.finish().await;
}
