//! `worker prune`: what is older than a cutoff is deleted, in batches, each its
//! own short transaction, while the workers run.
//!
//! Batched deletes rather than time-partitioned tables: `messages` and
//! `conversations` are shared with the admin app (CONTRACT §5), which may have
//! created them itself, and a partitioned table's unique indexes must contain the
//! partition key, so `UNIQUE (fingerprint, direction)`, the last line of "at most
//! one reply per fingerprint", could no longer be enforced across partitions.
//!
//! Safe beside the workers: a batch locks only the rows it deletes, which no
//! worker writes again (messages and interactions are never updated; a fence a
//! takeover raises again gets a fresh `created_at`, so it is never old while in
//! use), and
//! a conversation only when nobody holds it (`SKIP LOCKED`: a worker committing
//! to it holds it, and the prune moves on). Each batch finds its rows through an
//! index on `created_at` (`messages`, `agent_interactions`, `fences`), resuming
//! where the previous one stopped, so a run costs what it deletes, not the
//! table's size. Conversations have no such index (their `updated_at` changes
//! with every reply, and indexing it would end their HOT updates, see migration
//! 0004): they are walked once in primary-key order, a batch of ids at a time.
//!
//! Order: rows are deleted oldest first, so at any moment what is gone is the
//! oldest part of the table; a reply, written after its inbound message, goes
//! last (a late copy that finds it publishes it again rather than answer anew).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, StoreError};

/// Rows deleted (or, for a dry run, that would be), table by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub messages: u64,
    pub agent_interactions: u64,
    pub fences: u64,
    pub conversations: u64,
}

/// The tables pruned, in the order they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Messages,
    AgentInteractions,
    Fences,
    Conversations,
}

impl Table {
    pub const ALL: [Table; 4] =
        [Table::Messages, Table::AgentInteractions, Table::Fences, Table::Conversations];

    pub fn name(self) -> &'static str {
        match self {
            Table::Messages => "messages",
            Table::AgentInteractions => "agent_interactions",
            Table::Fences => "fences",
            Table::Conversations => "conversations",
        }
    }
}

impl Removed {
    pub fn of(&self, table: Table) -> u64 {
        match table {
            Table::Messages => self.messages,
            Table::AgentInteractions => self.agent_interactions,
            Table::Fences => self.fences,
            Table::Conversations => self.conversations,
        }
    }

    fn add(&mut self, table: Table, n: u64) {
        let slot = match table {
            Table::Messages => &mut self.messages,
            Table::AgentInteractions => &mut self.agent_interactions,
            Table::Fences => &mut self.fences,
            Table::Conversations => &mut self.conversations,
        };
        *slot += n;
    }
}

/// Deletes every message, agent interaction and fence created before `before`,
/// and then every conversation left without messages that nobody touched since
/// (but those in `handoff`: a human's to close), `batch_size` rows per
/// transaction. `progress` hears of each batch (table, rows so far).
pub async fn prune(
    db: &Db,
    before: DateTime<Utc>,
    batch_size: u32,
    mut progress: impl FnMut(Table, u64),
) -> Result<Removed, StoreError> {
    let limit = i64::from(batch_size.max(1));
    let mut removed = Removed::default();
    for table in [Table::Messages, Table::AgentInteractions, Table::Fences] {
        let sql = by_age(table);
        let mut after = EARLIEST;
        loop {
            let (n, last): (i64, Option<DateTime<Utc>>) =
                sqlx::query_as(&sql).bind(before).bind(after).bind(limit).fetch_one(db).await?;
            removed.add(table, n.unsigned_abs());
            progress(table, removed.of(table));
            match last {
                Some(last) if n > 0 => after = last,
                _ => break,
            }
        }
    }
    // The nil id is the walk's start, so a conversation with that id is kept.
    let mut after = Uuid::nil();
    loop {
        let (n, last): (i64, Option<Uuid>) =
            sqlx::query_as(CONVERSATIONS_SQL).bind(before).bind(after).bind(limit).fetch_one(db).await?;
        removed.add(Table::Conversations, n.unsigned_abs());
        progress(Table::Conversations, removed.conversations);
        match last {
            Some(last) => after = last,
            None => break,
        }
    }
    Ok(removed)
}

/// Where each table's walk starts: 0001-01-01, a time PostgreSQL can take
/// (chrono's own minimum is out of its range).
const EARLIEST: DateTime<Utc> = match DateTime::from_timestamp(-62_135_596_800, 0) {
    Some(t) => t,
    None => DateTime::UNIX_EPOCH,
};

/// What [`prune`] would delete now, deleting nothing.
pub async fn prunable(db: &Db, before: DateTime<Utc>) -> Result<Removed, StoreError> {
    let (messages, agent_interactions, fences, conversations): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages WHERE created_at < $1),
                (SELECT count(*) FROM agent_interactions WHERE created_at < $1),
                (SELECT count(*) FROM fences WHERE created_at < $1),
                (SELECT count(*) FROM conversations c
                  WHERE c.updated_at < $1 AND c.status <> 'handoff'
                    AND NOT EXISTS (SELECT 1 FROM messages m
                                     WHERE m.conversation_id = c.id AND m.created_at >= $1))",
    )
    .bind(before)
    .fetch_one(db)
    .await?;
    Ok(Removed {
        messages: messages.unsigned_abs(),
        agent_interactions: agent_interactions.unsigned_abs(),
        fences: fences.unsigned_abs(),
        conversations: conversations.unsigned_abs(),
    })
}

/// One batch of a table whose rows are never updated, oldest first from `$2`
/// (the previous batch's newest): how many went, and the newest of them.
fn by_age(table: Table) -> String {
    let name = table.name();
    format!(
        "WITH doomed AS (
            SELECT ctid FROM {name} WHERE created_at < $1 AND created_at >= $2 ORDER BY created_at LIMIT $3),
         gone AS (DELETE FROM {name} WHERE ctid = ANY (ARRAY(SELECT ctid FROM doomed)) RETURNING created_at)
         SELECT count(*), max(created_at) FROM gone"
    )
}

/// One batch of the walk over conversations, ids after `$2`: deletes those
/// without messages, untouched since `$1`, not in handoff and not locked (a
/// worker writing to one holds it), and returns how many went and the last id
/// looked at (none: the walk is over). A conversation touched meanwhile has a
/// new row version, whose ctid is not the one chosen: it is left alone.
const CONVERSATIONS_SQL: &str = "WITH span AS (
        SELECT id FROM conversations WHERE id > $2 ORDER BY id LIMIT $3),
     doomed AS (
        SELECT c.ctid FROM conversations c
         WHERE c.id IN (SELECT id FROM span) AND c.updated_at < $1 AND c.status <> 'handoff'
           AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)
           FOR UPDATE SKIP LOCKED),
     gone AS (DELETE FROM conversations WHERE ctid = ANY (ARRAY(SELECT ctid FROM doomed)) RETURNING 1)
     SELECT (SELECT count(*) FROM gone), (SELECT id FROM span ORDER BY id DESC LIMIT 1)";
