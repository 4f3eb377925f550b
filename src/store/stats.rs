//! `worker stats`: what the agent did, aggregated in SQL (one statement).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Db, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub tenant_id: Option<Uuid>,
    pub since: DateTime<Utc>,
    /// Conversations active (updated) since `since`, by status.
    pub conversations: ConversationCounts,
    pub messages_in: i64,
    pub messages_out: i64,
    /// Agent interactions: one per answer.
    pub answers: i64,
    pub handoffs: i64,
    pub handoff_rate: f64,
    pub average_confidence: Option<f64>,
    pub latency_ms: Percentiles,
    pub cost: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub by_responder: Vec<ResponderCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationCounts {
    pub open: i64,
    pub handoff: i64,
    pub closed: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponderCount {
    pub responder: String,
    pub answers: i64,
}

pub async fn stats(db: &Db, tenant_id: Option<Uuid>, since: DateTime<Utc>) -> Result<Stats, StoreError> {
    let row: (sqlx::types::Json<serde_json::Value>,) = sqlx::query_as(
        "WITH i AS (SELECT * FROM agent_interactions
                     WHERE ($1::uuid IS NULL OR tenant_id = $1) AND created_at >= $2),
              c AS (SELECT status, count(*) AS n FROM conversations
                     WHERE ($1::uuid IS NULL OR tenant_id = $1) AND updated_at >= $2 GROUP BY status),
              m AS (SELECT m.direction, count(*) AS n FROM messages m JOIN conversations cv ON cv.id = m.conversation_id
                     WHERE ($1::uuid IS NULL OR cv.tenant_id = $1) AND m.created_at >= $2 GROUP BY m.direction)
         SELECT jsonb_build_object(
           'open', COALESCE((SELECT n FROM c WHERE status = 'open'), 0),
           'handoff_conversations', COALESCE((SELECT n FROM c WHERE status = 'handoff'), 0),
           'closed', COALESCE((SELECT n FROM c WHERE status = 'closed'), 0),
           'messages_in', COALESCE((SELECT n FROM m WHERE direction = 'in'), 0),
           'messages_out', COALESCE((SELECT n FROM m WHERE direction = 'out'), 0),
           'answers', (SELECT count(*) FROM i),
           'handoffs', (SELECT count(*) FILTER (WHERE handoff) FROM i),
           'average_confidence', (SELECT avg(confidence)::float8 FROM i),
           'p50', (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FROM i),
           'p95', (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM i),
           'p99', (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FROM i),
           'cost', COALESCE((SELECT sum(cost) FROM i), 0)::float8,
           'prompt_tokens', COALESCE((SELECT sum(prompt_tokens) FROM i), 0),
           'completion_tokens', COALESCE((SELECT sum(completion_tokens) FROM i), 0),
           'by_responder', COALESCE((SELECT jsonb_agg(jsonb_build_object('responder', responder, 'answers', n) ORDER BY n DESC, responder)
                                       FROM (SELECT responder, count(*) AS n FROM i GROUP BY responder) r), '[]'::jsonb))",
    )
    .bind(tenant_id)
    .bind(since)
    .fetch_one(db)
    .await?;
    let v = row.0.0;
    let int = |k: &str| v.get(k).and_then(|x| x.as_i64()).unwrap_or(0);
    let float = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let answers = int("answers");
    let handoffs = int("handoffs");
    Ok(Stats {
        tenant_id,
        since,
        conversations: ConversationCounts {
            open: int("open"),
            handoff: int("handoff_conversations"),
            closed: int("closed"),
        },
        messages_in: int("messages_in"),
        messages_out: int("messages_out"),
        answers,
        handoffs,
        handoff_rate: if answers > 0 { handoffs as f64 / answers as f64 } else { 0.0 },
        average_confidence: float("average_confidence"),
        latency_ms: Percentiles { p50: float("p50"), p95: float("p95"), p99: float("p99") },
        cost: float("cost").unwrap_or(0.0),
        prompt_tokens: int("prompt_tokens"),
        completion_tokens: int("completion_tokens"),
        by_responder: serde_json::from_value(v.get("by_responder").cloned().unwrap_or_default())
            .unwrap_or_default(),
    })
}
