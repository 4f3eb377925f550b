//! The workload's data, written set-based (one statement per table, with
//! generate_series) so seeding takes seconds: 10 tenants, each with 200 products,
//! 50 services and 20 FAQ entries, and 2,000 open conversations (200 a tenant)
//! with 20 messages of history each, alternating in and out.
//!
//! Everything is derived from row numbers, so two runs seed the same catalog
//! (tenant ids included); only generated row ids differ.
//!
//! Every statement is scoped to the bench's own tenants (`bench_tenants`): on a
//! grown database (`make bench GROWN=N`, scripts/grow.sh) other tenants' years of
//! history are there already, and so are the bench tenants' rows with closed
//! conversations of the same customers. The bench seeds and measures the same
//! workload on it as on an empty database.

use anyhow::Context as _;
use sqlx::PgPool;
use uuid::Uuid;

use super::vocab;

pub const TENANTS: i32 = 10;
pub const PRODUCTS_PER_TENANT: i32 = 200;
pub const CONVERSATIONS: i32 = 2_000;
pub const HISTORY: i32 = 20;

/// A subquery of the bench tenants' ids (scripts/grow.sql derives them the same way).
fn bench_tenants() -> String {
    format!("SELECT md5('chat-worker-bench-tenant-' || t)::uuid FROM generate_series(1, {TENANTS}) t")
}

/// A customer with an open conversation: who the load's messages come from.
#[derive(Debug, Clone)]
pub struct Customer {
    pub tenant_id: Uuid,
    pub channel: String,
    pub external_id: String,
    pub name: String,
}

pub async fn seed(pool: &PgPool) -> anyhow::Result<Vec<Customer>> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO tenants (id, name)
         SELECT md5('chat-worker-bench-tenant-' || t)::uuid, 'Bench Shop ' || t FROM generate_series(1, $1) t
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(TENANTS)
    .execute(&mut *tx)
    .await
    .context("tenants")?;

    let (nouns, noun_categories): (Vec<&str>, Vec<&str>) = vocab::nouns().into_iter().unzip();
    sqlx::query(&with_tenants(
        "INSERT INTO products (tenant_id, name, description, category, price, currency)
         SELECT tn.id,
                initcap($2[1 + (n * 7 + tn.k) % cardinality($2)] || ' ' || $3[1 + n % cardinality($3)]),
                'A ' || $5[1 + (n + tn.k) % cardinality($5)] || ' ' || $3[1 + n % cardinality($3)]
                    || ' made for ' || $6[1 + (n * 3 + tn.k) % cardinality($6)] || '.',
                $4[1 + n % cardinality($3)],
                300 + ((n * 37 + tn.k * 11) % 120) * 100,
                'KES'
           FROM tn CROSS JOIN generate_series(0, $1 - 1) n",
    ))
    .bind(PRODUCTS_PER_TENANT)
    .bind(vocab::owned(vocab::ADJECTIVES))
    .bind(vocab::owned(&nouns))
    .bind(vocab::owned(&noun_categories))
    .bind(vocab::owned(vocab::MATERIALS))
    .bind(vocab::owned(vocab::USES))
    .execute(&mut *tx)
    .await
    .context("products")?;

    // Every service at every level: 25 x 2 = 50 a tenant.
    sqlx::query(&with_tenants(
        "INSERT INTO services (tenant_id, name, description, price, currency, duration_minutes)
         SELECT tn.id,
                initcap($2[1 + n / cardinality($1)] || ' ' || $1[1 + n % cardinality($1)]),
                'Our ' || $2[1 + n / cardinality($1)] || ' ' || $1[1 + n % cardinality($1)]
                    || ', done by our own team in store.',
                500 + ((n * 53 + tn.k * 17) % 60) * 50,
                'KES',
                15 * (1 + (n + tn.k) % 8)
           FROM tn CROSS JOIN generate_series(0, cardinality($1) * cardinality($2) - 1) n",
    ))
    .bind(vocab::owned(vocab::SERVICES))
    .bind(vocab::owned(vocab::SERVICE_LEVELS))
    .execute(&mut *tx)
    .await
    .context("services")?;

    let titles: Vec<&str> = vocab::FAQ.iter().map(|f| f.0).collect();
    let contents: Vec<&str> = vocab::FAQ.iter().map(|f| f.1).collect();
    let questions: Vec<&str> = vocab::FAQ.iter().map(|f| f.2).collect();
    sqlx::query(&with_tenants(
        "INSERT INTO knowledge_entries (tenant_id, entry_type, title, content)
         SELECT tn.id, 'faq', $1[n], $2[n] FROM tn CROSS JOIN generate_series(1, cardinality($1)) n",
    ))
    .bind(vocab::owned(&titles))
    .bind(vocab::owned(&contents))
    .execute(&mut *tx)
    .await
    .context("knowledge entries")?;

    sqlx::query(&with_tenants(
        "INSERT INTO conversations (tenant_id, channel, customer_external_id, customer_name, created_at, updated_at)
         SELECT tn.id, $2[1 + c % cardinality($2)], '+2547' || lpad((tn.k * 10000 + c)::text, 8, '0'),
                $3[1 + c % cardinality($3)], now() - interval '2 days', now() - interval '1 day'
           FROM tn CROSS JOIN generate_series(0, $1 / (SELECT count(*) FROM tn) - 1) c",
    ))
    .bind(CONVERSATIONS)
    .bind(vocab::owned(vocab::CHANNELS))
    .bind(vocab::owned(vocab::CUSTOMER_NAMES))
    .execute(&mut *tx)
    .await
    .context("conversations")?;

    // Pairs of messages (an FAQ question, then its answer) sharing a fingerprint,
    // as the worker writes them: the inbound row carries the provider's id, the
    // reply `reply:<fingerprint>`. Only the conversations just opened: a grown
    // database's closed ones have their history.
    let bench = bench_tenants();
    sqlx::query(&format!(
        "INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at)
         SELECT c.id,
                CASE WHEN m % 2 = 1 THEN 'in' ELSE 'out' END,
                CASE WHEN m % 2 = 1 THEN 'seed-' || c.id || '-' || m ELSE 'reply:' || f.fp END,
                f.fp,
                CASE WHEN m % 2 = 1 THEN $2[f.topic] ELSE $3[f.topic] END,
                c.created_at + m * interval '1 minute'
           FROM conversations c
          CROSS JOIN generate_series(1, $1) m
          CROSS JOIN LATERAL (
                SELECT encode(sha256(convert_to(c.id::text || ':' || (m + 1) / 2, 'UTF8')), 'hex') AS fp,
                       1 + (abs(hashtext(c.id::text)) + (m + 1) / 2) % cardinality($2) AS topic) f
          WHERE c.tenant_id IN ({bench}) AND c.status <> 'closed'",
    ))
    .bind(HISTORY)
    .bind(vocab::owned(&questions))
    .bind(vocab::owned(&contents))
    .execute(&mut *tx)
    .await
    .context("message history")?;
    tx.commit().await?;
    // Fresh statistics, as a long-lived database would have: the worker's
    // queries are planned on these tables' real sizes.
    sqlx::query("ANALYZE").execute(pool).await.context("analyze")?;

    let rows: Vec<(Uuid, String, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT tenant_id, channel, customer_external_id, customer_name FROM conversations
          WHERE tenant_id IN ({bench}) AND status <> 'closed'
          ORDER BY customer_external_id",
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant_id, channel, external_id, name)| Customer {
            tenant_id,
            channel,
            external_id,
            name: name.unwrap_or_default(),
        })
        .collect())
}

/// Prefixes `statement` with `tn`: the bench tenants numbered 1.. (`k`), which the
/// row formulas use to make one tenant's catalog differ from the next.
fn with_tenants(statement: &str) -> String {
    let bench = bench_tenants();
    format!(
        "WITH tn AS (SELECT id, row_number() OVER (ORDER BY name) AS k FROM tenants
                      WHERE id IN ({bench})) {statement}"
    )
}

/// Rows the seeding wrote to `messages`, per direction: what the run's own
/// rows are counted against.
const HISTORY_ROWS_PER_DIRECTION: i64 = (CONVERSATIONS as i64) * (HISTORY as i64) / 2;

/// Rows the run added to `messages` (in, out), beyond the seeded history: those
/// of the bench tenants' current conversations (not a grown database's history).
pub async fn stored_rows(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    let bench = bench_tenants();
    let (inbound, outbound): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE m.direction = 'in'), count(*) FILTER (WHERE m.direction = 'out')
           FROM messages m JOIN conversations c ON c.id = m.conversation_id
          WHERE c.tenant_id IN ({bench}) AND c.status <> 'closed'",
    ))
    .fetch_one(pool)
    .await?;
    Ok((inbound - HISTORY_ROWS_PER_DIRECTION, outbound - HISTORY_ROWS_PER_DIRECTION))
}

/// Replies that handed their conversation off, in the bench tenants' current
/// conversations (the seeded history has none).
pub async fn handoff_replies(pool: &PgPool) -> anyhow::Result<i64> {
    let bench = bench_tenants();
    Ok(sqlx::query_scalar(&format!(
        "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
          WHERE c.tenant_id IN ({bench}) AND c.status <> 'closed' AND m.direction = 'out' AND m.handoff",
    ))
    .fetch_one(pool)
    .await?)
}
