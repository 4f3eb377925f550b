//! `worker history`: a customer's conversation, oldest first, one page at a time.
//!
//! Pages are numbered from 1. A page is read from the (conversation_id,
//! created_at, id) index, so only the index entries before the page are
//! skipped — cheap even at 10,000 messages; the total is one count.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Db, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryMessage {
    pub id: Uuid,
    pub direction: String,
    pub text: String,
    pub provider_message_id: String,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

/// CONTRACT §6's `worker history --json` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPage {
    pub conversation_id: Uuid,
    pub page: u32,
    pub page_size: u32,
    pub total: i64,
    pub pages: i64,
    pub has_next: bool,
    pub has_previous: bool,
    pub messages: Vec<HistoryMessage>,
}

/// The customer's current conversation on the channel, else their latest one.
pub async fn customer_conversation(
    db: &Db,
    tenant_id: Uuid,
    channel: &str,
    customer: &str,
) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM conversations WHERE tenant_id = $1 AND channel = $2 AND customer_external_id = $3
          ORDER BY (status <> 'closed') DESC, updated_at DESC LIMIT 1",
    )
    .bind(tenant_id)
    .bind(channel)
    .bind(customer)
    .fetch_optional(db)
    .await?)
}

type MessageRow = (Uuid, String, String, String, String, DateTime<Utc>);

/// Page `page` (from 1) of `page_size` messages. Any `u32`s are safe: a page
/// size of 0 counts as 1, and a page past the end is empty without a query (its
/// OFFSET, page × page size, can exceed what PostgreSQL's bigint holds).
pub async fn history_page(
    db: &Db,
    conversation_id: Uuid,
    page: u32,
    page_size: u32,
) -> Result<HistoryPage, StoreError> {
    let (page, page_size) = (page.max(1), page_size.max(1));
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE conversation_id = $1")
        .bind(conversation_id)
        .fetch_one(db)
        .await?;
    let offset = u64::from(page - 1).checked_mul(u64::from(page_size)).and_then(|o| i64::try_from(o).ok());
    let rows: Vec<MessageRow> = match offset {
        Some(offset) if offset < total => {
            sqlx::query_as(
                "SELECT id, direction, text, provider_message_id, fingerprint, created_at FROM messages
                  WHERE conversation_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3",
            )
            .bind(conversation_id)
            .bind(i64::from(page_size))
            .bind(offset)
            .fetch_all(db)
            .await?
        }
        _ => Vec::new(),
    };
    let pages = total.saturating_add(i64::from(page_size) - 1) / i64::from(page_size);
    Ok(HistoryPage {
        conversation_id,
        page,
        page_size,
        total,
        pages,
        has_next: i64::from(page) < pages,
        has_previous: page > 1 && total > 0,
        messages: rows
            .into_iter()
            .map(|(id, direction, text, provider_message_id, fingerprint, created_at)| HistoryMessage {
                id,
                direction,
                text,
                provider_message_id,
                fingerprint,
                created_at,
            })
            .collect(),
    })
}
