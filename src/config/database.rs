//! `[database]`: the PostgreSQL pool, and how it is shared between grouped
//! commits, grouped reads and everything else; whether `url` goes through a
//! transaction pooler (`listen_url` set), and whether statements are named.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::validate::{check_url, require, within};
use super::{ConfigError, debug_redacted};

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    /// A direct (session) connection for LISTEN and `worker migrate` (CONTRACT §1,
    /// `DATABASE_LISTEN_URL`). Set: `url` goes through a transaction pooler, so
    /// every statement runs in an explicit transaction that sets the timeouts.
    /// Empty: `url` is direct and serves both.
    pub listen_url: String,
    /// Named, cached prepared statements; `false` sends every statement unnamed
    /// (PgBouncer before 1.21, RDS Proxy). Unset: named on a direct connection,
    /// unnamed behind a pooler (`listen_url` set) — named statements through
    /// PgBouncer 1.18 can run another client's statement without an error, so
    /// they are an explicit choice there (PgBouncer >= 1.21 with
    /// `max_prepared_statements` > 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_statements: Option<bool>,
    pub max_connections: u32,
    /// Most messages one commit records (group commit).
    pub commit_batch_max: usize,
    /// Group commits running at once; messages ready meanwhile join the next one.
    /// One is best on the machines measured: batches grow with the load, and each
    /// statement has a fixed cost (see docs/performance.md).
    pub commits_in_flight: usize,
    /// Grouped context reads running at once, likewise.
    pub reads_in_flight: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/worker?sslmode=disable".into(),
            listen_url: String::new(),
            prepared_statements: None,
            max_connections: 8,
            commit_batch_max: 256,
            commits_in_flight: 1,
            reads_in_flight: 1,
        }
    }
}

/// Not derived: the URL (or libpq keyword string) carries the database password.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_redacted("DatabaseConfig", self, f)
    }
}

/// Pool connections the grouped reads and writes must leave to everything else:
/// the cache listener's LISTEN, catalog loads, fence registrations, replays.
const SPARE_CONNECTIONS: usize = 2;

/// The connection the writer's light lane keeps (a message of a tenant with
/// nothing waiting commits there, beside another tenant's flood).
const LIGHT_LANE: usize = 1;

impl DatabaseConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[
            ("database.max_connections", u64::from(self.max_connections), 10_000),
            ("database.commit_batch_max", self.commit_batch_max as u64, 100_000),
            ("database.commits_in_flight", self.commits_in_flight as u64, 10_000),
            ("database.reads_in_flight", self.reads_in_flight as u64, 10_000),
        ])?;
        require(self.max_connections > 0, "database.max_connections", "must be at least 1")?;
        require(self.commit_batch_max > 0, "database.commit_batch_max", "must be at least 1")?;
        let needed =
            self.commits_in_flight.saturating_add(self.reads_in_flight).saturating_add(SPARE_CONNECTIONS);
        require(
            self.commits_in_flight > 0 && self.reads_in_flight > 0 && needed <= self.max_connections as usize,
            "database.commits_in_flight",
            "and database.reads_in_flight must be at least 1 each, and together leave at least 2 of \
             database.max_connections free (the LISTEN connection, catalog loads, fencing)",
        )?;
        check_url("database.url", &self.url, &["postgres", "postgresql"])?;
        if self.through_pooler() {
            check_url("database.listen_url", &self.listen_url, &["postgres", "postgresql"])?;
        }
        Ok(())
    }

    /// Whether the writer's light lane has a connection to keep beside the
    /// group commit's, the grouped reads' and the spare ones (see
    /// `store::writer`); without, light messages commit with the backlog.
    pub fn light_lane(&self) -> bool {
        self.commits_in_flight
            .saturating_add(self.reads_in_flight)
            .saturating_add(LIGHT_LANE)
            .saturating_add(SPARE_CONNECTIONS)
            <= self.max_connections as usize
    }

    /// Whether `url` goes through a transaction pooler: `listen_url` is set.
    pub fn through_pooler(&self) -> bool {
        !self.listen_url.is_empty()
    }

    /// Whether statements are named and cached: as set, else only when direct.
    pub fn named_statements(&self) -> bool {
        self.prepared_statements.unwrap_or(!self.through_pooler())
    }

    /// The direct (session) connection: `listen_url`, or `url` when that is direct.
    pub fn session_url(&self) -> &str {
        if self.through_pooler() { &self.listen_url } else { &self.url }
    }
}
