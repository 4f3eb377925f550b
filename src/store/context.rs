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

type ContextRow = (Uuid, String, Json<Vec<HistoryItem>>, Option<Json<StoredList>>);

/// Returns `Ok(None)` when the message names a conversation the tenant does not have.
pub async fn load_context(
    pool: &PgPool,
    msg: &Inbound,
    history_limit: u32,
    want_list: bool,
) -> Result<Option<ConversationContext>, StoreError> {
    let row: Option<ContextRow> = sqlx::query_as(
        // Two branches, not one CASE: a prepared statement's generic plan cannot use
        // an index through a CASE and scanned the whole table (and its dead rows).
        "WITH conv AS (
            (SELECT id, status FROM conversations
              WHERE $4::uuid IS NULL AND tenant_id = $1 AND channel = $2 AND customer_external_id = $3
                AND status <> 'closed'
             UNION ALL
             SELECT id, status FROM conversations WHERE $4::uuid IS NOT NULL AND id = $4 AND tenant_id = $1)
             LIMIT 1)
         SELECT conv.id, conv.status,
           (SELECT COALESCE(jsonb_agg(jsonb_build_object('direction', h.direction, 'text', h.text,
                      'references', COALESCE(h.reply_references, '[]'::jsonb), 'created_at', h.created_at)
                      ORDER BY h.created_at, h.id), '[]'::jsonb)
              FROM (SELECT direction, text, reply_references, created_at, id FROM messages
                     WHERE conversation_id = conv.id ORDER BY created_at DESC, id DESC LIMIT $5) h),
           (SELECT jsonb_build_object('at', l.created_at, 'items', l.reply_references)
              FROM messages l
             WHERE $6 AND l.conversation_id = conv.id AND l.direction = 'out' AND l.reply_list_size >= 2
             ORDER BY l.created_at DESC, l.id DESC LIMIT 1)
         FROM conv",
    )
    .bind(msg.tenant_id)
    .bind(&msg.channel)
    .bind(&msg.customer_external_id)
    .bind(msg.conversation_id)
    .bind(i64::from(history_limit))
    .bind(want_list)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((id, status, Json(history), list)) => Some(ConversationContext {
            conversation: Some(Conversation { id, status }),
            history,
            stored_list: list.map(|Json(l)| NumberedList {
                conversation_id: Some(id),
                at: l.at,
                items: l.items,
            }),
        }),
        None if msg.conversation_id.is_some() => None,
        None => Some(ConversationContext::default()),
    })
}
