//! Cache invalidation fanned out by PostgreSQL: triggers on `tenants`, `products`,
//! `services` and `knowledge_entries` bump the tenant's version and NOTIFY
//! `chat_worker_cache` with `<tenant>:<version>`, whatever program made the change.
//! Every worker LISTENs and drops entries older than the version it hears of.
//!
//! Notifications sent while the listener was disconnected are lost, so after
//! every (re)connection the worker re-reads all versions and empties its
//! in-process tier: nothing stale outlives a reconnect.
//!
//! LISTEN needs one session throughout: through a transaction pooler it is
//! accepted and then never delivers (the session that ran it is lent to other
//! clients), so the listener uses the direct connection, `database.listen_url`
//! ([`Db::session_pool`]); the versions are read like any other statement.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CatalogCache;
use crate::store::{self, Db, StoreError};

pub const CHANNEL: &str = "chat_worker_cache";

/// Parses a notification payload `<tenant uuid>:<version>`.
pub fn parse(payload: &str) -> Option<(Uuid, i64)> {
    let (tenant, version) = payload.split_once(':')?;
    Some((Uuid::parse_str(tenant).ok()?, version.parse().ok()?))
}

/// Listens until `stop`. `synced` is told once the first subscription and
/// version sync are done (or failed), so the worker can wait for it at start.
pub async fn listen(
    db: Db,
    cache: CatalogCache,
    stop: CancellationToken,
    synced: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut synced = Some(synced);
    let mut pause = Duration::from_millis(200);
    loop {
        let subscribed = subscribe(&db, &cache).await;
        let mut listener = match subscribed {
            Ok(listener) => {
                if let Some(tx) = synced.take() {
                    let _ = tx.send(Ok(()));
                }
                pause = Duration::from_millis(200);
                listener
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache invalidation listener cannot connect; retrying");
                if let Some(tx) = synced.take() {
                    let _ = tx.send(Err(e));
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(notification)) => match parse(notification.payload()) {
                    Some((tenant, version)) => cache.observe_change(tenant, version).await,
                    None => tracing::warn!(payload = notification.payload(), "unreadable cache notification"),
                },
                // The connection dropped and sqlx re-subscribes on the next call;
                // whatever was sent meanwhile is lost, so resynchronise.
                Ok(None) => {
                    tracing::warn!("cache invalidation listener reconnecting; resynchronising");
                    if let Err(e) = resync(&db, &cache).await {
                        tracing::warn!(error = %e, "cache resync failed");
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn subscribe(db: &Db, cache: &CatalogCache) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(db.session_pool()).await?;
    listener.listen(CHANNEL).await?;
    // Listening first, then reading versions: no change can fall in between.
    resync(db, cache).await?;
    Ok(listener)
}

async fn resync(db: &Db, cache: &CatalogCache) -> Result<(), StoreError> {
    let versions = store::catalog::catalog_versions(db).await?;
    cache.resync(versions).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_or_are_refused() {
        let t = Uuid::new_v4();
        assert_eq!(parse(&format!("{t}:42")), Some((t, 42)));
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse(&format!("{t}:x")), None);
    }
}
