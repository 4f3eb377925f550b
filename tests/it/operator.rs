//! The operator's commands on real services: `worker dead list|replay`,
//! `worker locks list|release`, `worker state`.

use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::harness::{PATIENCE, TestEnv, eventually, fingerprint_of};

async fn worker_cli(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = env.worker_binary().args(args).output().await.expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_is_listed_without_being_consumed_and_replayed_once_the_fault_is_fixed() {
    let mut env = TestEnv::new().await;
    env.config.worker.max_attempts = 1;
    env.on_message_insert("RAISE EXCEPTION 'disk full'").await;
    let worker = env.spawn_worker("w1");
    let message = env.message("m-replay", "c1", "hello");
    env.publish_json(&message).await;
    env.publish(b"not json").await;
    eventually("both dead-lettered", || async { env.queue_depth(&env.config.amqp.dead_queue).await == 2 })
        .await;
    worker.stop().await.expect("stop");

    let (code, out, err) = worker_cli(&env, &["dead", "list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("one JSON object");
    let dead = listed["dead"].as_array().cloned().unwrap_or_default();
    assert_eq!(dead.len(), 2);
    let kinds: Vec<&str> = dead.iter().map(|d| d["error_kind"].as_str().unwrap_or("")).collect();
    assert!(kinds.contains(&"failed") && kinds.contains(&"malformed"), "{kinds:?}");
    assert!(dead.iter().any(|d| d["error"].as_str().unwrap_or("").contains("disk full")));
    // Listing takes each message and gives it back unacked: the broker puts
    // them back as the command's channel closes, which a quorum queue does
    // through its log, so they may be back a moment after the command exits.
    eventually("listing consumes nothing", || async {
        env.queue_depth(&env.config.amqp.dead_queue).await == 2
    })
    .await;
    let (_, text, _) = worker_cli(&env, &["dead", "list"]).await;
    assert!(
        text.contains("failed after 1 attempts: ") && text.contains("malformed: body is not JSON"),
        "{text}"
    );

    env.remove_insert_trigger().await;
    let worker = env.spawn_worker("w2");
    let (code, out, err) = worker_cli(&env, &["dead", "replay"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 2 message(s)"), "{out}");
    eventually("the fixed one processed, the malformed one dead again", || async {
        worker.tally.processed.load(Ordering::Relaxed) == 1
            && worker.tally.rejected.load(Ordering::Relaxed) == 1
    })
    .await;
    worker.stop().await.expect("stop");
    assert_eq!(env.rows(&fingerprint_of(&message)).await, (1, 1));
    assert_eq!(env.replies().await.len(), 1);
    let back = env.dead_letters().await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].data, b"not json", "replayed and dead again, still unchanged");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_list_state_and_release_show_and_free_a_stuck_lock() {
    let env = TestEnv::new().await;
    let message = env.message("m-locked", "c1", "hello");
    let fp = fingerprint_of(&message);
    env.publish_json(&message).await;
    let mut doomed =
        env.worker_command("doomed").env("WORKER_TEST_CRASH_AT", "after_lock").spawn().expect("spawn");
    let _ = tokio::time::timeout(PATIENCE, doomed.wait()).await.expect("crashes");

    let (code, out, err) = worker_cli(&env, &["locks", "list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let locks: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(locks["locks"][0]["fingerprint"], fp);
    assert_eq!(locks["locks"][0]["status"], "processing");
    assert_eq!(locks["locks"][0]["worker_id"], "doomed");
    assert_eq!(locks["locks"][0]["locked"], true);

    let (_, out, _) = worker_cli(&env, &["state", &fp]).await;
    assert!(out.contains("status=processing worker=doomed") && out.contains("attempts=1"), "{out}");
    assert!(out.contains("no reply committed"), "{out}");

    let (code, out, _) = worker_cli(&env, &["locks", "release", &fp]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("released {fp}")), "{out}");
    let (_, out, _) = worker_cli(&env, &["state", &fp, "--json"]).await;
    let state: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (state["state"]["status"].as_str(), state["state"]["locked"].as_bool()),
        (Some("released"), Some(false))
    );

    let (code, _, err) = worker_cli(&env, &["state", "not-a-fingerprint"]).await;
    assert_eq!(code, 2, "a usage error");
    assert!(err.contains("'not-a-fingerprint'") && err.contains("is not a fingerprint"), "{err}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_on_a_seeded_history_gives_the_right_figures() {
    let env = TestEnv::new().await;
    let t = env.tenant_id;
    let other = uuid::Uuid::new_v4();
    sqlx::raw_sql(&format!(
        "INSERT INTO tenants (id, name) VALUES ('{other}', 'Other');
         INSERT INTO conversations (id, tenant_id, channel, customer_external_id, status) VALUES
           ('00000000-0000-0000-0000-000000000001', '{t}', 'web', 'a', 'open'),
           ('00000000-0000-0000-0000-000000000002', '{t}', 'web', 'b', 'handoff'),
           ('00000000-0000-0000-0000-000000000003', '{t}', 'sms', 'c', 'closed'),
           ('00000000-0000-0000-0000-000000000004', '{t}', 'sms', 'd', 'closed'),
           ('00000000-0000-0000-0000-000000000009', '{other}', 'web', 'z', 'open');
         INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text)
           SELECT '00000000-0000-0000-0000-000000000001', d, 'p' || n || d, 'f' || n, 'x'
             FROM generate_series(1, 4) n, (VALUES ('in'), ('out')) v(d);
         INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text)
           VALUES ('00000000-0000-0000-0000-000000000002', 'out', 'human-1', 'h1', 'a human agent wrote this'),
                  ('00000000-0000-0000-0000-000000000009', 'in', 'o1', 'o1', 'other tenant');
         INSERT INTO agent_interactions (tenant_id, conversation_id, fingerprint, responder, model, confidence, handoff,
                                         prompt_tokens, completion_tokens, cost, latency_ms) VALUES
           ('{t}', '00000000-0000-0000-0000-000000000001', 'f1', 'builtin', NULL, 0.9, false, NULL, NULL, NULL, 10),
           ('{t}', '00000000-0000-0000-0000-000000000001', 'f2', 'builtin', NULL, 0.5, true, NULL, NULL, NULL, 20),
           ('{t}', '00000000-0000-0000-0000-000000000001', 'f3', 'openai', 'm', 0.8, false, 1000, 200, 0.25, 300),
           ('{t}', '00000000-0000-0000-0000-000000000001', 'f4', 'openai', 'm', 0.6, false, 500, 100, 0.125, 400),
           ('{other}', '00000000-0000-0000-0000-000000000009', 'o1', 'builtin', NULL, 0.1, true, NULL, NULL, NULL, 5000);"
    ))
    .execute(&env.pool)
    .await
    .expect("seed");

    let (code, out, err) =
        worker_cli(&env, &["stats", "--tenant", &t.to_string(), "--since", "1h", "--json", "--fresh"]).await;
    assert_eq!(code, 0, "{err}");
    let s: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(s["conversations"], serde_json::json!({"open": 1, "handoff": 1, "closed": 2}));
    assert_eq!(
        (s["messages_in"].as_i64(), s["messages_out"].as_i64()),
        (Some(4), Some(5)),
        "a human's reply counts as out"
    );
    assert_eq!((s["answers"].as_i64(), s["handoffs"].as_i64()), (Some(4), Some(1)));
    assert_eq!(s["handoff_rate"].as_f64(), Some(0.25));
    let confidence = s["average_confidence"].as_f64().unwrap_or_default();
    assert!((confidence - 0.7).abs() < 1e-6, "{confidence}");
    assert_eq!(s["latency_ms"]["p50"].as_f64(), Some(160.0), "percentile_cont of 10, 20, 300, 400");
    assert_eq!(s["cost"].as_f64(), Some(0.375));
    assert_eq!((s["prompt_tokens"].as_i64(), s["completion_tokens"].as_i64()), (Some(1500), Some(300)));
    assert_eq!(
        s["by_responder"],
        serde_json::json!([{"responder": "builtin", "answers": 2}, {"responder": "openai", "answers": 2}])
    );

    let (_, text, _) = worker_cli(&env, &["stats", "--tenant", &t.to_string(), "--since", "1h"]).await;
    assert!(text.contains("answers: 4; handoff rate 25.0%; average confidence 0.70"), "{text}");
    let (_, all, _) = worker_cli(&env, &["stats", "--json", "--fresh"]).await;
    let all: Value = serde_json::from_str(&all).expect("json");
    assert_eq!(all["answers"].as_i64(), Some(5), "every tenant by default");
    env.finish().await;
}
