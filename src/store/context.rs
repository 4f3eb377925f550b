//! Stage "history": the conversation a message belongs to, its latest messages,
//! and (when Redis did not have it) its latest numbered list — in one query.
//! The messages come from the (conversation_id, created_at, id) index, newest
//! first, limited: no OFFSET scan however long the conversation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Conversation, StoreError};
use crate::decode::Inbound;
use crate::references::{NumberedList, Reference};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// `in` (the customer) or `out` (a reply).
    pub direction: String,
    pub text: String,
    #[serde(default)]
    pub references: Vec<Reference>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationContext {
    /// `None`: the customer has no current conversation yet (it is opened with the reply).
    pub conversation: Option<Conversation>,
    pub history: Vec<HistoryItem>,
    /// The latest list, when asked for.
    pub stored_list: Option<NumberedList>,
}

#[derive(Deserialize)]
struct StoredList {
    at: DateTime<Utc>,
    items: Vec<Reference>,
}

/// Returns `Ok(None)` when the message names a conversation the tenant does not have.
/// (The grouped `ContextReader` runs the same query for many messages at once.)
pub async fn load_context(
    pool: &PgPool,
    msg: &Inbound,
    history_limit: u32,
    want_list: bool,
) -> Result<Option<ConversationContext>, StoreError> {
    let rows: Vec<BatchRow> = sqlx::query_as(BATCH_SQL)
        .bind([msg.tenant_id])
        .bind([msg.channel.as_str()])
        .bind([msg.customer_external_id.as_str()])
        .bind([msg.conversation_id])
        .bind([want_list])
        .bind(i64::from(history_limit))
        .fetch_all(pool)
        .await?;
    Ok(context_of(rows.into_iter().next().and_then(found), msg.conversation_id))
}

type FoundConversation = (Uuid, String, Vec<HistoryItem>, Option<Json<StoredList>>);

/// The conversation a batch row found, if it found one.
fn found((_, id, status, history, list): BatchRow) -> Option<FoundConversation> {
    let (id, status) = id.zip(status)?;
    Some((id, status, history.map(|Json(h)| h).unwrap_or_default(), list))
}

/// The context a row describes; `None` when the message named a conversation
/// (`named`) that the row says the tenant does not have.
fn context_of(row: Option<FoundConversation>, named: Option<Uuid>) -> Option<ConversationContext> {
    match row {
        Some((id, status, history, list)) => Some(ConversationContext {
            conversation: Some(Conversation { id, status }),
            history,
            stored_list: list.map(|Json(l)| NumberedList {
                conversation_id: Some(id),
                at: l.at,
                items: l.items,
            }),
        }),
        None if named.is_some() => None,
        None => Some(ConversationContext::default()),
    }
}

/// Stage "history", grouped: the contexts of every message ready when one of a
/// few slots frees up, in one query (see `batch`) — one round trip and one
/// statement's overhead in PostgreSQL for all of them.
#[derive(Clone)]
pub struct ContextReader {
    jobs: tokio::sync::mpsc::UnboundedSender<Lookup>,
}

struct Lookup {
    tenant_id: Uuid,
    channel: String,
    customer: String,
    conversation_id: Option<Uuid>,
    want_list: bool,
    reply: tokio::sync::oneshot::Sender<Result<Option<ConversationContext>, StoreError>>,
}

impl ContextReader {
    pub fn start(pool: PgPool, slots: usize, history_limit: u32) -> Self {
        let jobs = super::batch::start(pool, slots, 256, None, move |pool, kept, lookups| async move {
            read(&pool, kept, lookups, history_limit).await
        });
        Self { jobs }
    }

    /// What `load_context` returns for `msg`, read together with whatever else is ready.
    pub async fn load(
        &self,
        msg: &Inbound,
        want_list: bool,
    ) -> Result<Option<ConversationContext>, StoreError> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let lookup = Lookup {
            tenant_id: msg.tenant_id,
            channel: msg.channel.clone(),
            customer: msg.customer_external_id.clone(),
            conversation_id: msg.conversation_id,
            want_list,
            reply,
        };
        let stopped = || StoreError::Db(sqlx::Error::Protocol("the context reader has stopped".into()));
        self.jobs.send(lookup).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

type BatchRow = (i64, Option<Uuid>, Option<String>, Option<Json<Vec<HistoryItem>>>, Option<Json<StoredList>>);

async fn read(
    pool: &PgPool,
    kept: super::batch::Connection,
    lookups: Vec<Lookup>,
    history_limit: u32,
) -> super::batch::Connection {
    let rows: Result<(_, Vec<BatchRow>), StoreError> = async {
        let mut conn = super::batch::connection(pool, kept).await?;
        let rows = sqlx::query_as(BATCH_SQL)
            .bind(lookups.iter().map(|l| l.tenant_id).collect::<Vec<_>>())
            .bind(lookups.iter().map(|l| l.channel.as_str()).collect::<Vec<_>>())
            .bind(lookups.iter().map(|l| l.customer.as_str()).collect::<Vec<_>>())
            .bind(lookups.iter().map(|l| l.conversation_id).collect::<Vec<_>>())
            .bind(lookups.iter().map(|l| l.want_list).collect::<Vec<_>>())
            .bind(i64::from(history_limit))
            .fetch_all(&mut *conn)
            .await?;
        Ok((conn, rows))
    }
    .await;
    match rows {
        Ok((conn, rows)) => {
            let mut lookups: Vec<Option<Lookup>> = lookups.into_iter().map(Some).collect();
            for (ordinal, id, status, history, list) in rows {
                let Some(lookup) = usize::try_from(ordinal - 1).ok().and_then(|i| lookups.get_mut(i)?.take())
                else {
                    continue;
                };
                let row = id
                    .zip(status)
                    .map(|(id, status)| (id, status, history.map(|Json(h)| h).unwrap_or_default(), list));
                let context = context_of(row, lookup.conversation_id);
                let _ = lookup.reply.send(Ok(context));
            }
            for lookup in lookups.into_iter().flatten() {
                let missing = "the grouped context read returned no row for a message";
                let _ = lookup.reply.send(Err(StoreError::Db(sqlx::Error::Protocol(missing.into()))));
            }
            Some(conn)
        }
        Err(e) => {
            let error = e.to_string();
            for lookup in lookups {
                let _ = lookup.reply.send(Err(StoreError::Shared(error.clone())));
            }
            None
        }
    }
}

/// The context of each message of a batch: one row per message, in order. The
/// conversation is found by two UNION ALL branches, not one CASE, so that each
/// can use its index (through a CASE the plan scanned the whole table).
const BATCH_SQL: &str = "SELECT k.ord, conv.id, conv.status,
   (SELECT COALESCE(jsonb_agg(jsonb_build_object('direction', h.direction, 'text', h.text,
              'references', COALESCE(h.reply_references, '[]'::jsonb), 'created_at', h.created_at)
              ORDER BY h.created_at, h.id), '[]'::jsonb)
      FROM (SELECT direction, text, reply_references, created_at, id FROM messages
             WHERE conversation_id = conv.id ORDER BY created_at DESC, id DESC LIMIT $6) h),
   (SELECT jsonb_build_object('at', l.created_at, 'items', l.reply_references)
      FROM messages l
     WHERE k.want_list AND l.conversation_id = conv.id AND l.direction = 'out' AND l.reply_list_size >= 2
     ORDER BY l.created_at DESC, l.id DESC LIMIT 1)
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::bool[])
       WITH ORDINALITY AS k(tenant_id, channel, customer, conversation_id, want_list, ord)
  LEFT JOIN LATERAL (
      (SELECT c.id, c.status FROM conversations c
        WHERE k.conversation_id IS NULL AND c.tenant_id = k.tenant_id AND c.channel = k.channel
          AND c.customer_external_id = k.customer AND c.status <> 'closed'
       UNION ALL
       SELECT c.id, c.status FROM conversations c
        WHERE k.conversation_id IS NOT NULL AND c.id = k.conversation_id AND c.tenant_id = k.tenant_id)
      LIMIT 1) conv ON true
 ORDER BY k.ord";
