//! The types every stage shares, at the bottom of the tree: they depend on
//! nothing of the worker's, and every stage depends on them.
//!
//! - [`inbound`] — a validated customer message (CONTRACT §2);
//! - [`fingerprint`] — its identity;
//! - [`envelope`] — a delivery as the pipeline sees it, without the broker's types;
//! - [`reference`](mod@reference) — the catalog items a reply names, and a numbered list of them;
//! - [`answer`] — what a responder says;
//! - [`catalog`] — a tenant's profile, catalog and knowledge, as cached;
//! - [`conversation`] — a message's direction and a conversation's status.

pub mod answer;
pub mod budget;
pub mod catalog;
pub mod conversation;
pub mod envelope;
pub mod fingerprint;
pub mod inbound;
pub mod rate;
pub mod reference;
pub mod share;

pub use answer::{Answer, Usage};
pub use conversation::{ConversationStatus, Direction, HistoryItem};
pub use envelope::{Envelope, TraceContext};
pub use fingerprint::Fingerprint;
pub use inbound::Inbound;
pub use reference::{ItemKind, NumberedList, Reference};
