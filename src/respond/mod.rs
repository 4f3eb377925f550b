//! Stage "respond": who writes the reply (CONTRACT §4a), behind one small trait.
//!
//! A responder sees the built [`Context`] and returns an [`Answer`]; it never
//! touches the store or the broker. Its errors are transient (timeouts,
//! connection errors, 5xx) or unusable ([`RespondError::Unusable`]: a 3xx, a 4xx,
//! an answer too large or that cannot be read): each fails the attempt and the
//! message is retried, then dead-lettered, so nothing is lost while an operator
//! fixes the cause. A request to slow down ([`RespondError::SlowDown`]) and an
//! endpoint whose circuit is open ([`RespondError::Down`]) park the message
//! without spending an attempt ([`throttle`]).
//!
//! - [`builtin`] — offline, deterministic, answers from the context alone;
//! - [`openai`], [`http`] — remote: they are shown a bounded part of the tenant
//!   ([`shown`]), talk over one guarded [`transport`], and their answers are
//!   believed only as far as [`untrusted`] allows.

pub mod builtin;
mod gate;
pub mod http;
pub mod openai;
pub mod shown;
pub mod throttle;
mod transport;
pub mod untrusted;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;

pub use crate::model::{Answer, Usage};
pub use builtin::Builtin;
pub use throttle::{Breaker, Pause, Standing, Throttled};
pub use untrusted::Untrusted;

use crate::config::{ResponderConfig, ResponderKind};
use crate::model::HistoryItem;
use crate::model::Inbound;
use crate::model::catalog::{Catalog, Knowledge, TenantProfile};
use crate::model::{ConversationStatus, ItemKind, NumberedList, Reference};
pub use crate::store::bursts::BurstMessage;

/// What a responder knows when it answers.
#[derive(Debug, Serialize)]
pub struct Context<'a> {
    pub inbound: &'a Inbound,
    /// `open` also for a conversation about to be opened (with the reply).
    pub conversation_status: ConversationStatus,
    pub tenant: &'a TenantProfile,
    pub catalog: &'a Catalog,
    pub knowledge: &'a Knowledge,
    /// The latest messages, oldest first.
    pub history: &'a [HistoryItem],
    /// The latest reply that listed two or more items.
    pub latest_list: Option<&'a NumberedList>,
    /// When a coalesced burst is answered: every inbound message of it, oldest
    /// first, `inbound` last (CONTRACT §4a); empty otherwise.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub burst: &'a [BurstMessage],
}

impl Context<'_> {
    /// What the customer asked: the message's text, or a burst's texts together.
    pub fn question(&self) -> std::borrow::Cow<'_, str> {
        if self.burst.is_empty() {
            std::borrow::Cow::Borrowed(self.inbound.text.as_str())
        } else {
            let texts: Vec<&str> = self.burst.iter().map(|m| m.text.as_str()).collect();
            std::borrow::Cow::Owned(texts.join("\n"))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// Timeout, connection error, 5xx: trying again may work.
    #[error("responder: {0}")]
    Transient(String),
    /// 429, or 503 with `Retry-After`: the responder asks to be called less
    /// (CONTRACT §3): every call of this process to it pauses that long
    /// ([`throttle`]), and the message is parked without spending an attempt.
    #[error("responder asks to slow down{}: {detail}", after(.retry_after))]
    SlowDown { retry_after: Option<std::time::Duration>, detail: String },
    /// Its circuit breaker is open: failures in a row said it is down for
    /// every message, so this one is parked (no attempt spent) until its
    /// next probe, and the worker takes no new deliveries meanwhile.
    #[error("responder down (next probe in {}s): {detail}", .retry_after.as_secs())]
    Down { retry_after: std::time::Duration, detail: String },
    /// A 3xx, a 4xx, or an answer too large or that cannot be read: logged
    /// with the answer's first bytes.
    #[error("responder gave an unusable answer: {0}")]
    Unusable(String),
}

fn after(retry_after: &Option<std::time::Duration>) -> String {
    retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default()
}

pub trait Responder: Send + Sync {
    /// Recorded with each answer (`agent_interactions.responder`).
    fn name(&self) -> &str;
    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>>;
}

/// The responder `worker.toml` asks for; a remote one wrapped in [`Untrusted`].
/// `record_contents`: put message texts on the GenAI span (personal data).
/// `pause`: the endpoint's pause, shared with the fleet (see [`throttle`]).
pub fn from_config(
    config: &ResponderConfig,
    record_contents: bool,
    pause: Arc<Pause>,
) -> Result<Arc<dyn Responder>, RespondError> {
    Ok(match config.kind {
        ResponderKind::Builtin => Arc::new(Builtin { handoff_threshold: config.handoff_threshold }),
        ResponderKind::Openai => {
            Arc::new(Throttled::new(Untrusted(openai::OpenAi::new(config, record_contents)?), pause))
        }
        ResponderKind::Http => Arc::new(Throttled::new(Untrusted(http::HttpAgent::new(config)?), pause)),
    })
}

/// The first bytes of an answer, for a log line.
pub(crate) fn first_bytes(body: &[u8]) -> String {
    let cut = &body[..body.len().min(200)];
    String::from_utf8_lossy(cut).escape_debug().to_string()
}

/// The catalog items a free-text reply names, in the order they appear, so that
/// `references` is filled whichever responder wrote the text.
pub(crate) fn references_in(text: &str, catalog: &Catalog) -> Vec<Reference> {
    let lower = text.to_lowercase();
    let mut found: Vec<(usize, ItemKind, uuid::Uuid)> = catalog
        .products
        .iter()
        .map(|p| (ItemKind::Product, p.id, &p.name))
        .chain(catalog.services.iter().map(|s| (ItemKind::Service, s.id, &s.name)))
        .filter_map(|(kind, id, name)| lower.find(&name.to_lowercase()).map(|at| (at, kind, id)))
        .collect();
    found.sort_by_key(|(at, _, _)| *at);
    found.into_iter().zip(1u32..).map(|((_, kind, id), position)| Reference { kind, id, position }).collect()
}
