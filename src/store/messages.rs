//! Stage "persist": one transaction per answered message.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Executor, Postgres};
use uuid::Uuid;

use super::{Db, StoreError};
use crate::model::Answer;
use crate::model::Fingerprint;
use crate::model::Inbound;

/// One inbound message and the reply to it, to be committed together.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub inbound: Inbound,
    pub fingerprint: Fingerprint,
    /// `None`: open the customer's conversation in the same transaction.
    pub conversation_id: Option<Uuid>,
    pub stored_at: DateTime<Utc>,
    pub answer: Answer,
    pub replied_at: DateTime<Utc>,
    pub responder: String,
    pub latency_ms: i32,
    /// The lock's fencing token: the write is refused if a later holder registered a higher one.
    pub fence: i64,
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
    /// The fingerprints this reply answers, oldest first, its own last
    /// (CONTRACT §4): its own alone, or a coalesced burst's.
    pub answers: Vec<String>,
}

impl StoredReply {
    /// The reply `ex` commits, in `conversation_id`, answering `coalesced`
    /// (oldest first) besides its own message.
    fn of(ex: &Exchange, conversation_id: Uuid, coalesced: Vec<String>) -> Self {
        let mut answers = coalesced;
        answers.push(ex.fingerprint.to_string());
        Self {
            conversation_id,
            text: ex.answer.text.clone(),
            handoff: ex.answer.handoff,
            confidence: ex.answer.confidence,
            references: references_json(&ex.answer),
            created_at: ex.replied_at,
            answers,
        }
    }
}

/// What recording an exchange left in the table: the reply to publish, either way.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// This call committed the rows.
    New(StoredReply),
    /// The fingerprint was committed before (by an earlier attempt or another
    /// worker): its reply as stored, to be published again.
    Existing(StoredReply),
}

impl Recorded {
    /// `ex`'s rows were committed by this call, in `conversation_id`.
    pub(super) fn new(ex: &Exchange, conversation_id: Uuid) -> Self {
        Recorded::New(StoredReply::of(ex, conversation_id, Vec::new()))
    }

    pub fn reply(&self) -> &StoredReply {
        match self {
            Recorded::New(reply) | Recorded::Existing(reply) => reply,
        }
    }

    pub fn replayed(&self) -> bool {
        matches!(self, Recorded::Existing(_))
    }
}

/// Commits, in one transaction: the conversation if it is new, the inbound row,
/// the reply row, the agent interaction, and the conversation's status — or
/// nothing. The unique index on (fingerprint, direction) makes this the point
/// where at most one reply per fingerprint is decided, whatever Redis believed.
pub async fn record_exchange(db: &Db, ex: &Exchange) -> Result<Recorded, StoreError> {
    record(db, ex, false).await
}

/// [`record_exchange`] of the reply to a burst's last message: in the same
/// transaction, the conversation's coalesced messages still waiting for their
/// burst's reply are marked answered by it, and listed in its `answers`.
pub async fn record_burst_reply(db: &Db, ex: &Exchange) -> Result<Recorded, StoreError> {
    record(db, ex, true).await
}

async fn record(db: &Db, ex: &Exchange, burst: bool) -> Result<Recorded, StoreError> {
    let mut tx = db.begin().await?;
    let conversation_id = match ex.conversation_id {
        Some(id) => id,
        None => open_conversation(&mut tx, &ex.inbound).await?,
    };
    let references = references_json(&ex.answer);
    let list_size = list_size(&ex.answer);
    let usage = &ex.answer.usage;
    let (inserted, fenced): (i64, bool) = sqlx::query_as(
        "WITH fenced AS (SELECT EXISTS (SELECT 1 FROM fences WHERE fingerprint = $3 AND token > $23) AS yes),
         m AS (
            INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at,
                                  received_at, attachments, metadata, handoff, confidence, reply_references,
                                  reply_list_size, responder)
            SELECT v.* FROM (VALUES
                   ($1::uuid, 'in', $2, $3, $4, $5::timestamptz, $6::timestamptz, $7::jsonb, $8::jsonb,
                    NULL::boolean, NULL::real, NULL::jsonb, NULL::smallint, NULL::text),
                   ($1, 'out', $9, $3, $10, $11, NULL, NULL, NULL, $12, $13, $14, $15, $16)) v
             WHERE NOT (SELECT yes FROM fenced)
            ON CONFLICT (fingerprint, direction) DO NOTHING
            RETURNING 1),
         own AS (
            -- its inbound row, stored when it was coalesced into a burst whose
            -- answer never came (a fault between storing and finishing): the
            -- message is answered now by its own reply, which takes the row over
            UPDATE messages SET burst_reply = NULL
             WHERE fingerprint = $3 AND direction = 'in' AND burst_reply = '' AND NOT (SELECT yes FROM fenced)
            RETURNING 1),
         stored AS (SELECT (SELECT count(*) FROM m) + (SELECT count(*) FROM own) AS rows),
         i AS (
            INSERT INTO agent_interactions (tenant_id, conversation_id, fingerprint, responder, model, confidence,
                                            handoff, prompt_tokens, completion_tokens, cost, latency_ms, created_at)
            SELECT $17, $1, $3, $16, $18, $13, $12, $19, $20, $21, $22, $11
             WHERE (SELECT rows FROM stored) = 2
            ON CONFLICT (fingerprint) DO NOTHING),
         c AS (
            UPDATE conversations SET updated_at = $11, status = CASE WHEN $12 THEN 'handoff' ELSE status END
             WHERE id = $1 AND (SELECT rows FROM stored) = 2)
         SELECT (SELECT rows FROM stored), (SELECT yes FROM fenced)",
    )
    .bind(conversation_id)
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
    .bind(&references)
    .bind(list_size)
    .bind(&ex.responder)
    .bind(ex.inbound.tenant_id)
    .bind(&usage.model)
    .bind(usage.prompt_tokens)
    .bind(usage.completion_tokens)
    .bind(usage.cost)
    .bind(ex.latency_ms)
    .bind(ex.fence)
    .fetch_one(&mut tx)
    .await?;
    if fenced {
        tx.rollback().await?;
        return Err(StoreError::Fenced(ex.fingerprint.to_string()));
    }
    if inserted != 2 {
        tx.rollback().await?;
        return existing(db, &ex.fingerprint).await;
    }
    let coalesced = if burst {
        super::bursts::answer_pending(&mut tx, conversation_id, &ex.fingerprint).await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    Ok(Recorded::New(StoredReply::of(ex, conversation_id, coalesced)))
}

/// The reply's references as stored (`reply_references`).
pub(super) fn references_json(answer: &Answer) -> Value {
    serde_json::to_value(&answer.references).unwrap_or_else(|_| Value::Array(Vec::new()))
}

/// How many items the reply listed (`reply_list_size`), so the latest list is found by index.
pub(super) fn list_size(answer: &Answer) -> i16 {
    i16::try_from(answer.references.len()).unwrap_or(i16::MAX)
}

/// The reply committed earlier for a fingerprint whose rows were already there.
pub(super) async fn existing(db: &Db, fp: &Fingerprint) -> Result<Recorded, StoreError> {
    match stored_reply(db, fp).await? {
        Some(reply) => Ok(Recorded::Existing(reply)),
        None if super::bursts::answered_by(db, fp).await?.is_some() => {
            Err(StoreError::Coalesced(fp.to_string()))
        }
        None => {
            Err(StoreError::Inconsistent(format!("fingerprint {fp} has an inbound row but no reply row")))
        }
    }
}

/// Registers a takeover's fencing token before its work starts: from then on, the
/// holder it took over from cannot commit. Returns `false` if an even later holder
/// registered first (this one is then stale too).
pub async fn register_fence(db: &Db, fp: &Fingerprint, token: i64) -> Result<bool, StoreError> {
    let registered: Option<i64> = sqlx::query_scalar(
        "INSERT INTO fences AS f (fingerprint, token) VALUES ($1, $2)
         ON CONFLICT (fingerprint) DO UPDATE SET token = EXCLUDED.token, created_at = now()
                                              WHERE f.token < EXCLUDED.token
         RETURNING token",
    )
    .bind(fp.as_str())
    .bind(token)
    .fetch_optional(db)
    .await?;
    Ok(registered.is_some())
}

/// Opens the customer's conversation, or finds the one a concurrent message just
/// opened (the partial unique index makes them the same). Two statements, so
/// that the second sees a conversation another transaction committed meanwhile.
pub(super) async fn open_conversation<C>(conn: &mut C, msg: &Inbound) -> Result<Uuid, StoreError>
where
    for<'e> &'e mut C: Executor<'e, Database = Postgres>,
{
    let opened: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO conversations (tenant_id, channel, customer_external_id, customer_name)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, channel, customer_external_id) WHERE status <> 'closed' DO NOTHING
         RETURNING id",
    )
    .bind(msg.tenant_id)
    .bind(&msg.channel)
    .bind(&msg.customer_external_id)
    .bind(&msg.customer_name)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = opened {
        return Ok(id);
    }
    let existing: Uuid = sqlx::query_scalar(
        "SELECT id FROM conversations
          WHERE tenant_id = $1 AND channel = $2 AND customer_external_id = $3 AND status <> 'closed'",
    )
    .bind(msg.tenant_id)
    .bind(&msg.channel)
    .bind(&msg.customer_external_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(existing)
}

/// Whether a reply to `fp` is committed (what a waiter asks of a message
/// ahead in line whose end its line never heard).
pub async fn has_reply(db: &Db, fp: &Fingerprint) -> Result<bool, StoreError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM messages WHERE fingerprint = $1 AND direction = 'out' LIMIT 1")
            .bind(fp.as_str())
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}

type StoredReplyRow = (Uuid, String, Option<bool>, Option<f32>, Option<Value>, DateTime<Utc>, Vec<String>);

/// The reply committed for `fp`, with the messages it answers (a burst's
/// coalesced ones, oldest first, then `fp`).
pub async fn stored_reply(db: &Db, fp: &Fingerprint) -> Result<Option<StoredReply>, StoreError> {
    let row: Option<StoredReplyRow> = sqlx::query_as(
        "SELECT conversation_id, text, handoff, confidence, reply_references, created_at,
                ARRAY(SELECT b.fingerprint FROM messages b WHERE b.burst_reply = $1 AND b.burst_reply <> ''
                       ORDER BY b.created_at, b.id)
           FROM messages WHERE fingerprint = $1 AND direction = 'out'",
    )
    .bind(fp.as_str())
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(conversation_id, text, handoff, confidence, references, created_at, coalesced)| {
        let mut answers = coalesced;
        answers.push(fp.to_string());
        StoredReply {
            conversation_id,
            text,
            handoff: handoff.unwrap_or(false),
            confidence: confidence.unwrap_or(0.0),
            references: references.unwrap_or_else(|| Value::Array(Vec::new())),
            created_at,
            answers,
        }
    }))
}
