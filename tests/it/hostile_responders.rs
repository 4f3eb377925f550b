//! A remote responder is another party's service, and its answers are not
//! trusted (CONTRACT §4a): a flood of bytes, a redirect, a NUL in the text,
//! references to items the tenant does not have, a 429 saying the quota is spent, a refusal. Each
//! harms only its own message, and sends no credential the agent was not given.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_worker::config::{ResponderConfig, ResponderKind};
use chat_worker::respond::{self, RespondError};
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};
use uuid::Uuid;

use crate::harness::{PATIENCE, TestEnv, eventually, fingerprint_of, header_str};

const FIFTY_MB: usize = 50 * 1024 * 1024;

fn config(kind: ResponderKind, url: &str) -> ResponderConfig {
    ResponderConfig {
        kind,
        url: url.to_owned(),
        model: "tiny-model".into(),
        api_key_env: "CHAT_WORKER_TEST_NO_SUCH_KEY".into(),
        timeout_ms: 5_000,
        ..ResponderConfig::default()
    }
}

fn agent_says(text: &str, references: Value) -> Answer {
    Answer::Json(
        200,
        json!({"text": text, "confidence": 0.9, "handoff": false, "references": references}).to_string(),
    )
}

/// What one hostile answer does to one `http` responder call (the `Context` of
/// the responders module's fixture is enough: nothing here reads it).
async fn ask(
    answer: Answer,
    max_response_bytes: u64,
) -> (Result<respond::Answer, RespondError>, http_stub::Stub) {
    let stub = http_stub::serve(answer).await.expect("stub");
    let config = ResponderConfig { max_response_bytes, ..config(ResponderKind::Http, &stub.url) };
    let responder = respond::from_config(&config, false, Default::default()).expect("responder");
    let f = crate::responders::fixture();
    (responder.respond(&crate::responders::context(&f)).await, stub)
}

#[tokio::test]
async fn a_flood_is_cut_at_the_limit_announced_or_not_and_the_limit_is_configurable() {
    for announced in [false, true] {
        let (answer, stub) = ask(Answer::Flood { bytes: FIFTY_MB, announced }, 1_048_576).await;
        assert!(
            matches!(&answer, Err(RespondError::Unusable(e)) if e.contains("larger than 1048576 bytes")),
            "announced {announced}: {answer:?}"
        );
        let flooded = || stub.flooded.lock().unwrap_or_else(|p| p.into_inner()).clone();
        eventually("the stub to see the client hang up", || async { !flooded().is_empty() }).await;
        assert!(flooded()[0] < FIFTY_MB, "the client hung up before the end: {:?}", flooded());
    }

    // The same answer is fine under the default limit and unusable under a small one.
    let long = agent_says(&"a".repeat(3_000), json!([]));
    let (answer, _) = ask(long.clone(), 2_048).await;
    assert!(
        matches!(&answer, Err(RespondError::Unusable(e)) if e.contains("larger than 2048")),
        "{answer:?}"
    );
    let (answer, _) = ask(long, 1_048_576).await;
    assert_eq!(answer.expect("under the limit").text.len(), 3_000);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_slow_down_and_refusals_are_told_apart() {
    let elsewhere = http_stub::serve(agent_says("from elsewhere", json!([]))).await.expect("stub");
    let (answer, _) = ask(Answer::Redirect(format!("{}/agent", elsewhere.url)), 1_048_576).await;
    assert!(matches!(&answer, Err(RespondError::Unusable(e)) if e.contains("302")), "{answer:?}");
    assert!(elsewhere.requests.lock().unwrap_or_else(|p| p.into_inner()).is_empty(), "never followed");

    let retry_after = |secs: &str| vec![("retry-after", secs.to_owned())];
    let (answer, _) = ask(Answer::Headed(429, retry_after("3"), "{}".into()), 1_048_576).await;
    assert!(
        matches!(&answer, Err(RespondError::SlowDown { retry_after: Some(d), .. }) if *d == Duration::from_secs(3)),
        "{answer:?}"
    );
    let (answer, _) = ask(Answer::Headed(503, retry_after("9"), "{}".into()), 1_048_576).await;
    assert!(matches!(&answer, Err(RespondError::SlowDown { retry_after: Some(_), .. })), "{answer:?}");
    let (answer, _) = ask(Answer::Json(429, "{}".into()), 1_048_576).await;
    assert!(matches!(&answer, Err(RespondError::SlowDown { retry_after: None, .. })), "{answer:?}");
    let (answer, _) = ask(Answer::Json(503, "{}".into()), 1_048_576).await;
    assert!(matches!(&answer, Err(RespondError::Transient(_))), "503 without Retry-After: {answer:?}");
    let (answer, _) = ask(Answer::Json(422, r#"{"error":"no"}"#.into()), 1_048_576).await;
    assert!(matches!(&answer, Err(RespondError::Unusable(e)) if e.contains("422")), "{answer:?}");
}

/// Some environment variable that is set, to stand in for OPENAI_API_KEY (the
/// test process's environment is read, never written).
fn a_set_variable() -> (String, String) {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(_, v)| v.len() >= 12 && v.len() < 512 && v.bytes().all(|b| b.is_ascii_graphic()))
        .collect();
    vars.sort();
    vars.into_iter().next().expect("an environment variable with a header-safe value")
}

#[tokio::test]
async fn the_http_responder_sends_no_credential_unless_one_is_configured_for_it() {
    let (var, key) = a_set_variable();
    let f = crate::responders::fixture();
    let ctx = crate::responders::context(&f);
    let agent = http_stub::serve(agent_says("hi", json!([]))).await.expect("stub");

    // The OpenAI key's variable is set, but nothing is configured for the agent.
    let unconfigured =
        ResponderConfig { api_key_env: var.clone(), ..config(ResponderKind::Http, &agent.url) };
    respond::from_config(&unconfigured, false, Default::default())
        .expect("responder")
        .respond(&ctx)
        .await
        .expect("answer");
    assert_eq!(agent.header("authorization"), [None]);
    let heads = agent.requests.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(!String::from_utf8_lossy(&heads[0].1).contains(&key) && !heads[0].0.contains(&key));

    // Configured for it: sent, and a Debug of the responder does not show it.
    let configured = ResponderConfig { http_token_env: var.clone(), ..unconfigured.clone() };
    respond::from_config(&configured, false, Default::default())
        .expect("responder")
        .respond(&ctx)
        .await
        .expect("answer");
    assert_eq!(agent.header("authorization")[1], Some(format!("Bearer {key}").to_lowercase()));
    let with_password = ResponderConfig { url: "http://agent:hunter2@127.0.0.1:9/a".into(), ..configured };
    let debug = format!("{:?}", respond::http::HttpAgent::new(&with_password).expect("responder"));
    assert!(debug.contains("Secret(***)") && !debug.contains(&key) && !debug.contains("hunter2"), "{debug}");

    // The openai responder still sends the key that is meant for it.
    let completions =
        http_stub::serve(Answer::Json(200, r#"{"choices":[{"message":{"content":"hi"}}]}"#.into()))
            .await
            .expect("stub");
    let openai = ResponderConfig { api_key_env: var, ..config(ResponderKind::Openai, &completions.url) };
    respond::from_config(&openai, false, Default::default())
        .expect("responder")
        .respond(&ctx)
        .await
        .expect("answer");
    assert_eq!(completions.header("authorization"), [Some(format!("Bearer {key}").to_lowercase())]);
    let debug = format!("{:?}", respond::openai::OpenAi::new(&openai, false).expect("responder"));
    assert!(debug.contains("Secret(***)") && !debug.contains(&key), "{debug}");
}

#[tokio::test]
async fn a_response_limit_below_a_kibibyte_is_refused_at_start_naming_its_key() {
    let env = TestEnv::new().await;
    let out = env
        .worker_binary()
        .env("WORKER__RESPONDER__MAX_RESPONSE_BYTES", "10")
        .arg("migrate")
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("responder.max_response_bytes") && stderr.contains("1024"), "{stderr}");
    env.finish().await;
}

/// Through a running worker: each hostile answer fails or is cleaned up alone;
/// its neighbours, published with it, are answered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_harm_only_their_own_message() {
    let mut env = TestEnv::new().await;
    let ids = env.seed_catalog(env.tenant_id).await;
    let (trail, sprint) = (ids["Trail Runner X"], ids["City Sprint"]);
    let other_tenant = Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'Other Shop')")
        .bind(other_tenant)
        .execute(&env.pool)
        .await
        .expect("other tenant");
    let foreign = env.seed_catalog(other_tenant).await["Trail Runner X"];

    let elsewhere = http_stub::serve(agent_says("from elsewhere", json!([]))).await.expect("stub");
    let target = format!("{}/agent", elsewhere.url);
    let route = move |request: &Value| match request["inbound"]["text"].as_str().unwrap_or_default() {
        "flood" => Answer::Flood { bytes: FIFTY_MB, announced: false },
        "redirect" => Answer::Redirect(target.clone()),
        "nul" => agent_says("Hello\u{0} there\u{0}", json!([])),
        "refs" => agent_says(
            "1. Theirs 2. Nothing 3. Trail Runner X 4. City Sprint",
            json!([{"kind": "product", "id": foreign, "position": 1},
                   {"kind": "product", "id": Uuid::new_v4(), "position": 2},
                   {"kind": "product", "id": trail, "position": 3},
                   {"kind": "service", "id": sprint, "position": 4},
                   {"kind": "widget", "id": trail, "position": 5}]),
        ),
        // A 429 that says the quota is spent: no pause (which would hold every
        // message, as a rate limit rightly does: tests/it/backpressure.rs), a failure.
        "quota" => Answer::Headed(
            429,
            vec![("retry-after", "1".into())],
            r#"{"error":{"code":"insufficient_quota"}}"#.into(),
        ),
        "refused" => Answer::Json(400, r#"{"error":"bad request"}"#.into()),
        _ => agent_says("From the agent", json!([])),
    };
    let agent = http_stub::serve(Answer::Route(Arc::new(route))).await.expect("stub");
    env.config.responder = config(ResponderKind::Http, &agent.url);
    env.config.worker.max_attempts = 2;
    let worker = env.spawn_worker("w-hostile");

    let texts = ["before", "flood", "redirect", "nul", "refs", "quota", "refused", "after"];
    let messages: Vec<Value> =
        texts.iter().map(|t| env.message(&format!("m-{t}"), &format!("c-{t}"), t)).collect();
    for message in &messages {
        env.publish_json(message).await;
    }
    // Replies arrive in any order; each is kept by the text it answers.
    let mut replies: HashMap<String, Value> = HashMap::new();
    let started = std::time::Instant::now();
    while replies.len() < 4 {
        for (_, reply) in env.replies().await {
            let text = reply["in_reply_to"].as_str().unwrap_or_default().trim_start_matches("m-").to_owned();
            assert!(replies.insert(text, reply).is_none(), "one reply each");
        }
        assert!(started.elapsed() < PATIENCE, "replies so far: {:?}", replies.keys());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("four dead letters", || async { env.queue_depth(&env.config.amqp.dead_queue).await == 4 })
        .await;
    assert_eq!(env.replies().await.len(), 0, "no reply to the failed ones");
    // Each of the four failed both its attempts; the worker never stopped.
    assert_eq!(worker.tally.failed.load(Ordering::Relaxed), 8);
    assert_eq!(worker.tally.processed.load(Ordering::Relaxed), 4);
    worker.stop().await.expect("clean stop");

    assert_eq!(replies["before"]["text"], "From the agent");
    assert_eq!(replies["after"]["text"], "From the agent");
    assert_eq!(replies["nul"]["text"], "Hello there");
    let nul = &messages[3];
    assert_eq!(env.rows(&fingerprint_of(nul)).await, (1, 1));
    let stored: String =
        sqlx::query_scalar("SELECT text FROM messages WHERE fingerprint = $1 AND direction = 'out'")
            .bind(fingerprint_of(nul))
            .fetch_one(&env.pool)
            .await
            .expect("stored reply");
    assert_eq!(stored, "Hello there");
    // Only the tenant's own item, of its own kind, at the number the text shows.
    assert_eq!(replies["refs"]["references"], json!([{"kind": "product", "id": trail, "position": 3}]));

    let mut dead: HashMap<String, (Option<String>, String)> = HashMap::new();
    for delivery in env.dead_letters().await {
        let body: Value = serde_json::from_slice(&delivery.data).expect("unchanged body");
        let kind = header_str(&delivery, "x-error-kind");
        let error = header_str(&delivery, "x-error").unwrap_or_default();
        dead.insert(body["text"].as_str().unwrap_or_default().to_owned(), (kind, error));
    }
    let failed = Some("failed".to_owned());
    assert!(matches!(&dead["flood"], (k, e) if *k == failed && e.contains("larger than")), "{dead:?}");
    assert!(matches!(&dead["redirect"], (k, e) if *k == failed && e.contains("302")), "{dead:?}");
    assert!(matches!(&dead["refused"], (k, e) if *k == failed && e.contains("400")), "{dead:?}");
    assert!(matches!(&dead["quota"], (k, e) if *k == failed && e.contains("insufficient_quota")), "{dead:?}");
    for text in ["flood", "redirect", "quota", "refused"] {
        let message = &messages[texts.iter().position(|t| *t == text).expect("sent")];
        assert_eq!(env.rows(&fingerprint_of(message)).await, (0, 0), "{text}: nothing stored");
    }

    assert!(
        elsewhere.requests.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
        "redirect never followed"
    );
    let flooded = || agent.flooded.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eventually("both floods to end", || async { flooded().len() == 2 }).await;
    assert!(flooded().iter().all(|&n| n < FIFTY_MB), "each attempt hung up early: {:?}", flooded());
    env.finish().await;
}
