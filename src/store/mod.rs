//! PostgreSQL: the durable record and the last guarantee of "at most one reply".
//!
//! One function per query, each taking a [`Db`] (or a connection or transaction
//! of one), which sends it directly or through a transaction pooler as
//! configured (`db.rs`). Callers see domain verbs (`load_catalog`,
//! `load_context`, `record_exchange`, `history_page`, `prune`), never rows or SQL.

mod batch;
pub mod bursts;
pub mod catalog;
mod context;
mod conversations;
mod db;
mod history;
mod messages;
mod migrate;
pub mod retention;
pub mod stats;
mod writer;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use catalog::{load_catalog, load_knowledge, load_profile};
pub use context::{ContextReader, ConversationContext, load_context};
pub use conversations::Conversation;
pub use db::{Conn, Db, DbSettings, Tx};
pub use history::{HistoryPage, customer_conversation, history_page};
pub use messages::{
    Exchange, Recorded, StoredReply, has_reply, record_burst_reply, record_exchange, register_fence,
    stored_reply,
};
pub use migrate::{create_database_if_missing, migrate};
pub use writer::{Lane, Writer, WriterMetrics, WriterSettings};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database url: {0}")]
    Url(String),
    /// A grouped read that other messages shared failed: each of them gets it,
    /// and whether a message's value caused it is still known.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    /// A tenant-wide load that other waiters shared failed (the cache's single
    /// flight): never the fault of the message that waited for it.
    #[error(transparent)]
    Load(std::sync::Arc<StoreError>),
    /// A later lock holder registered a higher fencing token: this one lost its lease.
    #[error("lease lost: a later holder of message {0} has taken over; this attempt may not commit")]
    Fenced(String),
    #[error("database `{0}` does not exist: run `worker migrate` to create it")]
    Missing(String),
    /// The grouped reader or writer task is gone (the worker is stopping).
    #[error("the database {0} has stopped")]
    Stopped(&'static str),
    /// A statement returned less than it must: the rows are not what the worker wrote.
    #[error("database: {0}")]
    Inconsistent(String),
    /// The message was coalesced into a burst before (its inbound row says
    /// so): a copy of it, with no reply of its own to publish.
    #[error("message {0} was coalesced into its burst before")]
    Coalesced(String),
    /// The database runs the worker's statements otherwise than configured.
    #[error("database: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the statement failed because of a value the message carried, so
    /// that it would fail the same way every time: SQLSTATE class 22 (data
    /// exception: a NUL, an untranslatable character, a value out of range) or
    /// 54 (program limit exceeded: a value too large for an index).
    pub fn caused_by_input(&self) -> bool {
        let code = match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.code(),
            StoreError::Shared(shared) => return shared.caused_by_input(),
            _ => return false,
        };
        code.is_some_and(|c| c.starts_with("22") || c.starts_with("54"))
    }
}

pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    url.parse::<PgConnectOptions>().map_err(|e| StoreError::Url(crate::redact::redact_url(&e.to_string())))
}

/// A lazily connecting pool of direct connections, for statements of one's own
/// (tests, tools, migrations); the worker's go through a [`Db`].
pub fn pool(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect_options(url)?))
}

/// The longest a statement of the worker waits for a row lock. A row another
/// program holds (an admin app's transaction left open on one conversation)
/// would otherwise hold the group commit — and every message batched with it —
/// for the whole `statement_timeout`; past this the batch fails, is split, and
/// only the message whose row is locked waits for a retry (55P03 is transient).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(3);

/// One round trip, to tell whether the database answers.
pub async fn ping(db: &Db) -> Result<(), StoreError> {
    match sqlx::query("SELECT 1").execute(db).await {
        Ok(_) => Ok(()),
        // 3D000 invalid_catalog_name: the database itself is missing.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let name = db.pool().connect_options().get_database().unwrap_or("?").to_owned();
            Err(StoreError::Missing(name))
        }
        Err(e) => Err(e.into()),
    }
}
