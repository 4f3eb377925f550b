//! CONTRACT §4a end to end with the builtin responder, on the real services.

use serde_json::Value;

use crate::harness::TestEnv;

fn text(reply: &Value) -> String {
    reply["text"].as_str().unwrap_or_default().to_owned()
}

fn ids(reply: &Value) -> Vec<String> {
    reply["references"]
        .as_array()
        .map(|r| r.iter().map(|x| x["id"].to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_lists_products_resolves_positions_answers_an_faq_and_hands_off() {
    let env = TestEnv::new().await;
    let products = env.seed_catalog(env.tenant_id).await;
    let worker = env.spawn_worker("w1");
    let customer = "+254700000001";

    let list = env.converse(customer, "Hi, do you have running shoes under 5000?").await;
    assert!(!text(&list).contains("Marathon Pro"), "8,900 is over the bound: {}", text(&list));
    let listed = ids(&list);
    assert!(listed.len() >= 2, "a numbered list: {list}");
    assert!(listed.contains(&format!("\"{}\"", products["Trail Runner X"])));
    for (n, reference) in list["references"].as_array().into_iter().flatten().enumerate() {
        assert_eq!(reference["position"], n + 1);
        assert!(text(&list).contains(&format!("{}. ", n + 1)));
    }

    let second = env.converse(customer, "the second one").await;
    assert_eq!(ids(&second), [listed[1].clone()], "{second}");

    // The list lives in Redis; with Redis's data gone, PostgreSQL still knows it.
    env.flush_redis().await;
    let first = env.converse(customer, "first").await;
    assert_eq!(ids(&first), [listed[0].clone()], "{first}");

    let faq = env.converse(customer, "What are your opening hours?").await;
    assert_eq!(text(&faq), "We are open Monday to Saturday, 9am to 7pm.");

    let human = env.converse(customer, "I want to talk to a human").await;
    assert_eq!(human["handoff"], true);
    let status: String =
        sqlx::query_scalar("SELECT status FROM conversations WHERE customer_external_id = $1")
            .bind(customer)
            .fetch_one(&env.pool)
            .await
            .expect("status");
    assert_eq!(status, "handoff");
    let holding = env.converse(customer, "hello?").await;
    assert_eq!(holding["handoff"], true, "a conversation in handoff gets the holding reply");
    assert_eq!(holding["conversation_id"], list["conversation_id"], "and stays the customer's current one");

    worker.stop().await.expect("clean stop");
    let interactions: Vec<(String, bool)> =
        sqlx::query_as("SELECT responder, handoff FROM agent_interactions ORDER BY created_at")
            .fetch_all(&env.pool)
            .await
            .expect("rows");
    assert_eq!(interactions.len(), 6, "one agent interaction per answer");
    assert!(interactions.iter().all(|(r, _)| r == "builtin"));
    assert_eq!(interactions.iter().filter(|(_, h)| *h).count(), 2);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_sees_another_tenants_catalog_knowledge_history_or_references() {
    let mut env = TestEnv::new().await;
    let shoes = env.seed_catalog(env.tenant_id).await;
    let tenant_a = env.tenant_id;
    let tenant_b = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'Coffee Corner')")
        .bind(tenant_b)
        .execute(&env.pool)
        .await
        .expect("tenant b");
    for (name, price) in [("Espresso Machine", 25000), ("Coffee Grinder", 6000)] {
        sqlx::query("INSERT INTO products (tenant_id, name, category, price, currency) VALUES ($1, $2, 'coffee', $3, 'KES')")
            .bind(tenant_b)
            .bind(name)
            .bind(price)
            .execute(&env.pool)
            .await
            .expect("product b");
    }
    let worker = env.spawn_worker("w1");
    let customer = "+254700000777"; // the same customer id with both shops

    let a_list = env.converse(customer, "running shoes please").await;
    assert!(ids(&a_list).len() >= 2);

    env.tenant_id = tenant_b;
    let coffee = env.converse(customer, "coffee machines?").await;
    assert!(text(&coffee).contains("Espresso Machine"), "{coffee}");
    let b_items = ids(&coffee);
    let pointer = env.converse(customer, "2").await;
    assert_eq!(ids(&pointer), [b_items[1].clone()], "\"2\" is B's own second item: {pointer}");
    let shoes_at_b = env.converse(customer, "Do you have running shoes?").await;
    assert!(ids(&shoes_at_b).is_empty(), "{shoes_at_b}");
    let faq_at_b = env.converse(customer, "What are your opening hours?").await;
    assert!(!text(&faq_at_b).contains("Monday"), "A's knowledge stays A's: {faq_at_b}");
    for reply in [&pointer, &shoes_at_b, &faq_at_b, &coffee] {
        for name in shoes.keys() {
            assert!(!text(reply).contains(name.as_str()), "B saw A's {name}: {reply}");
        }
        assert_ne!(reply["conversation_id"], a_list["conversation_id"], "B's conversation is B's own");
    }
    worker.stop().await.expect("clean stop");
    let b_history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.tenant_id = $1",
    )
    .bind(tenant_a)
    .fetch_one(&env.pool)
    .await
    .expect("count");
    assert_eq!(b_history, 2, "A's conversation holds only A's exchange");
    env.finish().await;
}
