//! Stage "persist", grouped: messages answered at the same time share one
//! statement and one durable commit.
//!
//! A commit costs a WAL flush, and one commit per message caps PostgreSQL near
//! its flush rate however many workers write. The writer takes every exchange
//! that is ready when one of its commit slots frees up (see `batch`) and records
//! the batch in one statement — one round trip, one flush. Each exchange keeps its
//! own fencing check and its own result, and its caller, which acks only after
//! that result, learns it only once the batch's commit is durable.
//!
//! A batch that fails as a whole is recorded again one exchange at a time, so a
//! row PostgreSQL refuses fails only its own message.
//!
//! Two lanes: a tenant's flood fills the batches, and a message of another
//! tenant, with nothing of its own waiting, would wait behind them, a commit or
//! two (100-200 ms on a loaded machine: the two-tenant flood bench saw it
//! triple the quiet tenant's latency). It commits in the light lane instead:
//! batches of their own, one at a time, on a connection of its own (kept, as
//! the backlog's slots keep theirs: taken from the pool for each batch, it
//! would cost a round trip per message on a quiet fleet's warm path).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::batch::{self, Connection};
use super::messages::{self, Exchange, Recorded};
use super::{Conn, Db, StoreError};

/// What the writer reports.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// How many exchanges each commit carried.
    pub batch_sizes: Histogram,
    /// Batches PostgreSQL refused as a whole, recorded again one exchange at a time
    /// (a refused row, a deadlock, a lost connection): each costs a commit per message.
    pub split_batches: Counter,
}

#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Most exchanges one statement records.
    pub max_batch: usize,
    /// Batches being committed at once (each holds a pooled connection meanwhile).
    pub in_flight: usize,
    /// A light lane beside them (one connection more); without, every
    /// exchange commits with the backlog.
    pub light_lane: bool,
}

type Reply = oneshot::Sender<Result<Recorded, StoreError>>;

struct Job {
    exchange: Exchange,
    reply: Reply,
}

/// Which of the writer's batches an exchange joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// With the others of the backlog (its tenant had work waiting).
    #[default]
    Backlog,
    /// Beside the backlog's batches, not behind them: its tenant had
    /// nothing waiting when it was read.
    Light,
}

/// A handle to the writer task; clones share it. The task ends when the last
/// handle is dropped, after committing what it was given.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
    light: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer task, which reports to `metrics`.
    pub fn start(db: Db, settings: WriterSettings, metrics: WriterMetrics) -> Self {
        let WriterMetrics { batch_sizes, split_batches } = metrics;
        let split = split_batches.clone();
        let jobs = batch::start(
            db.clone(),
            settings.in_flight,
            settings.max_batch,
            Some(batch_sizes.clone()),
            move |db, kept, jobs| {
                let split_batches = split.clone();
                async move { commit(&db, kept, jobs, &split_batches).await }
            },
        );
        let light = if settings.light_lane {
            batch::start(db, 1, settings.max_batch, Some(batch_sizes), move |db, kept, jobs| {
                let split_batches = split_batches.clone();
                async move { commit(&db, kept, jobs, &split_batches).await }
            })
        } else {
            jobs.clone()
        };
        Self { jobs, light }
    }

    /// Commits `exchange` (with whatever else is ready in its lane) and
    /// returns its own result, once the commit that holds it is durable.
    pub async fn record(&self, exchange: Exchange, lane: Lane) -> Result<Recorded, StoreError> {
        let (reply, result) = oneshot::channel();
        let jobs = match lane {
            Lane::Backlog => &self.jobs,
            Lane::Light => &self.light,
        };
        jobs.send(Job { exchange, reply }).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Stopped("writer")
}

/// Returns the connection to keep for the next batch, if it is still sound.
async fn commit(db: &Db, connection: Connection, jobs: Vec<Job>, split_batches: &Counter) -> Connection {
    // Two exchanges of one fingerprint (a takeover racing its predecessor) may not
    // share a statement: the second would see the first as "already committed"
    // before it is. The later ones go alone, after the batch.
    let mut seen = HashSet::new();
    let (batch, alone): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|job| seen.insert(job.exchange.fingerprint.clone()));
    let exchanges: Vec<&Exchange> = batch.iter().map(|job| &job.exchange).collect();
    let kept = match record_batch(db, connection, &exchanges).await {
        Ok((connection, results)) => {
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
            Some(connection)
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
            None
        }
        Err(e) => {
            tracing::warn!(batch = batch.len(), error = %e, "group commit failed; recording its messages one by one");
            split_batches.inc();
            one_by_one(db, batch).await;
            None
        }
    };
    one_by_one(db, alone).await;
    kept
}

async fn one_by_one(db: &Db, jobs: Vec<Job>) {
    for job in jobs {
        let result = messages::record_exchange(db, &job.exchange).await;
        let _ = job.reply.send(result);
    }
}

/// Records several exchanges (of distinct fingerprints) in one statement, which
/// is one transaction (through a pooler an explicit one, see `db`). Returns one
/// result per exchange, in order.
async fn record_batch(
    db: &Db,
    connection: Connection,
    batch: &[&Exchange],
) -> Result<(Conn, Vec<Result<Recorded, StoreError>>), StoreError> {
    let mut conn = batch::connection(db, connection).await?;
    // A customer's first message opens the conversation first; should the batch
    // then fail, the conversation stays open and empty, and the retry uses it.
    let mut conversations = Vec::with_capacity(batch.len());
    for ex in batch {
        conversations.push(match ex.conversation_id {
            Some(id) => id,
            None => messages::open_conversation(&mut conn, &ex.inbound).await?,
        });
    }
    let rows = Columns::of(batch, &conversations);
    let outcomes: Vec<(i32, bool, bool)> = sqlx::query_as(BATCH_SQL)
        .bind(rows.index)
        .bind(&conversations)
        .bind(rows.message_id)
        .bind(rows.fingerprint)
        .bind(rows.text)
        .bind(rows.stored_at)
        .bind(rows.received_at)
        .bind(rows.attachments)
        .bind(rows.metadata)
        .bind(rows.reply_id)
        .bind(rows.reply_text)
        .bind(rows.replied_at)
        .bind(rows.handoff)
        .bind(rows.confidence)
        .bind(rows.references)
        .bind(rows.list_size)
        .bind(rows.responder)
        .bind(rows.tenant)
        .bind(rows.model)
        .bind(rows.prompt_tokens)
        .bind(rows.completion_tokens)
        .bind(rows.cost)
        .bind(rows.latency_ms)
        .bind(rows.fence)
        .fetch_all(&mut conn)
        .await?;

    let mut results: Vec<Option<Result<Recorded, StoreError>>> = batch.iter().map(|_| None).collect();
    for (index, inserted, fenced) in outcomes {
        let Some(slot) = usize::try_from(index).ok().and_then(|i| results.get_mut(i)) else { continue };
        let ex = batch[index as usize];
        *slot = Some(if fenced {
            Err(StoreError::Fenced(ex.fingerprint.to_string()))
        } else if inserted {
            Ok(Recorded::new(ex, conversations[index as usize]))
        } else {
            messages::existing(db, &ex.fingerprint).await
        });
    }
    let results = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(StoreError::Inconsistent("the group commit returned no row for a message".into()))
            })
        })
        .collect();
    Ok((conn, results))
}

/// The batch, column by column, as the statement's arrays.
struct Columns<'a> {
    index: Vec<i32>,
    message_id: Vec<&'a str>,
    fingerprint: Vec<&'a str>,
    text: Vec<&'a str>,
    stored_at: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
    attachments: Vec<&'a Value>,
    metadata: Vec<&'a Value>,
    reply_id: Vec<String>,
    reply_text: Vec<&'a str>,
    replied_at: Vec<DateTime<Utc>>,
    handoff: Vec<bool>,
    confidence: Vec<f32>,
    references: Vec<Value>,
    list_size: Vec<i16>,
    responder: Vec<&'a str>,
    tenant: Vec<Uuid>,
    model: Vec<Option<&'a str>>,
    prompt_tokens: Vec<Option<i32>>,
    completion_tokens: Vec<Option<i32>>,
    cost: Vec<Option<f64>>,
    latency_ms: Vec<i32>,
    fence: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(batch: &[&'a Exchange], conversations: &[Uuid]) -> Self {
        debug_assert_eq!(batch.len(), conversations.len());
        Self {
            index: (0..batch.len()).map(|i| i32::try_from(i).unwrap_or(i32::MAX)).collect(),
            message_id: batch.iter().map(|ex| ex.inbound.message_id.as_str()).collect(),
            fingerprint: batch.iter().map(|ex| ex.fingerprint.as_str()).collect(),
            text: batch.iter().map(|ex| ex.inbound.text.as_str()).collect(),
            stored_at: batch.iter().map(|ex| ex.stored_at).collect(),
            received_at: batch.iter().map(|ex| ex.inbound.received_at).collect(),
            attachments: batch.iter().map(|ex| &ex.inbound.attachments).collect(),
            metadata: batch.iter().map(|ex| &ex.inbound.metadata).collect(),
            reply_id: batch.iter().map(|ex| ex.fingerprint.reply_id()).collect(),
            reply_text: batch.iter().map(|ex| ex.answer.text.as_str()).collect(),
            replied_at: batch.iter().map(|ex| ex.replied_at).collect(),
            handoff: batch.iter().map(|ex| ex.answer.handoff).collect(),
            confidence: batch.iter().map(|ex| ex.answer.confidence).collect(),
            references: batch.iter().map(|ex| messages::references_json(&ex.answer)).collect(),
            list_size: batch.iter().map(|ex| messages::list_size(&ex.answer)).collect(),
            responder: batch.iter().map(|ex| ex.responder.as_str()).collect(),
            tenant: batch.iter().map(|ex| ex.inbound.tenant_id).collect(),
            model: batch.iter().map(|ex| ex.answer.usage.model.as_deref()).collect(),
            prompt_tokens: batch.iter().map(|ex| ex.answer.usage.prompt_tokens).collect(),
            completion_tokens: batch.iter().map(|ex| ex.answer.usage.completion_tokens).collect(),
            cost: batch.iter().map(|ex| ex.answer.usage.cost).collect(),
            latency_ms: batch.iter().map(|ex| ex.latency_ms).collect(),
            fence: batch.iter().map(|ex| ex.fence).collect(),
        }
    }
}

/// `record_exchange`'s statement over arrays: per exchange, the fencing check,
/// the inbound and reply rows, the interaction and the conversation's update —
/// the last two only for exchanges whose rows this statement inserted.
///
/// Two batches committing at once (from several slots or several workers) may
/// touch the same conversations. Each first locks its conversations in id order
/// (`locked`, which the inserts wait for: an uncorrelated subquery runs once,
/// before the first row), and inserts its rows in fingerprint order, so
/// overlapping batches queue behind each other instead of deadlocking; the
/// update's own join order would lock in any order (it deadlocked under load).
const BATCH_SQL: &str = "WITH input AS (
    SELECT * FROM unnest($1::int4[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                         $7::timestamptz[], $8::jsonb[], $9::jsonb[], $10::text[], $11::text[],
                         $12::timestamptz[], $13::bool[], $14::float4[], $15::jsonb[], $16::int2[],
                         $17::text[], $18::uuid[], $19::text[], $20::int4[], $21::int4[], $22::float8[],
                         $23::int4[], $24::int8[])
        AS t(idx, conversation_id, provider_message_id, fingerprint, text, stored_at,
             received_at, attachments, metadata, reply_id, reply_text,
             replied_at, handoff, confidence, reply_references, list_size,
             responder, tenant_id, model, prompt_tokens, completion_tokens, cost,
             latency_ms, fence)),
locked AS (
    SELECT c.id FROM conversations c WHERE c.id = ANY($2::uuid[])
     ORDER BY c.id FOR NO KEY UPDATE),
fenced AS (
    SELECT i.idx FROM input i JOIN fences f ON f.fingerprint = i.fingerprint AND f.token > i.fence),
m AS (
    INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at,
                          received_at, attachments, metadata, handoff, confidence, reply_references,
                          reply_list_size, responder)
    SELECT i.conversation_id, v.direction, v.provider_message_id, i.fingerprint, v.text, v.created_at,
           v.received_at, v.attachments, v.metadata, v.handoff, v.confidence, v.reply_references,
           v.list_size, v.responder
      FROM input i
     CROSS JOIN LATERAL (VALUES
        ('in', i.provider_message_id, i.text, i.stored_at, i.received_at, i.attachments, i.metadata,
         NULL::boolean, NULL::real, NULL::jsonb, NULL::smallint, NULL::text),
        ('out', i.reply_id, i.reply_text, i.replied_at, NULL, NULL, NULL,
         i.handoff, i.confidence, i.reply_references, i.list_size, i.responder))
        AS v(direction, provider_message_id, text, created_at, received_at, attachments, metadata,
             handoff, confidence, reply_references, list_size, responder)
     WHERE i.idx NOT IN (SELECT idx FROM fenced) AND (SELECT count(*) FROM locked) >= 0
     ORDER BY i.fingerprint, v.direction
    ON CONFLICT (fingerprint, direction) DO NOTHING
    RETURNING fingerprint),
own AS (
    -- an inbound row stored when its message was coalesced into a burst whose
    -- answer never came: taken over by the message's own reply (record_exchange)
    UPDATE messages SET burst_reply = NULL
      FROM input i
     WHERE messages.fingerprint = i.fingerprint AND messages.direction = 'in' AND messages.burst_reply = ''
       AND i.idx NOT IN (SELECT idx FROM fenced)
    RETURNING messages.fingerprint),
done AS (SELECT fingerprint FROM (SELECT fingerprint FROM m UNION ALL SELECT fingerprint FROM own) stored
          GROUP BY fingerprint HAVING count(*) = 2),
interactions AS (
    INSERT INTO agent_interactions (tenant_id, conversation_id, fingerprint, responder, model, confidence,
                                    handoff, prompt_tokens, completion_tokens, cost, latency_ms, created_at)
    SELECT i.tenant_id, i.conversation_id, i.fingerprint, i.responder, i.model, i.confidence, i.handoff,
           i.prompt_tokens, i.completion_tokens, i.cost, i.latency_ms, i.replied_at
      FROM input i JOIN done USING (fingerprint)
    ON CONFLICT (fingerprint) DO NOTHING),
touched AS (
    UPDATE conversations c
       SET updated_at = u.at, status = CASE WHEN u.handoff THEN 'handoff' ELSE c.status END
      FROM (SELECT i.conversation_id, max(i.replied_at) AS at, bool_or(i.handoff) AS handoff
              FROM input i JOIN done USING (fingerprint) GROUP BY i.conversation_id) u
     WHERE c.id = u.conversation_id)
SELECT i.idx, i.fingerprint IN (SELECT fingerprint FROM done), i.idx IN (SELECT idx FROM fenced)
  FROM input i";
