use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;
use crate::decode::Inbound;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: Uuid,
    /// `open`, `handoff` or `closed`.
    pub status: String,
}

/// The conversation a message belongs to: the one it names (if it is the
/// tenant's), else the customer's current one on that channel, opened if needed.
/// `None` only when the message names a conversation the tenant does not have.
pub async fn current_conversation(pool: &PgPool, msg: &Inbound) -> Result<Option<Conversation>, StoreError> {
    if let Some(id) = msg.conversation_id {
        return named(pool, id, msg.tenant_id).await;
    }
    // Find, else open; a concurrent opener wins the partial unique index, and the
    // second find (a new statement, so a new snapshot) sees its row.
    for _ in 0..3 {
        if let Some(found) = find_current(pool, msg).await? {
            return Ok(Some(found));
        }
        if let Some(opened) = open(pool, msg).await? {
            return Ok(Some(opened));
        }
    }
    Err(StoreError::Db(sqlx::Error::Protocol(
        "could not find or open the customer's conversation after 3 tries".into(),
    )))
}

async fn named(pool: &PgPool, id: Uuid, tenant_id: Uuid) -> Result<Option<Conversation>, StoreError> {
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM conversations WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id, status)| Conversation { id, status }))
}

async fn find_current(pool: &PgPool, msg: &Inbound) -> Result<Option<Conversation>, StoreError> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM conversations
          WHERE tenant_id = $1 AND channel = $2 AND customer_external_id = $3 AND status <> 'closed'",
    )
    .bind(msg.tenant_id)
    .bind(&msg.channel)
    .bind(&msg.customer_external_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, status)| Conversation { id, status }))
}

async fn open(pool: &PgPool, msg: &Inbound) -> Result<Option<Conversation>, StoreError> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "INSERT INTO conversations (tenant_id, channel, customer_external_id, customer_name)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, channel, customer_external_id) WHERE status <> 'closed' DO NOTHING
         RETURNING id, status",
    )
    .bind(msg.tenant_id)
    .bind(&msg.channel)
    .bind(&msg.customer_external_id)
    .bind(&msg.customer_name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, status)| Conversation { id, status }))
}
