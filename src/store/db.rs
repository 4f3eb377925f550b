//! The worker's handle on PostgreSQL ([`Db`]) and the two ways it talks to it.
//!
//! **Direct** (`database.listen_url` empty): `database.url` is PostgreSQL itself
//! (or a pooler in session mode). The statement and lock timeouts are startup
//! options of every connection, checked at start ([`Db::check_timeouts`]);
//! statements are named and cached; one statement outside a transaction is one
//! round trip or two.
//!
//! **Through a transaction pooler** (`listen_url` set: PgBouncer with
//! `pool_mode = transaction`, RDS Proxy). The pooler lends a server connection
//! for one transaction at a time, and outside a transaction for one Sync at a
//! time: sqlx sends Parse/Describe/Sync, then Bind/Execute/Sync, and with
//! PgBouncer 1.18 the Bind landed on a server that another client had just
//! parsed its own unnamed statement on — that statement ran with our parameters
//! and returned its rows, without an error. So here every statement runs inside
//! an explicit transaction, opened by one `BEGIN; SET LOCAL statement_timeout …;
//! SET LOCAL lock_timeout …` (the timeouts are per transaction, not per
//! connection, so they hold whichever server runs it); no startup option is sent
//! (PgBouncer refuses `options` and `extra_float_digits`); LISTEN and migrations,
//! which need one session, use `listen_url` ([`Db::session_pool`]).
//!
//! `prepared_statements = false` sends every statement unnamed, never cached: a
//! pooler that does not track named statements (PgBouncer before 1.21, or with
//! `max_prepared_statements = 0`) would hand `sqlx_s_1` to a server where another
//! client prepared a different `sqlx_s_1`, or none.
//!
//! Call sites stay plain sqlx: `&Db`, `&mut Conn` (a connection kept across
//! statements) and `&mut Tx` are sqlx executors that apply the mode, so no store
//! function can send a statement the wrong way. `&Db` and `&mut Conn` make each
//! statement its own transaction in both modes (implicitly on a direct
//! connection); [`Db::begin`] opens one for several.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{self, BoxFuture};
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Connection as _, Describe, Either, Execute, Executor, PgConnection, PgPool, Postgres, Row as _};

use super::{LOCK_TIMEOUT, StoreError, connect_options};

/// How to reach the database: what `[database]` and the command ask for.
#[derive(Debug, Clone, Copy)]
pub struct DbSettings<'a> {
    pub max_connections: u32,
    /// `None`: statements run as long as the server lets them (administrative commands).
    pub statement_timeout: Option<Duration>,
    /// `Some(direct url)`: `url` goes through a transaction pooler, and this
    /// direct (session) connection serves LISTEN and migrations.
    pub session_url: Option<&'a str>,
    /// Named, cached prepared statements (one round trip less per statement, and
    /// no re-planning); `false` sends them unnamed.
    pub prepared_statements: bool,
}

/// The pool, the session connection's pool, and how statements must be sent.
/// Clones share them.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    session: PgPool,
    mode: Arc<Mode>,
}

#[derive(Debug)]
struct Mode {
    /// Every statement inside an explicit transaction opened by `begin`.
    pooler: bool,
    prepared: bool,
    /// What opens a transaction: `BEGIN`, with the timeouts through a pooler.
    begin: String,
    /// The statement timeout (ms) sent as a startup option, on a direct connection.
    startup_timeout_ms: Option<u128>,
}

impl Mode {
    /// `query`, named only where prepared statements are on.
    fn shape<'q, E: Execute<'q, Postgres>>(&self, query: E) -> Shaped<E> {
        let persistent = self.prepared && query.persistent();
        Shaped { query, persistent }
    }
}

impl Db {
    /// A lazily connecting handle: the first statement opens connections, so
    /// `run` can wait for the database with its own timeout and message.
    pub fn connect_lazy(url: &str, settings: DbSettings<'_>) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        let timeouts = settings.statement_timeout.map(|timeout| (timeout, LOCK_TIMEOUT.min(timeout)));
        let Some(session_url) = settings.session_url else {
            let pool = direct_pool(options, settings.max_connections, timeouts);
            let startup_timeout_ms = timeouts.map(|(statement, _)| statement.as_millis());
            let mode = Mode {
                pooler: false,
                prepared: settings.prepared_statements,
                begin: "BEGIN".into(),
                startup_timeout_ms,
            };
            return Ok(Self { pool: pool.clone(), session: pool, mode: Arc::new(mode) });
        };
        // PgBouncer refuses a startup packet carrying `extra_float_digits`
        // (unless told to ignore it); floats are read in binary anyway.
        let pool = pool_with(options.extra_float_digits(None), settings.max_connections);
        // One LISTEN connection; migrations take it too, in their own process.
        let session = pool_with(connect_options(session_url)?, 1);
        let begin = match timeouts {
            Some((statement, lock)) => format!(
                "BEGIN; SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
                statement.as_millis(),
                lock.as_millis()
            ),
            None => "BEGIN".into(),
        };
        let mode =
            Mode { pooler: true, prepared: settings.prepared_statements, begin, startup_timeout_ms: None };
        Ok(Self { pool, session, mode: Arc::new(mode) })
    }

    /// A direct pool as it is: named statements, its own session (tests, tools).
    pub fn direct(pool: PgPool) -> Self {
        let mode = Mode { pooler: false, prepared: true, begin: "BEGIN".into(), startup_timeout_ms: None };
        Self { pool: pool.clone(), session: pool, mode: Arc::new(mode) }
    }

    /// On a direct connection with timeouts, whether the server applied the
    /// startup option: a pooler told to ignore startup parameters drops it
    /// silently, and with it the promise that a write past the deadline is
    /// cancelled. (Through a pooler the timeouts are in every transaction.)
    pub async fn check_timeouts(&self) -> Result<(), StoreError> {
        let Some(wanted) = self.mode.startup_timeout_ms else { return Ok(()) };
        // A plain &str runs as a simple query: no statement is prepared.
        let row =
            self.pool.fetch_one("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'").await?;
        let applied: String = row.try_get(0)?;
        if applied == wanted.to_string() {
            return Ok(());
        }
        Err(StoreError::Config(format!(
            "the server runs statements with statement_timeout {applied} ms, not the {wanted} ms the worker \
             sent at connection: database.url drops startup options (a transaction pooler?); set \
             DATABASE_LISTEN_URL to a direct connection so that the timeouts are set in every transaction"
        )))
    }

    /// The pool itself, for its figures (size, idle connections).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pool of direct (session) connections: LISTEN, and whatever needs one
    /// session throughout (advisory locks). The main pool when that is direct.
    pub fn session_pool(&self) -> &PgPool {
        &self.session
    }

    /// Whether `database.url` goes through a transaction pooler.
    pub fn through_pooler(&self) -> bool {
        self.mode.pooler
    }

    /// Opens a transaction (through a pooler, with the timeouts set in it).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let tx = match self.mode.pooler {
            true => self.pool.begin_with(self.mode.begin.clone()).await?,
            false => self.pool.begin().await?,
        };
        Ok(Tx { tx, mode: self.mode.clone() })
    }

    /// A connection to keep across statements (each still its own transaction).
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(Conn { conn: self.pool.acquire().await?, mode: self.mode.clone() })
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.session.close().await;
    }
}

/// A pooled connection kept across statements (the grouped reads and writes).
#[derive(Debug)]
pub struct Conn {
    conn: PoolConnection<Postgres>,
    mode: Arc<Mode>,
}

/// A transaction from [`Db::begin`]; rolled back if dropped uncommitted.
pub struct Tx {
    tx: sqlx::Transaction<'static, Postgres>,
    mode: Arc<Mode>,
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// The timeouts as startup options (see [`Db::check_timeouts`]).
fn direct_pool(options: PgConnectOptions, max: u32, timeouts: Option<(Duration, Duration)>) -> PgPool {
    let Some((statement, lock)) = timeouts else { return pool_with(options, max) };
    let options = options.options([
        ("statement_timeout", format!("{}ms", statement.as_millis())),
        ("lock_timeout", format!("{}ms", lock.as_millis())),
    ]);
    pool_with(options, max)
}

fn pool_with(options: PgConnectOptions, max: u32) -> PgPool {
    pool_options(max).connect_lazy_with(options)
}

fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before each use: a round trip per query saved; a dead
        // connection fails its query, which is retried, and is then replaced.
        .test_before_acquire(false)
}

/// A query sent named or unnamed as the mode says.
struct Shaped<E> {
    query: E,
    persistent: bool,
}

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Shaped<E> {
    fn sql(&self) -> &'q str {
        self.query.sql()
    }

    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.query.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<<Postgres as sqlx::Database>::Arguments<'q>>, BoxDynError> {
        self.query.take_arguments()
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}

type Step = Either<PgQueryResult, PgRow>;

/// One statement in its own explicit transaction, read to the end before the
/// commit (the pooler may reassign the server only after it).
async fn in_transaction<'q, E>(
    conn: &mut PgConnection,
    begin: &str,
    query: E,
) -> Result<Vec<Step>, sqlx::Error>
where
    E: 'q + Execute<'q, Postgres>,
{
    let mut tx = conn.begin_with(begin.to_owned()).await?;
    let steps: Vec<Step> = (&mut *tx).fetch_many(query).try_collect().await?;
    tx.commit().await?;
    Ok(steps)
}

fn streamed<'e>(
    steps: impl Future<Output = Result<Vec<Step>, sqlx::Error>> + Send + 'e,
) -> BoxStream<'e, Result<Step, sqlx::Error>> {
    stream::once(steps)
        .map(|steps| match steps {
            Ok(steps) => stream::iter(steps.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::once(future::ready(Err(e))).right_stream(),
        })
        .flatten()
        .boxed()
}

fn first_row(steps: Vec<Step>) -> Option<PgRow> {
    steps.into_iter().find_map(|step| step.right())
}

/// Through a pooler a prepared statement cannot outlive the transaction it was
/// prepared in; the worker never prepares one explicitly.
fn no_prepare<'e, T: Send + 'e>() -> BoxFuture<'e, Result<T, sqlx::Error>> {
    let why = "explicitly prepared statements are not available through a transaction pooler";
    Box::pin(future::ready(Err(sqlx::Error::Configuration(why.into()))))
}

impl<'c> Executor<'c> for &'c Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let query = self.mode.shape(query);
        if !self.mode.pooler {
            return self.pool.fetch_many(query);
        }
        streamed(async move {
            let mut conn = self.pool.acquire().await?;
            in_transaction(&mut conn, &self.mode.begin, query).await
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let query = self.mode.shape(query);
        if !self.mode.pooler {
            return self.pool.fetch_optional(query);
        }
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            Ok(first_row(in_transaction(&mut conn, &self.mode.begin, query).await?))
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        if self.mode.pooler { no_prepare() } else { self.pool.prepare_with(sql, parameters) }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        if self.mode.pooler { no_prepare() } else { self.pool.describe(sql) }
    }
}

impl<'c> Executor<'c> for &'c mut Conn {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let Conn { conn, mode } = self;
        let query = mode.shape(query);
        if !mode.pooler {
            return (&mut **conn).fetch_many(query);
        }
        streamed(async move { in_transaction(conn, &mode.begin, query).await })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let Conn { conn, mode } = self;
        let query = mode.shape(query);
        if !mode.pooler {
            return (&mut **conn).fetch_optional(query);
        }
        Box::pin(async move { Ok(first_row(in_transaction(conn, &mode.begin, query).await?)) })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        if self.mode.pooler { no_prepare() } else { (&mut *self.conn).prepare_with(sql, parameters) }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        if self.mode.pooler { no_prepare() } else { (&mut *self.conn).describe(sql) }
    }
}

/// Inside a transaction the server stays the same: statements go as they are,
/// named or not as the mode says.
impl<'c> Executor<'c> for &'c mut Tx {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let query = self.mode.shape(query);
        (&mut *self.tx).fetch_many(query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let query = self.mode.shape(query);
        (&mut *self.tx).fetch_optional(query)
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        (&mut *self.tx).prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        (&mut *self.tx).describe(sql)
    }
}
