//! `worker migrate`: create the database if needed, then apply `migrations/`.
//!
//! The SQL files are embedded in the binary (no runtime path to ship). sqlx's
//! migrator holds a PostgreSQL advisory lock while it works, so several hosts may
//! migrate at once; `CREATE DATABASE` races are settled by treating
//! "already exists" as success. The lock is a session's: both run on a direct
//! connection (`database.listen_url` when `database.url` is a transaction
//! pooler, which would take it on one server and release it on another).

use std::borrow::Cow;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{ConnectOptions, Connection, PgPool};

use super::{StoreError, connect_options};

/// (version, description, sql), in order. Add new files here as well.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "shared tables", include_str!("../../migrations/0001_shared_tables.sql")),
    (2, "context", include_str!("../../migrations/0002_context.sql")),
    (3, "fencing", include_str!("../../migrations/0003_fencing.sql")),
    (4, "hot conversation updates", include_str!("../../migrations/0004_hot_conversation_updates.sql")),
    (5, "retention", include_str!("../../migrations/0005_retention.sql")),
    (6, "time-ordered ids", include_str!("../../migrations/0006_time_ordered_ids.sql")),
    (
        7,
        "interactions by conversation",
        include_str!("../../migrations/0007_interactions_by_conversation.sql"),
    ),
    (8, "bursts", include_str!("../../migrations/0008_bursts.sql")),
];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> futures_util::future::BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Creates the database named in `url` when it does not exist yet.
/// Returns whether it was created by this call.
pub async fn create_database_if_missing(url: &str) -> Result<bool, StoreError> {
    let target = connect_options(url)?;
    let Some(name) = target.get_database().map(str::to_owned) else {
        return Ok(false);
    };
    let mut admin = target.clone().database("postgres").connect().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if exists {
        return Ok(false);
    }
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let created = sqlx::raw_sql(&format!("CREATE DATABASE {quoted}")).execute(&mut admin).await;
    let _ = admin.close().await;
    match created {
        Ok(_) => Ok(true),
        // 42P04 duplicate_database; 23505 when two hosts race on pg_database's unique index.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Applies every migration not applied yet, over `pool`'s direct connections.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let migrator = Migrator::new(Embedded).await?;
    migrator.run(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// A file added to `migrations/` but not to `MIGRATIONS` would be silently
    /// skipped: the list and the directory must name the same files, in order,
    /// each embedded with its own text.
    #[test]
    fn every_file_in_migrations_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("migrations/")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .map(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                (name, std::fs::read_to_string(&p).expect("sql"))
            })
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "migrations/ has {files:?}");
        for ((name, sql), (version, _, embedded)) in files.iter().zip(MIGRATIONS) {
            let number: i64 = name.split('_').next().and_then(|n| n.parse().ok()).unwrap_or(-1);
            assert_eq!(number, *version, "{name}: versions follow the file names");
            assert_eq!(sql, embedded, "{name} is embedded as version {version}");
        }
    }
}
