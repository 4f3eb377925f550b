//! What a tenant may take of the shared capacity (issue 16): its token budget,
//! checked before a paid responder is called (once the period's tokens are
//! spent its messages get the holding reply and a handoff, not calls), and
//! its message rate, fleet-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chat_worker::config::ResponderKind;
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};

use crate::harness::{TestEnv, eventually};

/// An agent whose every answer reports 100 + 20 tokens, counting its calls.
async fn paid_agent() -> (http_stub::Stub, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let route = move |body: &Value| {
        counted.fetch_add(1, Ordering::SeqCst);
        let text = body["inbound"]["text"].as_str().unwrap_or_default();
        Answer::Json(
            200,
            json!({
                "text": format!("re: {text}"), "confidence": 0.9, "handoff": false,
                "usage": {"prompt_tokens": 100, "completion_tokens": 20}
            })
            .to_string(),
        )
    };
    (http_stub::serve(Answer::Route(Arc::new(route))).await.expect("stub"), calls)
}

async fn with_settings(env: &mut TestEnv, settings: Value, agent: &http_stub::Stub) {
    env.set_tenant_settings(settings).await;
    env.config.responder.kind = ResponderKind::Http;
    env.config.responder.url = agent.url.clone();
}

/// A budget of 200 tokens a day: two answers of 120 spend it; the next
/// customers get the holding reply and a handoff, and the agent is not called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_token_budget_gets_handoffs_not_calls() {
    let mut env = TestEnv::new().await;
    let (agent, calls) = paid_agent().await;
    with_settings(&mut env, json!({"token_budget": 200, "token_budget_period": "day"}), &agent).await;
    let mut worker = env.spawn_worker("w-budget");
    env.ready(&mut worker).await;

    let mut replies = Vec::new();
    for i in 0..5 {
        let message = env.message(&format!("m-budget-{i}"), &format!("+2547000005{i:02}"), "hello");
        env.publish_json(&message).await;
        replies.push(env.reply_to(&format!("m-budget-{i}")).await);
    }
    let metrics = match worker.tally.admin_addr.get() {
        Some(addr) => {
            chat_worker::tls::install_crypto();
            reqwest::get(format!("http://{addr}/metrics"))
                .await
                .expect("metrics")
                .text()
                .await
                .unwrap_or_default()
        }
        None => String::new(),
    };
    worker.stop().await.expect("stop");

    assert_eq!(calls.load(Ordering::SeqCst), 2, "the agent is called while the budget lasts, then not");
    for reply in &replies[..2] {
        assert_eq!(reply["text"], "re: hello");
        assert_eq!(reply["handoff"], false);
    }
    for reply in &replies[2..] {
        assert_eq!(reply["handoff"], true, "over budget: a handoff ({reply})");
        assert!(reply["text"].as_str().is_some_and(|t| t.contains("team")), "the holding reply: {reply}");
        let status: String = sqlx::query_scalar("SELECT status FROM conversations WHERE id = $1::uuid")
            .bind(reply["conversation_id"].as_str().unwrap_or_default())
            .fetch_one(&env.pool)
            .await
            .expect("the conversation");
        assert_eq!(status, "handoff");
    }
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT responder FROM agent_interactions ORDER BY created_at")
            .fetch_all(&env.pool)
            .await
            .expect("interactions");
    assert_eq!(recorded.iter().filter(|r| *r == "budget").count(), 3, "{recorded:?}");
    assert!(metrics.lines().any(|l| l == "chat_worker_budget_spent_total 3"), "{metrics}");
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}

/// A budget of 0: nothing may be spent, so no call at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_of_zero_tokens_never_calls_the_responder() {
    let mut env = TestEnv::new().await;
    let (agent, calls) = paid_agent().await;
    with_settings(&mut env, json!({"token_budget": 0}), &agent).await;
    let mut worker = env.spawn_worker("w-budget-0");
    env.ready(&mut worker).await;
    env.publish_json(&env.message("m-budget-zero", "+254700000600", "hello")).await;
    let reply = env.reply_to("m-budget-zero").await;
    worker.stop().await.expect("stop");
    assert_eq!(reply["handoff"], true);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    env.finish().await;
}

/// A rate of 1 message a second, no burst: 8 messages published at once are
/// answered at that rate (the first 6 waiting for their places, the others
/// parked, no attempt spent, until theirs come), none lost, none failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_messages_are_answered_at_its_rate_limit_and_none_is_lost() {
    let mut env = TestEnv::new().await;
    env.set_tenant_settings(json!({"rate_limit_per_sec": 1, "rate_limit_burst": 1})).await;
    env.config.worker.max_attempts = 1;
    let mut worker = env.spawn_worker("w-rate");
    env.ready(&mut worker).await;
    const MESSAGES: u64 = 8;
    for i in 0..MESSAGES {
        env.publish_json(&env.message(&format!("m-rate-{i}"), &format!("+2547000007{i:02}"), "hello")).await;
    }
    eventually("every message answered", || async {
        worker.tally.processed.load(Ordering::Relaxed) == MESSAGES
    })
    .await;
    let tally = worker.tally.clone();
    worker.stop().await.expect("stop");

    let answered: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT created_at FROM messages WHERE direction = 'out' ORDER BY created_at")
            .fetch_all(&env.pool)
            .await
            .expect("replies");
    assert_eq!(answered.len() as u64, MESSAGES);
    let span = (answered[answered.len() - 1] - answered[0]).to_std().unwrap_or_default();
    assert!(span >= Duration::from_secs(6), "8 messages at 1 a second took {span:?}");
    assert!(tally.deferred.load(Ordering::Relaxed) >= 1, "the ones beyond 5 s of waiting were parked");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "no attempt spent");
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}
