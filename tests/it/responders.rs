//! The `openai` and `http` responders against a local server speaking their
//! formats: good answers, a slow one (timeout), a 500, a 4xx and malformed bodies.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_worker::config::{ResponderConfig, ResponderKind};
use chat_worker::decode::decode;
use chat_worker::model::HistoryItem;
use chat_worker::model::catalog::{Catalog, Knowledge, KnowledgeEntry, Product, TenantProfile};
use chat_worker::model::{ConversationStatus, Direction, ItemKind, Reference};
use chat_worker::respond::{self, Context, RespondError};
use serde_json::json;
use testkit::http_stub::{self, Answer};
use uuid::Uuid;

use crate::harness::{TestEnv, eventually, header_str};

pub(crate) struct Fixture {
    inbound: chat_worker::decode::Inbound,
    tenant: TenantProfile,
    catalog: Catalog,
    knowledge: Knowledge,
    history: Vec<HistoryItem>,
}

pub(crate) fn fixture() -> Fixture {
    let body = json!({
        "message_id": "m-1", "tenant_id": Uuid::new_v4(), "channel": "web",
        "customer": {"external_id": "c-1"}, "text": "Which shoes do you have?",
        "received_at": "2026-11-21T10:15:30Z"
    });
    Fixture {
        inbound: decode(body.to_string().as_bytes()).expect("valid"),
        tenant: TenantProfile { name: "Demo Sports".into(), is_active: true, settings: json!({}) },
        catalog: Catalog {
            version: 1,
            derived: Default::default(),
            products: vec![Product {
                id: Uuid::new_v4(),
                name: "Trail Runner X".into(),
                description: "Light".into(),
                category: "running shoes".into(),
                price: Some(4500.0),
                currency: "KES".into(),
            }],
            services: vec![],
        },
        knowledge: Knowledge {
            version: 1,
            derived: Default::default(),
            entries: vec![KnowledgeEntry {
                id: Uuid::new_v4(),
                entry_type: "faq".into(),
                title: "Opening hours".into(),
                content: "9 to 7".into(),
            }],
        },
        history: vec![
            HistoryItem {
                direction: Direction::In,
                text: "hi".into(),
                references: vec![],
                created_at: chrono::Utc::now(),
            },
            HistoryItem {
                direction: Direction::Out,
                text: "Hello!".into(),
                references: vec![],
                created_at: chrono::Utc::now(),
            },
        ],
    }
}

fn config(kind: ResponderKind, url: &str, timeout_ms: u64) -> ResponderConfig {
    ResponderConfig {
        kind,
        url: url.to_owned(),
        model: "tiny-model".into(),
        api_key_env: "CHAT_WORKER_TEST_NO_SUCH_KEY".into(),
        timeout_ms,
        prompt_cost_per_1k: 0.5,
        completion_cost_per_1k: 1.5,
        ..ResponderConfig::default()
    }
}

pub(crate) fn context(f: &Fixture) -> Context<'_> {
    Context {
        inbound: &f.inbound,
        conversation_status: ConversationStatus::Open,
        tenant: &f.tenant,
        catalog: &f.catalog,
        knowledge: &f.knowledge,
        history: &f.history,
        latest_list: None,
        burst: &[],
    }
}

async fn ask(
    kind: ResponderKind,
    answer: Answer,
    timeout_ms: u64,
) -> (Result<respond::Answer, RespondError>, http_stub::Stub) {
    ask_about(&fixture(), kind, answer, timeout_ms).await
}

async fn ask_about(
    f: &Fixture,
    kind: ResponderKind,
    answer: Answer,
    timeout_ms: u64,
) -> (Result<respond::Answer, RespondError>, http_stub::Stub) {
    let stub = http_stub::serve(answer).await.expect("stub");
    let url = if kind == ResponderKind::Openai {
        format!("{}/v1", stub.url)
    } else {
        format!("{}/agent", stub.url)
    };
    let responder =
        respond::from_config(&config(kind, &url, timeout_ms), false, Default::default()).expect("responder");
    (responder.respond(&context(f)).await, stub)
}

const COMPLETION: &str = r#"{"choices":[{"message":{"role":"assistant","content":"We have the Trail Runner X at 4,500 KES."}}],"usage":{"prompt_tokens":1000,"completion_tokens":200}}"#;

#[tokio::test]
async fn openai_renders_the_context_as_messages_and_reads_text_usage_and_references() {
    let (answer, stub) = ask(ResponderKind::Openai, Answer::Json(200, COMPLETION.into()), 5_000).await;
    let answer = answer.expect("answer");
    assert_eq!(answer.text, "We have the Trail Runner X at 4,500 KES.");
    assert!(!answer.handoff);
    assert_eq!(answer.references.len(), 1, "the item the text names");
    assert_eq!(answer.usage.model.as_deref(), Some("tiny-model"));
    assert_eq!((answer.usage.prompt_tokens, answer.usage.completion_tokens), (Some(1000), Some(200)));
    assert!((answer.usage.cost.unwrap_or_default() - 0.8).abs() < 1e-9, "0.5 + 0.3");

    assert_eq!(stub.request_lines(), ["POST /v1/chat/completions HTTP/1.1"]);
    let request = &stub.bodies()[0];
    assert_eq!(request["model"], "tiny-model");
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap_or("")).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "system, history, then the message");
    let system = messages[0]["content"].as_str().unwrap_or("");
    assert!(
        system.contains("Demo Sports")
            && system.contains("Trail Runner X")
            && system.contains("Opening hours")
    );
    assert_eq!(messages[3]["content"], "Which shoes do you have?");
}

#[tokio::test]
async fn openai_handoff_mark_sets_handoff() {
    let body = r#"{"choices":[{"message":{"content":"[handoff] Let me get a colleague."}}]}"#;
    let (answer, _) = ask(ResponderKind::Openai, Answer::Json(200, body.into()), 5_000).await;
    let answer = answer.expect("answer");
    assert!(answer.handoff);
    assert_eq!(answer.text, "Let me get a colleague.");
}

#[tokio::test]
async fn http_posts_the_built_context_and_reads_the_agents_answer() {
    let f = fixture();
    let id = f.catalog.products[0].id;
    let body = json!({"text": "Hi from the agent", "confidence": 0.7, "handoff": false,
                      "references": [{"kind": "product", "id": id, "position": 1}]});
    let (answer, stub) = ask_about(&f, ResponderKind::Http, Answer::Json(200, body.to_string()), 5_000).await;
    let answer = answer.expect("answer");
    assert_eq!((answer.text.as_str(), answer.confidence, answer.handoff), ("Hi from the agent", 0.7, false));
    // The body (sent in chunks sharing the cached catalog's JSON) is the context's
    // JSON byte for byte, with its length announced: agents need not read chunked bodies.
    let expected = serde_json::to_vec(&context(&f)).expect("json");
    assert_eq!(stub.raw_bodies(), std::slice::from_ref(&expected));
    assert_eq!(stub.header("content-length"), [Some(expected.len().to_string())]);
    assert_eq!(stub.header("content-type"), [Some("application/json".to_owned())]);
    assert_eq!(stub.header("transfer-encoding"), [None]);
    assert_eq!(answer.references, [Reference { kind: ItemKind::Product, id, position: 1 }]);
    let request = &stub.bodies()[0];
    assert_eq!(request["inbound"]["text"], "Which shoes do you have?");
    assert_eq!(request["catalog"]["products"][0]["name"], "Trail Runner X");
    assert_eq!(request["history"].as_array().map(Vec::len), Some(2));
    assert_eq!(request["tenant"]["name"], "Demo Sports");
}

#[tokio::test]
async fn a_slow_answer_times_out_as_a_transient_failure() {
    for kind in [ResponderKind::Openai, ResponderKind::Http] {
        let (answer, _) = ask(kind, Answer::Slow(Duration::from_secs(3), COMPLETION.into()), 200).await;
        match answer {
            Err(RespondError::Transient(e)) => assert!(e.contains("timed out"), "{kind:?}: {e}"),
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_500_is_transient_and_a_4xx_or_malformed_body_is_unusable_with_its_first_bytes() {
    for kind in [ResponderKind::Openai, ResponderKind::Http] {
        let (answer, _) = ask(kind, Answer::Json(503, r#"{"error":"overloaded"}"#.into()), 5_000).await;
        assert!(
            matches!(&answer, Err(RespondError::Transient(e)) if e.contains("503") && e.contains("overloaded")),
            "{kind:?}: {answer:?}"
        );

        let (answer, _) = ask(kind, Answer::Json(401, r#"{"error":"bad key"}"#.into()), 5_000).await;
        assert!(
            matches!(&answer, Err(RespondError::Unusable(e)) if e.contains("401") && e.contains("bad key")),
            "{kind:?}: {answer:?}"
        );

        let (answer, _) = ask(kind, Answer::Json(200, "<html>not json</html>".into()), 5_000).await;
        assert!(
            matches!(&answer, Err(RespondError::Unusable(e)) if e.contains("<html>not json")),
            "{kind:?}: {answer:?}"
        );
    }
}

/// End to end: a worker configured with the `http` responder publishes the
/// agent's answer; while the agent fails, the message is retried, then dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_the_http_responder_replies_with_the_agents_text_or_dead_letters_after_retries() {
    let good = http_stub::serve(Answer::Json(
        200,
        r#"{"text":"From the agent","confidence":0.9,"handoff":false}"#.into(),
    ))
    .await
    .expect("stub");
    let mut env = TestEnv::new().await;
    env.config.responder = config(ResponderKind::Http, &good.url, 2_000);
    let worker = env.spawn_worker("w-http");
    let reply = env.converse("c-9", "hello agent").await;
    assert_eq!(reply["text"], "From the agent");
    worker.stop().await.expect("clean stop");

    let broken = http_stub::serve(Answer::Json(500, "{}".into())).await.expect("stub");
    env.config.responder = config(ResponderKind::Http, &broken.url, 2_000);
    env.config.worker.max_attempts = 2;
    let worker = env.spawn_worker("w-broken");
    env.publish_json(&env.message("m-doomed", "c-9", "hello again")).await;
    eventually("dead-lettered", || async { env.queue_depth(&env.config.amqp.dead_queue).await == 1 }).await;
    assert_eq!(worker.tally.failed.load(Ordering::Relaxed), 2);
    worker.stop().await.expect("clean stop");
    let dead = env.dead_letters().await;
    assert_eq!(header_str(&dead[0], "x-error-kind").as_deref(), Some("failed"));
    assert!(header_str(&dead[0], "x-error").unwrap_or_default().contains("500"));
    assert_eq!(broken.bodies().len(), 2, "one call per attempt");
    env.finish().await;
}
