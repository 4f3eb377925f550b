//! Stage "history": the conversation a message belongs to, its latest messages,
//! and (when Redis did not have it) its latest numbered list — in one query.
//! The messages come from the (conversation_id, created_at, id) index, newest
//! first, limited: no OFFSET scan however long the conversation.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Conn, Conversation, Db, StoreError};
use crate::model::Inbound;
use crate::model::{ConversationStatus, Direction, HistoryItem, NumberedList, Reference};

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
    items: Vec<serde_json::Value>,
}

/// The references a stored JSON array holds, each read on its own: one
/// another program wrote with a kind that is no catalog table is left out,
/// never a reason to fail the read that other messages share.
fn references_of(items: Vec<serde_json::Value>) -> Vec<Reference> {
    items.into_iter().filter_map(|item| serde_json::from_value(item).ok()).collect()
}

/// Returns `Ok(None)` when the message names a conversation that is not one of its
/// tenant's, channel's and customer's (CONTRACT §2).
/// (The grouped `ContextReader` runs the same query for many messages at once.)
pub async fn load_context(
    db: &Db,
    msg: &Inbound,
    history_limit: u32,
    want_list: bool,
) -> Result<Option<ConversationContext>, StoreError> {
    let key = Key {
        tenant_id: msg.tenant_id,
        channel: &msg.channel,
        customer: &msg.customer_external_id,
        conversation_id: msg.conversation_id,
        want_list,
    };
    let rows = query(&mut db.acquire().await?, &[key], history_limit).await?;
    let found = Found::group(rows).into_iter().next().and_then(|(_, found)| found);
    Ok(context_of(found, msg.conversation_id))
}

/// One row of the query: a message of the key's conversation's history (the
/// conversation columns repeated), or a key without conversation or history.
type BatchRow = (
    i64,
    Option<Uuid>,
    Option<String>,
    Option<Json<StoredList>>,
    Option<String>,
    Option<String>,
    Option<Json<Vec<serde_json::Value>>>,
    Option<DateTime<Utc>>,
);

/// The conversation a key found, with its history gathered from its rows.
struct Found {
    id: Uuid,
    status: ConversationStatus,
    history: Vec<HistoryItem>,
    list: Option<StoredList>,
}

impl Found {
    /// Gathers the rows (ordered by key, then oldest message first) into one
    /// entry per key that came back: its ordinal and what it found.
    fn group(rows: Vec<BatchRow>) -> Vec<(i64, Option<Found>)> {
        let mut keys: Vec<(i64, Option<Found>)> = Vec::new();
        for (ordinal, id, status, list, direction, text, references, created_at) in rows {
            if keys.last().is_none_or(|(last, _)| *last != ordinal) {
                let found = id.zip(status).map(|(id, status)| Found {
                    id,
                    // The table's CHECK allows no other value.
                    status: ConversationStatus::parse(&status).unwrap_or_default(),
                    history: Vec::new(),
                    list: None,
                });
                keys.push((ordinal, found));
            }
            let Some((_, Some(found))) = keys.last_mut() else { continue };
            if let Some(Json(list)) = list {
                found.list = Some(list);
            }
            let direction = direction.as_deref().and_then(Direction::parse);
            if let (Some(direction), Some(text), Some(created_at)) = (direction, text, created_at) {
                let references = references.map(|Json(r)| references_of(r)).unwrap_or_default();
                found.history.push(HistoryItem { direction, text, references, created_at });
            }
        }
        keys
    }
}

/// The context a key's rows describe; `None` when the message named a conversation
/// (`named`) that the tenant does not have.
fn context_of(found: Option<Found>, named: Option<Uuid>) -> Option<ConversationContext> {
    match found {
        Some(Found { id, status, history, list }) => Some(ConversationContext {
            conversation: Some(Conversation { id, status }),
            history,
            stored_list: list.map(|l| NumberedList {
                conversation_id: Some(id),
                at: l.at,
                items: references_of(l.items),
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
    pub fn start(db: Db, slots: usize, history_limit: u32) -> Self {
        let jobs = super::batch::start(db, slots, 256, None, move |db, kept, lookups| async move {
            read(&db, kept, lookups, history_limit).await
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
        let stopped = || StoreError::Stopped("context reader");
        self.jobs.send(lookup).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

async fn read(
    db: &Db,
    kept: super::batch::Connection,
    lookups: Vec<Lookup>,
    history_limit: u32,
) -> super::batch::Connection {
    let read = async {
        let mut conn = super::batch::connection(db, kept).await?;
        let keys: Vec<Key> = lookups.iter().map(Lookup::key).collect();
        let rows = query(&mut conn, &keys, history_limit).await?;
        Ok::<_, StoreError>((conn, rows))
    };
    match read.await {
        Ok((conn, rows)) => {
            answer(lookups, rows);
            Some(conn)
        }
        // One message's value (one PostgreSQL cannot take) failed the statement
        // for all: read each alone, so that it alone fails.
        Err(e) if lookups.len() > 1 && e.caused_by_input() => {
            tracing::warn!(batch = lookups.len(), error = %e, "grouped context read failed; reading its messages one by one");
            for lookup in lookups {
                let alone = async {
                    let mut conn = db.acquire().await?;
                    query(&mut conn, &[lookup.key()], history_limit).await
                };
                match alone.await {
                    Ok(rows) => answer(vec![lookup], rows),
                    Err(e) => fail(vec![lookup], e),
                }
            }
            None
        }
        Err(e) => {
            fail(lookups, e);
            None
        }
    }
}

/// What the query looks up for one message.
struct Key<'a> {
    tenant_id: Uuid,
    channel: &'a str,
    customer: &'a str,
    conversation_id: Option<Uuid>,
    want_list: bool,
}

impl Lookup {
    fn key(&self) -> Key<'_> {
        Key {
            tenant_id: self.tenant_id,
            channel: &self.channel,
            customer: &self.customer,
            conversation_id: self.conversation_id,
            want_list: self.want_list,
        }
    }
}

async fn query(conn: &mut Conn, keys: &[Key<'_>], history_limit: u32) -> Result<Vec<BatchRow>, StoreError> {
    Ok(sqlx::query_as(BATCH_SQL)
        .bind(keys.iter().map(|k| k.tenant_id).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.channel).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.customer).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.conversation_id).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.want_list).collect::<Vec<_>>())
        .bind(i64::from(history_limit))
        .fetch_all(conn)
        .await?)
}

/// Hands each lookup its context from the rows of the statement that read them.
fn answer(lookups: Vec<Lookup>, rows: Vec<BatchRow>) {
    let mut lookups: Vec<Option<Lookup>> = lookups.into_iter().map(Some).collect();
    for (ordinal, found) in Found::group(rows) {
        let Some(lookup) = usize::try_from(ordinal - 1).ok().and_then(|i| lookups.get_mut(i)?.take()) else {
            continue;
        };
        let _ = lookup.reply.send(Ok(context_of(found, lookup.conversation_id)));
    }
    for lookup in lookups.into_iter().flatten() {
        let missing = "the grouped context read returned no row for a message";
        let _ = lookup.reply.send(Err(StoreError::Inconsistent(missing.into())));
    }
}

/// Hands each lookup the statement's error (kind, SQLSTATE and all: whether the
/// input caused it is still known).
fn fail(lookups: Vec<Lookup>, e: StoreError) {
    let shared = std::sync::Arc::new(e);
    for lookup in lookups {
        let _ = lookup.reply.send(Err(StoreError::Shared(shared.clone())));
    }
}

/// The context of each message of a batch: per message, one row per message of
/// its history (oldest first), or one row when it has none; messages in order.
/// Rows rather than JSON built in PostgreSQL: building and escaping JSON for 20
/// messages cost PostgreSQL more than finding them, and the worker more to parse.
/// The conversation is found by two UNION ALL branches, not one CASE, so that each
/// can use its index (through a CASE the plan scanned the whole table). The latest
/// list, when asked for, rides on the newest message's row only.
const BATCH_SQL: &str =
    "SELECT k.ord, conv.id, conv.status, CASE WHEN h.newest IS NOT FALSE THEN conv.list END,
       h.direction, h.text, h.reply_references, h.created_at
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::bool[])
       WITH ORDINALITY AS k(tenant_id, channel, customer, conversation_id, want_list, ord)
  LEFT JOIN LATERAL (
      SELECT found.id, found.status,
             (SELECT jsonb_build_object('at', l.created_at, 'items', l.reply_references)
                FROM messages l
               WHERE k.want_list AND l.conversation_id = found.id AND l.direction = 'out'
                 AND l.reply_list_size >= 2
               ORDER BY l.created_at DESC, l.id DESC LIMIT 1) AS list
        FROM ((SELECT c.id, c.status FROM conversations c
                WHERE k.conversation_id IS NULL AND c.tenant_id = k.tenant_id AND c.channel = k.channel
                  AND c.customer_external_id = k.customer AND c.status <> 'closed'
               UNION ALL
               SELECT c.id, c.status FROM conversations c
                WHERE k.conversation_id IS NOT NULL AND c.id = k.conversation_id AND c.tenant_id = k.tenant_id
                  AND c.channel = k.channel AND c.customer_external_id = k.customer)
              LIMIT 1) found) conv ON true
  LEFT JOIN LATERAL (
      SELECT m.direction, m.text, m.reply_references, m.created_at, m.id,
             row_number() OVER (ORDER BY m.created_at DESC, m.id DESC) = 1 AS newest
        FROM (SELECT direction, text, reply_references, created_at, id FROM messages
               WHERE conversation_id = conv.id ORDER BY created_at DESC, id DESC LIMIT $6) m) h ON true
 ORDER BY k.ord, h.created_at, h.id";
