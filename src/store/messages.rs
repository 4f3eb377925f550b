use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;
use crate::decode::Inbound;
use crate::fingerprint::Fingerprint;
use crate::respond::Answer;

/// One inbound message and the reply to it, to be committed together.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub inbound: &'a Inbound,
    pub fingerprint: &'a Fingerprint,
    pub conversation_id: Uuid,
    pub stored_at: DateTime<Utc>,
    pub answer: &'a Answer,
    pub replied_at: DateTime<Utc>,
    pub responder: &'a str,
}

/// A reply as committed: what is needed to publish it (again).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply {
    pub conversation_id: Uuid,
    pub text: String,
    pub handoff: bool,
    pub confidence: f32,
    pub references: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// This call committed both rows.
    New,
    /// The fingerprint was committed before (by an earlier attempt or another worker).
    Existing(StoredReply),
}

/// Commits the inbound row and the reply row in one transaction, or neither.
/// The unique index on (fingerprint, direction) makes this the point where at most
/// one reply per fingerprint is decided, whatever Redis believed.
pub async fn record_exchange(pool: &PgPool, ex: &Exchange<'_>) -> Result<Recorded, StoreError> {
    let mut tx = pool.begin().await?;
    let inserted: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at,
                               received_at, attachments, metadata, handoff, confidence, reply_references, responder)
         VALUES ($1, 'in', $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, NULL),
                ($1, 'out', $9, $3, $10, $11, NULL, NULL, NULL, $12, $13, $14, $15)
         ON CONFLICT (fingerprint, direction) DO NOTHING
         RETURNING direction",
    )
    .bind(ex.conversation_id)
    .bind(&ex.inbound.message_id)
    .bind(ex.fingerprint.as_str())
    .bind(&ex.inbound.text)
    .bind(ex.stored_at)
    .bind(ex.inbound.received_at)
    .bind(&ex.inbound.attachments)
    .bind(&ex.inbound.metadata)
    .bind(ex.fingerprint.reply_id())
    .bind(&ex.answer.text)
    .bind(ex.replied_at)
    .bind(ex.answer.handoff)
    .bind(ex.answer.confidence)
    .bind(&ex.answer.references)
    .bind(ex.responder)
    .fetch_all(&mut *tx)
    .await?;
    if inserted.len() != 2 {
        tx.rollback().await?;
        return match stored_reply(pool, ex.fingerprint).await? {
            Some(reply) => Ok(Recorded::Existing(reply)),
            None => Err(StoreError::Db(sqlx::Error::Protocol(format!(
                "fingerprint {} has an inbound row but no reply row",
                ex.fingerprint
            )))),
        };
    }
    let status = if ex.answer.handoff { Some("handoff") } else { None };
    sqlx::query("UPDATE conversations SET updated_at = $2, status = COALESCE($3, status) WHERE id = $1")
        .bind(ex.conversation_id)
        .bind(ex.replied_at)
        .bind(status)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Recorded::New)
}

type StoredReplyRow = (Uuid, String, Option<bool>, Option<f32>, Option<Value>, DateTime<Utc>);

pub async fn stored_reply(pool: &PgPool, fp: &Fingerprint) -> Result<Option<StoredReply>, StoreError> {
    let row: Option<StoredReplyRow> = sqlx::query_as(
        "SELECT conversation_id, text, handoff, confidence, reply_references, created_at
           FROM messages WHERE fingerprint = $1 AND direction = 'out'",
    )
    .bind(fp.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(conversation_id, text, handoff, confidence, references, created_at)| StoredReply {
        conversation_id,
        text,
        handoff: handoff.unwrap_or(false),
        confidence: confidence.unwrap_or(0.0),
        references: references.unwrap_or_else(|| Value::Array(Vec::new())),
        created_at,
    }))
}
