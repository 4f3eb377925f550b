//! `worker prune` (issue 14): what is older than the retention goes, in batches,
//! beside running workers; what is younger stays whole, so a copy arriving within
//! the window still finds its reply and is never answered twice.

use std::sync::atomic::Ordering;

use chat_worker::decode::Inbound;
use chat_worker::respond::Answer;
use chat_worker::store::retention::{self, Removed, Table};
use chat_worker::store::{self, Exchange, Recorded};
use chrono::{TimeDelta, Utc};

use crate::harness::{TestEnv, eventually};

fn exchange(env: &TestEnv, message_id: &str, customer: &str) -> Exchange {
    let message: Inbound =
        chat_worker::decode::decode(env.message(message_id, customer, message_id).to_string().as_bytes())
            .expect("valid");
    Exchange {
        fingerprint: message.fingerprint(),
        inbound: message,
        conversation_id: None,
        stored_at: Utc::now(),
        answer: Answer::plain(&format!("answer to {message_id}"), false, 0.9),
        replied_at: Utc::now(),
        responder: "test".into(),
        latency_ms: 1,
        fence: 1,
    }
}

/// Records an exchange for each (message id, customer), returning them.
async fn record(env: &TestEnv, ids: &[(String, &str)]) -> Vec<Exchange> {
    let mut out = Vec::new();
    for (id, customer) in ids {
        let ex = exchange(env, id, customer);
        assert!(matches!(store::record_exchange(&env.db, &ex).await, Ok(Recorded::New(_))));
        out.push(ex);
    }
    out
}

/// Moves the rows of `exchanges` (and their conversations, when `whole`) `days` back.
async fn age(env: &TestEnv, exchanges: &[Exchange], days: i32) {
    let fps: Vec<&str> = exchanges.iter().map(|ex| ex.fingerprint.as_str()).collect();
    for sql in [
        "UPDATE messages SET created_at = created_at - make_interval(days => $2) WHERE fingerprint = ANY($1)",
        "UPDATE agent_interactions SET created_at = created_at - make_interval(days => $2) WHERE fingerprint = ANY($1)",
    ] {
        sqlx::query(sql).bind(&fps).bind(days).execute(&env.pool).await.expect("backdate");
    }
}

async fn age_conversations(env: &TestEnv, customers: &[&str], days: i32) {
    sqlx::query(
        "UPDATE conversations SET updated_at = now() - make_interval(days => $2) WHERE customer_external_id = ANY($1)",
    )
    .bind(customers)
    .bind(days)
    .execute(&env.pool)
    .await
    .expect("backdate conversations");
}

async fn count(env: &TestEnv, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&env.pool).await.expect("count")
}

#[tokio::test]
async fn prune_deletes_in_batches_what_is_older_than_the_retention_and_keeps_the_window_whole() {
    let env = TestEnv::new().await;
    let ids = |prefix: &str, customer: &'static str, n: usize| -> Vec<(String, &'static str)> {
        (0..n).map(|i| (format!("{prefix}-{i}"), customer)).collect()
    };
    // Five customers whose conversations went quiet 100 days ago, one of them
    // still in handoff; one who came back recently; one who is new.
    let mut old = Vec::new();
    for customer in ["old-a", "old-b", "old-c", "old-d", "handoff-old"] {
        old.extend(record(&env, &ids(customer, customer, 4)).await);
    }
    let mixed_old = record(&env, &ids("mixed-old", "mixed", 2)).await;
    let mixed_new = record(&env, &ids("mixed-new", "mixed", 2)).await;
    let recent = record(&env, &ids("new", "new-x", 3)).await;
    old.extend(mixed_old.iter().cloned());
    age(&env, &old, 100).await;
    age_conversations(&env, &["old-a", "old-b", "old-c", "old-d", "handoff-old"], 100).await;
    sqlx::query("UPDATE conversations SET status = 'handoff' WHERE customer_external_id = 'handoff-old'")
        .execute(&env.pool)
        .await
        .expect("handoff");
    for (fp, token, days) in
        [("f-old-1", 5, 100), ("f-old-2", 5, 95), ("f-old-3", 5, 91), ("f-new-1", 5, 1), ("f-new-2", 5, 0)]
    {
        sqlx::query("INSERT INTO fences (fingerprint, token, created_at) VALUES ($1, $2, now() - make_interval(days => $3))")
            .bind(fp)
            .bind(token as i64)
            .bind(days)
            .execute(&env.pool)
            .await
            .expect("fence");
    }
    let before = Utc::now() - TimeDelta::days(90);
    let expected = Removed {
        messages: 2 * old.len() as u64,
        agent_interactions: old.len() as u64,
        fences: 3,
        conversations: 4,
    };

    assert_eq!(retention::prunable(&env.db, before).await.expect("dry run"), expected);
    assert_eq!(count(&env, "messages").await, 2 * (old.len() + 5) as i64, "a dry run deletes nothing");

    let mut batches = std::collections::HashMap::<&str, u64>::new();
    let removed = retention::prune(&env.db, before, 5, |table: Table, _| {
        *batches.entry(table.name()).or_default() += 1
    })
    .await
    .expect("prune");
    assert_eq!(removed, expected);
    // 44 message rows, 5 a batch: 9 that delete and the empty one that ends the walk.
    assert_eq!(batches["messages"], 10, "{batches:?}");
    assert_eq!(batches["agent_interactions"], 6, "{batches:?}");

    for ex in &old {
        assert_eq!(env.rows(ex.fingerprint.as_str()).await, (0, 0), "{}", ex.inbound.message_id);
    }
    for ex in mixed_new.iter().chain(&recent) {
        assert_eq!(
            env.rows(ex.fingerprint.as_str()).await,
            (1, 1),
            "{} is kept whole",
            ex.inbound.message_id
        );
    }
    let kept: Vec<String> = sqlx::query_scalar("SELECT customer_external_id FROM conversations ORDER BY 1")
        .fetch_all(&env.pool)
        .await
        .expect("conversations");
    assert_eq!(
        kept,
        ["handoff-old", "mixed", "new-x"],
        "emptied, quiet conversations go, but the one in handoff"
    );
    let fences: Vec<String> = sqlx::query_scalar("SELECT fingerprint FROM fences ORDER BY 1")
        .fetch_all(&env.pool)
        .await
        .expect("fences");
    assert_eq!(fences, ["f-new-1", "f-new-2"]);

    // Within the window a copy finds its reply: at most one reply per fingerprint.
    for ex in mixed_new.iter().chain(&recent) {
        match store::record_exchange(&env.db, ex).await {
            Ok(Recorded::Existing(reply)) => assert_eq!(reply.text, ex.answer.text),
            other => panic!("a copy within the window is answered by the stored reply: {other:?}"),
        }
    }
    // Past it, nothing remembers the message: why the retention has a floor.
    let late = store::record_exchange(&env.db, &old[0]).await;
    assert!(matches!(late, Ok(Recorded::New(_))), "{late:?}");

    assert_eq!(retention::prune(&env.db, before, 5, |_, _| {}).await.expect("again"), Removed::default());
    env.finish().await;
}

/// Thousands of old rows deleted in small batches while a worker answers: every
/// message is answered once, nothing recent is touched, and nothing waits long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_runs_beside_a_worker_that_writes() {
    let env = TestEnv::new().await;
    env.seed_catalog(env.tenant_id).await;
    // 3,000 old exchanges in 300 quiet conversations, written as the admin app could.
    sqlx::raw_sql(&format!(
        "INSERT INTO conversations (tenant_id, channel, customer_external_id, updated_at)
           SELECT '{t}', 'whatsapp', 'old-' || g, now() - interval '200 days' FROM generate_series(1, 300) g;
         INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at)
           SELECT c.id, d.direction, 'p-' || g, 'old-' || g, 'old text', now() - interval '200 days' + g * interval '1 second'
             FROM generate_series(1, 3000) g
             JOIN conversations c ON c.customer_external_id = 'old-' || (1 + g % 300)
             CROSS JOIN (VALUES ('in'), ('out')) d(direction);
         INSERT INTO agent_interactions (tenant_id, conversation_id, fingerprint, responder, confidence, handoff,
                                         latency_ms, created_at)
           SELECT '{t}', m.conversation_id, m.fingerprint, 'old', 0.5, false, 1, m.created_at
             FROM messages m WHERE m.direction = 'out';",
        t = env.tenant_id
    ))
    .execute(&env.pool)
    .await
    .expect("old rows");

    let mut worker = env.spawn_worker("beside-prune");
    env.ready(&mut worker).await;
    let db = env.db.clone();
    let before = Utc::now() - TimeDelta::days(90);
    // Small batches: some 400 transactions, long enough to overlap the answering.
    let pruning = tokio::spawn(async move { retention::prune(&db, before, 25, |_, _| {}).await });
    let customers = 20;
    let mut published = Vec::new();
    for i in 0..100 {
        let id = format!("live-{i}");
        env.publish_json(&env.message(&id, &format!("live-{}", i % customers), "Do you sell a yoga mat?"))
            .await;
        published.push(id);
    }
    let removed = pruning.await.expect("task").expect("prune");
    assert_eq!(
        (removed.messages, removed.agent_interactions, removed.conversations),
        (6000, 3000, 300),
        "{removed:?}"
    );
    eventually("every message answered", || async { worker.tally.processed.load(Ordering::Relaxed) == 100 })
        .await;
    let (rows, replies): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT fingerprint) FILTER (WHERE direction = 'out') FROM messages",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count");
    assert_eq!((rows, replies), (200, 100), "one inbound and one reply row per message, the old ones gone");
    assert_eq!(count(&env, "conversations").await, customers as i64);
    worker.stop().await.expect("clean stop");
    env.finish().await;
}

async fn prune_command(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut cmd = env.worker_binary();
    cmd.arg("prune").args(args);
    cmd.output().await.expect("runs")
}

/// The count printed for `table` (a line `  <table>  <count>`).
fn reported(out: &str, table: &str) -> Option<u64> {
    out.lines().find_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
        [name, n] if name == table => n.parse().ok(),
        _ => None,
    })
}

/// The command: a dry run counts, a run deletes and says what, and a retention
/// shorter than the window is refused before anything is touched.
#[tokio::test]
async fn the_prune_command_refuses_a_short_retention_and_reports_what_it_removed() {
    let env = TestEnv::new().await;
    let old = record(&env, &[("cmd-old".to_owned(), "cmd")]).await;
    age(&env, &old, 120).await;
    let short = prune_command(&env, &["--older-than", "1d"]).await;
    assert_eq!(short.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("--older-than") && stderr.contains("keeps less than 7d"), "{stderr}");

    let mut cmd = env.worker_binary();
    cmd.env("WORKER__WORKER__MAX_MESSAGE_AGE_SECS", (10 * 86_400).to_string());
    let below_age = cmd.args(["prune", "--older-than", "8d"]).output().await.expect("runs");
    assert_eq!(below_age.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&below_age.stderr);
    assert!(stderr.contains("worker.max_message_age_secs"), "{stderr}");
    assert_eq!(count(&env, "messages").await, 2, "refusals delete nothing");

    let dry = prune_command(&env, &["--older-than", "90d", "--dry-run"]).await;
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("dry run") && reported(&out, "messages") == Some(2), "{out}");
    assert_eq!(count(&env, "messages").await, 2);

    let pruned = prune_command(&env, &["--older-than", "90d", "--batch-size", "1"]).await;
    assert!(pruned.status.success(), "{}", String::from_utf8_lossy(&pruned.stderr));
    let out = String::from_utf8_lossy(&pruned.stdout);
    assert_eq!(
        (reported(&out, "messages"), reported(&out, "agent_interactions")),
        (Some(2), Some(1)),
        "{out}"
    );
    assert_eq!(count(&env, "messages").await, 0);
    env.finish().await;
}

/// Rows written once per message get time-ordered ids (UUIDv7), so a big table's
/// primary key grows at its right edge (migration 0006): the ids of messages
/// recorded one after another sort as they were written.
#[tokio::test]
async fn message_and_interaction_ids_grow_with_time() {
    let env = TestEnv::new().await;
    let ids: Vec<(String, &str)> = (0..5).map(|i| (format!("m-ordered-{i}"), "c-ordered")).collect();
    for one in ids.chunks(1) {
        record(&env, one).await;
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    for table in ["messages", "agent_interactions"] {
        let versions: Vec<String> =
            sqlx::query_scalar(&format!("SELECT substr(id::text, 15, 1) FROM {table}"))
                .fetch_all(&env.pool)
                .await
                .expect("ids");
        assert!(!versions.is_empty() && versions.iter().all(|v| v == "7"), "{table}: versions {versions:?}");
        // Per message (written 3 ms apart): every id of a later one is above every
        // id of an earlier one. (Within one millisecond the order is random.)
        let (ordered,): (bool,) = sqlx::query_as(&format!(
            "SELECT coalesce(bool_and(prev_max IS NULL OR prev_max < low), false) FROM (
                SELECT min(id::text) AS low, lag(max(id::text)) OVER (ORDER BY min(created_at)) AS prev_max
                  FROM {table} GROUP BY fingerprint) t"
        ))
        .fetch_one(&env.pool)
        .await
        .expect("order");
        assert!(ordered, "{table}: ids sort as the rows were written");
    }
    env.finish().await;
}
