//! Burst coalescing in PostgreSQL (CONTRACT §3): a coalesced message keeps its
//! own inbound row, marked as waiting for its burst's reply (`burst_reply = ''`,
//! migration 0008); the reply to the burst's last message marks them answered
//! by it in its own transaction and lists them in `answers`. PostgreSQL, not
//! Redis, is what says which messages a reply answers, so a replay publishes
//! the same list and `worker state` can name the reply of a coalesced message.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::messages::open_conversation;
use super::{Db, StoreError, Tx};
use crate::model::{Fingerprint, Inbound, Usage};

/// A coalesced message, to be stored without a reply of its own.
#[derive(Debug, Clone)]
pub struct Coalesced {
    pub inbound: Inbound,
    pub fingerprint: Fingerprint,
    /// `None`: open the customer's conversation in the same transaction.
    pub conversation_id: Option<Uuid>,
    pub stored_at: DateTime<Utc>,
    /// The lease's fencing token (as for an exchange).
    pub fence: i64,
    /// A generation that was finished for it and was discarded when a newer
    /// message joined the burst: its cost, recorded as its interaction.
    pub discarded: Option<Discarded>,
}

/// A finished generation thrown away because the burst grew.
#[derive(Debug, Clone)]
pub struct Discarded {
    pub responder: String,
    pub usage: Usage,
    pub confidence: f32,
    pub handoff: bool,
    pub latency_ms: i32,
}

/// An earlier message of the burst being answered, as the responder is shown it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BurstMessage {
    pub message_id: String,
    pub text: String,
    pub received_at: Option<DateTime<Utc>>,
    pub attachments: Option<Value>,
    pub metadata: Option<Value>,
}

impl BurstMessage {
    /// The message being answered, as the last of its burst.
    pub fn of(inbound: &Inbound) -> Self {
        Self {
            message_id: inbound.message_id.clone(),
            text: inbound.text.clone(),
            received_at: Some(inbound.received_at),
            attachments: Some(inbound.attachments.clone()),
            metadata: Some(inbound.metadata.clone()),
        }
    }
}

/// What became of a message to be stored as coalesced.
#[derive(Debug)]
pub enum CoalescedRow {
    /// Stored (or found stored by an earlier attempt), waiting for its burst's reply.
    Stored,
    /// An earlier attempt of it committed a reply of its own (a fault came
    /// between the commit and the ack): that reply answers it, and is to be
    /// published again; nothing was written.
    Replied(super::Recorded),
}

/// Stores a coalesced message's inbound row (once: a copy finds it there),
/// unless a later lease of it registered a higher fencing token, or it has a
/// reply of its own already.
pub async fn record_coalesced(db: &Db, c: &Coalesced) -> Result<CoalescedRow, StoreError> {
    // The usual case in one round trip; a discarded generation to record, or
    // a conversation opened by another transaction while this one ran, takes
    // the transaction below.
    if c.discarded.is_none() && c.conversation_id.is_none() {
        let (fenced, replied, stored): (bool, bool, bool) = sqlx::query_as(ONE_STATEMENT)
            .bind(c.inbound.tenant_id)
            .bind(&c.inbound.message_id)
            .bind(c.fingerprint.as_str())
            .bind(&c.inbound.text)
            .bind(c.stored_at)
            .bind(c.inbound.received_at)
            .bind(&c.inbound.attachments)
            .bind(&c.inbound.metadata)
            .bind(c.fence)
            .bind(&c.inbound.channel)
            .bind(&c.inbound.customer_external_id)
            .bind(&c.inbound.customer_name)
            .fetch_one(db)
            .await?;
        if fenced {
            return Err(StoreError::Fenced(c.fingerprint.to_string()));
        }
        if replied {
            return Ok(CoalescedRow::Replied(super::messages::existing(db, &c.fingerprint).await?));
        }
        if stored {
            return Ok(CoalescedRow::Stored);
        }
    }
    let mut tx = db.begin().await?;
    let conversation_id = match c.conversation_id {
        Some(id) => id,
        None => open_conversation(&mut tx, &c.inbound).await?,
    };
    let (fenced, replied): (bool, bool) = sqlx::query_as(
        "WITH fenced AS (SELECT EXISTS (SELECT 1 FROM fences WHERE fingerprint = $3 AND token > $9) AS yes),
         replied AS (SELECT EXISTS (SELECT 1 FROM messages WHERE fingerprint = $3 AND direction = 'out') AS yes),
         m AS (
            INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at,
                                  received_at, attachments, metadata, burst_reply)
            SELECT $1, 'in', $2, $3, $4, $5, $6, $7, $8, ''
             WHERE NOT (SELECT yes FROM fenced) AND NOT (SELECT yes FROM replied)
            ON CONFLICT (fingerprint, direction) DO NOTHING
            RETURNING 1)
         SELECT (SELECT yes FROM fenced), (SELECT yes FROM replied) FROM (SELECT count(*) FROM m) AS inserted",
    )
    .bind(conversation_id)
    .bind(&c.inbound.message_id)
    .bind(c.fingerprint.as_str())
    .bind(&c.inbound.text)
    .bind(c.stored_at)
    .bind(c.inbound.received_at)
    .bind(&c.inbound.attachments)
    .bind(&c.inbound.metadata)
    .bind(c.fence)
    .fetch_one(&mut tx)
    .await?;
    if fenced {
        tx.rollback().await?;
        return Err(StoreError::Fenced(c.fingerprint.to_string()));
    }
    if replied {
        tx.rollback().await?;
        return Ok(CoalescedRow::Replied(super::messages::existing(db, &c.fingerprint).await?));
    }
    if let Some(d) = &c.discarded {
        sqlx::query(
            "INSERT INTO agent_interactions (tenant_id, conversation_id, fingerprint, responder, model, confidence,
                                             handoff, prompt_tokens, completion_tokens, cost, latency_ms, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
             ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(c.inbound.tenant_id)
        .bind(conversation_id)
        .bind(c.fingerprint.as_str())
        .bind(format!("{} (discarded: the burst grew)", d.responder))
        .bind(&d.usage.model)
        .bind(d.confidence)
        .bind(d.handoff)
        .bind(d.usage.prompt_tokens)
        .bind(d.usage.completion_tokens)
        .bind(d.usage.cost)
        .bind(d.latency_ms)
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(CoalescedRow::Stored)
}

/// [`record_coalesced`] as one statement: the customer's open conversation
/// (opened if need be), then the row, unless fenced off or replied to.
/// `stored` is false when the conversation was opened by a transaction that
/// committed while this statement ran (its snapshot cannot see it).
const ONE_STATEMENT: &str = "WITH opened AS (
    INSERT INTO conversations (tenant_id, channel, customer_external_id, customer_name)
    VALUES ($1, $10, $11, $12)
    ON CONFLICT (tenant_id, channel, customer_external_id) WHERE status <> 'closed' DO NOTHING
    RETURNING id),
conversation AS (
    SELECT id FROM opened
    UNION ALL
    SELECT id FROM conversations
     WHERE tenant_id = $1 AND channel = $10 AND customer_external_id = $11 AND status <> 'closed'
    LIMIT 1),
fenced AS (SELECT EXISTS (SELECT 1 FROM fences WHERE fingerprint = $3 AND token > $9) AS yes),
replied AS (SELECT EXISTS (SELECT 1 FROM messages WHERE fingerprint = $3 AND direction = 'out') AS yes),
m AS (
    INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at,
                          received_at, attachments, metadata, burst_reply)
    SELECT c.id, 'in', $2, $3, $4, $5, $6, $7, $8, ''
      FROM conversation c
     WHERE NOT (SELECT yes FROM fenced) AND NOT (SELECT yes FROM replied)
    ON CONFLICT (fingerprint, direction) DO NOTHING
    RETURNING 1)
SELECT (SELECT yes FROM fenced), (SELECT yes FROM replied), EXISTS (SELECT 1 FROM conversation)
  FROM (SELECT count(*) FROM m) AS inserted";

/// In the transaction that commits `reply_to`'s reply: the conversation's
/// coalesced messages still waiting are answered by it; their fingerprints,
/// oldest first.
pub(super) async fn answer_pending(
    tx: &mut Tx,
    conversation_id: Uuid,
    reply_to: &Fingerprint,
) -> Result<Vec<String>, StoreError> {
    let mut answered: Vec<(String, DateTime<Utc>, Uuid)> = sqlx::query_as(
        "UPDATE messages SET burst_reply = $2
          WHERE conversation_id = $1 AND direction = 'in' AND burst_reply = '' AND fingerprint <> $2
          RETURNING fingerprint, created_at, id",
    )
    .bind(conversation_id)
    .bind(reply_to.as_str())
    .fetch_all(&mut *tx)
    .await?;
    answered.sort_by_key(|(_, at, id)| (*at, *id));
    Ok(answered.into_iter().map(|(fp, _, _)| fp).collect())
}

/// The conversation's coalesced messages waiting for their burst's reply,
/// oldest first: the earlier part of the burst being answered by `answering`'s
/// reply (not itself: a message coalesced once whose burst's answer never came
/// is retried and answers it).
pub async fn pending(
    db: &Db,
    conversation_id: Uuid,
    answering: &Fingerprint,
) -> Result<Vec<BurstMessage>, StoreError> {
    type Row = (String, String, Option<DateTime<Utc>>, Option<Value>, Option<Value>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT provider_message_id, text, received_at, attachments, metadata FROM messages
          WHERE conversation_id = $1 AND direction = 'in' AND burst_reply = '' AND fingerprint <> $2
          ORDER BY created_at, id",
    )
    .bind(conversation_id)
    .bind(answering.as_str())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(message_id, text, received_at, attachments, metadata)| BurstMessage {
            message_id,
            text,
            received_at,
            attachments,
            metadata,
        })
        .collect())
}

/// For a coalesced message: `Some(None)` while its burst's reply is not yet
/// committed, `Some(Some(fp))` once the reply to `fp` answered it; `None` for
/// a message that is not a coalesced one (or has no row).
pub async fn answered_by(db: &Db, fp: &Fingerprint) -> Result<Option<Option<String>>, StoreError> {
    let found: Option<Option<String>> =
        sqlx::query_scalar("SELECT burst_reply FROM messages WHERE fingerprint = $1 AND direction = 'in'")
            .bind(fp.as_str())
            .fetch_optional(db)
            .await?;
    Ok(found.flatten().map(|reply| (!reply.is_empty()).then_some(reply)))
}
