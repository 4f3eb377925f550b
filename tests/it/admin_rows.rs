//! Rows the admin app writes directly with SQL (CONTRACT §5), on a schema looser
//! than our migrations' (it may have created the tables first): NULL in every
//! column that allows it, a NaN price, a 1 MB description, 10,000 products. The
//! tenant is still answered, and what a remote responder is sent stays bounded.

use chat_worker::config::{ResponderConfig, ResponderKind};
use chat_worker::respond::shown;
use chat_worker::store;
use serde_json::{Value, json};
use testkit::http_stub::{self, Answer};
use uuid::Uuid;

use crate::harness::TestEnv;

const MEGABYTE: usize = 1024 * 1024;

/// The admin app's schema: nothing NOT NULL but keys, tenant ids and flags.
async fn loosen_schema(env: &TestEnv) {
    let columns = [
        ("tenants", &["name", "settings"][..]),
        ("products", &["name", "description", "category", "price", "currency"]),
        ("services", &["name", "description", "price", "currency"]),
        ("knowledge_entries", &["entry_type", "title", "content"]),
    ];
    for (table, columns) in columns {
        for column in columns {
            sqlx::query(&format!("ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL"))
                .execute(&env.pool)
                .await
                .expect("drop not null");
        }
    }
}

/// Returns the id of the product with the 1 MB description.
async fn seed_hostile_rows(env: &TestEnv) -> Uuid {
    let t = env.tenant_id;
    let sql = "UPDATE tenants SET name = NULL, settings = NULL WHERE id = $1;
        INSERT INTO products (tenant_id, name, description, category, price, currency) VALUES
            ($1, 'Trail Runner X', NULL, NULL, NULL, NULL),
            ($1, NULL, 'a product without a name', 'shoes', 10, 'KES'),
            ($1, 'Odd Sock', 'priced NaN', 'socks', 'NaN', 'KES');
        INSERT INTO products (tenant_id, name, category, price, currency)
            SELECT $1, 'Widget ' || n, 'widgets', n, 'KES' FROM generate_series(1, 10000) n;
        INSERT INTO services (tenant_id, name, description, price, currency, duration_minutes) VALUES
            ($1, 'Gait analysis', NULL, NULL, NULL, NULL),
            ($1, NULL, 'a service without a name', 5, 'KES', 30);
        INSERT INTO knowledge_entries (tenant_id, entry_type, title, content) VALUES
            ($1, NULL, 'Opening hours', 'We are open Monday to Saturday, 9am to 7pm.'),
            ($1, NULL, NULL, 'An entry without a title.'),
            ($1, 'faq', 'Returns', NULL)";
    for statement in sql.split(';') {
        sqlx::query(statement).bind(t).execute(&env.pool).await.expect("seed hostile rows");
    }
    sqlx::query_scalar(
        "INSERT INTO products (tenant_id, name, description, price, currency)
         VALUES ($1, 'Big Boot', $2, 99, 'KES') RETURNING id",
    )
    .bind(t)
    .bind("boot ".repeat(MEGABYTE / 5))
    .fetch_one(&env.pool)
    .await
    .expect("seed big product")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nulls_nan_and_huge_rows_load_as_a_usable_catalog() {
    let env = TestEnv::new().await;
    loosen_schema(&env).await;
    let big = seed_hostile_rows(&env).await;

    let profile = store::load_profile(&env.db, env.tenant_id).await.expect("profile loads");
    let tenant = profile.tenant.expect("a tenant without a name still exists");
    assert!(tenant.is_active);
    assert_eq!((tenant.name.as_str(), &tenant.settings), ("", &json!({})));

    let catalog = store::load_catalog(&env.db, env.tenant_id).await.expect("catalog loads");
    assert_eq!(catalog.products.len(), 3 + 10_000, "the product without a name is left out");
    let trail = catalog.products.iter().find(|p| p.name == "Trail Runner X").expect("loaded");
    assert_eq!((trail.description.as_str(), trail.category.as_str(), trail.currency.as_str()), ("", "", ""));
    assert_eq!(trail.price, None, "no price is not a price of 0");
    let sock = catalog.products.iter().find(|p| p.name == "Odd Sock").expect("loaded");
    assert_eq!(sock.price, None, "NaN is no price");
    let boot = catalog.products.iter().find(|p| p.id == big).expect("loaded");
    assert_eq!(boot.description.chars().count(), 2_000, "cut to what a cached item holds");
    assert_eq!(catalog.services.len(), 1);
    assert_eq!((catalog.services[0].price, catalog.services[0].description.as_str()), (None, ""));

    let knowledge = store::load_knowledge(&env.db, env.tenant_id).await.expect("knowledge loads");
    let titles: Vec<(&str, &str)> =
        knowledge.entries.iter().map(|e| (e.title.as_str(), e.entry_type.as_str())).collect();
    // (ORDER BY the column: the NULL title sorts last.)
    assert_eq!(titles, [("Opening hours", "faq"), ("", "faq")], "the entry without content is left out");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn such_a_tenant_is_answered_by_the_builtin_and_the_http_responder_is_sent_a_bounded_context() {
    let mut env = TestEnv::new().await;
    loosen_schema(&env).await;
    seed_hostile_rows(&env).await;

    let worker = env.spawn_worker("w-builtin");
    let reply = env.converse("c-1", "Do you have trail runner shoes?").await;
    let text = reply["text"].as_str().unwrap_or_default();
    assert!(text.contains("Trail Runner X — price on request"), "{text}");
    let reply = env.converse("c-1", "What are your opening hours?").await;
    assert_eq!(reply["text"], "We are open Monday to Saturday, 9am to 7pm.");
    let reply = env.converse("c-2", "big boot").await;
    assert!(reply["text"].as_str().unwrap_or_default().contains("Big Boot — 99 KES"), "{reply}");
    // About that one item: its description, cut, not a megabyte of it.
    let reply = env.converse("c-2", "tell me about that one").await;
    let text = reply["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("Big Boot — 99 KES. boot boot") && text.len() < 4096, "{} bytes", text.len());
    worker.stop().await.expect("clean stop");

    let agent = http_stub::serve(Answer::Json(
        200,
        r#"{"text":"From the agent","confidence":0.9,"handoff":false}"#.into(),
    ))
    .await
    .expect("stub");
    env.config.responder =
        ResponderConfig { kind: ResponderKind::Http, url: agent.url.clone(), ..ResponderConfig::default() };
    let worker = env.spawn_worker("w-http");
    let reply = env.converse("c-3", "Do you have trail runner shoes?").await;
    assert_eq!(reply["text"], "From the agent");
    worker.stop().await.expect("clean stop");

    let body = &agent.raw_bodies()[0];
    assert!(body.len() < MEGABYTE / 4, "the request is {} bytes", body.len());
    let sent: Value = serde_json::from_slice(body).expect("json");
    let products = sent["catalog"]["products"].as_array().cloned().unwrap_or_default();
    assert_eq!(products.len(), shown::MAX_PRODUCTS, "the first of 10,003");
    let boot = products.iter().find(|p| p["name"] == "Big Boot").expect("shown: first by name");
    assert_eq!(boot["description"].as_str().map(|d| d.chars().count()), Some(shown::DESCRIPTION_CHARS));
    let trail = products.iter().find(|p| p["name"] == "Trail Runner X").expect("shown");
    assert_eq!(trail["price"], Value::Null);
    assert_eq!(sent["catalog"]["services"].as_array().map(Vec::len), Some(1));
    assert_eq!(sent["knowledge"]["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(sent["tenant"]["name"], "");
    env.finish().await;
}
