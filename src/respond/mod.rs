//! Stage 6, respond: who writes the reply (CONTRACT §4a), behind one small trait.
//!
//! A responder sees the built context and returns an [`Answer`]; it never touches
//! the store or the broker. Errors are transient by definition (a timeout, a
//! connection error): the pipeline retries the message.

mod builtin;

use futures_util::future::BoxFuture;
use serde_json::Value;

pub use builtin::Builtin;

use crate::decode::Inbound;
use crate::store::Conversation;

/// What a responder knows when it answers.
#[derive(Debug)]
pub struct Context<'a> {
    pub inbound: &'a Inbound,
    pub conversation: &'a Conversation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub handoff: bool,
    pub confidence: f32,
    /// `[{kind, id, position}]`: the catalog items the reply is about.
    pub references: Value,
}

#[derive(Debug, thiserror::Error)]
#[error("responder: {0}")]
pub struct RespondError(pub String);

pub trait Responder: Send + Sync {
    /// Recorded with each reply (`messages.responder`).
    fn name(&self) -> &str;
    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>>;
}
