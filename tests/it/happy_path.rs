use std::sync::atomic::Ordering;

use crate::harness::{TestEnv, eventually, fingerprint_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_gets_one_stored_and_published_reply_in_the_contract_format() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker("w1");
    let message = env.message("wamid.1", "+254700000001", "hello");
    env.publish_json(&message).await;
    eventually("the message is processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 1 })
        .await;
    worker.stop().await.expect("clean stop");

    let fp = fingerprint_of(&message);
    assert_eq!(env.rows(&fp).await, (1, 1));
    let replies = env.replies().await;
    assert_eq!(replies.len(), 1);
    let (delivery, body) = &replies[0];
    let props = &delivery.properties;
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str().to_owned()), Some(format!("reply:{fp}")));
    assert_eq!(props.correlation_id().as_ref().map(|s| s.as_str()), Some("wamid.1"));
    assert_eq!(props.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(*props.delivery_mode(), Some(2));
    assert_eq!(delivery.routing_key.as_str(), format!("whatsapp.{}", env.tenant_id));

    assert_eq!(body["reply_id"], format!("reply:{fp}"));
    assert_eq!(body["in_reply_to"], "wamid.1");
    assert_eq!(body["fingerprint"], fp);
    assert_eq!(body["tenant_id"], env.tenant_id.to_string());
    assert_eq!(body["channel"], "whatsapp");
    assert_eq!(body["customer"]["external_id"], "+254700000001");
    assert_eq!(body["handoff"], false);
    assert!(body["text"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["confidence"].is_number());
    assert!(body["references"].is_array());
    assert!(body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(body["answers"], serde_json::json!([fp]), "a reply answers its own message");

    // The reply row answers the inbound row, in the conversation the reply names.
    let (conversation_id, status): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT c.id, c.status FROM conversations c JOIN messages m ON m.conversation_id = c.id
          WHERE m.fingerprint = $1 AND m.direction = 'out'",
    )
    .bind(&fp)
    .fetch_one(&env.pool)
    .await
    .expect("conversation");
    assert_eq!(body["conversation_id"], conversation_id.to_string());
    assert_eq!(status, "open");
    let provider_ids: Vec<(String, String)> = sqlx::query_as(
        "SELECT direction, provider_message_id FROM messages WHERE fingerprint = $1 ORDER BY direction",
    )
    .bind(&fp)
    .fetch_all(&env.pool)
    .await
    .expect("rows");
    assert_eq!(
        provider_ids,
        [("in".to_owned(), "wamid.1".to_owned()), ("out".to_owned(), format!("reply:{fp}"))]
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_messages_share_one_conversation_and_asking_for_a_human_hands_it_off() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker("w1");
    let first = env.message("m-1", "cust-7", "hi there");
    env.publish_json(&first).await;
    eventually("first processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 1 }).await;
    let second = env.message("m-2", "cust-7", "I want to talk to a human");
    env.publish_json(&second).await;
    eventually("second processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 2 }).await;
    let third = env.message("m-3", "cust-7", "hello? anyone?");
    env.publish_json(&third).await;
    eventually("third processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 3 }).await;
    worker.stop().await.expect("clean stop");

    let replies = env.replies().await;
    let conversations: std::collections::BTreeSet<_> =
        replies.iter().map(|(_, b)| b["conversation_id"].to_string()).collect();
    assert_eq!(conversations.len(), 1, "one conversation for one customer on one channel");
    let handoffs: Vec<bool> = replies.iter().map(|(_, b)| b["handoff"].as_bool().unwrap_or(false)).collect();
    assert_eq!(handoffs, [false, true, true], "handoff, then the holding reply");
    let status: String =
        sqlx::query_scalar("SELECT status FROM conversations WHERE customer_external_id = 'cust-7'")
            .fetch_one(&env.pool)
            .await
            .expect("status");
    assert_eq!(status, "handoff");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_first_messages_of_one_customer_open_one_conversation() {
    let env = TestEnv::new().await;
    for i in 0..40 {
        env.publish_json(&env.message(&format!("m-{i}"), "new-customer", &format!("message {i}"))).await;
    }
    let worker = env.spawn_worker("w1");
    eventually("all processed", || async { worker.tally.processed.load(Ordering::Relaxed) == 40 }).await;
    worker.stop().await.expect("clean stop");
    let conversations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversations WHERE customer_external_id = 'new-customer'")
            .fetch_one(&env.pool)
            .await
            .expect("count");
    assert_eq!(conversations, 1);
    env.finish().await;
}
