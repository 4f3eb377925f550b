//! Batch isolation (CONTRACT §3): a statement shared by many messages that fails
//! because of one message's value fails that message alone, and a fault the
//! message itself causes is `invalid` at once, never `failed` after retries.

use std::sync::atomic::Ordering;

use chat_worker::decode::Inbound;
use chat_worker::store::ContextReader;

use crate::harness::{TestEnv, eventually, header_str};

fn inbound(env: &TestEnv, message_id: &str, customer: &str) -> Inbound {
    chat_worker::decode::decode(env.message(message_id, customer, "hello").to_string().as_bytes())
        .expect("valid")
}

// current_thread: every load below is queued before the reader first runs, so
// all but the first share one grouped read.
#[tokio::test]
async fn a_grouped_context_read_one_message_fails_is_split_and_fails_only_that_message() {
    let env = TestEnv::new().await;
    let reader = ContextReader::start(env.db.clone(), 1, 20);
    let mut messages: Vec<Inbound> =
        (0..6).map(|i| inbound(&env, &format!("m-{i}"), &format!("c-{i}"))).collect();
    // A value no validated message carries, but that PostgreSQL refuses as a
    // parameter (22021): it stands for any value one message can bring.
    messages[3].customer_external_id = "c-\u{0}".into();
    let results = futures_util::future::join_all(messages.iter().map(|m| reader.load(m, true))).await;
    for (i, result) in results.iter().enumerate() {
        if i == 3 {
            let e = result.as_ref().expect_err("the message PostgreSQL cannot take fails");
            assert!(e.caused_by_input(), "classified as the message's own fault: {e}");
        } else {
            assert!(matches!(result, Ok(Some(_))), "message {i} is read all the same: {result:?}");
        }
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_database_refuses_is_invalid_at_once_and_its_neighbours_are_answered() {
    let mut env = TestEnv::new().await;
    // One commit at a time: whatever is ready while one runs shares the next
    // (with several in flight, a loaded machine could give each its own).
    env.config.database.commits_in_flight = 1;
    // PostgreSQL refusing one message's row as a data exception (SQLSTATE class
    // 22), as it does a value it cannot store.
    env.on_message_row_insert(
        "NEW.text = 'poison'",
        "RAISE EXCEPTION 'value refused by a test trigger' USING ERRCODE = 'invalid_parameter_value'",
    )
    .await;
    // Each commit takes a while, so the messages that arrive meanwhile share the next one.
    env.on_message_insert("PERFORM pg_sleep(0.2)").await;
    // Published before the worker starts, so that they reach it together
    // (published one by one to a running worker on a loaded machine, each
    // could find a commit of its own free).
    let mut neighbours = Vec::new();
    for i in 0..30 {
        let (id, text) =
            if i == 15 { ("m-poison".to_owned(), "poison") } else { (format!("m-{i}"), "hello") };
        let message = env.message(&id, &format!("c-{i}"), text);
        if i != 15 {
            neighbours.push(message.clone());
        }
        env.publish_json(&message).await;
    }
    let mut worker = env.spawn_worker("w-isolation");
    env.ready(&mut worker).await;
    let mut replied = std::collections::HashMap::new();
    let started = std::time::Instant::now();
    while replied.len() < neighbours.len() {
        assert!(started.elapsed() < crate::harness::PATIENCE, "replies: {}", replied.len());
        for (_, body) in env.replies().await {
            *replied.entry(body["fingerprint"].as_str().unwrap_or("").to_owned()).or_insert(0) += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for message in &neighbours {
        assert_eq!(replied.get(&crate::harness::fingerprint_of(message)), Some(&1), "{message}");
    }
    let mut dead = Vec::new();
    eventually("the poison message is dead-lettered", || {
        let env = &env;
        async move { env.queue_depth(&env.config.amqp.dead_queue).await > 0 }
    })
    .await;
    dead.extend(env.dead_letters().await);
    assert_eq!(dead.len(), 1);
    assert_eq!(header_str(&dead[0], "x-error-kind").as_deref(), Some("invalid"));
    let error = header_str(&dead[0], "x-error").unwrap_or_default();
    assert!(error.contains("cannot be stored") && error.contains("refused by a test trigger"), "{error}");
    assert_eq!(header_str(&dead[0], "x-attempts"), None, "not a failure after retries");
    assert_eq!(worker.tally.failed.load(Ordering::Relaxed), 0, "no failed attempt, for it or its neighbours");
    assert_eq!(env.total_rows().await, 2 * neighbours.len() as i64);
    chat_worker::tls::install_crypto();
    let addr = *worker.tally.admin_addr.get().expect("admin address");
    let metrics =
        reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    let split = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_worker_db_commit_batches_split_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(split.is_some_and(|n| n >= 1.0), "the poison shared a commit, which was split: {split:?}");
    worker.stop().await.expect("clean stop");
    env.finish().await;
}
