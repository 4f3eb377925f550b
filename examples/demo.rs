//! The gateway side of `make demo`: seeds a demo tenant, plays a short scripted
//! conversation and a burst with duplicates and bad messages against a running
//! `worker run`, and prints what became of each message and a summary.
//!
//! Usage: demo [CONFIG_FILE]   (the same configuration the worker runs with)

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_worker::config::{Config, Overrides};
use chat_worker::decode::decode;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const TENANT: &str = "0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10";
const REPLIES: &str = "demo.replies";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("demo: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let file = std::env::args().nth(1);
    let config = Config::load(file.as_deref().map(std::path::Path::new), &Overrides::default())?;
    let pool = chat_worker::store::pool(&config.database.url, 2)?;
    seed(&pool).await.context("seeding the demo tenant")?;

    let connection = Connection::connect(&config.amqp.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let mut replies = listen_for_replies(&channel, &config).await?;
    let run_id = chrono::Utc::now().format("%H%M%S").to_string();
    let started = Instant::now();

    println!("\n== A scripted conversation (customer +254700000001) ==");
    for (i, text) in [
        "Hi! Do you have running shoes under 5000?",
        "the second one",
        "What are your opening hours?",
        "Can I talk to a human please?",
        "Hello? Is anyone there?",
    ]
    .iter()
    .enumerate()
    {
        let message = message(&format!("demo-{run_id}-talk-{i}"), "+254700000001", text);
        publish(&channel, &config, &message.to_string().into_bytes(), &message["message_id"]).await?;
        let reply = next_reply(&mut replies).await?;
        println!("customer: {text}");
        println!(
            "worker:   {}{}",
            reply["text"].as_str().unwrap_or(""),
            if reply["handoff"] == true { "  [handoff]" } else { "" }
        );
    }

    println!("\n== A burst: 12 messages from 4 customers, 1 to 3 copies each, and 4 bad ones ==");
    let mut published: BTreeMap<String, (Value, usize)> = BTreeMap::new();
    let mut order = Vec::new();
    let questions = [
        "Do you deliver to Nairobi?",
        "Is the Yoga Mat in stock?",
        "Can I pay with M-Pesa?",
        "I need an agent",
    ];
    for i in 0..12 {
        let id = format!("demo-{run_id}-burst-{i:02}");
        let m = message(&id, &format!("+2547000001{:02}", i % 4), questions[i % 4]);
        let copies = 1 + i % 3;
        for _ in 0..copies {
            order.push((id.clone(), m.to_string().into_bytes()));
        }
        published.insert(id, (m, copies));
    }
    let bad = bad_messages(&run_id);
    for (n, (id, body, _)) in bad.iter().enumerate() {
        order.insert((n * 7 + 2).min(order.len()), (id.clone(), body.clone()));
    }
    for (id, body) in &order {
        publish(&channel, &config, body, &json!(id)).await?;
    }

    let unique = published.len();
    let mut replied: HashMap<String, Value> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while replied.len() < unique {
        let reply = tokio::time::timeout_at(deadline.into(), next_reply(&mut replies))
            .await
            .with_context(|| format!("only {} of {unique} replies arrived", replied.len()))??;
        let key = reply["in_reply_to"].as_str().unwrap_or("").to_owned();
        if replied.insert(key.clone(), reply).is_some() {
            bail!("a second reply for {key}");
        }
    }
    let dead = take_dead_letters(&channel, &config, bad.len()).await?;

    for (id, (_, copies)) in &published {
        let text = replied.get(id).and_then(|r| r["text"].as_str()).unwrap_or("(no reply!)");
        let dups = copies - 1;
        let note = if dups > 0 {
            format!(" ({dups} duplicate{} skipped)", if dups > 1 { "s" } else { "" })
        } else {
            String::new()
        };
        println!("{id} x{copies} -> replied once{note}: {}", short(text));
    }
    for (id, _, expect) in &bad {
        match dead.get(id) {
            Some((kind, error)) => println!("{id} -> dead-lettered, {kind}: {}", short(error)),
            None => bail!("{id} ({expect}) was not dead-lettered"),
        }
    }

    let fingerprints: Vec<String> = published.values().map(|(m, _)| fingerprint(m)).collect();
    let pairs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT fingerprint FROM messages WHERE fingerprint = ANY($1) GROUP BY fingerprint
           HAVING count(*) FILTER (WHERE direction = 'in') = 1 AND count(*) FILTER (WHERE direction = 'out') = 1) f",
    )
    .bind(&fingerprints)
    .fetch_one(&pool)
    .await?;
    let copies: usize = published.values().map(|(_, c)| c).sum();
    println!(
        "\nsummary: burst published {} ({unique} unique, {} duplicate copies, {} bad) -> {} replied, {} duplicates skipped, {} dead-lettered; \
         {pairs} of {unique} fingerprints have exactly one inbound and one reply row; {:.1}s",
        copies + bad.len(),
        copies - unique,
        bad.len(),
        replied.len(),
        copies - replied.len(),
        dead.len(),
        started.elapsed().as_secs_f64(),
    );
    if pairs as usize != unique {
        bail!("{} fingerprints lack exactly one inbound and one reply row", unique - pairs as usize);
    }
    Ok(())
}

fn message(id: &str, customer: &str, text: &str) -> Value {
    json!({
        "message_id": id,
        "tenant_id": TENANT,
        "channel": "whatsapp",
        "customer": { "external_id": customer, "name": "Amina" },
        "text": text,
        "received_at": chrono::Utc::now().to_rfc3339(),
    })
}

/// (message id property, body, what is wrong with it)
fn bad_messages(run_id: &str) -> Vec<(String, Vec<u8>, &'static str)> {
    let mut no_text = message(&format!("demo-{run_id}-bad-2"), "+254700000999", "x");
    no_text.as_object_mut().map(|o| o.remove("text"));
    let mut stranger = message(&format!("demo-{run_id}-bad-3"), "+254700000999", "hello");
    stranger["tenant_id"] = json!(Uuid::new_v4());
    let mut huge = message(&format!("demo-{run_id}-bad-4"), "+254700000999", "hi");
    huge["metadata"] = json!({ "blob": "x".repeat(300 * 1024) });
    vec![
        (format!("demo-{run_id}-bad-1"), b"{\"message_id\": \"oops\", ".to_vec(), "not JSON"),
        (format!("demo-{run_id}-bad-2"), no_text.to_string().into_bytes(), "no text"),
        (format!("demo-{run_id}-bad-3"), stranger.to_string().into_bytes(), "unknown tenant"),
        (format!("demo-{run_id}-bad-4"), huge.to_string().into_bytes(), "oversized"),
    ]
}

async fn seed(pool: &PgPool) -> anyhow::Result<()> {
    let tenant = Uuid::parse_str(TENANT)?;
    sqlx::query(
        "INSERT INTO tenants (id, name, is_active, settings) VALUES ($1, 'Demo Sports Shop', true, '{\"currency\": \"KES\"}')
         ON CONFLICT (id) DO UPDATE SET is_active = true",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    // Idempotent: each item is added only if the shop does not have it yet.
    for (name, category, price, description) in [
        ("Trail Runner X", "running shoes", 4500, "Light trail running shoe with a grippy sole"),
        ("City Sprint", "running shoes", 3900, "Everyday road running shoe"),
        ("Marathon Pro", "running shoes", 8900, "Carbon-plated racing shoe"),
        ("Yoga Mat", "fitness", 1500, "6 mm non-slip mat"),
    ] {
        sqlx::query(
            "INSERT INTO products (tenant_id, name, category, price, currency, description)
             SELECT $1, $2, $3, $4, 'KES', $5
              WHERE NOT EXISTS (SELECT 1 FROM products WHERE tenant_id = $1 AND name = $2)",
        )
        .bind(tenant)
        .bind(name)
        .bind(category)
        .bind(price)
        .bind(description)
        .execute(pool)
        .await?;
    }
    sqlx::query(
        "INSERT INTO services (tenant_id, name, price, currency, duration_minutes, description)
         SELECT $1, 'Gait analysis', 1000, 'KES', 30, 'Find the right shoe for your stride'
          WHERE NOT EXISTS (SELECT 1 FROM services WHERE tenant_id = $1 AND name = 'Gait analysis')",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    for (title, content) in [
        ("Opening hours", "We are open Monday to Saturday, 9am to 7pm."),
        ("Delivery", "We deliver anywhere in Nairobi within 24 hours, free over 5,000 KES."),
        ("Payment", "We accept M-Pesa, cards and cash on delivery."),
    ] {
        sqlx::query(
            "INSERT INTO knowledge_entries (tenant_id, entry_type, title, content)
             SELECT $1, 'faq', $2, $3
              WHERE NOT EXISTS (SELECT 1 FROM knowledge_entries WHERE tenant_id = $1 AND title = $2)",
        )
        .bind(tenant)
        .bind(title)
        .bind(content)
        .execute(pool)
        .await?;
    }
    // Each demo run starts a fresh conversation (an earlier run may have left one in handoff).
    sqlx::query("UPDATE conversations SET status = 'closed' WHERE tenant_id = $1 AND status <> 'closed'")
        .bind(tenant)
        .execute(pool)
        .await?;
    Ok(())
}

async fn listen_for_replies(channel: &Channel, config: &Config) -> anyhow::Result<Consumer> {
    let queue =
        channel.queue_declare(REPLIES.into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
    let _ = queue;
    channel.queue_purge(REPLIES.into(), Default::default()).await?;
    channel
        .queue_bind(
            REPLIES.into(),
            config.amqp.outbound_exchange.as_str().into(),
            format!("*.{TENANT}").into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(channel
        .basic_consume(
            REPLIES.into(),
            "demo".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?)
}

async fn next_reply(replies: &mut Consumer) -> anyhow::Result<Value> {
    let delivery = tokio::time::timeout(WAIT, replies.next())
        .await
        .context("no reply within 60s: is the worker running?")?
        .context("reply consumer closed")??;
    Ok(serde_json::from_slice(&delivery.data)?)
}

async fn publish(channel: &Channel, config: &Config, body: &[u8], message_id: &Value) -> anyhow::Result<()> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.as_str().unwrap_or("demo").into());
    // A gateway publishes with its message's own `<channel>.<tenant_id>` (CONTRACT §2).
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let routing_key = match (parsed["channel"].as_str(), parsed["tenant_id"].as_str()) {
        (Some(channel), Some(tenant)) => format!("{channel}.{tenant}"),
        _ => format!("whatsapp.{TENANT}"),
    };
    channel
        .basic_publish(
            config.amqp.inbound_exchange.as_str().into(),
            routing_key.as_str().into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?
        .await?;
    Ok(())
}

/// Takes this run's dead letters (by message id) from the dead queue, leaving any
/// others where they were. Returns message id -> (x-error-kind, x-error).
async fn take_dead_letters(
    channel: &Channel,
    config: &Config,
    expected: usize,
) -> anyhow::Result<HashMap<String, (String, String)>> {
    let mut found = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while found.len() < expected && Instant::now() < deadline {
        let mut others = Vec::new();
        while let Some(m) =
            channel.basic_get(config.amqp.dead_queue.as_str().into(), BasicGetOptions::default()).await?
        {
            let id = m
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            if id.starts_with("demo-") {
                found.insert(id, (header(&m.delivery, "x-error-kind"), header(&m.delivery, "x-error")));
                m.delivery.ack(BasicAckOptions::default()).await?;
            } else {
                others.push(m.delivery);
            }
        }
        for d in others {
            d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
        }
        if found.len() < expected {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(found)
}

fn header(d: &lapin::message::Delivery, name: &str) -> String {
    match d.properties.headers().as_ref().and_then(|h| h.inner().get(name)) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => String::new(),
    }
}

fn fingerprint(m: &Value) -> String {
    decode(m.to_string().as_bytes()).map(|i| i.fingerprint().to_string()).unwrap_or_default()
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 90 {
        format!("{}…", line.chars().take(90).collect::<String>())
    } else {
        line.to_owned()
    }
}
