//! `responder.kind = "http"`: POST the built context as JSON to an agent service,
//! which answers `{text, confidence, handoff, references}`.
//!
//! Most of a request's bytes are the tenant's catalog and knowledge, as
//! [`shown`]: bounded, however large the tenant's are. They are serialized once
//! per cached value and shared by every request that sends them
//! (the body goes out as chunks), so a thousand requests in flight hold one copy
//! of each tenant's catalog, not a thousand.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hyper::body::{Frame, SizeHint};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::transport::{Secret, Transport, unreadable};
use super::{Answer, Context, RespondError, Responder, Usage, shown};
use crate::config::ResponderConfig;
use crate::model::catalog::Derived;
use crate::model::{ItemKind, Reference};

const WHAT: &str = "the agent service";

pub struct HttpAgent {
    transport: Transport,
    url: String,
    token: Option<Secret>,
}

/// Shows whether a token is sent, never the token (nor the URL's password).
impl std::fmt::Debug for HttpAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAgent")
            .field("transport", &self.transport)
            .field("url", &crate::redact::redact_url(&self.url))
            .field("token", &self.token)
            .finish()
    }
}

/// The agent's answer, read leniently where it can be: checking it against the
/// tenant is [`untrusted`](super::untrusted)'s job.
#[derive(Deserialize)]
struct AgentReply {
    text: String,
    confidence: f32,
    handoff: bool,
    /// Each read on its own: one malformed reference is dropped, not the answer.
    #[serde(default)]
    references: Option<Vec<Value>>,
    /// Optional, OpenAI's shape (`{"prompt_tokens": …, "completion_tokens": …}`),
    /// for tenants' token budgets; read leniently: a malformed one is none.
    #[serde(default)]
    usage: Option<Value>,
}

/// Token counts an agent reported, each a non-negative integer or left out.
fn reported_usage(usage: Option<&Value>) -> Usage {
    let count = |name: &str| {
        usage.and_then(|u| u.get(name)).and_then(Value::as_u64).map(|n| i32::try_from(n).unwrap_or(i32::MAX))
    };
    Usage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        ..Usage::default()
    }
}

/// A reference as an agent may send it: without a position (0: none given).
#[derive(Deserialize)]
struct OfferedReference {
    kind: ItemKind,
    id: Uuid,
    #[serde(default)]
    position: u32,
}

impl HttpAgent {
    /// Sends the token in `responder.http_token_env`'s variable, if any: none by
    /// default (the OpenAI key of `api_key_env` is never sent to an agent).
    pub fn new(config: &ResponderConfig) -> Result<Self, RespondError> {
        Ok(Self {
            transport: Transport::new(config)?,
            url: config.url.clone(),
            token: Secret::from_env(&config.http_token_env),
        })
    }
}

impl Responder for HttpAgent {
    fn name(&self) -> &str {
        "http"
    }

    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>> {
        Box::pin(async move {
            let body = context_json(ctx)
                .map_err(|e| RespondError::Unusable(format!("cannot write the context as JSON: {e}")))?;
            let mut request = self
                .transport
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(reqwest::Body::wrap(body));
            if let Some(token) = &self.token {
                request = request.bearer_auth(token.expose());
            }
            let body = self.transport.send(request, WHAT).await?;
            let reply: AgentReply = serde_json::from_slice(&body).map_err(|e| unreadable(WHAT, &body, e))?;
            let references = reply
                .references
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| serde_json::from_value::<OfferedReference>(r).ok())
                .map(|r| Reference { kind: r.kind, id: r.id, position: r.position })
                .collect();
            Ok(Answer {
                text: reply.text,
                handoff: reply.handoff,
                confidence: reply.confidence,
                references,
                usage: reported_usage(reply.usage.as_ref()),
            })
        })
    }
}

/// The context as JSON, byte for byte what `serde_json::to_vec(ctx)` writes
/// with the catalog and knowledge as [`shown`], as chunks: the catalog's and the
/// knowledge's are written once per cached value and shared.
fn context_json(ctx: &Context<'_>) -> Result<JsonChunks, serde_json::Error> {
    let catalog = shared_json(&ctx.catalog.derived, || shown::catalog(ctx.catalog))?;
    let knowledge = shared_json(&ctx.knowledge.derived, || shown::knowledge(ctx.knowledge))?;
    let mut head = br#"{"inbound":"#.to_vec();
    serde_json::to_writer(&mut head, ctx.inbound)?;
    head.extend_from_slice(br#","conversation_status":"#);
    serde_json::to_writer(&mut head, &ctx.conversation_status)?;
    head.extend_from_slice(br#","tenant":"#);
    serde_json::to_writer(&mut head, ctx.tenant)?;
    head.extend_from_slice(br#","catalog":"#);
    let mut tail = br#","history":"#.to_vec();
    serde_json::to_writer(&mut tail, ctx.history)?;
    tail.extend_from_slice(br#","latest_list":"#);
    serde_json::to_writer(&mut tail, &ctx.latest_list)?;
    if !ctx.burst.is_empty() {
        tail.extend_from_slice(br#","burst":"#);
        serde_json::to_writer(&mut tail, ctx.burst)?;
    }
    tail.push(b'}');
    Ok(JsonChunks(VecDeque::from([
        Bytes::from(head),
        catalog,
        Bytes::from_static(br#","knowledge":"#),
        knowledge,
        Bytes::from(tail),
    ])))
}

/// A cached value's JSON (of what `shown` makes of it), written the first time
/// a request needs it.
fn shared_json<T: Serialize>(slot: &Derived, shown: impl FnOnce() -> T) -> Result<Bytes, serde_json::Error> {
    let written =
        slot.get_or_build(|| serde_json::to_vec(&shown()).map(Bytes::from).map_err(|e| e.to_string()));
    match written.as_ref() {
        Ok(json) => Ok(json.clone()),
        Err(e) => Err(serde::ser::Error::custom(e)),
    }
}

/// A request body sent as the chunks it is made of, with its exact length (so
/// the request carries `Content-Length`, not chunked transfer encoding).
struct JsonChunks(VecDeque<Bytes>);

impl hyper::body::Body for JsonChunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|chunk| chunk.len() as u64).sum())
    }
}
